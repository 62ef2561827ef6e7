//! The sink's Prometheus metrics, served as `GET /metrics` (text format) on
//! its HTTP address.
//!
//! Counted where the consumer already handles a batch: receipts stored and
//! duplicates, batch sizes and commit latency, quarantined entries and
//! messages, store errors, and each receipt's ingest lag (its `created_at`
//! to the commit that stored it, so it includes clock skew between the
//! writer's host and the sink's). Live workers are counted from the
//! heartbeats when Prometheus scrapes. The names and their meanings are
//! listed in docs/operations.md ("Metrics").

use crate::store::WriteStats;
use broker_topology::Receipt;
use chrono::Utc;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::fmt;
use std::time::Duration;

/// Buckets of the batch size, in receipts (a batch closes at 1000 by default).
const BATCH_SIZES: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// Buckets of the commit latency, in seconds.
const COMMIT_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the ingest lag, in seconds: from a millisecond to an hour.
const LAG_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// Every metric of one sink. Cheap to clone: the metrics are shared.
#[derive(Clone)]
pub struct SinkMetrics {
    registry: Registry,
    stored: IntCounter,
    duplicates: IntCounter,
    batch_size: Histogram,
    commit: Histogram,
    quarantined_store: IntCounter,
    quarantined_queue: IntCounter,
    store_errors: IntCounter,
    ingest_lag: Histogram,
    live_workers: IntGauge,
    heartbeats: IntCounter,
}

impl fmt::Debug for SinkMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkMetrics")
            .field("stored", &self.stored.get())
            .field("store_errors", &self.store_errors.get())
            .finish_non_exhaustive()
    }
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics::new()
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

impl SinkMetrics {
    /// Every series at zero.
    pub fn new() -> Self {
        let quarantined = IntCounterVec::new(
            Opts::new(
                "chit_sink_quarantined_total",
                "Receipt entries kept in the store's quarantine table (destination=store) and \
                 receipt messages the store refused, rejected into the quarantine queue \
                 (destination=queue).",
            ),
            &["destination"],
        )
        .expect("valid metric");
        let m = SinkMetrics {
            registry: Registry::new(),
            stored: counter("chit_sink_receipts_stored_total", "Receipts newly stored."),
            duplicates: counter(
                "chit_sink_receipts_duplicate_total",
                "Receipts that arrived again and were already stored.",
            ),
            batch_size: histogram(
                "chit_sink_batch_size",
                "Receipts per committed batch.",
                BATCH_SIZES,
            ),
            commit: histogram(
                "chit_sink_commit_duration_seconds",
                "Time one store write took, up to its commit.",
                COMMIT_SECONDS,
            ),
            quarantined_store: quarantined.with_label_values(&["store"]),
            quarantined_queue: quarantined.with_label_values(&["queue"]),
            store_errors: counter(
                "chit_sink_store_errors_total",
                "Store writes that failed (each is retried).",
            ),
            ingest_lag: histogram(
                "chit_sink_ingest_lag_seconds",
                "Time from a receipt's created_at to the commit that stored it.",
                LAG_SECONDS,
            ),
            live_workers: IntGauge::new(
                "chit_sink_live_workers",
                "Workers whose last heartbeat has not expired.",
            )
            .expect("valid metric"),
            heartbeats: counter(
                "chit_sink_heartbeats_received_total",
                "Worker heartbeats received.",
            ),
        };
        for c in [
            Box::new(m.stored.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.duplicates.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.commit.clone()),
            Box::new(quarantined),
            Box::new(m.store_errors.clone()),
            Box::new(m.ingest_lag.clone()),
            Box::new(m.live_workers.clone()),
            Box::new(m.heartbeats.clone()),
        ] {
            m.registry.register(c).expect("unique metric");
        }
        m
    }

    /// A store write of `receipts` succeeded after `took`.
    pub(crate) fn written(&self, took: Duration, receipts: &[Receipt]) {
        self.commit.observe(took.as_secs_f64());
        let now = Utc::now();
        for r in receipts {
            let lag = (now - r.created_at).to_std().unwrap_or_default();
            self.ingest_lag.observe(lag.as_secs_f64());
        }
    }

    /// A store write failed.
    pub(crate) fn store_error(&self) {
        self.store_errors.inc();
    }

    /// A batch of `receipts` entries was committed and acked, `refused` of
    /// its messages rejected into the quarantine queue.
    pub(crate) fn committed(&self, stats: &WriteStats, receipts: usize, refused: usize) {
        self.stored.inc_by(stats.inserted);
        self.duplicates.inc_by(stats.duplicates);
        self.quarantined_store.inc_by(stats.quarantined);
        self.quarantined_queue.inc_by(refused as u64);
        self.batch_size.observe(receipts as f64);
    }

    /// A heartbeat arrived.
    pub(crate) fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    /// The exposition in Prometheus' text format, with `live_workers` workers live.
    pub fn render(&self, live_workers: usize) -> String {
        self.live_workers.set(live_workers as i64);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_topology::ReceiptType;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn a_committed_batch_moves_the_counters() {
        let m = SinkMetrics::new();
        let mut old = Receipt::new("t", "x", ReceiptType::Queued, vec![], 1);
        old.created_at = Utc::now() - chrono::Duration::seconds(2);
        m.written(Duration::from_millis(4), &[old]);
        m.store_error();
        let stats = WriteStats {
            receipts: 3,
            inserted: 2,
            duplicates: 1,
            tasks: 1,
            quarantined: 1,
        };
        m.committed(&stats, 4, 1);
        m.heartbeat();
        let text = m.render(2);
        assert_eq!(value(&text, "chit_sink_receipts_stored_total"), 2.0);
        assert_eq!(value(&text, "chit_sink_receipts_duplicate_total"), 1.0);
        assert_eq!(value(&text, "chit_sink_store_errors_total"), 1.0);
        assert_eq!(
            value(&text, r#"chit_sink_quarantined_total{destination="store"}"#),
            1.0
        );
        assert_eq!(
            value(&text, r#"chit_sink_quarantined_total{destination="queue"}"#),
            1.0
        );
        assert_eq!(value(&text, "chit_sink_batch_size_sum"), 4.0);
        assert_eq!(value(&text, "chit_sink_commit_duration_seconds_count"), 1.0);
        assert!(value(&text, "chit_sink_ingest_lag_seconds_sum") >= 2.0);
        assert_eq!(
            value(&text, r#"chit_sink_ingest_lag_seconds_bucket{le="1"}"#),
            0.0
        );
        assert_eq!(value(&text, "chit_sink_live_workers"), 2.0);
        assert_eq!(value(&text, "chit_sink_heartbeats_received_total"), 1.0);
    }
}
