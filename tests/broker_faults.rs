//! Broker faults on a RabbitMQ node of the test's own (never the shared one):
//! restarts in the middle of a run, and a memory alarm that blocks publishers.

#[path = "support/broker_node.rs"]
mod broker_node;
mod support;

use broker_node::{BrokerNode, BrokerOpts};
use broker_topology::{ReceiptType, names};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use producer::{Producer, ProducerConfig, TaskSpec};
use receipts_sink::{Store, TaskState};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{ChildGuard, apply_capabilities, chit, wait_for};

fn sink(url: &str, store: &str) -> ChildGuard {
    let mut cmd = chit();
    cmd.args([
        "sink",
        "--amqp-url",
        url,
        "--store",
        store,
        "--http",
        "127.0.0.1:0",
    ]);
    ChildGuard::spawn(cmd)
}

fn worker(url: &str, capability: &str, concurrency: usize, prefetch: usize) -> ChildGuard {
    let mut cmd = chit();
    cmd.args([
        "worker",
        "--amqp-url",
        url,
        "--capability",
        capability,
        "--worker-id",
        "survivor",
    ]);
    cmd.args([
        "--concurrency",
        &concurrency.to_string(),
        "--prefetch",
        &prefetch.to_string(),
    ]);
    ChildGuard::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_broker_restarts_during_2000_tasks_lose_nothing() {
    const TASKS: usize = 2000;
    let mut node = BrokerNode::start(BrokerOpts::default());
    let url = node.amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("receipts.db").display());
    let conn = broker_link::connect(&url, "test").await.unwrap();
    apply_capabilities(&conn, &["command.execute"]).await;
    drop(conn);
    let mut sink = sink(&url, &store_url);
    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut worker = {
        let mut cmd = chit();
        cmd.args([
            "worker",
            "--amqp-url",
            &url,
            "--capability",
            "command.execute",
            "--worker-id",
            "survivor",
        ]);
        cmd.args([
            "--concurrency",
            "16",
            "--prefetch",
            "32",
            "--health",
            &format!("127.0.0.1:{health_port}"),
        ]);
        ChildGuard::spawn(cmd)
    };
    let health = format!("http://127.0.0.1:{health_port}/healthz");
    let health_is = |want: u16| {
        let health = health.clone();
        async move {
            let got = reqwest::get(&health)
                .await
                .ok()
                .map(|r| r.status().as_u16());
            (got == Some(want)).then_some(())
        }
    };

    // Publish in a trickle, so the restarts land in the middle of the run.
    let mut config = ProducerConfig::new(&url);
    config.publish_deadline = Duration::from_secs(120);
    let producer = Producer::new(config);
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..(TASKS / 50) {
            let chunk: Vec<_> = (0..50)
                .map(|_| TaskSpec::json("command.execute", &json!({"command": "true"})).unwrap())
                .collect();
            for r in producer.publish_many(chunk, |_| {}).await {
                ids.push(
                    r.expect("every publish is confirmed, outage or not")
                        .task_id,
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids
    });
    let store = Store::open(&store_url).await.unwrap();
    let mut restarts = 0;
    for threshold in [300u64, 1000] {
        wait_for(
            "progress before the restart",
            Duration::from_secs(120),
            || async {
                let n = store.counts().await.map(|c| c.receipts).unwrap_or(0);
                (n >= threshold * 3).then_some(())
            },
        )
        .await;
        wait_for(
            "worker /healthz 200 while connected",
            Duration::from_secs(60),
            || health_is(200),
        )
        .await;
        node.stop();
        wait_for(
            "worker /healthz 503 while the broker is down",
            Duration::from_secs(30),
            || health_is(503),
        )
        .await;
        node.start_again();
        restarts += 1;
    }
    let ids = publisher.await.unwrap();
    assert_eq!(ids.len(), TASKS);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut rerun = 0;
    let mut states: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let view = loop {
            match store.task(id).await.unwrap() {
                Some(v) if v.task.state == TaskState::Succeeded => break v,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "task {id} did not succeed: {other:#?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        *states
            .entry(view.task.state.as_str().to_owned())
            .or_default() += 1;
        let accepted = view
            .chain
            .iter()
            .filter(|r| r.receipt_type == ReceiptType::Accepted)
            .count();
        assert!(
            view.chain
                .iter()
                .any(|r| r.receipt_type == ReceiptType::Success)
        );
        if accepted > 1 {
            rerun += 1;
        }
    }
    assert_eq!(states.get("succeeded"), Some(&TASKS), "{states:?}");
    eprintln!(
        "broker restarts: tasks={TASKS} restarts={restarts} succeeded={TASKS} lost=0 rerun_visible={rerun}"
    );
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker survived both restarts"
    );
    assert!(
        sink.0.try_wait().unwrap().is_none(),
        "the sink survived both restarts"
    );
}

fn vm_rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_broker_stops_the_worker_taking_work_and_memory_stays_bounded() {
    const TASKS: usize = 20_000;
    const PREFETCH: usize = 200;
    let node = BrokerNode::start(BrokerOpts::default());
    let url = node.amqp_url();
    let conn = broker_link::connect(&url, "test").await.unwrap();
    apply_capabilities(&conn, &["noop"]).await;
    let producer = Producer::new(ProducerConfig::new(&url));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| TaskSpec::json("noop", &json!({"pad": "x".repeat(200)})).unwrap())
        .collect();
    for r in producer.publish_many(tasks, |_| {}).await {
        r.unwrap();
    }
    // Publishers are blocked from now on: receipts cannot be confirmed, so no lease can end.
    node.set_memory_watermark(0.00001);
    let w = worker(&url, "noop", 64, PREFETCH);
    let ch = conn.create_channel().await.unwrap();
    let depth = || async {
        ch.queue_declare(
            names::task_queue("noop").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count() as usize
    };
    // The worker takes at most its prefetch, then nothing more.
    wait_for(
        "the worker to fill its prefetch",
        Duration::from_secs(60),
        || async { (depth().await <= TASKS - PREFETCH).then_some(()) },
    )
    .await;
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(vm_rss_kb(w.pid()));
        assert_eq!(
            depth().await,
            TASKS - PREFETCH,
            "no delivery beyond the prefetch while blocked"
        );
    }
    assert!(peak < 64 * 1024, "worker RSS {peak} kB while blocked");
    // A publish into a blocked broker fails at its deadline, never reports success.
    let started = Instant::now();
    let o = chit()
        .args([
            "publish",
            "noop",
            "--amqp-url",
            &url,
            "--payload",
            "{}",
            "--deadline-secs",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a publish without a confirm must fail");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no broker confirm within 2s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deadline bounds the wait"
    );
    node.set_memory_watermark(0.4);
    wait_for(
        "every task done after the alarm clears",
        Duration::from_secs(120),
        || async {
            let unacked = node.ctl(&["list_queues", "-q", "name", "messages"]);
            let n: usize = unacked
                .lines()
                .find(|l| l.starts_with(&names::task_queue("noop")))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            (n == 0).then_some(())
        },
    )
    .await;
    eprintln!("memory alarm: tasks={TASKS} prefetch={PREFETCH} worker_peak_rss_kb={peak}");
}
