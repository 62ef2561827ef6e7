//! What the running sink shares with its HTTP API: the broker connection
//! state and running totals, updated by the consumer and read by `/healthz`.

use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// The consumer's connection to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    /// Connecting for the first time.
    Connecting,
    /// Connected and consuming.
    Connected,
    /// The connection was lost; reconnecting with backoff.
    Reconnecting,
    /// Shut down.
    Stopped,
}

impl BrokerState {
    /// The name shown by `/healthz`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Connecting => "connecting",
            BrokerState::Connected => "connected",
            BrokerState::Reconnecting => "reconnecting",
            BrokerState::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> BrokerState {
        match v {
            1 => BrokerState::Connected,
            2 => BrokerState::Reconnecting,
            3 => BrokerState::Stopped,
            _ => BrokerState::Connecting,
        }
    }
}

impl fmt::Display for BrokerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shared between the consumer (writer) and the API (reader); lock-free.
#[derive(Debug, Default)]
pub struct SinkStatus {
    broker: AtomicU8,
    inserted: AtomicU64,
    duplicates: AtomicU64,
    quarantined: AtomicU64,
    batches: AtomicU64,
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
    /// A status in the [`BrokerState::Connecting`] state with zero totals.
    pub fn new() -> Self {
        SinkStatus::default()
    }

    /// The broker connection state.
    pub fn broker(&self) -> BrokerState {
        BrokerState::from_u8(self.broker.load(Ordering::Relaxed))
    }

    /// Sets the broker connection state.
    pub fn set_broker(&self, state: BrokerState) {
        let v = match state {
            BrokerState::Connecting => 0,
            BrokerState::Connected => 1,
            BrokerState::Reconnecting => 2,
            BrokerState::Stopped => 3,
        };
        self.broker.store(v, Ordering::Relaxed);
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
    fn states_round_trip() {
        let s = SinkStatus::new();
        assert_eq!(s.broker(), BrokerState::Connecting);
        for st in [
            BrokerState::Connected,
            BrokerState::Reconnecting,
            BrokerState::Stopped,
            BrokerState::Connecting,
        ] {
            s.set_broker(st);
            assert_eq!(s.broker(), st);
        }
    }
}
