-- A task whose last run said it is not done yet (an `in_progress` receipt)
-- is in state 'in_progress' until it runs again.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('queued', 'running', 'in_progress', 'succeeded', 'failed', 'retrying',
                     'dead_lettered', 'cancelled', 'purged'));
