/*
 * worker_jobs: the job kinds osprey-worker runs, one start function per
 * kind, registered in worker_kinds[].  A handler issues store calls on
 * job->st (keeping the request in job->req so a shutdown can cancel it),
 * keeps its progress in job->step / job->count, and ends with exactly one
 * worker_job_finish().  A failure is retried with back-off by the server,
 * so handlers must be idempotent.  To add a kind (release, train), write
 * its start function here and add a line to worker_kinds[].
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "osp_log.h"
#include "worker.h"

/* ------------------------------------------------------------ noop */

/* Does nothing: checks that workers are alive and claim jobs. */
static void job_noop_start(worker_job_t *job)
{
    worker_job_finish(job, OSP_STORE_OK, NULL);
}

/* ------------------------------------------------------------ maintenance */

/*
 * Partitions ahead, expiry of quarantine and message_log partitions,
 * unreferenced quarantine bodies, rate counters, old finished jobs: one
 * task (and one transaction) after the other.  The payload may override
 * the settings ({"quarantine_days": 10, ...}, see osp_store_maint()).
 */
static const struct maint_step {
    enum osp_store_maint_task task;
    const char *what;
} maint_steps[] = {
    { OSP_MAINT_PARTITIONS_ENSURE, "partitions_created" },
    { OSP_MAINT_QUARANTINE_EXPIRE, "quarantine_partitions_dropped" },
    { OSP_MAINT_LOG_EXPIRE, "log_partitions_dropped" },
    { OSP_MAINT_QUARANTINE_GC, "bodies_deleted" },
    { OSP_MAINT_RATE_EXPIRE, "counters_deleted" },
    { OSP_MAINT_JOBS_EXPIRE, "jobs_deleted" },
};
#define MAINT_NSTEPS (sizeof(maint_steps) / sizeof(maint_steps[0]))

static void job_maint_next(worker_job_t *job);

static void job_maint_cb(void *ctx, int status, int64_t n, const char *error)
{
    worker_job_t *job = ctx;

    job->req = NULL;
    if (status == OSP_STORE_TEMPFAIL) {
        osp_warn("job=%" PRId64 " kind=maintenance step=%s: %s", job->id,
                 maint_steps[job->step].what, error ? error : "failed");
        worker_job_finish(job, status, error);
        return;
    }
    osp_info("job=%" PRId64 " kind=maintenance %s=%" PRId64, job->id,
             maint_steps[job->step].what, status == OSP_STORE_OK ? n : 0);
    job->step++;
    job_maint_next(job);
}

static int64_t maint_arg(const worker_job_t *job, enum osp_store_maint_task task)
{
    switch (task) {
    case OSP_MAINT_PARTITIONS_ENSURE:
        return job->conf->partitions_ahead;
    case OSP_MAINT_QUARANTINE_EXPIRE:
        return job->conf->quarantine_days;
    case OSP_MAINT_LOG_EXPIRE:
        return job->conf->log_days;
    case OSP_MAINT_QUARANTINE_GC:
        return 10000;
    case OSP_MAINT_RATE_EXPIRE:
        return 0;
    case OSP_MAINT_JOBS_EXPIRE:
        return (int64_t)job->conf->job_retention_ms;
    case OSP_MAINT_LOG_INDEX:
        return job->conf->log_index_batch;
    default:
        osp_panic("maint_arg: task %d", (int)task);
    }
}

static void job_maint_next(worker_job_t *job)
{
    const char *error;

    if ((size_t)job->step >= MAINT_NSTEPS) {
        worker_job_finish(job, OSP_STORE_OK, NULL);
        return;
    }
    job->req = osp_store_maint(job->st, maint_steps[job->step].task,
                               maint_arg(job, maint_steps[job->step].task), job->payload_json, 0,
                               job_maint_cb, job, &error);
    if (job->req == NULL)
        worker_job_finish(job, OSP_STORE_TEMPFAIL, error);
}

static void job_maintenance_start(worker_job_t *job)
{
    job->step = 0;
    job_maint_next(job);
}

/* ------------------------------------------------------------ log_index */

/*
 * Deferred full-text indexing of message_log (migration 008): up to
 * worker_log_index_batches statements of worker_log_index_batch rows; if
 * the last one was full there is more, and the server queues another
 * log_index job once this one is done.
 */
static void job_log_index_next(worker_job_t *job);

static void job_log_index_cb(void *ctx, int status, int64_t n, const char *error)
{
    worker_job_t *job = ctx;

    job->req = NULL;
    if (status != OSP_STORE_OK) {
        worker_job_finish(job, OSP_STORE_TEMPFAIL, error ? error : "no answer");
        return;
    }
    job->count += n;
    job->step++;
    if (n < job->conf->log_index_batch) {
        if (job->count > 0)
            osp_info("job=%" PRId64 " kind=log_index rows=%" PRId64, job->id, job->count);
        worker_job_finish(job, OSP_STORE_OK, NULL);
        return;
    }
    if (job->step >= job->conf->log_index_batches) {
        osp_info("job=%" PRId64 " kind=log_index rows=%" PRId64 " more=yes", job->id, job->count);
        job->more = true;
        worker_job_finish(job, OSP_STORE_OK, NULL);
        return;
    }
    job_log_index_next(job);
}

static void job_log_index_next(worker_job_t *job)
{
    const char *error;

    job->req = osp_store_maint(job->st, OSP_MAINT_LOG_INDEX, job->conf->log_index_batch,
                               job->payload_json, 0, job_log_index_cb, job, &error);
    if (job->req == NULL)
        worker_job_finish(job, OSP_STORE_TEMPFAIL, error);
}

static void job_log_index_start(worker_job_t *job)
{
    job->step = 0;
    job->count = 0;
    job_log_index_next(job);
}

/* ------------------------------------------------------------ registry */

const worker_kind_t worker_kinds[] = {
    { "maintenance", job_maintenance_start },
    { "log_index", job_log_index_start },
    { "noop", job_noop_start },
    /* { "release", job_release_start },   quarantine release: to come */
    /* { "train", job_train_start },       Bayes training: to come */
    { NULL, NULL },
};

const worker_kind_t *worker_kind_find(const char *name)
{
    const worker_kind_t *k;

    for (k = worker_kinds; k->name != NULL; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}
