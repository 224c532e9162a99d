/*
 * osp_ratelimit: "at most LIMIT units per WINDOW" for millions of keys,
 * with flat memory.
 *
 * The algorithm is GCRA (the generic cell rate algorithm, a token bucket
 * kept as one timestamp).  Each key stores its theoretical arrival time
 * TAT; one unit costs T = WINDOW / LIMIT.  Adding n units moves TAT to
 * max(TAT, now) + n*T; n more units conform while
 *
 *     max(TAT, now) - now + n*T <= WINDOW
 *
 * so a quiet key may spend LIMIT units at once (a burst), and after that
 * one unit comes back every T: a smooth sliding window without per-window
 * counters.  TAT never runs more than two windows ahead of now, so a key
 * that keeps being counted while over the limit (the check and the count
 * are separate calls) is blocked for one more window at most.
 *
 * Keys are 64-bit hashes (osp_ratelimit_hash, SipHash-2-4 with a random
 * per-process key, so peers cannot aim collisions at one slot); two keys
 * with the same hash share a bucket, which at 2^-64 does not matter.  A
 * key whose TAT is in the past holds no information (its bucket is full)
 * and is removed: by an incremental sweep on every call and by a full
 * sweep of a shard before it grows.  Storage is open addressing with
 * linear probing, 16 bytes per slot, load factor at most 3/4, split into
 * 64 shards with one mutex each: a million live keys take 32 MB.
 *
 *   rl = osp_ratelimit_create(100, 3600 * 1000, 1000000);
 *   h = osp_ratelimit_hash(user, strlen(user));
 *   if (osp_ratelimit_check(rl, h, 1, now_ms, &first) == OSP_RATELIMIT_EXCEEDED)
 *       ... refuse; log an alert only if first ...
 *   ...
 *   if (osp_ratelimit_add(rl, h, 1, now_ms) < 0)
 *       ... table full: not counted (fail open) ...
 *   osp_ratelimit_free(&rl);
 *
 * Time is the caller's monotonic clock in milliseconds (never read here),
 * so tests are deterministic.  Every function is thread-safe.
 */
#ifndef OSP_RATELIMIT_H
#define OSP_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct osp_ratelimit osp_ratelimit_t;

enum osp_ratelimit_result {
    OSP_RATELIMIT_PASS = 0,      /* the units conform */
    OSP_RATELIMIT_EXCEEDED = 1,  /* they would exceed the limit */
};

/*
 * limit >= 1 units per window_ms >= 1 ms; max_keys > 0 bounds the live
 * keys of the whole table (and so the memory); threads inserting at the
 * same instant may overshoot it by at most one key each.  Bad arguments are a bug (abort).  The caller
 * owns the result.
 */
osp_ratelimit_t *osp_ratelimit_create(uint64_t limit, uint64_t window_ms, size_t max_keys);
/* NULL is fine; clears the caller's pointer. */
void osp_ratelimit_free(osp_ratelimit_t **rlp);

/* A keyed 64-bit hash of len bytes (the key is random per process). */
uint64_t osp_ratelimit_hash(const void *data, size_t len);
/* Tests only: fix the hash key (0, 0 gives the reference SipHash vectors). */
void osp_ratelimit_hash_seed(uint64_t k0, uint64_t k1);

/*
 * Would n more units conform now?  Changes no count.  On
 * OSP_RATELIMIT_EXCEEDED, *first_r (may be NULL) is true the first time
 * the key is found over the limit since it last conformed, so an alert can
 * be logged once per episode instead of once per message.
 */
enum osp_ratelimit_result osp_ratelimit_check(osp_ratelimit_t *rl, uint64_t key, uint64_t n,
                                              uint64_t now_ms, bool *first_r);

/*
 * Count n units for key now, whether or not they conform.  Returns 0, or
 * -1 if the key is new and the table holds max_keys live keys (nothing
 * counted).
 */
int osp_ratelimit_add(osp_ratelimit_t *rl, uint64_t key, uint64_t n, uint64_t now_ms);

/* Units currently spent by key (rounded up); 0 for an unknown key. */
uint64_t osp_ratelimit_used(osp_ratelimit_t *rl, uint64_t key, uint64_t now_ms);

/* Remove every idle key now; returns how many were removed. */
size_t osp_ratelimit_expire(osp_ratelimit_t *rl, uint64_t now_ms);

/* Keys stored (idle ones not swept yet included), and bytes allocated. */
size_t osp_ratelimit_count(osp_ratelimit_t *rl);
size_t osp_ratelimit_memory(osp_ratelimit_t *rl);

uint64_t osp_ratelimit_limit(const osp_ratelimit_t *rl);
uint64_t osp_ratelimit_window_ms(const osp_ratelimit_t *rl);

#endif
