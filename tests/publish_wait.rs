//! Publish-and-wait (issue 18) on a real RabbitMQ: a task published with a
//! `reply_to` queue gets the receipt that ends it there, once that receipt
//! is confirmed, from whichever attempt ends it; `Producer::publish_and_wait`
//! and `chit publish --wait` are built on it, and any AMQP client that sets
//! `reply_to` gets the same answer.

mod support;

use broker_topology::{ContentType, Receipt, ReceiptType, codec, names};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use producer::{Producer, ProducerConfig, TaskSpec, WaitOutcome};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, apply_capabilities, chit, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A vhost with the topology of `command.execute` and `noop`, and a tap on
/// its receipts.
async fn setup() -> (Vhost, ReceiptTap) {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["command.execute", "noop"]).await;
    (vhost, tap)
}

/// A `command.execute` worker (and nothing for `noop`).
fn worker(vhost: &Vhost) -> ChildGuard {
    worker_of(vhost, "command.execute")
}

fn worker_of(vhost: &Vhost, capability: &str) -> ChildGuard {
    let mut cmd = chit();
    cmd.args(["worker", "--amqp-url", &vhost.url]).args([
        "--capability",
        capability,
        "--worker-id",
        "w1",
    ]);
    ChildGuard::spawn(cmd)
}

fn command(cmd: &str) -> TaskSpec {
    TaskSpec::json("command.execute", &json!({ "command": cmd })).unwrap()
}

/// The receipt that ended the task, or a panic naming what came instead.
fn finished(outcome: WaitOutcome) -> Receipt {
    match outcome {
        WaitOutcome::Finished { published, receipt } => {
            assert_eq!(receipt.task_id, published.task_id);
            receipt
        }
        other => panic!("the task did not end in time: {other:?}"),
    }
}

/// An exclusive, server-named queue on `conn` and every receipt that
/// arrives in it, as a client of its own would have.
async fn reply_queue(
    conn: &lapin::Connection,
) -> (String, Arc<Mutex<Vec<(BasicProperties, Receipt)>>>) {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // What the protocol asks of any client that wants replies: bind the
    // queue to the reply exchange under its own name.
    ch.queue_bind(
        q.name().clone(),
        names::REPLY_EXCHANGE.into(),
        q.name().clone(),
        lapin::options::QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let replies = Arc::new(Mutex::new(Vec::new()));
    let seen = replies.clone();
    tokio::spawn(async move {
        let _ch = ch;
        while let Some(Ok(d)) = consumer.next().await {
            let receipt: Receipt = ContentType::Json.decode(&d.data).expect("a receipt");
            seen.lock().unwrap().push((d.properties.clone(), receipt));
        }
    });
    (q.name().as_str().to_owned(), replies)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_success_returns_its_receipt_with_the_executors_output() {
    let (vhost, tap) = setup().await;
    let _w = worker(&vhost);
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let outcome = producer
        .publish_and_wait(command("echo hello >&2"), WAIT)
        .await
        .unwrap();
    let receipt = finished(outcome);
    assert_eq!(receipt.receipt_type, ReceiptType::Success);
    assert_eq!(receipt.body["exit_code"], 0);
    assert_eq!(receipt.body["stderr_tail"], "hello\n");
    // The reply is the receipt the sinks get, confirmed before it was sent.
    let rs = tap
        .wait_task(&receipt.task_id, WAIT, |rs| {
            rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
        })
        .await;
    let stored = rs
        .iter()
        .find(|r| r.receipt_type == ReceiptType::Success)
        .unwrap();
    assert_eq!(stored, &receipt);

    // Waits at once on one producer, each answered with its own task.
    let waits = (0..4).map(|i| {
        let producer = producer.clone();
        async move {
            let r = finished(
                producer
                    .publish_and_wait(command(&format!("echo {i} >&2")), WAIT)
                    .await
                    .unwrap(),
            );
            assert_eq!(r.body["stderr_tail"], format!("{i}\n"));
        }
    });
    futures_util::future::join_all(waits).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_that_will_not_be_retried_returns_the_failure_with_its_reason() {
    let (vhost, _tap) = setup().await;
    let _w = worker(&vhost);
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let mut spec = command("echo broken >&2; exit 7");
    spec.envelope.max_attempts = Some(1);
    let receipt = finished(producer.publish_and_wait(spec, WAIT).await.unwrap());
    assert_eq!(receipt.receipt_type, ReceiptType::Failure);
    assert_eq!(receipt.body["reason"], "failed");
    assert_eq!(receipt.body["will_retry"], false);
    assert_eq!(receipt.body["exit_code"], 7);
    assert_eq!(receipt.body["stderr_tail"], "broken\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_worker_means_timed_out_with_the_task_id() {
    let (vhost, tap) = setup().await;
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let spec = TaskSpec::json("noop", &json!({})).unwrap();
    let task_id = spec.task_id().to_owned();
    let started = std::time::Instant::now();
    let outcome = producer
        .publish_and_wait(spec, Duration::from_millis(800))
        .await
        .unwrap();
    let WaitOutcome::TimedOut { published } = outcome else {
        panic!("nothing runs noop here: {outcome:?}")
    };
    assert_eq!(published.task_id, task_id);
    assert!(started.elapsed() >= Duration::from_millis(800));
    // It was published all the same, and waits in its queue.
    tap.wait_task(&task_id, WAIT, |rs| {
        rs.iter().any(|r| r.receipt_type == ReceiptType::Queued)
    })
    .await;
    let conn = vhost.connect().await;
    assert_eq!(
        support::queue_depth(&conn, &names::task_queue("noop")).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_from_a_plain_amqp_client_with_reply_to_gets_the_reply() {
    let (vhost, tap) = setup().await;
    let _w = worker(&vhost);
    let conn = vhost.connect().await;
    let (queue, replies) = reply_queue(&conn).await;
    // No chit header, no message id: only a body, a routing key, and the
    // two properties of an RPC request.
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "command.execute".into(),
        BasicPublishOptions::default(),
        br#"{"command": "echo rpc >&2"}"#,
        BasicProperties::default()
            .with_reply_to(queue.as_str().into())
            .with_correlation_id("request-7".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let (props, receipt) = wait_for("the reply", WAIT, || {
        let first = replies.lock().unwrap().first().cloned();
        async move { first }
    })
    .await;
    assert_eq!(receipt.receipt_type, ReceiptType::Success);
    assert_eq!(receipt.body["stderr_tail"], "rpc\n");
    assert_eq!(
        props.correlation_id().as_ref().map(|c| c.as_str()),
        Some("request-7"),
        "an RPC client's correlation id comes back"
    );
    assert_eq!(
        props.kind().as_ref().map(|t| t.as_str()),
        Some(names::REPLY_MESSAGE_TYPE)
    );
    assert_eq!(
        props.content_type().as_ref().map(|t| t.as_str()),
        Some(codec::JSON)
    );
    // The task id the worker gave the bare message is the receipt's.
    let rs = tap
        .wait_task(&receipt.task_id, WAIT, |rs| {
            rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
        })
        .await;
    assert_eq!(rs[0].receipt_type, ReceiptType::Accepted);
    assert_eq!(rs[0].body["task_id_assigned"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_task_replies_once_at_its_end_with_success() {
    let (vhost, tap) = setup().await;
    let _w = worker(&vhost);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("failed-once");
    let conn = vhost.connect().await;
    let (queue, replies) = reply_queue(&conn).await;
    // Fails the first time, succeeds the second.
    let mut spec = command(&format!(
        "test -e {m} || {{ touch {m}; exit 3; }}",
        m = marker.display()
    ));
    spec.envelope.max_attempts = Some(2);
    spec.envelope.backoff_ms = Some(20);
    // The envelope's own `reply_to`: a queue of the caller's choosing.
    spec.envelope.reply_to = Some(queue);
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let published = producer.publish(spec).await.unwrap();
    let (_, receipt) = wait_for("the reply", WAIT, || {
        let first = replies.lock().unwrap().first().cloned();
        async move { first }
    })
    .await;
    assert_eq!(receipt.receipt_type, ReceiptType::Success);
    assert_eq!(receipt.attempt, 2);
    assert_eq!(receipt.task_id, published.task_id);
    // The first attempt's failure and retry came first and sent nothing.
    tap.wait_task(&published.task_id, WAIT, |rs| {
        rs.iter()
            .any(|r| r.receipt_type == ReceiptType::RetryScheduled)
    })
    .await;
    assert_eq!(replies.lock().unwrap().len(), 1);

    // publish_and_wait sees the same: the retry is not the end.
    std::fs::remove_file(&marker).unwrap();
    let mut spec = command(&format!(
        "test -e {m} || {{ touch {m}; exit 3; }}",
        m = marker.display()
    ));
    spec.envelope.max_attempts = Some(2);
    spec.envelope.backoff_ms = Some(20);
    let receipt = finished(producer.publish_and_wait(spec, WAIT).await.unwrap());
    assert_eq!(
        (receipt.receipt_type, receipt.attempt),
        (ReceiptType::Success, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_the_broker_dead_letters_replies_its_dead_lettered_receipt() {
    let (vhost, tap) = setup().await;
    let conn = vhost.connect().await;
    let (queue, replies) = reply_queue(&conn).await;
    let mut spec = TaskSpec::json("noop", &json!({})).unwrap();
    spec.envelope.reply_to = Some(queue);
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let published = producer.publish(spec).await.unwrap();

    // No worker: a consumer rejects the task, with requeue, until the
    // broker gives up on it (the queue's delivery limit) and dead-letters it.
    let ch = conn.create_channel().await.unwrap();
    let task_queue = names::task_queue("noop");
    let dead_queue = names::dead_letter_queue("noop");
    wait_for("the broker to dead-letter the task", WAIT, || {
        let (ch, task_queue, dead_queue, conn) = (&ch, &task_queue, &dead_queue, &conn);
        async move {
            let got = ch
                .basic_get(task_queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap();
            match got {
                Some(m) => {
                    let requeue = BasicRejectOptions { requeue: true };
                    m.delivery.acker.reject(requeue).await.unwrap();
                    None
                }
                None => (support::queue_depth(conn, dead_queue).await == 1).then_some(()),
            }
        }
    })
    .await;
    assert!(replies.lock().unwrap().is_empty());

    // The worker's dead-letter watch writes the receipt, then replies it.
    let _w = worker_of(&vhost, "noop");
    let (_, receipt) = wait_for("the reply", WAIT, || {
        let first = replies.lock().unwrap().first().cloned();
        async move { first }
    })
    .await;
    assert_eq!(receipt.task_id, published.task_id);
    assert_eq!(receipt.receipt_type, ReceiptType::DeadLettered);
    assert_eq!(receipt.body["dead_lettered_by"], "broker");
    let rs = tap
        .wait_task(&published.task_id, WAIT, |rs| {
            rs.iter()
                .any(|r| r.receipt_type == ReceiptType::DeadLettered)
        })
        .await;
    assert!(rs.contains(&receipt), "the reply is the stored receipt");
}

/// `chit publish --wait ...` on `vhost`: (exit code, stdout JSON, stderr).
fn publish_wait(vhost: &Vhost, args: &[&str]) -> (i32, Value, String) {
    let out = chit()
        .args(["publish", "--amqp-url", &vhost.url, "--wait"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {stdout}\n{stderr}"));
    (out.status.code().expect("an exit code"), json, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_wait_prints_the_receipt_and_exits_0_1_or_124() {
    let (vhost, _tap) = setup().await;
    let _w = worker(&vhost);

    let (code, receipt, stderr) = publish_wait(
        &vhost,
        &["command.execute", "--payload", r#"{"command": "true"}"#],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(receipt["receipt_type"], "success");
    assert_eq!(receipt["body"]["exit_code"], 0);

    let (code, receipt, stderr) = publish_wait(
        &vhost,
        &[
            "command.execute",
            "--payload",
            r#"{"command": "exit 9"}"#,
            "--max-attempts",
            "1",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(receipt["receipt_type"], "failure");
    assert_eq!(receipt["body"]["exit_code"], 9);

    // Nothing serves noop here.
    let (code, out, stderr) =
        publish_wait(&vhost, &["noop", "--payload", "{}", "--timeout", "500ms"]);
    assert_eq!(code, 124, "{stderr}");
    assert_eq!(out["timed_out"], true);
    let task_id = out["task_id"].as_str().expect("the task id");
    assert!(
        stderr.contains(task_id) && stderr.contains("still queued"),
        "{stderr}"
    );

    // Not with --jsonl, and --timeout only with --wait.
    for args in [
        &["publish", "noop", "--wait", "--jsonl", "-"][..],
        &["publish", "noop", "--payload", "{}", "--timeout", "1s"][..],
    ] {
        let out = chit()
            .args(args)
            .args(["--amqp-url", &vhost.url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} is a usage error");
    }
}
