//! The core pipeline end to end on a real RabbitMQ: publish, lease, execute,
//! receipts, dead letters, crashes and draining.

mod support;

use broker_link::Declare;
use broker_topology::{ContentType, Receipt, ReceiptType, Topology, names};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use nix::sys::signal::Signal;
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, chit, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn worker(vhost: &Vhost, id: &str, concurrency: usize, prefetch: usize) -> ChildGuard {
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
        &concurrency.to_string(),
        "--prefetch",
        &prefetch.to_string(),
        "--drain-timeout",
        "20",
    ]);
    ChildGuard::spawn(cmd)
}

async fn setup() -> (Vhost, ReceiptTap, Producer) {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let conn = vhost.connect().await;
    Topology::for_capabilities(&[broker_topology::Capability::new("command.execute").unwrap()])
        .apply(&conn)
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    (vhost, tap, producer)
}

fn of_type(rs: &[Receipt], t: ReceiptType) -> Vec<Receipt> {
    rs.iter().filter(|r| r.receipt_type == t).cloned().collect()
}

fn has_final(rs: &[Receipt]) -> bool {
    rs.iter().any(|r| r.receipt_type.is_final())
}

async fn queue_depth(vhost: &Vhost, queue: &str) -> u32 {
    support::queue_depth(&vhost.connect().await, queue).await
}

#[tokio::test(flavor = "multi_thread")]
async fn command_task_runs_with_queued_accepted_success_chain_and_output_file() {
    let (vhost, tap, producer) = setup().await;
    let _w = worker(&vhost, "w1", 2, 4);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let spec = TaskSpec::json(
        "command.execute",
        &json!({"command": "echo hello; echo warn >&2", "output_path": out.to_str().unwrap()}),
    )
    .unwrap();
    let published = producer.publish(spec).await.unwrap();
    let rs = tap
        .wait_task(&published.task_id, WAIT, |rs| {
            rs.len() >= 3 && has_final(rs)
        })
        .await;

    let queued = of_type(&rs, ReceiptType::Queued);
    let accepted = of_type(&rs, ReceiptType::Accepted);
    let success = of_type(&rs, ReceiptType::Success);
    assert_eq!(
        (queued.len(), accepted.len(), success.len()),
        (1, 1, 1),
        "{rs:#?}"
    );
    assert_eq!(queued[0].receipt_id, published.queued_receipt_id);
    assert!(queued[0].parent_receipt_ids.is_empty());
    assert_eq!(
        accepted[0].parent_receipt_ids,
        vec![queued[0].receipt_id.clone()]
    );
    assert_eq!(
        success[0].parent_receipt_ids,
        vec![accepted[0].receipt_id.clone()]
    );
    assert_eq!(accepted[0].worker_id.as_deref(), Some("w1"));
    assert_eq!(success[0].body["exit_code"], 0);

    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written["stdout"], "hello\n");
    assert_eq!(written["stderr"], "warn\n");
    assert_eq!(written["exit_code"], 0);
    assert_eq!(written["command"], "echo hello; echo warn >&2");
    let artifact = &success[0].artifacts[0];
    assert_eq!(artifact.path.as_deref(), out.to_str());
    assert_eq!(artifact.size, Some(std::fs::metadata(&out).unwrap().len()));
}

#[tokio::test(flavor = "multi_thread")]
async fn nonzero_exit_gives_failure_receipt_with_exit_code_and_stderr_tail() {
    let (vhost, tap, producer) = setup().await;
    let _w = worker(&vhost, "w1", 2, 4);
    let mut spec = TaskSpec::json(
        "command.execute",
        &json!({"command": "echo broken >&2; exit 7"}),
    )
    .unwrap();
    spec.envelope.max_attempts = Some(1);
    let p = producer.publish(spec).await.unwrap();
    let rs = tap
        .wait_task(&p.task_id, WAIT, |rs| {
            rs.iter()
                .any(|r| r.receipt_type == ReceiptType::DeadLettered)
        })
        .await;
    let failure = &of_type(&rs, ReceiptType::Failure)[0];
    assert_eq!(failure.body["exit_code"], 7);
    assert_eq!(failure.body["stderr_tail"], "broken\n");
    assert_eq!(
        failure.parent_receipt_ids,
        vec![of_type(&rs, ReceiptType::Accepted)[0].receipt_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn msgpack_task_runs() {
    let (vhost, tap, _producer) = setup().await;
    let _w = worker(&vhost, "w1", 1, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mp.json");
    let payload =
        json!({"command": "printf msgpack", "output_path": out.to_str().unwrap()}).to_string();
    let o = chit()
        .args([
            "publish",
            "command.execute",
            "--amqp-url",
            &vhost.url,
            "--msgpack",
            "--payload",
            &payload,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let task_id = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let rs = tap.wait_task(&task_id, WAIT, has_final).await;
    assert_eq!(of_type(&rs, ReceiptType::Success).len(), 1, "{rs:#?}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written["stdout"], "msgpack");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_amqp_publish_without_chit_headers_runs_and_chain_starts_at_accepted() {
    let (vhost, tap, _producer) = setup().await;
    let _w = worker(&vhost, "w1", 1, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("raw.json");
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let body = json!({"command": "echo raw", "output_path": out.to_str().unwrap()}).to_string();
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "command.execute".into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let rs = wait_for("receipts of the raw task", WAIT, || {
        let all = tap.all();
        async move {
            if all.iter().any(|r| r.receipt_type == ReceiptType::Success) {
                Some(all)
            } else {
                None
            }
        }
    })
    .await;
    let success = &of_type(&rs, ReceiptType::Success)[0];
    let chain: Vec<_> = rs.iter().filter(|r| r.task_id == success.task_id).collect();
    assert_eq!(chain.len(), 2, "{chain:#?}");
    let accepted = chain
        .iter()
        .find(|r| r.receipt_type == ReceiptType::Accepted)
        .unwrap();
    assert!(
        accepted.parent_receipt_ids.is_empty(),
        "the chain starts at accepted"
    );
    assert_eq!(accepted.body["task_id_assigned"], true);
    assert!(of_type(&rs, ReceiptType::Queued).is_empty());
    assert!(out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn unroutable_task_type_is_an_error_naming_it() {
    let (vhost, _tap, producer) = setup().await;
    let err = producer
        .publish(TaskSpec::json("no.such.capability", &json!({})).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), producer::PublishErrorKind::Unroutable { task_type } if task_type == "no.such.capability"),
        "{err:?}"
    );
    let o = chit()
        .args([
            "publish",
            "no.such.capability",
            "--amqp-url",
            &vhost.url,
            "--payload",
            "{}",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("no.such.capability") && stderr.contains("no queue"),
        "{stderr}"
    );
}

/// One pass pipelines hundreds of publishes, some of them returned by the
/// broker: each task gets its own outcome, the queue holds exactly the tasks
/// that were taken, and only those get a `queued` receipt.
#[tokio::test(flavor = "multi_thread")]
async fn a_pass_mixing_routable_and_returned_tasks_gives_each_task_its_own_outcome() {
    let (vhost, tap, producer) = setup().await;
    let specs: Vec<_> = (0..600)
        .map(|i| {
            let task_type = if i % 7 == 3 {
                "no.such.capability"
            } else {
                "command.execute"
            };
            TaskSpec::json(task_type, &json!({"command": format!("echo {i}")})).unwrap()
        })
        .collect();
    let asked: Vec<(String, bool)> = specs
        .iter()
        .map(|s| {
            (
                s.task_id().to_owned(),
                s.envelope.task_type == "command.execute",
            )
        })
        .collect();
    let results = producer.publish_many(specs, |_| {}).await;
    assert_eq!(results.len(), asked.len());
    let mut taken = HashSet::new();
    for ((task_id, routable), result) in asked.iter().zip(results) {
        match result {
            Ok(published) => {
                assert!(routable, "{task_id} has no queue, yet was taken");
                assert_eq!(&published.task_id, task_id);
                taken.insert(published.task_id);
            }
            Err(e) => {
                assert!(!routable, "{task_id} has a queue, yet: {e:?}");
                assert!(
                    matches!(e.kind(), producer::PublishErrorKind::Unroutable { .. }),
                    "{task_id}: {e:?}"
                );
            }
        }
    }
    let routable = asked.iter().filter(|(_, r)| *r).count();
    assert_eq!(taken.len(), routable);

    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = names::task_queue("command.execute");
    let mut in_queue = HashSet::new();
    while let Some(m) = ch
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        assert!(in_queue.insert(id), "a task is in the queue twice");
    }
    assert_eq!(
        in_queue, taken,
        "the queue holds other tasks than those taken"
    );

    let queued = wait_for("a queued receipt for every task taken", WAIT, || {
        let ids: HashSet<String> = of_type(&tap.all(), ReceiptType::Queued)
            .into_iter()
            .map(|r| r.task_id)
            .collect();
        async move { (ids.len() >= routable).then_some(ids) }
    })
    .await;
    assert_eq!(
        queued, taken,
        "queued receipts for other tasks than those taken"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_bulk_publish_reports_bad_lines_and_exits_nonzero() {
    let (vhost, tap, _producer) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.jsonl");
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&json!({"command": format!("echo {i}")}).to_string());
        text.push('\n');
        if i == 50 {
            text.push_str("{not json\n");
        }
    }
    std::fs::write(&file, text).unwrap();
    let o = chit()
        .args([
            "publish",
            "command.execute",
            "--amqp-url",
            &vhost.url,
            "--jsonl",
            file.to_str().unwrap(),
            "--json",
            "--partial",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a bad line must fail the run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("line 52") && stderr.contains("not valid JSON"),
        "{stderr}"
    );
    let published: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(published.len(), 200);
    assert_eq!(
        queue_depth(&vhost, &names::task_queue("command.execute")).await,
        200
    );
    wait_for("200 queued receipts", WAIT, || {
        let n = of_type(&tap.all(), ReceiptType::Queued).len();
        async move { (n == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_body_is_dead_lettered_with_a_failure_receipt_and_worker_stays_up() {
    let (vhost, tap, producer) = setup().await;
    let _w = worker(&vhost, "w1", 1, 2);
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let mut bad = broker_topology::TaskEnvelope::new("command.execute");
    bad.parent_receipt_id = None;
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "command.execute".into(),
        BasicPublishOptions::default(),
        b"{\"command\": ",
        bad.to_properties(),
    )
    .await
    .unwrap();
    let mut wrong_ct = broker_topology::TaskEnvelope::new("command.execute");
    wrong_ct.content_type = ContentType::Json;
    let props = wrong_ct
        .to_properties()
        .with_content_type("text/xml".into());
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "command.execute".into(),
        BasicPublishOptions::default(),
        b"<x/>",
        props,
    )
    .await
    .unwrap();
    for (task_id, needle) in [
        (&bad.task_id, "invalid JSON"),
        (&wrong_ct.task_id, "text/xml"),
    ] {
        let rs = tap
            .wait_task(task_id, WAIT, |rs| {
                rs.iter()
                    .any(|r| r.receipt_type == ReceiptType::DeadLettered)
            })
            .await;
        let failure = &of_type(&rs, ReceiptType::Failure)[0];
        assert_eq!(failure.body["reason"], "invalid_payload");
        assert!(
            failure.body["error"].as_str().unwrap().contains(needle),
            "{failure:#?}"
        );
        assert_eq!(failure.body["will_retry"], false);
    }
    wait_for("2 dead letters", WAIT, || async {
        (queue_depth(&vhost, &names::dead_letter_queue("command.execute")).await == 2).then_some(())
    })
    .await;
    // The dead-letter copies keep what the publisher sent, content type included.
    let mut content_types = Vec::new();
    for _ in 0..2 {
        let m = ch
            .basic_get(
                names::dead_letter_queue("command.execute").as_str().into(),
                lapin::options::BasicGetOptions::default(),
            )
            .await
            .unwrap()
            .expect("a dead letter");
        content_types.push(
            m.delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.to_string()),
        );
        m.delivery
            .acker
            .ack(lapin::options::BasicAckOptions::default())
            .await
            .unwrap();
    }
    assert!(
        content_types.contains(&Some("text/xml".to_string())),
        "{content_types:?}"
    );
    // Still serving.
    let p = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": "true"})).unwrap())
        .await
        .unwrap();
    let rs = tap.wait_task(&p.task_id, WAIT, has_final).await;
    assert_eq!(of_type(&rs, ReceiptType::Success).len(), 1);
    assert_eq!(
        queue_depth(&vhost, &names::task_queue("command.execute")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_task_redelivers_to_a_second_worker_and_loses_nothing() {
    let (vhost, tap, producer) = setup().await;
    const TASKS: usize = 12;
    let specs: Vec<_> = (0..TASKS)
        .map(|i| {
            TaskSpec::json(
                "command.execute",
                &json!({"command": format!("sleep 1; echo {i}")}),
            )
            .unwrap()
        })
        .collect();
    let ids: Vec<String> = producer
        .publish_many(specs, |_| {})
        .await
        .into_iter()
        .map(|r| r.unwrap().task_id)
        .collect();
    let mut a = worker(&vhost, "worker-a", 4, 4);
    // Kill A once it holds leases on running tasks.
    wait_for("worker-a to accept 4 tasks", WAIT, || {
        let n = tap
            .all()
            .iter()
            .filter(|r| {
                r.worker_id.as_deref() == Some("worker-a")
                    && r.receipt_type == ReceiptType::Accepted
            })
            .count();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    a.signal(Signal::SIGKILL);
    a.wait_timeout(WAIT).expect("worker-a died");
    let _b = worker(&vhost, "worker-b", 6, 6);
    let mut chains = HashMap::new();
    for id in &ids {
        let rs = tap
            .wait_task(id, Duration::from_secs(60), |rs| {
                rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
            })
            .await;
        chains.insert(id.clone(), rs);
    }
    let mut redelivered = 0;
    let mut receipts = 0;
    for (id, rs) in &chains {
        receipts += rs.len();
        let accepted = of_type(rs, ReceiptType::Accepted);
        let success = of_type(rs, ReceiptType::Success);
        assert_eq!(
            success.len(),
            1,
            "task {id} must succeed exactly once: {rs:#?}"
        );
        let by_a = accepted
            .iter()
            .filter(|r| r.worker_id.as_deref() == Some("worker-a"))
            .count();
        if by_a > 0 && success[0].worker_id.as_deref() == Some("worker-b") {
            // A's lease died with it: B's accepted shows the redelivery.
            redelivered += 1;
            assert_eq!(accepted.len(), 2, "task {id}: {rs:#?}");
            let b_acc = accepted
                .iter()
                .find(|r| r.worker_id.as_deref() == Some("worker-b"))
                .unwrap();
            assert_eq!(b_acc.body["redelivered"], true);
            assert!(b_acc.body["delivery"].as_u64().unwrap() >= 2);
            assert_eq!(
                b_acc.parent_receipt_ids, accepted[0].parent_receipt_ids,
                "both accepted follow queued"
            );
        }
    }
    assert!(
        redelivered >= 1,
        "at least one task was running on worker-a when it died"
    );
    let ids_seen: HashSet<_> = chains.keys().collect();
    assert_eq!(ids_seen.len(), TASKS, "no task lost");
    eprintln!("kill -9 figures: tasks={TASKS} redelivered={redelivered} receipts={receipts}");
    assert_eq!(
        queue_depth(&vhost, &names::task_queue("command.execute")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_running_tasks_and_leaves_unstarted_ones_queued() {
    let (vhost, tap, producer) = setup().await;
    const TASKS: usize = 6;
    let specs: Vec<_> = (0..TASKS)
        .map(|i| {
            TaskSpec::json(
                "command.execute",
                &json!({"command": format!("sleep 1.5; echo {i}")}),
            )
            .unwrap()
        })
        .collect();
    for r in producer.publish_many(specs, |_| {}).await {
        r.unwrap();
    }
    // Concurrency 2 with prefetch 4: two tasks run, two more sit unstarted in the worker.
    let mut w = worker(&vhost, "drainer", 2, 4);
    wait_for("two tasks running", WAIT, || {
        let n = of_type(&tap.all(), ReceiptType::Accepted).len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    w.signal(Signal::SIGTERM);
    let status = w.wait_timeout(WAIT).expect("worker exits after draining");
    assert!(status.success(), "{status:?}");
    let all = tap.all();
    let accepted = of_type(&all, ReceiptType::Accepted);
    let success = of_type(&all, ReceiptType::Success);
    assert_eq!(accepted.len(), 2, "{all:#?}");
    // Receipts may still be in flight to the tap: wait for both successes.
    let started: Vec<String> = accepted.iter().map(|r| r.task_id.clone()).collect();
    for id in &started {
        tap.wait_task(id, WAIT, |rs| {
            rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
        })
        .await;
    }
    assert!(success.len() <= 2);
    assert_eq!(
        queue_depth(&vhost, &names::task_queue("command.execute")).await,
        (TASKS - 2) as u32,
        "unstarted tasks stay queued"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_with_other_arguments_gets_a_clear_message() {
    let vhost = Vhost::create();
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        names::task_queue("legacy").as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let o = chit()
        .args([
            "topology",
            "apply",
            "--amqp-url",
            &vhost.url,
            "--capability",
            "legacy",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The broker names the first argument it finds different (a classic queue has none of chit's).
    assert!(
        stderr.contains("queue chit.task.legacy already exists with a different x-"),
        "{stderr}"
    );
    assert!(!stderr.contains("error: PRECONDITION_FAILED"), "{stderr}");
    let show = chit()
        .args([
            "topology",
            "show",
            "--amqp-url",
            &vhost.url,
            "--capability",
            "legacy",
        ])
        .output()
        .unwrap();
    assert!(!show.status.success());
    let stdout = String::from_utf8_lossy(&show.stdout);
    assert!(
        stdout.contains("chit.task.legacy") && stdout.contains("DIFFERS"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chit_dev_runs_a_worker_and_a_sink_and_task_show_draws_the_chain() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let mut dev = chit();
    dev.args([
        "dev",
        "--amqp-url",
        &vhost.url,
        "--http",
        &format!("127.0.0.1:{port}"),
    ]);
    dev.args([
        "--store",
        &format!("sqlite://{}", dir.path().join("r.db").display()),
    ]);
    let _dev = ChildGuard::spawn(dev);
    let out = dir.path().join("hello.json");
    let payload =
        json!({"command": "echo hello", "output_path": out.to_str().unwrap()}).to_string();
    let task_id = wait_for("chit dev to declare the topology", WAIT, || {
        let o = chit()
            .args([
                "publish",
                "command.execute",
                "--amqp-url",
                &vhost.url,
                "--payload",
                &payload,
                "--deadline-secs",
                "2",
            ])
            .output()
            .unwrap();
        async move {
            o.status
                .success()
                .then(|| String::from_utf8(o.stdout).unwrap().trim().to_owned())
        }
    })
    .await;
    let tree = wait_for("the stored chain", WAIT, || {
        let o = chit()
            .args(["task", "show", &task_id, "--api", &api])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        async move { (o.status.success() && text.contains("success")).then_some(text) }
    })
    .await;
    let pos = |word: &str| {
        tree.find(word)
            .unwrap_or_else(|| panic!("{word} missing from:\n{tree}"))
    };
    assert!(
        pos("queued") < pos("accepted") && pos("accepted") < pos("success"),
        "{tree}"
    );
    assert!(tree.contains(&task_id), "{tree}");
    let o = chit()
        .args(["task", "show", &task_id, "--api", &api, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["task"]["state"], "succeeded");
    assert_eq!(v["chain"].as_array().unwrap().len(), 3);
    let o = chit()
        .args(["task", "list", "--api", &api, "--state", "succeeded"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&task_id));
    let o = chit()
        .args(["task", "list", "--api", &api, "--state", "finished"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("'finished'") && err.contains("possible values: queued"),
        "{err}"
    );
    let o = chit()
        .args(["task", "show", "no-such-task", "--api", &api])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"));
    assert!(out.exists());
}
