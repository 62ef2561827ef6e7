//! Failure handling on a real RabbitMQ: retries with backoff, exhausted
//! retries and replay, poison messages, timeouts and cancellation.

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Receipt, ReceiptType, Topology, names};
use nix::sys::signal::Signal;
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::json;
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, chit, wait_for};

const WAIT: Duration = Duration::from_secs(40);

fn worker_with(vhost: &Vhost, id: &str, extra: &[&str]) -> ChildGuard {
    let mut cmd = chit();
    cmd.args([
        "worker",
        "--amqp-url",
        &vhost.url,
        "--worker-id",
        id,
        "--concurrency",
        "4",
        "--prefetch",
        "4",
    ]);
    cmd.args(extra);
    if !extra.contains(&"--capability") {
        cmd.args(["--capability", "command.execute"]);
    }
    ChildGuard::spawn(cmd)
}

async fn setup(caps: &[Capability]) -> (Vhost, ReceiptTap, Producer) {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    Topology::for_capabilities(caps)
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    (vhost, tap, producer)
}

fn cmd_cap() -> Vec<Capability> {
    vec![Capability::new("command.execute").unwrap()]
}

fn of_type(rs: &[Receipt], t: ReceiptType) -> Vec<Receipt> {
    rs.iter().filter(|r| r.receipt_type == t).cloned().collect()
}

fn ended_with(t: ReceiptType) -> impl Fn(&[Receipt]) -> bool {
    move |rs| rs.iter().any(|r| r.receipt_type == t)
}

async fn depth(vhost: &Vhost, queue: &str) -> u32 {
    support::queue_depth(&vhost.connect().await, queue).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_fails_twice_then_succeeds_shows_its_retries_and_delays() {
    let (vhost, tap, producer) = setup(&cmd_cap()).await;
    let _w = worker_with(&vhost, "w", &["--backoff-ms", "200", "--max-attempts", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("runs");
    let command = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; test $n -ge 3",
        c = counter.display()
    );
    let p = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": command})).unwrap())
        .await
        .unwrap();
    let rs = tap
        .wait_task(&p.task_id, WAIT, ended_with(ReceiptType::Success))
        .await;
    let accepted = of_type(&rs, ReceiptType::Accepted);
    let failures = of_type(&rs, ReceiptType::Failure);
    let retries = of_type(&rs, ReceiptType::RetryScheduled);
    assert_eq!(
        (accepted.len(), failures.len(), retries.len()),
        (3, 2, 2),
        "{rs:#?}"
    );
    let mut attempts: Vec<u32> = accepted.iter().map(|r| r.attempt).collect();
    attempts.sort();
    assert_eq!(attempts, vec![1, 2, 3]);
    for (i, retry) in retries.iter().enumerate() {
        let delay = retry.body["delay_ms"].as_u64().unwrap();
        assert!(
            delay >= 50 && delay <= 400 * (i as u64 + 1),
            "delay {delay} out of bounds: {retry:#?}"
        );
        assert_eq!(retry.body["error"], "command exited with code 1");
        // The retry follows the failure, and the next attempt's accepted follows the retry.
        let failure = failures
            .iter()
            .find(|f| f.receipt_id == retry.parent_receipt_ids[0])
            .unwrap();
        assert_eq!(failure.attempt, retry.attempt);
        let next = accepted
            .iter()
            .find(|a| a.parent_receipt_ids == vec![retry.receipt_id.clone()])
            .unwrap();
        assert_eq!(next.attempt, retry.attempt + 1);
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_dead_letter_and_replay_brings_the_task_back() {
    let (vhost, tap, producer) = setup(&cmd_cap()).await;
    let _w = worker_with(&vhost, "w", &["--backoff-ms", "100", "--max-attempts", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let command = format!("test -e {}", flag.display());
    let p = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": command})).unwrap())
        .await
        .unwrap();
    let rs = tap
        .wait_task(&p.task_id, WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    let dead = &of_type(&rs, ReceiptType::DeadLettered)[0];
    assert_eq!(dead.attempt, 2);
    assert_eq!(dead.body["error"], "command exited with code 1");
    wait_for("the dead letter", WAIT, || async {
        (depth(&vhost, &names::dead_letter_queue("command.execute")).await == 1).then_some(())
    })
    .await;
    let list = chit()
        .args(["dlq", "list", "command.execute", "--amqp-url", &vhost.url])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&p.task_id) && listed.contains("exited with code 1"),
        "{listed}"
    );

    std::fs::write(&flag, "").unwrap();
    let replay = chit()
        .args(["dlq", "replay", "command.execute", "--amqp-url", &vhost.url])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&replay.stdout).trim(), p.task_id);
    let rs = tap
        .wait_task(&p.task_id, WAIT, ended_with(ReceiptType::Success))
        .await;
    let queued = of_type(&rs, ReceiptType::Queued);
    let replayed = queued
        .iter()
        .find(|q| q.parent_receipt_ids == vec![dead.receipt_id.clone()])
        .expect("queued after replay names the dead letter");
    assert_eq!(replayed.attempt, 3);
    assert_eq!(of_type(&rs, ReceiptType::Success)[0].attempt, 3);
    assert_eq!(
        depth(&vhost, &names::dead_letter_queue("command.execute")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_kills_its_worker_every_time_is_dead_lettered_while_others_run() {
    let caps = vec![
        Capability {
            name: "crashy".into(),
            delivery_limit: 2,
        },
        Capability::new("command.execute").unwrap(),
    ];
    let (vhost, tap, producer) = setup(&caps).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chit.toml");
    std::fs::write(
        &config,
        "[[capability]]\nname = \"crashy\"\nexecutor = \"command.execute\"\ndelivery_limit = 2\n",
    )
    .unwrap();
    let spawn = || {
        let mut cmd = chit();
        cmd.args([
            "worker",
            "--amqp-url",
            &vhost.url,
            "--config",
            config.to_str().unwrap(),
            "--worker-id",
            "victim",
        ]);
        cmd.args([
            "--capability",
            "crashy=command.execute",
            "--capability",
            "command.execute",
            "--concurrency",
            "2",
            "--prefetch",
            "1",
        ]);
        ChildGuard::spawn(cmd)
    };
    // $PPID of the task's shell is the worker itself.
    let poison = producer
        .publish(TaskSpec::json("crashy", &json!({"command": "kill -9 $PPID"})).unwrap())
        .await
        .unwrap();
    let mut crashes = 0;
    let mut w = spawn();
    let rs = loop {
        if let Some(status) = w.0.try_wait().unwrap() {
            assert!(!status.success());
            crashes += 1;
            assert!(crashes <= 5, "the poison task was never stopped");
            w = spawn();
        }
        let rs = tap.for_task(&poison.task_id);
        if rs
            .iter()
            .any(|r| r.receipt_type == ReceiptType::DeadLettered)
        {
            break rs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        crashes, 2,
        "two deliveries crashed the worker, the third was stopped"
    );
    let failure = &of_type(&rs, ReceiptType::Failure)[0];
    assert!(
        failure.body["error"]
            .as_str()
            .unwrap()
            .contains("poison message"),
        "{failure:#?}"
    );
    assert!(
        of_type(&rs, ReceiptType::Accepted).len() >= 2,
        "each crashed delivery shows: {rs:#?}"
    );
    assert_eq!(depth(&vhost, &names::dead_letter_queue("crashy")).await, 1);
    let ok = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": "true"})).unwrap())
        .await
        .unwrap();
    tap.wait_task(&ok.task_id, WAIT, ended_with(ReceiptType::Success))
        .await;
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_past_its_timeout_is_killed_with_its_children() {
    let (vhost, tap, producer) = setup(&cmd_cap()).await;
    let _w = worker_with(&vhost, "w", &["--kill-grace-secs", "0.5"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let command = format!(
        "sleep 60 & echo $! >> {p}; sh -c 'echo $$ >> {p}; trap \"\" TERM; sleep 60'",
        p = pidfile.display()
    );
    let mut spec = TaskSpec::json(
        "command.execute",
        &json!({"command": command, "timeout_secs": 1}),
    )
    .unwrap();
    spec.envelope.max_attempts = Some(1);
    let p = producer.publish(spec).await.unwrap();
    let rs = tap
        .wait_task(&p.task_id, WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    let failure = &of_type(&rs, ReceiptType::Failure)[0];
    assert_eq!(failure.body["reason"], "timeout");
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    wait_for(
        "every process of the task to be gone",
        Duration::from_secs(10),
        || {
            let any = pids.iter().any(|p| alive(*p));
            async move { (!any).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn header_timeout_applies_to_any_executor_and_is_retryable() {
    let (vhost, tap, producer) = setup(&cmd_cap()).await;
    let _w = worker_with(
        &vhost,
        "w",
        &["--kill-grace-secs", "0.2", "--backoff-ms", "100"],
    );
    let mut spec = TaskSpec::json("command.execute", &json!({"command": "sleep 30"})).unwrap();
    spec.envelope.timeout_ms = Some(300);
    spec.envelope.max_attempts = Some(2);
    let p = producer.publish(spec).await.unwrap();
    let rs = tap
        .wait_task(&p.task_id, WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    let failures = of_type(&rs, ReceiptType::Failure);
    assert_eq!(failures.len(), 2, "a timeout is retried: {rs:#?}");
    assert!(failures.iter().all(|f| f.body["reason"] == "timeout"));
    assert_eq!(of_type(&rs, ReceiptType::RetryScheduled).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_a_queued_task_and_a_running_one() {
    let (vhost, tap, producer) = setup(&cmd_cap()).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let queued = producer
        .publish(
            TaskSpec::json(
                "command.execute",
                &json!({"command": format!("touch {}", marker.display())}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let o = chit()
        .args(["cancel", &queued.task_id, "--amqp-url", &vhost.url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The worker starts after the cancellation and still learns of it.
    let _w = worker_with(&vhost, "w", &["--kill-grace-secs", "30"]);
    let rs = tap
        .wait_task(&queued.task_id, WAIT, ended_with(ReceiptType::Cancelled))
        .await;
    assert!(of_type(&rs, ReceiptType::Success).is_empty());
    assert!(!marker.exists(), "a cancelled queued task never runs");

    let pidfile = dir.path().join("pid");
    let running = producer
        .publish(
            TaskSpec::json(
                "command.execute",
                &json!({"command": format!("echo $$ > {}; exec sleep 60", pidfile.display())}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    tap.wait_task(&running.task_id, WAIT, ended_with(ReceiptType::Accepted))
        .await;
    let pid: i32 = wait_for("the task's pid", WAIT, || {
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        async move { pid }
    })
    .await;
    // Forced: the 30 s kill grace must not apply.
    let o = chit()
        .args([
            "cancel",
            &running.task_id,
            "--force",
            "--amqp-url",
            &vhost.url,
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let rs = tap
        .wait_task(
            &running.task_id,
            Duration::from_secs(15),
            ended_with(ReceiptType::Cancelled),
        )
        .await;
    let cancelled = &of_type(&rs, ReceiptType::Cancelled)[0];
    assert_eq!(cancelled.body["error"], "cancelled (forced)");
    assert!(!alive(pid), "the cancelled task's process is gone");
    assert_eq!(
        depth(&vhost, &names::task_queue("command.execute")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_also_drains() {
    let (vhost, tap, producer) = setup(&cmd_cap()).await;
    let mut w = worker_with(&vhost, "w", &[]);
    let p = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": "sleep 1"})).unwrap())
        .await
        .unwrap();
    tap.wait_task(&p.task_id, WAIT, ended_with(ReceiptType::Accepted))
        .await;
    w.signal(Signal::SIGINT);
    assert!(w.wait_timeout(WAIT).unwrap().success());
    tap.wait_task(&p.task_id, WAIT, ended_with(ReceiptType::Success))
        .await;
}
