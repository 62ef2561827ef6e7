//! What the producer checks before a task goes out, so that a task no worker
//! could run is refused here, with a reason, instead of being dead-lettered
//! later:
//!
//! - the payload, against its capability's schema
//!   ([`broker_topology::payload_schema`]): the built-in capabilities have
//!   one, a capability of your own publishes any payload unless the caller
//!   gives its schema ([`TaskSpec::with_schema`](crate::TaskSpec::with_schema));
//! - the envelope's values: a capability name that can be routed, a task id,
//!   an attempt and a max-attempts of at least 1, a time limit of at least
//!   1 ms.
//!
//! [`TaskSpec::new`](crate::TaskSpec::new) checks the payload, which it has
//! before encoding; [`Producer::publish_many`](crate::Producer::publish_many)
//! checks every envelope before publishing any task.

use crate::error::{PublishError, PublishErrorKind};
use broker_topology::{ErrorKind, PayloadSchema, TaskEnvelope, names, payload_schema};
use serde_json::Value;

/// Checks `payload` against the schema of `task_type`, if it has one.
pub(crate) fn check_payload(task_type: &str, payload: &Value) -> Result<(), PublishError> {
    payload_schema::check_builtin(task_type, payload).map_err(publish_error)
}

/// Checks `payload` against a schema the caller brought (a capability's own,
/// from a config file).
pub(crate) fn check_against(schema: &PayloadSchema, payload: &Value) -> Result<(), PublishError> {
    schema.check(payload).map_err(publish_error)
}

fn publish_error(e: broker_topology::Error) -> PublishError {
    let kind = match e.kind() {
        ErrorKind::InvalidPayload(violations) => PublishErrorKind::InvalidPayload {
            violations: violations.clone(),
        },
        _ => PublishErrorKind::InvalidTask,
    };
    PublishError::new(kind, e.to_string())
}

/// Checks the values of an envelope about to be published.
pub(crate) fn check_envelope(env: &TaskEnvelope) -> Result<(), PublishError> {
    let invalid = |message: String| Err(PublishError::new(PublishErrorKind::InvalidTask, message));
    if let Err(e) = names::validate_capability(&env.task_type) {
        return invalid(e.to_string());
    }
    if env.task_id.is_empty() {
        return invalid("the task id is empty".into());
    }
    if env.attempt == 0 {
        return invalid(format!(
            "task {}: attempt must be 1 or more (attempts count from 1)",
            env.task_id
        ));
    }
    if env.max_attempts == Some(0) {
        return invalid(format!(
            "task {}: max attempts must be 1 or more (0 would dead-letter it unrun)",
            env.task_id
        ));
    }
    if env.timeout_ms == Some(0) {
        return invalid(format!(
            "task {}: the time limit must be 1 ms or more (0 would time it out at once)",
            env.task_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_builtin_payload_is_checked_and_an_unknown_capabilitys_is_not() {
        assert!(check_payload("command.execute", &json!({"command": "echo hi"})).is_ok());
        let err = check_payload("command.execute", &json!({"cmd": "echo hi"})).unwrap_err();
        let PublishErrorKind::InvalidPayload { violations } = err.kind() else {
            panic!("{:?}", err.kind());
        };
        assert!(
            violations
                .iter()
                .any(|v| v.pointer.is_empty() && v.message == "\"command\" is a required property")
        );
        assert!(!err.is_transient());
        assert!(check_payload("my.capability", &json!({"cmd": "echo hi"})).is_ok());
    }

    #[test]
    fn a_schema_the_caller_brings_is_checked_with_its_pointers() {
        let schema = PayloadSchema::compile(
            "resize",
            json!({"type": "object", "required": ["width"],
                   "properties": {"width": {"type": "integer", "minimum": 1}}}),
        )
        .unwrap();
        assert!(check_against(&schema, &json!({"width": 3})).is_ok());
        let err = check_against(&schema, &json!({"width": 0})).unwrap_err();
        let PublishErrorKind::InvalidPayload { violations } = err.kind() else {
            panic!("{:?}", err.kind());
        };
        assert_eq!(violations[0].pointer, "/width");
        assert!(
            err.to_string()
                .starts_with("invalid resize payload: /width: "),
            "{err}"
        );
    }

    #[test]
    fn impossible_envelope_values_are_refused() {
        let ok = TaskEnvelope::new("command.execute");
        assert!(check_envelope(&ok).is_ok());
        let mut cases: Vec<(TaskEnvelope, &str)> = Vec::new();
        let mut e = ok.clone();
        e.max_attempts = Some(0);
        cases.push((e, "max attempts"));
        let mut e = ok.clone();
        e.timeout_ms = Some(0);
        cases.push((e, "time limit"));
        let mut e = ok.clone();
        e.attempt = 0;
        cases.push((e, "attempt"));
        let mut e = ok.clone();
        e.task_id.clear();
        cases.push((e, "task id"));
        let mut e = ok.clone();
        e.task_type = "has space".into();
        cases.push((e, "has space"));
        for (env, needle) in cases {
            let err = check_envelope(&env).unwrap_err();
            assert_eq!(err.kind(), &PublishErrorKind::InvalidTask);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let mut e = ok;
        e.max_attempts = Some(1);
        e.timeout_ms = Some(1);
        assert!(check_envelope(&e).is_ok());
    }
}
