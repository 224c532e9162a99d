-- 002_lists_rules: per-account allow/block lists and custom rules.
--
-- Daemons load both into memory (one snapshot query per table, ordered by
-- account) and reload when osprey_config is notified with the table name.

-- One row per entry; kind says which field of the mail it matches:
--   client_network    value_net (cidr, IPv4 or IPv6)
--   client_name, helo, sender, recipient            value (lower-case)
--   sender_domain, recipient_domain, helo_domain    value: "example.com"
--       matches that domain only, ".example.com" any subdomain of it
--       (Postfix's convention).
CREATE TABLE list_entries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    list        text NOT NULL CHECK (list IN ('allow', 'block')),
    kind        text NOT NULL
                CHECK (kind IN ('client_network', 'client_name', 'helo', 'sender',
                                'recipient', 'sender_domain', 'recipient_domain',
                                'helo_domain')),
    value_net   cidr,
    value       text CHECK (value = lower(value) AND value <> ''),
    comment     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'client_network') = (value_net IS NOT NULL)),
    CHECK ((value_net IS NULL) <> (value IS NULL)),
    -- An entry is either allowed or blocked, once per account.
    UNIQUE NULLS NOT DISTINCT (account_id, kind, value_net, value)
);
-- Snapshot loading.
CREATE INDEX list_entries_account_idx ON list_entries (account_id, kind);
-- Lookups: networks containing an address, exact values, domain suffixes.
CREATE INDEX list_entries_net_idx ON list_entries USING gist (value_net inet_ops)
    WHERE value_net IS NOT NULL;
CREATE INDEX list_entries_value_idx ON list_entries (kind, value)
    WHERE value IS NOT NULL;
CREATE INDEX list_entries_suffix_idx ON list_entries (kind, reverse(value) text_pattern_ops)
    WHERE value IS NOT NULL;

CREATE TRIGGER list_entries_touch BEFORE UPDATE ON list_entries
    FOR EACH ROW EXECUTE FUNCTION osprey_touch_updated_at();
CREATE TRIGGER list_entries_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON list_entries
    FOR EACH STATEMENT EXECUTE FUNCTION osprey_notify_config();

-- Custom rules as source text.  The database does not parse the rules
-- language: the application compiles the source before it writes it and
-- sets validated (with validation_error NULL) only if it compiled.  Daemons
-- load rules that are enabled AND validated, highest priority first.
CREATE TABLE rules (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (name <> ''),
    source           text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    priority         integer NOT NULL DEFAULT 0,
    validated        boolean NOT NULL DEFAULT false,
    validation_error text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);
CREATE INDEX rules_load_idx ON rules (account_id, priority DESC)
    WHERE enabled AND validated;

CREATE TRIGGER rules_touch BEFORE UPDATE ON rules
    FOR EACH ROW EXECUTE FUNCTION osprey_touch_updated_at();
CREATE TRIGGER rules_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rules
    FOR EACH STATEMENT EXECUTE FUNCTION osprey_notify_config();
