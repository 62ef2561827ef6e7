//! Dead letters end to end (issue 13): a task the broker dead-letters itself
//! still gets its `dead_lettered` receipt (finding 3), and `chit dlq purge`
//! asks first and leaves a `purged` receipt for every task it deletes
//! (finding 5).

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Receipt, ReceiptType, TaskEnvelope, Topology, names};
use lapin::options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions};
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, chit, queue_depth, wait_for};

const WAIT: Duration = Duration::from_secs(40);
const CAP: &str = "noop";

async fn setup() -> (Vhost, ReceiptTap) {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    Topology::for_capabilities(&[Capability::new(CAP).unwrap()])
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    (vhost, tap)
}

fn worker(vhost: &Vhost) -> ChildGuard {
    let mut cmd = chit();
    cmd.args(["worker", "--amqp-url", &vhost.url, "--capability", CAP]);
    ChildGuard::spawn(cmd)
}

fn of_type(rs: &[Receipt], t: ReceiptType) -> Vec<Receipt> {
    rs.iter().filter(|r| r.receipt_type == t).cloned().collect()
}

async fn depth(vhost: &Vhost, queue: &str) -> u32 {
    queue_depth(&vhost.connect().await, queue).await
}

/// Runs `chit <args>` on the vhost with stdin closed; returns (ok, stdout, stderr).
fn run_chit(vhost: &Vhost, args: &[&str]) -> (bool, String, String) {
    let out = chit()
        .args(args)
        .args(["--amqp-url", &vhost.url])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run chit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_the_broker_dead_letters_gets_its_receipt_and_replays_from_it() {
    let (vhost, tap) = setup().await;
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let published = producer
        .publish(TaskSpec::json(CAP, &json!({})).unwrap())
        .await
        .unwrap();
    let task_id = published.task_id.clone();

    // No worker: a consumer rejects the task, with requeue, until the broker
    // gives up on it (the queue's delivery limit) and dead-letters it.
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let task_queue = names::task_queue(CAP);
    let dead_queue = names::dead_letter_queue(CAP);
    wait_for("the broker to dead-letter the task", WAIT, || {
        let (ch, task_queue, dead_queue, vhost) = (&ch, &task_queue, &dead_queue, &vhost);
        async move {
            match ch
                .basic_get(task_queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                Some(m) => {
                    m.delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: true })
                        .await
                        .unwrap();
                    None
                }
                None => (depth(vhost, dead_queue).await == 1).then_some(()),
            }
        }
    })
    .await;

    // A worker that starts afterwards closes the chain.
    let _w = worker(&vhost);
    let rs = tap
        .wait_task(&task_id, WAIT, |rs| {
            !of_type(rs, ReceiptType::DeadLettered).is_empty()
        })
        .await;
    let dead = &of_type(&rs, ReceiptType::DeadLettered)[0];
    assert_eq!(dead.body["reason"], "delivery_limit", "{dead:?}");
    assert_eq!(dead.body["dead_lettered_by"], "broker", "{dead:?}");
    assert_eq!(dead.body["queue"], dead_queue.as_str());
    assert_eq!(
        dead.parent_receipt_ids,
        vec![published.queued_receipt_id.clone()]
    );
    assert!(
        of_type(&rs, ReceiptType::Accepted).is_empty(),
        "no worker ever ran it: {rs:?}"
    );
    // The watch queue is drained, and the dead letter still waits for a human.
    wait_for("the watch queue to drain", WAIT, || async {
        (depth(&vhost, &names::dead_letter_watch_queue(CAP)).await == 0).then_some(())
    })
    .await;
    assert_eq!(depth(&vhost, &dead_queue).await, 1);

    let (ok, out, err) = run_chit(&vhost, &["dlq", "list", CAP]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&task_id) && out.contains("delivery_limit"),
        "{out}"
    );

    // A replay continues the chain from that receipt.
    let (ok, out, err) = run_chit(&vhost, &["dlq", "replay", CAP]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), task_id);
    let rs = tap
        .wait_task(&task_id, WAIT, |rs| {
            !of_type(rs, ReceiptType::Success).is_empty()
        })
        .await;
    let requeued: Vec<Receipt> = of_type(&rs, ReceiptType::Queued)
        .into_iter()
        .filter(|r| r.attempt == 2)
        .collect();
    assert_eq!(requeued.len(), 1, "{rs:?}");
    assert_eq!(
        requeued[0].parent_receipt_ids,
        vec![dead.receipt_id.clone()]
    );
    assert_eq!(
        of_type(&rs, ReceiptType::DeadLettered).len(),
        1,
        "one dead_lettered receipt: {rs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_asks_first_and_leaves_a_purged_receipt_for_every_task() {
    let (vhost, tap) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let mut sink = chit();
    sink.args(["sink", "--amqp-url", &vhost.url, "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("r.db").display()));
    let _sink = ChildGuard::spawn(sink);
    let _w = worker(&vhost);

    // Two tasks the worker dead-letters (a body that is not JSON).
    let ch = vhost.connect().await.create_channel().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let env = TaskEnvelope::new(CAP);
        ch.basic_publish(
            names::TASK_EXCHANGE.into(),
            CAP.into(),
            BasicPublishOptions::default(),
            b"{not json",
            env.to_properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        ids.push(env.task_id);
    }
    let mut dead_receipts = Vec::new();
    for id in &ids {
        let rs = tap
            .wait_task(id, WAIT, |rs| {
                !of_type(rs, ReceiptType::DeadLettered).is_empty()
            })
            .await;
        dead_receipts.push(of_type(&rs, ReceiptType::DeadLettered)[0].clone());
    }
    let dead_queue = names::dead_letter_queue(CAP);
    wait_for(
        "both dead letters and a drained watch queue",
        WAIT,
        || async {
            let dead = depth(&vhost, &dead_queue).await;
            let watch = depth(&vhost, &names::dead_letter_watch_queue(CAP)).await;
            (dead == 2 && watch == 0).then_some(())
        },
    )
    .await;
    for id in &ids {
        // The worker wrote it; the dead-letter watch added none.
        assert_eq!(
            of_type(&tap.for_task(id), ReceiptType::DeadLettered).len(),
            1
        );
    }

    // Not on a terminal and no --yes: refused, nothing deleted.
    let (ok, _, err) = run_chit(&vhost, &["dlq", "purge", CAP]);
    assert!(!ok);
    assert!(
        err.contains("--yes") && err.contains("not a terminal"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(depth(&vhost, &dead_queue).await, 2);

    let (ok, out, err) = run_chit(&vhost, &["dlq", "purge", CAP, "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains("purged 2"), "{out}");
    assert_eq!(depth(&vhost, &dead_queue).await, 0);
    for (id, dead) in ids.iter().zip(&dead_receipts) {
        let rs = tap
            .wait_task(id, WAIT, |rs| !of_type(rs, ReceiptType::Purged).is_empty())
            .await;
        let purged = of_type(&rs, ReceiptType::Purged);
        assert_eq!(purged.len(), 1, "{rs:?}");
        assert_eq!(purged[0].parent_receipt_ids, vec![dead.receipt_id.clone()]);
        // The sink shows the task as purged.
        wait_for("the sink to show the task purged", WAIT, || {
            let o = chit()
                .args(["task", "show", id, "--json", "--api", &api])
                .output()
                .unwrap();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
                (v["task"]["state"] == "purged").then_some(())
            }
        })
        .await;
    }
}

/// On a terminal, purge asks first: "n" deletes nothing, "y" purges.
/// `script` gives the command a pseudo-terminal, as a user's shell would.
#[tokio::test(flavor = "multi_thread")]
async fn purge_on_a_terminal_asks_and_does_only_what_it_is_told() {
    let (vhost, _tap) = setup().await;
    let dead_queue = names::dead_letter_queue(CAP);
    let ch = vhost.connect().await.create_channel().await.unwrap();
    ch.basic_publish(
        "".into(),
        dead_queue.as_str().into(),
        BasicPublishOptions::default(),
        b"{}",
        TaskEnvelope::new(CAP).to_properties(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_for("the dead letter in its queue", WAIT, || async {
        (depth(&vhost, &dead_queue).await == 1).then_some(())
    })
    .await;
    let on_a_terminal = |answer: &str| {
        let line = format!(
            "{} dlq purge {CAP} --amqp-url {}",
            env!("CARGO_BIN_EXE_chit"),
            vhost.url
        );
        let mut script = std::process::Command::new("script");
        script
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = script.spawn().expect("script(1) from util-linux");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, shown) = on_a_terminal("n");
    assert!(!ok, "declining must not succeed: {shown}");
    assert!(shown.contains("[y/N]"), "the question is asked: {shown}");
    assert_eq!(depth(&vhost, &dead_queue).await, 1, "{shown}");
    let (ok, shown) = on_a_terminal("y");
    assert!(ok, "{shown}");
    assert!(shown.contains("purged 1"), "{shown}");
    assert_eq!(depth(&vhost, &dead_queue).await, 0);
}
