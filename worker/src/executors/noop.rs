//! `noop`: succeeds at once. For benchmarks and smoke tests of the pipeline.

use crate::executor::{Cancellation, ExecError, Executor, Outcome, TaskContext};
use async_trait::async_trait;
use serde_json::Value;

/// Does nothing, successfully.
#[derive(Debug, Default)]
pub struct NoopExecutor;

#[async_trait]
impl Executor for NoopExecutor {
    fn name(&self) -> &str {
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
