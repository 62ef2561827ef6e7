//! `sql.query`: runs one parameterised statement against the database the
//! executor's options name, and returns the rows as JSON.
//!
//! The database comes from the worker's config (`url`, PostgreSQL or
//! SQLite), never from the payload: a payload gives only the statement and
//! its parameters, which are bound (`$1`, `$2`, ... in PostgreSQL; `?` or
//! `?1` in SQLite), never spliced into the text.
//!
//! By default the executor is read-only: on PostgreSQL each statement runs
//! in a `BEGIN READ ONLY` transaction, on SQLite the database is opened
//! read-only; a write is then refused by the database itself, and its error
//! is in the receipt. Every statement has a timeout: PostgreSQL's
//! `statement_timeout`, set for the transaction; on SQLite a progress
//! handler that interrupts the statement past its deadline. Rows beyond
//! `max_rows` are not read.

use crate::error::ConfigError;
use crate::executor::{Cancellation, ExecError, ExecErrorKind, Executor, Outcome, TaskContext};
use crate::executors::kinds::{KindDefaults, parse_options};
use async_trait::async_trait;
use broker_topology::payload_schema::PayloadSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod postgres;
mod sqlite;

/// The capability whose payload schema this executor follows.
const CAPABILITY: &str = "sql.query";
/// The executor's row in the kind table (`kind = "sql"`).
pub const SQL_KIND: &str = "sql";

/// The options of a `sql.query` executor: `[executor.NAME]` with
/// `kind = "sql"` in the worker's config file. Only `url` is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlOptions {
    /// The database: `postgres://user@host/db` or `sqlite:///path/to/file.db`.
    pub url: String,
    /// Run every statement read-only. Default `true`.
    #[serde(default = "SqlOptions::default_read_only")]
    pub read_only: bool,
    /// The most rows one task returns. Default 1000.
    #[serde(default = "SqlOptions::default_max_rows")]
    pub max_rows: usize,
    /// Statement timeout when the payload gives none, in seconds. Default 30.
    #[serde(default = "SqlOptions::default_statement_timeout_secs")]
    pub statement_timeout_secs: f64,
    /// The longest timeout a payload may ask for, in seconds. Default 300.
    #[serde(default = "SqlOptions::default_max_statement_timeout_secs")]
    pub max_statement_timeout_secs: f64,
    /// Connections kept open at most. Default 4.
    #[serde(default = "SqlOptions::default_max_connections")]
    pub max_connections: u32,
}

impl SqlOptions {
    /// The defaults, with this database URL.
    pub fn new(url: impl Into<String>) -> Self {
        SqlOptions {
            url: url.into(),
            read_only: Self::default_read_only(),
            max_rows: Self::default_max_rows(),
            statement_timeout_secs: Self::default_statement_timeout_secs(),
            max_statement_timeout_secs: Self::default_max_statement_timeout_secs(),
            max_connections: Self::default_max_connections(),
        }
    }

    fn default_read_only() -> bool {
        true
    }

    fn default_max_rows() -> usize {
        1000
    }

    fn default_statement_timeout_secs() -> f64 {
        30.0
    }

    fn default_max_statement_timeout_secs() -> f64 {
        300.0
    }

    fn default_max_connections() -> u32 {
        4
    }
}

/// The `sql.query` payload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlPayload {
    /// One statement.
    pub query: String,
    /// Its parameters, in order.
    #[serde(default)]
    pub params: Vec<Value>,
    /// Rows returned at most; never more than the executor's `max_rows`.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Statement timeout in seconds; at most the executor's
    /// `max_statement_timeout_secs`.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

/// A statement ready to run.
#[derive(Debug)]
struct Statement {
    query: String,
    params: Vec<Value>,
    max_rows: usize,
    timeout: Duration,
    read_only: bool,
}

/// What a statement gave back.
#[derive(Debug, Default)]
struct Rows {
    columns: Vec<String>,
    rows: Vec<Map<String, Value>>,
    truncated: bool,
    rows_affected: Option<u64>,
}

/// Why a statement failed, before it becomes an [`ExecError`].
#[derive(Debug, thiserror::Error)]
enum SqlError {
    /// The database, or sqlx, said no.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A parameter that cannot be given as the type the database expects.
    #[error("parameter ${index}: {message}")]
    Param { index: usize, message: String },
    /// A column of a type this executor does not turn into JSON.
    #[error("column {column:?}: {message}")]
    Column { column: String, message: String },
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `sql.query` tasks against one database.
#[derive(Debug)]
pub struct SqlExecutor {
    name: String,
    options: SqlOptions,
    pool: Pool,
}

impl SqlExecutor {
    /// An executor registered as `name`. Connects lazily: the worker's
    /// health check at start is the first connection.
    pub fn new(name: impl Into<String>, options: SqlOptions) -> Result<Self, ConfigError> {
        let name = name.into();
        let invalid = |message: String| ConfigError::Invalid {
            executor: name.clone(),
            message,
        };
        for (option, v) in [
            ("statement_timeout_secs", options.statement_timeout_secs),
            (
                "max_statement_timeout_secs",
                options.max_statement_timeout_secs,
            ),
        ] {
            if !(v > 0.0 && v.is_finite() && v < 1e9) {
                return Err(invalid(format!(
                    "`{option}` must be a positive number of seconds"
                )));
            }
        }
        if options.statement_timeout_secs > options.max_statement_timeout_secs {
            return Err(invalid(
                "`statement_timeout_secs` is larger than `max_statement_timeout_secs`".into(),
            ));
        }
        if options.max_rows == 0 || options.max_connections == 0 {
            return Err(invalid(
                "`max_rows` and `max_connections` must be at least 1".into(),
            ));
        }
        let url = options.url.trim();
        let acquire = Duration::from_secs(10);
        let pool = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| invalid(format!("`url`: {e}")))?
                .application_name("chit sql.query");
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(connect),
            )
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| invalid(format!("`url`: {e}")))?
                .read_only(options.read_only);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(connect),
            )
        } else {
            return Err(invalid(
                "`url` must start with postgres:// or sqlite:".into(),
            ));
        };
        Ok(SqlExecutor {
            name,
            options,
            pool,
        })
    }

    fn parse(&self, payload: &Value) -> Result<Statement, ExecError> {
        if let Some(schema) = PayloadSchema::builtin(CAPABILITY) {
            schema
                .check(payload)
                .map_err(|e| ExecError::invalid(e.to_string()))?;
        }
        let p: SqlPayload = serde_json::from_value(payload.clone())
            .map_err(|e| ExecError::invalid(format!("{CAPABILITY} payload: {e}")))?;
        if p.query.trim().is_empty() {
            return Err(ExecError::invalid(format!(
                "{CAPABILITY} payload: `query` is empty"
            )));
        }
        let timeout = p
            .timeout_secs
            .unwrap_or(self.options.statement_timeout_secs);
        if !(timeout > 0.0 && timeout <= self.options.max_statement_timeout_secs) {
            return Err(ExecError::invalid(format!(
                "{CAPABILITY} payload: timeout_secs must be above 0 and at most {} (this executor's max_statement_timeout_secs)",
                self.options.max_statement_timeout_secs
            )));
        }
        Ok(Statement {
            query: p.query,
            params: p.params,
            max_rows: p
                .max_rows
                .unwrap_or(self.options.max_rows)
                .min(self.options.max_rows),
            timeout: Duration::from_secs_f64(timeout),
            read_only: self.options.read_only,
        })
    }

    async fn run(&self, st: &Statement) -> Result<Rows, SqlError> {
        match &self.pool {
            Pool::Postgres(pool) => postgres::run(pool, st).await,
            Pool::Sqlite(pool) => sqlite::run(pool, st).await,
        }
    }

    /// The failure for `e`, the database's own code and message included.
    fn failure(&self, e: SqlError, st: &Statement) -> ExecError {
        let mut details = json!({"executor": self.name, "read_only": st.read_only});
        let (kind, message) = match &e {
            SqlError::Param { .. } | SqlError::Column { .. } => {
                (ExecErrorKind::Permanent, e.to_string())
            }
            SqlError::Database(sqlx::Error::Database(db)) => {
                let code = db.code().map(|c| c.into_owned());
                details["database_error"] = json!({"code": code, "message": db.message()});
                let kind = match &self.pool {
                    Pool::Postgres(_) => postgres::error_kind(code.as_deref()),
                    Pool::Sqlite(_) => sqlite::error_kind(code.as_deref()),
                };
                let message = match kind {
                    ExecErrorKind::Refused => {
                        details["rule"] = json!("read_only");
                        format!(
                            "refused: the executor is read-only, and the database says: {}",
                            db.message()
                        )
                    }
                    ExecErrorKind::Timeout => format!(
                        "statement timed out after {} s: {}",
                        st.timeout.as_secs_f64(),
                        db.message()
                    ),
                    _ => format!("the database refused the statement: {}", db.message()),
                };
                (kind, message)
            }
            SqlError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => (
                ExecErrorKind::Unavailable,
                format!("cannot reach the database: {e}"),
            ),
            SqlError::Database(other) => (ExecErrorKind::Permanent, other.to_string()),
        };
        ExecError::new(kind, message).with_details(details)
    }
}

#[async_trait]
impl Executor for SqlExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        SQL_KIND
    }

    fn validate(&self, payload: &Value) -> Result<(), ExecError> {
        self.parse(payload).map(|_| ())
    }

    async fn execute(
        &self,
        ctx: &TaskContext,
        payload: Value,
        mut cancel: Cancellation,
    ) -> Result<Outcome, ExecError> {
        let st = self.parse(&payload)?;
        let started = Instant::now();
        tracing::debug!(task_id = %ctx.task_id, executor = %self.name, read_only = st.read_only, "sql statement");
        let rows = tokio::select! {
            rows = self.run(&st) => rows.map_err(|e| self.failure(e, &st))?,
            // Dropping the statement's future gives up its connection; the
            // statement timeout bounds what the database still does.
            reason = cancel.cancelled() => return Err(ExecError::from_cancel(reason)),
        };
        let mut body = json!({
            "columns": rows.columns,
            "rows": rows.rows,
            "row_count": rows.rows.len(),
            "truncated": rows.truncated,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        if let Some(n) = rows.rows_affected {
            body["rows_affected"] = json!(n);
        }
        Ok(Outcome {
            body,
            ..Outcome::default()
        })
    }

    async fn health_check(&self) -> Result<(), ExecError> {
        let result = match &self.pool {
            Pool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Pool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        };
        result.map_err(|e| {
            ExecError::new(
                ExecErrorKind::Unavailable,
                format!("database of {}: {e}", self.name),
            )
        })
    }
}

/// The kind table's builder: `[executor.NAME]` with `kind = "sql"`.
pub(super) fn build_kind(
    name: &str,
    options: Value,
    _defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    let options: SqlOptions = parse_options(name, options)?;
    Ok(Arc::new(SqlExecutor::new(name, options)?))
}

#[cfg(test)]
mod tests;
