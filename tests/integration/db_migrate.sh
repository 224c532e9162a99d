#!/bin/bash
# db_migrate.sh -- "ospreyctl db migrate" and "db status" against a private
# PostgreSQL: empty to current; from every older version to current with a
# schema identical to a from-scratch one; re-running is a no-op; concurrent
# migrates apply each migration once; checksum mismatches, SQL errors and
# connection failures are reported with a non-zero exit.

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/integration/harness.sh"

osp_require root postgresql pg_dump
osp_timeout "${OSP_TEST_TIMEOUT:-120}"

CTL=$OSP_TOP_BUILDDIR/ospreyctl
[ -x "$CTL" ] || tap_skip_all "ospreyctl not built ($CTL)"

# Versions embedded in ospreyctl = the sql/ files.
versions=()
for f in "$OSP_TOP_SRCDIR"/sql/[0-9][0-9][0-9]_*.sql; do
    b=${f##*/}
    versions+=("$((10#${b%%_*}))")
done
latest=${versions[${#versions[@]} - 1]}
nolder=$((${#versions[@]} - 1))

tap_plan $((16 + 4 * nolder))

pg_start || osp_die "PostgreSQL did not start"

conf=$OSP_TMP/osprey.conf
: >"$conf"

# ctl DB ARGS... -- run ospreyctl against database DB; output in $out, status in $rc.
ctl() {
    local db=$1
    shift
    out=$("$CTL" -c "$conf" -o "database_connection=$OSP_PG_CONNINFO dbname=$db" "$@" 2>&1)
    rc=$?
}

# dump DB -- schema-only dump, normalised (comments, blank lines, SET lines).
dump() {
    pg_dump --schema-only --no-owner -d "$1" |
        sed -e '/^--/d' -e '/^$/d' -e '/^SET /d' -e '/^SELECT pg_catalog.set_config/d' \
            -e '/^\\restrict/d' -e '/^\\unrestrict/d'
}

# ---- empty database
ctl osprey db status
tap_is "$rc" 0 "status on an empty database exits 0"
if grep -qx "current version: 0" <<<"$out" && grep -qx "latest version: $latest" <<<"$out" &&
    [ "$(grep -c '^pending ' <<<"$out")" -eq "${#versions[@]}" ] &&
    grep -q '^status: .* pending' <<<"$out"; then
    tap_ok "status before: version 0, all ${#versions[@]} migrations pending"
else
    tap_not_ok "status before: version 0, all ${#versions[@]} migrations pending" "$out"
fi

ctl osprey db migrate
tap_is "$rc" 0 "migrate from empty exits 0" || tap_diag "$out"
tap_is "$(grep -c '^applied ' <<<"$out")" "${#versions[@]}" "every migration applied once"
ctl osprey db status
if [ "$rc" -eq 0 ] && grep -qx "current version: $latest" <<<"$out" &&
    ! grep -q '^pending ' <<<"$out" && grep -qx 'status: up to date' <<<"$out"; then
    tap_ok "status after: version $latest, nothing pending"
else
    tap_not_ok "status after: version $latest, nothing pending" "$out"
fi
tap_is "$(pg_psql -c "SELECT string_agg(version || ':' || length(checksum), ',' ORDER BY version) FROM schema_migrations")" \
    "$(for v in "${versions[@]}"; do printf '%s:64,' "$v"; done | sed 's/,$//')" \
    "schema_migrations records every version with a sha256 checksum"

before=$(pg_psql -c "SELECT string_agg(version || '@' || applied_at, ',' ORDER BY version) FROM schema_migrations")
ctl osprey db migrate
if [ "$rc" -eq 0 ] && grep -q 'nothing to do' <<<"$out" && ! grep -q '^applied' <<<"$out" &&
    [ "$(pg_psql -c "SELECT string_agg(version || '@' || applied_at, ',' ORDER BY version) FROM schema_migrations")" = "$before" ]; then
    tap_ok "re-running migrate is a no-op"
else
    tap_not_ok "re-running migrate is a no-op" "$out"
fi

scratch=$(dump osprey)
[ -n "$scratch" ] || osp_die "pg_dump of the fresh schema failed"
tap_diag "from-scratch schema: $(wc -l <<<"$scratch") lines"

# ---- from each older version
for ((i = 0; i < nolder; i++)); do
    v=${versions[$i]}
    db=osprey_v$v
    pg_psql -d osprey -c "CREATE DATABASE $db" || osp_die "createdb $db"
    ctl "$db" db migrate --to "$v"
    if [ "$rc" -eq 0 ] && [ "$(grep -c '^applied ' <<<"$out")" -eq $((i + 1)) ]; then
        tap_ok "migrate --to $v applies $((i + 1)) migration(s)"
    else
        tap_not_ok "migrate --to $v applies $((i + 1)) migration(s)" "$out"
    fi
    ctl "$db" db status
    if grep -qx "current version: $v" <<<"$out" &&
        [ "$(grep -c '^pending ' <<<"$out")" -eq $((${#versions[@]} - i - 1)) ]; then
        tap_ok "status at version $v shows $((${#versions[@]} - i - 1)) pending"
    else
        tap_not_ok "status at version $v shows $((${#versions[@]} - i - 1)) pending" "$out"
    fi
    ctl "$db" db migrate
    if [ "$rc" -eq 0 ] && grep -qx "database is at version $latest (was $v)" <<<"$out"; then
        tap_ok "migrate from version $v to $latest"
    else
        tap_not_ok "migrate from version $v to $latest" "$out"
    fi
    d=$(diff <(echo "$scratch") <(dump "$db"))
    if [ -z "$d" ]; then
        tap_ok "schema migrated from version $v equals the from-scratch schema"
    else
        tap_not_ok "schema migrated from version $v equals the from-scratch schema" "$(head -n 40 <<<"$d")"
    fi
done

# ---- --to older than the database, bad --to
ctl osprey db migrate --to "${versions[0]}"
if [ "$rc" -eq 0 ] && grep -q 'nothing to do' <<<"$out"; then
    tap_ok "--to below the current version does nothing"
else
    tap_not_ok "--to below the current version does nothing" "$out"
fi
ctl osprey db migrate --to 999
if [ "$rc" -eq 2 ] && grep -q 'not a migration version' <<<"$out"; then
    tap_ok "--to an unknown version is a usage error (exit 2)"
else
    tap_not_ok "--to an unknown version is a usage error (exit 2)" "rc=$rc" "$out"
fi

# ---- concurrent migrates
pg_psql -c "CREATE DATABASE osprey_race" || osp_die "createdb osprey_race"
for n in 1 2 3; do
    "$CTL" -c "$conf" -o "database_connection=$OSP_PG_CONNINFO dbname=osprey_race" \
        db migrate >"$OSP_TMP/race.$n.out" 2>&1 &
    pids[$n]=$!
done
race_ok=1
for n in 1 2 3; do
    wait "${pids[$n]}" || race_ok=
done
napplied=$(cat "$OSP_TMP"/race.*.out | grep -c '^applied ')
if [ -n "$race_ok" ] && [ "$napplied" -eq "${#versions[@]}" ] &&
    [ "$(pg_psql -d osprey_race -c 'SELECT count(*) FROM schema_migrations')" -eq "${#versions[@]}" ]; then
    tap_ok "3 concurrent migrates succeed and apply each migration once"
else
    tap_not_ok "3 concurrent migrates succeed and apply each migration once" \
        "$(cat "$OSP_TMP"/race.*.out)"
fi

# ---- checksum mismatch
pg_psql -d osprey_race -c "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = ${versions[1]}"
f2=$(basename "$OSP_TOP_SRCDIR"/sql/"$(printf '%03d' "${versions[1]}")"_*.sql)
ctl osprey_race db migrate
if [ "$rc" -eq 1 ] && grep -q "checksum mismatch for migration .*$f2" <<<"$out"; then
    tap_ok "migrate refuses a checksum mismatch and names $f2"
else
    tap_not_ok "migrate refuses a checksum mismatch and names $f2" "rc=$rc" "$out"
fi
ctl osprey_race db status
if [ "$rc" -eq 1 ] && grep -q "^applied $f2 .*CHECKSUM MISMATCH" <<<"$out"; then
    tap_ok "status shows the mismatch and exits 1"
else
    tap_not_ok "status shows the mismatch and exits 1" "rc=$rc" "$out"
fi

# ---- SQL error in a migration: rolled back, file and message named
pg_psql -c "CREATE DATABASE osprey_bad" || osp_die "createdb osprey_bad"
pg_psql -d osprey_bad -c "CREATE TABLE domains (x int)"
ctl osprey_bad db migrate
f1=$(basename "$OSP_TOP_SRCDIR"/sql/001_*.sql)
if [ "$rc" -eq 1 ] && grep -q "migration 001 failed: $f1: ERROR 42P07: relation \"domains\" already exists" <<<"$out"; then
    tap_ok "an SQL error names the migration, file and PostgreSQL's message"
else
    tap_not_ok "an SQL error names the migration, file and PostgreSQL's message" "rc=$rc" "$out"
fi
tap_is "$(pg_psql -d osprey_bad -c "SELECT to_regclass('schema_migrations') IS NULL, to_regclass('accounts') IS NULL")" \
    "t|t" "the failed migration was rolled back"

# An error with a position in the file is reported with its line number.
pg_psql -c "CREATE DATABASE osprey_bad2" || osp_die "createdb osprey_bad2"
ctl osprey_bad2 db migrate --to 4
pg_psql -d osprey_bad2 -c "DROP FUNCTION osprey_partitions_ensure(integer)"
f5=$(basename "$OSP_TOP_SRCDIR"/sql/005_*.sql)
line=$(grep -n '^SELECT osprey_partitions_ensure' "$OSP_TOP_SRCDIR/sql/$f5" | cut -d: -f1)
ctl osprey_bad2 db migrate
if [ "$rc" -eq 1 ] && grep -q "migration 005 failed: $f5, line $line: ERROR 42883: function osprey_partitions_ensure(integer) does not exist" <<<"$out" &&
    [ "$(pg_psql -d osprey_bad2 -c "SELECT max(version) FROM schema_migrations")" = 4 ]; then
    tap_ok "an SQL error reports the line in the file ($f5:$line); version stays 4"
else
    tap_not_ok "an SQL error reports the line in the file ($f5:$line); version stays 4" "rc=$rc" "$out"
fi

# ---- cannot connect
ctl osprey_nonexistent db status
if [ "$rc" -eq 1 ] && grep -q 'cannot connect to the database: .*osprey_nonexistent.* does not exist' <<<"$out"; then
    tap_ok "a connection failure shows libpq's message, exit 1"
else
    tap_not_ok "a connection failure shows libpq's message, exit 1" "rc=$rc" "$out"
fi
