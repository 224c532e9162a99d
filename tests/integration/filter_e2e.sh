#!/bin/bash
# filter_e2e.sh -- osprey-filter end to end with a real Postfix:
# smtpd -> queue -> osprey-scan/osprey-lmtp -> osprey-filter -> reinjection
# smtpd -> queue -> smtp-sink, for the SMTP and the LMTP variants from
# postfix-conf/.  Every message arrives exactly once, with our headers;
# XFORWARD carries the original client through; quarantine and tagging work.
# With PostgreSQL: quarantined mail and message_log rows land in the
# database, per-recipient settings split one message (tagged for one
# recipient, quarantined for another), and the metrics endpoint answers.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"

osp_require root postfix swaks python3
osp_timeout "${OSP_TEST_TIMEOUT:-90}"
tap_plan 27

[ -x "$FILTER_BIN" ] || osp_die "no $FILTER_BIN (build first)"
sink_start || osp_die "smtp-sink did not start"
postfix_setup || osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"
filter_conf_apply smtp || osp_die "cannot apply the SMTP variant"
ok "Postfix starts with postfix-conf/*.filter-smtp" postfix_start || osp_die "Postfix did not start"
ok "osprey-filter starts" filter_start filter1 || osp_die "osprey-filter did not start"

check_headers() {
    local tag=$1 f bad=0 files
    files=$(sink_files)
    for f in $(grep -l "^X-Test-Seq: $tag-" $files); do
        grep -q '^X-Osprey-Scan-Id: [0-9A-F]\+' "$f" && grep -q '^X-Spam-Score: ' "$f" &&
            grep -q '^X-Spam-Status: No, score=' "$f" || bad=$((bad + 1))
        # dot-stuffing survived both hops
        grep -q '^\.leading dot' "$f" || bad=$((bad + 1))
    done
    [ "$bad" -eq 0 ]
}

# ---- SMTP variant: 50 messages, every other one quarantined
t0=$EPOCHREALTIME
ok "50 messages accepted by smtpd (SMTP variant)" send_batch smtp 50 mixed
ok "the 25 clean ones reach the sink" sink_wait_count 25 40
ok "Postfix queue drains" wait_queue_empty 30
t1=$EPOCHREALTIME
tap_diag "SMTP variant: 50 messages in $(echo "$t1 - $t0" | bc) s"
tap_is "$(seq_counts smtp)" "25 distinct, 25 total" "each clean message arrived exactly once"
tap_is "$(grep -l '^X-Test-Seq: smtp-' "$FILTER_DIR"/quarantine/*.eml 2>/dev/null | wc -l)" 25 \
    "the 25 others are in the quarantine spool, one file each"
ok "added headers (X-Osprey-Scan-Id, X-Spam-Score, X-Spam-Status) on every copy" check_headers smtp

# ---- XFORWARD and tagging
osp_swaks --xclient 'ADDR=203.0.113.7 NAME=client.example HELO=helo.example' \
    --from x@example.org --to deliver@example.com --header 'Subject: TAGME xfwd' \
    --header 'X-Test-Seq: xfwd-0' >"$OSP_TMP/swaks.xfwd" 2>&1
# Postfix's reinjection smtpd writes its Received: for the real connection
# and logs the forwarded client as orig_client (checked below); the original
# Received: from the first smtpd travels inside the message.
ok "XFORWARD: osprey-filter saw the original client, the copy keeps its Received:" \
    eval 'sink_wait_count 26 20 && grep -q "client=client.example\[203.0.113.7\] proto=SMTP" "$FILTER_LOG" &&
        grep -q "^Received: from client.test (client.example \[203.0.113.7\])" $(sink_find "X-Test-Seq: xfwd-0")'
ok "XFORWARD: maillog shows orig_client and orig_queue_id at the reinjection smtpd" \
    maillog_wait 'postfix/osprey-reinject/smtpd\[[0-9]+\]: [0-9A-F]+: client=.*orig_queue_id=[0-9A-F]+, orig_client=client.example\[203.0.113.7\]' 10
qid=$(maillog_grep 'postfix/smtpd\[[0-9]+\]: [0-9A-F]+: client=client.example\[203.0.113.7\]' |
    sed -E 's/.*: ([0-9A-F]+): client=.*/\1/' | head -n 1)
ok "osprey-filter logs the original queue id ($qid) from XFORWARD IDENT" \
    grep -q "F[0-9A-F]*: $qid: scan_id=.* to=<deliver@example.com> action=tag" "$FILTER_LOG"
ok "tag verdict: Subject prefixed and X-Spam-Status: Yes" \
    eval 'f=$(sink_find "X-Test-Seq: xfwd-0") && grep -q "^Subject: \[SPAM\] TAGME xfwd" $f && grep -q "^X-Spam-Status: Yes" $f'

# ---- LMTP variant
postconf -c "$OSP_POSTFIX_DIR" -X osprey-scan_destination_concurrency_limit
filter_conf_apply lmtp transport-only
n0=$(sink_count)
ok "50 messages accepted by smtpd (LMTP variant)" send_batch lmtp 50 deliver
ok "all 50 reach the sink through osprey-lmtp" sink_wait_count $((n0 + 50)) 40
tap_is "$(seq_counts lmtp)" "50 distinct, 50 total" "each LMTP message arrived exactly once"
ok "the LMTP transport was used" maillog_wait 'postfix/osprey-lmtp/lmtp\[[0-9]+\]: .*status=sent' 5

# ---- LMTP over a unix socket (filter_listen = unix:PATH)
sockdir=$FILTER_DIR/run
mkdir -p "$sockdir" && chmod 755 "$sockdir"
sock=$sockdir/osprey-filter.sock
filter_stop
filter_start filter-unix -o "filter_listen=inet:127.0.0.1:$FILTER_PORT unix:$sock" ||
    osp_die "osprey-filter did not start with a unix listener"
postconf -c "$OSP_POSTFIX_DIR" -e "content_filter = osprey-lmtp:unix:$sock"
postfix_reload
n0=$(sink_count)
send_batch unix 10 deliver >/dev/null 2>&1 || tap_diag "send_batch unix failed"
ok "unix socket: all 10 reach the sink through the socket" sink_wait_count $((n0 + 10)) 40
ok "unix socket: Postfix's lmtp client delivered to the socket" \
    maillog_wait "postfix/osprey-lmtp/lmtp\[[0-9]+\]: .*relay=[^ ]*osprey-filter.sock.*status=sent" 5
postconf -c "$OSP_POSTFIX_DIR" -e "content_filter = osprey-lmtp:inet:[127.0.0.1]:$FILTER_PORT"
postfix_reload
ok "Postfix queue drains (LMTP)" wait_queue_empty 30

# ---- PostgreSQL: database quarantine, per-recipient settings, message log
if [ -n "$(_osp_pg_find_bindir)" ] && id postgres >/dev/null 2>&1; then
    pg_start || osp_die "PostgreSQL did not start"
    pg_schema_load || osp_die "schema did not load"
    acct=$(pg_psql -c "INSERT INTO accounts (parent_id, kind, name)
                       VALUES (0, 'organisation', 'net-org') RETURNING id") ||
        osp_die "cannot create the account"
    pg_psql -c "INSERT INTO domains (account_id, name) VALUES ($acct, 'example.net');
                INSERT INTO settings (account_id, key, value) VALUES
                    ($acct, 'spam_quarantine_score', '3'),
                    ($acct, 'spam_subject_prefix', '\"[NET]\"')" ||
        osp_die "cannot create the settings"
    filter_stop
    filter_db_conf
    filter_start filter2 || osp_die "osprey-filter did not start with the database"
    send_batch dbe 6 mixed >/dev/null 2>&1 || tap_diag "send_batch dbe failed"
    _dbe_stored() { [ "$(db_quarantined dbe)" = "3 rows, 3 distinct" ]; }
    ok "database quarantine: the 3 quarantined messages are rows in PostgreSQL" \
        osp_wait_until 20 _dbe_stored
    osp_swaks --from x@example.org --to deliver@example.com,user@example.net \
        --header 'Subject: TAGME perrcpt' --header 'X-Test-Seq: perrcpt-0' \
        >"$OSP_TMP/swaks.perrcpt" 2>&1
    _perrcpt_quar() {
        [ "$(pg_psql -c "SELECT count(*) FROM quarantine
                          WHERE recipient = 'user@example.net' AND account_id = $acct")" = 1 ]
    }
    ok "per-recipient settings: quarantined for user@example.net (its account: score >= 3)" \
        osp_wait_until 20 _perrcpt_quar
    _perrcpt_tagged() {
        local f
        f=$(sink_find "X-Test-Seq: perrcpt-0") || return 1
        grep -q "^Subject: \[SPAM\] TAGME perrcpt" $f &&
            ! grep -q "^X-Rcpt-Args: <user@example.net>" $f
    }
    ok "per-recipient settings: the same message is delivered tagged to deliver@example.com" \
        osp_wait_until 20 _perrcpt_tagged
    _log_rows() {
        [ "$(pg_psql -c "SELECT count(*) FROM message_log WHERE subject LIKE 'dbe %'")" = 6 ] &&
        [ "$(pg_psql -c "SELECT string_agg(recipient || '=' || verdict, ' ' ORDER BY recipient)
                           FROM message_log WHERE subject = 'TAGME perrcpt'
                            AND queue_id IS NOT NULL AND client_address IS NOT NULL")" = \
            "deliver@example.com=tag user@example.net=quarantine" ]
    }
    ok "message log: one row per message and recipient in PostgreSQL" osp_wait_until 20 _log_rows
    metrics_get() {
        local out
        exec 3<>"/dev/tcp/127.0.0.1/$FILTER_METRICS_PORT" || return 1
        printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
        out=$(cat <&3)
        exec 3<&-
        printf '%s\n' "$out"
    }
    ok "metrics endpoint: Prometheus text with the quarantine counter" \
        eval 'metrics_get | grep -q "^osprey_filter_recipients_quarantined_total [1-9]"'
    # A settings change reaches the cached settings through NOTIFY, long
    # before the cache entry would expire.
    filter_stop
    filter_start filter3 -o filter_account_cache_ttl=1h ||
        osp_die "osprey-filter did not restart"
    osp_swaks --from x@example.org --to user@example.net \
        --header 'Subject: TAGME cached' --header 'X-Test-Seq: cached-0' \
        >"$OSP_TMP/swaks.cached" 2>&1
    _cached_quar() {
        [ "$(pg_psql -c "SELECT count(*) FROM quarantine WHERE subject = 'TAGME cached'")" = 1 ]
    }
    ok "account cache: the settings are cached (score 3 quarantines)" \
        osp_wait_until 20 _cached_quar
    pg_psql -c "UPDATE settings SET value = '100'
                 WHERE account_id = $acct AND key = 'spam_quarantine_score'" >/dev/null
    _invalidated() { metrics_get | grep -q "^osprey_filter_account_cache_invalidations_total [1-9]"; }
    osp_wait_until 10 _invalidated || tap_diag "no invalidation counted"
    osp_swaks --from x@example.org --to user@example.net \
        --header 'Subject: TAGME changed' --header 'X-Test-Seq: changed-0' \
        >"$OSP_TMP/swaks.changed" 2>&1
    _changed_tagged() {
        local f
        f=$(sink_find "X-Test-Seq: changed-0") || return 1
        grep -q "^Subject: \[NET\] TAGME changed" $f
    }
    ok "account cache: a settings change (NOTIFY) applies at once despite a 1h TTL" \
        osp_wait_until 20 _changed_tagged
    ok "Postfix queue drains (database)" wait_queue_empty 30
else
    for d in "database quarantine" "per-recipient quarantine" "per-recipient tag" \
        "message log" "metrics" "account cache" "account cache change" "queue drains"; do
        tap_skip "$d" "no PostgreSQL server installed"
    done
fi
