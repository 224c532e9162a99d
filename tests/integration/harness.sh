# harness.sh -- shared library for Osprey's integration tests.
#
# Source it from a bash test script:
#
#     #!/bin/bash
#     : "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
#     . "$top_srcdir/tests/integration/harness.sh"
#     osp_require root postfix postgresql swaks   # or "1..0 # SKIP ..."
#     tap_plan 3
#     pg_start || osp_die "PostgreSQL did not start"
#     ...
#
# Everything runs on loopback with private directories under one base
# directory, and a trap stops whatever the harness started -- by PID, never
# by name -- and removes the base directory on any exit: normal end, failure,
# osp_die, SIGINT, SIGTERM, SIGHUP, or the watchdog firing. Postfix runs as
# "postfix -c DIR" with its own queue, loopback listeners only, relaying to smtp-sink.
#
# Rules for test scripts
#   - Call the start functions, tap_* and ok in the main shell, never inside
#     $(...) or a pipeline: state (PIDs, TAP counters) lives in shell
#     variables.
#   - Do not use "set -e"; check results and call osp_die to abort. The
#     harness works with "set -u".
#   - Write diagnostics with tap_diag; stdout is the TAP stream.
#
# Environment read
#   top_srcdir, top_builddir  exported by "make check" (absolute). When unset,
#                     top_srcdir is derived from this file's location and
#                     top_builddir defaults to top_srcdir.
#   OSP_TEST_TIMEOUT  watchdog limit in seconds for the whole script
#                     (default 300); see osp_timeout.
#   OSP_KEEP_TMP=1    keep the base directory after exit for debugging
#                     (processes are still stopped); its path is printed.
#   TMPDIR            where the base directory is made (default /tmp).
#
# Variables exported (each by the function that sets it up)
#   OSP_TOP_SRCDIR OSP_TOP_BUILDDIR  absolute source and build trees
#   OSP_TMP           the private base directory (osp_tmpdir)
#   PGHOST PGPORT PGUSER PGDATABASE OSP_PG_CONNINFO  (pg_start)
#   OSP_PG_BINDIR OSP_PG_DATA OSP_PG_LOG              (pg_start)
#   OSP_SMTP_PORT     the test smtpd listener on 127.0.0.1 (postfix_setup)
#   OSP_SINK_PORT     smtp-sink on 127.0.0.1, Postfix's relayhost
#   OSP_SINK_DIR      one file per message received by smtp-sink (sink_start)
#   OSP_POSTFIX_DIR   the instance's config directory: pass it to
#                     "postfix -c" and "postconf -c"
#   OSP_POSTFIX_BASE  the instance's base (etc/ spool/ data/ log/ below it)
#   OSP_POSTFIX_QUEUE the instance's queue directory
#   OSP_MAILLOG       the instance's maillog_file
#   OSP_REINJECT_PORT reinjection smtpd for a content filter
#                     (postfix_content_filter)
#
# ---------------------------------------------------------------------------
# Functions
#
# Set-up, skipping, cleanup
#   osp_require WHAT...   Skip the whole script ("1..0 # SKIP ...", exit 0)
#                         unless every WHAT is available; the reason names
#                         all that is missing. WHAT: root, postgresql,
#                         postfix, swaks, or any command name.
#   osp_tmpdir            Print the private base directory, $OSP_TMP
#                         (mktemp -d under $TMPDIR or /tmp, mode 755,
#                         root-owned as Postfix requires). The harness makes
#                         it when loaded; cleanup removes it.
#   osp_mkdir NAME        Make and print $OSP_TMP/NAME (safe inside $(...)).
#   osp_on_exit CMD...    Register a cleanup command, run at exit (or by
#                         osp_cleanup) before the harness stops its own
#                         services, last registered first. One argument is
#                         eval'ed as a shell string; several are run as one
#                         command with those exact arguments. Failures are
#                         ignored. Output goes to stderr.
#   osp_track_pid PID     Have cleanup stop PID (TERM, then KILL after 5 s)
#                         if it is still alive at exit.
#   osp_spawn NAME CMD... Start CMD in the background with stdout and stderr
#                         in $OSP_TMP/NAME.log, track its PID, register the
#                         log for failure dumps, set OSP_LAST_PID.
#   osp_managed_pids      Print the PIDs cleanup will stop: postmaster,
#                         smtp-sink, Postfix master, tracked PIDs, watchdog.
#   osp_alive PID / osp_dead PID  Whether PID exists and is not a zombie.
#   osp_kill_pid PID [SECS]  Stop PID now: TERM, wait up to SECS (default
#                         5), then KILL. Returns 0 once it is gone.
#   osp_cleanup           Stop everything and remove the base directory now.
#                         Idempotent; the exit trap calls it. Order:
#                         registered commands, postfix_stop, sink_stop,
#                         pg_stop, tracked PIDs, any remaining child of this
#                         shell, any process whose command line or working
#                         directory is in $OSP_TMP, the watchdog, the base
#                         directory.
#   osp_timeout SECS      (Re)arm the watchdog: after SECS the script's
#                         children get SIGTERM and so does the script, so its
#                         trap reports the unfinished tests and cleans up.
#                         Armed at load time with $OSP_TEST_TIMEOUT.
#   osp_die MSG           Abort: print MSG as a diagnostic and exit 1. The
#                         exit trap prints "not ok" for every planned test
#                         not yet reported, dumps the logs, cleans up.
#   osp_free_port         Print a TCP port in 20000-60000, outside the
#                         kernel's ephemeral range, that nothing uses and
#                         that this script has not handed out before
#                         (bounded retries; returns 1 if none found).
#   osp_wait_until SECS CMD...  Run CMD every 0.1 s until it succeeds
#                         (return 0) or SECS (whole seconds) pass (return 1).
#   osp_add_log FILE      Register a log file to dump when a test fails.
#   osp_dump_logs         Print as diagnostics the maillog lines not shown
#                         yet and the tail of every other known log
#                         (smtp-sink, postfix commands, PostgreSQL,
#                         registered logs). Called at exit after a failure.
#
# TAP (all output on stdout; counters live in the main shell)
#   tap_plan N            Print "1..N". Optional: without it the plan is
#                         printed at the end.
#   tap_ok DESC           Print "ok N - DESC".
#   tap_not_ok DESC [DIAG...]  Print "not ok N - DESC", then each DIAG as a
#                         diagnostic and the maillog lines added since the
#                         previous failure (at most 40).
#   ok DESC CMD [ARG...]  Run CMD in this shell with its output captured;
#                         ok if it exits 0, else not ok plus its output.
#                         Returns CMD's status.
#   tap_is GOT WANT DESC  ok if the two strings are equal, else not ok
#                         with both shown.
#   tap_skip DESC REASON  Print "ok N - DESC # SKIP REASON".
#   tap_skip_all REASON   Print "1..0 # SKIP REASON" and exit 0 (if a plan
#                         was already printed, skip the remaining tests).
#   tap_diag [MSG...]     Print each line of MSG (or of stdin) as "# line".
#   tap_done              Print the plan if tap_plan was not used, and exit
#                         (status 1 if anything failed). Optional: the exit
#                         trap does the same.
#
# PostgreSQL (private server, unix socket only)
#   pg_start              First call: initdb (as user postgres, via runuser)
#                         with the newest /usr/lib/postgresql/*/bin, trust
#                         auth, listen_addresses='' and a random port (the
#                         socket name), then start it, wait for pg_isready
#                         (bounded), create superuser role osprey_admin and
#                         database osprey. Later calls (after pg_stop) start
#                         the same data directory again, for outage tests.
#                         Exports PGHOST (the socket directory, mode 755),
#                         PGPORT, PGUSER=osprey_admin, PGDATABASE=osprey and
#                         OSP_PG_CONNINFO (a libpq keyword/value string).
#                         Returns 1 with diagnostics on failure.
#   pg_stop               pg_ctl stop -m fast (waits up to 20 s); KILL the
#                         postmaster and its children if still there 5 s
#                         later. Without a recorded PID (start interrupted)
#                         it uses postmaster.pid if that PID is ours.
#   pg_restart            pg_stop then pg_start.
#   pg_psql ARG...        psql -X -q -A -t -v ON_ERROR_STOP=1 against it
#                         (prints bare values, '|' between columns), e.g.
#                         pg_psql -c 'SELECT 1+1' prints 2.
#
# smtp-sink (the final destination of all mail)
#   sink_start [OPT...]   Start smtp-sink -u nobody -d $OSP_SINK_DIR/msg.
#                         on 127.0.0.1:$OSP_SINK_PORT (a free port picked
#                         if unset), with extra smtp-sink options OPT (e.g.
#                         -r RCPT to defer, -w 5 to be slow); wait until it
#                         listens. Its output is in $OSP_TMP/sink/sink.log.
#   sink_stop             Stop it (by PID). The dumped messages stay.
#   sink_count            Print how many complete messages arrived (a file
#                         smtp-sink still has open is not counted).
#   sink_files            Print the paths of complete messages, oldest
#                         first.
#   sink_find STRING      Print the complete messages containing STRING
#                         (fixed string); return 1 if none does.
#   sink_wait_count N SECS  Wait until at least N messages arrived.
#
# Postfix (private instance under $OSP_TMP/postfix)
#   postfix_setup [LINE...]  Write the instance (directories, main.cf,
#                         master.cf) without starting it; LINE is a main.cf
#                         "name = value" applied with postconf -e (so it
#                         overrides a default instead of duplicating it).
#                         Called by postfix_start if needed.
#   postfix_start [LINE...]  postfix_setup if needed, apply LINE..., run
#                         "postfix check" and start; wait for the listener.
#                         Returns 1 with diagnostics on failure.
#   postfix_conf NAME=VALUE...  Set main.cf parameters (postconf -e; "name =
#                         value" works too) and reload if running.
#   postfix_master_add LINE...  Append lines to master.cf (an entry and its
#                         "  -o ..." continuation lines) and reload if
#                         running. To replace an entry use
#                         postconf -c "$OSP_POSTFIX_DIR" -Me ... then
#                         postfix_reload.
#   postfix_reload        postfix reload, then wait (bounded) until the
#                         master logs it.
#   postfix_flush         postfix flush: retry deferred mail now (postqueue
#                         -c refuses a private instance; this does not).
#   postfix_restart       postfix_stop then postfix_start (for parameters a
#                         reload does not apply, e.g. inet_interfaces).
#   postfix_stop          postfix stop, then wait for the master PID to
#                         exit (KILL it and its children after 15 s) and for
#                         its children to exit.
#   postfix_content_filter PORT [MAXPROC]  Route all mail through an
#                         after-queue filter listening on 127.0.0.1:PORT
#                         (FILTER_README advanced example: "scan" smtp
#                         transport with XFORWARD, reinjection smtpd on a
#                         free port exported as OSP_REINJECT_PORT). Call
#                         before or after postfix_start. The two log as
#                         postfix/scan/smtp and postfix/reinject/smtpd in
#                         the maillog.
#   queue_count [QUEUE...]  Print how many messages are in the instance's
#                         queue (default: incoming active deferred hold
#                         maildrop), counted with find.
#   wait_queue_empty SECS  Wait until queue_count is 0.
#   maillog_grep ERE      grep -E the maillog (prints matching lines).
#   maillog_wait ERE SECS  Wait until a maillog line matches ERE.
#   osp_swaks ARG...      swaks --server 127.0.0.1:$OSP_SMTP_PORT, with a
#                         15 s timeout, HELO client.test and stdin from
#                         /dev/null (swaks prompts otherwise), plus ARG.
#
# Mail routing of the instance: mydestination is empty and local delivery
# disabled; everything goes to relayhost [127.0.0.1]:$OSP_SINK_PORT.
# Clients in 127.0.0.0/8 may relay anywhere; any client (e.g. one made up
# with "swaks --xclient ADDR=...") may send to example.com, example.net and
# example.org (relay_domains). smtpd_authorized_xclient_hosts = 127.0.0.0/8.
#
# Things found while building this, worth knowing
#   - Postfix re-reads a main.cf/master.cf modified within the last second
#     until it looks settled, which costs ~1.5 s per command and per reload;
#     the harness backdates both files by 2 s after editing them. Edit them
#     through postfix_conf / postfix_master_add, or call postfix_reload
#     (which backdates) after editing by hand.
#   - Postfix logs a master.cf service with its own syslog_name as
#     "postfix/NAME/smtpd", e.g. postfix/reinject/smtpd, postfix/scan/smtp.
#   - smtp-sink opens a dump file at MAIL FROM and closes it at "."; files
#     still open are not counted. It runs as nobody, so $OSP_SINK_DIR is
#     owned by nobody.
#   - initdb and pg_ctl refuse root: they run as postgres via runuser from
#     $OSP_TMP/pg (owned by postgres). The socket directory is mode 755 and
#     the socket 0777 with trust auth, so an unprivileged daemon can connect
#     too; any local user could, for the life of the test.
#   - Where PID 1 reaps orphans lazily (some containers), stopped daemons
#     stay as zombies for a while; osp_alive treats zombies as gone.
#   - There is no syslog: Postfix logs only to $OSP_MAILLOG (postlogd).
# ---------------------------------------------------------------------------

if [ -z "${BASH_VERSION:-}" ]; then
    echo "1..0 # SKIP harness.sh needs bash"
    exit 0
fi
if [ -n "${_OSP_HARNESS_LOADED:-}" ]; then
    return 0
fi
_OSP_HARNESS_LOADED=1

export LC_ALL=C
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH="$PATH:/usr/sbin:/sbin" ;;
esac
export PATH

OSP_TEST_NAME=${0##*/}
OSP_TEST_NAME=${OSP_TEST_NAME%.sh}
if [ -z "${top_srcdir:-}" ]; then
    top_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fi
OSP_TOP_SRCDIR=$(cd "$top_srcdir" && pwd)
OSP_TOP_BUILDDIR=$(cd "${top_builddir:-$OSP_TOP_SRCDIR}" 2>/dev/null && pwd ||
    echo "${top_builddir:-$OSP_TOP_SRCDIR}")
export OSP_TOP_SRCDIR OSP_TOP_BUILDDIR

# The TAP stream and stderr as they were when the harness was loaded: the exit
# trap writes there even if the signal arrived while a command's output was
# redirected (e.g. inside "ok", which captures it). Daemons the harness starts
# get these descriptors closed.
exec {_osp_stdout}>&1 {_osp_stderr}>&2

# Internal state (main shell only). Values inherited from a parent test
# (e.g. a script that runs another harness user) must not leak in.
unset OSP_TMP OSP_SMTP_PORT OSP_SINK_PORT OSP_SINK_DIR OSP_REINJECT_PORT \
    OSP_POSTFIX_DIR OSP_POSTFIX_BASE OSP_POSTFIX_QUEUE OSP_MAILLOG \
    OSP_PG_BINDIR OSP_PG_DATA OSP_PG_LOG OSP_PG_CONNINFO OSP_LAST_PID \
    PGHOST PGPORT PGUSER PGDATABASE
OSP_TMP=
_osp_main_pid=$$
_osp_cleanup_cmds=()
_osp_pids=()
_osp_logs=()
_osp_cleaned=
_osp_watchdog_pid=
_osp_tap_plan=
_osp_tap_n=0
_osp_tap_failed=0
_osp_tap_skipped_all=
_osp_abort_reason=
_osp_maillog_shown=0
_osp_pg_pid=
_osp_pg_initialized=
_osp_sink_pid=
_osp_pf_master_pid=
_osp_pf_ready=

# ------------------------------------------------------------------ TAP

# _osp_tap_desc DESC -- a description safe for TAP ('#' starts a directive)
_osp_tap_desc() {
    local d=${1//$'\n'/ }
    printf '%s' "${d//#/\\#}"
}

tap_diag() {
    local line
    if [ $# -eq 0 ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            printf '# %s\n' "$line"
        done
        return 0
    fi
    for line in "$@"; do
        printf '%s\n' "$line" | while IFS= read -r l || [ -n "$l" ]; do
            printf '# %s\n' "$l"
        done
    done
}

tap_plan() {
    _osp_tap_plan=$1
    echo "1..$1"
}

tap_ok() {
    _osp_tap_n=$((_osp_tap_n + 1))
    echo "ok $_osp_tap_n - $(_osp_tap_desc "$1")"
}

tap_not_ok() {
    local desc=$1
    shift
    _osp_tap_n=$((_osp_tap_n + 1))
    _osp_tap_failed=$((_osp_tap_failed + 1))
    echo "not ok $_osp_tap_n - $(_osp_tap_desc "$desc")"
    [ $# -eq 0 ] || tap_diag "$@"
    _osp_maillog_since_last 40
}

tap_skip() {
    _osp_tap_n=$((_osp_tap_n + 1))
    echo "ok $_osp_tap_n - $(_osp_tap_desc "$1") # SKIP $(_osp_tap_desc "$2")"
}

ok() {
    local desc=$1 out rc
    shift
    _osp_need_tmp
    out=$(_osp_scratch)
    "$@" >"$out" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "command failed (exit $rc): $*"
        if [ -s "$out" ]; then
            tail -n 30 "$out" | sed 's/^# //' | tap_diag
        fi
    fi
    rm -f "$out"
    return $rc
}

tap_is() {
    if [ "$1" = "$2" ]; then
        tap_ok "$3"
    else
        tap_not_ok "$3" "got:      '$1'" "expected: '$2'"
        return 1
    fi
}

tap_skip_all() {
    if [ -n "$_osp_tap_plan" ]; then
        while [ "$_osp_tap_n" -lt "$_osp_tap_plan" ]; do
            tap_skip "test $((_osp_tap_n + 1))" "$1"
        done
    elif [ "$_osp_tap_n" -gt 0 ]; then
        tap_diag "skipping the rest: $1"
    else
        echo "1..0 # SKIP $1"
        _osp_tap_skipped_all=1
    fi
    exit 0
}

tap_done() {
    exit 0
}

osp_die() {
    _osp_abort_reason=${1:-aborted}
    tap_diag "Aborting: $_osp_abort_reason"
    exit 1
}

# --------------------------------------------------------------- helpers

# _osp_now_ms -- sets _osp_now to milliseconds since the epoch
_osp_now_ms() {
    local t=${EPOCHREALTIME//[!0-9]/}
    _osp_now=$((10#$t / 1000))
}

osp_wait_until() {
    local secs=$1 deadline
    shift
    _osp_now_ms
    deadline=$((_osp_now + ${secs%.*} * 1000))
    while :; do
        "$@" && return 0
        _osp_now_ms
        [ "$_osp_now" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# osp_alive PID -- the process exists and is not a zombie
osp_alive() {
    local st
    [ -n "${1:-}" ] || return 1
    kill -0 "$1" 2>/dev/null || return 1
    st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
    [ "$st" != Z ]
}

osp_dead() {
    ! osp_alive "$1"
}

# _osp_children PID -- direct children of PID
_osp_children() {
    local me=${BASHPID:-}
    ps -o pid= --ppid "$1" 2>/dev/null | while read -r p; do
        [ "$p" = "$me" ] || echo "$p"
    done
}

# _osp_pid_is_ours PID -- PID runs from, or names a path in, our base dir
# (guards PIDs read from pid files against reuse by unrelated processes)
_osp_pid_is_ours() {
    local args w
    [ -n "$OSP_TMP" ] && osp_alive "$1" || return 1
    mapfile -d '' args 2>/dev/null <"/proc/$1/cmdline"
    case " ${args[*]} " in *"$OSP_TMP"*) return 0 ;; esac
    w=$(readlink "/proc/$1/cwd" 2>/dev/null)
    case "$w" in "$OSP_TMP"*) return 0 ;; esac
    return 1
}

# _osp_sweep_tmp -- last resort at cleanup: stop every process (other than
# this shell) whose command line or working directory is in $OSP_TMP, e.g.
# a postmaster or initdb whose start was interrupted before its PID was
# known. Only processes of this test can name its mktemp directory.
_osp_sweep_tmp() {
    local p pid args pids=() seen=" "
    [ -n "$OSP_TMP" ] && [ -d "$OSP_TMP" ] || return 0
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = "$_osp_main_pid" ] && continue
        mapfile -d '' args 2>/dev/null <"$p/cmdline" || continue
        case " ${args[*]} " in
        *"$OSP_TMP"*) pids+=("$pid") seen="$seen$pid " ;;
        esac
    done
    for p in $(find /proc -mindepth 2 -maxdepth 2 -name cwd \
        -lname "$OSP_TMP*" -printf '%h\n' 2>/dev/null); do
        pid=${p#/proc/}
        [ "$pid" = "$_osp_main_pid" ] && continue
        case $seen in *" $pid "*) continue ;; esac
        pids+=("$pid")
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    echo "harness: stopping leftover processes in $OSP_TMP: ${pids[*]}" >&2
    kill -TERM "${pids[@]}" 2>/dev/null
    for pid in "${pids[@]}"; do
        osp_wait_until 5 osp_dead "$pid" || kill -KILL "$pid" 2>/dev/null
    done
}

osp_kill_pid() {
    local pid=$1 secs=${2:-5}
    osp_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    osp_wait_until "$secs" osp_dead "$pid" && return 0
    echo "harness: PID $pid ignored SIGTERM for ${secs}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    osp_wait_until 5 osp_dead "$pid"
}

osp_track_pid() {
    _osp_pids+=("$1")
}

osp_on_exit() {
    if [ $# -eq 1 ]; then
        _osp_cleanup_cmds+=("$1")
    else
        _osp_cleanup_cmds+=("$(printf '%q ' "$@")")
    fi
}

osp_add_log() {
    _osp_logs+=("$1")
}

osp_managed_pids() {
    local p
    for p in "$_osp_pg_pid" "$_osp_sink_pid" "$_osp_pf_master_pid" \
        "${_osp_pids[@]}" "$_osp_watchdog_pid"; do
        [ -n "$p" ] && echo "$p"
    done
    return 0
}

osp_tmpdir() {
    if [ -z "$OSP_TMP" ]; then
        local d
        d=$(mktemp -d "${TMPDIR:-/tmp}/osprey-$OSP_TEST_NAME.XXXXXX") ||
            osp_die "mktemp -d failed"
        # Postfix wants every directory above its queue root-owned and not
        # group/world writable; the postgres and nobody users must be able
        # to reach their own subdirectories.
        chmod 755 "$d"
        OSP_TMP=$(cd -P "$d" && pwd -P)
        export OSP_TMP
    fi
    echo "$OSP_TMP"
}

_osp_need_tmp() {
    [ -n "$OSP_TMP" ] || osp_tmpdir >/dev/null
}

osp_mkdir() {
    [ -n "$OSP_TMP" ] || return 1
    mkdir -p "$OSP_TMP/$1" && echo "$OSP_TMP/$1"
}

# _osp_scratch -- a scratch file name (main shell or subshell)
_osp_scratch() {
    if [ -n "$OSP_TMP" ] && [ -d "$OSP_TMP" ]; then
        mktemp "$OSP_TMP/scratch.XXXXXX"
    else
        mktemp "${TMPDIR:-/tmp}/osprey-scratch.XXXXXX"
    fi
}

osp_spawn() {
    local name=$1
    shift
    _osp_need_tmp
    "$@" >"$OSP_TMP/$name.log" 2>&1 </dev/null \
        {_osp_stdout}>&- {_osp_stderr}>&- &
    OSP_LAST_PID=$!
    disown "$OSP_LAST_PID" 2>/dev/null
    osp_track_pid "$OSP_LAST_PID"
    osp_add_log "$OSP_TMP/$name.log"
}

_osp_port_in_use() {
    local p=$1 hex
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]
        return
    fi
    printf -v hex ':%04X ' "$p"
    grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

osp_free_port() {
    local lo=20000 hi=60000 elo ehi p i used
    _osp_need_tmp
    if read -r elo ehi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
        :
    else
        elo=0 ehi=0
    fi
    used="$OSP_TMP/.ports"
    for ((i = 0; i < 200; i++)); do
        p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        # Outside the ephemeral range (unless it covers everything), so an
        # outgoing connection cannot take the port before we bind it.
        if [ "$i" -lt 150 ] && [ "$p" -ge "$elo" ] && [ "$p" -le "$ehi" ]; then
            continue
        fi
        grep -qx "$p" "$used" 2>/dev/null && continue
        _osp_port_in_use "$p" && continue
        echo "$p" >>"$used"
        echo "$p"
        return 0
    done
    echo "harness: no free port found" >&2
    return 1
}

_osp_port_listening() {
    [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
}

# _osp_maillog_since_last MAX -- maillog lines added since the last call
_osp_maillog_since_last() {
    local f=${OSP_MAILLOG:-} total
    [ -n "$f" ] && [ -f "$f" ] || return 0
    total=$(wc -l <"$f")
    if [ "$total" -gt "$_osp_maillog_shown" ]; then
        tap_diag "maillog (new lines, at most $1):"
        tail -n +"$((_osp_maillog_shown + 1))" "$f" | tail -n "$1" |
            sed 's/^/  /' | tap_diag
        _osp_maillog_shown=$total
    fi
}

osp_dump_logs() {
    local f
    _osp_maillog_since_last 40
    for f in ${OSP_TMP:+$OSP_TMP/sink/sink.log} \
        ${OSP_TMP:+$OSP_TMP/postfix/postfix-cmd.log} ${OSP_PG_LOG:-} \
        "${_osp_logs[@]}"; do
        [ -s "$f" ] || continue
        tap_diag "---- last lines of $f"
        tail -n 25 "$f" | sed 's/^/  /' | tap_diag
    done
}

# ---------------------------------------------------------------- skip

osp_require() {
    local what missing=() cmd
    for what in "$@"; do
        case $what in
        root)
            [ "$(id -u)" = 0 ] || missing+=("not running as root")
            ;;
        postgresql)
            if [ -z "$(_osp_pg_find_bindir)" ]; then
                missing+=("package postgresql (no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin)")
            elif ! id postgres >/dev/null 2>&1; then
                missing+=("package postgresql (no postgres user)")
            fi
            for cmd in psql pg_isready runuser; do
                command -v "$cmd" >/dev/null 2>&1 ||
                    missing+=("command $cmd")
            done
            ;;
        postfix)
            for cmd in postfix postconf smtp-sink smtp-source; do
                command -v "$cmd" >/dev/null 2>&1 ||
                    missing+=("package postfix (no $cmd)")
            done
            id postfix >/dev/null 2>&1 ||
                missing+=("package postfix (no postfix user)")
            getent group postdrop >/dev/null 2>&1 ||
                missing+=("package postfix (no postdrop group)")
            id nobody >/dev/null 2>&1 || missing+=("user nobody")
            ;;
        swaks)
            command -v swaks >/dev/null 2>&1 || missing+=("package swaks")
            ;;
        *)
            command -v "$what" >/dev/null 2>&1 || missing+=("command $what")
            ;;
        esac
    done
    for cmd in ps ss mktemp; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("command $cmd")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        tap_skip_all "$(printf '%s; ' "${missing[@]}" | sed 's/; $//')"
    fi
}

# ------------------------------------------------------------- cleanup

osp_cleanup() {
    local i pid c
    [ -z "$_osp_cleaned" ] || return 0
    _osp_cleaned=1
    for ((i = ${#_osp_cleanup_cmds[@]} - 1; i >= 0; i--)); do
        eval "${_osp_cleanup_cmds[i]}" >&2 || true
    done
    postfix_stop
    sink_stop
    pg_stop
    for pid in "${_osp_pids[@]}"; do
        osp_kill_pid "$pid" 5
    done
    # Anything else this shell started and left running (e.g. "cmd &").
    for c in $(_osp_children "$_osp_main_pid"); do
        [ "$c" = "$_osp_watchdog_pid" ] && continue
        # Generous: it may be a script with its own cleanup to run.
        osp_kill_pid "$c" 20
    done
    _osp_sweep_tmp
    if [ -n "$_osp_watchdog_pid" ]; then
        kill -TERM "$_osp_watchdog_pid" 2>/dev/null
        osp_wait_until 3 osp_dead "$_osp_watchdog_pid"
        _osp_watchdog_pid=
    fi
    if [ -n "$OSP_TMP" ] && [ -d "$OSP_TMP" ]; then
        if [ "${OSP_KEEP_TMP:-0}" = 1 ]; then
            echo "harness: keeping $OSP_TMP" >&2
        else
            rm -rf "$OSP_TMP"
        fi
    fi
    return 0
}

_osp_exit_trap() {
    local rc=$?
    # A subshell forked just before a signal arrived may still run the
    # parent's traps: only the main shell reports and cleans up.
    [ "${BASHPID:-}" = "$_osp_main_pid" ] || exit "$rc"
    exec 1>&"$_osp_stdout" 2>&"$_osp_stderr"
    trap '' INT TERM HUP
    if [ -n "$_osp_abort_reason" ] && [ "$rc" -eq 0 ]; then
        rc=1
    fi
    if [ -z "$_osp_tap_skipped_all" ]; then
        local why=${_osp_abort_reason:-script exited with status $rc before running it}
        if [ -z "$_osp_tap_plan" ] && [ "$_osp_tap_n" -eq 0 ] && [ "$rc" -ne 0 ]; then
            # Died before planning: one failing test says so.
            _osp_tap_plan=1
            echo "1..1"
        fi
        if [ -n "$_osp_tap_plan" ]; then
            while [ "$_osp_tap_n" -lt "$_osp_tap_plan" ]; do
                tap_not_ok "test $((_osp_tap_n + 1)) not run: $why"
            done
        else
            echo "1..$_osp_tap_n"
        fi
        if [ "$_osp_tap_failed" -gt 0 ]; then
            osp_dump_logs
        fi
    fi
    osp_cleanup
    if [ "$_osp_tap_failed" -gt 0 ] && [ "$rc" -eq 0 ]; then
        rc=1
    fi
    exit "$rc"
}

_osp_signal_trap() {
    [ "${BASHPID:-}" = "$_osp_main_pid" ] || exit "$2"
    _osp_abort_reason="killed by SIG$1"
    exit "$2"
}

trap _osp_exit_trap EXIT
trap '_osp_signal_trap INT 130' INT
trap '_osp_signal_trap TERM 143' TERM
trap '_osp_signal_trap HUP 129' HUP

osp_timeout() {
    local secs=$1 main=$_osp_main_pid
    if [ -n "$_osp_watchdog_pid" ]; then
        kill -TERM "$_osp_watchdog_pid" 2>/dev/null
        osp_wait_until 3 osp_dead "$_osp_watchdog_pid"
    fi
    (
        # Sleep in 1 s steps: if SIGTERM lands before $sp is set, the
        # orphaned sleep is gone within a second.
        sp=
        trap '[ -z "$sp" ] || { kill $sp; wait $sp; } 2>/dev/null; exit 0' TERM
        trap - EXIT INT HUP
        end=$((SECONDS + secs))
        while [ "$SECONDS" -lt "$end" ]; do
            sleep 1 &
            sp=$!
            wait "$sp"
            sp=
        done
        echo "harness: watchdog: $OSP_TEST_NAME exceeded ${secs}s" >&2
        # The script may be blocked in a foreground command, which delays its
        # trap: stop its children too.
        kill -TERM "$main" 2>/dev/null
        for c in $(ps -o pid= --ppid "$main"); do
            [ "$c" = "$BASHPID" ] || kill -TERM "$c" 2>/dev/null
        done
    ) </dev/null {_osp_stdout}>&- {_osp_stderr}>&- &
    _osp_watchdog_pid=$!
    disown "$_osp_watchdog_pid" 2>/dev/null
}

osp_timeout "${OSP_TEST_TIMEOUT:-300}"
# Made now, so that functions run inside $(...) can rely on it.
osp_tmpdir >/dev/null

# ---------------------------------------------------------- PostgreSQL

_osp_pg_find_bindir() {
    local d best=
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            best=$d
        fi
    done
    echo "$best"
}

# _osp_pg_ctl ARG... -- pg_ctl as the postgres user, from a directory it
# can read
_osp_pg_ctl() {
    (cd "$OSP_TMP/pg" && runuser -u postgres -- "$OSP_PG_BINDIR/pg_ctl" \
        -D "$OSP_PG_DATA" "$@" </dev/null {_osp_stdout}>&- {_osp_stderr}>&-)
}

_osp_pg_ready() {
    pg_isready -q -h "$OSP_TMP/pg/run" -p "$PGPORT" -t 2 >/dev/null 2>&1
}

pg_start() {
    local pgdir run
    _osp_need_tmp
    if osp_alive "$_osp_pg_pid"; then
        return 0
    fi
    pgdir=$OSP_TMP/pg
    run=$pgdir/run
    if [ -z "$_osp_pg_initialized" ]; then
        OSP_PG_BINDIR=$(_osp_pg_find_bindir)
        if [ -z "$OSP_PG_BINDIR" ]; then
            tap_diag "pg_start: no PostgreSQL under /usr/lib/postgresql"
            return 1
        fi
        OSP_PG_DATA=$pgdir/data
        OSP_PG_LOG=$pgdir/postgres.log
        export OSP_PG_BINDIR OSP_PG_DATA OSP_PG_LOG
        mkdir -p "$OSP_PG_DATA" "$run" || return 1
        chown -R postgres:postgres "$pgdir" || return 1
        chmod 755 "$pgdir" "$run"
        chmod 700 "$OSP_PG_DATA"
        PGPORT=$(osp_free_port) || return 1
        if ! (cd "$pgdir" && runuser -u postgres -- "$OSP_PG_BINDIR/initdb" \
            -D "$OSP_PG_DATA" -U postgres -A trust -E UTF8 --no-locale \
            --no-sync >"$pgdir/initdb.log" 2>&1); then
            tap_diag "pg_start: initdb failed:"
            tail -n 20 "$pgdir/initdb.log" | tap_diag
            return 1
        fi
        cat >>"$OSP_PG_DATA/postgresql.conf" <<EOF

# Osprey test instance: unix socket only, in a private directory.
listen_addresses = ''
port = $PGPORT
unix_socket_directories = '$run'
unix_socket_permissions = 0777
max_connections = 100
shared_buffers = 32MB
# A throw-away cluster: durability across an OS crash does not matter.
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
EOF
        chown postgres:postgres "$OSP_PG_DATA/postgresql.conf"
    fi
    touch "$OSP_PG_LOG"
    chown postgres:postgres "$OSP_PG_LOG"
    if ! _osp_pg_ctl -l "$OSP_PG_LOG" -w -t 30 -s start >>"$pgdir/pg_ctl.log" 2>&1; then
        tap_diag "pg_start: pg_ctl start failed:"
        tail -n 20 "$pgdir/pg_ctl.log" "$OSP_PG_LOG" | tap_diag
        # It may still have come up late; remember it so cleanup stops it.
        read -r _osp_pg_pid 2>/dev/null <"$OSP_PG_DATA/postmaster.pid"
        return 1
    fi
    read -r _osp_pg_pid <"$OSP_PG_DATA/postmaster.pid"
    export PGHOST=$run PGPORT PGUSER=osprey_admin PGDATABASE=osprey
    unset PGHOSTADDR PGSERVICE PGSERVICEFILE PGPASSWORD PGPASSFILE PGOPTIONS \
        PGSSLMODE PGREQUIRESSL PGAPPNAME
    export PGCONNECT_TIMEOUT=10
    OSP_PG_CONNINFO="host='$run' port=$PGPORT user=osprey_admin dbname=osprey"
    export OSP_PG_CONNINFO
    if ! osp_wait_until 30 _osp_pg_ready; then
        tap_diag "pg_start: server not ready after 30s"
        tail -n 20 "$OSP_PG_LOG" | tap_diag
        return 1
    fi
    if [ -z "$_osp_pg_initialized" ]; then
        if ! psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres \
            -c "CREATE ROLE osprey_admin SUPERUSER LOGIN" \
            -c "CREATE DATABASE osprey OWNER osprey_admin" \
            >"$pgdir/setup.log" 2>&1; then
            tap_diag "pg_start: creating role/database failed:"
            tap_diag <"$pgdir/setup.log"
            return 1
        fi
        _osp_pg_initialized=1
    fi
    return 0
}

pg_stop() {
    local pid=$_osp_pg_pid kids k
    if [ -z "$pid" ] && [ -n "${OSP_PG_DATA:-}" ]; then
        # Start interrupted before the PID was recorded?
        read -r pid 2>/dev/null <"$OSP_PG_DATA/postmaster.pid"
        _osp_pid_is_ours "$pid" || pid=
    fi
    [ -n "$pid" ] || return 0
    if osp_alive "$pid"; then
        kids=$(_osp_children "$pid")
        _osp_pg_ctl -m fast -w -t 20 -s stop >>"$OSP_TMP/pg/pg_ctl.log" 2>&1
        if ! osp_wait_until 5 osp_dead "$pid"; then
            echo "harness: postmaster $pid did not stop, killing it" >&2
            kill -KILL "$pid" $kids 2>/dev/null
            osp_wait_until 5 osp_dead "$pid"
        fi
        for k in $kids; do
            osp_kill_pid "$k" 3
        done
    fi
    _osp_pg_pid=
    return 0
}

pg_restart() {
    pg_stop
    pg_start
}

pg_psql() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 "$@" </dev/null
}

# ------------------------------------------------------------ smtp-sink

sink_start() {
    _osp_need_tmp
    if osp_alive "$_osp_sink_pid"; then
        return 0
    fi
    if [ -z "${OSP_SINK_PORT:-}" ]; then
        OSP_SINK_PORT=$(osp_free_port) || return 1
    fi
    export OSP_SINK_PORT
    OSP_SINK_DIR=$OSP_TMP/sink/msgs
    export OSP_SINK_DIR
    mkdir -p "$OSP_SINK_DIR" || return 1
    # smtp-sink writes the dump files after switching to nobody.
    chown nobody "$OSP_SINK_DIR"
    smtp-sink -u nobody -d "$OSP_SINK_DIR/msg." "$@" \
        "127.0.0.1:$OSP_SINK_PORT" 256 >>"$OSP_TMP/sink/sink.log" 2>&1 </dev/null \
        {_osp_stdout}>&- {_osp_stderr}>&- &
    _osp_sink_pid=$!
    disown "$_osp_sink_pid" 2>/dev/null
    if ! osp_wait_until 10 _osp_port_listening "$OSP_SINK_PORT" ||
        ! osp_alive "$_osp_sink_pid"; then
        tap_diag "sink_start: smtp-sink is not listening on port $OSP_SINK_PORT"
        tap_diag <"$OSP_TMP/sink/sink.log"
        return 1
    fi
    return 0
}

sink_stop() {
    [ -n "$_osp_sink_pid" ] || return 0
    osp_kill_pid "$_osp_sink_pid" 5
    _osp_sink_pid=
}

sink_files() {
    local f open=
    [ -n "${OSP_SINK_DIR:-}" ] && [ -d "$OSP_SINK_DIR" ] || return 0
    # List first, then look at what is open: a file opened after the listing
    # is not listed, and one closed in between is complete.
    local files
    files=$(ls -1tr "$OSP_SINK_DIR" 2>/dev/null | grep '^msg\.')
    [ -n "$files" ] || return 0
    if [ -n "$_osp_sink_pid" ] && [ -d "/proc/$_osp_sink_pid/fd" ]; then
        open=$(find "/proc/$_osp_sink_pid/fd" -mindepth 1 -maxdepth 1 \
            -exec readlink {} + 2>/dev/null)
    fi
    while IFS= read -r f; do
        case $'\n'"$open"$'\n' in
        *$'\n'"$OSP_SINK_DIR/$f"$'\n'*) ;;
        *) echo "$OSP_SINK_DIR/$f" ;;
        esac
    done <<<"$files"
}

sink_count() {
    local n
    n=$(sink_files | wc -l)
    echo $((n))
}

sink_find() {
    local files
    files=$(sink_files)
    [ -n "$files" ] || return 1
    # shellcheck disable=SC2086
    grep -lF -- "$1" $files 2>/dev/null
}

_osp_sink_has() {
    [ "$(sink_count)" -ge "$1" ]
}

sink_wait_count() {
    osp_wait_until "${2:-30}" _osp_sink_has "$1" && return 0
    tap_diag "sink_wait_count: $(sink_count) of $1 messages after ${2:-30}s"
    return 1
}

# -------------------------------------------------------------- Postfix

# _osp_pf_backdate -- set main.cf/master.cf mtime 2 s in the past. Postfix
# re-reads a configuration file modified within the last second until it
# looks settled (about 1.5 s of pauses per program that reads it); our files
# are complete when this runs.
_osp_pf_backdate() {
    touch -d "@$((${EPOCHSECONDS:-$(date +%s)} - 2))" \
        "$OSP_POSTFIX_DIR/main.cf" "$OSP_POSTFIX_DIR/master.cf"
}

_osp_pf_cmd() {
    _osp_pf_backdate
    echo "+ postfix $*" >>"$OSP_POSTFIX_BASE/postfix-cmd.log"
    postfix -c "$OSP_POSTFIX_DIR" "$@" >>"$OSP_POSTFIX_BASE/postfix-cmd.log" 2>&1 \
        </dev/null {_osp_stdout}>&- {_osp_stderr}>&-
}

postfix_setup() {
    local base line
    _osp_need_tmp
    if [ -n "$_osp_pf_ready" ]; then
        for line in "$@"; do
            postconf -c "$OSP_POSTFIX_DIR" -e "$line" || return 1
        done
        return 0
    fi
    base=$OSP_TMP/postfix
    OSP_POSTFIX_BASE=$base
    OSP_POSTFIX_DIR=$base/etc
    OSP_POSTFIX_QUEUE=$base/spool
    OSP_MAILLOG=$base/log/maillog
    if [ -z "${OSP_SMTP_PORT:-}" ]; then
        OSP_SMTP_PORT=$(osp_free_port) || return 1
    fi
    if [ -z "${OSP_SINK_PORT:-}" ]; then
        OSP_SINK_PORT=$(osp_free_port) || return 1
    fi
    export OSP_POSTFIX_BASE OSP_POSTFIX_DIR OSP_POSTFIX_QUEUE OSP_MAILLOG \
        OSP_SMTP_PORT OSP_SINK_PORT
    mkdir -p "$base/etc" "$base/spool" "$base/data" "$base/log" || return 1
    chown root:root "$base" "$base/etc" "$base/spool" "$base/log"
    chmod 755 "$base" "$base/etc" "$base/spool" "$base/log"
    chown postfix "$base/data"
    chmod 700 "$base/data"

    # '#' starts a comment only at the start of a line; paths are literal.
    cat >"$base/etc/main.cf" <<EOF
# Osprey integration test instance (tests/integration/harness.sh)
compatibility_level = 3.6
config_directory = $base/etc
queue_directory = $base/spool
data_directory = $base/data
mail_owner = postfix
setgid_group = postdrop
myhostname = test.localdomain
mydomain = localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relay_domains = example.com, example.net, example.org
smtpd_relay_restrictions = permit_mynetworks, permit_auth_destination, reject
relayhost = [127.0.0.1]:$OSP_SINK_PORT
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_error_sleep_time = 0s
smtp_connect_timeout = 5s
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
biff = no
maillog_file = $base/log/maillog
maillog_file_prefixes = $base/log
EOF
    # Every service unchrooted: the chroot jail lacks what they need here.
    cat >"$base/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$OSP_SMTP_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    chmod 644 "$base/etc/main.cf" "$base/etc/master.cf"
    _osp_pf_ready=1
    for line in "$@"; do
        postconf -c "$OSP_POSTFIX_DIR" -e "$line" || return 1
    done
    return 0
}

_osp_pf_running() {
    osp_alive "$_osp_pf_master_pid"
}

postfix_start() {
    postfix_setup "$@" || return 1
    if _osp_pf_running; then
        postfix_reload
        return
    fi
    if ! _osp_pf_cmd check; then
        tap_diag "postfix_start: postfix check failed:"
        tail -n 20 "$OSP_POSTFIX_BASE/postfix-cmd.log" | tap_diag
        return 1
    fi
    if ! _osp_pf_cmd start; then
        tap_diag "postfix_start: postfix start failed:"
        tail -n 20 "$OSP_POSTFIX_BASE/postfix-cmd.log" | tap_diag
        read -r _osp_pf_master_pid 2>/dev/null <"$OSP_POSTFIX_QUEUE/pid/master.pid"
        return 1
    fi
    read -r _osp_pf_master_pid 2>/dev/null <"$OSP_POSTFIX_QUEUE/pid/master.pid"
    if ! _osp_pf_running; then
        tap_diag "postfix_start: no master process (pid file: '$_osp_pf_master_pid')"
        _osp_maillog_since_last 20
        return 1
    fi
    if ! osp_wait_until 10 _osp_port_listening "$OSP_SMTP_PORT"; then
        tap_diag "postfix_start: nothing listens on 127.0.0.1:$OSP_SMTP_PORT"
        _osp_maillog_since_last 20
        return 1
    fi
    return 0
}

_osp_maillog_count() {
    local n
    n=$(grep -c -E -- "$1" "$OSP_MAILLOG" 2>/dev/null)
    echo $((n))
}

_osp_maillog_count_gt() {
    [ "$(_osp_maillog_count "$1")" -gt "$2" ]
}

postfix_reload() {
    local before
    _osp_pf_running || return 0
    before=$(_osp_maillog_count 'master\[[0-9]+\]: reload -- ')
    _osp_pf_cmd reload || return 1
    if ! osp_wait_until 10 _osp_maillog_count_gt \
        'master\[[0-9]+\]: reload -- ' "$before"; then
        tap_diag "postfix_reload: no reload logged after 10s"
        return 1
    fi
    # Old-generation processes exit once they see the reload.
    sleep 0.3
    return 0
}

postfix_conf() {
    local kv
    [ -n "$_osp_pf_ready" ] || postfix_setup || return 1
    for kv in "$@"; do
        postconf -c "$OSP_POSTFIX_DIR" -e "$kv" || return 1
    done
    postfix_reload
}

postfix_master_add() {
    local line
    [ -n "$_osp_pf_ready" ] || postfix_setup || return 1
    for line in "$@"; do
        printf '%s\n' "$line" >>"$OSP_POSTFIX_DIR/master.cf"
    done
    postfix_reload
}

postfix_stop() {
    local pid=$_osp_pf_master_pid kids k
    if [ -z "$pid" ] && [ -n "${OSP_POSTFIX_QUEUE:-}" ]; then
        # Start interrupted before the PID was recorded?
        read -r pid 2>/dev/null <"$OSP_POSTFIX_QUEUE/pid/master.pid"
        _osp_pid_is_ours "$pid" || pid=
    fi
    [ -n "$pid" ] || return 0
    if osp_alive "$pid"; then
        kids=$(_osp_children "$pid")
        _osp_pf_cmd stop
        if ! osp_wait_until 15 osp_dead "$pid"; then
            kids="$kids $(_osp_children "$pid")"
            echo "harness: Postfix master $pid did not stop, killing it" >&2
            kill -KILL "$pid" 2>/dev/null
            osp_wait_until 5 osp_dead "$pid"
        fi
        for k in $kids; do
            osp_kill_pid "$k" 5
        done
    fi
    _osp_pf_master_pid=
    return 0
}

postfix_flush() {
    _osp_pf_running || return 1
    _osp_pf_cmd flush
}

postfix_restart() {
    postfix_stop
    postfix_start
}

postfix_content_filter() {
    local fport=$1 maxproc=${2:-10}
    [ -n "$_osp_pf_ready" ] || postfix_setup || return 1
    if [ -z "${OSP_REINJECT_PORT:-}" ]; then
        OSP_REINJECT_PORT=$(osp_free_port) || return 1
        export OSP_REINJECT_PORT
        cat >>"$OSP_POSTFIX_DIR/master.cf" <<EOF
scan      unix  -       -       n       -       $maxproc      smtp
  -o syslog_name=postfix/scan
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
127.0.0.1:$OSP_REINJECT_PORT inet n - n - - smtpd
  -o syslog_name=postfix/reinject
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_data_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
EOF
    fi
    postfix_conf "content_filter = scan:[127.0.0.1]:$fport" \
        "receive_override_options = no_address_mappings"
}

_osp_queue_dirs() {
    local q
    for q in ${*:-incoming active deferred hold maildrop}; do
        echo "$OSP_POSTFIX_QUEUE/$q"
    done
}

queue_count() {
    local dirs n
    [ -n "${OSP_POSTFIX_QUEUE:-}" ] || { echo 0; return 0; }
    dirs=$(_osp_queue_dirs "$@")
    # shellcheck disable=SC2086
    n=$(find $dirs -type f 2>/dev/null | wc -l)
    echo $((n))
}

_osp_queue_empty() {
    [ "$(queue_count)" -eq 0 ]
}

wait_queue_empty() {
    osp_wait_until "${1:-30}" _osp_queue_empty && return 0
    tap_diag "wait_queue_empty: $(queue_count) messages still queued after ${1:-30}s"
    return 1
}

maillog_grep() {
    grep -E -- "$1" "$OSP_MAILLOG" 2>/dev/null
}

_osp_maillog_has() {
    grep -qE -- "$1" "$OSP_MAILLOG" 2>/dev/null
}

maillog_wait() {
    osp_wait_until "${2:-30}" _osp_maillog_has "$1" && return 0
    tap_diag "maillog_wait: no line matching /$1/ after ${2:-30}s"
    return 1
}

osp_swaks() {
    swaks --server "127.0.0.1:$OSP_SMTP_PORT" --timeout 15 \
        --helo client.test "$@" </dev/null
}

# ===========================================================================
# Additions for the store/ tests (tests/integration/store_*.sh): schema
# loading and a streaming-replication standby of the private server.
# Added as a separate section; nothing above depends on it.
#
#   pg_schema_load        "ospreyctl db migrate" into $PGDATABASE when
#                         ospreyctl is built, else apply sql/NNN_*.sql in
#                         order, each in one transaction.
#   pg_standby_start      pg_basebackup -R from the running primary into
#                         $OSP_TMP/pg/standby and start it as user postgres
#                         on its own socket directory and port. Exports
#                         OSP_PG2_HOST OSP_PG2_PORT OSP_PG2_DATA OSP_PG2_LOG.
#                         Waits until it accepts (read-only) connections.
#   pg_standby_promote    pg_ctl promote (waits until it accepts writes).
#   pg_standby_stop       pg_ctl stop -m fast, KILL if needed (by PID).
#   pg_primary_kill       Stop the primary with -m immediate (a crash).
# ===========================================================================

_osp_pg2_pid=

pg_schema_load() {
    local f ctl=$OSP_TOP_BUILDDIR/ospreyctl
    : >"$OSP_TMP/osprey-schema.conf"
    if [ -x "$ctl" ] && "$ctl" -c "$OSP_TMP/osprey-schema.conf" \
        -o "database_connection=$OSP_PG_CONNINFO" db migrate \
        >>"$OSP_TMP/pg/schema.log" 2>&1 </dev/null; then
        return 0
    fi
    # No ospreyctl (or it failed): apply the files by hand.
    psql -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS public.schema_migrations (
        version integer PRIMARY KEY CHECK (version > 0), name text NOT NULL,
        checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())" \
        >>"$OSP_TMP/pg/schema.log" 2>&1 </dev/null || return 1
    for f in "$OSP_TOP_SRCDIR"/sql/[0-9][0-9][0-9]_*.sql; do
        if ! psql -X -q -v ON_ERROR_STOP=1 -1 -f "$f" >>"$OSP_TMP/pg/schema.log" 2>&1 \
            </dev/null; then
            tap_diag "pg_schema_load: $f failed:"
            tail -n 20 "$OSP_TMP/pg/schema.log" | tap_diag
            return 1
        fi
    done
    return 0
}

_osp_pg2_ctl() {
    (cd "$OSP_TMP/pg" && runuser -u postgres -- "$OSP_PG_BINDIR/pg_ctl" \
        -D "$OSP_PG2_DATA" "$@" </dev/null {_osp_stdout}>&- {_osp_stderr}>&-)
}

_osp_pg2_ready() {
    pg_isready -q -h "$OSP_PG2_HOST" -p "$OSP_PG2_PORT" -t 2 >/dev/null 2>&1
}

_osp_pg2_writable() {
    [ "$(psql -X -A -t -h "$OSP_PG2_HOST" -p "$OSP_PG2_PORT" -U osprey_admin -d osprey \
        -c 'SELECT pg_is_in_recovery()' 2>/dev/null </dev/null)" = f ]
}

pg_standby_start() {
    local pgdir=$OSP_TMP/pg
    OSP_PG2_DATA=$pgdir/standby
    OSP_PG2_HOST=$pgdir/run2
    OSP_PG2_LOG=$pgdir/standby.log
    if [ -z "${OSP_PG2_PORT:-}" ]; then
        OSP_PG2_PORT=$(osp_free_port) || return 1
    fi
    export OSP_PG2_DATA OSP_PG2_HOST OSP_PG2_PORT OSP_PG2_LOG
    mkdir -p "$OSP_PG2_HOST" || return 1
    chown postgres:postgres "$OSP_PG2_HOST"
    chmod 755 "$OSP_PG2_HOST"
    if [ ! -d "$OSP_PG2_DATA" ]; then
        if ! (cd "$pgdir" && runuser -u postgres -- "$OSP_PG_BINDIR/pg_basebackup" \
            -h "$PGHOST" -p "$PGPORT" -U osprey_admin -D "$OSP_PG2_DATA" -R -X stream \
            -c fast --no-sync >"$pgdir/basebackup.log" 2>&1 </dev/null); then
            tap_diag "pg_standby_start: pg_basebackup failed:"
            tail -n 20 "$pgdir/basebackup.log" | tap_diag
            return 1
        fi
        cat >>"$OSP_PG2_DATA/postgresql.conf" <<EOF2

# Osprey test standby
port = $OSP_PG2_PORT
unix_socket_directories = '$OSP_PG2_HOST'
hot_standby = on
EOF2
        chown postgres:postgres "$OSP_PG2_DATA/postgresql.conf"
        chmod 700 "$OSP_PG2_DATA"
    fi
    touch "$OSP_PG2_LOG"
    chown postgres:postgres "$OSP_PG2_LOG"
    osp_add_log "$OSP_PG2_LOG"
    if ! _osp_pg2_ctl -l "$OSP_PG2_LOG" -w -t 30 -s start >>"$pgdir/pg_ctl2.log" 2>&1; then
        tap_diag "pg_standby_start: pg_ctl start failed:"
        tail -n 20 "$pgdir/pg_ctl2.log" "$OSP_PG2_LOG" | tap_diag
        read -r _osp_pg2_pid 2>/dev/null <"$OSP_PG2_DATA/postmaster.pid"
        [ -n "$_osp_pg2_pid" ] && osp_track_pid "$_osp_pg2_pid"
        return 1
    fi
    read -r _osp_pg2_pid <"$OSP_PG2_DATA/postmaster.pid"
    osp_track_pid "$_osp_pg2_pid"
    osp_on_exit pg_standby_stop
    osp_wait_until 30 _osp_pg2_ready
}

pg_standby_promote() {
    _osp_pg2_ctl -w -t 30 -s promote >>"$OSP_TMP/pg/pg_ctl2.log" 2>&1 || return 1
    osp_wait_until 30 _osp_pg2_writable
}

pg_standby_stop() {
    local pid=$_osp_pg2_pid
    [ -n "$pid" ] || return 0
    if osp_alive "$pid"; then
        _osp_pg2_ctl -m fast -w -t 20 -s stop >>"$OSP_TMP/pg/pg_ctl2.log" 2>&1
        osp_wait_until 5 osp_dead "$pid" || kill -KILL "$pid" 2>/dev/null
    fi
    _osp_pg2_pid=
    return 0
}

pg_primary_kill() {
    _osp_pg_ctl -m immediate -w -t 20 -s stop >>"$OSP_TMP/pg/pg_ctl.log" 2>&1
    pg_stop
}
