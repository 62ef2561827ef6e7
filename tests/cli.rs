//! What a person sees from the `chit` binary when things go wrong: plain,
//! one readable line for an unreachable broker, plain logs (issue 13,
//! findings 10 and 17).

mod support;

use std::process::Command;

fn chit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chit"))
}

/// A broker that is not there: port 1 on loopback refuses at once.
const CLOSED_PORT: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[test]
fn an_unreachable_broker_is_one_line_that_names_it() {
    let out = chit()
        .args(["publish", "noop", "--payload", "{}"])
        .args(["--amqp-url", "amqp://guest:secret@127.0.0.1:1/%2f"])
        .env_remove("CHIT_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run chit");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not a log of retries: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains("guest:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes_and_keep_dependency_filters() {
    let out = chit()
        .args(["publish", "noop", "--payload", "{}", "--deadline-secs", "2"])
        .args(["--amqp-url", CLOSED_PORT])
        .env("CHIT_LOG", "debug")
        .env_remove("RUST_LOG")
        .output()
        .expect("run chit");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the error names the broker: {stderr}"
    );
    assert!(
        stderr.contains("cannot reach broker"),
        "CHIT_LOG=debug shows chit's retries: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI escapes when stderr is not a terminal: {stderr:?}"
    );
    assert!(
        !stderr.lines().any(|l| l.contains(" lapin")),
        "CHIT_LOG=debug keeps lapin's own logging off: {stderr}"
    );
}

/// Runs `chit <args>` against a broker on a closed port (with a password in
/// its URL, and no sink API either) and checks it fails within a few seconds
/// with one line that names the URL without the password.
fn assert_fails_fast_naming_the_url(args: &[&str]) {
    let started = std::time::Instant::now();
    let out = chit()
        .args(args)
        .args(["--amqp-url", "amqp://guest:secret@127.0.0.1:1/%2f"])
        .env("CHIT_API_URL", "http://127.0.0.1:1")
        .env_remove("CHIT_LOG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run chit");
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(
        took < std::time::Duration::from_secs(10),
        "chit {args:?} took {took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains("guest:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn cancel_against_an_unreachable_broker_is_one_line_that_names_it() {
    assert_fails_fast_naming_the_url(&["cancel", "0190b1c2-0000-7000-8000-000000000000"]);
}

#[test]
fn dlq_list_against_an_unreachable_broker_is_one_line_that_names_it() {
    assert_fails_fast_naming_the_url(&["dlq", "list", "noop"]);
}

/// A vhost with a `noop` worker's topology, an idle capability, and a sink
/// with its API on a free port.
struct CancelSetup {
    vhost: support::Vhost,
    api: String,
    _sink: support::ChildGuard,
    _dir: tempfile::TempDir,
}

async fn cancel_setup() -> CancelSetup {
    use broker_link::Declare;
    let vhost = support::Vhost::create();
    let caps = ["noop", "idle"].map(|c| broker_topology::Capability::new(c).unwrap());
    broker_topology::Topology::for_capabilities(&caps)
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sink = support::chit();
    sink.args(["sink", "--amqp-url", &vhost.url, "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("r.db").display()));
    let sink = support::ChildGuard::spawn(sink);
    let api = format!("http://127.0.0.1:{port}");
    support::wait_for("the sink's API", WAIT, || {
        let url = format!("{api}/healthz");
        async move {
            let res = reqwest::get(url).await.ok()?;
            (res.status().as_u16() == 200).then_some(())
        }
    })
    .await;
    CancelSetup {
        vhost,
        api,
        _sink: sink,
        _dir: dir,
    }
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(40);

/// `chit cancel <args>` on the vhost: (exit ok, stdout, stderr).
fn cancel(vhost: &support::Vhost, args: &[&str]) -> (bool, String, String) {
    let out = chit()
        .arg("cancel")
        .args(args)
        .args(["--amqp-url", &vhost.url])
        .env_remove("CHIT_API_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run chit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The task ids of the cancel requests on the vhost's stream, in order. A
/// marker request is sent first (unchecked) and reading stops at it, so the
/// list holds exactly what was sent before.
async fn cancel_requests(vhost: &support::Vhost) -> Vec<String> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let marker = uuid::Uuid::new_v4().to_string();
    let (ok, _, err) = cancel(vhost, &[&marker, "--no-check"]);
    assert!(ok, "{err}");
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    let mut consumer = ch
        .basic_consume(
            broker_topology::names::CANCEL_STREAM.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    loop {
        let d = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("the marker request arrives")
            .unwrap()
            .unwrap();
        let req: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        let id = req["task_id"].as_str().unwrap().to_owned();
        if id == marker {
            return ids;
        }
        ids.push(id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_asks_the_sink_whether_the_task_is_known_and_not_finished() {
    let s = cancel_setup().await;
    let producer = producer::Producer::new(producer::ProducerConfig::new(&s.vhost.url));
    let api = ["--api", s.api.as_str()];

    // Unknown: an error, and nothing is sent.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (ok, out, err) = cancel(&s.vhost, &[&[unknown.as_str()][..], &api].concat());
    assert!(!ok, "{out}");
    assert!(
        err.contains(&unknown) && err.contains("unknown") && err.contains("--no-check"),
        "{err}"
    );

    // Queued (no worker for it): sent, and the state said.
    let queued = producer
        .publish(producer::TaskSpec::json("idle", &serde_json::json!({})).unwrap())
        .await
        .unwrap()
        .task_id;
    let (ok, out, err) = cancel(&s.vhost, &[&[queued.as_str()][..], &api].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("sent") && out.contains("state: queued"),
        "{out}"
    );

    // Finished: said so, and nothing is sent.
    let mut worker = support::chit();
    worker.args(["worker", "--amqp-url", &s.vhost.url, "--capability", "noop"]);
    let _worker = support::ChildGuard::spawn(worker);
    let done = producer
        .publish(producer::TaskSpec::json("noop", &serde_json::json!({})).unwrap())
        .await
        .unwrap()
        .task_id;
    support::wait_for("the task to succeed", WAIT, || {
        let url = format!("{}/v1/tasks/{done}", s.api);
        async move {
            let v: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (v["task"]["state"] == "succeeded").then_some(())
        }
    })
    .await;
    let (ok, out, err) = cancel(&s.vhost, &[&[done.as_str()][..], &api].concat());
    assert!(ok, "{err}");
    assert!(out.contains("already finished (succeeded)"), "{out}");
    assert!(!out.contains("sent "), "{out}");

    assert_eq!(cancel_requests(&s.vhost).await, [queued]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_without_a_sink_is_sent_and_says_the_state_is_unknown() {
    use broker_link::Declare;
    let vhost = support::Vhost::create();
    broker_topology::Topology::core()
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let (ok, out, err) = cancel(&vhost, &[&id, "--api", "http://127.0.0.1:1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("sent") && out.contains("state: unknown") && out.contains("127.0.0.1:1"),
        "{out}"
    );
    assert_eq!(cancel_requests(&vhost).await, [id]);
}
