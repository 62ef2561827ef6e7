//! Worker settings: which capabilities to serve, with which executor, and how
//! to retry, time out and batch.

use broker_link::BatchConfig;
use broker_topology::retry::RetryPolicy;
use broker_topology::{Capability, PayloadSchema, declare::DEFAULT_DELIVERY_LIMIT};
use std::sync::Arc;
use std::time::Duration;

/// One capability (task type) the worker consumes.
#[derive(Debug, Clone)]
pub struct CapabilityConfig {
    /// Task type, which names its queue.
    pub name: String,
    /// Executor that runs it; by default the executor named like the task type.
    pub executor: String,
    /// Attempts and backoff (per-task headers override).
    pub retry: RetryPolicy,
    /// Quorum queue `x-delivery-limit`; the worker dead-letters a delivery
    /// that has been returned this many times without running it again.
    pub delivery_limit: u32,
    /// Default run-time limit (a task's `x-chit-timeout-ms` overrides).
    pub timeout: Option<Duration>,
    /// The capability's own payload schema, compiled once: every payload is
    /// checked against it before the executor sees it, and one that breaks
    /// it fails at once with reason `invalid_payload`, never retried.
    /// `None` leaves the payload to the executor's own checks.
    pub schema: Option<Arc<PayloadSchema>>,
}

impl CapabilityConfig {
    /// A capability run by the executor of the same name, with defaults.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        CapabilityConfig {
            executor: name.clone(),
            name,
            retry: RetryPolicy::default(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            timeout: None,
            schema: None,
        }
    }

    /// Parses `task-type` or `task-type=executor`.
    pub fn parse(spec: &str) -> Self {
        match spec.split_once('=') {
            Some((name, executor)) => {
                let mut c = CapabilityConfig::new(name.trim());
                c.executor = executor.trim().to_owned();
                c
            }
            None => CapabilityConfig::new(spec.trim()),
        }
    }

    /// The queue-level view, for declaring the topology.
    pub fn capability(&self) -> Capability {
        Capability {
            name: self.name.clone(),
            delivery_limit: self.delivery_limit,
        }
    }
}

/// Everything a worker needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// Name in receipts and in the broker's connection list.
    pub worker_id: String,
    /// Capabilities to consume.
    pub capabilities: Vec<CapabilityConfig>,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Unacked deliveries the broker may push per capability queue.
    pub prefetch: u16,
    /// How long in-flight tasks may finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Receipt batching.
    pub receipts: BatchConfig,
    /// Time between SIGTERM and SIGKILL when a command is stopped.
    pub kill_grace: Duration,
    /// Where to serve `/healthz` and `/readyz`, if anywhere.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Time between two health checks of each executor.
    pub health_interval: Duration,
    /// Time between two heartbeats on the events exchange
    /// ([`broker_topology::heartbeat::HEARTBEAT_INTERVAL`] by default).
    pub heartbeat_interval: Duration,
}

impl WorkerConfig {
    /// Tasks run at once unless configured.
    pub const DEFAULT_CONCURRENCY: usize = 4;
    /// How long in-flight tasks may finish after SIGTERM unless configured.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Time between SIGTERM and SIGKILL when a command is stopped, unless
    /// configured.
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
    /// Time between two health checks of each executor unless configured.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

    /// The defaults ([`Self::DEFAULT_CONCURRENCY`], the matching
    /// [`Self::default_prefetch`], [`Self::DEFAULT_DRAIN_TIMEOUT`],
    /// [`Self::DEFAULT_KILL_GRACE`]), with this broker and these capabilities.
    pub fn new(amqp_url: impl Into<String>, capabilities: Vec<CapabilityConfig>) -> Self {
        WorkerConfig {
            amqp_url: amqp_url.into(),
            worker_id: default_worker_id(),
            capabilities,
            concurrency: Self::DEFAULT_CONCURRENCY,
            prefetch: Self::default_prefetch(Self::DEFAULT_CONCURRENCY),
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            receipts: BatchConfig::default(),
            kill_grace: Self::DEFAULT_KILL_GRACE,
            health_addr: None,
            health_interval: Self::DEFAULT_HEALTH_INTERVAL,
            heartbeat_interval: broker_topology::heartbeat::HEARTBEAT_INTERVAL,
        }
    }

    /// The prefetch unless configured: two deliveries per task slot, so a
    /// slot that frees up finds its next lease already on the channel.
    pub fn default_prefetch(concurrency: usize) -> u16 {
        concurrency.saturating_mul(2).clamp(1, u16::MAX as usize) as u16
    }
}

/// `hostname-pid`, unique enough to tell workers apart in a chain.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_spec_names_an_executor() {
        let c = CapabilityConfig::parse("build=command.execute");
        assert_eq!(c.name, "build");
        assert_eq!(c.executor, "command.execute");
        let c = CapabilityConfig::parse("noop");
        assert_eq!(c.executor, "noop");
    }
}
