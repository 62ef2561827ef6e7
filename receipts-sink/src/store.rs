//! The receipt store: SQLite or PostgreSQL behind one [`Store`].
//!
//! Three tables (see `migrations/`): `receipts`, one row per receipt and never
//! two for one (`task_id`, `receipt_id`); `tasks`, a summary per task kept up to date by
//! order-independent upserts (see [`crate::task`]); and `quarantine`, input that
//! could not be read as receipts. [`Store::write_batch`] writes a whole batch in
//! one transaction with multi-row statements, so a redelivered batch is
//! harmless and a crash leaves either all of it or none.
//! [`Store::check_writable`] tries a made-up receipt and rolls it back, to
//! tell a refused batch from a refusing store; [`Store::prune`] deletes old
//! finished chains (retention).
//!
//! Queries use runtime SQL (there is no database at build time). Both backends
//! share the read queries; the write path is per backend (`store/sqlite.rs`
//! builds multi-row `VALUES`, `store/postgres.rs` binds arrays to `UNNEST`).
//! The task upsert is written once, as the column rules of `TaskDelta` in
//! `task.rs` (see `store/row_rule.rs`), and rendered for each backend by
//! `store/upsert.rs`.
//!
//! The HTTP gateway keeps its API keys and idempotency records here too
//! (`store/gateway.rs`), beside the chains it serves.

mod postgres;
pub(crate) mod row_rule;
mod sqlite;
mod upsert;

use crate::error::SinkError;
use crate::task::{self, Page, TaskDelta, TaskFilter, TaskRow, TaskState, TaskView};
use broker_topology::codec::BadReceipt;
use broker_topology::{Receipt, ReceiptType, SpanId, TraceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, ColumnIndex, Decode, PgPool, Row, SqlitePool, Type};

/// Most tasks [`Store::list_tasks`] returns in one page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A receipt store, cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same (generic) code against whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

mod gateway;

pub use gateway::{ApiKeyRecord, IdempotencyRecord, Reservation, Revoked};

/// What one [`Store::write_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Receipts offered (after dropping repeats within the batch).
    pub receipts: usize,
    /// Receipts newly stored.
    pub inserted: u64,
    /// Receipts that were already stored (redeliveries).
    pub duplicates: u64,
    /// Task rows upserted.
    pub tasks: usize,
    /// Quarantine records newly stored.
    pub quarantined: u64,
}

impl WriteStats {
    /// Adds another write's figures to these.
    pub fn add(&mut self, other: &WriteStats) {
        self.receipts += other.receipts;
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.tasks += other.tasks;
        self.quarantined += other.quarantined;
    }
}

/// Row counts, for tests, benches and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Stored receipts.
    pub receipts: u64,
    /// Tasks.
    pub tasks: u64,
    /// Quarantined records.
    pub quarantined: u64,
}

/// What one [`Store::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Finished tasks deleted, each with its whole chain.
    pub tasks: u64,
    /// Their receipts.
    pub receipts: u64,
}

/// Tasks [`Store::prune`] deletes per transaction, so a large backlog does
/// not hold the write lock for long.
const PRUNE_CHUNK: i64 = 1000;

/// Input that could not be read as receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// SHA-256 (hex) of `raw` and `reason`.
    pub id: String,
    /// Why it was rejected.
    pub reason: String,
    /// The message body, or the one entry of a batch that was bad, as text.
    pub raw: String,
    /// When the sink stored it.
    pub received_at: DateTime<Utc>,
}

/// What the sink knows which kind of database it writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up
    /// to date. `sqlite://path` (the file is created, in WAL mode) or
    /// `sqlite::memory:`; `postgres://...` or `postgresql://...`.
    pub async fn open(url: &str) -> Result<Store, SinkError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::open(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::open(url).await?)
        } else {
            return Err(SinkError::BadStoreUrl {
                url: url.to_owned(),
                reason: "use sqlite://PATH or postgres://USER@HOST/DB".into(),
            });
        };
        Ok(Store { backend })
    }

    /// Which database this is.
    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Sqlite(_) => StoreKind::Sqlite,
            Backend::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Stores receipts and quarantines bad input, in one transaction.
    ///
    /// Receipts already stored are left as they are; every receipt still
    /// updates its task, which is harmless because task updates are
    /// idempotent. Receipts whose text cannot be stored (a NUL character)
    /// are quarantined instead.
    pub async fn write_batch(
        &self,
        receipts: &[Receipt],
        bad: &[BadReceipt],
    ) -> Result<WriteStats, SinkError> {
        let batch = Prepared::new(receipts, bad);
        if batch.is_empty() {
            return Ok(WriteStats::default());
        }
        let (inserted, quarantined) = match &self.backend {
            Backend::Sqlite(pool) => sqlite::write(pool, &batch, true).await?,
            Backend::Postgres(pool) => postgres::write(pool, &batch, true).await?,
        };
        Ok(WriteStats {
            receipts: batch.receipts.len(),
            inserted,
            duplicates: batch.receipts.len() as u64 - inserted,
            tasks: batch.tasks.len(),
            quarantined,
        })
    }

    /// Checks that the store takes a well-formed receipt: writes a made-up
    /// one the way [`Store::write_batch`] would, then rolls it back. When a
    /// batch is refused but this passes, the batch itself is at fault.
    pub async fn check_writable(&self) -> Result<(), SinkError> {
        let probe = Receipt::new(
            format!("chit-sink-probe-{}", uuid::Uuid::new_v4().simple()),
            "chit.sink.probe",
            ReceiptType::Queued,
            vec![],
            1,
        );
        let probe = [probe];
        let batch = Prepared::new(&probe, &[]);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::write(pool, &batch, false).await?,
            Backend::Postgres(pool) => postgres::write(pool, &batch, false).await?,
        };
        Ok(())
    }

    /// Deletes every finished task ([`TaskState::is_finished`]) whose last
    /// receipt is older than `older_than`, with its whole chain. Tasks that
    /// are not finished are kept however old. Works in transactions of
    /// [`PRUNE_CHUNK`] tasks.
    pub async fn prune(&self, older_than: DateTime<Utc>) -> Result<PruneStats, SinkError> {
        let cutoff = task::canonical_time(&older_than);
        let finished: Vec<&str> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .map(TaskState::as_str)
            .collect();
        let mut total = PruneStats::default();
        loop {
            let chunk = match &self.backend {
                Backend::Sqlite(pool) => {
                    sqlite::prune(pool, &finished, &cutoff, PRUNE_CHUNK).await?
                }
                Backend::Postgres(pool) => {
                    postgres::prune(pool, &finished, &cutoff, PRUNE_CHUNK).await?
                }
            };
            total.tasks += chunk.tasks;
            total.receipts += chunk.receipts;
            if chunk.tasks < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// A task and its whole stored chain, or `None` when no receipt of it is stored.
    pub async fn task(&self, task_id: &str) -> Result<Option<TaskView>, SinkError> {
        let Some(task) = on_pool!(self, pool => {
            match sqlx::query(TASK_SQL).bind(task_id).fetch_optional(pool).await? {
                Some(row) => Some(task_from_row(&row)?),
                None => None,
            }
        }) else {
            return Ok(None);
        };
        let chain = self.receipts(task_id).await?;
        Ok(Some(TaskView { task, chain }))
    }

    /// The receipts of a task, each after its parents ([`order_by_parents`]:
    /// the writers' clocks may disagree), then by `created_at` and `receipt_id`.
    ///
    /// [`order_by_parents`]: crate::order_by_parents
    pub async fn receipts(&self, task_id: &str) -> Result<Vec<Receipt>, SinkError> {
        let chain: Vec<Receipt> = on_pool!(self, pool => {
            let rows = sqlx::query(CHAIN_SQL).bind(task_id).fetch_all(pool).await?;
            rows.iter().map(receipt_from_row).collect::<Result<_, _>>()?
        });
        Ok(crate::chain::order_by_parents(chain))
    }

    /// One page of tasks, most recently updated first (ties by task id).
    /// `cursor` is a page's `next_cursor`; `limit` is capped at [`MAX_PAGE_SIZE`].
    pub async fn list_tasks(
        &self,
        filter: &TaskFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, SinkError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let after = cursor.map(decode_cursor).transpose()?;
        let (sql, binds) = list_sql(filter, after, limit);
        let mut tasks: Vec<TaskRow> = on_pool!(self, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for b in &binds {
                q = q.bind(b.as_str());
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter().map(task_from_row).collect::<Result<_, _>>()?
        });
        let next_cursor = if tasks.len() > limit as usize {
            tasks.truncate(limit as usize);
            tasks.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { tasks, next_cursor })
    }

    /// The most recently quarantined records, newest first.
    pub async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantinedRecord>, SinkError> {
        let limit = i64::from(limit.clamp(1, MAX_PAGE_SIZE));
        on_pool!(self, pool => {
            let rows = sqlx::query(QUARANTINE_SQL).bind(limit).fetch_all(pool).await?;
            rows.iter().map(quarantined_from_row).collect()
        })
    }

    /// Row counts.
    pub async fn counts(&self) -> Result<StoreCounts, SinkError> {
        on_pool!(self, pool => {
            let row = sqlx::query(COUNTS_SQL).fetch_one(pool).await?;
            let get = |i: usize| row.try_get::<i64, _>(i).map(|n| n.max(0) as u64);
            Ok(StoreCounts {
                receipts: get(0)?,
                tasks: get(1)?,
                quarantined: get(2)?,
            })
        })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), SinkError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// The listing query for one page of `limit` tasks (one more is asked for,
/// to know whether a next page exists) after the cursor's `(last_update,
/// task_id)`, and its parameters in order.
pub(crate) fn list_sql(
    filter: &TaskFilter,
    after: Option<(String, String)>,
    limit: u32,
) -> (String, Vec<String>) {
    let mut sql = String::from(
        "SELECT task_id, task_type, state, attempts, first_seen, last_update, worker_id, \
         last_error FROM tasks WHERE TRUE",
    );
    let mut binds: Vec<String> = Vec::new();
    let mut param = |value: String| {
        binds.push(value);
        format!("${}", binds.len())
    };
    if let Some(state) = filter.state {
        let p = param(state.as_str().to_owned());
        sql.push_str(&format!(" AND state = {p}"));
    }
    if let Some(task_type) = &filter.task_type {
        let p = param(task_type.clone());
        sql.push_str(&format!(" AND task_type = {p}"));
    }
    if let Some((last_update, task_id)) = after {
        let t = param(last_update);
        let id = param(task_id);
        sql.push_str(&format!(
            " AND (last_update < {t} OR (last_update = {t} AND task_id > {id}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY last_update DESC, task_id LIMIT {}",
        limit + 1
    ));
    (sql, binds)
}

const TASK_SQL: &str = "SELECT task_id, task_type, state, attempts, first_seen, last_update, \
     worker_id, last_error FROM tasks WHERE task_id = $1";

const CHAIN_SQL: &str = "SELECT receipt_id, task_id, task_type, receipt_type, \
     parent_receipt_ids, worker_id, attempt, created_at, body, artifacts, trace_id, span_id \
     FROM receipts \
     WHERE task_id = $1 ORDER BY created_at, receipt_id";

const QUARANTINE_SQL: &str = "SELECT id, reason, raw, received_at FROM quarantine \
     ORDER BY received_at DESC, id LIMIT $1";

const COUNTS_SQL: &str = "SELECT (SELECT COUNT(*) FROM receipts), (SELECT COUNT(*) FROM tasks), \
     (SELECT COUNT(*) FROM quarantine)";

/// A receipt ready to insert: its text columns rendered once.
pub(crate) struct ReceiptRow<'a> {
    pub(crate) receipt: &'a Receipt,
    pub(crate) created_at: String,
    pub(crate) parents: String,
    pub(crate) body: String,
    pub(crate) artifacts: String,
}

/// A quarantine record ready to insert.
pub(crate) struct QuarantineRow {
    pub(crate) id: String,
    pub(crate) reason: String,
    pub(crate) raw: String,
}

/// A batch in the shape the backends insert: receipts deduplicated and sorted
/// by task and id, one task delta per task sorted by task id (a fixed lock order for
/// concurrent writers), and quarantine records.
pub(crate) struct Prepared<'a> {
    pub(crate) receipts: Vec<ReceiptRow<'a>>,
    pub(crate) tasks: Vec<TaskDelta>,
    pub(crate) quarantine: Vec<QuarantineRow>,
    pub(crate) stored_at: String,
}

impl<'a> Prepared<'a> {
    fn new(receipts: &'a [Receipt], bad: &[BadReceipt]) -> Self {
        let mut quarantine: Vec<QuarantineRow> = bad
            .iter()
            .map(|b| QuarantineRow::new(&b.reason, &raw_text(&b.raw)))
            .collect();
        let mut kept: Vec<&Receipt> = Vec::with_capacity(receipts.len());
        for r in receipts {
            if has_nul(r) {
                let raw = serde_json::to_string(r).unwrap_or_default();
                quarantine.push(QuarantineRow::new(
                    "receipt text contains a NUL character",
                    &raw,
                ));
            } else {
                kept.push(r);
            }
        }
        // In the receipts table's key order: a batch's rows go to adjacent
        // places in its B-tree.
        kept.sort_by(|a, b| (&a.task_id, &a.receipt_id).cmp(&(&b.task_id, &b.receipt_id)));
        kept.dedup_by(|a, b| a.task_id == b.task_id && a.receipt_id == b.receipt_id);
        let rows: Vec<ReceiptRow<'a>> = kept.into_iter().map(ReceiptRow::new).collect();
        let tasks = task::aggregate(rows.iter().map(|r| (r.receipt, r.created_at.as_str())));
        quarantine.sort_by(|a, b| a.id.cmp(&b.id));
        quarantine.dedup_by(|a, b| a.id == b.id);
        Prepared {
            receipts: rows,
            tasks,
            quarantine,
            stored_at: task::canonical_time(&Utc::now()),
        }
    }

    fn is_empty(&self) -> bool {
        self.receipts.is_empty() && self.quarantine.is_empty()
    }
}

impl<'a> ReceiptRow<'a> {
    fn new(receipt: &'a Receipt) -> Self {
        ReceiptRow {
            receipt,
            created_at: task::canonical_time(&receipt.created_at),
            parents: serde_json::to_string(&receipt.parent_receipt_ids)
                .unwrap_or_else(|_| "[]".into()),
            body: serde_json::to_string(&receipt.body).unwrap_or_else(|_| "null".into()),
            artifacts: serde_json::to_string(&receipt.artifacts).unwrap_or_else(|_| "[]".into()),
        }
    }
}

impl QuarantineRow {
    fn new(reason: &str, raw: &str) -> Self {
        let mut h = Sha256::new();
        h.update(raw.as_bytes());
        h.update([0u8]);
        h.update(reason.as_bytes());
        QuarantineRow {
            id: hex::encode(h.finalize()),
            reason: reason.to_owned(),
            raw: raw.replace('\0', "\\u0000"),
        }
    }
}

/// A bad entry as text: the body itself when it was not JSON, else its JSON.
fn raw_text(raw: &serde_json::Value) -> String {
    match raw {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// PostgreSQL text cannot hold NUL; JSON columns escape it, plain columns cannot.
fn has_nul(r: &Receipt) -> bool {
    let nul = |s: &str| s.contains('\0');
    nul(&r.receipt_id)
        || nul(&r.task_id)
        || nul(&r.task_type)
        || r.worker_id.as_deref().is_some_and(nul)
        || r.parent_receipt_ids.iter().any(|p| nul(p))
}

/// The cursor after `row`: hex of the JSON pair `[last_update, task_id]`.
fn encode_cursor(row: &TaskRow) -> String {
    let key = (task::canonical_time(&row.last_update), &row.task_id);
    hex::encode(serde_json::to_vec(&key).unwrap_or_default())
}

fn decode_cursor(cursor: &str) -> Result<(String, String), SinkError> {
    let bad = || SinkError::BadCursor("not a cursor from this API".into());
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let (last_update, task_id): (String, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let t = parse_time(&last_update).map_err(|_| bad())?;
    if task::canonical_time(&t) != last_update {
        return Err(bad());
    }
    Ok((last_update, task_id))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, SinkError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| SinkError::Corrupt(format!("bad time {s:?}: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, s: &str) -> Result<T, SinkError> {
    serde_json::from_str(s).map_err(|e| SinkError::Corrupt(format!("bad JSON in {column}: {e}")))
}

fn task_from_row<'r, R>(row: &'r R) -> Result<TaskRow, SinkError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(TaskRow {
        task_id: row.try_get("task_id")?,
        task_type: row.try_get("task_type")?,
        state: TaskState::parse(&state)
            .ok_or_else(|| SinkError::Corrupt(format!("unknown task state {state:?}")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_seen: parse_time(&row.try_get::<String, _>("first_seen")?)?,
        last_update: parse_time(&row.try_get::<String, _>("last_update")?)?,
        worker_id: row.try_get("worker_id")?,
        last_error: row.try_get("last_error")?,
    })
}

fn receipt_from_row<'r, R>(row: &'r R) -> Result<Receipt, SinkError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let receipt_type: String = row.try_get("receipt_type")?;
    let attempt: i64 = row.try_get("attempt")?;
    Ok(Receipt {
        receipt_id: row.try_get("receipt_id")?,
        task_id: row.try_get("task_id")?,
        task_type: row.try_get("task_type")?,
        receipt_type: ReceiptType::parse(&receipt_type)
            .ok_or_else(|| SinkError::Corrupt(format!("unknown receipt type {receipt_type:?}")))?,
        parent_receipt_ids: parse_json(
            "parent_receipt_ids",
            &row.try_get::<String, _>("parent_receipt_ids")?,
        )?,
        worker_id: row.try_get("worker_id")?,
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        created_at: parse_time(&row.try_get::<String, _>("created_at")?)?,
        body: parse_json("body", &row.try_get::<String, _>("body")?)?,
        artifacts: parse_json("artifacts", &row.try_get::<String, _>("artifacts")?)?,
        // Written by this sink from parsed ids: anything else reads as none.
        trace_id: row
            .try_get::<Option<String>, _>("trace_id")?
            .as_deref()
            .and_then(TraceId::parse),
        span_id: row
            .try_get::<Option<String>, _>("span_id")?
            .as_deref()
            .and_then(SpanId::parse),
    })
}

fn quarantined_from_row<'r, R>(row: &'r R) -> Result<QuarantinedRecord, SinkError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(QuarantinedRecord {
        id: row.try_get("id")?,
        reason: row.try_get("reason")?,
        raw: row.try_get("raw")?,
        received_at: parse_time(&row.try_get::<String, _>("received_at")?)?,
    })
}

/// The largest power of two that is at most `len` and `max`: splitting a
/// batch into such chunks keeps the number of distinct statements (and so of
/// prepared statements cached per connection) small.
pub(crate) fn chunk_len(len: usize, max: usize) -> usize {
    let n = len.min(max).max(1);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

#[cfg(test)]
pub(crate) mod tests;
