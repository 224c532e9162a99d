/* policyd_greylist: the triplet table, its state machine, and the check. */
#include "config.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "osp_ratelimit.h"
#include "policyd_greylist.h"

enum { GL_PENDING = 0, GL_PASSED = 1 };

/* Triplet: t1 first attempt, t2 last seen, n state.
 * Network: t1 allowed until (0: not allowed), t2 last pass or use, n passes. */
typedef struct gl_entry {
    uint64_t key;
    uint64_t t1, t2;
    uint32_t next;                /* chain; 0: end (entry 0 is never used) */
    uint32_t n;
} gl_entry_t;

typedef struct gl_table {
    uint32_t *buckets;            /* owned; nbuckets, a power of two */
    size_t nbuckets;
    gl_entry_t *e;                /* owned; max + 1, touched as used */
    size_t max, high, count;      /* high: entries ever handed out */
    uint32_t free_head;
} gl_table_t;

struct policyd_greylist {
    policyd_greylist_conf_t conf;
    pthread_mutex_t mu;
    gl_table_t triplets, nets;
    uint64_t last_expire_ms;
    bool full_warned;
};

/* ---- table ---------------------------------------------------------------- */

static void gl_init(gl_table_t *t, size_t max)
{
    size_t nb = 1024;

    while (nb < max)
        nb *= 2;
    memset(t, 0, sizeof(*t));
    t->nbuckets = nb;
    t->buckets = osp_calloc(nb, sizeof(*t->buckets));
    t->max = max;
    t->e = osp_calloc(max + 1, sizeof(*t->e));
}

static void gl_close(gl_table_t *t)
{
    OSP_FREE(&t->buckets);
    OSP_FREE(&t->e);
}

static uint32_t gl_find(const gl_table_t *t, uint64_t key)
{
    uint32_t i;

    for (i = t->buckets[key & (t->nbuckets - 1)]; i; i = t->e[i].next)
        if (t->e[i].key == key)
            return i;
    return 0;
}

/* A new zeroed entry for key, or 0 if the table is full. */
static uint32_t gl_insert(gl_table_t *t, uint64_t key)
{
    uint32_t i;
    size_t b = key & (t->nbuckets - 1);

    if (t->free_head) {
        i = t->free_head;
        t->free_head = t->e[i].next;
    } else if (t->high < t->max) {
        i = (uint32_t)++t->high;
    } else {
        return 0;
    }
    memset(&t->e[i], 0, sizeof(t->e[i]));
    t->e[i].key = key;
    t->e[i].next = t->buckets[b];
    t->buckets[b] = i;
    t->count++;
    return i;
}

typedef bool (*gl_dead_fn)(const gl_entry_t *e, const policyd_greylist_conf_t *c, uint64_t now);

static size_t gl_sweep(gl_table_t *t, gl_dead_fn dead, const policyd_greylist_conf_t *c,
                       uint64_t now)
{
    size_t b, n = 0;

    for (b = 0; b < t->nbuckets; b++) {
        uint32_t *pp = &t->buckets[b];
        while (*pp) {
            uint32_t i = *pp;
            if (dead(&t->e[i], c, now)) {
                *pp = t->e[i].next;
                t->e[i].next = t->free_head;
                t->free_head = i;
                t->count--;
                n++;
            } else {
                pp = &t->e[i].next;
            }
        }
    }
    return n;
}

/*
 * Time since t, 0 if t is later than now: requests carry the time they
 * started (DNS checks may run seconds before greylisting), so another
 * worker can have stored a later time already.
 */
static uint64_t gl_age(uint64_t now, uint64_t t)
{
    return now > t ? now - t : 0;
}

static bool gl_triplet_dead(const gl_entry_t *e, const policyd_greylist_conf_t *c, uint64_t now)
{
    if (e->n == GL_PENDING)
        return now > e->t1 + c->retry_window_ms;
    return gl_age(now, e->t2) > c->pass_lifetime_ms;
}

static bool gl_net_dead(const gl_entry_t *e, const policyd_greylist_conf_t *c, uint64_t now)
{
    /* Passes are remembered as long as a passed triplet could be. */
    uint64_t keep = c->pass_lifetime_ms > c->auto_allow_lifetime_ms ? c->pass_lifetime_ms
                                                                     : c->auto_allow_lifetime_ms;
    return gl_age(now, e->t2) > keep;
}

/* ---- greylist ------------------------------------------------------------- */

policyd_greylist_t *policyd_greylist_create(const policyd_greylist_conf_t *conf)
{
    policyd_greylist_t *g = osp_calloc(1, sizeof(*g));
    size_t nmax = conf->max_entries / 4 < 1024 ? 1024 : conf->max_entries / 4;

    g->conf = *conf;
    pthread_mutex_init(&g->mu, NULL);
    gl_init(&g->triplets, conf->max_entries);
    gl_init(&g->nets, nmax);
    return g;
}

void policyd_greylist_free(policyd_greylist_t **gp)
{
    policyd_greylist_t *g = *gp;

    if (g == NULL)
        return;
    gl_close(&g->triplets);
    gl_close(&g->nets);
    pthread_mutex_destroy(&g->mu);
    free(g);
    *gp = NULL;
}

bool policyd_greylist_defers(enum policyd_grey r)
{
    return r == POLICYD_GREY_NEW || r == POLICYD_GREY_EARLY || r == POLICYD_GREY_EXPIRED;
}

const char *policyd_greylist_result_name(enum policyd_grey r)
{
    switch (r) {
    case POLICYD_GREY_NEW: return "new";
    case POLICYD_GREY_EARLY: return "early";
    case POLICYD_GREY_EXPIRED: return "expired";
    case POLICYD_GREY_PASSED: return "passed";
    case POLICYD_GREY_KNOWN: return "known";
    case POLICYD_GREY_AUTO: return "auto_allowed";
    case POLICYD_GREY_FULL: return "table_full";
    case POLICYD_GREY_SKIP: return "skipped";
    }
    osp_panic("policyd_greylist_result_name: %d", (int)r);
}

/* Append s lower-cased (at most 512 bytes) and a NUL separator. */
static void gl_key_part(osp_buf_t *b, const char *s)
{
    size_t i;

    for (i = 0; s[i] && i < 512; i++)
        (void)osp_buf_append_char(b, (char)tolower((unsigned char)s[i]));
    (void)osp_buf_append_char(b, '\0');
}

/* Expire now if the last sweep is older than a second (table full). */
static void gl_expire_locked(policyd_greylist_t *g, uint64_t now, size_t *n)
{
    *n += gl_sweep(&g->triplets, gl_triplet_dead, &g->conf, now);
    *n += gl_sweep(&g->nets, gl_net_dead, &g->conf, now);
    g->last_expire_ms = now;
}

enum policyd_grey policyd_greylist_check(policyd_greylist_t *g, const char *client_address,
                                         const char *sender, const char *recipient,
                                         uint64_t now, uint64_t *wait_ms_r)
{
    const policyd_greylist_conf_t *c = &g->conf;
    osp_ip_t ip;
    osp_buf_t k;
    uint64_t tkey, nkey;
    uint32_t ti, ni;
    enum policyd_grey r;
    size_t dummy = 0;

    if (wait_ms_r)
        *wait_ms_r = 0;
    if (client_address == NULL || osp_ip_parse(client_address, &ip) < 0)
        return POLICYD_GREY_SKIP;
    (void)osp_ip_unmap(&ip);
    if (ip.family == OSP_IP_V4)
        ip.addr[3] = 0;
    else
        memset(ip.addr + 8, 0, 8);
    osp_buf_init(&k, 1200);
    (void)osp_buf_append(&k, &ip, sizeof(ip));
    nkey = osp_ratelimit_hash(k.data, k.len);
    (void)osp_buf_append_char(&k, '\0');
    gl_key_part(&k, sender && *sender ? sender : "<>");
    gl_key_part(&k, recipient ? recipient : "");
    tkey = osp_ratelimit_hash(k.data, k.len);
    osp_buf_close(&k);

    pthread_mutex_lock(&g->mu);
    ni = gl_find(&g->nets, nkey);
    if (ni && g->nets.e[ni].t1 && now <= g->nets.e[ni].t1) {
        g->nets.e[ni].t2 = now;
        g->nets.e[ni].t1 = now + c->auto_allow_lifetime_ms;
        r = POLICYD_GREY_AUTO;
        goto out;
    }
    ti = gl_find(&g->triplets, tkey);
    if (ti == 0) {
        ti = gl_insert(&g->triplets, tkey);
        if (ti == 0 && gl_age(now, g->last_expire_ms) >= 1000) {
            gl_expire_locked(g, now, &dummy);
            ti = gl_insert(&g->triplets, tkey);
        }
        if (ti == 0) {
            if (!g->full_warned)
                osp_warn("greylist table full (policyd_greylist_max_entries = %zu): new "
                         "triplets pass untracked until old ones expire", c->max_entries);
            g->full_warned = true;
            r = POLICYD_GREY_FULL;
            goto out;
        }
        g->full_warned = false;
        g->triplets.e[ti].n = GL_PENDING;
        g->triplets.e[ti].t1 = g->triplets.e[ti].t2 = now;
        if (wait_ms_r)
            *wait_ms_r = c->delay_ms;
        r = POLICYD_GREY_NEW;
        goto out;
    }
    {
        gl_entry_t *e = &g->triplets.e[ti];
        if (e->n == GL_PASSED) {
            if (gl_age(now, e->t2) <= c->pass_lifetime_ms) {
                if (now > e->t2)
                    e->t2 = now;
                r = POLICYD_GREY_KNOWN;
            } else {
                e->n = GL_PENDING;
                e->t1 = e->t2 = now;
                if (wait_ms_r)
                    *wait_ms_r = c->delay_ms;
                r = POLICYD_GREY_NEW;
            }
            goto out;
        }
        e->t2 = now;
        if (now < e->t1 + c->delay_ms) {
            if (wait_ms_r)
                *wait_ms_r = e->t1 + c->delay_ms - now;
            r = POLICYD_GREY_EARLY;
            goto out;
        }
        if (now > e->t1 + c->retry_window_ms) {
            e->t1 = now;
            if (wait_ms_r)
                *wait_ms_r = c->delay_ms;
            r = POLICYD_GREY_EXPIRED;
            goto out;
        }
        e->n = GL_PASSED;
        r = POLICYD_GREY_PASSED;
        if (ni == 0)
            ni = gl_insert(&g->nets, nkey);
        if (ni) {
            gl_entry_t *ne = &g->nets.e[ni];
            ne->t2 = now;
            ne->n++;
            if (c->auto_allow_count && ne->n >= c->auto_allow_count)
                ne->t1 = now + c->auto_allow_lifetime_ms;
        }
    }
out:
    pthread_mutex_unlock(&g->mu);
    return r;
}

size_t policyd_greylist_expire(policyd_greylist_t *g, uint64_t now_ms)
{
    size_t n = 0;

    pthread_mutex_lock(&g->mu);
    gl_expire_locked(g, now_ms, &n);
    pthread_mutex_unlock(&g->mu);
    return n;
}

size_t policyd_greylist_count(policyd_greylist_t *g)
{
    size_t n;

    pthread_mutex_lock(&g->mu);
    n = g->triplets.count;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* ---- the check ------------------------------------------------------------ */

struct policyd_greycheck {
    bool enabled;
    policyd_greylist_t *g;        /* owned; NULL when disabled */
    char *action;                 /* owned: "DEFER_IF_PERMIT 4.7.1 TEXT" */
};

policyd_greycheck_t *policyd_greycheck_create(const osp_config_t *cfg, osp_buf_t *errors)
{
    policyd_greycheck_t *gc = osp_calloc(1, sizeof(*gc));
    policyd_greylist_conf_t conf;
    const char *text = osp_config_str(cfg, "policyd_greylist_text");
    osp_buf_t a;
    char err[256];
    size_t i;

    gc->enabled = osp_config_bool(cfg, "policyd_greylist");
    for (i = 0; text[i]; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            (void)osp_buf_printf(errors, "parameter \"policyd_greylist_text\": control "
                                 "character in text\n");
            policyd_greycheck_free(&gc);
            return NULL;
        }
    osp_buf_init(&a, 1024);
    (void)osp_buf_printf(&a, "DEFER_IF_PERMIT 4.7.1 %s", text);
    if (policy_action_check(osp_buf_cstr(&a), err, sizeof(err)) < 0) {
        (void)osp_buf_printf(errors, "parameter \"policyd_greylist_text\": %s\n", err);
        osp_buf_close(&a);
        policyd_greycheck_free(&gc);
        return NULL;
    }
    gc->action = osp_buf_steal(&a);
    osp_buf_close(&a);
    memset(&conf, 0, sizeof(conf));
    conf.delay_ms = (uint64_t)osp_config_duration_ms(cfg, "policyd_greylist_delay");
    conf.retry_window_ms = (uint64_t)osp_config_duration_ms(cfg, "policyd_greylist_retry_window");
    conf.pass_lifetime_ms = (uint64_t)osp_config_duration_ms(cfg,
                                                             "policyd_greylist_pass_lifetime");
    conf.auto_allow_count = (unsigned)osp_config_int(cfg, "policyd_greylist_auto_allow_count");
    conf.auto_allow_lifetime_ms =
        (uint64_t)osp_config_duration_ms(cfg, "policyd_greylist_auto_allow_lifetime");
    conf.max_entries = (size_t)osp_config_int(cfg, "policyd_greylist_max_entries");
    if (conf.retry_window_ms <= conf.delay_ms) {
        (void)osp_buf_printf(errors, "parameter \"policyd_greylist_retry_window\": must be "
                             "longer than policyd_greylist_delay\n");
        policyd_greycheck_free(&gc);
        return NULL;
    }
    if (gc->enabled)
        gc->g = policyd_greylist_create(&conf);
    return gc;
}

void policyd_greycheck_free(policyd_greycheck_t **gcp)
{
    policyd_greycheck_t *gc = *gcp;

    if (gc == NULL)
        return;
    policyd_greylist_free(&gc->g);
    free(gc->action);
    free(gc);
    *gcp = NULL;
}

bool policyd_greycheck_enabled(const policyd_greycheck_t *gc)
{
    return gc && gc->g;
}

void policyd_greycheck_expire(policyd_greycheck_t *gc, uint64_t now_ms)
{
    if (gc && gc->g)
        (void)policyd_greylist_expire(gc->g, now_ms);
}

enum policyd_step policyd_greycheck_run(policyd_eval_t *ev, void *ctx)
{
    policyd_greycheck_t *gc = ctx;
    enum policyd_grey r;
    uint64_t wait = 0;
    const char *rcpt;

    if (gc == NULL || gc->g == NULL)
        return POLICYD_NEXT;
    if (strcasecmp(policy_request_get(ev->req, POLICY_A_PROTOCOL_STATE), "RCPT") != 0)
        return POLICYD_NEXT;
    rcpt = policy_request_get(ev->req, POLICY_A_RECIPIENT);
    if (*rcpt == '\0')
        return POLICYD_NEXT;
    r = policyd_greylist_check(gc->g, policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS),
                               policy_request_get(ev->req, POLICY_A_SENDER), rcpt, ev->now_ms,
                               &wait);
    if (!policyd_greylist_defers(r)) {
        if (r != POLICYD_GREY_KNOWN && r != POLICYD_GREY_AUTO)
            osp_debug(1, "greylist: %s", policyd_greylist_result_name(r));
        return POLICYD_NEXT;
    }
    policyd_eval_decide(ev, "greylist", gc->action, false,
                        "greylisted (%s), a retry passes after %llus",
                        policyd_greylist_result_name(r),
                        (unsigned long long)((wait + 999) / 1000));
    return POLICYD_STOP;
}
