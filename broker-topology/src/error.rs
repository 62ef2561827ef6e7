//! Errors of the wire contract, each saying whether trying again can help.

use std::fmt;

/// What went wrong, in the terms a caller branches on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A queue or exchange exists with other arguments than chit declares.
    /// Never transient: an operator has to reconcile it.
    Inequivalent {
        /// `queue` or `exchange`.
        entity: &'static str,
        /// The queue or exchange name.
        name: String,
        /// The argument that differs, as the broker named it.
        argument: String,
        /// The broker's full explanation.
        detail: String,
    },
    /// A body could not be decoded (or encoded) with its content type.
    Codec,
    /// The content type is not one chit reads.
    UnsupportedContentType(String),
    /// A header or property has a value of the wrong type or out of range.
    BadHeader(String),
    /// A capability (task type) name cannot be used as a routing key and queue name.
    BadCapability(String),
    /// The AMQP URL cannot be parsed.
    BadUrl,
    /// The broker could not be reached or dropped the connection.
    Connection,
    /// The broker refused an operation (access, not found, ...).
    Broker,
}

/// An error from the wire contract.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// True when the same call may succeed later (the broker was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Connection)
    }

    pub(crate) fn from_lapin(context: &str, err: lapin::Error) -> Self {
        let kind = if err.is_io_error()
            || matches!(
                err.kind(),
                lapin::ErrorKind::InvalidConnectionState(_)
                    | lapin::ErrorKind::InvalidChannelState(..)
                    | lapin::ErrorKind::MissingHeartbeatError
            ) {
            ErrorKind::Connection
        } else {
            ErrorKind::Broker
        };
        Error::new(kind, format!("{context}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
