//! Drives chit end to end: publishes noop tasks (at a fixed rate, or as fast
//! as confirms allow), watches final receipts on the receipts exchange, and
//! watches the sink's SQLite store until every success receipt is committed.
//! A worker and a sink must be running. Prints one JSON line.
//!
//! Two more modes make the drain figure, a queue filled before any worker
//! runs: `--prefill` only publishes the tasks (as fast as confirms allow) and
//! exits; `--drain-since-unix-ms T` publishes nothing and waits until the
//! store holds `--tasks` success receipts, timed from T (when the script
//! started the worker and the sink).
//!
//! `cpu_ticks` in the output is this process's own CPU time (utime + stime
//! from /proc/self/stat, in clock ticks) from just before the first publish
//! to the moment every task was counted: the producer's share, for the CPU
//! per task (it includes the store polling, and at a fixed rate the receipt
//! tap; at saturation there is no tap).

use broker_link::Declare;
use broker_topology::{ContentType, ReceiptType, Topology, codec, names};
use chit_bench::{cpu_ticks, percentile, queue_depth};
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    amqp_url: String,
    /// The sink's SQLite file (not needed with --prefill).
    #[arg(long)]
    store: Option<String>,
    #[arg(long, default_value = "noop")]
    task_type: String,
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Tasks per second; 0 publishes as fast as confirms allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// At saturation: tasks waiting in the queue, at most (publishing pauses
    /// while the broker reports this many).
    #[arg(long, default_value_t = 20_000)]
    window: usize,
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Only publish the tasks, as fast as confirms allow, and exit.
    #[arg(long, conflicts_with_all = ["rate", "drain_since_unix_ms"])]
    prefill: bool,
    /// Publish nothing: wait until the store holds --tasks success receipts
    /// and report the rate since this moment (milliseconds since the epoch).
    #[arg(long)]
    drain_since_unix_ms: Option<u64>,
}

/// Publishes `tasks` noop tasks, 1,000 a call and four calls at once, and
/// exits: the queue is filled before the worker starts.
async fn prefill(args: &Args) {
    let producer = Producer::new(ProducerConfig::new(&args.amqp_url));
    let cpu0 = cpu_ticks();
    let started = Instant::now();
    type Chunk = tokio::task::JoinHandle<Vec<Result<producer::Published, producer::PublishError>>>;
    let mut chunks: futures_util::stream::FuturesUnordered<Chunk> =
        futures_util::stream::FuturesUnordered::new();
    let mut published = 0;
    while published < args.tasks || !chunks.is_empty() {
        if published == args.tasks || chunks.len() >= 4 {
            let results = chunks.next().await.unwrap().expect("publisher task");
            for r in results {
                r.expect("publish");
            }
            continue;
        }
        let n = 1000.min(args.tasks - published);
        let batch: Vec<_> = (0..n)
            .map(|_| TaskSpec::json(&args.task_type, &json!({})).unwrap())
            .collect();
        published += n;
        let p = producer.clone();
        chunks.push(tokio::spawn(
            async move { p.publish_many(batch, |_| {}).await },
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": "prefill",
            "tasks": args.tasks,
            "publish_secs": secs,
            "publish_per_sec": (args.tasks as f64 / secs).round(),
            "cpu_ticks": cpu_ticks() - cpu0,
        })
    );
}

/// The number of tasks whose success receipt is committed in the store; 0
/// while the store or its tables do not exist yet. Counted on the tasks'
/// state index, not by scanning every receipt: the drive polls it, and its
/// CPU is counted as the producer's.
async fn stored_successes(store: &sqlx::SqlitePool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'")
        .fetch_one(store)
        .await
        .unwrap_or(0) as usize
}

/// Waits until the store holds `tasks` success receipts; the clock started
/// at `since_ms` (since the epoch), when the worker and the sink were started.
async fn drain(args: &Args, since_ms: u64) {
    let since = SystemTime::UNIX_EPOCH + Duration::from_millis(since_ms);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let path = args.store.as_deref().expect("--store");
    // The sink creates the file when it starts: wait for it.
    let store = loop {
        match sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{path}?mode=ro"))
            .await
        {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("open the sink's store: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut n = 0;
    while n < args.tasks {
        assert!(
            Instant::now() < deadline,
            "{n} of {} tasks stored before the timeout",
            args.tasks
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        n = stored_successes(&store).await;
    }
    let secs = SystemTime::now()
        .duration_since(since)
        .expect("--drain-since-unix-ms in the past")
        .as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": "drain",
            "tasks": args.tasks,
            "drain_secs": secs,
            "drain_tasks_per_sec": (args.tasks as f64 / secs).round(),
        })
    );
}

#[derive(Default)]
struct Seen {
    published: HashMap<String, (Instant, SystemTime)>,
    finals: HashMap<String, Instant>,
}

/// Records the moment each task's final receipt passes the receipts exchange.
async fn tap(conn: &lapin::Connection, seen: Arc<Mutex<Seen>>) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        names::RECEIPT_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let tap_seen = seen;
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let now = Instant::now();
            let ct = ContentType::from_property(
                d.properties.content_type().as_ref().map(|c| c.as_str()),
            )
            .unwrap_or_default();
            let (receipts, _) = codec::decode_receipts(&d.data, ct);
            let mut s = tap_seen.lock().unwrap();
            for r in receipts {
                if r.receipt_type.is_final() && r.receipt_type != ReceiptType::RetryScheduled {
                    s.finals.entry(r.task_id).or_insert(now);
                }
            }
        }
    });
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.prefill {
        return prefill(&args).await;
    }
    if let Some(since) = args.drain_since_unix_ms {
        return drain(&args, since).await;
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let conn = broker_link::connect(&args.amqp_url, "chit-bench-drive")
        .await
        .expect("connect");
    Topology::core().apply(&conn).await.expect("topology");
    // At a fixed rate, a tap on every receipt batch, through a queue of our
    // own, times each task's final receipt. At saturation there is no tap:
    // it would double the receipts the broker delivers and the drive decodes,
    // work that is the bench's and not chit's. Latencies there are publish to
    // success committed in the store.
    if args.rate > 0.0 {
        tap(&conn, seen.clone()).await;
    }

    let store = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!(
            "sqlite://{}?mode=ro",
            args.store.as_deref().expect("--store")
        ))
        .await
        .expect("open the sink's store");

    let producer = Producer::new(ProducerConfig::new(&args.amqp_url));
    let cpu0 = cpu_ticks();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let spec = |seen: &Arc<Mutex<Seen>>| {
        let s = TaskSpec::json(&args.task_type, &json!({})).unwrap();
        seen.lock()
            .unwrap()
            .published
            .insert(s.task_id().to_owned(), (Instant::now(), SystemTime::now()));
        s
    };
    if args.rate > 0.0 {
        let mut handles = Vec::with_capacity(args.tasks);
        for i in 0..args.tasks {
            tokio::time::sleep_until(
                (started + Duration::from_secs_f64(i as f64 / args.rate)).into(),
            )
            .await;
            let p = producer.clone();
            let s = spec(&seen);
            handles.push(tokio::spawn(async move { p.publish(s).await.map(|_| ()) }));
        }
        for h in handles {
            h.await.unwrap().expect("publish");
        }
    } else {
        let mut published = 0;
        type Chunk =
            tokio::task::JoinHandle<Vec<Result<producer::Published, producer::PublishError>>>;
        let mut chunks: futures_util::stream::FuturesUnordered<Chunk> =
            futures_util::stream::FuturesUnordered::new();
        // The queue's depth, asked of the broker before each chunk, holds the
        // backlog under --window.
        let depth = conn.create_channel().await.expect("channel");
        let queue = names::task_queue(&args.task_type);
        let mut waiting = 0;
        while published < args.tasks {
            if chunks.len() < 4 {
                waiting = queue_depth(&depth, &queue).await;
            }
            if waiting >= args.window || chunks.len() >= 4 {
                if let Some(results) = chunks.next().await {
                    for r in results.expect("publisher task") {
                        r.expect("publish");
                    }
                } else {
                    // The window is full and nothing is in flight: ask the
                    // broker again a little later, not in a tight loop that
                    // would load the broker under test.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            }
            let n = 1000.min(args.tasks - published);
            let batch: Vec<_> = (0..n).map(|_| spec(&seen)).collect();
            published += n;
            let p = producer.clone();
            chunks.push(tokio::spawn(
                async move { p.publish_many(batch, |_| {}).await },
            ));
        }
        while let Some(results) = chunks.next().await {
            for r in results.expect("publisher task") {
                r.expect("publish");
            }
        }
    }
    let published_secs = started.elapsed().as_secs_f64();

    // Every success receipt committed in the store.
    let mut stored_all = None;
    while Instant::now() < deadline {
        if stored_successes(&store).await >= args.tasks {
            stored_all = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored_all = stored_all.expect("every task stored before the timeout");
    let cpu = cpu_ticks() - cpu0;

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT task_id, stored_at FROM receipts WHERE receipt_type = 'success'")
            .fetch_all(&store)
            .await
            .expect("read stored receipts");
    let (final_lat, stored_lat) = {
        let s = seen.lock().unwrap();
        let mut f: Vec<f64> = s
            .finals
            .iter()
            .filter_map(|(id, t)| {
                s.published
                    .get(id)
                    .map(|(t0, _)| t.duration_since(*t0).as_secs_f64() * 1000.0)
            })
            .collect();
        f.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut st: Vec<f64> = rows
            .iter()
            .filter_map(|(id, at)| {
                let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
                let (_, t0) = s.published.get(id)?;
                let t0: chrono::DateTime<chrono::Utc> = (*t0).into();
                Some((at.with_timezone(&chrono::Utc) - t0).num_microseconds()? as f64 / 1000.0)
            })
            .collect();
        st.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (f, st)
    };
    let secs = stored_all.as_secs_f64();
    let tapped = args.rate > 0.0;
    println!(
        "{}",
        json!({
            "mode": if args.rate > 0.0 { "rate" } else { "saturation" },
            "offered_rate": args.rate,
            "tasks": args.tasks,
            "publish_secs": published_secs,
            "stored_secs": secs,
            "tasks_per_sec": (args.tasks as f64 / secs).round(),
            "final_p50_ms": tapped.then(|| percentile(&final_lat, 50.0)),
            "final_p95_ms": tapped.then(|| percentile(&final_lat, 95.0)),
            "final_p99_ms": tapped.then(|| percentile(&final_lat, 99.0)),
            "stored_p50_ms": percentile(&stored_lat, 50.0),
            "stored_p95_ms": percentile(&stored_lat, 95.0),
            "stored_p99_ms": percentile(&stored_lat, 99.0),
            "finals_seen": final_lat.len(),
            "stored_seen": stored_lat.len(),
            "cpu_ticks": cpu,
        })
    );
}
