//! The exec contract, without I/O: the task document a program reads on
//! stdin, and the result it writes on stdout.
//!
//! The names follow the worker contract of Conductor-style task runners, so
//! a program written for one runs here unchanged: the payload is
//! `inputData`, the result is `{status, output, logs, reason}`, an
//! in-progress result may ask for `callbackAfterSeconds`, and the previous
//! in-progress output comes back as `outputData`. docs/protocol.md has the
//! whole contract.

use crate::executor::TaskContext;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The task as the program reads it on stdin: `taskId`, `taskType`,
/// `attempt`, `pollCount`, `workerId`, `inputData` (the payload) and, when
/// an earlier run was in progress, `outputData` (that run's output).
pub(super) fn task_document(ctx: &TaskContext, payload: Value) -> Vec<u8> {
    let mut doc = json!({
        "taskId": ctx.task_id,
        "taskType": ctx.task_type,
        "attempt": ctx.attempt,
        "pollCount": ctx.polls,
        "workerId": ctx.worker_id,
        "inputData": payload,
    });
    if let Some(previous) = &ctx.previous_output {
        doc["outputData"] = previous.clone();
    }
    let mut bytes = serde_json::to_vec(&doc).expect("a JSON value serializes");
    bytes.push(b'\n');
    bytes
}

/// What the program says became of the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Done: a `success` receipt.
    Completed,
    /// Failed; retried as the task's retry policy allows.
    Failed,
    /// Failed in a way another attempt cannot fix: dead-lettered at once.
    FailedWithTerminalError,
    /// Not done: the task runs again after `callbackAfterSeconds`.
    InProgress,
}

impl Status {
    const NAMES: [(&'static str, Status); 4] = [
        ("COMPLETED", Status::Completed),
        ("FAILED", Status::Failed),
        (
            "FAILED_WITH_TERMINAL_ERROR",
            Status::FailedWithTerminalError,
        ),
        ("IN_PROGRESS", Status::InProgress),
    ];

    /// The name, as in the result.
    pub(super) fn as_str(self) -> &'static str {
        Status::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }

    /// A status name in any case.
    fn parse(name: &str) -> Option<Status> {
        Status::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
    }
}

/// A program's result, read from its stdout.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ProgramResult {
    pub(super) status: Status,
    /// `output` (or `outputData`); `null` when missing.
    pub(super) output: Value,
    /// `logs`, each entry a string.
    pub(super) logs: Vec<String>,
    /// `reason`, for a failure.
    pub(super) reason: Option<String>,
    /// `callbackAfterSeconds`, for an in-progress result.
    pub(super) callback_after: Option<Duration>,
}

/// Reads stdout as one JSON object holding a result. The error says what is
/// wrong, in words for the failure receipt.
pub(super) fn parse_result(stdout: &[u8]) -> Result<ProgramResult, String> {
    let mut values = serde_json::Deserializer::from_slice(stdout).into_iter::<Value>();
    let first = match values.next() {
        None => return Err("stdout is empty; expected one JSON object".into()),
        Some(Err(e)) => return Err(format!("stdout is not one JSON object: {e}")),
        Some(Ok(v)) => v,
    };
    match values.next() {
        None => {}
        Some(Ok(_)) => {
            return Err(
                "stdout is not one JSON object: more than one JSON value was written".into(),
            );
        }
        Some(Err(e)) => {
            return Err(format!(
                "stdout is not one JSON object: after the first value: {e}"
            ));
        }
    }
    let Value::Object(mut result) = first else {
        return Err(format!(
            "stdout is not one JSON object: it is {}",
            kind_of(&first)
        ));
    };
    let status = match result.get("status") {
        Some(Value::String(s)) => Status::parse(s).ok_or_else(|| {
            format!(
                "result field `status` is {s:?}; expected one of {}",
                Status::NAMES.map(|(n, _)| n).join(", ")
            )
        })?,
        None | Some(Value::Null) => return Err("result has no `status` field".into()),
        Some(other) => {
            return Err(format!(
                "result field `status` must be a string, not {}",
                kind_of(other)
            ));
        }
    };
    let output = result
        .remove("output")
        .filter(|v| !v.is_null())
        .or_else(|| result.remove("outputData"))
        .unwrap_or(Value::Null);
    let logs = match result.remove("logs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries
            .into_iter()
            .map(log_line)
            .collect::<Option<Vec<_>>>()
            .ok_or("result field `logs` must be an array of strings")?,
        Some(other) => {
            return Err(format!(
                "result field `logs` must be an array of strings, not {}",
                kind_of(&other)
            ));
        }
    };
    let reason = match result
        .remove("reason")
        .or_else(|| result.remove("reasonForIncompletion"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(format!(
                "result field `reason` must be a string, not {}",
                kind_of(&other)
            ));
        }
    };
    let callback_after = match result.get("callbackAfterSeconds") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64().filter(|s| s.is_finite() && *s >= 0.0) {
            Some(secs) => Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)),
            None => {
                return Err(format!(
                    "result field `callbackAfterSeconds` must be 0 or more, not {n}"
                ));
            }
        },
        Some(other) => {
            return Err(format!(
                "result field `callbackAfterSeconds` must be a number of seconds, not {}",
                kind_of(other)
            ));
        }
    };
    Ok(ProgramResult {
        status,
        output,
        logs,
        reason,
        callback_after,
    })
}

/// A log entry: a string, or an object with a string `log` (the shape some
/// task runners use for timed log lines).
fn log_line(entry: Value) -> Option<String> {
    match entry {
        Value::String(s) => Some(s),
        Value::Object(mut m) => match m.remove("log") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The receipt body of a result: `status`, `output`, `logs`, and the
/// program's `reason` when it gave one, beside the run's `summary`.
pub(super) fn receipt_body(result: &ProgramResult, summary: Value) -> Value {
    let mut body = Map::new();
    body.insert("status".into(), json!(result.status.as_str()));
    body.insert("output".into(), result.output.clone());
    body.insert("logs".into(), json!(result.logs));
    if let Some(reason) = &result.reason {
        body.insert("program_reason".into(), json!(reason));
    }
    if let Value::Object(summary) = summary {
        for (k, v) in summary {
            body.entry(k).or_insert(v);
        }
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TaskContext {
        TaskContext {
            task_id: "t1".into(),
            task_type: "greet".into(),
            attempt: 2,
            worker_id: "w1".into(),
            timeout: None,
            traceparent: None,
            polls: 0,
            previous_output: None,
        }
    }

    #[test]
    fn the_task_document_has_the_payload_as_input_data() {
        let doc: Value =
            serde_json::from_slice(&task_document(&ctx(), json!({"name": "Ada"}))).unwrap();
        assert_eq!(doc["inputData"]["name"], "Ada");
        assert_eq!(doc["taskId"], "t1");
        assert_eq!(doc["taskType"], "greet");
        assert_eq!(doc["attempt"], 2);
        assert_eq!(doc["pollCount"], 0);
        assert!(doc.get("outputData").is_none(), "no earlier run: {doc}");
        let later = TaskContext {
            polls: 2,
            previous_output: Some(json!({"step": 2})),
            ..ctx()
        };
        let doc: Value = serde_json::from_slice(&task_document(&later, json!(null))).unwrap();
        assert_eq!(doc["outputData"], json!({"step": 2}));
        assert_eq!(doc["pollCount"], 2);
    }

    #[test]
    fn a_result_is_read_with_its_fields() {
        let r = parse_result(
            br#"{"status": "COMPLETED", "output": {"message": "Hello Ada"}, "logs": ["one", {"log": "two", "createdTime": 1}]}
"#,
        )
        .unwrap();
        assert_eq!(r.status, Status::Completed);
        assert_eq!(r.output, json!({"message": "Hello Ada"}));
        assert_eq!(r.logs, ["one", "two"]);
        let r = parse_result(
            br#"{"status": "in_progress", "outputData": {"n": 1}, "callbackAfterSeconds": 0.5}"#,
        )
        .unwrap();
        assert_eq!(r.status, Status::InProgress);
        assert_eq!(r.output, json!({"n": 1}));
        assert_eq!(r.callback_after, Some(Duration::from_millis(500)));
        let r = parse_result(br#"{"status": "FAILED", "reason": "no name"}"#).unwrap();
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (Status::Failed, Some("no name"))
        );
        assert_eq!(r.output, Value::Null);
    }

    #[test]
    fn what_is_not_a_result_is_named() {
        for (stdout, says) in [
            (&b""[..], "stdout is empty"),
            (b"  \n", "stdout is empty"),
            (b"Hello", "not one JSON object"),
            (b"[1]", "it is an array"),
            (b"{\"status\":\"COMPLETED\"} {}", "more than one JSON value"),
            (b"{\"status\":\"COMPLETED\"} oops", "after the first value"),
            (b"{\"output\": 1}", "no `status`"),
            (b"{\"status\": \"DONE\"}", "expected one of COMPLETED"),
            (b"{\"status\": 1}", "`status` must be a string"),
            (
                b"{\"status\": \"FAILED\", \"logs\": \"x\"}",
                "`logs` must be",
            ),
            (b"{\"status\": \"FAILED\", \"logs\": [1]}", "`logs` must be"),
            (
                b"{\"status\": \"FAILED\", \"reason\": 7}",
                "`reason` must be",
            ),
            (
                b"{\"status\": \"IN_PROGRESS\", \"callbackAfterSeconds\": -1}",
                "`callbackAfterSeconds` must be 0 or more",
            ),
        ] {
            let err = parse_result(stdout).unwrap_err();
            assert!(
                err.contains(says),
                "{:?}: {err}",
                String::from_utf8_lossy(stdout)
            );
        }
    }

    #[test]
    fn the_receipt_body_carries_output_and_logs_beside_the_summary() {
        let r = parse_result(br#"{"status": "FAILED", "output": 1, "logs": ["a"], "reason": "r"}"#)
            .unwrap();
        let body = receipt_body(&r, json!({"exit_code": 0, "status": "ignored"}));
        assert_eq!(
            body,
            json!({"status": "FAILED", "output": 1, "logs": ["a"], "program_reason": "r", "exit_code": 0})
        );
    }
}
