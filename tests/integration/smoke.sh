#!/bin/bash
# smoke.sh -- proves the integration harness before the daemons exist: a
# private PostgreSQL answers queries, a private Postfix relays mail to
# smtp-sink, XCLIENT is authorized, the content-filter plumbing routes mail,
# and a harness user killed mid-run leaves no process or directory behind.
#
# OSP_SMOKE_FAIL=STEP forces an abort at STEP (pg, postfix, send) to check
# that the remaining tests are reported "not ok" and everything is cleaned up.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql postfix swaks
osp_timeout "${OSP_TEST_TIMEOUT:-120}"
tap_plan 22

forced_fail() {
    if [ "${OSP_SMOKE_FAIL:-}" = "$1" ]; then
        osp_die "forced failure at step '$1' (OSP_SMOKE_FAIL)"
    fi
}

# ---- 1. PostgreSQL
ok "private PostgreSQL starts" pg_start || osp_die "PostgreSQL did not start"
forced_fail pg
tap_is "$(pg_psql -c 'SELECT 1+1' 2>&1)" 2 "SELECT 1+1 answers 2"
got=$(pg_psql -c "CREATE TABLE smoke (id int PRIMARY KEY, word text)" \
    -c "INSERT INTO smoke VALUES (1, 'osprey'), (2, 'talon')" \
    -c "SELECT word FROM smoke ORDER BY id" 2>&1)
tap_is "${got//$'\n'/ }" "osprey talon" "create table, insert, read back"
tap_is "$(psql -X -A -t -d "$OSP_PG_CONNINFO" -c 'SELECT current_user, current_database()' 2>&1)" \
    "osprey_admin|osprey" "OSP_PG_CONNINFO connects as osprey_admin to osprey"
pg_restart
tap_is "$(pg_psql -c 'SELECT count(*) FROM smoke' 2>&1)" 2 \
    "pg_restart keeps the data"

# ---- 2. smtp-sink and Postfix
ok "smtp-sink starts" sink_start || osp_die "smtp-sink did not start"
ok "private Postfix starts" postfix_start || osp_die "Postfix did not start"
tap_diag "smtpd 127.0.0.1:$OSP_SMTP_PORT, smtp-sink 127.0.0.1:$OSP_SINK_PORT," \
    "config $OSP_POSTFIX_DIR"
forced_fail postfix
ok "postfix -c \$OSP_POSTFIX_DIR check" postfix -c "$OSP_POSTFIX_DIR" check

# ---- 3. mail goes through
tag="osprey-smoke-$$-$RANDOM"
sent=0
for i in 1 2 3 4 5; do
    if osp_swaks --from "sender$i@example.org" --to "rcpt$i@example.com" \
        --header "Subject: $tag message $i" --header "X-Osprey-Smoke: $tag-$i" \
        --body "smoke test body $i" >"$OSP_TMP/swaks.$i.log" 2>&1; then
        sent=$((sent + 1))
    else
        tap_diag "swaks $i failed:"
        tail -n 8 "$OSP_TMP/swaks.$i.log" | tap_diag
    fi
done
tap_is "$sent" 5 "5 messages accepted by smtpd"
forced_fail send
ok "5 messages reach smtp-sink" sink_wait_count 5 20
tap_is "$(sink_count)" 5 "exactly 5 messages dumped"
f=$(sink_find "Subject: $tag message 3")
if [ -n "$f" ] && grep -q "^X-Osprey-Smoke: $tag-3\$" "$f" &&
    grep -q "^X-Rcpt-Args: <rcpt3@example.com>" "$f"; then
    tap_ok "dumped message has our subject, header and recipient"
else
    tap_not_ok "dumped message has our subject, header and recipient" \
        "files: $(sink_files | tr '\n' ' ')"
fi
ok "Postfix queue drains" wait_queue_empty 20
maillog_wait 'status=sent' 10 >/dev/null
osp_wait_until 10 eval '[ "$(maillog_grep "status=sent" | wc -l)" -ge 5 ]'
tap_is "$(maillog_grep 'to=<rcpt[1-5]@example.com>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:'"$OSP_SINK_PORT"', .*status=sent' | wc -l)" \
    5 "maillog shows status=sent via the sink for all 5"

# smtp-source, the benchmark client, works against the instance too.
ok "smtp-source sends 10 messages" smtp-source -s 2 -m 10 -l 1024 \
    -f source@example.org -t sink@example.net "127.0.0.1:$OSP_SMTP_PORT"
ok "15 messages reach smtp-sink" sink_wait_count 15 20

# ---- 4. XCLIENT is authorized
ok "swaks --xclient (client 203.0.113.7) is accepted" \
    osp_swaks --xclient 'ADDR=203.0.113.7 NAME=client.example' \
    --from xclient@example.org --to xclient@example.com \
    --header "Subject: $tag xclient"
ok "the message is logged as from client.example[203.0.113.7]" \
    maillog_wait 'client=client\.example\[203\.0\.113\.7\]' 10

# ---- reload and content-filter plumbing
postfix_conf 'smtpd_banner = $myhostname ESMTP osprey-smoke-banner'
ok "postfix_conf reloads (new banner)" eval \
    'osp_swaks --quit-after CONNECT | grep -q osprey-smoke-banner'
# smtp-sink stands in for the filter: mail must leave through "scan".
postfix_content_filter "$OSP_SINK_PORT"
osp_swaks --from f@example.org --to filtered@example.com \
    --header "Subject: $tag filtered" >"$OSP_TMP/swaks.f.log" 2>&1
ok "content_filter sends mail through the scan transport" \
    maillog_wait 'postfix/scan/smtp\[[0-9]+\]: .*to=<filtered@example.com>.*status=sent' 10
ok "the reinjection listener relays without the filter" \
    eval 'swaks --server "127.0.0.1:$OSP_REINJECT_PORT" --timeout 15 \
        --from r@example.org --to reinjected@example.com </dev/null &&
        maillog_wait "postfix/reinject/smtpd\[[0-9]+\]: [0-9A-F]+: client=" 10 &&
        maillog_wait "postfix/smtp\[[0-9]+\]: .*to=<reinjected@example.com>.*status=sent" 10'

# ---- 5. cleanup: a harness user killed by SIGTERM mid-run leaves nothing
child=$OSP_TMP/child.sh
state=$OSP_TMP/child.state
cat >"$child" <<EOF
. "$OSP_TOP_SRCDIR/tests/integration/harness.sh"
tap_plan 3
pg_start && sink_start && postfix_start || osp_die "child setup failed"
tap_ok "child started"
{ echo "\$OSP_TMP"; osp_managed_pids; } >"$state.tmp"
mv "$state.tmp" "$state"
sleep 60 &
wait \$!
tap_ok "never reached"
EOF
bash "$child" >"$OSP_TMP/child.out" 2>"$OSP_TMP/child.err" &
cpid=$!
child_ok=
if osp_wait_until 60 test -s "$state"; then
    child_ok=1
    kill -TERM "$cpid"
fi
t0=${EPOCHREALTIME//[!0-9]/}
osp_wait_until 40 osp_dead "$cpid"
wait "$cpid" 2>/dev/null
crc=$?
t1=${EPOCHREALTIME//[!0-9]/}
tap_diag "child harness exited $crc, $(((10#$t1 - 10#$t0) / 1000)) ms after SIGTERM"
if [ -n "$child_ok" ]; then
    ctmp=$(head -n 1 "$state")
    cpids=$(tail -n +2 "$state" | tr '\n' ' ')
    left=
    for p in $cpids; do
        osp_alive "$p" && left="$left $p"
    done
    # Any process still running from, or with files in, the child's dir.
    for p in /proc/[0-9]*; do
        c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")
        w=$(readlink "$p/cwd" 2>/dev/null)
        case "$c|$w" in
        *"$ctmp"*) left="$left ${p#/proc/}($c)" ;;
        esac
    done
    if [ -z "$left" ] && [ ! -e "$ctmp" ] && [ "$crc" -eq 143 ] &&
        grep -q '^not ok 2 - ' "$OSP_TMP/child.out" &&
        grep -q '^not ok 3 - ' "$OSP_TMP/child.out"; then
        tap_ok "SIGTERM mid-run: not ok for the rest, PIDs ($cpids) gone, $ctmp removed"
    else
        tap_not_ok "SIGTERM mid-run: not ok for the rest, PIDs ($cpids) gone, $ctmp removed" \
            "exit status $crc; still there:${left:- none}; dir exists: $([ -e "$ctmp" ] && echo yes || echo no)" \
            "child TAP:" "$(cat "$OSP_TMP/child.out")" "child stderr:" "$(tail -n 20 "$OSP_TMP/child.err")"
    fi
else
    tap_not_ok "SIGTERM mid-run: child harness did not come up" \
        "$(cat "$OSP_TMP/child.out")" "$(tail -n 20 "$OSP_TMP/child.err")"
fi
