/* filter_bayes: hot-token cache and asynchronous Bayes lookups for the filter. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter_bayes.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_store.h"

/* ---- the cache ----------------------------------------------------------- */

#define FB_NIL UINT32_MAX

typedef struct fb_entry {
    int64_t account;
    uint64_t token;
    uint64_t expires_ms;
    uint32_t spam, ham;
    uint32_t next;                  /* bucket chain */
    uint32_t prev_lru, next_lru;    /* most recently used at the head */
} fb_entry_t;

struct filter_bayes_cache {
    fb_entry_t *e;                  /* owned; grows up to max */
    size_t n, alloc, max;
    uint32_t *bucket;               /* owned; nbuckets heads */
    size_t nbuckets;
    uint32_t head, tail;
    uint64_t ttl_ms;
    uint64_t hits, misses, expired, evictions;
};

static size_t fb_hash(int64_t account, uint64_t token, size_t nbuckets)
{
    uint64_t h = token ^ ((uint64_t)account * 0x9E3779B97F4A7C15ull);

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)(h & (nbuckets - 1));
}

filter_bayes_cache_t *filter_bayes_cache_create(size_t max, uint64_t ttl_ms)
{
    filter_bayes_cache_t *c = osp_calloc(1, sizeof(*c));
    size_t i;

    if (max < 1)
        max = 1;
    if (max >= FB_NIL)
        max = FB_NIL - 1;
    c->max = max;
    c->ttl_ms = ttl_ms;
    c->nbuckets = 64;
    while (c->nbuckets < max && c->nbuckets < ((size_t)1 << 24))
        c->nbuckets <<= 1;
    c->bucket = osp_reallocarray(NULL, c->nbuckets, sizeof(*c->bucket));
    for (i = 0; i < c->nbuckets; i++)
        c->bucket[i] = FB_NIL;
    c->head = c->tail = FB_NIL;
    return c;
}

void filter_bayes_cache_free(filter_bayes_cache_t **cp)
{
    filter_bayes_cache_t *c = *cp;

    if (c == NULL)
        return;
    free(c->e);
    free(c->bucket);
    free(c);
    *cp = NULL;
}

static void fb_lru_unlink(filter_bayes_cache_t *c, uint32_t i)
{
    fb_entry_t *e = &c->e[i];

    if (e->prev_lru != FB_NIL)
        c->e[e->prev_lru].next_lru = e->next_lru;
    else
        c->head = e->next_lru;
    if (e->next_lru != FB_NIL)
        c->e[e->next_lru].prev_lru = e->prev_lru;
    else
        c->tail = e->prev_lru;
    e->prev_lru = e->next_lru = FB_NIL;
}

static void fb_lru_push(filter_bayes_cache_t *c, uint32_t i)
{
    fb_entry_t *e = &c->e[i];

    e->prev_lru = FB_NIL;
    e->next_lru = c->head;
    if (c->head != FB_NIL)
        c->e[c->head].prev_lru = i;
    c->head = i;
    if (c->tail == FB_NIL)
        c->tail = i;
}

static uint32_t fb_find(const filter_bayes_cache_t *c, int64_t account, uint64_t token)
{
    uint32_t i = c->bucket[fb_hash(account, token, c->nbuckets)];

    while (i != FB_NIL && (c->e[i].account != account || c->e[i].token != token))
        i = c->e[i].next;
    return i;
}

static void fb_bucket_unlink(filter_bayes_cache_t *c, uint32_t i)
{
    uint32_t *p = &c->bucket[fb_hash(c->e[i].account, c->e[i].token, c->nbuckets)];

    while (*p != i) {
        if (*p == FB_NIL)
            osp_panic("filter_bayes_cache: entry %u not in its bucket", i);
        p = &c->e[*p].next;
    }
    *p = c->e[i].next;
}

bool filter_bayes_cache_get(filter_bayes_cache_t *c, int64_t account, uint64_t token,
                            uint64_t now_ms, uint32_t *spam_r, uint32_t *ham_r)
{
    uint32_t i = fb_find(c, account, token);

    if (i == FB_NIL) {
        c->misses++;
        return false;
    }
    if (c->e[i].expires_ms <= now_ms) {
        /* Stale: the caller asks the store and puts the fresh value. */
        c->expired++;
        c->misses++;
        return false;
    }
    *spam_r = c->e[i].spam;
    *ham_r = c->e[i].ham;
    fb_lru_unlink(c, i);
    fb_lru_push(c, i);
    c->hits++;
    return true;
}

void filter_bayes_cache_put(filter_bayes_cache_t *c, int64_t account, uint64_t token,
                            uint32_t spam, uint32_t ham, uint64_t now_ms)
{
    uint32_t i = fb_find(c, account, token);
    size_t b;

    if (i != FB_NIL) {
        fb_lru_unlink(c, i);
    } else {
        if (c->n < c->max) {
            if (c->n == c->alloc) {
                c->alloc = c->alloc ? c->alloc * 2 : 1024;
                if (c->alloc > c->max)
                    c->alloc = c->max;
                c->e = osp_reallocarray(c->e, c->alloc, sizeof(*c->e));
            }
            i = (uint32_t)c->n++;
        } else {
            i = c->tail;
            fb_lru_unlink(c, i);
            fb_bucket_unlink(c, i);
            c->evictions++;
        }
        c->e[i].account = account;
        c->e[i].token = token;
        b = fb_hash(account, token, c->nbuckets);
        c->e[i].next = c->bucket[b];
        c->bucket[b] = i;
    }
    c->e[i].spam = spam;
    c->e[i].ham = ham;
    c->e[i].expires_ms = now_ms + c->ttl_ms;
    fb_lru_push(c, i);
}

void filter_bayes_cache_stats(const filter_bayes_cache_t *c, filter_bayes_cache_stats_t *r)
{
    r->size = c->n;
    r->max = c->max;
    r->hits = c->hits;
    r->misses = c->misses;
    r->expired = c->expired;
    r->evictions = c->evictions;
}

/* ---- configuration ------------------------------------------------------- */

static int fb_double(const osp_config_t *cfg, const char *name, double *r, char *err,
                     size_t errsize)
{
    const char *s = osp_config_str(cfg, name);
    char *end;

    *r = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || *r != *r) {
        osp_snprintf(err, errsize, "%s: \"%s\" is not a number", name, s);
        return -1;
    }
    return 0;
}

int filter_bayes_conf_load(const osp_config_t *cfg, filter_bayes_conf_t *conf, char *err,
                           size_t errsize)
{
    memset(conf, 0, sizeof(*conf));
    osp_bayes_params_default(&conf->params);
    conf->cache_size = (size_t)osp_config_int(cfg, "filter_bayes_cache_size");
    conf->cache_ttl_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_bayes_cache_ttl");
    conf->timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_bayes_timeout");
    conf->min_messages = (uint64_t)osp_config_int(cfg, "filter_bayes_min_messages");
    conf->nclues = 5;
    conf->autolearn = osp_config_bool(cfg, "filter_bayes_autolearn");
    if (fb_double(cfg, "filter_bayes_autolearn_spam_score", &conf->params.autolearn_spam, err,
                  errsize) < 0 ||
        fb_double(cfg, "filter_bayes_autolearn_ham_score", &conf->params.autolearn_ham, err,
                  errsize) < 0 ||
        fb_double(cfg, "filter_bayes_autolearn_sure", &conf->params.autolearn_sure, err,
                  errsize) < 0)
        return -1;
    if (conf->params.autolearn_ham >= conf->params.autolearn_spam) {
        osp_snprintf(err, errsize, "filter_bayes_autolearn_ham_score (%g) must be below "
                     "filter_bayes_autolearn_spam_score (%g)", conf->params.autolearn_ham,
                     conf->params.autolearn_spam);
        return -1;
    }
    if (conf->params.autolearn_sure < 0 || conf->params.autolearn_sure >= 0.5) {
        osp_snprintf(err, errsize, "filter_bayes_autolearn_sure: %g is not in [0, 0.5)",
                     conf->params.autolearn_sure);
        return -1;
    }
    return 0;
}

/* ---- classification ------------------------------------------------------ */

struct filter_bayes {
    uv_loop_t *loop;                /* borrowed */
    osp_store_t *st;                /* borrowed; NULL: detached */
    filter_bayes_conf_t conf;
    filter_bayes_cache_t *cache;    /* owned */
    filter_bayes_stats_t stats;
};

typedef struct fb_query fb_query_t;

/* One account's lookup. */
typedef struct fb_acct {
    fb_query_t *q;                  /* back-pointer */
    filter_bayes_answer_t *ans;     /* borrowed */
    osp_bayes_count_t *counts;      /* owned; one per token */
    osp_bayes_count_t totals;
    size_t *miss;                   /* owned; token indexes not (freshly) cached */
    size_t nmiss;
    bool totals_cached;
} fb_acct_t;

struct fb_query {
    filter_bayes_t *fb;
    const osp_bayes_tokens_t *t;    /* borrowed */
    fb_acct_t *acct;                /* owned */
    size_t n;
    unsigned pending;
    filter_bayes_done_cb *done;
    void *ctx;
};

filter_bayes_t *filter_bayes_create(uv_loop_t *loop, osp_store_t *st,
                                    const filter_bayes_conf_t *conf)
{
    filter_bayes_t *fb = osp_calloc(1, sizeof(*fb));

    fb->loop = loop;
    fb->st = st;
    fb->conf = *conf;
    fb->cache = filter_bayes_cache_create(conf->cache_size, conf->cache_ttl_ms);
    return fb;
}

void filter_bayes_detach(filter_bayes_t *fb)
{
    if (fb != NULL)
        fb->st = NULL;
}

void filter_bayes_free(filter_bayes_t **fbp)
{
    filter_bayes_t *fb = *fbp;

    if (fb == NULL)
        return;
    filter_bayes_cache_free(&fb->cache);
    free(fb);
    *fbp = NULL;
}

const filter_bayes_conf_t *filter_bayes_conf(const filter_bayes_t *fb)
{
    return &fb->conf;
}

filter_bayes_cache_t *filter_bayes_cache(filter_bayes_t *fb)
{
    return fb->cache;
}

void filter_bayes_stats(const filter_bayes_t *fb, filter_bayes_stats_t *r)
{
    *r = fb->stats;
}

static uint32_t fb_u32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void fb_failed(filter_bayes_t *fb, const char *error)
{
    fb->stats.failures++;
    if (!fb->stats.outage) {
        fb->stats.outage = true;
        osp_warn("bayes: token lookup failed: %s: scanning without Bayes until the "
                 "database answers again", error ? error : "unknown error");
    }
}

static void fb_succeeded(filter_bayes_t *fb)
{
    if (fb->stats.outage) {
        fb->stats.outage = false;
        osp_info("bayes: token lookups work again");
    }
}

/* Append token text as printable ASCII without separators. */
static void fb_clue_text(char *out, size_t size, const char *s, uint64_t h)
{
    size_t i, n = 0;
    char hex[24];

    if (s == NULL) {
        osp_snprintf(hex, sizeof(hex), "#%016llx", (unsigned long long)h);
        s = hex;
    }
    for (i = 0; s[i] && n + 1 < size && i < 40; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[n++] = (ch > 0x20 && ch < 0x7f && ch != ',' && ch != ';' && ch != '=' &&
                    ch != '"') ? (char)ch : '?';
    }
    out[n] = '\0';
}

/* Score one account from its complete counts. */
static void fb_score(filter_bayes_t *fb, const osp_bayes_tokens_t *t, fb_acct_t *a)
{
    filter_bayes_answer_t *ans = a->ans;
    osp_bayes_result_t res;
    size_t i, len = 0;

    ans->ntokens = t->n;
    if (a->totals.gspam < fb->conf.min_messages || a->totals.gham < fb->conf.min_messages) {
        osp_debug(1, "bayes: account %lld: %u spam and %u ham trained, below "
                  "filter_bayes_min_messages=%llu: no verdict", (long long)ans->account,
                  a->totals.gspam, a->totals.gham, (unsigned long long)fb->conf.min_messages);
        return;
    }
    osp_bayes_score(&fb->conf.params, t->hash, t->n, a->counts, &a->totals, ans->account != 0,
                    &res);
    ans->prob = res.prob;
    for (i = 0; i < res.n_clues && i < fb->conf.nclues; i++) {
        char tok[48];
        int w;
        fb_clue_text(tok, sizeof(tok), osp_bayes_tokens_text(t, res.clues[i].hash),
                     res.clues[i].hash);
        w = snprintf(ans->clues + len, sizeof(ans->clues) - len, "%s%s=%.3f", i ? ", " : "",
                     tok, res.clues[i].prob);
        if (w < 0 || (size_t)w >= sizeof(ans->clues) - len) {
            ans->clues[len] = '\0';
            break;
        }
        len += (size_t)w;
    }
    osp_bayes_result_close(&res);
}

static void fb_query_free(fb_query_t *q)
{
    size_t i;

    for (i = 0; i < q->n; i++) {
        free(q->acct[i].counts);
        free(q->acct[i].miss);
    }
    free(q->acct);
    free(q);
}

static void fb_lookup_cb(void *ctx, int status, const osp_store_token_counts_t *counts,
                         size_t n, const osp_store_bayes_totals_t *totals, const char *error)
{
    fb_acct_t *a = ctx;
    fb_query_t *q = a->q;
    filter_bayes_t *fb = q->fb;
    uint64_t now = uv_now(fb->loop);
    int64_t acct = a->ans->account;
    size_t i;

    if (status != OSP_STORE_OK || n != a->nmiss) {
        fb_failed(fb, status == OSP_STORE_OK ? "short answer" : error);
    } else {
        fb_succeeded(fb);
        for (i = 0; i < n; i++) {
            size_t k = a->miss[i];
            uint64_t h = q->t->hash[k];
            a->counts[k].gspam = counts[i].global_spam;
            a->counts[k].gham = counts[i].global_ham;
            filter_bayes_cache_put(fb->cache, 0, h, counts[i].global_spam,
                                   counts[i].global_ham, now);
            if (acct != 0) {
                a->counts[k].spam = counts[i].spam;
                a->counts[k].ham = counts[i].ham;
                filter_bayes_cache_put(fb->cache, acct, h, counts[i].spam, counts[i].ham, now);
            }
        }
        a->totals.gspam = fb_u32(totals->global_spam);
        a->totals.gham = fb_u32(totals->global_ham);
        filter_bayes_cache_put(fb->cache, 0, 0, a->totals.gspam, a->totals.gham, now);
        if (acct != 0) {
            a->totals.spam = fb_u32(totals->spam);
            a->totals.ham = fb_u32(totals->ham);
            filter_bayes_cache_put(fb->cache, acct, 0, a->totals.spam, a->totals.ham, now);
        }
        fb_score(fb, q->t, a);
    }
    if (--q->pending == 0) {
        filter_bayes_done_cb *done = q->done;
        void *dctx = q->ctx;
        fb_query_free(q);
        done(dctx);
    }
}

/* Fill a's counts from the cache; the indexes of the tokens it lacks go to a->miss. */
static void fb_from_cache(filter_bayes_t *fb, const osp_bayes_tokens_t *t, fb_acct_t *a,
                          uint64_t now)
{
    int64_t acct = a->ans->account;
    size_t i;
    bool ok;

    a->counts = osp_calloc(t->n ? t->n : 1, sizeof(*a->counts));
    a->miss = osp_calloc(t->n ? t->n : 1, sizeof(*a->miss));
    ok = filter_bayes_cache_get(fb->cache, 0, 0, now, &a->totals.gspam, &a->totals.gham);
    if (ok && acct != 0)
        ok = filter_bayes_cache_get(fb->cache, acct, 0, now, &a->totals.spam, &a->totals.ham);
    a->totals_cached = ok;
    for (i = 0; i < t->n; i++) {
        osp_bayes_count_t *c = &a->counts[i];
        ok = filter_bayes_cache_get(fb->cache, 0, t->hash[i], now, &c->gspam, &c->gham);
        if (ok && acct != 0)
            ok = filter_bayes_cache_get(fb->cache, acct, t->hash[i], now, &c->spam, &c->ham);
        if (!ok)
            a->miss[a->nmiss++] = i;
    }
}

int filter_bayes_classify(filter_bayes_t *fb, const osp_bayes_tokens_t *t,
                          filter_bayes_answer_t *answers, size_t n,
                          filter_bayes_done_cb *done, void *ctx)
{
    fb_query_t *q = osp_calloc(1, sizeof(*q));
    uint64_t now = uv_now(fb->loop);
    size_t i, k;

    q->fb = fb;
    q->t = t;
    q->n = n;
    q->acct = osp_calloc(n ? n : 1, sizeof(*q->acct));
    q->done = done;
    q->ctx = ctx;
    for (i = 0; i < n; i++) {
        fb_acct_t *a = &q->acct[i];
        a->q = q;
        a->ans = &answers[i];
        a->ans->prob = -1;
        a->ans->clues[0] = '\0';
        a->ans->ntokens = 0;
        fb->stats.lookups++;
        fb_from_cache(fb, t, a, now);
        if (a->nmiss == 0 && a->totals_cached) {
            fb_score(fb, t, a);
            continue;
        }
        if (fb->st == NULL) {
            fb_failed(fb, "no database");
            continue;
        }
        {
            uint64_t *hashes = osp_calloc(a->nmiss ? a->nmiss : 1, sizeof(*hashes));
            const char *error = NULL;
            osp_store_req_t *req;
            for (k = 0; k < a->nmiss; k++)
                hashes[k] = t->hash[a->miss[k]];
            fb->stats.db_lookups++;
            req = osp_store_tokens_lookup(fb->st, a->ans->account, hashes, a->nmiss,
                                          fb->conf.timeout_ms, fb_lookup_cb, a, &error);
            free(hashes);
            if (req == NULL) {
                fb_failed(fb, error);
                continue;
            }
            q->pending++;
        }
    }
    if (q->pending == 0) {
        fb_query_free(q);
        return 0;
    }
    return 1;
}

/* ---- autolearn ----------------------------------------------------------- */

typedef struct fb_learn {
    filter_bayes_t *fb;
    bool spam;
    int64_t account;
    char log_id[96];
} fb_learn_t;

static void fb_learn_cb(void *ctx, int status, const char *outcome, const char *error)
{
    fb_learn_t *l = ctx;

    if (status == OSP_STORE_OK) {
        osp_info("%s: bayes autolearn account=%lld class=%s result=%s", l->log_id,
                 (long long)l->account, l->spam ? "spam" : "ham", outcome ? outcome : "?");
    } else {
        l->fb->stats.learn_failures++;
        osp_info("%s: bayes autolearn account=%lld class=%s failed: %s", l->log_id,
                 (long long)l->account, l->spam ? "spam" : "ham", error ? error : "?");
    }
    free(l);
}

enum osp_bayes_autolearn filter_bayes_autolearn(filter_bayes_t *fb, int64_t account,
                                                const osp_bayes_tokens_t *t,
                                                double rules_score, double prob,
                                                const char *log_id)
{
    enum osp_bayes_autolearn d;
    uint8_t key[OSP_BAYES_KEY_LEN];
    fb_learn_t *l;
    const char *error = NULL;

    if (!fb->conf.autolearn || prob < 0 || t->n == 0 || fb->st == NULL)
        return OSP_BAYES_LEARN_NONE;
    d = osp_bayes_autolearn(&fb->conf.params, rules_score, prob);
    if (d == OSP_BAYES_LEARN_NONE)
        return d;
    osp_bayes_message_key(t, key);
    l = osp_calloc(1, sizeof(*l));
    l->fb = fb;
    l->spam = d == OSP_BAYES_LEARN_SPAM;
    l->account = account;
    osp_strlcpy(l->log_id, log_id ? log_id : "-", sizeof(l->log_id));
    if (osp_store_bayes_train(fb->st, account, key, l->spam, t->hash, t->n, 0, fb_learn_cb, l,
                              &error) == NULL) {
        fb->stats.learn_failures++;
        osp_info("%s: bayes autolearn account=%lld failed: %s", l->log_id, (long long)account,
                 error ? error : "?");
        free(l);
        return d;
    }
    if (l->spam)
        fb->stats.learned_spam++;
    else
        fb->stats.learned_ham++;
    return d;
}
