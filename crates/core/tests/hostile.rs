//! Hostile commands: whatever JSON reaches the log, applying it never panics.
//!
//! A committed entry is applied on every controller and again at every
//! restart; one that panics takes the whole group down for good (issue #19:
//! an array with `step: 0` did). Here valid commands are serialized, their
//! numbers, strings and lists swapped for hostile values (zero, the type's
//! extremes, huge strings, empty lists, backwards ranges), and whatever
//! still parses is applied to a busy cluster, followed by scheduling passes,
//! launch orders, step grants and finishes. Nothing may panic, and the
//! state's invariants must hold after every command.

use drover_core::array::ArraySpec;
use drover_core::dependency::Dependency;
use drover_core::job::{JobRef, MemRequest, SignalSpec};
use drover_core::launch::{LaunchOrder, StepGrant};
use drover_core::partition::PartitionSpec;
use drover_core::sched::{self, SchedConfig};
use drover_core::state::{CancelFilter, Requester, StepOutcome};
use drover_core::step::{JobUpdate, StepRequest};
use drover_core::{Command, Event, JobSpec, Resources, State};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

/// A small deterministic generator: proptest shrinks the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const HOSTILE_NUMBERS: &[i128] = &[
    0,
    1,
    2,
    -1,
    i32::MIN as i128,
    i32::MAX as i128,
    u32::MAX as i128,
    u32::MAX as i128 + 1,
    4_000_000,
    4_000_001,
    i64::MAX as i128,
    u64::MAX as i128,
    u64::MAX as i128 - 1,
];

fn hostile_number(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => Value::from(rng.next()),
        1 => Value::from(rng.below(10)),
        _ => {
            let n = HOSTILE_NUMBERS[rng.below(HOSTILE_NUMBERS.len() as u64) as usize];
            if n < 0 {
                Value::from(n as i64)
            } else {
                Value::from(n as u64)
            }
        }
    }
}

fn hostile_string(rng: &mut Rng) -> Value {
    Value::from(match rng.below(6) {
        0 => String::new(),
        1 => "x".repeat(100_000),
        2 => "a\0b".to_string(),
        3 => "../../etc/shadow".to_string(),
        4 => "n[1-4000000]".to_string(),
        _ => "%j%a%u%x%N\n\t".to_string(),
    })
}

/// Replaces leaves of `v` (about one in `odds`) with hostile values.
fn mutate(v: &mut Value, rng: &mut Rng, odds: u64) {
    match v {
        Value::Number(_) if rng.below(odds) == 0 => *v = hostile_number(rng),
        Value::String(_) if rng.below(odds) == 0 => *v = hostile_string(rng),
        Value::Bool(b) if rng.below(odds) == 0 => *b = !*b,
        Value::Null if rng.below(odds) == 0 => {
            *v = if rng.below(2) == 0 { hostile_number(rng) } else { hostile_string(rng) }
        }
        Value::Array(items) => {
            if rng.below(odds * 2) == 0 {
                items.clear();
            } else if rng.below(odds * 2) == 0 && !items.is_empty() {
                let copy = items[0].clone();
                items.push(copy);
            }
            items.iter_mut().for_each(|i| mutate(i, rng, odds));
        }
        Value::Object(fields) => fields.values_mut().for_each(|f| mutate(f, rng, odds)),
        _ => {}
    }
}

fn full_spec() -> JobSpec {
    let mut s = JobSpec::simple("alice", "#!/bin/sh\ntrue\n");
    s.uid = 1001;
    s.ntasks = 2;
    s.nodes_max = 2;
    s.mem = MemRequest::PerCpu(100);
    s.time_limit = Some(600);
    s.time_min = Some(60);
    s.begin = Some(1);
    s.nice = 10;
    s.signal = Some(SignalSpec { signal: 10, secs_before: 60, batch_only: false });
    s.array = Some(ArraySpec::parse("0-99:3,200%4").unwrap());
    s.dependency = Some(Dependency::parse("afterany:1").unwrap());
    s.nodelist = vec!["n1".into()];
    s.environment = vec![("A".to_string(), "b".to_string())].into();
    s
}

fn templates() -> Vec<Command> {
    let alice = Requester::user(1001);
    let spec = Arc::new(full_spec());
    vec![
        Command::Submit { spec: spec.clone(), now: 10 },
        Command::Submit { spec: Arc::new(JobSpec::simple("bob", "true")), now: 10 },
        Command::SubmitBatch { specs: vec![spec.clone(), spec], now: 10 },
        Command::Update {
            job: JobRef::job(1),
            update: JobUpdate {
                time_limit: Some(Some(60)),
                partition: Some("debug".into()),
                name: Some("n".into()),
                nice: Some(5),
                comment: Some("c".into()),
            },
            by: alice,
            now: 10,
        },
        Command::CreateStep {
            job: JobRef::job(1),
            request: StepRequest {
                name: "s".into(),
                ntasks: Some(2),
                nodes: Some(1),
                ntasks_per_node: Some(2),
                cpus_per_task: Some(1),
                overcommit: true,
                client_held: true,
            },
            by: Requester::ROOT,
            now: 10,
        },
        Command::Signal { job: JobRef::job(1), signal: 10, by: alice, now: 10 },
        Command::Cancel {
            filter: CancelFilter { jobs: vec![JobRef { id: 3, task: Some(3) }], ..Default::default() },
            by: alice,
            now: 10,
        },
        Command::StepFinished {
            job: 1,
            attempt: 0,
            outcome: StepOutcome::Exited(0),
            max_rss_kb: Some(1),
            cpu: None,
            failure: Some("é\n".repeat(400)),
            node: String::new(),
            now: 10,
        },
        Command::RegisterNode {
            name: "n2".into(),
            addr: "127.0.0.1:1".into(),
            total: Resources::new(4, 8192, 2),
            features: vec!["f".into()],
            known_steps: vec![(1, 0)],
            now: 10,
        },
        Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "n[1-3]") }),
        Command::Requeue { job: JobRef::job(1), hold: true, by: Requester::ROOT, now: 10 },
        Command::Tick { now: 10 },
    ]
}

/// A cluster with three nodes, a running job, a pending array and a step.
fn busy() -> State {
    let mut s = State::default();
    s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "n[1-3]") }))
        .unwrap();
    for n in ["n1", "n2", "n3"] {
        let total = Resources::new(4, 8192, 1);
        s.apply(Command::RegisterNode {
            name: n.into(),
            addr: String::new(),
            total,
            features: vec![],
            known_steps: vec![],
            now: 0,
        })
        .unwrap();
    }
    let mut one = JobSpec::simple("alice", "true");
    one.uid = 1001;
    s.apply(Command::Submit { spec: Arc::new(one), now: 1 }).unwrap();
    let mut arr = JobSpec::simple("alice", "true");
    arr.uid = 1001;
    arr.array = Some(ArraySpec::parse("0-9").unwrap());
    s.apply(Command::Submit { spec: Arc::new(arr), now: 1 }).unwrap();
    pass(&mut s, 2);
    s
}

/// A scheduling pass and everything the controller derives from it.
fn pass(s: &mut State, now: u64) {
    let plan = sched::schedule(s, now, &SchedConfig::default());
    if let Ok(events) = s.apply(Command::Allocate { plan, now, term: 0 }) {
        derive(s, &events, now);
    }
}

/// What the controller builds from events: launch orders and step grants.
fn derive(s: &State, events: &[Event], now: u64) {
    for e in events {
        match e {
            Event::JobStarted { job, .. } => {
                for n in 0..s.nodes().len() as u32 {
                    let _ = LaunchOrder::for_job(s, *job, n);
                }
            }
            Event::StepCreated { job, step, .. } => {
                let _ = StepGrant::for_step(s, *job, *step, now);
            }
            _ => {}
        }
    }
}

fn run(seed: u64, rounds: usize) {
    let mut rng = Rng(seed | 1);
    let templates: Vec<Value> = templates().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
    let mut s = busy();
    let mut now = 100;
    for _ in 0..rounds {
        let mut v = templates[rng.below(templates.len() as u64) as usize].clone();
        mutate(&mut v, &mut rng, 4);
        let Ok(cmd) = serde_json::from_value::<Command>(v) else { continue };
        now += 1000;
        if let Ok(events) = s.apply(cmd) {
            derive(&s, &events, now);
        }
        s.check_invariants().unwrap();
        pass(&mut s, now);
        s.apply(Command::Tick { now }).unwrap();
        s.check_invariants().unwrap();
        // Every running job finishes, so the next round sees them end.
        let running: Vec<(u64, u32)> =
            s.jobs().values().filter(|j| j.state.is_active()).map(|j| (j.id, j.restart_count)).collect();
        for (job, attempt) in running.into_iter().take(2) {
            let outcome = StepOutcome::Exited(0);
            let _ = s.apply(Command::step_finished(job, attempt, outcome, now));
        }
        s.check_invariants().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn hostile_commands_never_panic_apply(seed in any::<u64>()) {
        run(seed, 12);
    }
}

/// The attack of issue #19, as it came: an array with step 0 in a REST
/// body. It must be refused, the same way on every replica.
#[test]
fn an_array_with_step_zero_is_refused_not_a_panic() {
    let mut v = serde_json::to_value(Command::Submit { spec: Arc::new(full_spec()), now: 10 }).unwrap();
    v["Submit"]["spec"]["array"]["tasks"]["runs"] = serde_json::json!([{"start": 0, "end": 10, "step": 0}]);
    v["Submit"]["spec"]["dependency"] = Value::Null;
    let cmd: Command = serde_json::from_value(v).unwrap();
    let mut s = busy();
    let before = s.next_job_id();
    let e = s.apply(cmd).unwrap_err();
    assert!(e.to_string().contains("malformed"), "{e}");
    assert_eq!(s.next_job_id(), before, "a refused submission takes no id");
}

/// Issue #19's big numbers: a time limit of 2^64-1 is refused, not carried
/// to an agent that adds it to a clock.
#[test]
fn numbers_past_their_bounds_are_refused_at_apply() {
    let mut s = busy();
    for break_it in [
        (|j: &mut JobSpec| j.time_limit = Some(u64::MAX)) as fn(&mut JobSpec),
        |j| j.begin = Some(u64::MAX),
        |j| j.array = Some(ArraySpec { tasks: drover_core::array::TaskSet::from_raw_runs(vec![]), max_running: None }),
        |j| j.cpus_per_task = u32::MAX,
        |j| j.nice = i32::MIN,
    ] {
        let mut j = JobSpec::simple("alice", "true");
        break_it(&mut j);
        assert!(s.apply(Command::Submit { spec: Arc::new(j), now: 5 }).is_err());
    }
    let update = JobUpdate { time_limit: Some(Some(u64::MAX)), ..Default::default() };
    let e = s.apply(Command::Update { job: JobRef::job(1), update, by: Requester::ROOT, now: 5 }).unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
}
