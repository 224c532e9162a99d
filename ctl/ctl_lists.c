/*
 * ctl_lists: "ospreyctl list add|del|show": the allow and block lists
 * (list_entries, sql/002) of an account; the root account (0) holds the
 * global lists.  Values are checked here, with an error naming what is
 * wrong, before they reach the database.  Every change fires the
 * list_entries trigger, which NOTIFYs osprey_config with "list_entries" at
 * commit, and the daemons reload their snapshot.  Changes are written to
 * the audit trail in the same transaction.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define LIST_VALUE_MAX 254

static void list_usage(FILE *out)
{
    fprintf(out,
            "usage: ospreyctl list add allow|block KIND VALUE [--account A] [--comment TEXT]\n"
            "       ospreyctl list del allow|block KIND VALUE [--account A]\n"
            "       ospreyctl list del ID\n"
            "       ospreyctl list show [--account A] [--list allow|block] [--kind KIND]\n"
            "  KIND: client (client_network: ADDRESS or NETWORK/BITS), client_name, helo,\n"
            "        sender, recipient (local@domain), sender_domain, recipient_domain,\n"
            "        helo_domain (example.com, or .example.com for its subdomains)\n"
            "  all take --as ROLE\n");
}

static const char *const list_kinds[] = {
    "client_network", "client_name", "helo", "sender", "recipient", "sender_domain",
    "recipient_domain", "helo_domain", NULL,
};

static const char *list_kind(const char *k)
{
    size_t i;

    if (strcmp(k, "client") == 0 || strcmp(k, "network") == 0)
        return "client_network";
    for (i = 0; list_kinds[i] != NULL; i++)
        if (strcmp(list_kinds[i], k) == 0)
            return list_kinds[i];
    return NULL;
}

/* A host or domain name: labels of [a-z0-9-_], not starting or ending in
 * '-', at most 253 characters; lead_dot allows ".example.com". */
static const char *list_check_name(const char *v, bool lead_dot)
{
    const char *p = v;
    size_t label = 0;

    if (lead_dot && *p == '.')
        p++;
    if (*p == '\0')
        return "empty name";
    if (strlen(v) > 253)
        return "longer than 253 characters";
    for (; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return "empty label (two dots, or a dot at either end)";
            if (p[-1] == '-')
                return "a label ends with '-'";
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return "only letters, digits, '-', '_' and '.' are allowed";
        if (label == 0 && *p == '-')
            return "a label starts with '-'";
        if (++label > 63)
            return "a label is longer than 63 characters";
    }
    if (label == 0)
        return "empty label (two dots, or a dot at either end)";
    return NULL;
}

static const char *list_check_address(const char *v)
{
    const char *at = strrchr(v, '@'), *p;

    if (at == NULL)
        return "not an address (expected local@domain; for a whole domain use the *_domain kinds)";
    if (at == v)
        return "empty local part";
    if (strlen(v) > LIST_VALUE_MAX)
        return "longer than 254 characters";
    for (p = v; p < at; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127 || *p == '<' || *p == '>')
            return "the local part has spaces, control characters or angle brackets";
    return list_check_name(at + 1, false) ? "the domain is not a valid domain name" : NULL;
}

/* Check and normalise VALUE for kind (lower case; networks as the server's
 * canonical text).  value_r gets the text to store (value or value_net). */
static int list_value(ctl_pg_t *pg, const char *kind, const char *in, char *value_r, size_t cap)
{
    const char *why = NULL;
    size_t i;

    if (strlen(in) >= cap) {
        fprintf(stderr, "ospreyctl: list: %s \"%.40s...\": too long\n", kind, in);
        return -1;
    }
    for (i = 0; in[i]; i++)
        value_r[i] = (char)tolower((unsigned char)in[i]);
    value_r[i] = '\0';
    if (strcmp(kind, "client_network") == 0) {
        const char *p[1] = { value_r };
        PGresult *res = PQexecParams(pg->conn,
                                     "SELECT CASE WHEN $1::inet = network($1::inet)"
                                     "  OR family($1::inet) = 4 AND masklen($1::inet) = 32"
                                     "  OR family($1::inet) = 6 AND masklen($1::inet) = 128"
                                     " THEN $1::cidr::text ELSE '!' || network($1::inet)::text END",
                                     1, NULL, p, NULL, NULL, 0);

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "ospreyctl: list: client network \"%s\": not an IPv4 or IPv6 "
                    "address or network (expected ADDRESS or ADDRESS/BITS)\n", in);
            PQclear(res);
            return -1;
        }
        if (PQgetvalue(res, 0, 0)[0] == '!') {
            fprintf(stderr, "ospreyctl: list: client network \"%s\": bits set to the right of "
                    "the prefix length (did you mean %s?)\n", in, PQgetvalue(res, 0, 0) + 1);
            PQclear(res);
            return -1;
        }
        snprintf(value_r, cap, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        return 0;
    }
    if (strcmp(kind, "sender") == 0 || strcmp(kind, "recipient") == 0)
        why = list_check_address(value_r);
    else if (strstr(kind, "_domain") != NULL)
        why = strchr(value_r, '@') ? "a domain has no '@' (for an address use sender or recipient)"
                                   : list_check_name(value_r, true);
    else
        why = list_check_name(value_r, false);
    if (why != NULL) {
        fprintf(stderr, "ospreyctl: list: %s \"%s\": %s\n", kind, in, why);
        return -1;
    }
    return 0;
}

static int list_which(const char *l)
{
    if (strcmp(l, "allow") != 0 && strcmp(l, "block") != 0) {
        fprintf(stderr, "ospreyctl: list: \"%s\": expected allow or block\n", l);
        return -1;
    }
    return 0;
}

static int list_change(ctl_pg_t *pg, bool add, int argc, char **argv)
{
    const char *pos[3], *account = NULL, *comment = NULL, *kind;
    char acct[32], value[LIST_VALUE_MAX + 2], details[64];
    const char *p[5];
    /* --comment only for "add" */
    const ctl_opt_t opts[] = { { "--account", &account, NULL }, { "--comment", &comment, NULL } };
    PGresult *res;
    int npos = ctl_opts(argc, argv, opts, add ? 2 : 1, pos, 3);

    if (npos < 0)
        goto usage;
    if (!add && npos == 1 && account == NULL && strspn(pos[0], "0123456789") == strlen(pos[0])) {
        /* list del ID */
        p[0] = pos[0];
        if (ctl_pg_cmd(pg, "list del", "BEGIN", 0, NULL) < 0)
            return 1;
        res = ctl_pg_exec(pg, "list del",
                          "DELETE FROM list_entries WHERE id = $1::bigint"
                          " RETURNING account_id::text, list, kind,"
                          "  coalesce(value, value_net::text)",
                          1, p);
        goto deleted;
    }
    if (npos != 3)
        goto usage;
    if (list_which(pos[0]) < 0)
        return 2;
    kind = list_kind(pos[1]);
    if (kind == NULL) {
        fprintf(stderr, "ospreyctl: list: unknown kind \"%s\" (client, client_name, helo, "
                "sender, recipient, sender_domain, recipient_domain, helo_domain)\n", pos[1]);
        return 2;
    }
    if (list_value(pg, kind, pos[2], value, sizeof(value)) < 0)
        return 2;
    if (ctl_pg_default_account(pg, account, acct) < 0)
        return 1;
    if (ctl_pg_cmd(pg, "list", "BEGIN", 0, NULL) < 0)
        return 1;
    p[0] = acct;
    p[1] = pos[0];
    p[2] = kind;
    p[3] = value;
    if (!add) {
        res = ctl_pg_exec(pg, "list del",
                          "DELETE FROM list_entries WHERE account_id = $1::bigint AND list = $2"
                          " AND kind = $3 AND (value = $4 OR value_net = CASE $3"
                          "  WHEN 'client_network' THEN $4::cidr END)"
                          " RETURNING account_id::text, list, kind,"
                          "  coalesce(value, value_net::text)",
                          4, p);
        goto deleted;
    }
    /* One entry per account, kind and value: say where it already is. */
    res = ctl_pg_exec(pg, "list add",
                      "SELECT id::text, list FROM list_entries WHERE account_id = $1::bigint"
                      " AND kind = $3 AND (value = $4 OR value_net = CASE $3"
                      "  WHEN 'client_network' THEN $4::cidr END) AND $2 <> ''",
                      4, p);
    if (res == NULL)
        goto fail;
    if (PQntuples(res) > 0) {
        fprintf(stderr, "ospreyctl: list add: %s %s is already on the %s list of account %s "
                "(entry %s)\n", kind, value, PQgetvalue(res, 0, 1), acct, PQgetvalue(res, 0, 0));
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    p[4] = comment;
    res = ctl_pg_exec(pg, "list add",
                      "INSERT INTO list_entries (account_id, list, kind, value, value_net, comment)"
                      " VALUES ($1::bigint, $2, $3,"
                      "  CASE WHEN $3 <> 'client_network' THEN $4 END,"
                      "  CASE WHEN $3 = 'client_network' THEN $4::cidr END, $5)"
                      " RETURNING id::text",
                      5, p);
    if (res == NULL)
        goto fail;
    snprintf(details, sizeof(details), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    {
        const char *dp[3] = { pos[0], kind, value };
        PGresult *dr = ctl_pg_exec(pg, "list add",
                                   "SELECT jsonb_build_object('list', $1::text, 'kind', $2::text,"
                                   " 'value', $3::text)::text", 3, dp);

        if (dr == NULL || ctl_pg_audit(pg, acct, "list.add", "list_entry", details,
                                       PQgetvalue(dr, 0, 0)) < 0) {
            PQclear(dr);
            goto fail;
        }
        PQclear(dr);
    }
    if (ctl_pg_cmd(pg, "list add", "COMMIT", 0, NULL) < 0)
        return 1;
    printf("%s list of account %s: added %s %s (entry %s)\n", pos[0], acct, kind, value, details);
    return 0;

deleted:
    if (res == NULL)
        goto fail;
    if (PQntuples(res) == 0) {
        if (npos == 1)
            fprintf(stderr, "ospreyctl: list del: no entry %s%s\n", pos[0],
                    pg->as_role ? " (or not visible to this admin)" : "");
        else
            fprintf(stderr, "ospreyctl: list del: %s %s is not on the %s list of account %s\n",
                    p[2], p[3], p[1], p[0]);
        PQclear(res);
        goto fail;
    }
    {
        char a2[32], desc[400];
        const char *dp[3];
        PGresult *dr;

        snprintf(a2, sizeof(a2), "%s", PQgetvalue(res, 0, 0));
        snprintf(desc, sizeof(desc), "%s list of account %s: deleted %s %s", PQgetvalue(res, 0, 1),
                 a2, PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
        dp[0] = PQgetvalue(res, 0, 1);
        dp[1] = PQgetvalue(res, 0, 2);
        dp[2] = PQgetvalue(res, 0, 3);
        dr = ctl_pg_exec(pg, "list del",
                         "SELECT jsonb_build_object('list', $1::text, 'kind', $2::text,"
                         " 'value', $3::text)::text", 3, dp);
        PQclear(res);
        if (dr == NULL || ctl_pg_audit(pg, a2, "list.del", "list_entry", NULL,
                                       PQgetvalue(dr, 0, 0)) < 0) {
            PQclear(dr);
            goto fail;
        }
        PQclear(dr);
        if (ctl_pg_cmd(pg, "list del", "COMMIT", 0, NULL) < 0)
            return 1;
        printf("%s\n", desc);
    }
    return 0;
fail:
    PQclear(PQexec(pg->conn, "ROLLBACK"));
    return 1;
usage:
    list_usage(stderr);
    return 2;
}

static int list_show(ctl_pg_t *pg, int argc, char **argv)
{
    const char *account = NULL, *list = "", *kind = "", *kind_arg;
    char acct[32] = "";
    const char *p[3];
    const ctl_opt_t opts[] = {
        { "--account", &account, NULL }, { "--list", &list, NULL }, { "--kind", &kind, NULL },
    };

    if (ctl_opts(argc, argv, opts, 3, NULL, 0) < 0)
        goto usage;
    if (*list && list_which(list) < 0)
        return 2;
    kind_arg = kind;
    if (*kind && (kind = list_kind(kind)) == NULL) {
        fprintf(stderr, "ospreyctl: list show: unknown kind \"%s\"\n", kind_arg);
        return 2;
    }
    if (account != NULL && ctl_pg_account(pg, account, acct) < 0)
        return 1;
    p[0] = acct;
    p[1] = list;
    p[2] = kind;
    return ctl_pg_show(pg, "list show",
                       "SELECT e.id, e.account_id AS account, e.list, e.kind,"
                       " coalesce(e.value, e.value_net::text) AS value,"
                       " coalesce(e.comment, '') AS comment"
                       " FROM list_entries e JOIN accounts ac ON ac.id = e.account_id"
                       " WHERE ($1 = '' OR ac.path <@ (SELECT r.path FROM accounts r"
                       "                               WHERE r.id = nullif($1, '')::bigint))"
                       "   AND ($2 = '' OR e.list = $2) AND ($3 = '' OR e.kind = $3)"
                       " ORDER BY ac.path, e.list, e.kind, coalesce(e.value, e.value_net::text)",
                       3, p);
usage:
    list_usage(stderr);
    return 2;
}

static int list_add(ctl_pg_t *pg, int argc, char **argv)
{
    return list_change(pg, true, argc, argv);
}

static int list_del(ctl_pg_t *pg, int argc, char **argv)
{
    return list_change(pg, false, argc, argv);
}

int ctl_list(const osp_config_t *cfg, int argc, char **argv)
{
    static const ctl_pg_sub_t subs[] = {
        { "add", list_add }, { "del", list_del }, { "show", list_show },
    };

    return ctl_pg_run(cfg, "list", subs, sizeof(subs) / sizeof(subs[0]), list_usage, argc, argv);
}
