/*
 * ctl_pg: the database connection of ospreyctl's admin commands
 * (quarantine, list, account, rule add, log).
 *
 * Blocking libpq: ospreyctl is a command, not a daemon.  Every statement
 * uses parameters.  "--as ROLE" makes the session SET ROLE to an admin
 * role mapped in admin_roles (sql/007), so that row-level security limits
 * every statement to that admin's subtree, exactly as when the admin logs
 * in as itself.  Without --as the commands run with the rights of the
 * connecting role (database_connection).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "osp_mem.h"

/* Print "ospreyctl: WHAT: primary (detail) [hint]" from a failed result. */
void ctl_pg_report(const char *what, const PGresult *res, const PGconn *conn)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    const char *msg = primary;
    size_t n;

    if (msg == NULL)
        msg = conn ? PQerrorMessage(conn) : "unknown error";
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    fprintf(stderr, "ospreyctl: %s: %.*s\n", what, (int)n, msg);
    if (detail != NULL)
        fprintf(stderr, "ospreyctl: detail: %s\n", detail);
    if (hint != NULL)
        fprintf(stderr, "ospreyctl: hint: %s\n", hint);
}

int ctl_pg_take_as(int *argc, char **argv, const char **role_r)
{
    int i, j;

    *role_r = NULL;
    for (i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--as") != 0)
            continue;
        if (i + 1 >= *argc || argv[i + 1][0] == '\0') {
            fprintf(stderr, "ospreyctl: --as needs an admin role name\n");
            return -1;
        }
        *role_r = argv[i + 1];
        for (j = i; j + 2 < *argc; j++)
            argv[j] = argv[j + 2];
        *argc -= 2;
        i--;
    }
    return 0;
}

int ctl_pg_open(ctl_pg_t *pg, const osp_config_t *cfg, const char *as_role)
{
    const char *conninfo = osp_config_str(cfg, "database_connection");
    int64_t ms = osp_config_duration_ms(cfg, "database_connect_timeout");
    int64_t s = (ms + 999) / 1000 < 2 ? 2 : (ms + 999) / 1000;
    char timeout[32];
    const char *const keys[] = { "connect_timeout", "fallback_application_name", "dbname", NULL };
    const char *vals[] = { timeout, "ospreyctl", conninfo, NULL };
    PGresult *res;

    memset(pg, 0, sizeof(*pg));
    snprintf(timeout, sizeof(timeout), "%lld", (long long)s);
    pg->conn = PQconnectdbParams(keys, vals, 1);
    if (pg->conn == NULL) {
        fprintf(stderr, "ospreyctl: cannot connect to the database: out of memory\n");
        return -1;
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        ctl_pg_report("cannot connect to the database", NULL, pg->conn);
        ctl_pg_close(pg);
        return -1;
    }
    if (as_role == NULL)
        return 0;
    {
        const char *p[1] = { as_role };

        res = ctl_pg_exec(pg, "--as", "SELECT set_config('role', $1, false)", 1, p);
        if (res == NULL) {
            ctl_pg_close(pg);
            return -1;
        }
        PQclear(res);
        res = ctl_pg_exec(pg, "--as", "SELECT osprey_admin_path() IS NOT NULL", 0, NULL);
        if (res == NULL || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            if (res != NULL)
                fprintf(stderr, "ospreyctl: --as: role \"%s\" is not an Osprey admin "
                        "(no row in admin_roles)\n", as_role);
            PQclear(res);
            ctl_pg_close(pg);
            return -1;
        }
        PQclear(res);
    }
    pg->as_role = as_role;
    return 0;
}

void ctl_pg_close(ctl_pg_t *pg)
{
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
}

PGresult *ctl_pg_exec(ctl_pg_t *pg, const char *what, const char *sql, int n,
                      const char *const *params)
{
    PGresult *res = PQexecParams(pg->conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        ctl_pg_report(what, res, pg->conn);
        PQclear(res);
        return NULL;
    }
    return res;
}

int ctl_pg_cmd(ctl_pg_t *pg, const char *what, const char *sql, int n,
               const char *const *params)
{
    PGresult *res = ctl_pg_exec(pg, what, sql, n, params);

    if (res == NULL)
        return -1;
    PQclear(res);
    return 0;
}

int ctl_pg_account(ctl_pg_t *pg, const char *spec, char id_r[32])
{
    const char *p[1] = { spec };
    PGresult *res;
    int n;

    res = ctl_pg_exec(pg, "account",
                      "SELECT id FROM accounts"
                      " WHERE ($1 ~ '^[0-9]{1,18}$' AND id = $1::bigint) OR name = $1"
                      " ORDER BY (id::text = $1) DESC, id LIMIT 2",
                      1, p);
    if (res == NULL)
        return -1;
    n = PQntuples(res);
    if (n == 0) {
        fprintf(stderr, "ospreyctl: account \"%s\": no such account%s\n", spec,
                pg->as_role ? " (or not visible to this admin)" : "");
        PQclear(res);
        return -1;
    }
    if (n > 1 && strcmp(PQgetvalue(res, 0, 0), spec) != 0) {
        fprintf(stderr, "ospreyctl: account \"%s\": several accounts have this name; "
                "give the id\n", spec);
        PQclear(res);
        return -1;
    }
    snprintf(id_r, 32, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int ctl_pg_audit(ctl_pg_t *pg, const char *account_id, const char *action,
                 const char *object_type, const char *object_id, const char *details_json)
{
    const char *p[5] = { account_id, action, object_type, object_id,
                         details_json ? details_json : "{}" };

    return ctl_pg_cmd(pg, "audit",
                      "INSERT INTO audit_log (account_id, action, object_type, object_id, details)"
                      " VALUES ($1::bigint, $2, $3, $4, $5::jsonb)",
                      5, p);
}

void ctl_pg_print_table(const PGresult *res)
{
    int r, c, nr = PQntuples(res), nc = PQnfields(res);
    int *w = osp_calloc((size_t)(nc ? nc : 1), sizeof(*w));

    for (c = 0; c < nc; c++) {
        w[c] = (int)strlen(PQfname(res, c));
        for (r = 0; r < nr; r++)
            if (PQgetlength(res, r, c) > w[c])
                w[c] = PQgetlength(res, r, c);
        if (w[c] > 60)
            w[c] = 60;
    }
    for (c = 0; c < nc; c++)
        printf("%-*s%s", c + 1 < nc ? w[c] : 0, PQfname(res, c), c + 1 < nc ? "  " : "\n");
    for (r = 0; r < nr; r++)
        for (c = 0; c < nc; c++)
            printf("%-*.*s%s", c + 1 < nc ? w[c] : 0, c + 1 < nc ? w[c] : 4096,
                   PQgetvalue(res, r, c), c + 1 < nc ? "  " : "\n");
    free(w);
}

int ctl_pg_parse_limit(const char *s, long *n_r)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < 1 || v > 1000000) {
        fprintf(stderr, "ospreyctl: --limit \"%s\": expected a number 1..1000000\n", s);
        return -1;
    }
    *n_r = v;
    return 0;
}

int ctl_pg_since(ctl_pg_t *pg, const char *spec, char out[64])
{
    static const struct { char c; const char *unit; } units[] = {
        { 's', "seconds" }, { 'm', "minutes" }, { 'h', "hours" }, { 'd', "days" }, { 'w', "weeks" },
    };
    size_t len = strlen(spec), i, digits = strspn(spec, "0123456789");
    char interval[48];
    const char *p[1];
    const char *sql;
    PGresult *res;

    interval[0] = '\0';
    if (len >= 2 && digits == len - 1 && digits <= 9) {
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (spec[len - 1] == units[i].c)
                snprintf(interval, sizeof(interval), "%.*s %s", (int)digits, spec, units[i].unit);
    }
    if (interval[0] != '\0') {
        p[0] = interval;
        sql = "SELECT (now() - $1::interval)::text";
    } else {
        p[0] = spec;
        sql = "SELECT $1::timestamptz::text";
    }
    res = PQexecParams(pg->conn, sql, 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "ospreyctl: --since \"%s\": expected a time (2026-01-31 12:00) or an "
                "age (30m, 12h, 7d)\n", spec);
        PQclear(res);
        return -1;
    }
    snprintf(out, 64, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int ctl_pg_default_account(ctl_pg_t *pg, const char *spec, char id_r[32])
{
    PGresult *res;

    if (spec != NULL)
        return ctl_pg_account(pg, spec, id_r);
    if (pg->as_role == NULL) {
        snprintf(id_r, 32, "0");
        return 0;
    }
    res = ctl_pg_exec(pg, "account", "SELECT subpath(osprey_admin_path(), -1)::text", 0, NULL);
    if (res == NULL)
        return -1;
    snprintf(id_r, 32, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int ctl_pg_run(const osp_config_t *cfg, const char *group, const ctl_pg_sub_t *subs,
               size_t nsubs, void (*usage)(FILE *out), int argc, char **argv)
{
    const char *as;
    ctl_pg_t pg;
    size_t i;
    int status;

    if (ctl_pg_take_as(&argc, argv, &as) < 0)
        return 2;
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[0], "help") == 0 || strcmp(argv[0], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    for (i = 0; i < nsubs && strcmp(argv[0], subs[i].name) != 0; i++)
        ;
    if (i == nsubs) {
        fprintf(stderr, "ospreyctl: %s: unknown subcommand \"%s\"\n", group, argv[0]);
        usage(stderr);
        return 2;
    }
    if (ctl_pg_open(&pg, cfg, as) < 0)
        return 1;
    pg.cfg = cfg;
    status = subs[i].run(&pg, argc - 1, argv + 1);
    ctl_pg_close(&pg);
    return status;
}

int ctl_pg_show(ctl_pg_t *pg, const char *what, const char *sql, int n,
                const char *const *params)
{
    PGresult *res = ctl_pg_exec(pg, what, sql, n, params);

    if (res == NULL)
        return 1;
    ctl_pg_print_table(res);
    PQclear(res);
    return 0;
}

int ctl_opts(int argc, char **argv, const ctl_opt_t *opts, size_t nopts, const char **pos,
             int maxpos)
{
    int a, npos = 0;
    size_t o;

    for (a = 0; a < argc; a++) {
        if (strncmp(argv[a], "--", 2) != 0) {
            if (npos >= maxpos)
                return -1;
            pos[npos++] = argv[a];
            continue;
        }
        for (o = 0; o < nopts && strcmp(argv[a], opts[o].name) != 0; o++)
            ;
        if (o == nopts)
            return -1;
        if (opts[o].flag) {
            *opts[o].flag = true;
        } else {
            if (a + 1 >= argc)
                return -1;
            *opts[o].value = argv[++a];
        }
    }
    return npos;
}

int ctl_pg_list_query(ctl_pg_t *pg, int argc, char **argv, const char *flag,
                      void (*usage)(FILE *out), const char *what, const char *sql)
{
    char id[32] = "";
    const char *p[1];

    if (argc == 2 && strcmp(argv[0], flag) == 0) {
        if (ctl_pg_account(pg, argv[1], id) < 0)
            return 1;
    } else if (argc != 0) {
        usage(stderr);
        return 2;
    }
    p[0] = id;
    return ctl_pg_show(pg, what, sql, 1, p);
}
