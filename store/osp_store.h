/*
 * osp_store: Osprey's data-access layer over PostgreSQL.
 *
 * Everything runs on the caller's libuv loop: libpq in non-blocking mode,
 * driven by uv_poll on PQsocket(), a small pool of connections in pipeline
 * mode with every statement prepared on connect (and again after a
 * reconnect), parameters only.  Connection strings are libpq's own and are
 * passed as given, so "host=/a,/b port=1,2 target_session_attrs=read-write"
 * fails over to whichever server accepts writes.
 *
 *   osp_store_conf_t conf;
 *   osp_store_conf_init(&conf, prog.cfg);            (or NULL: defaults)
 *   st = osp_store_create(loop, &conf);
 *   req = osp_store_resolve_recipient(st, "user@example.com", 0,
 *                                     resolved_cb, sess, &error);
 *   if (req == NULL)                    failed at once: no callback comes
 *       return answer_tempfail(error);
 *   sess->req = req;                    keep it to cancel if the client leaves
 *   ...
 *   static void resolved_cb(void *ctx, int status, const osp_store_recipient_t *r,
 *                           const char *error)
 *   {   sess->req = NULL;  ... OSP_STORE_OK / OSP_STORE_NOT_FOUND /
 *       OSP_STORE_TEMPFAIL (error says why) ... }
 *   ...
 *   osp_store_cancel(&sess->req);       the callback will not be called
 *   ...
 *   osp_store_free(&st);                then run the loop until it is empty
 *
 * Every call has a deadline (timeout_ms, 0: database_query_timeout) and
 * reports through its callback exactly once, unless it failed at once
 * (NULL return, *error_r set to a static string, no callback) or was
 * cancelled.  Everything a callback receives is borrowed for the duration
 * of the callback.  The request handle is valid until its callback
 * returns or it is cancelled.
 *
 * Outages: while the database is away the connections retry with
 * exponential back-off, and a circuit breaker (breaker_*) makes calls fail
 * at once with a temporary failure instead of each waiting for its
 * deadline.  A temporary failure never means "did not happen" for a write
 * whose commit was in flight; writes are idempotent so a retry is safe.
 *
 * The log writer (osp_store_log_*) batches message_log rows with COPY off
 * the hot path and keeps them in a local journal while the database is
 * unreachable; see below.
 *
 * Nothing here is thread-safe: use a store from its loop's thread only.
 */
#ifndef OSP_STORE_H
#define OSP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "osp_breaker.h"
#include "osp_config.h"

/* Outcome of every call: found / not found / temporary failure. */
enum osp_store_status {
    OSP_STORE_OK = 0,
    OSP_STORE_NOT_FOUND = 1,
    OSP_STORE_TEMPFAIL = -1,
};

typedef struct osp_store osp_store_t;
typedef struct osp_store_req osp_store_req_t;

typedef struct osp_store_conf {
    const char *conninfo;         /* libpq connection string, as given; copied */
    unsigned pool_size;           /* connections (database_pool_size) */
    uint64_t connect_timeout_ms;  /* one whole connection attempt */
    uint64_t query_timeout_ms;    /* default request deadline; server statement_timeout */
    uint64_t reconnect_min_ms;    /* back-off after a failed attempt, doubled each time */
    uint64_t reconnect_max_ms;    /* up to this */
    size_t max_queue;             /* requests waiting for a connection; more fail at once */
    osp_breaker_conf_t breaker;
} osp_store_conf_t;

/*
 * Fill conf from the common parameters (database_*, breaker_*) of cfg, or
 * with built-in defaults when cfg is NULL.  Strings are borrowed from cfg.
 */
void osp_store_conf_init(osp_store_conf_t *conf, const osp_config_t *cfg);

/* Start connecting at once (on the loop).  conf is copied. */
osp_store_t *osp_store_create(uv_loop_t *loop, const osp_store_conf_t *conf);
/*
 * Fail every pending request (callbacks run, with OSP_STORE_TEMPFAIL
 * "shutting down") and close every connection and handle; the memory goes
 * when the loop has run the close callbacks.  NULL is fine; clears *st.
 */
void osp_store_free(osp_store_t **st);

/* The callback of the request will not be called.  NULL is fine; clears *req. */
void osp_store_cancel(osp_store_req_t **req);

typedef struct osp_store_stats {
    unsigned connections_up;      /* connected and prepared */
    size_t queued;                /* waiting for a connection */
    enum osp_breaker_state breaker;
    uint64_t requests, ok, not_found, tempfail, rejected, reconnects;
    const char *last_error;       /* borrowed; "" if none */
} osp_store_stats_t;
void osp_store_stats(const osp_store_t *st, osp_store_stats_t *stats_r);

/* Plain callback: no data, just the outcome. */
typedef void osp_store_status_cb(void *ctx, int status, const char *error);

/* SELECT 1 through the pool, for health checks and tests. */
osp_store_req_t *osp_store_ping(osp_store_t *st, uint64_t timeout_ms,
                                osp_store_status_cb *cb, void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Change notification.  cb(ctx, channel, payload) for each NOTIFY on
 * channel ([a-z_][a-z0-9_]*, copied); payload is NULL after every
 * (re)connect of the listening connection, meaning "notifications may
 * have been missed: reload everything".  Returns 0, or -1 for a bad
 * channel name.  Listeners stay until the store is freed.
 */
typedef void osp_store_notify_cb(void *ctx, const char *channel, const char *payload);
int osp_store_listen(osp_store_t *st, const char *channel, osp_store_notify_cb *cb, void *ctx);
/*
 * For notify callbacks: whether payload concerns one of tables[0..n) --
 * it names one of them, or it is NULL (reconnected: anything may have
 * changed).
 */
bool osp_store_notify_matches(const char *payload, const char *const *tables, size_t n);

/* ------------------------------------------------------------------
 * Recipients.  The account that owns the address (exact address, else its
 * domain), its chain from the root and its effective settings (a JSON
 * object, nearest override wins).  OSP_STORE_NOT_FOUND: nobody owns it.
 */
typedef struct osp_store_recipient {
    int64_t account_id;
    const int64_t *chain;         /* root (0) first, account_id last */
    size_t nchain;
    const char *path;             /* ltree text, "0.10.11" */
    const char *settings_json;    /* "{...}" */
} osp_store_recipient_t;
typedef void osp_store_recipient_cb(void *ctx, int status, const osp_store_recipient_t *r,
                                    const char *error);
osp_store_req_t *osp_store_resolve_recipient(osp_store_t *st, const char *address,
                                             uint64_t timeout_ms, osp_store_recipient_cb *cb,
                                             void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Lists and rules: one consistent snapshot (REPEATABLE READ), ordered by
 * account; rules enabled and validated only, highest priority first.
 */
typedef struct osp_store_list_entry {
    int64_t id, account_id;
    const char *list;             /* "allow" / "block" */
    const char *kind;             /* "client_network", "sender_domain", ... */
    const char *value;            /* the value, or the network as "192.0.2.0/24" */
} osp_store_list_entry_t;
typedef struct osp_store_rule {
    int64_t id, account_id;
    int priority;
    const char *name, *source;
} osp_store_rule_t;
typedef struct osp_store_snapshot {
    const osp_store_list_entry_t *entries;
    size_t nentries;
    const osp_store_rule_t *rules;
    size_t nrules;
} osp_store_snapshot_t;
typedef void osp_store_snapshot_cb(void *ctx, int status, const osp_store_snapshot_t *snap,
                                   const char *error);
osp_store_req_t *osp_store_load_snapshot(osp_store_t *st, uint64_t timeout_ms,
                                         osp_store_snapshot_cb *cb, void *ctx,
                                         const char **error_r);

/*
 * The policy daemon's snapshot (store_policy.c): list entries together
 * with the account tree and who owns which domain and address, from one
 * REPEATABLE READ transaction so that they agree with each other.
 */
typedef struct osp_store_account_node {
    int64_t id, parent_id;        /* parent_id -1: the root */
} osp_store_account_node_t;
typedef struct osp_store_owner {
    const char *name;             /* domain or address, lower case */
    int64_t account_id;
} osp_store_owner_t;
typedef struct osp_store_policy_snapshot {
    const osp_store_list_entry_t *entries;
    size_t nentries;
    const osp_store_account_node_t *accounts;
    size_t naccounts;
    const osp_store_owner_t *domains, *addresses;
    size_t ndomains, naddresses;
} osp_store_policy_snapshot_t;
typedef void osp_store_policy_snapshot_cb(void *ctx, int status,
                                          const osp_store_policy_snapshot_t *snap,
                                          const char *error);
osp_store_req_t *osp_store_load_policy_snapshot(osp_store_t *st, uint64_t timeout_ms,
                                                osp_store_policy_snapshot_cb *cb, void *ctx,
                                                const char **error_r);

/*
 * Cluster-wide rate counters (osprey_rate_hit, migration 006): add n to
 * each key's count of the fixed window starting at window_start_ms (Unix
 * milliseconds) and read the new counts back, in one statement, rows
 * locked in the order given (sort keys the same way everywhere to avoid
 * deadlocks).  counts[i] answers items[i].  Items copied.
 */
typedef struct osp_store_rate_item {
    const char *key;
    int64_t window_start_ms, window_ms, n;
} osp_store_rate_item_t;
typedef void osp_store_rate_cb(void *ctx, int status, const int64_t *counts, size_t n,
                               const char *error);
osp_store_req_t *osp_store_rate_hit(osp_store_t *st, const osp_store_rate_item_t *items,
                                    size_t n, uint64_t timeout_ms, osp_store_rate_cb *cb,
                                    void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Quarantine.  The body and one row per recipient in one transaction with
 * synchronous commit.  OSP_STORE_OK only once COMMIT has succeeded; a
 * connection lost before the answer to COMMIT is OSP_STORE_TEMPFAIL.  A
 * retry with the same queue id and recipient inserts nothing (counted in
 * duplicates), so retrying after a temporary failure is always safe.
 * Bodies are deduplicated by SHA-256 across recipients and messages.
 */
typedef struct osp_store_qrcpt {
    int64_t account_id;
    const char *recipient;
} osp_store_qrcpt_t;
typedef struct osp_store_quarantine {
    const char *queue_id;         /* Postfix queue id, required */
    const char *message_id;       /* NULL: none */
    const char *sender;           /* "" for the null sender */
    const char *client_address;   /* NULL: none; must parse as an address */
    const char *client_name, *helo, *subject;   /* NULL: none */
    int64_t size;
    double score;                 /* NaN: none */
    const char *verdict;
    const char *const *reasons;
    size_t nreasons;
    const void *body;
    size_t body_len;
    const osp_store_qrcpt_t *rcpts;
    size_t nrcpts;                /* 1 or more */
} osp_store_quarantine_t;
typedef struct osp_store_quarantine_result {
    size_t inserted;              /* rows new in this transaction */
    size_t duplicates;            /* rows already stored by an earlier try */
} osp_store_quarantine_result_t;
typedef void osp_store_quarantine_cb(void *ctx, int status,
                                     const osp_store_quarantine_result_t *r, const char *error);
/* Everything in q is copied. */
osp_store_req_t *osp_store_quarantine(osp_store_t *st, const osp_store_quarantine_t *q,
                                      uint64_t timeout_ms, osp_store_quarantine_cb *cb,
                                      void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Bayes.  Look up a message's tokens (all of them in one round trip, with
 * the totals) for account_id and for the global account 0.  counts[i]
 * answers tokens[i]; unknown tokens count 0.  OSP_STORE_OK even when no
 * token is known.
 */
typedef struct osp_store_token_counts {
    uint32_t spam, ham;           /* the account's own votes */
    uint32_t global_spam, global_ham;   /* everyone's (account 0) */
} osp_store_token_counts_t;
typedef struct osp_store_bayes_totals {
    uint64_t spam, ham, global_spam, global_ham;   /* messages trained */
} osp_store_bayes_totals_t;
typedef void osp_store_tokens_cb(void *ctx, int status, const osp_store_token_counts_t *counts,
                                 size_t n, const osp_store_bayes_totals_t *totals,
                                 const char *error);
/* tokens copied. */
osp_store_req_t *osp_store_tokens_lookup(osp_store_t *st, int64_t account_id,
                                         const uint64_t *tokens, size_t n, uint64_t timeout_ms,
                                         osp_store_tokens_cb *cb, void *ctx, const char **error_r);
/*
 * Train: add one vote to every distinct token for account_id and account
 * 0, in one statement.  outcome: "trained", "unchanged" or "retrained".
 */
typedef void osp_store_train_cb(void *ctx, int status, const char *outcome, const char *error);
osp_store_req_t *osp_store_bayes_train(osp_store_t *st, int64_t account_id,
                                       const uint8_t message_hash[32], bool spam,
                                       const uint64_t *tokens, size_t n, uint64_t timeout_ms,
                                       osp_store_train_cb *cb, void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Jobs (deferred work, FOR UPDATE SKIP LOCKED).
 */
typedef struct osp_store_job {
    int64_t id;
    int64_t account_id;           /* -1: none */
    int attempts;                 /* including this one */
    const char *kind, *payload_json;
} osp_store_job_t;
typedef void osp_store_id_cb(void *ctx, int status, int64_t id, const char *error);
typedef void osp_store_jobs_cb(void *ctx, int status, const osp_store_job_t *jobs, size_t n,
                               const char *error);
typedef void osp_store_text_cb(void *ctx, int status, const char *text, const char *error);
/* payload_json NULL: "{}"; account_id < 0: none; max_attempts 0: default. */
osp_store_req_t *osp_store_job_enqueue(osp_store_t *st, const char *kind,
                                       const char *payload_json, int64_t account_id,
                                       uint64_t delay_ms, int max_attempts, uint64_t timeout_ms,
                                       osp_store_id_cb *cb, void *ctx, const char **error_r);
/* Claim up to n due jobs of these kinds (nkinds 0: any).  NOT_FOUND: none due. */
osp_store_req_t *osp_store_job_dequeue(osp_store_t *st, const char *worker,
                                       const char *const *kinds, size_t nkinds, unsigned n,
                                       uint64_t timeout_ms, osp_store_jobs_cb *cb, void *ctx,
                                       const char **error_r);
/* NOT_FOUND: the job was not running (reclaimed, or unknown). */
osp_store_req_t *osp_store_job_complete(osp_store_t *st, int64_t id, uint64_t timeout_ms,
                                        osp_store_status_cb *cb, void *ctx,
                                        const char **error_r);
/* text: the job's new state, "queued" (retry later) or "dead".  NOT_FOUND: not running. */
osp_store_req_t *osp_store_job_fail(osp_store_t *st, int64_t id, const char *error_text,
                                    uint64_t timeout_ms, osp_store_text_cb *cb, void *ctx,
                                    const char **error_r);

/* Back to the queue after backoff_ms * 2^(attempts-1) (at most 1 hour), or
 * "dead" once attempts reach max_attempts or the job's own limit, whichever
 * is lower (osprey_job_fail, 4 arguments; migration 008).  text: the new
 * state.  NOT_FOUND: not running. */
osp_store_req_t *osp_store_job_retry(osp_store_t *st, int64_t id, const char *error_text,
                                     uint64_t backoff_ms, int max_attempts, uint64_t timeout_ms,
                                     osp_store_text_cb *cb, void *ctx, const char **error_r);
/* Put running jobs claimed more than stale_ms ago back in the queue; id:
 * how many. */
osp_store_req_t *osp_store_job_reclaim(osp_store_t *st, uint64_t stale_ms, uint64_t timeout_ms,
                                       osp_store_id_cb *cb, void *ctx, const char **error_r);
/* Periodic jobs: enqueue kind (no account) unless one is queued or
 * running or was created less than every_ms ago, serialised across
 * workers (osprey_job_schedule).  id: the new job; NOT_FOUND: not needed. */
osp_store_req_t *osp_store_job_schedule(osp_store_t *st, const char *kind,
                                        const char *payload_json, uint64_t every_ms,
                                        int max_attempts, uint64_t timeout_ms,
                                        osp_store_id_cb *cb, void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Maintenance, one task per call (each its own transaction, so locks on
 * the partitioned tables are held briefly).  arg is the task's setting;
 * a job's payload_json (NULL: "{}") may override it with the key named
 * below.  id: the task's count (partitions created or dropped, rows).
 */
enum osp_store_maint_task {
    OSP_MAINT_PARTITIONS_ENSURE,  /* arg: days ahead ("partitions_ahead") */
    OSP_MAINT_QUARANTINE_EXPIRE,  /* arg: days kept ("quarantine_days") */
    OSP_MAINT_LOG_EXPIRE,         /* arg: days kept ("log_days") */
    OSP_MAINT_QUARANTINE_GC,      /* arg: bodies per call ("gc_batch") */
    OSP_MAINT_RATE_EXPIRE,        /* arg unused */
    OSP_MAINT_JOBS_EXPIRE,        /* arg: finished jobs kept, ms ("jobs_keep_ms") */
    OSP_MAINT_LOG_INDEX,          /* arg: rows per batch ("batch"); migration 008 */
};
osp_store_req_t *osp_store_maint(osp_store_t *st, enum osp_store_maint_task task, int64_t arg,
                                 const char *payload_json, uint64_t timeout_ms,
                                 osp_store_id_cb *cb, void *ctx, const char **error_r);

/* ------------------------------------------------------------------
 * Log writer: message_log rows, batched with COPY on a connection of its
 * own.  osp_store_log_append() copies the row into a bounded in-memory
 * queue and never blocks; a batch goes out when batch_max rows are queued
 * or flush_interval_ms after the first.  While the database is unreachable
 * (or the queue is full) rows go to the journal file instead, appended
 * and fsynced off the loop thread in groups; when the database is back the
 * journal is replayed and then removed.
 *
 * Exactly once: every row gets a unique (id, logged_at) at append time
 * (message_log's primary key; the id has bit 62 set so it never meets the
 * sequence's values).  Replays insert through a staging table with
 * ON CONFLICT DO NOTHING, so a replay repeated after a crash between its
 * commit and the journal's removal adds nothing.  A batch whose COPY
 * outcome is unknown (connection lost during it) is journaled too.
 *
 * Window of loss: rows still in memory when the process is killed (at
 * most flush_interval_ms worth, or batch_max rows), and journal appends
 * not yet fsynced (at most journal_sync_ms).  osp_store_log_free() writes
 * what is in memory to the journal synchronously, so a clean stop loses
 * nothing.
 */
typedef struct osp_store_log osp_store_log_t;
typedef struct osp_store_log_conf {
    const char *journal_path;     /* copied; required */
    size_t queue_max;             /* rows in memory (default 100000) */
    size_t batch_max;             /* rows per COPY (default 5000) */
    uint64_t flush_interval_ms;   /* default 200 */
    uint64_t journal_sync_ms;     /* group fsyncs of the journal (default 100) */
    uint64_t retry_ms;            /* reconnect back-off start (default 500) */
} osp_store_log_conf_t;
typedef struct osp_store_log_row {
    int64_t logged_at_us;         /* Unix microseconds; 0: now */
    int64_t account_id;           /* < 0: NULL */
    const char *queue_id, *reinject_queue_id, *message_id;
    const char *client_address;   /* dropped (NULL) if it does not parse */
    const char *client_name, *helo, *sender, *recipient, *subject;
    int64_t size;                 /* < 0: NULL */
    double score;                 /* NaN: NULL */
    const char *verdict;
    const char *const *rules_hit;
    size_t nrules_hit;
    const char *delivery;
} osp_store_log_row_t;
typedef struct osp_store_log_stats {
    uint64_t appended;            /* rows accepted */
    uint64_t committed;           /* rows COPYed (first attempts) */
    uint64_t journaled;           /* rows written to the journal */
    uint64_t replayed;            /* journal rows sent again (duplicates included) */
    uint64_t dropped;             /* rows lost: journal unwritable */
    uint64_t bad;                 /* rows the database refused, set aside in PATH.bad */
    size_t queued;                /* in memory now */
    bool replaying;
    bool journal_pending;         /* a journal exists that is not replayed yet */
    bool connected;
} osp_store_log_stats_t;

/*
 * Uses st's loop and connection string (copied: the writer does not keep
 * st).  Returns NULL with *error_r (static) if the journal directory is
 * unusable.  A journal left by a previous run is replayed once connected.
 */
osp_store_log_t *osp_store_log_create(osp_store_t *st, const osp_store_log_conf_t *conf,
                                      const char **error_r);
/*
 * Copy and queue one row.  Strings may hold any bytes: invalid UTF-8 and
 * control characters are replaced.  Returns 0, or -1 if the row was
 * dropped (queue full and journal unwritable).
 */
int osp_store_log_append(osp_store_log_t *lw, const osp_store_log_row_t *row);
void osp_store_log_stats(const osp_store_log_t *lw, osp_store_log_stats_t *stats_r);
/*
 * Stop: rows in memory and any batch whose COPY has not been confirmed are
 * written (and fsynced) to the journal, synchronously; then handles close.
 * NULL is fine; clears *lw.
 */
void osp_store_log_free(osp_store_log_t **lw);

#endif
