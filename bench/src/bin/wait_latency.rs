//! What waiting for a task's end costs: N sequential `Producer::publish`
//! (until the broker confirmed the task and its `queued` receipt), then N
//! sequential `Producer::publish_and_wait` (until the receipt that ends the
//! task comes back on the producer's reply queue), of `noop` tasks, one at a
//! time, so each figure is a latency and not a queue. A worker for the task
//! type must be running (and, to be fair, nothing else on the broker).
//! Prints one JSON line: p50 and p99 of each, in milliseconds.

use broker_link::Declare;
use broker_topology::{Capability, Topology, names};
use chit_bench::{percentile, queue_depth};
use clap::Parser;
use producer::{Producer, ProducerConfig, TaskSpec, WaitOutcome};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    amqp_url: String,
    #[arg(long, default_value = "noop")]
    task_type: String,
    /// Tasks of each kind, one after the other.
    #[arg(long, default_value_t = 1_000)]
    tasks: usize,
    /// Longest wait for one task's end.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 of `samples`, in ms, rounded to hundredths.
fn spread(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 100.0).round() / 100.0;
    (
        round(percentile(&samples, 50.0)),
        round(percentile(&samples, 99.0)),
    )
}

fn task(task_type: &str) -> TaskSpec {
    TaskSpec::json(task_type, &json!({})).expect("a noop task")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let conn = broker_link::connect(&args.amqp_url, "chit-bench-wait")
        .await
        .expect("connect");
    Topology::for_capabilities(&[Capability::new(&args.task_type).expect("a capability")])
        .apply(&conn)
        .await
        .expect("topology");
    let producer = Producer::new(ProducerConfig::new(&args.amqp_url));
    let timeout = Duration::from_secs(args.timeout_secs);
    let wait = async |spec| match producer.publish_and_wait(spec, timeout).await {
        Ok(WaitOutcome::Finished { .. }) => {}
        Ok(WaitOutcome::TimedOut { published }) => {
            panic!(
                "task {} did not end in {timeout:?}: is a worker running?",
                published.task_id
            )
        }
        Err(e) => panic!("publish: {e}"),
    };
    // Warm up: the connection, the channels, the reply queue, the worker.
    for _ in 0..20 {
        wait(task(&args.task_type)).await;
    }

    let mut publish = Vec::with_capacity(args.tasks);
    for _ in 0..args.tasks {
        let spec = task(&args.task_type);
        let t = Instant::now();
        producer.publish(spec).await.expect("publish");
        publish.push(millis(t.elapsed()));
    }
    // Let the worker clear them, so the waits do not queue behind them.
    let ch = conn.create_channel().await.expect("channel");
    let queue = names::task_queue(&args.task_type);
    while queue_depth(&ch, &queue).await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut waited = Vec::with_capacity(args.tasks);
    for _ in 0..args.tasks {
        let spec = task(&args.task_type);
        let t = Instant::now();
        wait(spec).await;
        waited.push(millis(t.elapsed()));
    }

    let (publish_p50, publish_p99) = spread(publish);
    let (wait_p50, wait_p99) = spread(waited);
    println!(
        "{}",
        json!({
            "tasks": args.tasks,
            "publish_p50_ms": publish_p50,
            "publish_p99_ms": publish_p99,
            "wait_p50_ms": wait_p50,
            "wait_p99_ms": wait_p99,
            "added_p50_ms": ((wait_p50 - publish_p50) * 100.0).round() / 100.0,
        })
    );
}
