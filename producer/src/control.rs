//! Cancelling tasks: a cancel request broadcast to every worker.

use crate::error::{PublishError, PublishErrorKind};
use crate::publisher::Producer;
use broker_topology::control::CancelRequest;
use broker_topology::{ContentType, names};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};

impl Producer {
    /// Asks every worker to cancel `task_id`; returns once the broker confirmed.
    pub async fn cancel(&self, task_id: &str, force: bool) -> Result<(), PublishError> {
        let req = CancelRequest {
            task_id: task_id.to_owned(),
            force,
            requested_at: chrono::Utc::now(),
        };
        let body = ContentType::Json
            .encode(&req)
            .expect("cancel request encodes");
        let deadline = std::time::Instant::now() + self.config().publish_deadline;
        let session = self
            .link()
            .session_until(Some(deadline))
            .await
            .map_err(|e| {
                PublishError::new(
                    PublishErrorKind::Unavailable,
                    format!("cannot send the cancel request: {e}"),
                )
            })?;
        let confirm = session
            .publisher
            .basic_publish(
                names::CONTROL_EXCHANGE.into(),
                "".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default()
                    .with_content_type(ContentType::Json.as_str().into())
                    .with_delivery_mode(2),
            )
            .await
            .map_err(|e| PublishError::new(PublishErrorKind::Unavailable, e.to_string()))?
            .await
            .map_err(|e| PublishError::new(PublishErrorKind::Unavailable, e.to_string()))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            _ => Err(PublishError::new(
                PublishErrorKind::Nacked,
                "the broker refused the cancel request",
            )),
        }
    }
}
