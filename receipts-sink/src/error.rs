//! The sink's error type, saying whether trying again can help.
//!
//! The consumer branches on [`SinkError::is_transient`]: a transient store
//! error keeps the batch in memory and retries it, a transient broker error
//! reconnects. The HTTP API maps [`SinkError::BadCursor`] to a 400 and
//! everything else to a generic 500.

use thiserror::Error;

/// What went wrong in the receipts sink.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The store URL is neither `sqlite://...` nor `postgres://...`, or does not parse.
    #[error("invalid store URL {url:?}: {reason}")]
    BadStoreUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The store could not be opened: the SQLite file or its directory, or
    /// the PostgreSQL server. Names the store (never a password) once.
    #[error("cannot open the receipt store {store}: {reason}")]
    OpenStore {
        /// The SQLite file's path, or `postgres://user@host:port/db`.
        store: String,
        /// What went wrong, and what to do when that is known.
        reason: String,
    },
    /// A query or transaction failed.
    #[error("store error: {0}")]
    Store(#[from] sqlx::Error),
    /// The store's schema could not be brought up to date.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row cannot be read back (bad JSON, unknown state, bad time).
    #[error("corrupt row in the store: {0}")]
    Corrupt(String),
    /// A list cursor that this store did not hand out.
    #[error("invalid cursor: {0}")]
    BadCursor(String),
    /// The broker could not be reached, or refused access or a declaration.
    #[error("broker error: {0}")]
    Broker(#[from] broker_link::LinkError),
    /// The sink group name cannot be used in a queue name.
    #[error("{0}")]
    BadGroup(String),
    /// Another sink of this group writes to another store.
    #[error(
        "another sink of group {group:?} writes to {theirs}, not to {mine}: sinks of one group \
         share its queue, so each store would get only part of every chain. Give this sink a \
         group of its own (--group NAME) to store every receipt, or point it at the same store \
         to share the work"
    )]
    GroupConflict {
        /// The group.
        group: String,
        /// This sink's store.
        mine: String,
        /// The other sink's store.
        theirs: String,
    },
    /// An AMQP operation on an open connection failed.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker connection or channel went away.
    #[error("broker connection lost: {0}")]
    ConnectionLost(String),
    /// A bug: a task panicked or an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
    /// The HTTP listener could not be bound or failed.
    #[error("HTTP server error: {0}")]
    Http(#[source] std::io::Error),
    /// The HTTP API's address could not be bound (in use, not local, no
    /// permission). The source is the operating system's error.
    #[error("cannot listen on {addr} for the HTTP API (--http)")]
    HttpBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// True when the same operation may succeed later: the database or broker
    /// was unreachable, busy, or aborted the transaction to break a deadlock.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Store(e) => sqlx_is_transient(e),
            SinkError::Broker(e) => e.is_transient(),
            SinkError::Amqp(_) | SinkError::ConnectionLost(_) => true,
            SinkError::BadStoreUrl { .. }
            | SinkError::Migrate(_)
            | SinkError::Corrupt(_)
            | SinkError::BadCursor(_)
            | SinkError::Internal(_)
            | SinkError::Http(_)
            | SinkError::HttpBind { .. }
            | SinkError::OpenStore { .. }
            | SinkError::BadGroup(_)
            | SinkError::GroupConflict { .. } => false,
        }
    }
}

/// SQLite `BUSY`/`LOCKED` and PostgreSQL serialization failures, deadlocks,
/// connection and resource errors are worth retrying; constraint and syntax
/// errors are not.
fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // SQLite primary codes 5 (BUSY) and 6 (LOCKED), with extended variants.
            if let Ok(n) = code.parse::<i32>() {
                return matches!(n & 0xff, 5 | 6);
            }
            // PostgreSQL SQLSTATE classes: 08 connection, 40 transaction
            // rollback (serialization, deadlock), 53 resources, 57 operator
            // intervention (shutdown), 58 system error.
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_and_url_errors_are_permanent() {
        assert!(!SinkError::BadCursor("x".into()).is_transient());
        let e = SinkError::BadStoreUrl {
            url: "mysql://".into(),
            reason: "unsupported".into(),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("mysql://"));
    }

    #[test]
    fn pool_exhaustion_is_transient() {
        assert!(SinkError::Store(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!SinkError::Store(sqlx::Error::RowNotFound).is_transient());
    }
}
