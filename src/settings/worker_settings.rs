//! Worker settings: what `chit worker` (or `chit dev`) asks for, merged with
//! the config file into a [`WorkerConfig`]. The per-capability merge is also
//! what `chit topology` declares, so a queue and its worker always agree on
//! arguments such as the delivery limit.

use super::{RetryFlags, Settings, address};
use anyhow::Result;
use broker_topology::Capability;
use broker_topology::retry::RetryPolicy;
use std::time::Duration;
use worker::{CapabilityConfig, WorkerConfig};

/// The worker settings given on the command line (flags or `CHIT_*`
/// variables). `None` or empty means "not given here": the config file
/// decides, else the worker crate's default.
#[derive(Debug, Clone, Default)]
pub struct WorkerSettings {
    /// `TYPE` or `TYPE=EXECUTOR`; empty means the config file's capabilities.
    pub capabilities: Vec<String>,
    /// Tasks run at once.
    pub concurrency: Option<usize>,
    /// Deliveries the broker may push ahead, per capability.
    pub prefetch: Option<u16>,
    /// Worker id in receipts.
    pub worker_id: Option<String>,
    /// Seconds in-flight tasks get to finish after SIGTERM.
    pub drain_timeout_secs: Option<u64>,
    /// Retry overrides for every capability.
    pub retry: RetryFlags,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace_secs: Option<f64>,
    /// Longest wait, in ms, for more receipts before a batch is sent.
    pub receipt_linger_ms: Option<f64>,
    /// Where to serve `/healthz`: `HOST:PORT`, `:PORT` or
    /// `http://HOST:PORT` (see `address`); no default port.
    pub health_addr: Option<String>,
    /// Seconds between two health checks of each executor.
    pub health_interval_secs: Option<f64>,
}

impl Settings {
    /// The worker's config: `given` over the config file over
    /// [`WorkerConfig::new`]'s defaults.
    pub fn worker_config(&self, given: &WorkerSettings) -> Result<WorkerConfig> {
        let file = &self.file.worker;
        let mut caps = self.capability_configs(&given.capabilities, &given.retry);
        self.attach_schemas(&mut caps)?;
        let mut config = WorkerConfig::new(&self.amqp_url, caps);
        if let Some(c) = given.concurrency.or(file.concurrency) {
            config.concurrency = c;
        }
        // The default prefetch follows the concurrency actually chosen.
        config.prefetch = given
            .prefetch
            .or(file.prefetch)
            .unwrap_or_else(|| WorkerConfig::default_prefetch(config.concurrency));
        if let Some(id) = given.worker_id.clone().or(file.worker_id.clone()) {
            config.worker_id = id;
        }
        if let Some(d) = given.drain_timeout_secs.or(file.drain_timeout_secs) {
            config.drain_timeout = Duration::from_secs(d);
        }
        if let Some(s) = given.kill_grace_secs {
            config.kill_grace = Duration::from_secs_f64(s);
        }
        if let Some(addr) = &given.health_addr {
            config.health_addr = Some(address::listen_addr("--health", addr, None)?);
        }
        if let Some(s) = given.health_interval_secs.or(file.health_interval_secs) {
            anyhow::ensure!(
                s > 0.0 && s.is_finite() && s < 1e9,
                "the health interval must be a positive number of seconds, not {s}"
            );
            config.health_interval = Duration::from_secs_f64(s);
        }
        if let Some(ms) = given.receipt_linger_ms {
            config.receipts.linger = Duration::from_secs_f64(ms / 1000.0);
        }
        Ok(config)
    }

    /// The queues to declare for `names` (or the config file's capabilities
    /// when empty), with the same arguments the worker will expect. An
    /// `=EXECUTOR` suffix is ignored.
    pub fn topology_capabilities(&self, names: &[String]) -> Result<Vec<Capability>> {
        self.capability_configs(names, &RetryFlags::default())
            .into_iter()
            .map(|c| {
                let mut cap = Capability::new(c.name)?;
                cap.delivery_limit = c.delivery_limit;
                Ok(cap)
            })
            .collect()
    }

    /// Each capability's settings: `specs` (else the file's capability
    /// list), the flags in `retry` over the file's `[[capability]]` entry
    /// over the crates' defaults.
    fn capability_configs(&self, specs: &[String], retry: &RetryFlags) -> Vec<CapabilityConfig> {
        let specs: Vec<String> = if specs.is_empty() {
            self.file
                .capabilities
                .iter()
                .map(|c| match &c.executor {
                    Some(e) => format!("{}={e}", c.name),
                    None => c.name.clone(),
                })
                .collect()
        } else {
            specs.to_vec()
        };
        let defaults = RetryPolicy::default();
        specs
            .iter()
            .map(|spec| {
                let mut cap = CapabilityConfig::parse(spec);
                let f = self.file.capability(&cap.name);
                cap.retry = RetryPolicy {
                    max_attempts: retry
                        .max_attempts
                        .or(f.and_then(|f| f.max_attempts))
                        .unwrap_or(defaults.max_attempts),
                    initial_backoff_ms: retry
                        .backoff_ms
                        .or(f.and_then(|f| f.initial_backoff_ms))
                        .unwrap_or(defaults.initial_backoff_ms),
                    max_backoff_ms: f
                        .and_then(|f| f.max_backoff_ms)
                        .unwrap_or(defaults.max_backoff_ms),
                };
                if let Some(limit) = f.and_then(|f| f.delivery_limit) {
                    cap.delivery_limit = limit;
                }
                // An executor named on the command line beats the file's.
                if let Some(exec) = f
                    .and_then(|f| f.executor.clone())
                    .filter(|_| !spec.contains('='))
                {
                    cap.executor = exec;
                }
                cap.timeout = retry
                    .timeout_secs
                    .or(f.and_then(|f| f.timeout_secs))
                    .map(Duration::from_secs_f64);
                cap
            })
            .collect()
    }
}
