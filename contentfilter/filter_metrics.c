/* filter_metrics: the registry and the /metrics, /health endpoint. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_metrics.h"
#include "osp_store.h"
#include "filter_metrics.h"

#define FM_MAX_HEAD 2048
#define FM_MAX_CONNS 32
#define FM_TIMEOUT_MS 5000
#define FM_MAX_BODY (1024 * 1024)

/* A counter fed from a monotonic source value at render time. */
typedef struct fm_counter {
    osp_counter_t *c;
    uint64_t last;
} fm_counter_t;

enum {
    FM_MESSAGES, FM_DELIVERED, FM_QUARANTINED, FM_DISCARDED, FM_REJECTED, FM_TEMPFAIL,
    FM_LOG_DROPPED, FM_ACC_HITS, FM_ACC_MISSES, FM_ACC_STALE, FM_ACC_TEMPFAIL,
    FM_LOG_APPENDED, FM_LOG_COMMITTED, FM_LOG_JOURNALED, FM_LOG_LOST,
    FM_STORE_REQUESTS, FM_STORE_TEMPFAIL,
    FM__COUNT
};

typedef struct fm_conn fm_conn_t;

struct filter_metrics {
    uv_tcp_t listener;
    const filter_server_t *srv;
    osp_store_t *st;
    osp_store_log_t *lw;
    filter_accounts_t *fa;
    osp_metrics_t *reg;
    fm_counter_t counters[FM__COUNT];
    osp_gauge_t *sessions, *store_up, *breaker_open, *log_queued, *log_journal_pending,
        *acc_entries;
    fm_conn_t *conns;
    unsigned nconns, open_handles;
    bool closing;
};

struct fm_conn {
    filter_metrics_t *m;
    fm_conn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    unsigned open_handles;
    bool closing, answered;
    osp_buf_t head, out;
    char readbuf[1024];
};

static void fm_feed(fm_counter_t *c, uint64_t v)
{
    if (v > c->last)
        osp_counter_add(c->c, v - c->last);
    c->last = v;
}

static void fm_collect(osp_metrics_t *reg, void *ctx)
{
    filter_metrics_t *m = ctx;
    const filter_server_t *srv = m->srv;

    (void)reg;
    fm_feed(&m->counters[FM_MESSAGES], srv->n_messages);
    fm_feed(&m->counters[FM_DELIVERED], srv->n_delivered);
    fm_feed(&m->counters[FM_QUARANTINED], srv->n_quarantined);
    fm_feed(&m->counters[FM_DISCARDED], srv->n_discarded);
    fm_feed(&m->counters[FM_REJECTED], srv->n_rejected);
    fm_feed(&m->counters[FM_TEMPFAIL], srv->n_tempfail);
    fm_feed(&m->counters[FM_LOG_DROPPED], srv->n_log_dropped);
    osp_gauge_set(m->sessions, (double)srv->nsessions);
    if (m->fa) {
        filter_accounts_stats_t a;
        filter_accounts_stats(m->fa, &a);
        fm_feed(&m->counters[FM_ACC_HITS], a.hits);
        fm_feed(&m->counters[FM_ACC_MISSES], a.misses);
        fm_feed(&m->counters[FM_ACC_STALE], a.stale);
        fm_feed(&m->counters[FM_ACC_TEMPFAIL], a.tempfail);
        osp_gauge_set(m->acc_entries, (double)a.entries);
    }
    if (m->lw) {
        osp_store_log_stats_t l;
        osp_store_log_stats(m->lw, &l);
        fm_feed(&m->counters[FM_LOG_APPENDED], l.appended);
        fm_feed(&m->counters[FM_LOG_COMMITTED], l.committed);
        fm_feed(&m->counters[FM_LOG_JOURNALED], l.journaled);
        fm_feed(&m->counters[FM_LOG_LOST], l.dropped);
        osp_gauge_set(m->log_queued, (double)l.queued);
        osp_gauge_set(m->log_journal_pending, l.journal_pending ? 1 : 0);
    }
    if (m->st) {
        osp_store_stats_t s;
        osp_store_stats(m->st, &s);
        fm_feed(&m->counters[FM_STORE_REQUESTS], s.requests);
        fm_feed(&m->counters[FM_STORE_TEMPFAIL], s.tempfail + s.rejected);
        osp_gauge_set(m->store_up, (double)s.connections_up);
        osp_gauge_set(m->breaker_open, s.breaker == OSP_BREAKER_CLOSED ? 0 : 1);
    }
}

static void fm_register(filter_metrics_t *m)
{
    static const struct {
        int id;
        const char *name, *help;
    } defs[] = {
        { FM_MESSAGES, "osprey_filter_messages_total", "Messages received (end of DATA)." },
        { FM_DELIVERED, "osprey_filter_recipients_delivered_total",
          "Recipients answered 2xx after reinjection (deliver or tag)." },
        { FM_QUARANTINED, "osprey_filter_recipients_quarantined_total",
          "Recipients answered 2xx after the quarantine committed." },
        { FM_DISCARDED, "osprey_filter_recipients_discarded_total", "Recipients discarded." },
        { FM_REJECTED, "osprey_filter_recipients_rejected_total", "Recipients rejected (5xx)." },
        { FM_TEMPFAIL, "osprey_filter_recipients_tempfail_total",
          "Recipients answered 4xx (Postfix retries)." },
        { FM_LOG_DROPPED, "osprey_filter_message_log_refused_total",
          "Message log rows the writer refused." },
        { FM_ACC_HITS, "osprey_filter_account_cache_hits_total", "Recipient settings from the cache." },
        { FM_ACC_MISSES, "osprey_filter_account_cache_misses_total",
          "Recipient settings looked up in the database." },
        { FM_ACC_STALE, "osprey_filter_account_stale_total",
          "Expired cached settings used after a temporary failure." },
        { FM_ACC_TEMPFAIL, "osprey_filter_account_tempfail_total",
          "Recipient lookups that failed temporarily." },
        { FM_LOG_APPENDED, "osprey_filter_message_log_rows_total", "Message log rows accepted." },
        { FM_LOG_COMMITTED, "osprey_filter_message_log_committed_total",
          "Message log rows written with COPY." },
        { FM_LOG_JOURNALED, "osprey_filter_message_log_journaled_total",
          "Message log rows written to the local journal." },
        { FM_LOG_LOST, "osprey_filter_message_log_dropped_total",
          "Message log rows lost (journal unwritable)." },
        { FM_STORE_REQUESTS, "osprey_filter_store_requests_total", "Database requests." },
        { FM_STORE_TEMPFAIL, "osprey_filter_store_failures_total",
          "Database requests that failed temporarily or were refused by the breaker." },
    };
    size_t i;

    m->reg = osp_metrics_create();
    for (i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        m->counters[defs[i].id].c = osp_metrics_counter(m->reg, defs[i].name, defs[i].help);
    m->sessions = osp_metrics_gauge(m->reg, "osprey_filter_sessions", "Sessions being served.");
    m->store_up = osp_metrics_gauge(m->reg, "osprey_filter_store_connections_up",
                                    "Database connections ready.");
    m->breaker_open = osp_metrics_gauge(m->reg, "osprey_filter_store_breaker_open",
                                        "1 while the database circuit breaker is not closed.");
    m->log_queued = osp_metrics_gauge(m->reg, "osprey_filter_message_log_queued",
                                      "Message log rows in memory.");
    m->log_journal_pending = osp_metrics_gauge(m->reg, "osprey_filter_message_log_journal_pending",
                                               "1 while a journal waits to be replayed.");
    m->acc_entries = osp_metrics_gauge(m->reg, "osprey_filter_account_cache_entries",
                                       "Recipients in the settings cache.");
    osp_metrics_set_collect(m->reg, fm_collect, m);
}

/* ---- HTTP ------------------------------------------------------------- */

static void fm_maybe_free(filter_metrics_t *m)
{
    if (m->closing && m->open_handles == 0) {
        osp_metrics_free(&m->reg);
        free(m);
    }
}

static void fm_conn_close_cb(uv_handle_t *hd)
{
    fm_conn_t *c = hd->data;
    filter_metrics_t *m = c->m;

    if (--c->open_handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->nconns--;
    osp_buf_close(&c->head);
    osp_buf_close(&c->out);
    free(c);
    m->open_handles--;
    fm_maybe_free(m);
}

static void fm_conn_close(fm_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, fm_conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, fm_conn_close_cb);
}

static void fm_timeout_cb(uv_timer_t *t)
{
    fm_conn_close(t->data);
}

static void fm_write_cb(uv_write_t *req, int status)
{
    (void)status;
    fm_conn_close(req->data);
}

static void fm_respond(fm_conn_t *c, int code, const char *reason, const char *ctype,
                       const osp_buf_t *body)
{
    uv_buf_t buf;

    (void)osp_buf_printf(&c->out, "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         code, reason, ctype, body->len);
    (void)osp_buf_append(&c->out, body->data ? body->data : "", body->len);
    c->answered = true;
    (void)uv_read_stop((uv_stream_t *)&c->tcp);
    c->wreq.data = c;
    buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, fm_write_cb) < 0)
        fm_conn_close(c);
}

static void fm_handle(fm_conn_t *c)
{
    const char *s = osp_buf_cstr(&c->head);
    osp_buf_t body;

    osp_buf_init(&body, FM_MAX_BODY);
    if (strncmp(s, "GET ", 4) == 0) {
        const char *path = s + 4;
        size_t plen = strcspn(path, " \r\n");
        if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
            if (osp_metrics_render(c->m->reg, &body) == 0) {
                fm_respond(c, 200, "OK", "text/plain; version=0.0.4", &body);
            } else {
                osp_buf_reset(&body);
                (void)osp_buf_append_str(&body, "metrics too large\n");
                fm_respond(c, 500, "Internal Server Error", "text/plain", &body);
            }
        } else if (plen == 7 && strncmp(path, "/health", 7) == 0) {
            (void)osp_buf_append_str(&body, "ok\n");
            fm_respond(c, 200, "OK", "text/plain", &body);
        } else {
            (void)osp_buf_append_str(&body, "not found\n");
            fm_respond(c, 404, "Not Found", "text/plain", &body);
        }
    } else {
        (void)osp_buf_append_str(&body, "bad request\n");
        fm_respond(c, 400, "Bad Request", "text/plain", &body);
    }
    osp_buf_close(&body);
}

static void fm_alloc_cb(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    fm_conn_t *c = hd->data;

    (void)hint;
    buf->base = c->readbuf;
    buf->len = sizeof(c->readbuf);
}

static void fm_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    fm_conn_t *c = st->data;

    if (c->closing || c->answered)
        return;
    if (nread < 0) {
        fm_conn_close(c);
        return;
    }
    if (osp_buf_append(&c->head, buf->base, (size_t)nread) < 0) {
        osp_buf_t body;
        osp_buf_init(&body, 64);
        (void)osp_buf_append_str(&body, "request too large\n");
        fm_respond(c, 431, "Request Header Fields Too Large", "text/plain", &body);
        osp_buf_close(&body);
        return;
    }
    if (strstr(osp_buf_cstr(&c->head), "\r\n\r\n") || strstr(osp_buf_cstr(&c->head), "\n\n"))
        fm_handle(c);
}

static void fm_connection_cb(uv_stream_t *server, int status)
{
    filter_metrics_t *m = server->data;
    fm_conn_t *c;

    if (status < 0 || m->closing)
        return;
    c = osp_calloc(1, sizeof(*c));
    c->m = m;
    (void)uv_tcp_init(server->loop, &c->tcp);
    (void)uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    osp_buf_init(&c->head, FM_MAX_HEAD);
    osp_buf_init(&c->out, FM_MAX_BODY + 512);
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->nconns++;
    m->open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || m->nconns > FM_MAX_CONNS) {
        fm_conn_close(c);
        return;
    }
    (void)uv_timer_start(&c->timer, fm_timeout_cb, FM_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, fm_alloc_cb, fm_read_cb) < 0)
        fm_conn_close(c);
}

static void fm_listener_close_cb(uv_handle_t *hd)
{
    filter_metrics_t *m = hd->data;

    m->open_handles--;
    fm_maybe_free(m);
}

filter_metrics_t *filter_metrics_create(uv_loop_t *loop, const char *listen,
                                        const filter_server_t *srv, struct osp_store *st,
                                        struct osp_store_log *lw, filter_accounts_t *fa,
                                        char *err, size_t errsize)
{
    filter_metrics_t *m;
    struct sockaddr_storage ss;
    char host[256];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port;
    int rc;

    if (colon == NULL || (size_t)(colon - listen) >= sizeof(host)) {
        osp_snprintf(err, errsize, "filter_metrics_listen: \"%s\" is not ADDRESS:PORT", listen);
        return NULL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535 ||
        (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
         uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0)) {
        osp_snprintf(err, errsize, "filter_metrics_listen: \"%s\" is not a numeric ADDRESS:PORT",
                     listen);
        return NULL;
    }
    m = osp_calloc(1, sizeof(*m));
    m->srv = srv;
    m->st = st;
    m->lw = lw;
    m->fa = fa;
    fm_register(m);
    (void)uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    m->open_handles = 1;
    rc = uv_tcp_bind(&m->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&m->listener, 64, fm_connection_cb);
    if (rc < 0) {
        osp_snprintf(err, errsize, "filter_metrics_listen: cannot listen on %s: %s", listen,
                     uv_strerror(rc));
        filter_metrics_close(m);
        return NULL;
    }
    return m;
}

void filter_metrics_set_log(filter_metrics_t *m, struct osp_store_log *lw)
{
    if (m)
        m->lw = lw;
}

void filter_metrics_detach(filter_metrics_t *m)
{
    if (m == NULL)
        return;
    m->st = NULL;
    m->lw = NULL;
    m->fa = NULL;
}

void filter_metrics_close(filter_metrics_t *m)
{
    fm_conn_t *c;

    if (m == NULL || m->closing)
        return;
    m->closing = true;
    uv_close((uv_handle_t *)&m->listener, fm_listener_close_cb);
    for (c = m->conns; c; c = c->next)
        fm_conn_close(c);
}
