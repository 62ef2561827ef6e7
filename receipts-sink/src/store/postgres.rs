//! PostgreSQL: opening a pool and the array write path.
//!
//! Each table gets one statement per batch: the columns are bound as arrays
//! and expanded with `UNNEST`, so the statement text (and its prepared plan)
//! never changes with the batch size and no parameter limit applies. Rows go
//! in sorted by key, so two sinks writing overlapping batches lock rows in the
//! same order and do not deadlock.

use super::row_rule::{SqlType, SqlValue, Table};
use super::{Prepared, PruneStats, upsert};
use crate::error::SinkError;
use crate::task::TaskDelta;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(super) async fn open(url: &str) -> Result<PgPool, SinkError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| SinkError::BadStoreUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let failed = |reason: String| SinkError::OpenStore {
        store: crate::group::store_identity(url),
        reason,
    };
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| {
            failed(match &e {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => other.to_string(),
            })
        })?;
    // sqlx holds an advisory lock while migrating, so replicas may start together.
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| failed(format!("cannot bring its schema up to date: {e}")))?;
    Ok(pool)
}

const INSERT_RECEIPTS: &str = "INSERT INTO receipts (receipt_id, task_id, task_type, \
     receipt_type, parent_receipt_ids, worker_id, attempt, created_at, body, artifacts, \
     trace_id, span_id, stored_at) \
     SELECT u.*, $13 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) AS u \
     ON CONFLICT (task_id, receipt_id) DO NOTHING";

/// The task upsert (see `store/upsert.rs`), rendered once.
static UPSERT_TASKS: LazyLock<String> = LazyLock::new(|| upsert::postgres(&TaskDelta::TABLE));

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine (id, reason, raw, received_at) \
     SELECT u.*, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u \
     ON CONFLICT (id) DO NOTHING";

/// Writes a batch, or only tries to when `commit` is false (the transaction
/// is rolled back); returns (receipts inserted, quarantine records inserted).
pub(super) async fn write(
    pool: &PgPool,
    b: &Prepared<'_>,
    commit: bool,
) -> Result<(u64, u64), SinkError> {
    let mut tx = pool.begin().await?;

    let mut inserted = 0;
    if !b.receipts.is_empty() {
        let col = |f: &dyn Fn(&super::ReceiptRow<'_>) -> String| -> Vec<String> {
            b.receipts.iter().map(f).collect()
        };
        inserted = sqlx::query(INSERT_RECEIPTS)
            .bind(col(&|r| r.receipt.receipt_id.clone()))
            .bind(col(&|r| r.receipt.task_id.clone()))
            .bind(col(&|r| r.receipt.task_type.clone()))
            .bind(col(&|r| r.receipt.receipt_type.as_str().to_owned()))
            .bind(col(&|r| r.parents.clone()))
            .bind(
                b.receipts
                    .iter()
                    .map(|r| r.receipt.worker_id.clone())
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                b.receipts
                    .iter()
                    .map(|r| i64::from(r.receipt.attempt))
                    .collect::<Vec<i64>>(),
            )
            .bind(col(&|r| r.created_at.clone()))
            .bind(col(&|r| r.body.clone()))
            .bind(col(&|r| r.artifacts.clone()))
            .bind(
                b.receipts
                    .iter()
                    .map(|r| r.receipt.trace_id.map(|id| id.to_string()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                b.receipts
                    .iter()
                    .map(|r| r.receipt.span_id.map(|id| id.to_string()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(b.stored_at.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }

    if !b.tasks.is_empty() {
        let mut q = sqlx::query(UPSERT_TASKS.as_str());
        for column in Array::columns(&TaskDelta::TABLE, b.tasks.iter().map(TaskDelta::values)) {
            q = match column {
                Array::Text(v) => q.bind(v),
                Array::OptText(v) => q.bind(v),
                Array::Int8(v) => q.bind(v),
            };
        }
        q.execute(&mut *tx).await?;
    }

    let mut quarantined = 0;
    if !b.quarantine.is_empty() {
        let q = &b.quarantine;
        quarantined = sqlx::query(INSERT_QUARANTINE)
            .bind(q.iter().map(|r| r.id.clone()).collect::<Vec<_>>())
            .bind(q.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
            .bind(q.iter().map(|r| r.raw.clone()).collect::<Vec<_>>())
            .bind(b.stored_at.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }

    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok((inserted, quarantined))
}

/// Deletes up to `limit` tasks in one of the `states`, last updated before
/// `cutoff`, with their receipts, in one transaction. The task rows are
/// locked first, so a receipt written for one meanwhile waits, then finds
/// it gone and starts a new row.
pub(super) async fn prune(
    pool: &PgPool,
    states: &[&str],
    cutoff: &str,
    limit: i64,
) -> Result<PruneStats, SinkError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT task_id FROM tasks WHERE state = ANY($1::text[]) AND last_update < $2 \
         ORDER BY last_update, task_id LIMIT $3 FOR UPDATE",
    )
    .bind(states)
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(PruneStats::default());
    }
    let receipts = sqlx::query("DELETE FROM receipts WHERE task_id = ANY($1::text[])")
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let tasks = sqlx::query("DELETE FROM tasks WHERE task_id = ANY($1::text[])")
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(PruneStats { tasks, receipts })
}

/// One column of a batch, bound as one array parameter.
enum Array<'a> {
    Text(Vec<&'a str>),
    OptText(Vec<Option<&'a str>>),
    Int8(Vec<i64>),
}

impl<'a> Array<'a> {
    /// Rows of values (in `table`'s column order) turned into columns.
    fn columns<const N: usize>(
        table: &Table,
        rows: impl ExactSizeIterator<Item = [SqlValue<'a>; N]>,
    ) -> Vec<Array<'a>> {
        let len = rows.len();
        let mut columns: Vec<Array<'a>> = table
            .columns
            .iter()
            .map(|c| match (c.sql_type, c.nullable) {
                (SqlType::Text, false) => Array::Text(Vec::with_capacity(len)),
                (SqlType::Text, true) => Array::OptText(Vec::with_capacity(len)),
                // No nullable number type is a `ColumnValue` (yet).
                (SqlType::Int8, _) => Array::Int8(Vec::with_capacity(len)),
            })
            .collect();
        for row in rows {
            for (column, value) in columns.iter_mut().zip(row) {
                match (column, value) {
                    (Array::Text(v), SqlValue::Text(s)) => v.push(s),
                    (Array::OptText(v), SqlValue::OptText(s)) => v.push(s),
                    (Array::Int8(v), SqlValue::Int8(n)) => v.push(n),
                    // The table's types and the values come from the same fields.
                    _ => unreachable!("a value of another type than its column"),
                }
            }
        }
        columns
    }
}
