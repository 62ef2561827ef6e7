//! The executor registry: executor names to implementations.

use crate::error::WorkerError;
use crate::executor::Executor;
use crate::executors::{CommandExecutor, NoopExecutor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Executors by name.
#[derive(Clone, Default)]
pub struct Registry {
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

impl Registry {
    /// The executors chit ships: `command.execute` and `noop`.
    pub fn builtin(kill_grace: Duration) -> Self {
        let mut r = Registry::default();
        r.register(Arc::new(CommandExecutor::new(kill_grace)));
        r.register(Arc::new(NoopExecutor::default()));
        r
    }

    /// Adds (or replaces) an executor under its own name.
    pub fn register(&mut self, executor: Arc<dyn Executor>) {
        self.executors.insert(executor.name().to_owned(), executor);
    }

    /// Looks an executor up, with an error listing what exists.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Executor>, WorkerError> {
        self.executors
            .get(name)
            .cloned()
            .ok_or_else(|| WorkerError::UnknownExecutor {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// Every registered executor, by name.
    pub fn executors(&self) -> impl Iterator<Item = &Arc<dyn Executor>> {
        self.executors.values()
    }

    /// Registered names.
    pub fn names(&self) -> Vec<String> {
        self.executors.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_executor_lists_known_ones() {
        let r = Registry::builtin(Duration::from_secs(1));
        assert!(r.get("command.execute").is_ok());
        let err = r.get("http.request").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("http.request") && text.contains("command.execute"),
            "{text}"
        );
    }
}
