/*
 * filter_reinject: the SMTP client that hands scanned mail back to Postfix
 * (the reinjection smtpd on 127.0.0.1:10026, FILTER_README).
 *
 * One request is one mail transaction: XFORWARD (when the server offers
 * it), MAIL FROM with the DSN and body parameters passed through, one RCPT
 * per recipient, DATA, pipelined when the server offers PIPELINING.  Each
 * recipient ends with its own reply: the RCPT reply if that refused it,
 * otherwise the reply to the final ".".  Connection failures, timeouts and
 * 421 give every unfinished recipient a 4xx.
 *
 * Connections are reused: after a transaction a connection waits in a
 * small pool (RSET precedes the next transaction; QUIT after the idle
 * timeout).  If a pooled connection turns out to be dead before the server
 * answered anything for the new transaction, the request is retried once
 * on a fresh connection.  A circuit breaker fails requests at once while
 * the server is down.
 *
 *   req = &tx->rreq;      (embedded in the caller; zero it, fill the input)
 *   if (filter_reinject_send(ri, req, done_cb) < 0)
 *       ... req->error says why; done_cb is NOT called; answer 4xx ...
 *   done_cb(req): req->rcpts[i].code / .text per recipient
 *
 * The request and everything it points to are borrowed until done_cb.
 */
#ifndef FILTER_REINJECT_H
#define FILTER_REINJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "osp_breaker.h"
#include "filter_body.h"
#include "filter_proto.h"

typedef struct filter_reinject_conf {
    char *target;                   /* owned: "inet:HOST:PORT" or "unix:PATH" */
    char *helo;                     /* owned: our EHLO name */
    uint64_t connect_timeout_ms;
    uint64_t timeout_ms;            /* per reply, and per body write */
    uint64_t idle_timeout_ms;       /* a pooled connection's life */
    unsigned pool_size;             /* idle connections kept at most */
    osp_breaker_conf_t breaker;
} filter_reinject_conf_t;

typedef struct filter_reinject_rcpt {
    const char *addr;               /* borrowed; without brackets */
    unsigned notify;                /* FILTER_NOTIFY_* or 0 */
    const char *orcpt;              /* borrowed; as received, or NULL */
    /* Result. */
    int code;                       /* SMTP reply code */
    char text[400];                 /* "2.0.0 Ok: queued as 3F2A1" (printable) */
} filter_reinject_rcpt_t;

typedef struct filter_reinject_req filter_reinject_req_t;
typedef void (*filter_reinject_cb)(filter_reinject_req_t *req);

struct filter_reinject_req {
    /* Input, borrowed. */
    const char *log_id;             /* "SESSID: QUEUEID" for log lines */
    const char *sender;             /* "" for <> */
    enum filter_body_type body_type;
    bool smtputf8;
    enum filter_ret ret;
    const char *envid;              /* xtext as received, or NULL */
    const char *xforward[FILTER_XA__COUNT];  /* raw values, or NULL */
    size_t nrcpt;
    filter_reinject_rcpt_t *rcpts;
    const char *prepend;            /* header lines to add on top, CR LF ended */
    size_t prepend_len;
    const char *subject_prefix;     /* "[SPAM]" to tag the Subject, or NULL */
    const char *strip_authserv_id;  /* remove Authentication-Results fields
                                     * claiming this authserv-id, or NULL */
    const filter_body_t *body;
    uint64_t header_end;            /* end of the header section in body */
    void *data;                     /* the caller's */
    /* Output. */
    char error[256];                /* connection-level failure text, or "" */
    char queue_id[64];              /* the downstream queue id if it said one */
    /* Private. */
    filter_reinject_cb done;
    void *conn;
    bool retried;
};

typedef struct filter_reinject filter_reinject_t;

/* Checks conf->target; NULL with a message in err if it is malformed. */
filter_reinject_t *filter_reinject_create(uv_loop_t *loop, const filter_reinject_conf_t *conf,
                                          char *err, size_t errsize);
/*
 * Abort every transaction in progress (their requests complete with a 4xx)
 * and close every connection; the reinjector refuses new requests.  The
 * loop must run for the closes to finish; then call filter_reinject_free.
 */
void filter_reinject_shutdown(filter_reinject_t *ri);
/* Frees it once every connection has closed; panics otherwise. */
void filter_reinject_free(filter_reinject_t **rip);
/* True once shutdown has finished closing every connection. */
bool filter_reinject_idle(const filter_reinject_t *ri);

int filter_reinject_send(filter_reinject_t *ri, filter_reinject_req_t *req,
                         filter_reinject_cb done);

const osp_breaker_t *filter_reinject_breaker(const filter_reinject_t *ri);

/* Parse "inet:HOST:PORT", "HOST:PORT", "[HOST]:PORT" or "unix:PATH". */
int filter_reinject_parse_target(const char *spec, bool *unix_r, char *host, size_t hostsize,
                                 int *port_r);

#endif
