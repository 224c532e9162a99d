/*
 * ctl_accounts: the account tree and what accounts own, and the custom
 * rules stored per account.
 *
 *   ospreyctl account add NAME --kind reseller|client|user [--parent A]
 *   ospreyctl account list [--parent A]
 *   ospreyctl account show A
 *   ospreyctl account del A
 *   ospreyctl account domain add|del A DOMAIN
 *   ospreyctl account address add|del A ADDRESS
 *   ospreyctl account admin add A ROLE
 *   ospreyctl rule add ACCOUNT FILE [--name NAME] [--priority N] [--disabled]
 *   ospreyctl rule list [--account A]
 *   ospreyctl rule del ACCOUNT NAME
 *
 * "client" is the schema's "organisation".  An account is given by id or by
 * its (unique) name.  "rule add" compiles the file with the rules compiler
 * first and stores it (validated = true) only if it compiled; otherwise it
 * prints the compiler's FILE:LINE:COLUMN errors and stores nothing.  Every
 * change goes to the audit trail in the same transaction; the tables'
 * triggers NOTIFY osprey_config so that daemons reload.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "osp_buf.h"
#include "osp_rules.h"

#define RULE_FILE_MAX (1024 * 1024)

static void acct_usage(FILE *out)
{
    fprintf(out,
            "usage: ospreyctl account add NAME --kind reseller|client|user [--parent A]\n"
            "       ospreyctl account list [--parent A]\n"
            "       ospreyctl account show A\n"
            "       ospreyctl account del A\n"
            "       ospreyctl account domain add|del A DOMAIN\n"
            "       ospreyctl account address add|del A ADDRESS\n"
            "       ospreyctl account admin add A ROLE\n"
            "  A: account id or name; all take --as ROLE\n");
}

static void rule_usage(FILE *out)
{
    fprintf(out,
            "usage: ospreyctl rule add ACCOUNT FILE [--name NAME] [--priority N] [--disabled]\n"
            "       ospreyctl rule list [--account A]\n"
            "       ospreyctl rule del ACCOUNT NAME\n"
            "  all take --as ROLE\n");
}

static int tx_begin(ctl_pg_t *pg)
{
    return ctl_pg_cmd(pg, "begin", "BEGIN", 0, NULL);
}

static int tx_commit(ctl_pg_t *pg)
{
    return ctl_pg_cmd(pg, "commit", "COMMIT", 0, NULL);
}

static int tx_fail(ctl_pg_t *pg)
{
    PQclear(PQexec(pg->conn, "ROLLBACK"));
    return 1;
}

static int acct_add(ctl_pg_t *pg, int argc, char **argv)
{
    const char *name = NULL, *kind = NULL, *parent = NULL;
    char pid[32], id[32];
    const char *p[3];
    const ctl_opt_t opts[] = { { "--kind", &kind, NULL }, { "--parent", &parent, NULL } };
    PGresult *res;

    if (ctl_opts(argc, argv, opts, 2, &name, 1) != 1 || kind == NULL)
        goto usage;
    if (strcmp(kind, "client") == 0)
        kind = "organisation";
    if (strcmp(kind, "reseller") != 0 && strcmp(kind, "organisation") != 0 &&
        strcmp(kind, "user") != 0) {
        fprintf(stderr, "ospreyctl: account add: kind \"%s\": expected reseller, client or user\n",
                kind);
        return 2;
    }
    if (*name == '\0' || strspn(name, "0123456789") == strlen(name)) {
        fprintf(stderr, "ospreyctl: account add: name \"%s\": must not be empty or a number "
                "(numbers are account ids)\n", name);
        return 2;
    }
    if (ctl_pg_default_account(pg, parent, pid) < 0)
        return 1;
    if (tx_begin(pg) < 0)
        return 1;
    p[0] = pid;
    p[1] = kind;
    p[2] = name;
    res = ctl_pg_exec(pg, "account add",
                      "INSERT INTO accounts (parent_id, kind, name) VALUES ($1::bigint, $2, $3)"
                      " RETURNING id::text",
                      3, p);
    if (res == NULL)
        return tx_fail(pg);
    snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (ctl_pg_audit(pg, id, "account.add", "account", id, NULL) < 0 || tx_commit(pg) < 0)
        return tx_fail(pg);
    printf("account %s: added (%s \"%s\" below account %s)\n", id,
           strcmp(kind, "organisation") == 0 ? "client" : kind, name, pid);
    return 0;
usage:
    acct_usage(stderr);
    return 2;
}

static int acct_list(ctl_pg_t *pg, int argc, char **argv)
{
    return ctl_pg_list_query(pg, argc, argv, "--parent", acct_usage, "account list",
        "SELECT a.id, coalesce(a.parent_id::text, '-') AS parent,"
        " CASE a.kind WHEN 'organisation' THEN 'client' ELSE a.kind END AS kind,"
        " repeat('  ', nlevel(a.path) - 1) || a.name AS name,"
        " (SELECT count(*) FROM domains d WHERE d.account_id = a.id) AS domains,"
        " (SELECT count(*) FROM addresses d WHERE d.account_id = a.id) AS addresses"
        " FROM accounts a"
        " WHERE $1 = '' OR a.path <@ (SELECT r.path FROM accounts r"
        "                             WHERE r.id = nullif($1, '')::bigint)"
        " ORDER BY a.path");
}

static int acct_show(ctl_pg_t *pg, int argc, char **argv)
{
    char id[32];
    const char *p[1];
    PGresult *res;
    int i;

    if (argc != 1) {
        acct_usage(stderr);
        return 2;
    }
    if (ctl_pg_account(pg, argv[0], id) < 0)
        return 1;
    p[0] = id;
    res = ctl_pg_exec(pg, "account show",
                      "SELECT a.id::text, a.name,"
                      " CASE a.kind WHEN 'organisation' THEN 'client' ELSE a.kind END,"
                      " coalesce(a.parent_id::text, '-'), a.path::text,"
                      " to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',"
                      " coalesce((SELECT string_agg(d.name, ' ' ORDER BY d.name) FROM domains d"
                      "            WHERE d.account_id = a.id), ''),"
                      " coalesce((SELECT string_agg(d.address, ' ' ORDER BY d.address)"
                      "            FROM addresses d WHERE d.account_id = a.id), ''),"
                      " coalesce((SELECT string_agg(r.role, ' ' ORDER BY r.role)"
                      "            FROM admin_roles r WHERE r.account_id = a.id), ''),"
                      " (SELECT count(*) FROM accounts c WHERE c.parent_id = a.id)::text,"
                      " (SELECT count(*) FROM rules r WHERE r.account_id = a.id)::text,"
                      " (SELECT count(*) FROM list_entries e WHERE e.account_id = a.id)::text"
                      " FROM accounts a WHERE a.id = $1::bigint",
                      1, p);
    if (res == NULL)
        return 1;
    {
        static const char *const labels[] = {
            "id", "name", "kind", "parent", "path", "created", "domains", "addresses",
            "admins", "sub-accounts", "rules", "list entries",
        };

        for (i = 0; i < PQnfields(res) && i < (int)(sizeof(labels) / sizeof(labels[0])); i++)
            printf("%-13s %s\n", labels[i], PQgetvalue(res, 0, i));
    }
    PQclear(res);
    return 0;
}

static int acct_del(ctl_pg_t *pg, int argc, char **argv)
{
    char id[32];
    const char *p[1];
    PGresult *res;

    if (argc != 1) {
        acct_usage(stderr);
        return 2;
    }
    if (ctl_pg_account(pg, argv[0], id) < 0)
        return 1;
    if (strcmp(id, "0") == 0) {
        fprintf(stderr, "ospreyctl: account del: the root account cannot be deleted\n");
        return 1;
    }
    p[0] = id;
    if (tx_begin(pg) < 0)
        return 1;
    res = ctl_pg_exec(pg, "account del",
                      "SELECT count(*) FROM accounts WHERE parent_id = $1::bigint", 1, p);
    if (res == NULL)
        return tx_fail(pg);
    if (strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
        fprintf(stderr, "ospreyctl: account del: account %s has %s sub-account(s); delete "
                "or move them first\n", id, PQgetvalue(res, 0, 0));
        PQclear(res);
        return tx_fail(pg);
    }
    PQclear(res);
    res = ctl_pg_exec(pg, "account del", "DELETE FROM accounts WHERE id = $1::bigint", 1, p);
    if (res == NULL)
        return tx_fail(pg);
    if (strcmp(PQcmdTuples(res), "1") != 0) {
        fprintf(stderr, "ospreyctl: account del: account %s: not allowed (an admin cannot "
                "delete its own account)\n", id);
        PQclear(res);
        return tx_fail(pg);
    }
    PQclear(res);
    if (ctl_pg_audit(pg, id, "account.del", "account", id, NULL) < 0 || tx_commit(pg) < 0)
        return tx_fail(pg);
    printf("account %s: deleted, with its domains, addresses, lists and rules\n", id);
    return 0;
}

/* account domain|address add|del A VALUE */
static int acct_owned(ctl_pg_t *pg, bool domain, int argc, char **argv)
{
    char id[32], value[256], msg[400];
    const char *p[2];
    const char *what = domain ? "domain" : "address";
    PGresult *res;
    size_t i;
    bool add;

    if (argc != 3 || (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "del") != 0)) {
        acct_usage(stderr);
        return 2;
    }
    add = strcmp(argv[0], "add") == 0;
    if (strlen(argv[2]) >= sizeof(value) - 1 || argv[2][0] == '\0') {
        fprintf(stderr, "ospreyctl: account %s: \"%.40s\": empty or too long\n", what, argv[2]);
        return 2;
    }
    for (i = 0; argv[2][i]; i++) {
        unsigned char c = (unsigned char)argv[2][i];

        if (c <= ' ' || c >= 127 || c == '<' || c == '>') {
            fprintf(stderr, "ospreyctl: account %s \"%s\": spaces, control characters and "
                    "angle brackets are not allowed\n", what, argv[2]);
            return 2;
        }
        value[i] = (char)tolower(c);
    }
    value[i] = '\0';
    if (domain && (strchr(value, '@') || value[0] == '.' || value[i - 1] == '.' ||
                   strstr(value, "..") != NULL)) {
        fprintf(stderr, "ospreyctl: account domain \"%s\": not a domain name\n", argv[2]);
        return 2;
    }
    if (!domain && (strchr(value, '@') == NULL || value[0] == '@' || value[i - 1] == '@')) {
        fprintf(stderr, "ospreyctl: account address \"%s\": expected local@domain\n", argv[2]);
        return 2;
    }
    if (ctl_pg_account(pg, argv[1], id) < 0)
        return 1;
    p[0] = id;
    p[1] = value;
    if (tx_begin(pg) < 0)
        return 1;
    if (add)
        res = ctl_pg_exec(pg, "account", domain
                          ? "INSERT INTO domains (account_id, name) VALUES ($1::bigint, $2)"
                            " ON CONFLICT (name) DO NOTHING RETURNING id"
                          : "INSERT INTO addresses (account_id, address) VALUES ($1::bigint, $2)"
                            " ON CONFLICT (address) DO NOTHING RETURNING id",
                          2, p);
    else
        res = ctl_pg_exec(pg, "account", domain
                          ? "DELETE FROM domains WHERE account_id = $1::bigint AND name = $2"
                            " RETURNING id"
                          : "DELETE FROM addresses WHERE account_id = $1::bigint"
                            " AND address = $2 RETURNING id",
                          2, p);
    if (res == NULL)
        return tx_fail(pg);
    if (PQntuples(res) == 0) {
        if (add)
            fprintf(stderr, "ospreyctl: account %s %s: already belongs to an account\n", what,
                    value);
        else
            fprintf(stderr, "ospreyctl: account %s %s: not owned by account %s\n", what, value,
                    id);
        PQclear(res);
        return tx_fail(pg);
    }
    PQclear(res);
    snprintf(msg, sizeof(msg), "account.%s.%s", what, argv[0]);
    if (ctl_pg_audit(pg, id, msg, what, value, NULL) < 0 || tx_commit(pg) < 0)
        return tx_fail(pg);
    printf("account %s: %s %s %s\n", id, what, value, add ? "added" : "deleted");
    return 0;
}

static int acct_admin(ctl_pg_t *pg, int argc, char **argv)
{
    char id[32];
    const char *p[2];

    if (argc != 3 || strcmp(argv[0], "add") != 0) {
        acct_usage(stderr);
        return 2;
    }
    if (ctl_pg_account(pg, argv[1], id) < 0)
        return 1;
    p[0] = argv[2];
    p[1] = id;
    if (ctl_pg_cmd(pg, "account admin add", "SELECT osprey_admin_create($1::name, $2::bigint)",
                   2, p) < 0)
        return 1;
    printf("account %s: role %s is its admin\n", id, argv[2]);
    return 0;
}

static int acct_domain(ctl_pg_t *pg, int argc, char **argv)
{
    return acct_owned(pg, true, argc, argv);
}

static int acct_address(ctl_pg_t *pg, int argc, char **argv)
{
    return acct_owned(pg, false, argc, argv);
}

int ctl_account(const osp_config_t *cfg, int argc, char **argv)
{
    static const ctl_pg_sub_t subs[] = {
        { "add", acct_add }, { "list", acct_list }, { "show", acct_show }, { "del", acct_del },
        { "domain", acct_domain }, { "address", acct_address }, { "admin", acct_admin },
    };

    return ctl_pg_run(cfg, "account", subs, sizeof(subs) / sizeof(subs[0]), acct_usage, argc,
                      argv);
}

/* ------------------------------------------------------------ rules */

static int rule_read(const char *path, osp_buf_t *out)
{
    if (ctl_read_file(path, "rule add: ", out) < 0)
        return -1;
    if (memchr(osp_buf_cstr(out), '\0', out->len) != NULL) {
        fprintf(stderr, "ospreyctl: rule add: %s: contains NUL bytes\n", path);
        return -1;
    }
    return 0;
}

static int rule_add(ctl_pg_t *pg, int argc, char **argv)
{
    const char *pos[2], *account, *file, *name = NULL, *priority = "0";
    bool disabled = false;
    char id[32], namebuf[128];
    const char *p[5];
    const ctl_opt_t opts[] = {
        { "--name", &name, NULL }, { "--priority", &priority, NULL },
        { "--disabled", NULL, &disabled },
    };
    osp_buf_t src, errors;
    osp_rules_t *rs;
    size_t n_errors = 0;
    PGresult *res;
    int status = 1;

    if (ctl_opts(argc, argv, opts, 3, pos, 2) != 2)
        goto usage;
    account = pos[0];
    file = pos[1];
    {
        const char *d = priority + (*priority == '-');
        size_t nd = strspn(d, "0123456789");

        if (nd == 0 || nd > 9 || d[nd] != '\0') {
            fprintf(stderr, "ospreyctl: rule add: --priority \"%s\": expected an integer\n",
                    priority);
            return 2;
        }
    }
    if (name == NULL) {
        const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
        size_t len = strcspn(base, ".");

        snprintf(namebuf, sizeof(namebuf), "%.*s", (int)(len ? len : strlen(base)), base);
        name = namebuf;
    }
    if (*name == '\0') {
        fprintf(stderr, "ospreyctl: rule add: empty rule set name (use --name)\n");
        return 2;
    }
    osp_buf_init(&src, RULE_FILE_MAX);
    osp_buf_init(&errors, OSP_BUF_UNLIMITED);
    if (rule_read(file, &src) < 0)
        goto out;
    rs = osp_rules_compile(osp_buf_cstr(&src), src.len, file, NULL, &errors, &n_errors);
    if (rs == NULL) {
        fputs(osp_buf_cstr(&errors), stderr);
        fprintf(stderr, "ospreyctl: rule add: %s: %zu error%s, nothing stored\n", file, n_errors,
                n_errors == 1 ? "" : "s");
        goto out;
    }
    osp_rules_free(&rs);
    if (ctl_pg_account(pg, account, id) < 0)
        goto out;
    if (tx_begin(pg) < 0)
        goto out;
    p[0] = id;
    p[1] = name;
    p[2] = osp_buf_cstr(&src);
    p[3] = disabled ? "false" : "true";
    p[4] = priority;
    res = ctl_pg_exec(pg, "rule add",
                      "INSERT INTO rules (account_id, name, source, enabled, priority, validated,"
                      "                   validation_error)"
                      " VALUES ($1::bigint, $2, $3, $4::boolean, $5::integer, true, NULL)"
                      " ON CONFLICT (account_id, name) DO UPDATE"
                      "   SET source = EXCLUDED.source, enabled = EXCLUDED.enabled,"
                      "       priority = EXCLUDED.priority, validated = true,"
                      "       validation_error = NULL"
                      " RETURNING id::text, (xmax = 0)",
                      5, p);
    if (res == NULL) {
        tx_fail(pg);
        goto out;
    }
    {
        char rid[32];
        bool created = strcmp(PQgetvalue(res, 0, 1), "t") == 0;

        snprintf(rid, sizeof(rid), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (ctl_pg_audit(pg, id, created ? "rule.add" : "rule.replace", "rule", name, NULL) < 0 ||
            tx_commit(pg) < 0) {
            tx_fail(pg);
            goto out;
        }
        printf("account %s: rule set \"%s\" %s (id %s, validated)\n", id, name,
               created ? "added" : "replaced", rid);
    }
    status = 0;
out:
    osp_buf_close(&src);
    osp_buf_close(&errors);
    return status;
usage:
    rule_usage(stderr);
    return 2;
}

static int rule_list(ctl_pg_t *pg, int argc, char **argv)
{
    return ctl_pg_list_query(pg, argc, argv, "--account", rule_usage, "rule list",
        "SELECT r.id, r.account_id AS account, r.name, r.priority, r.enabled,"
        " r.validated, length(r.source) AS bytes,"
        " to_char(r.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
        "   AS updated_utc"
        " FROM rules r WHERE $1 = '' OR r.account_id = nullif($1, '')::bigint"
        " ORDER BY r.account_id, r.priority DESC, r.name");
}

static int rule_del(ctl_pg_t *pg, int argc, char **argv)
{
    char id[32];
    const char *p[2];
    PGresult *res;

    if (argc != 2) {
        rule_usage(stderr);
        return 2;
    }
    if (ctl_pg_account(pg, argv[0], id) < 0)
        return 1;
    p[0] = id;
    p[1] = argv[1];
    if (tx_begin(pg) < 0)
        return 1;
    res = ctl_pg_exec(pg, "rule del",
                      "DELETE FROM rules WHERE account_id = $1::bigint AND name = $2 RETURNING id",
                      2, p);
    if (res == NULL)
        return tx_fail(pg);
    if (PQntuples(res) == 0) {
        fprintf(stderr, "ospreyctl: rule del: account %s has no rule set \"%s\"\n", id, argv[1]);
        PQclear(res);
        return tx_fail(pg);
    }
    PQclear(res);
    if (ctl_pg_audit(pg, id, "rule.del", "rule", argv[1], NULL) < 0 || tx_commit(pg) < 0)
        return tx_fail(pg);
    printf("account %s: rule set \"%s\" deleted\n", id, argv[1]);
    return 0;
}

int ctl_rule_db(const osp_config_t *cfg, int argc, char **argv)
{
    static const ctl_pg_sub_t subs[] = {
        { "add", rule_add }, { "list", rule_list }, { "del", rule_del },
    };

    return ctl_pg_run(cfg, "rule", subs, sizeof(subs) / sizeof(subs[0]), rule_usage, argc, argv);
}
