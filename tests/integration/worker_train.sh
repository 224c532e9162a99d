#!/bin/bash
# worker_train.sh -- Bayes training through the job queue, against a
# private PostgreSQL: "ospreyctl bayes vote" and "quarantine release
# --train-ham" queue train jobs (one transaction with the audit row, --as
# scoped to the admin's subtree); osprey-worker trains the stored message
# into bayes_tokens/bayes_totals for the account and for account 0 with the
# same tokens as "ospreyctl bayes train --database"; votes by quarantine
# id or by Postfix queue id; the same vote twice
# changes nothing; a ham vote after a spam vote moves the counts; a job
# whose message is gone (or of another tenant) is dead after one attempt
# with the reason; a database error is retried.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/ctl_lib.sh"

osp_require root postgresql
osp_timeout "${OSP_TEST_TIMEOUT:-180}"

tap_plan 42

pg_start || osp_die "PostgreSQL did not start"
pg_schema_load || osp_die "schema did not load"

ctl_conf

c account add RA --kind reseller
RA=$(acct_id)
c account add A1 --kind client --parent RA
A1=$(acct_id)
c account add A2 --kind client --parent RA
A2=$(acct_id)
c account add U1 --kind user --parent A1
U1=$(acct_id)
c account admin add A1 adm_a1
[ -n "$A1" ] && [ -n "$A2" ] && [ -n "$U1" ] && [ "$rc" = 0 ] || osp_die "accounts"

msg() {
    printf 'From: "Prize Office" <winner@lottery.example>\r\nTo: %s\r\nSubject: %s claim your prize now\r\nMessage-ID: <%s@lottery.example>\r\nContent-Type: text/plain\r\n\r\nCongratulations, you have won one million dollars.\r\nVisit http://claim.lottery.example/now to collect your %s winnings.\r\n' \
        "$1" "$2" "$2" "$2"
}
qins() { # ACCOUNT RECIPIENT SUBJECT -> id
    sql "$(msg "$2" "$3" | body_cte)
         INSERT INTO quarantine (account_id, queue_id, sender, recipient, subject, size, score,
                                 verdict, body_sha256)
         SELECT $1, 'Q$3', 'winner@lottery.example', '$2', '$3', 300, 9.5, 'quarantine', sha256
           FROM b RETURNING id"
}
Q1=$(qins "$U1" u1@a1.example alpha)
Q2=$(qins "$A2" a2@a2.example bravo)
Q3=$(qins "$A1" a1@a1.example charlie)
[ -n "$Q1" ] && [ -n "$Q2" ] && [ -n "$Q3" ] || osp_die "quarantine rows"

# snapshot ACCOUNT -> the account's counts (totals, then every token's)
snapshot() {
    sql "SELECT coalesce((SELECT spam_messages || '/' || ham_messages FROM bayes_totals
                           WHERE account_id = $1), '-') || ' ' ||
                md5(coalesce(string_agg(token || ':' || spam_count || ':' || ham_count, ','
                                        ORDER BY token), ''))
           FROM bayes_tokens WHERE account_id = $1"
}
totals() { sql "SELECT coalesce((SELECT spam_messages || '/' || ham_messages FROM bayes_totals WHERE account_id = $1), '-')"; }
job_state() { sql "SELECT state FROM jobs WHERE id = $1"; }
job_id() { sed -n 's/.*(job \([0-9]*\)).*/\1/p' <<<"$out"; }

# ---------------------------------------------------------------- commands
c bayes vote "$Q1"
err_has 2 "usage: ospreyctl bayes vote" "bayes vote: --spam or --ham required"
c bayes vote abc --spam
err_has 2 "expected a number" "bayes vote: bad id"
c bayes vote 999999 --spam
err_has 1 "no such message" "bayes vote: unknown message"
c bayes vote "$Q2" --spam --as adm_a1
err_has 1 "not visible to this admin" "--as client admin cannot vote on a sibling's message"
c bayes vote "$Q1" --spam --account A2
err_has 1 "not account $A2 or below it" "bayes vote --account: the message must be of that subtree"
tap_is "$(sql "SELECT count(*) FROM jobs WHERE kind = 'train'")/$(sql "SELECT count(*) FROM audit_log WHERE action = 'bayes.vote'")" \
    0/0 "refused votes queue nothing and audit nothing"

c bayes vote "$Q1" --spam --as adm_a1
out_has "spam vote for account $U1 queued" "bayes vote --spam (as the client admin) queues a job"
J1=$(job_id)
tap_is "$(sql "SELECT kind || ' ' || account_id || ' ' || created_by || ' ' || (payload->>'quarantine_id') || ' ' || (payload->>'class') || ' ' || (payload->>'account_id') FROM jobs WHERE id = $J1")" \
    "train $U1 adm_a1 $Q1 spam $U1" "train job: account, creator and payload"
tap_is "$(sql "SELECT account_id || ' ' || object_id || ' ' || (details->>'job') || ' ' || (details->>'class') FROM audit_log WHERE action = 'bayes.vote'")" \
    "$U1 $Q1 $J1 spam" "bayes vote is audited"
tap_is "$(totals "$U1")/$(totals 0)" "-/-" "nothing trained before the worker runs"

# ---------------------------------------------------------------- worker
sql "CREATE ROLE osprey_worker LOGIN IN ROLE osprey_service" >/dev/null || osp_die "role"
wconf=$OSP_TMP/worker.conf
cat >"$wconf" <<EOF
database_connection = host=$PGHOST port=$PGPORT user=osprey_worker dbname=osprey
osprey_user = nobody
worker_concurrency = 2
worker_max_attempts = 20
worker_retry_backoff = 1s
worker_poll_interval = 300ms
worker_release_address = 127.0.0.1:$(osp_free_port)
EOF
osp_spawn worker1 "$W" -f -c "$wconf"
WP=$OSP_LAST_PID
done_job() { [ "$(job_state "$1")" = done ]; }
ok "train job: done" osp_wait_until 20 done_job "$J1"
tap_is "$(totals "$U1")/$(totals 0)/$(totals "$A1")" "1/0/1/0/-" \
    "spam vote: one spam message for the account and for account 0, none for its parent"
NTOK=$(sql "SELECT count(*) FROM bayes_tokens WHERE account_id = $U1")
tap_is "$([ "$NTOK" -gt 20 ] && echo many)/$(sql "SELECT count(*) FROM bayes_tokens WHERE account_id = 0")/$(sql "SELECT count(*) FROM bayes_tokens WHERE account_id IN (0, $U1) AND (spam_count, ham_count) <> (1, 0)")" \
    "many/$NTOK/0" "every token counted once as spam, for the account and for account 0"
grep -q "kind=train quarantine_id=$Q1 account=$U1 class=spam tokens=$NTOK result=trained" "$OSP_TMP/worker1.log" &&
    tap_ok "worker logs the training (tokens, result)" ||
    { tap_not_ok "worker logs the training (tokens, result)"; tap_diag <"$OSP_TMP/worker1.log"; }

S_U=$(snapshot "$U1")
S_0=$(snapshot 0)
c bayes vote "$Q1" --spam
J2=$(job_id)
ok "the same vote again: job done" osp_wait_until 20 done_job "$J2"
tap_is "$(snapshot "$U1")|$(snapshot 0)" "$S_U|$S_0" "the same vote again changes no count"
grep -q "quarantine_id=$Q1 account=$U1 class=spam tokens=$NTOK result=unchanged" "$OSP_TMP/worker1.log" &&
    tap_ok "second vote: result=unchanged" || tap_not_ok "second vote: result=unchanged"

c bayes vote "$Q1" --ham
J3=$(job_id)
ok "ham vote after the spam vote: job done" osp_wait_until 20 done_job "$J3"
tap_is "$(totals "$U1")/$(totals 0)" "0/1/0/1" "ham vote: the message moved from spam to ham (account and 0)"
tap_is "$(sql "SELECT count(*) FROM bayes_tokens WHERE account_id IN (0, $U1) AND (spam_count, ham_count) <> (0, 1)")" \
    0 "ham vote: every token's counts moved"

# ---------------------------------------------------------------- release --train-ham
c quarantine release "$Q3" --train-ham --as adm_a1
out_has "ham training queued" "quarantine release --train-ham queues both jobs"
J4=$(sed -n 's/.*ham training queued (job \([0-9]*\)).*/\1/p' <<<"$out")
tap_is "$(sql "SELECT kind || ' ' || account_id || ' ' || (payload->>'class') FROM jobs WHERE id = $J4")/$(sql "SELECT (details->>'train_job') FROM audit_log WHERE action = 'quarantine.release' AND object_id = '$Q3'")" \
    "train $A1 ham/$J4" "release --train-ham: ham job for the row's account, named in the audit row"
ok "release --train-ham: train job done" osp_wait_until 20 done_job "$J4"
tap_is "$(totals "$A1")/$(totals 0)" "0/1/0/2" "release --train-ham: one ham message for the account, two in all"

# ---------------------------------------------------------------- failures
S_ALL=$(snapshot 0)
sql "SELECT osprey_job_enqueue('train', jsonb_build_object('quarantine_id', 999999, 'class', 'spam', 'account_id', $A1), $A1)" >/dev/null
dead_missing() { [ "$(sql "SELECT state FROM jobs WHERE payload->>'quarantine_id' = '999999'")" = dead ]; }
ok "missing message: the job is dead" osp_wait_until 20 dead_missing
tap_is "$(sql "SELECT attempts || ' ' || last_error FROM jobs WHERE payload->>'quarantine_id' = '999999'")" \
    "1 quarantine 999999: no such message (deleted, expired or not of account $A1)" \
    "missing message: dead after one attempt, with the reason"

# A job naming another tenant's message (written by hand) trains nothing.
sql "SELECT osprey_job_enqueue('train', jsonb_build_object('quarantine_id', $Q2, 'class', 'spam', 'account_id', $A1), $A1)" >/dev/null
dead_forged() { [ "$(sql "SELECT state FROM jobs WHERE kind = 'train' AND payload->>'quarantine_id' = '$Q2'")" = dead ]; }
ok "job naming another account's message: dead" osp_wait_until 20 dead_forged
sql "SELECT osprey_job_enqueue('train', jsonb_build_object('quarantine_id', $Q3, 'class', 'maybe'), $A1)" >/dev/null
dead_bad() { [ "$(sql "SELECT state FROM jobs WHERE payload->>'class' = 'maybe'")" = dead ]; }
ok "job with a bad class: dead" osp_wait_until 20 dead_bad
tap_is "$(sql "SELECT last_error FROM jobs WHERE payload->>'class' = 'maybe'" | grep -c 'bad payload')/$(snapshot 0)/$(totals "$A2")" \
    "1/$S_ALL/-" "bad jobs train nothing"

# A database error is retried, then succeeds.
sql "REVOKE SELECT ON quarantine_bodies FROM osprey_service" >/dev/null
c bayes vote "$Q3" --spam
J5=$(job_id)
retried() {
    [ -n "$(sql "SELECT 1 FROM jobs WHERE id = $J5 AND state = 'queued' AND attempts >= 1
                   AND last_error LIKE 'database: read: %permission denied%'")" ]
}
ok "database error: the job goes back to the queue" osp_wait_until 20 retried
sql "GRANT SELECT ON quarantine_bodies TO osprey_service" >/dev/null
sql "UPDATE jobs SET run_after = now() WHERE id = $J5" >/dev/null
ok "database error: the retry succeeds" osp_wait_until 20 done_job "$J5"
tap_is "$(totals "$A1")" "1/0" "retried job trained the message (ham moved to spam)"

# Same tokens as "ospreyctl bayes train --database" on the stored bytes.
"$CTL" -c "$conf" quarantine show "$Q1" --raw >"$OSP_TMP/q1.eml" 2>/dev/null
c bayes train --database --spam --account "$A2" "$OSP_TMP/q1.eml"
out_has "trained ($NTOK tokens)" "bayes train --database on the stored message: same token count"
tap_is "$(sql "SELECT count(*) FROM (SELECT token FROM bayes_tokens WHERE account_id = $U1
                                    EXCEPT SELECT token FROM bayes_tokens WHERE account_id = $A2) d")" \
    0 "and the same tokens as the worker's training"

# By Postfix queue id (as "log search" shows it): every quarantined row of
# the message, one job per account.
c bayes vote "$Q1" --queue-id Qalpha --spam
err_has 2 "usage: ospreyctl bayes vote" "bayes vote: an id or --queue-id, not both"
c bayes vote --queue-id NOPE123 --spam
err_has 1 "no quarantined message" "bayes vote --queue-id: a message that was not quarantined"
Q7=$(qins "$U1" u1@a1.example charlie)
c bayes vote --queue-id Qcharlie --ham --as adm_a1
if [ "$rc" = 0 ] && grep -qF "quarantine $Q3: ham vote for account $A1 queued" <<<"$out" &&
    grep -qF "quarantine $Q7: ham vote for account $U1 queued" <<<"$out"; then
    tap_ok "bayes vote --queue-id: one job per account"
else
    tap_not_ok "bayes vote --queue-id: one job per account"
    tap_diag "$out $err"
fi
all_done() { [ "$(sql "SELECT count(*) FROM jobs WHERE kind = 'train' AND state NOT IN ('done', 'dead')")" = 0 ]; }
ok "bayes vote --queue-id: jobs done" osp_wait_until 20 all_done
tap_is "$(totals "$A1")/$(totals "$U1")/$(totals 0)" "0/1/0/2/1/3" \
    "bayes vote --queue-id: both rows trained as ham for their accounts"
# One body for two recipients, the lower row id in a sibling account: a vote
# for A1's subtree finds A1's row (it was refused: only the lowest row of a
# body was looked at).
Q8=$(qins "$A2" a2@a2.example delta)
Q9=$(sql "INSERT INTO quarantine (account_id, queue_id, sender, recipient, subject, size, score,
                                  verdict, body_sha256)
          SELECT $A1, queue_id, sender, 'a1@a1.example', subject, size, score, verdict, body_sha256
            FROM quarantine WHERE id = $Q8 RETURNING id")
c bayes vote --queue-id Qdelta --spam --account A1
out_has "quarantine $Q9: spam vote for account $A1 queued" \
    "bayes vote --queue-id --account: the subtree's row of a shared body is found"

osp_kill_pid "$WP" 10
ok "worker stops cleanly" osp_dead "$WP"
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:|event loop not empty" "$OSP_TMP/worker1.log"; then
    tap_not_ok "no sanitizer reports, loop closed"
    tap_diag <"$OSP_TMP/worker1.log"
else
    tap_ok "no sanitizer reports, loop closed"
fi
tap_done
