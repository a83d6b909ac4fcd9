-- Durable jobs (API v2). Times are microseconds since the Unix epoch; digest is the u64
-- result stored bit for bit in a signed 64-bit column.
CREATE TABLE jobs (
    id              TEXT    PRIMARY KEY,   -- UUIDv7: sorts by creation time
    status          TEXT    NOT NULL,      -- queued | running | succeeded | failed | cancelled
    number          INTEGER NOT NULL,
    rounds          INTEGER NOT NULL,
    result          INTEGER,
    digest          INTEGER,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    idempotency_expires_at INTEGER
);
CREATE INDEX jobs_claim ON jobs (status, created_at);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX jobs_list ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_at);
