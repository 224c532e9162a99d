/*
 * worker_jobs: the job kinds osprey-worker runs, one start function per
 * kind, registered in worker_kinds[].  A handler issues store calls on
 * job->st (keeping the request in job->req so a shutdown can cancel it),
 * keeps its progress in job->step / job->count, and ends with exactly one
 * worker_job_finish().  A failure is retried with back-off by the server,
 * so handlers must be idempotent.  To add a kind, write its start
 * function here and add a line to worker_kinds[].
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "osp_bayes.h"
#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
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

/* ------------------------------------------------------------ thread-pool jobs */

/*
 * The blocking connection of a job running in the thread pool (release,
 * train): database_connection with the connect timeout (whole seconds,
 * at least 2, libpq's minimum) and timeout_ms as the statement timeout.
 * Check PQstatus(); PQfinish() it either way.
 */
static PGconn *job_pg_connect(const char *conninfo, const char *application,
                              uint64_t connect_timeout_ms, uint64_t timeout_ms)
{
    char ctimeout[32], options[64];
    const char *const keys[] = { "connect_timeout", "application_name", "options", "dbname",
                                 NULL };
    const char *vals[] = { ctimeout, application, options, conninfo, NULL };
    uint64_t secs = (connect_timeout_ms + 999) / 1000;

    snprintf(ctimeout, sizeof(ctimeout), "%llu", (unsigned long long)(secs < 2 ? 2 : secs));
    snprintf(options, sizeof(options), "-c statement_timeout=%llu",
             (unsigned long long)timeout_ms);
    return PQconnectdbParams(keys, vals, 1);
}

/* A database error for a job's error text: "database: WHAT: first line". */
static void job_db_error(char *buf, size_t size, const char *what, PGconn *conn,
                         const PGresult *res)
{
    const char *m = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);

    snprintf(buf, size, "database: %s: %.*s", what,
             (int)strcspn(m && *m ? m : "failed", "\n"), m && *m ? m : "failed");
}

/* ------------------------------------------------------------ pool jobs */

/*
 * A job kind that runs in the thread pool with its own blocking libpq
 * connection (and, for release, its own SMTP socket) embeds pool_job_t
 * first.  pool_job_start() queues run(); on the loop, report() turns the
 * outcome into worker_job_finish() unless the server abandoned the job
 * meanwhile (shutdown), and free_fn() frees the kind's own fields.
 */
typedef struct pool_job pool_job_t;
struct pool_job {
    uv_work_t req;
    worker_job_t *job;            /* NULL once the server abandoned it */
    char *conninfo, *payload;     /* owned copies */
    int64_t job_id, account_id;
    uint64_t connect_timeout_ms, timeout_ms;
    char error[512];
    void (*run)(pool_job_t *pj);                        /* thread pool */
    void (*report)(pool_job_t *pj, worker_job_t *job);  /* loop thread */
    void (*free_fn)(pool_job_t *pj);                    /* or NULL */
};

static void pool_job_free(pool_job_t *pj)
{
    if (pj->free_fn)
        pj->free_fn(pj);
    free(pj->conninfo);
    free(pj->payload);
    free(pj);
}

static void pool_job_abandon(worker_job_t *job)
{
    pool_job_t *pj = job->work;

    pj->job = NULL;
    job->work = NULL;
    job->abandon = NULL;
}

static void pool_job_work_cb(uv_work_t *req)
{
    pool_job_t *pj = req->data;

    pj->run(pj);
}

static void pool_job_after_cb(uv_work_t *req, int status)
{
    pool_job_t *pj = req->data;
    worker_job_t *job = pj->job;

    if (job != NULL) {
        job->work = NULL;
        job->abandon = NULL;
        if (status != 0)
            worker_job_finish(job, OSP_STORE_TEMPFAIL, uv_strerror(status));
        else
            pj->report(pj, job);
    }
    pool_job_free(pj);
}

/*
 * Fill the common fields of pj (allocated by the caller, size bytes,
 * zeroed) and queue it; on failure the job is finished and pj freed.
 */
static void pool_job_start(worker_job_t *job, pool_job_t *pj, const char *kind,
                           uint64_t timeout_ms)
{
    int rc;

    if (job->account_id < 0) {
        char why[64];
        snprintf(why, sizeof(why), "%s job without an account", kind);
        pool_job_free(pj);
        worker_job_finish(job, OSP_STORE_TEMPFAIL, why);
        return;
    }
    pj->job = job;
    pj->conninfo = osp_strdup(job->conf->conninfo);
    pj->payload = osp_strdup(job->payload_json);
    pj->job_id = job->id;
    pj->account_id = job->account_id;
    pj->connect_timeout_ms = job->conf->connect_timeout_ms;
    pj->timeout_ms = timeout_ms;
    pj->req.data = pj;
    rc = uv_queue_work(job->loop, &pj->req, pool_job_work_cb, pool_job_after_cb);
    if (rc != 0) {
        pool_job_free(pj);
        worker_job_finish(job, OSP_STORE_TEMPFAIL, uv_strerror(rc));
        return;
    }
    job->work = pj;
    job->abandon = pool_job_abandon;
}

/* ------------------------------------------------------------ release */

/*
 * Release of a quarantined message, queued by "ospreyctl quarantine
 * release" with the payload {"quarantine_id": N, "day": "YYYY-MM-DD"} and
 * optionally "to": ADDRESS.  The work runs in the thread pool with its own
 * blocking libpq connection and SMTP socket (the loop thread never blocks):
 *   1. read the row and its body, only if the row belongs to the job's
 *      account and is release_requested.  An admin can queue jobs only for
 *      accounts of its subtree and set release_requested only on rows it
 *      sees (row-level security), so a job cannot name another tenant's
 *      message.  Already released: done (a retry after step 3).  Gone
 *      (deleted, expired) or back to another state: done, with a warning.
 *   2. send the stored message by SMTP to worker_release_address, with the
 *      original envelope sender and the row's recipient (or "to");
 *   3. mark the row released, and write the audit trail, in one statement
 *      guarded by release_state = 'release_requested'.
 * Delivery is at least once: a crash, or a lost database connection,
 * between 2 and 3 leaves the job to be retried (or reclaimed) and the
 * message is sent again; a row is never marked released unless the SMTP
 * server accepted the message.  Any failure is retried with back-off
 * (worker_retry_backoff) and the job is dead after worker_max_attempts.
 */
enum release_outcome { RELEASE_SENT, RELEASE_ALREADY, RELEASE_GONE, RELEASE_FAILED };

typedef struct release_work {
    pool_job_t base;              /* first */
    char *address, *helo;         /* owned copies */
    enum release_outcome outcome;
    char qid[32], rcpt[320], state[32];
    char reply[256];              /* the server's answer to the message */
} release_work_t;

/* Peer text made printable for the log. */
static void release_printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < ' ' || (unsigned char)*s >= 127 || *s == '"')
            *s = '?';
}

typedef struct release_smtp {
    int fd;
    char buf[4096];
    size_t have;
} release_smtp_t;

static int release_send_all(release_smtp_t *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Read one (possibly multi-line) reply; its code, or -1.  The last line
 * goes to text. */
static int release_reply(release_smtp_t *c, char *text, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->have);

        if (nl != NULL) {
            size_t len = (size_t)(nl - c->buf) + 1, l = len;
            bool last;
            int code;

            while (l > 0 && (c->buf[l - 1] == '\n' || c->buf[l - 1] == '\r'))
                l--;
            if (l < 3 || c->buf[0] < '2' || c->buf[0] > '5')
                return -1;
            code = (c->buf[0] - '0') * 100 + (c->buf[1] - '0') * 10 + (c->buf[2] - '0');
            last = l == 3 || c->buf[3] == ' ';
            snprintf(text, cap, "%.*s", (int)l, c->buf);
            memmove(c->buf, c->buf + len, c->have - len);
            c->have -= len;
            if (last)
                return code;
            continue;
        }
        if (c->have == sizeof(c->buf))
            return -1;
        {
            ssize_t k = recv(c->fd, c->buf + c->have, sizeof(c->buf) - c->have, 0);

            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                return -1;
            c->have += (size_t)k;
        }
    }
}

/* Send a command line and read the reply; 0 if it is 2xx (3xx for DATA). */
static int release_cmd(release_smtp_t *c, release_work_t *w, const char *line, int want)
{
    char reply[256];
    int code;

    if (line != NULL && release_send_all(c, line, strlen(line)) < 0) {
        snprintf(w->base.error, sizeof(w->base.error), "smtp %s: write failed: %s",
                 w->address, strerror(errno));
        return -1;
    }
    code = release_reply(c, reply, sizeof(reply));
    if (code / 100 != want) {
        char cmd[64];

        snprintf(cmd, sizeof(cmd), "%.*s", (int)strcspn(line ? line : "greeting", "\r:"),
                 line ? line : "greeting");
        release_printable(reply);
        release_printable(cmd);
        if (code < 0)
            snprintf(w->base.error, sizeof(w->base.error), "smtp %s: after %s: no valid reply (%s)",
                     w->address, cmd, errno ? strerror(errno) : "connection closed");
        else
            snprintf(w->base.error, sizeof(w->base.error), "smtp %s: after %s: %s", w->address, cmd,
                     reply);
        return -1;
    }
    snprintf(w->reply, sizeof(w->reply), "%s", reply);
    return 0;
}

static int release_connect(release_smtp_t *c, release_work_t *w)
{
    char host[256], port[16];
    const char *a = w->address, *colon;
    struct addrinfo hints, *res = NULL, *ai;
    struct timeval tv;
    int rc;

    if (a[0] == '[') {
        const char *end = strchr(a, ']');

        if (end == NULL || end[1] != ':')
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(end - a - 1), a + 1);
        colon = end + 1;
    } else {
        colon = strrchr(a, ':');
        if (colon == NULL)
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(colon - a), a);
    }
    snprintf(port, sizeof(port), "%s", colon + 1);
    if (host[0] == '\0' || port[0] == '\0')
        goto bad;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(w->base.error, sizeof(w->base.error), "worker_release_address %s: %s", a,
                 gai_strerror(rc));
        return -1;
    }
    tv.tv_sec = (time_t)(w->base.timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)(w->base.timeout_ms % 1000) * 1000;
    c->fd = -1;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (c->fd < 0)
            continue;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        snprintf(w->base.error, sizeof(w->base.error), "smtp %s: cannot connect: %s", a, strerror(errno));
        close(c->fd);
        c->fd = -1;
    }
    freeaddrinfo(res);
    return c->fd < 0 ? -1 : 0;
bad:
    snprintf(w->base.error, sizeof(w->base.error),
             "worker_release_address \"%s\": expected host:port or [address]:port", a);
    return -1;
}

/* The message with CRLF line ends, dot-stuffed, ending with CRLF.CRLF. */
static char *release_data(const char *body, size_t len, size_t *len_r)
{
    char *out = osp_calloc(1, len * 2 + 8), *o = out;
    bool bol = true;
    size_t i;

    for (i = 0; i < len; i++) {
        char ch = body[i];

        if (bol && ch == '.')
            *o++ = '.';
        if (ch == '\n') {
            if (i == 0 || body[i - 1] != '\r')
                *o++ = '\r';
            *o++ = '\n';
            bol = true;
            continue;
        }
        if (ch == '\r' && (i + 1 == len || body[i + 1] != '\n')) {
            *o++ = '\r';
            *o++ = '\n';
            bol = true;
            continue;
        }
        *o++ = ch;
        bol = false;
    }
    if (!bol) {
        *o++ = '\r';
        *o++ = '\n';
    }
    memcpy(o, ".\r\n", 3);
    o += 3;
    *len_r = (size_t)(o - out);
    return out;
}

/* An envelope address fit for "MAIL FROM:<...>": no controls, spaces or
 * angle brackets (a payload written by hand cannot inject commands). */
static bool release_address_ok(const char *a, bool may_be_empty)
{
    size_t n = strlen(a), i;

    if ((n == 0 && !may_be_empty) || n > 512)
        return false;
    for (i = 0; i < n; i++)
        if ((unsigned char)a[i] <= ' ' || (unsigned char)a[i] == 127 || a[i] == '<' ||
            a[i] == '>')
            return false;
    return true;
}

static int release_smtp_send(release_work_t *w, const char *sender, const char *rcpt,
                             const char *body, size_t len)
{
    release_smtp_t c;
    char line[1100];
    char *data;
    size_t dlen;
    int rc = -1;

    if (!release_address_ok(sender, true) || !release_address_ok(rcpt, false)) {
        snprintf(w->base.error, sizeof(w->base.error), "invalid envelope address (sender or recipient)");
        return -1;
    }
    memset(&c, 0, sizeof(c));
    if (release_connect(&c, w) < 0)
        return -1;
    if (release_cmd(&c, w, NULL, 2) < 0)
        goto out;
    snprintf(line, sizeof(line), "EHLO %s\r\n", w->helo);
    if (release_cmd(&c, w, line, 2) < 0) {
        snprintf(line, sizeof(line), "HELO %s\r\n", w->helo);
        if (release_cmd(&c, w, line, 2) < 0)
            goto out;
    }
    snprintf(line, sizeof(line), "MAIL FROM:<%s>\r\n", sender);
    if (release_cmd(&c, w, line, 2) < 0)
        goto out;
    snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", rcpt);
    if (release_cmd(&c, w, line, 2) < 0)
        goto out;
    if (release_cmd(&c, w, "DATA\r\n", 3) < 0)
        goto out;
    data = release_data(body, len, &dlen);
    if (release_send_all(&c, data, dlen) < 0) {
        snprintf(w->base.error, sizeof(w->base.error), "smtp %s: write failed: %s", w->address,
                 strerror(errno));
        free(data);
        goto out;
    }
    free(data);
    if (release_cmd(&c, w, NULL, 2) < 0)
        goto out;
    rc = 0;
    /* Accepted: the answer to QUIT does not matter any more. */
    (void)release_send_all(&c, "QUIT\r\n", 6);
out:
    close(c.fd);
    return rc;
}

static void release_db_error(release_work_t *w, const char *what, PGconn *conn,
                             const PGresult *res)
{
    job_db_error(w->base.error, sizeof(w->base.error), what, conn, res);
}

/* Thread pool: the whole release (see above). */
static void release_work(pool_job_t *pj)
{
    release_work_t *w = (release_work_t *)pj;
    char acct[32], jid[32];
    const char *p[5];
    PGconn *conn;
    PGresult *res = NULL;

    w->outcome = RELEASE_FAILED;
    snprintf(acct, sizeof(acct), "%" PRId64, w->base.account_id);
    snprintf(jid, sizeof(jid), "%" PRId64, w->base.job_id);
    conn = job_pg_connect(w->base.conninfo, "osprey-worker release", w->base.connect_timeout_ms,
                          w->base.timeout_ms);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        release_db_error(w, "connect", conn, NULL);
        goto out;
    }
    p[0] = w->base.payload;
    p[1] = acct;
    res = PQexecParams(conn,
                       "SELECT q.id::text, q.sender, q.recipient, q.release_state, b.body,"
                       " coalesce($1::jsonb->>'to', '')"
                       " FROM quarantine q JOIN quarantine_bodies b ON b.sha256 = q.body_sha256"
                       " WHERE q.id = ($1::jsonb->>'quarantine_id')::bigint"
                       "   AND ($1::jsonb->>'day' IS NULL OR q.day = ($1::jsonb->>'day')::date)"
                       "   AND q.account_id = $2::bigint",
                       2, NULL, p, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        release_db_error(w, "read", conn, res);
        goto out;
    }
    if (PQntuples(res) == 0) {
        PGresult *r2;

        w->outcome = RELEASE_GONE;
        snprintf(w->state, sizeof(w->state), "gone");
        r2 = PQexecParams(conn, "SELECT coalesce($1::jsonb->>'quarantine_id', '?')", 1, NULL,
                          p, NULL, NULL, 0);
        if (PQresultStatus(r2) == PGRES_TUPLES_OK && PQntuples(r2) == 1)
            snprintf(w->qid, sizeof(w->qid), "%s", PQgetvalue(r2, 0, 0));
        PQclear(r2);
        release_printable(w->qid);
        goto out;
    }
    snprintf(w->qid, sizeof(w->qid), "%s", PQgetvalue(res, 0, 0));
    snprintf(w->state, sizeof(w->state), "%s", PQgetvalue(res, 0, 3));
    snprintf(w->rcpt, sizeof(w->rcpt), "%s",
             *PQgetvalue(res, 0, 5) ? PQgetvalue(res, 0, 5) : PQgetvalue(res, 0, 2));
    if (strcmp(w->state, "released") == 0) {
        w->outcome = RELEASE_ALREADY;
        goto out;
    }
    if (strcmp(w->state, "release_requested") != 0) {
        w->outcome = RELEASE_GONE;
        goto out;
    }
    if (release_smtp_send(w, PQgetvalue(res, 0, 1), w->rcpt, PQgetvalue(res, 0, 4),
                          (size_t)PQgetlength(res, 0, 4)) < 0)
        goto out;
    PQclear(res);
    release_printable(w->reply);
    p[0] = w->qid;
    p[1] = acct;
    p[2] = jid;
    p[3] = w->rcpt;
    p[4] = w->reply;
    res = PQexecParams(conn,
                       "WITH u AS (UPDATE quarantine SET release_state = 'released',"
                       "                  released_at = now()"
                       "            WHERE id = $1::bigint AND account_id = $2::bigint"
                       "              AND release_state = 'release_requested'"
                       "           RETURNING id, account_id)"
                       " INSERT INTO audit_log (account_id, action, object_type, object_id,"
                       "                        details)"
                       " SELECT account_id, 'quarantine.released', 'quarantine', id::text,"
                       "        jsonb_build_object('job', $3::bigint, 'to', $4::text,"
                       "                           'reply', $5::text)"
                       "   FROM u",
                       5, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        /* Sent but not marked: the retry sends it again (at least once). */
        release_db_error(w, "sent, but cannot mark released", conn, res);
        goto out;
    }
    w->outcome = RELEASE_SENT;
out:
    PQclear(res);
    if (conn != NULL)
        PQfinish(conn);
}

static void release_report(pool_job_t *pj, worker_job_t *job)
{
    release_work_t *w = (release_work_t *)pj;

    switch (w->outcome) {
    case RELEASE_SENT:
        osp_info("job=%" PRId64 " kind=release quarantine_id=%s to=<%s> action=released "
                 "relay=%s reply=\"%s\"", job->id, w->qid, w->rcpt, w->address, w->reply);
        worker_job_finish(job, OSP_STORE_OK, NULL);
        break;
    case RELEASE_ALREADY:
        osp_info("job=%" PRId64 " kind=release quarantine_id=%s action=none "
                 "reason=\"already released\"", job->id, w->qid);
        worker_job_finish(job, OSP_STORE_OK, NULL);
        break;
    case RELEASE_GONE:
        osp_warn("job=%" PRId64 " kind=release quarantine_id=%s action=none "
                 "reason=\"message %s\"", job->id, w->qid[0] ? w->qid : "?",
                 strcmp(w->state, "gone") == 0 ? "deleted, expired or not of this account"
                                               : w->state);
        worker_job_finish(job, OSP_STORE_OK, NULL);
        break;
    case RELEASE_FAILED:
        worker_job_finish(job, OSP_STORE_TEMPFAIL, pj->error[0] ? pj->error : "failed");
        break;
    default:
        osp_panic("release: outcome %d", (int)w->outcome);
    }
}

static void release_free(pool_job_t *pj)
{
    release_work_t *w = (release_work_t *)pj;

    free(w->address);
    free(w->helo);
}

static void job_release_start(worker_job_t *job)
{
    release_work_t *w = osp_calloc(1, sizeof(*w));

    w->address = osp_strdup(job->conf->release_address);
    w->helo = osp_strdup(job->conf->release_helo);
    w->base.run = release_work;
    w->base.report = release_report;
    w->base.free_fn = release_free;
    pool_job_start(job, &w->base, "release", job->conf->release_timeout_ms);
}

/* ------------------------------------------------------------ train */

/*
 * Bayes training on a quarantined message, queued by "ospreyctl bayes
 * vote" and "ospreyctl quarantine release --train-ham" with the payload
 * {"quarantine_id": N, "day": "YYYY-MM-DD", "account_id": A,
 *  "class": "spam"|"ham"} for account A (the job's account; "day" is
 * optional).  In the thread pool, with its own blocking connection:
 *   1. read the stored message of row N, only if the row belongs to A or
 *      to an account below A (a job names only messages of its subtree);
 *   2. tokenize it as osprey-filter does before classifying
 *      (osp_bayes_tokenize_message) and call osprey_bayes_train() for A,
 *      which counts the message for A and for account 0 (the global
 *      counts), once per message: running the job again changes nothing,
 *      the other class moves the counts (sql/004).
 * A payload that is not of this form, or a message that is gone (deleted,
 * expired, not of A), cannot succeed later: the job finishes as
 * WORKER_JOB_PERMANENT, dead at once with the reason as last_error.
 * Anything else (database away, timeout) is retried with back-off.
 */
enum train_outcome { TRAIN_DONE, TRAIN_PERMANENT, TRAIN_FAILED };

typedef struct train_work {
    pool_job_t base;              /* first */
    enum train_outcome outcome;
    char qid[32], klass[8];
    char result[32];              /* osprey_bayes_train()'s answer */
    size_t ntokens;
} train_work_t;

static bool train_digits(const char *s)
{
    size_t n = strspn(s, "0123456789");

    return n > 0 && n <= 18 && s[n] == '\0';
}

/* Permanent: make this attempt the last one (the failure then buries it). */
/* Thread pool: the whole training (see above). */
static void train_work(pool_job_t *pj)
{
    train_work_t *w = (train_work_t *)pj;
    char acct[32], day[16];
    const char *p[4];
    PGconn *conn;
    PGresult *res = NULL;

    w->outcome = TRAIN_FAILED;
    snprintf(acct, sizeof(acct), "%" PRId64, w->base.account_id);
    conn = job_pg_connect(w->base.conninfo, "osprey-worker train", w->base.connect_timeout_ms,
                          w->base.timeout_ms);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        job_db_error(w->base.error, sizeof(w->base.error), "connect", conn, NULL);
        goto out;
    }
    /* The payload's fields as text, checked here, so that a bad payload is
     * a clear permanent error rather than a failing cast. */
    p[0] = w->base.payload;
    res = PQexecParams(conn,
                       "SELECT coalesce(j->>'quarantine_id', ''), coalesce(j->>'class', ''),"
                       " coalesce(j->>'account_id', ''), coalesce(j->>'day', '')"
                       " FROM (SELECT $1::jsonb AS j) s",
                       1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

        if (state != NULL && strncmp(state, "22", 2) == 0) {      /* data exception */
            snprintf(w->base.error, sizeof(w->base.error), "payload is not JSON");
            PQclear(res);
            res = NULL;
            w->outcome = TRAIN_PERMANENT;
            goto out;
        }
        job_db_error(w->base.error, sizeof(w->base.error), "payload", conn, res);
        goto out;
    }
    snprintf(w->qid, sizeof(w->qid), "%s", PQgetvalue(res, 0, 0));
    snprintf(w->klass, sizeof(w->klass), "%s", PQgetvalue(res, 0, 1));
    snprintf(day, sizeof(day), "%s", PQgetvalue(res, 0, 3));
    if (!train_digits(w->qid) ||
        (strcmp(w->klass, "spam") != 0 && strcmp(w->klass, "ham") != 0) ||
        (*PQgetvalue(res, 0, 2) != '\0' && strcmp(PQgetvalue(res, 0, 2), acct) != 0) ||
        (*day != '\0' && (strlen(day) != 10 || strspn(day, "0123456789-") != 10))) {
        snprintf(w->base.error, sizeof(w->base.error),
                 "bad payload: expected quarantine_id (a number), class (spam or ham), "
                 "optionally account_id (%s) and day (YYYY-MM-DD)", acct);
        release_printable(w->qid);
        release_printable(w->klass);
        PQclear(res);
        res = NULL;
        w->outcome = TRAIN_PERMANENT;
        goto out;
    }
    PQclear(res);
    p[0] = w->qid;
    p[1] = day;
    p[2] = acct;
    /* Binary results: the body comes back as its exact bytes. */
    res = PQexecParams(conn,
                       "SELECT b.body FROM quarantine q"
                       " JOIN quarantine_bodies b ON b.sha256 = q.body_sha256"
                       " WHERE q.id = $1::bigint"
                       "   AND ($2 = '' OR q.day = nullif($2, '')::date)"
                       "   AND q.account_id IN (SELECT d.id FROM accounts d"
                       "     WHERE d.path <@ (SELECT r.path FROM accounts r"
                       "                       WHERE r.id = $3::bigint))",
                       3, NULL, p, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        job_db_error(w->base.error, sizeof(w->base.error), "read", conn, res);
        goto out;
    }
    if (PQntuples(res) == 0) {
        snprintf(w->base.error, sizeof(w->base.error),
                 "quarantine %s: no such message (deleted, expired or not of account %s)",
                 w->qid, acct);
        PQclear(res);
        res = NULL;
        w->outcome = TRAIN_PERMANENT;
        goto out;
    }
    {
        osp_bayes_tokens_t t;
        osp_buf_t arr;
        char key[OSP_BAYES_KEY_HEX_SIZE];
        PGresult *tr;

        osp_bayes_tokens_init(&t, false);
        osp_buf_init(&arr, OSP_BUF_UNLIMITED);
        osp_bayes_tokenize_message(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), &t);
        osp_bayes_train_params(&t, key, &arr);
        w->ntokens = t.n;
        osp_bayes_tokens_close(&t);
        PQclear(res);
        res = NULL;
        p[0] = acct;
        p[1] = key;
        p[2] = strcmp(w->klass, "spam") == 0 ? "true" : "false";
        p[3] = osp_buf_cstr(&arr);
        tr = PQexecParams(conn, OSP_BAYES_TRAIN_SQL, 4, NULL, p, NULL, NULL, 0);
        osp_buf_close(&arr);
        if (PQresultStatus(tr) != PGRES_TUPLES_OK || PQntuples(tr) != 1) {
            job_db_error(w->base.error, sizeof(w->base.error), "osprey_bayes_train", conn, tr);
            PQclear(tr);
            goto out;
        }
        snprintf(w->result, sizeof(w->result), "%s", PQgetvalue(tr, 0, 0));
        PQclear(tr);
    }
    w->outcome = TRAIN_DONE;
out:
    PQclear(res);
    if (conn != NULL)
        PQfinish(conn);
}

static void train_report(pool_job_t *pj, worker_job_t *job)
{
    train_work_t *w = (train_work_t *)pj;

    switch (w->outcome) {
    case TRAIN_DONE:
        osp_info("job=%" PRId64 " kind=train quarantine_id=%s account=%" PRId64
                 " class=%s tokens=%zu result=%s", job->id, w->qid, pj->account_id,
                 w->klass, w->ntokens, w->result);
        worker_job_finish(job, OSP_STORE_OK, NULL);
        break;
    case TRAIN_PERMANENT:
        osp_warn("job=%" PRId64 " kind=train account=%" PRId64 " action=none "
                 "reason=\"%s\" (not retried)", job->id, pj->account_id, pj->error);
        worker_job_finish(job, WORKER_JOB_PERMANENT, pj->error);
        break;
    case TRAIN_FAILED:
        worker_job_finish(job, OSP_STORE_TEMPFAIL, pj->error[0] ? pj->error : "failed");
        break;
    default:
        osp_panic("train: outcome %d", (int)w->outcome);
    }
}

static void job_train_start(worker_job_t *job)
{
    train_work_t *w = osp_calloc(1, sizeof(*w));

    w->base.run = train_work;
    w->base.report = train_report;
    pool_job_start(job, &w->base, "train", job->conf->query_timeout_ms);
}

/* ------------------------------------------------------------ registry */

const worker_kind_t worker_kinds[] = {
    { "maintenance", job_maintenance_start },
    { "log_index", job_log_index_start },
    { "noop", job_noop_start },
    { "release", job_release_start },
    { "train", job_train_start },
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
