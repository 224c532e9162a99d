# policyd_lib.sh -- shared by the osprey-policyd integration tests; source
# it after harness.sh.
#
#   POLICYD_BIN                 the built osprey-policyd
#   policyd_health PORT         its /health on 127.0.0.1:PORT answers "ok"
#   policyd_service PORT        Postfix's check_policy_service entry for the
#                               daemon on 127.0.0.1:PORT (DUNNO if it fails)
#   policyd_send NAME WANT LOG SWAKS-ARGS...
#                               one message through Postfix's smtpd (swaks);
#                               tap_ok NAME if the transcript matches the
#                               extended regex WANT, else tap_not_ok with the
#                               transcript and the end of the daemon's LOG

POLICYD_BIN=$OSP_TOP_BUILDDIR/osprey-policyd

policyd_health() {
    curl -sf "http://127.0.0.1:$1/health" | grep -qx ok
}

policyd_service() {
    echo "check_policy_service { inet:127.0.0.1:$1, timeout=10s, default_action=DUNNO }"
}

policyd_send() {
    local name=$1 want=$2 log=$3 out
    shift 3
    out=$OSP_TMP/swaks.$(echo "$name" | tr -c 'a-zA-Z0-9' _).log
    osp_swaks "$@" >"$out" 2>&1
    if grep -qE -- "$want" "$out"; then
        tap_ok "$name"
    else
        tap_not_ok "$name" "expected /$want/ in the SMTP transcript:" \
            "$(grep -E '^ *(<|->|<-|\*\*\*)' "$out" | tail -n 14)" \
            "policyd log:" "$(tail -n 5 "$log")"
    fi
}
