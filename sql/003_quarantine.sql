-- 003_quarantine: quarantined mail, one row per (message, recipient),
-- bodies stored once per content hash, partitioned by day.
--
-- The content filter stores a message in ONE transaction (synchronous
-- commit) before it answers Postfix:
--   INSERT INTO quarantine_bodies (sha256, body, size) VALUES ($1, $2, $3)
--       ON CONFLICT (sha256) DO UPDATE SET last_used_at = now();
--   INSERT INTO quarantine (...) VALUES (...) ON CONFLICT DO NOTHING
--       RETURNING id;                          -- once per recipient
-- A retry for the same Postfix queue id and recipient inserts nothing (no
-- row returned): same UTC day by the unique key, previous day by a trigger.

-- The UTC calendar day: partitions and idempotency keys use it so that the
-- answer does not depend on the session's TimeZone.
CREATE FUNCTION osprey_utc_today() RETURNS date
LANGUAGE sql STABLE AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;

CREATE TABLE quarantine_bodies (
    sha256        bytea PRIMARY KEY CHECK (length(sha256) = 32),
    body          bytea NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now()
);
-- Bodies are compressed and moved out of line by TOAST (EXTENDED is the
-- default for bytea; said here on purpose).  Use lz4 when the server was
-- built with it: faster than pglz at a similar ratio for mail.
ALTER TABLE quarantine_bodies ALTER COLUMN body SET STORAGE EXTENDED;
DO $$
BEGIN
    EXECUTE 'ALTER TABLE quarantine_bodies ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 not available, quarantine bodies use pglz';
END
$$;
CREATE INDEX quarantine_bodies_gc_idx ON quarantine_bodies (last_used_at);

CREATE SEQUENCE quarantine_id_seq AS bigint;

CREATE TABLE quarantine (
    id              bigint NOT NULL DEFAULT nextval('quarantine_id_seq'),
    day             date NOT NULL DEFAULT osprey_utc_today(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    account_id      bigint NOT NULL,
    queue_id        text NOT NULL CHECK (queue_id <> ''),
    message_id      text,
    sender          text NOT NULL,            -- '' for the null sender
    recipient       text NOT NULL,
    client_address  inet,
    client_name     text,
    helo            text,
    subject         text,
    size            bigint NOT NULL CHECK (size >= 0),
    score           double precision,
    verdict         text NOT NULL,
    reasons         text[] NOT NULL DEFAULT '{}',
    body_sha256     bytea NOT NULL REFERENCES quarantine_bodies (sha256),
    release_state   text NOT NULL DEFAULT 'held'
                    CHECK (release_state IN ('held', 'release_requested', 'released', 'deleted')),
    release_requested_by text,
    released_at     timestamptz,
    PRIMARY KEY (id, day),
    UNIQUE (queue_id, recipient, day)
) PARTITION BY RANGE (day);
ALTER SEQUENCE quarantine_id_seq OWNED BY quarantine.id;
CREATE INDEX quarantine_account_idx ON quarantine (account_id, created_at);
CREATE INDEX quarantine_body_idx ON quarantine (body_sha256);
CREATE INDEX quarantine_recipient_idx ON quarantine (recipient);

-- A retry that crosses midnight (UTC) carries a new day, which the unique
-- key cannot see: skip the row if the previous or same day has it.
CREATE FUNCTION osprey_quarantine_dedup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM quarantine q
                WHERE q.queue_id = NEW.queue_id AND q.recipient = NEW.recipient
                  AND q.day BETWEEN NEW.day - 1 AND NEW.day) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER quarantine_dedup BEFORE INSERT ON quarantine
    FOR EACH ROW EXECUTE FUNCTION osprey_quarantine_dedup();

-- Partition maintenance for the day-partitioned tables (quarantine here,
-- message_log from 005).  Partitions are named TABLE_pYYYYMMDD and hold
-- one UTC day.  Only the database owner may create and drop tables, so
-- these run with the owner's rights (SECURITY DEFINER); osprey_service may
-- call them (granted in 007).

-- Create TABLE's partition for day d unless it exists; true if created.
CREATE FUNCTION osprey_partition_create(tbl text, d date) RETURNS boolean
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
    EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%s) TO (%s)',
                   part, tbl, lo, hi);
    RETURN true;
END
$$;

-- Make sure partitions exist from yesterday to days_ahead days from today
-- (UTC) for every partitioned table.  Returns how many were created.  The
-- worker calls it at start and daily; migrations call it once.
CREATE FUNCTION osprey_partitions_ensure(days_ahead integer DEFAULT 7) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    t text;
    i integer;
    n integer := 0;
BEGIN
    IF days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'osprey_partitions_ensure: days_ahead must be 0..366'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH t IN ARRAY ARRAY['quarantine', 'message_log'] LOOP
        FOR i IN -1 .. days_ahead LOOP
            IF osprey_partition_create(t, osprey_utc_today() + i) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;

-- Drop TABLE's partitions for days before today - keep_days (UTC): with
-- keep_days = 30, today and the 30 days before it stay.  Returns how many
-- were dropped.  Quarantine bodies left without rows go with
-- osprey_quarantine_gc().
CREATE FUNCTION osprey_partitions_expire(tbl text, keep_days integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    IF tbl NOT IN ('quarantine', 'message_log') THEN
        RAISE EXCEPTION 'osprey_partitions_expire: "%" is not a partitioned Osprey table', tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF keep_days < 0 THEN
        RAISE EXCEPTION 'osprey_partitions_expire: keep_days must be >= 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN SELECT c.relname
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace ns ON ns.oid = c.relnamespace
              WHERE i.inhparent = to_regclass('public.' || tbl)
                AND ns.nspname = 'public'
                AND c.relname ~ ('^' || tbl || '_p[0-9]{8}$')
                AND to_date(right(c.relname, 8), 'YYYYMMDD') < osprey_utc_today() - keep_days
              ORDER BY c.relname LOOP
        EXECUTE format('DROP TABLE public.%I', r.relname);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Delete bodies no quarantine row references any more, at most batch of
-- them, and only those not used for grace (a store in progress refreshes
-- last_used_at under a row lock, which this skips).  Returns how many.
CREATE FUNCTION osprey_quarantine_gc(grace interval DEFAULT '1 hour', batch integer DEFAULT 10000)
RETURNS integer
LANGUAGE sql AS $$
    WITH victims AS (
        SELECT b.sha256 FROM quarantine_bodies b
         WHERE b.last_used_at < now() - grace
           AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.body_sha256 = b.sha256)
         LIMIT batch
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM quarantine_bodies b USING victims v
         WHERE b.sha256 = v.sha256
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

SELECT osprey_partitions_ensure(7);
