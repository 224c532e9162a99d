/* filter_milter: the milter (before-queue) front end; see filter_milter.h. */
#include "config.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_auth.h"
#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "filter_accounts.h"
#include "filter_body.h"
#include "filter_conn.h"
#include "filter_milter.h"
#include "filter_msg.h"
#include "filter_quarantine.h"
#include "filter_scan.h"
#include "filter_server.h"

#define FM_HEADERS_MAX (256 * 1024)

/* Protocol constants (Sendmail's libmilter mfapi.h / mfdef.h). */
#define FM_VERSION 6
#define FM_ACT_ADDHDRS 0x01u
#define FM_ACT_DELRCPT 0x08u
#define FM_ACT_CHGHDRS 0x10u
#define FM_P_NR_HDR 0x80u
#define FM_P_NOUNKNOWN 0x100u
#define FM_P_NODATA 0x200u
#define FM_P_NR_CONN 0x1000u
#define FM_P_NR_HELO 0x2000u
#define FM_P_NR_MAIL 0x4000u
#define FM_P_NR_RCPT 0x8000u
#define FM_P_NR_DATA 0x10000u
#define FM_P_NR_UNKN 0x20000u
#define FM_P_NR_EOH 0x40000u
#define FM_P_NR_BODY 0x80000u
#define FM_P_HDR_LEADSPC 0x100000u
#define FM_P_WANTED (FM_P_NR_HDR | FM_P_NOUNKNOWN | FM_P_NODATA | FM_P_NR_CONN | FM_P_NR_HELO | \
                     FM_P_NR_MAIL | FM_P_NR_RCPT | FM_P_NR_DATA | FM_P_NR_UNKN | FM_P_NR_EOH | \
                     FM_P_NR_BODY | FM_P_HDR_LEADSPC)
#define FM_ACTIONS (FM_ACT_ADDHDRS | FM_ACT_DELRCPT | FM_ACT_CHGHDRS)

enum fm_state {
    FM_READ = 0,
    FM_PROCESS,                     /* end of message seen: scanning; reading paused */
    FM_CLOSING,
};

typedef struct fm_tx {
    filter_milter_t *m;             /* borrowed back-pointer */
    char scan_id[32];
    char log_id[96];
    char *sender;                   /* owned, without brackets */
    char **rcpt_args;               /* owned: as Postfix sent them (for DELRCPT) */
    char **rcpts;                   /* owned: without brackets */
    size_t nrcpt;
    filter_body_t body;
    bool too_big;
    bool eoh;
    uint64_t header_end;
    osp_buf_t headers;              /* the header section, for scanners */
    char *subject_raw;              /* owned: the first Subject value as sent */
    char *subject, *message_id;     /* owned; unfolded, or NULL */
    filter_scan_msg_t msg;
    filter_scan_job_t job;
    bool job_inited;
    filter_rcpt_settings_t *settings;   /* owned; nrcpt, once resolved */
    enum filter_route *routes;      /* owned; nrcpt, after the scan */
    filter_qset_t qs;               /* the quarantined recipients */
    int qstatus;                    /* the quarantine's outcome */
    unsigned pending;               /* operations that will call back */
    bool abandoned;                 /* answered by the deadline */
    uint64_t started_ms;
} fm_tx_t;

struct filter_milter {
    filter_server_t *srv;           /* borrowed */
    filter_milter_t *next;          /* server's list */
    filter_conn_t conn;             /* stream, reply buffer, writes */
    enum fm_state state;
    bool counted, is_unix, reading, negotiated;
    bool in_input;                  /* fm_input is running */
    char id[24];
    uint32_t proto;                 /* negotiated SMFIP_* */
    osp_buf_t in;                   /* packets not yet complete */
    char *client_addr, *client_name, *helo, *queue_id;  /* owned */
    fm_tx_t *tx;                    /* owned */
};

static void fm_close(filter_milter_t *m);
static void fm_flush(filter_milter_t *m);
static void fm_input(filter_milter_t *m);

/* ---- codec ------------------------------------------------------------------ */

int filter_milter_parse(const char *buf, size_t len, filter_milter_packet_t *p,
                        size_t *used_r, char *err, size_t errsize)
{
    uint32_t n;

    if (len < 4)
        return 0;
    memcpy(&n, buf, 4);
    n = ntohl(n);
    if (n == 0 || n > FILTER_MILTER_PACKET_MAX) {
        osp_snprintf(err, errsize, "bad packet length %lu (1 to %d expected)",
                     (unsigned long)n, FILTER_MILTER_PACKET_MAX);
        return -1;
    }
    if (len - 4 < n)
        return 0;
    p->cmd = buf[4];
    p->data = buf + 5;
    p->len = n - 1;
    *used_r = 4 + (size_t)n;
    return 1;
}

void filter_milter_put(osp_buf_t *out, char cmd, const void *data, size_t len)
{
    uint32_t n = htonl((uint32_t)(len + 1));

    if (osp_buf_append(out, &n, 4) < 0 || osp_buf_append_char(out, cmd) < 0 ||
        (len > 0 && osp_buf_append(out, data, len) < 0))
        osp_panic("milter reply buffer full");
}

int filter_milter_strings(const char *data, size_t len, const char **argv, int max)
{
    size_t i = 0;
    int n = 0;

    if (len > 0 && data[len - 1] != '\0')
        return -1;
    while (i < len && n < max) {
        argv[n++] = data + i;
        i += strlen(data + i) + 1;
    }
    return n;
}

/* ---- replies ---------------------------------------------------------------- */

static void fm_put_str2(osp_buf_t *out, char cmd, uint32_t *index, const char *a, const char *b)
{
    osp_buf_t d;
    uint32_t ni;

    osp_buf_init(&d, OSP_BUF_UNLIMITED);
    if (index) {
        ni = htonl(*index);
        osp_buf_append(&d, &ni, 4);
    }
    osp_buf_append(&d, a, strlen(a) + 1);
    if (b)
        osp_buf_append(&d, b, strlen(b) + 1);
    filter_milter_put(out, cmd, d.data, d.len);
    osp_buf_close(&d);
}

static void fm_flush(filter_milter_t *m)
{
    filter_conn_flush(&m->conn);
}

/* ---- transactions ------------------------------------------------------------- */

static fm_tx_t *fm_tx_create(filter_milter_t *m)
{
    const filter_conf_t *conf = m->srv->conf;
    fm_tx_t *tx = osp_calloc(1, sizeof(*tx));

    tx->m = m;
    filter_scan_id_make(tx->scan_id, sizeof(tx->scan_id));
    filter_body_init(&tx->body, conf->memory_threshold, conf->temp_dir);
    osp_buf_init(&tx->headers, FM_HEADERS_MAX);
    filter_qset_init(&tx->qs);
    tx->started_ms = uv_now(m->srv->loop);
    return tx;
}

static void fm_tx_free(fm_tx_t **txp)
{
    fm_tx_t *tx = *txp;
    size_t i;

    if (tx == NULL)
        return;
    if (tx->pending)
        osp_panic("%s: transaction freed with %u operations pending", tx->m->id, tx->pending);
    free(tx->sender);
    for (i = 0; i < tx->nrcpt; i++) {
        free(tx->rcpt_args[i]);
        free(tx->rcpts[i]);
    }
    free(tx->rcpt_args);
    free(tx->rcpts);
    filter_body_close(&tx->body);
    osp_buf_close(&tx->headers);
    free(tx->subject_raw);
    free(tx->subject);
    free(tx->message_id);
    if (tx->job_inited)
        filter_scan_job_close(&tx->job);
    free(tx->settings);
    free(tx->routes);
    filter_qset_free(&tx->qs);
    free(tx);
    *txp = NULL;
}

/* The queue id, once Postfix has told it (macro "i"), for logs and the quarantine. */
static void fm_tx_log_id(fm_tx_t *tx)
{
    char *pq = filter_printable(tx->m->queue_id ? tx->m->queue_id : "NOQUEUE");

    osp_snprintf(tx->log_id, sizeof(tx->log_id), "%s: %s", tx->m->id, pq);
    free(pq);
}

/* ---- freeing ------------------------------------------------------------------ */

static void fm_maybe_free(filter_milter_t *m)
{
    if (m->conn.open_handles > 0 || (m->tx && m->tx->pending > 0))
        return;
    fm_tx_free(&m->tx);
    free(m->client_addr);
    free(m->client_name);
    free(m->helo);
    free(m->queue_id);
    osp_buf_close(&m->in);
    osp_buf_close(&m->conn.out);
    filter_server__milter_gone(m->srv, m, m->counted);
    free(m);
}

static void fm_close(filter_milter_t *m)
{
    if (m->state == FM_CLOSING)
        return;
    m->state = FM_CLOSING;
    filter_conn_close(&m->conn);
}

static void fm_conn_close(filter_conn_t *c)
{
    fm_close(c->h.handle.data);
}

/* Every handle is closed (their data is the conn by now). */
static void fm_after_close(filter_conn_t *c)
{
    fm_maybe_free((void *)((char *)c - offsetof(filter_milter_t, conn)));
}

void filter_milter_abort(filter_milter_t *m)
{
    fm_close(m);
}

/* ---- reading ------------------------------------------------------------------ */

static void fm_timeout_cb(uv_timer_t *t)
{
    filter_milter_t *m = t->data;

    if (m->state != FM_READ)
        return;
    osp_info("%s: timeout waiting for Postfix%s", m->id, m->tx ? " during a message" : "");
    fm_close(m);
}

static void fm_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    filter_milter_t *m = s->data;

    if (nread < 0) {
        free(buf->base);
        if (m->tx && m->state == FM_READ)
            osp_info("%s: lost connection during a message", m->id);
        fm_close(m);
        return;
    }
    if (nread > 0 && m->state != FM_CLOSING) {
        uv_timer_start(&m->conn.timer, fm_timeout_cb, m->srv->conf->timeout_ms, 0);
        if (osp_buf_append(&m->in, buf->base, (size_t)nread) < 0) {
            osp_warn("%s: input buffer full", m->id);
            fm_close(m);
        } else {
            fm_input(m);
            fm_flush(m);
        }
    }
    free(buf->base);
}

static void fm_read_stop(filter_milter_t *m)
{
    if (m->reading) {
        uv_read_stop(&m->conn.h.stream);
        uv_timer_stop(&m->conn.timer);
        m->reading = false;
    }
}

static void fm_read_start(filter_milter_t *m)
{
    if (!m->reading && m->state == FM_READ) {
        int rc = uv_read_start(&m->conn.h.stream, filter_conn_alloc_cb, fm_read_cb);
        if (rc < 0) {
            osp_info("%s: read failed: %s", m->id, uv_strerror(rc));
            fm_close(m);
            return;
        }
        m->reading = true;
        uv_timer_start(&m->conn.timer, fm_timeout_cb, m->srv->conf->timeout_ms, 0);
    }
}

/* ---- the end of a message ------------------------------------------------------ */

static void fm_step_scan_start(filter_milter_t *m);
static void fm_step_resolve(filter_milter_t *m);
static void fm_pause_cb(uv_timer_t *t);
static void fm_step_quarantine(filter_milter_t *m);
static void fm_step_reply(filter_milter_t *m);

/* After the reply to a message: read the next one. */
static void fm_resume(filter_milter_t *m)
{
    uv_timer_stop(&m->conn.deadline);
    uv_timer_stop(&m->conn.pause);
    fm_tx_free(&m->tx);
    OSP_FREE(&m->queue_id);             /* the next message gets its own "i" */
    m->state = FM_READ;
    fm_input(m);
    fm_flush(m);
    if (m->state == FM_READ)
        fm_read_start(m);
}

static void fm_report(filter_milter_t *m, const char *action_all, int code_all,
                      const char *text_all)
{
    fm_tx_t *tx = m->tx;
    filter_msg_info_t mi = {
        .log_id = tx->log_id, .scan_id = tx->scan_id, .queue_id = m->queue_id,
        .sender = tx->sender, .client_addr = m->client_addr ? m->client_addr : "",
        .client_name = m->client_name ? m->client_name : "", .helo = m->helo ? m->helo : "",
        .subject = tx->subject, .message_id = tx->message_id, .size = tx->body.size,
        .delay_ms = uv_now(m->srv->loop) - tx->started_ms,
        .res = tx->job_inited && tx->job.status == 0 ? &tx->job.result : NULL,
        .settings = tx->settings,
    };
    size_t i;

    for (i = 0; i < tx->nrcpt; i++) {
        const char *action = action_all, *verdict = "none";
        int code = code_all;
        char text[400];

        osp_strlcpy(text, text_all ? text_all : "", sizeof(text));
        if (tx->routes) {
            verdict = filter_route_name(tx->routes[i]);
            if (action_all == NULL) {
                action = verdict;
                code = tx->routes[i] == FILTER_ROUTE_REJECT ? 550 : 250;
                switch (tx->routes[i]) {
                case FILTER_ROUTE_QUARANTINE:
                    osp_snprintf(text, sizeof(text), "2.0.0 Ok: quarantined as %s", tx->scan_id);
                    break;
                case FILTER_ROUTE_DISCARD:
                    osp_snprintf(text, sizeof(text), "2.0.0 Ok: discarded as %s", tx->scan_id);
                    break;
                case FILTER_ROUTE_REJECT:
                    osp_strlcpy(text, "5.7.1 Message rejected", sizeof(text));
                    break;
                default:
                    osp_snprintf(text, sizeof(text), "2.0.0 Ok: scanned as %s (milter)",
                                 tx->scan_id);
                    break;
                }
            }
        }
        filter_msg_report(m->srv, &mi, i, tx->rcpts[i], action, verdict, code, text);
    }
}

/* Answer the message with a temporary failure: the client keeps it. */
static void fm_tempfail(filter_milter_t *m, const char *why)
{
    fm_tx_t *tx = m->tx;
    char *p = filter_printable(why);

    osp_warn("%s: scan_id=%s action=tempfail reason=%s", tx->log_id, tx->scan_id, p);
    free(p);
    filter_milter_put(&m->conn.out, 't', NULL, 0);
    fm_report(m, "tempfail", 451, "4.7.1 Error: scan failed, try again later");
    fm_resume(m);
}

static void fm_deadline_cb(uv_timer_t *t)
{
    filter_milter_t *m = t->data;
    fm_tx_t *tx = m->tx;

    if (m->state != FM_PROCESS || tx == NULL)
        return;
    osp_warn("%s: scan_id=%s action=tempfail reason=processing timeout after %llu ms "
             "(pending=%u)", tx->log_id, tx->scan_id,
             (unsigned long long)m->srv->conf->process_timeout_ms, tx->pending);
    m->srv->n_tempfail++;
    tx->abandoned = true;
    uv_timer_stop(&m->conn.pause);
    /* Operations still running keep the transaction: answer, then close. */
    filter_milter_put(&m->conn.out, 't', NULL, 0);
    m->conn.close_after_flush = true;
    fm_flush(m);
}

static void fm_scan_done_cb(filter_scan_job_t *job, int status)
{
    fm_tx_t *tx = job->work.data;
    filter_milter_t *m = tx->m;

    tx->pending--;
    if (m->state != FM_PROCESS || tx->abandoned) {
        fm_maybe_free(m);
        return;
    }
    if (status < 0) {
        char why[300];
        osp_snprintf(why, sizeof(why), "scan failed: %s", job->result.error);
        fm_tempfail(m, why);
        return;
    }
    fm_step_quarantine(m);
}

static void fm_resolved_cb(void *ctx)
{
    fm_tx_t *tx = ctx;
    filter_milter_t *m = tx->m;

    tx->pending--;
    if (m->state != FM_PROCESS || tx->abandoned) {
        fm_maybe_free(m);
        return;
    }
    fm_step_scan_start(m);
}

static void fm_eom(filter_milter_t *m)
{
    fm_tx_t *tx = m->tx;
    filter_server_t *srv = m->srv;
    const filter_conf_t *conf = srv->conf;
    int err;

    m->state = FM_PROCESS;
    fm_read_stop(m);
    srv->n_messages++;
    fm_tx_log_id(tx);
    if (tx->nrcpt == 0) {
        osp_warn("%s: end of message without recipients", m->id);
        filter_milter_put(&m->conn.out, 't', NULL, 0);
        fm_resume(m);
        return;
    }
    if (tx->too_big) {
        static const char reply[] = "552 5.3.4 Error: message file too big";
        osp_info("%s: reject: message size exceeds %llu", tx->log_id,
                 (unsigned long long)conf->size_limit);
        filter_milter_put(&m->conn.out, 'y', reply, sizeof(reply));
        fm_report(m, "reject", 552, reply + 4);
        fm_resume(m);
        return;
    }
    err = filter_body_error(&tx->body);
    if (err) {
        char why[300];
        osp_snprintf(why, sizeof(why), "cannot store the message in %s: %s", conf->temp_dir,
                     strerror(err));
        fm_tempfail(m, why);
        return;
    }
    if (!tx->eoh)
        tx->header_end = tx->body.size;
    {
        char *from = filter_printable(tx->sender);
        char *name = filter_printable(m->client_name ? m->client_name : "");
        char *addr = filter_printable(m->client_addr ? m->client_addr : "");
        osp_info("%s: scan_id=%s from=<%s> size=%llu nrcpt=%zu client=%s[%s] proto=milter%s",
                 tx->log_id, tx->scan_id, from, (unsigned long long)tx->body.size, tx->nrcpt,
                 *name ? name : "unknown", *addr ? addr : "unknown",
                 filter_body_spilled(&tx->body) ? " stored=file" : "");
        free(from);
        free(name);
        free(addr);
    }
    uv_timer_start(&m->conn.deadline, fm_deadline_cb, conf->process_timeout_ms, 0);
    if (conf->pause_stage == FILTER_PAUSE_DATA && conf->pause_ms > 0) {
        osp_info("%s: debug pause at stage data for %llu ms", tx->log_id,
                 (unsigned long long)conf->pause_ms);
        uv_timer_start(&m->conn.pause, fm_pause_cb, conf->pause_ms, 0);
        return;
    }
    fm_step_resolve(m);
}

static void fm_pause_cb(uv_timer_t *t)
{
    filter_milter_t *m = t->data;

    if (m->state == FM_PROCESS && m->tx && !m->tx->abandoned)
        fm_step_resolve(m);
}

/* The recipients' settings (accounts), then the scan. */
static void fm_step_resolve(filter_milter_t *m)
{
    fm_tx_t *tx = m->tx;
    filter_server_t *srv = m->srv;
    size_t i;

    uv_timer_stop(&m->conn.pause);
    tx->subject = filter_header_value(tx->headers.data ? tx->headers.data : "",
                                      tx->headers.len, "Subject");
    tx->message_id = filter_header_value(tx->headers.data ? tx->headers.data : "",
                                         tx->headers.len, "Message-ID");
    tx->settings = osp_calloc(tx->nrcpt, sizeof(*tx->settings));
    if (srv->accounts == NULL) {
        for (i = 0; i < tx->nrcpt; i++)
            tx->settings[i] = srv->defaults;
    } else if (filter_accounts_resolve(srv->accounts, (const char *const *)tx->rcpts,
                                       tx->nrcpt, tx->settings, fm_resolved_cb, tx) > 0) {
        tx->pending++;
        return;
    }
    fm_step_scan_start(m);
}

static void fm_step_scan_start(filter_milter_t *m)
{
    fm_tx_t *tx = m->tx;
    int rc;

    tx->msg.scan_id = tx->scan_id;
    tx->msg.queue_id = m->queue_id ? m->queue_id : "";
    tx->msg.sender = tx->sender;
    tx->msg.nrcpt = tx->nrcpt;
    tx->msg.rcpts = (const char *const *)tx->rcpts;
    tx->msg.client_addr = m->client_addr ? m->client_addr : "";
    tx->msg.client_name = m->client_name ? m->client_name : "";
    tx->msg.helo = m->helo ? m->helo : "";
    tx->msg.body = &tx->body;
    tx->msg.headers = osp_buf_cstr(&tx->headers);
    tx->msg.headers_len = tx->headers.len;
    rc = filter_msg_scan_start(&tx->job, m->srv->scan, m->srv->loop, &tx->msg, tx->settings,
                               fm_scan_done_cb, tx);
    tx->job_inited = true;
    if (rc < 0) {
        char why[128];
        osp_snprintf(why, sizeof(why), "cannot start the scan: %s", uv_strerror(rc));
        tx->job.status = -1;
        fm_tempfail(m, why);
        return;
    }
    tx->pending++;
}

static void fm_quarantine_done_cb(filter_quarantine_req_t *req, int status)
{
    fm_tx_t *tx = req->data;
    filter_milter_t *m = tx->m;

    tx->pending--;
    tx->qstatus = status;
    if (status < 0)
        osp_warn("%s: scan_id=%s quarantine failed: %s", tx->log_id, tx->scan_id, req->error);
    else
        osp_debug(1, "%s: scan_id=%s quarantined in %s", tx->log_id, tx->scan_id,
                  req->location);
    if (m->state != FM_PROCESS || tx->abandoned) {
        fm_maybe_free(m);
        return;
    }
    if (status < 0) {
        fm_tempfail(m, "quarantine unavailable");
        return;
    }
    fm_step_reply(m);
}

/* Verdicts per recipient; the quarantined ones are committed before anything else. */
static void fm_step_quarantine(filter_milter_t *m)
{
    fm_tx_t *tx = m->tx;
    filter_scan_result_t *res = &tx->job.result;
    size_t i;

    filter_apply_thresholds(res, tx->settings);
    tx->routes = osp_calloc(tx->nrcpt, sizeof(*tx->routes));
    filter_route(res, false, tx->routes);
    for (i = 0; i < tx->nrcpt; i++)
        if (tx->routes[i] == FILTER_ROUTE_QUARANTINE)
            filter_qset_add(&tx->qs, tx->rcpts[i], i, tx->settings[i].account_id);
    if (tx->qs.n == 0) {
        fm_step_reply(m);
        return;
    }
    if (filter_qset_store(&tx->qs, m->srv->quarantine, &tx->msg, res, tx->settings, tx->subject,
                          tx->message_id, fm_quarantine_done_cb, tx) < 0) {
        osp_warn("%s: scan_id=%s quarantine failed: %s", tx->log_id, tx->scan_id,
                 tx->qs.req.error);
        fm_tempfail(m, "quarantine unavailable");
        return;
    }
    tx->pending++;
}

/*
 * A header value for the milter: without the CR LF at the end, folded
 * lines joined by LF, and (unless Postfix keeps leading white space) the
 * one space after the colon dropped.
 */
static char *fm_milter_value(const filter_milter_t *m, const char *v, size_t len)
{
    osp_buf_t b;
    size_t i;

    if (!(m->proto & FM_P_HDR_LEADSPC) && len > 0 && v[0] == ' ') {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == '\n' || v[len - 1] == '\r'))
        len--;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    for (i = 0; i < len; i++)
        if (v[i] != '\r')
            osp_buf_append_char(&b, v[i]);
    osp_buf_append_char(&b, '\0');
    return osp_buf_steal(&b);
}

/* Insert our header lines (CR LF text) at the top, in their order. */
static void fm_insert_headers(filter_milter_t *m, const osp_buf_t *hdr)
{
    size_t starts[64], n = 0, i = 0, k;

    while (i < hdr->len && n < sizeof(starts) / sizeof(starts[0])) {
        starts[n++] = i;
        i = osp_auth_field_end(hdr->data, hdr->len, i);
    }
    /* Each insert goes to the top: insert the last one first. */
    for (k = n; k-- > 0;) {
        size_t s = starts[k], e = osp_auth_field_end(hdr->data, hdr->len, s);
        const char *colon = memchr(hdr->data + s, ':', e - s);
        uint32_t idx = 0;
        char *name, *value;
        if (colon == NULL)
            continue;
        name = osp_strndup(hdr->data + s, (size_t)(colon - (hdr->data + s)));
        value = fm_milter_value(m, colon + 1, (size_t)(hdr->data + e - (colon + 1)));
        fm_put_str2(&m->conn.out, 'i', &idx, name, value);
        free(name);
        free(value);
    }
}

/* Delete the Authentication-Results fields that claim our authserv-id. */
static void fm_strip_ours(filter_milter_t *m, const char *authserv_id)
{
    fm_tx_t *tx = m->tx;
    const char *h = tx->headers.data;
    size_t len = tx->headers.len, i = 0, ndel = 0, k;
    uint32_t occurrence = 0, *del = NULL;
    static const char name[] = "Authentication-Results";

    while (h && i < len) {
        size_t e = osp_auth_field_end(h, len, i), c = i + sizeof(name) - 1;
        if (e - i > sizeof(name) - 1 && strncasecmp(h + i, name, sizeof(name) - 1) == 0) {
            while (c < e && (h[c] == ' ' || h[c] == '\t'))
                c++;
            if (c < e && h[c] == ':') {
                occurrence++;
                if (osp_auth_field_is_ours(h, i, e, authserv_id)) {
                    del = osp_reallocarray(del, ndel + 1, sizeof(*del));
                    del[ndel++] = occurrence;
                }
            }
        }
        i = e;
    }
    /* Highest first, so the lower indexes still name the same fields. */
    for (k = ndel; k-- > 0;)
        fm_put_str2(&m->conn.out, 'm', &del[k], name, "");
    free(del);
}

static void fm_step_reply(filter_milter_t *m)
{
    fm_tx_t *tx = m->tx;
    filter_scan_result_t *res = &tx->job.result;
    size_t i, first = tx->nrcpt, nreject = 0;

    for (i = 0; i < tx->nrcpt; i++) {
        if (tx->routes[i] == FILTER_ROUTE_REJECT)
            nreject++;
        else if ((tx->routes[i] == FILTER_ROUTE_REINJECT ||
                  tx->routes[i] == FILTER_ROUTE_REINJECT_TAGGED) && first == tx->nrcpt)
            first = i;
    }
    if (nreject == tx->nrcpt) {
        char *why = filter_printable(res->rcpt[0].reason);
        osp_buf_t r;
        osp_buf_init(&r, 1024);
        osp_buf_printf(&r, "550 5.7.1 Message rejected%s%s", *why ? ": " : "", why);
        filter_milter_put(&m->conn.out, 'y', r.data, r.len + 1);
        osp_buf_close(&r);
        free(why);
    } else if (first == tx->nrcpt) {
        /* Quarantined (committed) or discarded for everyone. */
        filter_milter_put(&m->conn.out, 'd', NULL, 0);
    } else {
        const filter_rcpt_settings_t *set = &tx->settings[first];
        bool tagged = tx->routes[first] == FILTER_ROUTE_REINJECT_TAGGED;
        osp_buf_t own;

        for (i = 0; i < tx->nrcpt; i++)
            if (tx->routes[i] == FILTER_ROUTE_QUARANTINE ||
                tx->routes[i] == FILTER_ROUTE_DISCARD)
                fm_put_str2(&m->conn.out, '-', NULL, tx->rcpt_args[i], NULL);
        if (res->strip_authserv_id)
            fm_strip_ours(m, res->strip_authserv_id);
        if (tagged) {
            const char *lead = (m->proto & FM_P_HDR_LEADSPC) ? " " : "";
            osp_buf_t v;
            osp_buf_init(&v, OSP_BUF_UNLIMITED);
            if (tx->subject_raw) {
                const char *old = tx->subject_raw;
                uint32_t one = 1;
                if (*old == ' ')
                    old++;
                osp_buf_printf(&v, "%s%s %s", lead, set->subject_prefix, old);
                fm_put_str2(&m->conn.out, 'm', &one, "Subject", osp_buf_cstr(&v));
            } else {
                osp_buf_printf(&v, "%s%s", lead, set->subject_prefix);
                fm_put_str2(&m->conn.out, 'h', NULL, "Subject", osp_buf_cstr(&v));
            }
            osp_buf_close(&v);
        }
        osp_buf_init(&own, OSP_BUF_UNLIMITED);
        filter_own_headers(tx->scan_id, res, first, tagged, set, &own);
        fm_insert_headers(m, &own);
        osp_buf_close(&own);
        filter_milter_put(&m->conn.out, 'c', NULL, 0);
    }
    fm_report(m, NULL, 0, NULL);
    fm_resume(m);
}

/* ---- commands ------------------------------------------------------------------ */

static char *fm_unbracket(const char *a)
{
    size_t n = strlen(a);

    if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
        return osp_strndup(a + 1, n - 2);
    return osp_strdup(a);
}

static void fm_set(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? osp_strdup(v) : NULL;
}

/* Reply "continue" unless Postfix agreed that this event gets no reply. */
static void fm_continue(filter_milter_t *m, uint32_t nr_flag)
{
    if (!(m->proto & nr_flag))
        filter_milter_put(&m->conn.out, 'c', NULL, 0);
}

static int fm_optneg(filter_milter_t *m, const filter_milter_packet_t *p, char *err,
                     size_t errsize)
{
    uint32_t v[3], reply[3];

    if (p->len < 12) {
        osp_snprintf(err, errsize, "option negotiation of %zu bytes (12 expected)", p->len);
        return -1;
    }
    memcpy(v, p->data, 12);
    v[0] = ntohl(v[0]);
    v[1] = ntohl(v[1]);
    v[2] = ntohl(v[2]);
    if (v[0] < 2) {
        osp_snprintf(err, errsize, "milter protocol version %lu (2 to 6 supported)",
                     (unsigned long)v[0]);
        return -1;
    }
    if ((v[1] & FM_ACTIONS) != FM_ACTIONS) {
        osp_snprintf(err, errsize, "the MTA does not allow adding/changing headers and "
                     "removing recipients (actions 0x%lx)", (unsigned long)v[1]);
        return -1;
    }
    m->proto = v[2] & FM_P_WANTED;
    m->negotiated = true;
    reply[0] = htonl(v[0] < FM_VERSION ? v[0] : FM_VERSION);
    reply[1] = htonl(FM_ACTIONS);
    reply[2] = htonl(m->proto);
    filter_milter_put(&m->conn.out, 'O', reply, sizeof(reply));
    return 0;
}

static void fm_macros(filter_milter_t *m, const filter_milter_packet_t *p)
{
    const char *argv[64];
    int n, i;

    if (p->len < 1)
        return;
    n = filter_milter_strings(p->data + 1, p->len - 1, argv, 64);
    for (i = 0; i + 1 < n; i += 2)
        if (strcmp(argv[i], "i") == 0 || strcmp(argv[i], "{i}") == 0)
            fm_set(&m->queue_id, argv[i + 1]);
}

static void fm_body(filter_milter_t *m, const char *p, size_t len)
{
    fm_tx_t *tx = m->tx;

    if (len == 0 || tx->too_big)
        return;
    if (tx->body.size + len > m->srv->conf->size_limit) {
        tx->too_big = true;
        filter_body_reset(&tx->body);
        return;
    }
    (void)filter_body_append(&tx->body, p, len);
}

static void fm_header(filter_milter_t *m, const filter_milter_packet_t *p)
{
    fm_tx_t *tx = m->tx;
    const char *argv[2];
    const char *v;
    size_t i;

    if (filter_milter_strings(p->data, p->len, argv, 2) != 2) {
        osp_warn("%s: malformed header event ignored", m->id);
        return;
    }
    if (tx->subject_raw == NULL && strcasecmp(argv[0], "Subject") == 0)
        tx->subject_raw = osp_strdup(argv[1]);
    /* "Name:" + value (one space added if Postfix dropped it), CR LF line ends */
    {
        osp_buf_t line;
        osp_buf_init(&line, OSP_BUF_UNLIMITED);
        osp_buf_printf(&line, "%s:", argv[0]);
        v = argv[1];
        if (!(m->proto & FM_P_HDR_LEADSPC) && *v)
            osp_buf_append_char(&line, ' ');
        for (i = 0; v[i]; i++) {
            if (v[i] == '\n' && (i == 0 || v[i - 1] != '\r'))
                osp_buf_append_char(&line, '\r');
            osp_buf_append_char(&line, v[i]);
        }
        osp_buf_append_str(&line, "\r\n");
        (void)osp_buf_append(&tx->headers, line.data, line.len);
        fm_body(m, line.data, line.len);
        osp_buf_close(&line);
    }
}


/* One packet; -1 closes the connection (err says why). */
static int fm_packet(filter_milter_t *m, const filter_milter_packet_t *p, char *err,
                     size_t errsize)
{
    const char *argv[3];

    if (!m->negotiated && p->cmd != 'O') {
        osp_snprintf(err, errsize, "command '%c' before option negotiation",
                     p->cmd >= 32 && p->cmd < 127 ? p->cmd : '?');
        return -1;
    }
    switch (p->cmd) {
    case 'O':
        return fm_optneg(m, p, err, errsize);
    case 'D':
        fm_macros(m, p);
        return 0;
    case 'C':
        /* hostname NUL, family ('U' ends here), port (2 bytes), address NUL */
        if (memchr(p->data, '\0', p->len) == NULL) {
            osp_snprintf(err, errsize, "malformed connect event");
            return -1;
        }
        argv[0] = p->data;
        {
            size_t hl = strlen(argv[0]) + 1;
            /* Postfix sends "[ADDR]" as the name when it has none */
            fm_set(&m->client_name, argv[0][0] == '[' ? "" : argv[0]);
            fm_set(&m->client_addr, "");
            if (p->len > hl + 3 && (p->data[hl] == '4' || p->data[hl] == '6')) {
                const char *a = p->data + hl + 3;
                size_t al = p->len - hl - 3;
                if (al > 0 && a[al - 1] == '\0')
                    fm_set(&m->client_addr, strncasecmp(a, "IPv6:", 5) == 0 ? a + 5 : a);
            }
        }
        fm_continue(m, FM_P_NR_CONN);
        return 0;
    case 'H':
        if (filter_milter_strings(p->data, p->len, argv, 1) == 1)
            fm_set(&m->helo, argv[0]);
        fm_continue(m, FM_P_NR_HELO);
        return 0;
    case 'M':
        if (filter_milter_strings(p->data, p->len, argv, 1) != 1) {
            osp_snprintf(err, errsize, "malformed MAIL event");
            return -1;
        }
        fm_tx_free(&m->tx);
        m->tx = fm_tx_create(m);
        m->tx->sender = fm_unbracket(argv[0]);
        fm_continue(m, FM_P_NR_MAIL);
        return 0;
    case 'R':
        if (filter_milter_strings(p->data, p->len, argv, 1) != 1 || m->tx == NULL) {
            osp_snprintf(err, errsize, "malformed RCPT event");
            return -1;
        }
        {
            fm_tx_t *tx = m->tx;
            tx->rcpt_args = osp_reallocarray(tx->rcpt_args, tx->nrcpt + 1, sizeof(char *));
            tx->rcpts = osp_reallocarray(tx->rcpts, tx->nrcpt + 1, sizeof(char *));
            tx->rcpt_args[tx->nrcpt] = osp_strdup(argv[0]);
            tx->rcpts[tx->nrcpt] = fm_unbracket(argv[0]);
            tx->nrcpt++;
        }
        fm_continue(m, FM_P_NR_RCPT);
        return 0;
    case 'T':
        fm_continue(m, FM_P_NR_DATA);
        return 0;
    case 'U':
        fm_continue(m, FM_P_NR_UNKN);
        return 0;
    case 'L':
        if (m->tx == NULL) {
            osp_snprintf(err, errsize, "header event outside a message");
            return -1;
        }
        fm_header(m, p);
        fm_continue(m, FM_P_NR_HDR);
        return 0;
    case 'N':
        if (m->tx == NULL) {
            osp_snprintf(err, errsize, "end of headers outside a message");
            return -1;
        }
        m->tx->eoh = true;
        fm_body(m, "\r\n", 2);
        m->tx->header_end = m->tx->body.size;
        fm_continue(m, FM_P_NR_EOH);
        return 0;
    case 'B':
        if (m->tx == NULL) {
            osp_snprintf(err, errsize, "body event outside a message");
            return -1;
        }
        fm_body(m, p->data, p->len);
        fm_continue(m, FM_P_NR_BODY);
        return 0;
    case 'E':
        if (m->tx == NULL) {
            osp_snprintf(err, errsize, "end of message outside a message");
            return -1;
        }
        fm_body(m, p->data, p->len);
        fm_eom(m);
        return 0;
    case 'A':
        /* Abort the message (kept while a scan is running: it calls back). */
        if (m->state == FM_READ) {
            fm_tx_free(&m->tx);
            fm_set(&m->queue_id, NULL);
        }
        return 0;
    case 'K':
        fm_tx_free(&m->tx);
        fm_set(&m->client_addr, NULL);
        fm_set(&m->client_name, NULL);
        fm_set(&m->helo, NULL);
        fm_set(&m->queue_id, NULL);
        return 0;
    case 'Q':
        m->conn.close_after_flush = true;
        return 0;
    default:
        osp_snprintf(err, errsize, "unknown command 0x%02x", (unsigned)(unsigned char)p->cmd);
        return -1;
    }
}

/* Handle every complete packet in the input, until a message needs processing. */
static void fm_input(filter_milter_t *m)
{
    size_t off = 0;

    /*
     * A message answered at once (fm_resume from inside fm_packet) comes
     * back here: the outer loop goes on with the next packet instead.
     */
    if (m->in_input)
        return;
    m->in_input = true;
    while (m->state == FM_READ && !m->conn.close_after_flush) {
        filter_milter_packet_t p;
        size_t used;
        char err[256];
        int rc = filter_milter_parse(m->in.data + off, m->in.len - off, &p, &used, err,
                                     sizeof(err));
        if (rc == 0)
            break;
        if (rc < 0 || fm_packet(m, &p, err, sizeof(err)) < 0) {
            osp_warn("%s: milter protocol error: %s; closing", m->id, err);
            m->conn.close_after_flush = true;
            break;
        }
        off += used;
    }
    osp_buf_consume(&m->in, off);
    m->in_input = false;
}

/* ---- sessions ------------------------------------------------------------------ */

filter_milter_t *filter_milter_create(filter_server_t *srv, bool is_unix)
{
    filter_milter_t *m = osp_calloc(1, sizeof(*m));

    m->srv = srv;
    m->is_unix = is_unix;
    osp_snprintf(m->id, sizeof(m->id), "M%06llX", (unsigned long long)++srv->seq);
    filter_conn_init(&m->conn, srv->loop, is_unix, OSP_BUF_UNLIMITED, m->id, m, fm_conn_close,
                     fm_after_close);
    m->state = FM_READ;
    osp_buf_init(&m->in, FILTER_MILTER_PACKET_MAX + FILTER_CONN_READ_SIZE + 8);
    return m;
}

uv_stream_t *filter_milter_stream(filter_milter_t *m)
{
    return &m->conn.h.stream;
}

filter_milter_t *filter_milter_next(const filter_milter_t *m)
{
    return m->next;
}

void filter_milter_set_next(filter_milter_t *m, filter_milter_t *next)
{
    m->next = next;
}

void filter_milter_start(filter_milter_t *m, bool busy)
{
    m->counted = !busy;
    if (busy) {
        fm_close(m);
        return;
    }
    if (!m->is_unix)
        uv_tcp_nodelay(&m->conn.h.tcp, 1);
    fm_read_start(m);
}
