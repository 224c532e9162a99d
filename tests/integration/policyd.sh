#!/bin/bash
# policyd.sh -- osprey-policyd behind a real Postfix: the private instance
# asks the daemon at RCPT (check_policy_service first in
# smtpd_recipient_restrictions, so permit_mynetworks cannot skip it) and at
# END-OF-MESSAGE (rate counting), and swaks --xclient plays remote clients.
# Asserts the SMTP replies Postfix gives for a blocked IPv4 and IPv6
# network, blocked senders, an allowed sender bypassing a client block, bad
# HELO names, a sender over its rate limit (DEFER) and a SASL user over its
# limit (HOLD: the message lands in the hold queue), plus the metrics and
# health endpoint and a clean stop on SIGTERM.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/policyd_lib.sh"

osp_require root postfix swaks curl
osp_timeout "${OSP_TEST_TIMEOUT:-180}"
tap_plan 21

policyd=$POLICYD_BIN
[ -x "$policyd" ] || osp_die "$policyd is not built"

# ---- lists and configuration
etc=$(osp_mkdir policyd)
cat >"$etc/client_block" <<EOF
# documentation networks used as "bad" clients
198.51.100.0/24
2001:db8:bad::/48
EOF
cat >"$etc/sender_block" <<EOF
blocked@example.org
bad.example
EOF
cat >"$etc/sender_allow" <<EOF
vip@example.org
EOF
: >"$etc/osprey.conf"
ppol=$(osp_free_port) || osp_die "no free port"
pmet=$(osp_free_port) || osp_die "no free port"

osp_spawn policyd "$policyd" -f -v -c "$etc/osprey.conf" \
    -o "policyd_listen=inet:127.0.0.1:$ppol" \
    -o "policyd_metrics_listen=127.0.0.1:$pmet" \
    -o policyd_workers=2 \
    -o osprey_user=nobody \
    -o "policyd_client_block_files=$etc/client_block" \
    -o "policyd_sender_block_files=$etc/sender_block" \
    -o "policyd_sender_allow_files=$etc/sender_allow" \
    -o "policyd_my_names=test.localdomain" \
    -o "policyd_rate_limits=sasl_username:2/1h:messages:HOLD, sender:2/1h:messages:DEFER"
policyd_pid=$OSP_LAST_PID
policyd_log=$OSP_TMP/policyd.log

health() { policyd_health "$pmet"; }
ok "osprey-policyd starts and answers /health" osp_wait_until 10 health ||
    osp_die "osprey-policyd did not start: $(tail -n 5 "$policyd_log")"
ok "it runs as osprey_user nobody" \
    eval '[ "$(stat -c %U /proc/'"$policyd_pid"')" = nobody ]'

# ---- Postfix asks the daemon at RCPT and END-OF-MESSAGE
sink_start || osp_die "smtp-sink did not start"
svc=$(policyd_service "$ppol")
# inet_protocols = all: Postfix refuses XCLIENT ADDR=IPV6:... without IPv6.
postfix_start "inet_protocols = all" \
    "smtpd_recipient_restrictions = $svc, permit_mynetworks, reject_unauth_destination" \
    "smtpd_end_of_data_restrictions = $svc" ||
    osp_die "Postfix did not start"

# send NAME EXPECT-REGEX SWAKS-ARGS... -- one message; its transcript must match
send() { policyd_send "$1" "$2" "$policyd_log" "${@:3}"; }

rejected_client='<\*\* +554 5\.7\.1 .*Client address rejected by policy'
accepted='<- +250 2\.0\.0 Ok: queued as'

send "blocked IPv4 network is rejected (554 5.7.1)" "$rejected_client" \
    --xclient 'ADDR=198.51.100.5 NAME=bad4.example' \
    --from a1@example.net --to r@example.com
send "blocked IPv6 network is rejected (554 5.7.1)" "$rejected_client" \
    --xclient 'ADDR=IPV6:2001:db8:bad::7 NAME=bad6.example' \
    --from a2@example.net --to r@example.com
send "a clean IPv6 client is accepted" "$accepted" \
    --xclient 'ADDR=IPV6:2001:db8:1::7 NAME=good6.example' \
    --from a3@example.net --to r@example.com
send "a clean IPv4 client is accepted" "$accepted" \
    --xclient 'ADDR=203.0.113.7 NAME=good4.example' \
    --from a4@example.net --to r@example.com
send "blocked sender address is rejected" \
    '<\*\* +554 5\.7\.1 .*Sender address rejected by policy' \
    --xclient 'ADDR=203.0.113.8' --from blocked@example.org --to r@example.com
send "sender in a blocked domain is rejected" \
    '<\*\* +554 5\.7\.1 .*Sender address rejected by policy' \
    --xclient 'ADDR=203.0.113.8' --from someone@bad.example --to r@example.com
send "allowed sender bypasses the client block" "$accepted" \
    --xclient 'ADDR=198.51.100.9 NAME=bad4.example' \
    --from vip@example.org --to r@example.com
send "invalid HELO name is rejected (5.5.2)" '<\*\* +554 5\.5\.2 .*Invalid HELO name' \
    --xclient 'ADDR=203.0.113.9' --helo 'a..b.example' --from a5@example.net --to r@example.com
send "HELO literal other than the client is rejected" \
    '<\*\* +554 5\.7\.1 .*HELO address literal does not match' \
    --xclient 'ADDR=203.0.113.9' --helo '[192.0.2.99]' --from a6@example.net --to r@example.com
send "HELO with our own name is rejected" '<\*\* +554 5\.7\.1 .*HELO name claims to be this host' \
    --xclient 'ADDR=203.0.113.9' --helo 'TEST.localdomain' --from a7@example.net --to r@example.com

# ---- rate limits: two messages per hour per sender (DEFER) and per SASL user (HOLD)
for i in 1 2; do
    osp_swaks --xclient 'ADDR=203.0.113.30' --from burst@example.org --to "r$i@example.com" \
        >"$OSP_TMP/swaks.burst$i.log" 2>&1
done
send "sender over its rate limit is deferred (450 4.7.1)" \
    '<\*\* +450 4\.7\.1 .*Rate limit exceeded' \
    --xclient 'ADDR=203.0.113.30' --from burst@example.org --to r3@example.com

hold_before=$(queue_count hold)
for i in 1 2; do
    osp_swaks --xclient 'ADDR=203.0.113.40 LOGIN=limited' --from "l$i@example.net" \
        --to "h$i@example.com" --header "Subject: limited $i" >"$OSP_TMP/swaks.limited$i.log" 2>&1
done
send "SASL user over its limit: accepted by smtpd" "$accepted" \
    --xclient 'ADDR=203.0.113.40 LOGIN=limited' --from l3@example.net --to h3@example.com \
    --header 'Subject: limited 3'
ok "the third message of the SASL user is in the hold queue" \
    osp_wait_until 10 eval '[ "$(queue_count hold)" -gt '"$hold_before"' ]'
ok "Postfix logged the HOLD from the policy service" \
    maillog_wait 'hold: RCPT from .*Rate limit exceeded' 10
ok "one rate-limit alert per key, logged once" \
    eval '[ "$(grep -c "rate limit alert: sasl_username=limited" "$policyd_log")" -eq 1 ]'
ok "decisions are logged with check, action and reason" \
    grep -qE 'client=bad6\.example\[2001:db8:bad::7\] .*check=client_block action=REJECT .*reason=client address 2001:db8:bad::7 listed in' "$policyd_log"
ok "the first two messages of the SASL user reached smtp-sink" \
    eval 'sink_wait_count 1 20 && sink_find "Subject: limited 2" >/dev/null'

# ---- metrics and a clean stop
metrics=$(curl -sf "http://127.0.0.1:$pmet/metrics")
if grep -qE '^osprey_policyd_requests_total [1-9]' <<<"$metrics" &&
    grep -qE '^osprey_policyd_actions_total\{action="reject"\} [1-9]' <<<"$metrics" &&
    grep -qE '^osprey_policyd_decisions_total\{check="rate_limit"\} [1-9]' <<<"$metrics"; then
    tap_ok "/metrics counts requests, rejects and rate-limit decisions"
else
    tap_not_ok "/metrics counts requests, rejects and rate-limit decisions" "$metrics"
fi
osp_kill_pid "$policyd_pid" 10
if grep -q 'daemon stopped' "$policyd_log" && ! grep -q 'did not close' "$policyd_log"; then
    tap_ok "SIGTERM stops the daemon cleanly"
else
    tap_not_ok "SIGTERM stops the daemon cleanly" "$(tail -n 5 "$policyd_log")"
fi
tap_done
