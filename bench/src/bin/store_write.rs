//! The receipt store's write path alone, without a broker: CPU per task for
//! the batches a saturated sink writes, so a change to the schema or the
//! write path can be measured in seconds and repeatably.
//!
//! Batches look like the end-to-end run's: each holds the `queued` receipts
//! of new tasks and the `accepted` and `success` receipts of tasks queued a
//! few batches before (a worker's receipts arrive later than the
//! producer's), so each task's row is written twice, as at saturation.
//!
//! ```text
//! cargo run --release -p chit-bench --bin store_write -- \
//!     --store sqlite:///tmp/chit-store-bench.db [--tasks 50000] [--batch 1000]
//! ```
//!
//! Prints one JSON line: tasks/s, CPU µs per task (this process: the
//! caller and sqlx's SQLite thread), the process's RSS at the end and how
//! much the writes added to it. The store should be new: the file is
//! created.

use broker_topology::{Receipt, ReceiptType, TraceContext};
use chit_bench::{TICKS_PER_SEC, cpu_ticks};
use receipts_sink::Store;
use serde_json::json;
use std::collections::VecDeque;
use std::time::Instant;

struct Args {
    store: String,
    tasks: usize,
    batch: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        store: String::new(),
        tasks: 50_000,
        batch: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--store" => args.store = value()?,
            "--tasks" => args.tasks = num(value()?)?,
            "--batch" => args.batch = num(value()?)?.max(3),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.store.is_empty() {
        return Err("--store is required".into());
    }
    Ok(args)
}

/// One task's three receipts, shaped like a worker's and the producer's.
fn chain(n: usize) -> [Receipt; 3] {
    let task = uuid::Uuid::now_v7().to_string();
    let trace = TraceContext::new_root(true);
    let queued =
        Receipt::new(task.as_str(), "noop", ReceiptType::Queued, vec![], 1).with_trace(trace, true);
    // A worker's receipt following `parent`.
    let next = |t, parent: &Receipt, body| {
        Receipt::new(task.as_str(), "noop", t, vec![parent.receipt_id.clone()], 1)
            .with_worker("bench-worker-1")
            .with_body(body)
            .with_trace(trace, true)
    };
    let accepted = next(
        ReceiptType::Accepted,
        &queued,
        json!({"delivery_count": 0, "redelivered": false}),
    );
    let success = next(
        ReceiptType::Success,
        &accepted,
        json!({"result": {"n": n}, "duration_ms": 0}),
    );
    [queued, accepted, success]
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let store = Store::open(&args.store).await.map_err(|e| e.to_string())?;
    let chains: Vec<[Receipt; 3]> = (0..args.tasks).map(chain).collect();

    // Each batch: a third new tasks' `queued`, and the rest of the batch the
    // `accepted` and `success` of tasks queued at least two batches ago.
    let per_batch = args.batch / 3;
    let mut waiting: VecDeque<&[Receipt; 3]> = VecDeque::new();
    let mut next = chains.iter();
    let mut batch: Vec<Receipt> = Vec::with_capacity(args.batch);
    let mut batches = 0u64;
    let rss0 = rss_mb();
    let cpu0 = cpu_ticks();
    let t0 = Instant::now();
    loop {
        batch.clear();
        let mut fresh = 0;
        for c in next.by_ref().take(per_batch) {
            batch.push(c[0].clone());
            waiting.push_back(c);
            fresh += 1;
        }
        let lag = if fresh == 0 { 0 } else { 2 * per_batch };
        while waiting.len() > lag && batch.len() + 2 <= args.batch {
            let c = waiting.pop_front().expect("waiting is not empty");
            batch.push(c[1].clone());
            batch.push(c[2].clone());
        }
        if batch.is_empty() {
            break;
        }
        store
            .write_batch(&batch, &[])
            .await
            .map_err(|e| e.to_string())?;
        batches += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks() - cpu0) as f64 / TICKS_PER_SEC;
    let counts = store.counts().await.map_err(|e| e.to_string())?;
    if counts.receipts != 3 * args.tasks as u64 || counts.tasks != args.tasks as u64 {
        return Err(format!(
            "expected {} receipts and {} tasks, the store holds {} and {}",
            3 * args.tasks,
            args.tasks,
            counts.receipts,
            counts.tasks
        ));
    }
    println!(
        "{}",
        json!({
            "tasks": args.tasks,
            "batches": batches,
            "secs": (secs * 1000.0).round() / 1000.0,
            "tasks_per_sec": (args.tasks as f64 / secs).round(),
            "cpu_us_per_task": (cpu * 1e6 / args.tasks as f64 * 10.0).round() / 10.0,
            "rss_mb": (rss_mb() * 10.0).round() / 10.0,
            // What the writes added: the store's caches and the allocator's
            // keep, not the receipts made up front.
            "rss_growth_mb": ((rss_mb() - rss0) * 10.0).round() / 10.0,
        })
    );
    store.close().await;
    Ok(())
}
