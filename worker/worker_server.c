/*
 * worker_server: osprey-worker's loop.  Claims due jobs of the kinds in
 * worker_kinds[] when a NOTIFY on osprey_jobs arrives (or after every
 * (re)connect of the listening connection) and every worker_poll_interval,
 * never more than worker_concurrency at once; runs each through its kind;
 * completes or fails it (osprey_job_fail: back-off, then dead).  Timers
 * schedule the periodic maintenance and log_index jobs (deduplicated in
 * the database, so any number of workers make one job per interval) and
 * reclaim jobs whose worker died.
 *
 * Shutdown: stop claiming and scheduling, let running jobs finish (each
 * store call has its deadline), at most worker_shutdown_timeout; jobs
 * still running then are abandoned to osprey_job_reclaim on another worker.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "worker.h"

#define WORKER_MAX_KINDS 32

struct worker_server {
    uv_loop_t *loop;
    osp_store_t *st;              /* borrowed */
    worker_conf_t conf;
    char name[320];               /* "host:pid", recorded in jobs.locked_by */
    const char *kinds[WORKER_MAX_KINDS];
    size_t nkinds;

    uv_timer_t poll_timer, maint_timer, index_timer, stop_timer;
    int open_handles;
    bool freeing;

    osp_store_req_t *dequeue_req;
    unsigned dequeue_asked;
    bool dequeue_again;
    osp_store_req_t *reclaim_req, *maint_sched_req, *index_sched_req, *more_req;

    worker_job_t *jobs;           /* running, owned */
    unsigned nrunning;

    bool stopping, stopped_called;
    worker_stopped_fn *stopped;
    void *stopped_ctx;
};

static void server_kick(worker_server_t *srv);
static void server_check_stopped(worker_server_t *srv);

/* ------------------------------------------------------------ jobs */

static uint64_t job_elapsed_ms(const worker_job_t *job)
{
    return uv_now(job->server->loop) - job->started_ms;
}

static void job_free(worker_job_t *job)
{
    if (job->abandon != NULL)
        job->abandon(job);
    osp_store_cancel(&job->req);
    free(job->kind);
    free(job->payload_json);
    free(job);
}

static void job_unlink(worker_job_t *job)
{
    worker_server_t *srv = job->server;

    if (job->prev != NULL)
        job->prev->next = job->next;
    else
        srv->jobs = job->next;
    if (job->next != NULL)
        job->next->prev = job->prev;
    srv->nrunning--;
}

static void server_more_cb(void *ctx, int status, int64_t id, const char *error)
{
    worker_server_t *srv = ctx;

    srv->more_req = NULL;
    if (status == OSP_STORE_TEMPFAIL)
        osp_warn("cannot queue follow-up job: %s", error ? error : "failed");
    else if (status == OSP_STORE_OK)
        osp_debug(1, "follow-up job=%" PRId64 " queued", id);
}

/* The job is over (complete/fail answered, or could not be sent). */
static void job_end(worker_job_t *job)
{
    worker_server_t *srv = job->server;
    const char *error;

    job_unlink(job);
    if (job->more && !srv->stopping && srv->more_req == NULL)
        srv->more_req = osp_store_job_schedule(srv->st, job->kind, NULL, 0, 0, 0, server_more_cb,
                                               srv, &error);
    job_free(job);
    server_kick(srv);
    server_check_stopped(srv);
}

static void job_complete_cb(void *ctx, int status, const char *error)
{
    worker_job_t *job = ctx;

    job->req = NULL;
    if (status == OSP_STORE_OK)
        osp_info("job=%" PRId64 " kind=%s attempt=%d: done delay=%.3f", job->id, job->kind,
                 job->attempts, (double)job_elapsed_ms(job) / 1e3);
    else if (status == OSP_STORE_NOT_FOUND)
        osp_warn("job=%" PRId64 " kind=%s: done, but it was no longer ours (reclaimed)",
                 job->id, job->kind);
    else
        osp_warn("job=%" PRId64 " kind=%s: done, but cannot record it: %s; it will be "
                 "reclaimed and run again", job->id, job->kind, error ? error : "failed");
    job_end(job);
}

static void job_fail_cb(void *ctx, int status, const char *state, const char *error)
{
    worker_job_t *job = ctx;

    job->req = NULL;
    if (status == OSP_STORE_OK && strcmp(state, "dead") == 0)
        osp_warn("job=%" PRId64 " kind=%s attempt=%d: dead", job->id, job->kind, job->attempts);
    else if (status == OSP_STORE_OK)
        osp_info("job=%" PRId64 " kind=%s attempt=%d: retry later", job->id, job->kind,
                 job->attempts);
    else if (status == OSP_STORE_NOT_FOUND)
        osp_warn("job=%" PRId64 " kind=%s: no longer ours (reclaimed)", job->id, job->kind);
    else
        osp_warn("job=%" PRId64 " kind=%s: cannot record the failure: %s", job->id, job->kind,
                 error ? error : "failed");
    job_end(job);
}

void worker_job_finish(worker_job_t *job, int status, const char *error)
{
    worker_server_t *srv = job->server;
    const char *err2;

    if (job->finishing)
        osp_panic("job %" PRId64 " finished twice", job->id);
    job->finishing = true;
    osp_store_cancel(&job->req);
    if (status == OSP_STORE_OK) {
        job->req = osp_store_job_complete(srv->st, job->id, 0, job_complete_cb, job, &err2);
    } else {
        osp_warn("job=%" PRId64 " kind=%s attempt=%d: failed: %s", job->id, job->kind,
                 job->attempts, error ? error : "unknown error");
        /* A permanent failure: this attempt is the last one. */
        int max = status == WORKER_JOB_PERMANENT ? job->attempts : srv->conf.max_attempts;
        job->req = osp_store_job_retry(srv->st, job->id, error ? error : "unknown error",
                                       srv->conf.retry_backoff_ms, max, 0, job_fail_cb, job,
                                       &err2);
    }
    if (job->req == NULL) {
        osp_warn("job=%" PRId64 " kind=%s: cannot record its outcome: %s; it will be reclaimed",
                 job->id, job->kind, err2);
        job_end(job);
    }
}

static void job_start(worker_server_t *srv, const osp_store_job_t *j)
{
    worker_job_t *job = osp_calloc(1, sizeof(*job));

    job->server = srv;
    job->st = srv->st;
    job->loop = srv->loop;
    job->conf = &srv->conf;
    job->id = j->id;
    job->account_id = j->account_id;
    job->attempts = j->attempts;
    job->kind = osp_strdup(j->kind);
    job->payload_json = osp_strdup(j->payload_json);
    job->k = worker_kind_find(job->kind);
    job->started_ms = uv_now(srv->loop);
    job->next = srv->jobs;
    if (srv->jobs != NULL)
        srv->jobs->prev = job;
    srv->jobs = job;
    srv->nrunning++;
    osp_info("job=%" PRId64 " kind=%s attempt=%d: started", job->id, job->kind, job->attempts);
    if (job->k == NULL)
        worker_job_finish(job, OSP_STORE_TEMPFAIL, "no handler for this kind");
    else
        job->k->start(job);
}

/* ------------------------------------------------------------ claiming */

static void server_dequeue_cb(void *ctx, int status, const osp_store_job_t *jobs, size_t n,
                              const char *error)
{
    worker_server_t *srv = ctx;
    size_t i;

    srv->dequeue_req = NULL;
    if (status == OSP_STORE_OK) {
        if (n >= srv->dequeue_asked)
            srv->dequeue_again = true;      /* there may be more due */
        for (i = 0; i < n; i++)
            job_start(srv, &jobs[i]);
    } else if (status == OSP_STORE_TEMPFAIL) {
        osp_warn("cannot claim jobs: %s", error ? error : "failed");
        srv->dequeue_again = false;         /* the poll timer tries again */
    }
    if (srv->dequeue_again)
        server_kick(srv);
    server_check_stopped(srv);
}

/* Claim as many due jobs as there are free slots (one claim in flight). */
static void server_kick(worker_server_t *srv)
{
    const char *error;

    if (srv->stopping)
        return;
    if (srv->dequeue_req != NULL) {
        srv->dequeue_again = true;
        return;
    }
    srv->dequeue_again = false;
    if (srv->nrunning >= srv->conf.concurrency)
        return;                             /* job_end kicks again */
    srv->dequeue_asked = srv->conf.concurrency - srv->nrunning;
    srv->dequeue_req = osp_store_job_dequeue(srv->st, srv->name, srv->kinds, srv->nkinds,
                                             srv->dequeue_asked, 0, server_dequeue_cb, srv,
                                             &error);
    if (srv->dequeue_req == NULL)
        osp_debug(1, "cannot claim jobs: %s", error);
}

static void server_notify_cb(void *ctx, const char *channel, const char *payload)
{
    worker_server_t *srv = ctx;

    (void)channel;
    /* payload NULL: (re)connected, notifications may have been missed */
    if (payload == NULL || worker_kind_find(payload) != NULL)
        server_kick(srv);
}

/* ------------------------------------------------------------ timers */

static void server_reclaim_cb(void *ctx, int status, int64_t n, const char *error)
{
    worker_server_t *srv = ctx;

    srv->reclaim_req = NULL;
    if (status == OSP_STORE_OK && n > 0) {
        osp_warn("reclaimed %" PRId64 " job(s) running for more than %" PRIu64 " s", n,
                 srv->conf.reclaim_after_ms / 1000);
        server_kick(srv);
    } else if (status == OSP_STORE_TEMPFAIL) {
        osp_debug(1, "reclaim: %s", error ? error : "failed");
    }
}

static void server_poll_cb(uv_timer_t *t)
{
    worker_server_t *srv = t->data;
    const char *error;

    server_kick(srv);
    if (srv->reclaim_req == NULL)
        srv->reclaim_req = osp_store_job_reclaim(srv->st, srv->conf.reclaim_after_ms, 0,
                                                 server_reclaim_cb, srv, &error);
}

static void server_sched_cb(worker_server_t *srv, osp_store_req_t **slot, const char *kind,
                            int status, int64_t id, const char *error)
{
    (void)srv;
    *slot = NULL;
    if (status == OSP_STORE_OK)
        osp_debug(1, "scheduled job=%" PRId64 " kind=%s", id, kind);
    else if (status == OSP_STORE_TEMPFAIL)
        osp_warn("cannot schedule a %s job: %s", kind, error ? error : "failed");
}

static void server_maint_sched_cb(void *ctx, int status, int64_t id, const char *error)
{
    worker_server_t *srv = ctx;

    server_sched_cb(srv, &srv->maint_sched_req, "maintenance", status, id, error);
}

static void server_index_sched_cb(void *ctx, int status, int64_t id, const char *error)
{
    worker_server_t *srv = ctx;

    server_sched_cb(srv, &srv->index_sched_req, "log_index", status, id, error);
}

/* A little less than the interval: workers' timers drift apart. */
static uint64_t sched_window(uint64_t interval_ms)
{
    return interval_ms - interval_ms / 10;
}

static void server_maint_cb(uv_timer_t *t)
{
    worker_server_t *srv = t->data;
    const char *error;

    if (srv->maint_sched_req == NULL)
        srv->maint_sched_req = osp_store_job_schedule(
            srv->st, "maintenance", NULL, sched_window(srv->conf.maintenance_interval_ms), 0, 0,
            server_maint_sched_cb, srv, &error);
}

static void server_index_cb(uv_timer_t *t)
{
    worker_server_t *srv = t->data;
    const char *error;

    if (srv->index_sched_req == NULL)
        srv->index_sched_req = osp_store_job_schedule(
            srv->st, "log_index", NULL, sched_window(srv->conf.log_index_interval_ms), 0, 0,
            server_index_sched_cb, srv, &error);
}

/* ------------------------------------------------------------ life */

worker_server_t *worker_server_create(uv_loop_t *loop, osp_store_t *st, const worker_conf_t *conf)
{
    worker_server_t *srv = osp_calloc(1, sizeof(*srv));
    char host[256];
    size_t i;

    srv->loop = loop;
    srv->st = st;
    srv->conf = *conf;
    if (gethostname(host, sizeof(host)) < 0)
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(srv->name, sizeof(srv->name), "%s:%ld", host, (long)getpid());
    for (i = 0; worker_kinds[i].name != NULL; i++) {
        if (i >= WORKER_MAX_KINDS)
            osp_panic("worker_kinds[]: more than %d kinds", WORKER_MAX_KINDS);
        srv->kinds[srv->nkinds++] = worker_kinds[i].name;
    }

    uv_timer_init(loop, &srv->poll_timer);
    uv_timer_init(loop, &srv->maint_timer);
    uv_timer_init(loop, &srv->index_timer);
    uv_timer_init(loop, &srv->stop_timer);
    srv->open_handles = 4;
    srv->poll_timer.data = srv->maint_timer.data = srv->index_timer.data = srv;
    srv->stop_timer.data = srv;

    if (osp_store_listen(st, "osprey_jobs", server_notify_cb, srv) < 0)
        osp_panic("osp_store_listen refused osprey_jobs");
    uv_timer_start(&srv->poll_timer, server_poll_cb, 0, srv->conf.poll_interval_ms);
    uv_timer_start(&srv->maint_timer, server_maint_cb, 0, srv->conf.maintenance_interval_ms);
    uv_timer_start(&srv->index_timer, server_index_cb, srv->conf.log_index_interval_ms,
                   srv->conf.log_index_interval_ms);
    osp_info("worker %s: claiming up to %u job(s) at once", srv->name, srv->conf.concurrency);
    return srv;
}

static void server_stopped_cb(uv_timer_t *t)
{
    worker_server_t *srv = t->data;

    osp_info("stopped");
    srv->stopped(srv->stopped_ctx);
}

/* Everything settled: tell the owner from a fresh loop iteration, never
 * from inside a store callback (the owner frees the store). */
static void server_check_stopped(worker_server_t *srv)
{
    if (!srv->stopping || srv->stopped_called || srv->freeing || srv->nrunning > 0 ||
        srv->dequeue_req != NULL)
        return;
    srv->stopped_called = true;
    uv_timer_stop(&srv->stop_timer);
    uv_timer_start(&srv->stop_timer, server_stopped_cb, 0, 0);
}

/* Abandon every job still running (left for osprey_job_reclaim). */
static void server_abandon(worker_server_t *srv)
{
    worker_job_t *job;

    osp_store_cancel(&srv->dequeue_req);
    while ((job = srv->jobs) != NULL) {
        osp_warn("job=%" PRId64 " kind=%s: abandoned at shutdown, left for reclaim", job->id,
                 job->kind);
        job_unlink(job);
        job_free(job);
    }
}

static void server_stop_timeout_cb(uv_timer_t *t)
{
    worker_server_t *srv = t->data;

    osp_warn("%u job(s) still running after worker_shutdown_timeout", srv->nrunning);
    server_abandon(srv);
    server_check_stopped(srv);
}

void worker_server_shutdown(worker_server_t *srv, worker_stopped_fn *stopped, void *ctx)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    srv->stopped = stopped;
    srv->stopped_ctx = ctx;
    uv_timer_stop(&srv->poll_timer);
    uv_timer_stop(&srv->maint_timer);
    uv_timer_stop(&srv->index_timer);
    osp_store_cancel(&srv->reclaim_req);
    osp_store_cancel(&srv->maint_sched_req);
    osp_store_cancel(&srv->index_sched_req);
    osp_store_cancel(&srv->more_req);
    osp_info("stopping: %u job(s) running", srv->nrunning);
    uv_timer_start(&srv->stop_timer, server_stop_timeout_cb, srv->conf.shutdown_timeout_ms, 0);
    server_check_stopped(srv);
}

static void server_close_cb(uv_handle_t *h)
{
    worker_server_t *srv = h->data;

    if (--srv->open_handles == 0)
        free(srv);
}

void worker_server_free(worker_server_t **srvp)
{
    worker_server_t *srv = *srvp;

    if (srv == NULL)
        return;
    *srvp = NULL;
    if (srv->freeing)
        return;
    srv->freeing = true;
    srv->stopping = true;
    osp_store_cancel(&srv->reclaim_req);
    osp_store_cancel(&srv->maint_sched_req);
    osp_store_cancel(&srv->index_sched_req);
    osp_store_cancel(&srv->more_req);
    server_abandon(srv);
    uv_close((uv_handle_t *)&srv->poll_timer, server_close_cb);
    uv_close((uv_handle_t *)&srv->maint_timer, server_close_cb);
    uv_close((uv_handle_t *)&srv->index_timer, server_close_cb);
    uv_close((uv_handle_t *)&srv->stop_timer, server_close_cb);
}
