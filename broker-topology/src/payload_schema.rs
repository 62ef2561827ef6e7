//! Payload schemas: which payloads a capability accepts, as JSON Schemas
//! (draft 2020-12), and the check of a payload against one.
//!
//! The built-in capabilities' schemas are files in `broker-topology/schemas/`
//! (`<capability>.json`), so a client in another language can read them too;
//! [`PayloadSchema::builtin`] gives them compiled. Each describes exactly what
//! that capability's executor in `worker/src/executors/` accepts. A capability
//! chit does not ship has no schema here, and any payload passes.
//!
//! [`PayloadSchema::compile`] takes any other schema, for capabilities that
//! bring their own. [`PayloadSchema::check`] lists every violation, each with
//! the JSON pointer of the offending value ([`Violation`]), so a producer can
//! refuse a task before publishing it and a worker can refuse it on arrival
//! with the same words.

use crate::error::{Error, ErrorKind};
use serde_json::Value;
use std::fmt;
use std::sync::LazyLock;

/// The schema of `command.execute` payloads (`schemas/command.execute.json`).
pub const COMMAND_EXECUTE: &str = include_str!("../schemas/command.execute.json");
/// The schema of `noop` payloads (`schemas/noop.json`): anything.
pub const NOOP: &str = include_str!("../schemas/noop.json");

/// The schema of `http.request` payloads (`schemas/http.request.json`).
pub const HTTP_REQUEST: &str = include_str!("../schemas/http.request.json");
/// The schemas of the file tools' payloads (`schemas/file.*.json`).
pub const FILE_READ: &str = include_str!("../schemas/file.read.json");
/// See [`FILE_READ`].
pub const FILE_WRITE: &str = include_str!("../schemas/file.write.json");
/// See [`FILE_READ`].
pub const FILE_EDIT: &str = include_str!("../schemas/file.edit.json");
/// See [`FILE_READ`].
pub const FILE_GREP: &str = include_str!("../schemas/file.grep.json");
/// See [`FILE_READ`].
pub const FILE_FIND: &str = include_str!("../schemas/file.find.json");
/// See [`FILE_READ`].
pub const FILE_LIST: &str = include_str!("../schemas/file.list.json");
/// The schema of `sql.query` payloads (`schemas/sql.query.json`).
pub const SQL_QUERY: &str = include_str!("../schemas/sql.query.json");

/// The built-in capabilities and the text of their payload schemas.
pub const BUILTIN: &[(&str, &str)] = &[
    ("command.execute", COMMAND_EXECUTE),
    ("noop", NOOP),
    ("http.request", HTTP_REQUEST),
    ("file.read", FILE_READ),
    ("file.write", FILE_WRITE),
    ("file.edit", FILE_EDIT),
    ("file.grep", FILE_GREP),
    ("file.find", FILE_FIND),
    ("file.list", FILE_LIST),
    ("sql.query", SQL_QUERY),
];

/// At most this many violations are listed in an error's message.
const LISTED: usize = 10;

/// One way a payload breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the offending value; empty for the payload itself.
    pub pointer: String,
    /// What is wrong with it, e.g. `"command" is a required property`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "payload"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

/// A compiled payload schema of one capability.
pub struct PayloadSchema {
    capability: String,
    schema: Value,
    validator: jsonschema::Validator,
}

impl fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadSchema")
            .field("capability", &self.capability)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

static BUILTINS: LazyLock<Vec<PayloadSchema>> = LazyLock::new(|| {
    BUILTIN
        .iter()
        .map(|(capability, text)| {
            let schema = serde_json::from_str(text).expect("a built-in schema is JSON");
            PayloadSchema::compile(capability, schema).expect("a built-in schema compiles")
        })
        .collect()
});

impl PayloadSchema {
    /// Compiles `schema` (draft 2020-12 unless its `$schema` says otherwise)
    /// as the payload schema of `capability`. Fails with
    /// [`ErrorKind::BadSchema`] when it is not a valid schema. References
    /// outside the schema itself are not fetched.
    pub fn compile(capability: &str, schema: Value) -> Result<Self, Error> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .map_err(|e| {
                Error::new(
                    ErrorKind::BadSchema(capability.to_owned()),
                    format!("the payload schema of {capability} is not a valid JSON Schema: {e}"),
                )
            })?;
        Ok(PayloadSchema {
            capability: capability.to_owned(),
            schema,
            validator,
        })
    }

    /// The schema of a built-in capability; `None` for any other.
    pub fn builtin(capability: &str) -> Option<&'static PayloadSchema> {
        BUILTINS.iter().find(|s| s.capability == capability)
    }

    /// The capability this schema is for.
    pub fn capability(&self) -> &str {
        &self.capability
    }

    /// The schema as JSON.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Every way `payload` breaks the schema; empty when it is valid.
    pub fn violations(&self, payload: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(payload)
            .map(|e| Violation {
                pointer: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            })
            .collect()
    }

    /// Checks `payload`. The error, of kind [`ErrorKind::InvalidPayload`],
    /// carries every violation and names up to ten in its message:
    /// `invalid command.execute payload: /timeout_secs: 0 is less than or
    /// equal to the minimum of 0`.
    pub fn check(&self, payload: &Value) -> Result<(), Error> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let violations = self.violations(payload);
        let mut message = format!("invalid {} payload: ", self.capability);
        for (i, v) in violations.iter().take(LISTED).enumerate() {
            if i > 0 {
                message.push_str("; ");
            }
            message.push_str(&v.to_string());
        }
        if violations.len() > LISTED {
            message.push_str(&format!("; and {} more", violations.len() - LISTED));
        }
        Err(Error::new(ErrorKind::InvalidPayload(violations), message))
    }
}

/// Checks `payload` against the built-in schema of `capability`; any payload
/// of a capability without one passes.
pub fn check_builtin(capability: &str, payload: &Value) -> Result<(), Error> {
    match PayloadSchema::builtin(capability) {
        Some(schema) => schema.check(payload),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command() -> &'static PayloadSchema {
        PayloadSchema::builtin("command.execute").unwrap()
    }

    fn violations(payload: Value) -> Vec<Violation> {
        match command().check(&payload) {
            Ok(()) => panic!("{payload} passed"),
            Err(e) => match e.kind() {
                ErrorKind::InvalidPayload(v) => v.clone(),
                other => panic!("{other:?}"),
            },
        }
    }

    #[test]
    fn every_builtin_schema_compiles_and_has_a_capability_name() {
        for (capability, _) in BUILTIN {
            crate::names::validate_capability(capability).unwrap();
            assert_eq!(
                PayloadSchema::builtin(capability).unwrap().capability(),
                *capability
            );
        }
        assert!(PayloadSchema::builtin("my.own.capability").is_none());
        assert!(check_builtin("my.own.capability", &json!("anything")).is_ok());
    }

    /// The payloads of the command executor's tests and of the integration
    /// tests, which the worker runs.
    #[test]
    fn command_execute_accepts_what_the_worker_runs() {
        for payload in [
            json!({"command": "echo hi"}),
            json!({"command": "echo hi", "output_path": "/tmp/hi.json"}),
            json!({
                "command": "echo \"$GREETING\" | tr a-z A-Z; echo oops >&2",
                "env": {"GREETING": "hello"},
                "output_path": "/tmp/sub/out.json",
            }),
            json!({
                "command": "sh",
                "args": ["-c", "pwd; cat"],
                "stdin": "from stdin",
                "working_dir": "/tmp",
                "output_path": "/tmp/o.json",
            }),
            json!({"command": "/no/such/program", "args": []}),
            json!({"command": "sleep 30", "timeout_secs": 0.5}),
            json!({"command": "x", "timeout_secs": 1}),
            json!({"command": "x", "timeout_secs": 1.5}),
            json!({"command": "sleep 0.3", "timeout_secs": 0.05}),
            // serde reads null as "not given" for the optional fields.
            json!({"command": "x", "args": null, "working_dir": null, "stdin": null,
                   "output_path": null, "timeout_secs": null}),
            json!({"command": "x", "env": {}}),
        ] {
            assert!(command().check(&payload).is_ok(), "{payload}");
        }
    }

    #[test]
    fn command_execute_rejects_what_the_worker_refuses_and_says_where() {
        let v = violations(json!({"cmd": "echo hi"}));
        assert!(
            v.contains(&Violation {
                pointer: String::new(),
                message: "\"command\" is a required property".into()
            }),
            "{v:?}"
        );
        assert!(v.iter().any(|v| v.message.contains("'cmd'")), "{v:?}");
        let v = violations(json!("just a string"));
        assert_eq!(v[0].pointer, "");
        assert!(v[0].message.contains("is not of type \"object\""), "{v:?}");
        for (payload, pointer) in [
            (json!({"command": ""}), "/command"),
            (json!({"command": "   "}), "/command"),
            (json!({"command": 3}), "/command"),
            (json!({"command": null}), "/command"),
            (json!({"command": "x", "timeout_secs": 0}), "/timeout_secs"),
            (json!({"command": "x", "timeout_secs": -1}), "/timeout_secs"),
            (
                json!({"command": "x", "timeout_secs": "1"}),
                "/timeout_secs",
            ),
            (
                json!({"command": "x", "timeout_secs": 1e20}),
                "/timeout_secs",
            ),
            (json!({"command": "x", "output_path": ""}), "/output_path"),
            (json!({"command": "x", "args": [1]}), "/args/0"),
            (json!({"command": "x", "args": "-l"}), "/args"),
            (json!({"command": "x", "env": null}), "/env"),
            (json!({"command": "x", "env": {"A": 1}}), "/env/A"),
            (json!({"command": "x", "stdin": 5}), "/stdin"),
            (json!({"command": "x", "colour": 1}), ""),
        ] {
            let v = violations(payload.clone());
            assert!(v.iter().any(|v| v.pointer == pointer), "{payload}: {v:?}");
        }
    }

    #[test]
    fn the_error_names_the_capability_pointer_and_reason() {
        let err = command()
            .check(&json!({"command": "x", "timeout_secs": 0}))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("invalid command.execute payload: /timeout_secs: "),
            "{text}"
        );
        assert!(text.contains("minimum of 0"), "{text}");
        let text = command().check(&json!({})).unwrap_err().to_string();
        assert_eq!(
            text,
            "invalid command.execute payload: payload: \"command\" is a required property"
        );
    }

    #[test]
    fn noop_accepts_anything() {
        let noop = PayloadSchema::builtin("noop").unwrap();
        for payload in [json!({}), json!(null), json!("x"), json!({"any": [1, 2]})] {
            assert!(noop.check(&payload).is_ok(), "{payload}");
        }
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused() {
        let err = PayloadSchema::compile("mine", json!({"type": 12})).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::BadSchema("mine".into()));
        let own = PayloadSchema::compile("mine", json!({"type": "integer"})).unwrap();
        assert!(own.check(&json!(3)).is_ok());
        assert!(own.check(&json!("3")).is_err());
    }
}
