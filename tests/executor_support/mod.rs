//! Helpers for the executor tests (executor_config, command_policy,
//! sandbox): a worker started from a config file, tasks run to their end,
//! and the receipts a user reads.

#![allow(dead_code, unreachable_pub)]

use crate::support::{ChildGuard, ReceiptTap, Vhost, chit, wait_for};
use broker_link::Declare;
use broker_topology::{Capability, Receipt, ReceiptType, Topology};
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for a busy machine; every wait ends as soon as its condition holds.
pub const WAIT: Duration = Duration::from_secs(60);

/// A vhost with the queues of some capabilities, a receipt tap, a producer
/// and a directory for the config file.
pub struct Rig {
    pub vhost: Vhost,
    pub tap: ReceiptTap,
    pub producer: Producer,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn new(capabilities: &[&str]) -> Rig {
        let vhost = Vhost::create();
        let tap = ReceiptTap::start(&vhost).await;
        let caps: Vec<Capability> = capabilities
            .iter()
            .map(|c| Capability::new(*c).unwrap())
            .collect();
        Topology::for_capabilities(&caps)
            .apply(&vhost.connect().await)
            .await
            .unwrap();
        let producer = Producer::new(ProducerConfig::new(&vhost.url));
        Rig {
            vhost,
            tap,
            producer,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `chit.toml` and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("chit.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `chit worker --config FILE ARGS...` on this vhost.
    pub fn worker(&self, config: &Path, args: &[&str]) -> ChildGuard {
        ChildGuard::spawn(self.worker_command(config, args))
    }

    pub fn worker_command(&self, config: &Path, args: &[&str]) -> std::process::Command {
        let mut cmd = chit();
        cmd.args(["worker", "--amqp-url", &self.vhost.url, "--config"])
            .arg(config)
            .args(["--concurrency", "2"])
            .args(args);
        cmd
    }

    /// Publishes one task of `capability` (one attempt unless `attempts`)
    /// and returns its receipts once it has settled.
    pub async fn run(&self, capability: &str, payload: &Value, attempts: u32) -> Vec<Receipt> {
        let mut spec = TaskSpec::json(capability, payload).unwrap();
        spec.envelope.max_attempts = Some(attempts);
        let published = self.producer.publish(spec).await.unwrap();
        self.tap.wait_task(&published.task_id, WAIT, settled).await
    }
}

/// The task has its last receipt: success, dead-lettered or cancelled.
pub fn settled(rs: &[Receipt]) -> bool {
    rs.iter().any(|r| {
        matches!(
            r.receipt_type,
            ReceiptType::Success | ReceiptType::DeadLettered | ReceiptType::Cancelled
        )
    })
}

pub fn of_type(rs: &[Receipt], t: ReceiptType) -> Vec<Receipt> {
    rs.iter().filter(|r| r.receipt_type == t).cloned().collect()
}

/// The body of the task's single `success` receipt.
pub fn success(rs: &[Receipt]) -> Value {
    let s = of_type(rs, ReceiptType::Success);
    assert_eq!(s.len(), 1, "expected one success: {rs:#?}");
    s[0].body.clone()
}

/// The body of the task's single `failure` receipt, which must have ended
/// it: dead-lettered, never retried.
pub fn final_failure(rs: &[Receipt]) -> Value {
    let f = of_type(rs, ReceiptType::Failure);
    assert_eq!(f.len(), 1, "expected one failure: {rs:#?}");
    assert!(
        of_type(rs, ReceiptType::RetryScheduled).is_empty(),
        "retried: {rs:#?}"
    );
    assert_eq!(of_type(rs, ReceiptType::DeadLettered).len(), 1, "{rs:#?}");
    f[0].body.clone()
}

/// A refusal: reason `refused`, the rule named, not retried.
pub fn assert_refused(rs: &[Receipt], rule: &str) -> Value {
    let body = final_failure(rs);
    assert_eq!(body["reason"], "refused", "{body:#}");
    assert_eq!(body["rule"], rule, "{body:#}");
    assert_eq!(body["retryable"], false, "{body:#}");
    assert_eq!(body["will_retry"], false, "{body:#}");
    body
}

/// Reads a command's output file (its `output_path`).
pub fn output_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// GETs `url`, returning the status and the JSON body (`None` while the
/// server is not up).
pub async fn get_json(url: &str) -> Option<(u16, Value)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// Waits until the worker's `/readyz` answers with a body for which `pred`
/// holds, and returns status and body.
pub async fn readyz_until(
    port: u16,
    what: &str,
    pred: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    wait_for(what, WAIT, || {
        let url = url.clone();
        let pred = &pred;
        async move { get_json(&url).await.filter(|(s, b)| pred(*s, b)) }
    })
    .await
}

/// The worker exits by itself (a refused configuration) within the wait,
/// and what it printed on stderr.
pub fn refuses_to_start(mut cmd: std::process::Command) -> String {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = ChildGuard::spawn(cmd);
    let status = child
        .wait_timeout(WAIT)
        .expect("the worker kept running instead of refusing its configuration");
    assert!(!status.success(), "exited 0");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}
