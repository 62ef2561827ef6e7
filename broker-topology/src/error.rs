//! Errors of the wire contract: input that does not follow it. None of them
//! passes with time, so none is transient.

use std::fmt;

/// What broke the contract, in the terms a caller branches on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A body could not be decoded (or encoded) with its content type.
    Codec,
    /// The content type is not one chit reads.
    UnsupportedContentType(String),
    /// A header or property has a value of the wrong type or out of range.
    BadHeader(String),
    /// A capability (task type) name cannot be used as a routing key and queue name.
    BadCapability(String),
    /// A payload breaks its capability's schema; every violation, in order.
    InvalidPayload(Vec<crate::payload_schema::Violation>),
    /// A capability's payload schema is not a valid JSON Schema.
    BadSchema(String),
    /// A task's delay is zero or longer than `schedule::MAX_DELAY`.
    BadDelay,
}

/// An error from the wire contract.
#[derive(Debug, Clone)]
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
