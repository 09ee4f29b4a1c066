//! Property tests: random command sequences against the state machine's
//! invariants, and random text against every parser.

use drover_core::array::ArraySpec;
use drover_core::dependency::Dependency;
use drover_core::job::{JobRef, MemRequest};
use drover_core::node::NodeAction;
use drover_core::options::{self, SubmitRequest};
use drover_core::partition::PartitionSpec;
use drover_core::sched::{self, SchedConfig, Select};
use drover_core::state::{CancelFilter, Config, Requester, Snapshot, StepOutcome};
use drover_core::{hostlist, memory, script, time, Command, Event, JobSpec, JobState, NodeState, Resources, State};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        cpus: u32,
        tasks: u32,
        nodes: Option<u32>,
        mem: Option<u64>,
        time: Option<u64>,
        array: Option<u32>,
        dep: Option<(u8, usize)>,
        hold: bool,
        requeue: bool,
        user: u32,
    },
    Schedule {
        best_fit: bool,
        backfill: bool,
    },
    Finish {
        job: usize,
        outcome: u8,
        stale: bool,
    },
    Cancel {
        job: usize,
        user: u32,
    },
    CancelAll {
        user: u32,
    },
    Down {
        node: usize,
    },
    Register {
        node: usize,
        cpus: u32,
        known: Vec<usize>,
    },
    Drain {
        node: usize,
    },
    Resume {
        node: usize,
    },
    Tick {
        advance: u64,
        heartbeat: bool,
    },
    Requeue {
        job: usize,
        hold: bool,
    },
    Hold {
        job: usize,
    },
    Release {
        job: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, 1u32..5, proptest::option::of(1u32..3), proptest::option::of(0u64..6000),
              proptest::option::of(1u64..120), proptest::option::weighted(0.2, 1u32..6),
              proptest::option::weighted(0.2, (0u8..4, 0usize..20)), proptest::bool::weighted(0.1),
              any::<bool>(), 0u32..3)
            .prop_map(|(cpus, tasks, nodes, mem, time, array, dep, hold, requeue, user)| {
                Op::Submit { cpus, tasks, nodes, mem, time, array, dep, hold, requeue, user }
            }),
        4 => (any::<bool>(), proptest::bool::weighted(0.8)).prop_map(|(best_fit, backfill)| Op::Schedule { best_fit, backfill }),
        4 => (0usize..30, 0u8..6, proptest::bool::weighted(0.1)).prop_map(|(job, outcome, stale)| Op::Finish { job, outcome, stale }),
        1 => (0usize..30, 0u32..3).prop_map(|(job, user)| Op::Cancel { job, user }),
        1 => (0u32..3).prop_map(|user| Op::CancelAll { user }),
        1 => (0usize..NODES).prop_map(|node| Op::Down { node }),
        1 => (0usize..NODES, 2u32..6, proptest::collection::vec(0usize..30, 0..3)).prop_map(|(node, cpus, known)| Op::Register { node, cpus, known }),
        1 => (0usize..NODES).prop_map(|node| Op::Drain { node }),
        1 => (0usize..NODES).prop_map(|node| Op::Resume { node }),
        2 => (0u64..20_000, any::<bool>()).prop_map(|(advance, heartbeat)| Op::Tick { advance, heartbeat }),
        1 => (0usize..30, any::<bool>()).prop_map(|(job, hold)| Op::Requeue { job, hold }),
        1 => (0usize..30).prop_map(|job| Op::Hold { job }),
        1 => (0usize..30).prop_map(|job| Op::Release { job }),
    ]
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Job ids handed out so far (ids are dense from 1).
fn job_id(state: &State, pick: usize) -> u64 {
    let max = state.next_job_id().saturating_sub(1).max(1);
    (pick as u64 % max) + 1
}

fn to_commands(state: &State, op: &Op, now: u64) -> Vec<Command> {
    let by = |user: u32| Requester::user(if user == 0 { 0 } else { 1000 + user });
    match op.clone() {
        Op::Submit { cpus, tasks, nodes, mem, time, array, dep, hold, requeue, user } => {
            let mut spec = JobSpec::simple(&format!("u{user}"), "true");
            spec.uid = 1000 + user;
            spec.cpus_per_task = cpus;
            spec.ntasks = tasks.max(nodes.unwrap_or(1));
            if let Some(n) = nodes {
                (spec.nodes_min, spec.nodes_max, spec.nodes_given) = (n, n, true);
            } else {
                spec.nodes_max = spec.ntasks;
            }
            spec.mem = mem.map_or(MemRequest::Default, MemRequest::PerNode);
            spec.time_limit = time.map(|m| m * 60);
            spec.array = array.map(|n| ArraySpec::parse(&format!("0-{n}%2")).unwrap());
            spec.hold = hold;
            spec.requeue = requeue;
            if let Some((kind, pick)) = dep {
                if state.next_job_id() > 1 {
                    let kinds = ["afterok", "afterany", "afternotok", "singleton"];
                    let text = if kind == 3 {
                        "singleton".to_string()
                    } else {
                        format!("{}:{}", kinds[kind as usize], job_id(state, pick))
                    };
                    spec.dependency = Some(Dependency::parse(&text).unwrap());
                }
            }
            vec![Command::Submit { spec: Arc::new(spec), now }]
        }
        Op::Schedule { best_fit, backfill } => {
            let cfg = SchedConfig {
                select: if best_fit { Select::BestFit } else { Select::FirstFit },
                backfill,
                ..Default::default()
            };
            let plan = sched::schedule(state, now, &cfg);
            vec![Command::Allocate { plan, now, term: 0 }]
        }
        Op::Finish { job, outcome, stale } => {
            let id = job_id(state, job);
            let attempt = state.job(id).map_or(0, |j| j.restart_count) + u32::from(stale);
            let outcome = match outcome {
                0 => StepOutcome::Exited(0),
                1 => StepOutcome::Exited(2),
                2 => StepOutcome::Signaled(9),
                3 => StepOutcome::OutOfMemory,
                4 => StepOutcome::Lost,
                _ => StepOutcome::TimedOut,
            };
            vec![Command::step_finished(id, attempt, outcome, now)]
        }
        Op::Cancel { job, user } => {
            let filter = CancelFilter { jobs: vec![JobRef::job(job_id(state, job))], ..Default::default() };
            vec![Command::Cancel { filter, by: by(user), now }]
        }
        Op::CancelAll { user } => vec![Command::Cancel { filter: CancelFilter::default(), by: by(user), now }],
        Op::Down { node } => vec![Command::NodeDown { node: node_name(node), reason: "test".into(), now }],
        Op::Register { node, cpus, known } => {
            let known_steps = known
                .iter()
                .map(|&k| {
                    let id = job_id(state, k);
                    (id, state.job(id).map_or(0, |j| j.restart_count))
                })
                .collect();
            vec![Command::RegisterNode {
                name: node_name(node),
                addr: String::new(),
                total: Resources::new(cpus, 8192, 0),
                features: vec![],
                known_steps,
                now,
            }]
        }
        Op::Drain { node } => vec![Command::SetNodeState {
            node: node_name(node),
            action: NodeAction::Drain,
            reason: Some("t".into()),
            by: Requester::ROOT,
            now,
        }],
        Op::Resume { node } => vec![Command::SetNodeState {
            node: node_name(node),
            action: NodeAction::Resume,
            reason: None,
            by: Requester::ROOT,
            now,
        }],
        Op::Tick { heartbeat, .. } => {
            let mut v: Vec<Command> = if heartbeat {
                (0..NODES).map(|i| Command::Heartbeat { node: node_name(i), now }).collect()
            } else {
                vec![]
            };
            v.push(Command::Tick { now });
            v
        }
        Op::Requeue { job, hold } => {
            vec![Command::Requeue { job: JobRef::job(job_id(state, job)), hold, by: Requester::ROOT, now }]
        }
        Op::Hold { job } => {
            vec![Command::Hold { job: JobRef::job(job_id(state, job)), by: Requester::user(1001), now }]
        }
        Op::Release { job } => {
            vec![Command::Release { job: JobRef::job(job_id(state, job)), by: Requester::user(1001), now }]
        }
    }
}

fn initial() -> (State, Vec<Command>) {
    let mut cmds = vec![
        Command::Configure(Config { node_timeout_ms: Some(15_000), max_requeue: 2, ..Config::default() }),
        Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "n[1-3]") }),
    ];
    for i in 0..NODES {
        cmds.push(Command::RegisterNode {
            name: node_name(i),
            addr: String::new(),
            total: Resources::new(4, 8192, 0),
            features: vec![],
            known_steps: vec![],
            now: 0,
        });
    }
    let mut s = State::default();
    for c in &cmds {
        s.apply(c.clone()).unwrap();
    }
    (s, cmds)
}

fn terminal_jobs(state: &State) -> BTreeMap<u64, drover_core::job::Job> {
    state.jobs().values().filter(|j| j.state.is_terminal()).map(|j| (j.id, j.clone())).collect()
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer hunt.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn state_machine_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        let (mut state, mut log) = initial();
        state.track_changes();
        state.take_changes();
        let mut now = 0;
        let mut mid_snapshot: Option<(Snapshot, usize)> = None;
        for (i, op) in ops.iter().enumerate() {
            if let Op::Tick { advance, .. } = op { now += advance; } else { now += 100; }
            let before = terminal_jobs(&state);
            for cmd in to_commands(&state, op, now) {
                let fresh_plan = matches!(cmd, Command::Allocate { .. });
                log.push(cmd.clone());
                let copy = state.clone();
                match state.apply(cmd) {
                    Ok(events) => {
                        // A plan made on this very state is valid in full.
                        if fresh_plan {
                            let rejected: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::AllocationRejected { .. })).collect();
                            prop_assert!(rejected.is_empty(), "fresh plan rejected: {:?}", rejected);
                        }
                    }
                    // A refused command changes nothing.
                    Err(_) => prop_assert!(copy == state, "a failed command changed the state"),
                }
                if let Err(e) = state.check_invariants() {
                    prop_assert!(false, "invariant broken after {:?}: {}", op, e);
                }
                // Every job and array that changed is in the change list.
                let changes = state.take_changes();
                if !changes.all {
                    prop_assert!(copy.partitions() == state.partitions(), "partitions changed unreported");
                    let ids = |a: &State, b: &State| {
                        a.jobs().keys().chain(b.jobs().keys()).copied().collect::<std::collections::BTreeSet<u64>>()
                    };
                    for id in ids(&copy, &state) {
                        if copy.job(id) != state.job(id) {
                            prop_assert!(changes.jobs.binary_search(&id).is_ok(), "job {} changed unreported by {:?}", id, op);
                        }
                    }
                    let array_ids = copy.arrays().keys().chain(state.arrays().keys()).copied().collect::<std::collections::BTreeSet<u64>>();
                    for id in array_ids {
                        if copy.array(id) != state.array(id) {
                            prop_assert!(changes.arrays.binary_search(&id).is_ok(), "array {} changed unreported by {:?}", id, op);
                        }
                    }
                }
            }
            // Terminal jobs never change.
            for (id, job) in before {
                prop_assert_eq!(Some(&job), state.job(id), "terminal job {} changed", id);
            }
            if i == ops.len() / 2 {
                mid_snapshot = Some((state.snapshot(), log.len()));
            }
        }
        // Replaying the log gives the same state.
        let mut replay = State::default();
        for c in &log {
            let _ = replay.apply(c.clone());
        }
        prop_assert!(replay == state, "replay diverged");
        // A snapshot taken midway, restored and fed the rest of the log,
        // ends in the same state too.
        if let Some((snap, at)) = mid_snapshot {
            let json = serde_json::to_string(&snap).unwrap();
            let mut restored = State::restore(serde_json::from_str(&json).unwrap());
            for c in &log[at..] {
                let _ = restored.apply(c.clone());
            }
            prop_assert!(restored == state, "snapshot + tail diverged");
        }
        // Every job is in exactly one state: counts add up.
        let mut by_state = BTreeMap::new();
        for j in state.jobs().values() {
            *by_state.entry(j.state).or_insert(0usize) += 1;
        }
        prop_assert_eq!(by_state.values().sum::<usize>(), state.jobs().len());
        prop_assert_eq!(by_state.get(&JobState::Pending).copied().unwrap_or(0), state.pending_ids().len());
    }

    #[test]
    fn parsers_never_panic(text in "\\PC{0,40}") {
        let _ = time::parse_time_limit(&text);
        let _ = time::parse_begin(&text, 1_700_000_000);
        let _ = memory::parse_memory_mb(&text);
        let _ = ArraySpec::parse(&text);
        let _ = Dependency::parse(&text);
        let _ = hostlist::expand(&text);
        let _ = JobRef::parse(&text);
        let _ = JobState::parse(&text);
        let _ = NodeState::parse(&text);
        let _ = options::parse_signal(&text);
        let _ = script::directives(&text);
        let mut r = SubmitRequest::default();
        let _ = script::apply_directives(&format!("#SBATCH {text}\n"), &mut r);
        let _ = r.apply_args(&text.split(' ').collect::<Vec<_>>());
    }

    #[test]
    fn structured_parser_inputs_never_panic(
        text in "[0-9:,%\\-\\[\\]_a-z?+]{0,24}",
        opt in proptest::sample::select(options::SUBMIT_OPTIONS.iter().map(|o| o.long).collect::<Vec<_>>()),
    ) {
        let _ = hostlist::expand(&text);
        let _ = ArraySpec::parse(&text);
        let _ = Dependency::parse(&text);
        let _ = time::parse_time_limit(&text);
        let mut r = SubmitRequest::default();
        if r.apply(opt, Some(&text)).is_ok() {
            let _ = r.build(&Default::default(), "");
        }
    }

    #[test]
    fn hostlists_round_trip(names in proptest::collection::vec("[a-c]{1,2}[0-9]{0,3}", 0..30)) {
        let compressed = hostlist::compress(&names);
        let mut back = if compressed.is_empty() { vec![] } else { hostlist::expand(&compressed).unwrap() };
        let mut want = names.clone();
        want.sort();
        want.dedup();
        back.sort();
        prop_assert_eq!(back, want, "via {}", compressed);
    }

    #[test]
    fn arrays_round_trip(spec in "[0-9]{1,3}(-[0-9]{1,3}(:[1-9])?)?(,[0-9]{1,3}(-[0-9]{1,3})?){0,3}") {
        if let Ok(a) = ArraySpec::parse(&spec) {
            let again = ArraySpec::parse(&a.tasks.to_string()).unwrap();
            prop_assert_eq!(again.tasks.iter().collect::<Vec<_>>(), a.tasks.iter().collect::<Vec<_>>());
            prop_assert_eq!(a.tasks.len() as usize, a.tasks.iter().count());
        }
    }
}
