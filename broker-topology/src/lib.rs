//! The contract between every part of chit and any AMQP client that wants to
//! take part: names, declarations, the task envelope, receipts and codecs.
//!
//! # Layout
//!
//! - [`names`]: exchange and queue names, derived from a capability (task type).
//! - [`declare`]: the topology as data, applied idempotently and compared with
//!   what a broker has.
//! - [`envelope`]: how a task travels: AMQP properties and `x-chit-*` headers.
//! - [`receipt`]: the receipt schema and the receipt batch that carries it.
//! - [`codec`]: JSON and MessagePack bodies, chosen by content type.
//! - [`control`]: cancel requests broadcast to workers.
//! - [`connect`]: the one way chit opens a broker connection (heartbeats, names,
//!   reconnect backoff).
//! - [`link`]: [`BrokerLink`], the one owner of a component's connection.
//! - [`retry`]: backoff policy and the delay tiers used by retry queues.
//!
//! The wire format is written up for humans in `docs/protocol.md`; this crate is
//! its executable form. Nothing here spawns tasks: it is the vocabulary that the
//! producer, worker and receipts-sink crates speak.

pub mod codec;
pub mod connect;
pub mod control;
pub mod declare;
pub mod envelope;
mod error;
pub mod link;
pub mod names;
pub mod receipt;
pub mod retry;

pub use codec::ContentType;
pub use connect::{Backoff, connect};
pub use declare::{Capability, Topology, TopologyReport};
pub use envelope::TaskEnvelope;
pub use error::{Error, ErrorKind};
pub use link::{BrokerLink, LinkState, Session};
pub use receipt::{Artifact, Receipt, ReceiptType};
