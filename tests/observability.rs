//! What a site's monitoring sees of a running `drover up` cluster: the
//! controller's and the agents' `/metrics` (checked by Debian's `promtool`),
//! and Prometheus' service discovery.

mod common;
use common::{http, Cluster};
use std::time::Duration;

/// Runs `promtool check metrics` on `text`. Only the two node_exporter
/// names the issue asks for (`node_memory_MemTotal_bytes`,
/// `node_memory_MemUsed_bytes`) may draw a remark: their camelCase is
/// node_exporter's, which promtool flags there too.
fn promtool_check(what: &str, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package 'prometheus'; .ci/run installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(l.contains("should be written in 'snake_case' not 'camelCase'")
                && (l.starts_with("node_memory_MemTotal_bytes") || l.starts_with("node_memory_MemUsed_bytes")))
        })
        .collect();
    assert!(problems.is_empty(), "promtool on {what}: {problems:?}\n{text}");
    assert!(out.status.success() || !said.is_empty(), "promtool failed on {what} without a word");
}

/// The value of the first sample whose line starts with `prefix` and
/// contains every one of `with`.
fn sample(text: &str, prefix: &str, with: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix) && with.iter().all(|w| l.contains(w)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn metrics_pass_promtool_and_follow_jobs() {
    let c = Cluster::start("obs-metrics", 2, 0);
    let ctl = format!("127.0.0.1:{}", c.port);
    let busy = c.submit(&["--wrap", "timeout 5 sh -c 'while :; do :; done'; true"]);
    c.submit(&["--wrap", "true"]);
    c.submit(&["--wrap", "exit 3"]);
    // Held: pending for the whole test, with a reason.
    c.submit(&["--hold", "--wrap", "true"]);
    // Requeued (and held) once running.
    let requeued = c.submit(&["--wrap", "sleep 60"]);
    c.wait_for("the sleeper running", Duration::from_secs(20), || common::state_of(&c, &requeued) == "RUNNING");
    let out = c.drover(&["requeue", "--hold", &requeued]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Service discovery names the controller and both agents' listeners.
    let (status, sd) = http(&ctl, "GET", "/api/v1/sd/prometheus", None, "");
    assert_eq!(status, 200, "{sd}");
    let groups: Vec<serde_json::Value> = serde_json::from_str(&sd).unwrap();
    let agents: Vec<String> = groups
        .iter()
        .filter(|g| g["labels"]["__meta_drover_role"] == "agent")
        .map(|g| g["targets"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(agents.len(), 2, "{sd}");
    assert!(
        groups.iter().any(|g| g["labels"]["__meta_drover_role"] == "controller" && g["targets"][0] == ctl.as_str()),
        "{sd}"
    );

    // While the busy job runs, one agent reports its CPU time and memory.
    let mut seen = None;
    c.wait_for("the busy job's series on an agent", Duration::from_secs(20), || {
        seen = agents.iter().find_map(|a| {
            let text = http(a, "GET", "/metrics", None, "").1;
            let cpu = sample(&text, "drover_job_cpu_seconds{", &[&format!("job_id=\"{busy}\"")])?;
            (cpu > 0.5).then_some((a.clone(), text))
        });
        seen.is_some()
    });
    let (agent, agent_busy) = seen.unwrap();
    assert!(
        sample(
            &agent_busy,
            "drover_job_rss_bytes{",
            &[&format!("job_id=\"{busy}\""), "user=\"root\"", "partition=\"debug\""]
        )
        .unwrap()
            > 0.0
    );
    assert!(sample(&agent_busy, "node_memory_MemTotal_bytes{", &[]).unwrap() > 0.0, "{agent_busy}");
    promtool_check("an agent's /metrics", &agent_busy);

    let running = http(&ctl, "GET", "/metrics", None, "").1;
    assert_eq!(sample(&running, "drover_jobs{", &["state=\"RUNNING\""]), Some(1.0), "{running}");
    assert_eq!(sample(&running, "drover_user_running_cpus{", &["user=\"root\""]), Some(1.0), "{running}");
    assert!(sample(&running, "drover_node_heartbeat_age_seconds{", &[]).unwrap() < 5.0, "{running}");
    promtool_check("the controller's /metrics", &running);

    let out = c.drover(&["wait", &busy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut ended, mut text) = (String::new(), String::new());
    c.wait_for("three jobs ended and the busy one's series gone", Duration::from_secs(20), || {
        ended = http(&ctl, "GET", "/metrics", None, "").1;
        text = http(&agent, "GET", "/metrics", None, "").1;
        sample(&ended, "drover_jobs_ended_total{", &["state=\"COMPLETED\""]) == Some(2.0)
            && !text.contains(&format!("job_id=\"{busy}\""))
    });
    assert_eq!(sample(&ended, "drover_jobs_submitted_total{", &["user=\"root\""]), Some(5.0), "{ended}");
    assert_eq!(sample(&ended, "drover_jobs_requeued_total{", &["user=\"root\""]), Some(1.0), "{ended}");
    assert_eq!(sample(&ended, "drover_jobs{", &["state=\"PENDING\""]), Some(2.0), "{ended}");
    assert!(sample(&ended, "drover_jobs_pending_reason{", &["reason=\"JobHeld"]).unwrap() >= 1.0, "{ended}");
    assert_eq!(sample(&ended, "drover_jobs_started_total{", &[]), Some(4.0), "{ended}");
    assert_eq!(sample(&ended, "drover_jobs_completed_total{", &[]), Some(2.0), "{ended}");
    assert_eq!(sample(&ended, "drover_jobs_failed_total{", &["state=\"FAILED\""]), Some(1.0), "{ended}");
    assert_eq!(sample(&ended, "drover_job_run_seconds_count{", &[]), Some(3.0), "{ended}");
    assert!(sample(&ended, "drover_job_run_seconds_sum{", &[]).unwrap() >= 4.0, "the busy job ran 5 s: {ended}");
    assert!(sample(&ended, "drover_scheduler_pass_seconds_count", &[]).unwrap() >= 1.0, "{ended}");
    assert!(
        sample(
            &ended,
            "drover_http_request_seconds_count{",
            &["route=\"/api/v1/jobs\"", "method=\"POST\"", "status=\"200\""]
        )
        .unwrap()
            >= 3.0,
        "{ended}"
    );
    assert_eq!(sample(&ended, "drover_raft_is_leader", &[]), Some(1.0));
    assert_eq!(sample(&ended, "drover_nodes{", &["state=\"IDLE\""]), Some(2.0), "{ended}");
    promtool_check("the controller's /metrics after the jobs", &ended);
    dashboards_query_what_drover_exports(&[&running, &ended, &agent_busy]);
}

/// The shipped Grafana dashboards are dashboard JSON Grafana loads (a uid,
/// a title, panels with a datasource and a PromQL target each), every
/// expression parses (promtool checks them as recording rules), and every
/// series name they use is one a running cluster exports. The Prometheus
/// configuration passes promtool too.
fn dashboards_query_what_drover_exports(scrapes: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    // Families declared (a family may have no sample now) and series sampled.
    let exported: std::collections::HashSet<String> = scrapes
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect();
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for name in ["cluster-overview.json", "jobs.json"] {
        let text = std::fs::read_to_string(root.join("grafana/dashboards").join(name)).unwrap();
        let d: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(d["uid"].is_string() && d["title"].is_string() && d["schemaVersion"].as_u64() >= Some(30), "{name}");
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 6, "{name} has its panels");
        let mut ids = std::collections::HashSet::new();
        for p in panels {
            assert!(ids.insert(p["id"].as_u64().unwrap()), "{name}: panel ids are unique");
            assert_eq!(p["datasource"]["uid"], "drover-prometheus", "{name}: {}", p["title"]);
            let pos = &p["gridPos"];
            assert!(pos["w"].as_u64().unwrap() <= 24 && pos["h"].as_u64().unwrap() > 0, "{name}: {}", p["title"]);
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {} queries something", p["title"]);
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                rules.push_str(&format!(
                    "      - record: dashboard:check\n        expr: {}\n",
                    serde_json::to_string(expr).unwrap()
                ));
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !(word.starts_with("drover_") || word.starts_with("node_")) {
                        continue;
                    }
                    let family =
                        ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                    assert!(
                        exported.contains(word) || exported.contains(family),
                        "{name}: '{}' queries {word}, which nothing exports",
                        p["title"]
                    );
                }
            }
        }
    }
    let rules_file = std::env::temp_dir().join(format!("drover-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&rules_file, rules).unwrap();
    let out = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules_file).output().unwrap();
    let _ = std::fs::remove_file(&rules_file);
    assert!(
        out.status.success(),
        "dashboard PromQL: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(root.join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "deploy/prometheus.yml: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn json_logs_carry_component_node_job_and_term() {
    let c = Cluster::start_with("obs-logs", 1, 1, &["--log-format", "json", "--log-level", "debug"]);
    let job = c.submit(&["--wrap", "true"]);
    let out = c.drover(&["wait", &job]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(c.dir.join(".drover/logs").join(name)).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
            .collect()
    };
    let mut agent = Vec::new();
    c.wait_for("the agent logged the job's end", Duration::from_secs(10), || {
        agent = read("node1.log");
        agent.iter().any(|l| l["message"].as_str().is_some_and(|m| m.ends_with("ended")))
    });
    let controller = read("controller.log");
    for l in agent.iter().chain(&controller) {
        for field in ["timestamp", "level", "component", "node", "message", "target"] {
            assert!(l[field].is_string(), "every line has {field}: {l}");
        }
    }
    assert!(agent.iter().all(|l| l["component"] == "agent" && l["node"] == "node1"));
    let started = agent.iter().find(|l| l["message"] == format!("started job {job}")).expect("a start line");
    assert_eq!(started["job_id"].as_u64().map(|j| j.to_string()), Some(job.clone()));
    assert!(controller.iter().all(|l| l["component"] == "controller" && l["node"] == "controller1"));
    let leader = controller.iter().find(|l| l["message"] == "leader in term 1").expect("a leadership line");
    assert_eq!(leader["term"], 1);
    assert!(
        controller
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["job_id"].as_u64().map(|j| j.to_string()) == Some(job.clone())),
        "--log-level debug shows each job's life on the controller"
    );
}

/// Reads server-sent events from a stream until `done` says enough; returns
/// (id, event kind, data) triples.
fn read_events(
    s: &mut std::net::TcpStream,
    mut done: impl FnMut(&[(u64, String, String)]) -> bool,
) -> Vec<(u64, String, String)> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut text, mut got) = (String::new(), Vec::new());
    let mut buf = [0u8; 4096];
    while !done(&got) {
        let n = s.read(&mut buf).expect("the stream stays open and delivers");
        assert!(n > 0, "the stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        got = text
            .split("\n\n")
            .filter_map(|block| {
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
                Some((field("id: ")?.parse().ok()?, field("event: ")?, field("data: ")?))
            })
            .collect();
    }
    got
}

fn open_stream(port: u16, token: &str, last_event_id: Option<u64>) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET /api/v1/events?token={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}Connection: close\r\n\r\n"
    )
    .unwrap();
    s
}

#[test]
fn the_event_stream_is_live_and_resumes_after_last_event_id() {
    let c = Cluster::start("obs-sse", 1, 2);
    let out = c.drover(&["token", "--lifetime", "5m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // The history so far: the leadership (a failover shows the same way) and the node.
    let mut s = open_stream(c.port, &token, None);
    let seen = read_events(&mut s, |e| e.iter().any(|(_, k, _)| k == "NodeStateChanged"));
    let leader = seen.iter().find(|(_, k, _)| k == "LeaderElected").expect("the election is an event");
    assert!(leader.2.contains("controller 1 leads in term 1"), "{leader:?}");
    let last = seen.last().unwrap().0;

    // Live: a job's life arrives on the open stream, in order.
    let job = c.submit(&["--wrap", "true"]);
    let live =
        read_events(&mut s, |e| e.iter().any(|(_, k, d)| k == "JobFinished" && d.contains(&format!("\"job\":{job}"))));
    let ids: Vec<u64> = live.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids increase by one: {ids:?}");
    let kinds: Vec<&str> = live.iter().filter(|e| e.0 > last).map(|e| e.1.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"JobSubmitted"), "{kinds:?}");
    assert!(kinds.contains(&"JobStarted"), "{kinds:?}");

    // A client that reconnects with Last-Event-ID gets what followed, nothing before.
    let mut again = open_stream(c.port, &token, Some(last));
    let resumed = read_events(&mut again, |e| e.iter().any(|(_, k, _)| k == "JobFinished"));
    assert_eq!(resumed.first().map(|e| e.0), Some(last + 1), "{resumed:?}");
    assert_eq!(resumed.first().map(|e| e.1.as_str()), Some("JobSubmitted"));

    // Without a valid token: refused.
    let (status, body) =
        common::http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/events?token=t1.0.0.1.0.00", None, "");
    assert_eq!(status, 401, "{body}");
}
