//! Dead letters the broker made itself, and the receipts that close their
//! chains.
//!
//! A worker that gives up on a task publishes the dead-letter copy and its
//! `dead_lettered` receipt itself. The broker also dead-letters a task, from
//! its task queue into the same exchange, when the task was handed out more
//! often than the queue's `x-delivery-limit` (every worker holding it died, or
//! a consumer kept rejecting it), and then nobody writes a receipt. Such a
//! copy carries the broker's `x-death` header. [`BrokerDeath`] reads it, and
//! [`broker_dead_lettered_receipt`] makes the missing receipt with an id
//! derived from the dead-lettering itself, so whoever writes it (the worker's
//! dead-letter watch, a retry of it) writes the same receipt, and `chit dlq`
//! can name it as the parent of a replay or a purge without looking it up.

use crate::envelope::TaskEnvelope;
use crate::names;
use crate::receipt::{Receipt, ReceiptType};
use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

/// The header in which the broker records each time it dead-lettered a message,
/// most recent first.
pub const H_DEATH: &str = "x-death";

/// The broker's most recent dead-lettering of a task out of its task queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDeath {
    /// Why: `delivery_limit`, `rejected`, `expired` or `maxlen`.
    pub reason: String,
    /// The queue the task was dead-lettered from.
    pub queue: String,
    /// How often it was dead-lettered from that queue for that reason.
    pub count: u64,
    /// When, in seconds since the epoch, if the broker said.
    pub time: Option<u64>,
}

impl BrokerDeath {
    /// The latest entry of `headers`' `x-death`, if the broker dead-lettered
    /// the message out of `capability`'s task queue. `None` for a copy a
    /// worker published (chit strips `x-death` from its copies) and for a
    /// death in any other queue, such as a delay queue's expiry.
    pub fn of_task(headers: &FieldTable, capability: &str) -> Option<BrokerDeath> {
        let AMQPValue::FieldArray(deaths) = headers.inner().get(H_DEATH)? else {
            return None;
        };
        let AMQPValue::FieldTable(latest) = deaths.as_slice().first()? else {
            return None;
        };
        let text = |key: &str| match latest.inner().get(key) {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        let number = |key: &str| match latest.inner().get(key) {
            Some(AMQPValue::Timestamp(v)) => Some(*v),
            Some(AMQPValue::LongLongInt(v)) => u64::try_from(*v).ok(),
            Some(AMQPValue::LongInt(v)) => u64::try_from(*v).ok(),
            Some(AMQPValue::LongUInt(v)) => Some(u64::from(*v)),
            _ => None,
        };
        let queue: String = text("queue")?;
        if queue != names::task_queue(capability) {
            return None;
        }
        Some(BrokerDeath {
            reason: text("reason").unwrap_or_else(|| "unknown".into()),
            queue,
            count: number("count").unwrap_or(1),
            time: number("time"),
        })
    }

    /// One line for a person: what the broker did and why.
    pub fn describe(&self) -> String {
        let why = match self.reason.as_str() {
            "delivery_limit" => {
                "handed out more often than its delivery limit without being settled \
                 (its workers died, or a consumer rejected it, each time)"
            }
            "rejected" => "a consumer rejected it without requeueing it",
            "expired" => "its message TTL ran out",
            "maxlen" => "its queue was over its length limit",
            _ => "for a reason chit does not know",
        };
        format!(
            "dead-lettered by the broker from {} ({}): {why}",
            self.queue, self.reason
        )
    }
}

/// The `dead_lettered` receipt of a task the broker dead-lettered: parent is
/// the last receipt the message names (`x-chit-parent-receipt-id`: its
/// `queued` or `retry_scheduled` receipt), time is the broker's, and the id
/// is derived from the task and the dead-lettering, so writing it twice
/// stores it once.
pub fn broker_dead_lettered_receipt(env: &TaskEnvelope, death: &BrokerDeath) -> Receipt {
    let parent = env.parent_receipt_id.clone();
    let id = derived_receipt_id(&[
        "dead_lettered",
        &env.task_id,
        parent.as_deref().unwrap_or(""),
        &death.queue,
        &death.reason,
        &death.time.map(|t| t.to_string()).unwrap_or_default(),
        &death.count.to_string(),
    ]);
    let mut receipt = Receipt::new(
        env.task_id.clone(),
        env.task_type.clone(),
        ReceiptType::DeadLettered,
        parent.into_iter().collect(),
        env.attempt,
    )
    .with_id(id)
    .with_body(json!({
        "error": death.describe(),
        "reason": death.reason,
        "queue": names::dead_letter_queue(&env.task_type),
        "attempts": env.attempt,
        "dead_lettered_by": "broker",
        "from_queue": death.queue,
    }));
    // The task's trace, as it came: no span of the watch's own.
    if let Some(trace) = env
        .traceparent
        .as_deref()
        .and_then(crate::TraceContext::parse)
    {
        receipt.set_trace(trace, false);
    }
    if let Some(at) = death
        .time
        .and_then(|t| i64::try_from(t).ok())
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
    {
        receipt.created_at = at;
    }
    receipt
}

/// A receipt id that depends only on `parts`: a UUID (version 8) made of
/// their 128-bit FNV-1a hash. Stable across builds and platforms.
pub fn derived_receipt_id(parts: &[&str]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            hash ^= u128::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    uuid::Builder::from_custom_bytes(hash.to_be_bytes())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn death(queue: &str, reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from(queue)),
        );
        t.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        t.insert("count".into(), AMQPValue::LongLongInt(1));
        t.insert("time".into(), AMQPValue::Timestamp(1_767_225_600));
        AMQPValue::FieldTable(t)
    }

    fn headers(deaths: Vec<AMQPValue>) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(
            H_DEATH.into(),
            AMQPValue::FieldArray(FieldArray::from(deaths)),
        );
        h
    }

    #[test]
    fn only_the_latest_death_in_the_task_queue_counts() {
        let h = headers(vec![
            death("chit.task.x", "delivery_limit"),
            death("chit.wait.1000.x", "expired"),
        ]);
        let d = BrokerDeath::of_task(&h, "x").unwrap();
        assert_eq!(d.reason, "delivery_limit");
        assert_eq!(d.time, Some(1_767_225_600));
        // A retry that expired out of a delay queue is not a dead letter.
        let h = headers(vec![death("chit.wait.1000.x", "expired")]);
        assert_eq!(BrokerDeath::of_task(&h, "x"), None);
        // Nor is a worker's copy, which has no x-death.
        assert_eq!(BrokerDeath::of_task(&FieldTable::default(), "x"), None);
        // Nor a death in the queue of a capability with a longer name.
        let h = headers(vec![death("chit.task.x.y", "rejected")]);
        assert_eq!(BrokerDeath::of_task(&h, "x"), None);
    }

    #[test]
    fn the_receipt_is_the_same_whoever_writes_it() {
        let h = headers(vec![death("chit.task.x", "delivery_limit")]);
        let d = BrokerDeath::of_task(&h, "x").unwrap();
        let mut env = TaskEnvelope::new("x");
        env.task_id = "t1".into();
        env.parent_receipt_id = Some("q1".into());
        env.attempt = 2;
        let a = broker_dead_lettered_receipt(&env, &d);
        let b = broker_dead_lettered_receipt(&env, &d);
        assert_eq!(a, b);
        assert_eq!(a.receipt_type, ReceiptType::DeadLettered);
        assert_eq!(a.parent_receipt_ids, ["q1"]);
        assert_eq!(a.attempt, 2);
        assert_eq!(a.body["reason"], "delivery_limit");
        assert_eq!(a.body["queue"], "chit.dead.x");
        assert!(uuid::Uuid::parse_str(&a.receipt_id).is_ok());
        env.task_id = "t2".into();
        assert_ne!(
            broker_dead_lettered_receipt(&env, &d).receipt_id,
            a.receipt_id
        );
    }

    #[test]
    fn derived_ids_do_not_run_parts_together() {
        assert_ne!(
            derived_receipt_id(&["ab", "c"]),
            derived_receipt_id(&["a", "bc"])
        );
    }
}
