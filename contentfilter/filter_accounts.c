/* filter_accounts: recipient settings from the store, with a TTL cache. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_store.h"
#include "filter_accounts.h"

#define FA_BUCKETS 1024

/* ---- settings JSON: a small reader for one flat object ---------------- */

static const char *fa_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* A JSON string at p (after the quote is checked); decoded into out (may be NULL). */
static const char *fa_string(const char *p, osp_buf_t *out)
{
    if (*p != '"')
        return NULL;
    for (p++; *p && *p != '"'; p++) {
        char c = *p;
        if ((unsigned char)c < 0x20)
            return NULL;
        if (c == '\\') {
            p++;
            switch (*p) {
            case '"': case '\\': case '/': c = *p; break;
            case 'b': case 'f': case 'n': case 'r': case 't': c = ' '; break;
            case 'u': {
                int k;
                unsigned v = 0;
                for (k = 1; k <= 4; k++) {
                    if (!isxdigit((unsigned char)p[k]))
                        return NULL;
                    v = v * 16 + (unsigned)(isdigit((unsigned char)p[k])
                                                ? p[k] - '0'
                                                : (tolower((unsigned char)p[k]) - 'a' + 10));
                }
                p += 4;
                c = v >= 0x20 && v < 0x7f ? (char)v : '?';
                break;
            }
            default:
                return NULL;
            }
        }
        if (out)
            osp_buf_append_char(out, c);
    }
    return *p == '"' ? p + 1 : NULL;
}

/* Skip any JSON value (bounded nesting). */
static const char *fa_skip(const char *p, int depth)
{
    p = fa_ws(p);
    if (depth > 32)
        return NULL;
    if (*p == '"')
        return fa_string(p, NULL);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = fa_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = fa_string(fa_ws(p), NULL);
                if (p == NULL || *(p = fa_ws(p)) != ':')
                    return NULL;
                p++;
            }
            p = fa_skip(p, depth + 1);
            if (p == NULL)
                return NULL;
            p = fa_ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            return *p == close ? p + 1 : NULL;
        }
    }
    if (*p == '\0')
        return NULL;
    while (*p && strchr(",}] \t\r\n", *p) == NULL)
        p++;
    return p;
}

static bool fa_number(const char *p, const char *end, double *v_r)
{
    char tmp[64];
    char *e;
    size_t n = (size_t)(end - p);
    double v;

    if (*p == '"') {     /* a number given as a string is accepted too */
        p++;
        n = (size_t)(end - p);
        if (n == 0 || p[n - 1] != '"')
            return false;
        n--;
    }
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    errno = 0;
    v = strtod(tmp, &e);
    if (*e != '\0' || errno || !isfinite(v))
        return false;
    *v_r = v;
    return true;
}

int filter_settings_parse(const char *json, filter_rcpt_settings_t *s)
{
    filter_rcpt_settings_t r = *s;
    const char *p = fa_ws(json ? json : "");
    osp_buf_t key, val;
    int rc = -1;

    if (*p != '{')
        return -1;
    osp_buf_init(&key, 4096);
    osp_buf_init(&val, 4096);
    p = fa_ws(p + 1);
    if (*p == '}') {
        rc = 0;
        goto out;
    }
    for (;;) {
        const char *vstart, *vend;
        osp_buf_reset(&key);
        p = fa_string(fa_ws(p), &key);
        if (p == NULL || *(p = fa_ws(p)) != ':')
            goto out;
        vstart = fa_ws(p + 1);
        vend = fa_skip(vstart, 0);
        if (vend == NULL)
            goto out;
        {
            const char *k = osp_buf_cstr(&key);
            double d;
            if (strcmp(k, "spam_tag_score") == 0 && fa_number(vstart, vend, &d)) {
                r.tag_score = d;
            } else if (strcmp(k, "spam_quarantine_score") == 0 && fa_number(vstart, vend, &d)) {
                r.quarantine_score = d;
            } else if (strcmp(k, "spam_subject_prefix") == 0 && *vstart == '"') {
                osp_buf_reset(&val);
                if (fa_string(vstart, &val) && val.len < sizeof(r.subject_prefix))
                    osp_strlcpy(r.subject_prefix, osp_buf_cstr(&val), sizeof(r.subject_prefix));
            } else if (strcmp(k, "spam_action") == 0 && *vstart == '"') {
                enum filter_action a;
                osp_buf_reset(&val);
                if (fa_string(vstart, &val) &&
                    filter_action_parse(osp_buf_cstr(&val), &a) == 0)
                    r.spam_action = a;
            }
        }
        p = fa_ws(vend);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}')
            rc = 0;
        goto out;
    }
out:
    osp_buf_close(&key);
    osp_buf_close(&val);
    if (rc == 0)
        *s = r;
    return rc;
}

/* ---- the cache -------------------------------------------------------- */

typedef struct fa_entry {
    struct fa_entry *next;
    char *addr;                     /* owned, lower case */
    filter_rcpt_settings_t s;
    uint64_t expires_ms;
} fa_entry_t;

struct filter_accounts {
    uv_loop_t *loop;
    osp_store_t *st;                /* borrowed; NULL: defaults only */
    filter_rcpt_settings_t defaults;
    uint64_t ttl_ms, timeout_ms;
    size_t max_entries, nentries;
    fa_entry_t *buckets[FA_BUCKETS];
    unsigned pending;               /* lookups in flight */
    filter_accounts_stats_t stats;
};

static uint32_t fa_hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h % FA_BUCKETS;
}

static char *fa_lower(const char *s)
{
    char *c = osp_strdup(s), *p;

    for (p = c; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return c;
}

static fa_entry_t *fa_find(filter_accounts_t *fa, const char *lower)
{
    fa_entry_t *e;

    for (e = fa->buckets[fa_hash(lower)]; e; e = e->next)
        if (strcmp(e->addr, lower) == 0)
            return e;
    return NULL;
}

static void fa_clear(filter_accounts_t *fa)
{
    size_t i;

    for (i = 0; i < FA_BUCKETS; i++) {
        fa_entry_t *e = fa->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e->addr);
            free(e);
        }
        fa->buckets[i] = NULL;
    }
    fa->nentries = 0;
}

/* Drop expired entries; if still full, everything (simple and rare). */
static void fa_make_room(filter_accounts_t *fa)
{
    uint64_t now = uv_now(fa->loop);
    size_t i;

    if (fa->nentries < fa->max_entries)
        return;
    for (i = 0; i < FA_BUCKETS; i++) {
        fa_entry_t **pp = &fa->buckets[i];
        while (*pp) {
            fa_entry_t *e = *pp;
            if (e->expires_ms <= now) {
                *pp = e->next;
                free(e->addr);
                free(e);
                fa->nentries--;
            } else {
                pp = &e->next;
            }
        }
    }
    if (fa->nentries >= fa->max_entries)
        fa_clear(fa);
}

static void fa_put(filter_accounts_t *fa, const char *lower, const filter_rcpt_settings_t *s)
{
    fa_entry_t *e = fa_find(fa, lower);

    if (e == NULL) {
        if (fa->max_entries == 0)
            return;
        fa_make_room(fa);
        e = osp_calloc(1, sizeof(*e));
        e->addr = osp_strdup(lower);
        e->next = fa->buckets[fa_hash(lower)];
        fa->buckets[fa_hash(lower)] = e;
        fa->nentries++;
    }
    e->s = *s;
    e->expires_ms = uv_now(fa->loop) + fa->ttl_ms;
}

/* Expire every entry; the values stay as the fallback for temporary failures. */
static void fa_expire_all(filter_accounts_t *fa)
{
    size_t i;
    fa_entry_t *e;

    for (i = 0; i < FA_BUCKETS; i++)
        for (e = fa->buckets[i]; e; e = e->next)
            e->expires_ms = 0;
}

/* NOTIFY osprey_config: the payload names the changed table (NULL: reconnected). */
static void fa_notify_cb(void *ctx, const char *channel, const char *payload)
{
    static const char *const tables[] = { "accounts", "domains", "addresses", "settings" };
    filter_accounts_t *fa = ctx;

    (void)channel;
    if (fa->st == NULL ||
        !osp_store_notify_matches(payload, tables, sizeof(tables) / sizeof(tables[0])))
        return;
    fa_expire_all(fa);
    fa->stats.invalidations++;
    osp_debug(1, "account cache: %s: %zu entries expired",
              payload ? payload : "listener reconnected", fa->nentries);
}

filter_accounts_t *filter_accounts_create(uv_loop_t *loop, struct osp_store *st,
                                          const filter_rcpt_settings_t *defaults,
                                          uint64_t ttl_ms, size_t max_entries,
                                          uint64_t timeout_ms)
{
    filter_accounts_t *fa = osp_calloc(1, sizeof(*fa));

    fa->loop = loop;
    fa->st = st;
    fa->defaults = *defaults;
    fa->defaults.account_id = -1;
    fa->defaults.source = FILTER_SETTINGS_DEFAULT;
    fa->ttl_ms = ttl_ms;
    fa->max_entries = max_entries;
    fa->timeout_ms = timeout_ms;
    if (st != NULL && osp_store_listen(st, "osprey_config", fa_notify_cb, fa) < 0)
        osp_panic("filter_accounts_create: cannot listen on osprey_config");
    return fa;
}

void filter_accounts_detach(filter_accounts_t *fa)
{
    if (fa)
        fa->st = NULL;
}

void filter_accounts_free(filter_accounts_t **fap)
{
    filter_accounts_t *fa = *fap;

    if (fa == NULL)
        return;
    if (fa->pending)
        osp_panic("filter_accounts_free: %u lookups pending", fa->pending);
    fa_clear(fa);
    free(fa);
    *fap = NULL;
}

void filter_accounts_stats(const filter_accounts_t *fa, filter_accounts_stats_t *stats_r)
{
    *stats_r = fa->stats;
    stats_r->entries = fa->nentries;
}

/* ---- resolution --------------------------------------------------------- */

typedef struct fa_lookup fa_lookup_t;
typedef struct fa_one {
    fa_lookup_t *lk;
    size_t i;
    char *lower;                    /* owned */
} fa_one_t;

struct fa_lookup {
    filter_accounts_t *fa;
    filter_rcpt_settings_t *out;    /* borrowed */
    fa_one_t *ones;                 /* owned */
    size_t nones;
    size_t pending;
    filter_accounts_done_cb *done;
    void *ctx;
};

/* Temporary failure: the last value we had, even expired, else defaults. */
static void fa_fallback(filter_accounts_t *fa, const char *lower, filter_rcpt_settings_t *out)
{
    fa_entry_t *e = fa_find(fa, lower);

    fa->stats.tempfail++;
    if (e) {
        *out = e->s;
        if (out->source == FILTER_SETTINGS_ACCOUNT)
            out->source = FILTER_SETTINGS_STALE;
        fa->stats.stale++;
    } else {
        *out = fa->defaults;
        fa->stats.defaults++;
    }
}

static void fa_one_done(fa_one_t *one)
{
    fa_lookup_t *lk = one->lk;
    filter_accounts_t *fa = lk->fa;
    size_t i;

    if (--lk->pending > 0)
        return;
    fa->pending--;
    for (i = 0; i < lk->nones; i++)
        free(lk->ones[i].lower);
    free(lk->ones);
    {
        filter_accounts_done_cb *done = lk->done;
        void *ctx = lk->ctx;
        free(lk);
        done(ctx);
    }
}

static void fa_resolved_cb(void *ctx, int status, const osp_store_recipient_t *r,
                           const char *error)
{
    fa_one_t *one = ctx;
    filter_accounts_t *fa = one->lk->fa;
    filter_rcpt_settings_t *out = &one->lk->out[one->i];

    if (status == OSP_STORE_OK && r) {
        *out = fa->defaults;
        out->account_id = r->account_id;
        out->source = FILTER_SETTINGS_ACCOUNT;
        if (filter_settings_parse(r->settings_json, out) < 0)
            osp_warn("account %lld: settings are not a JSON object; using the defaults",
                     (long long)r->account_id);
        fa_put(fa, one->lower, out);
    } else if (status == OSP_STORE_NOT_FOUND) {
        *out = fa->defaults;
        fa_put(fa, one->lower, out);
        fa->stats.defaults++;
    } else {
        osp_debug(1, "resolve %s: temporary failure: %s", one->lower, error ? error : "");
        fa_fallback(fa, one->lower, out);
    }
    fa_one_done(one);
}

int filter_accounts_resolve(filter_accounts_t *fa, const char *const *addrs, size_t n,
                            filter_rcpt_settings_t *out, filter_accounts_done_cb *done_cb,
                            void *ctx)
{
    fa_lookup_t *lk = NULL;
    uint64_t now = uv_now(fa->loop);
    size_t i;

    for (i = 0; i < n; i++) {
        char *lower;
        fa_entry_t *e;
        fa_one_t *one;
        const char *error = NULL;

        if (fa->st == NULL) {
            out[i] = fa->defaults;
            continue;
        }
        lower = fa_lower(addrs[i]);
        e = fa_find(fa, lower);
        if (e && e->expires_ms > now) {
            out[i] = e->s;
            fa->stats.hits++;
            free(lower);
            continue;
        }
        fa->stats.misses++;
        if (lk == NULL) {
            lk = osp_calloc(1, sizeof(*lk));
            lk->fa = fa;
            lk->out = out;
            lk->ones = osp_calloc(n, sizeof(*lk->ones));
            lk->done = done_cb;
            lk->ctx = ctx;
            lk->pending = 1;     /* held until every request is started */
            fa->pending++;
        }
        one = &lk->ones[lk->nones++];
        one->lk = lk;
        one->i = i;
        one->lower = lower;
        if (osp_store_resolve_recipient(fa->st, lower, fa->timeout_ms, fa_resolved_cb, one,
                                        &error) == NULL) {
            fa_fallback(fa, lower, &out[i]);
            continue;
        }
        lk->pending++;
    }
    if (lk == NULL)
        return 0;
    if (lk->pending == 1) {
        /* Nothing went out: finish now, without a callback. */
        for (i = 0; i < lk->nones; i++)
            free(lk->ones[i].lower);
        free(lk->ones);
        free(lk);
        fa->pending--;
        return 0;
    }
    lk->pending--;
    return 1;
}
