#!/bin/bash
# filter_noloss.sh -- the no-loss contract with a real Postfix: osprey-filter
# is killed (SIGKILL) at each step, the reinjection smtpd is unreachable, the
# temporary directory is full, and one LMTP recipient fails downstream.  In
# each case every message ends up delivered or quarantined at least once,
# and the database holding the quarantine is stopped while messages that
# must be quarantined arrive (4xx, kept queued, stored exactly once later);
# none is missing, and Postfix's queue drains after recovery.  The test-only
# pause (filter_debug_pause_stage) holds a message at a named stage so the
# kill lands exactly there.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"

osp_require root postfix python3 mount
osp_timeout "${OSP_TEST_TIMEOUT:-300}"
tap_plan 25

[ -x "$FILTER_BIN" ] || osp_die "no $FILTER_BIN (build first)"
sink_start || osp_die "smtp-sink did not start"
postfix_setup 'minimal_backoff_time = 2s' 'maximal_backoff_time = 4s' 'queue_run_delay = 2s' ||
    osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"
filter_conf_apply smtp || osp_die "cannot apply the SMTP variant"
postfix_start || osp_die "Postfix did not start"
nf=0

restart_filter() {
    filter_stop
    nf=$((nf + 1))
    filter_start "filter$nf" "$@"
}

_pause_seen() {
    grep -q "debug pause at stage $1" "$FILTER_LOG"
}

# kill_case STAGE: hold messages at STAGE, SIGKILL, restart, flush, account.
kill_case() {
    local stage=$1 tag=kill-$1
    restart_filter -o filter_debug_pause_stage="$stage" -o filter_debug_pause=30s ||
        osp_die "filter did not start"
    send_batch "$tag" 10 mixed >/dev/null 2>&1 || tap_diag "send_batch $tag failed"
    if osp_wait_until 15 _pause_seen "$stage"; then
        sleep 0.5   # let more sessions reach the stage
        filter_kill9
        restart_filter || osp_die "filter did not restart"
        postfix_flush
        ok "SIGKILL at stage $stage: all 10 delivered or quarantined" wait_accounted "$tag" 10 90
    else
        tap_not_ok "SIGKILL at stage $stage: the pause was never reached" "$(tail -n 5 "$FILTER_LOG")"
    fi
}

ok "osprey-filter starts" restart_filter || osp_die "osprey-filter did not start"

# ---- 1-3: SIGKILL during DATA, after the scan, after reinjection
kill_case data
kill_case after_scan
kill_case after_reinject
ok "queue drains after the kills" wait_queue_empty 30
tap_diag "after_reinject: $(seq_counts kill-after_reinject) at the sink (duplicates allowed)"

# ---- 4: reinjection smtpd unreachable, then back
closed=$(osp_free_port)
restart_filter -o filter_reinject="inet:127.0.0.1:$closed" || osp_die "filter did not start"
send_batch down 10 deliver >/dev/null 2>&1
ok "reinjection down: Postfix is told 4xx (deferred)" \
    maillog_wait 'osprey-scan/smtp\[[0-9]+\]: .*status=deferred .*4\.4\.[12] ' 20
sleep 1
tap_is "$(seq_counts down)" "0 distinct, 0 total" "reinjection down: nothing delivered"
ok "reinjection down: all 10 still queued" eval '[ "$(queue_count)" -ge 10 ]'
ok "reinjection down: the circuit breaker opened and fails fast" \
    grep -q "circuit breaker open\|breaker reinject: state closed -> open" "$FILTER_LOG"
restart_filter || osp_die "filter did not restart"
postfix_flush
ok "reinjection back: all 10 delivered" wait_accounted down 10 40
ok "queue drains" wait_queue_empty 30

# ---- 5: temporary directory full
small=$FILTER_DIR/small
mkdir -p "$small"
if mount -t tmpfs -o size=64k,mode=0755 osprey-test "$small"; then
    osp_on_exit "umount -l '$small'"
    chown nobody "$small"
    restart_filter -o filter_temp_directory="$small" -o filter_memory_threshold=4k ||
        osp_die "filter did not start"
    send_batch full 3 deliver 200000 >/dev/null 2>&1
    ok "temp dir full: answered 452 4.3.1" \
        maillog_wait 'osprey-scan/smtp\[[0-9]+\]: .*status=deferred .*452 4\.3\.1' 20
    tap_is "$(seq_counts full)" "0 distinct, 0 total" "temp dir full: nothing delivered"
    tap_is "$(ls -A "$small" | wc -l)" 0 "temp dir full: no temporary file left behind"
    restart_filter || osp_die "filter did not restart"
    postfix_flush
    ok "temp dir back: all 3 delivered" wait_accounted full 3 40
else
    for d in "temp dir full: 452" "temp dir full: nothing delivered" "temp dir full: no file left" \
        "temp dir back: delivered"; do
        tap_skip "$d" "cannot mount a tmpfs here"
    done
fi

# ---- 6: LMTP, one recipient refused (450) by the reinjection smtpd
postconf -c "$OSP_POSTFIX_DIR" -X osprey-scan_destination_concurrency_limit
filter_conf_apply lmtp transport-only
access=$OSP_POSTFIX_DIR/rcpt_access
echo "fail@example.com 450 4.2.0 osprey test refusal" >"$access"
postconf -c "$OSP_POSTFIX_DIR" -P \
    "127.0.0.1:$REINJECT_PORT/inet/smtpd_recipient_restrictions=check_recipient_access,texthash:$access,permit_mynetworks,reject"
postfix_reload
# Pooled reinjection connections still talk to old-generation smtpd processes.
restart_filter || osp_die "filter did not restart"
send_batch part 1 part >/dev/null 2>&1
ok "LMTP: the refused recipient is deferred alone" \
    maillog_wait 'osprey-lmtp/lmtp\[[0-9]+\]: .*to=<fail@example.com>.*status=deferred .*450 4\.2\.0' 20
ok "LMTP: the other two are delivered" \
    eval 'sink_wait_count 1 10 && osp_wait_until 10 eval "grep -l \"X-Test-Seq: part-0\" \$(sink_files) >/dev/null"'
: >"$access"
postfix_reload
restart_filter || osp_die "filter did not restart"
postfix_flush
rcpt_copies() {
    local files
    files=$(sink_find "X-Test-Seq: part-0") || { echo 0; return; }
    # shellcheck disable=SC2086
    grep -h "^X-Rcpt-Args: <$1>" $files | wc -l
}
_fail_arrived() { [ "$(rcpt_copies fail@example.com)" -ge 1 ]; }
osp_wait_until 30 _fail_arrived
tap_is "$(rcpt_copies ok1@example.com) $(rcpt_copies ok2@example.com) $(rcpt_copies fail@example.com)" \
    "1 1 1" "LMTP: after recovery each recipient has exactly one copy (ok1 ok2 fail)"

# ---- 7: the database-backed quarantine, database stopped while messages
# that must be quarantined arrive
if [ -n "$(_osp_pg_find_bindir)" ] && id postgres >/dev/null 2>&1; then
    pg_start || osp_die "PostgreSQL did not start"
    pg_schema_load || osp_die "schema did not load"
    filter_db_conf
    restart_filter || osp_die "filter did not start with the database backend"
    pg_stop
    send_batch dbq 10 quar >/dev/null 2>&1 || tap_diag "send_batch dbq failed"
    ok "database down: Postfix is told 4xx for the quarantined messages" \
        maillog_wait 'osprey-(scan/smtp|lmtp/lmtp)\[[0-9]+\]: .*status=deferred .*4\.3\.0 .*quarantine' 30
    ok "database down: all 10 stay in Postfix's queue" eval '[ "$(queue_count)" -ge 10 ]'
    ok "database down: osprey-filter logged the failed quarantine" \
        grep -q "quarantine failed: quarantine database" "$FILTER_LOG"
    pg_start || osp_die "PostgreSQL did not restart"
    _dbq_all() { [ "$(db_quarantined dbq)" = "10 rows, 10 distinct" ]; }
    _dbq_flush() { postfix_flush; sleep 2; _dbq_all; }
    ok "database back: all 10 quarantined" osp_wait_until 60 _dbq_flush
    ok "queue drains after the outage" wait_queue_empty 30
    sleep 1
    tap_is "$(db_quarantined dbq)" "10 rows, 10 distinct" \
        "each message is in the quarantine table exactly once"
    # Rows logged while the database was down went to the journal and are
    # replayed: the 4xx attempts (tempfail) as well as the final verdicts.
    _dbq_logged() {
        [ "$(pg_psql -c "SELECT count(DISTINCT queue_id) FILTER (WHERE verdict = 'quarantine')
                                || ' ' || (count(*) FILTER (WHERE verdict = 'tempfail') >= 10)
                           FROM message_log WHERE subject LIKE 'dbq %'")" = "10 true" ]
    }
    ok "message log: the outage's tempfail rows (journal) and the 10 quarantine rows" \
        osp_wait_until 30 _dbq_logged
else
    for d in "database down: 4xx" "database down: queued" "database down: logged" \
        "database back: quarantined" "queue drains" "exactly once" "message log"; do
        tap_skip "$d" "no PostgreSQL server installed"
    done
fi
