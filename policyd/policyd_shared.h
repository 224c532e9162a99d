/*
 * policyd_shared: rate-limit counts shared by every policyd instance of a
 * cluster through the database (osprey_rate_hit, table rate_counters).
 *
 * Each instance keeps limiting with its own in-memory counters
 * (policyd_checks, GCRA); this module adds what the other instances have
 * counted.  Per (rule, key) it remembers the units counted here and not
 * yet flushed, and for the current fixed window (window start = Unix time
 * rounded down to the rule's window, the same on every instance with
 * synchronised clocks) what it has flushed itself and the cluster's count
 * read back.  Every policyd_rate_share_interval the main loop flushes, in
 * one statement, the local deltas of every key in use (0 for keys only
 * checked, so their cluster count is read back too) and stores the counts
 * returned.  At check time the other instances' units are
 *
 *     (cluster - own flushed) of the current window
 *     + others' count of the previous window * (part of it still inside
 *       the sliding window)
 *
 * and the rule refuses when local + that + 1 exceeds the limit.
 *
 * Overshoot: another instance's units become visible here within one
 * flush interval plus one query (T).  So, for one key, the cluster can
 * accept at most the limit plus what all instances accept for that key
 * during T after the limit is reached: with N instances each receiving
 * that key's mail at r messages per second, at most N * r * T extra
 * (policyd_rate_share_interval 1s, 4 instances, 10 messages/s each: 40).
 * While the database is away each instance limits on its own counts, so
 * the cluster accepts at most N times the limit; deltas counted meanwhile
 * are flushed when it is back.  Keys tracked here are bounded by
 * policyd_rate_limit_max_keys; a key beyond that is limited locally only.
 *
 * Thread-safety: count and remote (the policyd_rate_share_t hooks) take a
 * mutex and may run on any worker; start, stop and the flush run on the
 * main loop.
 */
#ifndef POLICYD_SHARED_H
#define POLICYD_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "osp_store.h"
#include "policyd_checks.h"

typedef struct policyd_shared policyd_shared_t;

/* Reads policyd_rate_share, policyd_rate_share_interval, policyd_rate_limit_max_keys. */
policyd_shared_t *policyd_shared_create(const osp_config_t *cfg);
bool policyd_shared_enabled(const policyd_shared_t *sh);
/* The hooks for policyd_checks_set_rate_share (ctx = sh). */
void policyd_shared_hooks(policyd_shared_t *sh, policyd_rate_share_t *share_r);
/* Loop thread: start the flush timer (st borrowed until stop). */
void policyd_shared_start(policyd_shared_t *sh, uv_loop_t *loop, osp_store_t *st);
void policyd_shared_stop(policyd_shared_t *sh);
/* After the loop ran the close callbacks.  NULL is fine; clears *shp. */
void policyd_shared_free(policyd_shared_t **shp);

/* Exposed for tests: the hooks, the flush with an explicit wall clock. */
void policyd_shared_count(void *ctx, const char *rule, const char *key, size_t len,
                          uint64_t window_ms, uint64_t n);
uint64_t policyd_shared_remote(void *ctx, const char *rule, const char *key, size_t len,
                               uint64_t window_ms);
/*
 * Collect what to flush at Unix time now_ms: items (owned by sh, valid
 * until policyd_shared_flushed) sorted by key; returns how many.
 */
size_t policyd_shared_collect(policyd_shared_t *sh, int64_t now_ms,
                              const osp_store_rate_item_t **items_r);
/* The counts came back (status OSP_STORE_OK) or not (deltas kept for the next flush). */
void policyd_shared_flushed(policyd_shared_t *sh, int status, const int64_t *counts, size_t n);
/* remote() at an explicit wall clock. */
uint64_t policyd_shared_remote_at(policyd_shared_t *sh, const char *rule, const char *key,
                                  size_t len, uint64_t window_ms, int64_t now_ms);
size_t policyd_shared_keys(policyd_shared_t *sh);

#endif
