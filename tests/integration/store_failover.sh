#!/bin/bash
# store_failover.sh -- a primary and a streaming-replication standby; the
# store connects through a multi-host string with
# target_session_attrs=read-write.  Quarantine writes run while the
# primary stops and the standby is promoted: each write is either reported
# committed (and then present exactly once on the new primary) or reported
# as a temporary failure (then present zero times or completely, never
# half), and retrying every write afterwards leaves every message stored
# exactly once.  Nothing is silently lost.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql pg_basebackup
osp_timeout "${OSP_TEST_TIMEOUT:-90}"

TOOL=$OSP_TOP_BUILDDIR/tests/tools/store_tool
[ -x "$TOOL" ] || tap_skip_all "store_tool not built ($TOOL)"

tap_plan 9

pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"
pg_standby_start || osp_die "standby did not start"
tap_ok "standby streams from the primary"

MULTI="host=$PGHOST,$OSP_PG2_HOST port=$PGPORT,$OSP_PG2_PORT user=osprey_admin dbname=osprey target_session_attrs=read-write"
T=("$TOOL" -d "$MULTI" -P 2 -B 1000 -C 2000 -T 3000 -W 3000)
psql2() {
    psql -X -q -A -t -h "$OSP_PG2_HOST" -p "$OSP_PG2_PORT" -U osprey_admin -d osprey "$@" </dev/null
}

"${T[@]}" ping >"$OSP_TMP/p.out" 2>&1
grep -q "ping=ok" "$OSP_TMP/p.out" && tap_ok "the multi-host string reaches the primary" ||
    tap_not_ok "the multi-host string reaches the primary" "$(cat "$OSP_TMP/p.out")"

# 80 messages, 2 recipients each, one every ~60 ms, no retries.
"${T[@]}" -q F quarantine 1 80 2 10240 noretry 60 >"$OSP_TMP/f.out" 2>"$OSP_TMP/f.err" &
fpid=$!
osp_track_pid $fpid
osp_add_log "$OSP_TMP/f.out"
osp_add_log "$OSP_TMP/f.err"
sleep 1.5
pg_stop
tap_diag "primary stopped"
pg_standby_promote || osp_die "promotion failed"
tap_diag "standby promoted"
wait $fpid
frc=$?
tap_is "$frc" 0 "the writer ran through the switch and shut down cleanly"

okids=$(sed -n 's/^quarantine F\([0-9]*\)=ok inserted=2 .*/\1/p' "$OSP_TMP/f.out")
failids=$(sed -n 's/^quarantine F\([0-9]*\)=\(tempfail\|refused\) .*/\1/p' "$OSP_TMP/f.out")
nok=$(wc -w <<<"$okids")
nfail=$(wc -w <<<"$failids")
tap_diag "$nok reported committed, $nfail reported as temporary failures"
tap_is "$((nok + nfail))" 80 "every write got exactly one answer"
grep -q "^quarantine F80=ok" "$OSP_TMP/f.out" && tap_ok "writes succeed again on the promoted standby" ||
    tap_not_ok "writes succeed again on the promoted standby" "$(tail -3 "$OSP_TMP/f.out")"

psql2 -c "SELECT substr(queue_id, 2)::int, count(*) FROM quarantine WHERE queue_id LIKE 'F%' GROUP BY 1" \
    >"$OSP_TMP/rows"
bad=
for id in $okids; do
    grep -qx "$id|2" "$OSP_TMP/rows" || bad="$bad $id"
done
[ -z "$bad" ] && tap_ok "every write reported committed is on the new primary, exactly once" ||
    tap_not_ok "every write reported committed is on the new primary, exactly once" "missing:$bad"
half=$(grep -v '|2$' "$OSP_TMP/rows")
[ -z "$half" ] && tap_ok "no message is stored partially or twice" ||
    tap_not_ok "no message is stored partially or twice" "$half"

# Postfix retries what got a 4xx: the retry stores each message once.
"${T[@]}" -q F quarantine 1 80 2 10240 retry >"$OSP_TMP/r.out" 2>"$OSP_TMP/r.err"
tap_is "$(grep -c '=ok inserted=' "$OSP_TMP/r.out")" 80 "retrying all 80 succeeds"
tap_is "$(psql2 -c "SELECT count(*), count(DISTINCT (queue_id, recipient)) FROM quarantine WHERE queue_id LIKE 'F%'")" \
    "160|160" "after the retry every message is stored exactly once"
