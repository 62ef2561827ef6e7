-- The trace context a receipt records (docs/protocol.md, section 4): its
-- trace and span ids as lower-case hex, NULL when it has none.
ALTER TABLE receipts ADD COLUMN trace_id TEXT;
ALTER TABLE receipts ADD COLUMN span_id TEXT;
