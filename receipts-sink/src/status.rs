//! What the running sink shares with its HTTP API: the broker link's state
//! and running totals, updated by the consumer and read by `/healthz`; its
//! metrics (`/metrics`) and the live workers (`/v1/workers`).

use crate::metrics::SinkMetrics;
use crate::workers::LiveWorkers;
use broker_link::{LinkState, LinkStatus};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared between the consumer (writer) and the API (reader).
#[derive(Debug, Default)]
pub struct SinkStatus {
    broker: LinkStatus,
    inserted: AtomicU64,
    duplicates: AtomicU64,
    quarantined: AtomicU64,
    batches: AtomicU64,
    metrics: SinkMetrics,
    workers: LiveWorkers,
}

/// A snapshot of [`SinkStatus`] totals since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SinkTotals {
    /// Receipts newly stored.
    pub inserted: u64,
    /// Redelivered receipts that were already stored.
    pub duplicates: u64,
    /// Quarantine records stored.
    pub quarantined: u64,
    /// Batches committed.
    pub batches: u64,
}

impl SinkStatus {
    /// A status not yet connected, with zero totals.
    pub fn new() -> Self {
        SinkStatus::default()
    }

    /// A status that reports `link`'s state.
    pub fn with_link(link: LinkStatus) -> Self {
        SinkStatus {
            broker: link,
            ..SinkStatus::default()
        }
    }

    /// The broker link's state.
    pub fn broker(&self) -> LinkState {
        self.broker.get()
    }

    /// Sets the broker link's state (the link does this; tests may).
    pub fn set_broker(&self, state: LinkState) {
        self.broker.set(state);
    }

    /// Adds a committed batch to the totals.
    pub(crate) fn record(&self, stats: &crate::store::WriteStats) {
        self.inserted.fetch_add(stats.inserted, Ordering::Relaxed);
        self.duplicates
            .fetch_add(stats.duplicates, Ordering::Relaxed);
        self.quarantined
            .fetch_add(stats.quarantined, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// The sink's metrics.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }

    /// The workers whose heartbeats the sink has heard.
    pub fn workers(&self) -> &LiveWorkers {
        &self.workers
    }

    /// The totals so far.
    pub fn totals(&self) -> SinkTotals {
        SinkTotals {
            inserted: self.inserted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_shows_the_links_state() {
        let link = LinkStatus::default();
        let s = SinkStatus::with_link(link.clone());
        assert_eq!(s.broker(), LinkState::Idle);
        link.set(LinkState::Connected);
        assert_eq!(s.broker(), LinkState::Connected);
        link.set(LinkState::Reconnecting("lost".into()));
        assert_eq!(s.broker().as_str(), "reconnecting");
    }
}
