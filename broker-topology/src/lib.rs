//! The contract between every part of chit and any AMQP client that wants to
//! take part: names, declarations, the task envelope, receipts and codecs.
//!
//! # Layout
//!
//! - [`names`]: exchange and queue names, derived from a capability (task type).
//! - [`declare`]: the topology as data, and the report of how a broker
//!   compares with it.
//! - [`envelope`]: how a task travels: AMQP properties and `x-chit-*` headers.
//! - [`receipt`]: the receipt schema and the receipt batch that carries it.
//! - [`codec`]: JSON and MessagePack bodies, chosen by content type.
//! - [`control`]: cancel requests broadcast to workers.
//! - [`heartbeat`]: the heartbeats workers send on the events exchange.
//! - [`dead_letter`]: dead letters the broker made, and their receipts.
//! - [`payload_schema`]: the JSON Schemas of the built-in capabilities'
//!   payloads, and checking a payload against one.
//! - [`retry`]: backoff policy and the delay tiers used by retry queues.
//! - [`schedule`]: delayed tasks: their delay queue, rounded up, and the
//!   body of their `scheduled` receipt.
//! - [`trace`]: W3C trace context: the `traceparent` header, and the trace
//!   and span ids a receipt records.
//!
//! The wire format is written up for humans in `docs/protocol.md`; this crate is
//! its executable form. Nothing here does I/O or spawns tasks: it is the
//! vocabulary that `broker-link`, the producer, worker and receipts-sink speak.

pub mod codec;
pub mod control;
pub mod dead_letter;
pub mod declare;
pub mod envelope;
mod error;
pub mod heartbeat;
pub mod names;
pub mod payload_schema;
pub mod receipt;
pub mod retry;
pub mod schedule;
pub mod trace;

pub use codec::ContentType;
pub use declare::{Capability, EntityReport, EntityState, Topology, TopologyReport};
pub use envelope::TaskEnvelope;
pub use error::{Error, ErrorKind};
pub use heartbeat::Heartbeat;
pub use payload_schema::{PayloadSchema, Violation};
pub use receipt::{Artifact, Receipt, ReceiptType};
pub use trace::{SpanId, TraceContext, TraceId};
