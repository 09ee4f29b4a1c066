//! `GET /metrics`: the cluster as Prometheus sees it.
//!
//! Three kinds of series, by where their numbers come from:
//! - read from the state at each scrape (jobs by state, pending reasons,
//!   nodes, per-user running CPUs) and from Raft's own view (term, leader,
//!   indexes): every controller answers them, leader or not;
//! - counted from the applied events (submitted, started, ended, requeued;
//!   queue wait and run time): every controller applies every event, so
//!   each counts from its own start, and `rate()` copes with the restarts;
//! - measured by the leader's loops and the HTTP layer (scheduling passes,
//!   heartbeat age, request latency).
//!
//! `docs/metrics.md` lists every series with example PromQL.

use drover_core::job::JobState;
use drover_core::{Event, JobSpec, State};
use drover_proto::Controllers;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Seconds, from 10 ms to about 3 days: queue waits and run times.
fn job_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 13))
}

/// Seconds, from 50 µs to about 1.6 s: scheduling passes, API requests.
fn short_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// Jobs per scheduling pass, 1 to 16 384.
fn job_counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 8))
}

/// The content type Prometheus' classic text parser (and `promtool`) reads.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics, which Prometheus asks for first.
pub const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    /// One scrape at a time: a scrape clears and refills the state gauges.
    scrape: Mutex<()>,

    jobs: Family<Labels, Gauge>,
    pending_reasons: Family<Labels, Gauge>,
    user_running_cpus: Family<Labels, Gauge>,
    nodes: Family<Labels, Gauge>,
    node_cpus: Family<Labels, Gauge>,
    node_cpus_alloc: Family<Labels, Gauge>,
    node_memory: Family<Labels, Gauge>,
    node_memory_alloc: Family<Labels, Gauge>,
    heartbeat_age: Family<Labels, FloatGauge>,

    raft_term: Gauge,
    raft_is_leader: Gauge,
    raft_leader_id: Gauge,
    raft_last_log_index: Gauge,
    raft_commit_index: Gauge,
    accounting_backlog: Gauge,
    accounting_lag: FloatGauge,
    raft_applied_index: Gauge,
    raft_snapshot_index: Gauge,
    raft_log_entries: Gauge,
    raft_voters: Gauge,
    raft_member_lag: Family<Labels, Gauge>,

    submitted: Family<Labels, Counter>,
    started: Family<Labels, Counter>,
    ended: Family<Labels, Counter>,
    completed: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    requeued: Family<Labels, Counter>,
    node_transitions: Family<Labels, Counter>,
    repairs: Family<Labels, Counter>,
    node_power: Family<Labels, Gauge>,
    nodes_in_repair: Family<Labels, Gauge>,
    queue_wait: Histograms,
    run_time: Histograms,

    pass_seconds: Histogram,
    pass_considered: Histogram,
    pass_started: Histogram,
    http_requests: Histograms,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            jobs: Family::default(),
            pending_reasons: Family::default(),
            user_running_cpus: Family::default(),
            nodes: Family::default(),
            node_cpus: Family::default(),
            node_cpus_alloc: Family::default(),
            node_memory: Family::default(),
            node_memory_alloc: Family::default(),
            heartbeat_age: Family::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_leader_id: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_commit_index: Gauge::default(),
            accounting_backlog: Gauge::default(),
            accounting_lag: FloatGauge::default(),
            raft_applied_index: Gauge::default(),
            raft_snapshot_index: Gauge::default(),
            raft_log_entries: Gauge::default(),
            raft_voters: Gauge::default(),
            raft_member_lag: Family::default(),
            submitted: Family::default(),
            started: Family::default(),
            ended: Family::default(),
            completed: Family::default(),
            repairs: Family::default(),
            node_power: Family::default(),
            nodes_in_repair: Family::default(),
            failed: Family::default(),
            requeued: Family::default(),
            node_transitions: Family::default(),
            queue_wait: Family::new_with_constructor(job_seconds),
            run_time: Family::new_with_constructor(job_seconds),
            pass_seconds: short_seconds(),
            pass_considered: job_counts(),
            pass_started: job_counts(),
            http_requests: Family::new_with_constructor(short_seconds),
        };
        // Every state a node can enter is known: each count is there from
        // the start, at 0, so that a dashboard's panel shows 0, not "no
        // data", until the first node goes DOWN.
        for state in drover_core::node::NodeState::ALL {
            let _ = m.node_transitions.get_or_create(&labels(&[("state", state.name())]));
        }
        m.register()
    }

    /// Makes a partition and user's job counts exist, at 0, the first time
    /// they submit: `rate()` and `increase()` then see the first failure
    /// or requeue as one, and panels show 0 rather than "no data".
    fn known_job_labels(&self, l: &Labels) {
        let _ = self.started.get_or_create(l);
        let _ = self.completed.get_or_create(l);
        let _ = self.requeued.get_or_create(l);
        for end in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            let mut with_state = l.clone();
            with_state.push(("state", end.name().to_string()));
            let _ = self.ended.get_or_create(&with_state);
            if matches!(end, JobState::Failed | JobState::Timeout | JobState::OutOfMemory | JobState::NodeFail) {
                let _ = self.failed.get_or_create(&with_state);
            }
        }
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "drover_jobs",
            "Jobs by state and partition (array tasks not yet started count one each)",
            self.jobs.clone(),
        );
        r.register("drover_jobs_pending_reason", "Pending jobs by the reason they wait", self.pending_reasons.clone());
        r.register("drover_user_running_cpus", "CPUs held by each user's running jobs", self.user_running_cpus.clone());
        r.register("drover_nodes", "Nodes by state", self.nodes.clone());
        r.register("drover_nodes_power", "Nodes by power state (power saving)", self.node_power.clone());
        r.register("drover_nodes_in_repair", "Nodes with a repair in flight, by kind", self.nodes_in_repair.clone());
        r.register(
            "drover_healer_actions",
            "The healer's repairs by provider, kind and result (started, acted, done, failed, gave_up)",
            self.repairs.clone(),
        );
        r.register("drover_node_cpus", "CPUs each node offers", self.node_cpus.clone());
        r.register("drover_node_cpus_allocated", "CPUs allocated to jobs on each node", self.node_cpus_alloc.clone());
        r.register("drover_node_memory_bytes", "Memory each node offers to jobs", self.node_memory.clone());
        r.register(
            "drover_node_memory_allocated_bytes",
            "Memory allocated to jobs on each node",
            self.node_memory_alloc.clone(),
        );
        r.register(
            "drover_node_heartbeat_age_seconds",
            "On the leader: seconds since each up node's agent was last heard from",
            self.heartbeat_age.clone(),
        );
        r.register("drover_raft_term", "The current Raft term", self.raft_term.clone());
        r.register("drover_raft_is_leader", "1 on the controller that leads, 0 elsewhere", self.raft_is_leader.clone());
        r.register(
            "drover_raft_leader_id",
            "The leader's id as this controller knows it (0: none)",
            self.raft_leader_id.clone(),
        );
        r.register(
            "drover_raft_last_log_index",
            "The last index in this controller's log",
            self.raft_last_log_index.clone(),
        );
        r.register("drover_raft_commit_index", "The last index known committed", self.raft_commit_index.clone());
        r.register(
            "drover_accounting_backlog_jobs",
            "Finished jobs not yet written to the accounting database",
            self.accounting_backlog.clone(),
        );
        r.register(
            "drover_accounting_lag_seconds",
            "How long the oldest finished job not yet in the accounting database has waited (0: none waits)",
            self.accounting_lag.clone(),
        );
        r.register("drover_raft_applied_index", "The last index applied to the state", self.raft_applied_index.clone());
        r.register(
            "drover_raft_snapshot_index",
            "The last index the snapshot covers",
            self.raft_snapshot_index.clone(),
        );
        r.register(
            "drover_raft_log_entries",
            "Entries kept in the log (last index minus the compacted ones)",
            self.raft_log_entries.clone(),
        );
        r.register("drover_raft_voters", "Voting members of the group", self.raft_voters.clone());
        r.register(
            "drover_raft_member_lag_entries",
            "On the leader: entries each member is behind it",
            self.raft_member_lag.clone(),
        );
        r.register("drover_jobs_submitted", "Jobs submitted (an array counts its tasks)", self.submitted.clone());
        r.register("drover_jobs_started", "Job starts (a requeued job counts each start)", self.started.clone());
        r.register("drover_jobs_ended", "Jobs that ended, by final state", self.ended.clone());
        r.register("drover_jobs_completed", "Jobs that ended COMPLETED", self.completed.clone());
        r.register(
            "drover_jobs_failed",
            "Jobs that ended FAILED, TIMEOUT, OUT_OF_MEMORY or NODE_FAIL",
            self.failed.clone(),
        );
        r.register("drover_jobs_requeued", "Requeues (node failures, operators, preemption)", self.requeued.clone());
        r.register(
            "drover_node_state_changes",
            "Node state changes, by the state entered",
            self.node_transitions.clone(),
        );
        r.register(
            "drover_job_queue_wait_seconds",
            "Time from eligible (submitted, begin time reached) to started",
            self.queue_wait.clone(),
        );
        r.register("drover_job_run_seconds", "Time from started to ended", self.run_time.clone());
        r.register(
            "drover_scheduler_pass_seconds",
            "Time the leader took to plan one scheduling pass",
            self.pass_seconds.clone(),
        );
        r.register(
            "drover_scheduler_pass_jobs_considered",
            "Pending jobs a pass looked at",
            self.pass_considered.clone(),
        );
        r.register("drover_scheduler_pass_jobs_started", "Jobs a pass started", self.pass_started.clone());
        r.register(
            "drover_http_request_seconds",
            "REST API latency, by route, method and status (streams: until the headers)",
            self.http_requests.clone(),
        );
        self
    }

    /// Counts what an applied event says happened; `state` is read for the
    /// job's user, partition and times.
    pub fn observe(&self, e: &Event, state: &State) {
        let job_labels = |spec: &JobSpec| labels(&[("partition", partition_of(state, spec)), ("user", &spec.user)]);
        match e {
            Event::JobSubmitted { job, array_tasks } => {
                let spec = state.job(*job).map(|j| &j.spec).or_else(|| state.array(*job).map(|a| &a.spec));
                if let Some(spec) = spec {
                    let l = job_labels(spec);
                    let new = self.submitted.get(&l).is_none();
                    self.submitted.get_or_create(&l).inc_by(array_tasks.unwrap_or(1));
                    if new {
                        self.known_job_labels(&l);
                    }
                }
            }
            Event::JobStarted { job, .. } => {
                if let Some(j) = state.job(*job) {
                    let l = job_labels(&j.spec);
                    self.started.get_or_create(&l).inc();
                    if let Some(start) = j.start_time {
                        let eligible = j.eligible_time.max(j.submit_time);
                        self.queue_wait
                            .get_or_create(&l[..1].to_vec())
                            .observe(seconds(start.saturating_sub(eligible)));
                    }
                }
            }
            Event::JobFinished { job, state: end, .. } => {
                let Some(j) = state.job(*job) else { return };
                let l = job_labels(&j.spec);
                let mut with_state = l.clone();
                with_state.push(("state", end.name().to_string()));
                self.ended.get_or_create(&with_state).inc();
                match end {
                    JobState::Completed => {
                        self.completed.get_or_create(&l).inc();
                    }
                    JobState::Failed | JobState::Timeout | JobState::OutOfMemory | JobState::NodeFail => {
                        self.failed.get_or_create(&with_state).inc();
                    }
                    _ => {}
                }
                if let (Some(start), Some(end)) = (j.start_time, j.end_time) {
                    self.run_time.get_or_create(&l[..1].to_vec()).observe(seconds(end.saturating_sub(start)));
                }
            }
            Event::JobRequeued { job, .. } => {
                if let Some(j) = state.job(*job) {
                    self.requeued.get_or_create(&job_labels(&j.spec)).inc();
                }
            }
            Event::NodeStateChanged { to, .. } => {
                self.node_transitions.get_or_create(&labels(&[("state", to.name())])).inc();
            }
            Event::RepairStarted { kind, provider, .. } => {
                let l = labels(&[("provider", provider), ("kind", kind.name()), ("result", "started")]);
                self.repairs.get_or_create(&l).inc();
            }
            Event::RepairActed { kind, provider, .. } | Event::RepairDone { kind, provider, .. } => {
                let result = if matches!(e, Event::RepairActed { .. }) { "acted" } else { "done" };
                let l = labels(&[("provider", provider), ("kind", kind.name()), ("result", result)]);
                self.repairs.get_or_create(&l).inc();
            }
            Event::RepairFailed { kind, provider, gave_up, .. } => {
                let result = if *gave_up { "gave_up" } else { "failed" };
                self.repairs
                    .get_or_create(&labels(&[("provider", provider), ("kind", kind.name()), ("result", result)]))
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts applied events for the life of the controller.
    pub async fn run(self: Arc<Self>, shared: Arc<crate::machine::Shared>) {
        let mut events = shared.subscribe();
        while let Some((_, e)) = events.recv().await {
            shared.read(|s| self.observe(&e, s));
        }
    }

    /// One scheduling pass of the leader: how long planning took, how many
    /// jobs waited, how many it started.
    pub fn pass(&self, took: Duration, considered: usize, started: usize) {
        self.pass_seconds.observe(took.as_secs_f64());
        self.pass_considered.observe(considered as f64);
        self.pass_started.observe(started as f64);
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let l = labels(&[("route", route), ("method", method), ("status", &status.to_string())]);
        self.http_requests.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// The exposition text: the state's and Raft's gauges as of now, then
    /// everything counted so far. `openmetrics` picks the format.
    /// `with_state` lends the state for the gauges' refresh only: the text is
    /// written after, without holding the state's lock.
    pub fn scrape(
        &self,
        with_state: impl FnOnce(&mut dyn FnMut(&State)),
        raft: &Controllers,
        heartbeats: &[(String, Duration)],
        openmetrics: bool,
    ) -> String {
        let _one = self.scrape.lock().expect("scrape lock");
        with_state(&mut |s| self.refresh_state(s));
        self.refresh_raft(raft);
        self.heartbeat_age.clear();
        for (node, age) in heartbeats {
            self.heartbeat_age.get_or_create(&labels(&[("node", node)])).set(age.as_secs_f64());
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        if openmetrics {
            text
        } else {
            drover_proto::classic_metrics_text(&text)
        }
    }

    fn refresh_state(&self, s: &State) {
        for f in [
            &self.jobs,
            &self.pending_reasons,
            &self.user_running_cpus,
            &self.nodes,
            &self.node_power,
            &self.nodes_in_repair,
        ] {
            f.clear();
        }
        for f in [&self.node_cpus, &self.node_cpus_alloc, &self.node_memory, &self.node_memory_alloc] {
            f.clear();
        }
        let mut jobs: HashMap<(&'static str, &str), i64> = HashMap::new();
        let mut reasons: HashMap<&'static str, i64> = HashMap::new();
        let mut cpus: HashMap<&str, i64> = HashMap::new();
        for j in s.jobs().values() {
            *jobs.entry((j.state.name(), partition_of(s, &j.spec))).or_default() += 1;
            if j.state == JobState::Pending {
                *reasons.entry(j.reason.name()).or_default() += 1;
            }
            if j.state.is_active() {
                let held = j.alloc.as_ref().map_or(0, |a| a.total().cpus);
                *cpus.entry(j.spec.user.as_str()).or_default() += i64::from(held);
            }
        }
        for a in s.arrays().values() {
            let waiting = a.pending.len() as i64;
            if waiting > 0 {
                *jobs.entry((JobState::Pending.name(), partition_of(s, &a.spec))).or_default() += waiting;
                *reasons.entry(a.reason.name()).or_default() += waiting;
            }
        }
        for ((state, partition), n) in jobs {
            self.jobs.get_or_create(&labels(&[("state", state), ("partition", partition)])).set(n);
        }
        for (reason, n) in reasons {
            self.pending_reasons.get_or_create(&labels(&[("reason", reason)])).set(n);
        }
        for (user, n) in cpus {
            self.user_running_cpus.get_or_create(&labels(&[("user", user)])).set(n);
        }
        let unwritten = s.unaccounted_ids();
        self.accounting_backlog.set(unwritten.len() as i64);
        let oldest = unwritten.iter().filter_map(|id| s.job(*id)?.end_time).min();
        let now = crate::loops::now_ms();
        self.accounting_lag.set(oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0));
        for n in s.nodes() {
            self.nodes.get_or_create(&labels(&[("state", n.state().name())])).inc();
            self.node_power.get_or_create(&labels(&[("power", n.power.name())])).inc();
            if let Some(r) = &n.repair {
                self.nodes_in_repair.get_or_create(&labels(&[("kind", r.kind.name())])).inc();
            }
            let l = labels(&[("node", &n.name)]);
            self.node_cpus.get_or_create(&l).set(i64::from(n.total.cpus));
            self.node_cpus_alloc.get_or_create(&l).set(i64::from(n.alloc.cpus));
            self.node_memory.get_or_create(&l).set(n.total.mem_mb.saturating_mul(1 << 20).min(i64::MAX as u64) as i64);
            self.node_memory_alloc
                .get_or_create(&l)
                .set(n.alloc.mem_mb.saturating_mul(1 << 20).min(i64::MAX as u64) as i64);
        }
    }

    fn refresh_raft(&self, c: &Controllers) {
        let set = |g: &Gauge, v: u64| g.set(v as i64);
        set(&self.raft_term, c.term);
        set(&self.raft_is_leader, u64::from(c.leader == Some(c.this) && c.role == "Leader"));
        set(&self.raft_leader_id, c.leader.unwrap_or(0));
        set(&self.raft_last_log_index, c.last_log_index.unwrap_or(0));
        set(&self.raft_commit_index, c.committed_index.unwrap_or(0));
        set(&self.raft_applied_index, c.applied_index.unwrap_or(0));
        set(&self.raft_snapshot_index, c.snapshot_index.unwrap_or(0));
        set(&self.raft_log_entries, c.last_log_index.unwrap_or(0).saturating_sub(c.purged_index.unwrap_or(0)));
        set(&self.raft_voters, c.members.iter().filter(|m| m.voter).count() as u64);
        self.raft_member_lag.clear();
        for m in &c.members {
            if let Some(lag) = m.lag {
                self.raft_member_lag.get_or_create(&labels(&[("member", &m.id.to_string())])).set(lag as i64);
            }
        }
    }
}

/// The partition a job runs in: its own, or the default one.
fn partition_of<'s>(s: &'s State, spec: &'s JobSpec) -> &'s str {
    s.partition_for(spec).map_or_else(|_| spec.partition.as_deref().unwrap_or_default(), |p| p.name())
}

/// Whether a scraper prefers OpenMetrics (Prometheus says so in `Accept`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::Member;

    fn leader_view() -> Controllers {
        let member = |id, lag| Member { id, addr: format!("10.0.0.{id}:6817"), voter: true, matched_index: lag, lag };
        Controllers {
            this: 2,
            leader: Some(2),
            term: 7,
            role: "Leader".into(),
            last_log_index: Some(1200),
            committed_index: Some(1200),
            applied_index: Some(1200),
            snapshot_index: Some(1000),
            purged_index: Some(900),
            members: vec![member(1, Some(3)), member(2, Some(0)), member(3, None)],
        }
    }

    #[test]
    fn raft_view_and_counters_in_classic_text() {
        let m = Metrics::new();
        m.node_transitions.get_or_create(&labels(&[("state", "DOWN")])).inc();
        m.pass(Duration::from_millis(3), 10, 2);
        let state = State::new(drover_core::state::Config::default());
        let text = m.scrape(|f| f(&state), &leader_view(), &[("n1".into(), Duration::from_millis(1500))], false);
        assert!(text.contains("# TYPE drover_raft_term gauge\ndrover_raft_term 7\n"), "{text}");
        assert!(text.contains("drover_raft_is_leader 1\n"));
        assert!(text.contains("drover_raft_log_entries 300\n"));
        assert!(text.contains("drover_raft_member_lag_entries{member=\"1\"} 3\n"));
        assert!(!text.contains("member=\"3\""), "no lag known for member 3: {text}");
        assert!(text.contains("drover_node_heartbeat_age_seconds{node=\"n1\"} 1.5\n"), "{text}");
        assert!(
            text.contains(
                "# HELP drover_node_state_changes_total Node state changes, by the state entered.\n\
                 # TYPE drover_node_state_changes_total counter\n"
            ),
            "{text}"
        );
        assert!(text.contains("drover_node_state_changes_total{state=\"DOWN\"} 1\n"), "{text}");
        assert!(text.contains("drover_scheduler_pass_jobs_started_count 1\n"), "{text}");
        assert!(!text.contains("# EOF"));
        let open = m.scrape(|f| f(&state), &leader_view(), &[], true);
        assert!(open.ends_with("# EOF\n") && open.contains("# TYPE drover_node_state_changes counter\n"));
        assert!(!open.contains("heartbeat_age_seconds{"), "series of nodes no longer reported go away");
    }

    /// Issue #20 item 12: counts with known labels exist at 0 before their
    /// first increment (a Grafana panel shows 0, not "no data").
    #[test]
    fn known_counts_are_there_at_zero_before_they_first_count() {
        let m = Metrics::new();
        let mut state = State::new(drover_core::state::Config::default());
        let text = m.scrape(|f| f(&state), &leader_view(), &[], false);
        for node_state in ["DOWN", "DRAINED", "IDLE", "FAIL"] {
            let line = format!("drover_node_state_changes_total{{state=\"{node_state}\"}} 0\n");
            assert!(text.contains(&line), "{line}:\n{text}");
        }
        assert!(!text.contains("drover_jobs_failed_total{"), "no user is known yet");

        let part = drover_core::partition::PartitionSpec {
            is_default: true,
            ..drover_core::partition::PartitionSpec::new("debug", "n1")
        };
        state.apply(drover_core::state::Command::SetPartition(part)).unwrap();
        let spec = std::sync::Arc::new(JobSpec::simple("alice", "#!/bin/sh\ntrue\n"));
        for e in state.apply(drover_core::state::Command::Submit { spec, now: 1 }).unwrap() {
            m.observe(&e, &state);
        }
        let text = m.scrape(|f| f(&state), &leader_view(), &[], false);
        let who = "partition=\"debug\",user=\"alice\"";
        for line in [
            format!("drover_jobs_submitted_total{{{who}}} 1\n"),
            format!("drover_jobs_started_total{{{who}}} 0\n"),
            format!("drover_jobs_requeued_total{{{who}}} 0\n"),
            format!("drover_jobs_failed_total{{{who},state=\"TIMEOUT\"}} 0\n"),
            format!("drover_jobs_ended_total{{{who},state=\"CANCELLED\"}} 0\n"),
        ] {
            assert!(text.contains(&line), "{line}:\n{text}");
        }
    }
}
