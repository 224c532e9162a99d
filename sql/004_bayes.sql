-- 004_bayes: Bayes token counts per account, with account 0 (the root
-- account) holding everyone's counts.
--
-- Every training vote counts for the account and for account 0.  The
-- classifier reads both row sets in one query:
--   SELECT account_id, token, spam_count, ham_count FROM bayes_tokens
--    WHERE account_id IN (0, $1) AND token = ANY ($2::bigint[]);
--   SELECT account_id, spam_messages, ham_messages FROM bayes_totals
--    WHERE account_id IN (0, $1);
-- and trains with osprey_bayes_train().

-- token is the tokenizer's 64-bit hash, stored as a signed bigint (the
-- same bits).
CREATE TABLE bayes_tokens (
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token       bigint NOT NULL,
    spam_count  integer NOT NULL DEFAULT 0 CHECK (spam_count >= 0),
    ham_count   integer NOT NULL DEFAULT 0 CHECK (ham_count >= 0),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, token)
) WITH (fillfactor = 90);   -- room for HOT updates of the counts

-- Messages trained per account (the denominators).
CREATE TABLE bayes_totals (
    account_id     bigint PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    spam_messages  bigint NOT NULL DEFAULT 0 CHECK (spam_messages >= 0),
    ham_messages   bigint NOT NULL DEFAULT 0 CHECK (ham_messages >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- What each account has trained, by message hash (sha256 of the
-- normalised message), so that training the same message again does
-- nothing and moving it from ham to spam corrects both counts.
CREATE TABLE bayes_trained (
    account_id    bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message_hash  bytea NOT NULL CHECK (length(message_hash) = 32),
    as_spam       boolean NOT NULL,
    trained_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, message_hash)
);

-- Add delta (+1 or -1) to the spam or ham count of tokens for account acct.
CREATE FUNCTION osprey_bayes__add(acct bigint, tokens bigint[], spam boolean, delta integer)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO bayes_tokens AS b (account_id, token, spam_count, ham_count)
    SELECT acct, t, CASE WHEN spam THEN greatest(delta, 0) ELSE 0 END,
                    CASE WHEN spam THEN 0 ELSE greatest(delta, 0) END
      FROM (SELECT DISTINCT t FROM unnest(tokens) AS u (t) ORDER BY t) d
    ON CONFLICT (account_id, token) DO UPDATE
       SET spam_count = greatest(b.spam_count + CASE WHEN spam THEN delta ELSE 0 END, 0),
           ham_count  = greatest(b.ham_count + CASE WHEN spam THEN 0 ELSE delta END, 0),
           last_seen  = now();
    INSERT INTO bayes_totals AS t (account_id, spam_messages, ham_messages)
    VALUES (acct, CASE WHEN spam THEN greatest(delta, 0) ELSE 0 END,
                  CASE WHEN spam THEN 0 ELSE greatest(delta, 0) END)
    ON CONFLICT (account_id) DO UPDATE
       SET spam_messages = greatest(t.spam_messages + CASE WHEN spam THEN delta ELSE 0 END, 0),
           ham_messages  = greatest(t.ham_messages + CASE WHEN spam THEN 0 ELSE delta END, 0),
           updated_at    = now();
$$;

-- Train message msg_hash with its distinct tokens as spam or ham for
-- account acct and for account 0.  Returns 'trained' (new), 'unchanged'
-- (already trained the same way: nothing done) or 'retrained' (class
-- changed: the old vote is taken back first).  Concurrent calls for the
-- same account and message serialise on the bayes_trained row; tokens are
-- updated in token order so concurrent trainings do not deadlock.
CREATE FUNCTION osprey_bayes_train(acct bigint, msg_hash bytea, spam boolean, tokens bigint[])
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    was boolean;
    result text := 'trained';
BEGIN
    INSERT INTO bayes_trained (account_id, message_hash, as_spam)
    VALUES (acct, msg_hash, spam)
    ON CONFLICT (account_id, message_hash) DO NOTHING;
    IF NOT FOUND THEN
        SELECT as_spam INTO was FROM bayes_trained
         WHERE account_id = acct AND message_hash = msg_hash FOR UPDATE;
        IF was = spam THEN
            RETURN 'unchanged';
        END IF;
        UPDATE bayes_trained SET as_spam = spam, trained_at = now()
         WHERE account_id = acct AND message_hash = msg_hash;
        PERFORM osprey_bayes__add(acct, tokens, was, -1);
        IF acct <> 0 THEN
            PERFORM osprey_bayes__add(0, tokens, was, -1);
        END IF;
        result := 'retrained';
    END IF;
    PERFORM osprey_bayes__add(acct, tokens, spam, 1);
    IF acct <> 0 THEN
        PERFORM osprey_bayes__add(0, tokens, spam, 1);
    END IF;
    RETURN result;
END
$$;

-- Forget rare, stale tokens: not seen for max_age and counted at most
-- max_count times in all.  Returns how many rows went.
CREATE FUNCTION osprey_bayes_expire(max_age interval DEFAULT '180 days', max_count integer DEFAULT 1)
RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM bayes_tokens
         WHERE last_seen < now() - max_age AND spam_count + ham_count <= max_count
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;
