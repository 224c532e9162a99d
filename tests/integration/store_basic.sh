#!/bin/bash
# store_basic.sh -- store/ against a private PostgreSQL with the real schema:
# prepared statements and pipelined requests for every typed call
# (recipient resolution, lists/rules snapshot, quarantine with idempotent
# retry, Bayes lookup and training, jobs), LISTEN/NOTIFY, per-request
# deadlines, cancellation, clean shutdown (uv_loop_close() == 0), and the
# same under valgrind.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql
osp_timeout "${OSP_TEST_TIMEOUT:-90}"

TOOL=$OSP_TOP_BUILDDIR/tests/tools/store_tool
[ -x "$TOOL" ] || tap_skip_all "store_tool not built ($TOOL)"

tap_plan 31

pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"

tool() {
    out=$("$TOOL" -d "$OSP_PG_CONNINFO" "$@" 2>"$OSP_TMP/tool.err")
    rc=$?
}
has() {
    grep -qF -- "$1" <<<"$out"
}
ok_has() {
    if has "$2"; then tap_ok "$1"; else tap_not_ok "$1" "wanted: $2" "got: $out" "$(tail -5 "$OSP_TMP/tool.err")"; fi
}

# ---- connect, prepare, one query
tool ping
ok_has "ping answers ok" "ping=ok"
ok_has "loop closes cleanly after free" "loop_close=0"
tap_is "$rc" 0 "tool exits 0"

# ---- recipients
pg_psql -c "INSERT INTO accounts (id, parent_id, kind, name) VALUES
              (10, 0, 'reseller', 'r'), (11, 10, 'organisation', 'o'), (12, 11, 'user', 'u')" \
        -c "INSERT INTO domains (account_id, name) VALUES (11, 'example.com')" \
        -c "INSERT INTO addresses (account_id, address) VALUES (12, 'alice@example.com')" \
        -c "INSERT INTO settings (account_id, key, value) VALUES
              (0, 'spam_threshold', '5'), (11, 'spam_threshold', '7'),
              (11, 'lang', '\"fr\"'), (12, 'quarantine', 'true')" >/dev/null ||
    osp_die "seeding accounts failed"
tool resolve Alice@Example.COM bob@example.com nobody@nowhere.example
ok_has "exact address resolves to its account and chain" \
    "resolve=ok account=12 path=0.10.11.12 chain=0,10,11,12"
if grep -q '"lang": "fr"' <<<"$out" && grep -q '"quarantine": true' <<<"$out" &&
    grep -q '"spam_threshold": 7' <<<"$out"; then
    tap_ok "settings are inherited, nearest override wins"
else
    tap_not_ok "settings are inherited, nearest override wins" "$out"
fi
ok_has "domain resolves to the domain's account" "resolve=ok account=11 path=0.10.11 chain=0,10,11"
ok_has "unknown recipient is not found (not an error)" "resolve=notfound"

# ---- lists and rules snapshot
pg_psql -c "INSERT INTO list_entries (account_id, list, kind, value_net) VALUES
              (11, 'block', 'client_network', '192.0.2.0/24'),
              (12, 'allow', 'client_network', '2001:db8::/32')" \
        -c "INSERT INTO list_entries (account_id, list, kind, value) VALUES
              (0, 'allow', 'sender_domain', '.example.net')" \
        -c "INSERT INTO rules (account_id, name, source, priority, validated) VALUES
              (11, 'r1', 'subject contains \"x\"', 5, true),
              (11, 'r2', 'subject contains \"y\"', 9, false)" >/dev/null
tool snapshot
ok_has "snapshot has every list entry and only validated rules" "snapshot=ok entries=3 rules=1"
ok_has "networks come back as text, IPv6 included" "client_network 2001:db8::/32"

# ---- quarantine
tool quarantine 1 1 3 10240
ok_has "quarantine of 3 recipients commits" "quarantine Q1=ok inserted=3 duplicates=0"
tool quarantine 1 1 3 10240
ok_has "the same queue id and recipients again inserts nothing" "quarantine Q1=ok inserted=0 duplicates=3"
tap_is "$(pg_psql -c "SELECT count(*), count(DISTINCT body_sha256) FROM quarantine WHERE queue_id = 'Q1'")" \
    "3|1" "three rows, one body"
tap_is "$(pg_psql -c "SELECT size, octet_length(body) FROM quarantine_bodies")" "10240|10240" \
    "body stored whole"
tap_is "$(pg_psql -c "SELECT subject, reasons[2], client_address FROM quarantine WHERE queue_id = 'Q1' LIMIT 1")" \
    'subject ? 1|rule "x\y"|192.0.2.1' "invalid UTF-8 replaced, arrays escaped, inet stored"

# ---- Bayes
tool train 12 spam 2000
ok_has "training 2,000 tokens" "train=ok trained"
tool train 12 spam 2000
ok_has "the same message again changes nothing" "train=ok unchanged"
tool train 12 ham 2000
ok_has "moving it to ham retrains" "train=ok retrained"
tool tokens 12 2000
ok_has "2,000 tokens looked up in one request, user and global counts" \
    "tokens=ok n=2000 known=2000 spam=0 ham=2000 global_spam=0 global_ham=2000 totals=0,1,0,1"
tool tokens 12 100 999999
ok_has "unknown tokens count zero" "tokens=ok n=100 known=0"
tool tokens 0 2000
ok_has "account 0 asks for the global counts" "tokens=ok n=2000 known=2000 spam=0 ham=2000 global_spam=0 global_ham=2000"

# ---- jobs
tool job enqueue quarantine.release '{"id": 1}'
jid=$(sed -n 's/^enqueue=ok \([0-9]*\)$/\1/p' <<<"$out")
[ -n "$jid" ] && tap_ok "enqueue returns the job id" || tap_not_ok "enqueue returns the job id" "$out"
tool job dequeue w1 5 quarantine.release
ok_has "dequeue claims it" "job id=$jid kind=quarantine.release attempts=1 payload={\"id\": 1}"
tool job dequeue w2 5 quarantine.release
ok_has "a second worker finds nothing (claimed)" "dequeue=notfound n=0"
tool job fail "$jid" "boom"
ok_has "a failed job goes back to the queue with back-off" "fail=ok queued"
tool job complete "$jid"
ok_has "completing a job that is not running is not found" "complete=notfound"

# ---- LISTEN / NOTIFY
"$TOOL" -d "$OSP_PG_CONNINFO" listen 4 osprey_config >"$OSP_TMP/listen.out" 2>&1 &
lpid=$!
osp_track_pid "$lpid"
osp_wait_until 5 grep -q "notify osprey_config (reconnected)" "$OSP_TMP/listen.out"
pg_psql -c "INSERT INTO list_entries (account_id, list, kind, value) VALUES (0, 'block', 'helo', 'bad.example')"
if osp_wait_until 5 grep -q "notify osprey_config list_entries" "$OSP_TMP/listen.out"; then
    tap_ok "a change is notified to the listener"
else
    tap_not_ok "a change is notified to the listener" "$(cat "$OSP_TMP/listen.out")"
fi
wait "$lpid"
tap_is "$(grep -c 'loop_close=0' "$OSP_TMP/listen.out")" 1 "listener shuts down cleanly"

# ---- deadlines: a lock holds the query past its deadline
psql -X -q -c "BEGIN" -c "LOCK TABLE bayes_totals IN ACCESS EXCLUSIVE MODE" \
    -c "SELECT pg_sleep(4)" >/dev/null 2>&1 </dev/null &
lockpid=$!
osp_track_pid "$lockpid"
sleep 0.5
start=$(date +%s%N)
tool -W 700 tokens 12 10
elapsed=$((($(date +%s%N) - start) / 1000000))
ok_has "a request past its deadline is a temporary failure" "tokens=tempfail"
[ "$elapsed" -lt 3000 ] && tap_ok "and is answered near the deadline (${elapsed} ms)" ||
    tap_not_ok "and is answered near the deadline" "${elapsed} ms"
wait "$lockpid"

# ---- cancellation and shutdown
tool cancel
if has "cancel cleared=yes" && ! has "cancelled callback ran" && has "loop_close=0" &&
    has "shutdown_cb=tempfail" && [ "$rc" = 0 ]; then
    tap_ok "cancelled requests never call back; shutdown fails the pending one"
else
    tap_not_ok "cancelled requests never call back; shutdown fails the pending one" "$out"
fi

# ---- valgrind
if ldd "$TOOL" 2>/dev/null | grep -q libasan; then
    tap_skip "valgrind: no errors, no leaks" "sanitizer build (ASan checks instead)"
elif command -v valgrind >/dev/null 2>&1; then
    vg() {
        valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            "$TOOL" -d "$OSP_PG_CONNINFO" "$@" >"$OSP_TMP/vg.out" 2>&1
    }
    vrc=0
    vg ping || vrc=$?
    [ $vrc = 0 ] && { vg quarantine 2 2 5 20000 || vrc=$?; }
    [ $vrc = 0 ] && { vg tokens 12 2000 || vrc=$?; }
    [ $vrc = 0 ] && { vg snapshot || vrc=$?; }
    [ $vrc = 0 ] && { vg resolve alice@example.com || vrc=$?; }
    [ $vrc = 0 ] && { vg cancel || vrc=$?; }
    tap_is "$vrc" 0 "valgrind: no errors, no leaks" || tap_diag <"$OSP_TMP/vg.out"
else
    tap_skip "valgrind: no errors, no leaks" "valgrind not installed"
fi
