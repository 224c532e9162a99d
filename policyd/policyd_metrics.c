/* policyd_metrics: metric registration and the /metrics, /health endpoint. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "policyd_metrics.h"
#include "policyd_server.h"

static const char *const policyd_metric_actions[] = {
    "dunno", "ok", "reject", "defer", "defer_if_permit", "defer_if_reject", "hold",
    "discard", "warn", "info", "filter", "prepend", "redirect", "bcc", "other", NULL
};

void policyd_metrics_init(policyd_metrics_t *m)
{
    osp_counter_vec_t *actions, *checks;
    size_t i;

    memset(m, 0, sizeof(*m));
    m->reg = osp_metrics_create();
    m->requests = osp_metrics_counter(m->reg, "osprey_policyd_requests_total",
                                      "Policy requests received.");
    m->connections = osp_metrics_counter(m->reg, "osprey_policyd_connections_total",
                                         "Client connections accepted.");
    m->rejected_connections = osp_metrics_counter(
        m->reg, "osprey_policyd_connections_rejected_total",
        "Connections closed at once because policyd_max_connections was reached.");
    m->protocol_errors = osp_metrics_counter(m->reg, "osprey_policyd_protocol_errors_total",
                                             "Connections closed for a malformed request.");
    m->timeouts = osp_metrics_counter(m->reg, "osprey_policyd_time_limit_total",
                                      "Requests answered with the error action after policyd_time_limit.");
    m->idle_timeouts = osp_metrics_counter(m->reg, "osprey_policyd_idle_timeouts_total",
                                           "Connections closed after policyd_idle_timeout.");
    m->active = osp_metrics_gauge(m->reg, "osprey_policyd_connections",
                                  "Client connections open now.");
    m->ratelimit_keys = osp_metrics_gauge(m->reg, "osprey_policyd_ratelimit_keys",
                                          "Keys held by the rate-limit tables.");
    m->latency = osp_metrics_histogram(m->reg, "osprey_policyd_request_seconds",
                                       "Time from a complete request to its answer.", NULL, 0);
    actions = osp_metrics_counter_vec(m->reg, "osprey_policyd_actions_total",
                                      "Answers by action keyword.", "action", NULL);
    for (i = 0; policyd_metric_actions[i] && i < POLICYD_METRIC_ACTIONS; i++) {
        m->action_names[i] = policyd_metric_actions[i];
        m->actions[i] = osp_counter_vec_get(actions, policyd_metric_actions[i], NULL);
    }
    m->nactions = i;
    checks = osp_metrics_counter_vec(m->reg, "osprey_policyd_decisions_total",
                                     "Answers by the check that decided them.", "check", NULL);
    for (i = 0; policyd_check_verdict_names[i] && i + 2 < POLICYD_METRIC_CHECKS; i++) {
        m->check_names[i] = policyd_check_verdict_names[i];
        m->checks[i] = osp_counter_vec_get(checks, policyd_check_verdict_names[i], NULL);
    }
    m->check_names[i] = "time_limit";
    m->checks[i] = osp_counter_vec_get(checks, "time_limit", NULL);
    i++;
    m->check_names[i] = "none";
    m->checks[i] = osp_counter_vec_get(checks, "none", NULL);
    m->nchecks = i + 1;
}

void policyd_metrics_close(policyd_metrics_t *m)
{
    osp_metrics_free(&m->reg);
}

void policyd_metrics_action(policyd_metrics_t *m, const char *action)
{
    const char *cls = policy_action_class(action);
    size_t i;

    /* policy_action_class returns our static strings: compare pointers first. */
    for (i = 0; i < m->nactions; i++)
        if (m->action_names[i] == cls || strcmp(m->action_names[i], cls) == 0) {
            osp_counter_inc(m->actions[i]);
            return;
        }
}

void policyd_metrics_check(policyd_metrics_t *m, const char *check)
{
    size_t i;

    if (check == NULL)
        check = "none";
    for (i = 0; i < m->nchecks; i++)
        if (strcmp(m->check_names[i], check) == 0) {
            osp_counter_inc(m->checks[i]);
            return;
        }
}

/* ---- HTTP endpoint ------------------------------------------------------ */

#define POLICYD_HTTP_MAX_HEAD 2048
#define POLICYD_HTTP_MAX_CONNS 32
#define POLICYD_HTTP_TIMEOUT_MS 5000
#define POLICYD_HTTP_MAX_BODY (4 * 1024 * 1024)

typedef struct policyd_http_conn policyd_http_conn_t;

struct policyd_http {
    uv_tcp_t listener;
    policyd_metrics_t *m;                 /* borrowed */
    const policyd_checks_t *checks;       /* borrowed */
    policyd_http_conn_t *conns;           /* live connections */
    unsigned nconns;
    unsigned open_handles;                /* listener + connections' handles */
    bool closing;
};

struct policyd_http_conn {
    policyd_http_t *http;
    policyd_http_conn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    unsigned open_handles;
    bool closing, answered;
    osp_buf_t head;
    osp_buf_t out;                        /* lives until the write callback */
    char readbuf[1024];
};

static void policyd_http__maybe_free(policyd_http_t *h)
{
    if (h->closing && h->open_handles == 0)
        free(h);
}

static void policyd_http__conn_close_cb(uv_handle_t *hd)
{
    policyd_http_conn_t *c = hd->data;
    policyd_http_t *h = c->http;

    if (--c->open_handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nconns--;
    osp_buf_close(&c->head);
    osp_buf_close(&c->out);
    free(c);
    h->open_handles--;
    policyd_http__maybe_free(h);
}

static void policyd_http__conn_close(policyd_http_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, policyd_http__conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, policyd_http__conn_close_cb);
}

static void policyd_http__timeout_cb(uv_timer_t *t)
{
    policyd_http__conn_close(t->data);
}

static void policyd_http__write_cb(uv_write_t *req, int status)
{
    (void)status;
    policyd_http__conn_close(req->data);
}

static void policyd_http__respond(policyd_http_conn_t *c, int code, const char *reason,
                                  const char *ctype, const osp_buf_t *body)
{
    uv_buf_t buf;
    int rc;

    (void)osp_buf_printf(&c->out, "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         code, reason, ctype, body->len);
    (void)osp_buf_append(&c->out, body->data ? body->data : "", body->len);
    c->answered = true;
    (void)uv_read_stop((uv_stream_t *)&c->tcp);
    c->wreq.data = c;
    buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, policyd_http__write_cb);
    if (rc < 0)
        policyd_http__conn_close(c);
}

static void policyd_http__handle(policyd_http_conn_t *c)
{
    const char *s = osp_buf_cstr(&c->head);
    size_t n = strcspn(s, "\r\n");
    osp_buf_t body;

    osp_buf_init(&body, POLICYD_HTTP_MAX_BODY);
    if (n > 4 && strncmp(s, "GET ", 4) == 0) {
        const char *path = s + 4;
        size_t plen = strcspn(path, " \r\n");
        if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
            osp_gauge_set(c->http->m->ratelimit_keys,
                          (double)policyd_checks_ratelimit_keys(c->http->checks));
            if (osp_metrics_render(c->http->m->reg, &body) == 0) {
                policyd_http__respond(c, 200, "OK", "text/plain; version=0.0.4", &body);
            } else {
                osp_buf_reset(&body);
                (void)osp_buf_append_str(&body, "metrics too large\n");
                policyd_http__respond(c, 500, "Internal Server Error", "text/plain", &body);
            }
        } else if (plen == 7 && strncmp(path, "/health", 7) == 0) {
            (void)osp_buf_append_str(&body, "ok\n");
            policyd_http__respond(c, 200, "OK", "text/plain", &body);
        } else {
            (void)osp_buf_append_str(&body, "not found\n");
            policyd_http__respond(c, 404, "Not Found", "text/plain", &body);
        }
    } else {
        (void)osp_buf_append_str(&body, "bad request\n");
        policyd_http__respond(c, 400, "Bad Request", "text/plain", &body);
    }
    osp_buf_close(&body);
}

static void policyd_http__alloc_cb(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    policyd_http_conn_t *c = hd->data;

    (void)hint;
    buf->base = c->readbuf;
    buf->len = sizeof(c->readbuf);
}

static void policyd_http__read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    policyd_http_conn_t *c = st->data;

    if (c->closing || c->answered)
        return;
    if (nread < 0) {
        policyd_http__conn_close(c);
        return;
    }
    if (osp_buf_append(&c->head, buf->base, (size_t)nread) < 0) {
        osp_buf_t body;
        osp_buf_init(&body, 64);
        (void)osp_buf_append_str(&body, "request too large\n");
        policyd_http__respond(c, 431, "Request Header Fields Too Large", "text/plain", &body);
        osp_buf_close(&body);
        return;
    }
    if (strstr(osp_buf_cstr(&c->head), "\r\n\r\n") || strstr(osp_buf_cstr(&c->head), "\n\n"))
        policyd_http__handle(c);
}

static void policyd_http__connection_cb(uv_stream_t *server, int status)
{
    policyd_http_t *h = server->data;
    policyd_http_conn_t *c;

    if (status < 0 || h->closing)
        return;
    c = osp_calloc(1, sizeof(*c));
    c->http = h;
    (void)uv_tcp_init(server->loop, &c->tcp);
    (void)uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    osp_buf_init(&c->head, POLICYD_HTTP_MAX_HEAD);
    osp_buf_init(&c->out, POLICYD_HTTP_MAX_BODY + 512);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    h->open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || h->nconns > POLICYD_HTTP_MAX_CONNS) {
        policyd_http__conn_close(c);
        return;
    }
    (void)uv_timer_start(&c->timer, policyd_http__timeout_cb, POLICYD_HTTP_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, policyd_http__alloc_cb, policyd_http__read_cb) < 0)
        policyd_http__conn_close(c);
}

static void policyd_http__listener_close_cb(uv_handle_t *hd)
{
    policyd_http_t *h = hd->data;

    h->open_handles--;
    policyd_http__maybe_free(h);
}

policyd_http_t *policyd_http_create(uv_loop_t *loop, const char *listen,
                                    policyd_metrics_t *m, const policyd_checks_t *checks,
                                    osp_buf_t *errors)
{
    policyd_http_t *h;
    struct sockaddr_storage ss;
    const char *path = NULL;
    char spec[300], err[256];
    int rc;

    osp_snprintf(spec, sizeof(spec), "inet:%s", listen);
    if (policyd_listen_parse(spec, &ss, &path, err, sizeof(err)) < 0) {
        (void)osp_buf_printf(errors, "parameter \"policyd_metrics_listen\": %s\n", err);
        return NULL;
    }
    h = osp_calloc(1, sizeof(*h));
    h->m = m;
    h->checks = checks;
    (void)uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->open_handles = 1;
    rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 64, policyd_http__connection_cb);
    if (rc < 0) {
        (void)osp_buf_printf(errors, "parameter \"policyd_metrics_listen\": cannot listen "
                             "on %s: %s\n", listen, uv_strerror(rc));
        policyd_http_close(h);
        return NULL;
    }
    return h;
}

void policyd_http_close(policyd_http_t *h)
{
    policyd_http_conn_t *c;

    if (h == NULL || h->closing)
        return;
    h->closing = true;
    uv_close((uv_handle_t *)&h->listener, policyd_http__listener_close_cb);
    for (c = h->conns; c; c = c->next)
        policyd_http__conn_close(c);
}
