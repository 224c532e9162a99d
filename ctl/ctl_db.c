/*
 * ctl_db: "ospreyctl db migrate" and "ospreyctl db status".
 *
 * The migrations in sql/NNN_name.sql are embedded in ospreyctl at build
 * time (build-aux/sql2c.sh -> ctl_migrations[]).  Each is applied in its
 * own transaction and recorded in schema_migrations (version, name,
 * checksum = hex SHA-256 of the file's bytes, applied_at).  Every
 * transaction first takes an advisory lock, then re-reads what is applied,
 * so concurrent migrates apply each migration once.  A recorded checksum
 * that differs from the embedded file stops everything: a released
 * migration was edited.
 *
 * Blocking libpq is fine here: ospreyctl is a command, not a daemon.  The
 * SHA-256 of each embedded file is computed by the server (sha256()), so
 * ospreyctl needs no crypto library.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "ctl.h"
#include "osp_mem.h"

/* pg_advisory_xact_lock key: "osprmigr" in ASCII. */
#define CTL_DB_LOCK_KEY "8030886197295933298"

#define CTL_DB_BYTEAOID 17

/* What schema_migrations says about one version. */
typedef struct ctl_db_applied {
    unsigned version;
    char name[128];
    char checksum[65];
    char applied_at[64];
} ctl_db_applied_t;

typedef struct ctl_db {
    PGconn *conn;
    char (*checksums)[65];       /* per embedded migration, hex */
    ctl_db_applied_t *applied;   /* owned, sorted by version */
    size_t napplied;
} ctl_db_t;

static void ctl_db__usage(FILE *out)
{
    fprintf(out,
            "usage: ospreyctl db migrate [--to VERSION]\n"
            "       ospreyctl db status\n"
            "  migrate  apply the pending schema migrations (up to VERSION)\n"
            "  status   show the database's schema version and pending migrations\n");
}

/* Print a libpq message without its trailing newline. */
static void ctl_db__print_pq(const char *what, const char *msg)
{
    size_t n = msg ? strlen(msg) : 0;

    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    fprintf(stderr, "ospreyctl: %s: %.*s\n", what, (int)n, msg ? msg : "");
}

static int ctl_db__connect(ctl_db_t *db, const osp_config_t *cfg)
{
    ctl_pg_t pg;

    if (ctl_pg_open(&pg, cfg, NULL) < 0)
        return -1;
    db->conn = pg.conn;
    return 0;
}

static void ctl_db__close(ctl_db_t *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
    free(db->checksums);
    db->checksums = NULL;
    free(db->applied);
    db->applied = NULL;
    db->napplied = 0;
}

/* Run a command expecting PGRES_COMMAND_OK or PGRES_TUPLES_OK; 0 or -1. */
static int ctl_db__cmd(ctl_db_t *db, const char *sql)
{
    PGresult *res = PQexec(db->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "ospreyctl: database error in \"%s\":\n", sql);
        ctl_db__print_pq("error", PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static void ctl_db__rollback(ctl_db_t *db)
{
    PGresult *res = PQexec(db->conn, "ROLLBACK");

    PQclear(res);
}

/* Ask the server for the SHA-256 of every embedded migration. */
static int ctl_db__checksums(ctl_db_t *db)
{
    size_t i;

    db->checksums = osp_calloc(ctl_migrations_count ? ctl_migrations_count : 1,
                               sizeof(*db->checksums));
    for (i = 0; i < ctl_migrations_count; i++) {
        const ctl_migration_t *m = &ctl_migrations[i];
        const Oid types[1] = { CTL_DB_BYTEAOID };
        const char *vals[1] = { m->sql };
        const int lens[1] = { (int)m->len };
        const int fmts[1] = { 1 };
        PGresult *res = PQexecParams(db->conn, "SELECT encode(sha256($1), 'hex')", 1, types,
                                     vals, lens, fmts, 0);

        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
            strlen(PQgetvalue(res, 0, 0)) != 64) {
            ctl_db__print_pq("cannot compute migration checksums", PQresultErrorMessage(res));
            PQclear(res);
            return -1;
        }
        memcpy(db->checksums[i], PQgetvalue(res, 0, 0), 65);
        PQclear(res);
    }
    return 0;
}

/*
 * Read schema_migrations into db->applied.  If the table does not exist
 * and create is false, nothing is applied.  0 or -1.
 */
static int ctl_db__read_applied(ctl_db_t *db, bool create)
{
    PGresult *res;
    int i, n;

    free(db->applied);
    db->applied = NULL;
    db->napplied = 0;
    if (create) {
        if (ctl_db__cmd(db,
                        "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                        " version integer PRIMARY KEY CHECK (version > 0),"
                        " name text NOT NULL,"
                        " checksum text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())") < 0)
            return -1;
    } else {
        res = PQexec(db->conn, "SELECT to_regclass('public.schema_migrations') IS NOT NULL");
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            ctl_db__print_pq("cannot read schema_migrations", PQresultErrorMessage(res));
            PQclear(res);
            return -1;
        }
        if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            PQclear(res);
            return 0;
        }
        PQclear(res);
    }
    res = PQexec(db->conn,
                 "SELECT version, name, checksum,"
                 " to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"
                 " FROM public.schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ctl_db__print_pq("cannot read schema_migrations", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    n = PQntuples(res);
    db->applied = osp_calloc(n ? (size_t)n : 1, sizeof(*db->applied));
    for (i = 0; i < n; i++) {
        ctl_db_applied_t *a = &db->applied[i];

        a->version = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        snprintf(a->name, sizeof(a->name), "%s", PQgetvalue(res, i, 1));
        snprintf(a->checksum, sizeof(a->checksum), "%s", PQgetvalue(res, i, 2));
        snprintf(a->applied_at, sizeof(a->applied_at), "%s", PQgetvalue(res, i, 3));
    }
    db->napplied = (size_t)n;
    PQclear(res);
    return 0;
}

static const ctl_migration_t *ctl_db__embedded(unsigned version, size_t *index_r)
{
    size_t i;

    for (i = 0; i < ctl_migrations_count; i++) {
        if (ctl_migrations[i].version == version) {
            if (index_r)
                *index_r = i;
            return &ctl_migrations[i];
        }
    }
    return NULL;
}

static bool ctl_db__is_applied(const ctl_db_t *db, unsigned version)
{
    size_t i;

    for (i = 0; i < db->napplied; i++)
        if (db->applied[i].version == version)
            return true;
    return false;
}

static unsigned ctl_db__current(const ctl_db_t *db)
{
    return db->napplied ? db->applied[db->napplied - 1].version : 0;
}

static unsigned ctl_db__latest(void)
{
    return ctl_migrations_count ? ctl_migrations[ctl_migrations_count - 1].version : 0;
}

/*
 * Check what is recorded against what is embedded: every recorded version
 * must be known and have the same checksum.  Prints one message per
 * problem when report is true.  Returns the number of problems.
 */
static int ctl_db__verify(const ctl_db_t *db, bool report)
{
    size_t i, k;
    int problems = 0;

    for (i = 0; i < db->napplied; i++) {
        const ctl_db_applied_t *a = &db->applied[i];
        const ctl_migration_t *m = ctl_db__embedded(a->version, &k);

        if (m == NULL) {
            if (report)
                fprintf(stderr,
                        "ospreyctl: the database has migration %03u (%s), which this ospreyctl "
                        "does not know: use a newer ospreyctl\n",
                        a->version, a->name);
            problems++;
        } else if (strcmp(a->checksum, db->checksums[k]) != 0) {
            if (report)
                fprintf(stderr,
                        "ospreyctl: checksum mismatch for migration %03u: %s differs from the "
                        "version applied to this database on %s (recorded %.12s..., file "
                        "%.12s...); released migrations must never change\n",
                        a->version, m->file, a->applied_at, a->checksum, db->checksums[k]);
            problems++;
        }
    }
    return problems;
}

/* Line number (1-based) of 1-based character position pos in text. */
static unsigned ctl_db__line_of(const char *text, size_t len, long pos)
{
    unsigned line = 1;
    long chars = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        if (((unsigned char)text[i] & 0xC0) != 0x80) {
            if (++chars >= pos)
                break;
        }
        if (text[i] == '\n')
            line++;
    }
    return line;
}

static void ctl_db__report_migration_error(const ctl_migration_t *m, const PGresult *res)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    const char *context = PQresultErrorField(res, PG_DIAG_CONTEXT);
    const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    char where[64] = "";

    if (pos)
        snprintf(where, sizeof(where), ", line %u",
                 ctl_db__line_of(m->sql, m->len, strtol(pos, NULL, 10)));
    if (primary == NULL) {
        ctl_db__print_pq("migration failed", PQresultErrorMessage(res));
        fprintf(stderr, "ospreyctl: migration %03u (%s) was not applied\n", m->version, m->file);
        return;
    }
    fprintf(stderr, "ospreyctl: migration %03u failed: %s%s: ERROR %s: %s\n", m->version,
            m->file, where, sqlstate ? sqlstate : "?????", primary);
    if (detail)
        fprintf(stderr, "ospreyctl:   DETAIL: %s\n", detail);
    if (hint)
        fprintf(stderr, "ospreyctl:   HINT: %s\n", hint);
    if (context)
        fprintf(stderr, "ospreyctl:   CONTEXT: %s\n", context);
    fprintf(stderr, "ospreyctl: migration %03u (%s) was rolled back; the database stays at "
            "the previous version\n", m->version, m->file);
}

static double ctl_db__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/*
 * One transaction: lock, re-read, verify, apply the first pending
 * migration up to target.  Returns 1 if one was applied, 0 if nothing was
 * pending, -1 on error (rolled back).
 */
static int ctl_db__step(ctl_db_t *db, unsigned target)
{
    const ctl_migration_t *next = NULL;
    PGresult *res;
    size_t i, k = 0;
    char version[16];
    const char *params[3];
    double t0;

    if (ctl_db__cmd(db, "BEGIN") < 0)
        return -1;
    if (ctl_db__cmd(db, "SELECT pg_advisory_xact_lock(" CTL_DB_LOCK_KEY ")") < 0 ||
        ctl_db__cmd(db, "SET LOCAL client_min_messages = warning") < 0 ||
        ctl_db__cmd(db, "SET LOCAL search_path = public") < 0 ||
        ctl_db__read_applied(db, true) < 0)
        goto fail;
    if (ctl_db__verify(db, true) > 0)
        goto fail;
    for (i = 0; i < ctl_migrations_count; i++) {
        if (ctl_migrations[i].version > target)
            break;
        if (!ctl_db__is_applied(db, ctl_migrations[i].version)) {
            next = &ctl_migrations[i];
            k = i;
            break;
        }
    }
    if (next == NULL) {
        if (ctl_db__cmd(db, "COMMIT") < 0)
            return -1;
        return 0;
    }
    if (next->version < ctl_db__current(db)) {
        fprintf(stderr,
                "ospreyctl: migration %03u (%s) is missing below the database's version %u; "
                "refusing to apply migrations out of order\n",
                next->version, next->file, ctl_db__current(db));
        goto fail;
    }

    t0 = ctl_db__now_ms();
    res = PQexec(db->conn, next->sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ctl_db__report_migration_error(next, res);
        PQclear(res);
        goto fail;
    }
    PQclear(res);

    snprintf(version, sizeof(version), "%u", next->version);
    params[0] = version;
    params[1] = next->name;
    params[2] = db->checksums[k];
    res = PQexecParams(db->conn,
                       "INSERT INTO public.schema_migrations (version, name, checksum)"
                       " VALUES ($1, $2, $3)", 3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        ctl_db__print_pq("cannot record the migration", PQresultErrorMessage(res));
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    res = PQexec(db->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "ospreyctl: migration %03u (%s): commit failed\n", next->version,
                next->file);
        ctl_db__print_pq("error", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    printf("applied %s (%.0f ms)\n", next->file, ctl_db__now_ms() - t0);
    fflush(stdout);
    return 1;

fail:
    ctl_db__rollback(db);
    return -1;
}

/* Warn when the migrating role will not own a working schema. */
static void ctl_db__check_role(ctl_db_t *db)
{
    PGresult *res = PQexec(db->conn,
                           "SELECT current_user, rolsuper OR rolbypassrls"
                           " FROM pg_roles WHERE rolname = current_user");

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 1), "t") != 0)
        fprintf(stderr,
                "ospreyctl: warning: role \"%s\" is neither a superuser nor BYPASSRLS; the "
                "schema's owner must be one of them for row-level security to work\n",
                PQgetvalue(res, 0, 0));
    PQclear(res);
}

static int ctl_db__parse_version(const char *s, unsigned *v_r)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end != '\0' || *s == '-' || *s == '+' || v == 0 ||
        ctl_db__embedded((unsigned)v, NULL) == NULL)
        return -1;
    *v_r = (unsigned)v;
    return 0;
}

static int ctl_db_migrate(const osp_config_t *cfg, int argc, char **argv)
{
    ctl_db_t db = { 0 };
    unsigned target = ctl_db__latest(), before;
    int i, rc, applied = 0, status = 1;

    for (i = 1; i < argc; i++) {
        const char *v = NULL;

        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            v = argv[++i];
        else if (strncmp(argv[i], "--to=", 5) == 0)
            v = argv[i] + 5;
        else {
            fprintf(stderr, "ospreyctl: db migrate: unexpected argument \"%s\"\n", argv[i]);
            ctl_db__usage(stderr);
            return 2;
        }
        if (ctl_db__parse_version(v, &target) < 0) {
            fprintf(stderr, "ospreyctl: db migrate: --to %s: not a migration version "
                    "(1 to %u)\n", v, ctl_db__latest());
            return 2;
        }
    }

    if (ctl_db__connect(&db, cfg) < 0 || ctl_db__checksums(&db) < 0)
        goto out;
    ctl_db__check_role(&db);
    if (ctl_db__read_applied(&db, false) < 0)
        goto out;
    before = ctl_db__current(&db);
    while ((rc = ctl_db__step(&db, target)) > 0)
        applied++;
    if (rc < 0)
        goto out;
    if (applied == 0 && before > target)
        printf("database is at version %u, past --to %u: nothing to do (migrations are not "
               "reversible)\n", before, target);
    else if (applied == 0)
        printf("database is at version %u: nothing to do\n", ctl_db__current(&db));
    else
        printf("database is at version %u (was %u)\n", ctl_db__current(&db), before);
    status = 0;
out:
    ctl_db__close(&db);
    return status;
}

static int ctl_db_status(const osp_config_t *cfg, int argc, char **argv)
{
    ctl_db_t db = { 0 };
    size_t i, k;
    int pending = 0, problems, status = 1;

    if (argc > 1) {
        fprintf(stderr, "ospreyctl: db status: unexpected argument \"%s\"\n", argv[1]);
        ctl_db__usage(stderr);
        return 2;
    }
    if (ctl_db__connect(&db, cfg) < 0 || ctl_db__checksums(&db) < 0 ||
        ctl_db__read_applied(&db, false) < 0)
        goto out;

    printf("database: %s, user %s\n", PQdb(db.conn), PQuser(db.conn));
    printf("current version: %u\n", ctl_db__current(&db));
    printf("latest version: %u\n", ctl_db__latest());
    for (i = 0; i < db.napplied; i++) {
        const ctl_db_applied_t *a = &db.applied[i];
        const ctl_migration_t *m = ctl_db__embedded(a->version, &k);

        if (m == NULL)
            printf("applied %03u_%s.sql at %s (unknown to this ospreyctl)\n", a->version,
                   a->name, a->applied_at);
        else if (strcmp(a->checksum, db.checksums[k]) != 0)
            printf("applied %s at %s (CHECKSUM MISMATCH)\n", m->file, a->applied_at);
        else
            printf("applied %s at %s\n", m->file, a->applied_at);
    }
    for (i = 0; i < ctl_migrations_count; i++) {
        if (!ctl_db__is_applied(&db, ctl_migrations[i].version)) {
            printf("pending %s\n", ctl_migrations[i].file);
            pending++;
        }
    }
    problems = ctl_db__verify(&db, true);
    if (problems)
        printf("status: %d problem%s (see above)\n", problems, problems == 1 ? "" : "s");
    else if (pending)
        printf("status: %d pending migration%s (run \"ospreyctl db migrate\")\n", pending,
               pending == 1 ? "" : "s");
    else
        printf("status: up to date\n");
    status = problems ? 1 : 0;
out:
    ctl_db__close(&db);
    return status;
}

int ctl_db(const osp_config_t *cfg, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "help") == 0 || strcmp(argv[0], "--help") == 0) {
        ctl_db__usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "migrate") == 0)
        return ctl_db_migrate(cfg, argc, argv);
    if (strcmp(argv[0], "status") == 0)
        return ctl_db_status(cfg, argc, argv);
    fprintf(stderr, "ospreyctl: db: unknown command \"%s\"\n", argv[0]);
    ctl_db__usage(stderr);
    return 2;
}
