#!/bin/bash
# filter_milter.sh -- osprey-filter as a before-queue milter with a real
# Postfix configured from postfix-conf/main.cf.milter and a real PostgreSQL:
# client -> smtpd + osprey-filter (milter) -> queue -> smtp-sink.
# Clean mail arrives once with our headers at the top; quarantined
# recipients are committed to the database and removed (the message is
# discarded when none is left); tag, discard and reject verdicts; forged
# Authentication-Results removed; the message log has Postfix's queue id;
# every failure (scan, database away, filter killed mid-message, filter
# down) reaches the client as 4xx, and the mail is accepted once it retries.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"

osp_require root postfix swaks python3
[ -n "$(_osp_pg_find_bindir)" ] && id postgres >/dev/null 2>&1 ||
    tap_skip_all "no PostgreSQL server installed"
osp_timeout "${OSP_TEST_TIMEOUT:-150}"
tap_plan 31

[ -x "$FILTER_BIN" ] || osp_die "no $FILTER_BIN (build first)"
sink_start || osp_die "smtp-sink did not start"
postfix_setup || osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"
MILTER_PORT=$(osp_free_port) || osp_die "no port"
pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"
filter_db_conf
sed -i 's|^    rcpt:drop@example.com:discard$|& rcpt:rej@example.com:reject subject:FAILSCAN:tempfail|' \
    "$FILTER_DIR/osprey.conf"
cat >>"$FILTER_DIR/osprey.conf" <<EOC
filter_milter_listen = inet:127.0.0.1:$MILTER_PORT
filter_authserv_id = mx.osprey.test
EOC

# The shipped main.cf lines, with our port.
while IFS= read -r line; do
    case $line in '#'* | '') continue ;; esac
    postconf -c "$OSP_POSTFIX_DIR" -e "${line//:10029/:$MILTER_PORT}" ||
        osp_die "postconf -e $line failed"
done <"$top_srcdir/postfix-conf/main.cf.milter"
sed -e "s/127\.0\.0\.1:10026/127.0.0.1:$REINJECT_PORT/" "$top_srcdir/postfix-conf/master.cf.milter" \
    >>"$OSP_POSTFIX_DIR/master.cf"
ok "postfix check accepts postfix-conf/main.cf.milter and master.cf.milter" \
    postfix -c "$OSP_POSTFIX_DIR" check
ok "Postfix starts with smtpd_milters = inet:127.0.0.1:$MILTER_PORT" postfix_start ||
    osp_die "Postfix did not start"
ok "osprey-filter starts with a milter listener" filter_start milter1 ||
    osp_die "osprey-filter did not start"

# ---- a batch: every other message quarantined
ok "20 messages accepted by smtpd (the client sees 250 for all)" send_batch mil 20 mixed
ok "the 10 clean ones reach the sink" sink_wait_count 10 30
tap_is "$(seq_counts mil)" "10 distinct, 10 total" \
    "each clean message arrived exactly once, no quarantined one did"
_mil_stored() { [ "$(db_quarantined mil)" = "10 rows, 10 distinct" ]; }
ok "the 10 quarantined ones are rows in PostgreSQL, one each" osp_wait_until 10 _mil_stored
ok "Postfix discarded the quarantined messages on the milter's word" \
    maillog_wait 'milter-discard: END-OF-MESSAGE from .*milter triggers DISCARD action' 5
ok "Postfix's queue drains" wait_queue_empty 20
check_top() {
    local f bad=0
    for f in $(grep -l '^X-Test-Seq: mil-' $(sink_files)); do
        # our fields come first, in order, above Postfix's Received: (the
        # sink's own envelope lines and Received: are on top of the dump)
        awk '/^$/ {exit}
             /^X-(Client|Helo|Mail|Rcpt)-/ {next}
             sink < 2 && /^Received:/ {sink++; next}
             sink == 1 && /^[ \t]/ {next}
             {sink = 2; print}' "$f" |
            head -n 8 | tr '\n' '~' |
            grep -Eq '^X-Osprey-Scan-Id: [0-9A-F]+~X-Spam-Score: -?[0-9.]+~X-Spam-Status: No, score=[^~]*~Authentication-Results: mx.osprey.test;[^~]*~([[:space:]][^~]*~)*Received: from client.test' ||
            { [ "$bad" -eq 0 ] && head -n 20 "$f" | tap_diag; bad=$((bad + 1)); }
        grep -q '^\.leading dot' "$f" || bad=$((bad + 1))
    done
    [ "$bad" -eq 0 ]
}
ok "clean copies carry X-Osprey-Scan-Id, X-Spam-Score, X-Spam-Status, Authentication-Results at the top" \
    check_top
_mil_log() {
    [ "$(pg_psql -c "SELECT string_agg(verdict || '=' || count, ' ' ORDER BY verdict) FROM
                       (SELECT verdict, count(*) FROM message_log
                         WHERE subject LIKE 'mil %' AND queue_id IS NOT NULL
                           AND client_address IS NOT NULL GROUP BY verdict) v")" = \
        "deliver=10 quarantine=10" ]
}
ok "message log: 20 rows with Postfix's queue id and the client address" \
    osp_wait_until 20 _mil_log
qid=$(maillog_grep 'postfix/smtpd\[[0-9]+\]: [0-9A-F]+: client=' | tail -n 1 |
    sed -E 's/.*: ([0-9A-F]+): client=.*/\1/')
ok "the filter's log names Postfix's queue id ($qid)" \
    grep -q "M[0-9A-F]*: $qid: scan_id=.* action=" "$FILTER_LOG"

# ---- a 2 MB message: past filter_memory_threshold (1M), kept in a temporary file
send_batch big 1 deliver 2000000 >/dev/null 2>&1 || tap_diag "send_batch big failed"
_big() {
    local f
    f=$(sink_find "X-Test-Seq: big-0") || return 1
    grep -q '^pad big line 024999 ' $f && grep -q "proto=milter stored=file" "$FILTER_LOG"
}
ok "a 2 MB message goes through the milter whole (body spilled to a temporary file)" \
    osp_wait_until 30 _big

# ---- one message, two recipients: quarantined for one, delivered to the other
n0=$(sink_count)
osp_swaks --from x@example.org --to deliver@example.com,quar@example.com \
    --header 'Subject: split one' --header 'X-Test-Seq: split-0' >"$OSP_TMP/swaks.split" 2>&1
_split() {
    local f
    f=$(sink_find "X-Test-Seq: split-0") || return 1
    grep -q '^X-Rcpt-Args: <deliver@example.com>' $f && ! grep -q 'quar@example.com>' $f
}
ok "two recipients: the copy goes to deliver@ only (quar@ removed)" osp_wait_until 20 _split
ok "two recipients: quar@ has its row in the quarantine" \
    test "$(pg_psql -c "SELECT count(*) FROM quarantine WHERE subject = 'split one'
                          AND recipient = 'quar@example.com'")" = 1

# ---- release from the quarantine: osprey-worker -> the smtpd of
# master.cf.milter, which runs no milter, so it is not quarantined again
WORKER_BIN=$OSP_TOP_BUILDDIR/osprey-worker
CTL_BIN=$OSP_TOP_BUILDDIR/ospreyctl
cat >"$OSP_TMP/worker.conf" <<EOC
database_connection = $OSP_PG_CONNINFO
osprey_user = nobody
worker_poll_interval = 300ms
worker_retry_backoff = 1s
worker_release_address = 127.0.0.1:$REINJECT_PORT
EOC
qrow=$(pg_psql -c "SELECT id FROM quarantine WHERE subject = 'split one'")
scans0=$(grep -c 'action=' "$FILTER_LOG")
ok "ospreyctl quarantine release queues the release" \
    "$CTL_BIN" -c "$OSP_TMP/worker.conf" quarantine release "$qrow"
osp_spawn worker "$WORKER_BIN" -f -c "$OSP_TMP/worker.conf"
WORKER_PID=$OSP_LAST_PID
_released() {
    [ "$(pg_psql -c "SELECT release_state FROM quarantine WHERE id = $qrow")" = released ] &&
        [ "$(grep -l '^X-Test-Seq: split-0' $(sink_files) | xargs grep -l '^X-Rcpt-Args: <quar@example.com>' | wc -l)" = 1 ]
}
ok "released: quar@ gets its copy through the release smtpd" osp_wait_until 30 _released
ok "released mail is not scanned again (no milter on the release smtpd)" \
    eval '[ "$(grep -c "action=" "$FILTER_LOG")" = "$scans0" ] &&
        maillog_wait "postfix/osprey-release/smtpd\[[0-9]+\]: [0-9A-F]+: client=localhost" 5'
osp_kill_pid "$WORKER_PID" 10

# ---- tag, discard, reject
osp_swaks --from x@example.org --to deliver@example.com --header 'Subject: TAGME tagged' \
    --header 'X-Test-Seq: tag-0' >"$OSP_TMP/swaks.tag" 2>&1
_tagged() {
    local f
    f=$(sink_find "X-Test-Seq: tag-0") || return 1
    grep -q '^Subject: \[SPAM\] TAGME tagged' $f && grep -q '^X-Spam-Status: Yes' $f
}
ok "tag verdict: Subject prefixed and X-Spam-Status: Yes" osp_wait_until 20 _tagged
osp_swaks --from x@example.org --to drop@example.com --header 'Subject: dropped' \
    --header 'X-Test-Seq: drop-0' >"$OSP_TMP/swaks.drop" 2>&1
ok "discard verdict: the client sees 250, the message goes nowhere" \
    eval 'grep -q "^<- *250 .*queued as" "$OSP_TMP/swaks.drop" && sleep 1 &&
        [ "$(seq_counts drop)" = "0 distinct, 0 total" ] &&
        [ "$(pg_psql -c "SELECT count(*) FROM quarantine WHERE subject = '"'dropped'"'")" = 0 ]'
osp_swaks --from x@example.org --to rej@example.com --header 'Subject: rejected' \
    --header 'X-Test-Seq: rej-0' >"$OSP_TMP/swaks.rej" 2>&1
ok "reject verdict: the client gets 550 5.7.1" \
    grep -q '^<\*\* *550 5.7.1 Message rejected' "$OSP_TMP/swaks.rej"

# ---- forged Authentication-Results with our authserv-id
osp_swaks --from x@example.org --to deliver@example.com --header 'Subject: forged ar' \
    --header 'Authentication-Results: mx.osprey.test; dkim=pass header.d=forged.example' \
    --header 'X-Test-Seq: forged-0' >"$OSP_TMP/swaks.forged" 2>&1
_forged() {
    local f
    f=$(sink_find "X-Test-Seq: forged-0") || return 1
    [ "$(grep -c '^Authentication-Results: mx.osprey.test' $f)" = 1 ] && ! grep -q forged.example $f
}
ok "a forged Authentication-Results claiming our authserv-id is removed, ours stays" \
    osp_wait_until 20 _forged
osp_swaks --from x@example.org --to quar@example.com --header 'Subject: forged q' \
    --header 'Authentication-Results: mx.osprey.test; dkim=pass header.d=forged.example' \
    --header 'X-Test-Seq: forgedq-0' >"$OSP_TMP/swaks.forgedq" 2>&1
_forgedq() {
    local body
    body=$(pg_psql -c "SELECT convert_from(b.body, 'UTF8') FROM quarantine q
                         JOIN quarantine_bodies b ON b.sha256 = q.body_sha256
                        WHERE q.subject = 'forged q'") || return 1
    [ "$(grep -c '^Authentication-Results: mx.osprey.test' <<<"$body")" = 1 ] &&
        ! grep -q forged.example <<<"$body" && grep -q '^X-Test-Seq: forgedq-0' <<<"$body"
}
ok "... and from the quarantined copy in PostgreSQL (a release carries only ours)" \
    osp_wait_until 20 _forgedq

# ---- failures reach the client as 4xx
osp_swaks --from x@example.org --to deliver@example.com --header 'Subject: FAILSCAN x' \
    --header 'X-Test-Seq: failscan-0' >"$OSP_TMP/swaks.failscan" 2>&1
ok "scan failure: the client gets 451 4.7.1 and nothing is delivered" \
    eval 'grep -q "^<\*\* *451 4.7.1" "$OSP_TMP/swaks.failscan" &&
        [ "$(seq_counts failscan)" = "0 distinct, 0 total" ]'

pg_stop
osp_swaks --from x@example.org --to quar@example.com --header 'Subject: dbdown q' \
    --header 'X-Test-Seq: dbdown-0' >"$OSP_TMP/swaks.dbdown" 2>&1
ok "database stopped: a message to be quarantined gets 451 (the client keeps it)" \
    grep -q '^<\*\* *451 4.7.1' "$OSP_TMP/swaks.dbdown"
pg_start || osp_die "PostgreSQL did not restart"
_dbdown_retry() {
    osp_swaks --from x@example.org --to quar@example.com --header 'Subject: dbdown q' \
        --header 'X-Test-Seq: dbdown-0' >"$OSP_TMP/swaks.dbdown2" 2>&1 &&
        [ "$(pg_psql -c "SELECT count(*) FROM quarantine WHERE subject = 'dbdown q'")" = 1 ]
}
ok "database back: the client's retry is quarantined" osp_wait_until 30 _dbdown_retry

# Killed while scanning: Postfix applies milter_default_action = tempfail.
filter_stop
filter_start milter2 -o filter_debug_pause_stage=data -o filter_debug_pause=3s ||
    osp_die "osprey-filter did not restart"
osp_swaks --from x@example.org --to deliver@example.com --header 'Subject: killed' \
    --header 'X-Test-Seq: killed-0' >"$OSP_TMP/swaks.killed" 2>&1 &
swaks_pid=$!
osp_wait_until 10 grep -q "debug pause at stage data" "$OSP_TMP/milter2.log"
filter_kill9
wait "$swaks_pid"
ok "filter killed while scanning: the client gets 451 4.7.1" \
    grep -q '^<\*\* *451 4.7.1' "$OSP_TMP/swaks.killed"
osp_swaks --from x@example.org --to deliver@example.com --header 'Subject: down' \
    --header 'X-Test-Seq: down-0' >"$OSP_TMP/swaks.down" 2>&1
ok "filter down: the client gets 451 4.7.1 (milter_default_action = tempfail)" \
    grep -q '^<\*\* *451 4.7.1' "$OSP_TMP/swaks.down"
ok "osprey-filter restarts" filter_start milter3 || osp_die "osprey-filter did not restart"
osp_swaks --from x@example.org --to deliver@example.com --header 'Subject: killed' \
    --header 'X-Test-Seq: killed-0' >"$OSP_TMP/swaks.killed2" 2>&1
ok "the client's retry after the restart is delivered, once" \
    eval 'sink_wait_count $((n0 + 4)) 20 && [ "$(seq_counts killed)" = "1 distinct, 1 total" ] &&
        [ "$(seq_counts down)" = "0 distinct, 0 total" ]'
ok "no milter protocol error was logged" \
    eval '! grep -h "protocol error" "$OSP_TMP"/milter[123].log'

tap_done
