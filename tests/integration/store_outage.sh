#!/bin/bash
# store_outage.sh -- the database goes away and comes back while store/ is
# in use: requests fail with a temporary failure (never hang), the circuit
# breaker makes them fail fast while it is open, connections come back with
# back-off and re-prepare their statements, the listening connection
# LISTENs again (and says so), and quarantine writes retried through the
# outage end up stored exactly once.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql
osp_timeout "${OSP_TEST_TIMEOUT:-90}"

TOOL=$OSP_TOP_BUILDDIR/tests/tools/store_tool
[ -x "$TOOL" ] || tap_skip_all "store_tool not built ($TOOL)"

tap_plan 12

pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"

T=("$TOOL" -d "$OSP_PG_CONNINFO" -B 3 -K 1000 -C 1000 -T 2000 -W 1500)
"${T[@]}" watch 12 100 >"$OSP_TMP/watch.out" 2>"$OSP_TMP/watch.err" &
wpid=$!
"${T[@]}" listen 12 osprey_config >"$OSP_TMP/listen.out" 2>"$OSP_TMP/listen.err" &
lpid=$!
"${T[@]}" quarantine 1 25 2 10240 retry 250 >"$OSP_TMP/q.out" 2>"$OSP_TMP/q.err" &
qpid=$!
osp_track_pid $wpid
osp_track_pid $lpid
osp_track_pid $qpid
osp_add_log "$OSP_TMP/watch.out"
osp_add_log "$OSP_TMP/q.out"

sleep 2
pg_stop
tap_diag "database stopped"
sleep 4
pg_start || osp_die "PostgreSQL did not restart"
tap_diag "database started"
sleep 2
pg_psql -c "INSERT INTO list_entries (account_id, list, kind, value) VALUES (0, 'block', 'helo', 'x.example')"
wait $wpid
wrc=$?
wait $lpid
wait $qpid
qrc=$?

w=$(cat "$OSP_TMP/watch.out")
first_ok=$(head -1 <<<"$w")
grep -q "status=ok" <<<"$first_ok" && tap_ok "pings succeed before the outage" ||
    tap_not_ok "pings succeed before the outage" "$first_ok"
grep -q "status=tempfail" <<<"$w" && tap_ok "the outage is reported as a temporary failure" ||
    tap_not_ok "the outage is reported as a temporary failure" "$w"
grep -q "status=refused .*circuit breaker open" <<<"$w" &&
    tap_ok "the open breaker refuses calls at once" ||
    tap_not_ok "the open breaker refuses calls at once" "$w"
slow=$(grep -E "status=(tempfail|refused)" <<<"$w" | awk '{v=$3; sub("ms=","",v); if (v+0 > 1600) print}')
[ -z "$slow" ] && tap_ok "no failing call waits longer than its deadline" ||
    tap_not_ok "no failing call waits longer than its deadline" "$slow"
fast=$(grep -c "status=refused.*ms=0\.[0-9] " <<<"$w")
[ "$fast" -gt 0 ] && tap_ok "refusals take under a millisecond ($fast of them)" ||
    tap_not_ok "refusals take under a millisecond" "$w"
last=$(grep "^watch" <<<"$w" | tail -1)
grep -q "status=ok .*breaker=closed up=2" <<<"$last" &&
    tap_ok "after the restart pings succeed, breaker closed, pool reconnected" ||
    tap_not_ok "after the restart pings succeed, breaker closed, pool reconnected" "$last"
grep -Eq "stats reconnects=[1-9]" <<<"$w" && tap_ok "reconnections are counted" ||
    tap_not_ok "reconnections are counted" "$(tail -2 <<<"$w")"
tap_is "$(grep -c 'loop_close=0' <<<"$w")$wrc" 10 "watcher shuts down cleanly"

tap_is "$(grep -c 'notify osprey_config (reconnected)' "$OSP_TMP/listen.out")" 2 \
    "the listener is told it reconnected (once at start, once after the outage)"
grep -q "notify osprey_config list_entries" "$OSP_TMP/listen.out" &&
    tap_ok "a change after the outage is notified (LISTEN again)" ||
    tap_not_ok "a change after the outage is notified (LISTEN again)" "$(cat "$OSP_TMP/listen.out")"

tap_is "$(pg_psql -c "SELECT count(*), count(DISTINCT (queue_id, recipient)) FROM quarantine WHERE queue_id LIKE 'Q%'")" \
    "50|50" "25 quarantined messages retried through the outage: every row exactly once"
tap_is "$(grep -c '=ok inserted=2' "$OSP_TMP/q.out")$qrc" 250 "each reported committed once, tool ok"
