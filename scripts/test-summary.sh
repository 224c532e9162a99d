#!/bin/sh
# Print one summary line for the automake test results under build dirs:
# "tests: N passed, N failed, N skipped" (and the failed logs' names).
# Several build dirs may be given; the line counts them all.
[ $# -gt 0 ] || set -- .
pass=0 fail=0 skip=0
for trs in $(find "$@" -name '*.trs' -not -path '*/_build/*' | sort); do
    p=$(grep -c '^:test-result: PASS' "$trs")
    x=$(grep -c '^:test-result: XFAIL' "$trs")
    f=$(grep -c -E '^:test-result: (FAIL|ERROR|XPASS)' "$trs")
    s=$(grep -c '^:test-result: SKIP' "$trs")
    pass=$((pass + p + x))
    fail=$((fail + f))
    skip=$((skip + s))
    if [ "$f" -gt 0 ]; then
        echo "failed: ${trs%.trs}.log"
        # The failed checks and their diagnostics, so a CI log alone says why.
        grep -E -A40 '^(not ok|FAIL|ERROR|Bail out)' "${trs%.trs}.log" | grep -v '^ok ' | head -n 120 |
            sed 's/^/    /'
    fi
done
echo "tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
