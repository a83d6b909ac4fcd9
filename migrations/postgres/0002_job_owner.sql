-- A job belongs to the principal that submitted it (NULL when authentication is off), and
-- an idempotency key is unique per owner. The unique index reads a missing owner as '' so
-- that keys without an owner stay unique too (a plain index would let NULL owners repeat a
-- key).
ALTER TABLE jobs ADD COLUMN owner TEXT;  -- `key:<name>` or `jwt:<sub>`
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency ON jobs ((COALESCE(owner, '')), idempotency_key);
CREATE INDEX jobs_owner_list ON jobs (owner, created_at DESC, id DESC);
