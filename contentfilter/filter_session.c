/* filter_session: one connection from Postfix and its mail transactions. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_store.h"
#include "filter_accounts.h"
#include "filter_body.h"
#include "filter_conn.h"
#include "filter_msg.h"
#include "filter_proto.h"
#include "filter_quarantine.h"
#include "filter_reinject.h"
#include "filter_scan.h"
#include "filter_session.h"

#define FS_PENDING_MAX (2 * FILTER_CONN_READ_SIZE)
#define FS_SCAN_HEADERS_MAX (256 * 1024)

enum fs_state {
    FS_CMD = 0,
    FS_DATA,
    FS_PROCESS,
    FS_CLOSING,
};

typedef struct fs_rcpt {
    char *addr;                     /* owned */
    unsigned notify;
    char *orcpt;                    /* owned or NULL */
    enum filter_route route;
    int code;                       /* final outcome */
    char text[400];
} fs_rcpt_t;

/* One reinjection group: recipients that get the same copy. */
typedef struct fs_group {
    filter_reinject_req_t req;
    filter_reinject_rcpt_t *rr;     /* owned */
    size_t *map;                    /* owned: rr[i] is tx->rcpts[map[i]] */
    size_t n;
    osp_buf_t headers;              /* our header lines for this copy */
    bool tagged;
    const filter_rcpt_settings_t *set;  /* borrowed: the first recipient's */
    struct filter_tx *tx;           /* borrowed back-pointer */
} fs_group_t;

typedef struct filter_tx {
    filter_session_t *sess;         /* borrowed back-pointer */
    char scan_id[32];
    char log_id[96];                /* "SESSID: QUEUEID" */
    char *sender;                   /* owned */
    enum filter_body_type body_type;
    bool smtputf8;
    enum filter_ret ret;
    char *envid;                    /* owned or NULL */
    char *xfwd[FILTER_XA__COUNT];   /* owned copies, or NULL */
    char *client_addr, *client_name, *helo;   /* owned, decoded */
    fs_rcpt_t *rcpts;               /* owned */
    size_t nrcpt;
    filter_body_t body;
    filter_data_t dec;
    bool too_big;
    uint64_t header_end;
    osp_buf_t headers;              /* header section copy for scanners */
    const char **rcpt_addrs;        /* owned array of borrowed strings */
    filter_scan_msg_t msg;
    filter_scan_job_t job;
    bool job_inited;
    fs_group_t *groups;             /* owned; one per (tagged, settings) variant */
    size_t ngroups;
    filter_rcpt_settings_t *settings;   /* owned; nrcpt, once resolved */
    char *subject, *message_id;     /* owned; raw header values, or NULL */
    filter_qset_t qs;               /* the quarantined recipients */
    unsigned pending;               /* operations that will call back */
    bool abandoned;                 /* answered by the deadline; results are ignored */
    uint64_t started_ms;
} filter_tx_t;

struct filter_session {
    filter_server_t *srv;           /* borrowed */
    filter_session_t *next;         /* server's list */
    filter_conn_t conn;             /* stream, reply buffer, writes */
    enum fs_state state;
    bool counted;                   /* counts against max_sessions */
    bool is_unix;
    bool greeted;
    bool esmtp;
    bool lmtp;
    bool reading;
    unsigned errors;
    char id[24];
    filter_line_t line;
    osp_buf_t pending_in;           /* input that arrived while processing */
    char *xfwd[FILTER_XA__COUNT];   /* owned: XFORWARD for the next MAIL */
    filter_tx_t *tx;                /* owned */
    void (*pause_next)(filter_session_t *sess);
};

static void fs_process_input(filter_session_t *sess, const char *p, size_t len);
static void fs_close(filter_session_t *sess);
static void fs_flush(filter_session_t *sess);

uv_stream_t *filter_session_stream(filter_session_t *sess)
{
    return &sess->conn.h.stream;
}

filter_session_t *filter_session_next(const filter_session_t *sess)
{
    return sess->next;
}

void filter_session_set_next(filter_session_t *sess, filter_session_t *next)
{
    sess->next = next;
}

/* ---- small helpers ------------------------------------------------------ */

static void fs_reply(filter_session_t *sess, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fs_reply(filter_session_t *sess, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (osp_buf_vprintf(&sess->conn.out, fmt, ap) < 0 ||
        osp_buf_append_str(&sess->conn.out, "\r\n") < 0)
        osp_panic("%s: reply buffer full", sess->id);
    va_end(ap);
}

/* Decode xtext ("+HH"); the result is made printable for logs anyway. */
static char *fs_xtext_decode(const char *s)
{
    osp_buf_t b;
    static const char hex[] = "0123456789ABCDEF";

    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    for (; *s; s++) {
        const char *h1, *h2;
        if (*s == '+' && s[1] && s[2] && (h1 = strchr(hex, s[1])) && (h2 = strchr(hex, s[2]))) {
            char c = (char)(((h1 - hex) << 4) | (h2 - hex));
            osp_buf_append_char(&b, c ? c : '?');
            s += 2;
        } else {
            osp_buf_append_char(&b, *s);
        }
    }
    return osp_buf_steal(&b);
}

static void fs_error(filter_session_t *sess)
{
    if (++sess->errors >= sess->srv->conf->error_limit) {
        fs_reply(sess, "421 4.7.0 %s Error: too many errors", sess->srv->conf->hostname);
        osp_warn("%s: too many errors (%u), disconnecting", sess->id, sess->errors);
        sess->conn.close_after_flush = true;
    }
}

static void fs_xfwd_clear(char **x)
{
    int i;

    for (i = 0; i < FILTER_XA__COUNT; i++)
        OSP_FREE(&x[i]);
}

/* ---- transactions ------------------------------------------------------- */

static filter_tx_t *fs_tx_create(filter_session_t *sess)
{
    const filter_conf_t *conf = sess->srv->conf;
    filter_tx_t *tx = osp_calloc(1, sizeof(*tx));
    int i;

    tx->sess = sess;
    filter_scan_id_make(tx->scan_id, sizeof(tx->scan_id));
    filter_body_init(&tx->body, conf->memory_threshold, conf->temp_dir);
    filter_data_init(&tx->dec);
    osp_buf_init(&tx->headers, FS_SCAN_HEADERS_MAX);
    filter_qset_init(&tx->qs);
    /* XFORWARD given before MAIL belongs to this transaction. */
    for (i = 0; i < FILTER_XA__COUNT; i++) {
        tx->xfwd[i] = sess->xfwd[i];
        sess->xfwd[i] = NULL;
    }
    tx->client_addr = fs_xtext_decode(tx->xfwd[FILTER_XA_ADDR] ? tx->xfwd[FILTER_XA_ADDR] : "");
    tx->client_name = fs_xtext_decode(tx->xfwd[FILTER_XA_NAME] ? tx->xfwd[FILTER_XA_NAME] : "");
    tx->helo = fs_xtext_decode(tx->xfwd[FILTER_XA_HELO] ? tx->xfwd[FILTER_XA_HELO] : "");
    {
        char *qid = fs_xtext_decode(tx->xfwd[FILTER_XA_IDENT] ? tx->xfwd[FILTER_XA_IDENT] : "");
        char *pq = filter_printable(*qid ? qid : "NOQUEUE");
        osp_snprintf(tx->log_id, sizeof(tx->log_id), "%s: %s", sess->id, pq);
        free(pq);
        free(qid);
    }
    tx->started_ms = uv_now(sess->srv->loop);
    return tx;
}

/* The one place where a transaction's memory is released. */
static void fs_tx_free(filter_tx_t **txp)
{
    filter_tx_t *tx = *txp;
    size_t i, g;

    if (tx == NULL)
        return;
    if (tx->pending)
        osp_panic("%s: transaction freed with %u operations pending", tx->log_id, tx->pending);
    free(tx->sender);
    free(tx->envid);
    fs_xfwd_clear(tx->xfwd);
    free(tx->client_addr);
    free(tx->client_name);
    free(tx->helo);
    for (i = 0; i < tx->nrcpt; i++) {
        free(tx->rcpts[i].addr);
        free(tx->rcpts[i].orcpt);
    }
    free(tx->rcpts);
    filter_body_close(&tx->body);
    osp_buf_close(&tx->headers);
    free(tx->rcpt_addrs);
    if (tx->job_inited)
        filter_scan_job_close(&tx->job);
    for (g = 0; g < tx->ngroups; g++) {
        free(tx->groups[g].rr);
        free(tx->groups[g].map);
        osp_buf_close(&tx->groups[g].headers);
    }
    free(tx->groups);
    free(tx->settings);
    free(tx->subject);
    free(tx->message_id);
    filter_qset_free(&tx->qs);
    free(tx);
    *txp = NULL;
}

/* ---- freeing the session -------------------------------------------------- */

static void fs_maybe_free(filter_session_t *sess)
{
    filter_server_t *srv = sess->srv;

    if (sess->conn.open_handles > 0 || (sess->tx && sess->tx->pending > 0))
        return;
    fs_tx_free(&sess->tx);
    fs_xfwd_clear(sess->xfwd);
    filter_line_close(&sess->line);
    osp_buf_close(&sess->conn.out);
    osp_buf_close(&sess->pending_in);
    filter_server__session_gone(srv, sess, sess->counted);
    free(sess);
}

static void fs_close(filter_session_t *sess)
{
    if (sess->state == FS_CLOSING)
        return;
    sess->state = FS_CLOSING;
    filter_conn_close(&sess->conn);
}

static void fs_conn_close(filter_conn_t *c)
{
    fs_close(c->h.handle.data);
}

/* Every handle is closed (their data is the conn by now). */
static void fs_after_close(filter_conn_t *c)
{
    fs_maybe_free((void *)((char *)c - offsetof(filter_session_t, conn)));
}

void filter_session_abort(filter_session_t *sess)
{
    fs_close(sess);
}

/* ---- output --------------------------------------------------------------- */

static void fs_flush(filter_session_t *sess)
{
    filter_conn_flush(&sess->conn);
}

/* ---- input ------------------------------------------------------------------ */

static void fs_timeout_cb(uv_timer_t *t)
{
    filter_session_t *sess = t->data;

    if (sess->state != FS_CMD && sess->state != FS_DATA)
        return;
    osp_info("%s: timeout after %s", sess->id, sess->state == FS_DATA ? "DATA" : "command");
    fs_reply(sess, "421 4.4.2 %s Error: timeout exceeded", sess->srv->conf->hostname);
    sess->conn.close_after_flush = true;
    fs_flush(sess);
}

static void fs_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    filter_session_t *sess = s->data;

    if (nread < 0) {
        free(buf->base);
        if (sess->state == FS_DATA || (sess->tx && sess->state == FS_CMD))
            osp_info("%s: lost connection during %s", sess->id,
                     sess->state == FS_DATA ? "DATA" : "transaction");
        fs_close(sess);
        return;
    }
    if (nread > 0 && sess->state != FS_CLOSING) {
        uv_timer_start(&sess->conn.timer, fs_timeout_cb, sess->srv->conf->timeout_ms, 0);
        fs_process_input(sess, buf->base, (size_t)nread);
        fs_flush(sess);
    }
    free(buf->base);
}

static void fs_read_stop(filter_session_t *sess)
{
    if (sess->reading) {
        uv_read_stop(&sess->conn.h.stream);
        uv_timer_stop(&sess->conn.timer);
        sess->reading = false;
    }
}

static void fs_read_start(filter_session_t *sess)
{
    if (!sess->reading && sess->state != FS_CLOSING) {
        int rc = uv_read_start(&sess->conn.h.stream, filter_conn_alloc_cb, fs_read_cb);
        if (rc < 0) {
            osp_info("%s: read failed: %s", sess->id, uv_strerror(rc));
            fs_close(sess);
            return;
        }
        sess->reading = true;
        uv_timer_start(&sess->conn.timer, fs_timeout_cb, sess->srv->conf->timeout_ms, 0);
    }
}

/* ---- the processing pipeline ------------------------------------------- */

static void fs_step_scan(filter_session_t *sess);
static void fs_step_deliver(filter_session_t *sess);
static void fs_step_reply(filter_session_t *sess);

static const char *const fs_pause_names[] = {
    [FILTER_PAUSE_NONE] = "none",
    [FILTER_PAUSE_DATA] = "data",
    [FILTER_PAUSE_AFTER_SCAN] = "after_scan",
    [FILTER_PAUSE_AFTER_REINJECT] = "after_reinject",
};

static void fs_pause_cb(uv_timer_t *t)
{
    filter_session_t *sess = t->data;
    void (*next)(filter_session_t *) = sess->pause_next;

    sess->pause_next = NULL;
    if (sess->state == FS_PROCESS && sess->tx && !sess->tx->abandoned && next)
        next(sess);
}

/* Continue with next, after the test-only pause if this is its stage. */
static void fs_stage(filter_session_t *sess, enum filter_pause_stage stage,
                     void (*next)(filter_session_t *))
{
    const filter_conf_t *conf = sess->srv->conf;

    if (conf->pause_stage == stage && conf->pause_ms > 0) {
        osp_info("%s: debug pause at stage %s for %llu ms", sess->tx->log_id,
                 fs_pause_names[stage], (unsigned long long)conf->pause_ms);
        sess->pause_next = next;
        uv_timer_start(&sess->conn.pause, fs_pause_cb, conf->pause_ms, 0);
        return;
    }
    next(sess);
}

/* Give every recipient without an outcome yet the same outcome. */
static void fs_outcome_all(filter_tx_t *tx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fs_outcome_all(filter_tx_t *tx, int code, const char *fmt, ...)
{
    va_list ap;
    char text[400];
    size_t i;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    for (i = 0; i < tx->nrcpt; i++)
        if (tx->rcpts[i].code == 0) {
            tx->rcpts[i].code = code;
            osp_strlcpy(tx->rcpts[i].text, text, sizeof(tx->rcpts[i].text));
        }
}

/* Back to reading commands after a transaction ends. */
static void fs_resume(filter_session_t *sess)
{
    uv_timer_stop(&sess->conn.deadline);
    fs_tx_free(&sess->tx);
    sess->state = FS_CMD;
    if (sess->pending_in.len > 0) {
        osp_buf_t in = sess->pending_in;
        osp_buf_init(&sess->pending_in, FS_PENDING_MAX);
        fs_process_input(sess, in.data, in.len);
        osp_buf_close(&in);
    }
    fs_flush(sess);
    if (sess->state == FS_CMD || sess->state == FS_DATA)
        fs_read_start(sess);
}

static void fs_deadline_cb(uv_timer_t *t)
{
    filter_session_t *sess = t->data;
    filter_tx_t *tx = sess->tx;

    if (sess->state != FS_PROCESS || tx == NULL)
        return;
    osp_warn("%s: scan_id=%s action=tempfail reason=processing timeout after %llu ms "
             "(pending=%u)", tx->log_id, tx->scan_id,
             (unsigned long long)sess->srv->conf->process_timeout_ms, tx->pending);
    sess->srv->n_tempfail++;
    tx->abandoned = true;
    uv_timer_stop(&sess->conn.pause);
    /* Operations still running keep the transaction: answer, then close. */
    if (sess->lmtp) {
        size_t i;
        for (i = 0; i < tx->nrcpt; i++)
            fs_reply(sess, "451 4.3.0 <%s> Error: processing timeout", tx->rcpts[i].addr);
    } else {
        fs_reply(sess, "451 4.3.0 Error: processing timeout");
    }
    sess->conn.close_after_flush = true;
    fs_flush(sess);
}

static void fs_data_done(filter_session_t *sess)
{
    filter_tx_t *tx = sess->tx;
    const filter_conf_t *conf = sess->srv->conf;
    int err;

    sess->state = FS_PROCESS;
    fs_read_stop(sess);
    sess->srv->n_messages++;
    if (tx->too_big) {
        osp_info("%s: reject: message size exceeds %llu", tx->log_id,
                 (unsigned long long)conf->size_limit);
        fs_reply(sess, "552 5.3.4 Error: message file too big");
        fs_resume(sess);
        return;
    }
    err = filter_body_error(&tx->body);
    if (err) {
        osp_warn("%s: scan_id=%s action=tempfail reason=cannot store the message in %s: %s",
                 tx->log_id, tx->scan_id, conf->temp_dir, strerror(err));
        sess->srv->n_tempfail++;
        fs_reply(sess, "452 4.3.1 Error: insufficient system storage");
        fs_resume(sess);
        return;
    }
    {
        char *from = filter_printable(tx->sender);
        char *name = filter_printable(tx->client_name);
        char *addr = filter_printable(tx->client_addr);
        osp_info("%s: scan_id=%s from=<%s> size=%llu nrcpt=%zu client=%s[%s] proto=%s%s",
                 tx->log_id, tx->scan_id, from, (unsigned long long)tx->body.size, tx->nrcpt,
                 *name ? name : "unknown", *addr ? addr : "unknown",
                 sess->lmtp ? "LMTP" : "SMTP",
                 filter_body_spilled(&tx->body) ? " stored=file" : "");
        free(from);
        free(name);
        free(addr);
    }
    uv_timer_start(&sess->conn.deadline, fs_deadline_cb, conf->process_timeout_ms, 0);
    fs_stage(sess, FILTER_PAUSE_DATA, fs_step_scan);
}

static void fs_scan_done_cb(filter_scan_job_t *job, int status)
{
    filter_tx_t *tx = job->work.data;
    filter_session_t *sess = tx->sess;

    tx->pending--;
    if (sess->state != FS_PROCESS || tx->abandoned) {
        fs_maybe_free(sess);
        return;
    }
    if (status < 0) {
        char *why = filter_printable(job->result.error);
        osp_warn("%s: scan_id=%s action=tempfail reason=scan failed: %s", tx->log_id,
                 tx->scan_id, why);
        fs_outcome_all(tx, 451, "4.3.0 Error: scan failed, try again later");
        free(why);
        fs_step_reply(sess);
        return;
    }
    fs_stage(sess, FILTER_PAUSE_AFTER_SCAN, fs_step_deliver);
}

static void fs_step_scan_start(filter_session_t *sess);

static void fs_resolved_cb(void *ctx)
{
    filter_tx_t *tx = ctx;
    filter_session_t *sess = tx->sess;

    tx->pending--;
    if (sess->state != FS_PROCESS || tx->abandoned) {
        fs_maybe_free(sess);
        return;
    }
    fs_step_scan_start(sess);
}

/* Gather what the scanners and the recipients' settings need, then resolve. */
static void fs_step_scan(filter_session_t *sess)
{
    filter_tx_t *tx = sess->tx;
    filter_server_t *srv = sess->srv;
    size_t i;

    if (filter_body_header_end(&tx->body, FS_SCAN_HEADERS_MAX, &tx->header_end) < 0)
        tx->header_end = 0;   /* headers too long to rewrite: no Subject tagging */
    {
        uint64_t n = tx->header_end ? tx->header_end : tx->body.size;
        char chunk[8192];
        uint64_t off = 0;
        if (n > FS_SCAN_HEADERS_MAX)
            n = FS_SCAN_HEADERS_MAX;
        while (off < n) {
            size_t want = n - off < sizeof(chunk) ? (size_t)(n - off) : sizeof(chunk);
            ssize_t got = filter_body_read(&tx->body, off, chunk, want);
            if (got <= 0)
                break;
            osp_buf_append(&tx->headers, chunk, (size_t)got);
            off += (uint64_t)got;
        }
    }
    tx->subject = filter_header_value(tx->headers.data ? tx->headers.data : "", tx->headers.len,
                                  "Subject");
    tx->message_id = filter_header_value(tx->headers.data ? tx->headers.data : "",
                                     tx->headers.len, "Message-ID");
    tx->rcpt_addrs = osp_calloc(tx->nrcpt, sizeof(*tx->rcpt_addrs));
    for (i = 0; i < tx->nrcpt; i++)
        tx->rcpt_addrs[i] = tx->rcpts[i].addr;
    tx->settings = osp_calloc(tx->nrcpt, sizeof(*tx->settings));
    if (srv->accounts == NULL) {
        for (i = 0; i < tx->nrcpt; i++)
            tx->settings[i] = srv->defaults;
    } else if (filter_accounts_resolve(srv->accounts, tx->rcpt_addrs, tx->nrcpt, tx->settings,
                                       fs_resolved_cb, tx) > 0) {
        tx->pending++;
        return;
    }
    fs_step_scan_start(sess);
}

static void fs_step_scan_start(filter_session_t *sess)
{
    filter_tx_t *tx = sess->tx;
    int rc;

    tx->msg.scan_id = tx->scan_id;
    tx->msg.queue_id = tx->xfwd[FILTER_XA_IDENT] ? tx->xfwd[FILTER_XA_IDENT] : "";
    tx->msg.sender = tx->sender;
    tx->msg.nrcpt = tx->nrcpt;
    tx->msg.rcpts = tx->rcpt_addrs;
    tx->msg.client_addr = tx->client_addr;
    tx->msg.client_name = tx->client_name;
    tx->msg.helo = tx->helo;
    tx->msg.body = &tx->body;
    tx->msg.headers = osp_buf_cstr(&tx->headers);
    tx->msg.headers_len = tx->headers.len;
    rc = filter_msg_scan_start(&tx->job, sess->srv->scan, sess->srv->loop, &tx->msg,
                               tx->settings, fs_scan_done_cb, tx);
    tx->job_inited = true;
    if (rc < 0) {
        osp_warn("%s: scan_id=%s action=tempfail reason=cannot start the scan: %s",
                 tx->log_id, tx->scan_id, uv_strerror(rc));
        fs_outcome_all(tx, 451, "4.3.0 Error: scan failed, try again later");
        fs_step_reply(sess);
        return;
    }
    tx->pending++;
}

static void fs_op_done(filter_session_t *sess)
{
    filter_tx_t *tx = sess->tx;

    if (tx->pending > 0)
        return;
    fs_stage(sess, FILTER_PAUSE_AFTER_REINJECT, fs_step_reply);
}

static void fs_reinject_done_cb(filter_reinject_req_t *req)
{
    fs_group_t *g = req->data;
    filter_tx_t *tx = g->tx;
    filter_session_t *sess = tx->sess;
    size_t i;

    tx->pending--;
    for (i = 0; i < g->n; i++) {
        fs_rcpt_t *r = &tx->rcpts[g->map[i]];
        r->code = g->rr[i].code ? g->rr[i].code : 451;
        osp_strlcpy(r->text, g->rr[i].code ? g->rr[i].text : "4.3.0 reinjection failed",
                    sizeof(r->text));
    }
    if (req->error[0])
        osp_warn("%s: scan_id=%s reinjection failed: %s", tx->log_id, tx->scan_id, req->error);
    if (sess->state != FS_PROCESS || tx->abandoned) {
        fs_maybe_free(sess);
        return;
    }
    fs_op_done(sess);
}

static void fs_quarantine_done_cb(filter_quarantine_req_t *req, int status)
{
    filter_tx_t *tx = req->data;
    filter_session_t *sess = tx->sess;
    size_t i;

    tx->pending--;
    for (i = 0; i < tx->qs.n; i++) {
        fs_rcpt_t *r = &tx->rcpts[tx->qs.map[i]];
        if (status == 0) {
            r->code = 250;
            osp_snprintf(r->text, sizeof(r->text), "2.0.0 Ok: quarantined as %s", tx->scan_id);
        } else {
            r->code = 451;
            osp_strlcpy(r->text, "4.3.0 Error: quarantine unavailable, try again later",
                        sizeof(r->text));
        }
    }
    if (status < 0)
        osp_warn("%s: scan_id=%s quarantine failed: %s", tx->log_id, tx->scan_id, req->error);
    else
        osp_debug(1, "%s: scan_id=%s quarantined in %s", tx->log_id, tx->scan_id, req->location);
    if (sess->state != FS_PROCESS || tx->abandoned) {
        fs_maybe_free(sess);
        return;
    }
    fs_op_done(sess);
}

static void fs_step_deliver(filter_session_t *sess)
{
    filter_tx_t *tx = sess->tx;
    filter_server_t *srv = sess->srv;
    filter_scan_result_t *res = &tx->job.result;
    enum filter_route *routes = osp_calloc(tx->nrcpt, sizeof(*routes));
    size_t i, gi;

    /* Each recipient's own thresholds (the account's, else the global ones). */
    filter_apply_thresholds(res, tx->settings);
    filter_route(res, sess->lmtp, routes);
    tx->groups = osp_calloc(tx->nrcpt, sizeof(*tx->groups));
    for (i = 0; i < tx->nrcpt; i++) {
        fs_rcpt_t *r = &tx->rcpts[i];
        r->route = routes[i];
        switch (routes[i]) {
        case FILTER_ROUTE_REINJECT:
        case FILTER_ROUTE_REINJECT_TAGGED: {
            const filter_rcpt_settings_t *set = &tx->settings[i];
            bool tagged = routes[i] == FILTER_ROUTE_REINJECT_TAGGED;
            fs_group_t *g = NULL;
            /* One copy per variant: plain, or tagged with this prefix and thresholds. */
            for (gi = 0; gi < tx->ngroups; gi++) {
                fs_group_t *c = &tx->groups[gi];
                if (c->tagged == tagged && c->set->tag_score == set->tag_score &&
                    c->set->quarantine_score == set->quarantine_score &&
                    /* same score and Bayes answer: the same added headers */
                    filter_scan_rcpt_score(res, c->map[0]) == filter_scan_rcpt_score(res, i) &&
                    filter_scan_same_bayes(res, c->map[0], i) &&
                    (!tagged || strcmp(c->set->subject_prefix, set->subject_prefix) == 0)) {
                    g = c;
                    break;
                }
            }
            if (g == NULL) {
                g = &tx->groups[tx->ngroups++];
                g->tagged = tagged;
                g->set = set;
                osp_buf_init(&g->headers, OSP_BUF_UNLIMITED);
            }
            g->rr = osp_reallocarray(g->rr, g->n + 1, sizeof(*g->rr));
            g->map = osp_reallocarray(g->map, g->n + 1, sizeof(*g->map));
            memset(&g->rr[g->n], 0, sizeof(g->rr[g->n]));
            g->rr[g->n].addr = r->addr;
            g->rr[g->n].notify = r->notify;
            g->rr[g->n].orcpt = r->orcpt;
            g->map[g->n] = i;
            g->n++;
            break;
        }
        case FILTER_ROUTE_QUARANTINE:
            filter_qset_add(&tx->qs, r->addr, i, tx->settings[i].account_id);
            break;
        case FILTER_ROUTE_DISCARD:
            r->code = 250;
            osp_snprintf(r->text, sizeof(r->text), "2.0.0 Ok: discarded as %s", tx->scan_id);
            break;
        case FILTER_ROUTE_REJECT: {
            char *why = filter_printable(res->rcpt[i].reason);
            r->code = 550;
            osp_snprintf(r->text, sizeof(r->text), "5.7.1 Message rejected%s%s",
                         *why ? ": " : "", why);
            free(why);
            break;
        }
        default:
            osp_panic("fs_step_deliver: route %d", (int)routes[i]);
        }
    }
    free(routes);

    for (gi = 0; gi < tx->ngroups; gi++) {
        fs_group_t *g = &tx->groups[gi];
        filter_reinject_req_t *q = &g->req;
        int a;

        if (g->n == 0)
            continue;
        g->tx = tx;
        filter_own_headers(tx->scan_id, res, g->map[0], g->tagged, g->set, &g->headers);
        memset(q, 0, sizeof(*q));
        q->log_id = tx->log_id;
        q->sender = tx->sender;
        q->body_type = tx->body_type;
        q->smtputf8 = tx->smtputf8;
        q->ret = tx->ret;
        q->envid = tx->envid;
        for (a = 0; a < FILTER_XA__COUNT; a++)
            q->xforward[a] = tx->xfwd[a];
        q->nrcpt = g->n;
        q->rcpts = g->rr;
        q->prepend = g->headers.data ? g->headers.data : "";
        q->prepend_len = g->headers.len;
        q->subject_prefix = g->tagged ? g->set->subject_prefix : NULL;
        q->strip_authserv_id = tx->job.result.strip_authserv_id;
        q->body = &tx->body;
        q->header_end = tx->header_end;
        q->data = g;
        if (filter_reinject_send(srv->reinject, q, fs_reinject_done_cb) < 0) {
            size_t k;
            osp_warn("%s: scan_id=%s reinjection failed: %s", tx->log_id, tx->scan_id, q->error);
            for (k = 0; k < g->n; k++) {
                fs_rcpt_t *r = &tx->rcpts[g->map[k]];
                r->code = 451;
                osp_snprintf(r->text, sizeof(r->text), "4.4.1 Error: %s, try again later",
                             q->error);
            }
            continue;
        }
        tx->pending++;
    }

    if (tx->qs.n > 0) {
        if (filter_qset_store(&tx->qs, srv->quarantine, &tx->msg, res, tx->settings, tx->subject,
                              tx->message_id, fs_quarantine_done_cb, tx) < 0) {
            osp_warn("%s: scan_id=%s quarantine failed: %s", tx->log_id, tx->scan_id,
                     tx->qs.req.error);
            for (i = 0; i < tx->qs.n; i++) {
                fs_rcpt_t *r = &tx->rcpts[tx->qs.map[i]];
                r->code = 451;
                osp_strlcpy(r->text, "4.3.0 Error: quarantine unavailable, try again later",
                            sizeof(r->text));
            }
        } else {
            tx->pending++;
        }
    }
    fs_op_done(sess);
}

int filter_smtp_reply(const filter_outcome_t *o, size_t n, const char *ok_text, osp_buf_t *out)
{
    size_t i, n2 = 0, n4 = 0, n5 = 0;
    const filter_outcome_t *first4 = NULL, *first5 = NULL;

    for (i = 0; i < n; i++) {
        switch (o[i].code / 100) {
        case 2:
            n2++;
            break;
        case 5:
            n5++;
            if (!first5)
                first5 = &o[i];
            break;
        default:
            n4++;
            if (!first4)
                first4 = &o[i];
            break;
        }
    }
    if (n4 == 0 && n5 == 0) {
        osp_buf_printf(out, "250 %s", ok_text);
        return 250;
    }
    if (n2 == 0 && n4 == 0) {
        osp_buf_printf(out, "%d %s", first5->code, first5->text);
        return first5->code;
    }
    /* Mixed: only a temporary failure for everyone is safe. */
    if (first4)
        osp_buf_printf(out, "451 4.3.0 Error: %s (some recipients failed temporarily)",
                       first4->text);
    else
        osp_buf_printf(out, "451 4.3.0 Error: %s (mixed results, retry)", first5->text);
    return 451;
}

static void fs_step_reply(filter_session_t *sess)
{
    filter_tx_t *tx = sess->tx;
    filter_server_t *srv = sess->srv;
    uint64_t delay = uv_now(srv->loop) - tx->started_ms;
    size_t i;
    int smtp_code = 0;

    /* Anything without an outcome is a bug, but must never become 2xx. */
    fs_outcome_all(tx, 451, "4.3.0 Error: internal error");
    if (sess->lmtp) {
        for (i = 0; i < tx->nrcpt; i++)
            fs_reply(sess, "%d %s", tx->rcpts[i].code, tx->rcpts[i].text);
    } else {
        filter_outcome_t *o = osp_calloc(tx->nrcpt, sizeof(*o));
        osp_buf_t line, ok;
        osp_buf_init(&line, 1024);
        osp_buf_init(&ok, 512);
        for (i = 0; i < tx->nrcpt; i++) {
            o[i].code = tx->rcpts[i].code;
            o[i].text = tx->rcpts[i].text;
        }
        osp_buf_printf(&ok, "2.0.0 Ok: scanned as %s", tx->scan_id);
        smtp_code = filter_smtp_reply(o, tx->nrcpt, osp_buf_cstr(&ok), &line);
        fs_reply(sess, "%s", osp_buf_cstr(&line));
        if (smtp_code / 100 == 4) {
            for (i = 0; i < tx->nrcpt; i++)
                if (o[i].code / 100 == 2)
                    break;
            if (i < tx->nrcpt)
                osp_info("%s: scan_id=%s SMTP reply %d for a partly delivered message: "
                         "Postfix will retry all recipients (duplicates possible; LMTP "
                         "avoids this)", tx->log_id, tx->scan_id, smtp_code);
        }
        osp_buf_close(&line);
        osp_buf_close(&ok);
        free(o);
    }
    {
        filter_msg_info_t mi = {
            .log_id = tx->log_id, .scan_id = tx->scan_id,
            .queue_id = tx->xfwd[FILTER_XA_IDENT], .sender = tx->sender,
            .client_addr = tx->client_addr, .client_name = tx->client_name, .helo = tx->helo,
            .subject = tx->subject, .message_id = tx->message_id,
            .size = tx->body.size, .delay_ms = delay,
            .res = tx->job_inited && tx->job.status == 0 ? &tx->job.result : NULL,
            .settings = tx->settings,
        };
        for (i = 0; i < tx->nrcpt; i++) {
            const fs_rcpt_t *r = &tx->rcpts[i];
            const char *action;
            int eff = sess->lmtp ? r->code : smtp_code;
            if (r->code / 100 != 2 || eff / 100 != 2)
                action = r->code / 100 == 5 || (eff / 100 == 5) ? "reject" : "tempfail";
            else
                action = filter_route_name(r->route);
            filter_msg_report(srv, &mi, i, r->addr, action, filter_route_name(r->route),
                              eff ? eff : r->code, r->text);
        }
    }
    fs_resume(sess);
}

/* ---- commands --------------------------------------------------------------- */

static void fs_data_out(void *ctx, const char *p, size_t len)
{
    filter_tx_t *tx = ctx;

    if (tx->too_big)
        return;
    if (tx->body.size + len > tx->sess->srv->conf->size_limit) {
        tx->too_big = true;
        filter_body_reset(&tx->body);  /* keep neither memory nor disk */
        return;
    }
    (void)filter_body_append(&tx->body, p, len);
}

static void fs_cmd_ehlo(filter_session_t *sess, const filter_cmd_t *cmd)
{
    const filter_conf_t *conf = sess->srv->conf;

    fs_tx_free(&sess->tx);
    fs_xfwd_clear(sess->xfwd);
    sess->greeted = true;
    sess->lmtp = cmd->kind == FILTER_CMD_LHLO;
    sess->esmtp = cmd->kind != FILTER_CMD_HELO;
    if (!sess->esmtp) {
        fs_reply(sess, "250 %s", conf->hostname);
        return;
    }
    fs_reply(sess, "250-%s", conf->hostname);
    fs_reply(sess, "250-PIPELINING");
    fs_reply(sess, "250-SIZE %llu", (unsigned long long)conf->size_limit);
    fs_reply(sess, "250-8BITMIME");
    fs_reply(sess, "250-SMTPUTF8");
    fs_reply(sess, "250-ENHANCEDSTATUSCODES");
    fs_reply(sess, "250-DSN");
    fs_reply(sess, "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE");
}

static void fs_cmd_mail(filter_session_t *sess, const filter_cmd_t *cmd)
{
    filter_tx_t *tx;

    if (!sess->greeted) {
        fs_reply(sess, "503 5.5.1 Error: send %s first", "HELO/EHLO/LHLO");
        fs_error(sess);
        return;
    }
    if (sess->tx) {
        fs_reply(sess, "503 5.5.1 Error: nested MAIL command");
        fs_error(sess);
        return;
    }
    if (cmd->size_set && cmd->size > sess->srv->conf->size_limit) {
        fs_reply(sess, "552 5.3.4 Message size exceeds fixed limit");
        return;
    }
    tx = fs_tx_create(sess);
    tx->sender = osp_strdup(cmd->addr);
    tx->body_type = cmd->body;
    tx->smtputf8 = cmd->smtputf8;
    tx->ret = cmd->ret;
    tx->envid = cmd->envid ? osp_strdup(cmd->envid) : NULL;
    sess->tx = tx;
    fs_reply(sess, "250 2.1.0 Ok");
}

static void fs_cmd_rcpt(filter_session_t *sess, const filter_cmd_t *cmd)
{
    filter_tx_t *tx = sess->tx;
    fs_rcpt_t *r;

    if (tx == NULL) {
        fs_reply(sess, "503 5.5.1 Error: need MAIL command");
        fs_error(sess);
        return;
    }
    if (tx->nrcpt >= sess->srv->conf->rcpt_limit) {
        fs_reply(sess, "452 4.5.3 Error: too many recipients");
        return;
    }
    tx->rcpts = osp_reallocarray(tx->rcpts, tx->nrcpt + 1, sizeof(*tx->rcpts));
    r = &tx->rcpts[tx->nrcpt++];
    memset(r, 0, sizeof(*r));
    r->addr = osp_strdup(cmd->addr);
    r->notify = cmd->notify;
    r->orcpt = cmd->orcpt ? osp_strdup(cmd->orcpt) : NULL;
    fs_reply(sess, "250 2.1.5 Ok");
}

static void fs_cmd_xforward(filter_session_t *sess, const filter_cmd_t *cmd)
{
    int i;

    if (!sess->esmtp) {
        fs_reply(sess, "503 5.5.1 Error: XFORWARD needs EHLO or LHLO");
        fs_error(sess);
        return;
    }
    if (sess->tx) {
        fs_reply(sess, "503 5.5.1 Error: MAIL transaction in progress");
        fs_error(sess);
        return;
    }
    for (i = 0; i < FILTER_XA__COUNT; i++)
        if (cmd->xattr[i]) {
            free(sess->xfwd[i]);
            sess->xfwd[i] = osp_strdup(cmd->xattr[i]);
        }
    fs_reply(sess, "250 2.0.0 Ok");
}

/* One complete command line. Returns false when input must stop here. */
static bool fs_command(filter_session_t *sess)
{
    filter_cmd_t cmd;
    filter_reply_t err;

    if (sess->line.overflow) {
        fs_reply(sess, "500 5.5.2 Error: line too long");
        fs_error(sess);
        return true;
    }
    if (filter_cmd_parse(sess->line.buf.data ? sess->line.buf.data : (char *)"",
                         sess->line.buf.len, &cmd, &err) < 0) {
        fs_reply(sess, "%d %s %s", err.code, err.ext, err.text);
        fs_error(sess);
        return true;
    }
    switch (cmd.kind) {
    case FILTER_CMD_HELO:
    case FILTER_CMD_EHLO:
    case FILTER_CMD_LHLO:
        fs_cmd_ehlo(sess, &cmd);
        break;
    case FILTER_CMD_MAIL:
        fs_cmd_mail(sess, &cmd);
        break;
    case FILTER_CMD_RCPT:
        fs_cmd_rcpt(sess, &cmd);
        break;
    case FILTER_CMD_DATA:
        if (sess->tx == NULL) {
            fs_reply(sess, "503 5.5.1 Error: need MAIL command");
            fs_error(sess);
        } else if (sess->tx->nrcpt == 0) {
            fs_reply(sess, "554 5.5.1 Error: no valid recipients");
            fs_error(sess);
        } else {
            fs_reply(sess, "354 End data with <CR><LF>.<CR><LF>");
            sess->state = FS_DATA;
        }
        break;
    case FILTER_CMD_RSET:
        fs_tx_free(&sess->tx);
        fs_xfwd_clear(sess->xfwd);
        fs_reply(sess, "250 2.0.0 Ok");
        break;
    case FILTER_CMD_NOOP:
        fs_reply(sess, "250 2.0.0 Ok");
        break;
    case FILTER_CMD_QUIT:
        fs_reply(sess, "221 2.0.0 Bye");
        sess->conn.close_after_flush = true;
        return false;
    case FILTER_CMD_VRFY:
        fs_reply(sess, "252 2.0.0 Cannot VRFY; send some mail");
        break;
    case FILTER_CMD_HELP:
        fs_reply(sess, "214 2.0.0 See RFC 5321 and RFC 2033");
        break;
    case FILTER_CMD_XFORWARD:
        fs_cmd_xforward(sess, &cmd);
        break;
    case FILTER_CMD_UNKNOWN:
        fs_reply(sess, "502 5.5.2 Error: command not recognized");
        fs_error(sess);
        break;
    default:
        osp_panic("fs_command: kind %d", (int)cmd.kind);
    }
    return !sess->conn.close_after_flush;
}

static void fs_process_input(filter_session_t *sess, const char *p, size_t len)
{
    while (len > 0) {
        size_t used;
        bool done;

        switch (sess->state) {
        case FS_CMD:
            used = filter_line_feed(&sess->line, p, len, &done);
            p += used;
            len -= used;
            if (done) {
                bool go_on = fs_command(sess);
                filter_line_reset(&sess->line);
                if (!go_on)
                    return;   /* QUIT or too many errors: ignore the rest */
            }
            break;
        case FS_DATA:
            used = filter_data_decode(&sess->tx->dec, p, len, fs_data_out, sess->tx, &done);
            p += used;
            len -= used;
            if (done)
                fs_data_done(sess);
            break;
        case FS_PROCESS:
            /* Pipelined input after the message: keep it for later. */
            if (osp_buf_append(&sess->pending_in, p, len) < 0) {
                osp_warn("%s: too much pipelined input while processing", sess->id);
                sess->conn.close_after_flush = true;
            }
            return;
        case FS_CLOSING:
            return;
        default:
            osp_panic("fs_process_input: state %d", (int)sess->state);
        }
    }
}

/* ---- creation ------------------------------------------------------------ */

filter_session_t *filter_session_create(filter_server_t *srv, bool is_unix)
{
    filter_session_t *sess = osp_calloc(1, sizeof(*sess));

    sess->srv = srv;
    sess->is_unix = is_unix;
    osp_snprintf(sess->id, sizeof(sess->id), "F%06llX", (unsigned long long)++srv->seq);
    filter_conn_init(&sess->conn, srv->loop, is_unix, 1024 * 1024, sess->id, sess, fs_conn_close,
                     fs_after_close);
    sess->state = FS_CMD;
    filter_line_init(&sess->line, srv->conf->line_limit);
    osp_buf_init(&sess->pending_in, FS_PENDING_MAX);
    return sess;
}

void filter_session_start(filter_session_t *sess, bool busy)
{
    const filter_conf_t *conf = sess->srv->conf;

    sess->counted = !busy;
    if (busy) {
        fs_reply(sess, "421 4.3.2 %s Service busy, try again later", conf->hostname);
        sess->conn.close_after_flush = true;
        fs_flush(sess);
        return;
    }
    if (!sess->is_unix)
        uv_tcp_nodelay(&sess->conn.h.tcp, 1);
    fs_reply(sess, "220 %s ESMTP osprey-filter", conf->hostname);
    fs_flush(sess);
    fs_read_start(sess);
}
