//! `chit task show` as a new user meets it (issue 13, findings 4, 12 and
//! 13): right after `chit publish` it shows the task, or says plainly that
//! no receipt has reached the sink yet; `--api` and `--http` take
//! `localhost:PORT` and `:PORT`; `queued` comes before `accepted`.

mod support;

use std::process::Output;
use std::time::Duration;
use support::{ChildGuard, Vhost, chit, free_port, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `chit dev` (topology, a sink and a worker) with its API on `localhost:PORT`,
/// once `/healthz` answers 200.
async fn dev(vhost: &Vhost, dir: &tempfile::TempDir) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = chit();
    cmd.args(["dev", "--amqp-url", &vhost.url])
        .args(["--http", &format!("localhost:{port}")])
        .args([
            "--store",
            &format!("sqlite://{}", dir.path().join("r.db").display()),
        ]);
    let dev = ChildGuard::spawn(cmd);
    let health = format!("http://127.0.0.1:{port}/healthz");
    wait_for("chit dev's API on localhost", WAIT, || {
        let health = health.clone();
        async move {
            let res = reqwest::get(&health).await.ok()?;
            res.status().is_success().then_some(())
        }
    })
    .await;
    (dev, port)
}

fn publish(vhost: &Vhost, payload: &str) -> String {
    let out = chit()
        .args(["publish", "command.execute", "--amqp-url", &vhost.url])
        .args(["--payload", payload])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "publish failed: {stderr}");
    stdout.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn show_right_after_publish_finds_the_task_through_api_localhost_port() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let (_dev, port) = dev(&vhost, &dir).await;
    let task_id = publish(&vhost, r#"{"command": "echo hi"}"#);

    // At once, no retry loop of our own: show waits for the first receipt.
    let out = chit()
        .args([
            "task",
            "show",
            &task_id,
            "--api",
            &format!("localhost:{port}"),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "show right after publish: {stderr}");
    assert!(
        stdout.starts_with(&format!("task {task_id} (command.execute)")),
        "{stdout}"
    );
    assert!(stdout.contains("\nqueued #1 "), "{stdout}");

    // `:PORT` is this machine too; once done, the chain reads top down.
    let api = format!(":{port}");
    let tree = wait_for("the finished chain", WAIT, || {
        let o = chit()
            .args(["task", "show", &task_id, "--api", &api])
            .output()
            .unwrap();
        let (stdout, _) = text(&o);
        async move { (o.status.success() && stdout.contains("success #1")).then_some(stdout) }
    })
    .await;
    let kinds: Vec<&str> = tree
        .lines()
        .skip(1)
        // Indented lines under the summary (`trace: ...`) are not receipts.
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        kinds,
        ["queued", "accepted", "success"],
        "flat, in parent order:\n{tree}"
    );

    // Finding 4: producer and worker share this host's clock, and `queued`
    // is dated when the task was sent, so it is never after `accepted`.
    let o = chit()
        .args(["task", "show", &task_id, "--json", "--api"])
        .arg(format!("http://localhost:{port}/"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let chain = v["chain"].as_array().unwrap();
    let at = |kind: &str| {
        let r = chain
            .iter()
            .find(|r| r["receipt_type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {v}"));
        chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap()).unwrap()
    };
    assert!(at("queued") <= at("accepted"), "{v:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_with_no_receipts_yet_gets_a_plain_message_after_the_wait() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let (_dev, port) = dev(&vhost, &dir).await;
    let started = std::time::Instant::now();
    let out = chit()
        .args(["task", "show", "no-such-task", "--wait", "0.5"])
        .args(["--api", &format!("localhost:{port}")])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it waited for the receipts"
    );
    assert!(
        stderr.contains("no receipts for task no-such-task yet"),
        "{stderr}"
    );
    assert!(stderr.contains("may still be on their way"), "{stderr}");
    assert!(
        stderr.contains(&format!("http://localhost:{port}")),
        "names the sink it asked: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A bad address is refused before anything is asked.
    let out = chit()
        .args(["task", "show", "x", "--api", "ftp://localhost:1"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("--api \"ftp://localhost:1\""), "{stderr}");
}
