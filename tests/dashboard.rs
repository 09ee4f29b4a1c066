//! The web dashboard end to end: a `drover up` cluster, the link
//! `drover dashboard` prints, and headless Chromium driven over the DevTools
//! protocol by tests/web/drive_dashboard.py (submit, watch, log, cancel,
//! drain/resume, phone width). Screenshots land in target/tmp/dashboard/.

mod common;
use common::{http, Cluster};

#[test]
fn the_dashboard_shows_and_acts_on_the_cluster() {
    let c = Cluster::start("dashboard", 2, 0);
    let out = c.drover(&["dashboard", "--lifetime", "10m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(link.starts_with(&format!("http://127.0.0.1:{}/#token=t1.", c.port)), "{link}");

    // The page itself needs no credential; the API refuses a forged token.
    let (status, page) = http(&format!("127.0.0.1:{}", c.port), "GET", "/", None, "");
    assert!(status == 200 && page.contains("<title>Drover</title>"), "{status}");
    let token = link.split("#token=").nth(1).unwrap();
    // The last hex digit changed, always to another one.
    let flipped = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &token[..token.len() - 1]);
    let addr = format!("127.0.0.1:{}", c.port);
    let bearer = |t: &str| common::request(&addr, "GET", "/api/v1/jobs", Some(&format!("Bearer {t}")), "");
    assert_eq!(bearer(token).0, 200, "a token is good for many requests");
    assert_eq!(bearer(token).0, 200);
    let (status, refused) = bearer(&forged);
    assert!(status == 401 && refused.contains("forged"), "{status} {refused}");

    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let run = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/drive_dashboard.py"))
        .arg(env!("CARGO_BIN_EXE_drover"))
        .arg(&c.dir)
        .arg(&link)
        .arg(&artifacts)
        .env("DROVER_CONTROLLER", c.addrs())
        .output()
        .expect("runs python3");
    let said = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the dashboard drive failed:\n{said}\n{}", c.logs());
    assert!(artifacts.join("dashboard.png").metadata().unwrap().len() > 10_000, "{said}");
}
