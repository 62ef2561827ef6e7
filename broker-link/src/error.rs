//! [`LinkError`]: what can go wrong between chit and its broker, each kind
//! saying whether trying again can help.
//!
//! Kinds are decided from lapin's error kinds and the broker's reply codes,
//! never from message text.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use thiserror::Error;

/// A broker operation that failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The AMQP URL cannot be parsed. Fix the configuration.
    #[error("invalid AMQP URL {url}: {reason}")]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The broker could not be reached, or the connection or channel went
    /// away. Transient: the link reconnects.
    #[error("{context}: {reason}")]
    Unreachable {
        /// What was being done.
        context: String,
        /// Why it failed.
        reason: String,
    },
    /// The broker refused the credentials or the virtual host
    /// (`ACCESS_REFUSED`, `NOT_ALLOWED`). Retrying will not help.
    #[error("{context}: the broker refused access: {reason}")]
    Refused {
        /// What was being done.
        context: String,
        /// The broker's reply.
        reason: String,
    },
    /// A queue or exchange exists with other arguments than chit declares.
    /// An operator has to reconcile it.
    #[error(
        "{entity} {name} already exists with a different {argument} than chit declares \
         ({detail}); delete it or change it with a policy, then apply again"
    )]
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
    /// The broker refused one operation on a channel (a queue or exchange
    /// that does not exist, say), with its reply code.
    #[error("{context}: {reply_text} (reply code {reply_code})")]
    Rejected {
        /// What was being done.
        context: String,
        /// The AMQP reply code (404 NOT_FOUND, 406 PRECONDITION_FAILED, ...).
        reply_code: u16,
        /// The broker's reply text.
        reply_text: String,
    },
    /// A TLS file (CA bundle, client certificate or key) cannot be read or
    /// used. Fix the file or the setting.
    #[error("TLS file {path}: {reason}")]
    TlsFile {
        /// The file's path.
        path: String,
        /// What is wrong with it (never its content).
        reason: String,
    },
    /// The TLS handshake failed: the broker's certificate is not trusted
    /// (no `--tls-ca` for a private CA, a host name it does not cover), or
    /// the broker refused the client certificate. Retrying will not help.
    #[error(
        "{context}: TLS handshake failed: {reason} (check the broker's certificate against \
         --tls-ca, and the client certificate --tls-cert / --tls-key)"
    )]
    Tls {
        /// What was being done.
        context: String,
        /// rustls's reason.
        reason: String,
    },
    /// The link was closed by its owner.
    #[error("the broker link is closed")]
    Closed,
    /// The receipt publisher stopped before the broker confirmed a receipt.
    #[error("the receipt publisher stopped before the broker confirmed")]
    PublisherStopped,
    /// The broker did not answer before the caller's deadline.
    #[error("{0}")]
    Deadline(String),
}

/// AMQP reply code 404.
pub const NOT_FOUND: u16 = 404;

impl LinkError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, LinkError::Unreachable { .. } | LinkError::Deadline(_))
    }

    /// True when the broker answered 404 NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LinkError::Rejected { reply_code, .. } if *reply_code == NOT_FOUND)
    }

    /// Classifies a lapin error met while doing `context`.
    pub fn from_lapin(context: impl Into<String>, err: lapin::Error) -> Self {
        let context = context.into();
        if let lapin::ErrorKind::ProtocolError(amqp) = err.kind() {
            let reply_text = amqp.get_message().to_string();
            return match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => LinkError::Refused {
                    context,
                    reason: reply_text,
                },
                // The broker closing a connection (forced, restarting, its
                // own errors) passes once it is back.
                AMQPErrorKind::Hard(_) => LinkError::Unreachable {
                    context,
                    reason: reply_text,
                },
                AMQPErrorKind::Soft(_) => LinkError::Rejected {
                    context,
                    reply_code: amqp.get_id(),
                    reply_text,
                },
            };
        }
        if let Some(tls) = crate::tls::tls_failure(&err) {
            return LinkError::Tls {
                context,
                reason: tls.to_string(),
            };
        }
        LinkError::Unreachable {
            context,
            reason: err.to_string(),
        }
    }

    pub(crate) fn unreachable(context: impl Into<String>, reason: impl Into<String>) -> Self {
        LinkError::Unreachable {
            context: context.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPError;

    fn protocol(code: u16, text: &str) -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::from_id(code, text.into()).expect("known code"))
            .into()
    }

    #[test]
    fn reply_codes_decide_the_kind() {
        let refused = LinkError::from_lapin("connecting", protocol(403, "ACCESS_REFUSED - Login"));
        assert!(matches!(refused, LinkError::Refused { .. }));
        assert!(!refused.is_transient());
        let vhost = LinkError::from_lapin("connecting", protocol(530, "NOT_ALLOWED - vhost"));
        assert!(matches!(vhost, LinkError::Refused { .. }));
        let missing = LinkError::from_lapin("declaring", protocol(404, "NOT_FOUND - no queue"));
        assert!(missing.is_not_found());
        assert!(!missing.is_transient());
        let forced = LinkError::from_lapin("consuming", protocol(320, "CONNECTION_FORCED"));
        assert!(forced.is_transient());
    }

    #[test]
    fn message_text_does_not_decide_the_kind() {
        // A 404 whose text happens to mention access is still a 404.
        let e = LinkError::from_lapin("x", protocol(404, "NOT_FOUND - ACCESS_REFUSED in name"));
        assert!(e.is_not_found());
        let io: lapin::Error =
            lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::other("ACCESS_REFUSED")))
                .into();
        assert!(LinkError::from_lapin("x", io).is_transient());
    }

    #[test]
    fn a_rejected_certificate_is_a_tls_error_that_will_not_pass() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io: lapin::Error = lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_error,
        )))
        .into();
        let e = LinkError::from_lapin("cannot connect to amqps://h", io);
        assert!(matches!(e, LinkError::Tls { .. }), "{e}");
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains("TLS handshake failed") && text.contains("certificate"),
            "{text}"
        );
    }
}
