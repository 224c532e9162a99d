/*
 * ctl_quarantine: "ospreyctl quarantine list|show|release|delete".
 *
 * A quarantine row is one (message, recipient); ID is its id.  Release does
 * not send anything itself: in one transaction it moves the row from held
 * to release_requested, queues a "release" job for osprey-worker (payload
 * {"quarantine_id", "day", "to"}) and writes the audit trail.  The worker
 * sends the stored message to the reinjection address and marks the row
 * released (worker_jobs.c).  With --train-ham the same transaction also
 * queues a "train" job that teaches Bayes the message is ham for the
 * row's account (as "ospreyctl bayes vote ID --ham" does).  Everything
 * runs under row-level security when --as names an admin role, so an
 * admin sees and releases only mail of its own subtree.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static void q_usage(FILE *out)
{
    fprintf(out,
            "usage: ospreyctl quarantine list [--account A] [--since T] [--limit N] [--as ROLE]\n"
            "       ospreyctl quarantine show ID [--raw] [--as ROLE]\n"
            "       ospreyctl quarantine release ID [--to ADDRESS] [--train-ham] [--as ROLE]\n"
            "       ospreyctl quarantine delete ID [--as ROLE]\n");
}

static int q_parse_id(const char *s)
{
    size_t n = strspn(s, "0123456789");

    if (n == 0 || n > 18 || s[n] != '\0') {
        fprintf(stderr, "ospreyctl: quarantine id \"%s\": expected a number\n", s);
        return -1;
    }
    return 0;
}

/* An envelope address for --to: local@domain, printable, no spaces or <>. */
static int q_check_address(const char *s)
{
    const char *at = strrchr(s, '@');
    const char *p;

    for (p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127 || *p == '<' || *p == '>')
            break;
    if (*p != '\0' || at == NULL || at == s || at[1] == '\0' || strlen(s) > 254) {
        fprintf(stderr, "ospreyctl: --to \"%s\": expected an address local@domain "
                "(no spaces, no angle brackets, at most 254 characters)\n", s);
        return -1;
    }
    return 0;
}

static int q_list(ctl_pg_t *pg, int argc, char **argv)
{
    const char *account = NULL, *since = NULL, *limit_arg = NULL;
    char acct[32] = "", since_ts[64] = "", limit_s[32];
    long limit = (long)osp_config_int(pg->cfg, "ctl_page_size");
    const char *p[3];
    const ctl_opt_t opts[] = {
        { "--account", &account, NULL }, { "--since", &since, NULL },
        { "--limit", &limit_arg, NULL },
    };

    if (ctl_opts(argc, argv, opts, 3, NULL, 0) < 0)
        goto usage;
    if (limit_arg != NULL && ctl_pg_parse_limit(limit_arg, &limit) < 0)
        return 2;
    if (account != NULL && ctl_pg_account(pg, account, acct) < 0)
        return 1;
    if (since != NULL && ctl_pg_since(pg, since, since_ts) < 0)
        return 2;
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    p[0] = acct;
    p[1] = since_ts;
    p[2] = limit_s;
    return ctl_pg_show(pg, "quarantine list",
                       "SELECT q.id, to_char(q.created_at AT TIME ZONE 'UTC',"
                       "  'YYYY-MM-DD HH24:MI:SS') AS created_utc,"
                       " q.account_id AS account, q.release_state AS state,"
                       " coalesce(to_char(q.score, 'FM9990.00'), '-') AS score,"
                       " CASE q.sender WHEN '' THEN '<>' ELSE q.sender END AS sender,"
                       " q.recipient, coalesce(q.subject, '') AS subject"
                       " FROM quarantine q"
                       " WHERE ($1 = '' OR q.account_id IN (SELECT d.id FROM accounts d"
                       "   WHERE d.path <@ (SELECT r.path FROM accounts r"
                       "                     WHERE r.id = nullif($1, '')::bigint)))"
                       "   AND ($2 = '' OR q.created_at >= nullif($2, '')::timestamptz)"
                       "   AND ($2 = '' OR q.day >= (nullif($2, '')::timestamptz"
                       "                             AT TIME ZONE 'UTC')::date)"
                       " ORDER BY q.created_at DESC, q.id DESC LIMIT $3::bigint",
                       3, p);
usage:
    q_usage(stderr);
    return 2;
}

/* Write the header part of a message (up to the first empty line). */
static void q_print_headers(const char *body, size_t len)
{
    size_t i, line = 0;

    for (i = 0; i < len; i++) {
        if (body[i] != '\n')
            continue;
        if (i == line || (i == line + 1 && body[line] == '\r'))
            break;
        line = i + 1;
    }
    fwrite(body, 1, line, stdout);
}

static int q_show(ctl_pg_t *pg, int argc, char **argv)
{
    const char *id = NULL;
    bool raw = false;
    const char *p[1];
    const ctl_opt_t opts[] = { { "--raw", NULL, &raw } };
    PGresult *res;
    int f;

    if (ctl_opts(argc, argv, opts, 1, &id, 1) != 1)
        goto usage;
    if (q_parse_id(id) < 0)
        return 2;
    p[0] = id;
    /* Binary results: the body comes back as its exact bytes. */
    res = PQexecParams(pg->conn,
                       "SELECT b.body, q.id::text, q.account_id::text, q.queue_id,"
                       " coalesce(q.message_id, ''), q.sender, q.recipient,"
                       " coalesce(host(q.client_address), ''), coalesce(q.client_name, ''),"
                       " coalesce(q.helo, ''), coalesce(q.subject, ''), q.size::text,"
                       " coalesce(to_char(q.score, 'FM9990.00'), '-'), q.verdict,"
                       " array_to_string(q.reasons, '; '), q.release_state,"
                       " to_char(q.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',"
                       " coalesce(q.release_requested_by, ''),"
                       " coalesce(to_char(q.released_at AT TIME ZONE 'UTC',"
                       "                  'YYYY-MM-DD HH24:MI:SS') || ' UTC', ''),"
                       " (SELECT string_agg(o.recipient, ', ' ORDER BY o.recipient)"
                       "    FROM quarantine o WHERE o.queue_id = q.queue_id"
                       "     AND o.body_sha256 = q.body_sha256"
                       "     AND o.day BETWEEN q.day - 1 AND q.day + 1)"
                       " FROM quarantine q JOIN quarantine_bodies b ON b.sha256 = q.body_sha256"
                       " WHERE q.id = $1::bigint",
                       1, NULL, p, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        ctl_pg_report("quarantine show", res, pg->conn);
        PQclear(res);
        return 1;
    }
    if (PQntuples(res) == 0) {
        fprintf(stderr, "ospreyctl: quarantine %s: no such message%s\n", id,
                pg->as_role ? " (or not visible to this admin)" : "");
        PQclear(res);
        return 1;
    }
    if (raw) {
        fwrite(PQgetvalue(res, 0, 0), 1, (size_t)PQgetlength(res, 0, 0), stdout);
        PQclear(res);
        return 0;
    }
    {
        static const char *const labels[] = {
            NULL, "id", "account", "queue_id", "message_id", "sender", "recipient",
            "client_address", "client_name", "helo", "subject", "size", "score", "verdict",
            "reasons", "state", "quarantined", "release_requested_by", "released",
            "recipients",
        };

        for (f = 1; f < PQnfields(res) && f < (int)(sizeof(labels) / sizeof(labels[0])); f++) {
            const char *v = PQgetvalue(res, 0, f);

            if (f == 5 && *v == '\0')
                v = "<>";
            printf("%-21s %s\n", labels[f], v);
        }
    }
    printf("\n");
    q_print_headers(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    PQclear(res);
    return 0;
usage:
    q_usage(stderr);
    return 2;
}

/* Why a row could not be changed: missing/invisible or in a wrong state. */
static int q_explain(ctl_pg_t *pg, const char *id, const char *doing)
{
    const char *p[1] = { id };
    PGresult *res = ctl_pg_exec(pg, "quarantine",
                                "SELECT release_state FROM quarantine WHERE id = $1::bigint", 1, p);

    if (res == NULL)
        return 1;
    if (PQntuples(res) == 0)
        fprintf(stderr, "ospreyctl: quarantine %s: no such message%s\n", id,
                pg->as_role ? " (or not visible to this admin)" : "");
    else
        fprintf(stderr, "ospreyctl: quarantine %s: cannot %s: the message is %s\n", id, doing,
                strcmp(PQgetvalue(res, 0, 0), "release_requested") == 0
                    ? "already being released" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return 1;
}

static int q_release(ctl_pg_t *pg, int argc, char **argv)
{
    const char *id = NULL, *to = "";
    const char *p[4];
    char acct[32], day[32], details[512], job[32], train_job[32] = "";
    bool train_ham = false;
    const ctl_opt_t opts[] = { { "--to", &to, NULL }, { "--train-ham", NULL, &train_ham } };
    PGresult *res;

    if (ctl_opts(argc, argv, opts, 2, &id, 1) != 1)
        goto usage;
    if (q_parse_id(id) < 0 || (*to != '\0' && q_check_address(to) < 0))
        return 2;
    if (ctl_pg_cmd(pg, "quarantine release", "BEGIN", 0, NULL) < 0)
        return 1;
    p[0] = id;
    res = ctl_pg_exec(pg, "quarantine release",
                      "UPDATE quarantine SET release_state = 'release_requested',"
                      " release_requested_by = current_user"
                      " WHERE id = $1::bigint AND release_state = 'held'"
                      " RETURNING account_id::text, day::text",
                      1, p);
    if (res == NULL)
        goto fail;
    if (PQntuples(res) == 0) {
        PQclear(res);
        q_explain(pg, id, "release");
        goto fail;
    }
    snprintf(acct, sizeof(acct), "%s", PQgetvalue(res, 0, 0));
    snprintf(day, sizeof(day), "%s", PQgetvalue(res, 0, 1));
    p[1] = day;
    p[2] = to;
    p[3] = acct;
    {
        PGresult *jr = ctl_pg_exec(pg, "quarantine release",
                                   "SELECT osprey_job_enqueue('release',"
                                   " jsonb_strip_nulls(jsonb_build_object("
                                   "  'quarantine_id', $1::bigint, 'day', $2::date,"
                                   "  'to', nullif($3, ''))), $4::bigint)::text",
                                   4, p);

        PQclear(res);
        if (jr == NULL)
            goto fail;
        snprintf(job, sizeof(job), "%s", PQgetvalue(jr, 0, 0));
        PQclear(jr);
    }
    if (train_ham) {
        /* The payload of "bayes vote ID --ham" (ctl_bayes.c). */
        const char *tp[3] = { id, day, acct };
        PGresult *tr = ctl_pg_exec(pg, "quarantine release",
                                   "SELECT osprey_job_enqueue('train', jsonb_build_object("
                                   "  'quarantine_id', $1::bigint, 'day', $2::date,"
                                   "  'account_id', $3::bigint, 'class', 'ham'),"
                                   " $3::bigint)::text",
                                   3, tp);

        if (tr == NULL)
            goto fail;
        snprintf(train_job, sizeof(train_job), "%s", PQgetvalue(tr, 0, 0));
        PQclear(tr);
    }
    {
        const char *dp[3] = { job, to, train_job };
        PGresult *dr = ctl_pg_exec(pg, "quarantine release",
                                   "SELECT jsonb_strip_nulls(jsonb_build_object('job', $1::bigint,"
                                   " 'to', nullif($2, ''),"
                                   " 'train_job', nullif($3, '')::bigint))::text",
                                   3, dp);

        if (dr == NULL)
            goto fail;
        snprintf(details, sizeof(details), "%s", PQgetvalue(dr, 0, 0));
        PQclear(dr);
    }
    if (ctl_pg_audit(pg, acct, "quarantine.release", "quarantine", id, details) < 0)
        goto fail;
    if (ctl_pg_cmd(pg, "quarantine release", "COMMIT", 0, NULL) < 0)
        return 1;
    if (train_ham)
        printf("quarantine %s: release queued (job %s), ham training queued (job %s)\n", id,
               job, train_job);
    else
        printf("quarantine %s: release queued (job %s)\n", id, job);
    return 0;
fail:
    PQclear(PQexec(pg->conn, "ROLLBACK"));
    return 1;
usage:
    q_usage(stderr);
    return 2;
}

static int q_delete(ctl_pg_t *pg, int argc, char **argv)
{
    const char *p[1];
    char acct[32];
    PGresult *res;

    if (argc != 1)
        goto usage;
    if (q_parse_id(argv[0]) < 0)
        return 2;
    p[0] = argv[0];
    if (ctl_pg_cmd(pg, "quarantine delete", "BEGIN", 0, NULL) < 0)
        return 1;
    /* Not while a release is pending: the worker would find nothing. */
    res = ctl_pg_exec(pg, "quarantine delete",
                      "DELETE FROM quarantine WHERE id = $1::bigint"
                      " AND release_state <> 'release_requested' RETURNING account_id::text",
                      1, p);
    if (res == NULL)
        goto fail;
    if (PQntuples(res) == 0) {
        PQclear(res);
        q_explain(pg, argv[0], "delete");
        goto fail;
    }
    snprintf(acct, sizeof(acct), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (ctl_pg_audit(pg, acct, "quarantine.delete", "quarantine", argv[0], NULL) < 0)
        goto fail;
    if (ctl_pg_cmd(pg, "quarantine delete", "COMMIT", 0, NULL) < 0)
        return 1;
    printf("quarantine %s: deleted\n", argv[0]);
    return 0;
fail:
    PQclear(PQexec(pg->conn, "ROLLBACK"));
    return 1;
usage:
    q_usage(stderr);
    return 2;
}

int ctl_quarantine(const osp_config_t *cfg, int argc, char **argv)
{
    static const ctl_pg_sub_t subs[] = {
        { "list", q_list }, { "show", q_show }, { "release", q_release }, { "delete", q_delete },
    };

    return ctl_pg_run(cfg, "quarantine", subs, sizeof(subs) / sizeof(subs[0]), q_usage, argc,
                      argv);
}
