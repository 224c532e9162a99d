#!/bin/bash
# ctl_admin.sh -- ospreyctl's admin commands against a private PostgreSQL:
# accounts (tree, domains, addresses, admins), allow/block lists with
# validation errors and the osprey_config notification, rules validated by
# the rules compiler (line:column errors, nothing stored), quarantine
# list/show/release/delete, log search; each success and error path, and
# tenant scoping with --as (a client admin cannot see or release a
# sibling's quarantine, nor list into it).  Then the release job end to
# end: osprey-worker fails while the reinjection address is down (row not
# marked, job retried), then sends the stored message through a real
# Postfix to smtp-sink, marks the row released, and the message arrives
# exactly once; a job naming another account's row sends nothing; a
# message sent whose row cannot be marked is sent again (at least once).

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/ctl_lib.sh"

osp_require root postgresql postfix
osp_timeout "${OSP_TEST_TIMEOUT:-240}"

tap_plan 100

pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"

ctl_conf

# ---------------------------------------------------------------- accounts
c account add RA --kind reseller
RA=$(acct_id)
is_rc 0 "account add reseller"
c account add A1 --kind client --parent RA
A1=$(acct_id)
c account add A2 --kind client --parent "$RA"
A2=$(acct_id)
c account add RB --kind reseller
RB=$(acct_id)
c account add u1 --kind user --parent A1
U1=$(acct_id)
tap_is "$(sql "SELECT string_agg(path::text, ' ' ORDER BY id) FROM accounts WHERE id IN ($RA, $A1, $A2, $RB, $U1)")" \
    "0.$RA 0.$RA.$A1 0.$RA.$A2 0.$RB 0.$RA.$A1.$U1" "accounts form the tree (client below reseller)"
c account add X --kind emperor
err_has 2 'kind "emperor": expected reseller, client or user' "account add: bad kind named"
c account add X --kind client --parent nosuch
err_has 1 'account "nosuch": no such account' "account add: unknown parent named"
c account add 42 --kind client
err_has 2 "must not be empty or a number" "account add: numeric name refused"

c account domain add A1 A1.Example.COM
is_rc 0 "account domain add"
c account domain add A2 a1.example.com
err_has 1 "already belongs to an account" "account domain add: duplicate refused"
c account domain add A2 a2.example.com
c account address add A1 Boss@A1.example.com
is_rc 0 "account address add"
c account address add A1 nobody
err_has 2 "expected local@domain" "account address add: not an address"
c account show A1
out_has "a1.example.com" "account show lists the domain (lower case)"
grep -qF "boss@a1.example.com" <<<"$out" && tap_ok "account show lists the address" ||
    tap_not_ok "account show lists the address"
c account list
out_has "A2" "account list shows the tree"
c account show nosuch
err_has 1 "no such account" "account show: unknown account"
c account del RA
err_has 1 "has 2 sub-account(s)" "account del: refused while it has sub-accounts"
c account del u1
is_rc 0 "account del"
tap_is "$(sql "SELECT count(*) FROM accounts WHERE id = $U1")/$(sql "SELECT count(*) FROM audit_log WHERE action = 'account.del'")" \
    0/1 "account del: gone, and audited"
c account domain del A1 nope.example.com
err_has 1 "not owned by account $A1" "account domain del: not owned"

# Admins: one per reseller and client.
for r in "RA adm_ra" "A1 adm_a1" "A2 adm_a2"; do
    set -- $r
    c account admin add "$1" "$2"
done
is_rc 0 "account admin add"
c account list --as adm_a1
if [ "$rc" = 0 ] && grep -q "A1" <<<"$out" && ! grep -q "A2\|RB" <<<"$out"; then
    tap_ok "--as client admin: account list shows its subtree only"
else
    tap_not_ok "--as client admin: account list shows its subtree only"
    tap_diag "$out $err"
fi
c account list --as adm_ra
if [ "$rc" = 0 ] && grep -q "A2" <<<"$out" && ! grep -q "RB" <<<"$out"; then
    tap_ok "--as reseller admin: account list shows its clients, not the other reseller"
else
    tap_not_ok "--as reseller admin: account list shows its clients, not the other reseller"
fi
c account list --as nobody_here
err_has 1 "--as" "--as with an unknown role fails"
c account add sneaky --kind user --parent A2 --as adm_a1
err_has 1 "no such account" "--as client admin cannot add below a sibling"

# ---------------------------------------------------------------- lists
listen_log=$OSP_TMP/listen.log
psql -X -A -t -d osprey -c "LISTEN osprey_config" -c "SELECT pg_sleep(3)" >"$listen_log" 2>&1 &
LISTEN_PID=$!
osp_track_pid "$LISTEN_PID"
sleep 0.5
c list add block client 192.0.2.0/24 --comment "test net"
out_has "block list of account 0: added client_network 192.0.2.0/24" "list add: global client network"
wait "$LISTEN_PID"
grep -q 'payload "list_entries"' "$listen_log" && tap_ok "list add NOTIFYs osprey_config (list_entries)" ||
    { tap_not_ok "list add NOTIFYs osprey_config (list_entries)"; tap_diag <"$listen_log"; }
c list add block client 192.0.2.7/24
err_has 2 "bits set to the right of the prefix length (did you mean 192.0.2.0/24?)" \
    "list add: host bits named"
c list add allow client not-an-ip
err_has 2 'client network "not-an-ip": not an IPv4 or IPv6 address' "list add: bad address named"
c list add allow client 2001:DB8::/32 --account A1
out_has "2001:db8::/32" "list add: IPv6 network for an account"
c list add allow sender someone
err_has 2 "not an address" "list add: sender without @ refused"
c list add allow sender Boss@Partner.Example --account A1
out_has "allow list of account $A1: added sender boss@partner.example" "list add: sender lower-cased"
c list add block sender boss@partner.example --account A1
err_has 1 "already on the allow list of account $A1" "list add: duplicate names the list it is on"
c list add block sender_domain .spam.example
is_rc 0 "list add: subdomain pattern"
c list add block recipient_domain bad@domain
err_has 2 "a domain has no '@'" "list add: domain with @ refused"
c list add block colour red
err_has 2 'unknown kind "colour"' "list add: unknown kind"
c list add maybe sender a@b.example
err_has 2 "expected allow or block" "list add: unknown list"
c list show --account A1
out_has "boss@partner.example" "list show --account"
c list show
out_has ".spam.example" "list show: all entries"
c list del allow sender boss@partner.example --account A1
out_has "deleted sender boss@partner.example" "list del by value"
c list del allow sender boss@partner.example --account A1
err_has 1 "is not on the allow list" "list del: absent entry"
ID=$(sql "SELECT id FROM list_entries WHERE value = '.spam.example'")
c list del "$ID"
is_rc 0 "list del ID"
c list add allow helo mx.partner.example --as adm_a1
out_has "allow list of account $A1" "--as: list add defaults to the admin's account"
c list add allow helo mx.other.example --account A2 --as adm_a1
err_has 1 "no such account" "--as client admin cannot add to a sibling's list"
c list show --as adm_a1
if [ "$rc" = 0 ] && grep -q "mx.partner.example" <<<"$out" && ! grep -q "192.0.2.0" <<<"$out"; then
    tap_ok "--as: list show only the admin's entries (not the global ones)"
else
    tap_not_ok "--as: list show only the admin's entries (not the global ones)"
    tap_diag "$out"
fi
tap_is "$(sql "SELECT count(*) FROM audit_log WHERE action LIKE 'list.%'")" 7 "list changes are audited"

# ---------------------------------------------------------------- rules
cat >"$OSP_TMP/good.rules" <<'EOF'
rule LOCAL_SUBJ: header "Subject" contains "cheap" => score 2.5 "cheap offers"
EOF
cat >"$OSP_TMP/bad.rules" <<'EOF'
rule OK_ONE: header "Subject" contains "x" => score 1 "fine"
rule BROKEN: header "Subject" frobnicates "x" => score 1 "bad"
EOF
c rule add A1 "$OSP_TMP/good.rules"
out_has 'rule set "good" added' "rule add: valid file stored"
tap_is "$(sql "SELECT validated AND validation_error IS NULL AND source LIKE '%LOCAL_SUBJ%' FROM rules WHERE account_id = $A1 AND name = 'good'")" \
    t "rule add: stored with validated = true"
c rule add A1 "$OSP_TMP/bad.rules" --name broken
if [ "$rc" = 1 ] && grep -qE 'bad\.rules:2:[0-9]+: ' <<<"$err"; then
    tap_ok "rule add: invalid file rejected with FILE:LINE:COL errors"
else
    tap_not_ok "rule add: invalid file rejected with FILE:LINE:COL errors"
    tap_diag "$err"
fi
tap_is "$(sql "SELECT count(*) FROM rules WHERE name = 'broken'")" 0 "rule add: nothing stored on error"
c rule add A1 "$OSP_TMP/missing.rules"
err_has 1 "cannot read" "rule add: unreadable file"
c rule add A2 "$OSP_TMP/good.rules" --as adm_a1
err_has 1 "no such account" "--as: rule add to a sibling refused"
c rule list --account A1
out_has "good" "rule list"
c rule del A1 good
is_rc 0 "rule del"
c rule del A1 good
err_has 1 'has no rule set "good"' "rule del: absent"

# ---------------------------------------------------------------- quarantine
msg() {
    printf 'From: sender@outside.example\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@outside.example>\r\n\r\nHello,\r\n.dot line\r\nbye\r\n' \
        "$1" "$2" "$2"
}
qins() { # ACCOUNT RECIPIENT SUBJECT -> id
    sql "$(msg "$2" "$3" | body_cte)
         INSERT INTO quarantine (account_id, queue_id, message_id, sender, recipient,
                                 client_address, subject, size, score, verdict, reasons, body_sha256)
         SELECT $1, 'Q$3', '<$3@outside.example>', 'sender@outside.example', '$2',
                '198.51.100.9', '$3', 100, 12.5, 'quarantine', ARRAY['BAYES_99', 'spam score 12.5'],
                sha256 FROM b RETURNING id"
}
Q1=$(qins "$A1" a1@example.com relsubj1)
Q2=$(qins "$A2" a2@example.com sibling2)
Q3=$(qins "$A1" a1@example.com delsubj3)
Q4=$(qins "$A1" a1@example.com relsubj4)
[ -n "$Q1" ] && [ -n "$Q4" ] || osp_die "quarantine rows"

c quarantine list
out_has "sibling2" "quarantine list: all rows"
c quarantine list --account A1 --since 1h
if [ "$rc" = 0 ] && grep -q relsubj1 <<<"$out" && ! grep -q sibling2 <<<"$out"; then
    tap_ok "quarantine list --account --since: that account only"
else
    tap_not_ok "quarantine list --account --since: that account only"
    tap_diag "$out $err"
fi
c quarantine list --limit 1
tap_is "$rc/$(($(wc -l <<<"$out") - 1))" 0/1 "quarantine list --limit 1: one row"
c quarantine list --limit zero
err_has 2 "--limit" "quarantine list: bad --limit"
c quarantine list --since yesterday-ish
err_has 2 "--since" "quarantine list: bad --since"
c quarantine show "$Q1"
if [ "$rc" = 0 ] && grep -q "^score *12.50" <<<"$out" && grep -q "^reasons *BAYES_99; spam score 12.5" <<<"$out" &&
    grep -q "^recipients *a1@example.com" <<<"$out" && grep -q "^Subject: relsubj1" <<<"$out" &&
    ! grep -q "^Hello" <<<"$out"; then
    tap_ok "quarantine show: score, reasons, recipients and the headers (not the body)"
else
    tap_not_ok "quarantine show: score, reasons, recipients and the headers (not the body)"
    tap_diag "$out $err"
fi
"$CTL" -c "$conf" quarantine show "$Q1" --raw >"$OSP_TMP/raw.eml" 2>/dev/null
msg a1@example.com relsubj1 >"$OSP_TMP/orig.eml"
cmp -s "$OSP_TMP/raw.eml" "$OSP_TMP/orig.eml" && tap_ok "quarantine show --raw: the stored bytes" ||
    tap_not_ok "quarantine show --raw: the stored bytes"
c quarantine show 999999
err_has 1 "no such message" "quarantine show: unknown id"
c quarantine show abc
err_has 2 "expected a number" "quarantine show: bad id"

# Tenant scoping: client A1's admin and its sibling A2's message.
c quarantine list --as adm_a1
if [ "$rc" = 0 ] && grep -q relsubj1 <<<"$out" && ! grep -q sibling2 <<<"$out"; then
    tap_ok "--as client admin: quarantine list shows no sibling's mail"
else
    tap_not_ok "--as client admin: quarantine list shows no sibling's mail"
    tap_diag "$out $err"
fi
c quarantine show "$Q2" --as adm_a1
err_has 1 "not visible to this admin" "--as client admin: cannot show a sibling's message"
c quarantine release "$Q2" --as adm_a1
err_has 1 "no such message" "--as client admin: cannot release a sibling's message"
c quarantine delete "$Q2" --as adm_a1
err_has 1 "no such message" "--as client admin: cannot delete a sibling's message"
c quarantine list --as adm_ra
if grep -q relsubj1 <<<"$out" && grep -q sibling2 <<<"$out"; then
    tap_ok "--as reseller admin: sees both clients' mail"
else
    tap_not_ok "--as reseller admin: sees both clients' mail"
fi
tap_is "$(sql "SELECT release_state FROM quarantine WHERE id = $Q2")" held "sibling's row untouched"

c quarantine release "$Q1" --to 'bad address'
err_has 2 "expected an address" "quarantine release: bad --to"
c quarantine release "$Q1" --as adm_a1
out_has "release queued" "quarantine release (as the client admin) queues a job"
tap_is "$(sql "SELECT q.release_state || ' ' || q.release_requested_by || ' ' || j.kind || ' ' || j.account_id || ' ' || j.created_by || ' ' || (j.payload->>'quarantine_id')
               FROM quarantine q, jobs j WHERE q.id = $Q1 AND j.kind = 'release'")" \
    "release_requested adm_a1 release $A1 adm_a1 $Q1" "release: row requested, job for its account, by the admin"
c quarantine release "$Q1"
err_has 1 "already being released" "quarantine release: twice refused"
c quarantine delete "$Q1"
err_has 1 "already being released" "quarantine delete: refused while a release is pending"
c quarantine delete "$Q3"
is_rc 0 "quarantine delete"
c quarantine delete "$Q3"
err_has 1 "no such message" "quarantine delete: twice"
tap_is "$(sql "SELECT count(*) FROM audit_log WHERE action IN ('quarantine.release', 'quarantine.delete')")" \
    2 "release and delete are audited"

# ---------------------------------------------------------------- log search
sql "INSERT INTO message_log (account_id, queue_id, sender, recipient, subject, verdict, score)
     VALUES ($A1, 'LQ1', 's@x.example', 'a1@example.com', 'unicorn report', 'ham', 1.0),
            ($A2, 'LQ2', 's@x.example', 'a2@example.com', 'unicorn secret', 'spam', 9.0),
            ($A1, 'LQ3', 's@x.example', 'a1@example.com', 'zebra', 'ham', 0.5)" >/dev/null
c log search unicorn
tap_is "$rc/$(grep -c unicorn <<<"$out")" 0/2 "log search: both matches"
c log search unicorn --as adm_a1
if [ "$rc" = 0 ] && grep -q "unicorn report" <<<"$out" && ! grep -q "secret" <<<"$out"; then
    tap_ok "--as client admin: log search finds no sibling's rows"
else
    tap_not_ok "--as client admin: log search finds no sibling's rows"
    tap_diag "$out $err"
fi
c log search unicorn --limit 1
tap_is "$(grep -c unicorn <<<"$out")" 1 "log search --limit"
c log search unicorn --since 2099-01-01
tap_is "$rc/$(grep -c unicorn <<<"$out")" 0/0 "log search --since in the future: nothing"
c log search unicorn --since soon
err_has 2 "--since" "log search: bad --since"
c log search
err_has 2 "usage" "log search: no query"

# ---------------------------------------------------------------- release job
postfix_setup || osp_die "postfix_setup"
postfix_start || osp_die "postfix_start"
sink_start || osp_die "sink_start"
sql "CREATE ROLE osprey_worker LOGIN IN ROLE osprey_service" >/dev/null || osp_die "role"
DOWN=$(osp_free_port)
wconf=$OSP_TMP/worker.conf
cat >"$wconf" <<EOF
database_connection = host=$PGHOST port=$PGPORT user=osprey_worker dbname=osprey
osprey_user = nobody
worker_concurrency = 2
worker_max_attempts = 20
worker_retry_backoff = 1s
worker_poll_interval = 300ms
worker_release_address = 127.0.0.1:$DOWN
worker_release_timeout = 5s
EOF
osp_spawn worker1 "$W" -f -c "$wconf"
WP=$OSP_LAST_PID
failed() { [ -n "$(sql "SELECT 1 FROM jobs WHERE kind = 'release' AND last_error LIKE '%cannot connect%'")" ]; }
ok "release job: fails while the reinjection address is down" osp_wait_until 20 failed
tap_is "$(sql "SELECT release_state FROM quarantine WHERE id = $Q1")" release_requested \
    "a failed send does not mark the row released"
osp_kill_pid "$WP" 10
sed -i "s/^worker_release_address = .*/worker_release_address = 127.0.0.1:$OSP_SMTP_PORT/" "$wconf"
sql "UPDATE jobs SET run_after = now() WHERE kind = 'release' AND state = 'queued'" >/dev/null
osp_spawn worker2 "$W" -f -c "$wconf"
WP=$OSP_LAST_PID
released() { [ "$(sql "SELECT release_state FROM quarantine WHERE id = $Q1")" = released ]; }
ok "release job: the row is marked released" osp_wait_until 30 released
ok "release job: the message reaches the sink through Postfix" sink_wait_count 1 30
sleep 3
tap_is "$(sink_find 'Subject: relsubj1' | wc -l)/$(sink_count)" 1/1 "released message arrived exactly once"
f=$(sink_find 'Subject: relsubj1' | head -n 1)
if [ -n "$f" ] && grep -q "^\.dot line" "$f" && grep -qi "a1@example.com" "$f"; then
    tap_ok "released message: body intact (dot line), sent to the original recipient"
else
    tap_not_ok "released message: body intact (dot line), sent to the original recipient"
    [ -n "$f" ] && tap_diag <"$f"
fi
tap_is "$(sql "SELECT state FROM jobs WHERE kind = 'release'")/$(sql "SELECT count(*) FROM audit_log WHERE action = 'quarantine.released' AND object_id = '$Q1'")" \
    done/1 "release job done, release audited once"

# A forged job for another account's message does nothing.
sql "UPDATE quarantine SET release_state = 'release_requested' WHERE id = $Q2" >/dev/null
sql "SELECT osprey_job_enqueue('release', jsonb_build_object('quarantine_id', $Q2), $A1)" >/dev/null
forged_done() { [ "$(sql "SELECT count(*) FROM jobs WHERE kind = 'release' AND state = 'done'")" = 2 ]; }
ok "release job naming another account's message: finished without sending" osp_wait_until 20 forged_done
c quarantine release "$Q4" --to other@example.com
released4() { [ "$(sql "SELECT release_state FROM quarantine WHERE id = $Q4")" = released ]; }
ok "release --to: marked released" osp_wait_until 30 released4
sink_wait_count 2 30
tap_is "$(sink_find 'Subject: sibling2' | wc -l)/$(sink_find 'Subject: relsubj4' | xargs -r grep -li 'other@example.com' | wc -l)" \
    0/1 "forged job sent nothing; release --to went to the given address"

# Sent but not marked (as after a crash between the two): sent again.
Q5=$(qins "$A1" a1@example.com twice5)
sql "REVOKE UPDATE ON quarantine FROM osprey_service" >/dev/null
c quarantine release "$Q5"
unmarked() {
    [ -n "$(sql "SELECT 1 FROM jobs WHERE kind = 'release' AND payload->>'quarantine_id' = '$Q5'
                   AND last_error LIKE '%cannot mark released%'")" ]
}
ok "sent but the row cannot be marked: the job fails and is retried" osp_wait_until 20 unmarked
tap_is "$(sql "SELECT release_state FROM quarantine WHERE id = $Q5")" release_requested \
    "the row stays release_requested"
sql "GRANT UPDATE ON quarantine TO osprey_service" >/dev/null
released5() { [ "$(sql "SELECT release_state FROM quarantine WHERE id = $Q5")" = released ]; }
ok "the retry marks it released" osp_wait_until 30 released5
twice() { [ "$(sink_find 'Subject: twice5' | wc -l)" -ge 2 ]; }
ok "and the message was sent again: at least once, never lost" osp_wait_until 30 twice

osp_kill_pid "$WP" 10
ok "worker stops cleanly" osp_dead "$WP"

# A release stuck in the SMTP dialogue when the worker stops: abandoned
# after worker_shutdown_timeout, left for reclaim; the worker still exits
# cleanly once the thread gives up (worker_release_timeout).
HANG=$(osp_free_port)
python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $HANG)); s.listen(5); c, _ = s.accept(); time.sleep(60)" \
    >/dev/null 2>&1 </dev/null &
HPID=$!
osp_track_pid "$HPID"
osp_wait_until 5 _osp_port_listening "$HANG" || osp_die "hanging server"
sed -i -e "s/^worker_release_address = .*/worker_release_address = 127.0.0.1:$HANG/" \
    -e "s/^worker_release_timeout = .*/worker_release_timeout = 2s/" "$wconf"
echo "worker_shutdown_timeout = 300ms" >>"$wconf"
Q6=$(qins "$A1" a1@example.com stuck6)
osp_spawn worker3 "$W" -f -c "$wconf"
WP=$OSP_LAST_PID
c quarantine release "$Q6"
running6() {
    [ -n "$(sql "SELECT 1 FROM jobs WHERE kind = 'release' AND state = 'running'
                   AND payload->>'quarantine_id' = '$Q6'")" ]
}
osp_wait_until 20 running6 || tap_diag "release job $Q6 not running"
sleep 0.5
kill -TERM "$WP"
ok "worker with a stuck release stops after the thread gives up" osp_wait_until 10 osp_dead "$WP"
if grep -q "kind=release: abandoned at shutdown" "$OSP_TMP/worker3.log" &&
    ! grep -q "event loop not empty" "$OSP_TMP/worker3.log"; then
    tap_ok "stuck release abandoned at shutdown, loop closed"
else
    tap_not_ok "stuck release abandoned at shutdown, loop closed"
    tap_diag <"$OSP_TMP/worker3.log"
fi
tap_is "$(sql "SELECT release_state FROM quarantine WHERE id = $Q6")/$(sink_find 'Subject: stuck6' | wc -l)" \
    release_requested/0 "abandoned release: nothing sent, row still requested (left for reclaim)"
osp_kill_pid "$HPID" 5
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$OSP_TMP/worker1.log" "$OSP_TMP/worker2.log" \
    "$OSP_TMP/worker3.log"; then
    tap_not_ok "no sanitizer reports"
else
    tap_ok "no sanitizer reports"
fi
tap_done
