//! SQLite: opening a WAL-mode file and the multi-row write path.
//!
//! A batch is written in one `BEGIN IMMEDIATE` transaction (the write lock is
//! taken up front, waiting out other writers with the busy timeout) as
//! multi-row `INSERT ... VALUES (...), (...)` statements. Each statement's row
//! count is a power of two, capped so the bind parameters stay below SQLite's
//! limit of 32766.

use super::row_rule::SqlValue;
use super::{Prepared, PruneStats, chunk_len, upsert};
use crate::error::SinkError;
use crate::task::TaskDelta;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER`.
const MAX_PARAMS: usize = 32766;

const RECEIPT_COLUMNS: usize = 13;
const TASK_COLUMNS: usize = TaskDelta::TABLE.columns.len();

pub(super) async fn open(url: &str) -> Result<SqlitePool, SinkError> {
    let file = file_path(url)?;
    if let Some(file) = &file {
        create_parent(file)?;
    }
    let opened = connect(url).await;
    let opened = match opened {
        Ok(pool) => migrate(&pool).await.map(|()| pool),
        Err(e) => Err(e),
    };
    opened.map_err(|e| match (&file, e) {
        (Some(file), SinkError::Store(e)) => open_error(file, &e),
        (Some(file), SinkError::Migrate(e)) => SinkError::OpenStore {
            store: file.display().to_string(),
            reason: format!("cannot bring its schema up to date: {e}"),
        },
        (_, e) => e,
    })
}

/// The file a `sqlite:` URL names, made absolute; `None` for an in-memory
/// database. A bare relative path (`sqlite://var/lib/chit/receipts.db`) is
/// refused, since it is almost always a missing slash: a relative path must
/// say so with `./` or `../`, and is taken from the working directory.
pub(crate) fn file_path(url: &str) -> Result<Option<PathBuf>, SinkError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory") {
        return Ok(None);
    }
    let refuse = |reason: String| SinkError::BadStoreUrl {
        url: url.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(refuse(
            "it names no file: use sqlite:///ABSOLUTE/PATH or sqlite://./RELATIVE/PATH".into(),
        ));
    }
    let p = Path::new(path);
    if p.is_relative() && !(path.starts_with("./") || path.starts_with("../")) {
        return Err(refuse(format!(
            "{path:?} is a relative path; write sqlite:///{path} for /{path}, or \
             sqlite://./{path} for a file under the working directory"
        )));
    }
    std::path::absolute(p)
        .map(Some)
        .map_err(|e| refuse(format!("cannot resolve {path:?}: {e}")))
}

/// Creates the directory the SQLite file goes in, if it is missing.
fn create_parent(file: &Path) -> Result<(), SinkError> {
    let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| SinkError::OpenStore {
        store: file.display().to_string(),
        reason: format!(
            "cannot create its directory {}: {e}; create it with write access for this \
             user, or choose another path",
            dir.display()
        ),
    })?;
    tracing::info!(dir = %dir.display(), "created the SQLite store's directory");
    Ok(())
}

/// An error from opening `file`, said once (SQLite's own text, not sqlx's
/// wrappers around it), with a hint when SQLite cannot open the file.
fn open_error(file: &Path, e: &sqlx::Error) -> SinkError {
    let reason = match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let mut reason = db.message().to_owned();
            // SQLITE_CANTOPEN (14) and SQLITE_READONLY (8), with extended codes.
            if let Ok(n) = code.parse::<i32>()
                && matches!(n & 0xff, 8 | 14)
            {
                let dir = file.parent().unwrap_or(Path::new("/"));
                reason.push_str(&format!(
                    " (check that this user can read and write {} and the directory {})",
                    file.display(),
                    dir.display()
                ));
            }
            reason
        }
        other => other.to_string(),
    };
    SinkError::OpenStore {
        store: file.display().to_string(),
        reason,
    }
}

async fn connect(url: &str) -> Result<SqlitePool, SinkError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| SinkError::BadStoreUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .create_if_missing(true)
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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        ensure_wal(&pool).await?;
        pool
    };
    Ok(pool)
}

/// Puts the file in WAL mode unless it already is. WAL is a property of the
/// file, set once; asking for it on every connection (as sqlx's
/// `journal_mode` option does) takes a lock the busy timeout does not wait
/// for, so a connection opened while a sink writes failed with "database is
/// locked". Only a file not yet in WAL pays for the switch, retried until
/// `BUSY_TIMEOUT` if two processes race to make it.
async fn ensure_wal(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Err(e) if !is_busy(&e) => return Err(e),
            refused if tokio::time::Instant::now() >= deadline => {
                return Err(refused.err().unwrap_or_else(|| {
                    sqlx::Error::Protocol("SQLite kept refusing to switch the file to WAL".into())
                }));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED, with any extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|n| matches!(n & 0xff, 5 | 6))
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
     trace_id, span_id, stored_at) VALUES ";

/// The task upsert around its rows (see `store/upsert.rs`), rendered once.
static UPSERT_TASKS: LazyLock<(String, String)> =
    LazyLock::new(|| upsert::sqlite(&TaskDelta::TABLE));

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine (id, reason, raw, received_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";

/// Writes a batch, or only tries to when `commit` is false (the transaction
/// is rolled back); returns (receipts inserted, quarantine records inserted).
pub(super) async fn write(
    pool: &SqlitePool,
    b: &Prepared<'_>,
    commit: bool,
) -> Result<(u64, u64), SinkError> {
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
            " ON CONFLICT (task_id, receipt_id) DO NOTHING",
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
                .bind(r.trace_id.map(|id| id.to_string()))
                .bind(r.span_id.map(|id| id.to_string()))
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

    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok((inserted, quarantined))
}

/// Deletes up to `limit` tasks in one of the `states`, last updated before
/// `cutoff`, with their receipts, in one transaction.
pub(super) async fn prune(
    pool: &SqlitePool,
    states: &[&str],
    cutoff: &str,
    limit: i64,
) -> Result<PruneStats, SinkError> {
    let states = serde_json::to_string(states).unwrap_or_else(|_| "[]".into());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT task_id FROM tasks WHERE state IN (SELECT value FROM json_each($1)) \
         AND last_update < $2 ORDER BY last_update, task_id LIMIT $3",
    )
    .bind(&states)
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(PruneStats::default());
    }
    let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
    let receipts =
        sqlx::query("DELETE FROM receipts WHERE task_id IN (SELECT value FROM json_each($1))")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let tasks = sqlx::query("DELETE FROM tasks WHERE task_id IN (SELECT value FROM json_each($1))")
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(PruneStats { tasks, receipts })
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

    /// Processes that open one new file at the same moment (a sink and
    /// `chit gateway`, two sink replicas) all get it, and the file is in WAL
    /// mode. With sqlx's `journal_mode` option every opener raced to switch
    /// the file and some failed with "database is locked" (seen in CI).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_opening_a_new_file_together_all_get_it_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..30 {
            let file = dir.path().join(format!("r{round}.db"));
            let url = format!("sqlite://{}", file.display());
            let (a, b, c) = tokio::join!(open(&url), open(&url), open(&url));
            for opened in [a, b, c] {
                let pool = opened.unwrap_or_else(|e| panic!("round {round}: {e}"));
                pool.close().await;
            }
            // WAL is the file's: bytes 18 and 19 of its header are 2. (A
            // pool connection opened before the switch still answers
            // `PRAGMA journal_mode` with "delete" until its next read.)
            let header = std::fs::read(&file).unwrap();
            assert_eq!(header[18..20], [2, 2], "round {round}: not in WAL mode");
        }
    }
}
