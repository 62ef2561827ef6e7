//! Sink ingest throughput: pre-publishes N receipts to the sink queue of a
//! (fresh) vhost, then runs the sink in-process until all are stored, and
//! prints one JSON line:
//!
//! ```text
//! {"store":"sqlite","receipts":100000,"secs":2.1,"receipts_per_sec":47600.0, ...}
//! ```
//!
//! Usage (see `bench/sink/run.sh`, which makes the vhost and database):
//!
//! ```text
//! cargo run --release -p chit-bench --bin sink_ingest -- \
//!     --amqp-url amqp://guest:guest@127.0.0.1:5672/bench --store sqlite:///tmp/bench.db \
//!     [--receipts 100000] [--per-message 50] [--batch-size 1000] [--prefetch 128]
//! ```
//!
//! The store should be empty: the bench waits until it holds N receipts.

use broker_link::Declare;
use broker_topology::{Receipt, ReceiptType, Topology, names};
use futures_util::future::join_all;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use receipts_sink::{SinkConfig, Store};
use serde_json::json;
use std::time::{Duration, Instant};

struct Args {
    amqp_url: String,
    store: String,
    receipts: usize,
    per_message: usize,
    batch_size: usize,
    prefetch: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        amqp_url: broker_link::DEFAULT_AMQP_URL.into(),
        store: String::new(),
        receipts: 100_000,
        per_message: 50,
        batch_size: receipts_sink::DEFAULT_BATCH_SIZE,
        prefetch: receipts_sink::DEFAULT_PREFETCH,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--amqp-url" => args.amqp_url = value()?,
            "--store" => args.store = value()?,
            "--receipts" => args.receipts = num(value()?)?,
            "--per-message" => args.per_message = num(value()?)?.max(1),
            "--batch-size" => args.batch_size = num(value()?)?,
            "--prefetch" => args.prefetch = num(value()?)?.min(u16::MAX as usize) as u16,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.store.is_empty() {
        return Err("--store is required".into());
    }
    Ok(args)
}

/// Realistic receipts: five per task (queued, a failure, a retry that succeeds).
fn receipts(n: usize) -> Vec<Receipt> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let task = uuid::Uuid::now_v7().to_string();
        let mk = |t, parent: Option<&Receipt>, attempt| {
            Receipt::new(
                task.as_str(),
                "command.execute",
                t,
                parent
                    .map(|p| vec![p.receipt_id.clone()])
                    .unwrap_or_default(),
                attempt,
            )
        };
        let q = mk(ReceiptType::Queued, None, 1);
        let a1 = mk(ReceiptType::Accepted, Some(&q), 1)
            .with_worker("bench-worker-1")
            .with_body(json!({"delivery_count": 0}));
        let f1 = mk(ReceiptType::Failure, Some(&a1), 1)
            .with_worker("bench-worker-1")
            .with_body(json!({"error": "exit status 1", "exit_code": 1, "retryable": true}));
        let a2 = mk(ReceiptType::Accepted, Some(&f1), 2)
            .with_worker("bench-worker-2")
            .with_body(json!({"delivery_count": 0}));
        let s2 = mk(ReceiptType::Success, Some(&a2), 2)
            .with_worker("bench-worker-2")
            .with_body(json!({"exit_code": 0, "duration_ms": 12}));
        out.extend([q, a1, f1, a2, s2]);
    }
    out.truncate(n);
    out
}

async fn publish(url: &str, receipts: &[Receipt], per_message: usize) -> Result<(), String> {
    let conn = broker_link::connect(url, "chit-ingest-bench")
        .await
        .map_err(|e| e.to_string())?;
    Topology::core()
        .apply(&conn)
        .await
        .map_err(|e| e.to_string())?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let key = names::receipt_routing_key("bench");
    for window in receipts.chunks(per_message * 500) {
        let mut confirms = Vec::new();
        for batch in window.chunks(per_message) {
            let body = serde_json::to_vec(batch).map_err(|e| e.to_string())?;
            let confirm = ch
                .basic_publish(
                    names::RECEIPT_EXCHANGE.into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await
                .map_err(|e| e.to_string())?;
            confirms.push(confirm);
        }
        for c in join_all(confirms).await {
            c.map_err(|e| e.to_string())?;
        }
    }
    let _ = conn.close(200, "published".into()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let all = receipts(args.receipts);

    let t = Instant::now();
    publish(&args.amqp_url, &all, args.per_message).await?;
    let publish_secs = t.elapsed().as_secs_f64();

    let store = Store::open(&args.store).await.map_err(|e| e.to_string())?;
    let before = store.counts().await.map_err(|e| e.to_string())?.receipts;
    if before != 0 {
        return Err(format!(
            "the store already holds {before} receipts; use an empty one"
        ));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut config = SinkConfig::new(&args.amqp_url, &args.store);
    config.http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    config.batch_size = args.batch_size;
    config.prefetch = args.prefetch;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();

    let start = Instant::now();
    let sink = tokio::spawn(receipts_sink::serve(config, listener, async {
        let _ = stopped.await;
    }));
    loop {
        let n = store.counts().await.map_err(|e| e.to_string())?.receipts;
        if n >= all.len() as u64 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "only {n} of {} receipts stored after 600 s",
                all.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop.send(());
    sink.await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    store.close().await;

    let kind = match store.kind() {
        receipts_sink::StoreKind::Sqlite => "sqlite",
        receipts_sink::StoreKind::Postgres => "postgres",
    };
    println!(
        "{}",
        json!({
            "store": kind,
            "receipts": all.len(),
            "secs": (secs * 1000.0).round() / 1000.0,
            "receipts_per_sec": (all.len() as f64 / secs).round(),
            "per_message": args.per_message,
            "batch_size": args.batch_size,
            "prefetch": args.prefetch,
            "publish_secs": (publish_secs * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}
