//! Publishing chit tasks and receipts, with publisher confirms.
//!
//! # Layout
//!
//! - [`Producer`] publishes tasks to the task exchange with the mandatory flag
//!   and pipelined confirms, then emits each task's `queued` receipt.
//! - [`ReceiptPublisher`] batches receipts into few AMQP messages and tells each
//!   caller when its receipts are confirmed. The worker uses it too: it is the
//!   one place where receipts reach the broker.
//! - [`TaskSpec`] is one task to publish.
//! - `control`: [`Producer::cancel`] broadcasts a cancel request.
//! - `dlq`: list, replay and purge dead letters.
//!
//! Nothing is reported as published without a broker confirm.

mod control;
mod dlq;
mod error;
mod publisher;
mod receipts;
mod task;

pub use dlq::{DeadLetter, REPLAY_ATTEMPTS};
pub use error::{PublishError, PublishErrorKind};
pub use publisher::{Producer, ProducerConfig, Published};
pub use receipts::{BatchConfig, ReceiptPublisher};
pub use task::TaskSpec;
