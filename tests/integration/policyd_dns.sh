#!/bin/bash
# policyd_dns.sh -- the DNS checks of osprey-policyd behind a real Postfix.
# osprey-policyd's resolvers serve zone data from a file (dns_zone_file),
# so no query leaves the process; Postfix asks the daemon at RCPT and
# swaks --xclient plays remote clients.  Asserts that an SPF fail is
# rejected with the configured code and the domain's explanation, a DNSBL
# hit (IPv4 and IPv6) is rejected with the list's TXT reason, and an SPF
# pass message is delivered with one Received-SPF header even with two
# recipients; an SPF softfail is delivered with its header, and the
# daemon stops cleanly.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/policyd_lib.sh"

osp_require root postfix swaks curl
osp_timeout "${OSP_TEST_TIMEOUT:-180}"
tap_plan 12

policyd=$POLICYD_BIN
[ -x "$policyd" ] || osp_die "$policyd is not built"

# ---- zone data and configuration
etc=$(osp_mkdir policyd_dns)
cat >"$etc/zone" <<'EOF'
; SPF: pass.example allows 203.0.113.0/25 and 2001:db8:1::/48
pass.example. 300 IN TXT "v=spf1 ip4:203.0.113.0/25 ip6:2001:db8:1::/48 -all"
fail.example. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all exp=exp.fail.example"
exp.fail.example. 300 IN TXT "%{i} is not a mail server of %{d}"
soft.example. 300 IN TXT "v=spf1 ~all"
; DNSBL: 203.0.113.200 and 2001:db8:bad::66 are listed
200.113.0.203.bl.test.example. 300 IN A 127.0.0.2
200.113.0.203.bl.test.example. 300 IN TXT "Listed for testing, see https://bl.test.example/q?203.0.113.200"
6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.a.b.0.8.b.d.0.1.0.0.2.bl.test.example. 300 IN A 127.0.0.3
6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.a.b.0.8.b.d.0.1.0.0.2.bl.test.example. 300 IN TXT "IPv6 listed"
; answers outside the filter do not count
201.113.0.203.bl.test.example. 300 IN A 127.0.0.99
EOF
: >"$etc/osprey.conf"
ppol=$(osp_free_port) || osp_die "no free port"
pmet=$(osp_free_port) || osp_die "no free port"

osp_spawn policyd "$policyd" -f -v -c "$etc/osprey.conf" \
    -o "policyd_listen=inet:127.0.0.1:$ppol" \
    -o "policyd_metrics_listen=127.0.0.1:$pmet" \
    -o policyd_workers=2 \
    -o osprey_user=nobody \
    -o "dns_zone_file=$etc/zone" \
    -o "policyd_my_names=mx.test.localdomain" \
    -o policyd_spf=yes \
    -o "policyd_spf_fail_action=550 5.7.23 SPF says no: %{spf_explanation}" \
    -o "policyd_dnsbl_sites=bl.test.example=127.0.0.[2..11]*2"
policyd_pid=$OSP_LAST_PID
policyd_log=$OSP_TMP/policyd.log

health() { policyd_health "$pmet"; }
ok "osprey-policyd starts with the zone file and answers /health" osp_wait_until 10 health ||
    osp_die "osprey-policyd did not start: $(tail -n 5 "$policyd_log")"

# ---- Postfix asks the daemon at RCPT
sink_start || osp_die "smtp-sink did not start"
svc=$(policyd_service "$ppol")
postfix_start "inet_protocols = all" \
    "smtpd_recipient_restrictions = $svc, permit_mynetworks, reject_unauth_destination" ||
    osp_die "Postfix did not start"

# send NAME EXPECT-REGEX SWAKS-ARGS... -- one message; its transcript must match
send() { policyd_send "$1" "$2" "$policyd_log" "${@:3}"; }

accepted='<- +250 2\.0\.0 Ok: queued as'

send "SPF fail is rejected with the configured code and the explanation" \
    '<\*\* +550 5\.7\.23 .*SPF says no: 203\.0\.113\.9 is not a mail server of fail\.example' \
    --xclient 'ADDR=203.0.113.9 NAME=c9.example' \
    --from someone@fail.example --to r@example.com
send "DNSBL hit (IPv4) is rejected with the TXT reason" \
    '<\*\* +554 5\.7\.1 .*client \[203\.0\.113\.200\] blocked using bl\.test\.example: Listed for testing, see https://bl\.test\.example/q\?203\.0\.113\.200' \
    --xclient 'ADDR=203.0.113.200 NAME=c200.example' \
    --from a@pass.example --to r@example.com
send "DNSBL hit (IPv6) is rejected with the TXT reason" \
    '<\*\* +554 5\.7\.1 .*blocked using bl\.test\.example: IPv6 listed' \
    --xclient 'ADDR=IPV6:2001:db8:bad::66 NAME=c66.example' \
    --from a@nospf.example --to r@example.com
send "an answer outside the DNSBL filter does not count" "$accepted" \
    --xclient 'ADDR=203.0.113.201 NAME=c201.example' \
    --from a@nospf.example --to r@example.com --header 'Subject: outside filter'
send "SPF pass with two recipients is accepted" "$accepted" \
    --xclient 'ADDR=203.0.113.10 NAME=c10.example' \
    --from a@pass.example --to r1@example.com,r2@example.com --header 'Subject: spf pass'
send "SPF softfail is accepted (DUNNO by default)" "$accepted" \
    --xclient 'ADDR=203.0.113.11 NAME=c11.example' \
    --from a@soft.example --to r@example.com --header 'Subject: spf softfail'

ok "the SPF pass message reached smtp-sink" \
    osp_wait_until 20 eval 'sink_find "Subject: spf pass" >/dev/null'
passmsg=$(sink_find "Subject: spf pass" | head -n 1)
if [ -n "$passmsg" ] &&
    grep -qE '^Received-SPF: pass \(mx\.test\.localdomain: domain of (a@)?pass\.example designates 203\.0\.113\.10 as permitted sender\) .*client-ip=203\.0\.113\.10; envelope-from="a@pass\.example";.*identity=mailfrom;' "$passmsg" &&
    [ "$(grep -c '^Received-SPF:' "$passmsg")" -eq 1 ]; then
    tap_ok "it carries exactly one Received-SPF: pass header (RFC 7208 9.1)"
else
    tap_not_ok "it carries exactly one Received-SPF: pass header (RFC 7208 9.1)" \
        "$( [ -n "$passmsg" ] && sed -n '1,/^$/p' "$passmsg")"
fi
ok "the softfail message carries Received-SPF: softfail" \
    osp_wait_until 20 eval 'f=$(sink_find "Subject: spf softfail" | head -n 1); [ -n "$f" ] && grep -q "^Received-SPF: softfail" "$f"'

ok "decisions are logged with check and reason" \
    grep -qE 'check=dnsbl action=554 .*reason=client 203\.0\.113\.200 listed by bl\.test\.example \(score 2\)' "$policyd_log"

osp_kill_pid "$policyd_pid" 10
if grep -q 'daemon stopped' "$policyd_log" && ! grep -q 'did not close' "$policyd_log"; then
    tap_ok "SIGTERM stops the daemon cleanly (resolvers closed)"
else
    tap_not_ok "SIGTERM stops the daemon cleanly (resolvers closed)" "$(tail -n 5 "$policyd_log")"
fi
tap_done
