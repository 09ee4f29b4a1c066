//! Benchmarks for the pure core: one scheduling pass at scale, apply()
//! throughput, and the memory a pending job costs.
//!
//! `cargo bench -p drover-core` runs them; numbers go to bench/README.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use drover_core::partition::PartitionSpec;
use drover_core::sched::{self, SchedConfig, Select};
use drover_core::state::Config;
use drover_core::{Command, JobSpec, Resources, State};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Counts live heap bytes, to measure what a pending job costs.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODES: usize = 1_000;
const PENDING: usize = 100_000;

fn cluster(nodes: usize) -> State {
    let mut s = State::new(Config { node_timeout_ms: None, ..Config::default() });
    let mut p = PartitionSpec::new("batch", "ALL");
    p.is_default = true;
    s.apply(Command::SetPartition(p)).unwrap();
    for i in 0..nodes {
        s.apply(Command::RegisterNode {
            name: format!("node{i:04}"),
            addr: String::new(),
            total: Resources::new(32, 128 * 1024, 0),
            features: vec![],
            known_steps: vec![],
            now: 0,
        })
        .unwrap();
    }
    s
}

/// A realistic small job: the script text is shared between jobs, as the
/// controller does when many jobs carry the same script.
fn job(i: usize, script: &Arc<str>) -> JobSpec {
    let mut spec = JobSpec::simple("alice", "");
    spec.script = script.clone();
    spec.name = format!("job{i}");
    spec.cpus_per_task = 1 + (i % 4) as u32;
    spec.time_limit = Some(600 + (i % 50) as u64 * 60);
    spec.work_dir = "/home/alice/project".into();
    spec
}

fn with_pending(nodes: usize, pending: usize) -> State {
    let mut s = cluster(nodes);
    let script: Arc<str> = Arc::from("#!/bin/bash\n#SBATCH -t 10\nsrun ./simulate --step 1\n");
    let specs: Vec<JobSpec> = (0..pending).map(|i| job(i, &script)).collect();
    s.apply(Command::SubmitBatch { specs: specs.into_iter().map(Arc::new).collect(), now: 1_000 }).unwrap();
    s
}

/// A full cluster: every CPU busy, so the pass must decide quickly that
/// nothing fits (and compute the backfill reservation).
fn full(nodes: usize, pending: usize) -> State {
    let mut s = with_pending(nodes, 0);
    let script: Arc<str> = Arc::from("x");
    let mut fill = job(0, &script);
    fill.cpus_per_task = 32;
    s.apply(Command::SubmitBatch { specs: (0..nodes).map(|_| Arc::new(fill.clone())).collect(), now: 500 }).unwrap();
    let plan = sched::schedule(&s, 600, &SchedConfig::default());
    assert_eq!(plan.allocations.len(), nodes);
    s.apply(Command::Allocate { plan, now: 600, term: 0 }).unwrap();
    let specs: Vec<JobSpec> = (0..pending).map(|i| job(i, &script)).collect();
    s.apply(Command::SubmitBatch { specs: specs.into_iter().map(Arc::new).collect(), now: 1_000 }).unwrap();
    s
}

fn scheduling(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule_100k_pending_1k_nodes");
    g.sample_size(10);
    let empty = with_pending(NODES, PENDING);
    let plan = sched::schedule(&empty, 2_000, &SchedConfig::default());
    eprintln!("empty cluster: one pass starts {} of {PENDING} jobs", plan.allocations.len());
    g.bench_function("empty_cluster_first_fit", |b| {
        b.iter(|| black_box(sched::schedule(&empty, 2_000, &SchedConfig::default())))
    });
    let best = SchedConfig { select: Select::BestFit, ..SchedConfig::default() };
    g.bench_function("empty_cluster_best_fit", |b| b.iter(|| black_box(sched::schedule(&empty, 2_000, &best))));
    let busy = full(NODES, PENDING);
    g.bench_function("full_cluster", |b| b.iter(|| black_box(sched::schedule(&busy, 2_000, &SchedConfig::default()))));
    g.finish();

    // A pass after one submit, with a queue of held jobs in front of it (the
    // pass every submit of `bench/throughput.sh`'s listing figure triggers).
    let mut g = c.benchmark_group("schedule_10k_held_2_nodes");
    let mut held = cluster(2);
    let script: Arc<str> = Arc::from("#!/bin/sh\ntrue\n");
    let specs: Vec<JobSpec> = (0..10_000).map(|i| JobSpec { hold: true, ..job(i, &script) }).collect();
    held.apply(Command::SubmitBatch { specs: specs.into_iter().map(Arc::new).collect(), now: 1_000 }).unwrap();
    held.apply(Command::Submit { spec: Arc::new(job(10_000, &script)), now: 1_001 }).unwrap();
    g.bench_function("one_new_job", |b| b.iter(|| black_box(sched::schedule(&held, 2_000, &SchedConfig::default()))));
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    let base = cluster(64);
    g.bench_function("heartbeat", |b| {
        let mut s = base.clone();
        let mut now = 0;
        b.iter(|| {
            now += 1;
            s.apply(Command::Heartbeat { node: "node0007".into(), now }).unwrap()
        })
    });
    let script: Arc<str> = Arc::from("#!/bin/sh\ntrue\n");
    g.bench_function("submit", |b| {
        b.iter_batched_ref(
            || (base.clone(), job(1, &script)),
            |(s, spec)| s.apply(Command::Submit { spec: Arc::new(spec.clone()), now: 5 }).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("submit_start_finish", |b| {
        let mut s = base.clone();
        let mut now = 10;
        let spec = job(1, &script);
        b.iter(|| {
            now += 1;
            let ev = s.apply(Command::Submit { spec: Arc::new(spec.clone()), now }).unwrap();
            let id = match ev[0] {
                drover_core::Event::JobSubmitted { job, .. } => job,
                _ => unreachable!(),
            };
            let plan = sched::Plan {
                allocations: vec![sched::PlannedAllocation {
                    key: sched::JobKey::Job(id),
                    shares: vec![drover_core::job::NodeShare {
                        node: (id % 64) as u32,
                        res: Resources::new(1, 1, 0),
                        tasks: 1,
                    }],
                    time_limit: None,
                    partition: "batch".into(),
                }],
                ..Default::default()
            };
            s.apply(Command::Allocate { plan, now, term: 0 }).unwrap();
            s.apply(Command::StepFinished {
                max_rss_kb: None,
                cpu: None,
                failure: None,
                job: id,
                attempt: 0,
                outcome: drover_core::state::StepOutcome::Exited(0),
                node: String::new(),
                now,
            })
            .unwrap()
        })
    });
    g.finish();
}

fn memory(_: &mut Criterion) {
    let s = cluster(NODES);
    let script: Arc<str> = Arc::from("#!/bin/bash\n#SBATCH -t 10\nsrun ./simulate --step 1\n");
    let specs: Vec<JobSpec> = (0..PENDING).map(|i| job(i, &script)).collect();
    let mut s = s;
    let before = LIVE.load(Ordering::Relaxed);
    s.apply(Command::SubmitBatch { specs: specs.into_iter().map(Arc::new).collect(), now: 1_000 }).unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    let per_job = (after - before) as f64 / PENDING as f64;
    eprintln!("memory: {per_job:.0} bytes per pending job ({PENDING} jobs, shared script)");
    let before = LIVE.load(Ordering::Relaxed);
    let mut one = JobSpec::simple("alice", "#!/bin/sh\n");
    one.array = Some(drover_core::array::ArraySpec::parse("0-99999").unwrap());
    s.apply(Command::Submit { spec: Arc::new(one), now: 2_000 }).unwrap();
    eprintln!("memory: a 100000-task array costs {} bytes pending", LIVE.load(Ordering::Relaxed) - before);
    black_box(&s);
}

criterion_group!(benches, scheduling, apply, memory);
criterion_main!(benches);
