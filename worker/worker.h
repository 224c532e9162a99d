/*
 * osprey-worker: runs deferred jobs from the database job queue.
 *
 * worker_server.c is the loop: it LISTENs on osprey_jobs and polls, claims
 * due jobs (SKIP LOCKED) up to worker_concurrency, runs each through its
 * kind's handler, then completes it or fails it (retry with back-off, dead
 * after worker_max_attempts); it schedules the periodic jobs (maintenance,
 * log_index) without duplicates across workers and reclaims jobs of
 * workers that died.  worker_jobs.c holds the kinds: one start function
 * per kind in worker_kinds[], which is also the list of kinds this worker
 * claims.
 */
#ifndef WORKER_H
#define WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "osp_config.h"
#include "osp_store.h"

/* worker_params.c */
extern const osp_param_def_t worker_params[];

/* Settings, read once at start (worker_conf_load). */
typedef struct worker_conf {
    unsigned concurrency;
    int max_attempts;
    uint64_t retry_backoff_ms, poll_interval_ms, reclaim_after_ms, shutdown_timeout_ms;
    uint64_t maintenance_interval_ms, log_index_interval_ms, job_retention_ms;
    int partitions_ahead, quarantine_days, log_days;
    int log_index_batch, log_index_batches;
    /* release jobs: borrowed from the configuration, which outlives the
     * server */
    const char *conninfo, *release_address, *release_helo;
    uint64_t connect_timeout_ms, release_timeout_ms;
    uint64_t query_timeout_ms;    /* statements of train jobs */
} worker_conf_t;
void worker_conf_load(const osp_config_t *cfg, worker_conf_t *conf_r);

typedef struct worker_server worker_server_t;
typedef struct worker_job worker_job_t;

/* A claimed job while it runs; owned by the server. */
struct worker_job {
    worker_server_t *server;
    osp_store_t *st;              /* borrowed */
    uv_loop_t *loop;              /* borrowed */
    const worker_conf_t *conf;    /* borrowed */
    int64_t id, account_id;       /* account_id -1: none */
    int attempts;                 /* including this one */
    char *kind, *payload_json;    /* owned copies */
    const struct worker_kind *k;
    osp_store_req_t *req;         /* the handler's request in flight, if any */
    int step;                     /* the handler's progress */
    int64_t count;                /* the handler's tally */
    bool more;                    /* more work: schedule the kind again when done */
    bool finishing;               /* complete/fail sent */
    uint64_t started_ms;
    /* A handler running work outside the store (thread pool) sets abandon:
     * the server calls it when it frees the job before the handler
     * finished (shutdown timeout), so the handler lets go of the job. */
    void (*abandon)(worker_job_t *job);
    void *work;
    worker_job_t *next, *prev;
};

/* worker_jobs.c: the job kinds.  start() begins the work; the handler
 * calls worker_job_finish() exactly once, possibly from start() itself. */
typedef struct worker_kind {
    const char *name;
    void (*start)(worker_job_t *job);
} worker_kind_t;
extern const worker_kind_t worker_kinds[];     /* ends with { NULL, NULL } */
const worker_kind_t *worker_kind_find(const char *name);

/* worker_server.c */
/*
 * status OSP_STORE_OK: done; WORKER_JOB_PERMANENT: failed for good (dead at
 * once, not retried); anything else: failed, retried with back-off until
 * max_attempts (error: why, borrowed).
 */
#define WORKER_JOB_PERMANENT 1
void worker_job_finish(worker_job_t *job, int status, const char *error);

typedef void worker_stopped_fn(void *ctx);
/* Start on loop with store st (borrowed; outlives the server).  conf copied. */
worker_server_t *worker_server_create(uv_loop_t *loop, osp_store_t *st, const worker_conf_t *conf);
/* Stop claiming; let running jobs finish (at most shutdown_timeout_ms),
 * then call stopped(ctx) once.  Then free the server and the store. */
void worker_server_shutdown(worker_server_t *srv, worker_stopped_fn *stopped, void *ctx);
/* Close the handles; memory goes in the last close callback.  NULL is fine;
 * clears *srv. */
void worker_server_free(worker_server_t **srv);

#endif
