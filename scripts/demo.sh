#!/bin/bash
# Build Osprey and run its main job on real mail: a private PostgreSQL and a
# private Postfix on loopback are started, the sample messages in
# tests/data/demo (or the files given as arguments) are sent through
# Postfix with swaks, and what reached the final destination (smtp-sink)
# is printed.  Everything started is stopped again at the end.
#
#   sudo ./scripts/demo.sh [MESSAGE.eml ...]
top=$(cd "$(dirname "$0")/.." && pwd)
build=${OSP_BUILD_DIR:-$top/build}

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run as root (it installs packages and starts a private Postfix)" >&2
    exit 1
fi
"$top/.ci/install-deps" || exit 1
[ -x "$top/configure" ] || "$top/autogen.sh" || exit 1
mkdir -p "$build" && cd "$build" || exit 1
if [ ! -f Makefile ]; then
    "$top/configure" -q || exit 1
fi
make -j"$(nproc)" >/dev/null || { echo "demo.sh: build failed" >&2; exit 1; }

export top_srcdir=$top top_builddir=$build
OSP_TEST_TIMEOUT=${OSP_TEST_TIMEOUT:-600}
# The harness speaks TAP on standard output; the demo talks on stderr.
exec >/dev/null
# shellcheck source=../tests/integration/harness.sh
. "$top/tests/integration/harness.sh"

say() { printf '%s\n' "$*" >&2; }

if [ $# -gt 0 ]; then
    messages=("$@")
else
    messages=("$top"/tests/data/demo/*.eml)
fi

say "== starting private PostgreSQL"
pg_start >/dev/null || osp_die "PostgreSQL did not start"
say "   $(pg_psql -c 'SELECT version()' | cut -d, -f1) on $PGHOST"
say "== starting smtp-sink and a private Postfix on 127.0.0.1"
sink_start >/dev/null || osp_die "smtp-sink did not start"
postfix_start >/dev/null || osp_die "Postfix did not start"
say "   Postfix smtpd on port $OSP_SMTP_PORT, relaying to smtp-sink on port $OSP_SINK_PORT"
"$build/osprey-policyd" -n -c /dev/null >/dev/null || osp_die "osprey-policyd does not start"

say "== sending ${#messages[@]} message(s)"
sent=0
for m in "${messages[@]}"; do
    rcpt=$(grep -m1 -i '^To:' "$m" | grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -1)
    from=$(grep -m1 -i '^From:' "$m" | grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -1)
    out=$(osp_swaks --server "127.0.0.1:$OSP_SMTP_PORT" --from "${from:-demo@example.org}" \
        --to "${rcpt:-postmaster@example.com}" --data "$m" 2>&1)
    code=$(printf '%s\n' "$out" | sed -n 's/^<[-~*]* *\([245][0-9][0-9]\)[ -].*/\1/p' | grep -v '^221$' | tail -1)
    say "   $(basename "$m"): from=<$from> to=<$rcpt> last reply $code"
    [ "$code" = 250 ] && sent=$((sent + 1))
done

say "== waiting for delivery"
sink_wait_count "$sent" 30 || say "   not everything arrived in 30 s"
wait_queue_empty 30 >/dev/null || say "   the Postfix queue did not drain"
say "   accepted $sent, delivered $(sink_count), left in queue $(queue_count)"
for f in $(sink_files); do
    subj=$(grep -m1 -i '^Subject:' "$f")
    say "   delivered: ${subj:-"(no subject)"}"
done
say "== delivery log"
grep -E 'status=' "$OSP_MAILLOG" | sed 's/^/   /' >&2
say "== stopping everything"
osp_cleanup
exit 0
