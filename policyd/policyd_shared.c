/* policyd_shared: rate-limit counts shared through the database. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_ratelimit.h"
#include "policyd_shared.h"

#define SH_MAX_BATCH 5000         /* keys per flush; the rest go next time */
#define SH_REFRESH_MS 60000       /* keys checked this recently are read back */
#define SH_MAX_BUCKETS 262144

typedef struct sh_rec {
    struct sh_rec *next;
    uint64_t h;
    char *dbkey;                  /* owned: "RULE|KEY", non-printable bytes as %XX */
    uint64_t window_ms;
    uint64_t pending, inflight;   /* counted here: not flushed yet, being flushed */
    int64_t win_start;            /* Unix ms of the window below; -1: none */
    uint64_t own_cur, cluster_cur, others_prev;
    int64_t last_used;            /* Unix ms */
} sh_rec_t;

struct policyd_shared {
    bool enabled;
    uint64_t interval_ms, timeout_ms;
    size_t max_keys;
    pthread_mutex_t mu;
    sh_rec_t **buckets;
    size_t nbuckets, count;
    bool full_warned;
    sh_rec_t **batch;             /* owned array of borrowed records */
    osp_store_rate_item_t *items;
    size_t nbatch;
    /* Loop side. */
    uv_timer_t timer;
    bool timer_ok, stopping;
    osp_store_t *st;
    osp_store_req_t *req;
    bool failing;                 /* last flush failed (logged once) */
};

static int64_t sh_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

policyd_shared_t *policyd_shared_create(const osp_config_t *cfg)
{
    policyd_shared_t *sh = osp_calloc(1, sizeof(*sh));

    pthread_mutex_init(&sh->mu, NULL);
    sh->enabled = osp_config_bool(cfg, "policyd_rate_share");
    sh->interval_ms = (uint64_t)osp_config_duration_ms(cfg, "policyd_rate_share_interval");
    sh->timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "database_query_timeout");
    sh->max_keys = (size_t)osp_config_int(cfg, "policyd_rate_limit_max_keys");
    sh->nbuckets = 1024;
    while (sh->nbuckets < sh->max_keys && sh->nbuckets < SH_MAX_BUCKETS)
        sh->nbuckets *= 2;
    sh->buckets = osp_calloc(sh->nbuckets, sizeof(*sh->buckets));
    sh->batch = osp_calloc(SH_MAX_BATCH, sizeof(*sh->batch));
    sh->items = osp_calloc(SH_MAX_BATCH, sizeof(*sh->items));
    return sh;
}

bool policyd_shared_enabled(const policyd_shared_t *sh)
{
    return sh && sh->enabled;
}

void policyd_shared_free(policyd_shared_t **shp)
{
    policyd_shared_t *sh = *shp;
    size_t b;

    if (sh == NULL)
        return;
    for (b = 0; b < sh->nbuckets; b++) {
        sh_rec_t *r = sh->buckets[b], *next;
        for (; r; r = next) {
            next = r->next;
            free(r->dbkey);
            free(r);
        }
    }
    free(sh->buckets);
    free(sh->batch);
    free(sh->items);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
    *shp = NULL;
}

static char *sh_dbkey(const char *rule, const char *key, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    osp_buf_t b;
    size_t i;
    char *s;

    osp_buf_init(&b, 4096);
    (void)osp_buf_append_str(&b, rule);
    (void)osp_buf_append_char(&b, '|');
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x21 || c > 0x7e || c == '%') {
            (void)osp_buf_append_char(&b, '%');
            (void)osp_buf_append_char(&b, hex[c >> 4]);
            (void)osp_buf_append_char(&b, hex[c & 15]);
        } else {
            (void)osp_buf_append_char(&b, (char)c);
        }
    }
    s = osp_buf_steal(&b);
    osp_buf_close(&b);
    return s;
}

/* The record of (rule, key), created if there is room; NULL if not.  Locked. */
static sh_rec_t *sh_get(policyd_shared_t *sh, const char *rule, const char *key, size_t len,
                        uint64_t window_ms)
{
    char *k = sh_dbkey(rule, key, len);
    uint64_t h = osp_ratelimit_hash(k, strlen(k));
    sh_rec_t **bp = &sh->buckets[h & (sh->nbuckets - 1)], *r;

    for (r = *bp; r; r = r->next)
        if (r->h == h && strcmp(r->dbkey, k) == 0) {
            free(k);
            return r;
        }
    if (sh->count >= sh->max_keys) {
        if (!sh->full_warned)
            osp_warn("shared rate counters: %zu keys (policyd_rate_limit_max_keys); new keys "
                     "are limited locally only until old ones expire", sh->count);
        sh->full_warned = true;
        free(k);
        return NULL;
    }
    r = osp_calloc(1, sizeof(*r));
    r->h = h;
    r->dbkey = k;
    r->window_ms = window_ms;
    r->win_start = -1;
    r->next = *bp;
    *bp = r;
    sh->count++;
    return r;
}

/* Move the record to the window containing now. */
static void sh_roll(sh_rec_t *r, int64_t now)
{
    int64_t w = (int64_t)r->window_ms, ws = now - now % w;

    if (r->win_start == ws)
        return;
    if (r->win_start >= 0 && r->win_start == ws - w)
        r->others_prev = r->cluster_cur > r->own_cur ? r->cluster_cur - r->own_cur : 0;
    else
        r->others_prev = 0;
    r->own_cur = r->cluster_cur = 0;
    r->win_start = ws;
}

void policyd_shared_count(void *ctx, const char *rule, const char *key, size_t len,
                          uint64_t window_ms, uint64_t n)
{
    policyd_shared_t *sh = ctx;
    sh_rec_t *r;

    pthread_mutex_lock(&sh->mu);
    r = sh_get(sh, rule, key, len, window_ms);
    if (r) {
        r->pending += n;
        r->last_used = sh_now();
    }
    pthread_mutex_unlock(&sh->mu);
}

uint64_t policyd_shared_remote_at(policyd_shared_t *sh, const char *rule, const char *key,
                                  size_t len, uint64_t window_ms, int64_t now)
{
    sh_rec_t *r;
    uint64_t others = 0;

    pthread_mutex_lock(&sh->mu);
    r = sh_get(sh, rule, key, len, window_ms);
    if (r) {
        int64_t left;
        sh_roll(r, now);
        left = r->win_start + (int64_t)r->window_ms - now;   /* 1 .. window */
        others = r->cluster_cur > r->own_cur ? r->cluster_cur - r->own_cur : 0;
        others += (uint64_t)((double)r->others_prev * (double)left / (double)r->window_ms);
        r->last_used = now;
    }
    pthread_mutex_unlock(&sh->mu);
    return others;
}

uint64_t policyd_shared_remote(void *ctx, const char *rule, const char *key, size_t len,
                               uint64_t window_ms)
{
    return policyd_shared_remote_at(ctx, rule, key, len, window_ms, sh_now());
}

void policyd_shared_hooks(policyd_shared_t *sh, policyd_rate_share_t *share_r)
{
    memset(share_r, 0, sizeof(*share_r));
    if (!policyd_shared_enabled(sh))
        return;
    share_r->count = policyd_shared_count;
    share_r->remote = policyd_shared_remote;
    share_r->ctx = sh;
}

static int sh_batch_cmp(const void *a, const void *b)
{
    const sh_rec_t *const *x = a, *const *y = b;

    return strcmp((*x)->dbkey, (*y)->dbkey);
}

size_t policyd_shared_collect(policyd_shared_t *sh, int64_t now,
                              const osp_store_rate_item_t **items_r)
{
    size_t b, i;

    pthread_mutex_lock(&sh->mu);
    if (sh->nbatch)
        osp_panic("policyd_shared_collect: a flush is in flight");
    for (b = 0; b < sh->nbuckets; b++) {
        sh_rec_t **pp = &sh->buckets[b];
        while (*pp) {
            sh_rec_t *r = *pp;
            sh_roll(r, now);
            if (r->pending == 0 && now - r->last_used > 2 * (int64_t)r->window_ms) {
                *pp = r->next;
                free(r->dbkey);
                free(r);
                sh->count--;
                continue;
            }
            if ((r->pending > 0 || now - r->last_used <= SH_REFRESH_MS) &&
                sh->nbatch < SH_MAX_BATCH) {
                r->inflight = r->pending;
                r->pending = 0;
                sh->batch[sh->nbatch++] = r;
            }
            pp = &r->next;
        }
    }
    if (sh->count < sh->max_keys)
        sh->full_warned = false;
    qsort(sh->batch, sh->nbatch, sizeof(*sh->batch), sh_batch_cmp);
    for (i = 0; i < sh->nbatch; i++) {
        sh->items[i].key = sh->batch[i]->dbkey;
        sh->items[i].window_start_ms = sh->batch[i]->win_start;
        sh->items[i].window_ms = (int64_t)sh->batch[i]->window_ms;
        sh->items[i].n = (int64_t)sh->batch[i]->inflight;
    }
    *items_r = sh->items;
    i = sh->nbatch;
    pthread_mutex_unlock(&sh->mu);
    return i;
}

void policyd_shared_flushed(policyd_shared_t *sh, int status, const int64_t *counts, size_t n)
{
    size_t i;

    pthread_mutex_lock(&sh->mu);
    for (i = 0; i < sh->nbatch; i++) {
        sh_rec_t *r = sh->batch[i];
        if (status == OSP_STORE_OK && i < n && counts[i] >= 0) {
            if (r->win_start == sh->items[i].window_start_ms) {
                r->own_cur += r->inflight;
                r->cluster_cur = (uint64_t)counts[i];
            }
        } else {
            r->pending += r->inflight;   /* next time */
        }
        r->inflight = 0;
    }
    sh->nbatch = 0;
    pthread_mutex_unlock(&sh->mu);
}

size_t policyd_shared_keys(policyd_shared_t *sh)
{
    size_t n;

    pthread_mutex_lock(&sh->mu);
    n = sh->count;
    pthread_mutex_unlock(&sh->mu);
    return n;
}

/* ---- loop side ------------------------------------------------------------ */

static void sh_done_cb(void *ctx, int status, const int64_t *counts, size_t n, const char *error)
{
    policyd_shared_t *sh = ctx;

    sh->req = NULL;
    if (status != OSP_STORE_OK) {
        if (!sh->failing)
            osp_warn("shared rate counters: flush failed (%s); limiting locally until the "
                     "database answers", error ? error : "?");
        sh->failing = true;
    } else if (sh->failing) {
        osp_info("shared rate counters: flushing again");
        sh->failing = false;
    }
    policyd_shared_flushed(sh, status, counts, n);
}

static void sh_timer_cb(uv_timer_t *t)
{
    policyd_shared_t *sh = t->data;
    const osp_store_rate_item_t *items;
    const char *error = NULL;
    size_t n;

    if (sh->req || sh->stopping || sh->st == NULL)
        return;
    n = policyd_shared_collect(sh, sh_now(), &items);
    if (n == 0) {
        policyd_shared_flushed(sh, OSP_STORE_OK, NULL, 0);
        return;
    }
    sh->req = osp_store_rate_hit(sh->st, items, n, sh->timeout_ms, sh_done_cb, sh, &error);
    if (sh->req == NULL)
        sh_done_cb(sh, OSP_STORE_TEMPFAIL, NULL, 0, error);
}

void policyd_shared_start(policyd_shared_t *sh, uv_loop_t *loop, osp_store_t *st)
{
    sh->st = st;
    if (uv_timer_init(loop, &sh->timer) != 0)
        osp_fatal("policyd_shared_start: uv_timer_init failed");
    sh->timer_ok = true;
    sh->timer.data = sh;
    (void)uv_timer_start(&sh->timer, sh_timer_cb, sh->interval_ms, sh->interval_ms);
}

void policyd_shared_stop(policyd_shared_t *sh)
{
    if (sh == NULL || sh->stopping)
        return;
    sh->stopping = true;
    if (sh->req) {
        osp_store_cancel(&sh->req);
        policyd_shared_flushed(sh, OSP_STORE_TEMPFAIL, NULL, 0);
    }
    if (sh->timer_ok)
        uv_close((uv_handle_t *)&sh->timer, NULL);
    sh->st = NULL;
}
