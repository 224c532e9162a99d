-- 006_jobs_counters_audit: the deferred work queue, cluster-wide rate
-- counters and the audit trail of admin actions.

-- Jobs.  A worker LISTENs on osprey_jobs (payload: the job's kind), and
-- also polls (a notification can be missed while disconnected):
--   SELECT * FROM osprey_job_dequeue($worker, $kinds, $n);    -- claim
--   SELECT osprey_job_complete($id);                          -- done
--   SELECT osprey_job_fail($id, $error);    -- retry with back-off, or dead
--   SELECT osprey_job_reclaim('10 minutes');  -- running jobs of dead workers
-- The backlog is the view osprey_job_backlog.
CREATE TABLE jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]*$'),
    account_id    bigint REFERENCES accounts (id) ON DELETE CASCADE,
    payload       jsonb NOT NULL DEFAULT '{}',
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'done', 'dead')),
    run_after     timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL DEFAULT 10 CHECK (max_attempts > 0),
    last_error    text,
    locked_by     text,
    locked_at     timestamptz,
    created_by    name NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX jobs_ready_idx ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_running_idx ON jobs (locked_at) WHERE state = 'running';
CREATE INDEX jobs_account_idx ON jobs (account_id);

CREATE FUNCTION osprey_jobs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('osprey_jobs', NEW.kind);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION osprey_jobs_notify();

-- Enqueue; returns the job id.
CREATE FUNCTION osprey_job_enqueue(kind text, payload jsonb DEFAULT '{}',
                                   account_id bigint DEFAULT NULL,
                                   run_after timestamptz DEFAULT now(),
                                   max_attempts integer DEFAULT 10)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO jobs (kind, payload, account_id, run_after, max_attempts)
    VALUES (kind, payload, account_id, run_after, max_attempts)
    RETURNING id
$$;

-- Claim up to n due jobs (of the given kinds, or any when kinds is NULL),
-- oldest first.  Rows another worker is claiming are skipped, not waited
-- for, so two workers never get the same job.
CREATE FUNCTION osprey_job_dequeue(worker text, kinds text[] DEFAULT NULL, n integer DEFAULT 1)
RETURNS SETOF jobs
LANGUAGE sql AS $$
    UPDATE jobs j
       SET state = 'running', attempts = j.attempts + 1,
           locked_by = worker, locked_at = now()
      FROM (SELECT q.id FROM jobs q
             WHERE q.state = 'queued' AND q.run_after <= now()
               AND (kinds IS NULL OR q.kind = ANY (kinds))
             ORDER BY q.run_after, q.id
             LIMIT n
               FOR UPDATE SKIP LOCKED) c
     WHERE j.id = c.id
    RETURNING j.*
$$;

-- Mark a running job done.  False if it was not running (reclaimed).
CREATE FUNCTION osprey_job_complete(job_id bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH d AS (
        UPDATE jobs SET state = 'done', finished_at = now(), locked_by = NULL, locked_at = NULL
         WHERE id = job_id AND state = 'running'
        RETURNING 1
    )
    SELECT count(*) = 1 FROM d
$$;

-- A running job failed: back to the queue after 10 s * 2^(attempts-1)
-- (at most 1 hour), or 'dead' once max_attempts is reached.  Returns the
-- new state, NULL if the job was not running.
CREATE FUNCTION osprey_job_fail(job_id bigint, error text) RETURNS text
LANGUAGE sql AS $$
    UPDATE jobs
       SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
           finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
           run_after = now() + least(interval '1 hour',
                                     interval '10 seconds' * power(2, least(attempts, 20) - 1)),
           last_error = error, locked_by = NULL, locked_at = NULL
     WHERE id = job_id AND state = 'running'
    RETURNING state
$$;

-- Put back jobs claimed longer than stale ago by workers that died.
CREATE FUNCTION osprey_job_reclaim(stale interval DEFAULT '10 minutes') RETURNS integer
LANGUAGE sql AS $$
    WITH r AS (
        UPDATE jobs SET state = 'queued', locked_by = NULL, locked_at = NULL,
               last_error = coalesce(last_error, 'reclaimed: worker did not finish')
         WHERE state = 'running' AND locked_at < now() - stale
        RETURNING 1
    )
    SELECT count(*)::integer FROM r
$$;

CREATE VIEW osprey_job_backlog WITH (security_invoker = true) AS
    SELECT kind, state, count(*) AS jobs, min(run_after) AS oldest_run_after,
           max(attempts) AS max_attempts_used
      FROM jobs
     WHERE state <> 'done'
     GROUP BY kind, state;

-- Rate counters shared by every policy daemon: one row per key and fixed
-- window.  UNLOGGED: fast, not replicated, emptied by a crash -- limits
-- restart from zero, which is acceptable for counters of minutes.
--   SELECT osprey_rate_hit($key, $window_start, $window, $n);  -- new count
-- A sliding window reads the previous window too:
--   SELECT window_start, count FROM rate_counters
--    WHERE key = $1 AND window_start IN ($2, $3);
CREATE UNLOGGED TABLE rate_counters (
    key           text NOT NULL,
    window_start  timestamptz NOT NULL,
    count         bigint NOT NULL DEFAULT 0,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_counters_expires_idx ON rate_counters (expires_at);

CREATE FUNCTION osprey_rate_hit(k text, window_start timestamptz, window_len interval,
                                n bigint DEFAULT 1)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO rate_counters AS r (key, window_start, count, expires_at)
    VALUES (k, window_start, n, window_start + 2 * window_len)
    ON CONFLICT (key, window_start) DO UPDATE SET count = r.count + EXCLUDED.count
    RETURNING count
$$;

CREATE FUNCTION osprey_rate_expire() RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM rate_counters WHERE expires_at < now() RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- Audit trail: who did what to which account's data.  Append-only for
-- admins; actor is the database role (each admin has its own).
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        name NOT NULL DEFAULT current_user,
    account_id   bigint NOT NULL,      -- no foreign key: history outlives accounts
    action       text NOT NULL,        -- 'quarantine.release', 'list.add', ...
    object_type  text,
    object_id    text,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_account_idx ON audit_log (account_id, at);
