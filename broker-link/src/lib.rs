//! chit's broker runtime: every connection and every confirmed publish.
//!
//! # Layout
//!
//! - [`connect`]: the one way chit opens a broker connection (heartbeats,
//!   names, reconnect backoff), to one broker or the first answering node
//!   of a comma-separated list.
//! - [`tls`]: [`TlsConfig`], the CA bundle and client certificate of
//!   `amqps://` connections, installed once per process.
//! - [`link`]: [`BrokerLink`], the one owner of a component's connection; it
//!   reconnects with backoff, re-declares the component's topology on every
//!   connection, and reports its [`LinkState`] for health checks.
//! - [`declare`]: applies a `broker_topology::Topology`, and compares a
//!   broker with one.
//! - [`publish`]: [`BrokerLink::publish_confirmed`] and [`publish::send`],
//!   and [`PublishOutcome`], the one reading of what the broker did with a
//!   message (confirmed, returned, nacked, lost).
//! - [`receipts`]: [`ReceiptPublisher`], receipts in confirmed batches, and
//!   [`send_reply`], the receipt that ended a task to its `reply_to`.
//! - [`management`]: the optional management HTTP API, for the figures AMQP
//!   does not give (stream consumers, queues declared on demand).
//! - [`time`]: small timing helpers.
//! - [`trace_context`]: trace context between `tracing` spans,
//!   OpenTelemetry and message headers; off, and free, unless the binary
//!   installs an exporter.
//! - `error`: [`LinkError`], each kind saying whether to retry.
//!
//! The wire contract (names, declarations, envelope, receipts) is
//! `broker-topology`'s; this crate only carries it. Every new way of putting
//! a message on the broker belongs here, so there is one place where trace
//! context is injected and one reading of a confirm.

pub mod connect;
pub mod declare;
mod error;
pub mod link;
pub mod management;
pub mod publish;
pub mod receipts;
pub mod time;
pub mod tls;
pub mod trace_context;

pub use connect::{
    Backoff, DEFAULT_AMQP_URL, DEFAULT_FRAME_MAX, connect, connect_with_tls, redact, split_urls,
};
pub use declare::Declare;
pub use error::{LinkError, NOT_FOUND};
pub use link::{BrokerLink, LinkState, LinkStatus, Session};
pub use publish::{Outgoing, PendingConfirm, PublishOutcome};
pub use receipts::{BatchConfig, Confirmed, ReceiptObserver, ReceiptPublisher, send_reply};
pub use tls::TlsConfig;
