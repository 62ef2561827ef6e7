//! `noop`: succeeds at once. For benchmarks and smoke tests of the pipeline.

use crate::executor::{Cancellation, ExecError, Executor, Outcome, TaskContext};
use async_trait::async_trait;
use serde_json::Value;

/// Does nothing, successfully.
#[derive(Debug)]
pub struct NoopExecutor {
    name: String,
}

impl NoopExecutor {
    /// A noop executor under another name, as `[executor.NAME] kind = "noop"`.
    pub fn named(name: impl Into<String>) -> Self {
        NoopExecutor { name: name.into() }
    }
}

impl Default for NoopExecutor {
    fn default() -> Self {
        NoopExecutor::named("noop")
    }
}

#[async_trait]
impl Executor for NoopExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "noop"
    }

    fn validate(&self, _payload: &Value) -> Result<(), ExecError> {
        Ok(())
    }

    async fn execute(
        &self,
        _ctx: &TaskContext,
        _payload: Value,
        _cancel: Cancellation,
    ) -> Result<Outcome, ExecError> {
        Ok(Outcome::default())
    }

    async fn health_check(&self) -> Result<(), ExecError> {
        Ok(())
    }
}
