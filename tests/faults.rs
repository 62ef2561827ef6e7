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

/// Publishes `body` to the task exchange as a plain AMQP client would.
async fn publish_raw(vhost: &Vhost, body: &[u8], props: lapin::BasicProperties) {
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "command.execute".into(),
        Default::default(),
        body,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// The dead letters of command.execute, read and left in the queue.
async fn peek_dead_letters(vhost: &Vhost) -> Vec<lapin::BasicProperties> {
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    let queue = names::dead_letter_queue("command.execute");
    while let Some(m) = ch
        .basic_get(queue.as_str().into(), Default::default())
        .await
        .unwrap()
    {
        out.push(m.delivery.properties.clone());
    }
    // Unacked: closing the channel puts them back.
    let _ = ch.close(200, "".into()).await;
    out
}

fn header(props: &lapin::BasicProperties, name: &str) -> Option<lapin::types::AMQPValue> {
    props.headers().as_ref()?.inner().get(name).cloned()
}

fn text(s: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(s.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_dead_letter_keeps_its_content_type_and_properties() {
    let (vhost, tap, _producer) = setup(&cmd_cap()).await;
    let _w = worker_with(&vhost, "w", &[]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    // Valid JSON, but labelled with a content type chit does not read.
    let body = json!({"command": format!("touch {}", marker.display())}).to_string();
    let mut headers = lapin::types::FieldTable::default();
    headers.insert("x-app".into(), text("kept"));
    let props = lapin::BasicProperties::default()
        .with_message_id("custom-1".into())
        .with_content_type("application/x-custom".into())
        .with_correlation_id("corr-1".into())
        .with_headers(headers);
    publish_raw(&vhost, body.as_bytes(), props).await;
    let dead_lettered =
        |n: usize| move |rs: &[Receipt]| of_type(rs, ReceiptType::DeadLettered).len() >= n;
    let rs = tap.wait_task("custom-1", WAIT, dead_lettered(1)).await;
    let failure = &of_type(&rs, ReceiptType::Failure)[0];
    assert!(
        failure.body["error"]
            .as_str()
            .unwrap()
            .contains("application/x-custom"),
        "{failure:#?}"
    );
    let replay = chit()
        .args(["dlq", "replay", "command.execute", "--amqp-url", &vhost.url])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // The replay is the same message: still not JSON to chit, so it is
    // refused again rather than run as if it were.
    let rs = tap.wait_task("custom-1", WAIT, dead_lettered(2)).await;
    let failures = of_type(&rs, ReceiptType::Failure);
    let again = failures.iter().find(|f| f.attempt == 2).expect("{rs:#?}");
    assert!(
        again.body["error"]
            .as_str()
            .unwrap()
            .contains("application/x-custom"),
        "{again:#?}"
    );
    assert!(!marker.exists(), "a body of unknown type never runs");
    let dead = wait_for("the second dead letter", WAIT, || async {
        let all = peek_dead_letters(&vhost).await;
        (all.len() == 1).then(|| all.into_iter().next().unwrap())
    })
    .await;
    assert_eq!(
        dead.content_type().as_ref().unwrap().as_str(),
        "application/x-custom"
    );
    assert_eq!(dead.correlation_id().as_ref().unwrap().as_str(), "corr-1");
    assert_eq!(header(&dead, "x-app"), Some(text("kept")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_copy_sets_aside_the_headers_chit_could_not_read() {
    let (vhost, tap, _producer) = setup(&cmd_cap()).await;
    let _w = worker_with(&vhost, "w", &[]);
    let mut headers = lapin::types::FieldTable::default();
    headers.insert("x-chit-timeout-ms".into(), text("soon"));
    headers.insert("x-chit-backoff-ms".into(), text("250"));
    headers.insert("x-app".into(), text("kept"));
    let props = lapin::BasicProperties::default()
        .with_message_id("bad-header-1".into())
        .with_headers(headers);
    publish_raw(&vhost, br#"{"command": "true"}"#, props).await;
    let rs = tap
        .wait_task("bad-header-1", WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    let failure = &of_type(&rs, ReceiptType::Failure)[0];
    assert_eq!(failure.body["reason"], "invalid_payload");
    assert!(
        failure.body["error"]
            .as_str()
            .unwrap()
            .contains("x-chit-timeout-ms"),
        "{failure:#?}"
    );
    let dead = wait_for("the dead letter", WAIT, || async {
        let all = peek_dead_letters(&vhost).await;
        (all.len() == 1).then(|| all.into_iter().next().unwrap())
    })
    .await;
    // The bad value is kept for diagnosis, under a name chit never reads as
    // the task's setting; the readable headers stay, as chit read them.
    assert_eq!(header(&dead, "x-chit-timeout-ms"), None);
    let Some(lapin::types::AMQPValue::FieldTable(invalid)) =
        header(&dead, "x-chit-invalid-headers")
    else {
        panic!("no x-chit-invalid-headers: {dead:?}")
    };
    assert_eq!(
        invalid.inner().get("x-chit-timeout-ms"),
        Some(&text("soon"))
    );
    assert_eq!(invalid.inner().len(), 1);
    assert_eq!(
        header(&dead, "x-chit-backoff-ms"),
        Some(lapin::types::AMQPValue::LongLongInt(250))
    );
    assert_eq!(header(&dead, "x-app"), Some(text("kept")));
    assert!(header(&dead, "x-chit-last-error").is_some());
    // So a replay runs the task.
    let replay = chit()
        .args(["dlq", "replay", "command.execute", "--amqp-url", &vhost.url])
        .output()
        .unwrap();
    assert!(replay.status.success());
    let rs = tap
        .wait_task("bad-header-1", WAIT, ended_with(ReceiptType::Success))
        .await;
    assert_eq!(of_type(&rs, ReceiptType::Success)[0].attempt, 2);
}

/// Runs a worker until it consumes, then stops it; returns its log.
async fn startup_log(vhost: &Vhost, extra: &[&str]) -> String {
    let mut cmd = chit();
    cmd.args([
        "worker",
        "--amqp-url",
        &vhost.url,
        "--capability",
        "command.execute",
    ]);
    cmd.args(extra);
    cmd.stderr(std::process::Stdio::piped());
    let mut w = ChildGuard::spawn(cmd);
    let stderr = w.0.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    wait_for("the worker to consume", WAIT, || {
        let consuming = log.lock().unwrap().contains("consuming");
        async move { consuming.then_some(()) }
    })
    .await;
    w.signal(Signal::SIGTERM);
    assert!(w.wait_timeout(WAIT).unwrap().success());
    reader.join().unwrap();
    log.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_no_run_time_limit_warns_of_the_brokers_consumer_timeout() {
    let (vhost, _tap, _producer) = setup(&cmd_cap()).await;
    let log = startup_log(&vhost, &[]).await;
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no run-time limit"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    for needle in [
        "task_type=command.execute",
        "consumer_timeout_secs=1800",
        "--timeout-secs",
    ] {
        assert!(warnings[0].contains(needle), "{needle}: {log}");
    }
    // A limit, here from the flag, silences it.
    let log = startup_log(&vhost, &["--timeout-secs", "600"]).await;
    assert!(!log.contains("no run-time limit"), "{log}");
    assert!(!log.contains("consumer_timeout"), "{log}");
}
