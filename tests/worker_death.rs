//! A worker's death takes its tasks' processes with it (issue 13): after
//! `kill -9` of a worker, the broker hands its task to another worker, and the
//! first copy's command must not go on to finish its work behind that second
//! run's back, neither the `sh -c` child nor what the shell started.

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Receipt, ReceiptType, Topology};
use nix::sys::signal::Signal;
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, chit, wait_for};

const WAIT: Duration = Duration::from_secs(30);
/// How long the task's command works before it writes its markers.
const WORK: Duration = Duration::from_secs(3);

/// A worker whose environment names it, so each copy of the task (which
/// inherits that environment) writes files of its own.
fn worker(vhost: &Vhost, id: &str) -> ChildGuard {
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
        "1",
        "--prefetch",
        "1",
    ]);
    cmd.env("CHIT_TEST_WORKER", id);
    ChildGuard::spawn(cmd)
}

/// Alive and not a zombie: a killed process whose parent has not reaped it
/// yet still answers `kill(pid, 0)`.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn by(rs: &[Receipt], t: ReceiptType, worker: &str) -> usize {
    rs.iter()
        .filter(|r| r.receipt_type == t && r.worker_id.as_deref() == Some(worker))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_a_worker_kills_its_command_and_the_commands_children() {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    Topology::for_capabilities(&[Capability::new("command.execute").unwrap()])
        .apply(&vhost.connect().await)
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig::new(&vhost.url));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The shell (the worker's child) records its pid, starts a background
    // `sh -c` (a grandchild that outlives the shell if only the shell dies)
    // and records its pid too; both write a marker after WORK.
    let command = format!(
        "echo $$ >> {d}/pids-$CHIT_TEST_WORKER; \
         sh -c 'sleep {w}; touch {d}/background-$CHIT_TEST_WORKER' & \
         echo $! >> {d}/pids-$CHIT_TEST_WORKER; \
         sleep {w}; touch {d}/foreground-$CHIT_TEST_WORKER; wait",
        w = WORK.as_secs()
    );
    let mut a = worker(&vhost, "worker-a");
    let p = producer
        .publish(TaskSpec::json("command.execute", &json!({"command": command})).unwrap())
        .await
        .unwrap();

    let pids_a = dir.path().join("pids-worker-a");
    let started = wait_for("worker-a's command to start both processes", WAIT, || {
        let n = pids(&pids_a).len();
        async move { (n == 2).then(std::time::Instant::now) }
    })
    .await;
    // A first delivery's `accepted` is not awaited before the run starts
    // (docs/protocol.md, "Emit accepted"); on a loaded machine it can still
    // be in the worker's batch now. Kill once it is out, so the chain must
    // show both runs.
    tap.wait_task(&p.task_id, WAIT, |rs| {
        by(rs, ReceiptType::Accepted, "worker-a") == 1
    })
    .await;
    a.signal(Signal::SIGKILL);
    a.wait_timeout(WAIT).expect("worker-a died");

    // Both processes of the first copy go with their worker, well before
    // they would have ended by themselves (WORK after `started`, or a little
    // earlier: they were running before `started` saw them).
    let first_copy = pids(&pids_a);
    wait_for(
        "worker-a's shell and its background child to die",
        (started + WORK / 2).saturating_duration_since(std::time::Instant::now()),
        || {
            let left: Vec<_> = first_copy.iter().copied().filter(|p| running(*p)).collect();
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;

    // The broker redelivers the task to a second worker, which runs it to the end.
    let _b = worker(&vhost, "worker-b");
    let rs = tap
        .wait_task(&p.task_id, WAIT, |rs| {
            rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
        })
        .await;
    assert_eq!(by(&rs, ReceiptType::Accepted, "worker-a"), 1, "{rs:#?}");
    assert_eq!(by(&rs, ReceiptType::Accepted, "worker-b"), 1, "{rs:#?}");
    assert_eq!(by(&rs, ReceiptType::Success, "worker-b"), 1, "{rs:#?}");
    assert!(dir.path().join("foreground-worker-b").exists());
    assert!(dir.path().join("background-worker-b").exists());

    // The first copy would have written its markers WORK after it started;
    // give it that and a margin before looking for them.
    tokio::time::sleep_until((started + WORK + Duration::from_secs(1)).into()).await;
    for marker in ["foreground-worker-a", "background-worker-a"] {
        assert!(
            !dir.path().join(marker).exists(),
            "the first copy's command outlived its worker and wrote {marker}"
        );
    }
}
