//! One task to publish: its type, encoded payload and per-task settings.

use crate::error::{PublishError, PublishErrorKind};
use crate::validation;
use broker_topology::{ContentType, PayloadSchema, TaskEnvelope, names, schedule};
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::Value;
use std::time::Duration;

/// A task ready to publish.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Envelope: id, type, attempt, headers.
    pub envelope: TaskEnvelope,
    /// Encoded payload.
    pub body: Vec<u8>,
    /// Properties to publish beneath the envelope's, or `None` for a new
    /// task. A replay keeps the dead letter's this way: its content type
    /// (whatever it is), correlation id, reply-to and headers other than
    /// `x-chit-*` and the broker's.
    pub base: Option<BasicProperties>,
    /// How long no worker may take the task, from its publish: it waits in
    /// a delay queue of its capability meanwhile, and its first receipt is
    /// `scheduled` instead of `queued`. `None`, or zero, publishes it at
    /// once. Rounded up as [`schedule::delay_queue_ms`] says, never down;
    /// at most [`schedule::MAX_DELAY`].
    pub delay: Option<Duration>,
}

impl TaskSpec {
    /// A task whose payload is encoded with `content_type` (JSON or MessagePack).
    /// Fails with [`PublishErrorKind::InvalidPayload`] when the payload breaks
    /// the schema of a built-in capability (`command.execute`, ...); a
    /// capability of your own takes any payload.
    pub fn new(
        task_type: &str,
        payload: &Value,
        content_type: ContentType,
    ) -> Result<Self, PublishError> {
        names::validate_capability(task_type)
            .map_err(|e| PublishError::new(PublishErrorKind::InvalidTask, e.to_string()))?;
        validation::check_payload(task_type, payload)?;
        let body = content_type
            .encode(payload)
            .map_err(|e| PublishError::new(PublishErrorKind::InvalidTask, e.to_string()))?;
        let mut envelope = TaskEnvelope::new(task_type);
        envelope.content_type = content_type;
        Ok(TaskSpec {
            envelope,
            body,
            base: None,
            delay: None,
        })
    }

    /// A task whose payload is also checked against `schema`, the
    /// capability's own (from a config file, say), before the built-in
    /// schema of `task_type` if there is one: a payload must pass both, as
    /// a worker that validates against the capability's schema and then
    /// runs a built-in executor requires. With `None` it is [`TaskSpec::new`].
    /// Fails with [`PublishErrorKind::InvalidPayload`], every violation at
    /// its JSON pointer.
    pub fn with_schema(
        task_type: &str,
        payload: &Value,
        content_type: ContentType,
        schema: Option<&PayloadSchema>,
    ) -> Result<Self, PublishError> {
        names::validate_capability(task_type)
            .map_err(|e| PublishError::new(PublishErrorKind::InvalidTask, e.to_string()))?;
        if let Some(schema) = schema {
            validation::check_against(schema, payload)?;
        }
        TaskSpec::new(task_type, payload, content_type)
    }

    /// A JSON task.
    pub fn json(task_type: &str, payload: &Value) -> Result<Self, PublishError> {
        TaskSpec::new(task_type, payload, ContentType::Json)
    }

    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.envelope.task_id
    }

    /// The same task, held back for `delay` ([`TaskSpec::delay`]).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The milliseconds of the delay queue the task goes into, or `None`
    /// for a task published at once (no delay, or zero).
    pub fn delay_ms(&self) -> Result<Option<u64>, PublishError> {
        match self.delay {
            None => Ok(None),
            Some(d) if d.is_zero() => Ok(None),
            Some(d) => schedule::delay_queue_ms(d).map(Some).map_err(|e| {
                PublishError::new(
                    PublishErrorKind::InvalidTask,
                    format!("task {}: {e}", self.envelope.task_id),
                )
            }),
        }
    }

    /// Checks the envelope's values (capability, task id, attempt, max
    /// attempts, time limit) and the delay as publishing does, so a caller
    /// can find bad tasks before publishing any. The payload was checked by
    /// [`TaskSpec::new`].
    pub fn check(&self) -> Result<(), PublishError> {
        validation::check_envelope(&self.envelope)?;
        self.delay_ms().map(|_| ())
    }

    /// The properties the task is published with: the envelope's (id, type,
    /// timestamp, `x-chit-*` headers), over [`TaskSpec::base`] when given,
    /// whose content type then wins over the envelope's.
    pub fn properties(&self) -> BasicProperties {
        let fresh = self.envelope.to_properties();
        let Some(base) = &self.base else {
            return fresh;
        };
        let mut headers = FieldTable::default();
        for (k, v) in base.headers().iter().flat_map(|h| h.inner()) {
            let name = k.as_str();
            let broker = name == "x-delivery-count"
                || name == "x-death"
                || name.starts_with("x-first-death-")
                || name.starts_with("x-last-death-");
            if !broker && !name.starts_with("x-chit-") {
                headers.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in fresh.headers().iter().flat_map(|h| h.inner()) {
            headers.insert(k.clone(), v.clone());
        }
        let mut props = base
            .clone()
            .with_message_id(self.envelope.task_id.as_str().into())
            .with_type(self.envelope.task_type.as_str().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(ts) = fresh.timestamp() {
            props = props.with_timestamp(*ts);
        }
        if base.content_type().is_none() {
            props = props.with_content_type(self.envelope.content_type.as_str().into());
        }
        if let Some(reply_to) = fresh.reply_to() {
            props = props.with_reply_to(reply_to.clone());
        }
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;
    use serde_json::json;

    #[test]
    fn a_given_schema_and_the_built_in_one_both_apply() {
        let own = PayloadSchema::compile(
            "command.execute",
            json!({"type": "object", "required": ["output_path"]}),
        )
        .unwrap();
        let with = |payload: Value| {
            TaskSpec::with_schema("command.execute", &payload, ContentType::Json, Some(&own))
        };
        let pointers = |e: PublishError| match e.kind() {
            PublishErrorKind::InvalidPayload { violations } => violations
                .iter()
                .map(|v| (v.pointer.clone(), v.message.clone()))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        // The built-in schema passes it; the capability's own does not.
        let v = pointers(with(json!({"command": "true"})).unwrap_err());
        assert_eq!(
            v,
            [(
                String::new(),
                "\"output_path\" is a required property".into()
            )]
        );
        // The other way round.
        let v = pointers(with(json!({"output_path": "/tmp/o.json"})).unwrap_err());
        assert_eq!(
            v,
            [(String::new(), "\"command\" is a required property".into())]
        );
        assert!(with(json!({"command": "true", "output_path": "/tmp/o.json"})).is_ok());
        // Without one, the built-in check alone.
        let payload = json!({"command": "true"});
        assert!(
            TaskSpec::with_schema("command.execute", &payload, ContentType::Json, None).is_ok()
        );
    }

    #[test]
    fn a_delay_is_checked_and_zero_means_none() {
        let spec = TaskSpec::json("build", &json!({})).unwrap();
        assert_eq!(spec.delay_ms().unwrap(), None);
        let zero = spec.clone().with_delay(Duration::ZERO);
        assert_eq!(zero.delay_ms().unwrap(), None);
        let later = spec.clone().with_delay(Duration::from_micros(2_500));
        assert_eq!(later.delay_ms().unwrap(), Some(3));
        assert!(later.check().is_ok());
        let too_long = spec.with_delay(schedule::MAX_DELAY + Duration::from_secs(1));
        let err = too_long.check().unwrap_err();
        assert_eq!(err.kind(), &PublishErrorKind::InvalidTask);
        assert!(err.to_string().contains("longest"), "{err}");
    }

    #[test]
    fn a_task_on_base_properties_keeps_them_under_its_envelope() {
        let mut headers = FieldTable::default();
        headers.insert("x-app".into(), AMQPValue::LongString("kept".into()));
        headers.insert(
            "x-chit-timeout-ms".into(),
            AMQPValue::LongString("soon".into()),
        );
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let base = BasicProperties::default()
            .with_content_type("text/csv".into())
            .with_correlation_id("corr-1".into())
            .with_headers(headers);
        let mut spec = TaskSpec::json("build", &serde_json::json!({})).unwrap();
        spec.envelope.attempt = 4;
        spec.base = Some(base);
        let props = spec.properties();
        assert_eq!(props.content_type().as_ref().unwrap().as_str(), "text/csv");
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "corr-1");
        assert_eq!(
            props.message_id().as_ref().unwrap().as_str(),
            spec.task_id()
        );
        let h = props.headers().as_ref().unwrap().inner();
        assert_eq!(h.get("x-app"), Some(&AMQPValue::LongString("kept".into())));
        assert_eq!(h.get("x-chit-attempt"), Some(&AMQPValue::LongLongInt(4)));
        assert!(!h.contains_key("x-chit-timeout-ms") && !h.contains_key("x-death"));
        // Without a base, the envelope alone.
        spec.base = None;
        let props = spec.properties();
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(props.correlation_id(), &None);
    }
}
