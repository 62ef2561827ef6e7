//! Worker errors: configuration problems (fix and restart) versus broker
//! trouble (the worker retries by itself).

use thiserror::Error;

/// Why a worker could not start or had to stop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A capability names an executor that is not registered.
    #[error("no executor named {name:?} (known executors: {known})")]
    UnknownExecutor {
        /// The missing name.
        name: String,
        /// What is registered.
        known: String,
    },
    /// The configuration is unusable.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// An executor's health check failed at start.
    #[error("executor {executor} is not healthy: {message}")]
    Unhealthy {
        /// Executor name.
        executor: String,
        /// Its complaint.
        message: String,
    },
    /// A capability name breaks the wire contract.
    #[error(transparent)]
    Contract(#[from] broker_topology::Error),
    /// The broker refused something that retrying will not fix.
    #[error(transparent)]
    Broker(#[from] broker_link::LinkError),
}

impl WorkerError {
    /// True when restarting the worker unchanged could help.
    pub fn is_transient(&self) -> bool {
        matches!(self, WorkerError::Broker(e) if e.is_transient())
    }
}
