//! Live workers: the last heartbeat of each worker, for `GET /v1/workers`.
//!
//! Every sink listens for worker heartbeats on a queue of its own: an
//! exclusive, server-named queue bound to the events exchange, declared on
//! each connection and gone with it. So every sink, of every group and every
//! replica of a group, sees every heartbeat (a queue shared by a group would
//! hand each heartbeat to one replica only, and each would list part of the
//! workers).
//!
//! Heartbeats are kept in memory, not in the store: they come every few
//! seconds and are worth nothing once expired, so writing them would cost a
//! write per worker per interval for a state that a restarted sink learns
//! again within one interval. A worker is listed until its last heartbeat is
//! older than [`Heartbeat::expires_after`] (three intervals, 15 s with chit's
//! default interval of 5 s), or at once gone when it says it is stopping.

use crate::metrics::SinkMetrics;
use broker_link::declare::OwnBinding;
use broker_link::{BrokerLink, Session, declare};
use broker_topology::{Heartbeat, names};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::Consumer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The last heartbeat of each worker. Cheap to clone: the map is shared.
#[derive(Debug, Clone, Default)]
pub struct LiveWorkers {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

#[derive(Debug)]
struct Seen {
    beat: Heartbeat,
    /// When it arrived, by this sink's monotonic clock: expiry is counted
    /// from here, never from the worker's clock.
    at: Instant,
    received_at: DateTime<Utc>,
}

/// One live worker, as `GET /v1/workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveWorker {
    /// Its id, as in its receipts.
    pub worker_id: String,
    /// Its host.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// The task types it consumes.
    pub capabilities: Vec<String>,
    /// Tasks it held at its last heartbeat.
    pub in_flight: u64,
    /// Tasks it runs at once at most.
    pub concurrency: u64,
    /// Its chit version.
    pub version: String,
    /// When it started, by its clock.
    pub started_at: DateTime<Utc>,
    /// Seconds it has been up: its last heartbeat's uptime plus the time since.
    pub uptime_secs: f64,
    /// When its last heartbeat arrived, by the sink's clock.
    pub last_seen: DateTime<Utc>,
    /// Seconds since then.
    pub last_seen_secs_ago: f64,
    /// Seconds until it drops out of the list without another heartbeat.
    pub expires_in_secs: f64,
}

impl LiveWorkers {
    /// Keeps `beat` as its worker's latest, or forgets the worker when it
    /// says it is stopping.
    pub fn record(&self, beat: Heartbeat) {
        self.record_at(beat, Instant::now());
    }

    fn record_at(&self, beat: Heartbeat, at: Instant) {
        let mut seen = self.seen.lock().expect("live workers");
        if beat.stopping {
            seen.remove(&beat.worker_id);
            return;
        }
        seen.insert(
            beat.worker_id.clone(),
            Seen {
                beat,
                at,
                received_at: Utc::now(),
            },
        );
    }

    /// The workers whose heartbeat has not expired, by worker id; the
    /// expired ones are forgotten.
    pub fn list(&self) -> Vec<LiveWorker> {
        self.list_at(Instant::now())
    }

    /// How many workers are live.
    pub fn count(&self) -> usize {
        self.list().len()
    }

    fn list_at(&self, now: Instant) -> Vec<LiveWorker> {
        let mut seen = self.seen.lock().expect("live workers");
        seen.retain(|_, s| now.saturating_duration_since(s.at) < s.beat.expires_after());
        let mut live: Vec<LiveWorker> = seen
            .values()
            .map(|s| {
                let ago = now.saturating_duration_since(s.at);
                let b = &s.beat;
                LiveWorker {
                    worker_id: b.worker_id.clone(),
                    host: b.host.clone(),
                    pid: b.pid,
                    capabilities: b.capabilities.clone(),
                    in_flight: b.in_flight,
                    concurrency: b.concurrency,
                    version: b.version.clone(),
                    started_at: b.started_at,
                    uptime_secs: b.uptime_secs + ago.as_secs_f64(),
                    last_seen: s.received_at,
                    last_seen_secs_ago: ago.as_secs_f64(),
                    expires_in_secs: b.expires_after().saturating_sub(ago).as_secs_f64(),
                }
            })
            .collect();
        live.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        live
    }
}

/// The live workers as a table, one a line, for `chit workers`; a line
/// saying so when there are none.
pub fn render_workers(workers: &[LiveWorker]) -> String {
    if workers.is_empty() {
        return "no live workers (none has sent a heartbeat to this sink lately)\n".into();
    }
    let rows: Vec<[String; 7]> = workers
        .iter()
        .map(|w| {
            [
                w.worker_id.clone(),
                w.host.clone(),
                w.capabilities.join(","),
                format!("{}/{}", w.in_flight, w.concurrency),
                w.version.clone(),
                short_duration(w.uptime_secs),
                format!("{} ago", short_duration(w.last_seen_secs_ago)),
            ]
        })
        .collect();
    let header = [
        "WORKER",
        "HOST",
        "CAPABILITIES",
        "IN FLIGHT",
        "VERSION",
        "UP",
        "LAST SEEN",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `45s`, `12m03s`, `3h12m`, `2d04h`.
fn short_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Starts listening for worker heartbeats on `link`'s connection, keeping
/// each worker's latest in `workers`, until the returned task is aborted (or
/// the runtime stops). For a process other than the sink that serves
/// `GET /v1/workers`, such as the gateway: it gets its own exclusive queue,
/// so it hears every heartbeat without taking any from the sinks. The link
/// must declare the events exchange ([`broker_topology::Topology::core`]
/// does, so a producer's link will do):
///
/// ```text
/// let workers = receipts_sink::LiveWorkers::default();
/// let heartbeats =
///     receipts_sink::spawn_heartbeat_listener(producer.link().clone(), workers.clone());
/// // ... serve; on shutdown:
/// heartbeats.abort();
/// ```
pub fn spawn_heartbeat_listener(
    link: Arc<BrokerLink>,
    workers: LiveWorkers,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(listen_counting(link, workers, None))
}

/// The sink's listener: as [`spawn_heartbeat_listener`], also counting each
/// heartbeat in the sink's metrics.
pub(crate) async fn listen(link: Arc<BrokerLink>, workers: LiveWorkers, metrics: SinkMetrics) {
    listen_counting(link, workers, Some(metrics)).await
}

/// Listens for heartbeats on the link's connection, whichever it is, for as
/// long as the task runs (its owner aborts it when it stops).
async fn listen_counting(
    link: Arc<BrokerLink>,
    workers: LiveWorkers,
    metrics: Option<SinkMetrics>,
) {
    loop {
        match link.session().await {
            Ok(session) => match subscribe(&session).await {
                Ok(mut consumer) => {
                    debug!(
                        generation = session.generation,
                        "listening for worker heartbeats"
                    );
                    while let Some(Ok(delivery)) = consumer.next().await {
                        let ct = delivery.properties.content_type().as_ref();
                        match Heartbeat::decode(ct.map(|c| c.as_str()), &delivery.data) {
                            Ok(beat) => {
                                if let Some(m) = &metrics {
                                    m.heartbeat();
                                }
                                workers.record(beat);
                            }
                            Err(e) => debug!(error = %e, "ignoring an unreadable heartbeat"),
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot listen for worker heartbeats; trying again"),
            },
            Err(e) => debug!(error = %e, "no broker for the heartbeat listener"),
        }
        // The connection is gone (or was refused): the link reconnects.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A queue of this connection's own on the events exchange, for heartbeats.
async fn subscribe(session: &Session) -> Result<Consumer, lapin::Error> {
    let channel = session.connection.create_channel().await?;
    let binding = OwnBinding::Key(names::EVENTS_EXCHANGE, names::HEARTBEAT_ROUTING_KEY);
    let (_, consumer) = declare::own_queue(&channel, binding, "").await?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, interval_ms: u64) -> Heartbeat {
        Heartbeat {
            worker_id: id.into(),
            host: "h".into(),
            pid: 7,
            capabilities: vec!["build".into()],
            in_flight: 1,
            concurrency: 4,
            version: "0.1.0".into(),
            started_at: Utc::now(),
            uptime_secs: 10.0,
            sent_at: Utc::now(),
            interval_ms,
            stopping: false,
        }
    }

    #[test]
    fn a_worker_is_listed_until_three_intervals_pass_without_a_heartbeat() {
        let live = LiveWorkers::default();
        let t0 = Instant::now();
        live.record_at(beat("b", 1000), t0);
        live.record_at(beat("a", 5000), t0);
        let ids = |l: Vec<LiveWorker>| l.into_iter().map(|w| w.worker_id).collect::<Vec<_>>();
        assert_eq!(ids(live.list_at(t0)), ["a", "b"]);
        let later = live.list_at(t0 + Duration::from_millis(2500));
        assert_eq!(later[1].in_flight, 1);
        assert!((later[1].uptime_secs - 12.5).abs() < 1e-6);
        assert!((later[1].expires_in_secs - 0.5).abs() < 1e-6);
        assert_eq!(ids(live.list_at(t0 + Duration::from_secs(3))), ["a"]);
        // A new heartbeat keeps it.
        live.record_at(beat("a", 5000), t0 + Duration::from_secs(10));
        assert_eq!(ids(live.list_at(t0 + Duration::from_secs(20))), ["a"]);
        assert!(live.list_at(t0 + Duration::from_secs(25)).is_empty());
    }

    #[tokio::test]
    async fn the_api_lists_live_workers_and_serves_metrics() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;
        let (_dir, store) = crate::store::tests::sqlite_store().await;
        let status = Arc::new(crate::SinkStatus::new());
        status.workers().record(beat("w-1", 5000));
        let app = crate::router(crate::ApiState::new(store, status));
        let get = |uri: &'static str| {
            let app = app.clone();
            async move {
                let res = app
                    .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
                let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (ct, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let (ct, body) = get("/v1/workers").await;
        assert_eq!(ct, "application/json");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["workers"][0]["worker_id"], "w-1");
        assert_eq!(body["workers"][0]["capabilities"][0], "build");
        let (ct, text) = get("/metrics").await;
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        assert!(text.contains("\nchit_sink_live_workers 1\n"), "{text}");
    }

    #[test]
    fn the_table_has_a_line_per_worker() {
        let live = LiveWorkers::default();
        assert!(render_workers(&live.list()).starts_with("no live workers"));
        live.record(beat("host-12", 5000));
        let table = render_workers(&live.list());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("WORKER"), "{table}");
        assert!(lines[1].starts_with("host-12"), "{table}");
        assert!(lines[1].contains(" build "), "{table}");
        assert!(lines[1].contains(" 1/4 "), "{table}");
        assert!(lines[1].contains(" 10s "), "{table}");
        assert_eq!(short_duration(3725.0), "1h02m");
        assert_eq!(short_duration(90061.0), "1d01h");
    }

    #[test]
    fn a_stopping_worker_is_dropped_at_once() {
        let live = LiveWorkers::default();
        live.record(beat("a", 5000));
        assert_eq!(live.count(), 1);
        let mut last = beat("a", 5000);
        last.stopping = true;
        live.record(last);
        assert_eq!(live.count(), 0);
    }
}
