#!/bin/bash
# policyd_db.sh -- osprey-policyd with its lists in a real PostgreSQL,
# behind a real Postfix (check_policy_service at RCPT; swaks --xclient
# plays remote clients).  Asserts that a block entry inserted in the
# database rejects the next mail without a restart (NOTIFY), that a
# deleted one stops rejecting, that an organisation's entries apply to its
# own domain and not to others, that the lists keep being served while the
# database is stopped and are reloaded when it is back; SIGHUP re-reads
# the list files (an unreadable one keeps the old lists); greylisting:
# the first attempt is deferred (450 4.7.1), an early retry too, a retry
# after the (short) delay is accepted; and two daemons sharing rate
# counts through the database: one only counts (END-OF-MESSAGE), the other
# only checks (RCPT) and still defers a SASL user over the limit, and a
# user's messages split over both daemons are refused by each once their
# sum is over the limit (each alone is under it).

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/policyd_lib.sh"

osp_require root postfix swaks curl
osp_timeout "${OSP_TEST_TIMEOUT:-240}"
if [ -z "$(_osp_pg_find_bindir)" ] || ! id postgres >/dev/null 2>&1; then
    tap_skip_all "no PostgreSQL server installed"
fi
tap_plan 30

policyd=$POLICYD_BIN
[ -x "$policyd" ] || osp_die "$policyd is not built"

# ---- database: an organisation owning example.com; one root entry already there
pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"
org=$(pg_psql -c "INSERT INTO accounts (parent_id, kind, name)
                  VALUES (0, 'organisation', 'org') RETURNING id") || osp_die "no account"
pg_psql -c "INSERT INTO domains (account_id, name) VALUES ($org, 'example.com')" ||
    osp_die "no domain"
pg_psql -c "INSERT INTO list_entries (account_id, list, kind, value)
            VALUES (0, 'block', 'sender', 'pre@blocked.example')" || osp_die "no entry"

etc=$(osp_mkdir policyd_db)
: >"$etc/osprey.conf"
echo 'old@file.example' >"$etc/sender_block"
chmod 755 "$etc"
chmod 644 "$etc/sender_block"
pa=$(osp_free_port) || osp_die "no free port"
ma=$(osp_free_port) || osp_die "no free port"
osp_spawn policyd_a "$policyd" -f -v -c "$etc/osprey.conf" \
    -o "policyd_listen=inet:127.0.0.1:$pa" \
    -o "policyd_metrics_listen=127.0.0.1:$ma" \
    -o policyd_workers=2 \
    -o osprey_user=nobody \
    -o "database_connection=$OSP_PG_CONNINFO" \
    -o policyd_database_lists=yes \
    -o policyd_database_retry=1s \
    -o "policyd_sender_block_files=$etc/sender_block" \
    -o breaker_cooldown=1s
pid_a=$OSP_LAST_PID
log_a=$OSP_TMP/policyd_a.log

loads() { grep -c 'database lists: loaded' "$log_a"; }
loads_gt() { [ "$(loads)" -gt "$1" ]; }
health() { policyd_health "$1"; }

ok "osprey-policyd starts and loads the database lists" \
    osp_wait_until 15 eval 'health '"$ma"' && loads_gt 0' ||
    osp_die "osprey-policyd did not start: $(tail -n 5 "$log_a")"

sink_start || osp_die "smtp-sink did not start"
svc_a=$(policyd_service "$pa")
postfix_start "inet_protocols = all" \
    "smtpd_recipient_restrictions = $svc_a, permit_mynetworks, reject_unauth_destination" ||
    osp_die "Postfix did not start"

# send NAME EXPECT-REGEX SWAKS-ARGS... -- one message; its transcript must match
send() { policyd_send "$1" "$2" "$log_a" "${@:3}"; }

rejected_client='<\*\* +554 5\.7\.1 .*Client address rejected by policy'
rejected_sender='<\*\* +554 5\.7\.1 .*Sender address rejected by policy'
accepted='<- +250 2\.0\.0 Ok: queued as'

send "an entry present at start rejects its sender" "$rejected_sender" \
    --xclient 'ADDR=203.0.113.50' --from pre@blocked.example --to r@example.com
send "a clean client is accepted" "$accepted" \
    --xclient 'ADDR=203.0.113.50' --from a1@example.org --to r@example.com

# ---- NOTIFY: an organisation's block entry, inserted and deleted
before=$(loads)
pg_psql -c "INSERT INTO list_entries (account_id, list, kind, value_net)
            VALUES ($org, 'block', 'client_network', '203.0.113.0/24'),
                   ($org, 'block', 'client_network', '2001:db8:77::/48')"
ok "NOTIFY reloads the lists after an insert" osp_wait_until 10 loads_gt "$before"
send "the inserted block entry rejects the next mail, no restart" "$rejected_client" \
    --xclient 'ADDR=203.0.113.51' --from a2@example.org --to r@example.com
send "the organisation's entry does not apply to another domain" "$accepted" \
    --xclient 'ADDR=203.0.113.51' --from a3@example.org --to r@example.net
send "an IPv6 block entry rejects too" "$rejected_client" \
    --xclient 'ADDR=IPV6:2001:db8:77::1' --from a4@example.org --to r@example.com
before=$(loads)
pg_psql -c "DELETE FROM list_entries WHERE account_id = $org AND kind = 'client_network'"
ok "NOTIFY reloads the lists after a delete" osp_wait_until 10 loads_gt "$before"
send "the deleted entry stops rejecting" "$accepted" \
    --xclient 'ADDR=203.0.113.51' --from a5@example.org --to r@example.com

# ---- database away: the last snapshot keeps serving
before=$(loads)
pg_psql -c "INSERT INTO list_entries (account_id, list, kind, value)
            VALUES (0, 'block', 'sender_domain', 'bad.example')"
osp_wait_until 10 loads_gt "$before"
pg_stop
ok "the daemon notices the database is away" \
    osp_wait_until 15 grep -qE 'database lists: reload failed|store: database connection' "$log_a"
send "database stopped: a blocked sender is still rejected" "$rejected_sender" \
    --xclient 'ADDR=203.0.113.52' --from x@bad.example --to r@example.com
send "database stopped: a clean sender is still accepted" "$accepted" \
    --xclient 'ADDR=203.0.113.52' --from a6@example.org --to r@example.com
before=$(loads)
pg_start || osp_die "PostgreSQL did not restart"
ok "the lists are reloaded when the database is back" osp_wait_until 20 loads_gt "$before"

# ---- SIGHUP: the list files are read again, connections stay
echo 'hup@file.example' >"$etc/sender_block"
kill -HUP "$pid_a"
ok "SIGHUP reloads the list files and logs it" \
    osp_wait_until 10 grep -q 'SIGHUP: list files reloaded: 1 entries' "$log_a"
send "after SIGHUP the file's new entry rejects" "$rejected_sender" \
    --xclient 'ADDR=203.0.113.53' --from hup@file.example --to r@example.com
mv "$etc/sender_block" "$etc/sender_block.gone"
kill -HUP "$pid_a"
ok "SIGHUP with an unreadable list file logs the error" \
    osp_wait_until 10 grep -qE 'SIGHUP: .*cannot open list file .*kept' "$log_a"
send "an unreadable list file keeps the old lists" "$rejected_sender" \
    --xclient 'ADDR=203.0.113.53' --from hup@file.example --to r@example.com

# ---- greylisting: a second daemon with a 3 s delay
pb=$(osp_free_port) || osp_die "no free port"
mb=$(osp_free_port) || osp_die "no free port"
osp_spawn policyd_b "$policyd" -f -v -c "$etc/osprey.conf" \
    -o "policyd_listen=inet:127.0.0.1:$pb" \
    -o "policyd_metrics_listen=127.0.0.1:$mb" \
    -o policyd_workers=1 \
    -o osprey_user=nobody \
    -o policyd_greylist=yes \
    -o policyd_greylist_delay=3s
pid_b=$OSP_LAST_PID
osp_wait_until 10 health "$mb" || osp_die "second osprey-policyd did not start"
svc_b=$(policyd_service "$pb")
postfix_conf "smtpd_recipient_restrictions = $svc_b, permit_mynetworks, reject_unauth_destination" ||
    osp_die "Postfix did not reload"
greylisted='<\*\* +450 4\.7\.1 .*Greylisted, try again later'
send "greylisting: the first attempt is deferred (450 4.7.1)" "$greylisted" \
    --xclient 'ADDR=192.0.2.60' --from grey@example.org --to g@example.com
send "greylisting: a retry before the delay is deferred" "$greylisted" \
    --xclient 'ADDR=192.0.2.61' --from grey@example.org --to g@example.com
sleep 3.2
send "greylisting: a retry after the delay is accepted" "$accepted" \
    --xclient 'ADDR=192.0.2.62' --from grey@example.org --to g@example.com

if curl -sf "http://127.0.0.1:$ma/metrics" |
        grep -qE '^osprey_policyd_decisions_total\{check="database_lists"\} [1-9]' &&
    curl -sf "http://127.0.0.1:$mb/metrics" |
        grep -qE '^osprey_policyd_decisions_total\{check="greylist"\} [1-9]'; then
    tap_ok "/metrics counts database_lists and greylist decisions"
else
    tap_not_ok "/metrics counts database_lists and greylist decisions" \
        "$(curl -sf "http://127.0.0.1:$ma/metrics" | grep decisions_total)"
fi

# ---- shared rate counters: daemon C counts, daemon D checks
rule='sasl_username:3/1h:messages:DEFER, sender:10/1h:messages'
for x in c d; do
    p=$(osp_free_port) || osp_die "no free port"
    mp=$(osp_free_port) || osp_die "no free port"
    osp_spawn "policyd_$x" "$policyd" -f -v -c "$etc/osprey.conf" \
        -o "policyd_listen=inet:127.0.0.1:$p" \
        -o "policyd_metrics_listen=127.0.0.1:$mp" \
        -o policyd_workers=2 \
        -o osprey_user=nobody \
        -o "database_connection=$OSP_PG_CONNINFO" \
        -o breaker_cooldown=1s \
        -o policyd_rate_share=yes \
        -o policyd_rate_share_interval=300ms \
        -o "policyd_rate_limits=$rule"
    eval "p_$x=$p pid_$x=$OSP_LAST_PID"
    osp_wait_until 10 health "$mp" || osp_die "osprey-policyd $x did not start"
done
svc_c=$(policyd_service "$p_c")
svc_d=$(policyd_service "$p_d")
postfix_conf "smtpd_recipient_restrictions = $svc_d, permit_mynetworks, reject_unauth_destination" \
    "smtpd_end_of_data_restrictions = $svc_c" || osp_die "Postfix did not reload"
for i in 1 2 3; do
    send "shared limit: message $i of 3 accepted" "$accepted" \
        --xclient 'ADDR=192.0.2.70 LOGIN=shared1' --from "s$i@example.org" --to r@example.com
done
sleep 1
send "shared limit: the checking daemon defers the 4th (counted by the other)" \
    '<\*\* +450 4\.7\.1 .*Rate limit exceeded' \
    --xclient 'ADDR=192.0.2.70 LOGIN=shared1' --from s4@example.org --to r@example.com

# policy QUERY PORT STATE SENDER -- one request on its own connection; prints the action
policy() {
    local fd reply
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'request=smtpd_access_policy\nprotocol_state=%s\nprotocol_name=ESMTP\nclient_address=192.0.2.80\nhelo_name=c.example\nsender=%s\nrecipient=r@example.com\nrecipient_count=1\n\n' \
        "$2" "$3" >&"$fd"
    read -r -t 5 reply <&"$fd"
    exec {fd}>&-
    echo "${reply#action=}"
}
# sender:10/1h: 6 messages through each daemon (12 in all); 4 + 4 for another sender.
for i in 1 2 3 4 5 6; do
    policy "$p_c" END-OF-MESSAGE split@example.org >/dev/null
    policy "$p_d" END-OF-MESSAGE split@example.org >/dev/null
done
for i in 1 2 3 4; do
    policy "$p_c" END-OF-MESSAGE under@example.org >/dev/null
    policy "$p_d" END-OF-MESSAGE under@example.org >/dev/null
done
counted() {
    [ "$(pg_psql -c "SELECT sum(count) FROM rate_counters
                      WHERE key = 'sender:10/1h:messages|split@example.org'")" = 12 ]
}
ok "the database holds the cluster's count (12)" osp_wait_until 5 counted
sleep 1
refused_by() { case $(policy "$1" RCPT split@example.org) in DEFER*) return 0 ;; esac; return 1; }
ok "6 + 6 over a limit of 10: the first daemon refuses" refused_by "$p_c"
ok "6 + 6 over a limit of 10: the second daemon refuses" refused_by "$p_d"
if [ "$(policy "$p_c" RCPT under@example.org)" = DUNNO ] &&
    [ "$(policy "$p_d" RCPT under@example.org)" = DUNNO ]; then
    tap_ok "4 + 4 under a limit of 10: both accept"
else
    tap_not_ok "4 + 4 under a limit of 10: both accept"
fi

osp_kill_pid "$pid_a" 10
osp_kill_pid "$pid_b" 10
osp_kill_pid "$pid_c" 10
osp_kill_pid "$pid_d" 10
if grep -q 'daemon stopped' "$log_a" && ! grep -q 'did not close' "$log_a"; then
    tap_ok "SIGTERM stops the database-backed daemon cleanly"
else
    tap_not_ok "SIGTERM stops the database-backed daemon cleanly" "$(tail -n 5 "$log_a")"
fi
tap_done
