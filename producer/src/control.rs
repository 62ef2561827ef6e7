//! Cancelling tasks: a cancel request broadcast to every worker.

use crate::error::PublishError;
use crate::publisher::Producer;
use broker_link::{Outgoing, PublishOutcome};
use broker_topology::control::CancelRequest;
use broker_topology::{ContentType, names};
use lapin::BasicProperties;

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
        let message = Outgoing {
            exchange: names::CONTROL_EXCHANGE,
            routing_key: "",
            body: &body,
            properties: BasicProperties::default()
                .with_content_type(ContentType::Json.as_str().into())
                .with_delivery_mode(2),
            mandatory: true,
        };
        match self
            .link()
            .publish_confirmed(&message, Some(deadline))
            .await
        {
            PublishOutcome::Confirmed => Ok(()),
            outcome => Err(PublishError::from_outcome(
                outcome,
                "the cancel request",
                names::CONTROL_EXCHANGE,
            )),
        }
    }
}
