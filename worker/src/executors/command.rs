//! `command.execute`: runs a program and reports its exit code and output.
//!
//! A `command` without `args` runs through `sh -c`, so pipes and quoting work
//! as in a terminal; with `args` the program is executed directly, with no
//! shell in between. Each task runs in its own process group, so a timeout or
//! cancel stops the command together with everything it started, and with a
//! [`guard`] that kills the group should the worker die.
//!
//! What it may run, with which environment, as which user, under which
//! rlimits and in which sandbox is its [`ProcessPolicy`] (from
//! `[executor.NAME] kind = "command"`; the built-in `command.execute` has
//! none), applied by [`super::process`] before the child starts.
//!
//! The executor keeps no clock: the worker runs the one timer of an attempt
//! (fed by [`Executor::time_limit`], here the payload's `timeout_secs`) and
//! cancels with [`CancelReason::Timeout`]; the executor then stops the group.

use crate::executor::{
    CancelReason, Cancellation, ExecError, ExecErrorKind, Executor, Outcome, TaskContext,
};
use async_trait::async_trait;
use broker_topology::Artifact;
use broker_topology::payload_schema::PayloadSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

// The exec executor runs its programs the same way.
pub(super) mod guard;

use super::process::{self, ChildSpec, ProcessPolicy, Program, output};
use guard::Guard;
use std::sync::Arc;

/// Stderr tail put into failure receipts.
pub(super) const STDERR_TAIL: usize = 2048;

/// The `command.execute` payload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandPayload {
    /// A shell command line (no `args`), or the program to run (with `args`).
    pub command: String,
    /// Arguments; when present the program runs without a shell.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Text written to the program's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Where to write `{command, exit_code, stdout, stderr, executed_at, duration_ms}` as JSON.
    #[serde(default)]
    pub output_path: Option<String>,
    /// Run-time limit in seconds; the worker's timer takes the smaller of it
    /// and the task's own limit.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

impl CommandPayload {
    fn parse(payload: &Value) -> Result<Self, ExecError> {
        // The published schema first, so the worker refuses exactly what
        // `chit publish` refuses, in the same words.
        if let Some(schema) = PayloadSchema::builtin("command.execute") {
            schema
                .check(payload)
                .map_err(|e| ExecError::invalid(e.to_string()))?;
        }
        let p: CommandPayload = serde_json::from_value(payload.clone())
            .map_err(|e| ExecError::invalid(format!("command.execute payload: {e}")))?;
        if p.command.trim().is_empty() {
            return Err(ExecError::invalid(
                "command.execute payload: `command` is empty",
            ));
        }
        if let Some(t) = p.timeout_secs
            && !(t > 0.0 && t.is_finite())
        {
            return Err(ExecError::invalid(
                "command.execute payload: `timeout_secs` must be a positive number",
            ));
        }
        if p.output_path.as_deref() == Some("") {
            return Err(ExecError::invalid(
                "command.execute payload: `output_path` is empty",
            ));
        }
        Ok(p)
    }
}

/// Runs commands.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace: Duration,
    name: String,
    policy: Arc<ProcessPolicy>,
}

impl Default for CommandExecutor {
    fn default() -> Self {
        CommandExecutor::new(crate::WorkerConfig::DEFAULT_KILL_GRACE)
    }
}

impl CommandExecutor {
    /// The built-in `command.execute`: no policy (see
    /// [`ProcessPolicy::unrestricted`]).
    pub fn new(kill_grace: Duration) -> Self {
        CommandExecutor::with_policy(
            "command.execute",
            ProcessPolicy::unrestricted("command.execute", kill_grace),
        )
    }

    /// Executor `name` of kind `command`, under `policy`.
    pub fn with_policy(name: impl Into<String>, policy: ProcessPolicy) -> Self {
        CommandExecutor {
            kill_grace: policy.kill_grace(),
            name: name.into(),
            policy: Arc::new(policy),
        }
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "command"
    }

    fn validate(&self, payload: &Value) -> Result<(), ExecError> {
        CommandPayload::parse(payload).map(|_| ())
    }

    fn time_limit(&self, payload: &Value) -> Option<Duration> {
        CommandPayload::parse(payload)
            .ok()?
            .timeout_secs
            .map(Duration::from_secs_f64)
    }

    async fn execute(
        &self,
        ctx: &TaskContext,
        payload: Value,
        mut cancel: Cancellation,
    ) -> Result<Outcome, ExecError> {
        let p = CommandPayload::parse(&payload)?;
        let mut chit_env = vec![
            ("CHIT_TASK_ID", ctx.task_id.clone()),
            ("CHIT_TASK_TYPE", ctx.task_type.clone()),
            ("CHIT_ATTEMPT", ctx.attempt.to_string()),
        ];
        if let Some(tp) = &ctx.traceparent {
            chit_env.push(("TRACEPARENT", tp.clone()));
        }
        let program = match &p.args {
            None => Program::Shell(&p.command),
            Some(args) => Program::Direct {
                program: &p.command,
                args,
            },
        };
        // Refused by the policy: a failure naming the rule, never retried.
        let (mut cmd, _scratch) = self
            .policy
            .prepare(&ChildSpec {
                program,
                env: &p.env,
                chit_env: &chit_env,
                working_dir: p.working_dir.as_deref(),
            })?
            .into_parts();
        cmd.stdin(if p.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let guard = Guard::arm(&mut cmd).map_err(|e| {
            ExecError::new(
                ExecErrorKind::Unavailable,
                format!("cannot start the guard that ties the command to this worker: {e}"),
            )
        })?;
        let executed_at = chrono::Utc::now();
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ExecErrorKind::Permanent
                }
                _ => ExecErrorKind::Unavailable,
            };
            let what = match (&p.working_dir, e.kind()) {
                (Some(dir), std::io::ErrorKind::NotFound)
                    if !std::path::Path::new(dir).is_dir() =>
                {
                    format!("working_dir {dir:?} does not exist")
                }
                _ => format!("cannot start {:?}: {e}", p.command),
            };
            ExecError::new(kind, what)
        })?;
        if let (Some(text), Some(mut stdin)) = (p.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        let Finished {
            status,
            stopped,
            duration_ms,
            stdout: out,
            stderr: err,
        } = supervise(
            child,
            guard,
            self.policy.output_cap(),
            self.kill_grace,
            started,
            &mut cancel,
            "the command",
        )
        .await?;
        let (out_bytes, err_bytes) = (out.total(), err.total());
        let (out, err) = (out.text("stdout"), err.text("stderr"));
        let exit_code = status.code();
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);

        let mut artifacts = Vec::new();
        if let Some(path) = &p.output_path {
            let record = json!({
                "command": p.command,
                "exit_code": exit_code,
                "stdout": out,
                "stderr": err,
                "executed_at": executed_at.to_rfc3339(),
                "duration_ms": duration_ms,
            });
            let bytes = serde_json::to_vec_pretty(&record).expect("json");
            write_output(path, &bytes).await.map_err(|e| {
                ExecError::new(
                    ExecErrorKind::Permanent,
                    format!("cannot write output_path {path:?}: {e}"),
                )
            })?;
            artifacts.push(Artifact {
                path: Some(path.clone()),
                content_type: Some("application/json".into()),
                size: Some(bytes.len() as u64),
                sha256: Some(hex::encode(Sha256::digest(&bytes))),
                description: Some("command result: exit code, stdout, stderr".into()),
                ..Artifact::default()
            });
        }
        let summary = json!({
            "exit_code": exit_code,
            "signal": signal,
            "duration_ms": duration_ms,
            "stdout_bytes": out_bytes,
            "stderr_bytes": err_bytes,
            "stderr_tail": tail(&err, STDERR_TAIL),
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
            e.artifacts = artifacts;
            return Err(e);
        }
        match exit_code {
            Some(0) => Ok(Outcome {
                body: summary,
                artifacts,
                ..Outcome::default()
            }),
            Some(code) => {
                // 126/127: the shell could not find or run the program; a retry cannot help.
                let kind = if code == 126 || code == 127 {
                    ExecErrorKind::Permanent
                } else {
                    ExecErrorKind::Failed
                };
                let mut e = ExecError::new(kind, format!("command exited with code {code}"))
                    .with_details(summary);
                e.artifacts = artifacts;
                Err(e)
            }
            None => {
                let mut e = ExecError::new(
                    ExecErrorKind::Failed,
                    format!(
                        "command killed by signal {signal:?}{}",
                        process::signal_hint(signal)
                    ),
                )
                .with_details(summary);
                e.artifacts = artifacts;
                Err(e)
            }
        }
    }

    async fn health_check(&self) -> Result<(), ExecError> {
        // A shell started as a task's would be: user, limits, sandbox.
        self.policy.health().await
    }
}

/// How a supervised child ended.
pub(super) struct Finished {
    pub(super) status: std::process::ExitStatus,
    /// Why it was stopped, if it was.
    pub(super) stopped: Option<CancelReason>,
    pub(super) duration_ms: u64,
    pub(super) stdout: output::Captured,
    pub(super) stderr: output::Captured,
}

/// Runs a spawned child to its end, the one way for every process executor:
/// captures its output up to `cap`, stops its group on cancel (SIGTERM, then
/// SIGKILL after `kill_grace`), kills what the group left behind, and
/// releases the guard that tied it to this worker. `what` names it in errors.
pub(super) async fn supervise(
    mut child: tokio::process::Child,
    guard: Guard,
    cap: usize,
    kill_grace: Duration,
    started: Instant,
    cancel: &mut Cancellation,
    what: &str,
) -> Result<Finished, ExecError> {
    let pgid = child.id().map(|id| id as i32);
    let stdout = tokio::spawn(output::capture(child.stdout.take(), cap));
    let stderr = tokio::spawn(output::capture(child.stderr.take(), cap));
    let mut stopped: Option<CancelReason> = None;
    let status = tokio::select! {
        status = child.wait() => status,
        reason = cancel.cancelled() => {
            stopped = Some(reason);
            stop_group(kill_grace, pgid, reason, &mut child, cancel).await
        }
    }
    .map_err(|e| {
        ExecError::new(
            ExecErrorKind::Unavailable,
            format!("waiting for {what}: {e}"),
        )
    })?;
    if stopped.is_some() {
        // Whatever the group left behind goes too, so nothing outlives the task.
        kill_group(pgid, libc::SIGKILL);
    }
    guard.release().await;
    let duration_ms = started.elapsed().as_millis() as u64;
    // A grandchild that escaped the group may still hold the pipes open.
    // Cut streams end with a marker saying how much was dropped.
    let (stdout, stderr) = (output::join(stdout).await, output::join(stderr).await);
    Ok(Finished {
        status,
        stopped,
        duration_ms,
        stdout,
        stderr,
    })
}

/// SIGTERM the group, then SIGKILL after the grace period (at once if forced).
pub(super) async fn stop_group(
    kill_grace: Duration,
    pgid: Option<i32>,
    reason: CancelReason,
    child: &mut tokio::process::Child,
    cancel: &mut Cancellation,
) -> std::io::Result<std::process::ExitStatus> {
    if reason == (CancelReason::Cancelled { force: true }) {
        kill_group(pgid, libc::SIGKILL);
        return child.wait().await;
    }
    kill_group(pgid, libc::SIGTERM);
    tokio::select! {
        status = child.wait() => status,
        _ = tokio::time::sleep(kill_grace) => {
            kill_group(pgid, libc::SIGKILL);
            child.wait().await
        }
        _ = forced(cancel) => {
            kill_group(pgid, libc::SIGKILL);
            child.wait().await
        }
    }
}

async fn forced(cancel: &mut Cancellation) {
    loop {
        if cancel.changed().await == Some(CancelReason::Cancelled { force: true }) {
            return;
        }
    }
}

#[allow(unsafe_code)]
pub(super) fn kill_group(pgid: Option<i32>, signal: i32) {
    if let Some(pgid) = pgid.filter(|p| *p > 0) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

pub(super) fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

async fn write_output(path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = std::path::Path::new(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::time_limit;
    use crate::executor::cancellation;

    fn ctx() -> TaskContext {
        TaskContext {
            task_id: "t1".into(),
            task_type: "command.execute".into(),
            attempt: 1,
            worker_id: "w".into(),
            timeout: None,
            traceparent: None,
            polls: 0,
            previous_output: None,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let e = CommandExecutor::default();
        assert!(e.validate(&json!({"command": "echo hi"})).is_ok());
        let err = e.validate(&json!({"command": ""})).unwrap_err();
        assert!(err.message.contains("command"), "{err}");
        let err = e
            .validate(&json!({"command": "x", "colour": 1}))
            .unwrap_err();
        assert!(err.message.contains("colour"), "{err}");
        let err = e.validate(&json!({"args": []})).unwrap_err();
        assert!(err.message.contains("command"), "{err}");
        let err = e
            .validate(&json!({"command": "x", "timeout_secs": -1}))
            .unwrap_err();
        assert!(err.message.contains("timeout_secs"), "{err}");
        assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
        // What `chit publish` refuses, the worker refuses too: an array is
        // not a payload, and a limit too large for a Duration is no limit.
        let err = e.validate(&json!(["echo hi"])).unwrap_err();
        assert!(err.message.contains("is not of type \"object\""), "{err}");
        let huge = json!({"command": "x", "timeout_secs": 1e20});
        assert!(e.validate(&huge).is_err());
        assert_eq!(e.time_limit(&huge), None);
    }

    #[tokio::test]
    async fn shell_command_writes_output_file_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/out.json");
        let payload = json!({
            "command": "echo \"$GREETING\" | tr a-z A-Z; echo oops >&2",
            "env": {"GREETING": "hello"},
            "output_path": out.to_str().unwrap(),
        });
        let outcome = CommandExecutor::default()
            .execute(&ctx(), payload, Cancellation::never())
            .await
            .unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(written["stdout"], "HELLO\n");
        assert_eq!(written["stderr"], "oops\n");
        assert_eq!(written["exit_code"], 0);
        assert!(written["duration_ms"].is_u64());
        assert!(written["executed_at"].is_string());
        let a = &outcome.artifacts[0];
        assert_eq!(a.path.as_deref(), out.to_str());
        assert_eq!(a.size, Some(std::fs::metadata(&out).unwrap().len()));
        assert_eq!(a.sha256.as_ref().unwrap().len(), 64);
    }

    #[tokio::test]
    async fn args_run_without_a_shell_with_stdin_and_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.json");
        let payload = json!({
            "command": "sh",
            "args": ["-c", "pwd; cat"],
            "stdin": "from stdin",
            "working_dir": dir.path().to_str().unwrap(),
            "output_path": out.to_str().unwrap(),
        });
        CommandExecutor::default()
            .execute(&ctx(), payload, Cancellation::never())
            .await
            .unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let stdout = written["stdout"].as_str().unwrap();
        assert!(stdout.ends_with("from stdin"), "{stdout}");
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert!(stdout.starts_with(real.to_str().unwrap()), "{stdout}");
    }

    #[tokio::test]
    async fn nonzero_exit_is_a_retryable_failure_with_stderr_tail() {
        let err = CommandExecutor::default()
            .execute(
                &ctx(),
                json!({"command": "echo bad >&2; exit 3"}),
                Cancellation::never(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Failed);
        assert!(err.is_retryable());
        assert_eq!(err.details["exit_code"], 3);
        assert_eq!(err.details["stderr_tail"], "bad\n");
    }

    #[tokio::test]
    async fn missing_program_is_permanent() {
        let err = CommandExecutor::default()
            .execute(
                &ctx(),
                json!({"command": "/no/such/program", "args": []}),
                Cancellation::never(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Permanent);
        let err = CommandExecutor::default()
            .execute(
                &ctx(),
                json!({"command": "no-such-program-xyz"}),
                Cancellation::never(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Permanent);
    }

    fn alive(pid: i32) -> bool {
        #[allow(unsafe_code)]
        // SAFETY: signal 0 only checks for existence.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The shell starts a background grandchild that ignores SIGTERM and records its pid.
        let cmd = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 60' & sleep 60",
            pidfile.display()
        );
        let exec = CommandExecutor::new(Duration::from_millis(200));
        // The payload's limit, run by the attempt's timer as the worker does.
        let payload = json!({"command": cmd, "timeout_secs": 0.5});
        let limit = time_limit::effective(None, None, exec.time_limit(&payload));
        let ctx = TaskContext {
            timeout: limit,
            ..ctx()
        };
        let (canceller, cancel) = cancellation();
        let err = time_limit::enforce(limit, &canceller, exec.execute(&ctx, payload, cancel))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Timeout);
        assert!(err.message.contains("timed out"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild ignored SIGTERM, so only SIGKILL of the group can have ended it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "grandchild {pid} survived the timeout");
    }

    #[test]
    fn the_payload_timeout_is_the_executors_time_limit() {
        let e = CommandExecutor::default();
        assert_eq!(
            e.time_limit(&json!({"command": "x", "timeout_secs": 1.5})),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(e.time_limit(&json!({"command": "x"})), None);
    }

    #[tokio::test]
    async fn the_executor_keeps_no_clock_of_its_own() {
        // Only the attempt's timer stops a task: without its cancel, a
        // payload limit alone does not.
        let outcome = CommandExecutor::default()
            .execute(
                &ctx(),
                json!({"command": "sleep 0.3", "timeout_secs": 0.05}),
                Cancellation::never(),
            )
            .await;
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    #[tokio::test]
    async fn the_command_is_the_workers_own_child_with_its_own_exit() {
        // The guard stands beside the command, not between it and the worker.
        let me = std::process::id();
        let ok = CommandExecutor::default()
            .execute(
                &ctx(),
                json!({"command": format!("test $PPID = {me}")}),
                Cancellation::never(),
            )
            .await;
        assert!(ok.is_ok(), "{ok:?}");
        let err = CommandExecutor::default()
            .execute(
                &ctx(),
                json!({"command": "kill -TERM $$"}),
                Cancellation::never(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Failed);
        assert_eq!(err.details["signal"], libc::SIGTERM);
    }

    #[tokio::test]
    async fn forced_cancel_kills_at_once() {
        let (tx, rx) = cancellation();
        let exec = CommandExecutor::new(Duration::from_secs(30));
        let run = tokio::spawn(async move {
            exec.execute(&ctx(), json!({"command": "trap '' TERM; sleep 30"}), rx)
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        tx.cancel(CancelReason::Cancelled { force: true });
        let err = run.await.unwrap().unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
