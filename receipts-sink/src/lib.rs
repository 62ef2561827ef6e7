//! The receipts sink: consumes chit's receipt batches from RabbitMQ into a
//! durable, queryable store of receipt chains, and serves them over HTTP.
//!
//! # Layout
//!
//! - `consumer`: [`run`] and [`serve`], the main loop. Batches receipts,
//!   writes each batch in one transaction, acks after the commit, reconnects
//!   after a lost connection, and drains on shutdown. Configured by
//!   [`SinkConfig`].
//! - `batch`: the open batch and when it closes (size or time).
//! - `group`: sink groups; a sink refuses to join a group whose other sinks
//!   write to another store.
//! - `legacy`: moves receipts out of a group's sink queue of an older chit
//!   (declared without a delivery limit) into the current one.
//! - `retention`: deletes finished tasks older than [`SinkConfig::retain`].
//! - `quarantine`: [`replay_quarantine`], receipt messages the broker moved
//!   aside sent back to their sink queues.
//! - [`store`]: [`Store`], SQLite or PostgreSQL; idempotent batch writes,
//!   task lookups, paginated listings, quarantine, retention.
//! - [`task`]: task states and how they are derived from receipts in any
//!   order ([`TaskState`], [`TaskRow`], [`TaskView`]).
//! - [`api`]: the HTTP API as an axum [`Router`](axum::Router), [`router`].
//! - `chain`: [`order_by_parents`], a chain in parent order, whatever the
//!   clocks that stamped it.
//! - [`render`]: text views for the CLI, [`render_tree`] and
//!   [`render_task_table`].
//! - `status`: the broker link's state and totals shared with `/healthz`
//!   ([`SinkStatus`]).
//! - `error`: [`SinkError`].
//! - `persist_span`: the `persist` span of a batch write, linked to the
//!   trace context of each receipt in it.
//! - `metrics`: [`SinkMetrics`], the Prometheus metrics behind `/metrics`.
//! - `workers`: [`LiveWorkers`], the last heartbeat of each worker, heard on
//!   a queue of the sink's own, behind `/v1/workers`.
//!
//! Delivery is at least once and storage is idempotent: a receipt is stored
//! once however often it arrives, and a task's state does not depend on the
//! order its receipts arrive in.

pub mod api;
mod batch;
mod chain;
mod consumer;
mod error;
mod group;
mod legacy;
mod metrics;
mod persist_span;
mod quarantine;
pub mod render;
mod retention;
mod status;
pub mod store;
pub mod task;
mod workers;

pub use api::{ApiState, router};
pub use broker_topology::names::DEFAULT_SINK_GROUP;
pub use chain::order_by_parents;
pub use consumer::{
    DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WAIT, DEFAULT_HTTP_ADDR, DEFAULT_PREFETCH,
    DEFAULT_PRUNE_EVERY, DEFAULT_STORE_URL, SinkConfig, run, serve,
};
pub use error::SinkError;
pub use metrics::SinkMetrics;
pub use quarantine::replay_quarantine;
pub use render::{render_task_table, render_tree};
pub use status::{SinkStatus, SinkTotals};
pub use store::{PruneStats, QuarantinedRecord, Store, StoreCounts, StoreKind, WriteStats};
pub use task::{Page, TaskFilter, TaskRow, TaskState, TaskView};
pub use workers::{LiveWorker, LiveWorkers, render_workers, spawn_heartbeat_listener};
