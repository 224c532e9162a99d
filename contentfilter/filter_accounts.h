/*
 * filter_accounts: each recipient's account and spam settings, resolved
 * through the store (osp_store_resolve_recipient) and cached in memory.
 *
 * The effective settings of the owning account (a JSON object, inherited
 * down the account tree, nearest override wins) may set:
 *   spam_tag_score          number: tag at or above this score
 *   spam_quarantine_score   number: apply spam_action at or above this score
 *   spam_subject_prefix     string: Subject prefix of tagged copies
 *   spam_action             "quarantine" (default), "tag", "discard",
 *                           "reject" or "deliver": what happens at
 *                           spam_quarantine_score
 * A key that is missing or malformed takes the global default
 * (filter_tag_score, filter_quarantine_score, filter_tag_subject_prefix,
 * quarantine).
 *
 * Results (found and not found alike) are cached for ttl_ms, and expire at
 * once when the database announces a change of accounts, domains,
 * addresses or settings (NOTIFY osprey_config), or when the listening
 * connection reconnects (changes may have been missed).  Expired entries
 * stay as the stale fallback below.  Resolution
 * never blocks mail: on a temporary failure (database away, breaker
 * open, timeout) the last cached value is used even if expired, else the
 * global defaults; the message is then scanned and routed as usual.
 *
 *   fa = filter_accounts_create(loop, st, &defaults, ttl_ms, max, timeout_ms);
 *   if (filter_accounts_resolve(fa, addrs, n, out, done_cb, ctx) == 0)
 *       ... out[] is complete now, done_cb is not called ...
 *   else ... done_cb(ctx) runs later on the loop thread ...
 *   filter_accounts_detach(fa);   before the store is freed
 *   filter_accounts_free(&fa);    when no resolution is pending
 */
#ifndef FILTER_ACCOUNTS_H
#define FILTER_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "filter_scan.h"

enum filter_settings_source {
    FILTER_SETTINGS_DEFAULT = 0,    /* global defaults (nobody owns it, or unknown) */
    FILTER_SETTINGS_ACCOUNT,        /* the account's settings, fresh */
    FILTER_SETTINGS_STALE,          /* an expired cache entry, after a temporary failure */
};

typedef struct filter_rcpt_settings {
    int64_t account_id;             /* -1: none known */
    double tag_score;
    double quarantine_score;
    char subject_prefix[128];
    enum filter_action spam_action;
    enum filter_settings_source source;
} filter_rcpt_settings_t;

/*
 * Read the spam_* keys of a settings JSON object over *s (defaults for
 * what is missing).  Returns 0, or -1 if json is not an object (s keeps
 * the defaults it had).  Exposed for tests.
 */
int filter_settings_parse(const char *json, filter_rcpt_settings_t *s);

typedef struct filter_accounts filter_accounts_t;
typedef void filter_accounts_done_cb(void *ctx);

struct osp_store;
/* st NULL: every recipient gets the defaults.  defaults copied. */
filter_accounts_t *filter_accounts_create(uv_loop_t *loop, struct osp_store *st,
                                          const filter_rcpt_settings_t *defaults,
                                          uint64_t ttl_ms, size_t max_entries,
                                          uint64_t timeout_ms);
void filter_accounts_detach(filter_accounts_t *fa);
void filter_accounts_free(filter_accounts_t **fap);

/*
 * Settings for addrs[0..n) into out[0..n) (addrs borrowed until done).
 * Returns 0 when everything came from the cache (no callback), 1 when
 * done_cb(ctx) will be called once, on the loop thread.
 */
int filter_accounts_resolve(filter_accounts_t *fa, const char *const *addrs, size_t n,
                            filter_rcpt_settings_t *out, filter_accounts_done_cb *done_cb,
                            void *ctx);

typedef struct filter_accounts_stats {
    uint64_t hits, misses, stale, defaults, tempfail;
    uint64_t invalidations;         /* change notifications acted on */
    size_t entries;
} filter_accounts_stats_t;
void filter_accounts_stats(const filter_accounts_t *fa, filter_accounts_stats_t *stats_r);

#endif
