/* osp_ratelimit: GCRA rate limits in a sharded open-addressing hash table. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_ratelimit.h"

#define OSP_RL_SHARD_BITS 6
#define OSP_RL_SHARDS (1u << OSP_RL_SHARD_BITS)
#define OSP_RL_MIN_CAP 16u
#define OSP_RL_ALERTED (UINT64_C(1) << 63)   /* flag bit in slot.tat */
#define OSP_RL_TAT(s) ((s)->tat & ~OSP_RL_ALERTED)
#define OSP_RL_SWEEP_STEP 2                  /* slots examined per call */

/* key 0 marks an empty slot; a real hash of 0 is stored as 1. */
typedef struct osp_rl_slot {
    uint64_t key;
    uint64_t tat;    /* microseconds on the caller's clock; top bit: alerted */
} osp_rl_slot_t;

typedef struct osp_rl_shard {
    pthread_mutex_t lock;
    osp_rl_slot_t *slots;   /* owned; cap entries */
    size_t cap;             /* power of two */
    size_t count;
    size_t max_keys;        /* for the whole table, not this shard */
    atomic_size_t *live;    /* the table's live key count (shared by shards) */
    size_t cursor;          /* incremental sweep position */
} osp_rl_shard_t;

struct osp_ratelimit {
    uint64_t limit;
    uint64_t window_ms;
    uint64_t window_us;
    uint64_t t_us;          /* emission interval, window_us / limit, >= 1 */
    atomic_size_t live;     /* live keys over all shards, bounded by max_keys */
    osp_rl_shard_t shard[OSP_RL_SHARDS];
};

/* ---- SipHash-2-4 ------------------------------------------------------ */

static uint64_t osp_rl_k0, osp_rl_k1;
static pthread_once_t osp_rl_seed_once = PTHREAD_ONCE_INIT;
static int osp_rl_seeded;

static void osp_rl__seed(void)
{
    uint64_t k[2] = { 0, 0 };

    if (osp_rl_seeded)
        return;
    if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
        /* Early boot without entropy: weaker, still per-process. */
        k[0] = (uint64_t)(uintptr_t)&k ^ (uint64_t)getpid() * UINT64_C(0x9E3779B97F4A7C15);
        k[1] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)osp_rl__seed;
    }
    osp_rl_k0 = k[0];
    osp_rl_k1 = k[1];
    osp_rl_seeded = 1;
}

void osp_ratelimit_hash_seed(uint64_t k0, uint64_t k1)
{
    pthread_once(&osp_rl_seed_once, osp_rl__seed);
    osp_rl_k0 = k0;
    osp_rl_k1 = k1;
}

#define OSP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define OSP_SIPROUND \
    do { \
        v0 += v1; v1 = OSP_ROTL(v1, 13); v1 ^= v0; v0 = OSP_ROTL(v0, 32); \
        v2 += v3; v3 = OSP_ROTL(v3, 16); v3 ^= v2; \
        v0 += v3; v3 = OSP_ROTL(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = OSP_ROTL(v1, 17); v1 ^= v2; v2 = OSP_ROTL(v2, 32); \
    } while (0)

uint64_t osp_ratelimit_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v0, v1, v2, v3, b = (uint64_t)len << 56, m;
    size_t i, full = len & ~(size_t)7;

    pthread_once(&osp_rl_seed_once, osp_rl__seed);
    v0 = osp_rl_k0 ^ UINT64_C(0x736f6d6570736575);
    v1 = osp_rl_k1 ^ UINT64_C(0x646f72616e646f6d);
    v2 = osp_rl_k0 ^ UINT64_C(0x6c7967656e657261);
    v3 = osp_rl_k1 ^ UINT64_C(0x7465646279746573);
    for (i = 0; i < full; i += 8) {
        m = (uint64_t)p[i] | (uint64_t)p[i + 1] << 8 | (uint64_t)p[i + 2] << 16 |
            (uint64_t)p[i + 3] << 24 | (uint64_t)p[i + 4] << 32 |
            (uint64_t)p[i + 5] << 40 | (uint64_t)p[i + 6] << 48 | (uint64_t)p[i + 7] << 56;
        v3 ^= m;
        OSP_SIPROUND;
        OSP_SIPROUND;
        v0 ^= m;
    }
    for (i = 0; i < (len & 7); i++)
        b |= (uint64_t)p[full + i] << (8 * i);
    v3 ^= b;
    OSP_SIPROUND;
    OSP_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    OSP_SIPROUND;
    OSP_SIPROUND;
    OSP_SIPROUND;
    OSP_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- table ------------------------------------------------------------ */

osp_ratelimit_t *osp_ratelimit_create(uint64_t limit, uint64_t window_ms, size_t max_keys)
{
    osp_ratelimit_t *rl;
    unsigned i;

    if (limit == 0 || window_ms == 0 || max_keys == 0 || window_ms > UINT64_C(1) << 40)
        osp_panic("osp_ratelimit_create: bad arguments limit=%llu window_ms=%llu",
                  (unsigned long long)limit, (unsigned long long)window_ms);
    rl = osp_calloc(1, sizeof(*rl));
    rl->limit = limit;
    rl->window_ms = window_ms;
    rl->window_us = window_ms * 1000;
    rl->t_us = rl->window_us / limit;
    if (rl->t_us == 0)
        rl->t_us = 1;
    for (i = 0; i < OSP_RL_SHARDS; i++) {
        pthread_mutex_init(&rl->shard[i].lock, NULL);
        /* One bound for the table: shards fill unevenly, so a per-shard
         * share would refuse keys before max_keys are live. */
        rl->shard[i].max_keys = max_keys;
        rl->shard[i].live = &rl->live;
    }
    return rl;
}

void osp_ratelimit_free(osp_ratelimit_t **rlp)
{
    osp_ratelimit_t *rl = *rlp;
    unsigned i;

    if (rl == NULL)
        return;
    for (i = 0; i < OSP_RL_SHARDS; i++) {
        pthread_mutex_destroy(&rl->shard[i].lock);
        free(rl->shard[i].slots);
    }
    free(rl);
    *rlp = NULL;
}

static uint64_t osp_rl__key(uint64_t key)
{
    return key ? key : 1;
}

static osp_rl_shard_t *osp_rl__shard(osp_ratelimit_t *rl, uint64_t key)
{
    return &rl->shard[key >> (64 - OSP_RL_SHARD_BITS)];
}

/* Slot index of key, or SIZE_MAX. */
static size_t osp_rl__find(const osp_rl_shard_t *sh, uint64_t key)
{
    size_t mask, i;

    if (sh->cap == 0)
        return SIZE_MAX;
    mask = sh->cap - 1;
    for (i = (size_t)key & mask;; i = (i + 1) & mask) {
        if (sh->slots[i].key == key)
            return i;
        if (sh->slots[i].key == 0)
            return SIZE_MAX;
    }
}

/* Backward-shift deletion keeps every probe chain unbroken. */
static void osp_rl__delete(osp_rl_shard_t *sh, size_t i)
{
    size_t mask = sh->cap - 1, j = i, home;

    for (;;) {
        j = (j + 1) & mask;
        if (sh->slots[j].key == 0)
            break;
        home = (size_t)sh->slots[j].key & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            sh->slots[i] = sh->slots[j];
            i = j;
        }
    }
    sh->slots[i].key = 0;
    sh->slots[i].tat = 0;
    sh->count--;
    atomic_fetch_sub(sh->live, 1);
}

static void osp_rl__insert_slot(osp_rl_slot_t *slots, size_t cap, const osp_rl_slot_t *s)
{
    size_t mask = cap - 1, i;

    for (i = (size_t)s->key & mask; slots[i].key != 0; i = (i + 1) & mask)
        ;
    slots[i] = *s;
}

static size_t osp_rl__sweep_all(osp_rl_shard_t *sh, uint64_t now_us)
{
    size_t i = 0, removed = 0;

    while (i < sh->cap) {
        if (sh->slots[i].key != 0 && OSP_RL_TAT(&sh->slots[i]) <= now_us) {
            osp_rl__delete(sh, i);
            removed++;
            /* Another entry may have moved into slot i: look again. */
            continue;
        }
        i++;
    }
    return removed;
}

static void osp_rl__sweep_step(osp_rl_shard_t *sh, uint64_t now_us)
{
    int n;

    for (n = 0; n < OSP_RL_SWEEP_STEP && sh->cap > 0; n++) {
        size_t i = sh->cursor & (sh->cap - 1);
        if (sh->slots[i].key != 0 && OSP_RL_TAT(&sh->slots[i]) <= now_us)
            osp_rl__delete(sh, i);
        else
            sh->cursor = i + 1;
    }
}

static void osp_rl__resize(osp_rl_shard_t *sh, size_t cap)
{
    osp_rl_slot_t *slots = osp_calloc(cap, sizeof(*slots));
    size_t i;

    for (i = 0; i < sh->cap; i++)
        if (sh->slots[i].key != 0)
            osp_rl__insert_slot(slots, cap, &sh->slots[i]);
    free(sh->slots);
    sh->slots = slots;
    sh->cap = cap;
    sh->cursor = 0;
}

/* Room for one more key?  Sweeps, then grows; false at max_keys. */
static bool osp_rl__make_room(osp_rl_shard_t *sh, uint64_t now_us)
{
    if (sh->count + 1 <= sh->cap / 4 * 3 && atomic_load(sh->live) < sh->max_keys)
        return true;
    if (sh->cap > 0)
        (void)osp_rl__sweep_all(sh, now_us);
    if (atomic_load(sh->live) >= sh->max_keys)
        return false;
    if (sh->count + 1 > sh->cap / 4 * 3)
        osp_rl__resize(sh, sh->cap ? sh->cap * 2 : OSP_RL_MIN_CAP);
    return true;
}

enum osp_ratelimit_result osp_ratelimit_check(osp_ratelimit_t *rl, uint64_t key, uint64_t n,
                                              uint64_t now_ms, bool *first_r)
{
    osp_rl_shard_t *sh;
    uint64_t now_us = now_ms * 1000, tat, need;
    enum osp_ratelimit_result res = OSP_RATELIMIT_PASS;
    size_t i;

    key = osp_rl__key(key);
    sh = osp_rl__shard(rl, key);
    if (first_r)
        *first_r = false;
    need = n > rl->window_us / rl->t_us + 1 ? rl->window_us + 1 : n * rl->t_us;
    pthread_mutex_lock(&sh->lock);
    osp_rl__sweep_step(sh, now_us);
    i = osp_rl__find(sh, key);
    tat = i == SIZE_MAX ? now_us : OSP_RL_TAT(&sh->slots[i]);
    if (tat < now_us)
        tat = now_us;
    if (tat - now_us + need > rl->window_us) {
        res = OSP_RATELIMIT_EXCEEDED;
        if (i != SIZE_MAX && !(sh->slots[i].tat & OSP_RL_ALERTED)) {
            sh->slots[i].tat |= OSP_RL_ALERTED;
            if (first_r)
                *first_r = true;
        } else if (i == SIZE_MAX && first_r) {
            /* n alone exceeds the limit; nothing stored to remember it. */
            *first_r = true;
        }
    } else if (i != SIZE_MAX) {
        sh->slots[i].tat &= ~OSP_RL_ALERTED;
    }
    pthread_mutex_unlock(&sh->lock);
    return res;
}

int osp_ratelimit_add(osp_ratelimit_t *rl, uint64_t key, uint64_t n, uint64_t now_ms)
{
    osp_rl_shard_t *sh;
    uint64_t now_us = now_ms * 1000, tat, cost, cap_us;
    osp_rl_slot_t s;
    size_t i;
    int rc = 0;

    key = osp_rl__key(key);
    sh = osp_rl__shard(rl, key);
    cap_us = now_us + 2 * rl->window_us;
    cost = n > 2 * (rl->window_us / rl->t_us + 1) ? 2 * rl->window_us + rl->t_us : n * rl->t_us;
    pthread_mutex_lock(&sh->lock);
    osp_rl__sweep_step(sh, now_us);
    i = osp_rl__find(sh, key);
    if (i != SIZE_MAX) {
        tat = OSP_RL_TAT(&sh->slots[i]);
        if (tat < now_us)
            tat = now_us;
        tat += cost;
        if (tat > cap_us)
            tat = cap_us;
        sh->slots[i].tat = tat | (sh->slots[i].tat & OSP_RL_ALERTED);
    } else if (n > 0) {
        if (!osp_rl__make_room(sh, now_us)) {
            rc = -1;
        } else {
            s.key = key;
            s.tat = now_us + cost;
            if (s.tat > cap_us)
                s.tat = cap_us;
            osp_rl__insert_slot(sh->slots, sh->cap, &s);
            sh->count++;
            atomic_fetch_add(sh->live, 1);
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

uint64_t osp_ratelimit_used(osp_ratelimit_t *rl, uint64_t key, uint64_t now_ms)
{
    osp_rl_shard_t *sh;
    uint64_t now_us = now_ms * 1000, used = 0, tat;
    size_t i;

    key = osp_rl__key(key);
    sh = osp_rl__shard(rl, key);
    pthread_mutex_lock(&sh->lock);
    i = osp_rl__find(sh, key);
    if (i != SIZE_MAX) {
        tat = OSP_RL_TAT(&sh->slots[i]);
        if (tat > now_us)
            used = (tat - now_us + rl->t_us - 1) / rl->t_us;
    }
    pthread_mutex_unlock(&sh->lock);
    return used;
}

size_t osp_ratelimit_expire(osp_ratelimit_t *rl, uint64_t now_ms)
{
    size_t removed = 0;
    unsigned i;

    for (i = 0; i < OSP_RL_SHARDS; i++) {
        pthread_mutex_lock(&rl->shard[i].lock);
        removed += osp_rl__sweep_all(&rl->shard[i], now_ms * 1000);
        pthread_mutex_unlock(&rl->shard[i].lock);
    }
    return removed;
}

size_t osp_ratelimit_count(osp_ratelimit_t *rl)
{
    size_t n = 0;
    unsigned i;

    for (i = 0; i < OSP_RL_SHARDS; i++) {
        pthread_mutex_lock(&rl->shard[i].lock);
        n += rl->shard[i].count;
        pthread_mutex_unlock(&rl->shard[i].lock);
    }
    return n;
}

size_t osp_ratelimit_memory(osp_ratelimit_t *rl)
{
    size_t n = sizeof(*rl);
    unsigned i;

    for (i = 0; i < OSP_RL_SHARDS; i++) {
        pthread_mutex_lock(&rl->shard[i].lock);
        n += rl->shard[i].cap * sizeof(osp_rl_slot_t);
        pthread_mutex_unlock(&rl->shard[i].lock);
    }
    return n;
}

uint64_t osp_ratelimit_limit(const osp_ratelimit_t *rl)
{
    return rl->limit;
}

uint64_t osp_ratelimit_window_ms(const osp_ratelimit_t *rl)
{
    return rl->window_ms;
}
