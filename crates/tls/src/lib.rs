//! TLS for every Drover connection: a cluster CA and its host certificates
//! (`drover certs`), and the rustls configurations the daemons serve with
//! and the clients connect with.
//!
//! Credentials and tokens prove who asks, but on a plain connection anyone
//! on the path reads them (and the job scripts and outputs beside them).
//! With TLS, clients trust the cluster's CA alone — not the system's
//! roots — so a certificate from anywhere else is refused.
//!
//! Where the files are: a cluster directory (`drover up --tls` makes
//! `.drover/tls/`) holds `ca.pem`, `ca.key` and `HOST.pem`/`HOST.key` per
//! host. Daemons take `--tls-cert`, `--tls-key` and `--tls-ca`; clients
//! find the CA through `DROVER_TLS_CA`, then `.drover/tls/ca.pem`, then
//! `/etc/drover/tls/ca.pem`, and speak https when they find one.

mod lazy;

pub use lazy::{LazyTls, Listener, Served};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_rustls::TlsAcceptor;

/// Makes ring the process's crypto provider (reqwest's rustls needs one
/// even for plain http). Call once at start; later calls do nothing.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a client looks for the cluster's CA, in order.
pub fn ca_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DROVER_TLS_CA").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    [PathBuf::from(".drover/tls/ca.pem"), PathBuf::from("/etc/drover/tls/ca.pem")].into_iter().find(|p| p.is_file())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} holds a malformed certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate (PEM 'BEGIN CERTIFICATE')", path.display()));
    }
    Ok(certs)
}

/// What a daemon serves with: its certificate chain and key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    install_provider();
    let chain = certs(cert)?;
    let der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, der)
        .map_err(|e| format!("{} and {} do not make a usable certificate: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A reqwest client for the cluster: https trusting `ca` alone when given,
/// plain http otherwise. Returns the client and the scheme to use.
pub fn http_client(
    builder: reqwest::ClientBuilder,
    ca: Option<&Path>,
) -> Result<(reqwest::Client, &'static str), String> {
    install_provider();
    match ca {
        Some(ca) => {
            let config = client_config(ca)?;
            let client = builder.tls_backend_preconfigured(config).build().map_err(|e| e.to_string())?;
            Ok((client, "https"))
        }
        // Plain http still gets a TLS configuration from reqwest, which by
        // default loads the system's root certificates: milliseconds per
        // CLI call (half the submit rate). An empty one costs nothing.
        None => {
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            Ok((builder.tls_backend_preconfigured(config).build().map_err(|e| e.to_string())?, "http"))
        }
    }
}

/// What a client connects with: the cluster's CA as its only root.
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, String> {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| format!("{} is not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

/// The CA's fixed identity: host certificates made later, from the key
/// alone, chain to the same CA certificate.
fn ca_params() -> Result<rcgen::CertificateParams, String> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(rcgen::DnType::CommonName, "Drover cluster CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(p)
}

/// Writes `text` to a new file readable by its owner alone.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes `dir/ca.pem` and `dir/ca.key` unless they exist; returns whether
/// it made them.
pub fn make_ca(dir: &Path) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let ca = ca_params()?.self_signed(&pair).map_err(|e| e.to_string())?;
    write_private(&key, &pair.serialize_pem())?;
    std::fs::write(&cert, ca.pem()).map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    Ok(true)
}

/// Makes `dir/NAME.pem` and `dir/NAME.key`, signed by the CA in `dir`, for
/// the host names and addresses in `names` (DNS names or IPs).
pub fn make_host(dir: &Path, name: &str, names: &[String]) -> Result<(PathBuf, PathBuf), String> {
    if name.is_empty() || name.contains(['/', '\0']) || name == "ca" {
        return Err(format!("'{name}' cannot name a certificate file"));
    }
    let ca_key_path = dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| {
        format!("no CA key at {}: {e}; run 'drover certs {}' first", ca_key_path.display(), dir.display())
    })?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| format!("{}: {e}", ca_key_path.display()))?;
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let mut sans = names.to_vec();
    if sans.is_empty() {
        sans.push(name.to_string());
    }
    let mut p = rcgen::CertificateParams::new(sans).map_err(|e| format!("bad host names for {name}: {e}"))?;
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = p.signed_by(&pair, &issuer).map_err(|e| e.to_string())?;
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    write_private(&key_path, &pair.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_certificate_made_later_still_chains_to_the_ca() {
        let dir = std::env::temp_dir().join(format!("drover-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(make_ca(&dir).unwrap());
        assert!(!make_ca(&dir).unwrap(), "an existing CA is kept");
        let (cert, key) = make_host(&dir, "node1", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        server_config(&cert, &key).unwrap();
        client_config(&dir.join("ca.pem")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.join("ca.key")).unwrap().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
