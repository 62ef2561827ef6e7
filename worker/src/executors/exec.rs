//! `exec`: any program, in any language, as the worker of a task type.
//!
//! The program runs once per task. It reads the task as one JSON document
//! on stdin (the payload under `inputData`; see [`contract`]) and writes one
//! JSON object on stdout: `{status, output, logs, reason}`. How that ends
//! the attempt:
//!
//! | the program | outcome |
//! | --- | --- |
//! | exit 0, `COMPLETED` | `success`, with `output` and `logs` |
//! | exit 0, `FAILED` | failure `failed` (retried as the task's policy allows), `error` = its `reason` |
//! | exit 0, `FAILED_WITH_TERMINAL_ERROR` | failure `permanent` (dead-lettered at once) |
//! | exit 0, `IN_PROGRESS` | `in_progress`; runs again after `callbackAfterSeconds`, with `output` as `outputData` |
//! | exit 0, stdout not one JSON object or not a result | failure `permanent`, saying what is wrong |
//! | exit 0, stdout over the output cap | failure `permanent`, saying so |
//! | non-zero exit, or a signal | failure `failed`, with the exit code and the stderr tail |
//! | cannot start (not found, not executable) | failure `permanent` |
//! | time limit, cancel | as for every executor: `timeout`, `cancelled` |
//!
//! It runs like `command.execute`: its child is made by the executor's
//! [`ProcessPolicy`] (allow and block lists, environment, user, rlimits,
//! sandbox, output cap; none by default), in one place, [`ExecExecutor::child`];
//! it runs in a process group of its own, is stopped with SIGTERM then
//! SIGKILL on a timeout or a cancel, and has the command guard, so it dies
//! with its worker.

mod contract;

use super::command::guard::Guard;
use super::command::{Finished, STDERR_TAIL, supervise, tail};
use super::process::{self, ChildSpec, PreparedChild, ProcessPolicy, Program};
use crate::error::ConfigError;
use crate::executor::{
    CancelReason, Cancellation, ExecError, ExecErrorKind, Executor, InProgress, Outcome,
    TaskContext,
};
use crate::executors::kinds::{KindDefaults, parse_options};
use async_trait::async_trait;
use contract::Status;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// The executor kind: `[executor.NAME] kind = "exec"`, or a capability's
/// `executor = "exec"`.
pub const EXEC_KIND: &str = "exec";

/// The program of an exec executor, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProgram {
    /// The program: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Vec<String>,
}

impl ExecProgram {
    /// The program as a user wrote it, for messages.
    fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs a program per task; see the module docs.
#[derive(Debug, Clone)]
pub struct ExecExecutor {
    name: String,
    program: ExecProgram,
    policy: Arc<ProcessPolicy>,
}

impl ExecExecutor {
    /// Executor `name` running `program` under `policy`.
    pub fn new(name: impl Into<String>, program: ExecProgram, policy: ProcessPolicy) -> Self {
        ExecExecutor {
            name: name.into(),
            program,
            policy: Arc::new(policy),
        }
    }

    /// Executor `name` running `program` with no policy
    /// ([`ProcessPolicy::unrestricted`]): the worker's environment, no
    /// limits, stdout and stderr capped at 1 MiB each.
    pub fn unrestricted(
        name: impl Into<String>,
        program: ExecProgram,
        kill_grace: std::time::Duration,
    ) -> Self {
        let name = name.into();
        let policy = ProcessPolicy::unrestricted(name.clone(), kill_grace);
        ExecExecutor::new(name, program, policy)
    }

    /// The name the exec executor of capability `task_type` is registered
    /// under when it is not named in the config file: `exec:<task_type>`.
    pub fn name_for(task_type: &str) -> String {
        format!("{EXEC_KIND}:{task_type}")
    }

    /// The program it runs.
    pub fn program(&self) -> &ExecProgram {
        &self.program
    }

    /// The child for one run of a task, made by the policy (which may refuse
    /// it): the program and its arguments, the task in the environment,
    /// stdin, stdout and stderr piped, a process group of its own.
    pub fn child(&self, ctx: &TaskContext) -> Result<PreparedChild, ExecError> {
        let mut task_env = vec![
            ("TASK_ID", ctx.task_id.clone()),
            ("TASK_TYPE", ctx.task_type.clone()),
            ("ATTEMPT", ctx.attempt.to_string()),
            ("CHIT_TASK_ID", ctx.task_id.clone()),
            ("CHIT_TASK_TYPE", ctx.task_type.clone()),
            ("CHIT_ATTEMPT", ctx.attempt.to_string()),
            ("CHIT_POLL_COUNT", ctx.polls.to_string()),
        ];
        if let Some(tp) = &ctx.traceparent {
            task_env.push(("TRACEPARENT", tp.clone()));
        }
        let mut child = self.policy.prepare(&ChildSpec {
            program: Program::Direct {
                program: &self.program.program,
                args: &self.program.args,
            },
            env: &BTreeMap::new(),
            chit_env: &task_env,
            working_dir: None,
        })?;
        if ctx.traceparent.is_none() {
            // Not the worker's own, which belongs to no task.
            child.command.env_remove("TRACEPARENT");
        }
        child
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(child)
    }
}

#[async_trait]
impl Executor for ExecExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        EXEC_KIND
    }

    /// Any payload: it is the program's to judge.
    fn validate(&self, _payload: &Value) -> Result<(), ExecError> {
        Ok(())
    }

    async fn execute(
        &self,
        ctx: &TaskContext,
        payload: Value,
        mut cancel: Cancellation,
    ) -> Result<Outcome, ExecError> {
        let document = contract::task_document(ctx, payload);
        let (mut cmd, _scratch) = self.child(ctx)?.into_parts();
        let guard = Guard::arm(&mut cmd).map_err(|e| {
            ExecError::new(
                ExecErrorKind::Unavailable,
                format!("cannot start the guard that ties the program to this worker: {e}"),
            )
        })?;
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ExecErrorKind::Permanent
                }
                _ => ExecErrorKind::Unavailable,
            };
            ExecError::new(
                kind,
                format!("cannot start {:?}: {e}", self.program.program),
            )
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its stdin is fine: the write then
            // fails or waits, and ends with the program.
            tokio::spawn(async move {
                let _ = stdin.write_all(&document).await;
            });
        }
        let cap = self.policy.output_cap();
        let Finished {
            status,
            stopped,
            duration_ms,
            stdout: out,
            stderr: err,
        } = supervise(
            child,
            guard,
            cap,
            self.policy.kill_grace(),
            started,
            &mut cancel,
            "the program",
        )
        .await?;
        let stderr_text = err.text("stderr");
        let exit_code = status.code();
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        let summary = json!({
            "exit_code": exit_code,
            "signal": signal,
            "duration_ms": duration_ms,
            "stdout_bytes": out.total(),
            "stderr_bytes": err.total(),
            "stderr_tail": tail(&stderr_text, STDERR_TAIL),
        });
        if let Some(reason) = stopped {
            let mut e = ExecError::from_cancel(reason).with_details(summary);
            if reason == CancelReason::Timeout {
                let limit = ctx
                    .timeout
                    .map(|d| format!(" (limit {} s)", d.as_secs_f64()))
                    .unwrap_or_default();
                e.message =
                    format!("timed out after {duration_ms} ms{limit}; process group killed");
            }
            return Err(e);
        }
        match exit_code {
            Some(0) => {}
            Some(code) => {
                return Err(ExecError::new(
                    ExecErrorKind::Failed,
                    format!("program exited with code {code}"),
                )
                .with_details(summary));
            }
            None => {
                let signal = signal.unwrap_or(0);
                return Err(ExecError::new(
                    ExecErrorKind::Failed,
                    format!(
                        "program killed by signal {signal}{}",
                        process::signal_hint(Some(signal))
                    ),
                )
                .with_details(summary));
            }
        }
        if out.dropped > 0 {
            let mut details = summary;
            details["stdout_tail"] = json!(tail(&out.text("stdout"), STDERR_TAIL));
            return Err(ExecError::new(
                ExecErrorKind::Permanent,
                format!(
                    "stdout is larger than the output cap: {} bytes, at most {cap} allowed",
                    out.total()
                ),
            )
            .with_details(details));
        }
        let result = contract::parse_result(&out.kept).map_err(|problem| {
            let mut details = summary.clone();
            details["stdout_tail"] = json!(tail(&out.text("stdout"), STDERR_TAIL));
            ExecError::new(ExecErrorKind::Permanent, problem).with_details(details)
        })?;
        let body = contract::receipt_body(&result, summary);
        let failed = |kind| -> Result<Outcome, ExecError> {
            let message = match &result.reason {
                Some(reason) if !reason.trim().is_empty() => reason.clone(),
                _ => format!("the program reported {}", result.status.as_str()),
            };
            Err(ExecError::new(kind, message).with_details(body.clone()))
        };
        match result.status {
            Status::Completed => Ok(Outcome {
                body,
                ..Outcome::default()
            }),
            Status::Failed => failed(ExecErrorKind::Failed),
            Status::FailedWithTerminalError => failed(ExecErrorKind::Permanent),
            Status::InProgress => Ok(Outcome {
                in_progress: Some(InProgress {
                    after: result.callback_after,
                    output: result.output.clone(),
                }),
                body,
                ..Outcome::default()
            }),
        }
    }

    /// The program can be found and run, and the policy can run work.
    async fn health_check(&self) -> Result<(), ExecError> {
        let program = &self.program.program;
        let found = if program.contains('/') {
            is_executable(Path::new(program))
        } else {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
            })
        };
        if !found {
            return Err(ExecError::new(
                ExecErrorKind::Unavailable,
                format!(
                    "cannot run `{}`: {program:?} is not an executable file{}",
                    self.program.display(),
                    if program.contains('/') {
                        ""
                    } else {
                        " on the worker's PATH"
                    }
                ),
            ));
        }
        self.policy.health().await
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `[executor.NAME] kind = "exec"`: `program` and `args`, then the process
/// policy's options (allow, limits, sandbox, `max_output_bytes`, ...).
pub(super) fn build_kind(
    name: &str,
    options: Value,
    defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    let mut rest = match options {
        Value::Object(map) => map,
        Value::Null => Default::default(),
        other => {
            return Err(ConfigError::Invalid {
                executor: name.to_owned(),
                message: format!("options must be a table, not {other}"),
            });
        }
    };
    let mut own = serde_json::Map::new();
    for key in ["program", "args"] {
        if let Some(v) = rest.remove(key) {
            own.insert(key.into(), v);
        }
    }
    // The policy's keys first, so a misspelt `program` is named as unknown.
    let policy = ProcessPolicy::from_options(name, Value::Object(rest), defaults)?;
    if !own.contains_key("program") {
        return Err(ConfigError::Invalid {
            executor: name.to_owned(),
            message: "kind \"exec\" needs `program`, the program to run for each task".into(),
        });
    }
    let program: ExecProgram = parse_options(name, Value::Object(own))?;
    Ok(Arc::new(ExecExecutor::new(name, program, policy)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::time_limit;
    use crate::executor::cancellation;
    use std::time::Duration;

    fn ctx() -> TaskContext {
        TaskContext {
            task_id: "t1".into(),
            task_type: "greet".into(),
            attempt: 1,
            worker_id: "w".into(),
            timeout: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            polls: 0,
            previous_output: None,
        }
    }

    fn sh(script: &str) -> ExecExecutor {
        let program = ExecProgram {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
        };
        ExecExecutor::unrestricted("greet", program, Duration::from_millis(200))
    }

    async fn run(e: &ExecExecutor, payload: Value) -> Result<Outcome, ExecError> {
        e.execute(&ctx(), payload, Cancellation::never()).await
    }

    #[tokio::test]
    async fn the_program_reads_the_task_and_its_environment() {
        let e = sh(
            r#"read -r task; printf '{"status":"COMPLETED","output":{"task":%s,"env":"%s %s %s %s"}}' "$task" "$TASK_ID" "$TASK_TYPE" "$ATTEMPT" "$TRACEPARENT""#,
        );
        let o = run(&e, json!({"name": "Ada"})).await.unwrap();
        assert_eq!(o.in_progress, None);
        assert_eq!(o.body["status"], "COMPLETED");
        assert_eq!(o.body["output"]["task"]["inputData"]["name"], "Ada");
        assert_eq!(
            o.body["output"]["env"],
            "t1 greet 1 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(o.body["exit_code"], 0);
        assert_eq!(o.body["logs"], json!([]));
    }

    #[tokio::test]
    async fn failed_is_retryable_and_terminal_is_not() {
        let e = sh(r#"echo '{"status":"FAILED","reason":"no name given","logs":["looked"]}'"#);
        let err = run(&e, json!({})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Failed);
        assert_eq!(err.message, "no name given");
        assert_eq!(err.details["logs"], json!(["looked"]));
        let e = sh(r#"echo '{"status":"FAILED_WITH_TERMINAL_ERROR"}'"#);
        let err = run(&e, json!({})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Permanent);
        assert_eq!(
            err.message,
            "the program reported FAILED_WITH_TERMINAL_ERROR"
        );
    }

    #[tokio::test]
    async fn in_progress_asks_for_another_run_with_its_output() {
        let e =
            sh(r#"echo '{"status":"IN_PROGRESS","output":{"step":1},"callbackAfterSeconds":2}'"#);
        let o = run(&e, json!({})).await.unwrap();
        let p = o.in_progress.expect("in progress");
        assert_eq!(p.after, Some(Duration::from_secs(2)));
        assert_eq!(p.output, json!({"step": 1}));
        assert_eq!(o.body["output"], json!({"step": 1}));
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_its_code_and_stderr_tail() {
        let e = sh("echo half >&1; echo broken >&2; exit 3");
        let err = run(&e, json!({})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Failed);
        assert_eq!(err.message, "program exited with code 3");
        assert_eq!(err.details["exit_code"], 3);
        assert_eq!(err.details["stderr_tail"], "broken\n");
    }

    #[tokio::test]
    async fn bad_or_oversized_stdout_is_a_permanent_failure_that_says_which() {
        let err = run(&sh("echo Hello"), json!({})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Permanent);
        assert!(err.message.contains("not one JSON object"), "{err}");
        assert_eq!(err.details["stdout_tail"], "Hello\n");
        let options = json!({
            "program": "sh",
            "args": ["-c", r#"printf '{"status":"COMPLETED","output":"%s"}' 0123456789"#],
            "max_output_bytes": 20,
        });
        let e = build_kind("greet", options, &KindDefaults::default()).unwrap();
        let err = e
            .execute(&ctx(), json!({}), Cancellation::never())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Permanent);
        assert!(err.message.contains("larger than the output cap"), "{err}");
        assert_eq!(err.details["stdout_bytes"], 44);
    }

    #[tokio::test]
    async fn a_missing_program_is_permanent_and_unhealthy() {
        let e = ExecExecutor::unrestricted(
            "greet",
            ExecProgram {
                program: "no-such-program-xyz".into(),
                args: vec![],
            },
            Duration::from_secs(1),
        );
        let err = e.health_check().await.unwrap_err();
        assert!(err.message.contains("no-such-program-xyz"), "{err}");
        let err = run(&e, json!({})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Permanent);
        assert!(sh("true").health_check().await.is_ok());
    }

    #[tokio::test]
    async fn the_time_limit_stops_the_program() {
        let e = sh("sleep 30");
        let limit = Some(Duration::from_millis(300));
        let (canceller, cancel) = cancellation();
        let ctx = TaskContext {
            timeout: limit,
            ..ctx()
        };
        let started = Instant::now();
        let err = time_limit::enforce(limit, &canceller, e.execute(&ctx, json!({}), cancel))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Timeout);
        assert!(err.message.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_config_executor_names_its_program_and_unknown_keys() {
        let defaults = KindDefaults::default();
        let e = build_kind(
            "greet",
            json!({"program": "python3", "args": ["greet.py"], "allow": ["python3"]}),
            &defaults,
        )
        .unwrap();
        assert_eq!((e.name(), e.kind()), ("greet", "exec"));
        let err = build_kind("greet", json!({"args": ["x"]}), &defaults)
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs `program`"), "{err}");
        let err = build_kind("greet", json!({"progam": "y"}), &defaults)
            .err()
            .unwrap();
        assert!(err.to_string().contains("progam"), "{err}");
        let err = build_kind("greet", json!({"program": "x", "args": "y"}), &defaults)
            .err()
            .unwrap();
        assert!(err.to_string().contains("args"), "{err}");
    }
}
