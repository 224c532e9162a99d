/* policyd_dblists: database allow/block lists in a shared read-only snapshot. */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_ratelimit.h"
#include "osp_net.h"
#include "policyd_dblists.h"

#define DB_MAX_DEPTH 64           /* account tree levels walked; deeper is a loop */

enum db_kind {
    DBK_CLIENT_NETWORK,
    DBK_CLIENT_NAME,
    DBK_HELO,
    DBK_HELO_DOMAIN,
    DBK_SENDER,
    DBK_SENDER_DOMAIN,
    DBK_RECIPIENT,
    DBK_RECIPIENT_DOMAIN,
    DBK__COUNT
};

static const char *const db_kind_names[DBK__COUNT] = {
    "client_network", "client_name", "helo", "helo_domain",
    "sender", "sender_domain", "recipient", "recipient_domain",
};

/* A string -> int64 map, open addressing, built once, then read-only. */
typedef struct db_slot {
    char *key;                    /* owned; NULL: empty */
    uint64_t hash;
    int64_t val;
} db_slot_t;

typedef struct db_map {
    db_slot_t *v;
    size_t cap, n;                /* cap: a power of two */
} db_map_t;

/* Value entries keyed by (account, list, kind, value), open addressing. */
typedef struct db_vslot {
    char *val;                    /* owned, lower case; NULL: empty */
    uint64_t h;
    int64_t account, id;
    uint8_t list, kind;
} db_vslot_t;

typedef struct db_vtab {
    db_vslot_t *v;
    size_t cap, n;                /* cap: a power of two */
} db_vtab_t;

typedef struct db_account {
    int64_t id, parent_id;
    unsigned kinds[2];            /* per list (allow, block): bit per kind with entries */
    osp_cidrset_t *nets[2];       /* allow, block; NULL: none */
} db_account_t;

struct policyd_dbsnap {
    atomic_uint refs;
    db_account_t *accounts;       /* sorted by id */
    size_t naccounts;
    db_vtab_t values;             /* (account, list, kind, value) -> entry id */
    db_map_t domains, addresses;  /* name -> account id */
    int64_t *net_ids;             /* cidrset value -> entry id */
    size_t nnet_ids;
    size_t nentries;
};

struct policyd_dblists {
    bool enabled;
    char *allow_action, *client_block_action, *sender_block_action, *recipient_block_action;
    pthread_mutex_t mu;
    policyd_dbsnap_t *cur;        /* one reference held here */
    /* Loop side. */
    uv_loop_t *loop;
    osp_store_t *st;              /* borrowed */
    osp_store_req_t *req;
    bool dirty, stopping, timer_ok;
    unsigned failures;            /* loads failed in a row (logged once) */
    uv_timer_t retry;
    uint64_t retry_ms, timeout_ms;
};

/* ---- map ------------------------------------------------------------------ */

static void db_map_grow(db_map_t *m)
{
    db_slot_t *old = m->v;
    size_t oldcap = m->cap, i;

    m->cap = m->cap ? m->cap * 2 : 64;
    m->v = osp_calloc(m->cap, sizeof(*m->v));
    for (i = 0; i < oldcap; i++) {
        size_t j;
        if (old[i].key == NULL)
            continue;
        for (j = old[i].hash & (m->cap - 1); m->v[j].key; j = (j + 1) & (m->cap - 1))
            ;
        m->v[j] = old[i];
    }
    free(old);
}

/* Insert key (copied) unless present; true if it was new. */
static bool db_map_put(db_map_t *m, const char *key, int64_t val)
{
    uint64_t h = osp_ratelimit_hash(key, strlen(key));
    size_t j;

    if ((m->n + 1) * 2 > m->cap)
        db_map_grow(m);
    for (j = h & (m->cap - 1); m->v[j].key; j = (j + 1) & (m->cap - 1))
        if (m->v[j].hash == h && strcmp(m->v[j].key, key) == 0)
            return false;
    m->v[j].key = osp_strdup(key);
    m->v[j].hash = h;
    m->v[j].val = val;
    m->n++;
    return true;
}

static bool db_map_get(const db_map_t *m, const char *key, int64_t *val_r)
{
    uint64_t h;
    size_t j;

    if (m->n == 0)
        return false;
    h = osp_ratelimit_hash(key, strlen(key));
    for (j = h & (m->cap - 1); m->v[j].key; j = (j + 1) & (m->cap - 1))
        if (m->v[j].hash == h && strcmp(m->v[j].key, key) == 0) {
            *val_r = m->v[j].val;
            return true;
        }
    return false;
}

static void db_map_close(db_map_t *m)
{
    size_t i;

    for (i = 0; i < m->cap; i++)
        free(m->v[i].key);
    OSP_FREE(&m->v);
    m->cap = m->n = 0;
}

static uint64_t db_vkey(const char *v, int64_t account, int list, int kind)
{
    uint64_t h = osp_ratelimit_hash(v, strlen(v)) ^ ((uint64_t)account * 0x9E3779B97F4A7C15ULL) ^
                 ((uint64_t)(list << 8 | kind) * 0xC2B2AE3D27D4EB4FULL);

    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 33);
}

static void db_vtab_put(db_vtab_t *t, const char *v, int64_t account, int list, int kind,
                        int64_t id)
{
    uint64_t h = db_vkey(v, account, list, kind);
    size_t j;

    if ((t->n + 1) * 2 > t->cap) {
        db_vslot_t *old = t->v;
        size_t oldcap = t->cap, i;

        t->cap = t->cap ? t->cap * 2 : 64;
        t->v = osp_calloc(t->cap, sizeof(*t->v));
        for (i = 0; i < oldcap; i++) {
            if (old[i].val == NULL)
                continue;
            for (j = old[i].h & (t->cap - 1); t->v[j].val; j = (j + 1) & (t->cap - 1))
                ;
            t->v[j] = old[i];
        }
        free(old);
    }
    for (j = h & (t->cap - 1); t->v[j].val; j = (j + 1) & (t->cap - 1))
        if (t->v[j].h == h && t->v[j].account == account && t->v[j].list == list &&
            t->v[j].kind == kind && strcmp(t->v[j].val, v) == 0)
            return;   /* a duplicate: the first one loaded stays */
    t->v[j].val = osp_strdup(v);
    t->v[j].h = h;
    t->v[j].account = account;
    t->v[j].id = id;
    t->v[j].list = (uint8_t)list;
    t->v[j].kind = (uint8_t)kind;
    t->n++;
}

static void db_vtab_close(db_vtab_t *t)
{
    size_t i;

    for (i = 0; i < t->cap; i++)
        free(t->v[i].val);
    OSP_FREE(&t->v);
    t->cap = t->n = 0;
}

/* ---- snapshot ------------------------------------------------------------- */

static void db_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static int db_account_cmp(const void *a, const void *b)
{
    const db_account_t *x = a, *y = b;

    return x->id < y->id ? -1 : x->id > y->id;
}

static db_account_t *db_account_find(const policyd_dbsnap_t *s, int64_t id)
{
    size_t lo = 0, hi = s->naccounts;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->accounts[mid].id < id)
            lo = mid + 1;
        else if (s->accounts[mid].id > id)
            hi = mid;
        else
            return &s->accounts[mid];
    }
    return NULL;
}

static int db_kind_parse(const char *kind)
{
    int i;

    for (i = 0; i < DBK__COUNT; i++)
        if (strcmp(kind, db_kind_names[i]) == 0)
            return i;
    return -1;
}

policyd_dbsnap_t *policyd_dbsnap_build(const osp_store_policy_snapshot_t *s, osp_buf_t *warnings)
{
    policyd_dbsnap_t *snap = osp_calloc(1, sizeof(*snap));
    size_t i;

    atomic_init(&snap->refs, 1);
    snap->accounts = osp_calloc(s->naccounts + 1, sizeof(*snap->accounts));
    for (i = 0; i < s->naccounts; i++) {
        snap->accounts[i].id = s->accounts[i].id;
        snap->accounts[i].parent_id = s->accounts[i].parent_id;
    }
    snap->naccounts = s->naccounts;
    qsort(snap->accounts, snap->naccounts, sizeof(*snap->accounts), db_account_cmp);
    for (i = 0; i < s->ndomains; i++) {
        char *d = osp_strdup(s->domains[i].name);
        db_lower(d);
        (void)db_map_put(&snap->domains, d, s->domains[i].account_id);
        free(d);
    }
    for (i = 0; i < s->naddresses; i++) {
        char *a = osp_strdup(s->addresses[i].name);
        db_lower(a);
        (void)db_map_put(&snap->addresses, a, s->addresses[i].account_id);
        free(a);
    }
    snap->net_ids = osp_calloc(s->nentries + 1, sizeof(*snap->net_ids));
    for (i = 0; i < s->nentries; i++) {
        const osp_store_list_entry_t *e = &s->entries[i];
        db_account_t *a = db_account_find(snap, e->account_id);
        int kind = db_kind_parse(e->kind);
        int list = strcmp(e->list, "allow") == 0 ? 0 : strcmp(e->list, "block") == 0 ? 1 : -1;
        char err[256];

        if (a == NULL || kind < 0 || list < 0) {
            (void)osp_buf_printf(warnings, "list entry %" PRId64 ": %s; skipped\n", e->id,
                                 a == NULL ? "unknown account" : "unknown kind or list");
            continue;
        }
        if (kind == DBK_CLIENT_NETWORK) {
            osp_cidr_t cidr;
            if (osp_cidr_parse(e->value, &cidr, err, sizeof(err)) < 0) {
                (void)osp_buf_printf(warnings, "list entry %" PRId64 ": %s; skipped\n", e->id,
                                     err);
                continue;
            }
            if (a->nets[list] == NULL)
                a->nets[list] = osp_cidrset_create();
            snap->net_ids[snap->nnet_ids] = e->id;
            (void)osp_cidrset_add(a->nets[list], &cidr, (uint32_t)snap->nnet_ids);
            snap->nnet_ids++;
        } else {
            char *v;
            if (strlen(e->value) > 1000) {
                (void)osp_buf_printf(warnings, "list entry %" PRId64 ": value too long; "
                                     "skipped\n", e->id);
                continue;
            }
            v = osp_strdup(e->value);
            db_lower(v);
            db_vtab_put(&snap->values, v, e->account_id, list, kind, e->id);
            free(v);
            a->kinds[list] |= 1u << kind;
        }
        snap->nentries++;
    }
    return snap;
}

void policyd_dbsnap_release(policyd_dbsnap_t **sp)
{
    policyd_dbsnap_t *s = *sp;
    size_t i;

    if (s == NULL)
        return;
    *sp = NULL;
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (i = 0; i < s->naccounts; i++) {
        osp_cidrset_free(&s->accounts[i].nets[0]);
        osp_cidrset_free(&s->accounts[i].nets[1]);
    }
    free(s->accounts);
    db_vtab_close(&s->values);
    db_map_close(&s->domains);
    db_map_close(&s->addresses);
    free(s->net_ids);
    free(s);
}

size_t policyd_dbsnap_entries(const policyd_dbsnap_t *s)
{
    return s->nentries;
}

/* Lower-cased copy of an address without a trailing dot; NULL if too long. */
static char *db_norm(const char *s)
{
    size_t n = strlen(s);
    char *c;

    if (n > 1000)
        return NULL;
    c = osp_strdup(s);
    db_lower(c);
    if (n > 1 && c[n - 1] == '.')
        c[n - 1] = '\0';
    return c;
}

int64_t policyd_dbsnap_account(const policyd_dbsnap_t *s, const char *recipient)
{
    char *r;
    const char *at;
    int64_t id = 0;

    if (recipient == NULL || *recipient == '\0' || (r = db_norm(recipient)) == NULL)
        return 0;
    if (!db_map_get(&s->addresses, r, &id)) {
        at = strrchr(r, '@');
        if (at == NULL || !db_map_get(&s->domains, at + 1, &id))
            id = 0;
    }
    free(r);
    return id;
}

static bool db_value(const policyd_dbsnap_t *s, int64_t acct, int list, int kind, const char *v,
                     int64_t *id_r)
{
    const db_vtab_t *t = &s->values;
    uint64_t h;
    size_t j;

    if (t->n == 0)
        return false;
    h = db_vkey(v, acct, list, kind);
    for (j = h & (t->cap - 1); t->v[j].val; j = (j + 1) & (t->cap - 1))
        if (t->v[j].h == h && t->v[j].account == acct && t->v[j].list == list &&
            t->v[j].kind == kind && strcmp(t->v[j].val, v) == 0) {
            *id_r = t->v[j].id;
            return true;
        }
    return false;
}

/* The domain itself, then ".parent" suffixes. */
static bool db_domain(const policyd_dbsnap_t *s, int64_t acct, int list, int kind,
                      const char *dom, int64_t *id_r)
{
    const char *d;

    if (dom == NULL || *dom == '\0')
        return false;
    if (db_value(s, acct, list, kind, dom, id_r))
        return true;
    for (d = strchr(dom, '.'); d; d = strchr(d + 1, '.'))
        if (d[1] && db_value(s, acct, list, kind, d, id_r))
            return true;
    return false;
}

typedef struct db_req {
    bool have_ip;
    osp_ip_t ip;
    char *client_name, *helo, *sender, *recipient;   /* normalized, owned; NULL: none */
    const char *sender_domain, *recipient_domain;     /* into the above */
} db_req_t;

static bool db_try(const policyd_dbsnap_t *s, const db_account_t *a, int list,
                   const db_req_t *r, policyd_dbmatch_t *m)
{
    int64_t id;
    uint32_t v;

    if (r->have_ip && a->nets[list] &&
        osp_cidrset_lookup(a->nets[list], &r->ip, &v, NULL) == OSP_CIDRSET_FOUND) {
        m->kind = db_kind_names[DBK_CLIENT_NETWORK];
        m->entry_id = v < s->nnet_ids ? s->net_ids[v] : -1;
        return true;
    }
    if ((a->kinds[list] & ~(1u << DBK_CLIENT_NETWORK)) == 0)
        return false;
#define DB_TRY(cond, k)                                                      \
    if ((a->kinds[list] & (1u << (k))) && (cond)) {                          \
        m->kind = db_kind_names[k];                                          \
        m->entry_id = id;                                                    \
        return true;                                                         \
    }
    DB_TRY(r->client_name && db_value(s, a->id, list, DBK_CLIENT_NAME, r->client_name, &id),
           DBK_CLIENT_NAME);
    DB_TRY(r->helo && db_value(s, a->id, list, DBK_HELO, r->helo, &id), DBK_HELO);
    DB_TRY(r->helo && db_domain(s, a->id, list, DBK_HELO_DOMAIN, r->helo, &id),
           DBK_HELO_DOMAIN);
    DB_TRY(r->sender && db_value(s, a->id, list, DBK_SENDER, r->sender, &id), DBK_SENDER);
    DB_TRY(r->sender_domain &&
               db_domain(s, a->id, list, DBK_SENDER_DOMAIN, r->sender_domain, &id),
           DBK_SENDER_DOMAIN);
    DB_TRY(r->recipient && db_value(s, a->id, list, DBK_RECIPIENT, r->recipient, &id),
           DBK_RECIPIENT);
    DB_TRY(r->recipient_domain &&
               db_domain(s, a->id, list, DBK_RECIPIENT_DOMAIN, r->recipient_domain, &id),
           DBK_RECIPIENT_DOMAIN);
#undef DB_TRY
    return false;
}

static const char *db_domain_of(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;

    return at && at[1] ? at + 1 : NULL;
}

enum policyd_dbresult policyd_dbsnap_lookup(const policyd_dbsnap_t *s, const policyd_dbquery_t *q,
                                            policyd_dbmatch_t *m_r)
{
    db_req_t r;
    int64_t id = policyd_dbsnap_account(s, q->recipient);
    enum policyd_dbresult res = POLICYD_DB_NONE;
    int depth;

    memset(&r, 0, sizeof(r));
    memset(m_r, 0, sizeof(*m_r));
    if (q->client_address && osp_ip_parse(q->client_address, &r.ip) == 0)
        r.have_ip = true;
    if (q->client_name && *q->client_name && strcmp(q->client_name, "unknown") != 0)
        r.client_name = db_norm(q->client_name);
    if (q->helo && *q->helo)
        r.helo = db_norm(q->helo);
    if (q->sender)
        r.sender = *q->sender ? db_norm(q->sender) : osp_strdup("<>");
    if (q->recipient && *q->recipient)
        r.recipient = db_norm(q->recipient);
    r.sender_domain = db_domain_of(r.sender);
    r.recipient_domain = db_domain_of(r.recipient);
    for (depth = 0; depth < DB_MAX_DEPTH && id >= 0; depth++) {
        const db_account_t *a = db_account_find(s, id);
        if (a == NULL)
            break;
        if (db_try(s, a, 0, &r, m_r)) {
            res = POLICYD_DB_ALLOW;
        } else if (db_try(s, a, 1, &r, m_r)) {
            res = POLICYD_DB_BLOCK;
        } else {
            id = a->parent_id;
            continue;
        }
        m_r->account_id = a->id;
        break;
    }
    free(r.client_name);
    free(r.helo);
    free(r.sender);
    free(r.recipient);
    return res;
}

/* ---- holder --------------------------------------------------------------- */

policyd_dblists_t *policyd_dblists_create(const osp_config_t *cfg, osp_buf_t *errors)
{
    policyd_dblists_t *dl = osp_calloc(1, sizeof(*dl));
    size_t before = errors->len;

    pthread_mutex_init(&dl->mu, NULL);
    dl->enabled = osp_config_bool(cfg, "policyd_database_lists");
    dl->retry_ms = (uint64_t)osp_config_duration_ms(cfg, "policyd_database_retry");
    dl->timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "database_query_timeout");
    dl->allow_action = policy_action_param(cfg, "policyd_allow_action", errors);
    dl->client_block_action = policy_action_param(cfg, "policyd_client_block_action", errors);
    dl->sender_block_action = policy_action_param(cfg, "policyd_sender_block_action", errors);
    dl->recipient_block_action = policy_action_param(cfg, "policyd_recipient_block_action", errors);
    if (errors->len != before)
        policyd_dblists_free(&dl);
    return dl;
}

bool policyd_dblists_enabled(const policyd_dblists_t *dl)
{
    return dl && dl->enabled;
}

void policyd_dblists_set(policyd_dblists_t *dl, policyd_dbsnap_t *snap)
{
    policyd_dbsnap_t *old;

    pthread_mutex_lock(&dl->mu);
    old = dl->cur;
    dl->cur = snap;
    pthread_mutex_unlock(&dl->mu);
    policyd_dbsnap_release(&old);
}

policyd_dbsnap_t *policyd_dblists_acquire(policyd_dblists_t *dl)
{
    policyd_dbsnap_t *s;

    pthread_mutex_lock(&dl->mu);
    s = dl->cur;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&dl->mu);
    return s;
}

static void db_load(policyd_dblists_t *dl);

static void db_retry_cb(uv_timer_t *t)
{
    db_load(t->data);
}

static void db_schedule_retry(policyd_dblists_t *dl)
{
    if (!dl->stopping && dl->timer_ok)
        (void)uv_timer_start(&dl->retry, db_retry_cb, dl->retry_ms, 0);
}

static void db_loaded_cb(void *ctx, int status, const osp_store_policy_snapshot_t *s,
                         const char *error)
{
    policyd_dblists_t *dl = ctx;
    policyd_dbsnap_t *snap;
    osp_buf_t warnings;
    const char *p;

    dl->req = NULL;
    if (status != OSP_STORE_OK) {
        if (dl->failures++ == 0)
            osp_warn("database lists: reload failed (%s); the previous lists keep serving, "
                     "retrying every %llums", error ? error : "?",
                     (unsigned long long)dl->retry_ms);
        else
            osp_debug(1, "database lists: reload failed again (%s)", error ? error : "?");
        db_schedule_retry(dl);
        return;
    }
    osp_buf_init(&warnings, 1024 * 1024);
    snap = policyd_dbsnap_build(s, &warnings);
    for (p = osp_buf_cstr(&warnings); *p;) {
        size_t n = strcspn(p, "\n");
        osp_warn("database lists: %.*s", (int)n, p);
        p += n + (p[n] ? 1 : 0);
    }
    osp_buf_close(&warnings);
    osp_info("database lists: loaded %zu entries, %zu accounts, %zu domains, %zu addresses%s",
             snap->nentries, snap->naccounts, s->ndomains, s->naddresses,
             dl->failures ? " (database back)" : "");
    dl->failures = 0;
    policyd_dblists_set(dl, snap);
    if (dl->dirty)
        db_load(dl);
}

static void db_load(policyd_dblists_t *dl)
{
    const char *error = NULL;

    if (dl->stopping || dl->st == NULL)
        return;
    if (dl->req) {
        dl->dirty = true;   /* load again when this one is in */
        return;
    }
    dl->dirty = false;
    if (dl->timer_ok)
        (void)uv_timer_stop(&dl->retry);
    dl->req = osp_store_load_policy_snapshot(dl->st, dl->timeout_ms, db_loaded_cb, dl, &error);
    if (dl->req == NULL) {
        osp_debug(1, "database lists: cannot load now (%s); retry in %llums",
                  error ? error : "?", (unsigned long long)dl->retry_ms);
        db_schedule_retry(dl);
    }
}

static void db_notify_cb(void *ctx, const char *channel, const char *payload)
{
    static const char *const tables[] = { "list_entries", "accounts", "domains", "addresses" };
    policyd_dblists_t *dl = ctx;

    (void)channel;
    if (!osp_store_notify_matches(payload, tables, sizeof(tables) / sizeof(tables[0])))
        return;
    osp_debug(1, "database lists: reload (%s)", payload ? payload : "listener connected");
    db_load(dl);
}

void policyd_dblists_start(policyd_dblists_t *dl, uv_loop_t *loop, osp_store_t *st)
{
    dl->loop = loop;
    dl->st = st;
    if (uv_timer_init(loop, &dl->retry) == 0) {
        dl->timer_ok = true;
        dl->retry.data = dl;
    }
    if (osp_store_listen(st, "osprey_config", db_notify_cb, dl) < 0)
        osp_panic("policyd_dblists_start: cannot listen on osprey_config");
    db_load(dl);
}

void policyd_dblists_reload(policyd_dblists_t *dl)
{
    if (dl && dl->enabled)
        db_load(dl);
}

void policyd_dblists_stop(policyd_dblists_t *dl)
{
    if (dl == NULL || dl->stopping)
        return;
    dl->stopping = true;
    osp_store_cancel(&dl->req);
    if (dl->timer_ok)
        uv_close((uv_handle_t *)&dl->retry, NULL);
    dl->st = NULL;
}

void policyd_dblists_free(policyd_dblists_t **dlp)
{
    policyd_dblists_t *dl = *dlp;

    if (dl == NULL)
        return;
    policyd_dbsnap_release(&dl->cur);
    pthread_mutex_destroy(&dl->mu);
    free(dl->allow_action);
    free(dl->client_block_action);
    free(dl->sender_block_action);
    free(dl->recipient_block_action);
    free(dl);
    *dlp = NULL;
}

/* ---- the check ------------------------------------------------------------- */

enum policyd_step policyd_dblists_check(policyd_eval_t *ev, void *ctx)
{
    policyd_dblists_t *dl = ctx;
    policyd_dbsnap_t *snap;
    policyd_dbquery_t q;
    policyd_dbmatch_t m;
    enum policyd_dbresult res;
    const char *action, *what = NULL, *kind;
    osp_buf_t v;

    if (dl == NULL || !dl->enabled || (snap = policyd_dblists_acquire(dl)) == NULL)
        return POLICYD_NEXT;
    memset(&q, 0, sizeof(q));
    q.client_address = policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS);
    q.client_name = policy_request_get(ev->req, POLICY_A_CLIENT_NAME);
    q.helo = policy_request_get(ev->req, POLICY_A_HELO_NAME);
    if (policy_request_has(ev->req, POLICY_A_SENDER))
        q.sender = policy_request_get(ev->req, POLICY_A_SENDER);
    q.recipient = policy_request_get(ev->req, POLICY_A_RECIPIENT);
    res = policyd_dbsnap_lookup(snap, &q, &m);
    policyd_dbsnap_release(&snap);
    if (res == POLICYD_DB_NONE)
        return POLICYD_NEXT;
    kind = m.kind;
    if (strncmp(kind, "client", 6) == 0) {
        what = strcmp(kind, "client_network") == 0 ? q.client_address : q.client_name;
        action = dl->client_block_action;
    } else if (strncmp(kind, "helo", 4) == 0) {
        what = q.helo;
        action = dl->client_block_action;
    } else if (strncmp(kind, "sender", 6) == 0) {
        what = q.sender && *q.sender ? q.sender : "<>";
        action = dl->sender_block_action;
    } else {
        what = q.recipient;
        action = dl->recipient_block_action;
    }
    if (res == POLICYD_DB_ALLOW)
        action = dl->allow_action;
    osp_buf_init(&v, 600);
    {
        size_t n = strlen(what);
        (void)osp_buf_append_printable(&v, what, n > 256 ? 256 : n);
    }
    policyd_eval_decide(ev, "database_lists", action, res == POLICYD_DB_ALLOW,
                        "%s %s on the database %s list (entry %" PRId64 ", account %" PRId64 ")",
                        kind, osp_buf_cstr(&v), res == POLICYD_DB_ALLOW ? "allow" : "block",
                        m.entry_id, m.account_id);
    osp_buf_close(&v);
    return POLICYD_STOP;
}
