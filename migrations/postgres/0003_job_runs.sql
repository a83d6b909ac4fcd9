-- Jobs at scale: a time before which a job is not run (`run_at`: scheduled jobs, and retries
-- after their backoff), `scheduled` and `discarded` states, and one row per attempt, so a
-- job's history (and every claim's interval) can be read back.
ALTER TABLE jobs ADD COLUMN run_at BIGINT;
UPDATE jobs SET run_at = COALESCE(started_at, created_at);
ALTER TABLE jobs ALTER COLUMN run_at SET NOT NULL;
ALTER TABLE jobs ALTER COLUMN run_at SET DEFAULT 0;
-- What a runner may claim, soonest first: queued jobs, and scheduled ones once due.
CREATE INDEX jobs_ready ON jobs (run_at, id) WHERE status IN ('queued', 'scheduled');
-- The jobs not yet finished, by status, for the gauges: never a scan of finished ones.
DROP INDEX jobs_claim;
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'scheduled', 'running');
-- The last jobs discarded, for the status page, without scanning the finished ones.
CREATE INDEX jobs_discarded ON jobs (finished_at) WHERE status = 'discarded';
-- Every change of a job's status writes a new entry into each index the new row belongs to:
-- the indexes only some rows are read through hold only those rows.
DROP INDEX jobs_lease;
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs ((COALESCE(owner, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX jobs_owner_list;
CREATE INDEX jobs_owner_list ON jobs (owner, created_at DESC, id DESC) WHERE owner IS NOT NULL;
CREATE TABLE job_attempts (
    -- No foreign key: its check on every attempt logged would cost a lookup and a lock of
    -- the job; the upkeep deletes a job's attempts with the job.
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    runner      TEXT    NOT NULL,   -- the runner that claimed it (one per replica and start)
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT,
    error       TEXT,               -- why this attempt did not succeed
    -- One open attempt per job at most (it has one lease); a retried job counts afresh, so
    -- an attempt number may come back: each attempt is its job and its start.
    PRIMARY KEY (job_id, started_at)
);
-- One notification per statement that queues jobs (a batch of 1,000 is one), so idle
-- runners wake up instead of polling.
CREATE FUNCTION floodgate_jobs_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'queued') THEN
        PERFORM pg_notify('floodgate_jobs', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_queued AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION floodgate_jobs_queued();
