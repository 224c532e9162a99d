#!/bin/bash
# Build Osprey and run its main job on real mail: a private PostgreSQL
# (schema migrated with ospreyctl), osprey-policyd, osprey-filter and a
# private Postfix on loopback.  Postfix's smtpd asks osprey-policyd at RCPT
# and END-OF-MESSAGE; queued mail goes over LMTP to osprey-filter, which
# scans it with the shipped default rules and either reinjects it (with
# X-Spam-* headers) or quarantines it in PostgreSQL.  The sample messages in
# tests/data/demo (or the files given as arguments) are sent from a clean
# client, and a few from a blocked network, a blocked sender and a bad HELO;
# the SMTP answers, what reached the final destination (smtp-sink), the
# quarantine and the message log are printed.  Then the same messages go
# through osprey-filter as a before-queue milter (postfix-conf/main.cf.milter).
# Everything started is stopped again.
#
#   ./scripts/demo.sh [MESSAGE.eml ...]       (as root)
top=$(cd "$(dirname "$0")/.." && pwd)
build=${OSP_BUILD_DIR:-$top/build}

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run as root (it installs packages and starts a private Postfix)" >&2
    exit 1
fi
"$top/.ci/install-deps" || exit 1
[ -x "$top/configure" ] || "$top/autogen.sh" || exit 1
mkdir -p "$build" && cd "$build" || exit 1
if [ ! -f Makefile ]; then
    "$top/configure" -q || exit 1
fi
make -j"$(nproc)" >/dev/null || { echo "demo.sh: build failed" >&2; exit 1; }

export top_srcdir=$top top_builddir=$build
OSP_TEST_TIMEOUT=${OSP_TEST_TIMEOUT:-600}
# The harness speaks TAP on standard output; the demo talks on stderr.
exec >/dev/null
# shellcheck source=../tests/integration/harness.sh
. "$top/tests/integration/harness.sh"
# shellcheck source=../tests/integration/filter_lib.sh
. "$top/tests/integration/filter_lib.sh"

say() { printf '%s\n' "$*" >&2; }

if [ $# -gt 0 ]; then
    messages=("$@")
else
    messages=("$top"/tests/data/demo/*.eml)
fi

say "== starting private PostgreSQL"
pg_start >/dev/null || osp_die "PostgreSQL did not start"
say "   $(pg_psql -c 'SELECT version()' | cut -d, -f1) on $PGHOST"
say "== migrating the schema"
: >"$OSP_TMP/osprey.conf"
"$build/ospreyctl" -c "$OSP_TMP/osprey.conf" -o "database_connection=$OSP_PG_CONNINFO" \
    db migrate >&2 || osp_die "ospreyctl db migrate failed"

say "== starting osprey-policyd"
etc=$(osp_mkdir policyd)
printf '198.51.100.0/24\n2001:db8:bad::/48\n' >"$etc/client_block"
printf 'blocked@example.org\n' >"$etc/sender_block"
# DNS for SPF and the DNSBL comes from this zone file: no query leaves the
# machine (names not in it do not exist).
cat >"$etc/demo.zone" <<'EOZ'
spf-fail.example. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
spf-pass.example. 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
99.2.0.192.bl.demo.example. 300 IN A 127.0.0.2
99.2.0.192.bl.demo.example. 300 IN TXT "192.0.2.99 sent spam to our traps"
EOZ
ppol=$(osp_free_port) && pmet=$(osp_free_port) || osp_die "no free port"
osp_spawn policyd "$build/osprey-policyd" -f -c "$OSP_TMP/osprey.conf" \
    -o "policyd_listen=inet:127.0.0.1:$ppol" -o "policyd_metrics_listen=127.0.0.1:$pmet" \
    -o osprey_user=nobody -o "policyd_client_block_files=$etc/client_block" \
    -o "policyd_sender_block_files=$etc/sender_block" \
    -o "policyd_my_names=test.localdomain" \
    -o "policyd_rate_limits=sender:3/1h:messages:DEFER" \
    -o "dns_zone_file=$etc/demo.zone" -o policyd_spf=yes \
    -o "policyd_dnsbl_sites=bl.demo.example=127.0.0.[2..11]"
osp_wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ppol" ||
    osp_die "osprey-policyd did not start"
say "   listening on 127.0.0.1:$ppol (blocked: 198.51.100.0/24, 2001:db8:bad::/48, blocked@example.org;"
say "   rate limit: 3 messages per hour per sender; SPF on; DNSBL bl.demo.example)"

say "== starting smtp-sink and a private Postfix on 127.0.0.1"
sink_start >/dev/null || osp_die "smtp-sink did not start"
svc="check_policy_service { inet:127.0.0.1:$ppol, timeout=10s, default_action=DUNNO }"
postfix_start "inet_protocols = all" \
    "smtpd_recipient_restrictions = $svc, permit_mynetworks, reject_unauth_destination" \
    "smtpd_end_of_data_restrictions = $svc" >/dev/null || osp_die "Postfix did not start"
say "   Postfix smtpd on port $OSP_SMTP_PORT, relaying to smtp-sink on port $OSP_SINK_PORT"

say "== starting osprey-filter (LMTP content filter, default rules, PostgreSQL quarantine)"
filter_ports >/dev/null || osp_die "no ports"
filter_db_conf
sed -i -e '/^filter_static_rules/,/^    rcpt:drop/d' "$FILTER_DIR/osprey.conf"
echo "filter_rules_files = $top/conf/default.rules" >>"$FILTER_DIR/osprey.conf"
# DKIM keys and DMARC records from the demo's zone file too; our authserv-id
sed -i -e "s|^dns_zone_file = .*|dns_zone_file = $etc/demo.zone|" "$FILTER_DIR/osprey.conf"
echo "filter_authserv_id = test.localdomain" >>"$FILTER_DIR/osprey.conf"
filter_conf_apply lmtp >/dev/null || osp_die "cannot apply postfix-conf/*.filter-lmtp"
filter_start filter >/dev/null || osp_die "osprey-filter did not start"
say "   osprey-filter on 127.0.0.1:$FILTER_PORT, reinjecting to Postfix on 127.0.0.1:$REINJECT_PORT"

say "== sending ${#messages[@]} message(s)"
sent=0
for m in "${messages[@]}"; do
    rcpt=$(grep -m1 -i '^To:' "$m" | grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -1)
    from=$(grep -m1 -i '^From:' "$m" | grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -1)
    out=$(osp_swaks --xclient 'ADDR=203.0.113.7 NAME=mail.example.net' \
        --from "${from:-demo@example.org}" --to "${rcpt:-postmaster@example.com}" --data "$m" 2>&1)
    code=$(printf '%s\n' "$out" | sed -n 's/^<[-~*]* *\([245][0-9][0-9]\)[ -].*/\1/p' | grep -v '^221$' | tail -1)
    say "   $(basename "$m"): from=<$from> to=<$rcpt> last reply $code"
    [ "$code" = 250 ] && sent=$((sent + 1))
done

say "== policy checks on unwanted clients"
probe() { # description swaks-args...
    local d=$1 out code
    shift
    out=$(osp_swaks "$@" 2>&1)
    code=$(printf '%s\n' "$out" | sed -n 's/^<[-~*]* *\([245][0-9][0-9] [0-9.]* .*\)/\1/p' |
        grep -v '^221' | tail -1)
    say "   $d: $code"
}
probe "client 198.51.100.5 (blocked network)" --xclient 'ADDR=198.51.100.5' \
    --from a@example.net --to r@example.com
probe "client 2001:db8:bad::7 (blocked IPv6 network)" --xclient 'ADDR=IPV6:2001:db8:bad::7' \
    --from a@example.net --to r@example.com
probe "sender blocked@example.org" --xclient 'ADDR=203.0.113.8' \
    --from blocked@example.org --to r@example.com
probe "HELO test.localdomain (claims to be us)" --xclient 'ADDR=203.0.113.9' \
    --helo test.localdomain --from a@example.net --to r@example.com
probe "sender alice@spf-fail.example from 203.0.113.12 (SPF fail)" \
    --xclient 'ADDR=203.0.113.12' --from alice@spf-fail.example --to r@example.com
probe "client 192.0.2.99 (listed in bl.demo.example)" --xclient 'ADDR=192.0.2.99' \
    --from a@example.net --to r@example.com
out=$(osp_swaks --xclient 'ADDR=203.0.113.13 NAME=mail.spf-pass.example' \
    --from bob@spf-pass.example --to postmaster@example.com \
    --header 'Subject: SPF pass demo' 2>&1)
say "   sender bob@spf-pass.example from 203.0.113.13 (SPF pass): $(printf '%s\n' "$out" |
    sed -n 's/^<[-~*]* *\(250 [0-9.]* .*\)/\1/p' | tail -1)"
sent=$((sent + 1))
for i in 1 2 3 4; do
    probe "message $i from burst@example.org (limit 3/h)" --xclient 'ADDR=203.0.113.10' \
        --from burst@example.org --to r@example.com
done
sent=$((sent + 3))

say "== waiting for delivery"
wait_queue_empty 30 >/dev/null || say "   the Postfix queue did not drain"
sink_wait_count 1 5 >/dev/null
wait_queue_empty 30 >/dev/null || say "   the Postfix queue did not drain"
say "   accepted $sent, delivered $(sink_count), left in queue $(queue_count)"
for f in $(sink_files); do
    subj=$(grep -m1 -i '^Subject:' "$f")
    status=$(grep -m1 -i '^X-Spam-Status:' "$f")
    say "   delivered: ${subj:-"(no subject)"}  [${status:-no X-Spam-Status}]"
    tr -d '\r' <"$f" | grep -m1 -i '^Received-SPF:' | cut -c1-110 | sed 's/^/       /' >&2
    tr -d '\r' <"$f" | awk '/^$/ { exit } f && /^[ \t]/ { sub(/^[ \t]+/, " "); a = a $0; next }
        f { print a; f = 0 } /^Authentication-Results:/ { f = 1; a = $0 }' |
        head -n 1 | cut -c1-110 | sed 's/^/       /' >&2
done
say "== quarantine (PostgreSQL)"
pg_psql -c "SELECT '   ' || recipient || ': ' || subject || ' (score ' || score || ', ' || verdict || ')'
              FROM quarantine ORDER BY id" >&2
say "== message log (PostgreSQL)"
pg_psql -c "SELECT '   ' || recipient || ': ' || coalesce(subject, '') || ' -> ' || verdict ||
                   ' score=' || coalesce(score::text, '')
              FROM message_log ORDER BY logged_at" >&2
say "== Postfix log: policy rejections and deliveries"
grep -E 'NOQUEUE: reject|status=' "$OSP_MAILLOG" | sed 's/^.*\]: /   /' >&2
say "== osprey-policyd log"
grep -E 'action=' "$OSP_TMP/policyd.log" | sed 's/^/   /' >&2
say "== osprey-filter log"
grep -E 'action=' "$FILTER_LOG" | sed 's/^/   /' >&2
say "== the same scan before the queue: osprey-filter as a milter (postfix-conf/main.cf.milter)"
filter_stop
mport=$(osp_free_port) || osp_die "no free port"
postconf -c "$OSP_POSTFIX_DIR" -X content_filter receive_override_options
# (the policy checks are left out of this round: the senders above used up their rate limit)
postconf -c "$OSP_POSTFIX_DIR" -e \
    "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtpd_end_of_data_restrictions ="
while IFS= read -r line; do
    case $line in '#'* | '') continue ;; esac
    postconf -c "$OSP_POSTFIX_DIR" -e "${line//:10029/:$mport}" || osp_die "postconf failed"
done <"$top/postfix-conf/main.cf.milter"
postfix_reload
filter_start filter-milter -o "filter_milter_listen=inet:127.0.0.1:$mport" >/dev/null ||
    osp_die "osprey-filter did not start as a milter"
say "   Postfix smtpd asks osprey-filter on 127.0.0.1:$mport at the end of each message"
n0=$(sink_count)
for m in "${messages[@]}"; do
    rcpt=$(grep -m1 -i '^To:' "$m" | grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -1)
    from=$(grep -m1 -i '^From:' "$m" | grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -1)
    out=$(osp_swaks --xclient 'ADDR=203.0.113.20 NAME=mail.example.net' \
        --from "${from:-demo@example.org}" --to "${rcpt:-postmaster@example.com}" --data "$m" 2>&1)
    say "   $(basename "$m"): $(printf '%s\n' "$out" | sed -n 's/^<[-~*]* *\([245][0-9][0-9] .*\)/\1/p' |
        grep -v '^221' | tail -1 | cut -c1-90)"
done
wait_queue_empty 30 >/dev/null || say "   the Postfix queue did not drain"
say "   delivered $(( $(sink_count) - n0 )) of ${#messages[@]}, quarantined" \
    "$(grep -c 'action=quarantine' "$FILTER_LOG") before Postfix queued them (the client saw 250;" \
    "Postfix discarded them on the filter's word)"
grep -E 'action=' "$FILTER_LOG" | sed 's/^/   /' >&2
say "== stopping everything"
osp_cleanup
exit 0
