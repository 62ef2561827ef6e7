-- The HTTP gateway's tables (chit gateway, docs/gateway.md): its API keys and
-- its idempotency records live beside the chains, so every gateway replica
-- on one store sees the same keys and a restart forgets nothing.
-- Times are RFC 3339 UTC text with nanoseconds, fixed width, as elsewhere.

-- One row per API key. The secret is never stored: `hash` is the hex
-- HMAC-SHA256 of the secret keyed with `salt` (16 random bytes, hex), so a
-- copy of this table does not let anyone call the gateway. `scopes` is a JSON
-- array of strings. A revoked key keeps its row (and its name in logs).
CREATE TABLE gateway_keys (
    key_id     TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    salt       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- One row per (API key, idempotency key): the task id chosen for it and a
-- hash of the request, reserved before publishing (INSERT ... ON CONFLICT
-- DO NOTHING decides a race), `published_at` set once the broker confirmed.
-- `claimed_at` is when the current publisher took it; a claim older than
-- the publish deadline belongs to a publisher that died, and the next
-- request takes it over with the same task id. Rows expire after 24 hours.
CREATE TABLE gateway_idempotency (
    key_id            TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    queued_receipt_id TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    claimed_at        TEXT NOT NULL,
    published_at      TEXT,
    PRIMARY KEY (key_id, idempotency_key)
);

CREATE INDEX gateway_idempotency_created ON gateway_idempotency (created_at);
