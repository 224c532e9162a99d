/*
 * filter_quarantine: "store this message for these recipients", async.
 *
 * The interface is one operation so that backends can be swapped: the
 * PostgreSQL store (filter_quarantine_db_create, the default) or a local
 * spool directory (filter_quarantine_spool_create, for sites without
 * PostgreSQL).  A backend completes a request exactly once, on the
 * loop thread, with 0 (committed: it survives a crash of this process and
 * of the machine) or -1 (temporary failure: the caller answers 4xx).
 *
 *   filter_quarantine_req_t *req = &tx->qreq;      (embedded in the caller)
 *   req->scan_id = ...; req->rcpts = ...; req->body = ...;
 *   if (filter_quarantine_store(q, req, done_cb) < 0)
 *       ... failed at once: done_cb is NOT called, answer 4xx ...
 *
 * Everything the request points to is borrowed and must stay valid and
 * unchanged until done_cb runs; the caller must not free the request
 * before that (there is no cancel: the write finishes even if the client
 * is gone, which at worst quarantines a message Postfix will offer again).
 */
#ifndef FILTER_QUARANTINE_H
#define FILTER_QUARANTINE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "filter_body.h"

typedef struct filter_quarantine_req filter_quarantine_req_t;
typedef void (*filter_quarantine_cb)(filter_quarantine_req_t *req, int status);

struct filter_quarantine_req {
    /* Input, all borrowed. */
    const char *scan_id;
    const char *queue_id;           /* "" if unknown */
    const char *sender;             /* "" for <> */
    size_t nrcpt;
    const char *const *rcpts;
    const char *reason;             /* why it is quarantined; printable */
    double score;
    const char *add_headers;        /* header lines to put on top, CR LF ended */
    size_t add_headers_len;
    const filter_body_t *body;
    /* Optional, for backends that keep metadata (the database); NULL/-1: none. */
    const int64_t *accounts;        /* nrcpt owning accounts (< 0: root, 0) or NULL */
    const char *client_addr, *client_name, *helo, *subject, *message_id;
    /* Remove the message's Authentication-Results fields claiming this
     * authserv-id (forged: ours are in add_headers), so a released copy
     * carries only ours; NULL: none. */
    const char *strip_authserv_id;
    void *data;                     /* the caller's */
    /* Output. */
    int status;
    char error[256];                /* printable, when status < 0 */
    char location[256];             /* where it went (path, row id), for logs */
    /* Private to the backend. */
    uv_work_t work;
    filter_quarantine_cb done;
    void *backend;
};

typedef struct filter_quarantine filter_quarantine_t;

typedef struct filter_quarantine_ops {
    const char *name;
    /* Start storing req; 0, or -1 (req->error set, done not called). */
    int (*store)(filter_quarantine_t *q, filter_quarantine_req_t *req);
    /* Free the backend; no request may be pending. */
    void (*free)(filter_quarantine_t *q);
} filter_quarantine_ops_t;

struct filter_quarantine {
    const filter_quarantine_ops_t *ops;
    uv_loop_t *loop;                /* borrowed */
    unsigned pending;               /* requests started, not yet done */
};

int filter_quarantine_store(filter_quarantine_t *q, filter_quarantine_req_t *req,
                            filter_quarantine_cb done);
/* For backends: complete req (req->status set) on the loop thread. */
void filter_quarantine__done(filter_quarantine_req_t *req);
/*
 * For backends: remove the Authentication-Results fields claiming
 * authserv_id from the header section of msg[len] in place; the new length.
 */
size_t filter_quarantine__strip(char *msg, size_t len, const char *authserv_id);
/* Longest header section the spool backend rewrites. */
#define FILTER_QUARANTINE_HEADERS_MAX (256 * 1024)
void filter_quarantine_free(filter_quarantine_t **qp);

/*
 * The spool backend: each message becomes one file DIR/SCANID.eml,
 * written as DIR/.SCANID.tmp, fsync'ed, renamed, and the directory
 * fsync'ed, all in the thread pool.  The file starts with
 * "X-Osprey-Quarantine-*" header lines (sender, one per recipient, queue
 * id, reason, score), then the message with our added headers.
 * Returns NULL with a message in err if dir is not a writable directory.
 */
filter_quarantine_t *filter_quarantine_spool_create(uv_loop_t *loop, const char *dir,
                                                    char *err, size_t errsize);

/*
 * The database backend: osp_store_quarantine(), the body and one row per
 * recipient in one transaction with synchronous commit.  The body (our
 * header lines, then the message) is read into memory in the thread pool,
 * then handed to the store on the loop thread; the request completes with
 * 0 only once COMMIT is confirmed.  Database away, breaker open, deadline
 * passed or outcome unknown: -1, so the caller answers 4xx and Postfix
 * retries; the store is idempotent on (queue id, recipient), so a retry
 * after an unknown outcome stores nothing twice.  A message without a
 * Postfix queue id is stored under "osprey:SCANID" (not idempotent across
 * retries: Postfix always sends XFORWARD IDENT in the shipped setup).
 *
 * st is borrowed and must outlive the backend, or until
 * filter_quarantine_db_detach(): after that, requests fail at once.
 * timeout_ms: the store's deadline for one request (0: its default).
 */
struct osp_store;
filter_quarantine_t *filter_quarantine_db_create(uv_loop_t *loop, struct osp_store *st,
                                                 uint64_t timeout_ms);
/* Forget the store (it is being freed): pending and later requests fail. */
void filter_quarantine_db_detach(filter_quarantine_t *q);

#endif
