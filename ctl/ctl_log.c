/*
 * ctl_log: "ospreyctl log search QUERY [--since T] [--until T] [--limit N]
 * [--account A]" over osprey_log_search() (sql/008), which also finds rows
 * the worker has not indexed yet.  QUERY is web-search syntax
 * (websearch_to_tsquery('simple', QUERY)): words, "quoted phrases", -not,
 * or.  Under --as, row-level security limits the rows to the admin's
 * subtree.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ctl.h"

static void log_usage(FILE *out)
{
    fprintf(out, "usage: ospreyctl log search QUERY [--since T] [--until T] [--limit N]"
                 " [--account A] [--as ROLE]\n"
                 "  T: a time (2026-01-31 12:00) or an age (30m, 12h, 7d); default --since 7d\n");
}

static int log_search(ctl_pg_t *pg, int argc, char **argv)
{
    const char *query = NULL, *since = "7d", *until = NULL, *account = NULL, *limit_arg = NULL;
    char since_ts[64], until_ts[64] = "", acct[32] = "", limit_s[32];
    long limit = (long)osp_config_int(pg->cfg, "ctl_page_size");
    const char *p[5];
    const ctl_opt_t opts[] = {
        { "--since", &since, NULL }, { "--until", &until, NULL },
        { "--account", &account, NULL }, { "--limit", &limit_arg, NULL },
    };

    if (ctl_opts(argc, argv, opts, 4, &query, 1) != 1 || *query == '\0')
        goto usage;
    if (limit_arg != NULL && ctl_pg_parse_limit(limit_arg, &limit) < 0)
        return 2;
    if (ctl_pg_since(pg, since, since_ts) < 0 || (until && ctl_pg_since(pg, until, until_ts) < 0))
        return 2;
    if (account != NULL && ctl_pg_account(pg, account, acct) < 0)
        return 1;
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    p[0] = query;
    p[1] = since_ts;
    p[2] = until_ts;
    p[3] = limit_s;
    p[4] = acct;
    return ctl_pg_show(pg, "log search",
                       "SELECT to_char(l.logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                       "   AS logged_utc, coalesce(l.account_id::text, '-') AS account,"
                       " coalesce(l.queue_id, '') AS queue_id,"
                       " coalesce(nullif(l.sender, ''), '<>') AS sender,"
                       " coalesce(l.recipient, '') AS recipient, coalesce(l.verdict, '') AS verdict,"
                       " coalesce(to_char(l.score, 'FM9990.00'), '-') AS score,"
                       " coalesce(l.subject, '') AS subject"
                       " FROM osprey_log_search(websearch_to_tsquery('simple', $1),"
                       "   $2::timestamptz, coalesce(nullif($3, '')::timestamptz,"
                       "                             now() + interval '1 minute'),"
                       "   CASE WHEN $5 = '' THEN $4::integer ELSE 1000000 END) l"
                       " WHERE $5 = '' OR l.account_id IN (SELECT d.id FROM accounts d"
                       "   WHERE d.path <@ (SELECT r.path FROM accounts r"
                       "                     WHERE r.id = nullif($5, '')::bigint))"
                       " ORDER BY l.logged_at DESC, l.id DESC LIMIT $4::bigint",
                       5, p);
usage:
    log_usage(stderr);
    return 2;
}

int ctl_log(const osp_config_t *cfg, int argc, char **argv)
{
    static const ctl_pg_sub_t subs[] = { { "search", log_search } };

    return ctl_pg_run(cfg, "log", subs, 1, log_usage, argc, argv);
}
