-- A task whose dead letter was purged (`chit dlq purge`) is in state 'purged'.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'retrying',
                     'dead_lettered', 'cancelled', 'purged'));
