//! Idempotency keys: the same `idempotency_key` of one API key publishes
//! once and answers with the same task id, within [`IDEMPOTENCY_WINDOW`],
//! when requests race and across gateway restarts (docs/gateway.md).
//!
//! How:
//! 1. A request with a key **reserves** it in the store before publishing:
//!    an `INSERT ... ON CONFLICT DO NOTHING` of (API key, idempotency key)
//!    with a fresh task id, queued receipt id and a hash of the request.
//!    Exactly one of any number of racing requests inserts: it publishes,
//!    with those ids, then marks the record published.
//! 2. A request that finds the record: another request hash is a 409; a
//!    published record is answered with its ids, publishing nothing; an
//!    unpublished one is being published by the winner, so it waits
//!    (polling the record, at most a little over the publish deadline).
//! 3. A claim older than the publish deadline (and some slack) belongs to
//!    a gateway that died between reserving and marking: the next request
//!    takes the claim over (a compare-and-set, so only one does) and
//!    publishes **the same task id** again. If the dead gateway's publish
//!    did reach the broker, the task runs twice under one id and its chain
//!    shows both runs; nothing is lost.
//! 4. A publish that fails (no queue, broker blocked or down) gives the
//!    claim up at once, so the client's retry publishes, again with the
//!    same task id.
//!
//! Records older than the window are deleted when their key is used again
//! and hourly by [`prune`].

use crate::error::GatewayError;
use crate::state::IDEMPOTENCY_WINDOW;
use chrono::{DateTime, Utc};
use receipts_sink::Store;
use receipts_sink::store::{IdempotencyRecord, Reservation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Longest idempotency key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// How often a waiting request looks at the winner's record again.
const POLL: Duration = Duration::from_millis(25);

/// What a request with an idempotency key does.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Publish with the ticket's ids, then [`Ticket::published`] (or
    /// [`Ticket::release`] when the publish failed).
    Publish(Ticket),
    /// Already published: answer with these ids, publish nothing.
    Done {
        task_id: String,
        queued_receipt_id: String,
    },
}

/// The right to publish one idempotency key's task.
#[derive(Debug)]
pub(crate) struct Ticket {
    key_id: String,
    idempotency_key: String,
    pub(crate) task_id: String,
    pub(crate) queued_receipt_id: String,
    claimed_at: DateTime<Utc>,
    /// True when an earlier claim was taken over (a retry or a crash).
    pub(crate) again: bool,
}

impl Ticket {
    /// The broker confirmed the task.
    pub(crate) async fn published(self, store: &Store) -> Result<(), GatewayError> {
        store
            .mark_idempotency_published(&self.key_id, &self.idempotency_key, Utc::now())
            .await
            .map_err(|e| {
                GatewayError::Internal(format!("marking an idempotency key published: {e}"))
            })
    }

    /// The publish failed: give the claim up, so the next request with the
    /// key publishes at once (with the same task id).
    pub(crate) async fn release(self, store: &Store) {
        let released = store
            .claim_idempotency(
                &self.key_id,
                &self.idempotency_key,
                self.claimed_at,
                DateTime::<Utc>::UNIX_EPOCH,
            )
            .await;
        if let Err(e) = released {
            // The claim goes stale by itself after the publish deadline.
            tracing::warn!(error = %e, key_id = %self.key_id, "cannot release an idempotency claim");
        }
    }
}

/// Checks an idempotency key's shape.
pub(crate) fn check_key(key: &str) -> Result<(), GatewayError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(GatewayError::BadRequest(format!(
            "invalid idempotency key: give 1 to {MAX_KEY_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// The hash that tells two requests with one key apart: SHA-256 of the
/// request's JSON with every object's keys sorted, so the order of fields
/// does not matter and anything else does.
pub(crate) fn request_hash(request: &Value) -> String {
    let text = serde_json::to_string(&sorted(request)).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Decides what a request with `idempotency_key` does; `fresh` are the
/// (task id, queued receipt id) it would publish with if it is first.
pub(crate) async fn decide(
    store: &Store,
    key_id: &str,
    idempotency_key: &str,
    request_hash: &str,
    fresh: (String, String),
    publish_deadline: Duration,
) -> Result<Decision, GatewayError> {
    let store_error = |e: receipts_sink::SinkError| {
        tracing::error!(error = %e, key_id, "idempotency record unavailable");
        GatewayError::Unavailable("the idempotency store cannot be reached; try again".into())
    };
    // A winner that has not marked its record after this long is gone.
    let stale_after = publish_deadline + Duration::from_secs(2);
    let give_up = Instant::now() + stale_after + Duration::from_secs(1);
    loop {
        let now = Utc::now();
        let record = IdempotencyRecord {
            key_id: key_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            request_hash: request_hash.to_owned(),
            task_id: fresh.0.clone(),
            queued_receipt_id: fresh.1.clone(),
            created_at: now,
            claimed_at: now,
            published_at: None,
        };
        let window = chrono::Duration::from_std(IDEMPOTENCY_WINDOW).expect("a day fits");
        let mut existing = match store
            .reserve_idempotency(&record, now - window)
            .await
            .map_err(store_error)?
        {
            Reservation::Reserved => {
                return Ok(Decision::Publish(Ticket {
                    key_id: record.key_id,
                    idempotency_key: record.idempotency_key,
                    task_id: record.task_id,
                    queued_receipt_id: record.queued_receipt_id,
                    claimed_at: now,
                    again: false,
                }));
            }
            Reservation::Exists(existing) => existing,
        };
        loop {
            if existing.request_hash != request_hash {
                return Err(GatewayError::Conflict(format!(
                    "idempotency key {idempotency_key:?} was used with another request (task {}); \
                     use a new key for a new request",
                    existing.task_id
                )));
            }
            if existing.published_at.is_some() {
                return Ok(Decision::Done {
                    task_id: existing.task_id,
                    queued_receipt_id: existing.queued_receipt_id,
                });
            }
            let stale = chrono::Duration::from_std(stale_after).expect("seconds fit");
            let now = Utc::now();
            if existing.claimed_at + stale < now
                && store
                    .claim_idempotency(key_id, idempotency_key, existing.claimed_at, now)
                    .await
                    .map_err(store_error)?
            {
                tracing::info!(
                    key_id,
                    task_id = %existing.task_id,
                    "publishing an idempotency key's task again: its earlier publish did not finish"
                );
                return Ok(Decision::Publish(Ticket {
                    key_id: existing.key_id,
                    idempotency_key: existing.idempotency_key,
                    task_id: existing.task_id,
                    queued_receipt_id: existing.queued_receipt_id,
                    claimed_at: now,
                    again: true,
                }));
            }
            if Instant::now() > give_up {
                return Err(GatewayError::Unavailable(format!(
                    "the task of idempotency key {idempotency_key:?} is still being published; \
                     try again"
                )));
            }
            tokio::time::sleep(POLL).await;
            match store
                .idempotency_record(key_id, idempotency_key)
                .await
                .map_err(store_error)?
            {
                Some(r) => existing = r,
                // Expired and pruned meanwhile: reserve afresh.
                None => break,
            }
        }
    }
}

/// Deletes the records older than the window, hourly, for as long as the
/// task runs.
pub(crate) async fn prune(store: Store) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let window = chrono::Duration::from_std(IDEMPOTENCY_WINDOW).expect("a day fits");
        match store.prune_idempotency(Utc::now() - window).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot prune idempotency keys"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_ignores_field_order_and_nothing_else() {
        let a = json!({"task_type": "t", "payload": {"a": 1, "b": [1, {"y": 2, "x": 1}]}});
        let b = json!({"payload": {"b": [1, {"x": 1, "y": 2}], "a": 1}, "task_type": "t"});
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = json!({"task_type": "t", "payload": {"a": 1, "b": [{"y": 2, "x": 1}, 1]}});
        assert_ne!(request_hash(&a), request_hash(&c), "array order matters");
        let d = json!({"task_type": "t", "payload": {"a": 2, "b": [1, {"y": 2, "x": 1}]}});
        assert_ne!(request_hash(&a), request_hash(&d));
    }

    #[test]
    fn keys_have_a_length_and_no_control_characters() {
        assert!(check_key("order-42").is_ok());
        assert!(check_key(&"k".repeat(255)).is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(256)).is_err());
        assert!(check_key("a\nb").is_err());
    }
}
