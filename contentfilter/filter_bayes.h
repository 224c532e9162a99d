/*
 * filter_bayes: Bayes classification for osprey-filter over the database
 * token store, with a bounded hot-token cache in front of it.
 *
 * The scan tokenizes in the thread pool (filter_engine); the token counts
 * are then looked up here, on the loop thread: first in the cache, and the
 * tokens the cache does not have (or has only stale) go to PostgreSQL in
 * one asynchronous osp_store_tokens_lookup per account.  The answer fills
 * the cache and osp_bayes_score() turns the counts into a probability and
 * the clues; the rules that use `bayes` then run in a second thread-pool
 * step (filter_scan).
 *
 * Accounts: each distinct recipient account is classified on its own, with
 * the global counts (account 0) as the prior (osp_bayes.h); recipients
 * without an account use the global counts alone.
 *
 * Failure never fails the scan: when the database is away, slow, or has
 * too little training (filter_bayes_min_messages), the probability is
 * absent and the rules see no `bayes` value.  One warning per outage.
 *
 * Cache: (account, token) -> counts, negative answers (0/0) included, at
 * most filter_bayes_cache_size entries, least recently used evicted first;
 * an entry is trusted for filter_bayes_cache_ttl only, so that training
 * elsewhere (ospreyctl, the worker, other filters) shows up.  The store
 * holds the truth.  The per-account message totals are cached the same
 * way under token 0 (never a token hash).
 *
 * Autolearn (filter_bayes_autolearn): after the scan, a message whose
 * rules score without Bayes is at or above filter_bayes_autolearn_spam_score
 * (or at or below filter_bayes_autolearn_ham_score) is trained for each of
 * its accounts with osp_store_bayes_train, asynchronously and not tied to
 * the session; the store counts a message once per account (its key is
 * the token-set digest, osp_bayes_message_key).  Nothing is learnt when
 * Bayes is already that sure (filter_bayes_autolearn_sure) or absent.
 *
 * Everything here runs on the loop thread.
 */
#ifndef FILTER_BAYES_H
#define FILTER_BAYES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "osp_bayes.h"
#include "osp_config.h"

struct osp_store;

/* ---- the cache (exposed for tests) --------------------------------------- */

typedef struct filter_bayes_cache filter_bayes_cache_t;

typedef struct filter_bayes_cache_stats {
    size_t size, max;
    uint64_t hits, misses, expired, evictions;
} filter_bayes_cache_stats_t;

/* max entries (at least 1); entries live ttl_ms after their put. */
filter_bayes_cache_t *filter_bayes_cache_create(size_t max, uint64_t ttl_ms);
void filter_bayes_cache_free(filter_bayes_cache_t **cp);
/* true with the counts if (account, token) is cached and fresh at now_ms. */
bool filter_bayes_cache_get(filter_bayes_cache_t *c, int64_t account, uint64_t token,
                            uint64_t now_ms, uint32_t *spam_r, uint32_t *ham_r);
/* Insert or refresh; evicts the least recently used entry when full. */
void filter_bayes_cache_put(filter_bayes_cache_t *c, int64_t account, uint64_t token,
                            uint32_t spam, uint32_t ham, uint64_t now_ms);
void filter_bayes_cache_stats(const filter_bayes_cache_t *c, filter_bayes_cache_stats_t *r);

/* ---- classification ------------------------------------------------------ */

typedef struct filter_bayes_conf {
    size_t cache_size;
    uint64_t cache_ttl_ms;
    uint64_t timeout_ms;            /* one lookup round trip */
    uint64_t min_messages;          /* global spam and ham needed for a verdict */
    unsigned nclues;                /* clues reported */
    bool autolearn;
    osp_bayes_params_t params;      /* classifier and autolearn thresholds */
} filter_bayes_conf_t;

/* From the filter_bayes_* parameters; -1 with err set for a bad value. */
int filter_bayes_conf_load(const osp_config_t *cfg, filter_bayes_conf_t *conf, char *err,
                           size_t errsize);

typedef struct filter_bayes filter_bayes_t;

/* st borrowed (NULL: every lookup fails, i.e. no Bayes); conf copied. */
filter_bayes_t *filter_bayes_create(uv_loop_t *loop, struct osp_store *st,
                                    const filter_bayes_conf_t *conf);
/* The store is going away: later lookups find nothing.  NULL is fine. */
void filter_bayes_detach(filter_bayes_t *fb);
/* No query may be pending.  NULL is fine; clears *fbp. */
void filter_bayes_free(filter_bayes_t **fbp);
const filter_bayes_conf_t *filter_bayes_conf(const filter_bayes_t *fb);
filter_bayes_cache_t *filter_bayes_cache(filter_bayes_t *fb);

/* One account's outcome. */
typedef struct filter_bayes_answer {
    int64_t account;                /* in: >= 0 (0: global counts only) */
    double prob;                    /* out: 0..1, or -1 when absent */
    char clues[400];                /* out: "TOKEN=P, ..." printable ASCII, or "" */
    size_t ntokens;                 /* out: tokens looked at */
} filter_bayes_answer_t;

typedef void filter_bayes_done_cb(void *ctx);

/*
 * Classify t (borrowed, with keep_text for readable clues; must live until
 * done) for each answers[i].account; answers borrowed likewise.  Returns
 * 0 when everything was answered at once (cache, or no store: done is
 * not called), 1 when done will be called on the loop thread later.
 */
int filter_bayes_classify(filter_bayes_t *fb, const osp_bayes_tokens_t *t,
                          filter_bayes_answer_t *answers, size_t n,
                          filter_bayes_done_cb *done, void *ctx);

/*
 * Autolearn one account's copy of t (copied) given its rules score
 * without Bayes and its Bayes probability (< 0: absent, nothing learnt).
 * Returns the decision; the training itself is fire-and-forget.
 */
enum osp_bayes_autolearn filter_bayes_autolearn(filter_bayes_t *fb, int64_t account,
                                                const osp_bayes_tokens_t *t,
                                                double rules_score, double prob,
                                                const char *log_id);

typedef struct filter_bayes_stats {
    uint64_t lookups, db_lookups, failures, learned_spam, learned_ham, learn_failures;
    bool outage;
} filter_bayes_stats_t;
void filter_bayes_stats(const filter_bayes_t *fb, filter_bayes_stats_t *r);

#endif
