/*
 * ospreyctl bayes train | explain | expire | stats: Bayes training and
 * explanations on a local token file (osp_bayes_save/osp_bayes_load);
 * "train --database" trains into PostgreSQL instead (osprey_bayes_train,
 * sql/004), which osprey-filter classifies from.  "vote" queues a
 * training job for osprey-worker on a quarantined message (database).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "osp_bayes.h"
#include "osp_buf.h"
#include "osp_mem.h"
#include "osp_mime.h"

#define DEFAULT_TOKEN_FILE LOCALSTATEDIR "/lib/osprey/bayes.tokens"
#define MAX_MESSAGE (64u * 1024 * 1024)

typedef struct bayes_opts {
    const char *file;
    unsigned long account;
    unsigned long top;
    unsigned long days;
    unsigned long max_count;
    int class;          /* 's' spam, 'h' ham, 'f' forget */
    int database;       /* train into PostgreSQL (database_connection) */
    int first_arg;      /* index of the first non-option argument */
} bayes_opts_t;

static int parse_ulong(const char *s, unsigned long max, unsigned long *r)
{
    char *end;

    errno = 0;
    *r = strtoul(s, &end, 10);
    return (errno || end == s || *end || *s == '-' || *r > max) ? -1 : 0;
}

static int parse_opts(int argc, char **argv, bayes_opts_t *o)
{
    int i;

    o->file = getenv("OSPREY_BAYES_FILE") ? getenv("OSPREY_BAYES_FILE") : DEFAULT_TOKEN_FILE;
    o->account = 0;
    o->top = 20;
    o->days = 180;
    o->max_count = 1;
    o->class = 0;
    o->database = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--spam") == 0) {
            o->class = 's';
        } else if (strcmp(a, "--ham") == 0) {
            o->class = 'h';
        } else if (strcmp(a, "--forget") == 0) {
            o->class = 'f';
        } else if (strcmp(a, "--database") == 0) {
            o->database = 1;
        } else if (i + 1 < argc && strcmp(a, "--file") == 0) {
            o->file = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--account") == 0) {
            if (parse_ulong(argv[++i], UINT32_MAX - 2, &o->account) < 0)
                return -1;
        } else if (i + 1 < argc && strcmp(a, "--top") == 0) {
            if (parse_ulong(argv[++i], 100000, &o->top) < 0)
                return -1;
        } else if (i + 1 < argc && strcmp(a, "--days") == 0) {
            if (parse_ulong(argv[++i], 100000, &o->days) < 0)
                return -1;
        } else if (i + 1 < argc && strcmp(a, "--max-count") == 0) {
            if (parse_ulong(argv[++i], UINT32_MAX, &o->max_count) < 0)
                return -1;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] != '\0') {
            return -1;
        } else {
            break;
        }
    }
    o->first_arg = i;
    return 0;
}

static uint32_t today(void)
{
    return (uint32_t)(time(NULL) / 86400);
}

/* The token file, or an empty table when there is none yet (create). */
static osp_bayes_t *open_tokens(const char *path, int create)
{
    const char *err = NULL;
    osp_bayes_t *b = osp_bayes_load(path, NULL, &err);

    if (b == NULL && errno == ENOENT && create)
        return osp_bayes_create(NULL);
    if (b == NULL)
        fprintf(stderr, "ospreyctl: %s: %s\n", path, err);
    return b;
}

/* Parse a message file (or "-" for standard input) and tokenize it. */
static int tokenize_file(const char *path, osp_bayes_tokens_t *t)
{
    osp_buf_t buf;
    int rc;

    osp_buf_init(&buf, MAX_MESSAGE);
    rc = ctl_read_file(path, "", &buf);
    if (rc == 0)
        osp_bayes_tokenize_message(buf.data, buf.len, t);
    osp_buf_close(&buf);
    return rc;
}

static const char *train_result_name(enum osp_bayes_train_result r)
{
    switch (r) {
    case OSP_BAYES_TRAINED: return "trained";
    case OSP_BAYES_UNCHANGED: return "unchanged";
    case OSP_BAYES_RETRAINED: return "retrained";
    case OSP_BAYES_UNTRAINED: return "forgotten";
    case OSP_BAYES_NOT_TRAINED: return "not-trained";
    default: abort();
    }
}

/*
 * Train into the database: osprey_bayes_train(account, key, spam, tokens)
 * per message, each its own statement (the function is atomic and counts
 * a message once per account).  Parameters only; tokens as a bigint[]
 * literal of the hashes' signed values.
 */
static int bayes_train_db(const osp_config_t *cfg, const bayes_opts_t *o, int argc, char **argv)
{
    ctl_pg_t pg;
    osp_bayes_tokens_t t;
    osp_buf_t arr;
    char account[32];
    int i, status = 0;

    if (o->class == 'f') {
        fprintf(stderr, "ospreyctl: bayes train --forget is not available with --database\n");
        return 2;
    }
    if (ctl_pg_open(&pg, cfg, NULL) < 0)
        return 1;
    snprintf(account, sizeof(account), "%lu", o->account);
    osp_bayes_tokens_init(&t, false);
    osp_buf_init(&arr, OSP_BUF_UNLIMITED);
    for (i = o->first_arg; i < argc; i++) {
        char hex[OSP_BAYES_KEY_HEX_SIZE];
        const char *params[4];
        PGresult *res;

        if (tokenize_file(argv[i], &t) < 0) {
            status = 1;
            continue;
        }
        osp_bayes_train_params(&t, hex, &arr);
        params[0] = account;
        params[1] = hex;
        params[2] = o->class == 's' ? "true" : "false";
        params[3] = osp_buf_cstr(&arr);
        res = ctl_pg_exec(&pg, argv[i], OSP_BAYES_TRAIN_SQL, 4, params);
        if (res == NULL) {
            status = 1;
            continue;
        }
        printf("%s: %s (%zu tokens)\n", argv[i], PQgetvalue(res, 0, 0), t.n);
        PQclear(res);
    }
    osp_buf_close(&arr);
    osp_bayes_tokens_close(&t);
    ctl_pg_close(&pg);
    return status;
}

static int bayes_train(const osp_config_t *cfg, int argc, char **argv)
{
    bayes_opts_t o;
    osp_bayes_t *b;
    osp_bayes_store_t store;
    osp_bayes_tokens_t t;
    const char *err = NULL;
    int i, status = 0;

    if (parse_opts(argc, argv, &o) < 0 || o.class == 0 || o.first_arg >= argc) {
        fprintf(stderr, "usage: ospreyctl bayes train --spam|--ham|--forget [--account N] "
                "[--file TOKENS | --database] MESSAGE...\n");
        return 2;
    }
    if (o.database)
        return bayes_train_db(cfg, &o, argc, argv);
    if ((b = open_tokens(o.file, 1)) == NULL)
        return 1;
    osp_bayes_store_memory(b, &store);
    osp_bayes_tokens_init(&t, false);
    for (i = o.first_arg; i < argc; i++) {
        uint8_t key[OSP_BAYES_KEY_LEN];
        enum osp_bayes_train_result r;

        if (tokenize_file(argv[i], &t) < 0) {
            status = 1;
            continue;
        }
        osp_bayes_message_key(&t, key);
        if (store.train(store.ctx, (uint32_t)o.account, key, o.class == 's', o.class == 'f',
                        t.hash, t.n, today(), &r, &err) < 0) {
            fprintf(stderr, "ospreyctl: %s: %s\n", argv[i], err);
            status = 1;
            continue;
        }
        printf("%s: %s (%zu tokens)\n", argv[i], train_result_name(r), t.n);
    }
    osp_bayes_tokens_close(&t);
    if (osp_bayes_save(b, o.file, &err) < 0) {
        fprintf(stderr, "ospreyctl: %s: %s: %s\n", o.file, err, strerror(errno));
        status = 1;
    }
    osp_bayes_free(&b);
    return status;
}

static int bayes_explain(int argc, char **argv)
{
    bayes_opts_t o;
    osp_bayes_t *b;
    osp_bayes_store_t store;
    osp_bayes_tokens_t t;
    osp_bayes_result_t r;
    const char *err = NULL;
    size_t i;
    int status = 0;

    if (parse_opts(argc, argv, &o) < 0 || o.first_arg != argc - 1) {
        fprintf(stderr, "usage: ospreyctl bayes explain [--account N] [--top N] "
                "[--file TOKENS] MESSAGE\n");
        return 2;
    }
    if ((b = open_tokens(o.file, 0)) == NULL)
        return 1;
    osp_bayes_store_memory(b, &store);
    osp_bayes_tokens_init(&t, true);
    if (tokenize_file(argv[o.first_arg], &t) < 0) {
        status = 1;
    } else if (osp_bayes_classify_store(&store, osp_bayes_params(b), (uint32_t)o.account, &t,
                                        &r, &err) < 0) {
        fprintf(stderr, "ospreyctl: %s\n", err);
        status = 1;
    } else {
        uint32_t gs, gh, us = 0, uh = 0;
        osp_bayes_totals(b, 0, &gs, &gh);
        if (o.account)
            osp_bayes_totals(b, (uint32_t)o.account, &us, &uh);
        printf("probability %.6f from %zu of %zu tokens; trained messages: all %u spam "
               "%u ham", r.prob, r.n_clues, t.n, gs, gh);
        if (o.account)
            printf(", account %lu %u spam %u ham", o.account, us, uh);
        printf("\n%-8s %9s %9s  %s\n", "f(w)", "spam/ham", "all", "token");
        for (i = 0; i < r.n_clues && i < o.top; i++) {
            const osp_bayes_clue_t *c = &r.clues[i];
            const char *text = osp_bayes_tokens_text(&t, c->hash);
            char mine[24], all[24];
            osp_snprintf(mine, sizeof(mine), "%u/%u", c->spam, c->ham);
            osp_snprintf(all, sizeof(all), "%u/%u", c->gspam, c->gham);
            printf("%.6f %9s %9s  ", c->prob, o.account ? mine : "-", all);
            /* Token text comes from the message: print it made printable. */
            for (; text && *text; text++)
                putchar((unsigned char)*text < 0x20 || *text == 0x7f ? '?' : *text);
            putchar('\n');
        }
        osp_bayes_result_close(&r);
    }
    osp_bayes_tokens_close(&t);
    osp_bayes_free(&b);
    return status;
}

static int bayes_expire(int argc, char **argv)
{
    bayes_opts_t o;
    osp_bayes_t *b;
    const char *err = NULL;
    uint32_t now = today();
    size_t n;

    if (parse_opts(argc, argv, &o) < 0 || o.first_arg != argc) {
        fprintf(stderr, "usage: ospreyctl bayes expire [--days N] [--max-count N] "
                "[--file TOKENS]\n");
        return 2;
    }
    if ((b = open_tokens(o.file, 0)) == NULL)
        return 1;
    n = osp_bayes_expire(b, o.days < now ? now - (uint32_t)o.days : 0, (uint32_t)o.max_count);
    printf("expired %zu tokens, %zu left\n", n, osp_bayes_size(b));
    if (osp_bayes_save(b, o.file, &err) < 0) {
        fprintf(stderr, "ospreyctl: %s: %s: %s\n", o.file, err, strerror(errno));
        osp_bayes_free(&b);
        return 1;
    }
    osp_bayes_free(&b);
    return 0;
}

static int bayes_stats(int argc, char **argv)
{
    bayes_opts_t o;
    osp_bayes_t *b;
    uint32_t s, h;

    if (parse_opts(argc, argv, &o) < 0 || o.first_arg != argc) {
        fprintf(stderr, "usage: ospreyctl bayes stats [--account N] [--file TOKENS]\n");
        return 2;
    }
    if ((b = open_tokens(o.file, 0)) == NULL)
        return 1;
    osp_bayes_totals(b, (uint32_t)o.account, &s, &h);
    printf("file %s: %zu token rows; account %lu: %u spam, %u ham messages\n", o.file,
           osp_bayes_size(b), o.account, s, h);
    osp_bayes_free(&b);
    return 0;
}

/* ------------------------------------------------------------ vote */

static void vote_usage(FILE *out)
{
    fprintf(out, "usage: ospreyctl bayes vote ID|--queue-id QUEUEID --spam|--ham "
            "[--account A] [--as ROLE]\n");
}

/* Queue one train job for quarantine row id and audit it; the line to
 * print once committed goes to out. */
static int vote_queue(ctl_pg_t *pg, const char *id, const char *day, const char *acct,
                      const char *klass, osp_buf_t *out)
{
    const char *p[4] = { id, day, acct, klass };
    char job[32], details[128];
    PGresult *res;

    res = ctl_pg_exec(pg, "bayes vote",
                      "SELECT osprey_job_enqueue('train', jsonb_build_object("
                      "  'quarantine_id', $1::bigint, 'day', $2::date,"
                      "  'account_id', $3::bigint, 'class', $4::text), $3::bigint)::text",
                      4, p);
    if (res == NULL)
        return -1;
    snprintf(job, sizeof(job), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    snprintf(details, sizeof(details), "{\"job\": %s, \"class\": \"%s\"}", job, klass);
    if (ctl_pg_audit(pg, acct, "bayes.vote", "quarantine", id, details) < 0)
        return -1;
    osp_buf_printf(out, "quarantine %s: %s vote for account %s queued (job %s)\n", id, klass,
                   acct, job);
    return 0;
}

/*
 * "bayes vote ID|--queue-id QUEUEID --spam|--ham [--account A]": a user's
 * verdict on quarantined mail.  In one transaction: find the message
 * (visible to the --as admin; with --account, of account A or one below
 * it), queue a "train" job for A (default: the message's own account)
 * with the payload {"quarantine_id", "day", "account_id", "class"}, and
 * write the audit trail.  osprey-worker trains the stored message
 * (worker_jobs.c); voting the same way twice changes nothing, the other
 * way moves the counts.  A Postfix queue id (as "log search" shows it)
 * names every quarantined row of that message: one job per account and
 * distinct message.  The message log keeps no message, so mail that was
 * delivered cannot be trained this way.
 */
static int bayes_vote(ctl_pg_t *pg, int argc, char **argv)
{
    const char *id = NULL, *queue_id = NULL, *account = NULL, *klass;
    char acct[32] = "";
    const char *p[3];
    bool spam = false, ham = false;
    const ctl_opt_t opts[] = {
        { "--spam", NULL, &spam }, { "--ham", NULL, &ham },
        { "--account", &account, NULL }, { "--queue-id", &queue_id, NULL },
    };
    osp_buf_t out;
    PGresult *res;
    int r, queued = 0;

    if (ctl_opts(argc, argv, opts, 4, &id, 1) < 0 || (id == NULL) == (queue_id == NULL) ||
        spam == ham)
        goto usage;
    klass = spam ? "spam" : "ham";
    if (id != NULL) {
        size_t n = strspn(id, "0123456789");

        if (n == 0 || n > 18 || id[n] != '\0') {
            fprintf(stderr, "ospreyctl: quarantine id \"%s\": expected a number\n", id);
            return 2;
        }
    }
    if (account != NULL && ctl_pg_account(pg, account, acct) < 0)
        return 1;
    if (ctl_pg_cmd(pg, "bayes vote", "BEGIN", 0, NULL) < 0)
        return 1;
    osp_buf_init(&out, OSP_BUF_UNLIMITED);
    p[0] = id != NULL ? id : "";
    p[1] = queue_id != NULL ? queue_id : "";
    p[2] = acct;
    res = ctl_pg_exec(pg, "bayes vote",
                      "SELECT DISTINCT ON (CASE WHEN $3 = '' THEN q.account_id END,"
                      "                    q.body_sha256)"
                      " q.id::text, q.day::text, q.account_id::text,"
                      " $3 = '' OR q.account_id IN (SELECT d.id FROM accounts d"
                      "   WHERE d.path <@ (SELECT r.path FROM accounts r"
                      "                     WHERE r.id = nullif($3, '')::bigint))"
                      " FROM quarantine q"
                      " WHERE ($1 <> '' AND q.id = nullif($1, '')::bigint)"
                      "    OR ($2 <> '' AND q.queue_id = $2)"
                      /* per body, a row of the --account subtree first */
                      " ORDER BY CASE WHEN $3 = '' THEN q.account_id END, q.body_sha256, 4 DESC,"
                      "  q.id",
                      3, p);
    if (res == NULL)
        goto fail;
    if (PQntuples(res) == 0) {
        if (id != NULL)
            fprintf(stderr, "ospreyctl: quarantine %s: no such message%s\n", id,
                    pg->as_role ? " (or not visible to this admin)" : "");
        else
            fprintf(stderr, "ospreyctl: queue id %s: no quarantined message%s (the message "
                    "log keeps no messages: only quarantined mail can be trained)\n", queue_id,
                    pg->as_role ? " visible to this admin" : "");
        PQclear(res);
        goto fail;
    }
    for (r = 0; r < PQntuples(res); r++) {
        if (strcmp(PQgetvalue(res, r, 3), "t") != 0)
            continue;
        if (vote_queue(pg, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
                       acct[0] ? acct : PQgetvalue(res, r, 2), klass, &out) < 0) {
            PQclear(res);
            goto fail;
        }
        queued++;
    }
    if (queued == 0) {
        fprintf(stderr, "ospreyctl: %s %s: the message is of account %s, which is not "
                "account %s or below it\n", id ? "quarantine" : "queue id", id ? id : queue_id,
                PQgetvalue(res, 0, 2), acct);
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (ctl_pg_cmd(pg, "bayes vote", "COMMIT", 0, NULL) < 0) {
        osp_buf_close(&out);
        return 1;
    }
    fputs(osp_buf_cstr(&out), stdout);
    osp_buf_close(&out);
    return 0;
fail:
    PQclear(PQexec(pg->conn, "ROLLBACK"));
    osp_buf_close(&out);
    return 1;
usage:
    vote_usage(stderr);
    return 2;
}

int ctl_bayes(const osp_config_t *cfg, int argc, char **argv)
{
    static const ctl_pg_sub_t vote_sub[] = { { "vote", bayes_vote } };

    /* The database command: "--as ROLE" may come first. */
    if (argc >= 1 && (strcmp(argv[0], "vote") == 0 || strcmp(argv[0], "--as") == 0))
        return ctl_pg_run(cfg, "bayes", vote_sub, 1, vote_usage, argc, argv);
    if (argc >= 1 && strcmp(argv[0], "train") == 0)
        return bayes_train(cfg, argc, argv);
    if (argc >= 1 && strcmp(argv[0], "explain") == 0)
        return bayes_explain(argc, argv);
    if (argc >= 1 && strcmp(argv[0], "expire") == 0)
        return bayes_expire(argc, argv);
    if (argc >= 1 && strcmp(argv[0], "stats") == 0)
        return bayes_stats(argc, argv);
    fprintf(stderr, "usage: ospreyctl bayes train|explain|expire|stats|vote ...\n");
    return 2;
}
