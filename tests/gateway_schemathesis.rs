//! schemathesis over the gateway's OpenAPI document: every operation gets
//! generated requests, valid and not, and none may be answered with a
//! server error (5xx). Runs against a real broker (a vhost of its own),
//! with a sink and a `noop` worker, so submissions, waits and the queries
//! do real work.
//!
//! The key submits only `noop` tasks (and has `admin` for the dead-letter
//! routes): generated payloads never reach a `command.execute` worker.
//!
//! schemathesis comes from PyPI, pinned in tests/schemathesis/requirements.txt
//! and installed into tests/schemathesis/.venv by
//! `deploy/local/ensure-services.sh --with-python`; without it this test
//! fails and says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{ChildGuard, Vhost, apply_capabilities, chit, free_port, wait_for};

/// How long the whole schemathesis run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// The schemathesis CLI: the project's virtualenv, else one on PATH.
fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/.venv/bin/st");
    if venv.exists() {
        return venv;
    }
    for name in ["st", "schemathesis"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return PathBuf::from(name);
        }
    }
    panic!(
        "schemathesis is not installed: run `deploy/local/ensure-services.sh --with-python`, \
         which installs tests/schemathesis/requirements.txt into tests/schemathesis/.venv"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error() {
    let st = schemathesis();
    let vhost = Vhost::create();
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["noop"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("receipts.db").display());

    let out = chit()
        .args([
            "gateway",
            "keys",
            "add",
            "--store",
            &store,
            "--name",
            "schemathesis",
        ])
        .args(["--scope", "noop", "--scope", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut sink = chit();
    sink.args(["sink", "--amqp-url", &vhost.url, "--store", &store])
        .args(["--http", &format!("127.0.0.1:{}", free_port())]);
    let _sink = ChildGuard::spawn(sink);
    let mut worker = chit();
    worker.args(["worker", "--amqp-url", &vhost.url, "--capability", "noop"]);
    let _worker = ChildGuard::spawn(worker);
    let port = free_port();
    let mut gateway = chit();
    gateway
        .args(["gateway", "--amqp-url", &vhost.url, "--store", &store])
        .args(["--http", &format!("127.0.0.1:{port}"), "--max-wait", "2s"])
        .env("RUST_LOG", "warn");
    let _gateway = ChildGuard::spawn(gateway);
    let base = format!("http://127.0.0.1:{port}");
    wait_for(
        "the gateway's /healthz 200",
        Duration::from_secs(30),
        || async {
            let r = reqwest::get(format!("{base}/healthz")).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    let report = dir.path().join("report");
    let mut run = Command::new(&st);
    run.args(["run", &format!("{base}/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: Python 3.11's `ast.parse`, which hypothesis calls
        // to describe its filters, can fail when two threads call it at once
        // ("AST constructor recursion depth mismatch").
        .args(["--max-examples", "30", "--workers", "1", "--seed", "18"])
        .args(["--generation-database", "none", "--request-timeout", "15"])
        .args(["--no-color", "--report-dir"])
        .arg(&report)
        // It keeps a cache (.schemathesis/) in its working directory.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = run.spawn().expect("run schemathesis");
    let pid = child.id();
    // A run that hangs is killed, not waited for.
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + RUN_TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
                return;
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("schemathesis took {:?}\n{stdout}", started.elapsed());
    assert!(
        started.elapsed() < RUN_TIMEOUT,
        "schemathesis ran over {RUN_TIMEOUT:?} and was killed:\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}",
        out.status
    );
    // It tested every operation of the document, and found no 5xx.
    let tested = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no count of tested operations:\n{stdout}"));
    assert!(tested >= 10, "only {tested} operations tested:\n{stdout}");
    assert!(!stdout.contains("Server error"), "{stdout}");
}
