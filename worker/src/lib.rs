//! chit's worker: takes leases on tasks from RabbitMQ, runs them through an
//! executor, and emits a receipt for every step.
//!
//! # Layout
//!
//! - [`run`] wires a worker from a [`WorkerConfig`] and a [`Registry`].
//! - `consumer`: one session per connection; leases in, tasks out.
//! - `attempt`: one delivery from lease to settlement: accepted, execute,
//!   final receipt, retry or dead letter, ack.
//! - `lease`: the lease book of a channel, with multi-acks.
//! - [`executor`]: the [`Executor`] trait every kind of work plugs in behind;
//!   [`executors`] holds those chit ships, one file each.
//! - `control`: listens for cancel requests.
//! - `dead_letter_watch`: writes the receipt of a task the broker dead-lettered.
//! - `health`: the optional `/healthz` and `/readyz` endpoints.
//! - `metrics`: the Prometheus metrics, `/metrics` on the same address.
//! - `heartbeat`: the heartbeat on the events exchange, for live-worker lists.
//! - `readiness`: executor health checks, at start and periodically.
//! - [`shutdown`]: the stop signal every task holds.

mod attempt;
mod cancel;
mod config;
mod consumer;
mod control;
mod dead_letter_watch;
mod error;
pub mod executor;
pub mod executors;
mod health;
mod heartbeat;
mod lease;
mod metrics;
mod readiness;
mod registry;
pub mod shutdown;
mod worker;

pub use config::{CapabilityConfig, WorkerConfig, default_worker_id};
pub use error::{ConfigError, WorkerError};
pub use executor::{
    CancelReason, Cancellation, ExecError, ExecErrorKind, Executor, InProgress, Outcome,
    TaskContext,
};
pub use registry::Registry;
pub use worker::{BROKER_CONSUMER_TIMEOUT, run};
