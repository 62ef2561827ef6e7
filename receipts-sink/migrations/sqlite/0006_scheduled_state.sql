-- A delayed task (a `scheduled` receipt) is in state 'scheduled' until a
-- worker takes it.
-- SQLite cannot change a CHECK constraint: the table is rebuilt.
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
);

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
