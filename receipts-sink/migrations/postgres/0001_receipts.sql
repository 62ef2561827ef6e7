-- Receipt chains, task summaries and quarantined input.
-- Times are RFC 3339 UTC text with nanoseconds, fixed width, so they sort as
-- text (cast with ::timestamptz to query them as times); ids, times and order
-- keys use the "C" collation so they sort bytewise, as the sink compares them.
-- JSON columns hold JSON text (cast with ::jsonb).

CREATE TABLE receipts (
    receipt_id         TEXT COLLATE "C" PRIMARY KEY,
    task_id            TEXT COLLATE "C" NOT NULL,
    task_type          TEXT NOT NULL,
    receipt_type       TEXT NOT NULL,
    parent_receipt_ids TEXT NOT NULL,
    worker_id          TEXT,
    attempt            BIGINT NOT NULL,
    created_at         TEXT COLLATE "C" NOT NULL,
    body               TEXT NOT NULL,
    artifacts          TEXT NOT NULL,
    stored_at          TEXT COLLATE "C" NOT NULL
);

CREATE INDEX receipts_task_id ON receipts (task_id);

-- One row per task, maintained by max/min upserts only (see src/task.rs):
-- applying a receipt twice, or receipts in any order, gives the same row.
CREATE TABLE tasks (
    task_id     TEXT COLLATE "C" PRIMARY KEY,
    task_type   TEXT COLLATE "C" NOT NULL,
    state       TEXT COLLATE "C" NOT NULL CHECK (state IN ('queued', 'running', 'succeeded',
                                      'failed', 'retrying', 'dead_lettered', 'cancelled')),
    attempts    BIGINT NOT NULL,
    first_seen  TEXT COLLATE "C" NOT NULL,
    last_update TEXT COLLATE "C" NOT NULL,
    worker_id   TEXT,
    last_error  TEXT,
    -- Order keys of the receipts that set state, worker_id and last_error.
    state_key   TEXT COLLATE "C" NOT NULL,
    worker_key  TEXT COLLATE "C",
    error_key   TEXT COLLATE "C"
);

CREATE INDEX tasks_recent ON tasks (last_update DESC, task_id);
CREATE INDEX tasks_state_recent ON tasks (state, last_update DESC, task_id);
CREATE INDEX tasks_type_recent ON tasks (task_type, last_update DESC, task_id);

-- Input that could not be read as receipts, kept rather than dropped.
-- id is the SHA-256 of raw and reason, so a redelivery is stored once.
CREATE TABLE quarantine (
    id          TEXT COLLATE "C" PRIMARY KEY,
    reason      TEXT NOT NULL,
    raw         TEXT NOT NULL,
    received_at TEXT COLLATE "C" NOT NULL
);

CREATE INDEX quarantine_recent ON quarantine (received_at DESC);
