//! Publishing chit tasks and receipts, with publisher confirms.
//!
//! # Layout
//!
//! - [`Producer`] publishes tasks to the task exchange with the mandatory flag
//!   and pipelined confirms, then emits each task's `queued` receipt.
//! - `pass`: the bookkeeping of one publish of many tasks, testable alone.
//! - [`TaskSpec`] is one task to publish.
//! - `validation`: what is checked before publishing (the payload against
//!   its capability's schema, the envelope's values).
//! - `control`: [`Producer::cancel`] broadcasts a cancel request.
//! - `dlq`: list, replay and purge dead letters.
//! - `reply`: the reply queue and the waiters of
//!   [`Producer::publish_and_wait`], which gives a [`WaitOutcome`].
//!
//! Nothing is reported as published without a broker confirm. Every message
//! goes out through `broker-link`.

mod control;
mod dlq;
mod error;
mod pass;
mod publisher;
mod reply;
mod task;
mod validation;

pub use dlq::{DeadLetter, REPLAY_ATTEMPTS};
pub use error::{PublishError, PublishErrorKind};
pub use publisher::{Producer, ProducerConfig, Published, WaitOutcome};
pub use task::TaskSpec;
