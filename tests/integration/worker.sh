#!/bin/bash
# worker.sh -- osprey-worker against a private PostgreSQL, as a login role
# in osprey_service: a queued maintenance job recreates missing partitions
# and drops expired ones; log_index jobs (scheduled by the workers
# themselves, with follow-ups while there is more) index every message_log
# row, which is searchable before and after; a job that fails is retried
# with back-off and is dead after worker_max_attempts; two workers never
# run the same job; periodic jobs are not duplicated; SIGTERM stops both
# cleanly (loop closed, no sanitizer report, nothing left running).

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql
osp_timeout "${OSP_TEST_TIMEOUT:-180}"

W=$OSP_TOP_BUILDDIR/osprey-worker
[ -x "$W" ] || tap_skip_all "osprey-worker not built ($W)"

NOOPS=200
ROWS=1000

tap_plan 18

pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"

tap_is "$(pg_psql -c "SELECT attgenerated = '' AND NOT attnotnull FROM pg_attribute
                       WHERE attrelid = 'message_log'::regclass AND attname = 'search'")" t \
    "migration 008: message_log.search is a plain nullable column"

pg_psql -c "CREATE ROLE osprey_worker LOGIN IN ROLE osprey_service" || osp_die "role"

day() { pg_psql -c "SELECT to_char(osprey_utc_today() + $1, 'YYYYMMDD')"; }
AHEAD=$(day 3)
OLD=$(day -100)
pg_psql -c "DROP TABLE message_log_p$AHEAD" -c "DROP TABLE quarantine_p$AHEAD" \
    -c "SELECT osprey_partition_create('message_log', osprey_utc_today() - 100)" >/dev/null ||
    osp_die "partition set-up"

# Log rows as the writer leaves them: search NULL.  One says "unicorn".
pg_psql -c "INSERT INTO message_log (queue_id, sender, recipient, subject, verdict, rules_hit)
            SELECT 'Q' || i, 's' || i || '@x.test', 'r@y.test',
                   CASE WHEN i = 500 THEN 'unicorn sighting' ELSE 'zebra ' || i END,
                   'ham', ARRAY['RULE_' || i]
              FROM generate_series(1, $ROWS) i" || osp_die "log rows"
search() {
    pg_psql -c "SELECT count(*) FROM osprey_log_search(websearch_to_tsquery('simple', '$1'),
                now() - interval '1 day', now() + interval '1 day')"
}
tap_is "$(search unicorn)/$(search 'RULE_77')" 1/1 \
    "rows not indexed yet are found by osprey_log_search"

# Jobs: partitions, one that fails for good (negative retention), noops.
pg_psql -c "SELECT osprey_job_enqueue('maintenance')" \
    -c "SELECT osprey_job_enqueue('maintenance', '{\"quarantine_days\": -1}')" \
    -c "SELECT osprey_job_enqueue('noop') FROM generate_series(1, $NOOPS)" >/dev/null ||
    osp_die "enqueue"
FAILING=$(pg_psql -c "SELECT id FROM jobs WHERE payload ? 'quarantine_days'")

conf=$OSP_TMP/osprey.conf
cat >"$conf" <<EOF
database_connection = host=$PGHOST port=$PGPORT user=osprey_worker dbname=osprey
osprey_user = nobody
worker_concurrency = 4
worker_max_attempts = 3
worker_retry_backoff = 1s
worker_poll_interval = 300ms
worker_log_index_interval = 1s
worker_log_index_batch = 100
worker_log_index_batches = 2
EOF

osp_spawn worker1 "$W" -f -c "$conf"
W1=$OSP_LAST_PID
osp_spawn worker2 "$W" -f -c "$conf"
W2=$OSP_LAST_PID
L1=$OSP_TMP/worker1.log
L2=$OSP_TMP/worker2.log

partitions_done() {
    [ "$(pg_psql -c "SELECT to_regclass('message_log_p$AHEAD') IS NOT NULL
                        AND to_regclass('quarantine_p$AHEAD') IS NOT NULL
                        AND to_regclass('message_log_p$OLD') IS NULL")" = t ]
}
if osp_wait_until 30 partitions_done; then
    tap_ok "maintenance recreated missing partitions and dropped the expired one"
else
    tap_not_ok "maintenance recreated missing partitions and dropped the expired one"
fi

unindexed() { pg_psql -c "SELECT count(*) FROM message_log WHERE search IS NULL"; }
all_indexed() { [ "$(unindexed)" = 0 ]; }
if osp_wait_until 60 all_indexed; then
    tap_ok "log_index jobs indexed all $ROWS log rows"
else
    tap_not_ok "log_index jobs indexed all $ROWS log rows" "still unindexed: $(unindexed)"
fi
tap_is "$(pg_psql -c "SELECT count(*) FROM message_log
                       WHERE search @@ to_tsquery('simple', 'unicorn & sighting')")" 1 \
    "an indexed row is found through the search vector"
tap_is "$(search unicorn)/$(search 'RULE_77')/$(search 's500@x.test')" 1/1/1 \
    "osprey_log_search finds indexed rows (subject, rule, sender)"
tap_is "$(pg_psql -c "SELECT count(*) FROM message_log
                       WHERE search IS DISTINCT FROM osprey_log_vector(subject, sender, recipient,
                             client_name, helo, queue_id, reinject_queue_id, message_id,
                             verdict, rules_hit)")" 0 \
    "every vector equals what the generated column used to compute"
if grep -q 'kind=log_index rows=200 more=yes' "$L1" "$L2"; then
    tap_ok "a full log_index job queues a follow-up"
else
    tap_not_ok "a full log_index job queues a follow-up" "$(grep -h log_index "$L1" "$L2" | tail -5)"
fi

failing_dead() { [ "$(pg_psql -c "SELECT state FROM jobs WHERE id = $FAILING")" = dead ]; }
if osp_wait_until 30 failing_dead; then
    tap_ok "the failing job is dead"
else
    tap_not_ok "the failing job is dead" "$(pg_psql -c "SELECT * FROM jobs WHERE id = $FAILING")"
fi
tap_is "$(pg_psql -c "SELECT attempts, last_error ~ 'keep_days must be >= 0'
                       FROM jobs WHERE id = $FAILING")" "3|t" \
    "... after worker_max_attempts (3) attempts, with the database's error kept"
tap_is "$(cat "$L1" "$L2" | grep -c "job=$FAILING kind=maintenance attempt=[12]: retry later")" 2 \
    "... and was retried twice before"
tap_is "$(pg_psql -c "SELECT extract(epoch FROM finished_at - created_at) >= 3 FROM jobs WHERE id = $FAILING")" t \
    "... with back-off between attempts (1 s, then 2 s)"

noops_done() {
    [ "$(pg_psql -c "SELECT count(*) FROM jobs WHERE kind = 'noop' AND state = 'done'")" = "$NOOPS" ]
}
if osp_wait_until 30 noops_done; then
    tap_ok "all $NOOPS noop jobs done"
else
    tap_not_ok "all $NOOPS noop jobs done" "$(pg_psql -c "SELECT state, count(*) FROM jobs GROUP BY 1")"
fi
runs=$(cat "$L1" "$L2" | grep -o 'job=[0-9]* kind=noop attempt=[0-9]*: started' | sort)
tap_is "$(wc -l <<<"$runs")/$(uniq -d <<<"$runs" | grep -c .)/$(pg_psql -c "SELECT max(attempts) FROM jobs WHERE kind = 'noop'")" \
    "$NOOPS/0/1" "two workers ran each job exactly once"
tap_diag "noop jobs run by worker 1: $(grep -c 'kind=noop attempt=1: started' "$L1")," \
    "by worker 2: $(grep -c 'kind=noop attempt=1: started' "$L2")"

# Periodic scheduling: at most one job per interval, however many workers.
tap_is "$(pg_psql -c "SELECT count(*) FROM jobs WHERE kind = 'maintenance' AND created_by = 'osprey_worker'")" 0 \
    "workers scheduled no duplicate maintenance job (one was created within the interval)"
tap_is "$(pg_psql -c "SELECT osprey_job_schedule('test.periodic', '1 hour') IS NOT NULL" -c "SELECT osprey_job_schedule('test.periodic', '1 hour') IS NULL")" \
    "$(printf 't\nt')" "osprey_job_schedule makes one job per interval"

# SIGTERM: both stop, the loop closes, nothing is left running.
kill -TERM "$W1" "$W2"
both_dead() { osp_dead "$W1" && osp_dead "$W2"; }
if osp_wait_until 15 both_dead && grep -q ': stopped' "$L1" && grep -q ': stopped' "$L2" &&
    ! grep -q 'not empty\|Sanitizer\|runtime error' "$L1" "$L2"; then
    tap_ok "SIGTERM stops both workers cleanly"
else
    tap_not_ok "SIGTERM stops both workers cleanly" "$(tail -n 5 "$L1" "$L2")"
fi
tap_is "$(pg_psql -c "SELECT count(*) FROM jobs WHERE state = 'running'")" 0 \
    "no job left running"
