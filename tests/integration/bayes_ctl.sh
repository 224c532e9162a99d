#!/bin/bash
# bayes_ctl.sh -- "ospreyctl bayes" on a local token file: train once,
# unchanged on repeat, retrain moves the vote, explain names the deciding
# tokens, forget, expire, stats, and usage errors.  No daemons.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_timeout "${OSP_TEST_TIMEOUT:-60}"
tap_plan 14

ctl=$OSP_TOP_BUILDDIR/ospreyctl
[ -x "$ctl" ] || tap_skip_all "ospreyctl not built ($ctl)"
dir=$(osp_mkdir bayes)
export OSPREY_BAYES_FILE=$dir/bayes.tokens
: >"$dir/osprey.conf"

msg() { # FILE FROM SUBJECT BODY
    printf 'From: %s\nTo: user@example.org\nSubject: %s\nMessage-ID: <%s@%s>\n\n%s\n' \
        "$2" "$3" "$RANDOM" "${2#*@}" "$4" >"$1"
}
# Messages differ by a word (the key is the token set: short numbers are
# not tokens, so "pills 1" and "pills 2" would be one message).
i=0
for w in alpha bravo charlie delta echo; do
    i=$((i + 1))
    msg "$dir/spam$i.eml" "deals@cheap-pills.example" "Cheap pills $w" \
        "Buy cheap pills online now, discount viagra offer $w, click here"
    msg "$dir/ham$i.eml" "alice@example.org" "Meeting notes $w" \
        "Hello Bob, the meeting agenda for the project review is attached, $w"
done
msg "$dir/query.eml" "deals@cheap-pills.example" "Pills" "cheap pills discount offer online"

out=$("$ctl" -c "$dir/osprey.conf" bayes train --spam "$dir"/spam*.eml 2>&1)
tap_is "$(grep -c ': trained' <<<"$out")" 5 "five spam messages trained"
out=$("$ctl" -c "$dir/osprey.conf" bayes train --ham --account 7 "$dir"/ham*.eml 2>&1)
tap_is "$(grep -c ': trained' <<<"$out")" 5 "five ham messages trained for account 7"
ok "the token file exists" test -s "$OSPREY_BAYES_FILE"
out=$("$ctl" -c "$dir/osprey.conf" bayes train --spam "$dir/spam1.eml" 2>&1)
case $out in *": unchanged ("*) tap_ok "training the same message again changes nothing" ;;
*) tap_not_ok "training the same message again changes nothing" "$out" ;; esac
out=$("$ctl" -c "$dir/osprey.conf" bayes train --ham "$dir/spam1.eml" 2>&1)
case $out in *": retrained ("*) tap_ok "moving a message to ham retrains it" ;;
*) tap_not_ok "moving a message to ham retrains it" "$out" ;; esac
out=$("$ctl" -c "$dir/osprey.conf" bayes stats 2>&1)
case $out in *"account 0: 4 spam, 6 ham messages"*) tap_ok "global totals count each message once" ;;
*) tap_not_ok "global totals count each message once" "$out" ;; esac
out=$("$ctl" -c "$dir/osprey.conf" bayes stats --account 7 2>&1)
case $out in *"account 7: 0 spam, 5 ham messages"*) tap_ok "account totals" ;;
*) tap_not_ok "account totals" "$out" ;; esac
out=$("$ctl" -c "$dir/osprey.conf" bayes explain --top 50 "$dir/query.eml" 2>&1)
prob=$(sed -n 's/^probability \([0-9.]*\) .*/\1/p' <<<"$out")
ok "explain: the query looks like spam ($prob)" awk -v p="${prob:-0}" 'BEGIN { exit !(p > 0.9) }'
case $out in *"from:@cheap-pills.example"*) tap_ok "explain names the sender domain token" ;;
*) tap_not_ok "explain names the sender domain token" "$out" ;; esac
out=$("$ctl" -c "$dir/osprey.conf" bayes train --forget "$dir/spam2.eml" "$dir/nosuch.eml" 2>&1)
rc=$?
case $out in *"spam2.eml: forgotten"*) tap_ok "forget takes a vote back" ;;
*) tap_not_ok "forget takes a vote back" "$out" ;; esac
tap_is "$rc" 1 "a missing message file fails the command"
out=$("$ctl" -c "$dir/osprey.conf" bayes expire --days 0 --max-count 1000 2>&1)
case $out in "expired 0 tokens"*) tap_ok "nothing expires on the day it was trained" ;;
*) tap_not_ok "nothing expires on the day it was trained" "$out" ;; esac
"$ctl" -c "$dir/osprey.conf" bayes train "$dir/spam3.eml" >/dev/null 2>&1
tap_is "$?" 2 "train without a class is a usage error"
OSPREY_BAYES_FILE=$dir/none.tokens "$ctl" -c "$dir/osprey.conf" bayes explain \
    "$dir/query.eml" >/dev/null 2>&1
tap_is "$?" 1 "explain without a token file fails"
tap_done
