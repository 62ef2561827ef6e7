//! Delayed tasks (issue 18) on a real RabbitMQ: a delayed task waits in a
//! delay queue of its capability, not in its task queue, its chain starts
//! with `scheduled`, and the broker moves it to the task queue when it is
//! due, never before; a task type with no queue is refused at publish, not
//! lost after the delay.

mod support;

use broker_topology::{ReceiptType, names, schedule};
use chrono::{DateTime, Utc};
use producer::{Producer, ProducerConfig, PublishErrorKind, TaskSpec};
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;
use support::{
    ChildGuard, ReceiptTap, Vhost, apply_capabilities, chit, free_port, queue_depth, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

async fn setup() -> (Vhost, ReceiptTap) {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["command.execute"]).await;
    (vhost, tap)
}

fn worker(vhost: &Vhost) -> ChildGuard {
    let mut cmd = chit();
    cmd.args(["worker", "--amqp-url", &vhost.url]).args([
        "--capability",
        "command.execute",
        "--worker-id",
        "w1",
    ]);
    ChildGuard::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_task_waits_in_its_delay_queue_then_runs_when_due_not_before() {
    let (vhost, tap) = setup().await;
    let conn = vhost.connect().await;
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let spec = TaskSpec::json("command.execute", &json!({"command": "true"}))
        .unwrap()
        .with_delay(Duration::from_millis(2_500));
    let published = producer.publish(spec).await.unwrap();

    // Confirmed, and not in its task queue: in the delay queue of 2,500 ms.
    let task_queue = names::task_queue("command.execute");
    let delay_queue = names::delay_queue("command.execute", 2_500);
    assert_eq!(queue_depth(&conn, &task_queue).await, 0);
    assert_eq!(queue_depth(&conn, &delay_queue).await, 1);

    // A worker from now on; the task must not reach it before it is due.
    let _w = worker(&vhost);
    let rs = tap
        .wait_task(&published.task_id, WAIT, |rs| {
            rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
        })
        .await;
    let of = |t: ReceiptType| {
        rs.iter()
            .find(|r| r.receipt_type == t)
            .unwrap_or_else(|| panic!("no {t:?} in {rs:#?}"))
    };
    let scheduled = of(ReceiptType::Scheduled);
    assert!(
        rs.iter().all(|r| r.receipt_type != ReceiptType::Queued),
        "scheduled takes the place of queued: {rs:#?}"
    );
    assert_eq!(scheduled.receipt_id, published.queued_receipt_id);
    assert!(
        scheduled.parent_receipt_ids.is_empty(),
        "the root of the chain"
    );
    assert_eq!(scheduled.body["delay_ms"], 2_500);
    assert_eq!(scheduled.body["queue"], delay_queue.as_str());
    let due: DateTime<Utc> = scheduled.body["due_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .expect("due_at")
        .into();
    // `due_at` has milliseconds; `created_at` more.
    let sent_ms = scheduled.created_at.timestamp_millis();
    assert_eq!(due.timestamp_millis() - sent_ms, 2_500);
    let accepted = of(ReceiptType::Accepted);
    assert_eq!(accepted.parent_receipt_ids, [scheduled.receipt_id.clone()]);
    // One host's clock for both: the worker took it once it was due.
    assert!(
        accepted.created_at >= due,
        "accepted at {} before due at {due}",
        accepted.created_at
    );
    assert_eq!(queue_depth(&conn, &delay_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_task_of_a_type_with_no_queue_is_refused_at_publish() {
    let (vhost, tap) = setup().await;
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let typo = TaskSpec::json("command.exceute", &json!({}))
        .unwrap()
        .with_delay(Duration::from_secs(30));
    let err = producer.publish(typo).await.unwrap_err();
    assert!(
        matches!(err.kind(), PublishErrorKind::Unroutable { task_type } if task_type == "command.exceute"),
        "{err:?}"
    );
    // The same kind of error as an undelayed task of that type gets.
    let now = TaskSpec::json("command.exceute", &json!({})).unwrap();
    let err_now = producer.publish(now).await.unwrap_err();
    assert_eq!(err.kind(), err_now.kind());
    // In a batch, the others still go.
    let good = TaskSpec::json("command.execute", &json!({"command": "true"}))
        .unwrap()
        .with_delay(Duration::from_secs(30));
    let good_id = good.task_id().to_owned();
    let typo = TaskSpec::json("command.exceute", &json!({}))
        .unwrap()
        .with_delay(Duration::from_secs(30));
    let results = producer.publish_many(vec![typo, good], |_| {}).await;
    assert!(results[0].is_err() && results[1].is_ok(), "{results:?}");
    // Nothing of the typo made it to the broker: no delay queue for it.
    let conn = vhost.connect().await;
    let missing = names::delay_queue("command.exceute", 30_000);
    assert!(
        !broker_link::declare::queue_exists(&conn, &missing)
            .await
            .unwrap()
    );
    let rs = tap.wait_task(&good_id, WAIT, |rs| !rs.is_empty()).await;
    assert_eq!(rs[0].receipt_type, ReceiptType::Scheduled);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_longest_delay_is_taken_by_the_broker_and_a_longer_one_refused() {
    let (vhost, _tap) = setup().await;
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let spec = TaskSpec::json("command.execute", &json!({"command": "true"})).unwrap();
    // RabbitMQ takes the delay queue's TTL and x-expires at the limit.
    producer
        .publish(spec.clone().with_delay(schedule::MAX_DELAY))
        .await
        .unwrap();
    let too_long = spec.with_delay(schedule::MAX_DELAY + Duration::from_secs(1));
    let err = producer.publish(too_long).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::InvalidTask);
}

fn run(args: &[&str]) -> Output {
    chit().args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_delay_is_scheduled_in_the_sink_and_runs_when_due() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    // Topology, a sink and a command.execute worker.
    let mut dev = chit();
    dev.args(["dev", "--amqp-url", &vhost.url, "--http", &api])
        .args([
            "--store",
            &format!("sqlite://{}", dir.path().join("r.db").display()),
        ]);
    let _dev = ChildGuard::spawn(dev);
    let health = format!("http://{api}/healthz");
    wait_for("chit dev's API", WAIT, || {
        let health = health.clone();
        async move {
            let res = reqwest::get(&health).await.ok()?;
            res.status().is_success().then_some(())
        }
    })
    .await;

    // An hour away: it waits, as `scheduled`, in its delay queue.
    let out = run(&[
        "publish",
        "command.execute",
        "--amqp-url",
        &vhost.url,
        "--payload",
        r#"{"command": "true"}"#,
        "--delay",
        "1h",
    ]);
    assert!(out.status.success(), "{out:?}");
    let task_id = stdout(&out).trim().to_owned();
    let conn = vhost.connect().await;
    let delay_queue = names::delay_queue("command.execute", 3_600_000);
    assert_eq!(queue_depth(&conn, &delay_queue).await, 1);
    let shown = wait_for("the scheduled task in the sink", WAIT, || {
        let out = run(&["task", "show", &task_id, "--json", "--api", &api]);
        let body: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        async move { body }
    })
    .await;
    assert_eq!(shown["task"]["state"], "scheduled", "{shown:#}");
    assert_eq!(shown["chain"][0]["receipt_type"], "scheduled");
    assert_eq!(shown["chain"][0]["body"]["delay_ms"], 3_600_000);
    let tree = stdout(&run(&["task", "show", &task_id, "--api", &api]));
    assert!(tree.contains("\nscheduled #1 - "), "{tree}");
    assert!(tree.contains("(delay 3600000 ms)"), "{tree}");
    let listed = stdout(&run(&[
        "task",
        "list",
        "--state",
        "scheduled",
        "--api",
        &api,
    ]));
    assert!(listed.contains(&task_id), "{listed}");

    // A second away, waited for: it runs, and says so.
    let out = run(&[
        "publish",
        "command.execute",
        "--amqp-url",
        &vhost.url,
        "--payload",
        r#"{"command": "true"}"#,
        "--delay",
        "1s",
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let receipt: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(receipt["receipt_type"], "success");
    let id = receipt["task_id"].as_str().unwrap();
    let chain = wait_for("the finished chain in the sink", WAIT, || {
        let out = run(&["task", "show", id, "--json", "--api", &api]);
        let body: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        async move { body.filter(|b| b["task"]["state"] == "succeeded") }
    })
    .await;
    let kinds: Vec<&str> = chain["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["receipt_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["scheduled", "accepted", "success"]);

    // A bad delay is a usage error, naming the flag.
    let out = run(&[
        "publish",
        "command.execute",
        "--amqp-url",
        &vhost.url,
        "--payload",
        "{}",
        "--delay",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--delay"));
}
