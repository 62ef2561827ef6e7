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

/// Why an executor in the config file cannot be built. The worker does not
/// start: fix the file and start it again.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `kind` names no row of the kind table.
    #[error("executor {executor}: unknown kind {kind:?} (known kinds: {known})")]
    UnknownKind {
        /// The executor's name.
        executor: String,
        /// What `kind` said.
        kind: String,
        /// The kinds there are.
        known: String,
    },
    /// An option is unknown or of the wrong type; `path` is where it sits
    /// (`limits`), empty at the top of the executor's table.
    #[error("executor {executor}: {}{message}", at(path))]
    Options {
        /// The executor's name.
        executor: String,
        /// Where in its table.
        path: String,
        /// The parser's words, naming the key.
        message: String,
    },
    /// The options parse but cannot be carried out (an unknown user, a
    /// limit that binds nothing).
    #[error("executor {executor}: {message}")]
    Invalid {
        /// The executor's name.
        executor: String,
        /// What is wrong.
        message: String,
    },
    /// A sandbox is configured and cannot be made: chit never runs the
    /// executor without it.
    #[error("executor {executor}: sandbox configured but unusable: {message}")]
    Sandbox {
        /// The executor's name.
        executor: String,
        /// Why.
        message: String,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}
