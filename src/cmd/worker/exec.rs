//! `chit worker exec TASK_TYPE [worker flags] -- PROGRAM [ARGS...]`: a
//! worker of one task type that runs a program, in any language, once per
//! task (the `exec` executor; the contract is in docs/protocol.md).
//!
//! The program is registered as executor `exec:TASK_TYPE`, with no process
//! policy; a config file's `[executor.NAME] kind = "exec"` names a program
//! with a policy instead. `--exec-timeout` is the attempt's one run-time
//! limit, the same as `--timeout-secs`.

use super::WorkerFlags;
use crate::settings::{WorkerSettings, parse_time_limit};
use clap::Args;
use std::sync::Arc;
use std::time::Duration;
use worker::Executor;
use worker::executors::{ExecExecutor, ExecProgram};

#[derive(Args)]
pub struct ExecArgs {
    /// The task type to consume.
    #[arg(value_name = "TASK_TYPE")]
    task_type: String,
    #[command(flatten)]
    flags: WorkerFlags,
    /// Run-time limit of each run of the program, in seconds; 0 for none
    /// (the same limit as --timeout-secs; a task's own x-chit-timeout-ms wins).
    #[arg(long, value_parser = parse_exec_timeout, conflicts_with = "timeout_secs")]
    exec_timeout: Option<f64>,
    /// The program to run for each task, and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    program: Vec<String>,
}

/// The program `chit worker exec` runs, for the task type it serves.
pub(super) struct ExecRun {
    task_type: String,
    program: ExecProgram,
}

impl ExecArgs {
    /// The worker settings (one capability, served by `exec:TASK_TYPE`),
    /// and the program.
    pub(super) fn into_parts(self) -> (WorkerSettings, ExecRun) {
        let name = ExecExecutor::name_for(&self.task_type);
        let mut settings = self
            .flags
            .into_settings(vec![format!("{}={name}", self.task_type)]);
        if let Some(secs) = self.exec_timeout.filter(|s| *s > 0.0) {
            settings.retry.timeout_secs = Some(secs);
        }
        let mut words = self.program.into_iter();
        let program = ExecProgram {
            program: words.next().unwrap_or_default(),
            args: words.collect(),
        };
        let run = ExecRun {
            task_type: self.task_type,
            program,
        };
        (settings, run)
    }
}

impl ExecRun {
    /// The executor, under the name the capability names.
    pub(super) fn executor(self, kill_grace: Duration) -> Arc<dyn Executor> {
        let name = ExecExecutor::name_for(&self.task_type);
        Arc::new(ExecExecutor::unrestricted(name, self.program, kill_grace))
    }
}

/// `0` (no limit), or a time limit as `--timeout-secs` takes it.
fn parse_exec_timeout(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        _ => parse_time_limit(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{FileConfig, Settings};
    use crate::{Cli, Command};
    use clap::Parser;

    /// `chit worker ARGS...`, as settings and the exec program.
    fn parse(args: &[&str]) -> Result<(WorkerSettings, Option<ExecRun>), clap::Error> {
        let argv = ["chit", "worker"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Worker { args, .. } => Ok(args.into_parts()),
            _ => unreachable!("parsed a worker command"),
        }
    }

    #[test]
    fn exec_takes_a_task_type_worker_flags_and_a_program_after_the_dashes() {
        let (given, run) = parse(&[
            "exec",
            "greet",
            "--concurrency",
            "3",
            "--exec-timeout",
            "2.5",
            "--",
            "python3",
            "greet.py",
            "--loud",
        ])
        .unwrap();
        let run = run.expect("an exec program");
        assert_eq!(run.program.program, "python3");
        assert_eq!(run.program.args, ["greet.py", "--loud"]);
        let config = Settings::new(None, FileConfig::default())
            .worker_config(&given)
            .unwrap();
        assert_eq!(config.concurrency, 3);
        let cap = &config.capabilities[0];
        assert_eq!(
            (cap.name.as_str(), cap.executor.as_str()),
            ("greet", "exec:greet")
        );
        assert_eq!(cap.timeout, Some(Duration::from_millis(2500)));
        let executor = run.executor(config.kill_grace);
        assert_eq!((executor.name(), executor.kind()), ("exec:greet", "exec"));
    }

    #[test]
    fn exec_timeout_zero_is_no_limit_and_the_program_is_required() {
        let (given, _) = parse(&["exec", "greet", "--exec-timeout", "0", "--", "true"]).unwrap();
        assert_eq!(given.retry.timeout_secs, None);
        for bad in [
            &["exec", "greet"][..],
            &["exec", "greet", "--exec-timeout", "-1", "--", "true"],
            &[
                "exec",
                "greet",
                "--exec-timeout",
                "1",
                "--timeout-secs",
                "1",
                "--",
                "true",
            ],
            &["exec", "greet", "--capability", "other", "--", "true"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let (given, run) = parse(&["--capability", "build"]).unwrap();
        assert_eq!(given.capabilities, ["build"]);
        assert!(run.is_none());
    }

    #[test]
    fn the_config_file_names_an_exec_executor_with_its_program() {
        let file: FileConfig = toml::from_str(
            r#"
            [executor.greet]
            kind = "exec"
            program = "python3"
            args = ["examples/exec/greet.py"]

            [[capability]]
            name = "greet"
            executor = "greet"
            "#,
        )
        .unwrap();
        let settings = Settings::new(None, file);
        let registry = settings.executor_registry(Duration::from_secs(1)).unwrap();
        let executor = registry.get("greet").unwrap();
        assert_eq!(executor.kind(), "exec");
        let config = settings.worker_config(&WorkerSettings::default()).unwrap();
        assert_eq!(config.capabilities[0].executor, "greet");

        let typo: FileConfig = toml::from_str(
            r#"
            [executor.greet]
            kind = "exec"
            progam = "python3"
            "#,
        )
        .unwrap();
        let err = Settings::new(None, typo)
            .executor_registry(Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("progam"), "{err:#}");
    }
}
