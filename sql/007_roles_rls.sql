-- 007_roles_rls: database roles and row-level security.
--
-- Roles (cluster-wide, created here if missing, never dropped):
--   osprey_service       group role of the daemons' login roles: reads and
--                        writes everything they need, in every tenant.
--   osprey_tenant_admin  group role of the admins' login roles: each admin
--                        is its own database role, mapped to one account
--                        in admin_roles, and sees and changes only rows of
--                        that account's subtree.  (Not "osprey_admin": the
--                        test harness and many installations use that name
--                        for the owner or a superuser; membership in the
--                        owner would defeat every policy.)
--
-- The owner of the schema (the role running the migrations) must be a
-- superuser or have BYPASSRLS: tables FORCE row-level security, and the
-- SECURITY DEFINER helpers below read accounts with the owner's rights.
--
-- Every tenant table has two permissive policies: service_all for
-- osprey_service, tenant_subtree for osprey_tenant_admin.  A role that is
-- in neither group sees nothing, even with table privileges.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'osprey_service') THEN
        CREATE ROLE osprey_service NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'osprey_tenant_admin') THEN
        CREATE ROLE osprey_tenant_admin NOLOGIN;
    END IF;
END
$$;

-- Admin database roles and the account each one administers.
CREATE TABLE admin_roles (
    role        name PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_roles_account_idx ON admin_roles (account_id);

-- The calling role: current_user as seen by the caller of a SECURITY
-- DEFINER function (inside one, current_user is the owner).  SET ROLE is
-- honoured; otherwise it is the session's login role.
CREATE FUNCTION osprey_caller() RETURNS name
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('role'), 'none'), session_user)::name
$$;

-- The path of the caller's account if the caller is a mapped admin, else
-- NULL (which matches nothing).
CREATE FUNCTION osprey_admin_path() RETURNS ltree
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT a.path FROM public.admin_roles r JOIN public.accounts a ON a.id = r.account_id
     WHERE r.role = public.osprey_caller()
$$;

-- The ids of the accounts in the caller's subtree (its own included).
CREATE FUNCTION osprey_admin_accounts() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
ROWS 100 AS $$
    SELECT a.id FROM public.accounts a WHERE a.path <@ public.osprey_admin_path()
$$;

-- Make role an admin of account acct: create it (LOGIN, no password: set
-- one or use peer/cert authentication) unless it exists, put it in
-- osprey_tenant_admin and map it.  Only for the owner or a superuser.
-- Refuses roles that would escape row-level security.
CREATE FUNCTION osprey_admin_create(role name, acct bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r pg_roles%ROWTYPE;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.accounts WHERE id = acct) THEN
        RAISE EXCEPTION 'osprey_admin_create: no account %', acct
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT * INTO r FROM pg_roles WHERE rolname = role;
    IF NOT FOUND THEN
        EXECUTE format('CREATE ROLE %I LOGIN', role);
        SELECT * INTO r FROM pg_roles WHERE rolname = role;
    END IF;
    IF r.rolsuper OR r.rolbypassrls OR r.rolcreaterole
       OR pg_has_role(role, 'osprey_service', 'MEMBER')
       OR EXISTS (SELECT 1 FROM pg_class c
                   WHERE c.relnamespace = 'public'::regnamespace
                     AND pg_has_role(role, c.relowner, 'MEMBER')) THEN
        RAISE EXCEPTION 'osprey_admin_create: role "%" is a superuser, may bypass row-level security, create roles, or owns or is a service role', role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('GRANT osprey_tenant_admin TO %I', role);
    INSERT INTO public.admin_roles (role, account_id) VALUES (role, acct)
    ON CONFLICT ON CONSTRAINT admin_roles_pkey DO UPDATE SET account_id = EXCLUDED.account_id;
END
$$;
REVOKE ALL ON FUNCTION osprey_admin_create(name, bigint) FROM PUBLIC;

-- ------------------------------------------------------------ privileges
GRANT USAGE ON SCHEMA public TO osprey_service, osprey_tenant_admin;

GRANT SELECT ON schema_migrations TO osprey_service, osprey_tenant_admin;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    accounts, domains, addresses, settings, list_entries, rules,
    quarantine, quarantine_bodies, bayes_tokens, bayes_totals, bayes_trained,
    message_log, jobs, rate_counters, audit_log
    TO osprey_service;
GRANT SELECT ON admin_roles TO osprey_service;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO osprey_service;
GRANT SELECT ON osprey_job_backlog TO osprey_service, osprey_tenant_admin;

-- Admins: manage accounts below their own, the configuration of their
-- subtree, release or delete quarantined mail (release_state and the
-- columns that go with it only: never which body a row points to), read
-- the log and Bayes data, queue jobs, write the audit trail.
GRANT SELECT, INSERT, DELETE ON accounts TO osprey_tenant_admin;
GRANT UPDATE (parent_id, kind, name) ON accounts TO osprey_tenant_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON domains, addresses, settings, list_entries, rules
    TO osprey_tenant_admin;
GRANT SELECT, DELETE ON quarantine TO osprey_tenant_admin;
GRANT UPDATE (release_state, release_requested_by, released_at) ON quarantine
    TO osprey_tenant_admin;
GRANT SELECT ON quarantine_bodies TO osprey_tenant_admin;
GRANT SELECT ON message_log TO osprey_tenant_admin;
GRANT SELECT, DELETE ON bayes_tokens, bayes_totals, bayes_trained TO osprey_tenant_admin;
GRANT SELECT, INSERT ON jobs, audit_log TO osprey_tenant_admin;
GRANT SELECT ON admin_roles TO osprey_tenant_admin;

-- Owner-only maintenance functions run as the owner; the service may call
-- them, nobody else.
REVOKE ALL ON FUNCTION osprey_partition_create(text, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION osprey_partitions_ensure(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION osprey_partitions_expire(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION osprey_partition_create(text, date) TO osprey_service;
GRANT EXECUTE ON FUNCTION osprey_partitions_ensure(integer) TO osprey_service;
GRANT EXECUTE ON FUNCTION osprey_partitions_expire(text, integer) TO osprey_service;

-- ------------------------------------------------------------ policies
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY service_all ON accounts TO osprey_service USING (true) WITH CHECK (true);
-- An admin sees its own account and everything below; it changes only
-- accounts strictly below its own, and only to places strictly below its
-- own (the path follows parent_id, so WITH CHECK sees the new place).
CREATE POLICY tenant_select ON accounts FOR SELECT TO osprey_tenant_admin
    USING (path <@ (SELECT osprey_admin_path()));
CREATE POLICY tenant_insert ON accounts FOR INSERT TO osprey_tenant_admin
    WITH CHECK (path <@ (SELECT osprey_admin_path()) AND path <> (SELECT osprey_admin_path()));
CREATE POLICY tenant_update ON accounts FOR UPDATE TO osprey_tenant_admin
    USING (path <@ (SELECT osprey_admin_path()) AND path <> (SELECT osprey_admin_path()))
    WITH CHECK (path <@ (SELECT osprey_admin_path()) AND path <> (SELECT osprey_admin_path()));
CREATE POLICY tenant_delete ON accounts FOR DELETE TO osprey_tenant_admin
    USING (path <@ (SELECT osprey_admin_path()) AND path <> (SELECT osprey_admin_path()));

-- Tables keyed by account_id: the same policy everywhere.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['domains', 'addresses', 'settings', 'list_entries', 'rules',
                             'quarantine', 'message_log', 'bayes_tokens', 'bayes_totals',
                             'bayes_trained', 'jobs', 'audit_log', 'admin_roles'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY service_all ON %I TO osprey_service'
                       ' USING (true) WITH CHECK (true)', t);
        IF t IN ('audit_log', 'jobs') THEN
            -- Nobody writes in another's name (both are insert-only for admins).
            EXECUTE format('CREATE POLICY tenant_subtree ON %I TO osprey_tenant_admin'
                           ' USING (account_id IN (SELECT osprey_admin_accounts()))'
                           ' WITH CHECK (account_id IN (SELECT osprey_admin_accounts())'
                           ' AND %I = current_user)', t,
                           CASE t WHEN 'jobs' THEN 'created_by' ELSE 'actor' END);
        ELSE
            EXECUTE format('CREATE POLICY tenant_subtree ON %I TO osprey_tenant_admin'
                           ' USING (account_id IN (SELECT osprey_admin_accounts()))'
                           ' WITH CHECK (account_id IN (SELECT osprey_admin_accounts()))', t);
        END IF;
    END LOOP;
END
$$;

-- Bodies have no account: an admin reads a body when it can see a
-- quarantine row pointing at it (the subquery is itself filtered).
ALTER TABLE quarantine_bodies ENABLE ROW LEVEL SECURITY;
ALTER TABLE quarantine_bodies FORCE ROW LEVEL SECURITY;
CREATE POLICY service_all ON quarantine_bodies TO osprey_service USING (true) WITH CHECK (true);
CREATE POLICY tenant_select ON quarantine_bodies FOR SELECT TO osprey_tenant_admin
    USING (EXISTS (SELECT 1 FROM quarantine q WHERE q.body_sha256 = quarantine_bodies.sha256));

-- Service-only table.
ALTER TABLE rate_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY service_all ON rate_counters TO osprey_service USING (true) WITH CHECK (true);
