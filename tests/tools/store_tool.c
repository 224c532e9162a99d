/*
 * store_tool: drive store/ from the command line, for the integration
 * tests (tests/integration/store_*.sh) and the benchmarks (bench/store).
 *
 *   store_tool [-d CONNINFO] [-P POOL] [-T QUERY_TIMEOUT_MS] [-C CONNECT_TIMEOUT_MS]
 *              [-B BREAKER_THRESHOLD] [-K BREAKER_COOLDOWN_MS] [-W TIMEOUT_MS] COMMAND ARGS
 *
 * Every command prints plain "key=value" lines the scripts check, closes
 * the store, runs the loop empty and prints "loop_close=0" when
 * uv_loop_close() succeeded.  Exit status 0 unless something unexpected
 * happened (a temporary failure is an expected, printed outcome).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_store.h"

static uv_loop_t loop;
static osp_store_t *st;
static osp_store_conf_t conf;
static uint64_t req_timeout;
static int pending;
static int failures;
static uint64_t *tokens;

static const char *sname(int status)
{
    return status == OSP_STORE_OK ? "ok" : status == OSP_STORE_NOT_FOUND ? "notfound" : "tempfail";
}

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

static void run_until_done(void)
{
    while (pending > 0)
        uv_run(&loop, UV_RUN_ONCE);
}

static void wait_up(double max_ms)
{
    osp_store_stats_t s;
    double t0 = now_ms();

    do {
        uv_run(&loop, UV_RUN_NOWAIT);
        osp_store_stats(st, &s);
        if (s.connections_up == conf.pool_size)
            return;
        usleep(1000);
    } while (now_ms() - t0 < max_ms);
}

static void sleep_loop(double ms)
{
    double t0 = now_ms();

    while (now_ms() - t0 < ms) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(500);
    }
}

/* ------------------------------------------------------------ simple calls */

static void status_cb(void *ctx, int status, const char *error)
{
    const char *what = ctx;

    printf("%s=%s%s%s\n", what, sname(status), error ? " " : "", error ? error : "");
    pending--;
}

static int cmd_ping(void)
{
    const char *err;

    pending++;
    if (osp_store_ping(st, req_timeout, status_cb, "ping", &err) == NULL) {
        printf("ping=refused %s\n", err);
        pending--;
    }
    run_until_done();
    return 0;
}

static void resolve_cb(void *ctx, int status, const osp_store_recipient_t *r, const char *error)
{
    size_t i;

    (void)ctx;
    pending--;
    if (status != OSP_STORE_OK) {
        printf("resolve=%s%s%s\n", sname(status), error ? " " : "", error ? error : "");
        return;
    }
    printf("resolve=ok account=%lld path=%s chain=", (long long)r->account_id, r->path);
    for (i = 0; i < r->nchain; i++)
        printf("%s%lld", i ? "," : "", (long long)r->chain[i]);
    printf(" settings=%s\n", r->settings_json);
}

static int cmd_resolve(int argc, char **argv)
{
    const char *err;
    int i;

    for (i = 0; i < argc; i++) {
        pending++;
        if (osp_store_resolve_recipient(st, argv[i], req_timeout, resolve_cb, NULL, &err) == NULL) {
            printf("resolve=refused %s\n", err);
            pending--;
        }
    }
    run_until_done();
    return 0;
}

static void snapshot_cb(void *ctx, int status, const osp_store_snapshot_t *s, const char *error)
{
    size_t i;

    (void)ctx;
    pending--;
    if (status != OSP_STORE_OK) {
        printf("snapshot=%s %s\n", sname(status), error ? error : "");
        return;
    }
    printf("snapshot=ok entries=%zu rules=%zu\n", s->nentries, s->nrules);
    for (i = 0; i < s->nentries; i++)
        printf("entry %lld %lld %s %s %s\n", (long long)s->entries[i].id,
               (long long)s->entries[i].account_id, s->entries[i].list, s->entries[i].kind,
               s->entries[i].value);
    for (i = 0; i < s->nrules; i++)
        printf("rule %lld %d %s\n", (long long)s->rules[i].account_id, s->rules[i].priority,
               s->rules[i].name);
}

static int cmd_snapshot(void)
{
    const char *err;

    pending++;
    if (osp_store_load_snapshot(st, req_timeout, snapshot_cb, NULL, &err) == NULL) {
        printf("snapshot=refused %s\n", err);
        pending--;
    }
    run_until_done();
    return 0;
}

/* ------------------------------------------------------------ quarantine */

typedef struct qctx {
    long i;
    double t0;
    int status;
    size_t inserted, duplicates;
    int tries;
    bool quiet;
} qctx_t;

static char *qbody;
static size_t qbody_len;
static osp_store_qrcpt_t *qrcpts;
static size_t qnrcpts;
static const char *qprefix = "Q";

static void quarantine_cb(void *ctx, int status, const osp_store_quarantine_result_t *r,
                          const char *error)
{
    qctx_t *q = ctx;

    pending--;
    q->status = status;
    if (status == OSP_STORE_OK) {
        q->inserted = r->inserted;
        q->duplicates = r->duplicates;
    }
    if (!q->quiet) {
        if (status == OSP_STORE_OK)
            printf("quarantine %s%ld=ok inserted=%zu duplicates=%zu\n", qprefix, q->i,
                   r->inserted, r->duplicates);
        else
            printf("quarantine %s%ld=%s %s\n", qprefix, q->i, sname(status),
                   error ? error : "");
        fflush(stdout);
    }
}

static osp_store_req_t *quarantine_one(qctx_t *q, const char **err)
{
    osp_store_quarantine_t m;
    char qid[64], subj[64];
    static const char *reasons[] = { "BAYES_99", "rule \"x\\y\"" };

    memset(&m, 0, sizeof(m));
    snprintf(qid, sizeof(qid), "%s%ld", qprefix, q->i);
    snprintf(subj, sizeof(subj), "subject \xff %ld", q->i);
    m.queue_id = qid;
    m.message_id = "<id@example.com>";
    m.sender = "sender@example.org";
    m.client_address = "192.0.2.1";
    m.client_name = "client.example.org";
    m.helo = "client.example.org";
    m.subject = subj;
    m.size = (int64_t)qbody_len;
    m.score = 12.5;
    m.verdict = "spam";
    m.reasons = reasons;
    m.nreasons = 2;
    m.body = qbody;
    m.body_len = qbody_len;
    m.rcpts = qrcpts;
    m.nrcpts = qnrcpts;
    q->t0 = now_ms();
    q->status = 99;
    return osp_store_quarantine(st, &m, req_timeout, quarantine_cb, q, err);
}

static void make_body(size_t size, bool unique, long salt)
{
    size_t i;

    free(qbody);
    qbody = osp_malloc(size + 1);
    for (i = 0; i < size; i++)
        qbody[i] = (char)("abcdefghijklmnopqrstuvwxyz \n"[(i * 7 + (unique ? (size_t)salt : 0)) % 28]);
    if (unique && size >= 16)
        snprintf(qbody, 16, "%015ld", salt);
    qbody_len = size;
}

static void set_rcpts(int n, long account)
{
    int i;

    free(qrcpts);
    qrcpts = osp_calloc((size_t)n, sizeof(*qrcpts));
    for (i = 0; i < n; i++) {
        char buf[64];

        snprintf(buf, sizeof(buf), "rcpt%d@example.com", i);
        qrcpts[i].account_id = account;
        qrcpts[i].recipient = osp_strdup(buf);
    }
    qnrcpts = (size_t)n;
}

static void free_rcpts(void)
{
    size_t i;

    for (i = 0; i < qnrcpts; i++)
        free((char *)qrcpts[i].recipient);
    free(qrcpts);
    qrcpts = NULL;
    free(qbody);
    qbody = NULL;
}

/* quarantine FIRST COUNT [RCPTS] [BODY_SIZE] [retry]: sequential writes */
static int cmd_quarantine(int argc, char **argv)
{
    long first = argc > 0 ? atol(argv[0]) : 1;
    long count = argc > 1 ? atol(argv[1]) : 1;
    int nr = argc > 2 ? atoi(argv[2]) : 1;
    size_t bsize = argc > 3 ? (size_t)atol(argv[3]) : 1000;
    bool retry = argc > 4 && !strcmp(argv[4], "retry");
    double gap = argc > 5 ? atof(argv[5]) : 0;
    long i;
    const char *err;
    qctx_t q;

    set_rcpts(nr, 0);
    for (i = first; i < first + count; i++) {
        make_body(bsize, true, i);
        memset(&q, 0, sizeof(q));
        q.i = i;
        do {
            q.tries++;
            pending++;
            if (quarantine_one(&q, &err) == NULL) {
                pending--;
                q.status = OSP_STORE_TEMPFAIL;
                printf("quarantine %s%ld=refused %s\n", qprefix, i, err);
                fflush(stdout);
            }
            run_until_done();
            if (q.status != OSP_STORE_OK && retry)
                sleep_loop(100);
        } while (retry && q.status != OSP_STORE_OK && q.tries < 600);
        if (gap > 0)
            sleep_loop(gap);
    }
    free_rcpts();
    return 0;
}

/* bench-quarantine CONC TOTAL BODY_SIZE RCPTS SAME_BODY */
static int cmd_bench_quarantine(int argc, char **argv)
{
    int conc = atoi(argv[0]);
    long total = atol(argv[1]), started = 0, done_ok = 0, done_fail = 0;
    size_t bsize = (size_t)atol(argv[2]);
    int nr = atoi(argv[3]);
    bool same = atoi(argv[4]) != 0;
    qctx_t *qs = osp_calloc((size_t)conc, sizeof(*qs));
    double t0, t1;
    int k;
    const char *err;

    set_rcpts(nr, 0);
    make_body(bsize, !same, 1);
    wait_up(5000);
    t0 = now_ms();
    for (k = 0; k < conc && started < total; k++) {
        qs[k].i = ++started;
        qs[k].quiet = true;
        if (!same)
            make_body(bsize, true, started);
        pending++;
        if (quarantine_one(&qs[k], &err) == NULL) {
            pending--;
            done_fail++;
            qs[k].status = -2;
        }
    }
    while (pending > 0) {
        uv_run(&loop, UV_RUN_ONCE);
        for (k = 0; k < conc; k++) {
            if (qs[k].status == 99 || qs[k].status == -2)
                continue;
            if (qs[k].status == OSP_STORE_OK)
                done_ok++;
            else
                done_fail++;
            qs[k].status = -2;
            if (started < total) {
                qs[k].i = ++started;
                if (!same)
                    make_body(bsize, true, started);
                pending++;
                if (quarantine_one(&qs[k], &err) == NULL) {
                    pending--;
                    done_fail++;
                }
            }
        }
    }
    t1 = now_ms();
    printf("bench_quarantine conc=%d total=%ld ok=%ld failed=%ld rcpts=%d body=%zu "
           "seconds=%.3f commits_per_s=%.0f rows_per_s=%.0f\n",
           conc, total, done_ok, done_fail, nr, bsize, (t1 - t0) / 1e3,
           done_ok / ((t1 - t0) / 1e3), done_ok * nr / ((t1 - t0) / 1e3));
    free(qs);
    free_rcpts();
    return 0;
}

/* ------------------------------------------------------------ Bayes */

static double tok_t0;
static double *lat;
static int nlat;

static void tokens_cb(void *ctx, int status, const osp_store_token_counts_t *c, size_t n,
                      const osp_store_bayes_totals_t *t, const char *error)
{
    size_t i, known = 0;
    uint64_t spam = 0, gspam = 0, ham = 0, gham = 0;
    bool quiet = ctx != NULL;

    pending--;
    if (lat)
        lat[nlat++] = now_ms() - tok_t0;
    if (quiet && status == OSP_STORE_OK)
        return;
    if (status != OSP_STORE_OK) {
        printf("tokens=%s %s\n", sname(status), error ? error : "");
        failures++;
        return;
    }
    for (i = 0; i < n; i++) {
        if (c[i].spam || c[i].ham || c[i].global_spam || c[i].global_ham)
            known++;
        spam += c[i].spam;
        ham += c[i].ham;
        gspam += c[i].global_spam;
        gham += c[i].global_ham;
    }
    printf("tokens=ok n=%zu known=%zu spam=%llu ham=%llu global_spam=%llu global_ham=%llu "
           "totals=%llu,%llu,%llu,%llu\n", n, known, (unsigned long long)spam,
           (unsigned long long)ham, (unsigned long long)gspam, (unsigned long long)gham,
           (unsigned long long)t->spam, (unsigned long long)t->ham,
           (unsigned long long)t->global_spam, (unsigned long long)t->global_ham);
}

static void make_tokens(size_t n, uint64_t base)
{
    size_t i;

    free(tokens);
    tokens = osp_calloc(n + 1, sizeof(*tokens));
    for (i = 0; i < n; i++)
        tokens[i] = (base + i) * 0x9E3779B97F4A7C15ULL;   /* negative as bigint too */
}

/* tokens ACCOUNT N [BASE] */
static int cmd_tokens(int argc, char **argv)
{
    const char *err;

    make_tokens((size_t)atol(argv[1]), argc > 2 ? (uint64_t)atoll(argv[2]) : 1);
    pending++;
    if (osp_store_tokens_lookup(st, atoll(argv[0]), tokens, (size_t)atol(argv[1]), req_timeout,
                                tokens_cb, NULL, &err) == NULL) {
        printf("tokens=refused %s\n", err);
        pending--;
    }
    run_until_done();
    free(tokens);
    return 0;
}

static void train_cb(void *ctx, int status, const char *outcome, const char *error)
{
    (void)ctx;
    pending--;
    printf("train=%s %s\n", sname(status), status == OSP_STORE_OK ? outcome : error);
}

/* train ACCOUNT spam|ham N [BASE] [HASHBYTE] */
static int cmd_train(int argc, char **argv)
{
    uint8_t hash[32];
    const char *err;
    size_t n = (size_t)atol(argv[2]);

    memset(hash, argc > 4 ? atoi(argv[4]) : 7, sizeof(hash));
    make_tokens(n, argc > 3 ? (uint64_t)atoll(argv[3]) : 1);
    pending++;
    if (osp_store_bayes_train(st, atoll(argv[0]), hash, !strcmp(argv[1], "spam"), tokens, n,
                              req_timeout, train_cb, NULL, &err) == NULL) {
        printf("train=refused %s\n", err);
        pending--;
    }
    run_until_done();
    free(tokens);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* bench-tokens ACCOUNT N ITER */
static int cmd_bench_tokens(int argc, char **argv)
{
    int iter = atoi(argv[2]), i;
    size_t n = (size_t)atol(argv[1]);
    const char *err;

    (void)argc;
    wait_up(5000);
    make_tokens(n, 1);
    lat = osp_calloc((size_t)iter, sizeof(*lat));
    for (i = 0; i < iter; i++) {
        pending++;
        tok_t0 = now_ms();
        if (osp_store_tokens_lookup(st, atoll(argv[0]), tokens, n, req_timeout, tokens_cb,
                                    (void *)1, &err) == NULL) {
            pending--;
            failures++;
        }
        run_until_done();
    }
    qsort(lat, (size_t)nlat, sizeof(*lat), cmp_double);
    printf("bench_tokens n=%zu iter=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f failures=%d\n", n,
           iter, lat[nlat / 2], lat[(nlat * 99) / 100], lat[nlat - 1], failures);
    free(lat);
    free(tokens);
    return 0;
}

/* ------------------------------------------------------------ jobs */

static void id_cb(void *ctx, int status, int64_t id, const char *error)
{
    (void)ctx;
    pending--;
    printf("enqueue=%s %lld%s%s\n", sname(status), (long long)id, error ? " " : "",
           error ? error : "");
}

static void jobs_cb(void *ctx, int status, const osp_store_job_t *jobs, size_t n,
                    const char *error)
{
    size_t i;

    (void)ctx;
    pending--;
    printf("dequeue=%s n=%zu%s%s\n", sname(status), n, error ? " " : "", error ? error : "");
    for (i = 0; i < n; i++)
        printf("job id=%lld kind=%s attempts=%d payload=%s\n", (long long)jobs[i].id,
               jobs[i].kind, jobs[i].attempts, jobs[i].payload_json);
}

static void text_cb(void *ctx, int status, const char *text, const char *error)
{
    (void)ctx;
    pending--;
    printf("fail=%s %s\n", sname(status), status == OSP_STORE_OK ? text : error ? error : "");
}

static int cmd_job(int argc, char **argv)
{
    const char *err = NULL;
    osp_store_req_t *r = NULL;

    pending++;
    if (!strcmp(argv[0], "enqueue"))
        r = osp_store_job_enqueue(st, argv[1], argc > 2 ? argv[2] : NULL, -1,
                                  argc > 3 ? (uint64_t)atoll(argv[3]) : 0,
                                  argc > 4 ? atoi(argv[4]) : 0, req_timeout, id_cb, NULL, &err);
    else if (!strcmp(argv[0], "dequeue"))
        r = osp_store_job_dequeue(st, argv[1], (const char *const *)argv + 3,
                                  (size_t)(argc - 3), (unsigned)atoi(argv[2]), req_timeout,
                                  jobs_cb, NULL, &err);
    else if (!strcmp(argv[0], "complete"))
        r = osp_store_job_complete(st, atoll(argv[1]), req_timeout, status_cb, "complete", &err);
    else if (!strcmp(argv[0], "fail"))
        r = osp_store_job_fail(st, atoll(argv[1]), argv[2], req_timeout, text_cb, NULL, &err);
    if (r == NULL) {
        printf("job=refused %s\n", err ? err : "unknown subcommand");
        pending--;
    }
    run_until_done();
    return 0;
}

/* ------------------------------------------------------------ listen */

static void notify_cb(void *ctx, const char *channel, const char *payload)
{
    (void)ctx;
    printf("notify %s %s\n", channel, payload ? payload : "(reconnected)");
    fflush(stdout);
}

/* listen SECONDS CHANNEL... */
static int cmd_listen(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++)
        if (osp_store_listen(st, argv[i], notify_cb, NULL) < 0)
            printf("listen=refused %s\n", argv[i]);
    printf("listening\n");
    fflush(stdout);
    sleep_loop(atof(argv[0]) * 1000);
    return 0;
}

/* ------------------------------------------------------------ watch */

static double ping_t0;
static void watch_cb(void *ctx, int status, const char *error)
{
    osp_store_stats_t s;

    (void)ctx;
    pending--;
    osp_store_stats(st, &s);
    printf("watch status=%s ms=%.1f breaker=%s up=%u err=%s\n", sname(status),
           now_ms() - ping_t0, osp_breaker_state_name(s.breaker), s.connections_up,
           error ? error : "-");
    fflush(stdout);
}

/* watch SECONDS INTERVAL_MS: one ping per interval, each line its outcome */
static int cmd_watch(int argc, char **argv)
{
    double end = now_ms() + atof(argv[0]) * 1000, iv = atof(argv[1]);
    const char *err;
    osp_store_stats_t s;

    (void)argc;
    while (now_ms() < end) {
        pending++;
        ping_t0 = now_ms();
        if (osp_store_ping(st, req_timeout, watch_cb, NULL, &err) == NULL) {
            pending--;
            osp_store_stats(st, &s);
            printf("watch status=refused ms=%.1f breaker=%s up=%u err=%s\n",
                   now_ms() - ping_t0, osp_breaker_state_name(s.breaker), s.connections_up,
                   err);
            fflush(stdout);
        }
        run_until_done();
        sleep_loop(iv);
    }
    osp_store_stats(st, &s);
    printf("stats reconnects=%llu rejected=%llu ok=%llu tempfail=%llu\n",
           (unsigned long long)s.reconnects, (unsigned long long)s.rejected,
           (unsigned long long)s.ok, (unsigned long long)s.tempfail);
    return 0;
}

/* ------------------------------------------------------------ cancel */

static void never_cb(void *ctx, int status, const char *error)
{
    (void)ctx;
    (void)status;
    (void)error;
    printf("cancelled callback ran\n");
    failures++;
}

static void never_tokens_cb(void *ctx, int status, const osp_store_token_counts_t *c, size_t n,
                            const osp_store_bayes_totals_t *t, const char *error)
{
    (void)c;
    (void)n;
    (void)t;
    never_cb(ctx, status, error);
}

static void shutdown_cb(void *ctx, int status, const char *error)
{
    (void)ctx;
    printf("shutdown_cb=%s %s\n", sname(status), error ? error : "");
    pending--;
}

static osp_store_req_t *cancel_b;
static bool b_answered;

static void b_cb(void *ctx, int status, const char *error)
{
    (void)ctx;
    (void)status;
    (void)error;
    if (cancel_b == NULL) {
        printf("cancelled callback ran\n");
        failures++;
    }
    cancel_b = NULL;            /* like a caller: the handle is gone now */
    b_answered = true;
}

/* cancel: cancelled requests never call back; free fails the pending ones */
static int cmd_cancel(void)
{
    osp_store_req_t *a, *c;
    const char *err;
    int i;

    wait_up(5000);
    a = osp_store_ping(st, req_timeout, never_cb, NULL, &err);
    make_tokens(2000, 1);
    cancel_b = osp_store_tokens_lookup(st, 0, tokens, 2000, req_timeout, never_tokens_cb, NULL,
                                       &err);
    osp_store_cancel(&cancel_b);     /* queued */
    cancel_b = osp_store_ping(st, req_timeout, b_cb, NULL, &err);
    osp_store_cancel(&a);            /* queued */
    uv_run(&loop, UV_RUN_NOWAIT);    /* b goes out on a connection */
    printf("cancel running=%s\n", cancel_b != NULL ? "yes" : "already answered");
    osp_store_cancel(&cancel_b);     /* running, or NULL (no-op) */
    printf("cancel cleared=%s\n", a == NULL && cancel_b == NULL ? "yes" : "no");
    for (i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(5000);
    free(tokens);
    tokens = NULL;
    /* a request still pending at shutdown: told "shutting down" */
    pending++;
    c = osp_store_ping(st, req_timeout, shutdown_cb, NULL, &err);
    (void)c;
    return 0;
}

/* ------------------------------------------------------------ log writer */

static osp_store_log_t *lw;

static void log_stats_line(const char *tag)
{
    osp_store_log_stats_t s;

    osp_store_log_stats(lw, &s);
    printf("%s appended=%llu committed=%llu journaled=%llu replayed=%llu dropped=%llu bad=%llu "
           "queued=%zu replaying=%d pending=%d connected=%d\n", tag,
           (unsigned long long)s.appended, (unsigned long long)s.committed,
           (unsigned long long)s.journaled, (unsigned long long)s.replayed,
           (unsigned long long)s.dropped, (unsigned long long)s.bad, s.queued, s.replaying,
           s.journal_pending, s.connected);
    fflush(stdout);
}

static void log_row(long i, const char *tag)
{
    osp_store_log_row_t r;
    char qid[64], subj[128];
    static const char *rules[] = { "RULE_A", "odd \"rule\"\\name", "tab\there" };

    memset(&r, 0, sizeof(r));
    snprintf(qid, sizeof(qid), "%s%ld", tag, i);
    snprintf(subj, sizeof(subj), "Subject %ld with\ttab, new\nline, back\\slash, \xc3\xa9, bad \xff", i);
    r.account_id = i % 3 ? 0 : -1;
    r.queue_id = qid;
    r.reinject_queue_id = i % 2 ? "4ABCD" : NULL;
    r.message_id = "<m@example.com>";
    r.client_address = i % 5 ? "2001:db8::1" : "not an address";
    r.client_name = "client.example.org";
    r.helo = "helo";
    r.sender = "s@example.org";
    r.recipient = "r@example.com";
    r.subject = subj;
    r.size = 1000 + i;
    r.score = i % 4 ? 1.5 : NAN;
    r.verdict = "clean";
    r.rules_hit = rules;
    r.nrules_hit = 3;
    r.delivery = "250 2.0.0 Ok: queued as 4ABCD";
    osp_store_log_append(lw, &r);
}

/*
 * log JOURNAL COUNT RATE_PER_S TAG [BATCH] [WAIT_S]: append COUNT rows at
 * RATE (0: as fast as possible), then wait (at most WAIT_S, default 60)
 * until every row is in the database (committed + replayed >= appended +
 * what a previous run left) and no journal is pending.
 */
static int cmd_log(int argc, char **argv)
{
    osp_store_log_conf_t lc;
    const char *err;
    long count = atol(argv[1]), i = 0;
    double rate = atof(argv[2]);
    const char *tag = argv[3];
    double t0, wait_s = argc > 5 ? atof(argv[5]) : 60, last = 0;
    osp_store_log_stats_t s;

    memset(&lc, 0, sizeof(lc));
    lc.journal_path = argv[0];
    lc.batch_max = argc > 4 ? (size_t)atol(argv[4]) : 0;
    lc.flush_interval_ms = 100;
    lc.journal_sync_ms = 20;
    lc.retry_ms = 200;
    lw = osp_store_log_create(st, &lc, &err);
    if (lw == NULL) {
        printf("log=refused %s\n", err);
        return 1;
    }
    t0 = now_ms();
    while (i < count) {
        long due = rate > 0 ? (long)((now_ms() - t0) / 1000 * rate) + 1 : i + 1000;

        while (i < count && i < due)
            log_row(++i, tag);
        uv_run(&loop, UV_RUN_NOWAIT);
        if (rate > 0)
            usleep(1000);
        if (now_ms() - last > 500) {
            last = now_ms();
            log_stats_line("progress");
        }
    }
    log_stats_line("appended");
    t0 = now_ms();
    for (;;) {
        osp_store_log_stats(lw, &s);
        if (s.queued == 0 && !s.journal_pending && s.connected &&
            s.committed + s.journaled + s.bad + s.dropped >= s.appended)
            break;
        if (now_ms() - t0 > wait_s * 1000)
            break;
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
        if (now_ms() - last > 500) {
            last = now_ms();
            log_stats_line("progress");
        }
    }
    log_stats_line("final");
    osp_store_log_free(&lw);
    return 0;
}

/* bench-log JOURNAL COUNT: rows per second through the writer */
static int cmd_bench_log(int argc, char **argv)
{
    osp_store_log_conf_t lc;
    const char *err;
    long count = atol(argv[1]), i = 0;
    double t0, t1;
    osp_store_log_stats_t s;

    (void)argc;
    memset(&lc, 0, sizeof(lc));
    lc.journal_path = argv[0];
    lc.queue_max = (size_t)count + 1;
    lw = osp_store_log_create(st, &lc, &err);
    if (lw == NULL) {
        printf("log=refused %s\n", err);
        return 1;
    }
    do {
        uv_run(&loop, UV_RUN_NOWAIT);
        osp_store_log_stats(lw, &s);
    } while (!s.connected);
    t0 = now_ms();
    while (i < count) {
        long stop = i + 2000;

        while (i < count && i < stop)
            log_row(++i, "B");
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    t1 = now_ms();
    do {
        uv_run(&loop, UV_RUN_ONCE);
        osp_store_log_stats(lw, &s);
    } while (s.committed + s.journaled < (uint64_t)count);
    printf("bench_log rows=%ld append_s=%.3f total_s=%.3f rows_per_s=%.0f committed=%llu "
           "journaled=%llu\n", count, (t1 - t0) / 1e3, (now_ms() - t0) / 1e3,
           count / ((now_ms() - t0) / 1e3), (unsigned long long)s.committed,
           (unsigned long long)s.journaled);
    osp_store_log_free(&lw);
    return 0;
}

/* ------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr, "usage: store_tool [-d CONNINFO] [-P POOL] [-T MS] [-C MS] [-B N] [-K MS] "
                    "[-W MS] COMMAND ...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int ch, rc = 0, close_rc;
    const char *cmd;

    osp_log_open("osprey", "store_tool", OSP_LOG_TO_STDERR);
    osp_store_conf_init(&conf, NULL);
    conf.conninfo = getenv("OSP_PG_CONNINFO") ? getenv("OSP_PG_CONNINFO") : "dbname=osprey";
    conf.pool_size = 2;
    conf.reconnect_min_ms = 100;
    conf.reconnect_max_ms = 2000;
    while ((ch = getopt(argc, argv, "d:P:T:C:B:K:W:q:v")) != -1) {
        switch (ch) {
        case 'd': conf.conninfo = optarg; break;
        case 'P': conf.pool_size = (unsigned)atoi(optarg); break;
        case 'T': conf.query_timeout_ms = (uint64_t)atoll(optarg); break;
        case 'C': conf.connect_timeout_ms = (uint64_t)atoll(optarg); break;
        case 'B': conf.breaker.failure_threshold = (unsigned)atoi(optarg); break;
        case 'K': conf.breaker.cooldown_ms = (uint64_t)atoll(optarg); break;
        case 'W': req_timeout = (uint64_t)atoll(optarg); break;
        case 'q': qprefix = optarg; break;
        case 'v': osp_log_set_verbose(osp_log_verbose() + 1); break;
        default: usage();
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1)
        usage();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    uv_loop_init(&loop);
    st = osp_store_create(&loop, &conf);
    cmd = argv[0];
    argc--;
    argv++;
    if (!strcmp(cmd, "ping"))
        rc = cmd_ping();
    else if (!strcmp(cmd, "resolve"))
        rc = cmd_resolve(argc, argv);
    else if (!strcmp(cmd, "snapshot"))
        rc = cmd_snapshot();
    else if (!strcmp(cmd, "quarantine"))
        rc = cmd_quarantine(argc, argv);
    else if (!strcmp(cmd, "bench-quarantine") && argc >= 5)
        rc = cmd_bench_quarantine(argc, argv);
    else if (!strcmp(cmd, "tokens") && argc >= 2)
        rc = cmd_tokens(argc, argv);
    else if (!strcmp(cmd, "train") && argc >= 3)
        rc = cmd_train(argc, argv);
    else if (!strcmp(cmd, "bench-tokens") && argc >= 3)
        rc = cmd_bench_tokens(argc, argv);
    else if (!strcmp(cmd, "job") && argc >= 2)
        rc = cmd_job(argc, argv);
    else if (!strcmp(cmd, "listen") && argc >= 2)
        rc = cmd_listen(argc, argv);
    else if (!strcmp(cmd, "watch") && argc >= 2)
        rc = cmd_watch(argc, argv);
    else if (!strcmp(cmd, "cancel"))
        rc = cmd_cancel();
    else if (!strcmp(cmd, "log") && argc >= 4)
        rc = cmd_log(argc, argv);
    else if (!strcmp(cmd, "bench-log") && argc >= 2)
        rc = cmd_bench_log(argc, argv);
    else
        usage();
    osp_store_free(&st);
    uv_run(&loop, UV_RUN_DEFAULT);
    run_until_done();
    close_rc = uv_loop_close(&loop);
    printf("loop_close=%d\n", close_rc);
    osp_log_close();
    return rc != 0 || close_rc != 0 || failures != 0;
}
