# filter_lib.sh -- helpers for osprey-filter integration tests.
#
# Source after harness.sh.  Uses the shipped postfix-conf/ files (ports
# rewritten) so the tests exercise exactly what an administrator installs.
#
#   filter_ports                 pick FILTER_PORT and REINJECT_PORT
#   filter_conf_apply smtp|lmtp [transport-only]
#                                add the master.cf entries (without the
#                                reinjection smtpd with transport-only) and
#                                the main.cf lines; reload if running
#   filter_db_conf               switch the configuration to PostgreSQL (after
#                                pg_start + pg_schema_load): database
#                                quarantine, account settings, message log
#   db_quarantined TAG           "N rows, M distinct" of TAG in the quarantine table
#   filter_start NAME [-o p=v]   start osprey-filter (foreground, logs in
#                                $OSP_TMP/NAME.log) and wait until it listens
#   filter_stop / filter_kill9   stop it by PID
#   send_batch TAG N MODE [SIZE] send N messages through Postfix's smtpd with
#                                "X-Test-Seq: TAG-i"; MODE deliver (all to
#                                deliver@example.com), mixed (odd ones to
#                                quar@example.com, quarantined), quar (all
#                                to quar@example.com), part (one message to
#                                ok1, fail, ok2)
#   seq_counts TAG               "N distinct, M total" of TAG at the sink
#   missing_count TAG N          how many of TAG-0..N-1 are neither at the
#                                sink nor in the quarantine

FILTER_BIN=$OSP_TOP_BUILDDIR/osprey-filter
FILTER_DIR=
FILTER_PID=
FILTER_PORT=
REINJECT_PORT=
FILTER_METRICS_PORT=

filter_ports() {
    FILTER_PORT=$(osp_free_port) || return 1
    REINJECT_PORT=$(osp_free_port) || return 1
    FILTER_METRICS_PORT=$(osp_free_port) || return 1
    FILTER_DIR=$OSP_TMP/filter
    mkdir -p "$FILTER_DIR/tmp" "$FILTER_DIR/quarantine" "$FILTER_DIR/log" || return 1
    chown nobody "$FILTER_DIR/tmp" "$FILTER_DIR/quarantine" "$FILTER_DIR/log"
    cat >"$FILTER_DIR/osprey.conf" <<EOC
filter_listen = inet:127.0.0.1:$FILTER_PORT
filter_reinject = inet:127.0.0.1:$REINJECT_PORT
filter_temp_directory = $FILTER_DIR/tmp
filter_quarantine_directory = $FILTER_DIR/quarantine
filter_metrics_listen = 127.0.0.1:$FILTER_METRICS_PORT
# no PostgreSQL unless filter_db_conf is called
filter_quarantine_backend = spool
filter_account_settings = no
filter_message_log = no
filter_static_rules = rcpt:quar@example.com:quarantine subject:TAGME:tag:6
    rcpt:drop@example.com:discard
filter_reinject_idle_timeout = 2s
breaker_cooldown = 1s
osprey_user = nobody
# DKIM keys and DMARC records from local data: no DNS traffic
dns_zone_file = $OSP_TOP_SRCDIR/tests/data/dkim/zone
EOC
}

filter_db_conf() {
    sed -i -e '/^filter_quarantine_backend/d' -e '/^filter_account_settings/d' \
        -e '/^filter_message_log/d' -e '/^database_/d' "$FILTER_DIR/osprey.conf"
    cat >>"$FILTER_DIR/osprey.conf" <<EOC
filter_quarantine_backend = database
filter_account_settings = yes
filter_account_cache_ttl = 1s
filter_message_log = yes
filter_message_log_journal = $FILTER_DIR/log/filter-log.journal
database_connection = $OSP_PG_CONNINFO
database_connect_timeout = 2s
database_query_timeout = 5s
filter_quarantine_timeout = 5s
EOC
}

db_quarantined() {
    pg_psql -c "SELECT count(*) || ' rows, ' || count(DISTINCT (queue_id, recipient)) || ' distinct'
                  FROM quarantine WHERE subject LIKE '$1 %'" 2>/dev/null || echo "query failed"
}

# _filter_rewrite FILE -- the shipped file with our ports
_filter_rewrite() {
    sed -e "s/127\.0\.0\.1:10026/127.0.0.1:$REINJECT_PORT/" \
        -e "s/\]:10025/]:$FILTER_PORT/" "$1"
}

filter_conf_apply() {
    local variant=$1 only=${2:-} src=$OSP_TOP_SRCDIR/postfix-conf line
    if [ -n "$only" ]; then
        _filter_rewrite "$src/master.cf.filter-$variant" |
            sed '/^# osprey-filter -> Postfix/,$d' >>"$OSP_POSTFIX_DIR/master.cf"
    else
        _filter_rewrite "$src/master.cf.filter-$variant" >>"$OSP_POSTFIX_DIR/master.cf"
    fi
    while IFS= read -r line; do
        case $line in '#'* | '') continue ;; esac
        postconf -c "$OSP_POSTFIX_DIR" -e "$line" || return 1
    done < <(_filter_rewrite "$src/main.cf.filter-$variant")
    postfix_reload
}

_filter_listening() {
    osp_alive "$FILTER_PID" && _osp_port_listening "$FILTER_PORT"
}

filter_start() {
    local name=$1
    shift
    osp_spawn "$name" "$FILTER_BIN" -f -c "$FILTER_DIR/osprey.conf" "$@"
    FILTER_PID=$OSP_LAST_PID
    FILTER_LOG=$OSP_TMP/$name.log
    if ! osp_wait_until 10 _filter_listening; then
        tap_diag "osprey-filter ($name) did not start:"
        tail -n 20 "$FILTER_LOG" | tap_diag
        return 1
    fi
}

filter_stop() {
    [ -n "$FILTER_PID" ] || return 0
    osp_kill_pid "$FILTER_PID" 10
    FILTER_PID=
}

filter_kill9() {
    kill -KILL "$FILTER_PID" 2>/dev/null
    osp_wait_until 5 osp_dead "$FILTER_PID"
    FILTER_PID=
}

send_batch() {
    python3 - "$OSP_SMTP_PORT" "$1" "$2" "$3" "${4:-0}" <<'EOP'
import smtplib, sys
port, tag, n, mode, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30)
pad = "".join("pad %s line %06d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n" % (tag, k)
              for k in range(size // 80))
for i in range(n):
    if mode == "part":
        rcpts = ["ok1@example.com", "fail@example.com", "ok2@example.com"]
    elif mode == "mixed" and i % 2 == 1 or mode == "quar":
        rcpts = ["quar@example.com"]
    else:
        rcpts = ["deliver@example.com"]
    msg = ("From: sender@example.org\r\nTo: %s\r\nSubject: %s %d\r\n"
           "Message-ID: <%s-%d@client.test>\r\nX-Test-Seq: %s-%d\r\n\r\n"
           "body %d\r\n.leading dot\r\n%s") % (", ".join(rcpts), tag, i, tag, i, tag, i, i, pad)
    s.sendmail("sender@example.org", rcpts, msg)
s.quit()
EOP
}

_filter_seq_lines() {
    local files
    files=$(sink_files)
    [ -n "$files" ] || return 0
    # shellcheck disable=SC2086
    grep -h "^X-Test-Seq: $1-[0-9]*\$" $files 2>/dev/null
}

seq_counts() {
    local lines
    lines=$(_filter_seq_lines "$1")
    if [ -z "$lines" ]; then
        echo "0 distinct, 0 total"
        return
    fi
    echo "$(sort -u <<<"$lines" | wc -l) distinct, $(wc -l <<<"$lines") total"
}

missing_count() {
    local tag=$1 n=$2 have
    have=$( { _filter_seq_lines "$tag"
        grep -h "^X-Test-Seq: $tag-[0-9]*"$'\r'"\$" "$FILTER_DIR"/quarantine/*.eml 2>/dev/null |
            tr -d '\r'; } | sort -u | wc -l)
    echo $((n - have))
}

_filter_all_accounted() {
    [ "$(missing_count "$1" "$2")" -eq 0 ]
}

wait_accounted() {
    osp_wait_until "${3:-30}" _filter_all_accounted "$1" "$2" && return 0
    tap_diag "wait_accounted: $(missing_count "$1" "$2") of $2 $1 messages missing"
    _filter_explain_missing "$1" "$2"
    return 1
}

# What became of each missing message: Postfix's log lines for it, the queue,
# and the end of osprey-filter's log.
_filter_explain_missing() {
    local tag=$1 n=$2 i qids
    for ((i = 0; i < n; i++)); do
        { _filter_seq_lines "$tag"
            grep -h "^X-Test-Seq: $tag-$i"$'\r'"\$" "$FILTER_DIR"/quarantine/*.eml 2>/dev/null |
                tr -d '\r'; } | grep -q "^X-Test-Seq: $tag-$i\$" && continue
        tap_diag "missing $tag-$i:"
        qids=$(maillog_grep "message-id=<$tag-$i@client.test>" |
            sed -n 's/.*: \([0-9A-F]*\): message-id=.*/\1/p' | sort -u)
        for q in $qids; do
            maillog_grep ": $q: " | tail -n 8 | tap_diag
        done
    done
    postqueue -c "$OSP_POSTFIX_DIR" -p 2>&1 | head -n 30 | tap_diag
    [ -n "${FILTER_LOG:-}" ] && tail -n 15 "$FILTER_LOG" | tap_diag
}
