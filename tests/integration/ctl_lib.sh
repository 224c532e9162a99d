# ctl_lib.sh -- shared by the ospreyctl / osprey-worker integration tests;
# source it after harness.sh (it skips the test when the programs are not
# built).
#
#   CTL, W                 the built ospreyctl and osprey-worker
#   ctl_conf               $OSP_TMP/osprey.conf with database_connection
#                          (after pg_start); sets $conf
#   c ARGS...              run ospreyctl -c $conf: stdout in $out, stderr in
#                          $err, exit status in $rc
#   is_rc N DESC           the last command exited with N
#   err_has N TEXT DESC    ... exited with N and its stderr contains TEXT
#   out_has TEXT DESC      ... exited with 0 and its stdout contains TEXT
#   sql QUERY              one value (or rows) from the private PostgreSQL
#   acct_id                the account id in "account add"'s output ($out)
#   body_cte               the message on stdin as a quarantine_bodies row:
#                          "WITH b AS (... RETURNING sha256)", for an
#                          INSERT INTO quarantine ... SELECT ... FROM b

CTL=$OSP_TOP_BUILDDIR/ospreyctl
W=$OSP_TOP_BUILDDIR/osprey-worker
[ -x "$CTL" ] || tap_skip_all "ospreyctl not built ($CTL)"
[ -x "$W" ] || tap_skip_all "osprey-worker not built ($W)"

ctl_conf() {
    conf=$OSP_TMP/osprey.conf
    echo "database_connection = $OSP_PG_CONNINFO" >"$conf"
}

c() {
    out=$("$CTL" -c "$conf" "$@" 2>"$OSP_TMP/ctl.err" </dev/null)
    rc=$?
    err=$(cat "$OSP_TMP/ctl.err")
}

is_rc() {
    if [ "$rc" = "$1" ]; then
        tap_ok "$2"
    else
        tap_not_ok "$2"
        tap_diag "exit $rc, expected $1; stdout: $out"
        tap_diag "stderr: $err"
    fi
}

err_has() {
    if [ "$rc" = "$1" ] && grep -qF -- "$2" <<<"$err"; then
        tap_ok "$3"
    else
        tap_not_ok "$3"
        tap_diag "exit $rc (expected $1); stdout: $out"
        tap_diag "stderr: $err"
    fi
}

out_has() {
    if [ "$rc" = 0 ] && grep -qF -- "$1" <<<"$out"; then
        tap_ok "$2"
    else
        tap_not_ok "$2"
        tap_diag "exit $rc; stdout: $out"
        tap_diag "stderr: $err"
    fi
}

sql() { pg_psql -c "$1"; }

acct_id() { sed -n 's/^account \([0-9]*\): added.*/\1/p' <<<"$out"; }

body_cte() {
    local body
    body=$(od -An -v -tx1 | tr -d ' \n')
    echo "WITH b AS (INSERT INTO quarantine_bodies (sha256, body, size)
                    VALUES (sha256('\\x$body'::bytea), '\\x$body'::bytea, length('\\x$body'::bytea))
                    ON CONFLICT (sha256) DO UPDATE SET last_used_at = now() RETURNING sha256)"
}
