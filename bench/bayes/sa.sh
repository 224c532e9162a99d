#!/bin/bash
# SpamAssassin in Bayes-only mode for bench/bayes/run.sh: network tests
# off, no auto-learning, the Bayes probability read from an added header.
#   sa.sh WORKDIR   (uses WORKDIR/corpus/{train,test}.list, writes WORKDIR/sa.scores)
set -u
work=$1
command -v spamd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends spamassassin spamd spamc >/dev/null || exit 1
command -v spamc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends spamc >/dev/null || exit 1
sa=$work/sa
mkdir -p "$sa/site" "$sa/bayes" "$sa/home"
cat >"$sa/site/local.cf" <<CF
use_bayes 1
bayes_auto_learn 0
bayes_path $sa/bayes/bayes
bayes_file_mode 0777
bayes_min_ham_num 1
bayes_min_spam_num 1
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
dns_available no
add_header all Bayes _BAYES_
CF
# The stock rules need the site config next to them.
cp /etc/spamassassin/init.pre "$sa/site/" 2>/dev/null
cp /etc/spamassassin/*.pre "$sa/site/" 2>/dev/null
learn() { # spam|ham
    awk -v l="$1" '$1==l{print $2}' "$work/corpus/train.list" |
        xargs sa-learn --siteconfigpath "$sa/site" --no-sync "--$1" >/dev/null 2>&1
}
learn spam && learn ham || { echo "sa.sh: sa-learn failed" >&2; exit 1; }
sa-learn --siteconfigpath "$sa/site" --sync >/dev/null 2>&1
chmod -R a+rwX "$sa"
chmod a+x "$work"   # spamd runs as nobody
port=$((20000 + RANDOM % 10000))
spamd --siteconfigpath "$sa/site" -L -x -u nobody -m 2 --listen "127.0.0.1:$port" \
    -r "$sa/spamd.pid" -s "$sa/spamd.log" -d 2>/dev/null ||
    { echo "sa.sh: spamd did not start" >&2; exit 1; }
for _ in $(seq 100); do [ -s "$sa/spamd.pid" ] && spamc -d 127.0.0.1 -p "$port" -K \
    >/dev/null 2>&1 && break; sleep 0.2; done
# Score on two spamd children at once (spamd -m 2): two client loops.
score() { # SHARD
    awk -v s="$1" 'NR % 2 == s' "$work/corpus/test.list" | while read -r label f; do
        b=$(spamc -d 127.0.0.1 -p "$port" -s 10000000 <"$f" 2>/dev/null |
            sed -n 's/^X-Spam-Bayes: *\([0-9.]*\).*/\1/p' | head -1)
        echo "$label ${b:-0.5} $f"
    done >"$work/sa.scores.$1"
}
score 0 & p0=$!
score 1 & p1=$!
wait "$p0" "$p1"
cat "$work/sa.scores.0" "$work/sa.scores.1" >"$work/sa.scores"
kill "$(cat "$sa/spamd.pid")" 2>/dev/null
for _ in $(seq 50); do kill -0 "$(cat "$sa/spamd.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
exit 0
