//! The worker's heartbeat: every [`HEARTBEAT_INTERVAL`] it publishes a
//! [`Heartbeat`] (id, host, capabilities, tasks in flight, version, uptime)
//! on the events exchange, so sinks can list the live workers.
//!
//! Heartbeats go out on a confirm-mode channel of their own (through
//! `broker_link::publish`), never on the task path, and only while the link
//! is up: the heartbeat does not reconnect by itself, and a heartbeat that
//! cannot be sent is skipped, not queued. Each carries a message TTL of its
//! expiry, so one that waits in a slow listener's queue is dropped rather
//! than read late. The loop keeps beating through the drain; once the worker
//! has settled its last task it sends one more with `stopping: true`, so
//! listeners drop it at once instead of waiting out the timeout.

use crate::metrics::WorkerMetrics;
use crate::shutdown::Shutdown;
use broker_link::{BrokerLink, LinkState, Outgoing};
use broker_topology::heartbeat::HEARTBEAT_INTERVAL;
use broker_topology::{ContentType, Heartbeat, names};
use chrono::{DateTime, Utc};
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the heartbeat says of its worker, and where it sends it.
pub(crate) struct Beat {
    pub(crate) link: Arc<BrokerLink>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) worker_id: String,
    pub(crate) capabilities: Vec<String>,
    pub(crate) concurrency: usize,
    pub(crate) interval: Duration,
}

/// The beating loop and its channel.
struct Beating {
    beat: Beat,
    host: String,
    started_at: DateTime<Utc>,
    started: Instant,
    /// The heartbeat channel and the connection generation it belongs to.
    channel: Option<(u64, Channel)>,
}

/// Sends a heartbeat at once and then every interval until `stop`, then a
/// last one that says the worker is stopping.
pub(crate) async fn run(beat: Beat, mut stop: Shutdown) {
    let interval = if beat.interval.is_zero() {
        HEARTBEAT_INTERVAL
    } else {
        beat.interval
    };
    let mut beating = Beating {
        beat,
        host: host_name(),
        started_at: Utc::now(),
        started: Instant::now(),
        channel: None,
    };
    // The first beat one interval in, not at once: a broker under a
    // resource alarm stops reading a connection at its first publish, and
    // the worker's subscriptions must be through before that.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => beating.send(false, interval).await,
            _ = stop.recv() => break,
        }
    }
    beating.send(true, interval).await;
}

impl Beating {
    fn heartbeat(&self, stopping: bool, interval: Duration) -> Heartbeat {
        Heartbeat {
            worker_id: self.beat.worker_id.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            capabilities: self.beat.capabilities.clone(),
            in_flight: self.beat.metrics.in_flight(),
            concurrency: self.beat.concurrency as u64,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            sent_at: Utc::now(),
            interval_ms: interval.as_millis() as u64,
            stopping,
        }
    }

    /// One heartbeat, if the link is up; waits at most `interval` for it.
    async fn send(&mut self, stopping: bool, interval: Duration) {
        // Not while blocked either: the publish would stall the connection
        // the worker's acks travel on.
        if !matches!(self.beat.link.state(), LinkState::Connected) {
            return;
        }
        let deadline = Instant::now() + interval;
        let Ok(session) = self.beat.link.session_until(Some(deadline)).await else {
            return;
        };
        let channel = match &self.channel {
            Some((generation, c))
                if *generation == session.generation && c.status().connected() =>
            {
                c.clone()
            }
            _ => match broker_link::publish::confirm_channel(&session).await {
                Ok(c) => {
                    self.channel = Some((session.generation, c.clone()));
                    c
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no channel for the heartbeat; skipping it");
                    return;
                }
            },
        };
        let heartbeat = self.heartbeat(stopping, interval);
        let body = heartbeat.encode();
        let ttl_ms = heartbeat.expires_after().as_millis().to_string();
        let message = Outgoing {
            exchange: names::EVENTS_EXCHANGE,
            routing_key: names::HEARTBEAT_ROUTING_KEY,
            body: &body,
            properties: BasicProperties::default()
                .with_content_type(ContentType::Json.as_str().into())
                .with_expiration(ttl_ms.as_str().into()),
            // Nobody may be listening (no sink runs): that is fine.
            mandatory: false,
        };
        let pending = match broker_link::publish::send(&channel, &message).await {
            Ok(p) => p,
            Err(e) => {
                self.channel = None;
                tracing::debug!(error = %e, "heartbeat not sent");
                return;
            }
        };
        match tokio::time::timeout_at(deadline.into(), pending).await {
            Ok(outcome) if outcome.is_confirmed() => {
                tracing::trace!(in_flight = heartbeat.in_flight, stopping, "heartbeat sent")
            }
            Ok(outcome) => tracing::debug!(?outcome, "heartbeat not confirmed"),
            Err(_) => tracing::debug!("heartbeat confirm late; the next one follows"),
        }
    }
}

/// This machine's host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
