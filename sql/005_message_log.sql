-- 005_message_log: one row per message and recipient, full-text
-- searchable, partitioned by UTC day on logged_at.
--
-- The log writer batches rows with COPY (the generated search column is
-- left out of the column list):
--   COPY message_log (logged_at, account_id, queue_id, reinject_queue_id,
--       message_id, client_address, client_name, helo, sender, recipient,
--       subject, size, score, verdict, rules_hit, delivery) FROM STDIN
-- Search: WHERE search @@ websearch_to_tsquery('simple', $1)
--   AND logged_at >= $2 AND logged_at < $3   (the range prunes partitions).

-- Rule names as words for the search vector (array_to_string is only
-- STABLE in general; for text[] it is immutable).
CREATE FUNCTION osprey_words(a text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string(a, ' ') $$;

CREATE SEQUENCE message_log_id_seq AS bigint;

CREATE TABLE message_log (
    id                 bigint NOT NULL DEFAULT nextval('message_log_id_seq'),
    logged_at          timestamptz NOT NULL DEFAULT now(),
    account_id         bigint,                 -- NULL: recipient owned by nobody
    queue_id           text,                   -- Postfix queue id before the filter
    reinject_queue_id  text,                   -- and after reinjection, if any
    message_id         text,
    client_address     inet,
    client_name        text,
    helo               text,
    sender             text,
    recipient          text,
    subject            text,
    size               bigint,
    score              double precision,
    verdict            text,
    rules_hit          text[] NOT NULL DEFAULT '{}',
    delivery           text,                   -- e.g. "250 2.0.0 Ok: queued as ..."
    search             tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, coalesce(subject, '')), 'A') ||
        setweight(to_tsvector('simple'::regconfig,
                              coalesce(sender, '') || ' ' || coalesce(recipient, '') || ' ' ||
                              coalesce(client_name, '') || ' ' || coalesce(helo, '') || ' ' ||
                              coalesce(queue_id, '') || ' ' || coalesce(reinject_queue_id, '') || ' ' ||
                              coalesce(message_id, '') || ' ' || coalesce(verdict, '')), 'B') ||
        setweight(to_tsvector('simple'::regconfig, osprey_words(rules_hit)), 'C')
    ) STORED,
    PRIMARY KEY (id, logged_at)
) PARTITION BY RANGE (logged_at);
ALTER SEQUENCE message_log_id_seq OWNED BY message_log.id;
CREATE INDEX message_log_search_idx ON message_log USING gin (search);
CREATE INDEX message_log_account_idx ON message_log (account_id, logged_at);
CREATE INDEX message_log_queue_idx ON message_log (queue_id);
CREATE INDEX message_log_logged_at_idx ON message_log USING brin (logged_at);

SELECT osprey_partitions_ensure(7);
