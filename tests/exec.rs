//! `chit worker exec`: programs in any language as workers, on a real
//! RabbitMQ, with real processes. Each test runs the `chit` binary as an exec
//! worker and reads the receipts a user would read: types, output, logs,
//! reasons, exit codes, stderr tails.

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Receipt, ReceiptType, Topology};
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{ChildGuard, ReceiptTap, Vhost, chit, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// An example worker in `examples/exec/`.
fn example(file: &str) -> String {
    format!("{}/examples/exec/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// A test program in Python that misbehaves as its task's `mode` says,
/// and reports the environment chit gave it.
const MISBEHAVE: &str = r#"
import json, os, sys
task = json.load(sys.stdin)
mode = task["inputData"]["mode"]
env = f"TASK_ID={os.environ['TASK_ID']} TASK_TYPE={os.environ['TASK_TYPE']} ATTEMPT={os.environ['ATTEMPT']}"
if mode == "failed":
    print(json.dumps({"status": "FAILED", "reason": "no name given", "output": {"seen": task["attempt"]}, "logs": [env]}))
elif mode == "terminal":
    print(json.dumps({"status": "FAILED_WITH_TERMINAL_ERROR", "reason": "name is not a name", "logs": [env]}))
elif mode == "exit":
    print("half a result")
    print("disk on fire", file=sys.stderr)
    sys.exit(3)
elif mode == "garbage":
    print("Hello, not JSON")
elif mode == "flood":
    print(json.dumps({"status": "COMPLETED", "output": "x" * (1 << 20)}))
"#;

struct Setup {
    vhost: Vhost,
    tap: ReceiptTap,
    producer: Producer,
}

async fn setup(task_types: &[&str]) -> Setup {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let caps: Vec<Capability> = task_types
        .iter()
        .map(|t| Capability::new(*t).unwrap())
        .collect();
    Topology::for_capabilities(&caps)
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    Setup {
        vhost,
        tap,
        producer,
    }
}

/// `chit worker exec TASK_TYPE FLAGS... -- PROGRAM...`
fn exec_worker(vhost: &Vhost, task_type: &str, flags: &[&str], program: &[&str]) -> ChildGuard {
    let mut cmd = chit();
    cmd.env("CHIT_AMQP_URL", &vhost.url)
        .args(["worker", "exec", task_type, "--worker-id", "w1"])
        .args(flags)
        .arg("--")
        .args(program);
    ChildGuard::spawn(cmd)
}

async fn publish(s: &Setup, task_type: &str, payload: Value, max_attempts: u32) -> String {
    let mut spec = TaskSpec::json(task_type, &payload).unwrap();
    spec.envelope.max_attempts = Some(max_attempts);
    s.producer.publish(spec).await.unwrap().task_id
}

fn of_type(rs: &[Receipt], t: ReceiptType) -> Vec<Receipt> {
    rs.iter().filter(|r| r.receipt_type == t).cloned().collect()
}

fn ended_with(t: ReceiptType) -> impl Fn(&[Receipt]) -> bool {
    move |rs| rs.iter().any(|r| r.receipt_type == t)
}

/// Runs one greet example through `chit worker exec` and checks its success.
async fn greets(task_type: &str, program: &[&str]) {
    let s = setup(&[task_type]).await;
    let _w = exec_worker(&s.vhost, task_type, &["--concurrency", "2"], program);
    let id = publish(&s, task_type, json!({"name": "Ada"}), 1).await;
    let rs = s
        .tap
        .wait_task(&id, WAIT, ended_with(ReceiptType::Success))
        .await;
    let success = &of_type(&rs, ReceiptType::Success)[0];
    assert_eq!(success.body["status"], "COMPLETED", "{rs:#?}");
    assert_eq!(success.body["output"], json!({"message": "Hello Ada"}));
    assert_eq!(success.body["logs"], json!(["Processed greeting for Ada"]));
    assert_eq!(success.body["exit_code"], 0);
    let accepted = &of_type(&rs, ReceiptType::Accepted)[0];
    assert_eq!(success.parent_receipt_ids, [accepted.receipt_id.as_str()]);
    assert_eq!(success.worker_id.as_deref(), Some("w1"));
    assert!(of_type(&rs, ReceiptType::Failure).is_empty(), "{rs:#?}");

    // Without a name, as the seed's workers do.
    let id = publish(&s, task_type, json!({}), 1).await;
    let rs = s
        .tap
        .wait_task(&id, WAIT, ended_with(ReceiptType::Success))
        .await;
    let success = &of_type(&rs, ReceiptType::Success)[0];
    assert_eq!(success.body["output"]["message"], "Hello World");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_greet_worker_runs_through_exec() {
    greets("greet.python", &["python3", &example("greet.py")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_greet_worker_runs_through_exec() {
    greets("greet.node", &["node", &example("greet.js")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bash_jq_greet_worker_runs_through_exec() {
    greets("greet.bash", &["bash", &example("greet.sh")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_go_greet_worker_runs_through_exec() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("greet");
    // GOCACHE in the temporary directory: the build needs no network and
    // leaves nothing behind.
    let build = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(example("greet.go"))
        .env("GOCACHE", dir.path().join("cache"))
        .env("GOPATH", dir.path().join("gopath"))
        .env("GO111MODULE", "off")
        .output()
        .expect("go must be on PATH (deploy/local/ensure-services.sh installs golang-go)");
    assert!(
        build.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    greets("greet.go", &[binary.to_str().unwrap()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_is_retried_with_its_reason_and_terminal_failure_is_not() {
    let s = setup(&["misbehave.failed"]).await;
    let _w = exec_worker(
        &s.vhost,
        "misbehave.failed",
        &["--backoff-ms", "50"],
        &["python3", "-c", MISBEHAVE],
    );
    let id = publish(&s, "misbehave.failed", json!({"mode": "failed"}), 2).await;
    let rs = s
        .tap
        .wait_task(&id, WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    let failures = of_type(&rs, ReceiptType::Failure);
    assert_eq!(failures.len(), 2, "one failure per attempt: {rs:#?}");
    for f in &failures {
        let attempt = f.attempt;
        assert_eq!(f.body["reason"], "failed");
        assert_eq!(f.body["error"], "no name given");
        assert_eq!(f.body["status"], "FAILED");
        assert_eq!(f.body["retryable"], true);
        assert_eq!(f.body["output"], json!({"seen": attempt}));
        assert_eq!(
            f.body["logs"],
            json!([format!(
                "TASK_ID={id} TASK_TYPE=misbehave.failed ATTEMPT={attempt}"
            )])
        );
        assert_eq!(
            f.body["will_retry"],
            attempt == 1,
            "only the first is retried"
        );
    }
    assert_eq!(of_type(&rs, ReceiptType::RetryScheduled).len(), 1);

    let id = publish(&s, "misbehave.failed", json!({"mode": "terminal"}), 3).await;
    let rs = s
        .tap
        .wait_task(&id, WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    let failures = of_type(&rs, ReceiptType::Failure);
    assert_eq!(failures.len(), 1, "never retried: {rs:#?}");
    assert_eq!(failures[0].body["reason"], "permanent");
    assert_eq!(failures[0].body["error"], "name is not a name");
    assert_eq!(failures[0].body["retryable"], false);
    assert!(of_type(&rs, ReceiptType::RetryScheduled).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_programs_fail_saying_what_went_wrong() {
    let s = setup(&["misbehave.broken"]).await;
    let _w = exec_worker(
        &s.vhost,
        "misbehave.broken",
        &["--concurrency", "3", "--backoff-ms", "50"],
        &["python3", "-c", MISBEHAVE],
    );
    let exit = publish(&s, "misbehave.broken", json!({"mode": "exit"}), 1).await;
    let garbage = publish(&s, "misbehave.broken", json!({"mode": "garbage"}), 3).await;
    let flood = publish(&s, "misbehave.broken", json!({"mode": "flood"}), 3).await;
    let failure_of = |id: String| {
        let tap = s.tap.clone();
        async move {
            let rs = tap
                .wait_task(&id, WAIT, ended_with(ReceiptType::DeadLettered))
                .await;
            let failures = of_type(&rs, ReceiptType::Failure);
            assert_eq!(failures.len(), 1, "{rs:#?}");
            failures[0].body.clone()
        }
    };

    // A non-zero exit: a failure with the exit code and the stderr tail.
    let f = failure_of(exit).await;
    assert_eq!(f["reason"], "failed");
    assert_eq!(f["error"], "program exited with code 3");
    assert_eq!(f["exit_code"], 3);
    assert_eq!(f["stderr_tail"], "disk on fire\n");

    // Not JSON: not retried, though attempts remain, and says so.
    let f = failure_of(garbage).await;
    assert_eq!(f["reason"], "permanent");
    assert_eq!(f["retryable"], false);
    let error = f["error"].as_str().unwrap();
    assert!(
        error.starts_with("stdout is not one JSON object"),
        "{error}"
    );
    assert_eq!(f["stdout_tail"], "Hello, not JSON\n");
    assert_eq!(f["exit_code"], 0);

    // Over the output cap (1 MiB): not retried either, and says so.
    let f = failure_of(flood).await;
    assert_eq!(f["reason"], "permanent");
    let error = f["error"].as_str().unwrap();
    assert!(
        error.starts_with("stdout is larger than the output cap")
            && error.contains("at most 1048576"),
        "{error}"
    );
    assert!(f["stdout_bytes"].as_u64().unwrap() > 1 << 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_progress_twice_then_completed_hands_each_output_to_the_next_run() {
    let s = setup(&["progress"]).await;
    let _w = exec_worker(
        &s.vhost,
        "progress",
        &[],
        &["python3", &example("progress.py")],
    );
    let id = publish(&s, "progress", json!({"steps": 3, "pollSeconds": 0.2}), 1).await;
    let rs = s
        .tap
        .wait_task(&id, WAIT, ended_with(ReceiptType::Success))
        .await;
    let accepted = of_type(&rs, ReceiptType::Accepted);
    let polls = of_type(&rs, ReceiptType::InProgress);
    let success = of_type(&rs, ReceiptType::Success);
    assert_eq!(
        (accepted.len(), polls.len(), success.len()),
        (3, 2, 1),
        "three runs, two in progress: {rs:#?}"
    );
    // Not failures, and not attempts: the one attempt, with max_attempts 1.
    assert!(of_type(&rs, ReceiptType::Failure).is_empty(), "{rs:#?}");
    assert!(rs.iter().all(|r| r.attempt == 1), "{rs:#?}");
    // Each run's output reached the next: it counted on from it.
    for (n, poll) in polls.iter().enumerate() {
        let step = n + 1;
        assert_eq!(poll.body["status"], "IN_PROGRESS");
        assert_eq!(poll.body["output"], json!({"done": step}));
        assert_eq!(
            poll.body["logs"],
            json!([format!("step {step} of 3 (poll {n})")])
        );
        assert_eq!(poll.body["poll"], step);
        // 0.2 s, rounded down to the delay grid.
        assert_eq!(poll.body["delay_ms"], 192);
    }
    let done = &success[0];
    assert_eq!(done.body["output"]["done"], 3);
    assert_eq!(done.body["logs"], json!(["step 3 of 3 (poll 2)"]));
    // The chain: accepted, in_progress, accepted, in_progress, accepted, success.
    let mut at = done.parent_receipt_ids[0].clone();
    let mut walked = vec![ReceiptType::Success];
    while let Some(r) = rs.iter().find(|r| r.receipt_id == at) {
        walked.push(r.receipt_type);
        match r.parent_receipt_ids.first() {
            Some(p) => at = p.clone(),
            None => break,
        }
    }
    walked.reverse();
    use ReceiptType::*;
    assert_eq!(
        walked,
        [
            Queued, Accepted, InProgress, Accepted, InProgress, Accepted, Success
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_timeout_stops_the_program_and_its_children() {
    let s = setup(&["slow"]).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!(
        "echo started >&2; sh -c 'echo $$ > {}; sleep 60' & sleep 60",
        pidfile.display()
    );
    let _w = exec_worker(
        &s.vhost,
        "slow",
        &["--exec-timeout", "1", "--kill-grace-secs", "0.5"],
        &["sh", "-c", &script],
    );
    let started = Instant::now();
    let id = publish(&s, "slow", json!({}), 1).await;
    let rs = s
        .tap
        .wait_task(&id, WAIT, ended_with(ReceiptType::DeadLettered))
        .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let failure = &of_type(&rs, ReceiptType::Failure)[0];
    assert_eq!(failure.body["reason"], "timeout");
    let error = failure.body["error"].as_str().unwrap();
    assert!(error.starts_with("timed out after"), "{error}");
    assert!(error.contains("limit 1 s"), "{error}");
    assert_eq!(failure.body["stderr_tail"], "started\n");
    // The program's own child went with it.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    support::wait_for("the program's child to be gone", WAIT, || async move {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z"));
        (!alive).then_some(())
    })
    .await;
}

/// Waits until the sink's API says the task is in `state`.
async fn task_state(api: &str, state: &str) {
    support::wait_for(&format!("task state {state}"), WAIT, || async move {
        let task: Value = reqwest::get(api).await.ok()?.json().await.ok()?;
        (task["task"]["state"] == state).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_shows_a_task_between_polls_as_in_progress_with_its_output() {
    let s = setup(&["progress.sink"]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sink = chit();
    sink.env("CHIT_AMQP_URL", &s.vhost.url)
        .args(["sink", "--http", &format!("127.0.0.1:{port}")])
        .args([
            "--store",
            &format!("sqlite://{}", dir.path().join("r.db").display()),
        ]);
    let _sink = ChildGuard::spawn(sink);
    let _w = exec_worker(
        &s.vhost,
        "progress.sink",
        &[],
        &["python3", &example("progress.py")],
    );
    // A long wait between the two runs, to catch the task in it.
    let id = publish(
        &s,
        "progress.sink",
        json!({"steps": 2, "pollSeconds": 4}),
        1,
    )
    .await;
    let api = format!("http://127.0.0.1:{port}/v1/tasks/{id}");
    task_state(&api, "in_progress").await;
    let out = chit()
        .args(["task", "show", &id, "--api", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("in_progress"), "{shown}");
    assert!(shown.contains("poll 1, next run in"), "{shown}");
    assert!(shown.contains(r#"output: {"done":1}"#), "{shown}");
    assert!(shown.contains("log: step 1 of 2 (poll 0)"), "{shown}");
    task_state(&api, "succeeded").await;
}
