-- Receipt chains, task summaries and quarantined input.
-- Times are RFC 3339 UTC text with nanoseconds, fixed width, so they sort as text.
-- JSON columns hold JSON text.

CREATE TABLE receipts (
    receipt_id         TEXT PRIMARY KEY NOT NULL,
    task_id            TEXT NOT NULL,
    task_type          TEXT NOT NULL,
    receipt_type       TEXT NOT NULL,
    parent_receipt_ids TEXT NOT NULL,
    worker_id          TEXT,
    attempt            INTEGER NOT NULL,
    created_at         TEXT NOT NULL,
    body               TEXT NOT NULL,
    artifacts          TEXT NOT NULL,
    stored_at          TEXT NOT NULL
);

CREATE INDEX receipts_task_id ON receipts (task_id);

-- One row per task, maintained by max/min upserts only (see src/task.rs):
-- applying a receipt twice, or receipts in any order, gives the same row.
CREATE TABLE tasks (
    task_id     TEXT PRIMARY KEY NOT NULL,
    task_type   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                                'retrying', 'dead_lettered', 'cancelled')),
    attempts    INTEGER NOT NULL,
    first_seen  TEXT NOT NULL,
    last_update TEXT NOT NULL,
    worker_id   TEXT,
    last_error  TEXT,
    -- Order keys of the receipts that set state, worker_id and last_error.
    state_key   TEXT NOT NULL,
    worker_key  TEXT,
    error_key   TEXT
);

CREATE INDEX tasks_recent ON tasks (last_update DESC, task_id);
CREATE INDEX tasks_state_recent ON tasks (state, last_update DESC, task_id);
CREATE INDEX tasks_type_recent ON tasks (task_type, last_update DESC, task_id);

-- Input that could not be read as receipts, kept rather than dropped.
-- id is the SHA-256 of raw and reason, so a redelivery is stored once.
CREATE TABLE quarantine (
    id          TEXT PRIMARY KEY NOT NULL,
    reason      TEXT NOT NULL,
    raw         TEXT NOT NULL,
    received_at TEXT NOT NULL
);

CREATE INDEX quarantine_recent ON quarantine (received_at DESC);
