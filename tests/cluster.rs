//! A 3-node RabbitMQ cluster of the test's own loses the leader of the task
//! queue in the middle of a run, and no task is lost (issue 19).
//!
//! The cluster's nodes run on ports of their own (never the shared node's);
//! chit's quorum queues are declared once all three are running, so each
//! has a member on every node. The producer, the sink and two `noop`
//! workers are configured with all three node URLs, comma-separated: the
//! producer, the sink and one worker list the leader first (they are
//! connected to it when it stops, and must fail over), the other worker
//! lists the next node first. Once 1,500 of the 5,000 tasks have succeeded
//! in the sink's store, the node that leads the task queue is stopped; then
//! every task must end `succeeded` with a success receipt. Re-runs (a task
//! accepted more than once: leases lost with the stopped node's
//! connections) are counted and printed, not forbidden.
//!
//! Starts three RabbitMQ nodes: a minute or more on two cores. The figures
//! are printed on standard error (`cargo test --test cluster -- --nocapture`).

#[path = "support/broker_node.rs"]
mod broker_node;
mod support;

use broker_node::{BrokerCluster, BrokerOpts};
use broker_topology::{ReceiptType, names};
use chrono::{DateTime, Utc};
use producer::{Producer, ProducerConfig, PublishErrorKind, TaskSpec};
use receipts_sink::{Store, TaskFilter, TaskState};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::{ChildGuard, chit};

const TASKS: usize = 5_000;
/// Successes in the store before the leader is stopped.
const STOP_AFTER: usize = 1_500;
/// Tasks per publish, and the pause between two: a trickle of about 400
/// tasks a second, so publishing goes on through the failover.
const CHUNK: usize = 50;
const CHUNK_PAUSE: Duration = Duration::from_millis(100);
/// How long everything may take after the stop, on a busy 2-core machine.
const RECOVER_DEADLINE: Duration = Duration::from_secs(600);

fn worker(urls: &str, id: &str) -> ChildGuard {
    let mut cmd = chit();
    cmd.args(["worker", "--amqp-url", urls, "--capability", "noop"]);
    cmd.args(["--worker-id", id, "--concurrency", "8", "--prefetch", "32"]);
    ChildGuard::spawn(cmd)
}

/// Tasks in `state` in the store, counted through its paged listing.
async fn count_in_state(store: &Store, state: TaskState) -> usize {
    let filter = TaskFilter {
        state: Some(state),
        task_type: None,
    };
    let mut n = 0;
    let mut cursor: Option<String> = None;
    loop {
        let Ok(page) = store.list_tasks(&filter, 1000, cursor.as_deref()).await else {
            return n;
        };
        n += page.tasks.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return n,
        }
    }
}

/// Every replicated queue (quorum queue or stream) of the default vhost:
/// its name, its type, and how many nodes it has a member on and a running
/// member on.
fn replicated_queues(cluster: &BrokerCluster) -> Vec<(String, String, usize, usize)> {
    let out = cluster
        .try_ctl(&[
            "list_queues",
            "-p",
            "/",
            "name",
            "type",
            "members",
            "online",
            "--formatter",
            "json",
        ])
        .expect("list_queues on the cluster");
    let queues: Vec<Value> = serde_json::from_str(&out).expect("list_queues JSON");
    queues
        .iter()
        .filter(|q| q["type"] == "quorum" || q["type"] == "stream")
        .map(|q| {
            let count = |k: &str| q[k].as_array().map_or(0, Vec::len);
            let text = |k: &str| q[k].as_str().unwrap_or("?").to_owned();
            (
                text("name"),
                text("type"),
                count("members"),
                count("online"),
            )
        })
        .collect()
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_task_queue_leader_of_a_3_node_cluster_loses_no_task() {
    let wall = Instant::now();
    let mut cluster = BrokerCluster::start(
        3,
        BrokerOpts::default().start_timeout(Duration::from_secs(300)),
    );
    let booted = wall.elapsed();
    let all = cluster.amqp_url_list();

    // The topology, declared through the whole list once all three nodes run.
    let o = chit()
        .args([
            "topology",
            "apply",
            "--capability",
            "noop",
            "--amqp-url",
            &all,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "topology apply: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let queue = names::task_queue("noop");
    // Every replica running, not only listed: a queue that has lost one
    // would lose its majority with the stop.
    let deadline = Instant::now() + Duration::from_secs(120);
    let replicated = loop {
        let replicated = replicated_queues(&cluster);
        if replicated.iter().all(|(_, _, _, online)| *online == 3) {
            break replicated;
        }
        assert!(
            Instant::now() < deadline,
            "replicas not all running: {replicated:?}\n{}",
            cluster.describe_queues("/")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        replicated
            .iter()
            .any(|(name, kind, _, _)| *name == queue && kind == "quorum"),
        "{queue} is a quorum queue: {replicated:?}"
    );
    for (name, kind, members, _) in &replicated {
        eprintln!("{kind} {name}: members on {members} nodes, all running");
        assert_eq!(*members, 3, "{kind} {name} has a member on every node");
    }
    let (leader, members) = cluster
        .queue_leader("/", &queue)
        .unwrap_or_else(|| panic!("{queue} has a leader"));
    assert_eq!(members.len(), 3, "{members:?}");
    let li = cluster
        .index_of(&leader)
        .expect("the leader is one of ours");
    let leader_first = cluster.amqp_url_list_from(li);
    let other_first = cluster.amqp_url_list_from(li + 1);

    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("receipts.db").display());
    let mut sink = {
        let mut cmd = chit();
        cmd.args(["sink", "--amqp-url", &leader_first, "--store", &store_url]);
        cmd.args(["--http", "127.0.0.1:0"]);
        ChildGuard::spawn(cmd)
    };
    let mut w1 = worker(&leader_first, "cluster-w1");
    let mut w2 = worker(&other_first, "cluster-w2");

    // A lost confirm is retried by the producer itself. A negative confirm
    // is reported to the caller (the broker did not take the task; quorum
    // queues give one for a publish caught in the leader's stop), and the
    // caller publishes again, with the same producer: it dropped the channel
    // that was nacked (a channel that published into a stopped leader can
    // go on nacking), so the next publish goes out on a fresh one. Only
    // confirmed tasks count as published.
    let mut config = ProducerConfig::new(&leader_first);
    config.publish_deadline = Duration::from_secs(300);
    let producer = Producer::new(config);
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(TASKS);
        let mut nacked = 0;
        while ids.len() < TASKS {
            let chunk: Vec<_> = (0..CHUNK.min(TASKS - ids.len()))
                .map(|_| TaskSpec::json("noop", &json!({})).unwrap())
                .collect();
            for r in producer.publish_many(chunk, |_| {}).await {
                match r {
                    Ok(p) => ids.push(p.task_id),
                    Err(e) if *e.kind() == PublishErrorKind::Nacked => nacked += 1,
                    Err(e) => return Err(format!("a publish failed for good: {e}")),
                }
            }
            tokio::time::sleep(CHUNK_PAUSE).await;
        }
        Ok((ids, nacked, Instant::now()))
    });

    let store = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(s) = Store::open(&store_url).await {
                break s;
            }
            assert!(Instant::now() < deadline, "the sink never made its store");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let done_before = loop {
        let n = count_in_state(&store, TaskState::Succeeded).await;
        if n >= STOP_AFTER {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} tasks succeeded before the stop"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Stop the leader of the task queue (a clean `rabbitmqctl stop`).
    let stopped_at = Utc::now();
    let stop_clock = Instant::now();
    cluster.node_mut(li).stop();
    let stop_took = stop_clock.elapsed();
    let new_leader = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some((l, _)) = cluster.queue_leader("/", &queue)
                && l != leader
            {
                break l;
            }
            assert!(
                Instant::now() < deadline,
                "no new leader for {queue} after stopping {leader}\n{}",
                cluster.describe_queues("/")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Polled only once the stop has returned: an upper bound of the election.
    let new_leader_seen = stop_clock.elapsed();

    let (ids, nacked, published_all) = tokio::time::timeout(RECOVER_DEADLINE, publisher)
        .await
        .expect("publishing ends")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe_queues("/")));
    let published_all = published_all.saturating_duration_since(stop_clock);
    assert_eq!(ids.len(), TASKS);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), TASKS, "every task id is its own");
    let deadline = stop_clock + RECOVER_DEADLINE;
    loop {
        let n = count_in_state(&store, TaskState::Succeeded).await;
        if n >= TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {TASKS} tasks succeeded {RECOVER_DEADLINE:?} after the stop\n{}",
            cluster.describe_queues("/")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_done_after = stop_clock.elapsed();

    // Every published task, one by one: its state, its success, its runs.
    let mut lost = Vec::new();
    let mut reruns = 0;
    let mut successes: Vec<DateTime<Utc>> = Vec::with_capacity(TASKS);
    // Worker 1's successes: it was connected to the stopped node.
    let mut w1_successes: Vec<DateTime<Utc>> = Vec::new();
    for id in &ids {
        let view = store.task(id).await.unwrap();
        let Some(view) = view else {
            lost.push(id.clone());
            continue;
        };
        let success = view
            .chain
            .iter()
            .filter(|r| r.receipt_type == ReceiptType::Success);
        w1_successes.extend(
            success
                .clone()
                .filter(|r| r.worker_id.as_deref() == Some("cluster-w1"))
                .map(|r| r.created_at),
        );
        let first_success = success.map(|r| r.created_at).min();
        match first_success {
            Some(at) if view.task.state == TaskState::Succeeded => successes.push(at),
            _ => lost.push(id.clone()),
        }
        let accepted = view
            .chain
            .iter()
            .filter(|r| r.receipt_type == ReceiptType::Accepted)
            .count();
        if accepted > 1 {
            reruns += 1;
        }
    }
    successes.sort();
    let first_after = successes
        .iter()
        .find(|t| **t >= stopped_at)
        .map(|t| secs(*t - stopped_at));
    let last = successes.last().map(|t| secs(*t - stopped_at));
    // The longest pause between two successes, and where it began relative
    // to the stop: the outage as the work saw it.
    let longest_pause = |times: &mut Vec<DateTime<Utc>>| {
        times.sort();
        times
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max()
            .map(|(gap, from)| (secs(gap), secs(from - stopped_at)))
            .unwrap_or((0.0, 0.0))
    };
    let (pause, pause_from) = longest_pause(&mut successes);
    let (w1_pause, w1_pause_from) = longest_pause(&mut w1_successes);
    let stopped_name = leader.clone();

    let f = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    let o = |s: Option<f64>| s.map_or("none".into(), |s| format!("+{s:.1}s"));
    eprintln!(
        "cluster failover figures (times from the start of the stop):\n\
         \x20 tasks                      {TASKS} ({done_before} succeeded before the stop)\n\
         \x20 node stopped               {stopped_name}, leader of {queue}\n\
         \x20 stop took                  {} (rabbitmqctl stop until the port closed)\n\
         \x20 new leader                 {new_leader} (seen by +{})\n\
         \x20 first success after stop   {}\n\
         \x20 longest pause in successes {pause:.1}s, from {pause_from:+.1}s\n\
         \x20 worker 1's longest pause   {w1_pause:.1}s, from {w1_pause_from:+.1}s \
         (it was connected to the stopped node)\n\
         \x20 last task published        +{} ({nacked} publishes nacked by the broker, published again)\n\
         \x20 last success               {} (all {TASKS} seen succeeded by +{})\n\
         \x20 lost                       {}\n\
         \x20 re-runs                    {reruns} (tasks accepted more than once)\n\
         \x20 cluster boot               {}",
        f(stop_took),
        f(new_leader_seen),
        o(first_after),
        f(published_all),
        o(last),
        f(all_done_after),
        lost.len(),
        f(booted),
    );
    assert!(
        lost.is_empty(),
        "lost tasks: {:?}",
        &lost[..lost.len().min(10)]
    );

    for (name, child) in [
        ("worker 1", &mut w1),
        ("worker 2", &mut w2),
        ("sink", &mut sink),
    ] {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the {name} survived the failover"
        );
        child.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(
            child.wait_timeout(Duration::from_secs(60)).is_some(),
            "the {name} stops on SIGTERM"
        );
    }
    store.close().await;
    drop(cluster);
    eprintln!(
        "cluster test wall time: {:.1}s",
        wall.elapsed().as_secs_f64()
    );
}
