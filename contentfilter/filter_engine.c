/* filter_engine: MIME parsing and rules as a filter_scan scanner. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "filter_engine.h"
#include "osp_bayes.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_mime.h"
#include "osp_rules.h"

typedef struct filter_engine {
    osp_rules_t **sets;     /* owned */
    size_t nsets;
    size_t max_size;
    bool tokenize;          /* make Bayes tokens in the prepare step */
    double bayes_weight;    /* weight x Bayes probability joins the score */
} filter_engine_t;

/* The parsed message, from the prepare step to the scan (res->state). */
typedef struct filter_engine_state {
    char *data;             /* owned: the message bytes */
    size_t size;
    osp_mime_message_t *m;  /* owned */
} filter_engine_state_t;

static void filter_engine__state_free(void *p)
{
    filter_engine_state_t *st = p;

    osp_mime_message_free(&st->m);
    free(st->data);
    free(st);
}

/* Read and parse the body: 1 parsed, 0 too big (not scanned), -1 error. */
static int filter_engine__parse(filter_engine_t *e, const filter_scan_msg_t *msg,
                                filter_scan_result_t *res, filter_engine_state_t **st_r)
{
    uint64_t size = msg->body->size;
    filter_engine_state_t *st;
    ssize_t n;

    if (size > e->max_size) {
        osp_info("%s: %s: size %llu over filter_scan_size_limit: not content-scanned",
                 msg->scan_id, msg->queue_id, (unsigned long long)size);
        return 0;
    }
    st = osp_calloc(1, sizeof(*st));
    st->data = osp_malloc((size_t)size + 1);
    n = filter_body_read(msg->body, 0, st->data, (size_t)size);
    if (n < 0 || (uint64_t)n != size) {
        free(st->data);
        free(st);
        osp_snprintf(res->error, sizeof(res->error), "cannot read the message body");
        return -1;
    }
    st->size = (size_t)n;
    st->m = osp_mime_parse(st->data, st->size, NULL);
    *st_r = st;
    return 1;
}

/* res->state of a message the prepare step found too big (not freed). */
static filter_engine_state_t filter_engine__too_big;

/* Step 1 (thread pool): parse once, and make the Bayes tokens. */
static int filter_engine__prepare(void *ctx, const filter_scan_msg_t *msg,
                                  filter_scan_result_t *res)
{
    filter_engine_t *e = ctx;
    filter_engine_state_t *st = NULL;
    int rc = filter_engine__parse(e, msg, res, &st);

    if (rc == 0)
        res->state = &filter_engine__too_big;
    if (rc <= 0)
        return rc;
    res->state = st;
    res->free_state = filter_engine__state_free;
    if (e->tokenize) {
        osp_bayes_tokenize(st->m, 0, &res->bayes.tokens);
        res->bayes.tokenized = true;
    }
    return 0;
}

void filter_engine_two_step(filter_scan_t *scan, const filter_scanner_t *engine, bool tokenize)
{
    filter_engine_t *e = engine->ctx;

    e->tokenize = tokenize;
    filter_scan_set_prepare(scan, filter_engine__prepare, e);
}

static void filter_engine__free(void *ctx)
{
    filter_engine_t *e = ctx;
    size_t i;

    for (i = 0; i < e->nsets; i++)
        osp_rules_free(&e->sets[i]);
    free(e->sets);
    free(e);
}

static enum filter_action filter_engine__action(enum osp_rules_action a)
{
    switch (a) {
    case OSP_RULES_REJECT:
        return FILTER_ACTION_REJECT;
    case OSP_RULES_QUARANTINE:
        return FILTER_ACTION_QUARANTINE;
    case OSP_RULES_DISCARD:
        return FILTER_ACTION_DISCARD;
    case OSP_RULES_TAG:
        return FILTER_ACTION_TAG;
    case OSP_RULES_DELIVER:
        return FILTER_ACTION_DELIVER;
    }
    return FILTER_ACTION_DELIVER;
}

static void filter_engine__hits_header(const osp_rules_result_t *rr, filter_scan_result_t *res)
{
    size_t i, len;

    if (rr->n_hits == 0)
        return;
    len = res->add_headers.len;
    if (osp_buf_append_str(&res->add_headers, "X-Osprey-Rules: ") == 0) {
        for (i = 0; i < rr->n_hits; i++)
            if (osp_buf_printf(&res->add_headers, "%s%s=%.1f", i ? ",\r\n\t" : "",
                               rr->hits[i].name, rr->hits[i].score) < 0)
                break;
        if (i < rr->n_hits || osp_buf_append_str(&res->add_headers, "\r\n") < 0)
            osp_buf_truncate(&res->add_headers, len);
    }
}

static int filter_engine__scan(void *ctx, const filter_scan_msg_t *msg, filter_scan_result_t *res)
{
    filter_engine_t *e = ctx;
    filter_engine_state_t *own = NULL, *st = res->state;
    osp_mime_message_t *m;
    osp_rules_ctx_t rc;
    osp_rules_result_t rr;
    osp_rules_scratch_t *scratch;
    size_t i, k, nb = res->bayes.n;
    double total;
    int prc;

    if (st == &filter_engine__too_big)
        return 0;                       /* logged by the prepare step */
    if (st == NULL || res->free_state != filter_engine__state_free) {
        /* No prepare step ran (one-step pipeline, or not ours): parse here. */
        prc = filter_engine__parse(e, msg, res, &own);
        if (prc <= 0)
            return prc;
        st = own;
    }
    m = st->m;
    osp_rules_ctx_init(&rc);
    rc.sender = msg->sender;
    rc.recipients = msg->rcpts;
    rc.n_recipients = msg->nrcpt;
    rc.client_address = *msg->client_addr ? msg->client_addr : NULL;
    rc.client_name = *msg->client_name ? msg->client_name : NULL;
    rc.helo = *msg->helo ? msg->helo : NULL;
    rc.msg = m;
    rc.size = st->size;
    rc.spf = res->spf;              /* from filter_auth, earlier in the pipeline */
    rc.dkim = res->dkim;
    rc.dmarc = res->dmarc;
    osp_rules_result_init(&rr);
    scratch = osp_rules_scratch_create();
    /* Autolearn needs the rules' verdict without Bayes (or Bayes would teach itself). */
    if (res->bayes.want_rules_score) {
        for (k = 0; k < nb && res->bayes.ans[k].prob < 0; k++)
            ;
        if (k < nb) {
            rc.bayes = -1;
            osp_rules_eval_sets((const osp_rules_t *const *)e->sets, e->nsets, &rc, scratch,
                                &rr);
            res->bayes.rules_score = rr.score;
            osp_rules_result_reset(&rr);
        }
    }
    /*
     * Each distinct account's Bayes answer: one evaluation when they all
     * agree (the usual case: one account), else one per distinct answer,
     * each account's score going to its own recipients.  The hits listed
     * in X-Osprey-Rules are those of the first account.
     */
    for (k = 0; k < (nb ? nb : 1); k++) {
        double prob = nb ? res->bayes.ans[k].prob : -1;
        size_t j;
        if (k > 0) {
            for (j = 0; j < k && res->bayes.ans[j].prob != prob; j++)
                ;
            if (j < k)
                continue;               /* same answer as account j: done with j */
            osp_rules_result_close(&rr);
            osp_rules_result_init(&rr);
        }
        rc.bayes = prob;
        osp_rules_eval_sets((const osp_rules_t *const *)e->sets, e->nsets, &rc, scratch, &rr);
        /* The rules' total (with their Bayes bands) plus weight x probability. */
        total = rr.score + (prob >= 0 ? e->bayes_weight * prob : 0);
        for (j = k; j < nb; j++) {
            if (res->bayes.ans[j].prob != prob)
                continue;
            for (i = 0; i < res->nrcpt; i++)
                if (res->rcpt[i].bayes_idx == j && nb > 1)
                    res->rcpt[i].score += total;
        }
        if (nb <= 1)
            res->score += total;
        if (rr.action != OSP_RULES_DELIVER && rr.n_hits) {
            char why[128];
            size_t h;
            for (h = 0; h < rr.n_hits && rr.hits[h].action != rr.action; h++)
                ;
            osp_snprintf(why, sizeof(why), "rule %s", h < rr.n_hits ? rr.hits[h].name : "?");
            for (i = 0; i < res->nrcpt; i++)
                if (nb <= 1 || res->bayes.ans[res->rcpt[i].bayes_idx].prob == prob)
                    filter_scan_result_raise(res, i, filter_engine__action(rr.action), why);
        }
        if (k == 0)
            filter_engine__hits_header(&rr, res);
    }
    osp_rules_scratch_free(&scratch);
    if (rr.n_errors)
        osp_warn("%s: %s: %u rule(s) skipped after a regular-expression limit (first: %s)",
                 msg->scan_id, msg->queue_id, rr.n_errors,
                 rr.error_rule ? rr.error_rule : "?");
    osp_rules_result_close(&rr);
    if (own)
        filter_engine__state_free(own);
    return 0;
}

void filter_engine_bayes_weight(const filter_scanner_t *engine, double weight)
{
    filter_engine_t *e = engine->ctx;

    e->bayes_weight = weight;
}

int filter_engine_create(const char *const *files, size_t nfiles, size_t max_size,
                         filter_scanner_t *s_r, osp_buf_t *err)
{
    filter_engine_t *e = osp_calloc(1, sizeof(*e));
    size_t i;

    e->bayes_weight = FILTER_ENGINE_BAYES_WEIGHT;

    e->sets = osp_calloc(nfiles ? nfiles : 1, sizeof(osp_rules_t *));
    e->max_size = max_size;
    for (i = 0; i < nfiles; i++) {
        e->sets[i] = osp_rules_load_file(files[i], NULL, err, NULL);
        if (e->sets[i] == NULL) {
            e->nsets = i;
            filter_engine__free(e);
            return -1;
        }
        e->nsets = i + 1;
    }
    memset(s_r, 0, sizeof(*s_r));
    s_r->name = "engine";
    s_r->scan = filter_engine__scan;
    s_r->ctx = e;
    s_r->free_ctx = filter_engine__free;
    return 0;
}
