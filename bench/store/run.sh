#!/bin/bash
# bench/store/run.sh -- store/ throughput against a private PostgreSQL with
# durable settings (fsync, synchronous_commit, full_page_writes on; the
# test harness turns them off for speed, this turns them back on).
#
#   bench/store/run.sh [BUILD_DIR]      (as root; BUILD_DIR default: .)
#
# Prints one table: quarantine commits per second (10 KB bodies, 20
# concurrent writers, synchronous commit), the same with one body shared
# by 50 recipients, message_log rows per second through the batched COPY
# writer, and the latency of a 2,000-token Bayes lookup (p50, p99).
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
export top_builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
export OSP_TEST_TIMEOUT=600
. "$top_srcdir/tests/integration/harness.sh"
osp_require root postgresql
TOOL=$OSP_TOP_BUILDDIR/tests/tools/store_tool
[ -x "$TOOL" ] || { echo "build tests/tools/store_tool first (make check TESTS=)" >&2; exit 1; }

pg_start >&2 || osp_die "PostgreSQL did not start"
pg_schema_load >&2 || osp_die "schema did not load"
pg_psql -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
    -c "ALTER SYSTEM SET full_page_writes = on" -c "ALTER SYSTEM SET shared_buffers = '256MB'" \
    -c "ALTER SYSTEM SET max_wal_size = '2GB'"
pg_restart >&2 || osp_die "restart failed"
echo "# PostgreSQL $(pg_psql -c 'SHOW server_version'), fsync=$(pg_psql -c 'SHOW fsync')," \
     "synchronous_commit=$(pg_psql -c 'SHOW synchronous_commit'), $(nproc) CPUs" >&2

T=("$TOOL" -d "$OSP_PG_CONNINFO" -T 30000 -W 30000)
POOL=${OSP_BENCH_POOL:-20}

q1=$("${T[@]}" -P "$POOL" bench-quarantine 20 20000 10240 1 0 2>/dev/null | grep '^bench')
q2=$("${T[@]}" -P "$POOL" -q D bench-quarantine 20 1000 10240 50 1 2>/dev/null | grep '^bench')
l1=$("${T[@]}" -P 1 bench-log "$OSP_TMP/bench.journal" 300000 2>/dev/null | grep '^bench')
pg_psql -c "INSERT INTO bayes_tokens (account_id, token, spam_count, ham_count)
            SELECT a, (random() * 9.2e18)::bigint, 1, 1 FROM generate_series(1, 500000), (VALUES (0), (12)) v (a)
            ON CONFLICT DO NOTHING" -c "VACUUM ANALYZE bayes_tokens" 2>/dev/null
pg_psql -c "INSERT INTO accounts (id, parent_id, kind, name) VALUES (12, 0, 'user', 'u')" >/dev/null
"${T[@]}" train 12 spam 2000 >/dev/null 2>&1
t1=$("${T[@]}" -P 1 bench-tokens 12 2000 1000 2>/dev/null | grep '^bench')

v() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
printf '%-58s %14s %s\n' "benchmark" "result" "target"
printf '%-58s %14s %s\n' "quarantine commits/s (10 KB, 20 writers, sync commit)" "$(v commits_per_s "$q1")" ">= 2000"
printf '%-58s %14s %s\n' "quarantine commits/s, 1 body x 50 rcpts (rows/s)" "$(v commits_per_s "$q2") ($(v rows_per_s "$q2"))" ""
printf '%-58s %14s %s\n' "message_log rows/s (COPY batches)" "$(v rows_per_s "$l1")" ">= 50000"
printf '%-58s %14s %s\n' "token lookup, 2,000 tokens, p50 ms" "$(v p50_ms "$t1")" ""
printf '%-58s %14s %s\n' "token lookup, 2,000 tokens, p99 ms" "$(v p99_ms "$t1")" ""
tap_diag "$q1" "$q2" "$l1" "$t1" >&2
