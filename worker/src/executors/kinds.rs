//! The kind table: how an executor written in the config file is built.
//!
//! ```toml
//! [executor.build]          # the executor's name, which capabilities use
//! kind = "command"          # a row of KINDS below
//! allow = ["make", "git"]   # then the kind's own options
//! ```
//!
//! The binary reads `[executor.NAME]`, takes `kind` out and hands the rest
//! to [`build`] as a JSON object. Each kind reads its options into a struct
//! with `#[serde(deny_unknown_fields)]` through [`parse_options`], so an
//! unknown key is an error naming the executor, the path and the key. One
//! kind may back several executors with different options, and so serve
//! several capabilities with different policies.
//!
//! **A new kind** is one row in [`KINDS`]: its name, a line for `chit` to
//! show, and a function from (name, options, defaults) to the executor.
//! A kind that runs programs takes its own keys out of the options object
//! and builds the rest as a [`ProcessPolicy`](super::process::ProcessPolicy),
//! so allow lists, limits and the sandbox read the same in every kind.

use super::process::ProcessPolicy;
use super::{CommandExecutor, NoopExecutor};
use crate::error::ConfigError;
use crate::executor::Executor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Worker-wide settings a kind falls back on when its options leave them out.
#[derive(Debug, Clone)]
pub struct KindDefaults {
    /// Time between SIGTERM and SIGKILL when a task is stopped
    /// (`--kill-grace-secs`).
    pub kill_grace: Duration,
}

impl Default for KindDefaults {
    fn default() -> Self {
        KindDefaults {
            kill_grace: crate::WorkerConfig::DEFAULT_KILL_GRACE,
        }
    }
}

/// Builds one executor of a kind from its name and options.
pub type BuildFn = fn(
    name: &str,
    options: Value,
    defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError>;

/// One row of the kind table.
#[derive(Clone, Copy)]
pub struct Kind {
    /// What `kind = "..."` says.
    pub name: &'static str,
    /// One line on what it runs.
    pub summary: &'static str,
    /// Makes an executor of this kind.
    pub build: BuildFn,
}

/// Every kind a config file may name.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "command",
        summary: "runs a command line or a program, under the process policy",
        build: command,
    },
    Kind {
        name: "noop",
        summary: "succeeds at once",
        build: noop,
    },
    Kind {
        name: "exec",
        summary: "runs one program per task: the task as JSON on stdin, its result as JSON on stdout",
        build: super::exec::build_kind,
    },
    Kind {
        name: "http",
        summary: "makes one HTTP request, behind the SSRF guard and the host policy",
        build: super::http::build_kind,
    },
    Kind {
        name: "file.read",
        summary: "reads a file beneath the executor's root",
        build: super::file::build_read,
    },
    Kind {
        name: "file.write",
        summary: "writes a file beneath the executor's root (when writable)",
        build: super::file::build_write,
    },
    Kind {
        name: "file.edit",
        summary: "replaces exact text in a file beneath the executor's root (when writable)",
        build: super::file::build_edit,
    },
    Kind {
        name: "file.grep",
        summary: "finds lines matching a regex in files beneath the executor's root",
        build: super::file::build_grep,
    },
    Kind {
        name: "file.find",
        summary: "finds paths matching a glob beneath the executor's root",
        build: super::file::build_find,
    },
    Kind {
        name: "file.list",
        summary: "lists a directory beneath the executor's root",
        build: super::file::build_list,
    },
    Kind {
        name: "sql",
        summary: "runs one parameterised SQL statement on the configured database (read-only by default)",
        build: super::sql::build_kind,
    },
    // New kinds go here: see the module docs and docs/architecture.md.
];

/// The names of the known kinds, in table order.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// Builds executor `name` of `kind` from `options` (a JSON object, the
/// config table without `kind`).
pub fn build(
    kind: &str,
    name: &str,
    options: Value,
    defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::Invalid {
            executor: name.to_owned(),
            message: "an executor needs a name".into(),
        });
    }
    let row = KINDS
        .iter()
        .find(|k| k.name == kind)
        .ok_or_else(|| ConfigError::UnknownKind {
            executor: name.to_owned(),
            kind: kind.to_owned(),
            known: names().join(", "),
        })?;
    (row.build)(name, options, defaults)
}

/// Reads a kind's options, naming the executor, the path and the key of
/// anything wrong (`limits: unknown field `cpu`, expected one of ...`).
pub fn parse_options<T: DeserializeOwned>(
    executor: &str,
    options: Value,
) -> Result<T, ConfigError> {
    let options = if options.is_null() {
        Value::Object(Default::default())
    } else {
        options
    };
    serde_path_to_error::deserialize(options).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Options {
            executor: executor.to_owned(),
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

fn command(
    name: &str,
    options: Value,
    defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    let policy = ProcessPolicy::from_options(name, options, defaults)?;
    Ok(Arc::new(CommandExecutor::with_policy(name, policy)))
}

/// `noop` takes no options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoopOptions {}

fn noop(
    name: &str,
    options: Value,
    _defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    let NoopOptions {} = parse_options(name, options)?;
    Ok(Arc::new(NoopExecutor::named(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_kind_lists_the_known_ones() {
        let err = build("teleport", "x", json!({}), &KindDefaults::default())
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("teleport") && text.contains("command"),
            "{text}"
        );
    }

    #[test]
    fn an_executor_is_named_as_configured_and_knows_its_kind() {
        let e = build(
            "command",
            "build",
            json!({"allow": ["make"]}),
            &KindDefaults::default(),
        )
        .unwrap();
        assert_eq!((e.name(), e.kind()), ("build", "command"));
        let e = build("noop", "nothing", json!({}), &KindDefaults::default()).unwrap();
        assert_eq!((e.name(), e.kind()), ("nothing", "noop"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = build("noop", "n", json!({"speed": 1}), &KindDefaults::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("speed"), "{err}");
        let err = build(
            "command",
            "c",
            json!({"sandbox": {"netwrok": true}}),
            &KindDefaults::default(),
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("sandbox") && text.contains("netwrok"),
            "{text}"
        );
    }
}
