#!/bin/bash
# bench/policyd/run.sh -- osprey-policyd against postfwd (Debian package) in
# one run, with the same blocked networks (IPv4 and IPv6), blocked senders
# and per-user message limit, plus a scale run of osprey-policyd alone.
#
#   bench/policyd/run.sh [-d SECONDS] [-c CONNS] [-n REPEATS] [-l ENTRIES]
#                        [-L LIMIT] [-S | -s]                  (as root)
#       -d SECONDS  length of each load run (default 10)
#       -c CONNS    persistent connections (default 20)
#       -n REPEATS  runs of each measurement; the table shows the median (3)
#       -l ENTRIES  entries per list in the comparison (default 100)
#       -L LIMIT    the per-user limit, messages per hour (default 100)
#       -S          skip the scale run;  -s  only the scale run
#
# Build: $OSP_BUILD_DIR, else ./build (configured there if needed; only
# osprey-policyd and bench/policyd/policyd_load are built).
#
# Each daemon first answers probes with known answers (policyd_load -P:
# blocked IPv4 client, blocked IPv6 client, blocked sender -> REJECT; clean
# -> DUNNO; LIMIT messages of one user pass and the next is refused), then
# the load runs (closed loop: throughput; open loop at a fixed rate: latency
# from the scheduled send time), then the probes again.  Under load every
# blocked request must be answered REJECT and every clean RCPT DUNNO, or
# policyd_load fails.  Any wrong answer fails the benchmark (exit 1); a
# missed target (50,000 req/s, p99 < 1 ms at 10,000 req/s, scale VmHWM
# <= 100 MB) is printed and gives exit 3.
#
# Scale: osprey-policyd with 100,000 list entries (50,000 client networks,
# 50,000 senders) is sent 1,000,000 END-OF-MESSAGE requests with distinct
# sasl_usernames (limit LIMIT per day, policyd_rate_limit_max_keys twice
# that count: see the shard note below); VmHWM must stay at or under 100 MB.
#
# RSS is VmRSS / VmHWM from /proc/PID/status after the runs; for postfwd
# the sum over its master, cache, policy server and children.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${OSP_BUILD_DIR:-$top/build}
SECONDS_RUN=10 CONNS=20 REPEATS=3 LIST=100 LIMIT=100 RATE=10000
DO_CMP=1 DO_SCALE=1
RL_WINDOW=1h RL_MAX_KEYS=1000000
SCALE_LIST=50000 SCALE_KEYS=1000000 SCALE_MAX_KB=$((100 * 1024))
while getopts d:c:n:l:L:Ss o; do
    case $o in
    d) SECONDS_RUN=$OPTARG ;;
    c) CONNS=$OPTARG ;;
    n) REPEATS=$OPTARG ;;
    l) LIST=$OPTARG ;;
    L) LIMIT=$OPTARG ;;
    S) DO_SCALE=0 ;;
    s) DO_CMP=0 ;;
    *) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d' >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (installs postfwd, starts it as nobody)" >&2; exit 2; }

log() { printf '%s\n' "$*" >&2; }
die() { log "run.sh: FAILED: $*"; exit 1; }

# ---- packages: postfwd, without letting its scripts start a service
if [ "$DO_CMP" = 1 ] && ! command -v postfwd >/dev/null 2>&1; then
    policy=/usr/sbin/policy-rc.d
    had_policy=no
    [ -e "$policy" ] && had_policy=yes
    [ $had_policy = no ] && { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfwd >&2
    rc=$?
    [ $had_policy = no ] && rm -f "$policy"
    [ $rc = 0 ] || die "apt-get install postfwd"
fi

# ---- build
if [ ! -f "$build/Makefile" ]; then
    mkdir -p "$build" && (cd "$build" && "$top/configure" -q) || die "configure in $build"
fi
make -C "$build" -j2 osprey-policyd bench/policyd/policyd_load >&2 || die "make"
POLICYD=$build/osprey-policyd
LOAD=$build/bench/policyd/policyd_load

# ---- private directory, processes we start, cleanup
TMP=$(mktemp -d /tmp/osprey-pbench.XXXXXX) || die "mktemp"
chmod 755 "$TMP"
STARTED=()              # PIDs to stop at exit
descendants() {         # PID and every process below it
    local p=$1 c
    echo "$p"
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do descendants "$c"; done
}
stop_pids() {
    local p alive
    for p in "$@"; do kill "$p" 2>/dev/null; done
    for _ in $(seq 50); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && return
        sleep 0.1
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null; done
}
cleanup() {
    [ ${#STARTED[@]} -gt 0 ] && stop_pids "${STARTED[@]}"
    if [ -n "${KEEP_TMP:-}" ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { [ -z "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]; }
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 30000))
        port_free "$p" && { echo "$p"; return 0; }
    done
    return 1
}
wait_port() {           # PORT PID: until it accepts connections
    for _ in $(seq 300); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
rss_kb() {              # FIELD PID...: sum of VmRSS or VmHWM in kB
    local f=$1 p sum=0 v
    shift
    for p in "$@"; do
        v=$(awk -v f="$f:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<" $2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ---- osprey-policyd
start_osprey() {        # NAME LISTDIR: sets OSP_PID OSP_PORT OSP_MET
    local name=$1 dir=$2
    OSP_PORT=$(free_port) && OSP_MET=$(free_port) || die "no free port"
    : >"$dir/empty"
    printf 'vip@example.org\n' >"$dir/sender_allow"
    printf '198.18.0.0/15\n' >"$dir/client_allow"
    printf 'abuse-trap@example.com\n' >"$dir/recipient_block"
    printf '# osprey.conf for bench/policyd\n' >"$dir/osprey.conf"
    # Every non-DNS check on (the default policyd_checks), all lists set.
    "$POLICYD" -f -c "$dir/osprey.conf" \
        -o "policyd_listen=inet:127.0.0.1:$OSP_PORT" \
        -o "policyd_metrics_listen=127.0.0.1:$OSP_MET" \
        -o osprey_user=nobody \
        -o "policyd_client_allow_files=$dir/client_allow" \
        -o "policyd_client_block_files=$dir/client_block" \
        -o "policyd_sender_allow_files=$dir/sender_allow" \
        -o "policyd_sender_block_files=$dir/sender_block" \
        -o "policyd_recipient_allow_files=$dir/empty" \
        -o "policyd_recipient_block_files=$dir/recipient_block" \
        -o "policyd_my_names=mx.bench.example" \
        -o "policyd_rate_limits=sasl_username:$LIMIT/$RL_WINDOW:messages:DEFER" \
        -o "policyd_rate_limit_max_keys=$RL_MAX_KEYS" \
        >"$TMP/$name.log" 2>&1 </dev/null &
    OSP_PID=$!
    STARTED+=("$OSP_PID")
    wait_port "$OSP_PORT" "$OSP_PID" || die "osprey-policyd did not start: $(tail -n 5 "$TMP/$name.log")"
}

# ---- postfwd: the same lists and limit in its syntax
start_postfwd() {       # LISTDIR: sets PF_PID PF_PORT PF_PIDS
    local dir=$1 pfdir=$1/postfwd
    PF_PORT=$(free_port) || die "no free port"
    mkdir -p "$pfdir" && chown nobody:nogroup "$pfdir"     # cache socket, pid file
    cat >"$dir/postfwd.cf" <<EOF
# postfwd(8) rules equivalent to the osprey-policyd lists and limit.
# client_address items are CIDR for IPv4 only; IPv6 networks are
# anchored regular expressions (postfwd compares IPv6 as strings).
id=BLOCK4; client_address==file:$dir/client_block4; action=REJECT 5.7.1 Client address rejected by policy
id=BLOCK6; client_address=~file:$dir/client_block6.re; action=REJECT 5.7.1 Client address rejected by policy
id=SENDER; sender==file:$dir/sender_block; action=REJECT 5.7.1 Sender address rejected by policy
# Messages are counted at END-OF-MESSAGE; message LIMIT+1 is deferred there.
id=RATE; protocol_state==END-OF-MESSAGE; sasl_username=~.; action=rate(sasl_username/$LIMIT/3600/DEFER 4.7.1 Rate limit exceeded, try again later)
EOF
    find "$dir" -maxdepth 1 -type f -exec chmod 644 {} +
    # --perfmon: no logging (there is no syslog socket here anyway).
    postfwd --daemon -f "$dir/postfwd.cf" -i 127.0.0.1 -p "$PF_PORT" \
        --pidfile "$pfdir/postfwd.pid" --cache_socket "unix::$pfdir/cache.sock" \
        -u nobody -g nogroup --nodns --perfmon \
        --min_servers $((CONNS + 5)) --max_servers $((CONNS * 3)) \
        >"$TMP/postfwd.log" 2>&1 </dev/null || die "postfwd did not start: $(tail -n 5 "$TMP/postfwd.log")"
    for _ in $(seq 100); do [ -s "$pfdir/postfwd.pid" ] && break; sleep 0.1; done
    PF_PID=$(cat "$pfdir/postfwd.pid" 2>/dev/null) || die "postfwd wrote no pid file"
    STARTED+=("$PF_PID")
    wait_port "$PF_PORT" "$PF_PID" || die "postfwd did not start listening"
    sleep 2                         # let it fork its preforked children
}
postfwd_pids() { PF_PIDS=$(descendants "$PF_PID"); STARTED+=($PF_PIDS); }

# ---- measurements
probe() {               # NAME PORT
    local out
    out=$("$LOAD" -p "$2" -P -l "$LIST_N" -L "$LIMIT" 2>&1)
    local rc=$?
    sed "s/^/  $1: /" <<<"$out" >&2
    [ $rc = 0 ] || die "$1 answered probes wrongly"
}
ROWS=()
measure() {             # NAME PORT MODE(closed|open) RATE PIDS...
    local name=$1 port=$2 mode=$3 rate=$4 i out rps p50 p99 p999 wrong
    shift 4
    local -a a_rps=() a_p50=() a_p99=() a_p999=()
    for i in $(seq "$REPEATS"); do
        if [ "$mode" = open ]; then
            out=$("$LOAD" -p "$port" -c "$CONNS" -d "$SECONDS_RUN" -l "$LIST_N" -r "$rate") ||
                die "$name: $mode run $i: $out"
        else
            out=$("$LOAD" -p "$port" -c "$CONNS" -d "$SECONDS_RUN" -l "$LIST_N") ||
                die "$name: $mode run $i: $out"
        fi
        log "  $name $mode #$i: $out"
        a_rps+=("$(field rps "$out")")
        a_p50+=("$(field p50_ms "$out")")
        a_p99+=("$(field p99_ms "$out")")
        a_p999+=("$(field p999_ms "$out")")
    done
    rps=$(printf '%s\n' "${a_rps[@]}" | median)
    p50=$(printf '%s\n' "${a_p50[@]}" | median)
    p99=$(printf '%s\n' "${a_p99[@]}" | median)
    p999=$(printf '%s\n' "${a_p999[@]}" | median)
    ROWS+=("$(printf '%-15s %-17s %9s %9s %9s %9s %9s %9s' "$name" \
        "$([ "$mode" = open ] && echo "fixed $rate/s" || echo "closed, $CONNS conn")" \
        "$rps" "$p50" "$p99" "$p999" \
        "$(( $(rss_kb VmRSS "$@") / 1024 ))" "$(( $(rss_kb VmHWM "$@") / 1024 ))")")
    LAST_RPS=$rps LAST_P99=$p99
}

status=0
if [ "$DO_CMP" = 1 ]; then
    LIST_N=$LIST
    D=$TMP/cmp
    mkdir -p "$D" && "$LOAD" -G "$D" -l "$LIST" || die "list generation"
    log "== comparison: $LIST entries per list, limit $LIMIT/h per user, $CONNS connections, ${SECONDS_RUN}s x $REPEATS"

    start_osprey osprey "$D"
    probe osprey-policyd "$OSP_PORT"
    measure osprey-policyd "$OSP_PORT" closed 0 "$OSP_PID"
    OSP_RPS=$LAST_RPS
    measure osprey-policyd "$OSP_PORT" open "$RATE" "$OSP_PID"
    OSP_P99=$LAST_P99
    probe osprey-policyd "$OSP_PORT"
    stop_pids "$OSP_PID"

    start_postfwd "$D"
    postfwd_pids
    probe postfwd "$PF_PORT"
    postfwd_pids
    measure postfwd "$PF_PORT" closed 0 $PF_PIDS
    PF_RPS=$LAST_RPS
    # Its latency at a rate it can sustain: half its closed-loop throughput.
    PF_RATE=$(awk -v r="$PF_RPS" 'BEGIN { r = int(r / 2); print r < 1 ? 1 : r }')
    postfwd_pids
    measure postfwd "$PF_PORT" open "$PF_RATE" $PF_PIDS
    probe postfwd "$PF_PORT"
    postfwd_pids
    stop_pids $PF_PIDS
fi

if [ "$DO_SCALE" = 1 ]; then
    LIST_N=$SCALE_LIST
    D=$TMP/scale
    mkdir -p "$D" && "$LOAD" -G "$D" -l "$SCALE_LIST" || die "list generation"
    log "== scale: $((SCALE_LIST * 2)) list entries, $SCALE_KEYS rate-limit keys"
    # A day's window, so that no key goes idle (and is swept) during the
    # run; max_keys above SCALE_KEYS because the table is split into 64
    # shards of max_keys/64 each and the fullest shard fills up first.
    RL_WINDOW=1d RL_MAX_KEYS=$((SCALE_KEYS * 2))
    start_osprey osprey-scale "$D"
    probe osprey-scale "$OSP_PORT"
    SCALE_RSS0=$(( $(rss_kb VmRSS "$OSP_PID") / 1024 ))
    out=$("$LOAD" -p "$OSP_PORT" -c "$CONNS" -K "$SCALE_KEYS") || die "scale run: $out"
    log "  keys: $out"
    KEYS=$(curl -s "http://127.0.0.1:$OSP_MET/metrics" |
        awk '$1 == "osprey_policyd_ratelimit_keys" { printf "%d", $2 }')
    SCALE_RSS=$(( $(rss_kb VmRSS "$OSP_PID") / 1024 ))
    SCALE_HWM_KB=$(rss_kb VmHWM "$OSP_PID")
    probe osprey-scale "$OSP_PORT"
    stop_pids "$OSP_PID"
fi

# ---- the table (stdout)
echo
if [ "$DO_CMP" = 1 ]; then
    printf '%-15s %-17s %9s %9s %9s %9s %9s %9s\n' daemon load "req/s" "p50 ms" "p99 ms" \
        "p99.9 ms" "RSS MB" "HWM MB"
    printf '%s\n' "${ROWS[@]}"
    echo "($LIST entries per list, median of $REPEATS runs of ${SECONDS_RUN}s; postfwd RSS: all its processes)"
    awk -v o="$OSP_RPS" -v p="$PF_RPS" 'BEGIN { printf "throughput ratio osprey-policyd / postfwd: %.1fx\n", p > 0 ? o / p : 0 }'
    if awk -v r="$OSP_RPS" 'BEGIN { exit !(r < 50000) }'; then
        echo "target missed: osprey-policyd $OSP_RPS req/s < 50000"; status=3
    fi
    if awk -v p="$OSP_P99" 'BEGIN { exit !(p >= 1.0) }'; then
        echo "target missed: osprey-policyd p99 $OSP_P99 ms >= 1 ms at $RATE req/s"; status=3
    fi
fi
if [ "$DO_SCALE" = 1 ]; then
    echo "scale: $((SCALE_LIST * 2)) list entries + ${KEYS:-?} rate-limit keys:" \
        "RSS ${SCALE_RSS0} MB after start, ${SCALE_RSS} MB after the keys, VmHWM $((SCALE_HWM_KB / 1024)) MB (limit 100 MB)"
    [ "${KEYS:-0}" -ge "$SCALE_KEYS" ] || { echo "scale: FAILED: fewer than $SCALE_KEYS keys stored"; exit 1; }
    [ "$SCALE_HWM_KB" -le "$SCALE_MAX_KB" ] || { echo "scale: target missed: VmHWM over 100 MB"; status=3; }
fi
echo "answers: all probes and all answers under load correct"
exit $status
