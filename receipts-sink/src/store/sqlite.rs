//! SQLite: opening a WAL-mode file and the multi-row write path.
//!
//! A batch is written in one `BEGIN IMMEDIATE` transaction (the write lock is
//! taken up front, waiting out other writers with the busy timeout) as
//! multi-row `INSERT ... VALUES (...), (...)` statements. Each statement's row
//! count is a power of two, capped so the bind parameters stay below SQLite's
//! limit of 32766.

use super::row_rule::SqlValue;
use super::{Prepared, chunk_len, upsert};
use crate::error::SinkError;
use crate::task::TaskDelta;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, SqlitePool};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER`.
const MAX_PARAMS: usize = 32766;

const RECEIPT_COLUMNS: usize = 11;
const TASK_COLUMNS: usize = TaskDelta::TABLE.columns.len();

pub(super) async fn open(url: &str) -> Result<SqlitePool, SinkError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| SinkError::BadStoreUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool = if in_memory {
        // Every connection to `:memory:` is a database of its own: keep exactly one.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?
    } else {
        SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?
    };
    migrate(&pool).await?;
    Ok(pool)
}

/// Runs the migrations. Two processes opening a new file at once may race on
/// the first migration; the loser sees it applied when it tries again.
async fn migrate(pool: &SqlitePool) -> Result<(), SinkError> {
    let mut tries = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 3 => {
                tracing::debug!(error = %e, "retrying SQLite migrations");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `INSERT ... VALUES` with `rows` rows of `cols` placeholders, then `tail`.
pub(super) fn values_sql(head: &str, rows: usize, cols: usize, tail: &str) -> String {
    let mut tuple = String::with_capacity(cols * 2 + 2);
    tuple.push('(');
    for c in 0..cols {
        if c > 0 {
            tuple.push(',');
        }
        tuple.push('?');
    }
    tuple.push(')');
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (tuple.len() + 1));
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str(&tuple);
    }
    sql.push_str(tail);
    sql
}

const INSERT_RECEIPTS: &str = "INSERT INTO receipts (receipt_id, task_id, task_type, \
     receipt_type, parent_receipt_ids, worker_id, attempt, created_at, body, artifacts, \
     stored_at) VALUES ";

/// The task upsert around its rows (see `store/upsert.rs`), rendered once.
static UPSERT_TASKS: LazyLock<(String, String)> =
    LazyLock::new(|| upsert::sqlite(&TaskDelta::TABLE));

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine (id, reason, raw, received_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";

/// Writes a batch; returns (receipts inserted, quarantine records inserted).
pub(super) async fn write(pool: &SqlitePool, b: &Prepared<'_>) -> Result<(u64, u64), SinkError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;

    let mut inserted = 0;
    let mut rest = &b.receipts[..];
    while !rest.is_empty() {
        let n = chunk_len(rest.len(), MAX_PARAMS / RECEIPT_COLUMNS);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let sql = values_sql(
            INSERT_RECEIPTS,
            n,
            RECEIPT_COLUMNS,
            " ON CONFLICT (receipt_id) DO NOTHING",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            let r = row.receipt;
            q = q
                .bind(r.receipt_id.as_str())
                .bind(r.task_id.as_str())
                .bind(r.task_type.as_str())
                .bind(r.receipt_type.as_str())
                .bind(row.parents.as_str())
                .bind(r.worker_id.as_deref())
                .bind(i64::from(r.attempt))
                .bind(row.created_at.as_str())
                .bind(row.body.as_str())
                .bind(row.artifacts.as_str())
                .bind(b.stored_at.as_str());
        }
        inserted += q.execute(&mut *tx).await?.rows_affected();
    }

    let mut rest = &b.tasks[..];
    while !rest.is_empty() {
        let n = chunk_len(rest.len(), MAX_PARAMS / TASK_COLUMNS);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let (head, tail) = &*UPSERT_TASKS;
        let sql = values_sql(head, n, TASK_COLUMNS, tail);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for t in chunk {
            for v in t.values() {
                q = match v {
                    SqlValue::Text(s) => q.bind(s),
                    SqlValue::OptText(s) => q.bind(s),
                    SqlValue::Int8(n) => q.bind(n),
                };
            }
        }
        q.execute(&mut *tx).await?;
    }

    let mut quarantined = 0;
    for row in &b.quarantine {
        quarantined += sqlx::query(INSERT_QUARANTINE)
            .bind(row.id.as_str())
            .bind(row.reason.as_str())
            .bind(row.raw.as_str())
            .bind(b.stored_at.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }

    tx.commit().await?;
    Ok((inserted, quarantined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_sql_has_one_tuple_per_row() {
        let sql = values_sql(
            "INSERT INTO t (a, b) VALUES ",
            3,
            2,
            " ON CONFLICT DO NOTHING",
        );
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES (?,?),(?,?),(?,?) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn chunks_are_powers_of_two_within_the_parameter_limit() {
        assert_eq!(chunk_len(1000, MAX_PARAMS / RECEIPT_COLUMNS), 512);
        assert_eq!(chunk_len(100_000, MAX_PARAMS / RECEIPT_COLUMNS), 2048);
        assert_eq!(chunk_len(1, 2048), 1);
        assert_eq!(chunk_len(3, 2048), 2);
    }
}
