//! The dashboard in a real browser (issue 18): Playwright (`playwright-core`
//! from npm, tests/browser/) drives Debian's chromium, headless, against a
//! real `chit gateway` with a worker and a sink on a vhost of its own. The
//! script (tests/browser/dashboard.mjs) publishes a task through the
//! gateway, watches it reach `succeeded`, opens its chain (and that of a
//! task that succeeds on its retry), dead-letters a task, replays it from
//! the dead-letter page and purges another, taking a screenshot at each
//! step into `target/tmp/dashboard-browser/`.
//!
//! Never skipped: without chromium or the npm package it fails and says how
//! to install them (`deploy/local/ensure-services.sh` does both).

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Topology};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{ChildGuard, Vhost, chit, free_port, wait_for};

const CAP: &str = "command.execute";

/// How long the whole browser script may take: three tasks through a
/// worker and the sink, each step polled every 2 s by the page.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

/// Screenshots the script must leave, in its order.
const SCREENSHOTS: [&str; 13] = [
    "01-key-prompt.png",
    "02-task-succeeded.png",
    "03-task-chain.png",
    "04-retried-chain.png",
    "05-workers.png",
    "06-queues.png",
    "07-dead-lettered-filter.png",
    "08-dlq.png",
    "09-dlq-replayed.png",
    "10-replayed-chain.png",
    "11-purge-confirm.png",
    "12-dlq-purged.png",
    "13-key-refused.png",
];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The browser, or a failure that says how to get it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHIT_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: the dashboard's browser test needs Debian's chromium. Install it with \
         `deploy/local/ensure-services.sh` (or `apt-get install -y chromium`), or point \
         CHIT_TEST_CHROMIUM at a Chromium binary",
        path.display()
    );
    path
}

/// Checks node and playwright-core are installed, or fails saying how.
fn check_node_modules() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js 20 or newer (deploy/local/ensure-services.sh \
         installs Debian's nodejs)"
    );
    let package = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        package.exists(),
        "{} is missing: run `deploy/local/ensure-services.sh`, or `npm ci` in {}",
        package.display(),
        browser_dir().display()
    );
}

/// Runs `chit <args>` to completion; returns stdout, failing with stderr.
fn run_chit(args: &[&str]) -> String {
    let out = chit()
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run chit");
    assert!(
        out.status.success(),
        "chit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_task_succeed_and_replays_a_dead_letter_in_chromium() {
    let chromium = chromium();
    check_node_modules();

    // Screenshots of this run only: earlier ones are removed first, so the
    // files asserted below were made now.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let vhost = Vhost::create();
    Topology::for_capabilities(&[Capability::new(CAP).unwrap()])
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("receipts.db").display());

    let mut sink = chit();
    sink.args(["sink", "--amqp-url", &vhost.url, "--store", &store])
        .arg("--http")
        .arg(format!("127.0.0.1:{}", free_port()));
    let _sink = ChildGuard::spawn(sink);

    let mut worker = chit();
    worker.args([
        "worker",
        "--amqp-url",
        &vhost.url,
        "--capability",
        CAP,
        "--worker-id",
        "dashboard-worker",
    ]);
    let _worker = ChildGuard::spawn(worker);

    let added = run_chit(&[
        "gateway",
        "keys",
        "add",
        "--json",
        "--store",
        &store,
        "--name",
        "dashboard-test",
        "--scope",
        "*",
        "--scope",
        "admin",
    ]);
    let added: serde_json::Value = serde_json::from_str(&added)
        .unwrap_or_else(|e| panic!("`chit gateway keys add --json` printed {added:?}: {e}"));
    let key = added["key"].as_str().expect("a key").to_owned();

    // The management API is the AMQP host's, port 15672, with the vhost's
    // credentials: the gateway's default for this URL.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut gateway = chit();
    gateway
        .args(["gateway", "--amqp-url", &vhost.url, "--store", &store])
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"));
    let _gateway = ChildGuard::spawn(gateway);
    let http = reqwest::Client::new();
    wait_for(
        "the gateway to serve the dashboard",
        Duration::from_secs(60),
        || {
            let req = http.get(format!("{base}/")).send();
            async move {
                req.await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        },
    )
    .await;

    let replay_flag = dir.path().join("replay-may-succeed");
    let mut node = tokio::process::Command::new("node");
    node.arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("DASHBOARD_URL", &base)
        .env("DASHBOARD_KEY", &key)
        .env("SCREENSHOT_DIR", &shots)
        .env("REPLAY_FLAG", &replay_flag)
        .env("CHROMIUM", &chromium)
        .env("TASK_TYPE", CAP)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_DEADLINE, node.output())
        .await
        .unwrap_or_else(|_| panic!("the browser script ran over {SCRIPT_DEADLINE:?}"))
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser script failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        shots.display()
    );
    for name in SCREENSHOTS {
        let file = shots.join(name);
        let size = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("screenshot {} is missing: {e}", file.display()))
            .len();
        // A PNG of a 1360×900 page is tens of kilobytes; a few hundred
        // bytes would be an empty image.
        assert!(size > 5_000, "{} is only {size} bytes", file.display());
    }
}
