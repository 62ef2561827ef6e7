-- Fewer B-trees to write per receipt and per task.
--
-- receipts is keyed by (task_id, receipt_id): the key's index also serves a
-- chain's reads, so the task_id index goes, and a receipt is written to two
-- B-trees instead of three. A repeat of a receipt (same task, same
-- receipt_id) is still stored once. The rows stay in a rowid table, in
-- arrival order: a chain's later receipts would split full pages if they
-- had to go beside its first (measured: slower).
--
-- tasks has no rowid: the row lives in its key's B-tree, so an upsert no
-- longer finds the key in one B-tree and writes the row in another.
--
-- Measured with `bench/src/bin/store_write.rs` (docs/benchmarks.md). SQLite
-- cannot change a table's key: both tables are rebuilt.
CREATE TABLE receipts_new (
    task_id            TEXT NOT NULL,
    receipt_id         TEXT NOT NULL,
    task_type          TEXT NOT NULL,
    receipt_type       TEXT NOT NULL,
    parent_receipt_ids TEXT NOT NULL,
    worker_id          TEXT,
    attempt            INTEGER NOT NULL,
    created_at         TEXT NOT NULL,
    body               TEXT NOT NULL,
    artifacts          TEXT NOT NULL,
    stored_at          TEXT NOT NULL,
    trace_id           TEXT,
    span_id            TEXT,
    PRIMARY KEY (task_id, receipt_id)
);

INSERT INTO receipts_new (task_id, receipt_id, task_type, receipt_type, parent_receipt_ids,
                          worker_id, attempt, created_at, body, artifacts, stored_at,
                          trace_id, span_id)
SELECT task_id, receipt_id, task_type, receipt_type, parent_receipt_ids,
       worker_id, attempt, created_at, body, artifacts, stored_at, trace_id, span_id
FROM receipts;

DROP TABLE receipts;
ALTER TABLE receipts_new RENAME TO receipts;

CREATE TABLE tasks_new (
    task_id     TEXT PRIMARY KEY NOT NULL,
    task_type   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'scheduled', 'running', 'in_progress',
                                                'succeeded', 'failed', 'retrying',
                                                'dead_lettered', 'cancelled', 'purged')),
    attempts    INTEGER NOT NULL,
    first_seen  TEXT NOT NULL,
    last_update TEXT NOT NULL,
    worker_id   TEXT,
    last_error  TEXT,
    state_key   TEXT NOT NULL,
    worker_key  TEXT,
    error_key   TEXT
) WITHOUT ROWID;

INSERT INTO tasks_new (task_id, task_type, state, attempts, first_seen, last_update,
                       worker_id, last_error, state_key, worker_key, error_key)
SELECT task_id, task_type, state, attempts, first_seen, last_update,
       worker_id, last_error, state_key, worker_key, error_key
FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;

CREATE INDEX tasks_recent ON tasks (last_update DESC, task_id);
CREATE INDEX tasks_state_recent ON tasks (state, last_update DESC, task_id);
CREATE INDEX tasks_type_recent ON tasks (task_type, last_update DESC, task_id);
