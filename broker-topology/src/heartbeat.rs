//! Worker heartbeats: every running worker says, every few seconds, that it
//! is alive, what it serves and how busy it is.
//!
//! A heartbeat is one message on the topic exchange
//! [`crate::names::EVENTS_EXCHANGE`], routing key
//! [`crate::names::HEARTBEAT_ROUTING_KEY`], its body a [`Heartbeat`] in JSON
//! (or MessagePack, by `content_type`). Nothing is stored on the broker: a
//! listener binds a queue of its own while it runs, and sees the heartbeats
//! sent from then on. A worker is live while its last heartbeat is younger
//! than [`Heartbeat::expires_after`]: [`MISSED_HEARTBEATS`] intervals.

use crate::codec::ContentType;
use crate::error::Error;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often chit's workers send a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Heartbeats a worker may miss before listeners count it gone: with the
/// default interval, a worker that stops sending drops out after 15 s.
pub const MISSED_HEARTBEATS: u32 = 3;

/// One worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker's id, as in its receipts (`hostname-pid` by default).
    pub worker_id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    #[serde(default)]
    pub pid: u32,
    /// The capabilities (task types) it consumes.
    pub capabilities: Vec<String>,
    /// Tasks it holds right now: accepted and not yet settled.
    pub in_flight: u64,
    /// Tasks it runs at once at most.
    #[serde(default)]
    pub concurrency: u64,
    /// chit's version (or the client's own, for another implementation).
    pub version: String,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// Seconds since it started.
    pub uptime_secs: f64,
    /// When this heartbeat was sent, by the worker's clock.
    pub sent_at: DateTime<Utc>,
    /// Milliseconds until the worker's next heartbeat.
    pub interval_ms: u64,
    /// True on the last heartbeat of a worker that stops cleanly: listeners
    /// drop it at once instead of waiting for it to expire.
    #[serde(default)]
    pub stopping: bool,
}

impl Heartbeat {
    /// The body, in JSON.
    pub fn encode(&self) -> Vec<u8> {
        ContentType::Json
            .encode(self)
            .expect("a heartbeat always serialises to JSON")
    }

    /// Reads a body in the encoding its `content_type` names (JSON when
    /// there is none).
    pub fn decode(content_type: Option<&str>, body: &[u8]) -> Result<Heartbeat, Error> {
        ContentType::from_property(content_type)?.decode(body)
    }

    /// How long after this heartbeat, without another, the worker counts as
    /// gone: [`MISSED_HEARTBEATS`] of its intervals (one interval at least
    /// 1 s, so a zero does not make a worker vanish at once).
    pub fn expires_after(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1000)) * MISSED_HEARTBEATS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat() -> Heartbeat {
        let now = Utc::now();
        Heartbeat {
            worker_id: "host-1".into(),
            host: "host".into(),
            pid: 1,
            capabilities: vec!["command.execute".into()],
            in_flight: 2,
            concurrency: 4,
            version: "0.1.0".into(),
            started_at: now,
            uptime_secs: 1.5,
            sent_at: now,
            interval_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
            stopping: false,
        }
    }

    #[test]
    fn a_heartbeat_round_trips_in_json_and_msgpack() {
        let b = beat();
        assert_eq!(Heartbeat::decode(None, &b.encode()).unwrap(), b);
        let packed = ContentType::MsgPack.encode(&b).unwrap();
        assert_eq!(
            Heartbeat::decode(Some("application/msgpack"), &packed).unwrap(),
            b
        );
        let json: serde_json::Value = serde_json::from_slice(&b.encode()).unwrap();
        assert_eq!(json["worker_id"], "host-1");
        assert_eq!(json["in_flight"], 2);
    }

    #[test]
    fn optional_fields_may_be_left_out_and_garbage_is_an_error() {
        let body = br#"{"worker_id":"w","host":"h","capabilities":[],"in_flight":0,
            "version":"x","started_at":"2026-01-01T00:00:00Z","uptime_secs":0,
            "sent_at":"2026-01-01T00:00:00Z","interval_ms":2000}"#;
        let b = Heartbeat::decode(Some("application/json"), body).unwrap();
        assert!(!b.stopping);
        assert_eq!(b.expires_after(), Duration::from_secs(6));
        assert!(Heartbeat::decode(None, b"{}").is_err());
        assert!(Heartbeat::decode(Some("text/plain"), &beat().encode()).is_err());
    }

    #[test]
    fn the_default_timeout_is_three_intervals() {
        assert_eq!(beat().expires_after(), Duration::from_secs(15));
        let mut zero = beat();
        zero.interval_ms = 0;
        assert_eq!(zero.expires_after(), Duration::from_secs(3));
    }
}
