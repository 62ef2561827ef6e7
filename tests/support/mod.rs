//! Shared helpers for chit's integration tests: an isolated vhost per test on the
//! shared RabbitMQ, the `chit` binary as a child process, a tap on the receipts
//! exchange, and waiting on conditions with deadlines.

#![allow(dead_code, unreachable_pub)]

use broker_link::Declare;
use broker_topology::{Receipt, codec};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shared broker's host and port; tests make their own vhost on it.
pub fn broker_authority() -> String {
    std::env::var("CHIT_TEST_BROKER").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be on PATH (run deploy/local/ensure-services.sh)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vhost of its own for one test, deleted (with everything in it) on drop.
pub struct Vhost {
    pub name: String,
    pub url: String,
}

impl Vhost {
    pub fn create() -> Vhost {
        let name = format!("chit-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let url = format!("amqp://guest:guest@{}/{}", broker_authority(), name);
        Vhost { name, url }
    }

    /// Opens a plain lapin connection to this vhost.
    pub async fn connect(&self) -> lapin::Connection {
        broker_link::connect(&self.url, "chit-test")
            .await
            .expect("connect to test vhost")
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Ready messages in a queue, read with a passive declare on `conn`.
pub async fn queue_depth(conn: &lapin::Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let depth = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
        .message_count();
    let _ = ch.close(200, "".into()).await;
    depth
}

/// The `chit` binary built for these tests.
pub fn chit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chit"));
    c.env_remove("CHIT_AMQP_URL");
    c.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    c
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(mut cmd: Command) -> ChildGuard {
        cmd.stdin(Stdio::null());
        ChildGuard(cmd.spawn().expect("spawn child"))
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Sends a signal (libc numbers: 9 kill, 15 term, 2 int).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    /// Waits for the child to exit, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Collects every receipt published on the vhost's receipts exchange, through
/// an exclusive queue of its own (the sink queue is left alone).
#[derive(Clone)]
pub struct ReceiptTap {
    receipts: Arc<Mutex<Vec<Receipt>>>,
    _conn: Arc<lapin::Connection>,
}

impl ReceiptTap {
    /// Declares the core topology and starts tapping. Call before publishing.
    pub async fn start(vhost: &Vhost) -> ReceiptTap {
        let conn = vhost.connect().await;
        broker_topology::Topology::core()
            .apply(&conn)
            .await
            .expect("apply core topology");
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            q.name().clone(),
            broker_topology::names::RECEIPT_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "tap".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let receipts = Arc::new(Mutex::new(Vec::new()));
        let sink = receipts.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let ct = codec::ContentType::from_property(
                    d.properties.content_type().as_ref().map(|c| c.as_str()),
                )
                .unwrap();
                let (good, bad) = codec::decode_receipts(&d.data, ct);
                assert!(bad.is_empty(), "malformed receipts on the wire: {bad:?}");
                sink.lock().unwrap().extend(good);
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        });
        ReceiptTap {
            receipts,
            _conn: Arc::new(conn),
        }
    }

    pub fn all(&self) -> Vec<Receipt> {
        self.receipts.lock().unwrap().clone()
    }

    pub fn for_task(&self, task_id: &str) -> Vec<Receipt> {
        self.all()
            .into_iter()
            .filter(|r| r.task_id == task_id)
            .collect()
    }

    /// Waits until `pred` holds for the receipts of `task_id`, and returns them.
    pub async fn wait_task(
        &self,
        task_id: &str,
        timeout: Duration,
        pred: impl Fn(&[Receipt]) -> bool,
    ) -> Vec<Receipt> {
        wait_for(&format!("receipts of task {task_id}"), timeout, || {
            let rs = self.for_task(task_id);
            let done = pred(&rs);
            async move { if done { Some(rs) } else { None } }
        })
        .await
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test
/// starts (`--http 127.0.0.1:PORT`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Declares the core topology and the queues of `capabilities` on `conn`'s
/// vhost, as `chit topology apply --capability ...` would.
pub async fn apply_capabilities(conn: &lapin::Connection, capabilities: &[&str]) {
    let caps: Vec<broker_topology::Capability> = capabilities
        .iter()
        .map(|c| broker_topology::Capability::new(*c).expect("a capability name"))
        .collect();
    broker_topology::Topology::for_capabilities(&caps)
        .apply(conn)
        .await
        .expect("apply the topology");
}
