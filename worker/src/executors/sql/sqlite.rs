//! `sql.query` on SQLite: parameters bound by their JSON type, rows turned
//! into JSON by each value's storage class.
//!
//! A read-only executor opens the database read-only (SQLite has no
//! read-only transactions); the statement still runs inside a transaction,
//! rolled back when read-only. The timeout is a progress handler that
//! interrupts the statement once its deadline has passed.

use super::{Rows, SqlError, Statement};
use crate::executor::ExecErrorKind;
use base64::Engine;
use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};
use sqlx::sqlite::{SqlitePool, SqliteRow, SqliteValueRef};
use sqlx::{
    AssertSqlSafe, Column, Connection, Decode, Executor, Row, SqlSafeStr, Sqlite, TypeInfo,
    ValueRef,
};
use std::time::Instant;

/// Virtual machine steps between two looks at the deadline.
const STEPS_PER_CHECK: i32 = 1000;

/// Runs `st` on one connection, under a deadline.
pub(super) async fn run(pool: &SqlitePool, st: &Statement) -> Result<Rows, SqlError> {
    let mut conn = pool.acquire().await?;
    let deadline = Instant::now() + st.timeout;
    conn.lock_handle()
        .await?
        .set_progress_handler(STEPS_PER_CHECK, move || Instant::now() < deadline);
    let result = statement(&mut conn, st).await;
    // The connection goes back to the pool without the handler.
    if let Ok(mut handle) = conn.lock_handle().await {
        handle.remove_progress_handler();
    }
    result
}

async fn statement(conn: &mut sqlx::SqliteConnection, st: &Statement) -> Result<Rows, SqlError> {
    let mut tx = conn.begin().await?;
    let prepared = (&mut *tx)
        .prepare(AssertSqlSafe(st.query.clone()).into_sql_str())
        .await?;
    let columns: Vec<String> = sqlx::Statement::columns(&prepared)
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut query = sqlx::query(AssertSqlSafe(st.query.clone()));
    for (i, value) in st.params.iter().enumerate() {
        query = match value {
            Value::Null => query.bind(None::<String>),
            Value::Bool(b) => query.bind(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => query.bind(i),
                None => query.bind(n.as_f64().ok_or_else(|| SqlError::Param {
                    index: i + 1,
                    message: format!("{n} is out of range"),
                })?),
            },
            Value::String(s) => query.bind(s.clone()),
            // Arrays and objects go in as JSON text, for SQLite's JSON functions.
            other => query.bind(other.to_string()),
        };
    }
    let mut out = Rows {
        columns,
        ..Rows::default()
    };
    if out.columns.is_empty() {
        let done = query.execute(&mut *tx).await?;
        out.rows_affected = Some(done.rows_affected());
    } else {
        let mut stream = query.fetch(&mut *tx);
        while let Some(row) = stream.try_next().await? {
            if out.rows.len() == st.max_rows {
                out.truncated = true;
                break;
            }
            out.rows.push(row_json(&row)?);
        }
    }
    if st.read_only {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(out)
}

/// SQLite's result code (extended codes keep the primary one in their low
/// byte) to how the task failed.
pub(super) fn error_kind(code: Option<&str>) -> ExecErrorKind {
    let primary = code.and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
    match primary {
        // SQLITE_INTERRUPT: the progress handler's deadline.
        Some(9) => ExecErrorKind::Timeout,
        // SQLITE_READONLY.
        Some(8) => ExecErrorKind::Refused,
        // SQLITE_BUSY, SQLITE_LOCKED: another writer; a later try may pass.
        Some(5) | Some(6) => ExecErrorKind::Failed,
        // SQLITE_CANTOPEN, SQLITE_IOERR.
        Some(14) | Some(10) => ExecErrorKind::Unavailable,
        _ => ExecErrorKind::Permanent,
    }
}

fn decode<'r, T: Decode<'r, Sqlite>>(raw: SqliteValueRef<'r>) -> Result<T, SqlError> {
    T::decode(raw).map_err(|e| SqlError::Database(sqlx::Error::Decode(e)))
}

/// A row as a JSON object, column name to value.
fn row_json(row: &SqliteRow) -> Result<Map<String, Value>, SqlError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            let class = raw.type_info().name().to_owned();
            match class.as_str() {
                "INTEGER" => json!(decode::<i64>(raw)?),
                "REAL" => json!(decode::<f64>(raw)?),
                "BLOB" => {
                    json!(base64::engine::general_purpose::STANDARD.encode(decode::<Vec<u8>>(raw)?))
                }
                _ => json!(decode::<String>(raw)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}
