/* filter_scan: scan pipeline in the thread pool, verdicts and routing. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "filter_scan.h"

static const char *const filter_action_names[FILTER_ACTION__COUNT] = {
    [FILTER_ACTION_DELIVER] = "deliver",
    [FILTER_ACTION_TAG] = "tag",
    [FILTER_ACTION_QUARANTINE] = "quarantine",
    [FILTER_ACTION_DISCARD] = "discard",
    [FILTER_ACTION_REJECT] = "reject",
};

const char *filter_action_name(enum filter_action a)
{
    if ((unsigned)a >= FILTER_ACTION__COUNT)
        osp_panic("filter_action_name: %d", (int)a);
    return filter_action_names[a];
}

int filter_action_parse(const char *name, enum filter_action *a_r)
{
    int i;

    for (i = 0; i < FILTER_ACTION__COUNT; i++)
        if (strcasecmp(name, filter_action_names[i]) == 0) {
            *a_r = (enum filter_action)i;
            return 0;
        }
    return -1;
}

const char *filter_route_name(enum filter_route r)
{
    switch (r) {
    case FILTER_ROUTE_REINJECT: return "deliver";
    case FILTER_ROUTE_REINJECT_TAGGED: return "tag";
    case FILTER_ROUTE_QUARANTINE: return "quarantine";
    case FILTER_ROUTE_DISCARD: return "discard";
    case FILTER_ROUTE_REJECT: return "reject";
    default: osp_panic("filter_route_name: %d", (int)r);
    }
}

void filter_scan_result_raise(filter_scan_result_t *res, size_t i, enum filter_action a,
                              const char *reason)
{
    size_t k;

    if (i == FILTER_ALL_RCPTS) {
        for (k = 0; k < res->nrcpt; k++)
            filter_scan_result_raise(res, k, a, reason);
        return;
    }
    if (i >= res->nrcpt)
        osp_panic("filter_scan_result_raise: recipient %zu of %zu", i, res->nrcpt);
    if (a > res->rcpt[i].action) {
        res->rcpt[i].action = a;
        osp_strlcpy(res->rcpt[i].reason, reason ? reason : "", sizeof(res->rcpt[i].reason));
    }
}

/* ---- the pipeline ------------------------------------------------------- */

struct filter_scan {
    filter_scan_thresholds_t thresholds;
    filter_scanner_t *scanners;     /* owned array */
    size_t n;
    filter_scan_prepare_fn prepare; /* or NULL */
    void *prepare_ctx;              /* borrowed */
    filter_bayes_t *bayes;          /* borrowed; NULL: no Bayes lookup */
};

filter_scan_t *filter_scan_create(const filter_scan_thresholds_t *t)
{
    filter_scan_t *scan = osp_calloc(1, sizeof(*scan));

    scan->thresholds = *t;
    return scan;
}

void filter_scan_free(filter_scan_t **scanp)
{
    filter_scan_t *scan = *scanp;
    size_t i;

    if (scan == NULL)
        return;
    for (i = 0; i < scan->n; i++)
        if (scan->scanners[i].free_ctx)
            scan->scanners[i].free_ctx(scan->scanners[i].ctx);
    free(scan->scanners);
    free(scan);
    *scanp = NULL;
}

void filter_scan_add(filter_scan_t *scan, const filter_scanner_t *s)
{
    scan->scanners = osp_reallocarray(scan->scanners, scan->n + 1, sizeof(*s));
    scan->scanners[scan->n++] = *s;
}

void filter_scan_set_prepare(filter_scan_t *scan, filter_scan_prepare_fn fn, void *ctx)
{
    scan->prepare = fn;
    scan->prepare_ctx = ctx;
}

void filter_scan_set_bayes(filter_scan_t *scan, filter_bayes_t *fb)
{
    scan->bayes = fb;
}

double filter_scan_rcpt_score(const filter_scan_result_t *res, size_t i)
{
    return i < res->nrcpt ? res->score + res->rcpt[i].score : res->score;
}

const filter_bayes_answer_t *filter_scan_rcpt_bayes(const filter_scan_result_t *res, size_t i)
{
    const filter_bayes_answer_t *a;

    if (i >= res->nrcpt || res->rcpt[i].bayes_idx >= res->bayes.n)
        return NULL;
    a = &res->bayes.ans[res->rcpt[i].bayes_idx];
    return a->prob >= 0 ? a : NULL;
}

bool filter_scan_same_bayes(const filter_scan_result_t *res, size_t i, size_t j)
{
    const filter_bayes_answer_t *a = filter_scan_rcpt_bayes(res, i);
    const filter_bayes_answer_t *b = filter_scan_rcpt_bayes(res, j);

    if (a == NULL || b == NULL)
        return a == b;
    return a == b || (a->prob == b->prob && strcmp(a->clues, b->clues) == 0);
}

void filter_scan_bayes_header(const filter_scan_result_t *res, size_t i, osp_buf_t *out)
{
    const filter_bayes_answer_t *a = filter_scan_rcpt_bayes(res, i);
    size_t len = out->len;

    if (a == NULL)
        return;
    if (osp_buf_printf(out, "X-Spam-Bayes: prob=%.4f; account=%lld; tokens=%zu;\r\n\tclues=%s\r\n",
                       a->prob, (long long)a->account, a->ntokens,
                       *a->clues ? a->clues : "none") < 0)
        osp_buf_truncate(out, len);
}

/* The distinct accounts of the recipients (none: the global counts, 0). */
static void filter_scan__accounts(filter_scan_result_t *res)
{
    size_t i, k;

    if (res->bayes.ans != NULL)
        return;
    res->bayes.ans = osp_calloc(res->nrcpt ? res->nrcpt : 1, sizeof(*res->bayes.ans));
    res->bayes.n = 0;
    for (i = 0; i < res->nrcpt; i++) {
        int64_t a = res->rcpt[i].account < 0 ? 0 : res->rcpt[i].account;
        for (k = 0; k < res->bayes.n && res->bayes.ans[k].account != a; k++)
            ;
        if (k == res->bayes.n) {
            res->bayes.ans[k].account = a;
            res->bayes.ans[k].prob = -1;
            res->bayes.n++;
        }
        res->rcpt[i].bayes_idx = k;
    }
}

static void filter_scan__result_init(filter_scan_result_t *res, size_t nrcpt)
{
    res->score = 0;
    res->nrcpt = nrcpt;
    res->rcpt = osp_calloc(nrcpt ? nrcpt : 1, sizeof(*res->rcpt));
    osp_buf_init(&res->add_headers, 64 * 1024);
    res->error[0] = '\0';
    res->spf = res->dkim = res->dmarc = NULL;
    res->strip_authserv_id = NULL;
    memset(&res->bayes, 0, sizeof(res->bayes));
    osp_bayes_tokens_init(&res->bayes.tokens, true);
    res->bayes.rules_score = NAN;
    for (size_t i = 0; i < nrcpt; i++)
        res->rcpt[i].account = -1;
    res->state = NULL;
    res->free_state = NULL;
}

static void filter_scan__result_close(filter_scan_result_t *res)
{
    OSP_FREE(&res->rcpt);
    osp_buf_close(&res->add_headers);
    osp_bayes_tokens_close(&res->bayes.tokens);
    OSP_FREE(&res->bayes.ans);
    if (res->free_state && res->state)
        res->free_state(res->state);
    res->state = NULL;
}

/* The scanners, then the thresholds (the second step). */
static int filter_scan__scanners(filter_scan_t *scan, const filter_scan_msg_t *msg,
                                 filter_scan_result_t *res)
{
    size_t i;
    char why[64];

    for (i = 0; i < scan->n; i++) {
        if (scan->scanners[i].scan(scan->scanners[i].ctx, msg, res) < 0) {
            if (res->error[0] == '\0')
                osp_snprintf(res->error, sizeof(res->error), "scanner %s failed",
                             scan->scanners[i].name);
            return -1;
        }
    }
    if (isnan(res->score))
        res->score = 0;
    for (i = 0; i < res->nrcpt; i++) {
        double score;
        if (isnan(res->rcpt[i].score))
            res->rcpt[i].score = 0;
        score = filter_scan_rcpt_score(res, i);
        if (score >= scan->thresholds.quarantine_score) {
            osp_snprintf(why, sizeof(why), "score %.1f >= %.1f", score,
                         scan->thresholds.quarantine_score);
            filter_scan_result_raise(res, i, FILTER_ACTION_QUARANTINE, why);
        } else if (score >= scan->thresholds.tag_score) {
            osp_snprintf(why, sizeof(why), "score %.1f >= %.1f", score,
                         scan->thresholds.tag_score);
            filter_scan_result_raise(res, i, FILTER_ACTION_TAG, why);
        }
    }
    return 0;
}

static void filter_scan__want(filter_scan_t *scan, filter_scan_result_t *res)
{
    filter_scan__accounts(res);
    res->bayes.want_rules_score = scan->bayes != NULL && filter_bayes_conf(scan->bayes)->autolearn;
}

int filter_scan_run(filter_scan_t *scan, const filter_scan_msg_t *msg,
                    filter_scan_result_t *res)
{
    filter_scan__want(scan, res);
    if (scan->prepare && scan->prepare(scan->prepare_ctx, msg, res) < 0) {
        if (res->error[0] == '\0')
            osp_strlcpy(res->error, "prepare step failed", sizeof(res->error));
        return -1;
    }
    return filter_scan__scanners(scan, msg, res);
}

void filter_scan_job_init(filter_scan_job_t *job, filter_scan_t *scan,
                          const filter_scan_msg_t *msg)
{
    memset(&job->work, 0, sizeof(job->work));
    job->scan = scan;
    job->msg = msg;
    filter_scan__result_init(&job->result, msg->nrcpt);
    job->status = 0;
    job->done = NULL;
    job->running = false;
}

void filter_scan_job_close(filter_scan_job_t *job)
{
    if (job->running)
        osp_panic("filter_scan_job_close: job still running");
    filter_scan__result_close(&job->result);
}

void filter_scan_job_set_account(filter_scan_job_t *job, size_t i, int64_t account)
{
    if (i >= job->result.nrcpt || job->running)
        osp_panic("filter_scan_job_set_account: recipient %zu of %zu", i, job->result.nrcpt);
    job->result.rcpt[i].account = account;
}

/* Autolearn account k of a finished scan (loop thread). */
static void filter_scan_autolearn_one(filter_scan_job_t *job, size_t k)
{
    const filter_scan_result_t *res = &job->result;
    const filter_bayes_answer_t *a = &res->bayes.ans[k];
    enum osp_bayes_autolearn d;
    char log_id[96];

    /* Postfix-style: the queue id first, then our scan id. */
    osp_snprintf(log_id, sizeof(log_id), "%s: scan_id=%s",
                 job->msg->queue_id && *job->msg->queue_id ? job->msg->queue_id : "NOQUEUE",
                 job->msg->scan_id);
    d = filter_bayes_autolearn(job->scan->bayes, a->account, &res->bayes.tokens,
                               res->bayes.rules_score, a->prob, log_id);
    if (d != OSP_BAYES_LEARN_NONE)
        osp_debug(1, "%s: bayes autolearn queued account=%lld class=%s rules_score=%.1f "
                  "prob=%.4f", log_id, (long long)a->account,
                  d == OSP_BAYES_LEARN_SPAM ? "spam" : "ham", res->bayes.rules_score, a->prob);
}

#define FILTER_SCAN_JOB(req) \
    ((filter_scan_job_t *)((char *)(req) - offsetof(filter_scan_job_t, work)))

static void filter_scan__finish(filter_scan_job_t *job)
{
    job->running = false;
    job->done(job, job->status);
}

/* Step 2: the scanners. */
static void filter_scan__work_cb(uv_work_t *req)
{
    filter_scan_job_t *job = FILTER_SCAN_JOB(req);

    job->status = filter_scan__scanners(job->scan, job->msg, &job->result);
}

static void filter_scan__after_cb(uv_work_t *req, int status)
{
    filter_scan_job_t *job = FILTER_SCAN_JOB(req);
    filter_scan_result_t *res = &job->result;
    size_t k;

    if (status == UV_ECANCELED) {
        job->status = -1;
        osp_strlcpy(res->error, "scan cancelled", sizeof(res->error));
    }
    if (job->status == 0 && job->scan->bayes != NULL && res->bayes.tokenized &&
        !isnan(res->bayes.rules_score))
        for (k = 0; k < res->bayes.n; k++)
            filter_scan_autolearn_one(job, k);
    filter_scan__finish(job);
}

static void filter_scan__step2(filter_scan_job_t *job)
{
    int rc = uv_queue_work(job->loop, &job->work, filter_scan__work_cb, filter_scan__after_cb);

    if (rc < 0) {
        job->status = -1;
        osp_snprintf(job->result.error, sizeof(job->result.error), "cannot queue the scan: %s",
                     uv_strerror(rc));
        filter_scan__finish(job);
    }
}

static void filter_scan__bayes_done_cb(void *ctx)
{
    filter_scan__step2(ctx);
}

/* Step 1: prepare (parse, tokenize). */
static void filter_scan__prep_work_cb(uv_work_t *req)
{
    filter_scan_job_t *job = FILTER_SCAN_JOB(req);
    filter_scan_t *scan = job->scan;

    job->status = scan->prepare(scan->prepare_ctx, job->msg, &job->result);
    if (job->status < 0 && job->result.error[0] == '\0')
        osp_strlcpy(job->result.error, "prepare step failed", sizeof(job->result.error));
}

static void filter_scan__prep_after_cb(uv_work_t *req, int status)
{
    filter_scan_job_t *job = FILTER_SCAN_JOB(req);
    filter_scan_result_t *res = &job->result;

    if (status == UV_ECANCELED) {
        job->status = -1;
        osp_strlcpy(res->error, "scan cancelled", sizeof(res->error));
    }
    if (job->status < 0) {
        filter_scan__finish(job);
        return;
    }
    /* On the loop thread: the cache, then the database, never blocking. */
    if (job->scan->bayes != NULL && res->bayes.tokenized && res->bayes.n > 0 &&
        filter_bayes_classify(job->scan->bayes, &res->bayes.tokens, res->bayes.ans,
                              res->bayes.n, filter_scan__bayes_done_cb, job) > 0)
        return;
    filter_scan__step2(job);
}

int filter_scan_start(filter_scan_job_t *job, uv_loop_t *loop, filter_scan_done_cb done)
{
    int rc;

    job->done = done;
    job->loop = loop;
    filter_scan__want(job->scan, &job->result);
    if (job->scan->prepare)
        rc = uv_queue_work(loop, &job->work, filter_scan__prep_work_cb,
                           filter_scan__prep_after_cb);
    else
        rc = uv_queue_work(loop, &job->work, filter_scan__work_cb, filter_scan__after_cb);
    if (rc == 0)
        job->running = true;
    return rc;
}

/* ---- routing ------------------------------------------------------------ */

void filter_route(const filter_scan_result_t *res, bool lmtp, enum filter_route *routes_r)
{
    size_t i, rejects = 0;

    for (i = 0; i < res->nrcpt; i++)
        if (res->rcpt[i].action == FILTER_ACTION_REJECT)
            rejects++;
    for (i = 0; i < res->nrcpt; i++) {
        switch (res->rcpt[i].action) {
        case FILTER_ACTION_DELIVER:
            routes_r[i] = FILTER_ROUTE_REINJECT;
            break;
        case FILTER_ACTION_TAG:
            routes_r[i] = FILTER_ROUTE_REINJECT_TAGGED;
            break;
        case FILTER_ACTION_QUARANTINE:
            routes_r[i] = FILTER_ROUTE_QUARANTINE;
            break;
        case FILTER_ACTION_DISCARD:
            routes_r[i] = FILTER_ROUTE_DISCARD;
            break;
        case FILTER_ACTION_REJECT:
            routes_r[i] = (lmtp || rejects == res->nrcpt) ? FILTER_ROUTE_REJECT
                                                          : FILTER_ROUTE_QUARANTINE;
            break;
        default:
            osp_panic("filter_route: action %d", (int)res->rcpt[i].action);
        }
    }
}

/* ---- the static-rule scanner -------------------------------------------- */

enum filter_static_field {
    FILTER_SF_RCPT,
    FILTER_SF_SENDER,
    FILTER_SF_SUBJECT,
    FILTER_SF_CLIENT,
};

typedef struct filter_static_rule {
    enum filter_static_field field;
    char *value;                    /* owned */
    bool tempfail;
    enum filter_action action;
    double score;
    char *text;                     /* owned: the rule as written, for reasons */
} filter_static_rule_t;

typedef struct filter_static {
    filter_static_rule_t *rules;    /* owned */
    size_t n;
} filter_static_t;

static void filter_scan__static_free(void *ctx)
{
    filter_static_t *st = ctx;
    size_t i;

    for (i = 0; i < st->n; i++) {
        free(st->rules[i].value);
        free(st->rules[i].text);
    }
    free(st->rules);
    free(st);
}

/* Case-insensitive substring search over len bytes of hay. */
static bool filter_scan__contains(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle), i;

    if (n == 0)
        return true;
    for (i = 0; i + n <= len; i++)
        if (strncasecmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

/* The Subject value (first line, unfolded lines ignored); NULL if absent. */
static const char *filter_scan__subject(const filter_scan_msg_t *msg, size_t *len_r)
{
    const char *p = msg->headers, *end = msg->headers + msg->headers_len;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if ((size_t)(end - p) >= 8 && strncasecmp(p, "Subject:", 8) == 0) {
            const char *v = p + 8;
            const char *ve = eol ? eol : end;
            if (ve > v && ve[-1] == '\r')
                ve--;
            *len_r = (size_t)(ve - v);
            return v;
        }
        p = next;
    }
    return NULL;
}

static int filter_scan__static_scan(void *ctx, const filter_scan_msg_t *msg,
                                    filter_scan_result_t *res)
{
    filter_static_t *st = ctx;
    size_t r, i, slen = 0;
    const char *subject = filter_scan__subject(msg, &slen);

    for (r = 0; r < st->n; r++) {
        const filter_static_rule_t *rule = &st->rules[r];
        size_t target = FILTER_ALL_RCPTS;
        bool hit = false;

        switch (rule->field) {
        case FILTER_SF_RCPT:
            for (i = 0; i < msg->nrcpt; i++)
                if (strcasecmp(msg->rcpts[i], rule->value) == 0) {
                    hit = true;
                    target = i;
                    if (rule->tempfail)
                        break;
                    filter_scan_result_raise(res, i, rule->action, rule->text);
                }
            if (hit && !rule->tempfail) {
                res->score += rule->score;
                continue;
            }
            break;
        case FILTER_SF_SENDER:
            hit = strcasecmp(msg->sender, rule->value) == 0;
            break;
        case FILTER_SF_SUBJECT:
            hit = subject != NULL && filter_scan__contains(subject, slen, rule->value);
            break;
        case FILTER_SF_CLIENT:
            hit = strcmp(msg->client_addr, rule->value) == 0;
            break;
        default:
            osp_panic("static rule field %d", (int)rule->field);
        }
        if (!hit)
            continue;
        if (rule->tempfail) {
            osp_snprintf(res->error, sizeof(res->error), "static rule %s: tempfail", rule->text);
            return -1;
        }
        res->score += rule->score;
        filter_scan_result_raise(res, target, rule->action, rule->text);
    }
    return 0;
}

int filter_scan_static_create(const char *const *rules, size_t nrules,
                              filter_scanner_t *s_r, osp_buf_t *err)
{
    filter_static_t *st = osp_calloc(1, sizeof(*st));
    size_t i;

    st->rules = osp_calloc(nrules ? nrules : 1, sizeof(*st->rules));
    for (i = 0; i < nrules; i++) {
        filter_static_rule_t *rule = &st->rules[st->n];
        char *copy = osp_strdup(rules[i]);
        char *field = copy, *value, *action, *score;
        const char *bad = NULL;

        value = strchr(field, ':');
        action = value ? strrchr(value + 1, ':') : NULL;
        score = NULL;
        if (value)
            *value++ = '\0';
        if (action) {
            *action++ = '\0';
            /* Was that the optional score?  Then the action is one field earlier. */
            {
                char *end;
                double d;
                errno = 0;
                d = strtod(action, &end);
                if (*action && *end == '\0' && errno == 0 && isfinite(d)) {
                    char *a2 = strrchr(value, ':');
                    if (a2) {
                        score = action;
                        *a2++ = '\0';
                        action = a2;
                    }
                }
            }
        }
        if (value == NULL || action == NULL || *value == '\0')
            bad = "expected FIELD:VALUE:ACTION[:SCORE]";
        else if (strcasecmp(field, "rcpt") == 0)
            rule->field = FILTER_SF_RCPT;
        else if (strcasecmp(field, "sender") == 0)
            rule->field = FILTER_SF_SENDER;
        else if (strcasecmp(field, "subject") == 0)
            rule->field = FILTER_SF_SUBJECT;
        else if (strcasecmp(field, "client") == 0)
            rule->field = FILTER_SF_CLIENT;
        else
            bad = "unknown field (rcpt, sender, subject, client)";
        if (bad == NULL) {
            if (strcasecmp(action, "tempfail") == 0)
                rule->tempfail = true;
            else if (filter_action_parse(action, &rule->action) < 0)
                bad = "unknown action (deliver, tag, quarantine, discard, reject, tempfail)";
        }
        if (bad == NULL && score) {
            rule->score = strtod(score, NULL);
        }
        if (bad) {
            osp_buf_printf(err, "filter_static_rules: \"");
            osp_buf_append_printable(err, rules[i], strlen(rules[i]));
            osp_buf_printf(err, "\": %s\n", bad);
            free(copy);
            continue;
        }
        rule->value = osp_strdup(value);
        rule->text = osp_strdup(rules[i]);
        st->n++;
        free(copy);
    }
    if (st->n != nrules) {
        filter_scan__static_free(st);
        return -1;
    }
    s_r->name = "static";
    s_r->scan = filter_scan__static_scan;
    s_r->ctx = st;
    s_r->free_ctx = filter_scan__static_free;
    return 0;
}
