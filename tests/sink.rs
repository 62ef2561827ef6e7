//! The receipts sink against a real RabbitMQ (a vhost per test) and real
//! stores: crash safety, ordering, quarantine, reconnects, shutdown, replicas.

mod support;

use broker_link::Declare;
use broker_topology::declare::SINK_DELIVERY_LIMIT;
use broker_topology::{Receipt, ReceiptType, Topology, names};
use futures_util::future::join_all;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection};
use nix::sys::signal::Signal;
use receipts_sink::{SinkConfig, SinkError, Store, TaskState};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::{ChildGuard, Vhost, chit, wait_for};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);

/// Five receipts per task: queued, a failed attempt, a successful retry.
fn life(task_id: &str) -> Vec<Receipt> {
    let q = Receipt::new(task_id, "command.execute", ReceiptType::Queued, vec![], 1);
    let a1 = Receipt::new(
        task_id,
        "command.execute",
        ReceiptType::Accepted,
        vec![q.receipt_id.clone()],
        1,
    )
    .with_worker("w1");
    let f1 = Receipt::new(
        task_id,
        "command.execute",
        ReceiptType::Failure,
        vec![a1.receipt_id.clone()],
        1,
    )
    .with_worker("w1")
    .with_body(json!({"error": "exit status 1", "exit_code": 1}));
    let a2 = Receipt::new(
        task_id,
        "command.execute",
        ReceiptType::Accepted,
        vec![f1.receipt_id.clone()],
        2,
    )
    .with_worker("w2");
    let s2 = Receipt::new(
        task_id,
        "command.execute",
        ReceiptType::Success,
        vec![a2.receipt_id.clone()],
        2,
    )
    .with_worker("w2")
    .with_body(json!({"exit_code": 0}));
    vec![q, a1, f1, a2, s2]
}

/// `tasks` tasks' receipts, interleaved across tasks.
fn many(tasks: usize) -> Vec<Receipt> {
    let lives: Vec<Vec<Receipt>> = (0..tasks)
        .map(|_| life(&uuid::Uuid::now_v7().to_string()))
        .collect();
    (0..5)
        .flat_map(|step| lives.iter().map(move |l| l[step].clone()))
        .collect()
}

/// Declares the core topology, so the sink queue exists before publishing.
async fn declare(vhost: &Vhost) -> Connection {
    let conn = vhost.connect().await;
    Topology::core()
        .apply(&conn)
        .await
        .expect("apply core topology");
    conn
}

/// Publishes message bodies to the receipts exchange, with confirms.
async fn publish_raw(conn: &Connection, messages: &[(Vec<u8>, Option<&str>)]) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for (body, content_type) in messages {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(ct) = content_type {
            props = props.with_content_type((*ct).into());
        }
        let confirm = ch
            .basic_publish(
                names::RECEIPT_EXCHANGE.into(),
                names::receipt_routing_key("test").as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for c in join_all(confirms).await {
        assert!(matches!(c.unwrap(), Confirmation::Ack(_)));
    }
    let _ = ch.close(200, "published".into()).await;
}

/// Publishes receipts as JSON arrays of `per_message`.
async fn publish(conn: &Connection, receipts: &[Receipt], per_message: usize) {
    let messages: Vec<(Vec<u8>, Option<&str>)> = receipts
        .chunks(per_message)
        .map(|c| (serde_json::to_vec(c).unwrap(), Some("application/json")))
        .collect();
    publish_raw(conn, &messages).await;
}

/// Ready messages in the sink queue.
async fn ready_in_sink_queue(conn: &Connection) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            names::SINK_QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = ch.close(200, "checked".into()).await;
    q.message_count()
}

/// Messages delivered to the sink and not acked yet, as the broker counts them.
fn unacked_in_sink_queue(vhost: &Vhost) -> u64 {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "-p", &vhost.name])
        .args(["name", "messages_unacknowledged"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(name, _)| name.trim() == names::SINK_QUEUE)
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A SQLite store in a temp dir.
struct SqliteFile {
    _dir: tempfile::TempDir,
    url: String,
}

fn sqlite_file() -> SqliteFile {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("receipts.db").display());
    SqliteFile { _dir: dir, url }
}

/// A PostgreSQL database of its own, dropped on drop.
struct PgDatabase {
    name: String,
    url: String,
}

fn psql(sql: &str) {
    psql_in("test", sql);
}

fn psql_in(database: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", database])
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql must be on PATH and PostgreSQL running on 127.0.0.1:5432");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgDatabase {
    fn create() -> PgDatabase {
        let name = format!("chit_test_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}"));
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        PgDatabase { name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A sink running in this process, with its API on a free port.
struct InProcessSink {
    api: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), SinkError>>,
}

async fn start_sink(
    amqp_url: &str,
    store_url: &str,
    tweak: impl FnOnce(&mut SinkConfig),
) -> InProcessSink {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut config = SinkConfig::new(amqp_url, store_url);
    config.http_addr = addr;
    tweak(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(receipts_sink::serve(config, listener, async {
        let _ = stopped.await;
    }));
    InProcessSink {
        api: format!("http://{addr}"),
        stop: Some(stop),
        handle,
    }
}

impl InProcessSink {
    async fn get(&self, path: &str) -> (u16, Value) {
        let res = reqwest::get(format!("{}{path}", self.api)).await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    /// Waits until `/healthz` says the broker is connected.
    async fn wait_connected(&self) {
        wait_for("the sink to connect", WAIT, || async {
            let res = reqwest::get(format!("{}/healthz", self.api)).await.ok()?;
            (res.status().as_u16() == 200).then_some(())
        })
        .await;
    }

    /// Asks for shutdown and waits for `serve` to return.
    async fn stop(mut self) -> Result<(), SinkError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.handle)
            .await
            .expect("sink stops in time")
            .expect("sink task")
    }
}

async fn count(store: &Store) -> u64 {
    store.counts().await.unwrap().receipts
}

/// Every published receipt is stored, exactly once, each task complete.
async fn assert_stored_exactly(store: &Store, published: &[Receipt]) {
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.receipts, published.len() as u64);
    let tasks: HashSet<&str> = published.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(counts.tasks, tasks.len() as u64);
    let mut stored_ids = HashSet::new();
    for task_id in &tasks {
        let view = store.task(task_id).await.unwrap().expect("task stored");
        assert_eq!(view.task.state, TaskState::Succeeded, "{task_id}");
        assert_eq!(view.chain.len(), 5, "{task_id}");
        for r in view.chain {
            assert!(stored_ids.insert(r.receipt_id), "stored twice");
        }
    }
    let published_ids: HashSet<String> = published.iter().map(|r| r.receipt_id.clone()).collect();
    assert_eq!(stored_ids, published_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_then_restart_stores_every_receipt_once() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let receipts = many(2000);
    assert_eq!(receipts.len(), 10_000);
    publish(&conn, &receipts, 50).await;

    let file = sqlite_file();
    // Opening first creates the schema, so the two processes do not race on it.
    let store = Store::open(&file.url).await.unwrap();
    let sink = |batch_size: &str| {
        let mut cmd = chit();
        cmd.args(["sink", "--amqp-url", &vhost.url, "--store", &file.url])
            .args(["--http", "127.0.0.1:0", "--batch-size", batch_size]);
        ChildGuard::spawn(cmd)
    };

    // Small batches, so that ingest takes many commits and is still going on.
    let mut first = sink("100");
    let at_kill = wait_for("some receipts stored", WAIT, || async {
        let n = count(&store).await;
        (n > 0).then_some(n)
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait_timeout(Duration::from_secs(10)).expect("killed");
    let after_kill = count(&store).await;
    assert!(
        after_kill < 10_000,
        "ingest was over before the kill ({at_kill} at kill)"
    );
    eprintln!("killed with {at_kill} receipts stored ({after_kill} after the kill)");

    let mut second = sink("1000");
    wait_for("all receipts stored after restart", WAIT, || async {
        (count(&store).await >= 10_000).then_some(())
    })
    .await;
    // Graceful stop: everything is acked, nothing is left to redeliver.
    second.signal(Signal::SIGTERM);
    let status = second.wait_timeout(WAIT).expect("sink exits after SIGTERM");
    assert!(status.success(), "{status:?}");

    assert_stored_exactly(&store, &receipts).await;
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_in_any_order_give_a_whole_chain() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let file = sqlite_file();
    let sink = start_sink(&vhost.url, &file.url, |_| {}).await;

    // Newest first, one receipt per message, the last one as a bare object.
    let chain = life("task-ooo");
    let mut messages: Vec<(Vec<u8>, Option<&str>)> = chain
        .iter()
        .rev()
        .take(4)
        .map(|r| (serde_json::to_vec(&[r]).unwrap(), Some("application/json")))
        .collect();
    messages.push((serde_json::to_vec(&chain[0]).unwrap(), None));
    publish_raw(&conn, &messages).await;

    let body = wait_for("the whole chain", WAIT, || async {
        let (status, body) = sink.get("/v1/tasks/task-ooo").await;
        (status == 200 && body["chain"].as_array().map(Vec::len) == Some(5)).then_some(body)
    })
    .await;
    let view: receipts_sink::TaskView = serde_json::from_value(body).unwrap();
    assert_eq!(
        view.chain, chain,
        "ordered by time, whatever the arrival order"
    );
    assert_eq!(view.task.state, TaskState::Succeeded);
    assert_eq!(view.task.attempts, 2);
    assert_eq!(view.task.last_error.as_deref(), Some("exit status 1"));
    let tree = receipts_sink::render_tree(&view);
    assert_eq!(tree.matches("accepted").count(), 2, "{tree}");

    let (status, body) = sink.get("/v1/tasks/unknown").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    sink.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_quarantined_and_the_sink_keeps_going() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let file = sqlite_file();
    let sink = start_sink(&vhost.url, &file.url, |_| {}).await;

    let good = life("task-after-garbage");
    let half_bad = json!([good[1], {"receipt_id": "r-x", "task_type": "x"}]);
    publish_raw(
        &conn,
        &[
            (b"{not json".to_vec(), Some("application/json")),
            (vec![0xc1, 0xff, 0x00], Some("application/msgpack")),
            (b"<receipt/>".to_vec(), Some("text/xml")),
            (serde_json::to_vec(&half_bad).unwrap(), None),
            (serde_json::to_vec(&good[0]).unwrap(), None),
        ],
    )
    .await;

    wait_for("the good receipts after the garbage", WAIT, || async {
        let (_, body) = sink.get("/v1/receipts?task_id=task-after-garbage").await;
        (body["receipts"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let (status, body) = sink.get("/v1/quarantine").await;
    assert_eq!(status, 200);
    let q = body["quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 4, "{body}");
    let raws: Vec<&str> = q.iter().map(|r| r["raw"].as_str().unwrap()).collect();
    assert!(raws.contains(&"{not json"), "{raws:?}");
    assert!(raws.contains(&"<receipt/>"), "{raws:?}");
    assert!(
        q.iter()
            .any(|r| r["reason"].as_str().unwrap().contains("text/xml"))
    );
    assert!(
        q.iter()
            .any(|r| r["reason"].as_str().unwrap().contains("MessagePack"))
    );

    // Nothing is requeued: the broker holds no message for the sink any more.
    sink.stop().await.unwrap();
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_reconnects_after_losing_its_connection() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let file = sqlite_file();
    let sink = start_sink(&vhost.url, &file.url, |_| {}).await;
    sink.wait_connected().await;

    let before = many(20);
    publish(&conn, &before, 10).await;
    let store = Store::open(&file.url).await.unwrap();
    wait_for("first receipts", WAIT, || async {
        (count(&store).await == 100).then_some(())
    })
    .await;

    // Close every connection of the vhost: the sink's, and ours.
    let out = Command::new("rabbitmqctl")
        .args([
            "close_all_connections",
            "-p",
            &vhost.name,
            "test: connection lost",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The receipts published from now on can only be stored over a new connection.

    let conn = vhost.connect().await;
    let after = many(20);
    publish(&conn, &after, 10).await;
    wait_for("receipts after the reconnect", WAIT, || async {
        (count(&store).await == 200).then_some(())
    })
    .await;
    let all: Vec<Receipt> = before.into_iter().chain(after).collect();
    assert_stored_exactly(&store, &all).await;
    sink.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_and_acks_the_open_batch() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let file = sqlite_file();
    // The batch would stay open for a minute: only shutdown can close it.
    let sink = start_sink(&vhost.url, &file.url, |c| {
        c.batch_wait = Duration::from_secs(60);
        c.batch_size = 100_000;
    })
    .await;
    sink.wait_connected().await;
    let receipts = many(4);
    publish(&conn, &receipts, 5).await;
    wait_for("the sink to take the messages", WAIT, || async {
        (ready_in_sink_queue(&conn).await == 0).then_some(())
    })
    .await;
    let store = Store::open(&file.url).await.unwrap();
    assert_eq!(count(&store).await, 0, "the batch is still open");

    sink.stop().await.unwrap();
    assert_stored_exactly(&store, &receipts).await;
    // Acked, so nothing came back to the queue when the channel closed.
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
}

/// A batch that holds every message the prefetch allows is written at once:
/// the broker sends no more until it is acked, so waiting for the batch's
/// deadline would stall the sink for that long per prefetch of messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_every_prefetched_message_is_written_without_waiting() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let file = sqlite_file();
    let sink = start_sink(&vhost.url, &file.url, |c| {
        c.batch_wait = Duration::from_secs(3600);
        c.batch_size = 100_000;
        c.prefetch = 4;
    })
    .await;
    sink.wait_connected().await;
    // 40 messages of one receipt: ten rounds of the prefetch.
    let receipts = many(8);
    publish(&conn, &receipts, 1).await;
    let store = Store::open(&file.url).await.unwrap();
    wait_for("every receipt to be stored", WAIT, || async {
        (count(&store).await == receipts.len() as u64).then_some(())
    })
    .await;
    assert_stored_exactly(&store, &receipts).await;
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
    sink.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_store_no_duplicate_and_nothing_missing() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let db = PgDatabase::create();
    let small = |c: &mut SinkConfig| {
        c.prefetch = 10;
        c.batch_size = 200;
    };
    let (a, b) = tokio::join!(
        start_sink(&vhost.url, &db.url, small),
        start_sink(&vhost.url, &db.url, small)
    );
    a.wait_connected().await;
    b.wait_connected().await;

    let receipts = many(1000);
    publish(&conn, &receipts, 25).await;
    // The producer retried some publishes: the same receipts arrive twice.
    publish(&conn, &receipts[..1000], 25).await;

    let store = Store::open(&db.url).await.unwrap();
    wait_for("all receipts in PostgreSQL", WAIT, || async {
        (count(&store).await >= 5000).then_some(())
    })
    .await;
    wait_for("both queues drained", WAIT, || async {
        (ready_in_sink_queue(&conn).await == 0).then_some(())
    })
    .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_stored_exactly(&store, &receipts).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_write_is_retried_and_acked_only_after_commit() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let db = PgDatabase::create();
    let store = Store::open(&db.url).await.unwrap();
    // Every insert into receipts fails until the constraint goes.
    psql_in(
        &db.name,
        "ALTER TABLE receipts ADD CONSTRAINT test_block CHECK (false) NOT VALID",
    );
    let sink = start_sink(&vhost.url, &db.url, |_| {}).await;
    sink.wait_connected().await;
    let receipts = many(10);
    publish(&conn, &receipts, 10).await;

    // The sink holds all five messages, unacked, while its writes fail.
    wait_for("five unacked messages", WAIT, || async {
        (unacked_in_sink_queue(&vhost) == 5).then_some(())
    })
    .await;
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
    assert_eq!(count(&store).await, 0);

    psql_in(&db.name, "ALTER TABLE receipts DROP CONSTRAINT test_block");
    wait_for("the retried write", WAIT, || async {
        (count(&store).await == 50).then_some(())
    })
    .await;
    wait_for("the ack after the commit", WAIT, || async {
        (unacked_in_sink_queue(&vhost) == 0).then_some(())
    })
    .await;
    sink.stop().await.unwrap();
    assert_stored_exactly(&store, &receipts).await;
    store.close().await;
}

/// Issue 13, finding 2: a second sink with another store used to take half
/// of every chain. Groups each get every receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_of_two_groups_each_store_every_receipt() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let (main_file, audit_file) = (sqlite_file(), sqlite_file());
    let main = start_sink(&vhost.url, &main_file.url, |_| {}).await;
    let audit = start_sink(&vhost.url, &audit_file.url, |c| c.group = "audit".into()).await;
    main.wait_connected().await;
    audit.wait_connected().await;

    let receipts = many(200);
    publish(&conn, &receipts, 25).await;

    for file in [&main_file, &audit_file] {
        let store = Store::open(&file.url).await.unwrap();
        wait_for("every receipt in each group's store", WAIT, || async {
            (count(&store).await >= receipts.len() as u64).then_some(())
        })
        .await;
        store.close().await;
    }
    main.stop().await.unwrap();
    audit.stop().await.unwrap();
    for file in [&main_file, &audit_file] {
        let store = Store::open(&file.url).await.unwrap();
        assert_stored_exactly(&store, &receipts).await;
        store.close().await;
    }
}

/// The mistake itself: a sink with another store joining a running group
/// refuses to start and says what to do; the group's store misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_with_another_store_refuses_to_join_a_group() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let (first_file, second_file) = (sqlite_file(), sqlite_file());
    let first = start_sink(&vhost.url, &first_file.url, |_| {}).await;
    first.wait_connected().await;
    // Receipts stored: the first sink is past joining and consuming.
    let early = many(10);
    publish(&conn, &early, 25).await;
    let store = Store::open(&first_file.url).await.unwrap();
    wait_for("the first sink consuming", WAIT, || async {
        (count(&store).await >= early.len() as u64).then_some(())
    })
    .await;

    let second = start_sink(&vhost.url, &second_file.url, |_| {}).await;
    let refused = tokio::time::timeout(WAIT, second.handle)
        .await
        .expect("the second sink stops by itself")
        .expect("sink task");
    match refused {
        Err(e @ SinkError::GroupConflict { .. }) => {
            let text = e.to_string();
            assert!(text.contains("--group"), "{text}");
            assert!(
                text.contains(&first_file.url["sqlite://".len()..]),
                "{text}"
            );
        }
        other => panic!("expected a group conflict, got {other:?}"),
    }

    let mut receipts = early;
    let late = many(100);
    publish(&conn, &late, 25).await;
    receipts.extend(late);
    wait_for("every receipt in the group's store", WAIT, || async {
        (count(&store).await >= receipts.len() as u64).then_some(())
    })
    .await;
    first.stop().await.unwrap();
    assert_stored_exactly(&store, &receipts).await;
    store.close().await;
}

/// A header of a message, as text (strings as they are, numbers in decimal).
fn header(props: &BasicProperties, name: &str) -> Option<String> {
    let value = props.headers().as_ref()?.inner().get(name)?.clone();
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        other => format!("{other:?}"),
    })
}

/// The messages in the quarantine queue, looked at and left there (the
/// channel closes without acking them).
async fn quarantined_messages(conn: &Connection) -> Vec<(Vec<u8>, BasicProperties)> {
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(names::SINK_QUARANTINE.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push((m.delivery.data.clone(), m.delivery.properties.clone()));
    }
    let _ = ch.close(200, "looked".into()).await;
    out
}

/// Issue 13, finding 0: a receipt message that the sink never settles (it
/// crashes, or loses its connection, on it every time) is moved aside by the
/// broker into the quarantine queue once the sink queue's delivery limit is
/// reached; nothing of it is lost, receipts published after it are stored,
/// and `chit sink --replay-quarantine` brings it back. A raw AMQP client
/// plays the sink that dies on the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_no_sink_settles_goes_to_quarantine_after_the_delivery_limit_and_replays() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let poison = life("task-that-kills-sinks");
    let body = serde_json::to_vec(&poison).unwrap();
    publish_raw(&conn, &[(body.clone(), Some("application/json"))]).await;

    // Take the message and die (close the channel) without settling it,
    // until the broker stops handing it out.
    let deadline = std::time::Instant::now() + WAIT;
    let mut deliveries = 0;
    while support::queue_depth(&conn, names::SINK_QUARANTINE).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still not quarantined after {deliveries} deliveries"
        );
        let ch = conn.create_channel().await.unwrap();
        if let Some(m) = ch
            .basic_get(names::SINK_QUEUE.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            assert_eq!(m.delivery.data, body);
            deliveries += 1;
        }
        let _ = ch.close(200, "a sink dying on the message".into()).await;
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    }
    assert_eq!(
        deliveries,
        SINK_DELIVERY_LIMIT + 1,
        "returned more often than the limit"
    );
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
    let quarantined = quarantined_messages(&conn).await;
    assert_eq!(quarantined.len(), 1);
    let (q_body, q_props) = &quarantined[0];
    assert_eq!(q_body, &body, "kept whole");
    assert_eq!(
        header(q_props, "x-first-death-queue").as_deref(),
        Some(names::SINK_QUEUE)
    );
    assert_eq!(
        header(q_props, "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );

    // A sink now stores what comes after it.
    let file = sqlite_file();
    let sink = start_sink(&vhost.url, &file.url, |_| {}).await;
    let after = life("task-after-the-poison");
    publish(&conn, &after, 5).await;
    let store = Store::open(&file.url).await.unwrap();
    wait_for("the receipts after the poison", WAIT, || async {
        (count(&store).await == 5).then_some(())
    })
    .await;
    assert_stored_exactly(&store, &after).await;
    assert_eq!(support::queue_depth(&conn, names::SINK_QUARANTINE).await, 1);

    // Once the cause is fixed, a replay sends it back, and it is stored.
    let out = chit()
        .args(["sink", "--replay-quarantine", "--amqp-url", &vhost.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "replayed 1 quarantined receipt messages"
    );
    wait_for("the replayed receipts stored", WAIT, || async {
        (count(&store).await == 10).then_some(())
    })
    .await;
    sink.stop().await.unwrap();
    let all: Vec<Receipt> = after.into_iter().chain(poison).collect();
    assert_stored_exactly(&store, &all).await;
    assert_eq!(support::queue_depth(&conn, names::SINK_QUARANTINE).await, 0);
}

/// Issue 13, finding 0: a receipt message the store refuses (while it takes
/// others) no longer holds up the queue: it is rejected into the quarantine
/// queue, and the receipts around it are stored. A store that refuses
/// everything still holds its batch (see
/// `a_failing_store_write_is_retried_and_acked_only_after_commit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_store_refuses_goes_to_quarantine_and_the_rest_is_stored() {
    let vhost = Vhost::create();
    let conn = declare(&vhost).await;
    let db = PgDatabase::create();
    let store = Store::open(&db.url).await.unwrap();
    psql_in(
        &db.name,
        "ALTER TABLE receipts ADD CONSTRAINT refuse_one CHECK (task_id <> 'task-refused') NOT VALID",
    );
    let (before, after) = (many(4), many(4));
    let refused = serde_json::to_vec(&life("task-refused")).unwrap();
    let mut messages: Vec<(Vec<u8>, Option<&str>)> = before
        .chunks(5)
        .map(|c| (serde_json::to_vec(c).unwrap(), Some("application/json")))
        .collect();
    messages.push((refused.clone(), Some("application/json")));
    messages.extend(
        after
            .chunks(5)
            .map(|c| (serde_json::to_vec(c).unwrap(), Some("application/json"))),
    );
    publish_raw(&conn, &messages).await;

    let sink = start_sink(&vhost.url, &db.url, |_| {}).await;
    wait_for("the refused message in quarantine", WAIT, || async {
        (support::queue_depth(&conn, names::SINK_QUARANTINE).await == 1).then_some(())
    })
    .await;
    wait_for("every other receipt stored and acked", WAIT, || async {
        (count(&store).await == 40 && unacked_in_sink_queue(&vhost) == 0).then_some(())
    })
    .await;
    let (body, props) = quarantined_messages(&conn).await.remove(0);
    assert_eq!(body, refused);
    assert_eq!(
        header(&props, "x-first-death-reason").as_deref(),
        Some("rejected")
    );

    // Ingestion goes on.
    let later = many(2);
    publish(&conn, &later, 5).await;
    wait_for("receipts published later", WAIT, || async {
        (count(&store).await == 50).then_some(())
    })
    .await;
    sink.stop().await.unwrap();
    let stored: Vec<Receipt> = before.into_iter().chain(after).chain(later).collect();
    assert_stored_exactly(&store, &stored).await;
    assert!(store.task("task-refused").await.unwrap().is_none());
    assert_eq!(ready_in_sink_queue(&conn).await, 0);
    store.close().await;
}

/// Issue 13, finding 0, existing deployments: a sink queue declared by an
/// older chit (no delivery limit) cannot be given one, so the queues were
/// renamed. A sink moves the receipts still waiting in its group's old queue
/// into the new one and unbinds the old queue; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_waiting_in_an_older_chits_sink_queue_are_stored() {
    let vhost = Vhost::create();
    let conn = vhost.connect().await;
    // What an older chit left: the receipts exchange and its sink queue.
    let legacy = names::legacy_sink_queue(names::DEFAULT_SINK_GROUP);
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        names::RECEIPT_EXCHANGE.into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        legacy.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum,
    )
    .await
    .unwrap();
    ch.queue_bind(
        legacy.as_str().into(),
        names::RECEIPT_EXCHANGE.into(),
        "#".into(),
        lapin::options::QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let old = many(20);
    publish(&conn, &old, 10).await;
    assert_eq!(support::queue_depth(&conn, &legacy).await, 10);

    let file = sqlite_file();
    let sink = start_sink(&vhost.url, &file.url, |_| {}).await;
    let store = Store::open(&file.url).await.unwrap();
    wait_for("the old queue's receipts stored", WAIT, || async {
        (count(&store).await == 100).then_some(())
    })
    .await;
    let new = many(20);
    publish(&conn, &new, 10).await;
    wait_for("new receipts stored", WAIT, || async {
        (count(&store).await == 200).then_some(())
    })
    .await;
    sink.stop().await.unwrap();
    let all: Vec<Receipt> = old.into_iter().chain(new).collect();
    assert_stored_exactly(&store, &all).await;
    assert_eq!(
        support::queue_depth(&conn, &legacy).await,
        0,
        "emptied, and no longer bound to the receipts"
    );
}

/// Runs `chit sink` with `args` on the vhost, expecting it to stop by itself;
/// returns (success, stderr).
fn sink_exits(vhost: &Vhost, args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let mut cmd = chit();
    cmd.args(["sink", "--amqp-url", &vhost.url])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = ChildGuard::spawn(cmd);
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("the sink stops by itself");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

/// Issue 13, finding 9: the README's `--store sqlite:///var/lib/chit/...`
/// on a fresh machine. The sink makes the file's directory; when it cannot,
/// it says which path, once; a bare relative path is refused with the two
/// spellings that work; a busy HTTP address is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_http_errors_name_the_path_and_the_address() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();

    // A missing directory is created.
    let deep = dir.path().join("var/lib/chit/receipts.db");
    let mut cmd = chit();
    cmd.args(["sink", "--amqp-url", &vhost.url, "--http", "127.0.0.1:0"])
        .args(["--store", &format!("sqlite://{}", deep.display())]);
    let sink = ChildGuard::spawn(cmd);
    wait_for("the SQLite file in its new directory", WAIT, || async {
        deep.exists().then_some(())
    })
    .await;
    drop(sink);

    // A directory that cannot be made: its parent is a file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let blocked = file.join("receipts.db");
    let (ok, stderr) = sink_exits(
        &vhost,
        &["--store", &format!("sqlite://{}", blocked.display())],
        dir.path(),
    );
    assert!(!ok);
    let path = blocked.display().to_string();
    assert_eq!(stderr.matches(&path).count(), 1, "the path, once: {stderr}");
    assert!(stderr.contains("cannot create its directory"), "{stderr}");

    // A bare relative path is refused; `./` says it is meant.
    let (ok, stderr) = sink_exits(&vhost, &["--store", "sqlite://var/receipts.db"], dir.path());
    assert!(!ok);
    assert!(stderr.contains("sqlite:///var/receipts.db"), "{stderr}");
    assert!(stderr.contains("sqlite://./var/receipts.db"), "{stderr}");
    let mut cmd = chit();
    cmd.args(["sink", "--amqp-url", &vhost.url, "--http", "127.0.0.1:0"])
        .args(["--store", "sqlite://./rel/receipts.db"])
        .current_dir(dir.path());
    let sink = ChildGuard::spawn(cmd);
    let relative = dir.path().join("rel/receipts.db");
    wait_for("the file under the working directory", WAIT, || async {
        relative.exists().then_some(())
    })
    .await;
    drop(sink);

    // The HTTP address in use is named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let store = format!("sqlite://{}", dir.path().join("http.db").display());
    let (ok, stderr) = sink_exits(&vhost, &["--store", &store, "--http", &addr], dir.path());
    assert!(!ok);
    assert!(stderr.contains(&addr), "{stderr}");
    assert_eq!(stderr.matches("in use").count(), 1, "once: {stderr}");
}

/// Receipts of one task, all at `at`: `queued`, then `success` when `done`.
fn aged(task_id: &str, at: chrono::DateTime<chrono::Utc>, done: bool) -> Vec<Receipt> {
    let mut chain = life(task_id);
    chain.truncate(2);
    if done {
        chain[1].receipt_type = ReceiptType::Success;
    }
    for r in &mut chain {
        r.created_at = at;
    }
    chain
}

/// Issue 13, finding 21: `chit sink --retain 30d` (or `CHIT_SINK_RETAIN`)
/// deletes finished tasks older than that with their chains, and keeps the
/// rest, on SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_finished_chains_on_both_stores() {
    let vhost = Vhost::create();
    let file = sqlite_file();
    let db = PgDatabase::create();
    let now = chrono::Utc::now();
    let (old, recent) = (
        now - chrono::Duration::days(45),
        now - chrono::Duration::days(2),
    );
    for (url, by_env) in [(&file.url, false), (&db.url, true)] {
        let store = Store::open(url).await.unwrap();
        let mut receipts = aged("old-done", old, true);
        receipts.extend(aged("old-running", old, false));
        receipts.extend(aged("recent-done", recent, true));
        store.write_batch(&receipts, &[]).await.unwrap();

        let mut cmd = chit();
        cmd.args(["sink", "--amqp-url", &vhost.url, "--http", "127.0.0.1:0"])
            .args(["--store", url]);
        if by_env {
            cmd.env("CHIT_SINK_RETAIN", "30d");
        } else {
            cmd.args(["--retain", "30d"]);
        }
        let sink = ChildGuard::spawn(cmd);
        wait_for("the old finished task pruned", WAIT, || async {
            store
                .task("old-done")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        drop(sink);
        assert!(
            store.receipts("old-done").await.unwrap().is_empty(),
            "{url}"
        );
        for kept in ["old-running", "recent-done"] {
            let view = store.task(kept).await.unwrap();
            assert_eq!(view.map(|v| v.chain.len()), Some(2), "{kept} in {url}");
        }
        store.close().await;
    }
}

/// Issue 13, finding 15: `chit task list` goes past the API's page of 1000
/// and across calls with `--cursor`, printing the next cursor on stderr so
/// stdout stays the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_list_pages_with_a_cursor_past_a_thousand() {
    let vhost = Vhost::create();
    let file = sqlite_file();
    let store = Store::open(&file.url).await.unwrap();
    let receipts: Vec<Receipt> = (0..1205)
        .map(|i| {
            Receipt::new(
                format!("task-{i:04}"),
                "noop",
                ReceiptType::Queued,
                vec![],
                1,
            )
        })
        .collect();
    store.write_batch(&receipts, &[]).await.unwrap();
    let sink = start_sink(&vhost.url, &file.url, |_| {}).await;

    let list = |args: &[&str]| {
        let out = chit()
            .args(["task", "list", "--api", &sink.api])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let ids: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.starts_with("task-"))
            .map(str::to_owned)
            .collect();
        let cursor = stderr
            .lines()
            .find_map(|l| l.strip_prefix("next page: --cursor "))
            .map(str::to_owned);
        (ids, cursor, stdout)
    };
    let (first, cursor, _) = list(&["--limit", "1100"]);
    assert_eq!(first.len(), 1100);
    let cursor = cursor.expect("a next cursor on stderr");
    let (second, last_cursor, stdout) = list(&["--limit", "1100", "--cursor", &cursor]);
    assert_eq!(second.len(), 105);
    assert_eq!(last_cursor, None, "the last page has no next cursor");
    assert!(!stdout.contains(&cursor), "stdout is the table alone");
    let mut all: Vec<String> = first.into_iter().chain(second).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1205, "every task once");

    let out = chit()
        .args(["task", "list", "--api", &sink.api, "--json", "--limit", "3"])
        .output()
        .unwrap();
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["tasks"].as_array().unwrap().len(), 3);
    assert!(page["next_cursor"].is_string(), "{page}");
    sink.stop().await.unwrap();
    store.close().await;
}
