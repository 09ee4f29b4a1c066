//! Accounting throughput, for bench/accounting.sh:
//!   accounting_bench URL [ROWS] [USERS]
//! writes ROWS finished jobs (USERS users, ends spread over 100 days) in the
//! writer's batches of 500 and reports records/s, then times one user's
//! last day of history (the median and worst of 20 queries) and a 30-day
//! usage report.

use drover_accounting::{Accounting, HistoryQuery, JobRecord};
use std::time::Instant;

fn record(i: u64, users: u64, now: u64) -> JobRecord {
    let day = 86_400_000;
    let end = now - (i * 7_919 % (100 * day));
    JobRecord {
        job_id: i + 1,
        attempt: 0,
        display_id: (i + 1).to_string(),
        array_job_id: None,
        array_task: None,
        name: format!("job{}", i % 50),
        user: format!("u{}", i % users),
        uid: 10_000 + (i % users) as u32,
        gid: 10_000,
        account: Some(format!("acct{}", i % 7)),
        partition: "batch".into(),
        submit_ms: end - 3_600_000,
        eligible_ms: end - 3_600_000,
        start_ms: Some(end - 1_800_000),
        end_ms: Some(end),
        state: if i % 10 == 0 { "FAILED" } else { "COMPLETED" }.into(),
        exit_code: Some(if i % 10 == 0 { 1 } else { 0 }),
        exit_signal: Some(0),
        nodes: format!("node{}", i % 1000),
        num_nodes: 1,
        alloc_cpus: 1 + i % 8,
        alloc_mem_mb: Some(4096),
        alloc_gpus: 0,
        time_limit_s: Some(7200),
        work_dir: "/scratch".into(),
        max_rss_kb: Some(100_000),
        restart_count: 0,
        derived_exit_code: None,
        derived_exit_signal: None,
        cpu_user_ms: Some(1_700_000),
        cpu_system_ms: Some(20_000),
        reason: Some("None".into()),
        superseded: false,
        steps: Vec::new(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("usage: accounting_bench URL [ROWS] [USERS]");
    let rows: u64 = args.get(2).map_or(1_000_000, |n| n.parse().expect("ROWS"));
    let users: u64 = args.get(3).map_or(100, |n| n.parse().expect("USERS"));
    let db = Accounting::open(url).await.expect("open");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let have = db.count_jobs().await.unwrap();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(500);
    for i in have..rows {
        batch.push(record(i, users, now));
        if batch.len() == 500 {
            db.write_jobs(&batch).await.expect("write");
            batch.clear();
        }
    }
    db.write_jobs(&batch).await.expect("write");
    let wrote = rows.saturating_sub(have);
    let secs = t.elapsed().as_secs_f64();
    if wrote > 0 {
        println!("write: {wrote} records in {secs:.1} s = {:.0} records/s", wrote as f64 / secs);
    }
    let q = HistoryQuery { users: vec!["u7".into()], since_ms: Some(now - 86_400_000), ..Default::default() };
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..20 {
        let t = Instant::now();
        found = db.history(&q).await.expect("history").0.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "history: one user's last day over {} rows: {found} jobs, median {:.1} ms, worst {:.1} ms",
        db.count_jobs().await.unwrap(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let t = Instant::now();
    let usage = db.usage(now - 30 * 86_400_000, now).await.expect("usage");
    println!("usage: 30 days, {} user/account rows in {:.0} ms", usage.len(), t.elapsed().as_secs_f64() * 1000.0);
}
