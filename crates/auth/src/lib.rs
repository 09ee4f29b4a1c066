//! Who is asking, proven: Drover's answer to Munge.
//!
//! A cluster key (32 random bytes, mode 0600) is shared by the controllers
//! and agents and never readable by users. A local daemon serves a Unix
//! socket; whoever connects gets a short-lived credential for *their own*
//! uid and gid, read by the kernel (`SO_PEERCRED`), signed with the key. The
//! controller accepts a request only with a credential whose signature is
//! right, that has not expired, and that it has not seen before.

pub mod account;

pub use account::Account;
use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a credential is good for (Munge's default TTL).
pub const TTL_MS: u64 = 5 * 60 * 1000;
pub const KEY_LEN: usize = 32;

/// Why a request's credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: run the command on a host with a drover agent (or in the directory of 'drover up'), or set DROVER_AUTH_SOCKET")]
    Missing,
    #[error("malformed credential")]
    Malformed,
    #[error("credential signature is invalid (forged, or signed with another cluster's key)")]
    Forged,
    #[error("credential expired; clocks of this host and the controller may disagree")]
    Expired,
    #[error("credential was already used (replayed)")]
    Replayed,
}

/// A verified identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    pub uid: u32,
    pub gid: u32,
    pub expires_ms: u64,
    pub nonce: u64,
}

/// Bytes from the kernel's random source: `getrandom(2)`, one system call
/// (every credential and token takes a nonce; opening `/dev/urandom` for
/// each was three).
fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled rest of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        match n {
            n if n > 0 => filled += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Credentials and tokens are signed in separate domains: neither can be
/// passed off as the other.
fn mac(key: &[u8], domain: &[u8], body: &str) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(domain);
    m.update(body.as_bytes());
    m
}

impl Credential {
    /// A credential for `uid`/`gid`, valid for [`TTL_MS`] from `now_ms`.
    pub fn mint(key: &[u8], uid: u32, gid: u32, now_ms: u64) -> std::io::Result<String> {
        let nonce = u64::from_le_bytes(random_bytes::<8>()?);
        Ok(Credential::sign(key, &Credential { uid, gid, expires_ms: now_ms + TTL_MS, nonce }))
    }

    /// The text form: `v1.UID.GID.EXPIRES.NONCE.MAC`.
    pub fn sign(key: &[u8], c: &Credential) -> String {
        c.signed(key, CREDENTIAL)
    }

    /// Checks the signature and the expiry (not replay: see [`ReplayGuard`]).
    pub fn verify(key: &[u8], text: &str, now_ms: u64) -> Result<Credential, AuthError> {
        Credential::verify_as(key, text, now_ms, CREDENTIAL)
    }

    fn signed(&self, key: &[u8], (prefix, domain): Kind) -> String {
        let body = format!("{}.{}.{}.{:016x}", self.uid, self.gid, self.expires_ms, self.nonce);
        let tag = mac(key, domain, &body).finalize().into_bytes();
        format!("{prefix}{body}.{}", hex(&tag))
    }

    fn verify_as(key: &[u8], text: &str, now_ms: u64, (prefix, domain): Kind) -> Result<Credential, AuthError> {
        let rest = text.trim().strip_prefix(prefix).ok_or(AuthError::Malformed)?;
        let (body, tag) = rest.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let fields: Vec<&str> = body.split('.').collect();
        let [uid, gid, expires, nonce] = fields.as_slice() else { return Err(AuthError::Malformed) };
        let tag = unhex(tag).ok_or(AuthError::Malformed)?;
        mac(key, domain, body).verify_slice(&tag).map_err(|_| AuthError::Forged)?;
        let c = Credential {
            uid: uid.parse().map_err(|_| AuthError::Malformed)?,
            gid: gid.parse().map_err(|_| AuthError::Malformed)?,
            expires_ms: expires.parse().map_err(|_| AuthError::Malformed)?,
            nonce: u64::from_str_radix(nonce, 16).map_err(|_| AuthError::Malformed)?,
        };
        if now_ms > c.expires_ms {
            return Err(AuthError::Expired);
        }
        Ok(c)
    }
}

/// The text prefix and the signing domain of a kind of proof.
type Kind = (&'static str, &'static [u8]);
const CREDENTIAL: Kind = ("v1.", b"drover-credential-v1|");
const TOKEN: Kind = ("t1.", b"drover-token-v1|");

/// The longest a session token may live.
pub const TOKEN_MAX_MS: u64 = 7 * 24 * 3600 * 1000;

/// A session token: like a credential, an identity signed with the cluster
/// key, but good for many requests until it expires — for a browser (the
/// web dashboard) or a script that calls the REST API with `curl`. The
/// controller hands one out only to a caller proven by a credential, for
/// the caller's own identity. Anyone holding it acts as that user until it
/// expires: keep it like a password.
pub struct Token;

impl Token {
    pub fn mint(key: &[u8], uid: u32, gid: u32, lifetime_ms: u64, now_ms: u64) -> std::io::Result<String> {
        let nonce = u64::from_le_bytes(random_bytes::<8>()?);
        let c = Credential { uid, gid, expires_ms: now_ms + lifetime_ms.min(TOKEN_MAX_MS), nonce };
        Ok(c.signed(key, TOKEN))
    }

    /// Checks the signature and the expiry; a token may be used again.
    pub fn verify(key: &[u8], text: &str, now_ms: u64) -> Result<Credential, AuthError> {
        Credential::verify_as(key, text, now_ms, TOKEN)
    }
}

/// Signs a document the controller vouches for (a step grant, as JSON
/// text) so that an agent holding the key can trust it wherever it came
/// from. A separate domain: a seal is never a credential or a token.
pub fn seal(key: &[u8], text: &str) -> String {
    hex(&mac(key, GRANT, text).finalize().into_bytes())
}

/// Checks a [`seal`] over exactly `text`.
pub fn check_seal(key: &[u8], text: &str, seal: &str) -> Result<(), AuthError> {
    let tag = unhex(seal.trim()).ok_or(AuthError::Malformed)?;
    mac(key, GRANT, text).verify_slice(&tag).map_err(|_| AuthError::Forged)
}

const GRANT: &[u8] = b"drover-grant-v1|";

/// An `Authorization` header value for a daemon that holds the cluster key
/// (agents, controllers talking to each other): a fresh credential as uid 0,
/// good once.
pub fn key_authorization(key: &[u8]) -> std::io::Result<String> {
    Ok(format!("Drover {}", Credential::mint(key, 0, 0, now_ms())?))
}

/// Remembers the credentials seen until they expire, so none is used twice.
#[derive(Default)]
pub struct ReplayGuard {
    seen: HashMap<(u32, u64), u64>,
    last_prune: u64,
}

impl ReplayGuard {
    pub fn check(&mut self, c: &Credential, now_ms: u64) -> Result<(), AuthError> {
        if now_ms.saturating_sub(self.last_prune) > 10_000 {
            self.seen.retain(|_, expires| *expires >= now_ms);
            self.last_prune = now_ms;
        }
        if self.seen.insert((c.uid, c.nonce), c.expires_ms).is_some() {
            return Err(AuthError::Replayed);
        }
        Ok(())
    }
}

/// The account name of `uid` from `/etc/passwd`, else the number.
pub fn user_name(uid: u32) -> String {
    name_in("/etc/passwd", uid)
}

/// The name of group `gid` from `/etc/group`, else the number.
pub fn group_name(gid: u32) -> String {
    name_in("/etc/group", gid)
}

/// The first field of the line of `file` (passwd or group format) whose
/// third field is `id`.
fn name_in(file: &str, id: u32) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2)?.parse::<u32>().ok()? == id).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

/// Creates a new random cluster key at `path`, readable by its owner only.
/// Refuses to overwrite one.
pub fn generate_key(path: &Path) -> Result<(), String> {
    let key = random_bytes::<KEY_LEN>().map_err(|e| format!("cannot get random bytes from the kernel: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create key file {}: {e}", path.display()))?;
    f.write_all(hex(&key).as_bytes()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads the cluster key; refuses a key others can read, as Munge does.
pub fn load_key(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("no cluster key at {}: {e}; create one with 'drover keygen {}'", path.display(), path.display())
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("cluster key {} is readable by others; run: chmod 600 {}", path.display(), path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = unhex(text.trim()).ok_or_else(|| format!("cluster key {} is not hex", path.display()))?;
    if key.len() < 16 {
        return Err(format!("cluster key {} is too short ({} bytes; want {KEY_LEN})", path.display(), key.len()));
    }
    Ok(key)
}

/// Milliseconds since the epoch: the one wall clock of Drover's daemons and
/// clients (credentials and grants count time by it; the core has none and
/// takes time as an argument).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Serves credentials on a Unix socket until the task is dropped: each
/// connection gets one credential for the connecting process's uid and gid.
///
/// Several servers may share one path (the controllers of one host): one
/// holds it and the others stand by, taking it over within a second when
/// its holder dies, so clients keep getting credentials through a failover.
pub async fn serve_credentials(socket: &Path, key: Vec<u8>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut first = true;
    loop {
        if serving(socket).await {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            continue;
        }
        let _ = std::fs::remove_file(socket);
        let listener = match tokio::net::UnixListener::bind(socket) {
            Ok(l) => l,
            // A standby keeps trying; the first start reports a bad path.
            Err(e) if first => return Err(format!("cannot listen on {}: {e}", socket.display())),
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        first = false;
        // Anyone may ask — for their own identity only.
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).map_err(|e| e.to_string())?;
        let mine = std::fs::metadata(socket).map(|m| m.ino()).ok();
        let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    let Ok(peer) = stream.peer_cred() else { continue };
                    if let Ok(cred) = Credential::mint(&key, peer.uid(), peer.gid(), now_ms()) {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(format!("{cred}\n").as_bytes()).await;
                    }
                }
                _ = check.tick() => {
                    // Another server took the path over (we raced for it): stand by.
                    if std::fs::metadata(socket).map(|m| m.ino()).ok() != mine {
                        break;
                    }
                }
            }
        }
    }
}

/// Whether a live server answers on `socket`. A hung one (its process
/// stopped) still accepts connections in the kernel, so the test is an
/// answer within 300 ms.
async fn serving(socket: &Path) -> bool {
    use tokio::io::AsyncReadExt;
    let probe = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
        let mut buf = [0u8; 16];
        stream.read(&mut buf).await.ok().filter(|n| *n > 0)
    };
    matches!(tokio::time::timeout(std::time::Duration::from_millis(300), probe).await, Ok(Some(_)))
}

/// Where clients look for the credential socket: `DROVER_AUTH_SOCKET`, the
/// cluster `drover up` started here, then the agent's standard path.
pub fn socket_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("DROVER_AUTH_SOCKET").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let local = Path::new(".drover/auth.sock");
    if local.exists() {
        return local.to_path_buf();
    }
    "/run/drover/auth.sock".into()
}

/// Asks the local socket for a credential. A server that does not answer
/// within half a second (hung) is asked again, a few times: a standby
/// server takes the socket over meanwhile.
pub fn fetch_credential() -> Result<String, String> {
    let path = socket_path();
    let mut last = String::new();
    for _ in 0..6 {
        let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => s,
            // No socket at all: nothing will appear by waiting.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = e.to_string();
                break;
            }
            Err(e) => {
                last = e.to_string();
                std::thread::sleep(std::time::Duration::from_millis(200));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
        let mut text = String::new();
        match stream.read_to_string(&mut text) {
            Ok(_) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
            Ok(_) => last = "the server closed the connection without a credential".into(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "cannot get a credential from {}: {last}. Run drover on a host with a drover agent or in the directory of \
         'drover up', or set DROVER_AUTH_SOCKET",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn random_bytes_come_from_the_kernel_fresh_each_time() {
        let a = random_bytes::<32>().unwrap();
        let b = random_bytes::<32>().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn a_minted_credential_verifies_once() {
        let text = Credential::mint(KEY, 1001, 100, 1_000).unwrap();
        let c = Credential::verify(KEY, &text, 2_000).unwrap();
        assert_eq!((c.uid, c.gid, c.expires_ms), (1001, 100, 1_000 + TTL_MS));
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.check(&c, 2_000), Ok(()));
        assert_eq!(guard.check(&c, 2_001), Err(AuthError::Replayed));
    }

    #[test]
    fn tokens_and_credentials_are_not_interchangeable() {
        let key = [7u8; KEY_LEN];
        let token = Token::mint(&key, 1001, 100, 3_600_000, 1_000).unwrap();
        let c = Token::verify(&key, &token, 2_000).unwrap();
        assert_eq!((c.uid, c.gid, c.expires_ms), (1001, 100, 3_601_000));
        assert_eq!(Token::verify(&key, &token, 3_601_001), Err(AuthError::Expired));
        assert_eq!(Credential::verify(&key, &token, 2_000), Err(AuthError::Malformed));
        // Same fields, the other kind's prefix: the signature does not hold.
        let passed_off = token.replacen("t1.", "v1.", 1);
        assert_eq!(Credential::verify(&key, &passed_off, 2_000), Err(AuthError::Forged));
        let cred = Credential::mint(&key, 1001, 100, 1_000).unwrap();
        assert_eq!(Token::verify(&key, &cred.replacen("v1.", "t1.", 1), 2_000), Err(AuthError::Forged));
        let long = Token::mint(&key, 1, 1, u64::MAX / 2, 0).unwrap();
        assert_eq!(Token::verify(&key, &long, 0).unwrap().expires_ms, TOKEN_MAX_MS);
    }

    #[test]
    fn seals_hold_only_over_the_same_text_and_key() {
        let text = r#"{"job_id":5,"uid":1001}"#;
        let seal = seal(KEY, text);
        assert_eq!(check_seal(KEY, text, &seal), Ok(()));
        assert_eq!(check_seal(KEY, &text.replace("1001", "0"), &seal), Err(AuthError::Forged));
        assert_eq!(check_seal(&[7u8; KEY_LEN], text, &seal), Err(AuthError::Forged));
        assert_eq!(check_seal(KEY, text, "zz"), Err(AuthError::Malformed));
        // A credential's signature is no seal, even over the same body.
        let cred = Credential::mint(KEY, 1001, 100, 1_000).unwrap();
        let (body, tag) = cred.strip_prefix("v1.").unwrap().rsplit_once('.').unwrap();
        assert_eq!(check_seal(KEY, body, tag), Err(AuthError::Forged));
    }

    #[test]
    fn expired_forged_and_malformed_are_refused() {
        let text = Credential::mint(KEY, 1001, 100, 1_000).unwrap();
        assert_eq!(Credential::verify(KEY, &text, 1_000 + TTL_MS + 1), Err(AuthError::Expired));
        assert_eq!(Credential::verify(b"another key, another cluster!!!!", &text, 2_000), Err(AuthError::Forged));
        // Claiming to be root with someone else's signature.
        let forged = text.replacen("v1.1001.", "v1.0.", 1);
        assert_eq!(Credential::verify(KEY, &forged, 2_000), Err(AuthError::Forged));
        for bad in ["", "v1", "v2.1.1.1.1.00", "v1.a.b.c.d.zz", "v1.1.1.1.00"] {
            assert_eq!(Credential::verify(KEY, bad, 2_000), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn keys_are_private() {
        let dir = std::env::temp_dir().join(format!("drover-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("cluster.key");
        generate_key(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_key(&path).unwrap().len(), KEY_LEN);
        assert!(generate_key(&path).is_err(), "never overwrites a key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_key(&path).unwrap_err().contains("chmod 600"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_socket_vouches_for_the_caller() {
        let dir = std::env::temp_dir().join(format!("drover-authsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("auth.sock");
        let server = tokio::spawn({
            let sock = sock.clone();
            async move { serve_credentials(&sock, KEY.to_vec()).await }
        });
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let path = sock.clone();
        let text = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let mut t = String::new();
            s.read_to_string(&mut t).unwrap();
            t
        })
        .await
        .unwrap();
        let c = Credential::verify(KEY, &text, now_ms()).unwrap();
        // SAFETY: getuid/getgid have no preconditions.
        assert_eq!((c.uid, c.gid), unsafe { (libc_getuid(), libc_getgid()) });
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    unsafe extern "C" {
        #[link_name = "getuid"]
        fn libc_getuid() -> u32;
        #[link_name = "getgid"]
        fn libc_getgid() -> u32;
    }
}
