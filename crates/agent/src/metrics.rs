//! The agent's `GET /metrics`: this host (CPU, memory, load, disk and
//! network counters, read from `/proc`) and each running job (CPU seconds
//! and resident memory of its process group).
//!
//! Every scrape reads `/proc` afresh into a new registry, so a job's series
//! vanish with the job and nothing is cached between scrapes except the
//! CPU sampler's last reading. Every series carries a `node` label: several
//! agents emulating nodes on one host stay apart.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// A running job as the metrics see it: its step's session leader (steps
/// start with `setsid`, and a job's processes may make process groups of
/// their own, as `timeout` does, but stay in the session).
#[derive(Debug, Clone)]
struct Tracked {
    pid: i32,
    user: String,
    partition: String,
}

/// What `/metrics` reads: the jobs running here and the host's CPU use.
#[derive(Default)]
pub struct HostMetrics {
    node: String,
    jobs: Mutex<HashMap<u64, Tracked>>,
    /// Percent of all CPUs busy over the last sampling second.
    cpu_percent: Mutex<f64>,
}

impl HostMetrics {
    pub fn new(node: &str) -> Arc<HostMetrics> {
        Arc::new(HostMetrics { node: node.to_string(), ..HostMetrics::default() })
    }

    /// Starts following a step this agent launched, labelled from its order.
    pub fn track_launched(&self, job: u64, pid: i32, user: &str, partition: &str) {
        let tracked = Tracked { pid, user: user.to_string(), partition: partition.to_string() };
        self.jobs.lock().expect("tracked jobs lock").insert(job, tracked);
    }

    /// Starts following a step an earlier agent launched: its labels come
    /// from the process (its environment and uid).
    pub fn track(&self, job: u64, pid: i32) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let partition = environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"SLURM_JOB_PARTITION="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let user = proc_uid(pid).map(drover_auth::user_name).unwrap_or_default();
        self.jobs.lock().expect("tracked jobs lock").insert(job, Tracked { pid, user, partition });
    }

    pub fn untrack(&self, job: u64) {
        self.jobs.lock().expect("tracked jobs lock").remove(&job);
    }

    /// Samples `/proc/stat` every second for the busy percentage.
    pub async fn sample_cpu(self: Arc<Self>) {
        let mut last = cpu_times();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = cpu_times();
            if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now) {
                let total = total1.saturating_sub(total0);
                if total > 0 {
                    *self.cpu_percent.lock().expect("cpu lock") =
                        100.0 * busy1.saturating_sub(busy0) as f64 / total as f64;
                }
            }
            last = now;
        }
    }

    /// The exposition text (classic Prometheus format).
    pub fn scrape(&self) -> String {
        let mut root = Registry::default();
        let r = root.sub_registry_with_label(("node".into(), self.node.clone().into()));
        let gauge = |r: &mut Registry, name: &str, help: &str, v: f64| {
            let g = FloatGauge::default();
            g.set(v);
            r.register(name, help, g);
        };
        gauge(
            r,
            "node_cpu_percent",
            "Percent of the host's CPUs busy over the last second",
            *self.cpu_percent.lock().expect("cpu lock"),
        );
        if let Some(mem) = meminfo() {
            let used = mem.total.saturating_sub(mem.available);
            gauge(r, "node_memory_MemTotal_bytes", "The host's memory", mem.total as f64);
            gauge(r, "node_memory_MemUsed_bytes", "Memory in use: total minus available", used as f64);
            let percent = if mem.total > 0 { 100.0 * used as f64 / mem.total as f64 } else { 0.0 };
            gauge(r, "node_memory_percent", "Percent of the host's memory in use", percent);
        }
        if let Some([one, five, fifteen]) = loadavg() {
            gauge(r, "node_load1", "Load average over 1 minute", one);
            gauge(r, "node_load5", "Load average over 5 minutes", five);
            gauge(r, "node_load15", "Load average over 15 minutes", fifteen);
        }
        let counters = |r: &mut Registry, name: &str, help: &str, samples: Vec<(String, u64)>| {
            let f: Family<Labels, Counter> = Family::default();
            for (device, v) in samples {
                f.get_or_create(&vec![("device", device)]).inc_by(v);
            }
            r.register(name, help, f);
        };
        let disks = diskstats();
        counters(
            r,
            "node_disk_read_bytes",
            "Bytes read from each disk",
            disks.iter().map(|d| (d.0.clone(), d.1)).collect(),
        );
        counters(
            r,
            "node_disk_written_bytes",
            "Bytes written to each disk",
            disks.into_iter().map(|d| (d.0, d.2)).collect(),
        );
        let nets = netdev();
        counters(
            r,
            "node_network_receive_bytes",
            "Bytes received on each interface (not loopback)",
            nets.iter().map(|d| (d.0.clone(), d.1)).collect(),
        );
        counters(
            r,
            "node_network_transmit_bytes",
            "Bytes sent on each interface (not loopback)",
            nets.into_iter().map(|d| (d.0, d.2)).collect(),
        );
        self.job_metrics(r);
        let mut text = String::new();
        encode(&mut text, &root).expect("writing to a String cannot fail");
        drover_proto::classic_metrics_text(&text)
    }

    fn job_metrics(&self, r: &mut Registry) {
        let jobs = self.jobs.lock().expect("tracked jobs lock").clone();
        let running = Gauge::<i64>::default();
        running.set(jobs.len() as i64);
        r.register("drover_agent_jobs_running", "Jobs running on this node", running);
        let usage = session_usage(jobs.values().map(|t| t.pid).collect());
        let cpu: Family<Labels, FloatGauge> = Family::default();
        let rss: Family<Labels, Gauge> = Family::default();
        for (job, t) in &jobs {
            let Some(u) = usage.get(&t.pid) else { continue };
            let l = vec![("job_id", job.to_string()), ("user", t.user.clone()), ("partition", t.partition.clone())];
            cpu.get_or_create(&l).set(u.cpu_seconds);
            rss.get_or_create(&l).set(u.rss_bytes as i64);
        }
        r.register("drover_job_cpu_seconds", "CPU time used by a running job's processes", cpu);
        r.register("drover_job_rss_bytes", "Resident memory of a running job's processes", rss);
    }
}

/// (busy, total) jiffies of all CPUs, from the first line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

struct MemInfo {
    total: u64,
    available: u64,
}

fn meminfo() -> Option<MemInfo> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(MemInfo { total: field("MemTotal")?, available: field("MemAvailable").or_else(|| field("MemFree"))? })
}

fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut v = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([v.next()??, v.next()??, v.next()??])
}

/// (device, bytes read, bytes written) of whole disks: the block devices
/// the kernel lists in `/sys/block`, without loop and RAM disks.
fn diskstats() -> Vec<(String, u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/diskstats") else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            let whole = std::path::Path::new("/sys/block").join(name).exists();
            if !whole || name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            let sectors = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).map(|s| s * 512);
            Some((name.to_string(), sectors(5)?, sectors(9)?))
        })
        .collect()
}

/// (interface, bytes received, bytes sent), loopback left out.
fn netdev() -> Vec<(String, u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else { return Vec::new() };
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            (name != "lo").then(|| Some((name.to_string(), *f.first()?, *f.get(8)?)))?
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Usage {
    cpu_seconds: f64,
    rss_bytes: u64,
}

/// CPU time (with the reaped children's) and resident memory summed over
/// the members of each session in `sessions`, in one pass over `/proc`.
fn session_usage(sessions: Vec<i32>) -> HashMap<i32, Usage> {
    let mut out: HashMap<i32, Usage> = HashMap::new();
    if sessions.is_empty() {
        return out;
    }
    // SAFETY: sysconf only reads configuration.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let (ticks, page) = (ticks.max(1) as f64, page.max(1) as u64);
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name may hold spaces and parentheses: fields follow the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): session is field 6, utime..cstime 14..17, rss 24.
        let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let session = num(6) as i32;
        if !sessions.contains(&session) {
            continue;
        }
        let u = out.entry(session).or_default();
        u.cpu_seconds += (num(14) + num(15) + num(16) + num(17)) as f64 / ticks;
        u.rss_bytes += num(24).max(0) as u64 * page;
    }
    out
}

fn proc_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// `GET /metrics`, for the agent's listener.
pub fn routes(metrics: Arc<HostMetrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || metrics.scrape()).await.unwrap_or_default();
                ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text)
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_job_series_with_node_labels() {
        let m = HostMetrics::new("n1");
        // As a step runs: in a session of its own (`setsid` execs in place).
        let mut child = std::process::Command::new("setsid")
            .args(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5"])
            .env("SLURM_JOB_PARTITION", "debug")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(600));
        m.track(42, child.id() as i32);
        let text = m.scrape();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            text.contains("# TYPE node_memory_MemTotal_bytes gauge\nnode_memory_MemTotal_bytes{node=\"n1\"} "),
            "{text}"
        );
        assert!(text.contains("node_load1{node=\"n1\"} "), "{text}");
        assert!(!text.contains("# EOF"));
        let line = text.lines().find(|l| l.starts_with("drover_job_cpu_seconds{")).expect(&text);
        assert!(
            line.contains("job_id=\"42\"") && line.contains("partition=\"debug\"") && line.contains("node=\"n1\""),
            "{line}"
        );
        let cpu: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!(cpu > 0.0, "the busy loop used CPU: {line}");
        let rss = text.lines().find(|l| l.starts_with("drover_job_rss_bytes{")).expect(&text);
        assert!(rss.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap() > 100_000, "{rss}");
        m.untrack(42);
        assert!(!m.scrape().contains("job_id=\"42\""), "a job's series end with it");
    }
}
