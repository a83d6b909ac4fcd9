-- Durable jobs (API v2). Times are microseconds since the Unix epoch; digest is the u64
-- result stored bit for bit in a signed 64-bit column.
CREATE TABLE jobs (
    id              TEXT    PRIMARY KEY,   -- UUIDv7: sorts by creation time
    status          TEXT    NOT NULL,      -- queued | running | succeeded | failed | cancelled
    number          BIGINT  NOT NULL,
    rounds          BIGINT  NOT NULL,
    result          BIGINT,
    digest          BIGINT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    idempotency_expires_at BIGINT
);
CREATE INDEX jobs_claim ON jobs (status, created_at);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX jobs_list ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_at);
