-- A delayed task (a `scheduled` receipt) is in state 'scheduled' until a
-- worker takes it.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('queued', 'scheduled', 'running', 'in_progress', 'succeeded', 'failed',
                     'retrying', 'dead_lettered', 'cancelled', 'purged'));
