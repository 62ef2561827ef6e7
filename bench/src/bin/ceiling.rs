//! The raw AMQP ceiling: one bare lapin publisher and one consumer on one
//! queue, at the same time. Persistent messages, pipelined publisher confirms,
//! manual acks (one per message). Prints `{"ceiling_msgs_per_sec": ...}`.
//!
//! With `--floor publish` or `--floor consume` it measures instead what a bare
//! lapin client costs this process per message, in the patterns chit's own
//! clients use: publishing `--messages` persistent messages with pipelined
//! confirms, or consuming as many (published first) with one `multiple` ack
//! per 64 deliveries. It prints `{"floor": ..., "cpu_us_per_msg": ...}`: the
//! least a producer or a worker built on lapin can spend per task here.

use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    amqp_url: String,
    /// quorum or classic.
    #[arg(long, default_value = "quorum")]
    queue_type: String,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unconfirmed messages in flight.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Body size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Instead of the ceiling, publish this many messages per second and
    /// report publish-to-delivery latency (the broker's share of chit's latency).
    #[arg(long)]
    latency_at_rate: Option<f64>,
    /// Instead of the ceiling, this process's CPU per message to `publish`
    /// or to `consume` `--messages` messages.
    #[arg(long, value_parser = ["publish", "consume"])]
    floor: Option<String>,
    /// Messages for `--floor`.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let queue = format!("bench.ceiling.{}", args.queue_type);
    let pub_conn = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let con_conn = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = pub_conn.create_channel().await.unwrap();
    let mut qargs = FieldTable::default();
    qargs.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(args.queue_type.as_str())),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        qargs,
    )
    .await
    .expect("declare");
    ch.queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    if let Some(rate) = args.latency_at_rate {
        return latency(&args, &queue, ch, con_conn, rate).await;
    }
    if let Some(role) = &args.floor {
        return floor(&args, role, &queue, ch, con_conn).await;
    }
    let consumed = Arc::new(AtomicU64::new(0));
    let cch = con_conn.create_channel().await.unwrap();
    cch.basic_qos(args.prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let counter = consumed.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let body = vec![b'x'; args.size];
    let props = BasicProperties::default().with_delivery_mode(2);
    let total = Duration::from_secs(args.seconds + 1);
    let started = Instant::now();
    let window = args.window;
    let publisher = tokio::spawn(async move {
        let mut in_flight = FuturesUnordered::new();
        while started.elapsed() < total {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props.clone(),
                )
                .await
                .expect("publish");
            in_flight.push(confirm);
            while in_flight.len() >= window {
                let c = in_flight.next().await.unwrap().expect("confirm");
                assert!(c.is_ack());
            }
        }
        while let Some(c) = in_flight.next().await {
            assert!(c.expect("confirm").is_ack());
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = consumed.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let c1 = consumed.load(Ordering::Relaxed);
    let rate = (c1 - c0) as f64 / t0.elapsed().as_secs_f64();
    publisher.await.unwrap();
    println!(
        "{}",
        serde_json::json!({"ceiling_msgs_per_sec": rate.round(), "queue_type": args.queue_type, "seconds": args.seconds})
    );
}

/// A bare client's CPU per message: `publish` times the publishing of
/// `--messages` messages; `consume` first publishes them, then times their
/// consumption. Only the timed part's CPU is counted.
async fn floor(args: &Args, role: &str, queue: &str, ch: lapin::Channel, con_conn: Connection) {
    let n = args.messages;
    // As chit's producer does: each publish pushed into the in-flight set
    // unawaited, so one poll of the set queues many messages' frames.
    let publish = async {
        let body = vec![b'x'; args.size];
        let props = BasicProperties::default().with_delivery_mode(2);
        let (ch, body, props) = (&ch, &body, &props);
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..n {
            in_flight.push(async move {
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await?
                .await
            });
            while in_flight.len() >= args.window {
                assert!(in_flight.next().await.unwrap().expect("confirm").is_ack());
            }
        }
        while let Some(c) = in_flight.next().await {
            assert!(c.expect("confirm").is_ack());
        }
    };
    let (ticks, secs) = if role == "publish" {
        let (c0, t0) = (chit_bench::cpu_ticks(), Instant::now());
        publish.await;
        (chit_bench::cpu_ticks() - c0, t0.elapsed().as_secs_f64())
    } else {
        publish.await;
        let cch = con_conn.create_channel().await.unwrap();
        cch.basic_qos(args.prefetch, BasicQosOptions::default())
            .await
            .unwrap();
        let (c0, t0) = (chit_bench::cpu_ticks(), Instant::now());
        let mut consumer = cch
            .basic_consume(
                queue.into(),
                "floor".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut seen = 0;
        while seen < n {
            let d = consumer
                .next()
                .await
                .expect("consumer open")
                .expect("delivery");
            seen += 1;
            if seen % 64 == 0 || seen == n {
                d.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .expect("ack");
            }
        }
        (chit_bench::cpu_ticks() - c0, t0.elapsed().as_secs_f64())
    };
    println!(
        "{}",
        serde_json::json!({
            "floor": role,
            "queue_type": args.queue_type,
            "messages": n,
            "msgs_per_sec": (n as f64 / secs).round(),
            "cpu_us_per_msg": (ticks as f64 / chit_bench::TICKS_PER_SEC * 1e6 / n as f64 * 10.0).round() / 10.0,
        })
    );
}

/// Publish-to-delivery latency at a fixed rate: each body carries its send time.
async fn latency(args: &Args, queue: &str, ch: lapin::Channel, con_conn: Connection, rate: f64) {
    let epoch = Instant::now();
    let cch = con_conn.create_channel().await.unwrap();
    cch.basic_qos(args.prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "latency".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let total = (rate * args.seconds as f64) as usize;
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        while lat.len() < total {
            let Some(Ok(d)) = consumer.next().await else {
                break;
            };
            let sent = u64::from_le_bytes(d.data[..8].try_into().unwrap());
            lat.push((epoch.elapsed().as_nanos() as u64 - sent) as f64 / 1e6);
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
        lat
    });
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut in_flight = FuturesUnordered::new();
    for i in 0..total {
        tokio::time::sleep_until((epoch + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let mut body = vec![b'x'; args.size.max(8)];
        body[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await
            .unwrap();
        in_flight.push(c);
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(in_flight.next()) {}
    }
    while in_flight.next().await.is_some() {}
    let mut lat = reader.await.unwrap();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        serde_json::json!({
            "raw_rate": rate,
            "queue_type": args.queue_type,
            "raw_p50_ms": chit_bench::percentile(&lat, 50.0),
            "raw_p95_ms": chit_bench::percentile(&lat, 95.0),
            "raw_p99_ms": chit_bench::percentile(&lat, 99.0),
        })
    );
}
