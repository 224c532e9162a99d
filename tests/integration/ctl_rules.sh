#!/bin/bash
# ctl_rules.sh -- the rule tools of ospreyctl on files, no daemons:
# "rule check" (the shipped rules load; an error names FILE:LINE:COL and
# nothing passes), "rule test --message" (every hit with its score, the
# total is their sum, context options such as --spf reach the rules, an
# unreadable message is an error), "regex test" (match and groups, no
# match, a bad pattern with its offset).

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_timeout "${OSP_TEST_TIMEOUT:-60}"
tap_plan 11

ctl=$OSP_TOP_BUILDDIR/ospreyctl
[ -x "$ctl" ] || tap_skip_all "ospreyctl not built ($ctl)"
dir=$(osp_mkdir ctl_rules)
rules=$OSP_TOP_SRCDIR/conf/default.rules

res=$("$ctl" rule check "$rules" 2>&1)
tap_is "$?/$(grep -c ': [0-9]* rules, no errors$' <<<"$res")" 0/1 "rule check: the shipped rules load"
printf 'rule OK_ONE: subject contains "x" => score 1 "fine"\nrule BAD: subject frob "x" => score 1 "b"\n' \
    >"$dir/bad.rules"
res=$("$ctl" rule check "$dir/bad.rules" 2>&1)
rc=$?
tap_is "$rc" 1 "rule check: a bad file fails"
ok "rule check: the error names FILE:2:19 and what was expected" \
    eval 'grep -q "bad.rules:2:19: expected a relation" <<<"$res"'

printf 'From: a@b.example\r\nSubject: FREE MONEY NOW!!!\r\n\r\nclick here today\r\n' >"$dir/spam.eml"
res=$("$ctl" rule test --rules "$rules" --message "$dir/spam.eml" 2>&1)
tap_is "$?" 0 "rule test: runs"
ok "rule test: lists the hits (missing Date, capitals subject)" \
    eval 'grep -q "^MISSING_DATE " <<<"$res" && grep -q "^SUBJ_ALL_CAPS " <<<"$res"'
sum=$(awk '/^[A-Z0-9_]+ +-?[0-9.]+ / {s += $2} END {printf "%.2f", s}' <<<"$res")
tap_is "$(sed -n 's/^score: \([-0-9.]*\) .*/\1/p' <<<"$res")" "$sum" "rule test: the score is the sum of the hits"
res=$("$ctl" rule test --rules "$rules" --spf fail --message "$dir/spam.eml" 2>&1)
ok "rule test --spf fail: SPF_FAIL hits" eval 'grep -q "^SPF_FAIL " <<<"$res"'
res=$("$ctl" rule test --rules "$rules" --message "$dir/missing.eml" 2>&1)
tap_is "$?/$(grep -c 'cannot read .*missing.eml' <<<"$res")" 1/1 "rule test: an unreadable message is an error"

res=$("$ctl" regex test 'fr(e+)' 'get it freee now' 2>&1)
tap_is "$?/$(tr '\n' '|' <<<"$res")" '0/match at 7-12: "freee"|  $1 = "eee"|' "regex test: match and group"
res=$("$ctl" regex test 'abc' 'xyz' 2>&1)
tap_is "$?/$res" "1/no match" "regex test: no match"
res=$("$ctl" regex test 'fr(e+' 'x' 2>&1)
tap_is "$?/$(head -n 1 <<<"$res")" "1/error at offset 5: missing closing parenthesis" \
    "regex test: a bad pattern names the offset"
tap_done
