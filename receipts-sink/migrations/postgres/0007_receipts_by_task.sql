-- Receipts are keyed by (task_id, receipt_id), as in SQLite (see its 0007):
-- the key's index also serves chain reads, so the task_id index goes, and a
-- receipt is written to one index fewer. A repeat of a receipt (same task,
-- same receipt_id) is still stored once.
ALTER TABLE receipts DROP CONSTRAINT receipts_pkey;
ALTER TABLE receipts ADD PRIMARY KEY (task_id, receipt_id);
DROP INDEX receipts_task_id;
