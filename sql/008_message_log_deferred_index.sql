-- 008_message_log_deferred_index: full-text indexing of message_log moves
-- off the hot path, to osprey-worker.
--
-- Why: the generated search column, its GIN index and three btrees made
-- every COPY of the log writer compute a tsvector and update four indexes
-- per row (about 17,600 rows/s with durable settings; the target is
-- 50,000).  Now a row is written with search NULL and only the indexes
-- the writer itself needs: the primary key (exactly-once replays), BRIN
-- on logged_at (a few bytes per 128 pages) and a small btree on logged_at
-- of the rows not indexed yet.  osprey-worker's log_index job fills search
-- in batches (osprey_log_index); only then does a row enter the GIN, the
-- account and the queue-id indexes, all partial (search IS NOT NULL).
--
-- Trade-off: a row is in the full-text, account and queue-id indexes a
-- little after it is written (one log_index run: seconds when the worker
-- keeps up; under a sustained overload the backlog grows and is indexed
-- later).  Searching stays correct meanwhile: osprey_log_search() also
-- scans the not-yet-indexed rows (found through message_log_unindexed_idx,
-- few and recent) computing their vector on the fly.  Indexing rewrites
-- each row once (an UPDATE: one more heap tuple and dead tuple for
-- autovacuum), so the total work is about the same as before; what the
-- writer saves is latency on the hot path, and peaks are absorbed.  Rows
-- from before this migration keep the vector they had.
--
-- Search (instead of the form given in 005):
--   SELECT * FROM osprey_log_search(websearch_to_tsquery('simple', $1), $2, $3, $4);
-- Queries of one account should add "search IS NOT NULL" to use the
-- partial account index, and cover the unindexed rows as osprey_log_search
-- does.

ALTER TABLE message_log ALTER COLUMN search DROP EXPRESSION;

-- The vector the generated column used to compute, word for word.
CREATE FUNCTION osprey_log_vector(subject text, sender text, recipient text,
                                  client_name text, helo text, queue_id text,
                                  reinject_queue_id text, message_id text, verdict text,
                                  rules_hit text[])
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, coalesce(subject, '')), 'A') ||
           setweight(to_tsvector('simple'::regconfig,
                                 coalesce(sender, '') || ' ' || coalesce(recipient, '') || ' ' ||
                                 coalesce(client_name, '') || ' ' || coalesce(helo, '') || ' ' ||
                                 coalesce(queue_id, '') || ' ' || coalesce(reinject_queue_id, '') || ' ' ||
                                 coalesce(message_id, '') || ' ' || coalesce(verdict, '')), 'B') ||
           setweight(to_tsvector('simple'::regconfig, osprey_words(rules_hit)), 'C')
$$;

DROP INDEX message_log_search_idx;
DROP INDEX message_log_account_idx;
DROP INDEX message_log_queue_idx;
CREATE INDEX message_log_search_idx ON message_log USING gin (search)
    WITH (fastupdate = on) WHERE search IS NOT NULL;
CREATE INDEX message_log_account_idx ON message_log (account_id, logged_at)
    WHERE search IS NOT NULL;
CREATE INDEX message_log_queue_idx ON message_log (queue_id) WHERE search IS NOT NULL;
CREATE INDEX message_log_unindexed_idx ON message_log (logged_at) WHERE search IS NULL;

-- Index up to batch rows not indexed yet, oldest first; returns how many.
-- Rows another indexer holds are skipped, so several workers may run it.
CREATE FUNCTION osprey_log_index(batch integer DEFAULT 5000) RETURNS integer
LANGUAGE sql AS $$
    WITH c AS (
        SELECT l.id, l.logged_at FROM message_log l
         WHERE l.search IS NULL
         ORDER BY l.logged_at
         LIMIT batch
           FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE message_log m
           SET search = osprey_log_vector(m.subject, m.sender, m.recipient, m.client_name,
                                          m.helo, m.queue_id, m.reinject_queue_id,
                                          m.message_id, m.verdict, m.rules_hit)
          FROM c
         WHERE m.id = c.id AND m.logged_at = c.logged_at
        RETURNING 1
    )
    SELECT count(*)::integer FROM u
$$;

-- Rows matching q logged in [t_from, t_to), newest first, at most lim:
-- indexed rows through the GIN index, the others by computing their
-- vector (one statement, one snapshot: a row being indexed meanwhile is
-- seen once).  Runs with the caller's rights: row-level security applies.
CREATE FUNCTION osprey_log_search(q tsquery, t_from timestamptz, t_to timestamptz,
                                  lim integer DEFAULT 100)
RETURNS SETOF message_log
LANGUAGE sql STABLE AS $$
    SELECT * FROM (
        SELECT * FROM message_log l
         WHERE l.search @@ q AND l.logged_at >= t_from AND l.logged_at < t_to
        UNION ALL
        SELECT * FROM message_log l
         WHERE l.search IS NULL AND l.logged_at >= t_from AND l.logged_at < t_to
           AND osprey_log_vector(l.subject, l.sender, l.recipient, l.client_name, l.helo,
                                 l.queue_id, l.reinject_queue_id, l.message_id, l.verdict,
                                 l.rules_hit) @@ q
    ) r
    ORDER BY r.logged_at DESC, r.id DESC
    LIMIT lim
$$;

-- Periodic jobs without duplicates across workers: enqueue kind unless a
-- job of that kind (with no account) is queued or running, or was created
-- less than every ago.  Serialised by an advisory lock per kind, so two
-- workers scheduling at once make one job.  Returns the new job's id, or
-- NULL when nothing was enqueued.
CREATE INDEX jobs_kind_idx ON jobs (kind, created_at);
CREATE FUNCTION osprey_job_schedule(job_kind text, every interval,
                                    job_payload jsonb DEFAULT '{}',
                                    job_max_attempts integer DEFAULT 10)
RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('osprey_job_schedule'), hashtext(job_kind));
    IF EXISTS (SELECT 1 FROM jobs j
                WHERE j.kind = job_kind AND j.account_id IS NULL
                  AND (j.state IN ('queued', 'running') OR j.created_at > now() - every)) THEN
        RETURN NULL;
    END IF;
    RETURN osprey_job_enqueue(job_kind, job_payload, NULL, now(), job_max_attempts);
END
$$;

-- osprey_job_fail with the worker's policy: retry after backoff * 2^(attempts-1)
-- (at most 1 hour), dead once attempts reach the job's max_attempts or
-- max_attempts, whichever is lower.  Returns the new state, NULL if the job
-- was not running.
CREATE FUNCTION osprey_job_fail(job_id bigint, error text, backoff interval, max_attempts integer)
RETURNS text
LANGUAGE sql AS $$
    UPDATE jobs j
       SET state = CASE WHEN j.attempts >= least(j.max_attempts, $4) THEN 'dead' ELSE 'queued' END,
           finished_at = CASE WHEN j.attempts >= least(j.max_attempts, $4) THEN now() END,
           run_after = now() + least(interval '1 hour',
                                     $3 * power(2, least(j.attempts, 20) - 1)),
           last_error = $2, locked_by = NULL, locked_at = NULL
     WHERE j.id = $1 AND j.state = 'running'
    RETURNING j.state
$$;

-- Finished jobs older than keep go (done and dead alike); returns how many.
CREATE FUNCTION osprey_jobs_expire(keep interval DEFAULT '7 days') RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM jobs WHERE state IN ('done', 'dead') AND finished_at < now() - keep
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- osprey_partition_create (003) again, safe when two workers' maintenance
-- jobs create the same partition at once: the loser sees the winner's table
-- (duplicate_table, or a unique violation in the catalogs) and returns false.
CREATE OR REPLACE FUNCTION osprey_partition_create(tbl text, d date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    part text := tbl || '_p' || to_char(d, 'YYYYMMDD');
    lo text;
    hi text;
BEGIN
    IF tbl NOT IN ('quarantine', 'message_log') THEN
        RAISE EXCEPTION 'osprey_partition_create: "%" is not a partitioned Osprey table', tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass('public.' || tbl) IS NULL THEN
        RETURN false;
    END IF;
    IF to_regclass('public.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF tbl = 'quarantine' THEN
        lo := quote_literal(d::text);
        hi := quote_literal((d + 1)::text);
    ELSE
        lo := quote_literal(d::text || ' 00:00:00+00');
        hi := quote_literal((d + 1)::text || ' 00:00:00+00');
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%s) TO (%s)',
                       part, tbl, lo, hi);
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        RETURN false;
    END;
    RETURN true;
END
$$;

-- Only the service runs these.
REVOKE ALL ON FUNCTION osprey_log_index(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION osprey_job_schedule(text, interval, jsonb, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION osprey_job_fail(bigint, text, interval, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION osprey_jobs_expire(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION osprey_log_index(integer) TO osprey_service;
GRANT EXECUTE ON FUNCTION osprey_job_schedule(text, interval, jsonb, integer) TO osprey_service;
GRANT EXECUTE ON FUNCTION osprey_job_fail(bigint, text, interval, integer) TO osprey_service;
GRANT EXECUTE ON FUNCTION osprey_jobs_expire(interval) TO osprey_service;
