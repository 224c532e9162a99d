#!/bin/bash
# postfix_conf.sh -- the shipped postfix-conf/ entries for osprey-filter are
# valid: applied to a real private Postfix, "postfix check" is silent, the
# services exist as documented, and one message goes through each variant
# (SMTP, then LMTP) with osprey-filter running.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"

osp_require root postfix swaks
osp_timeout "${OSP_TEST_TIMEOUT:-60}"
tap_plan 12

[ -x "$FILTER_BIN" ] || osp_die "no $FILTER_BIN (build first)"
sink_start || osp_die "smtp-sink did not start"
postfix_setup || osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"

# ---- SMTP variant
ok "main.cf.filter-smtp and master.cf.filter-smtp apply" filter_conf_apply smtp
tap_is "$(postfix -c "$OSP_POSTFIX_DIR" check 2>&1)" "" "postfix check is silent (SMTP variant)"
tap_is "$(postconf -c "$OSP_POSTFIX_DIR" -h content_filter)" "osprey-scan:[127.0.0.1]:$FILTER_PORT" \
    "content_filter points at osprey-scan"
ok "master.cf has osprey-scan with XFORWARD and the reinjection smtpd" \
    eval 'postconf -c "$OSP_POSTFIX_DIR" -P osprey-scan/unix/smtp_send_xforward_command | grep -q "= yes$" &&
          postconf -c "$OSP_POSTFIX_DIR" -P "127.0.0.1:$REINJECT_PORT/inet/smtpd_authorized_xforward_hosts" | grep -q "127.0.0.0/8" &&
          postconf -c "$OSP_POSTFIX_DIR" -P "127.0.0.1:$REINJECT_PORT/inet/content_filter" | grep -q "content_filter =$"'
postfix_start || osp_die "Postfix did not start"
filter_start filter1 || osp_die "osprey-filter did not start"
osp_swaks --from a@example.org --to deliver@example.com --header 'X-Test-Seq: conf-smtp' \
    >"$OSP_TMP/swaks.smtp" 2>&1
ok "a message goes through the SMTP variant" \
    eval 'sink_wait_count 1 20 && sink_find "X-Test-Seq: conf-smtp" >/dev/null'
ok "it passed osprey-scan and the reinjection smtpd" \
    eval 'maillog_wait "osprey-scan/smtp\[[0-9]+\]: .*status=sent \(250 2\.0\.0 Ok: scanned as" 5 &&
          maillog_wait "osprey-reinject/smtpd\[[0-9]+\]: [0-9A-F]+: client=" 5'

# ---- LMTP variant (the reinjection smtpd is shared)
postconf -c "$OSP_POSTFIX_DIR" -X osprey-scan_destination_concurrency_limit
ok "main.cf.filter-lmtp and master.cf.filter-lmtp apply" filter_conf_apply lmtp transport-only
tap_is "$(postfix -c "$OSP_POSTFIX_DIR" check 2>&1)" "" "postfix check is silent (LMTP variant)"
tap_is "$(postconf -c "$OSP_POSTFIX_DIR" -h content_filter)" \
    "osprey-lmtp:inet:[127.0.0.1]:$FILTER_PORT" "content_filter points at osprey-lmtp"
ok "master.cf has osprey-lmtp with XFORWARD" \
    eval 'postconf -c "$OSP_POSTFIX_DIR" -P osprey-lmtp/unix/lmtp_send_xforward_command | grep -q "= yes$"'
osp_swaks --from a@example.org --to deliver@example.com --header 'X-Test-Seq: conf-lmtp' \
    >"$OSP_TMP/swaks.lmtp" 2>&1
ok "a message goes through the LMTP variant" \
    eval 'sink_wait_count 2 20 && sink_find "X-Test-Seq: conf-lmtp" >/dev/null &&
          maillog_wait "osprey-lmtp/lmtp\[[0-9]+\]: .*status=sent" 5'
ok "queue drains" wait_queue_empty 20
