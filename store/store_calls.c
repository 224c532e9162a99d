/*
 * store_calls: the typed calls of osp_store.h.  Each builds a request of
 * prepared statements (one round trip: the pool's connections are in
 * pipeline mode), and turns the results into the caller's structs.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "store_int.h"

#define STORE_MAX_FIELD (64 * 1024)

int64_t store__val_i64(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? -1 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void put_be32(osp_buf_t *b, uint32_t v)
{
    unsigned char p[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v };

    osp_buf_append(b, p, 4);
}

/* bigint[] in binary array format (array_recv), element type int8 (OID 20). */
static void int8_array_bin(osp_buf_t *b, const uint64_t *v, size_t n)
{
    size_t i;

    put_be32(b, n ? 1 : 0);
    put_be32(b, 0);
    put_be32(b, 20);
    if (n == 0)
        return;
    put_be32(b, (uint32_t)n);
    put_be32(b, 1);
    for (i = 0; i < n; i++) {
        put_be32(b, 8);
        put_be32(b, (uint32_t)(v[i] >> 32));
        put_be32(b, (uint32_t)v[i]);
    }
}

void store__utf8_clean(osp_buf_t *out, const char *s, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t start = out->len, need, i;
    uint32_t cp;

    while (*p && out->len - start < max) {
        if (*p < 0x80) {
            osp_buf_append_char(out, (char)*p++);
            continue;
        }
        need = (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : 0;
        cp = need == 1 ? (*p & 0x1Fu) : need == 2 ? (*p & 0x0Fu) : (*p & 0x07u);
        for (i = 1; need && i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80)
                break;
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        if (need == 0 || i <= need ||
            (need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) {
            osp_buf_append_char(out, '?');
            p++;
            continue;
        }
        if (out->len - start + need + 1 > max)
            break;
        osp_buf_append(out, p, need + 1);
        p += need + 1;
    }
}

/* A text parameter with invalid UTF-8 replaced (the database refuses it). */
static void param_text(store__req_t *r, store__step_t *s, const char *text)
{
    osp_buf_t b;

    if (text == NULL) {
        store__step_param(r, s, NULL);
        return;
    }
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    store__utf8_clean(&b, text, STORE_MAX_FIELD);
    store__step_param(r, s, osp_buf_cstr(&b));
    osp_buf_close(&b);
}

osp_store_req_t *store__start(osp_store_t *st, store__req_t *r, void *cb, void *ctx,
                              void (*deliver)(store__req_t *, int, const char *),
                              uint64_t timeout_ms, const char **error_r)
{
    r->cb = cb;
    r->ctx = ctx;
    r->deliver = deliver;
    return store__submit(st, r, timeout_ms, error_r);
}

/* ------------------------------------------------------------ ping */

static void ping_deliver(store__req_t *r, int status, const char *error)
{
    store__count(r->st, status);
    ((osp_store_status_cb *)r->cb)(r->ctx, status, error);
}

osp_store_req_t *osp_store_ping(osp_store_t *st, uint64_t timeout_ms,
                                osp_store_status_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();

    store__req_step(r, STORE_STEP_PREPARED, "osp_ping", NULL, PGRES_TUPLES_OK);
    return store__start(st, r, (void *)cb, ctx, ping_deliver, timeout_ms, error_r);
}

/* ------------------------------------------------------------ recipients */

static void resolve_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_recipient_cb *cb = (osp_store_recipient_cb *)r->cb;
    osp_store_recipient_t rec;
    const PGresult *res = r->res[0];
    int64_t *chain = NULL;
    size_t n = 0;
    const char *p;

    if (status == OSP_STORE_OK && PQntuples(res) == 0)
        status = OSP_STORE_NOT_FOUND;
    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, error);
        return;
    }
    memset(&rec, 0, sizeof(rec));
    rec.account_id = store__val_i64(res, 0, 0);
    rec.path = PQgetvalue(res, 0, 1);
    rec.settings_json = PQgetisnull(res, 0, 2) ? "{}" : PQgetvalue(res, 0, 2);
    for (p = rec.path; *p; p++)
        if (*p == '.')
            n++;
    chain = osp_calloc(n + 1, sizeof(*chain));
    n = 0;
    for (p = rec.path; *p;) {
        char *end;

        chain[n++] = strtoll(p, &end, 10);
        p = *end == '.' ? end + 1 : end + strlen(end);
    }
    rec.chain = chain;
    rec.nchain = n;
    cb(r->ctx, OSP_STORE_OK, &rec, NULL);
    free(chain);
}

osp_store_req_t *osp_store_resolve_recipient(osp_store_t *st, const char *address,
                                             uint64_t timeout_ms, osp_store_recipient_cb *cb,
                                             void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_PREPARED, "osp_resolve", NULL, PGRES_TUPLES_OK);
    param_text(r, s, address ? address : "");
    return store__start(st, r, (void *)cb, ctx, resolve_deliver, timeout_ms, error_r);
}

osp_store_list_entry_t *store__list_entries(const PGresult *res, size_t *n_r)
{
    int i, n = PQntuples(res);
    osp_store_list_entry_t *e = osp_calloc((size_t)n + 1, sizeof(*e));

    for (i = 0; i < n; i++) {
        e[i].id = store__val_i64(res, i, 0);
        e[i].account_id = store__val_i64(res, i, 1);
        e[i].list = PQgetvalue(res, i, 2);
        e[i].kind = PQgetvalue(res, i, 3);
        e[i].value = PQgetvalue(res, i, 4);
    }
    *n_r = (size_t)n;
    return e;
}

/* ------------------------------------------------------------ snapshot */

static void snapshot_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_snapshot_cb *cb = (osp_store_snapshot_cb *)r->cb;
    osp_store_snapshot_t snap;
    osp_store_list_entry_t *e;
    osp_store_rule_t *ru;
    const PGresult *le = r->res[1], *rr = r->res[2];
    int i;

    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, error);
        return;
    }
    memset(&snap, 0, sizeof(snap));
    snap.nrules = (size_t)PQntuples(rr);
    e = store__list_entries(le, &snap.nentries);
    ru = osp_calloc(snap.nrules + 1, sizeof(*ru));
    for (i = 0; i < PQntuples(rr); i++) {
        ru[i].id = store__val_i64(rr, i, 0);
        ru[i].account_id = store__val_i64(rr, i, 1);
        ru[i].priority = (int)store__val_i64(rr, i, 2);
        ru[i].name = PQgetvalue(rr, i, 3);
        ru[i].source = PQgetvalue(rr, i, 4);
    }
    snap.entries = e;
    snap.rules = ru;
    cb(r->ctx, OSP_STORE_OK, &snap, NULL);
    free(e);
    free(ru);
}

osp_store_req_t *osp_store_load_snapshot(osp_store_t *st, uint64_t timeout_ms,
                                         osp_store_snapshot_cb *cb, void *ctx,
                                         const char **error_r)
{
    store__req_t *r = store__req_new();

    store__req_step(r, STORE_STEP_SQL, NULL, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    PGRES_COMMAND_OK);
    store__req_step(r, STORE_STEP_PREPARED, "osp_lists", NULL, PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_PREPARED, "osp_rules", NULL, PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_SQL, NULL, "COMMIT", PGRES_COMMAND_OK);
    return store__start(st, r, (void *)cb, ctx, snapshot_deliver, timeout_ms, error_r);
}

/* ------------------------------------------------------------ quarantine */

static void quarantine_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_quarantine_cb *cb = (osp_store_quarantine_cb *)r->cb;
    osp_store_quarantine_result_t res;
    size_t nrcpts = (size_t)(uintptr_t)r->data;

    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, error);
        return;
    }
    /* Only here -- after the Sync that committed the implicit
     * transaction was answered -- is the mail known to be stored. */
    res.inserted = (size_t)PQntuples(r->res[1]);
    res.duplicates = nrcpts > res.inserted ? nrcpts - res.inserted : 0;
    cb(r->ctx, OSP_STORE_OK, &res, NULL);
}

osp_store_req_t *osp_store_quarantine(osp_store_t *st, const osp_store_quarantine_t *q,
                                      uint64_t timeout_ms, osp_store_quarantine_cb *cb,
                                      void *ctx, const char **error_r)
{
    store__req_t *r;
    store__step_t *s;
    osp_buf_t b;
    osp_ip_t ip;
    size_t i;
    char num[64];
    const char **rcpts;
    const char *dummy;

    if (error_r == NULL)
        error_r = &dummy;
    if (q->queue_id == NULL || *q->queue_id == '\0' || q->nrcpts == 0 || q->verdict == NULL ||
        (q->body == NULL && q->body_len > 0) || q->body_len > INT32_MAX) {
        *error_r = "quarantine: queue id, verdict and recipients are required";
        return NULL;
    }
    if (q->client_address != NULL && osp_ip_parse(q->client_address, &ip) < 0) {
        *error_r = "quarantine: client address does not parse";
        return NULL;
    }
    r = store__req_new();
    r->data = (void *)(uintptr_t)q->nrcpts;
    /*
     * One implicit transaction: pipeline mode runs everything up to the
     * Sync as one transaction, committed at the Sync.  set_config(..,
     * true) is SET LOCAL: synchronous commit for this transaction only.
     */
    store__req_step(r, STORE_STEP_PREPARED, "osp_sync_on", NULL, PGRES_TUPLES_OK);
    s = store__req_step(r, STORE_STEP_PREPARED, "osp_quarantine", NULL, PGRES_TUPLES_OK);
    store__step_param_bin(r, s, q->body ? q->body : "", q->body_len);
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_char(&b, '{');
    for (i = 0; i < q->nrcpts; i++)
        osp_buf_printf(&b, "%s%lld", i ? "," : "",
                       q->rcpts[i].account_id < 0 ? 0LL : (long long)q->rcpts[i].account_id);
    osp_buf_append_char(&b, '}');
    store__step_param(r, s, osp_buf_cstr(&b));
    osp_buf_reset(&b);
    rcpts = osp_calloc(q->nrcpts, sizeof(*rcpts));
    for (i = 0; i < q->nrcpts; i++) {
        osp_buf_t one;

        osp_buf_init(&one, OSP_BUF_UNLIMITED);
        store__utf8_clean(&one, q->rcpts[i].recipient ? q->rcpts[i].recipient : "",
                          STORE_MAX_FIELD);
        rcpts[i] = store__req_keep(r, osp_buf_steal(&one));
        osp_buf_close(&one);
    }
    store__array_literal(&b, rcpts, q->nrcpts);
    free(rcpts);
    store__step_param(r, s, osp_buf_cstr(&b));
    osp_buf_reset(&b);
    param_text(r, s, q->queue_id);
    param_text(r, s, q->message_id);
    param_text(r, s, q->sender ? q->sender : "");
    param_text(r, s, q->client_address);
    param_text(r, s, q->client_name);
    param_text(r, s, q->helo);
    param_text(r, s, q->subject);
    store__step_param_i64(r, s, q->size < 0 ? 0 : q->size);
    if (isnan(q->score)) {
        store__step_param(r, s, NULL);
    } else {
        osp_snprintf(num, sizeof(num), "%.17g", q->score);
        store__step_param(r, s, num);
    }
    param_text(r, s, q->verdict);
    {
        const char **reasons = osp_calloc(q->nreasons + 1, sizeof(*reasons));
        osp_buf_t one;

        for (i = 0; i < q->nreasons; i++) {
            osp_buf_init(&one, OSP_BUF_UNLIMITED);
            store__utf8_clean(&one, q->reasons[i] ? q->reasons[i] : "", 4096);
            reasons[i] = store__req_keep(r, osp_buf_steal(&one));
            osp_buf_close(&one);
        }
        store__array_literal(&b, reasons, q->nreasons);
        free(reasons);
    }
    store__step_param(r, s, osp_buf_cstr(&b));
    osp_buf_close(&b);
    return store__start(st, r, (void *)cb, ctx, quarantine_deliver, timeout_ms, error_r);
}

/* ------------------------------------------------------------ Bayes */

typedef struct tokens_data {
    int64_t account;
    uint64_t *tokens;
    size_t n;
} tokens_data_t;

static size_t hash_token(uint64_t t, size_t mask)
{
    t ^= t >> 33;
    t *= 0xff51afd7ed558ccdULL;
    t ^= t >> 33;
    return (size_t)t & mask;
}

static void tokens_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_tokens_cb *cb = (osp_store_tokens_cb *)r->cb;
    tokens_data_t *d = r->data;
    const PGresult *tr = r->res[0], *tt = r->res[1];
    osp_store_token_counts_t *counts;
    osp_store_bayes_totals_t totals;
    size_t cap, mask, i, h, *slot, *next;
    int row;
    const int none = -1;

    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, d->n, NULL, error);
        return;
    }
    /* open addressing over the input, with a chain for repeated tokens */
    for (cap = 16; cap < d->n * 2; cap *= 2)
        ;
    mask = cap - 1;
    slot = osp_malloc(cap * sizeof(*slot));
    memset(slot, 0xff, cap * sizeof(*slot));
    next = osp_malloc((d->n + 1) * sizeof(*next));
    for (i = 0; i < d->n; i++) {
        next[i] = (size_t)none;
        for (h = hash_token(d->tokens[i], mask); slot[h] != (size_t)none; h = (h + 1) & mask)
            if (d->tokens[slot[h]] == d->tokens[i])
                break;
        if (slot[h] == (size_t)none) {
            slot[h] = i;
        } else {
            next[i] = next[slot[h]];
            next[slot[h]] = i;
        }
    }
    counts = osp_calloc(d->n + 1, sizeof(*counts));
    for (row = 0; row < PQntuples(tr); row++) {
        int64_t acct = store__val_i64(tr, row, 0);
        uint64_t tok = (uint64_t)strtoll(PQgetvalue(tr, row, 1), NULL, 10);
        uint32_t spam = (uint32_t)strtoul(PQgetvalue(tr, row, 2), NULL, 10);
        uint32_t ham = (uint32_t)strtoul(PQgetvalue(tr, row, 3), NULL, 10);
        for (h = hash_token(tok, mask); slot[h] != (size_t)none; h = (h + 1) & mask)
            if (d->tokens[slot[h]] == tok)
                break;
        for (i = slot[h]; i != (size_t)none; i = next[i]) {
            if (acct == 0) {
                counts[i].global_spam = spam;
                counts[i].global_ham = ham;
            }
            if (acct == d->account) {
                counts[i].spam = spam;
                counts[i].ham = ham;
            }
        }
    }
    memset(&totals, 0, sizeof(totals));
    for (row = 0; row < PQntuples(tt); row++) {
        int64_t acct = store__val_i64(tt, row, 0);
        uint64_t spam = (uint64_t)store__val_i64(tt, row, 1), ham = (uint64_t)store__val_i64(tt, row, 2);

        if (acct == 0) {
            totals.global_spam = spam;
            totals.global_ham = ham;
        }
        if (acct == d->account) {
            totals.spam = spam;
            totals.ham = ham;
        }
    }
    cb(r->ctx, OSP_STORE_OK, counts, d->n, &totals, NULL);
    free(counts);
    free(slot);
    free(next);
}

osp_store_req_t *osp_store_tokens_lookup(osp_store_t *st, int64_t account_id,
                                         const uint64_t *tokens, size_t n, uint64_t timeout_ms,
                                         osp_store_tokens_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    tokens_data_t *d = store__req_keep(r, osp_calloc(1, sizeof(*d)));
    store__step_t *s;
    osp_buf_t b;

    d->n = n;
    d->tokens = store__req_keep(r, osp_memdup0(tokens, n * sizeof(*tokens)));
    d->account = account_id;
    r->data = d;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    int8_array_bin(&b, tokens, n);
    s = store__req_step(r, STORE_STEP_PREPARED, "osp_tokens", NULL, PGRES_TUPLES_OK);
    store__step_param_i64(r, s, account_id);
    store__step_param_bin(r, s, b.data ? b.data : "", b.len);
    osp_buf_close(&b);
    s = store__req_step(r, STORE_STEP_PREPARED, "osp_totals", NULL, PGRES_TUPLES_OK);
    store__step_param_i64(r, s, account_id);
    return store__start(st, r, (void *)cb, ctx, tokens_deliver, timeout_ms, error_r);
}

static void text_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_text_cb *cb = (osp_store_text_cb *)r->cb;
    const PGresult *res = status == OSP_STORE_OK ? r->res[r->nsteps - 1] : NULL;

    if (res != NULL && (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)))
        status = OSP_STORE_NOT_FOUND;
    store__count(r->st, status);
    cb(r->ctx, status, status == OSP_STORE_OK ? PQgetvalue(res, 0, 0) : NULL, error);
}

osp_store_req_t *osp_store_bayes_train(osp_store_t *st, int64_t account_id,
                                       const uint8_t message_hash[32], bool spam,
                                       const uint64_t *tokens, size_t n, uint64_t timeout_ms,
                                       osp_store_train_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;
    osp_buf_t b;

    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    int8_array_bin(&b, tokens, n);
    s = store__req_step(r, STORE_STEP_PREPARED, "osp_train", NULL, PGRES_TUPLES_OK);
    store__step_param_i64(r, s, account_id);
    store__step_param_bin(r, s, message_hash, 32);
    store__step_param(r, s, spam ? "true" : "false");
    store__step_param_bin(r, s, b.data ? b.data : "", b.len);
    osp_buf_close(&b);
    return store__start(st, r, (void *)cb, ctx, text_deliver, timeout_ms, error_r);
}

/* ------------------------------------------------------------ jobs */

static void id_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_id_cb *cb = (osp_store_id_cb *)r->cb;
    const PGresult *res = status == OSP_STORE_OK ? r->res[0] : NULL;

    if (res != NULL && (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)))
        status = OSP_STORE_NOT_FOUND;
    store__count(r->st, status);
    cb(r->ctx, status, status == OSP_STORE_OK ? store__val_i64(res, 0, 0) : -1, error);
}

osp_store_req_t *osp_store_job_enqueue(osp_store_t *st, const char *kind,
                                       const char *payload_json, int64_t account_id,
                                       uint64_t delay_ms, int max_attempts, uint64_t timeout_ms,
                                       osp_store_id_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_PREPARED, "osp_job_enqueue", NULL, PGRES_TUPLES_OK);
    param_text(r, s, kind ? kind : "");
    param_text(r, s, payload_json ? payload_json : "{}");
    if (account_id < 0)
        store__step_param(r, s, NULL);
    else
        store__step_param_i64(r, s, account_id);
    store__step_param_i64(r, s, (int64_t)delay_ms);
    if (max_attempts <= 0)
        store__step_param(r, s, NULL);
    else
        store__step_param_i64(r, s, max_attempts);
    return store__start(st, r, (void *)cb, ctx, id_deliver, timeout_ms, error_r);
}

static void jobs_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_jobs_cb *cb = (osp_store_jobs_cb *)r->cb;
    const PGresult *res = status == OSP_STORE_OK ? r->res[0] : NULL;
    osp_store_job_t *jobs;
    int i, n;

    if (res != NULL && PQntuples(res) == 0)
        status = OSP_STORE_NOT_FOUND;
    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, 0, error);
        return;
    }
    n = PQntuples(res);
    jobs = osp_calloc((size_t)n, sizeof(*jobs));
    for (i = 0; i < n; i++) {
        jobs[i].id = store__val_i64(res, i, 0);
        jobs[i].kind = PQgetvalue(res, i, 1);
        jobs[i].account_id = store__val_i64(res, i, 2);
        jobs[i].payload_json = PQgetvalue(res, i, 3);
        jobs[i].attempts = (int)store__val_i64(res, i, 4);
    }
    cb(r->ctx, OSP_STORE_OK, jobs, (size_t)n, NULL);
    free(jobs);
}

osp_store_req_t *osp_store_job_dequeue(osp_store_t *st, const char *worker,
                                       const char *const *kinds, size_t nkinds, unsigned n,
                                       uint64_t timeout_ms, osp_store_jobs_cb *cb, void *ctx,
                                       const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;
    osp_buf_t b;

    s = store__req_step(r, STORE_STEP_PREPARED, "osp_job_dequeue", NULL, PGRES_TUPLES_OK);
    param_text(r, s, worker ? worker : "");
    if (nkinds == 0) {
        store__step_param(r, s, NULL);
    } else {
        osp_buf_init(&b, OSP_BUF_UNLIMITED);
        store__array_literal(&b, kinds, nkinds);
        param_text(r, s, osp_buf_cstr(&b));
        osp_buf_close(&b);
    }
    store__step_param_i64(r, s, n ? n : 1);
    return store__start(st, r, (void *)cb, ctx, jobs_deliver, timeout_ms, error_r);
}

static void complete_deliver(store__req_t *r, int status, const char *error)
{
    const PGresult *res = status == OSP_STORE_OK ? r->res[0] : NULL;

    if (res != NULL && (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") != 0))
        status = OSP_STORE_NOT_FOUND;
    store__count(r->st, status);
    ((osp_store_status_cb *)r->cb)(r->ctx, status, error);
}

osp_store_req_t *osp_store_job_complete(osp_store_t *st, int64_t id, uint64_t timeout_ms,
                                        osp_store_status_cb *cb, void *ctx,
                                        const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_PREPARED, "osp_job_complete", NULL, PGRES_TUPLES_OK);
    store__step_param_i64(r, s, id);
    return store__start(st, r, (void *)cb, ctx, complete_deliver, timeout_ms, error_r);
}

osp_store_req_t *osp_store_job_fail(osp_store_t *st, int64_t id, const char *error_text,
                                    uint64_t timeout_ms, osp_store_text_cb *cb, void *ctx,
                                    const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_PREPARED, "osp_job_fail", NULL, PGRES_TUPLES_OK);
    store__step_param_i64(r, s, id);
    param_text(r, s, error_text ? error_text : "");
    return store__start(st, r, (void *)cb, ctx, text_deliver, timeout_ms, error_r);
}

/*
 * Calls of osprey-worker.  Plain statements, not prepared on connect: they
 * are rare, and the functions of migration 008 must not be required by
 * the other programs' connections.
 */
osp_store_req_t *osp_store_job_retry(osp_store_t *st, int64_t id, const char *error_text,
                                     uint64_t backoff_ms, int max_attempts, uint64_t timeout_ms,
                                     osp_store_text_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_SQL, NULL,
                        "SELECT osprey_job_fail($1::bigint, $2::text,"
                        " $3::bigint * interval '1 millisecond', $4::integer)",
                        PGRES_TUPLES_OK);
    store__step_param_i64(r, s, id);
    param_text(r, s, error_text ? error_text : "");
    store__step_param_i64(r, s, (int64_t)backoff_ms);
    store__step_param_i64(r, s, max_attempts > 0 ? max_attempts : 1);
    return store__start(st, r, (void *)cb, ctx, text_deliver, timeout_ms, error_r);
}

osp_store_req_t *osp_store_job_reclaim(osp_store_t *st, uint64_t stale_ms, uint64_t timeout_ms,
                                       osp_store_id_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_SQL, NULL,
                        "SELECT osprey_job_reclaim($1::bigint * interval '1 millisecond')",
                        PGRES_TUPLES_OK);
    store__step_param_i64(r, s, (int64_t)stale_ms);
    return store__start(st, r, (void *)cb, ctx, id_deliver, timeout_ms, error_r);
}

osp_store_req_t *osp_store_job_schedule(osp_store_t *st, const char *kind,
                                        const char *payload_json, uint64_t every_ms,
                                        int max_attempts, uint64_t timeout_ms,
                                        osp_store_id_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    s = store__req_step(r, STORE_STEP_SQL, NULL,
                        "SELECT osprey_job_schedule($1::text, $2::bigint * interval '1 millisecond',"
                        " $3::jsonb, coalesce($4::integer, 10))",
                        PGRES_TUPLES_OK);
    param_text(r, s, kind ? kind : "");
    store__step_param_i64(r, s, (int64_t)every_ms);
    param_text(r, s, payload_json ? payload_json : "{}");
    if (max_attempts <= 0)
        store__step_param(r, s, NULL);
    else
        store__step_param_i64(r, s, max_attempts);
    return store__start(st, r, (void *)cb, ctx, id_deliver, timeout_ms, error_r);
}

/* One statement per task: $1 the setting, $2 the job's payload. */
static const char *const maint_sql[] = {
    [OSP_MAINT_PARTITIONS_ENSURE] =
        "SELECT osprey_partitions_ensure(coalesce(($2::jsonb->>'partitions_ahead')::integer,"
        " $1::integer))",
    [OSP_MAINT_QUARANTINE_EXPIRE] =
        "SELECT osprey_partitions_expire('quarantine',"
        " coalesce(($2::jsonb->>'quarantine_days')::integer, $1::integer))",
    [OSP_MAINT_LOG_EXPIRE] =
        "SELECT osprey_partitions_expire('message_log',"
        " coalesce(($2::jsonb->>'log_days')::integer, $1::integer))",
    [OSP_MAINT_QUARANTINE_GC] =
        "SELECT osprey_quarantine_gc('1 hour',"
        " coalesce(($2::jsonb->>'gc_batch')::integer, $1::integer))",
    [OSP_MAINT_RATE_EXPIRE] =
        "SELECT osprey_rate_expire(), $1::bigint, $2::jsonb",   /* parameters unused */
    [OSP_MAINT_JOBS_EXPIRE] =
        "SELECT osprey_jobs_expire(coalesce(($2::jsonb->>'jobs_keep_ms')::bigint, $1::bigint)"
        " * interval '1 millisecond')",
    [OSP_MAINT_LOG_INDEX] =
        "SELECT osprey_log_index(coalesce(($2::jsonb->>'batch')::integer, $1::integer))",
};

osp_store_req_t *osp_store_maint(osp_store_t *st, enum osp_store_maint_task task, int64_t arg,
                                 const char *payload_json, uint64_t timeout_ms,
                                 osp_store_id_cb *cb, void *ctx, const char **error_r)
{
    store__req_t *r;
    store__step_t *s;

    if ((size_t)task >= sizeof(maint_sql) / sizeof(maint_sql[0]) || maint_sql[task] == NULL) {
        if (error_r != NULL)
            *error_r = "unknown maintenance task";
        return NULL;
    }
    r = store__req_new();
    s = store__req_step(r, STORE_STEP_SQL, NULL, maint_sql[task], PGRES_TUPLES_OK);
    store__step_param_i64(r, s, arg);
    param_text(r, s, payload_json ? payload_json : "{}");
    return store__start(st, r, (void *)cb, ctx, id_deliver, timeout_ms, error_r);
}
