//! PostgreSQL: opening a pool and the array write path.
//!
//! Each table gets one statement per batch: the columns are bound as arrays
//! and expanded with `UNNEST`, so the statement text (and its prepared plan)
//! never changes with the batch size and no parameter limit applies. Rows go
//! in sorted by key, so two sinks writing overlapping batches lock rows in the
//! same order and do not deadlock.

use super::Prepared;
use crate::error::SinkError;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(super) async fn open(url: &str) -> Result<PgPool, SinkError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| SinkError::BadStoreUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    // sqlx holds an advisory lock while migrating, so replicas may start together.
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

const INSERT_RECEIPTS: &str = "INSERT INTO receipts (receipt_id, task_id, task_type, \
     receipt_type, parent_receipt_ids, worker_id, attempt, created_at, body, artifacts, \
     stored_at) \
     SELECT u.*, $11 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[]) AS u \
     ON CONFLICT (receipt_id) DO NOTHING";

const UPSERT_TASKS: &str = "INSERT INTO tasks (task_id, task_type, state, attempts, \
     first_seen, last_update, worker_id, last_error, state_key, worker_key, error_key) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
     ON CONFLICT (task_id) DO UPDATE SET
     state = CASE WHEN excluded.state_key > tasks.state_key
                  THEN excluded.state ELSE tasks.state END,
     state_key = GREATEST(tasks.state_key, excluded.state_key),
     attempts = GREATEST(tasks.attempts, excluded.attempts),
     first_seen = LEAST(tasks.first_seen, excluded.first_seen),
     last_update = GREATEST(tasks.last_update, excluded.last_update),
     worker_id = CASE WHEN excluded.worker_key > COALESCE(tasks.worker_key, '')
                      THEN excluded.worker_id ELSE tasks.worker_id END,
     worker_key = CASE WHEN excluded.worker_key > COALESCE(tasks.worker_key, '')
                       THEN excluded.worker_key ELSE tasks.worker_key END,
     last_error = CASE WHEN excluded.error_key > COALESCE(tasks.error_key, '')
                       THEN excluded.last_error ELSE tasks.last_error END,
     error_key = CASE WHEN excluded.error_key > COALESCE(tasks.error_key, '')
                      THEN excluded.error_key ELSE tasks.error_key END";

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine (id, reason, raw, received_at) \
     SELECT u.*, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u \
     ON CONFLICT (id) DO NOTHING";

/// Writes a batch; returns (receipts inserted, quarantine records inserted).
pub(super) async fn write(pool: &PgPool, b: &Prepared<'_>) -> Result<(u64, u64), SinkError> {
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
            .bind(b.stored_at.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }

    if !b.tasks.is_empty() {
        let t = &b.tasks;
        let text = |f: &dyn Fn(&crate::task::TaskDelta) -> String| -> Vec<String> {
            t.iter().map(f).collect()
        };
        let opt = |f: &dyn Fn(&crate::task::TaskDelta) -> Option<String>| -> Vec<Option<String>> {
            t.iter().map(f).collect()
        };
        sqlx::query(UPSERT_TASKS)
            .bind(text(&|t| t.task_id.clone()))
            .bind(text(&|t| t.task_type.clone()))
            .bind(text(&|t| t.state.as_str().to_owned()))
            .bind(
                t.iter()
                    .map(|t| i64::from(t.attempts))
                    .collect::<Vec<i64>>(),
            )
            .bind(text(&|t| t.first_seen.clone()))
            .bind(text(&|t| t.last_update.clone()))
            .bind(opt(&|t| t.worker_id.clone()))
            .bind(opt(&|t| t.last_error.clone()))
            .bind(text(&|t| t.state_key.clone()))
            .bind(opt(&|t| t.worker_key.clone()))
            .bind(opt(&|t| t.error_key.clone()))
            .execute(&mut *tx)
            .await?;
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

    tx.commit().await?;
    Ok((inserted, quarantined))
}
