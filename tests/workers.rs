//! `chit workers` (issue 17): a running worker is listed, with what it serves
//! and how busy it is, by every sink group; it drops out after the documented
//! timeout once killed with SIGKILL, and at once when it stops cleanly.

mod observability_support;
mod support;

use broker_topology::heartbeat::{HEARTBEAT_INTERVAL, MISSED_HEARTBEATS};
use nix::sys::signal::Signal;
use observability_support::{Sink, WAIT, Worker, publish};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{Vhost, chit, wait_for};

/// `chit workers --json` against the sink at `api`: its workers.
fn workers(api: &str) -> Vec<Value> {
    let out = chit()
        .args(["workers", "--json", "--api", api])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chit workers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["workers"].as_array().unwrap().clone()
}

/// `chit workers` as a person reads it.
fn table(api: &str) -> String {
    let out = chit().args(["workers", "--api", api]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn listed(api: &str, id: &str) -> Option<Value> {
    workers(api).into_iter().find(|w| w["worker_id"] == id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_is_listed_and_drops_out_after_sigkill() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&vhost, dir.path(), None).await;
    let id = format!("listed-{}", std::process::id());
    let mut worker = Worker::start(&vhost, "command.execute", &id).await;
    let api = sink.api();

    let seen = wait_for("the worker in chit workers", WAIT, || async {
        listed(&api, &id)
    })
    .await;
    assert_eq!(seen["capabilities"], serde_json::json!(["command.execute"]));
    assert_eq!(seen["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(seen["concurrency"], 4);
    assert!(!seen["host"].as_str().unwrap().is_empty(), "{seen}");
    assert!(seen["uptime_secs"].as_f64().unwrap() >= 0.0, "{seen}");
    let line = table(&api);
    assert!(line.lines().next().unwrap().starts_with("WORKER"), "{line}");
    assert!(
        line.lines()
            .any(|l| l.starts_with(&id) && l.contains("command.execute")),
        "{line}"
    );

    // A task that runs shows in the next heartbeats.
    publish(&vhost, "command.execute", r#"{"command": "sleep 60"}"#, &[]);
    wait_for(
        "the running task in the worker's heartbeat",
        WAIT,
        || async { listed(&api, &id).filter(|w| w["in_flight"] == 1) },
    )
    .await;

    worker.child.signal(Signal::SIGKILL);
    let killed = Instant::now();
    worker.child.wait_timeout(Duration::from_secs(10)).unwrap();
    wait_for("the killed worker to drop out", WAIT, || async {
        listed(&api, &id).is_none().then_some(())
    })
    .await;
    let timeout = HEARTBEAT_INTERVAL * MISSED_HEARTBEATS;
    assert!(
        killed.elapsed() <= timeout + Duration::from_secs(5),
        "dropped out after {:?}, the documented timeout is {timeout:?}",
        killed.elapsed()
    );
    assert!(
        table(&api).starts_with("no live workers"),
        "{}",
        table(&api)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sink_group_lists_a_worker_and_a_clean_stop_drops_it_at_once() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let default = Sink::start(&vhost, dir.path(), None).await;
    let audit = Sink::start(&vhost, dir.path(), Some("audit")).await;
    let id = format!("groups-{}", std::process::id());
    let mut worker = Worker::start(&vhost, "noop", &id).await;
    for sink in [&default, &audit] {
        let api = sink.api();
        wait_for("the worker listed by each sink group", WAIT, || async {
            listed(&api, &id)
        })
        .await;
    }

    worker.child.signal(Signal::SIGTERM);
    let stopped = Instant::now();
    let status = worker.child.wait_timeout(WAIT).expect("the worker stops");
    assert!(status.success(), "{status:?}");
    // Its last heartbeat says it stops: no waiting out the timeout.
    let timeout = HEARTBEAT_INTERVAL * MISSED_HEARTBEATS;
    for sink in [&default, &audit] {
        let api = sink.api();
        wait_for("the stopped worker to drop out", timeout, || async {
            listed(&api, &id).is_none().then_some(())
        })
        .await;
    }
    assert!(
        stopped.elapsed() < timeout,
        "a clean stop took {:?} to show",
        stopped.elapsed()
    );
}
