//! How an executor starts a child process, in one place: the program policy
//! (allow and block lists), the environment, the user it runs as, rlimits,
//! the bubblewrap sandbox and the output caps. `command` uses it; any kind
//! that runs a program (`exec`) builds its child through [`ProcessPolicy`]
//! too, so one policy reads the same whichever kind it is written under.
//!
//! A policy is built once, when the worker starts, from the options under
//! `[executor.NAME]` ([`ProcessOptions`]); everything that can be checked
//! then is (the user exists, `bwrap` works, the lists are well formed), so a
//! worker with an unusable policy refuses to start instead of running tasks
//! without it. Per task, [`ProcessPolicy::prepare`] either refuses (an
//! [`ExecErrorKind::Refused`] error naming the rule, never retried) or hands
//! back a [`tokio::process::Command`] with everything applied; the caller
//! sets stdio, arms its guard and spawns.
//!
//! With no options at all the policy is [`ProcessPolicy::unrestricted`]:
//! today's behaviour (the worker's environment, no limits, no sandbox), with
//! the output of each stream capped at [`DEFAULT_OUTPUT_CAP`].
//!
//! # Layout
//!
//! - `programs`: allow and block lists, by name or path.
//! - `limits`: [`Limits`], the rlimits set in the child before exec, and the
//!   user it runs as.
//! - `sandbox`: [`SandboxOptions`], the `bwrap` command line and its probe.
//! - [`output`]: capturing a stream up to its cap, with a marker saying how
//!   much was dropped.

mod limits;
pub mod output;
mod programs;
mod sandbox;

pub use limits::Limits;
pub use sandbox::SandboxOptions;

use crate::error::ConfigError;
use crate::executor::{ExecError, ExecErrorKind};
use crate::executors::kinds::{KindDefaults, parse_options};
use limits::RunAs;
use programs::ProgramRules;
use sandbox::Sandbox;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// The shell that runs a command line (`sh -c LINE`).
pub const SHELL: &str = "sh";

/// Bytes of each output stream (stdout, stderr) kept unless configured;
/// the rest is dropped and counted.
pub const DEFAULT_OUTPUT_CAP: usize = 1 << 20;

/// The process options of an executor, as written under `[executor.NAME]`.
/// Every key is optional; an unknown key is an error that names it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessOptions {
    /// Programs that may run, by name (looked up on the worker's `PATH`) or
    /// absolute path. When set, a shell command line is refused unless the
    /// shell itself is allowed.
    pub allow: Option<Vec<String>>,
    /// Programs that may not run, by name (any program of that file name) or
    /// absolute path.
    #[serde(default)]
    pub block: Vec<String>,
    /// When set, the child's environment is only these variables of the
    /// worker's (a trailing `*` matches a prefix), the payload's `env` and
    /// chit's own `CHIT_*` and `TRACEPARENT`.
    pub env_passthrough: Option<Vec<String>>,
    /// When set, the only names a payload's `env` may set (a trailing `*`
    /// matches a prefix).
    pub payload_env: Option<Vec<String>>,
    /// Run the child as this user (name or uid); the worker must be root.
    pub user: Option<String>,
    /// rlimits set in the child before exec.
    #[serde(default)]
    pub limits: Limits,
    /// Bytes kept of stdout and of stderr, each.
    pub max_output_bytes: Option<usize>,
    /// Run the child under bubblewrap.
    pub sandbox: Option<SandboxOptions>,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace_secs: Option<f64>,
}

/// A refused task: which rule, and why, in words for the receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The option that refused it: `allow`, `block`, `payload_env`,
    /// `sandbox.working_dirs`.
    pub rule: &'static str,
    /// One line for humans.
    pub message: String,
}

impl Refusal {
    /// The failure an executor returns for it: reason `refused`, with the
    /// rule and the executor in the receipt's body.
    pub fn into_error(self, executor: &str) -> ExecError {
        ExecError::new(ExecErrorKind::Refused, self.message)
            .with_details(json!({"rule": self.rule, "executor": executor}))
    }
}

/// What to run, as a payload says it.
#[derive(Debug, Clone, Copy)]
pub enum Program<'a> {
    /// A command line for [`SHELL`].
    Shell(&'a str),
    /// A program and its arguments, with no shell.
    Direct {
        /// Name (looked up on `PATH`) or path.
        program: &'a str,
        /// Arguments, as they are.
        args: &'a [String],
    },
}

/// One child to start.
#[derive(Debug, Clone, Copy)]
pub struct ChildSpec<'a> {
    /// What to run.
    pub program: Program<'a>,
    /// The payload's environment variables.
    pub env: &'a BTreeMap<String, String>,
    /// chit's own variables (`CHIT_TASK_ID`, ...): always passed, and they
    /// win over the payload's.
    pub chit_env: &'a [(&'a str, String)],
    /// The payload's working directory.
    pub working_dir: Option<&'a str>,
}

/// A child ready to spawn. Keep it (or its scratch directory, from
/// [`PreparedChild::into_parts`]) until the child has ended.
#[derive(Debug)]
pub struct PreparedChild {
    /// The command, with policy, environment, user, limits and sandbox
    /// applied, in a process group of its own; stdio is the caller's.
    pub command: Command,
    scratch: Option<tempfile::TempDir>,
}

impl PreparedChild {
    /// The command, and the scratch directory to hold while it runs.
    pub fn into_parts(self) -> (Command, Option<tempfile::TempDir>) {
        (self.command, self.scratch)
    }
}

/// An executor's process policy, checked and ready; see the module docs.
#[derive(Debug, Clone)]
pub struct ProcessPolicy {
    executor: String,
    programs: ProgramRules,
    env_passthrough: Option<Vec<String>>,
    payload_env: Option<Vec<String>>,
    run_as: Option<RunAs>,
    limits: Limits,
    output_cap: usize,
    sandbox: Option<Sandbox>,
    kill_grace: Duration,
}

impl ProcessPolicy {
    /// No policy: the worker's environment, no limits, no sandbox; output
    /// capped at [`DEFAULT_OUTPUT_CAP`].
    pub fn unrestricted(executor: impl Into<String>, kill_grace: Duration) -> Self {
        ProcessPolicy {
            executor: executor.into(),
            programs: ProgramRules::default(),
            env_passthrough: None,
            payload_env: None,
            run_as: None,
            limits: Limits::default(),
            output_cap: DEFAULT_OUTPUT_CAP,
            sandbox: None,
            kill_grace,
        }
    }

    /// The policy of executor `executor` from its options object (the table
    /// under `[executor.NAME]`, without `kind` and without keys the kind
    /// took for itself). Checks what can be checked now, `bwrap` included.
    pub fn from_options(
        executor: &str,
        options: Value,
        defaults: &KindDefaults,
    ) -> Result<Self, ConfigError> {
        let o: ProcessOptions = parse_options(executor, options)?;
        Self::from_parsed(executor, o, defaults)
    }

    /// As [`Self::from_options`], from options already read.
    pub fn from_parsed(
        executor: &str,
        o: ProcessOptions,
        defaults: &KindDefaults,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            executor: executor.to_owned(),
            message,
        };
        let programs = ProgramRules::new(o.allow, o.block).map_err(invalid)?;
        for (key, names) in [
            ("env_passthrough", &o.env_passthrough),
            ("payload_env", &o.payload_env),
        ] {
            if let Some(bad) = names.iter().flatten().find(|n| {
                n.is_empty() || n.contains('=') || n.strip_suffix('*').unwrap_or(n).contains('*')
            }) {
                return Err(invalid(format!(
                    "{key}: {bad:?} is not a variable name (a trailing `*` matches a prefix)"
                )));
            }
        }
        let run_as = o
            .user
            .as_deref()
            .map(RunAs::resolve)
            .transpose()
            .map_err(invalid)?;
        o.limits.check(run_as.as_ref()).map_err(invalid)?;
        let output_cap = match o.max_output_bytes {
            Some(0) => return Err(invalid("max_output_bytes must be at least 1".into())),
            Some(n) => n,
            None => DEFAULT_OUTPUT_CAP,
        };
        let kill_grace = match o.kill_grace_secs {
            Some(s) if !(s >= 0.0 && s.is_finite() && s < 1e9) => {
                return Err(invalid(format!(
                    "kill_grace_secs must be a number of seconds, not {s}"
                )));
            }
            Some(s) => Duration::from_secs_f64(s),
            None => defaults.kill_grace,
        };
        let sandbox = o
            .sandbox
            .map(|s| Sandbox::new(s, run_as.as_ref()))
            .transpose()
            .map_err(|message| ConfigError::Sandbox {
                executor: executor.to_owned(),
                message,
            })?;
        Ok(ProcessPolicy {
            executor: executor.to_owned(),
            programs,
            env_passthrough: o.env_passthrough,
            payload_env: o.payload_env,
            run_as,
            limits: o.limits,
            output_cap,
            sandbox,
            kill_grace,
        })
    }

    /// Bytes kept of each output stream.
    pub fn output_cap(&self) -> usize {
        self.output_cap
    }

    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub fn kill_grace(&self) -> Duration {
        self.kill_grace
    }

    /// True when children run under bubblewrap.
    pub fn is_sandboxed(&self) -> bool {
        self.sandbox.is_some()
    }

    /// The policy in brief, for `/readyz` and logs.
    pub fn describe(&self) -> Value {
        json!({
            "allow": self.programs.allow(),
            "block": self.programs.block(),
            "env_passthrough": self.env_passthrough,
            "payload_env": self.payload_env,
            "user": self.run_as.as_ref().map(|u| u.name.clone()),
            "limits": self.limits,
            "max_output_bytes": self.output_cap,
            "sandbox": self.sandbox.as_ref().map(Sandbox::describe),
        })
    }

    /// Checks `spec` against the policy and builds its command, or refuses.
    /// A program that cannot be found is a [`ExecErrorKind::Permanent`]
    /// error, as a spawn would have said.
    pub fn prepare(&self, spec: &ChildSpec<'_>) -> Result<PreparedChild, ExecError> {
        self.check_payload_env(spec.env)
            .map_err(|r| r.into_error(&self.executor))?;
        let (named, args, is_shell): (&str, Vec<String>, bool) = match spec.program {
            Program::Shell(line) => (SHELL, vec!["-c".into(), line.into()], true),
            Program::Direct { program, args } => (program, args.to_vec(), false),
        };
        let mut scratch = None;
        let working_dir: Option<PathBuf> = match (&self.sandbox, spec.working_dir) {
            (Some(sandbox), Some(dir)) => Some(
                sandbox
                    .admit(Path::new(dir))
                    .map_err(|r| r.into_error(&self.executor))?,
            ),
            (Some(_), None) => {
                let dir = tempfile::Builder::new()
                    .prefix("chit-scratch-")
                    .tempdir()
                    .map_err(|e| {
                        ExecError::new(
                            ExecErrorKind::Unavailable,
                            format!("cannot make a scratch directory: {e}"),
                        )
                    })?;
                if let Some(user) = &self.run_as {
                    user.own(dir.path()).map_err(|e| {
                        ExecError::new(
                            ExecErrorKind::Unavailable,
                            format!("cannot give the scratch directory to {}: {e}", user.name),
                        )
                    })?;
                }
                let path = dir.path().to_path_buf();
                scratch = Some(dir);
                Some(path)
            }
            (None, dir) => dir.map(PathBuf::from),
        };
        // With rules or a sandbox, what is checked is what runs: the program
        // is resolved once, here, and executed by its path.
        let resolved = if !self.programs.is_empty() || self.sandbox.is_some() {
            let path = programs::resolve(named, working_dir.as_deref()).ok_or_else(|| {
                ExecError::new(
                    ExecErrorKind::Permanent,
                    format!("cannot start {named:?}: no such program on the worker's PATH"),
                )
            })?;
            self.programs
                .check(named, &path, is_shell)
                .map_err(|r| r.into_error(&self.executor))?;
            Some(path)
        } else {
            None
        };

        let mut cmd = match (&self.sandbox, &resolved) {
            (Some(sandbox), Some(path)) => {
                let mut c = Command::new(sandbox.bwrap());
                c.args(sandbox.args(working_dir.as_deref()));
                c.arg("--").arg(path).args(&args);
                c
            }
            (None, Some(path)) => {
                let mut c = Command::new(path);
                c.arg0(named).args(&args);
                c
            }
            (_, None) => {
                let mut c = Command::new(named);
                c.args(&args);
                c
            }
        };
        if let Some(names) = &self.env_passthrough {
            cmd.env_clear();
            for (key, value) in std::env::vars_os() {
                if key.to_str().is_some_and(|k| matches_any(names, k)) {
                    cmd.env(key, value);
                }
            }
        }
        cmd.envs(spec.env);
        for (key, value) in spec.chit_env {
            cmd.env(key, value);
        }
        if let Some(dir) = &working_dir {
            cmd.current_dir(dir);
        }
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        self.limits.install(&mut cmd);
        cmd.process_group(0).kill_on_drop(true);
        Ok(PreparedChild {
            command: cmd,
            scratch,
        })
    }

    /// Whether the policy can run work now: the sandbox starts, the user
    /// exists, every program the allow list names by path exists, and a
    /// shell started the way a task would be (user, limits, sandbox) exits 0.
    pub async fn health(&self) -> Result<(), ExecError> {
        let unavailable = |m: String| ExecError::new(ExecErrorKind::Unavailable, m);
        if let Some(missing) = self.programs.missing() {
            return Err(unavailable(missing));
        }
        if let Some(user) = &self.run_as {
            RunAs::resolve(&user.name).map_err(unavailable)?;
        }
        let mut probe = match &self.sandbox {
            Some(sandbox) => {
                let mut c = Command::new(sandbox.bwrap());
                c.args(sandbox.args(None)).args(["--", SHELL, "-c", "true"]);
                c
            }
            None => {
                let mut c = Command::new(SHELL);
                c.args(["-c", "true"]);
                c
            }
        };
        if let Some(user) = &self.run_as {
            probe.uid(user.uid).gid(user.gid);
        }
        self.limits.install(&mut probe);
        let out = probe
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                unavailable(match &self.sandbox {
                    Some(s) => format!("cannot run {}: {e}", s.bwrap().display()),
                    None => format!("cannot run {SHELL}: {e}"),
                })
            })?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(unavailable(format!(
                "`{SHELL} -c true` {}failed ({}): {}",
                if self.sandbox.is_some() {
                    "in the sandbox "
                } else {
                    ""
                },
                out.status,
                stderr.trim()
            )))
        }
    }

    fn check_payload_env(&self, env: &BTreeMap<String, String>) -> Result<(), Refusal> {
        let Some(allowed) = &self.payload_env else {
            return Ok(());
        };
        match env.keys().find(|k| !matches_any(allowed, k)) {
            None => Ok(()),
            Some(name) => Err(Refusal {
                rule: "payload_env",
                message: format!(
                    "the payload sets {name:?} in env, which payload_env of executor {} does not allow",
                    self.executor
                ),
            }),
        }
    }
}

/// Words for a signal that a limit sends, to add to "killed by signal N".
pub fn signal_hint(signal: Option<i32>) -> &'static str {
    match signal {
        Some(libc::SIGXCPU) => " (SIGXCPU: the CPU time limit, limits.cpu_secs, ran out)",
        Some(libc::SIGXFSZ) => " (SIGXFSZ: a file grew past limits.file_size_mb)",
        _ => "",
    }
}

/// `name` is one of `patterns`, where a trailing `*` matches a prefix.
fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(options: Value) -> Result<ProcessPolicy, ConfigError> {
        ProcessPolicy::from_options(
            "strict",
            options,
            &KindDefaults {
                kill_grace: Duration::from_secs(1),
            },
        )
    }

    fn spec<'a>(program: Program<'a>, env: &'a BTreeMap<String, String>) -> ChildSpec<'a> {
        ChildSpec {
            program,
            env,
            chit_env: &[],
            working_dir: None,
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_its_path() {
        let err = policy(json!({"allow": ["echo"], "colour": "red"})).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = policy(json!({"limits": {"cpu": 3}})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("limits") && text.contains("cpu"), "{text}");
    }

    #[test]
    fn an_allow_list_refuses_a_shell_line_unless_the_shell_is_allowed() {
        let env = BTreeMap::new();
        let p = policy(json!({"allow": ["echo"]})).unwrap();
        let err = p
            .prepare(&spec(Program::Shell("echo hi"), &env))
            .unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Refused);
        assert_eq!(err.details["rule"], "allow");
        assert!(!err.is_retryable());
        let args = vec!["hi".to_owned()];
        let direct = Program::Direct {
            program: "echo",
            args: &args,
        };
        assert!(p.prepare(&spec(direct, &env)).is_ok());
        let p = policy(json!({"allow": ["echo", "sh"]})).unwrap();
        assert!(p.prepare(&spec(Program::Shell("echo hi"), &env)).is_ok());
    }

    #[test]
    fn a_program_of_another_path_with_an_allowed_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("echo");
        std::fs::copy(programs::resolve("echo", None).unwrap(), &fake).unwrap();
        let env = BTreeMap::new();
        let p = policy(json!({"allow": ["echo"]})).unwrap();
        let path = fake.to_str().unwrap();
        let err = p
            .prepare(&spec(
                Program::Direct {
                    program: path,
                    args: &[],
                },
                &env,
            ))
            .unwrap_err();
        assert_eq!(err.details["rule"], "allow", "{err}");
    }

    #[test]
    fn a_block_list_matches_by_name_whatever_the_path() {
        let env = BTreeMap::new();
        let p = policy(json!({"block": ["rm"]})).unwrap();
        let rm = programs::resolve("rm", None).unwrap();
        for program in ["rm", rm.to_str().unwrap()] {
            let err = p
                .prepare(&spec(Program::Direct { program, args: &[] }, &env))
                .unwrap_err();
            assert_eq!(err.details["rule"], "block", "{err}");
        }
    }

    #[test]
    fn payload_env_names_outside_the_list_are_refused() {
        let p = policy(json!({"payload_env": ["GREETING", "LC_*"]})).unwrap();
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_owned(), "hi".to_owned());
        env.insert("LC_ALL".to_owned(), "C".to_owned());
        assert!(p.prepare(&spec(Program::Shell("true"), &env)).is_ok());
        env.insert("LD_PRELOAD".to_owned(), "/tmp/x.so".to_owned());
        let err = p.prepare(&spec(Program::Shell("true"), &env)).unwrap_err();
        assert_eq!(err.details["rule"], "payload_env");
        assert!(err.message.contains("LD_PRELOAD"), "{err}");
    }

    #[tokio::test]
    async fn a_sandboxed_child_runs_as_the_configured_user_in_a_scratch_directory() {
        let me = nix::unistd::geteuid();
        let (user, uid) = if me.is_root() {
            ("nobody".to_owned(), 65534)
        } else {
            (me.as_raw().to_string(), me.as_raw())
        };
        let p = policy(json!({"user": user, "sandbox": {}, "limits": {"open_files": 32}})).unwrap();
        assert!(p.is_sandboxed());
        p.health().await.unwrap();
        let env = BTreeMap::new();
        let script = Program::Shell("id -u; pwd; ulimit -n; touch here && echo wrote");
        let (mut cmd, scratch) = p.prepare(&spec(script, &env)).unwrap().into_parts();
        let scratch = scratch.expect("a scratch directory");
        let out = cmd.output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let dir = scratch.path().display().to_string();
        assert_eq!(text, format!("{uid}\n{dir}\n32\nwrote\n"), "{out:?}");
        assert!(scratch.path().join("here").exists());
    }

    #[test]
    fn bad_lists_are_configuration_errors() {
        assert!(policy(json!({"allow": ["./x"]})).is_err());
        assert!(policy(json!({"block": [""]})).is_err());
        assert!(policy(json!({"env_passthrough": ["A=B"]})).is_err());
        assert!(policy(json!({"max_output_bytes": 0})).is_err());
        assert!(policy(json!({"user": "no-such-user-chit"})).is_err());
    }
}
