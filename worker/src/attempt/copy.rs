//! The properties of the copies a worker publishes of a task: retries, dead
//! letters, interrupted attempts, and deliveries handed back unstarted.
//!
//! Every copy keeps what a foreign publisher set (content type, correlation
//! id, reply-to, its own headers) and drops the headers the broker adds. A
//! copy that starts a new attempt ([`republish_properties`]) also drops the
//! drain counters, and moves the headers chit could not read under
//! `x-chit-invalid-headers`, so a replay does not read them again as the
//! task's settings. A delivery handed back unstarted ([`hand_back_properties`])
//! is the same message again: it keeps its headers as they are and carries
//! its `x-delivery-count` forward, so the drain spends none of it.

use broker_topology::TaskEnvelope;
use broker_topology::envelope::{
    self, H_ATTEMPT, H_BACKOFF_MS, H_CARRIED_DELIVERIES, H_DELIVERY_COUNT, H_DRAIN_RETURNS,
    H_INVALID_HEADERS, H_LAST_ERROR, H_MAX_ATTEMPTS, H_PARENT_RECEIPT, H_POLLS, H_PROGRESS_OUTPUT,
    H_REPLAY_OF, H_TIMEOUT_MS, H_TRACEPARENT, H_TRACESTATE,
};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// Headers the broker adds (RabbitMQ 3.13 adds `x-last-death-*` too); a
/// copy is a new message and must not carry them.
fn is_broker_header(name: &str) -> bool {
    name == H_DELIVERY_COUNT
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// Integer headers chit reads into the envelope.
const INTEGER_HEADERS: [&str; 5] = [
    H_ATTEMPT,
    H_MAX_ATTEMPTS,
    H_BACKOFF_MS,
    H_TIMEOUT_MS,
    H_POLLS,
];
/// Text headers chit reads into the envelope (or writes, `x-chit-last-error`).
const TEXT_HEADERS: [&str; 6] = [
    H_PARENT_RECEIPT,
    H_PROGRESS_OUTPUT,
    H_REPLAY_OF,
    H_LAST_ERROR,
    H_TRACEPARENT,
    H_TRACESTATE,
];

/// Whether `name` is a header chit reads and this value is not one it can.
fn unreadable(headers: &FieldTable, name: &str) -> bool {
    if INTEGER_HEADERS.contains(&name) {
        match envelope::header_u64(headers, name) {
            Ok(v) => name == H_MAX_ATTEMPTS && v == Some(0),
            Err(_) => true,
        }
    } else if TEXT_HEADERS.contains(&name) {
        match envelope::header_string(headers, name) {
            Ok(Some(json)) if name == H_PROGRESS_OUTPUT => {
                serde_json::from_str::<serde_json::Value>(&json).is_err()
            }
            Ok(_) => false,
            Err(_) => true,
        }
    } else {
        false
    }
}

/// A new attempt's copy (retry, dead letter, interrupted attempt): the
/// original properties with the envelope's identity and chit headers on top.
/// Headers chit could not read go under `x-chit-invalid-headers`, as they
/// came; `last_error` becomes `x-chit-last-error`.
pub(crate) fn republish_properties(
    original: &BasicProperties,
    env: &TaskEnvelope,
    last_error: Option<&str>,
) -> BasicProperties {
    // `x-chit-max-attempts: 0` is read, and refused: the copy leaves it out.
    let fresh = if env.max_attempts == Some(0) {
        let mut env = env.clone();
        env.max_attempts = None;
        env.to_properties()
    } else {
        env.to_properties()
    };
    let mut headers = FieldTable::default();
    let mut invalid = FieldTable::default();
    if let Some(orig) = original.headers() {
        for (k, v) in orig.inner() {
            let name = k.as_str();
            if is_broker_header(name) || name == H_DRAIN_RETURNS || name == H_CARRIED_DELIVERIES {
                continue;
            }
            if unreadable(orig, name) {
                invalid.insert(k.clone(), v.clone());
            } else {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    if !invalid.inner().is_empty() {
        headers.insert(H_INVALID_HEADERS.into(), AMQPValue::FieldTable(invalid));
    }
    if let Some(chit) = fresh.headers() {
        for (k, v) in chit.inner() {
            headers.insert(k.clone(), v.clone());
        }
    }
    if let Some(e) = last_error {
        let e: String = e.chars().take(1000).collect();
        headers.insert(
            H_LAST_ERROR.into(),
            AMQPValue::LongString(LongString::from(e.as_str())),
        );
    }
    let mut props = original
        .clone()
        .with_message_id(env.task_id.as_str().into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if original.kind().is_none() {
        props = props.with_type(env.task_type.as_str().into());
    }
    if original.timestamp().is_none()
        && let Some(ts) = fresh.timestamp()
    {
        props = props.with_timestamp(*ts);
    }
    props
}

/// The counters a hand-back copy carries, read leniently: a value chit
/// cannot read counts as 0.
pub(crate) fn counter(properties: &BasicProperties, name: &str) -> u64 {
    properties
        .headers()
        .as_ref()
        .and_then(|h| envelope::header_u64(h, name).ok().flatten())
        .unwrap_or(0)
}

/// A delivery handed back unstarted: the same message, every property and
/// header as it came, less the broker's headers, with `x-chit-drain-returns`
/// one higher and `x-chit-carried-deliveries` holding the returns that
/// count toward the delivery limit so far.
pub(crate) fn hand_back_properties(original: &BasicProperties) -> BasicProperties {
    let returns = counter(original, H_DRAIN_RETURNS);
    let carried =
        counter(original, H_CARRIED_DELIVERIES).saturating_add(counter(original, H_DELIVERY_COUNT));
    let mut headers = FieldTable::default();
    if let Some(orig) = original.headers() {
        for (k, v) in orig.inner() {
            let name = k.as_str();
            if !is_broker_header(name) && name != H_DRAIN_RETURNS && name != H_CARRIED_DELIVERIES {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    let int = |v: u64| AMQPValue::LongLongInt(v.min(i64::MAX as u64) as i64);
    headers.insert(H_DRAIN_RETURNS.into(), int(returns.saturating_add(1)));
    if carried > 0 {
        headers.insert(H_CARRIED_DELIVERIES.into(), int(carried));
    }
    original.clone().with_delivery_mode(2).with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut h = FieldTable::default();
        for (k, v) in headers {
            h.insert((*k).into(), v.clone());
        }
        BasicProperties::default()
            .with_message_id("t1".into())
            .with_content_type("text/csv".into())
            .with_correlation_id("corr".into())
            .with_headers(h)
    }

    fn header(p: &BasicProperties, name: &str) -> Option<AMQPValue> {
        p.headers().as_ref().unwrap().inner().get(name).cloned()
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    #[test]
    fn a_dead_letter_moves_unreadable_chit_headers_aside_and_keeps_the_rest() {
        let original = props(&[
            (H_ATTEMPT, text("two")),
            (H_TIMEOUT_MS, text("soon")),
            (H_MAX_ATTEMPTS, AMQPValue::LongInt(0)),
            (
                H_TRACEPARENT,
                AMQPValue::ByteArray(b"00-ab".to_vec().into()),
            ),
            (H_BACKOFF_MS, text("250")),
            ("x-app", text("kept")),
            (H_DELIVERY_COUNT, AMQPValue::LongLongInt(2)),
            ("x-death", AMQPValue::FieldArray(Default::default())),
            (H_DRAIN_RETURNS, AMQPValue::LongLongInt(3)),
        ]);
        let parsed = TaskEnvelope::from_delivery(&original, "build", false);
        assert!(parsed.problem.is_some());
        let copy = republish_properties(&original, &parsed.envelope, Some("bad header"));
        let Some(AMQPValue::FieldTable(invalid)) = header(&copy, H_INVALID_HEADERS) else {
            panic!("no {H_INVALID_HEADERS}: {copy:?}")
        };
        let mut names: Vec<&str> = invalid.inner().keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [H_TRACEPARENT, H_ATTEMPT, H_MAX_ATTEMPTS, H_TIMEOUT_MS]
        );
        assert_eq!(invalid.inner().get(H_TIMEOUT_MS), Some(&text("soon")));
        // What chit writes is readable; what it could not read is gone.
        let again = TaskEnvelope::from_delivery(&copy, "build", false);
        // (The content type stays what it was, readable or not.)
        let problem = again.problem.map(|p| p.to_string()).unwrap_or_default();
        assert!(!problem.contains("header"), "{problem}");
        assert_eq!(again.envelope.attempt, 1);
        assert_eq!(again.envelope.timeout_ms, None);
        assert_eq!(again.envelope.backoff_ms, Some(250));
        assert_eq!(header(&copy, "x-app"), Some(text("kept")));
        assert_eq!(header(&copy, H_LAST_ERROR), Some(text("bad header")));
        for gone in [H_DELIVERY_COUNT, "x-death", H_DRAIN_RETURNS] {
            assert_eq!(header(&copy, gone), None, "{gone}");
        }
        assert_eq!(copy.content_type().as_ref().unwrap().as_str(), "text/csv");
        assert_eq!(copy.correlation_id().as_ref().unwrap().as_str(), "corr");
    }

    #[test]
    fn every_copy_keeps_reply_to_so_the_last_attempt_replies() {
        let original = props(&[]).with_reply_to("amq.gen-waiting".into());
        let env = TaskEnvelope::from_delivery(&original, "build", false).envelope;
        assert_eq!(env.reply_to.as_deref(), Some("amq.gen-waiting"));
        let mut next = env.clone();
        next.attempt = 2;
        for copy in [
            republish_properties(&original, &next, None),
            republish_properties(&original, &env, Some("dead")),
            hand_back_properties(&original),
        ] {
            assert_eq!(copy.reply_to(), original.reply_to());
        }
    }

    #[test]
    fn a_copy_of_a_clean_task_has_no_invalid_headers() {
        let original = props(&[(H_ATTEMPT, AMQPValue::LongInt(2))]);
        let env = TaskEnvelope::from_delivery(&original, "build", false).envelope;
        let copy = republish_properties(&original, &env, None);
        assert_eq!(header(&copy, H_INVALID_HEADERS), None);
        assert_eq!(header(&copy, H_ATTEMPT), Some(AMQPValue::LongLongInt(2)));
    }

    #[test]
    fn a_hand_back_is_the_same_message_with_its_returns_carried() {
        let original = props(&[
            (H_ATTEMPT, text("two")),
            ("x-app", text("kept")),
            (H_DELIVERY_COUNT, AMQPValue::LongLongInt(2)),
            (H_CARRIED_DELIVERIES, AMQPValue::LongLongInt(1)),
            (H_DRAIN_RETURNS, AMQPValue::LongLongInt(4)),
        ]);
        let copy = hand_back_properties(&original);
        assert_eq!(
            header(&copy, H_DRAIN_RETURNS),
            Some(AMQPValue::LongLongInt(5))
        );
        assert_eq!(
            header(&copy, H_CARRIED_DELIVERIES),
            Some(AMQPValue::LongLongInt(3))
        );
        assert_eq!(header(&copy, H_DELIVERY_COUNT), None);
        // Untouched otherwise, bad headers included: the next worker judges it.
        assert_eq!(header(&copy, H_ATTEMPT), Some(text("two")));
        assert_eq!(header(&copy, "x-app"), Some(text("kept")));
        assert_eq!(copy.message_id(), original.message_id());
        assert_eq!(copy.content_type(), original.content_type());

        let first = hand_back_properties(&BasicProperties::default());
        assert_eq!(
            header(&first, H_DRAIN_RETURNS),
            Some(AMQPValue::LongLongInt(1))
        );
        assert_eq!(header(&first, H_CARRIED_DELIVERIES), None);
        assert_eq!(first.message_id(), &None, "a bare message stays bare");
    }
}
