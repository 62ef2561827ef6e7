//! How a task travels: AMQP properties plus a few `x-chit-*` headers.
//!
//! Only the body and the routing key are required. A task from a plain AMQP
//! client with no `message_id` and no headers still runs: chit gives it a task
//! id on first delivery and its chain starts at `accepted`.

use crate::codec::ContentType;
use crate::error::{Error, ErrorKind};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Header: attempt number of this delivery's task, starting at 1.
pub const H_ATTEMPT: &str = "x-chit-attempt";
/// Header: the receipt this delivery follows (`queued`, or `retry_scheduled`).
pub const H_PARENT_RECEIPT: &str = "x-chit-parent-receipt-id";
/// Header: total attempts allowed for this task (overrides the capability's setting).
pub const H_MAX_ATTEMPTS: &str = "x-chit-max-attempts";
/// Header: first retry delay in milliseconds (overrides the capability's setting).
pub const H_BACKOFF_MS: &str = "x-chit-backoff-ms";
/// Header: run-time limit in milliseconds for one attempt.
pub const H_TIMEOUT_MS: &str = "x-chit-timeout-ms";
/// Header set on replayed tasks: the id of the dead-lettered receipt it continues from.
pub const H_REPLAY_OF: &str = "x-chit-replay-of";
/// Header set by chit when it dead-letters a task itself: the last error.
pub const H_LAST_ERROR: &str = "x-chit-last-error";
/// W3C trace context.
pub const H_TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const H_TRACESTATE: &str = "tracestate";
/// Set by quorum queues on redelivery: how many times the message was returned.
pub const H_DELIVERY_COUNT: &str = "x-delivery-count";
/// Set by a stopping worker on the copy of a task it hands back unstarted:
/// how many times that happened to this message.
pub const H_DRAIN_RETURNS: &str = "x-chit-drain-returns";
/// Set with [`H_DRAIN_RETURNS`]: the returns that count toward the delivery
/// limit (`x-delivery-count`) which the message had before it was copied.
pub const H_CARRIED_DELIVERIES: &str = "x-chit-carried-deliveries";
/// Set on a dead-letter copy: the headers chit could not read, as they came.
pub const H_INVALID_HEADERS: &str = "x-chit-invalid-headers";
/// Set by a worker on the copy of a task whose run said it is not done yet
/// (an `in_progress` receipt): how many such runs the task has had.
pub const H_POLLS: &str = "x-chit-polls";
/// Set with [`H_POLLS`]: the `output` of the latest of those runs, as JSON
/// text, handed to the next run.
pub const H_PROGRESS_OUTPUT: &str = "x-chit-progress-output";
/// When the task was first published, in milliseconds since the epoch: the
/// start of its queue-to-start time. Written by [`TaskEnvelope::to_properties`]
/// and kept on every copy; read leniently (a bad value counts as missing).
pub const H_PUBLISHED_MS: &str = "x-chit-published-ms";

/// Everything chit reads from (or writes to) a task message, apart from the body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskEnvelope {
    /// `message_id`; chit-assigned when the publisher left it out.
    pub task_id: String,
    /// True when the publisher sent no `message_id` and chit made one up.
    pub task_id_assigned: bool,
    /// `type` property, else the routing key.
    pub task_type: String,
    /// Body encoding from `content_type`.
    pub content_type: ContentType,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Receipt that this delivery continues from.
    pub parent_receipt_id: Option<String>,
    /// Per-task limit on attempts.
    pub max_attempts: Option<u32>,
    /// Per-task first retry delay.
    pub backoff_ms: Option<u64>,
    /// Per-task run-time limit.
    pub timeout_ms: Option<u64>,
    /// Dead-lettered receipt this replay continues from.
    pub replay_of: Option<String>,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// Earlier deliveries of this message that were returned to the queue
    /// (crashes, nacks, lost connections): the broker's `x-delivery-count`.
    pub delivery_count: u32,
    /// The broker's redelivered flag.
    pub redelivered: bool,
    /// Publish time (seconds since the epoch), when the publisher set it.
    pub timestamp: Option<u64>,
    /// Runs of the task that ended `in_progress` so far ([`H_POLLS`]).
    pub polls: u32,
    /// The output of the latest of them ([`H_PROGRESS_OUTPUT`]).
    pub progress_output: Option<serde_json::Value>,
    /// First publish time in milliseconds since the epoch ([`H_PUBLISHED_MS`]).
    pub published_ms: Option<u64>,
    /// The AMQP `reply_to` property: a queue that wants the receipt that
    /// ends the task, sent through `chit.replies` once that receipt
    /// is confirmed. Kept on every copy, so the last attempt replies.
    pub reply_to: Option<String>,
}

/// A task envelope read from a delivery, with what could not be read.
#[derive(Debug)]
pub struct ParsedEnvelope {
    /// Always filled in, so even a broken delivery can be named in a receipt.
    pub envelope: TaskEnvelope,
    /// The first problem found, if any: the delivery must not run.
    pub problem: Option<Error>,
}

impl TaskEnvelope {
    /// A new first-attempt envelope for a task of `task_type` with a fresh UUIDv7 id.
    pub fn new(task_type: impl Into<String>) -> Self {
        TaskEnvelope {
            task_id: uuid::Uuid::now_v7().to_string(),
            task_type: task_type.into(),
            attempt: 1,
            ..TaskEnvelope::default()
        }
    }

    /// Reads a delivery's properties. Never fails: identity fields always get a
    /// value, and the first unreadable property or header is reported in
    /// [`ParsedEnvelope::problem`].
    pub fn from_delivery(
        props: &BasicProperties,
        routing_key: &str,
        redelivered: bool,
    ) -> ParsedEnvelope {
        let mut problem = None;
        let mut note = |e: Error| {
            if problem.is_none() {
                problem = Some(e);
            }
        };
        let (task_id, task_id_assigned) = match props.message_id() {
            Some(id) if !id.as_str().is_empty() => (id.as_str().to_owned(), false),
            _ => (uuid::Uuid::now_v7().to_string(), true),
        };
        let task_type = match props.kind() {
            Some(t) if !t.as_str().is_empty() => t.as_str().to_owned(),
            _ => routing_key.to_owned(),
        };
        let content_type =
            match ContentType::from_property(props.content_type().as_ref().map(|c| c.as_str())) {
                Ok(ct) => ct,
                Err(e) => {
                    note(e);
                    ContentType::Json
                }
            };
        let empty = FieldTable::default();
        let headers = props.headers().as_ref().unwrap_or(&empty);
        let mut int = |name: &str| match header_u64(headers, name) {
            Ok(v) => v,
            Err(e) => {
                note(e);
                None
            }
        };
        let attempt = int(H_ATTEMPT).unwrap_or(1).clamp(1, u32::MAX as u64) as u32;
        let max_attempts = int(H_MAX_ATTEMPTS).map(|v| v.min(u32::MAX as u64) as u32);
        let backoff_ms = int(H_BACKOFF_MS);
        let timeout_ms = int(H_TIMEOUT_MS);
        let delivery_count = int(H_DELIVERY_COUNT).unwrap_or(0).min(u32::MAX as u64) as u32;
        let polls = int(H_POLLS).unwrap_or(0).min(u32::MAX as u64) as u32;
        // Only for metrics: a bad value must not stop the task.
        let published_ms = header_u64(headers, H_PUBLISHED_MS).ok().flatten();
        let mut text = |name: &str| match header_string(headers, name) {
            Ok(v) => v,
            Err(e) => {
                note(e);
                None
            }
        };
        let parent_receipt_id = text(H_PARENT_RECEIPT);
        let replay_of = text(H_REPLAY_OF);
        let traceparent = text(H_TRACEPARENT);
        let tracestate = text(H_TRACESTATE);
        let progress_output =
            text(H_PROGRESS_OUTPUT).and_then(|json| match serde_json::from_str(&json) {
                Ok(v) => Some(v),
                Err(e) => {
                    note(Error::new(
                        ErrorKind::BadHeader(H_PROGRESS_OUTPUT.into()),
                        format!("header {H_PROGRESS_OUTPUT} must hold JSON text: {e}"),
                    ));
                    None
                }
            });
        if max_attempts == Some(0) {
            note(Error::new(
                ErrorKind::BadHeader(H_MAX_ATTEMPTS.into()),
                format!("header {H_MAX_ATTEMPTS} must be 1 or more"),
            ));
        }
        ParsedEnvelope {
            envelope: TaskEnvelope {
                task_id,
                task_id_assigned,
                task_type,
                content_type,
                attempt,
                parent_receipt_id,
                max_attempts,
                backoff_ms,
                timeout_ms,
                replay_of,
                traceparent,
                tracestate,
                delivery_count,
                redelivered,
                timestamp: *props.timestamp(),
                polls,
                progress_output,
                published_ms,
                reply_to: props
                    .reply_to()
                    .as_ref()
                    .map(|r| r.as_str())
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            },
            problem,
        }
    }

    /// The AMQP properties a task is published with: persistent, with its id,
    /// type, content type, timestamp and chit headers.
    pub fn to_properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            H_ATTEMPT.into(),
            AMQPValue::LongLongInt(self.attempt as i64),
        );
        let mut put_str = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                headers.insert(
                    name.into(),
                    AMQPValue::LongString(LongString::from(v.as_str())),
                );
            }
        };
        put_str(H_PARENT_RECEIPT, &self.parent_receipt_id);
        put_str(H_REPLAY_OF, &self.replay_of);
        put_str(H_TRACEPARENT, &self.traceparent);
        put_str(H_TRACESTATE, &self.tracestate);
        let mut put_int = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                headers.insert(
                    name.into(),
                    AMQPValue::LongLongInt(v.min(i64::MAX as u64) as i64),
                );
            }
        };
        put_int(H_MAX_ATTEMPTS, self.max_attempts.map(u64::from));
        put_int(H_BACKOFF_MS, self.backoff_ms);
        put_int(H_TIMEOUT_MS, self.timeout_ms);
        put_int(H_POLLS, Some(self.polls as u64).filter(|p| *p > 0));
        put_int(
            H_PUBLISHED_MS,
            Some(self.published_ms.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            })),
        );
        if let Some(output) = &self.progress_output {
            headers.insert(
                H_PROGRESS_OUTPUT.into(),
                AMQPValue::LongString(LongString::from(output.to_string().as_str())),
            );
        }
        let timestamp = self.timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        let props = BasicProperties::default()
            .with_message_id(ShortString::from(self.task_id.as_str()))
            .with_type(ShortString::from(self.task_type.as_str()))
            .with_content_type(ShortString::from(self.content_type.as_str()))
            .with_delivery_mode(2)
            .with_timestamp(timestamp)
            .with_headers(headers);
        match &self.reply_to {
            Some(queue) => props.with_reply_to(ShortString::from(queue.as_str())),
            None => props,
        }
    }
}

/// Reads an integer header, accepting every AMQP integer width and a decimal
/// string (some clients only send strings). Negative values are an error.
pub fn header_u64(headers: &FieldTable, name: &str) -> Result<Option<u64>, Error> {
    let Some(value) = headers.inner().get(name) else {
        return Ok(None);
    };
    let signed: Option<i128> = match value {
        AMQPValue::ShortShortInt(v) => Some(*v as i128),
        AMQPValue::ShortShortUInt(v) => Some(*v as i128),
        AMQPValue::ShortInt(v) => Some(*v as i128),
        AMQPValue::ShortUInt(v) => Some(*v as i128),
        AMQPValue::LongInt(v) => Some(*v as i128),
        AMQPValue::LongUInt(v) => Some(*v as i128),
        AMQPValue::LongLongInt(v) => Some(*v as i128),
        AMQPValue::Timestamp(v) => Some(*v as i128),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<i128>().ok()),
        AMQPValue::ShortString(s) => s.as_str().trim().parse::<i128>().ok(),
        AMQPValue::Void => return Ok(None),
        _ => None,
    };
    match signed {
        Some(v) if v >= 0 && v <= u64::MAX as i128 => Ok(Some(v as u64)),
        _ => Err(Error::new(
            ErrorKind::BadHeader(name.to_owned()),
            format!("header {name} must be a non-negative integer, got {value:?}"),
        )),
    }
}

/// Reads a text header (long or short string, UTF-8).
pub fn header_string(headers: &FieldTable, name: &str) -> Result<Option<String>, Error> {
    match headers.inner().get(name) {
        None | Some(AMQPValue::Void) => Ok(None),
        Some(AMQPValue::ShortString(s)) => Ok(Some(s.as_str().to_owned())),
        Some(AMQPValue::LongString(s)) => match std::str::from_utf8(s.as_bytes()) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(Error::new(
                ErrorKind::BadHeader(name.to_owned()),
                format!("header {name} is not valid UTF-8"),
            )),
        },
        Some(other) => Err(Error::new(
            ErrorKind::BadHeader(name.to_owned()),
            format!("header {name} must be a string, got {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_properties() {
        let mut env = TaskEnvelope::new("command.execute");
        env.parent_receipt_id = Some("r-queued".into());
        env.max_attempts = Some(3);
        env.timeout_ms = Some(1500);
        env.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        env.timestamp = Some(1_700_000_000);
        env.published_ms = Some(1_700_000_000_123);
        env.polls = 2;
        env.progress_output = Some(serde_json::json!({"done": 40, "of": 100}));
        env.reply_to = Some("amq.gen-reply".into());
        let props = env.to_properties();
        assert_eq!(
            props.reply_to().as_ref().map(|r| r.as_str()),
            Some("amq.gen-reply")
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        let parsed = TaskEnvelope::from_delivery(&props, "ignored", false);
        assert!(parsed.problem.is_none());
        assert_eq!(parsed.envelope, env);
    }

    #[test]
    fn the_publish_time_is_stamped_once_and_a_bad_one_is_ignored() {
        let env = TaskEnvelope::new("x");
        let props = env.to_properties();
        let stamped = TaskEnvelope::from_delivery(&props, "x", false).envelope;
        assert!(
            stamped
                .published_ms
                .is_some_and(|ms| ms > 1_700_000_000_000)
        );
        // A copy keeps the first publish time.
        let again = TaskEnvelope::from_delivery(&stamped.to_properties(), "x", false);
        assert_eq!(again.envelope.published_ms, stamped.published_ms);
        let mut headers = FieldTable::default();
        headers.insert(H_PUBLISHED_MS.into(), AMQPValue::LongString("soon".into()));
        let props = BasicProperties::default().with_headers(headers);
        let parsed = TaskEnvelope::from_delivery(&props, "x", false);
        assert!(parsed.problem.is_none());
        assert_eq!(parsed.envelope.published_ms, None);
    }

    #[test]
    fn a_bare_message_gets_an_identity() {
        let parsed =
            TaskEnvelope::from_delivery(&BasicProperties::default(), "command.execute", false);
        assert!(parsed.problem.is_none());
        let env = parsed.envelope;
        assert!(env.task_id_assigned);
        assert!(!env.task_id.is_empty());
        assert_eq!(env.task_type, "command.execute");
        assert_eq!(env.attempt, 1);
        assert_eq!(env.content_type, ContentType::Json);
    }

    #[test]
    fn bad_headers_are_named() {
        let mut headers = FieldTable::default();
        headers.insert(H_ATTEMPT.into(), AMQPValue::LongString("two".into()));
        let props = BasicProperties::default().with_headers(headers);
        let parsed = TaskEnvelope::from_delivery(&props, "x", false);
        let problem = parsed.problem.expect("a problem");
        assert_eq!(problem.kind(), &ErrorKind::BadHeader(H_ATTEMPT.into()));
        assert!(problem.to_string().contains(H_ATTEMPT));
    }

    #[test]
    fn a_progress_output_that_is_not_json_is_named() {
        let mut headers = FieldTable::default();
        headers.insert(
            H_PROGRESS_OUTPUT.into(),
            AMQPValue::LongString("{oops".into()),
        );
        let props = BasicProperties::default().with_headers(headers);
        let parsed = TaskEnvelope::from_delivery(&props, "x", false);
        let problem = parsed.problem.expect("a problem");
        assert_eq!(
            problem.kind(),
            &ErrorKind::BadHeader(H_PROGRESS_OUTPUT.into())
        );
        assert_eq!(parsed.envelope.polls, 0);
        assert_eq!(parsed.envelope.progress_output, None);
    }

    #[test]
    fn integer_headers_of_any_width_and_strings_are_read() {
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::ShortShortUInt(3));
        h.insert("b".into(), AMQPValue::LongInt(7));
        h.insert("c".into(), AMQPValue::LongString("42".into()));
        h.insert("d".into(), AMQPValue::LongInt(-1));
        assert_eq!(header_u64(&h, "a").unwrap(), Some(3));
        assert_eq!(header_u64(&h, "b").unwrap(), Some(7));
        assert_eq!(header_u64(&h, "c").unwrap(), Some(42));
        assert!(header_u64(&h, "d").is_err());
        assert_eq!(header_u64(&h, "missing").unwrap(), None);
    }
}
