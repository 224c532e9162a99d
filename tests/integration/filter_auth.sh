#!/bin/bash
# filter_auth.sh -- DKIM, SPF and DMARC in osprey-filter with a real Postfix:
# messages signed with libopendkim (tests/tools/dkim_sign and the key in
# tests/data/dkim/) go through smtpd -> queue -> osprey-filter ->
# reinjection smtpd -> smtp-sink, with keys and DMARC records from
# tests/data/dkim/zone (dns_zone_file, set by filter_lib.sh: no network).  The sink sees
# "Authentication-Results: mx.osprey.test; dkim=pass ..." for an intact
# message and dkim=fail for a tampered one; a tampered message from a
# p=reject domain is quarantined (the default filter_dmarc_reject_action);
# a Received-SPF field that Postfix's smtpd prepends (here from an access
# map PREPEND, as a policy server's) is taken over, a forged one below the
# Received line is not.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"

osp_require root postfix python3
osp_timeout "${OSP_TEST_TIMEOUT:-90}"
tap_plan 13

SIGN=$OSP_TOP_BUILDDIR/tests/tools/dkim_sign
KEY=$OSP_TOP_SRCDIR/tests/data/dkim/test.key
[ -x "$FILTER_BIN" ] || osp_die "no $FILTER_BIN (build first)"
[ -x "$SIGN" ] || osp_die "no $SIGN (make check builds it)"
sink_start || osp_die "smtp-sink did not start"
postfix_setup || osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"
filter_conf_apply smtp || osp_die "cannot apply the SMTP variant"
# Postfix prepends a Received-SPF field for one sender, as it does for a
# policy server's PREPEND answer.
printf '%s\n' 'spf@example.com PREPEND Received-SPF: pass (mx.osprey.test: test) client-ip=127.0.0.1; envelope-from="spf@example.com"; helo=client.test; receiver=mx.osprey.test; identity=mailfrom;' \
    >"$OSP_POSTFIX_DIR/spf_access"
postconf -c "$OSP_POSTFIX_DIR" -e \
    "smtpd_sender_restrictions = check_sender_access texthash:$OSP_POSTFIX_DIR/spf_access" ||
    osp_die "postconf failed"
cat >>"$FILTER_DIR/osprey.conf" <<EOC
filter_authserv_id = mx.osprey.test
filter_auth_public_suffix_list =
EOC
ok "Postfix starts" postfix_start || osp_die "Postfix did not start"
ok "osprey-filter starts with filter_auth_checks" filter_start auth1 ||
    osp_die "osprey-filter did not start"

# make_msg TAG FROM-DOMAIN -- a message with X-Test-Seq: TAG
make_msg() {
    printf 'From: Alice <alice@%s>\r\nTo: deliver@example.com\r\nSubject: auth %s\r\nDate: %s\r\nMessage-ID: <%s@client.test>\r\nX-Test-Seq: %s\r\n\r\nHello,\r\nthe numbers are in.\r\n' \
        "$2" "$1" "$(date -R)" "$1" "$1"
}

# send FILE [SENDER] -- submit FILE's bytes to Postfix's smtpd
send() {
    python3 - "$OSP_SMTP_PORT" "$1" "${2:-bounce@example.org}" <<'EOP'
import smtplib, sys
port, path, sender = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30)
s.sendmail(sender, ["deliver@example.com"], data)
s.quit()
EOP
}

# ar TAG -- the Authentication-Results field (unfolded) of TAG's copy at the sink
ar() {
    local f
    f=$(sink_find "X-Test-Seq: $1") || return 1
    unfold_ar "$f"
}

# unfold_ar FILE -- the first Authentication-Results field of FILE, on one line
unfold_ar() {
    tr -d '\r' <"$1" | awk '
        /^$/ { exit }
        in_f && /^[ \t]/ { sub(/^[ \t]+/, " "); f = f $0; next }
        in_f { print f; exit }
        /^Authentication-Results:/ { in_f = 1; f = $0 }'
}

_has_copy() {
    sink_find "X-Test-Seq: $1" >/dev/null
}

# ---- intact signature: dkim=pass, and DMARC passes through the aligned d=
make_msg pass-0 example.com | "$SIGN" "$KEY" sel1 example.com >"$OSP_TMP/pass.eml" ||
    osp_die "dkim_sign failed"
ok "signed message accepted by smtpd" send "$OSP_TMP/pass.eml"
ok "it reaches the sink" osp_wait_until 30 _has_copy pass-0
h=$(ar pass-0)
tap_diag "$h"
ok "Authentication-Results: mx.osprey.test; dkim=pass header.d=example.com ... dmarc=pass" \
    eval '[[ "$h" == "Authentication-Results: mx.osprey.test; dkim=pass header.d=example.com header.s=sel1; spf=none; dmarc=pass (p=reject) header.from=example.com" ]]'

# ---- tampered body, From a p=none domain: delivered with dkim=fail
make_msg fail-0 example.org | "$SIGN" "$KEY" sel1 example.com |
    sed 's/the numbers are in/the numbers are IN/' >"$OSP_TMP/fail.eml"
ok "tampered message accepted by smtpd" send "$OSP_TMP/fail.eml"
osp_wait_until 30 _has_copy fail-0
h=$(ar fail-0)
tap_diag "$h"
ok "tampered: dkim=fail at the sink, DMARC fails with p=none (delivered)" \
    eval '[[ "$h" == *"dkim=fail (body hash did not verify) header.d=example.com header.s=sel1"* && "$h" == *"dmarc=fail (p=none) header.from=example.org"* ]]'

# ---- tampered, From a p=reject domain: quarantined, not rejected
make_msg quar-0 example.com | "$SIGN" "$KEY" sel1 example.com |
    sed 's/the numbers are in/the numbers are IN/' >"$OSP_TMP/quar.eml"
send "$OSP_TMP/quar.eml"
_quarantined() {
    grep -l "^X-Test-Seq: quar-0" "$FILTER_DIR"/quarantine/*.eml >/dev/null 2>&1
}
ok "DMARC fail with p=reject: quarantined, with dkim=fail and dmarc=fail (p=reject) in its header" \
    eval 'osp_wait_until 30 _quarantined &&
        f=$(grep -l "^X-Test-Seq: quar-0" "$FILTER_DIR"/quarantine/*.eml) &&
        h=$(unfold_ar "$f") && tap_diag "$h" &&
        [[ "$h" == "Authentication-Results: mx.osprey.test; dkim=fail"* &&
            "$h" == *"dmarc=fail (p=reject) header.from=example.com" ]]'

# ---- SPF: Postfix's prepended Received-SPF is taken over; SPF alone makes DMARC pass
make_msg spf-0 example.com >"$OSP_TMP/spf.eml"
send "$OSP_TMP/spf.eml" spf@example.com
osp_wait_until 30 _has_copy spf-0
h=$(ar spf-0)
tap_diag "$h"
ok "trusted Received-SPF (above Postfix's Received): spf=pass, DMARC passes on SPF" \
    eval '[[ "$h" == *"dkim=none; spf=pass smtp.mailfrom=example.com;"* && "$h" == *"dmarc=pass (p=reject)"* ]]'

# ---- a forged Received-SPF inside the message is ignored
{ printf 'Received-SPF: pass (forged) envelope-from="alice@example.org"; identity=mailfrom;\r\n'
  make_msg forged-0 example.org; } >"$OSP_TMP/forged.eml"
send "$OSP_TMP/forged.eml"
osp_wait_until 30 _has_copy forged-0
h=$(ar forged-0)
tap_diag "$h"
ok "Received-SPF below the Received line is not trusted: spf=none" \
    eval '[[ "$h" == *"spf=none;"* ]]'

# ---- forged Authentication-Results claiming our authserv-id: removed
{ printf 'Authentication-Results: mx.osprey.test; dkim=pass header.d=bank.example\r\n'
  printf 'Authentication-Results: upstream.example; spf=pass\r\n'
  make_msg forgedar-0 example.org; } >"$OSP_TMP/forgedar.eml"
send "$OSP_TMP/forgedar.eml"
osp_wait_until 30 _has_copy forgedar-0
f=$(sink_find "X-Test-Seq: forgedar-0")
ok "a forged Authentication-Results claiming mx.osprey.test is removed; ours is the only one" \
    eval '[ "$(grep -c "^Authentication-Results: mx.osprey.test;" $f)" = 1 ] &&
        ! grep -q "header.d=bank.example" $f'
ok "... while one from another authserv-id stays" \
    grep -q "^Authentication-Results: upstream.example; spf=pass" $f

# ... and from a quarantined copy (spool backend), so a release carries only ours
{ printf 'Authentication-Results: mx.osprey.test; dkim=pass header.d=bank.example\r\n'
  printf 'Authentication-Results: upstream.example; spf=pass\r\n'
  make_msg forgedq-0 example.org; } >"$OSP_TMP/forgedq.eml"
python3 - "$OSP_SMTP_PORT" "$OSP_TMP/forgedq.eml" <<'EOP'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.test", timeout=30)
s.sendmail("bounce@example.org", ["quar@example.com"], open(sys.argv[2], "rb").read())
s.quit()
EOP
_forgedq() {
    local q
    q=$(grep -l '^X-Test-Seq: forgedq-0' "$FILTER_DIR"/quarantine/*.eml 2>/dev/null) || return 1
    [ "$(grep -c '^Authentication-Results: mx.osprey.test;' $q)" = 1 ] &&
        ! grep -q 'header.d=bank.example' $q &&
        grep -q '^Authentication-Results: upstream.example; spf=pass' $q &&
        grep -q '^Hello,' $q
}
ok "the quarantined copy has the forged field removed too (ours and upstream's stay)" \
    osp_wait_until 30 _forgedq
tap_done
