/*
 * filter_quarantine_db: the quarantine backend on the PostgreSQL store.
 *
 * Two steps per request: the thread pool reads our header lines and the
 * message into one buffer (the body may be a temporary file), then the
 * loop thread hands it to osp_store_quarantine(), which copies it, and
 * the request completes when the store reports the COMMIT's outcome.
 * Only OSP_STORE_OK is success; everything else is a temporary failure.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "osp_store.h"
#include "filter_quarantine.h"

typedef struct filter_qdb {
    filter_quarantine_t q;          /* first: the interface part */
    osp_store_t *st;                /* borrowed; NULL once detached */
    uint64_t timeout_ms;
} filter_qdb_t;

/* Per request, owned by the backend from store to completion. */
typedef struct filter_qdb_op {
    filter_quarantine_req_t *req;   /* borrowed */
    char *buf;                      /* owned: header lines + message */
    size_t len;
    char error[160];                /* from the thread pool */
} filter_qdb_op_t;

static void filter_qdb__finish(filter_qdb_op_t *op, int status, const char *error)
{
    filter_quarantine_req_t *req = op->req;

    req->status = status;
    if (status < 0)
        osp_snprintf(req->error, sizeof(req->error), "quarantine database: %s",
                     error && *error ? error : "failed");
    free(op->buf);
    free(op);
    filter_quarantine__done(req);
}

/* Thread pool: the whole copy into memory. */
static void filter_qdb__read_cb(uv_work_t *work)
{
    filter_qdb_op_t *op = work->data;
    filter_quarantine_req_t *req = op->req;
    uint64_t size = req->body->size;
    size_t total, off;

    if (size > INT32_MAX - req->add_headers_len) {
        osp_strlcpy(op->error, "message too big for the database quarantine",
                    sizeof(op->error));
        return;
    }
    total = req->add_headers_len + (size_t)size;
    op->buf = osp_malloc(total ? total : 1);
    memcpy(op->buf, req->add_headers, req->add_headers_len);
    off = req->add_headers_len;
    while (off < total) {
        ssize_t n = filter_body_read(req->body, off - req->add_headers_len, op->buf + off,
                                     total - off);
        if (n <= 0) {
            osp_snprintf(op->error, sizeof(op->error), "reading the message: %s",
                         n < 0 ? strerror(errno) : "short read");
            OSP_FREE(&op->buf);
            return;
        }
        off += (size_t)n;
    }
    op->len = total;
    if (req->strip_authserv_id)
        op->len = req->add_headers_len +
                  filter_quarantine__strip(op->buf + req->add_headers_len,
                                           total - req->add_headers_len, req->strip_authserv_id);
}

static void filter_qdb__stored_cb(void *ctx, int status, const osp_store_quarantine_result_t *r,
                                  const char *error)
{
    filter_qdb_op_t *op = ctx;

    if (status == OSP_STORE_OK) {
        osp_snprintf(op->req->location, sizeof(op->req->location),
                     "database (rows inserted=%zu duplicates=%zu)", r ? r->inserted : 0,
                     r ? r->duplicates : 0);
        filter_qdb__finish(op, 0, NULL);
    } else {
        filter_qdb__finish(op, -1, error);
    }
}

static void filter_qdb__after_cb(uv_work_t *work, int status)
{
    filter_qdb_op_t *op = work->data;
    filter_quarantine_req_t *req = op->req;
    filter_qdb_t *db = (filter_qdb_t *)req->backend;
    osp_store_quarantine_t m;
    osp_store_qrcpt_t *rcpts;
    const char *reasons[1];
    const char *error = NULL;
    char qid[64];
    osp_ip_t ip;
    size_t i;

    if (status == UV_ECANCELED) {
        filter_qdb__finish(op, -1, "cancelled");
        return;
    }
    if (op->buf == NULL) {
        filter_qdb__finish(op, -1, op->error);
        return;
    }
    if (db->st == NULL) {
        filter_qdb__finish(op, -1, "shutting down");
        return;
    }
    memset(&m, 0, sizeof(m));
    if (req->queue_id && *req->queue_id) {
        m.queue_id = req->queue_id;
    } else {
        osp_snprintf(qid, sizeof(qid), "osprey:%s", req->scan_id);
        m.queue_id = qid;
    }
    m.message_id = req->message_id && *req->message_id ? req->message_id : NULL;
    m.sender = req->sender;
    m.client_address = req->client_addr && osp_ip_parse(req->client_addr, &ip) == 0
                           ? req->client_addr : NULL;
    m.client_name = req->client_name && *req->client_name ? req->client_name : NULL;
    m.helo = req->helo && *req->helo ? req->helo : NULL;
    m.subject = req->subject;
    m.size = (int64_t)req->body->size;
    m.score = req->score;
    m.verdict = "quarantine";
    reasons[0] = req->reason;
    m.reasons = reasons;
    m.nreasons = req->reason && *req->reason ? 1 : 0;
    m.body = op->buf;
    m.body_len = op->len;
    rcpts = osp_calloc(req->nrcpt, sizeof(*rcpts));
    for (i = 0; i < req->nrcpt; i++) {
        rcpts[i].account_id = req->accounts && req->accounts[i] >= 0 ? req->accounts[i] : 0;
        rcpts[i].recipient = req->rcpts[i];
    }
    m.rcpts = rcpts;
    m.nrcpts = req->nrcpt;
    /* Everything is copied by the store: the body buffer can go now. */
    if (osp_store_quarantine(db->st, &m, db->timeout_ms, filter_qdb__stored_cb, op, &error) ==
        NULL) {
        free(rcpts);
        filter_qdb__finish(op, -1, error);
        return;
    }
    free(rcpts);
    OSP_FREE(&op->buf);
}

static int filter_qdb__store(filter_quarantine_t *q, filter_quarantine_req_t *req)
{
    filter_qdb_t *db = (filter_qdb_t *)q;
    filter_qdb_op_t *op;
    int rc;

    if (db->st == NULL) {
        osp_strlcpy(req->error, "quarantine database: shutting down", sizeof(req->error));
        return -1;
    }
    op = osp_calloc(1, sizeof(*op));
    op->req = req;
    req->work.data = op;
    rc = uv_queue_work(q->loop, &req->work, filter_qdb__read_cb, filter_qdb__after_cb);
    if (rc < 0) {
        free(op);
        osp_snprintf(req->error, sizeof(req->error), "quarantine: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void filter_qdb__free(filter_quarantine_t *q)
{
    free(q);
}

static const filter_quarantine_ops_t filter_qdb_ops = {
    .name = "database",
    .store = filter_qdb__store,
    .free = filter_qdb__free,
};

filter_quarantine_t *filter_quarantine_db_create(uv_loop_t *loop, struct osp_store *st,
                                                 uint64_t timeout_ms)
{
    filter_qdb_t *db = osp_calloc(1, sizeof(*db));

    db->q.ops = &filter_qdb_ops;
    db->q.loop = loop;
    db->st = st;
    db->timeout_ms = timeout_ms;
    return &db->q;
}

void filter_quarantine_db_detach(filter_quarantine_t *q)
{
    if (q && q->ops == &filter_qdb_ops)
        ((filter_qdb_t *)q)->st = NULL;
}
