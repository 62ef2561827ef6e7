//! Draining on shutdown, on a real RabbitMQ 3.10+: a worker that stops gives
//! its tasks back without spending their budgets, however often it happens.
//!
//! Quorum queues count every return of a message (a `nack` with requeue, a
//! closed channel) in `x-delivery-count`, and dead-letter it past the queue's
//! `x-delivery-limit` (5 here). A drain hands a task back as a fresh copy
//! instead, so more drains than that in a row leave the task healthy.

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Receipt, ReceiptType, Topology, names};
use nix::sys::signal::Signal;
use producer::{Producer, ProducerConfig, Published, TaskSpec};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, chit, wait_for};

const WAIT: Duration = Duration::from_secs(30);
/// More than the task queue's delivery limit (5).
const DRAINS: usize = 6;

async fn setup() -> (Vhost, ReceiptTap, Producer) {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    Topology::for_capabilities(&[Capability::new("command.execute").unwrap()])
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    (vhost, tap, producer)
}

/// One task at a time, two deliveries held: the second waits unstarted.
fn worker(vhost: &Vhost, id: &str, extra: &[&str]) -> ChildGuard {
    let mut cmd = chit();
    cmd.args([
        "worker",
        "--amqp-url",
        &vhost.url,
        "--capability",
        "command.execute",
        "--worker-id",
        id,
        "--concurrency",
        "1",
        "--prefetch",
        "2",
        "--kill-grace-secs",
        "0.2",
    ]);
    cmd.args(extra);
    ChildGuard::spawn(cmd)
}

fn of_type(rs: &[Receipt], t: ReceiptType) -> Vec<Receipt> {
    rs.iter().filter(|r| r.receipt_type == t).cloned().collect()
}

fn ended_with(t: ReceiptType) -> impl Fn(&[Receipt]) -> bool {
    move |rs| rs.iter().any(|r| r.receipt_type == t)
}

async fn ready(vhost: &Vhost) -> u32 {
    support::queue_depth(
        &vhost.connect().await,
        &names::task_queue("command.execute"),
    )
    .await
}

/// A task that holds the worker's one slot, from writing `started` until
/// `release` exists.
async fn blocker(producer: &Producer, started: &Path, release: &Path) -> Published {
    let command = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        release.display()
    );
    producer
        .publish(TaskSpec::json("command.execute", &json!({"command": command})).unwrap())
        .await
        .unwrap()
}

fn stop(mut w: ChildGuard) {
    w.signal(Signal::SIGTERM);
    let status = w
        .wait_timeout(WAIT)
        .expect("the worker exits after draining");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_handed_back_unstarted_by_more_drains_than_the_delivery_limit_still_runs() {
    let (vhost, tap, producer) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let release = |k: usize| dir.path().join(format!("release-{k}"));
    let started = |k: usize| dir.path().join(format!("started-{k}"));
    let ran = dir.path().join("ran");
    // The queue holds a blocker, then the task.
    blocker(&producer, &started(0), &release(0)).await;
    let task = producer
        .publish(
            TaskSpec::json(
                "command.execute",
                &json!({"command": format!("echo run >> {}", ran.display())}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    for k in 0..DRAINS {
        let w = worker(&vhost, &format!("w{k}"), &["--drain-timeout", "30"]);
        // The blocker runs and the task waits behind it, on the worker.
        wait_for("the worker to hold both deliveries", WAIT, || async {
            (started(k).exists() && ready(&vhost).await == 0).then_some(())
        })
        .await;
        // The next blocker queues ahead of the task the drain hands back.
        blocker(&producer, &started(k + 1), &release(k + 1)).await;
        stop_releasing(w, &release(k));
    }
    assert!(!ran.exists(), "the task never started during the drains");
    std::fs::write(release(DRAINS), "").unwrap();
    let _w = worker(&vhost, "last", &[]);
    let rs = tap
        .wait_task(&task.task_id, WAIT, ended_with(ReceiptType::Success))
        .await;
    // Nothing happened to the task but waiting: one run, under its queued
    // receipt, whose accepted says how often a drain handed it back.
    let accepted = of_type(&rs, ReceiptType::Accepted);
    assert_eq!(accepted.len(), 1, "{rs:#?}");
    assert_eq!(
        accepted[0].parent_receipt_ids,
        std::slice::from_ref(&task.queued_receipt_id)
    );
    assert_eq!(
        accepted[0].body["drain_returns"], DRAINS,
        "{:#?}",
        accepted[0]
    );
    assert_eq!(accepted[0].body["delivery"], 1);
    assert_eq!(accepted[0].attempt, 1);
    assert!(of_type(&rs, ReceiptType::Failure).is_empty(), "{rs:#?}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "run\n");
    assert_eq!(
        support::queue_depth(
            &vhost.connect().await,
            &names::dead_letter_queue("command.execute")
        )
        .await,
        0
    );
}

/// SIGTERM, then lets the running blocker finish so the drain completes.
fn stop_releasing(mut w: ChildGuard, release: &Path) {
    w.signal(Signal::SIGTERM);
    std::fs::write(release, "").unwrap();
    let status = w
        .wait_timeout(WAIT)
        .expect("the worker exits after draining");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_interrupted_mid_run_by_more_drains_than_its_budgets_runs_again_each_time() {
    let (vhost, tap, producer) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("may-finish");
    let runs = dir.path().join("runs");
    // Runs until stopped, until `done` exists. Three attempts by default.
    let command = format!(
        "echo $CHIT_ATTEMPT >> {}; test -e {} || exec sleep 60",
        runs.display(),
        done.display()
    );
    let task = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": command})).unwrap())
        .await
        .unwrap();
    for k in 0..DRAINS {
        let w = worker(&vhost, &format!("w{k}"), &["--drain-timeout", "0"]);
        wait_for("the task to run", WAIT, || {
            let n = std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count();
            async move { (n > k).then_some(()) }
        })
        .await;
        stop(w);
        // The interruption is on record before the worker exits.
        tap.wait_task(&task.task_id, WAIT, |rs| {
            of_type(rs, ReceiptType::RetryScheduled).len() > k
        })
        .await;
    }
    std::fs::write(&done, "").unwrap();
    let _w = worker(&vhost, "last", &[]);
    let rs = tap
        .wait_task(&task.task_id, WAIT, ended_with(ReceiptType::Success))
        .await;
    let failures = of_type(&rs, ReceiptType::Failure);
    let retries = of_type(&rs, ReceiptType::RetryScheduled);
    assert_eq!((failures.len(), retries.len()), (DRAINS, DRAINS), "{rs:#?}");
    for f in &failures {
        assert_eq!(f.body["reason"], "interrupted", "{f:#?}");
        assert_eq!(f.body["will_retry"], true);
    }
    // Each interruption leads to the next attempt, at once.
    for r in &retries {
        assert_eq!(r.body["delay_ms"], 0);
        let next = of_type(&rs, ReceiptType::Accepted)
            .into_iter()
            .find(|a| a.parent_receipt_ids == [r.receipt_id.clone()])
            .unwrap_or_else(|| panic!("no accepted after {r:#?}"));
        assert_eq!(next.attempt, r.attempt + 1);
        assert_eq!(next.body["delivery"], 1, "a drain is not a delivery");
    }
    let success = &of_type(&rs, ReceiptType::Success)[0];
    assert_eq!(success.attempt as usize, DRAINS + 1);
    assert!(of_type(&rs, ReceiptType::DeadLettered).is_empty());
}
