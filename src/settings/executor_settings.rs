//! Executors from the config file. Each `[executor.NAME]` table names a
//! `kind` and gives that kind's options; the table, less `kind`, goes to the
//! worker crate's kind table as JSON, which refuses unknown keys by name.
//! Capabilities then name the executor (`[[capability]] executor = "NAME"`,
//! or `--capability TYPE=NAME`), so several capabilities can share a kind
//! with different policies.
//!
//! ```toml
//! [executor.build]
//! kind = "command"
//! allow = ["make", "git"]
//! env_passthrough = ["PATH", "HOME"]
//!
//! [executor.build.limits]
//! cpu_secs = 600
//! ```

use super::Settings;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::time::Duration;
use worker::Registry;
use worker::executors::kinds::{self, KindDefaults};

impl Settings {
    /// The executors a worker can serve with: chit's built-in ones, then
    /// every `[executor.NAME]` of the config file, built now (a table that
    /// takes a built-in's name replaces it). Any table that cannot be built
    /// is an error, whether or not a capability uses it: a worker never
    /// starts with a configuration it could not carry out.
    pub fn executor_registry(&self, kill_grace: Duration) -> Result<Registry> {
        let mut registry = Registry::builtin(kill_grace);
        let defaults = KindDefaults { kill_grace };
        for (name, table) in &self.file.executors {
            let mut options = serde_json::to_value(table)
                .with_context(|| format!("config file: [executor.{name}] is not plain data"))?;
            let kind = match options.as_object_mut().and_then(|o| o.remove("kind")) {
                Some(Value::String(kind)) => kind,
                Some(other) => {
                    bail!("config file: [executor.{name}] kind must be a string, not {other}")
                }
                None => bail!(
                    "config file: [executor.{name}] needs `kind = \"...\"` (known kinds: {})",
                    kinds::names().join(", ")
                ),
            };
            let executor = kinds::build(&kind, name, options, &defaults)
                .map_err(|e| anyhow!(e).context("config file"))?;
            registry.register(executor);
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{FileConfig, WorkerSettings};

    fn settings(text: &str) -> Settings {
        Settings::new(
            None,
            toml::from_str::<FileConfig>(text).expect("a valid file"),
        )
    }

    #[test]
    fn file_executors_join_the_built_in_ones_under_their_names() {
        let s = settings(
            "[worker]\nhealth_interval_secs = 2.5\n\
             [executor.build]\nkind = \"command\"\nallow = [\"make\"]\n\
             [executor.build.limits]\ncpu_secs = 60\n\
             [executor.quiet]\nkind = \"noop\"\n",
        );
        let registry = s.executor_registry(Duration::from_secs(1)).unwrap();
        assert_eq!(
            registry.names(),
            ["build", "command.execute", "noop", "quiet"]
        );
        let build = registry.get("build").unwrap();
        assert_eq!((build.name(), build.kind()), ("build", "command"));
        let config = s.worker_config(&WorkerSettings::default()).unwrap();
        assert_eq!(config.health_interval, Duration::from_millis(2500));
        // The flag beats the file.
        let given = WorkerSettings {
            health_interval_secs: Some(1.0),
            ..WorkerSettings::default()
        };
        let config = s.worker_config(&given).unwrap();
        assert_eq!(config.health_interval, Duration::from_secs(1));
    }

    #[test]
    fn a_table_without_a_kind_says_which_kinds_there_are() {
        let err = settings("[executor.build]\nallow = []\n")
            .executor_registry(Duration::from_secs(1))
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("[executor.build]") && text.contains("known kinds: command"),
            "{text}"
        );
    }
}
