//! `chit publish` refuses what no worker could run before publishing
//! anything, reads `-` as standard input, and handles a JSON-lines file with
//! bad lines all or nothing (issue 13, findings 7 and 8).
//!
//! Each test gives the topology a queue of its own bound to every receipt,
//! which nothing consumes: once `chit publish` has exited, every task and
//! receipt it published is in the task queue or that queue, so "nothing was
//! published" is a depth of 0 without waiting.

mod support;

use broker_topology::names;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use std::io::Write;
use std::process::{Output, Stdio};
use support::{Vhost, apply_capabilities, chit, queue_depth};

/// The receipts queue of these tests.
const RECEIPTS: &str = "test.all-receipts";

/// A vhost with the topology of `command.execute` and of `my.own` (a
/// capability chit does not ship), and [`RECEIPTS`].
async fn setup() -> (Vhost, lapin::Connection) {
    let vhost = Vhost::create();
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["command.execute", "my.own"]).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        RECEIPTS.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        RECEIPTS.into(),
        names::RECEIPT_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (vhost, conn)
}

/// Runs `chit publish <args>` on `vhost`, with `stdin` as standard input.
fn publish(vhost: &Vhost, args: &[&str], stdin: &str) -> Output {
    let mut child = chit()
        .arg("publish")
        .args(args)
        .args(["--amqp-url", &vhost.url, "--deadline-secs", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chit");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (tasks in the queue of `capability`, receipt batches published).
async fn published(conn: &lapin::Connection, capability: &str) -> (u32, u32) {
    (
        queue_depth(conn, &names::task_queue(capability)).await,
        queue_depth(conn, RECEIPTS).await,
    )
}

fn is_task_id(line: &str) -> bool {
    uuid::Uuid::parse_str(line).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_or_flag_no_worker_could_run_is_refused_and_nothing_is_published() {
    let (vhost, conn) = setup().await;
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--payload", r#"{"cmd":"echo hi"}"#],
            &[
                "invalid command.execute payload",
                r#"payload: "command" is a required property"#,
                "'cmd' was unexpected",
            ],
        ),
        (
            &["--payload", r#""just a string""#],
            &[r#"payload: "just a string" is not of type "object""#],
        ),
        (
            &["--payload", r#"{"command":"x","timeout_secs":0}"#],
            &["/timeout_secs: 0 is less than or equal to the minimum of 0"],
        ),
        (
            &["--payload", r#"{"command":"x","args":["-l",3]}"#],
            &[r#"/args/1: 3 is not of type "string""#],
        ),
        (
            &[
                "--payload",
                r#"{"command":"echo hi"}"#,
                "--max-attempts",
                "0",
            ],
            &["'--max-attempts <MAX_ATTEMPTS>'", "0 is not in 1.."],
        ),
        (
            &[
                "--payload",
                r#"{"command":"echo hi"}"#,
                "--timeout-secs",
                "0",
            ],
            &["'--timeout-secs <TIMEOUT_SECS>'", "out of range"],
        ),
        (
            &["--payload", r#"{"command":"echo hi"}"#, "--timeout-secs=-2"],
            &["'--timeout-secs <TIMEOUT_SECS>'", "out of range"],
        ),
        (
            &["--payload", "{not json"],
            &["the payload is not valid JSON"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = vec!["command.execute"];
        all.extend_from_slice(args);
        let out = publish(&vhost, &all, "");
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed a task id: {}",
            text(&out.stdout)
        );
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: no {needle:?} in {stderr}"
            );
        }
        assert_eq!(
            published(&conn, "command.execute").await,
            (0, 0),
            "{args:?} published"
        );
    }
    // The same queue takes a good task, so the refusals above were chit's.
    let out = publish(
        &vhost,
        &["command.execute", "--payload", r#"{"command":"echo hi"}"#],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(is_task_id(text(&out.stdout).trim()));
    assert_eq!(published(&conn, "command.execute").await, (1, 1));
    // A capability chit does not ship has no schema: any payload goes.
    let out = publish(&vhost, &["my.own", "--payload", r#"{"cmd":"echo hi"}"#], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(published(&conn, "my.own").await, (1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_file_dash_reads_standard_input() {
    let (vhost, conn) = setup().await;
    let args = ["command.execute", "--payload-file", "-"];
    let out = publish(&vhost, &args, r#"{"command": "echo from stdin"}"#);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        is_task_id(text(&out.stdout).trim()),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(published(&conn, "command.execute").await, (1, 1));
    let out = publish(&vhost, &args, r#"{"command": ""}"#);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/command: "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(published(&conn, "command.execute").await, (1, 1));
}

/// Lines 2 (not JSON) and 4 (no `command`) are bad; 5 is blank.
const MIXED: &str = "{\"command\": \"echo 1\"}\n\
                     {\"command\": \n\
                     {\"command\": \"echo 3\"}\n\
                     {\"cmd\": \"echo 4\"}\n\
                     \n\
                     {\"command\": \"echo 6\"}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_jsonl_file_with_bad_lines_publishes_nothing_and_names_them() {
    let (vhost, conn) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(&file, MIXED).unwrap();
    let out = publish(
        &vhost,
        &["command.execute", "--jsonl", file.to_str().unwrap()],
        "",
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(stderr.contains("line 2: not valid JSON"), "{stderr}");
    let line4 = stderr.lines().find(|l| l.starts_with("line 4: ")).unwrap();
    assert!(
        line4.starts_with("line 4: invalid command.execute payload: ")
            && line4.contains(r#"payload: "command" is a required property"#),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 of 5 lines are bad (line 2, 4); nothing was published"),
        "{stderr}"
    );
    assert!(stderr.contains("--partial"), "{stderr}");
    assert_eq!(published(&conn, "command.execute").await, (0, 0));

    // Fixed, from standard input: every line, one task id a line, in order.
    let fixed = MIXED
        .replace("{\"command\": \n", "{\"command\": \"echo 2\"}\n")
        .replace("cmd", "command");
    let out = publish(&vhost, &["command.execute", "--jsonl", "-"], &fixed);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids.len(), 5, "{stdout}");
    assert!(ids.iter().all(|l| is_task_id(l)), "{stdout}");
    let (tasks, receipts) = published(&conn, "command.execute").await;
    assert_eq!(tasks, 5);
    assert!(receipts >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn partial_publishes_the_good_lines_and_still_fails() {
    let (vhost, conn) = setup().await;
    let out = publish(
        &vhost,
        &["command.execute", "--jsonl", "-", "--partial", "--json"],
        MIXED,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "bad lines fail the run: {stderr}");
    assert!(
        stderr.contains("line 2: not valid JSON") && stderr.contains("line 4: invalid"),
        "{stderr}"
    );
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = rows.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 6]);
    assert!(
        rows.iter()
            .all(|r| is_task_id(r["task_id"].as_str().unwrap())
                && r["queued_receipt_id"].is_string())
    );
    let (tasks, receipts) = published(&conn, "command.execute").await;
    assert_eq!(tasks, 3);
    assert!(receipts >= 1);
}

/// Flag mistakes are found before any connection is tried.
#[test]
fn partial_needs_jsonl_and_the_deadline_cannot_be_zero() {
    for (args, needle) in [
        (&["--partial"][..], "--jsonl"),
        (
            &["--deadline-secs", "0"][..],
            "invalid value '0' for '--deadline-secs <DEADLINE_SECS>'",
        ),
    ] {
        let out = chit()
            .args(["publish", "noop", "--payload", "{}"])
            .args(args)
            .args(["--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("127.0.0.1:1"),
            "{args:?} tried the broker: {stderr}"
        );
    }
}
