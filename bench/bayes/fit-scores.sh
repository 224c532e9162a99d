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
rules=$top/conf/default.rules

command -v node >/dev/null && command -v npm >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >/dev/null ||
    { echo "fit-scores.sh: cannot install nodejs npm" >&2; exit 1; }

. "$top/bench/bayes/prepare.sh"
bayes_prepare fit-scores.sh

"$build/bench/bayes/osprey_bayes_bench" -k 5 -r "$rules" "$work/corpus/train.list" \
    >"$work/cv.out" || exit 1
node "$top/bench/bayes/fit-scores.js" "$work/cv.out" "$rules" $dry
