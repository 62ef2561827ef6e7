//! The per-component broker users of deploy/rabbitmq/definitions.json, on the
//! shared RabbitMQ: the file itself is imported (`rabbitmqctl
//! import_definitions`) into a vhost of the test's own, its users renamed
//! with a suffix of the test's and given random passwords, so these tests
//! check the permissions that ship, not a copy. The users are deleted at the
//! end.
//!
//! - a worker's credentials can take its own tasks, and cannot read another
//!   capability's queue or the sink queue, publish to another capability's
//!   dead letters, cancel tasks or touch another capability's queues; the
//!   broker closes the channel with ACCESS_REFUSED;
//! - the producer's cannot consume task, sink or dead-letter queues;
//! - the sink's cannot publish tasks; KEDA's read queue depths and nothing
//!   else;
//! - the real `chit worker`, `chit sink` and `chit publish` run end to end,
//!   each under its own user: tasks succeed, a failing one is retried through
//!   a delay queue and dead-lettered, heartbeats reach the sink, and no
//!   component logs a refusal.
//!
//! A worker's user cannot route a task of another type either: RabbitMQ
//! authorises a publish by its exchange alone, so workers send retries and
//! hand-backs through their capability's own retry exchange and replies
//! through `chit.replies`, and have no write on `chit.tasks` or the default
//! exchange.

mod support;

use broker_link::Declare;
use broker_topology::{Capability, Topology, names};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{ChildGuard, Vhost, chit, free_port, wait_for};

const WAIT: Duration = Duration::from_secs(60);
const DEFINITIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/rabbitmq/definitions.json"
);
const CAPS: [&str; 2] = ["command.execute", "http.request"];

/// The users of definitions.json in one test vhost, deleted on drop.
struct Imported {
    vhost: Vhost,
    /// By the name in definitions.json: (test user name, password).
    users: HashMap<String, (String, String)>,
}

impl Imported {
    /// Imports definitions.json into a fresh vhost.
    fn new() -> Imported {
        let vhost = Vhost::create();
        let defs: Value = serde_json::from_str(
            &std::fs::read_to_string(DEFINITIONS).expect("read deploy/rabbitmq/definitions.json"),
        )
        .expect("definitions.json is JSON");
        assert_eq!(
            defs["vhosts"],
            json!([{"name": "chit"}]),
            "definitions.json declares the vhost `chit`"
        );
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let mut users = HashMap::new();
        let mut out_users = Vec::new();
        for u in defs["users"].as_array().expect("users") {
            let name = u["name"].as_str().unwrap().to_owned();
            let test_name = format!("{name}-{suffix}");
            let password = uuid::Uuid::new_v4().simple().to_string();
            out_users.push(json!({"name": test_name, "password": password, "tags": u["tags"]}));
            users.insert(name, (test_name, password));
        }
        let mut out_perms = Vec::new();
        for p in defs["permissions"].as_array().expect("permissions") {
            assert_eq!(
                p["vhost"], "chit",
                "every permission is on the vhost chit: {p}"
            );
            let (user, _) = &users[p["user"].as_str().unwrap()];
            out_perms.push(json!({
                "user": user, "vhost": vhost.name,
                "configure": p["configure"], "write": p["write"], "read": p["read"],
            }));
        }
        let imported = Imported { vhost, users };
        // On stdin: rabbitmqctl reads a file as the broker's user, who may
        // not read the test's.
        let mut import = Command::new("rabbitmqctl")
            .arg("import_definitions")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rabbitmqctl must be on PATH (run deploy/local/ensure-services.sh)");
        import
            .stdin
            .take()
            .unwrap()
            .write_all(
                json!({"users": out_users, "permissions": out_perms})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
        let out = import.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl import_definitions failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The import is asynchronous: wait until every user has its permissions.
        let deadline = Instant::now() + WAIT;
        loop {
            let listed = Command::new("rabbitmqctl")
                .args(["list_permissions", "-q", "-p", &imported.vhost.name])
                .output()
                .unwrap();
            let listed = String::from_utf8_lossy(&listed.stdout);
            if imported
                .users
                .values()
                .all(|(u, _)| listed.lines().any(|l| l.split('\t').next() == Some(u)))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the imported permissions did not appear within {WAIT:?}: {listed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        imported
    }

    /// The AMQP URL of definitions.json's user `name` in this vhost.
    fn url(&self, name: &str) -> String {
        let (user, password) = &self.users[name];
        format!(
            "amqp://{user}:{password}@{}/{}",
            support::broker_authority(),
            self.vhost.name
        )
    }

    async fn connect(&self, name: &str) -> Connection {
        broker_link::connect(&self.url(name), "chit-permissions-test")
            .await
            .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
    }

    /// What the topology Job does: every capability's topology, as chit-admin.
    async fn apply_topology(&self) {
        let conn = self.connect("chit-admin").await;
        let caps: Vec<_> = CAPS.iter().map(|c| Capability::new(*c).unwrap()).collect();
        Topology::for_capabilities(&caps)
            .apply(&conn)
            .await
            .expect("chit-admin applies the topology");
        let _ = conn.close(200, "".into()).await;
    }
}

impl Drop for Imported {
    fn drop(&mut self) {
        for (user, _) in self.users.values() {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_user", user])
                .output();
        }
    }
}

/// Panics unless `err` is the broker's ACCESS_REFUSED.
fn assert_refused(what: &str, result: Result<(), lapin::Error>) {
    match result {
        Ok(()) => panic!("{what}: allowed, expected ACCESS_REFUSED"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("ACCESS_REFUSED"),
                "{what}: expected ACCESS_REFUSED, got {text}"
            );
        }
    }
}

async fn consume(conn: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "".into()).await;
    Ok(())
}

/// Publishes one message and waits for its confirm. A refused publish
/// closes the channel; the next call on it reports why.
async fn publish(conn: &Connection, exchange: &str, routing_key: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let confirm = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            br#"{"command": "echo not allowed"}"#,
            BasicProperties::default(),
        )
        .await?;
    // A refused publish gets no confirm: the broker closes the channel,
    // and the pending confirm fails with the reason.
    let confirmation = confirm.await?;
    assert!(
        confirmation.is_ack(),
        "publishing to {exchange:?}: {confirmation:?}"
    );
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let _ = ch.close(200, "".into()).await;
    Ok(())
}

async fn bind(conn: &Connection, queue: &str, exchange: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "http.request".into(),
        lapin::options::QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "".into()).await;
    Ok(())
}

async fn declare(conn: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "".into()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_component_user_is_refused_what_is_not_its_job() {
    let users = Imported::new();
    users.apply_topology().await;
    let cmd = names::task_queue("command.execute");
    let http = names::task_queue("http.request");

    // A command worker: its own queue yes; anything of http.request, the
    // sink queue, cancelling, no.
    let worker = users.connect("chit-worker-command").await;
    consume(&worker, &cmd)
        .await
        .expect("a command worker consumes chit.task.command.execute");
    assert_refused(
        "command worker consuming chit.task.http.request",
        consume(&worker, &http).await,
    );
    assert_refused(
        "command worker consuming the sink queue",
        consume(&worker, names::SINK_QUEUE).await,
    );
    assert_refused(
        "command worker consuming http.request's dead letters",
        consume(&worker, &names::dead_letter_queue("http.request")).await,
    );
    assert_refused(
        "command worker publishing to http.request's dead-letter exchange",
        publish(&worker, &names::dead_letter_exchange("http.request"), "").await,
    );
    assert_refused(
        "command worker publishing a cancellation",
        publish(&worker, names::CONTROL_EXCHANGE, "").await,
    );
    assert_refused(
        "command worker announcing itself as a sink",
        publish(&worker, names::SINK_ROSTER_EXCHANGE, "").await,
    );
    assert_refused(
        "command worker declaring http.request's task queue",
        declare(&worker, &http).await,
    );
    // Nor can it route a task to another capability: not through the task
    // exchange, the default exchange or the other's retry exchange, and it
    // cannot bind the other's queue to its own retry exchange.
    assert_refused(
        "command worker publishing an http.request task to chit.tasks",
        publish(&worker, names::TASK_EXCHANGE, "http.request").await,
    );
    assert_refused(
        "command worker publishing into chit.task.http.request through the default exchange",
        publish(&worker, "", &http).await,
    );
    assert_refused(
        "command worker publishing to http.request's retry exchange",
        publish(
            &worker,
            &names::retry_exchange("http.request"),
            "http.request",
        )
        .await,
    );
    assert_refused(
        "command worker binding chit.task.http.request to its own retry exchange",
        bind(&worker, &http, &names::retry_exchange("command.execute")).await,
    );
    // What it does instead: its own tasks back through its retry exchange.
    publish(
        &worker,
        &names::retry_exchange("command.execute"),
        "command.execute",
    )
    .await
    .expect("a command worker hands a task back through chit.retry.command.execute");
    // The same for the http group, the other way round.
    let http_worker = users.connect("chit-worker-http").await;
    consume(&http_worker, &http)
        .await
        .expect("an http worker consumes chit.task.http.request");
    assert_refused(
        "http worker consuming chit.task.command.execute",
        consume(&http_worker, &cmd).await,
    );

    // The producer publishes tasks and receipts, and reads no queue of chit's.
    let producer = users.connect("chit-producer").await;
    publish(&producer, names::TASK_EXCHANGE, "command.execute")
        .await
        .expect("the producer publishes to chit.tasks");
    publish(&producer, names::RECEIPT_EXCHANGE, "receipt.producer")
        .await
        .expect("the producer publishes to chit.receipts");
    for queue in [
        cmd.as_str(),
        names::SINK_QUEUE,
        &names::dead_letter_queue("command.execute"),
        names::CANCEL_STREAM,
    ] {
        assert_refused(
            &format!("producer consuming {queue}"),
            consume(&producer, queue).await,
        );
    }
    assert_refused(
        "producer publishing a cancellation",
        publish(&producer, names::CONTROL_EXCHANGE, "").await,
    );
    assert_refused(
        "producer publishing through the default exchange",
        publish(&producer, "", &cmd).await,
    );

    // The sink reads its queue, and injects no tasks.
    let sink = users.connect("chit-sink").await;
    consume(&sink, names::SINK_QUEUE)
        .await
        .expect("the sink consumes chit.sink.default");
    assert_refused(
        "sink publishing a task",
        publish(&sink, names::TASK_EXCHANGE, "command.execute").await,
    );
    assert_refused("sink consuming a task queue", consume(&sink, &cmd).await);

    // KEDA: no AMQP rights at all; queue depths through the management API.
    let keda = users.connect("chit-keda").await;
    assert_refused("keda consuming", consume(&keda, &cmd).await);
    assert_refused(
        "keda publishing",
        publish(&keda, names::TASK_EXCHANGE, "command.execute").await,
    );
    let (keda_user, keda_password) = &users.users["chit-keda"];
    let queue_url = format!(
        "http://127.0.0.1:15672/api/queues/{}/{}",
        users.vhost.name, cmd
    );
    let http_client = reqwest::Client::new();
    // The producer's task above is in the queue; the management API's
    // statistics lag a few seconds behind.
    let depth = wait_for("KEDA's view of the queue depth", WAIT, || {
        let req = http_client
            .get(&queue_url)
            .basic_auth(keda_user, Some(keda_password));
        let queue_url = queue_url.clone();
        async move {
            let resp = req.send().await.ok()?;
            assert!(
                resp.status().is_success(),
                "chit-keda reading {queue_url} (is the management plugin on 127.0.0.1:15672? \
                 deploy/local/ensure-services.sh enables it): {}",
                resp.status()
            );
            let q: Value = resp.json().await.ok()?;
            q["messages"].as_u64().filter(|m| *m >= 1)
        }
    })
    .await;
    assert!(depth >= 1);
    let delete = http_client
        .delete(&queue_url)
        .basic_auth(keda_user, Some(keda_password))
        .send()
        .await
        .unwrap();
    assert!(
        !delete.status().is_success(),
        "chit-keda could delete a queue through the management API"
    );
}

async fn task_state(api: &str, state: &str) {
    wait_for(&format!("{api} in state {state}"), WAIT, || async move {
        let task: Value = reqwest::get(api).await.ok()?.json().await.ok()?;
        (task["task"]["state"] == state).then_some(())
    })
    .await
}

/// Starts `chit ARGS` with `url`, its stderr in `log`.
fn spawn(url: &str, args: &[&str], log: &std::path::Path) -> ChildGuard {
    let mut cmd = chit();
    cmd.env("CHIT_AMQP_URL", url)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    ChildGuard::spawn(cmd)
}

fn publish_task(url: &str, args: &[&str]) -> String {
    let out = chit()
        .env("CHIT_AMQP_URL", url)
        .arg("publish")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chit publish {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_sink_and_producer_run_end_to_end_under_their_own_users() {
    let users = Imported::new();
    users.apply_topology().await;
    let dir = tempfile::tempdir().unwrap();
    let (health, api) = (free_port(), free_port());
    let worker_log = dir.path().join("worker.log");
    let sink_log = dir.path().join("sink.log");
    let _worker = spawn(
        &users.url("chit-worker-command"),
        &[
            "worker",
            "--capability",
            "command.execute",
            "--health",
            &format!("127.0.0.1:{health}"),
            "--drain-timeout-secs",
            "5",
        ],
        &worker_log,
    );
    let store = format!("sqlite://{}", dir.path().join("receipts.db").display());
    let _sink = spawn(
        &users.url("chit-sink"),
        &[
            "sink",
            "--store",
            &store,
            "--http",
            &format!("127.0.0.1:{api}"),
        ],
        &sink_log,
    );
    for url in [
        format!("http://127.0.0.1:{health}/readyz"),
        format!("http://127.0.0.1:{api}/healthz"),
    ] {
        wait_for(&format!("{url} answering 200"), WAIT, || {
            let url = url.clone();
            async move {
                let status = reqwest::get(&url).await.ok()?.status();
                status.is_success().then_some(())
            }
        })
        .await;
    }

    let ok = publish_task(
        &users.url("chit-producer"),
        &[
            "command.execute",
            "--payload",
            r#"{"command": "echo permissions"}"#,
        ],
    );
    task_state(
        &format!("http://127.0.0.1:{api}/v1/tasks/{ok}"),
        "succeeded",
    )
    .await;

    // A failing task: the worker declares a delay queue and retries through
    // its capability's retry exchange, then dead-letters it; the dead-letter
    // watch consumes the copy.
    let failing = publish_task(
        &users.url("chit-producer"),
        &[
            "command.execute",
            "--payload",
            r#"{"command": "exit 3"}"#,
            "--max-attempts",
            "2",
            "--backoff-ms",
            "200",
        ],
    );
    task_state(
        &format!("http://127.0.0.1:{api}/v1/tasks/{failing}"),
        "dead_lettered",
    )
    .await;

    // The gateway's user publishes as a producer does, and delays tasks.
    let via_gateway = publish_task(
        &users.url("chit-gateway"),
        &["command.execute", "--payload", r#"{"command": "true"}"#],
    );
    task_state(
        &format!("http://127.0.0.1:{api}/v1/tasks/{via_gateway}"),
        "succeeded",
    )
    .await;
    let delayed = publish_task(
        &users.url("chit-gateway"),
        &[
            "command.execute",
            "--payload",
            r#"{"command": "true"}"#,
            "--delay",
            "300ms",
        ],
    );
    task_state(
        &format!("http://127.0.0.1:{api}/v1/tasks/{delayed}"),
        "succeeded",
    )
    .await;

    // Publish-and-wait: the worker replies through chit.replies, to the
    // producer's queue bound there.
    let waited = chit()
        .env("CHIT_AMQP_URL", users.url("chit-producer"))
        .args(["publish", "command.execute", "--payload"])
        .arg(r#"{"command": "echo waited"}"#)
        .args(["--wait", "--timeout", "60s"])
        .output()
        .unwrap();
    assert!(
        waited.status.success(),
        "chit publish --wait under chit-producer: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let reply: Value = serde_json::from_slice(&waited.stdout).expect("the reply as JSON");
    assert_eq!(reply["receipt_type"], "success", "{reply}");

    // Heartbeats: the worker publishes on chit.events, the sink hears them.
    let workers_url = format!("http://127.0.0.1:{api}/v1/workers");
    wait_for("the worker in the sink's /v1/workers", WAIT, || {
        let url = workers_url.clone();
        async move {
            let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let n = body["workers"].as_array().map(Vec::len).unwrap_or(0);
            (n >= 1).then_some(())
        }
    })
    .await;

    for (who, log) in [("worker", &worker_log), ("sink", &sink_log)] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.contains("ACCESS_REFUSED"),
            "the {who} was refused something under its own user:\n{text}"
        );
    }
}
