#!/bin/bash
# db_rls.sh -- the schema's tenant isolation and data behaviour against a
# private PostgreSQL, through psql as each database role:
#   - two resellers with organisations and users, a row in every tenant
#     table for every account; each admin (reseller A, client A1, reseller
#     B, client B2) sees exactly its subtree in every table, cannot change
#     or delete anything outside it, cannot insert rows pointing outside it,
#     cannot escape with hand-written SQL; the service role sees everything;
#   - settings resolution (nearest override wins), quarantine idempotency,
#     body dedup and compression, partition expiry and body GC, Bayes
#     (re)training, job dequeue with SKIP LOCKED, back-off and dead jobs,
#     rate counters, NOTIFY on configuration changes and new jobs.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql
osp_timeout "${OSP_TEST_TIMEOUT:-120}"

CTL=$OSP_TOP_BUILDDIR/ospreyctl
[ -x "$CTL" ] || tap_skip_all "ospreyctl not built ($CTL)"

tap_plan 56

pg_start || osp_die "PostgreSQL did not start"
: >"$OSP_TMP/osprey.conf"
"$CTL" -c "$OSP_TMP/osprey.conf" -o "database_connection=$OSP_PG_CONNINFO" db migrate \
    >"$OSP_TMP/migrate.log" 2>&1 || { tap_diag <"$OSP_TMP/migrate.log"; osp_die "migrate failed"; }

# q ROLE [psql args...] -- run psql as ROLE; output in $out, status in $rc.
q() {
    local role=$1
    shift
    out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$role" -d osprey "$@" </dev/null 2>&1)
    rc=$?
}
su() { pg_psql "$@"; }

TODAY=$(su -c "SELECT osprey_utc_today()")

# ---------------------------------------------------------------- data
# Accounts: root 0; reseller RA 10 > orgs A1 11, A2 12 > users 13 (A1), 14 (A2);
# reseller RB 20 > orgs B1 21, B2 22 > users 23 (B1), 24 (B2).
ALL="0 10 11 12 13 14 20 21 22 23 24"
setup=$OSP_TMP/setup.sql
{
    echo "ALTER TABLE accounts ALTER COLUMN id RESTART WITH 1000;"
    for a in "10 0 reseller RA" "11 10 organisation A1" "12 10 organisation A2" \
        "13 11 user a1u" "14 12 user a2u" "20 0 reseller RB" "21 20 organisation B1" \
        "22 20 organisation B2" "23 21 user b1u" "24 22 user b2u"; do
        set -- $a
        echo "INSERT INTO accounts (id, parent_id, kind, name) VALUES ($1, $2, '$3', '$4');"
    done
    for a in $ALL; do
        cat <<SQL
INSERT INTO domains (account_id, name) VALUES ($a, 'd$a.test');
INSERT INTO addresses (account_id, address) VALUES ($a, 'u@d$a.test');
INSERT INTO settings (account_id, key, value) VALUES ($a, 'level', '$a');
INSERT INTO list_entries (account_id, list, kind, value_net) VALUES ($a, 'block', 'client_network', '10.$a.0.0/16');
INSERT INTO list_entries (account_id, list, kind, value_net) VALUES ($a, 'allow', 'client_network', '2001:db8:$a::/48');
INSERT INTO list_entries (account_id, list, kind, value) VALUES ($a, 'block', 'sender_domain', '.spam$a.test');
INSERT INTO rules (account_id, name, source, validated) VALUES ($a, 'r$a', 'subject contains "x$a" => 5', true);
INSERT INTO quarantine_bodies (sha256, body, size) VALUES (sha256('body $a'::bytea), 'body $a'::bytea, 6)
    ON CONFLICT (sha256) DO UPDATE SET last_used_at = now();
INSERT INTO quarantine (account_id, queue_id, sender, recipient, subject, size, score, verdict, reasons, body_sha256)
    VALUES ($a, 'Q$a', 's@x.test', 'u@d$a.test', 'subject $a', 6, 9.5, 'spam', '{bayes}', sha256('body $a'::bytea));
INSERT INTO message_log (account_id, queue_id, client_address, sender, recipient, subject, size, score, verdict, rules_hit, delivery)
    VALUES ($a, 'Q$a', '192.0.2.$a', 's@x.test', 'u@d$a.test', 'hello tenant$a', 6, 1.5, 'ham', '{RULE_$a}', '250 ok');
SELECT osprey_bayes_train($a, sha256('msg $a'::bytea), true, ARRAY[${a}01, ${a}02]::bigint[]);
SELECT osprey_job_enqueue('test', '{}', $a);
INSERT INTO audit_log (actor, account_id, action) VALUES ('setup', $a, 'test.setup');
SQL
    done
    cat <<SQL
INSERT INTO settings (account_id, key, value) VALUES (0, 'threshold', '5'), (0, 'lang', '"en"'),
    (10, 'threshold', '6');
CREATE ROLE osprey_daemon LOGIN IN ROLE osprey_service;
CREATE ROLE stray LOGIN IN ROLE osprey_tenant_admin;
SELECT osprey_admin_create('adm_ra', 10);
SELECT osprey_admin_create('adm_a1', 11);
SELECT osprey_admin_create('adm_rb', 20);
SELECT osprey_admin_create('adm_b2', 22);
SQL
} >"$setup"
su -f "$setup" >"$OSP_TMP/setup.out" 2>&1 || { tap_diag <"$OSP_TMP/setup.out"; osp_die "test data setup failed"; }
tap_ok "test data: 11 accounts with rows in every tenant table, 4 admins"

TABLES="accounts domains addresses settings list_entries rules quarantine quarantine_bodies
message_log bayes_tokens bayes_totals bayes_trained jobs audit_log admin_roles"

# counts_sql -- one line: "table=count ..." for every table, as seen by the caller.
counts_sql() {
    local t sep="" s="SELECT concat_ws(' '"
    for t in $TABLES; do
        s="$s, '$t=' || (SELECT count(*) FROM $t)"
    done
    echo "$s)"
}
# expected_counts PATH -- the same computed by the superuser for subtree PATH.
expected_counts() {
    local p=$1 t s="SELECT concat_ws(' '"
    for t in $TABLES; do
        case $t in
        accounts) s="$s, '$t=' || (SELECT count(*) FROM accounts WHERE path <@ '$p')" ;;
        quarantine_bodies) s="$s, '$t=' || (SELECT count(DISTINCT body_sha256) FROM quarantine q JOIN accounts a ON a.id = q.account_id WHERE a.path <@ '$p')" ;;
        admin_roles) s="$s, '$t=' || (SELECT count(*) FROM admin_roles r JOIN accounts a ON a.id = r.account_id WHERE a.path <@ '$p')" ;;
        *) s="$s, '$t=' || (SELECT count(*) FROM $t x JOIN accounts a ON a.id = x.account_id WHERE a.path <@ '$p')" ;;
        esac
    done
    su -c "$s)"
}

# ---------------------------------------------------------------- service
all=$(su -c "$(counts_sql)")
q osprey_daemon -c "$(counts_sql)"
tap_is "$out" "$all" "service role sees every row of every table"
q stray -c "$(counts_sql)"
tap_is "$out" "$(echo "$all" | sed 's/=[0-9]*/=0/g')" \
    "an osprey_tenant_admin member not in admin_roles sees nothing"

# ---------------------------------------------------------------- admins
# admin role, own account, own path, an account of the other reseller,
# an account next to or above it, a user account below it (or itself).
for spec in "adm_ra 10 0.10 22 0 13" "adm_a1 11 0.10.11 24 12 13" \
    "adm_rb 20 0.20 13 0 24" "adm_b2 22 0.20.22 14 21 24"; do
    set -- $spec
    role=$1 own=$2 path=$3 far=$4 near=$5 below=$6

    want=$(expected_counts "$path")
    q "$role" -c "$(counts_sql)"
    tap_is "$out" "$want" "$role sees exactly its subtree $path in every table"

    # Writes inside the subtree work.
    q "$role" -c "INSERT INTO domains (account_id, name) VALUES ($below, 'new-$role.test')" \
        -c "UPDATE domains SET name = 'renamed-$role.test' WHERE name = 'new-$role.test'" \
        -c "INSERT INTO settings (account_id, key, value) VALUES ($own, 'mine', 'true')" \
        -c "UPDATE quarantine SET release_state = 'release_requested', release_requested_by = current_user WHERE account_id = $below" \
        -c "INSERT INTO audit_log (account_id, action) VALUES ($below, 'quarantine.release')" \
        -c "SELECT osprey_job_enqueue('release', '{\"q\": 1}', $below)" \
        -c "DELETE FROM domains WHERE name = 'renamed-$role.test'" \
        -c "DELETE FROM settings WHERE account_id = $own AND key = 'mine'"
    ok "$role can insert, update and delete inside its subtree" test "$rc" -eq 0 ||
        tap_diag "$out"

    # Updates and deletes outside the subtree touch nothing.
    res=
    for target in $far $near; do
        for t in domains addresses settings list_entries rules quarantine; do
            q "$role" -c "WITH x AS (UPDATE $t SET account_id = account_id WHERE account_id = $target RETURNING 1) SELECT count(*) FROM x"
            [ "$t" = quarantine ] &&
                q "$role" -c "WITH x AS (UPDATE quarantine SET release_state = 'released' WHERE account_id = $target RETURNING 1) SELECT count(*) FROM x"
            res="$res$out"
            q "$role" -c "WITH x AS (DELETE FROM $t WHERE account_id = $target RETURNING 1) SELECT count(*) FROM x"
            res="$res$out"
        done
        for t in bayes_tokens bayes_totals bayes_trained; do
            q "$role" -c "WITH x AS (DELETE FROM $t WHERE account_id = $target RETURNING 1) SELECT count(*) FROM x"
            res="$res$out"
        done
        q "$role" -c "WITH x AS (UPDATE accounts SET name = 'stolen' WHERE id = $target RETURNING 1) SELECT count(*) FROM x"
        res="$res$out"
        q "$role" -c "WITH x AS (DELETE FROM accounts WHERE id = $target RETURNING 1) SELECT count(*) FROM x"
        res="$res$out"
    done
    tap_is "$res" "$(printf '0%.0s' $(seq 1 $(( ${#res} ))))" \
        "$role: updates and deletes outside its subtree affect 0 rows"

    # Inserts (and updates) pointing outside are rejected by WITH CHECK.
    bad=
    for target in $far $near; do
        for sql in \
            "INSERT INTO domains (account_id, name) VALUES ($target, 'evil-$role-$target.test')" \
            "INSERT INTO addresses (account_id, address) VALUES ($target, 'evil@$role-$target.test')" \
            "INSERT INTO settings (account_id, key, value) VALUES ($target, 'evil', '1')" \
            "INSERT INTO list_entries (account_id, list, kind, value) VALUES ($target, 'allow', 'sender', 'evil@x.test')" \
            "INSERT INTO rules (account_id, name, source) VALUES ($target, 'evil', 'x')" \
            "INSERT INTO jobs (kind, account_id) VALUES ('evil', $target)" \
            "INSERT INTO audit_log (account_id, action) VALUES ($target, 'evil')" \
            "UPDATE domains SET account_id = $target WHERE account_id = $own" \
            "UPDATE rules SET account_id = $target WHERE account_id = $own"; do
            q "$role" -c "$sql"
            if [ "$rc" -eq 0 ] || ! grep -q 'violates row-level security policy' <<<"$out"; then
                bad="$bad
$sql: rc=$rc $out"
            fi
        done
    done
    if [ -z "$bad" ]; then
        tap_ok "$role: inserts and updates pointing outside its subtree are rejected by WITH CHECK"
    else
        tap_not_ok "$role: inserts and updates pointing outside its subtree are rejected by WITH CHECK" "$bad"
    fi

    # The account tree: no account outside, no change to its own account.
    bad=
    q "$role" -c "INSERT INTO accounts (parent_id, kind, name) VALUES ($far, 'user', 'evil')"
    grep -q 'does not exist or is not visible' <<<"$out" || bad="$bad insert-under-far($out)"
    q "$role" -c "WITH x AS (UPDATE accounts SET name = 'mine' WHERE id = $own RETURNING 1) SELECT count(*) FROM x"
    [ "$out" = 0 ] || bad="$bad rename-own($out)"
    q "$role" -c "WITH x AS (UPDATE accounts SET parent_id = $below WHERE id = $own RETURNING 1) SELECT count(*) FROM x"
    [ "$out" = 0 ] || bad="$bad move-own($out)"
    q "$role" -c "WITH x AS (DELETE FROM accounts WHERE id = $own RETURNING 1) SELECT count(*) FROM x"
    [ "$out" = 0 ] || bad="$bad delete-own($out)"
    q "$role" -c "UPDATE accounts SET parent_id = $far WHERE id = $below"
    [ "$rc" -ne 0 ] || bad="$bad move-below-to-far"
    q "$role" -c "INSERT INTO accounts (parent_id, kind, name) VALUES ($own, 'user', 'new-$role') RETURNING path"
    case $out in "$path".*) ;; *) bad="$bad insert-child($out)" ;; esac
    q "$role" -c "DELETE FROM accounts WHERE name = 'new-$role'"
    [ "$rc" -eq 0 ] || bad="$bad delete-child($out)"
    if [ -z "$bad" ]; then
        tap_ok "$role: creates accounts only below its own, cannot touch its own or others'"
    else
        tap_not_ok "$role: creates accounts only below its own, cannot touch its own or others'" "$bad"
    fi
done

# ---------------------------------------------------------------- hand-written SQL
bad=
q adm_a1 -c "SELECT count(*) FROM quarantine_p${TODAY//-/}"
grep -q 'permission denied' <<<"$out" || bad="$bad partition($out)"
q adm_a1 -c "UPDATE quarantine SET body_sha256 = sha256('body 24'::bytea)"
grep -q 'permission denied' <<<"$out" || bad="$bad body-repoint($out)"
q adm_a1 -c "INSERT INTO quarantine (account_id, queue_id, sender, recipient, size, verdict, body_sha256) VALUES (11, 'X', '', 'x', 1, 'spam', sha256('body 24'::bytea))"
grep -q 'permission denied' <<<"$out" || bad="$bad insert-quarantine($out)"
q adm_a1 -c "SELECT osprey_partitions_expire('quarantine', 0)"
grep -q 'permission denied' <<<"$out" || bad="$bad expire($out)"
q adm_a1 -c "SELECT osprey_admin_create('adm_a1', 0)"
grep -q 'permission denied' <<<"$out" || bad="$bad admin-create($out)"
q adm_a1 -c "ALTER TABLE domains DISABLE ROW LEVEL SECURITY"
grep -q 'must be owner' <<<"$out" || bad="$bad disable-rls($out)"
q adm_a1 -c "SET ROLE adm_ra"
grep -q 'permission denied' <<<"$out" || bad="$bad set-role($out)"
q adm_a1 -c "SET ROLE osprey_tenant_admin" -c "SELECT count(*) FROM domains"
[ "$out" = 0 ] || bad="$bad group-role($out)"
q adm_a1 -c "INSERT INTO audit_log (actor, account_id, action) VALUES ('adm_ra', 11, 'forged')"
grep -q 'row-level security' <<<"$out" || bad="$bad forged-actor($out)"
q adm_a1 -c "INSERT INTO jobs (kind, account_id, created_by) VALUES ('release', 11, 'adm_ra')"
grep -q 'row-level security' <<<"$out" || bad="$bad forged-job($out)"
q adm_a1 -c "SELECT count(*) FROM rate_counters"
grep -q 'permission denied' <<<"$out" || bad="$bad rate-counters($out)"
q adm_a1 -c "SELECT count(*) FROM quarantine_bodies WHERE sha256 = sha256('body 24'::bytea)"
[ "$out" = 0 ] || bad="$bad foreign-body($out)"
q adm_a1 -c "SELECT count(*) FROM osprey_resolve_recipient('u@d24.test')"
[ "$out" = 0 ] || bad="$bad resolve-foreign($out)"
if [ -z "$bad" ]; then
    tap_ok "adm_a1 cannot escape with hand-written SQL (partitions, columns, functions, roles, DDL)"
else
    tap_not_ok "adm_a1 cannot escape with hand-written SQL (partitions, columns, functions, roles, DDL)" "$bad"
fi
tap_is "$(su -c "SET ROLE adm_a1" -c "$(counts_sql)")" "$(expected_counts 0.10.11)" \
    "SET ROLE adm_a1 by a superuser gives adm_a1's view"
q osprey_admin -c "SELECT osprey_admin_create('osprey_admin', 10)"
ok "osprey_admin_create refuses a superuser role" grep -q 'is a superuser' <<<"$out"
q osprey_admin -c "SELECT osprey_admin_create('osprey_daemon', 10)"
ok "osprey_admin_create refuses a service role" grep -q 'is a superuser, may bypass' <<<"$out"

# A reseller moves an organisation (with its user) inside its subtree.
q adm_ra -c "UPDATE accounts SET parent_id = 12 WHERE id = 11" \
    -c "SELECT string_agg(id || ':' || path::text, ' ' ORDER BY id) FROM accounts WHERE id IN (11, 13)"
tap_is "$out" "11:0.10.12.11 13:0.10.12.11.13" "adm_ra moves A1 under A2; A1's user follows"
q adm_ra -c "UPDATE accounts SET parent_id = 13 WHERE id = 12"
ok "moving an account below itself is refused" grep -q 'cannot move below itself' <<<"$out"
q adm_ra -c "UPDATE accounts SET parent_id = 10 WHERE id = 11" \
    -c "SELECT string_agg(id || ':' || path::text, ' ' ORDER BY id) FROM accounts WHERE id IN (11, 13)"
tap_is "$out" "11:0.10.11 13:0.10.11.13" "and back"
q adm_ra -c "UPDATE accounts SET path = '0.20.99' WHERE id = 11"
ok "an admin cannot write path" grep -q 'permission denied' <<<"$out"
q osprey_daemon -c "UPDATE accounts SET path = '0.20.99' WHERE id = 11" -c "SELECT path FROM accounts WHERE id = 11"
tap_is "$out" "0.10.11" "nobody sets path by hand: it follows parent_id"

# ---------------------------------------------------------------- settings
q osprey_daemon -c "SELECT account_id, account_path, settings FROM osprey_resolve_recipient('u@d13.test')"
tap_is "$out" '13|0.10.11.13|{"lang": "en", "level": 13, "threshold": 6}' \
    "resolve by address: own value, reseller's override, root default"
q osprey_daemon -c "SELECT account_id, settings FROM osprey_resolve_recipient('Someone@D11.TEST')"
tap_is "$out" '11|{"lang": "en", "level": 11, "threshold": 6}' "resolve by domain, case-insensitively"
q osprey_daemon -c "SELECT account_id, settings FROM osprey_resolve_recipient('x@d24.test')"
tap_is "$out" '24|{"lang": "en", "level": 24, "threshold": 5}' "no reseller override: root value"
q osprey_daemon -c "SELECT count(*) FROM osprey_resolve_recipient('nobody@unknown.test')"
tap_is "$out" 0 "unknown recipient: no row"
q osprey_daemon -c "EXPLAIN SELECT * FROM osprey_resolve_recipient('u@d13.test')"
ok "resolution is one statement" test "$rc" -eq 0

# ---------------------------------------------------------------- quarantine
qins() { # queue_id recipient [day]
    echo "INSERT INTO quarantine_bodies (sha256, body, size) VALUES (sha256('dup body'::bytea), 'dup body'::bytea, 8) ON CONFLICT (sha256) DO UPDATE SET last_used_at = now();
INSERT INTO quarantine (account_id, queue_id, sender, recipient, size, verdict, body_sha256${3:+, day, created_at})
VALUES (13, '$1', 's@x.test', '$2', 8, 'spam', sha256('dup body'::bytea)${3:+, '$3', '$3'::date + time '12:00'}) ON CONFLICT DO NOTHING RETURNING id;"
}
q osprey_daemon -c "$(qins IDEM1 r@d13.test)"
first=$out
q osprey_daemon -c "$(qins IDEM1 r@d13.test)" -c "SELECT count(*) FROM quarantine WHERE queue_id = 'IDEM1'"
if [ -n "$first" ] && [ "$out" = 1 ]; then
    tap_ok "a retried quarantine store (same queue id and recipient) inserts nothing"
else
    tap_not_ok "a retried quarantine store (same queue id and recipient) inserts nothing" "first=$first" "$out"
fi
yesterday=$(su -c "SELECT osprey_utc_today() - 1")
q osprey_daemon -c "$(qins IDEM2 r@d13.test "$yesterday")" -c "$(qins IDEM2 r@d13.test)" \
    -c "SELECT count(*) FROM quarantine WHERE queue_id = 'IDEM2'"
tap_is "$(tail -n 1 <<<"$out")" 1 "a retry after midnight (UTC) inserts nothing either"
q osprey_daemon -c "INSERT INTO quarantine (account_id, queue_id, sender, recipient, size, verdict, body_sha256) VALUES (13, 'IDEM1', '', 'r@d13.test', 8, 'spam', sha256('dup body'::bytea))"
ok "without ON CONFLICT the duplicate is skipped, not an error" test "$rc" -eq 0

{
    echo "BEGIN;"
    for i in $(seq 1 50); do qins DEDUP "r$i@d13.test"; done
    echo "COMMIT;"
} >"$OSP_TMP/dedup.sql"
q osprey_daemon -f "$OSP_TMP/dedup.sql"
q osprey_daemon -c "SELECT (SELECT count(*) FROM quarantine WHERE queue_id = 'DEDUP'), (SELECT count(*) FROM quarantine_bodies WHERE sha256 = sha256('dup body'::bytea))"
tap_is "$out" "50|1" "one message to 50 recipients: 50 rows, one body"
q osprey_daemon -c "INSERT INTO quarantine_bodies (sha256, body, size) SELECT sha256(b), b, length(b) FROM (SELECT convert_to(repeat('Subject: big body line of mail text\n', 20000), 'UTF8') b) s" \
    -c "SELECT pg_column_compression(body) IS NOT NULL AND pg_column_size(body) * 10 < size FROM quarantine_bodies WHERE size > 100000"
tap_is "$out" t "large bodies are stored compressed ($(su -c "SELECT pg_column_compression(body) FROM quarantine_bodies WHERE size > 100000"))"

# ---------------------------------------------------------------- expiry
old=$(su -c "SELECT osprey_utc_today() - 40")
q osprey_daemon -c "SELECT osprey_partition_create('quarantine', '$old'), osprey_partition_create('message_log', '$old')" \
    -c "INSERT INTO quarantine_bodies (sha256, body, size) VALUES (sha256('old body'::bytea), 'old body'::bytea, 8)" \
    -c "INSERT INTO quarantine (day, created_at, account_id, queue_id, sender, recipient, size, verdict, body_sha256) VALUES ('$old', '$old 12:00+00', 13, 'OLD', '', 'r@d13.test', 8, 'spam', sha256('old body'::bytea))" \
    -c "INSERT INTO message_log (logged_at, account_id, queue_id) VALUES ('$old 12:00+00', 13, 'OLD')" \
    -c "UPDATE quarantine_bodies SET last_used_at = now() - interval '2 hours' WHERE sha256 = sha256('old body'::bytea)"
tap_is "$rc" 0 "old partitions created and filled by the service role" || tap_diag "$out"
q osprey_daemon -c "SELECT osprey_partitions_expire('quarantine', 30), osprey_partitions_expire('message_log', 30)" \
    -c "SELECT (SELECT count(*) FROM quarantine WHERE queue_id = 'OLD'), (SELECT count(*) FROM message_log WHERE queue_id = 'OLD'), to_regclass('quarantine_p${old//-/}') IS NULL, (SELECT count(*) FROM quarantine WHERE queue_id = 'Q13')"
tap_is "${out//$'\n'/ }" "1|1 0|0|t|1" "expiry drops exactly the partitions older than 30 days"
q osprey_daemon -c "SELECT osprey_quarantine_gc()" \
    -c "SELECT (SELECT count(*) FROM quarantine_bodies WHERE sha256 = sha256('old body'::bytea)), (SELECT count(*) FROM quarantine_bodies WHERE sha256 = sha256('body 13'::bytea))"
tap_is "${out//$'\n'/ }" "1 0|1" "body GC deletes the body only expired rows used, keeps the rest"
q osprey_daemon -c "SELECT osprey_partitions_ensure(10)"
tap_is "$out" 6 "osprey_partitions_ensure(10) adds the 3 missing days for each table"

# ---------------------------------------------------------------- message log search
# Through osprey_log_search (008): these rows are not indexed yet (the
# worker's log_index job does that), and must be found all the same.
q adm_ra -c "SELECT string_agg(queue_id, ',' ORDER BY queue_id) FROM osprey_log_search(websearch_to_tsquery('simple', 'tenant13 OR tenant24 OR RULE_14'), now() - interval '1 day', now() + interval '1 day')"
tap_is "$out" "Q13,Q14" "full-text search of the log (subtree only)"

# ---------------------------------------------------------------- bayes
h="sha256('train me'::bytea)"
q osprey_daemon -c "SELECT osprey_bayes_train(13, $h, true, ARRAY[7,8,7]::bigint[])" \
    -c "SELECT osprey_bayes_train(13, $h, true, ARRAY[7,8]::bigint[])" \
    -c "SELECT string_agg(account_id || ':' || spam_count || '/' || ham_count, ' ' ORDER BY account_id) FROM bayes_tokens WHERE token = 7"
tap_is "${out//$'\n'/ }" "trained unchanged 0:1/0 13:1/0" "training twice counts once, for the account and globally"
q osprey_daemon -c "SELECT osprey_bayes_train(13, $h, false, ARRAY[7,8]::bigint[])" \
    -c "SELECT string_agg(account_id || ':' || spam_count || '/' || ham_count, ' ' ORDER BY account_id) FROM bayes_tokens WHERE token = 7" \
    -c "SELECT spam_messages || '/' || ham_messages FROM bayes_totals WHERE account_id = 13"
tap_is "${out//$'\n'/ }" "retrained 0:0/1 13:0/1 1/1" "spam to ham moves the counts (tokens and totals)"

# ---------------------------------------------------------------- jobs
su -c "SELECT osprey_job_enqueue('lock') FROM generate_series(1, 2)" >/dev/null
deq="SELECT id FROM osprey_job_dequeue('w', ARRAY['lock'])"
PGAPPNAME=holder psql -X -q -A -t -U osprey_daemon -d osprey >"$OSP_TMP/holder.out" 2>&1 <<SQL &
BEGIN;
$deq;
SELECT pg_sleep(3);
COMMIT;
SQL
holder=$!
osp_track_pid "$holder"
osp_wait_until 10 test -s "$OSP_TMP/holder.out"
q osprey_daemon -c "$deq"
second=$out
q osprey_daemon -c "$deq"
third=$out
wait "$holder"
h1=$(head -n 1 "$OSP_TMP/holder.out")
if [ -n "$h1" ] && [ -n "$second" ] && [ "$h1" != "$second" ] && [ -z "$third" ]; then
    tap_ok "SKIP LOCKED: while one session holds job $h1, the next gets $second, a third gets none"
else
    tap_not_ok "SKIP LOCKED: while one session holds a job, the next gets the other, a third none" \
        "holder: $(cat "$OSP_TMP/holder.out")" "second: $second" "third: $third"
fi

su -c "SELECT osprey_job_enqueue('bulk', jsonb_build_object('n', g)) FROM generate_series(1, 200) g" >/dev/null
for w in 1 2; do
    for i in $(seq 1 130); do echo "SELECT id FROM osprey_job_dequeue('w$w', ARRAY['bulk']);"; done >"$OSP_TMP/w$w.sql"
    psql -X -q -A -t -U osprey_daemon -d osprey -f "$OSP_TMP/w$w.sql" >"$OSP_TMP/w$w.out" 2>&1 &
    wp[$w]=$!
done
wait "${wp[1]}" "${wp[2]}"
n1=$(grep -c . "$OSP_TMP/w1.out")
n2=$(grep -c . "$OSP_TMP/w2.out")
uniq=$(cat "$OSP_TMP/w1.out" "$OSP_TMP/w2.out" | grep . | sort -u | wc -l)
if [ $((n1 + n2)) -eq 200 ] && [ "$uniq" -eq 200 ]; then
    tap_ok "two concurrent workers drain 200 jobs ($n1 + $n2), none handed out twice"
else
    tap_not_ok "two concurrent workers drain 200 jobs, none handed out twice" "n1=$n1 n2=$n2 unique=$uniq" \
        "$(grep -v '^[0-9]*$' "$OSP_TMP/w1.out" "$OSP_TMP/w2.out" | head)"
fi

id=$(su -c "SELECT osprey_job_enqueue('retry', '{}', NULL, now(), 2)")
q osprey_daemon -c "SELECT count(*) FROM osprey_job_dequeue('w', ARRAY['retry'])" \
    -c "SELECT osprey_job_fail($id, 'boom 1')" \
    -c "SELECT run_after > now() + interval '9 seconds' AND attempts = 1 FROM jobs WHERE id = $id" \
    -c "SELECT count(*) FROM osprey_job_dequeue('w', ARRAY['retry'])"
tap_is "${out//$'\n'/ }" "1 queued t 0" "a failed job goes back with a back-off delay"
su -c "UPDATE jobs SET run_after = now() WHERE id = $id" >/dev/null
q osprey_daemon -c "SELECT count(*) FROM osprey_job_dequeue('w', ARRAY['retry'])" \
    -c "SELECT osprey_job_fail($id, 'boom 2')" -c "SELECT osprey_job_complete($id)" \
    -c "SELECT b.state || '|' || j.last_error FROM osprey_job_backlog b, jobs j WHERE j.id = $id AND b.kind = 'retry'"
tap_is "${out//$'\n'/ }" "1 dead f dead|boom 2" "after max_attempts the job is dead and shows in the backlog"

# ---------------------------------------------------------------- rate counters
q osprey_daemon -c "SELECT osprey_rate_hit('client:192.0.2.1', '2030-01-01 00:00+00', '1 minute')" \
    -c "SELECT osprey_rate_hit('client:192.0.2.1', '2030-01-01 00:00+00', '1 minute', 4)"
tap_is "${out//$'\n'/ }" "1 5" "rate counters add up with upserts"

# ---------------------------------------------------------------- NOTIFY
PGAPPNAME=listener psql -X -A -t -U osprey_daemon -d osprey >"$OSP_TMP/listen.out" 2>&1 <<'SQL' &
LISTEN osprey_config;
LISTEN osprey_jobs;
SELECT pg_sleep(2);
SELECT 'done';
SQL
lpid=$!
osp_track_pid "$lpid"
osp_wait_until 10 eval '[ "$(su -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"'listener'"' AND query LIKE '"'%pg_sleep%'"'")" = 1 ]'
q adm_a1 -c "INSERT INTO list_entries (account_id, list, kind, value_net) VALUES (13, 'block', 'client_network', '2001:db8:dead::/48')" \
    -c "SELECT osprey_job_enqueue('release', '{}', 13)"
wait "$lpid"
if grep -q 'notification "osprey_config" with payload "list_entries"' "$OSP_TMP/listen.out" &&
    grep -q 'notification "osprey_jobs" with payload "release"' "$OSP_TMP/listen.out"; then
    tap_ok "a list change notifies osprey_config (list_entries), a new job osprey_jobs"
else
    tap_not_ok "a list change notifies osprey_config, a new job osprey_jobs" "$(cat "$OSP_TMP/listen.out")" "$out"
fi
q osprey_daemon -c "SELECT count(*) FROM list_entries WHERE value_net >>= '2001:db8:dead:1::5'::inet"
tap_is "$out" 1 "IPv6 network lookup by containment"
