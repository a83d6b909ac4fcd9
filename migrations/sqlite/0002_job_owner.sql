-- A job belongs to the principal that submitted it (NULL when authentication is off), and
-- an idempotency key is unique per owner. SQLite cannot drop the UNIQUE of a column, so the
-- table is rebuilt; the unique index reads a missing owner as '' so that keys without an
-- owner stay unique too (a plain index would let NULL owners repeat a key).
CREATE TABLE jobs_owned (
    id              TEXT    PRIMARY KEY,
    status          TEXT    NOT NULL,
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
    idempotency_key TEXT,
    request_hash    TEXT,
    idempotency_expires_at INTEGER,
    owner           TEXT                   -- `key:<name>` or `jwt:<sub>`
);
INSERT INTO jobs_owned (id, status, number, rounds, result, digest, error, attempts, created_at,
    started_at, finished_at, lease_owner, lease_until, idempotency_key, request_hash,
    idempotency_expires_at)
SELECT id, status, number, rounds, result, digest, error, attempts, created_at, started_at,
    finished_at, lease_owner, lease_until, idempotency_key, request_hash, idempotency_expires_at
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_owned RENAME TO jobs;
CREATE INDEX jobs_claim ON jobs (status, created_at);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX jobs_list ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_at);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (COALESCE(owner, ''), idempotency_key);
CREATE INDEX jobs_owner_list ON jobs (owner, created_at DESC, id DESC);
