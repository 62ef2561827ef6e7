//! Delayed tasks: a task published into a delay queue of its capability
//! ([`names::delay_queue`], the queues retries wait in), which the broker
//! dead-letters into [`names::TASK_EXCHANGE`] under the capability's routing
//! key when the queue's message TTL is up. No consumer holds the task while
//! it waits, and nothing of chit's has to be running for it to come due.
//!
//! Its first receipt is `scheduled` instead of `queued`
//! ([`scheduled_body`] says what it holds); the worker's `accepted` names it
//! as parent, through the task's parent-receipt header, as it would name
//! `queued`.

use crate::error::{Error, ErrorKind};
use crate::names;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::Duration;

/// The longest delay a task can have: 24 days. RabbitMQ refuses an
/// `x-expires` over 2^32 - 1 ms (about 49.7 days), and a delay queue's is
/// `2 × delay + 60 s` ([`crate::Topology::delay_queue`]).
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 86_400);

/// From this delay on, delays are rounded up to whole seconds.
pub const WHOLE_SECONDS_FROM: Duration = Duration::from_secs(10);

/// The delay, in milliseconds, of the delay queue a task delayed by `delay`
/// goes into: `delay` rounded **up**, so a delayed task never runs early, to
/// the millisecond below [`WHOLE_SECONDS_FROM`] and to the whole second from
/// there on.
///
/// Why not the retry grid (`retry::quantize`)? It rounds down, by up to a
/// quarter, which is fine for a backoff and wrong for "run this at 15:00";
/// rounded up to the same grid, an hour's delay could come 15 minutes late.
/// Why not always the exact millisecond? Every distinct delay is a quorum
/// queue of its own (a Raft group on the broker), and callers that compute
/// delays from a clock ("until 15:00") would make a queue per task. Whole
/// seconds bound the lateness by a second (under 10% from 10 s on, and less
/// than the spread of hosts' clocks that `due_at` is read with), and keep
/// the queues to one per second of delay in use, each removed by its
/// `x-expires` once unused. Short delays stay exact, where a second would
/// matter.
///
/// Fails for a delay of zero (publish such a task as an ordinary one) or
/// over [`MAX_DELAY`].
pub fn delay_queue_ms(delay: Duration) -> Result<u64, Error> {
    if delay.is_zero() {
        return Err(bad_delay("a delay must be longer than zero".into()));
    }
    if delay > MAX_DELAY {
        return Err(bad_delay(format!(
            "a delay of {delay:?} is longer than the longest chit takes, {} days",
            MAX_DELAY.as_secs() / 86_400
        )));
    }
    let ms = delay.as_nanos().div_ceil(1_000_000) as u64;
    if delay < WHOLE_SECONDS_FROM {
        Ok(ms)
    } else {
        Ok(ms.div_ceil(1_000) * 1_000)
    }
}

fn bad_delay(message: String) -> Error {
    Error::new(ErrorKind::BadDelay, message)
}

/// The body of a delayed task's `scheduled` receipt: the delay it waits
/// (`delay_ms`, after rounding), when it is due (`due_at`, RFC 3339 UTC: the
/// time it was sent, which is the receipt's `created_at`, plus the delay)
/// and the delay queue it waits in (`queue`).
pub fn scheduled_body(capability: &str, delay_ms: u64, sent_at: DateTime<Utc>) -> Value {
    json!({
        "delay_ms": delay_ms,
        "due_at": due_at(sent_at, delay_ms).to_rfc3339_opts(SecondsFormat::Millis, true),
        "queue": names::delay_queue(capability, delay_ms),
    })
}

/// When a task sent at `sent_at` with a delay of `delay_ms` is due. The
/// broker counts the delay from when it stored the task, which is after it
/// was sent: the task is in its task queue at this time or a little later.
pub fn due_at(sent_at: DateTime<Utc>, delay_ms: u64) -> DateTime<Utc> {
    sent_at + chrono::Duration::milliseconds(delay_ms.min(i64::MAX as u64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_rounded_up_never_down() {
        let ms = |d| delay_queue_ms(d).unwrap();
        assert_eq!(ms(Duration::from_nanos(1)), 1);
        assert_eq!(ms(Duration::from_micros(1_500)), 2);
        assert_eq!(ms(Duration::from_millis(1_500)), 1_500);
        assert_eq!(ms(Duration::from_millis(9_999)), 9_999);
        assert_eq!(ms(Duration::from_secs(10)), 10_000);
        assert_eq!(ms(Duration::from_millis(10_001)), 11_000);
        assert_eq!(ms(Duration::from_secs(3_600)), 3_600_000);
        for d in [1u64, 7, 999, 9_999, 10_000, 12_345, 86_400_001] {
            let d = Duration::from_millis(d);
            let q = Duration::from_millis(ms(d));
            assert!(q >= d && q - d < Duration::from_secs(1), "{d:?} -> {q:?}");
        }
    }

    #[test]
    fn zero_and_too_long_delays_are_refused() {
        for bad in [Duration::ZERO, MAX_DELAY + Duration::from_millis(1)] {
            let e = delay_queue_ms(bad).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::BadDelay);
        }
        let longest = delay_queue_ms(MAX_DELAY).unwrap();
        // The delay queue's x-expires must stay within RabbitMQ's limit.
        assert!(longest * 2 + 60_000 <= u32::MAX as u64);
    }

    #[test]
    fn the_scheduled_body_says_when_the_task_is_due() {
        let sent = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = scheduled_body("noop", 30_000, sent);
        assert_eq!(body["delay_ms"], 30_000);
        assert_eq!(body["due_at"], "2026-01-02T03:04:35.250Z");
        assert_eq!(body["queue"], "chit.wait.30000.noop");
    }
}
