#!/bin/bash
# filter_bayes.sh -- Bayes inside osprey-filter with PostgreSQL as the token
# store, through a real Postfix: spam and ham trained into the database
# with "ospreyctl bayes train --database"; a spammy message is quarantined
# by a rule on the bayes field and a hammy one delivered, both with an
# X-Spam-Bayes header naming the probability, the account and the clues;
# recipients of another account are classified with that account's
# counts; the log line and the message_log row carry the probability.
# With the database stopped, mail still flows, without Bayes, and the
# outage is logged once; when it is back, Bayes is back.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"

osp_require root postfix swaks python3
osp_timeout "${OSP_TEST_TIMEOUT:-150}"
[ -n "$(_osp_pg_find_bindir)" ] && id postgres >/dev/null 2>&1 ||
    tap_skip_all "no PostgreSQL server installed"
tap_plan 31

ctl=$OSP_TOP_BUILDDIR/ospreyctl
[ -x "$FILTER_BIN" ] || osp_die "no $FILTER_BIN (build first)"
[ -x "$ctl" ] || osp_die "no $ctl (build first)"
sink_start || osp_die "smtp-sink did not start"
postfix_setup || osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"
filter_conf_apply smtp || osp_die "cannot apply the SMTP variant"
postfix_start || osp_die "Postfix did not start"
pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"
acct=$(pg_psql -c "INSERT INTO accounts (parent_id, kind, name)
                   VALUES (0, 'organisation', 'bayes-org') RETURNING id") ||
    osp_die "cannot create the account"
pg_psql -c "INSERT INTO domains (account_id, name) VALUES ($acct, 'example.net')" ||
    osp_die "cannot create the domain"

# Database settings; quarantine in the spool so the database-down case
# quarantines as well (this test is about Bayes, not the quarantine).
filter_db_conf
rules=$FILTER_DIR/bayes.rules
cat >"$rules" <<'EOR'
rule BAYES_SPAM: bayes > 0.9 => score 20 "Bayes says spam"
rule BAYES_HAM: bayes < 0.1 => score -1 "Bayes says ham"
EOR
sed -i -e '/^filter_quarantine_backend/d' "$FILTER_DIR/osprey.conf"
cat >>"$FILTER_DIR/osprey.conf" <<EOC
filter_quarantine_backend = spool
filter_auth_checks = no
filter_rules_files = $rules
filter_bayes = yes
filter_bayes_min_messages = 5
filter_bayes_cache_ttl = 1s
filter_bayes_timeout = 2s
filter_account_timeout = 1s
EOC

# ---- training into PostgreSQL
corpus=$(osp_mkdir corpus)
msg() { # FILE FROM SUBJECT BODY
    printf 'From: %s\nTo: user@example.com\nSubject: %s\nMessage-ID: <%s@%s>\n\n%s\n' \
        "$2" "$3" "$RANDOM$RANDOM" "${2#*@}" "$4" >"$1"
}
for w in alpha bravo charlie delta echo foxtrot golf hotel india juliet; do
    msg "$corpus/spam-$w.eml" "deals@cheap-pills.example" "Cheap pills $w discount" \
        "Buy cheap pills online now, discount viagra offer $w, click here for the casino bonus and the lottery prize money"
    msg "$corpus/ham-$w.eml" "alice@example.org" "Project meeting $w" \
        "Hello Bob, the meeting agenda for the project review is attached, $w. The quarterly report and the budget schedule follow. Regards, Alice"
done
out=$("$ctl" -c "$FILTER_DIR/osprey.conf" bayes train --database --spam "$corpus"/spam-*.eml 2>&1)
tap_is "$(grep -c ': trained (' <<<"$out")" 10 "ospreyctl bayes train --database: 10 spam messages"
out=$("$ctl" -c "$FILTER_DIR/osprey.conf" bayes train --database --ham "$corpus"/ham-*.eml 2>&1)
tap_is "$(grep -c ': trained (' <<<"$out")" 10 "ospreyctl bayes train --database: 10 ham messages"
out=$("$ctl" -c "$FILTER_DIR/osprey.conf" bayes train --database --ham "$corpus/ham-alpha.eml" 2>&1)
case $out in *": unchanged ("*) tap_ok "training the same message again changes nothing" ;;
*) tap_not_ok "training the same message again changes nothing" "$out" ;; esac
tap_is "$(pg_psql -c "SELECT spam_messages || '/' || ham_messages FROM bayes_totals WHERE account_id = 0")" \
    "10/10" "the database counts 10 spam and 10 ham messages globally"

ok "osprey-filter starts with filter_bayes = yes" filter_start fbayes1 ||
    osp_die "osprey-filter did not start"

spammy() { # SEQ TO
    osp_swaks --from deals@cheap-pills.example --to "$2" \
        --header "Subject: cheap pills discount $1" --header "X-Test-Seq: $1" \
        --body "Cheap viagra pills at a discount, click here for the casino bonus offer." \
        >"$OSP_TMP/swaks.$1" 2>&1
}
hammy() { # SEQ TO [EXTRA WORDS]
    osp_swaks --from alice@example.org --to "$2" \
        --header "Subject: project meeting $1" --header "X-Test-Seq: $1" \
        --body "Hello Bob, the project review agenda is attached; the quarterly report follows. $3" \
        >"$OSP_TMP/swaks.$1" 2>&1
}
quar_file() { grep -l "^X-Test-Seq: $1"$'\r'"\$" "$FILTER_DIR"/quarantine/*.eml 2>/dev/null; }
bayes_prob() { # FILE -> the probability in its X-Spam-Bayes header
    sed -n 's/^X-Spam-Bayes: prob=\([0-9.]*\);.*/\1/p' "$1" | head -n 1
}

# ---- a spammy and a hammy message
spammy bspam-1 deliver@example.com
_q1() { quar_file bspam-1 >/dev/null; }
ok "spammy message: quarantined by the rule on bayes" osp_wait_until 20 _q1
f=$(quar_file bspam-1)
p=$(bayes_prob "$f")
ok "quarantined copy: X-Spam-Bayes prob=$p > 0.9, account 0 (no account)" \
    awk -v p="${p:-0}" 'BEGIN { exit !(p > 0.9) }'
ok "quarantined copy: the clues name spam tokens" \
    eval 'tr -d "\r" <"$f" | grep -A1 "^X-Spam-Bayes:" | grep -q "clues=.*\(pills\|discount\|viagra\|casino\)="'
grep -q "^X-Spam-Bayes: prob=[0-9.]*; account=0;" "$f" || tap_diag "$(grep -A1 '^X-Spam-Bayes' "$f")"

hammy bham-1 deliver@example.com
_d1() { sink_find "X-Test-Seq: bham-1" >/dev/null; }
ok "hammy message: delivered" osp_wait_until 20 _d1
f=$(sink_find "X-Test-Seq: bham-1")
p=$(bayes_prob "$f")
ok "delivered copy: X-Spam-Bayes prob=$p < 0.1 and X-Spam-Status: No" \
    eval 'awk -v p="${p:-1}" "BEGIN { exit !(p < 0.1) }" && grep -q "^X-Spam-Status: No, score=-1.0" "$f"'
ok "the filter logs bayes= for each recipient" \
    grep -q "to=<deliver@example.com> action=deliver verdict=deliver score=-1.0 bayes=0\.0" "$FILTER_LOG"
metric() { curl -sf "http://127.0.0.1:$FILTER_METRICS_PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
ok "metrics: Bayes lookups and database token lookups are counted" \
    eval '[ "$(metric osprey_filter_bayes_lookups_total)" -ge 2 ] &&
        [ "$(metric osprey_filter_bayes_db_lookups_total)" -ge 1 ] &&
        [ "$(metric osprey_filter_bayes_cache_entries)" -ge 1 ]'

# ---- per-user statistics with the global prior.  Account $acct has voted
# garden news spam; everyone else has seen as much of it as ham, so
# globally it is neither.  One message to both: two answers, two copies.
for w in kilo lima mike november oscar papa; do
    msg "$corpus/garden-$w.eml" "news@garden.example" "Garden news $w" \
        "This week in the garden: roses, tulips and compost tips, $w edition. Seeds and bulbs for the spring planting season."
    msg "$corpus/garden2-$w.eml" "news@garden.example" "Garden news ${w}x" \
        "This week in the garden: roses, tulips and compost tips, ${w}x edition. Seeds and bulbs for the spring planting season."
done
out=$("$ctl" -c "$FILTER_DIR/osprey.conf" bayes train --database --spam --account "$acct" \
    "$corpus"/garden-*.eml 2>&1)
out2=$("$ctl" -c "$FILTER_DIR/osprey.conf" bayes train --database --ham "$corpus"/garden2-*.eml 2>&1)
tap_is "$(printf '%s\n%s\n' "$out" "$out2" | grep -c ': trained (')" 12 \
    "6 garden messages trained as spam for account $acct, 6 as ham globally"
osp_swaks --from news@garden.example --to "deliver@example.com,user@example.net" \
    --header "Subject: Garden news" --header "X-Test-Seq: bgarden-1" \
    --body "This week in the garden: roses, tulips and compost tips. Seeds and bulbs for planting." \
    >"$OSP_TMP/swaks.bgarden-1" 2>&1
_gq() { quar_file bgarden-1 >/dev/null && sink_find "X-Test-Seq: bgarden-1" >/dev/null; }
ok "per-user statistics: quarantined for user@example.net, delivered to deliver@example.com" \
    osp_wait_until 20 _gq
f=$(quar_file bgarden-1)
p=$(bayes_prob "$f")
ok "per-user statistics: account $acct's copy: prob=$p > 0.9" \
    eval 'grep -q "^X-Spam-Bayes: prob=[0-9.]*; account=$acct;" "$f" &&
        awk -v p="${p:-0}" "BEGIN { exit !(p > 0.9) }"'
f=$(sink_find "X-Test-Seq: bgarden-1")
p=$(bayes_prob "$f")
ok "per-user statistics: the global copy: prob=$p < 0.9, delivered" \
    eval 'grep -q "^X-Spam-Bayes: prob=[0-9.]*; account=0;" "$f" &&
        grep -q "^X-Rcpt-Args: <deliver@example.com>" "$f" &&
        awk -v p="${p:-1}" "BEGIN { exit !(p < 0.9) }"'

# Accounts without statistics of their own get the global answer: one copy.
quiet=$(pg_psql -c "INSERT INTO accounts (parent_id, kind, name)
                    VALUES (0, 'organisation', 'quiet-org') RETURNING id") &&
    pg_psql -c "INSERT INTO domains (account_id, name) VALUES ($quiet, 'example.edu')" ||
    osp_die "cannot create the second account"
hammy bham-2 "deliver@example.com,user@example.edu"
_onecopy() { # both recipients got the same reinjected copy ("queued as" one id)
    local f id
    f=$(sink_find "X-Test-Seq: bham-2" | head -n 1) || return 1
    id=$(sed -n 's/^X-Osprey-Scan-Id: \([0-9A-F]*\).*/\1/p' "$f" | head -n 1)
    [ -n "$id" ] &&
        [ "$(grep "scan_id=$id to=<" "$FILTER_LOG" | grep -c "action=deliver .*queued as")" -eq 2 ] &&
        [ "$(grep "scan_id=$id to=<" "$FILTER_LOG" | sed -n 's/.*queued as \([0-9A-F]*\).*/\1/p' |
            sort -u | wc -l)" -eq 1 ]
}
ok "same answer for two accounts (one without statistics): one copy for both" \
    osp_wait_until 20 _onecopy

_logrow() {
    [ "$(pg_psql -c "SELECT count(*) FROM message_log
                      WHERE subject = 'project meeting bham-1'
                        AND EXISTS (SELECT 1 FROM unnest(rules_hit) r WHERE r LIKE 'bayes=0.%')")" = 1 ]
}
ok "message_log row carries the Bayes probability" osp_wait_until 20 _logrow

# ---- autolearn: a message the rules alone call spam is trained, once
filter_stop
echo 'rule LEARN_ME: subject contains "learnme" => score 6 "autolearn test"' >>"$rules"
filter_start fbayes2 -o filter_bayes_autolearn=yes -o filter_bayes_autolearn_spam_score=5 ||
    osp_die "osprey-filter did not restart"
words="$(tr -dc a-z </dev/urandom | head -c 10) $(tr -dc a-z </dev/urandom | head -c 10)"
learnme() { # SEQ
    osp_swaks --from bob@example.org --to deliver@example.com \
        --header "Subject: learnme $words" --header "X-Test-Seq: $1" \
        --body "Some neutral words $words to be learnt." >"$OSP_TMP/swaks.$1" 2>&1
}
gspam() { pg_psql -c "SELECT spam_messages FROM bayes_totals WHERE account_id = 0"; }
gtrained() { pg_psql -c "SELECT count(*) FROM bayes_trained WHERE account_id = 0 AND as_spam"; }
base=$(gspam)
base_rows=$(gtrained)
learnme blearn-1
_learnt() { [ "$(gspam)" = $((base + 1)) ]; }
ok "autolearn: rules score 6 >= 5 without Bayes: trained as spam in the database" \
    osp_wait_until 20 _learnt
ok "autolearn: logged" \
    grep -q "bayes autolearn account=0 class=spam result=trained" "$FILTER_LOG"
# The same queued message scanned again (Postfix retries after a 4xx: here
# the reinjection smtpd is unreachable the first time) is counted once.
filter_stop
deadport=$(osp_free_port)
filter_start fbayes3 -o filter_bayes_autolearn=yes -o filter_bayes_autolearn_spam_score=5 \
    -o "filter_reinject=inet:127.0.0.1:$deadport" || osp_die "osprey-filter did not restart"
# other words: a message with the same words is the same message for training
# (the training key leaves Received: out), and would count once
words1=$words
words="$(tr -dc a-z </dev/urandom | head -c 10) $(tr -dc a-z </dev/urandom | head -c 10)"
learnme blearn-2
_learnt2() { [ "$(gspam)" = $((base + 2)) ]; }
ok "autolearn: the next message is trained although its delivery is deferred" \
    osp_wait_until 20 _learnt2
filter_stop
filter_start fbayes4 -o filter_bayes_autolearn=yes -o filter_bayes_autolearn_spam_score=5 \
    -o filter_bayes_autolearn_sure=0 || osp_die "osprey-filter did not restart"
postfix_flush
_seen2() { sink_find "X-Test-Seq: blearn-2" >/dev/null || quar_file blearn-2 >/dev/null; }
ok "autolearn: the deferred message arrives after Postfix retries" osp_wait_until 30 _seen2
sleep 1
grep "bayes autolearn" "$FILTER_LOG" | tap_diag
tap_is "$(gspam)/$(gtrained)" "$((base + 2))/$((base_rows + 2))" \
    "autolearn: the retried message is not counted twice"
# The first message's words sent again as a new message (new queue id,
# other Received: lines): the same message for training, counted once.
words=$words1
learnme blearn-3
_seen3() { sink_find "X-Test-Seq: blearn-3" >/dev/null || quar_file blearn-3 >/dev/null; }
osp_wait_until 30 _seen3
sleep 1
tap_is "$(gspam)/$(gtrained)" "$((base + 2))/$((base_rows + 2))" \
    "autolearn: the same message sent again (other Received: lines) is not counted again"

# ---- the database goes away: mail flows without Bayes, logged once
pg_stop
for i in 1 2 3; do
    # fresh words each time, so the cache cannot answer
    hammy "bdown-$i" deliver@example.com "$(tr -dc a-z </dev/urandom | head -c 12) word$i"
done
_down() { for i in 1 2 3; do sink_find "X-Test-Seq: bdown-$i" >/dev/null || return 1; done; }
ok "database down: 3 messages delivered" osp_wait_until 40 _down
ok "database down: no X-Spam-Bayes header (Bayes absent)" \
    eval '! grep -q "^X-Spam-Bayes:" $(for i in 1 2 3; do sink_find "X-Test-Seq: bdown-$i"; done)'
tap_is "$(grep -c 'bayes: token lookup failed' "$FILTER_LOG")" 1 "database down: the outage is logged once"
ok "database down: the log line says bayes=none" grep -q "bayes=none" "$FILTER_LOG"

# ---- back
pg_start || osp_die "PostgreSQL did not restart"
_back() {
    local n=$((${_back_n:-0} + 1))
    _back_n=$n
    spammy "bback-$n" deliver@example.com
    osp_wait_until 10 eval 'quar_file bback-$n >/dev/null || sink_find "X-Test-Seq: bback-$n" >/dev/null'
    quar_file "bback-$n" >/dev/null
}
ok "database back: Bayes quarantines spam again" osp_wait_until 60 _back
ok "database back: logged" grep -q "bayes: token lookups work again" "$FILTER_LOG"
ok "Postfix queue drains" wait_queue_empty 30
filter_stop
tap_done
