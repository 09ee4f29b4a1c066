//! Golden scripts: text files of commands and the output they must produce,
//! in the spirit of toydb's testscripts. Behaviour is reviewed as text.
//!
//! Each block is one or more command lines, a `---` line, then the expected
//! output, then a blank line. Run with `UPDATE_GOLDEN=1` to rewrite the
//! expected output after an intended change, and review the diff.
//!
//! After every command the state's invariants are checked; after every file
//! the state must survive a snapshot round-trip and a replay of its log.

use drover_core::job::ExitStatus;
use drover_core::job::JobRef;
use drover_core::node::{NodeAction, RepairKind};
use drover_core::options::{SubmitContext, SubmitRequest};
use drover_core::sched::{self, SchedConfig, Select};
use drover_core::state::{CancelFilter, Config, RepairOutcome, Requester, Snapshot, StepOutcome};
use drover_core::step::{JobUpdate, StepRequest};
use drover_core::{hostlist, memory, partition::PartitionSpec, time, Command, JobState, Resources, State, Time};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

struct Runner {
    state: State,
    log: Vec<Command>,
    now: Time,
    /// Set by `once REQ`: the next command is wrapped as that request.
    once: Option<String>,
    /// Decayed use per user, for `schedule fairshare=W` (`usage` sets it).
    usage: sched::Usage,
}

const USERS: &[(&str, u32)] = &[("root", 0), ("alice", 1001), ("bob", 1002), ("carol", 1003)];

fn uid_of(user: &str) -> Result<u32, String> {
    USERS.iter().find(|u| u.0 == user).map(|u| u.1).ok_or(format!("unknown test user {user}"))
}

/// Splits `key=value` words out of an argument list.
fn kv<'a>(words: &'a [&'a str], key: &str) -> Option<&'a str> {
    words.iter().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn duration_ms(text: &str) -> Result<Time, String> {
    let (num, mult) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (text, 1000)
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|_| format!("bad duration {text}"))
}

/// Takes `--as USER` out of the words.
/// The job `submit` and `will-run` describe: `Err` for a script that is
/// wrong, `Ok(Err)` for a job refused as sbatch would refuse it.
fn spec_of(words: &mut Vec<&str>, now: Time) -> Result<Result<drover_core::JobSpec, String>, String> {
    let (user, _) = requester(words)?;
    let mut req = SubmitRequest::default();
    let rest = match req.apply_args(words) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !rest.is_empty() {
        return Err(format!("unexpected words {rest:?}"));
    }
    let ctx = SubmitContext {
        user: user.clone(),
        uid: uid_of(&user)?,
        gid: uid_of(&user)?,
        cwd: "/home/test".into(),
        host: "login".into(),
        now_secs: now / 1000,
        default_name: "job".into(),
        ..Default::default()
    };
    Ok(req.build(&ctx, "#!/bin/sh\ntrue\n").map_err(|e| e.to_string()))
}

fn requester(words: &mut Vec<&str>) -> Result<(String, Requester), String> {
    let mut user = "alice".to_string();
    if let Some(i) = words.iter().position(|w| *w == "--as") {
        user = words.get(i + 1).ok_or("--as needs a user")?.to_string();
        words.drain(i..i + 2);
    }
    let uid = uid_of(&user)?;
    Ok((user, Requester::user(uid)))
}

impl Runner {
    fn new() -> Runner {
        Runner { state: State::default(), log: Vec::new(), now: 0, once: None, usage: sched::Usage::default() }
    }

    fn apply(&mut self, cmd: Command, out: &mut String) {
        let cmd = match self.once.take() {
            Some(request) => Command::Once { request, cmd: Box::new(cmd) },
            None => cmd,
        };
        self.log.push(cmd.clone());
        match self.state.apply(cmd) {
            Ok(events) => {
                for e in events {
                    writeln!(out, "{e}").unwrap();
                }
            }
            Err(e) => writeln!(out, "error: {e}").unwrap(),
        }
        if let Err(e) = self.state.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    fn run(&mut self, line: &str, out: &mut String) -> Result<(), String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let cmd = words.remove(0);
        let now = self.now;
        match cmd {
            // `once REQ <command>`: the command as a client request that may be retried.
            "once" => {
                let request = (!words.is_empty()).then(|| words.remove(0)).ok_or("once needs a request id")?;
                self.once = Some(request.to_string());
                let rest = words.join(" ");
                let r = self.run(&rest, out);
                self.once = None;
                return r;
            }
            "config" => {
                let mut c = Config::default();
                if let Some(v) = kv(&words, "node_timeout") {
                    c.node_timeout_ms = if v == "none" { None } else { Some(duration_ms(v)?) };
                }
                if let Some(v) = kv(&words, "max_requeue") {
                    c.max_requeue = v.parse().map_err(|_| "bad max_requeue")?;
                }
                if let Some(v) = kv(&words, "backoff") {
                    c.requeue_backoff_ms = duration_ms(v)?;
                }
                if let Some(v) = kv(&words, "grace") {
                    c.over_time_grace_ms = duration_ms(v)?;
                }
                self.apply(Command::Configure(c), out);
            }
            "partition" => {
                let name = words.first().ok_or("partition needs a name")?;
                let mut p = PartitionSpec::new(name, kv(&words, "nodes").unwrap_or("ALL"));
                p.is_default = words.contains(&"default");
                p.up = !words.contains(&"down");
                p.max_time = kv(&words, "max_time").map(time::parse_time_limit).transpose()?.flatten();
                p.default_time = kv(&words, "default_time").map(time::parse_time_limit).transpose()?.flatten();
                self.apply(Command::SetPartition(p), out);
            }
            "register" => {
                let names = hostlist::expand(words.first().ok_or("register needs nodes")?)?;
                let cpus = kv(&words, "cpus").unwrap_or("4").parse().map_err(|_| "bad cpus")?;
                let mem_mb = memory::parse_memory_mb(kv(&words, "mem").unwrap_or("8G"))?;
                let gpus = kv(&words, "gpus").unwrap_or("0").parse().map_err(|_| "bad gpus")?;
                let features = kv(&words, "features").map_or(vec![], |f| f.split(',').map(String::from).collect());
                let known_steps: Vec<(u64, u32)> = kv(&words, "known")
                    .map(|k| {
                        k.split(',')
                            .map(|p| {
                                let (j, a) = p.split_once(':').unwrap_or((p, "0"));
                                (j.parse().unwrap_or(0), a.parse().unwrap_or(0))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for name in names {
                    self.apply(
                        Command::RegisterNode {
                            name: name.clone(),
                            addr: format!("{name}:6818"),
                            total: Resources::new(cpus, mem_mb, gpus),
                            features: features.clone(),
                            known_steps: known_steps.clone(),
                            now,
                        },
                        out,
                    );
                }
            }
            "define" => {
                // define NODES cpus=N mem=M [features=a,b] [--as USER]: cloud nodes, powered down.
                let (_, by) = requester(&mut words)?;
                let by = if by.uid == 1001 { Requester::ROOT } else { by };
                let names = hostlist::expand(words.first().ok_or("define needs nodes")?)?;
                let cpus = kv(&words, "cpus").unwrap_or("4").parse().map_err(|_| "bad cpus")?;
                let mem_mb = memory::parse_memory_mb(kv(&words, "mem").unwrap_or("8G"))?;
                let features = kv(&words, "features").map_or(vec![], |f| f.split(',').map(String::from).collect());
                let total = Resources::new(cpus, mem_mb, 0);
                self.apply(Command::DefineNodes { names, total, features, by, now }, out);
            }
            "at" => self.now = duration_ms(words.first().ok_or("at needs a time")?)?,
            "tick" => {
                if let Some(d) = words.first() {
                    self.now += duration_ms(d)?;
                }
                self.apply(Command::Tick { now: self.now }, out);
            }
            "submit" | "submit-batch" => {
                let count: usize = if cmd == "submit-batch" {
                    words.remove(0).parse().map_err(|_| "submit-batch needs a count")?
                } else {
                    1
                };
                match spec_of(&mut words, now)? {
                    Ok(spec) if count == 1 => self.apply(Command::Submit { spec: Arc::new(spec), now }, out),
                    Ok(spec) => self.apply(
                        Command::SubmitBatch { specs: (0..count).map(|_| Arc::new(spec.clone())).collect(), now },
                        out,
                    ),
                    Err(e) => writeln!(out, "error: {e}").unwrap(),
                }
            }
            "will-run" => {
                // `sbatch --test-only`: an estimate, and nothing changes.
                let spec = match spec_of(&mut words, now)? {
                    Ok(spec) => spec,
                    Err(e) => {
                        writeln!(out, "error: {e}").unwrap();
                        return Ok(());
                    }
                };
                let before = self.state.snapshot();
                let cfg = SchedConfig::default();
                match sched::estimate_start(&self.state, now, &cfg, &cfg.priority, &spec) {
                    Ok(e) => {
                        let nodes: Vec<&str> =
                            e.shares.iter().map(|s| self.state.nodes()[s.node as usize].name.as_str()).collect();
                        let cpus: u32 = e.shares.iter().map(|s| s.res.cpus).sum();
                        match e.start {
                            Some(t) => writeln!(
                                out,
                                "would start at +{}s on {} using {cpus} cpus in {}",
                                t.saturating_sub(now) / 1000,
                                nodes.join(","),
                                e.partition
                            ),
                            None => writeln!(out, "start not foreseeable in {}", e.partition),
                        }
                        .unwrap();
                    }
                    Err(e) => writeln!(out, "error: {e}").unwrap(),
                }
                if self.state.snapshot() != before {
                    return Err("will-run changed the state".into());
                }
            }
            "schedule" => {
                let cfg = SchedConfig {
                    select: if words.contains(&"bestfit") { Select::BestFit } else { Select::FirstFit },
                    backfill: !words.contains(&"nobackfill"),
                    max_running_per_user: kv(&words, "maxjobs")
                        .map(|w| w.parse::<u32>().map_err(|_| "bad maxjobs"))
                        .transpose()?,
                    ..Default::default()
                };
                let fairshare = kv(&words, "fairshare").map(|w| w.parse::<u64>().map_err(|_| "bad fairshare weight"));
                let plan = match fairshare.transpose()? {
                    Some(w) => {
                        let base = sched::Multifactor { weight_fairshare: w, ..cfg.priority.clone() };
                        sched::schedule_with(
                            &self.state,
                            now,
                            &cfg,
                            &sched::FairShare { base: &base, usage: &self.usage },
                        )
                    }
                    None => sched::schedule(&self.state, now, &cfg),
                };
                for (key, reason) in &plan.reasons {
                    writeln!(out, "reason {key} {reason}").unwrap();
                }
                if plan.is_empty() {
                    writeln!(out, "nothing to do").unwrap();
                } else {
                    self.apply(Command::Allocate { plan, now, term: 0 }, out);
                }
            }
            "allocate" => {
                // A hand-made decision, as a buggy or stale scheduler might send.
                let key = match JobRef::parse(words.first().ok_or("needs a job")?)? {
                    JobRef { id, task: None } => sched::JobKey::Job(id),
                    JobRef { id, task: Some(task) } => sched::JobKey::Task { array: id, task },
                };
                let node = words.get(1).ok_or("needs a node")?;
                let idx = self.state.node_index(node).ok_or("unknown node")?;
                let cpus = kv(&words, "cpus").unwrap_or("1").parse().map_err(|_| "bad cpus")?;
                let mem_mb = memory::parse_memory_mb(kv(&words, "mem").unwrap_or("0"))?;
                let plan = sched::Plan {
                    allocations: vec![sched::PlannedAllocation {
                        key,
                        shares: vec![drover_core::job::NodeShare {
                            node: idx,
                            res: Resources::new(cpus, mem_mb, 0),
                            tasks: 1,
                        }],
                        time_limit: None,
                        partition: kv(&words, "partition").unwrap_or("debug").to_string(),
                    }],
                    ..Default::default()
                };
                self.apply(Command::Allocate { plan, now, term: 0 }, out);
            }
            "cancel" => {
                let (_, by) = requester(&mut words)?;
                let mut filter = CancelFilter::default();
                let mut i = 0;
                while i < words.len() {
                    let value = words.get(i + 1).map(|s| s.to_string());
                    match words[i] {
                        "--user" => filter.user = value,
                        "--name" => filter.name = value,
                        "--partition" => filter.partition = value,
                        "--state" => filter.states.push(JobState::parse(&value.unwrap_or_default())?),
                        id => {
                            filter.jobs.push(JobRef::parse(id)?);
                            i += 1;
                            continue;
                        }
                    }
                    i += 2;
                }
                self.apply(Command::Cancel { filter, by, now }, out);
            }
            "hold" | "release" | "requeue" | "signal" => {
                let (_, mut by) = requester(&mut words)?;
                if words.contains(&"--admin") {
                    by = Requester::ROOT;
                }
                let job = JobRef::parse(words.first().ok_or("needs a job")?)?;
                let c = match cmd {
                    "hold" => Command::Hold { job, by, now },
                    "release" => Command::Release { job, by, now },
                    "signal" => Command::Signal { job, signal: 10, by, now },
                    _ => Command::Requeue { job, hold: words.contains(&"--hold"), by, now },
                };
                self.apply(c, out);
            }
            "start" | "finish" => {
                let id: u64 = words.first().ok_or("needs a job id")?.parse().map_err(|_| "bad job id")?;
                let attempt = match kv(&words, "attempt") {
                    Some(a) => a.parse().map_err(|_| "bad attempt")?,
                    None => self.state.job(id).map_or(0, |j| j.restart_count),
                };
                if cmd == "start" {
                    self.apply(Command::StepStarted { job: id, attempt, now }, out);
                } else {
                    let outcome = if let Some(code) = kv(&words, "exit") {
                        StepOutcome::Exited(code.parse().map_err(|_| "bad exit")?)
                    } else if let Some(sig) = kv(&words, "signal") {
                        StepOutcome::Signaled(sig.parse().map_err(|_| "bad signal")?)
                    } else if words.contains(&"oom") {
                        StepOutcome::OutOfMemory
                    } else if words.contains(&"timeout") {
                        StepOutcome::TimedOut
                    } else if words.contains(&"lost") {
                        StepOutcome::Lost
                    } else {
                        StepOutcome::Exited(0)
                    };
                    let max_rss_kb = kv(&words, "rss").map(|k| k.parse().map_err(|_| "bad rss")).transpose()?;
                    let cpu = kv(&words, "cpu").map(cpu_time).transpose()?;
                    // A start failure's words are joined by `_` in a script line.
                    let failure = kv(&words, "failure").map(|f| f.replace('_', " "));
                    // The reporting node, when the script names it.
                    let node = kv(&words, "on").unwrap_or_default().to_string();
                    self.apply(
                        Command::StepFinished { job: id, attempt, outcome, max_rss_kb, cpu, failure, node, now },
                        out,
                    );
                }
            }
            "srun" => {
                let (_, by) = requester(&mut words)?;
                let job = JobRef::parse(words.first().ok_or("needs a job")?)?;
                let num = |key: &str| -> Result<Option<u32>, String> {
                    kv(&words, key).map(|v| v.parse().map_err(|_| format!("bad {key}"))).transpose()
                };
                let request = StepRequest {
                    name: kv(&words, "name").unwrap_or("").to_string(),
                    ntasks: num("n")?,
                    nodes: num("N")?,
                    ntasks_per_node: num("per-node")?,
                    cpus_per_task: num("c")?,
                    overcommit: words.contains(&"overcommit"),
                    client_held: words.contains(&"held"),
                };
                self.apply(Command::CreateStep { job, request, by, now }, out);
            }
            "step-end" | "complete" => {
                let (_, by) = requester(&mut words)?;
                let target = words.first().ok_or("needs a job or step")?;
                let code = kv(&words, "exit").map_or(Ok(0), |c| c.parse().map_err(|_| "bad exit"))?;
                let exit = ExitStatus { code, signal: 0 };
                let c = match cmd {
                    "complete" => Command::Complete { job: JobRef::parse(target)?, exit, by, now },
                    _ => {
                        let (job, step) = target.split_once('.').ok_or("step-end needs JOB.STEP")?;
                        let job = job.parse().map_err(|_| "bad job id")?;
                        let step = step.parse().map_err(|_| "bad step id")?;
                        Command::EndStep { job, step, exit, cancelled: words.contains(&"cancelled"), by, now }
                    }
                };
                self.apply(c, out);
            }
            "update" => {
                let (_, mut by) = requester(&mut words)?;
                if words.contains(&"--admin") {
                    by = Requester::ROOT;
                }
                let job = JobRef::parse(words.first().ok_or("needs a job")?)?;
                let mut update = JobUpdate::default();
                if let Some(t) = kv(&words, "time") {
                    update.time_limit = Some(time::parse_time_limit(t)?);
                }
                update.partition = kv(&words, "partition").map(str::to_string);
                update.name = kv(&words, "name").map(str::to_string);
                update.nice = kv(&words, "nice").map(|n| n.parse().map_err(|_| "bad nice")).transpose()?;
                self.apply(Command::Update { job, update, by, now }, out);
            }
            "usage" => {
                // `usage alice=3600 bob=60`: CPU-seconds that ended now.
                let mut runs = Vec::new();
                for w in &words {
                    let (user, secs) = w.split_once('=').ok_or("usage takes USER=CPU_SECONDS")?;
                    runs.push((user.to_string(), secs.parse::<f64>().map_err(|_| "bad CPU seconds")?));
                }
                self.usage = sched::Usage::decayed(runs.iter().map(|(u, s)| (u.as_str(), now, *s)), now, 3_600_000);
            }
            "accounted" => {
                let jobs = words
                    .first()
                    .ok_or("needs job ids")?
                    .split(',')
                    .map(|j| j.parse().map_err(|_| format!("bad job id {j}")))
                    .collect::<Result<Vec<u64>, String>>()?;
                // `rev=R,…`: the revisions the writer saw.
                let revisions = match kv(&words, "rev") {
                    Some(r) => r.split(',').map(|r| r.parse().map_err(|_| "bad revision")).collect::<Result<_, _>>()?,
                    None => Vec::new(),
                };
                self.apply(Command::Accounted { jobs, revisions }, out);
            }
            "step-usage" => {
                // `step-usage JOB.STEP NODE rss=KB cpu=USER_MS/SYSTEM_MS`
                let target = words.first().ok_or("needs JOB.STEP")?;
                let (job, step) = target.split_once('.').ok_or("step-usage needs JOB.STEP")?;
                let node = words.get(1).ok_or("needs a node")?.to_string();
                let max_rss_kb = kv(&words, "rss").unwrap_or("0").parse().map_err(|_| "bad rss")?;
                let cpu = cpu_time(kv(&words, "cpu").unwrap_or("0/0"))?;
                let job = job.parse().map_err(|_| "bad job id")?;
                let step = step.parse().map_err(|_| "bad step id")?;
                self.apply(Command::StepUsage { job, step, node, max_rss_kb, cpu }, out);
            }
            "attempts" => {
                // Each job's earlier runs, as accounting will record them.
                for j in self.state.jobs().values() {
                    for a in &j.attempts {
                        let nodes: Vec<&str> =
                            a.alloc.shares.iter().map(|s| self.state.nodes()[s.node as usize].name.as_str()).collect();
                        writeln!(
                            out,
                            "{} attempt={} {} on {} ran {}s ({})",
                            j.display_id(),
                            a.attempt,
                            a.state,
                            nodes.join(","),
                            (a.end_time - a.start_time) / 1000,
                            a.reason
                        )
                        .unwrap();
                    }
                    if j.wants_accounting() || !j.attempts.is_empty() {
                        writeln!(out, "{} revision={} {}", j.display_id(), j.revision, j.state).unwrap();
                    }
                }
            }
            "unaccounted" => {
                let ids: Vec<String> = self.state.unaccounted_ids().iter().map(u64::to_string).collect();
                writeln!(out, "unaccounted: {}", ids.join(",")).unwrap();
            }
            "steps" => {
                for j in self.state.jobs().values() {
                    for s in &j.steps {
                        let names: Vec<&str> =
                            s.nodes.iter().map(|&n| self.state.nodes()[n as usize].name.as_str()).collect();
                        let tasks: Vec<String> = s.tasks.iter().map(u32::to_string).collect();
                        write!(
                            out,
                            "{}.{} {} {} {} tasks={}",
                            j.display_id(),
                            s.id,
                            s.name,
                            s.state,
                            names.join(","),
                            tasks.join(",")
                        )
                        .unwrap();
                        if let Some(e) = s.exit {
                            write!(out, " exit={e}").unwrap();
                        }
                        if let (Some(rss), Some(cpu)) = (s.max_rss_kb(), s.cpu_time()) {
                            write!(out, " rss={rss} cpu={}/{}", cpu.user_ms, cpu.system_ms).unwrap();
                        }
                        writeln!(out).unwrap();
                    }
                }
            }
            "limits" => {
                for j in self.state.jobs().values() {
                    let limit = j.alloc.as_ref().map_or(j.spec.time_limit, |a| a.time_limit);
                    let limit = limit.map_or("UNLIMITED".into(), time::format_duration);
                    writeln!(
                        out,
                        "{} {} {} limit={limit} nice={} partition={}",
                        j.display_id(),
                        j.spec.name,
                        j.state,
                        j.spec.nice,
                        j.spec.partition.as_deref().unwrap_or("-")
                    )
                    .unwrap();
                }
            }
            "heartbeat" => {
                for node in hostlist::expand(words.first().ok_or("needs nodes")?)? {
                    self.apply(Command::Heartbeat { node, now }, out);
                }
            }
            "down" => {
                let node = words.first().ok_or("needs a node")?.to_string();
                self.apply(Command::NodeDown { node, reason: words[1..].join(" "), now }, out);
            }
            "drain" | "fail" | "resume" | "admin-down" => {
                let (_, by) = requester(&mut words)?;
                let by = if by.uid == 1001 { Requester::ROOT } else { by };
                let node = words.first().ok_or("needs a node")?.to_string();
                let action = match cmd {
                    "drain" => NodeAction::Drain,
                    "fail" => NodeAction::Fail,
                    "resume" => NodeAction::Resume,
                    _ => NodeAction::Down,
                };
                let reason = (words.len() > 1).then(|| words[1..].join(" "));
                self.apply(Command::SetNodeState { node, action, reason, by, now }, out);
            }
            "repair" => {
                // repair NODE KIND TOKEN [deadline=DURATION]
                let deadline = kv(&words, "deadline").map(duration_ms).transpose()?.unwrap_or(30_000);
                let [node, kind, token] = [0, 1, 2].map(|i| words.get(i).map(|w| w.to_string()));
                let kind = match kind.as_deref() {
                    Some("replace") => RepairKind::Replace,
                    Some("resume") => RepairKind::Resume,
                    Some("suspend") => RepairKind::Suspend,
                    _ => return Err("repair NODE replace|resume|suspend TOKEN".into()),
                };
                let (node, token) = (node.ok_or("needs a node")?, token.ok_or("needs a token")?);
                let cmd =
                    Command::RepairStart { node, kind, provider: "test".into(), token, deadline: now + deadline, now };
                self.apply(cmd, out);
            }
            "repaired" => {
                // repaired NODE TOKEN acted DETAIL… | failed retry=DURATION|giveup ERROR…
                let node = words.first().ok_or("needs a node")?.to_string();
                let token = words.get(1).ok_or("needs a token")?.to_string();
                let outcome = match words.get(2).copied() {
                    Some("acted") => RepairOutcome::Acted { detail: words[3..].join(" ") },
                    Some("failed") => {
                        let retry_after_ms = match words.get(3).copied() {
                            Some("giveup") => None,
                            Some(r) => Some(duration_ms(r.strip_prefix("retry=").ok_or("retry=DURATION or giveup")?)?),
                            None => return Err("failed needs retry=DURATION or giveup".into()),
                        };
                        RepairOutcome::Failed { error: words[4..].join(" "), retry_after_ms }
                    }
                    _ => return Err("repaired NODE TOKEN acted|failed …".into()),
                };
                self.apply(Command::RepairResult { node, token, outcome, now }, out);
            }
            "jobs" => self.print_jobs(out),
            "dependency" => {
                // What a job's dependency still waits for, as scontrol shows it.
                let id: u64 = words.first().ok_or("needs a job id")?.parse().map_err(|_| "bad job id")?;
                let j = self.state.job(id).ok_or("no such job")?;
                let text = self.state.dependency_text(&j.spec, j.id, j.array);
                writeln!(out, "{id} Dependency={}", text.as_deref().unwrap_or("(null)")).unwrap();
            }
            "nodes" => {
                for n in self.state.nodes() {
                    write!(out, "{} {} alloc[{}] total[{}]", n.name, n.state_with_power(), n.alloc, n.total).unwrap();
                    if let Some(r) = &n.reason {
                        write!(out, " ({r})").unwrap();
                    }
                    writeln!(out).unwrap();
                }
            }
            other => return Err(format!("unknown golden command '{other}'")),
        }
        Ok(())
    }

    fn print_jobs(&self, out: &mut String) {
        for j in self.state.jobs().values() {
            write!(out, "{} {}", j.display_id(), j.state).unwrap();
            match (&j.alloc, j.state) {
                (_, JobState::Pending) => write!(out, " ({})", j.reason).unwrap(),
                (Some(a), s) if s.is_active() => {
                    let names: Vec<&str> =
                        a.shares.iter().map(|s| self.state.nodes()[s.node as usize].name.as_str()).collect();
                    write!(out, " {}", hostlist::compress(&names)).unwrap();
                }
                _ => {}
            }
            if let Some(e) = j.exit {
                write!(out, " exit={e}").unwrap();
            }
            if j.restart_count > 0 {
                write!(out, " restarts={}", j.restart_count).unwrap();
            }
            if let Some(why) = &j.failure {
                write!(out, " ({why})").unwrap();
            }
            writeln!(out).unwrap();
        }
        for a in self.state.arrays().values() {
            if !a.pending.is_empty() {
                writeln!(out, "{}_[{}] PENDING ({})", a.id, a.pending, a.reason).unwrap();
            }
        }
    }
}

/// Runs one file; returns the file as it should be.
fn run_file(text: &str) -> (String, Runner) {
    let mut r = Runner::new();
    let mut result = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            result.push_str(line);
            result.push('\n');
            continue;
        }
        let mut commands = vec![line];
        for l in lines.by_ref() {
            if l == "---" {
                break;
            }
            commands.push(l);
        }
        // Skip the old expected output.
        for l in lines.by_ref() {
            if l.is_empty() {
                break;
            }
        }
        let mut out = String::new();
        for c in &commands {
            if let Err(e) = r.run(c, &mut out) {
                panic!("bad golden command '{c}': {e}");
            }
        }
        if out.is_empty() {
            out.push_str("ok\n");
        }
        for c in commands {
            result.push_str(c);
            result.push('\n');
        }
        result.push_str("---\n");
        result.push_str(&out);
        result.push('\n');
    }
    (result, r)
}

/// Runs one golden file: its output must be what the file says, and the
/// state must come back identical from a snapshot and from a replay of its
/// command log. `UPDATE_GOLDEN=1` rewrites the file instead.
fn check_golden(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (expected, runner) = run_file(&text);
    let json = serde_json::to_string(&runner.state.snapshot()).unwrap();
    let restored = State::restore(serde_json::from_str::<Snapshot>(&json).unwrap());
    assert!(restored == runner.state, "{file}: snapshot round-trip changed the state");
    restored.check_invariants().unwrap();
    let mut replay = State::default();
    for c in runner.log {
        let _ = replay.apply(c);
    }
    assert!(replay == runner.state, "{file}: replay gave a different state");
    if expected != text {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &expected).unwrap();
        } else {
            panic!("{file}: golden output differs (UPDATE_GOLDEN=1 to accept):\n{}", diff(&text, &expected));
        }
    }
}

/// One test per golden file, so that a failure names its file.
macro_rules! golden {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_golden($file);
            }
        )*

        /// Every file in tests/golden has its test above.
        #[test]
        fn every_golden_file_has_a_test() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
            let mut files: Vec<String> =
                std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            files.sort();
            let mut listed = vec![$($file.to_string()),*];
            listed.sort();
            assert_eq!(files, listed, "add a line to golden! for each file in {}", dir.display());
        }
    };
}

golden! {
    basics => "01-basics.txt",
    bad_input => "02-bad-input.txt",
    arrays => "03-arrays.txt",
    dependencies => "04-dependencies.txt",
    backfill => "05-backfill.txt",
    failures => "06-failures.txt",
    nodes => "07-nodes.txt",
    cancel => "08-cancel.txt",
    node_selection => "09-node-selection.txt",
    retried_requests => "10-retried-requests.txt",
    steps_and_updates => "11-steps-and-updates.txt",
    accounting => "12-accounting.txt",
    fairshare => "13-fairshare.txt",
    user_limits => "14-user-limits.txt",
    test_only => "15-test-only.txt",
    start_failures => "16-start-failures.txt",
    repairs => "17-repairs.txt",
}

/// A minimal line diff, enough to see what changed.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                writeln!(out, "line {}:\n  - {}\n  + {}", i + 1, x.unwrap_or(&""), y.unwrap_or(&"")).unwrap();
            }
        }
    }
    out
}

/// `USER_MS/SYSTEM_MS`.
fn cpu_time(text: &str) -> Result<drover_core::job::CpuTime, String> {
    let (user, system) = text.split_once('/').ok_or("cpu takes USER_MS/SYSTEM_MS")?;
    let ms = |t: &str| t.parse::<u64>().map_err(|_| format!("bad CPU time {t}"));
    Ok(drover_core::job::CpuTime { user_ms: ms(user)?, system_ms: ms(system)? })
}
