//! One task to publish: its type, encoded payload and per-task settings.

use crate::error::{PublishError, PublishErrorKind};
use broker_topology::{ContentType, TaskEnvelope, names};
use serde_json::Value;

/// A task ready to publish.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Envelope: id, type, attempt, headers.
    pub envelope: TaskEnvelope,
    /// Encoded payload.
    pub body: Vec<u8>,
}

impl TaskSpec {
    /// A task whose payload is encoded with `content_type` (JSON or MessagePack).
    pub fn new(
        task_type: &str,
        payload: &Value,
        content_type: ContentType,
    ) -> Result<Self, PublishError> {
        names::validate_capability(task_type)
            .map_err(|e| PublishError::new(PublishErrorKind::InvalidTask, e.to_string()))?;
        let body = content_type
            .encode(payload)
            .map_err(|e| PublishError::new(PublishErrorKind::InvalidTask, e.to_string()))?;
        let mut envelope = TaskEnvelope::new(task_type);
        envelope.content_type = content_type;
        Ok(TaskSpec { envelope, body })
    }

    /// A JSON task.
    pub fn json(task_type: &str, payload: &Value) -> Result<Self, PublishError> {
        TaskSpec::new(task_type, payload, ContentType::Json)
    }

    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.envelope.task_id
    }
}
