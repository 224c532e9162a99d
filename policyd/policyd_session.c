/* policyd_session: one client connection: read, parse, check, answer. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "policyd_checks.h"
#include "policyd_metrics.h"
#include "policyd_proto.h"
#include "policyd_session.h"

#define POLICYD_READ_CHUNK 4096

enum policyd_session_state {
    POLICYD_S_READING,
    POLICYD_S_BUSY,
    POLICYD_S_CLOSING,
};

struct policyd_session {
    policyd_worker_t *w;                  /* borrowed */
    policyd_session_t *prev, *next;       /* the worker's list */
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    uv_timer_t idle_timer;
    uv_timer_t deadline_timer;
    unsigned open_handles;                /* closes still to come */
    enum policyd_session_state state;
    bool reading;
    bool in_process;                      /* policyd_session__process on the stack */
    bool counted;                         /* holds a slot in the connection count */
    char id[32];                          /* "W.N" */
    char peer[OSP_IP_STRLEN + 16];
    policy_parser_t parser;
    policy_request_t req;
    osp_buf_t inbuf;                      /* bytes read, not yet parsed */
    policyd_eval_t eval;
    uint64_t started_ns;                  /* when the current request was complete */
    unsigned long requests;
    char readbuf[POLICYD_READ_CHUNK];
};

/* An answer on its way; freed in the write callback. */
typedef struct policyd_write {
    uv_write_t req;
    policyd_session_t *s;
    size_t len;
    char data[];
} policyd_write_t;

static void policyd_session__process(policyd_session_t *s);
static void policyd_session__alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void policyd_session__read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- teardown ---------------------------------------------------------- */

static void policyd_session__free(policyd_session_t *s)
{
    policyd_worker_t *w = s->w;

    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->counted) {
        atomic_fetch_sub(w->connections, 1);
        osp_gauge_add(w->metrics->active, -1);
    }
    policy_parser_close(&s->parser);
    policy_request_close(&s->req);
    osp_buf_close(&s->inbuf);
    free(s);
}

static void policyd_session__close_cb(uv_handle_t *h)
{
    policyd_session_t *s = h->data;

    if (--s->open_handles == 0)
        policyd_session__free(s);
}

void policyd_session_close(policyd_session_t *s, const char *why)
{
    if (s->state == POLICYD_S_CLOSING)
        return;
    osp_debug(1, "%s: disconnect from %s requests=%lu (%s)", s->id, s->peer, s->requests, why);
    if (s->state == POLICYD_S_BUSY)
        policyd_eval_cancel(&s->eval);
    s->state = POLICYD_S_CLOSING;
    /* Pending writes are cancelled: their callbacks run before ours. */
    uv_close(&s->h.handle, policyd_session__close_cb);
    uv_close((uv_handle_t *)&s->idle_timer, policyd_session__close_cb);
    uv_close((uv_handle_t *)&s->deadline_timer, policyd_session__close_cb);
}

void policyd_session_close_all(policyd_worker_t *w, const char *why)
{
    policyd_session_t *s;

    /* Sessions leave the list only in their last close callback. */
    for (s = w->sessions; s; s = s->next)
        policyd_session_close(s, why);
}

/* ---- writing ----------------------------------------------------------- */

static void policyd_session__write_cb(uv_write_t *req, int status)
{
    policyd_write_t *wr = req->data;
    policyd_session_t *s = wr->s;

    free(wr);
    if (status < 0 && status != UV_ECANCELED && s->state != POLICYD_S_CLOSING) {
        osp_warn("%s: write to %s failed: %s", s->id, s->peer, uv_strerror(status));
        policyd_session_close(s, "write error");
    }
}

static void policyd_session__send(policyd_session_t *s, const char *action)
{
    osp_buf_t b;
    policyd_write_t *wr;
    uv_buf_t buf;
    int rc;

    osp_buf_init(&b, 1024);
    if (policy_reply_format(&b, action) < 0)
        osp_panic("policyd: reply does not fit: action validated at start-up is too long");
    wr = osp_malloc(sizeof(*wr) + b.len);
    wr->s = s;
    wr->len = b.len;
    memcpy(wr->data, b.data, b.len);
    osp_buf_close(&b);
    wr->req.data = wr;
    buf = uv_buf_init(wr->data, (unsigned)wr->len);
    rc = uv_write(&wr->req, &s->h.stream, &buf, 1, policyd_session__write_cb);
    if (rc < 0) {
        /* Failed at once: no callback will come. */
        free(wr);
        osp_warn("%s: write to %s failed: %s", s->id, s->peer, uv_strerror(rc));
        policyd_session_close(s, "write error");
    }
}

/* ---- logging ----------------------------------------------------------- */

static void policyd_session__kv(osp_buf_t *b, const char *key, const char *v, size_t max,
                                const char *open, const char *close)
{
    size_t n = strlen(v);

    (void)osp_buf_printf(b, " %s=%s", key, open);
    (void)osp_buf_append_printable(b, v, n > max ? max : n);
    (void)osp_buf_append_str(b, close);
}

/* One line per answer: see policyd_session.h. */
static void policyd_session__log(policyd_session_t *s, const char *check, const char *action,
                                 const char *reason, double delay, bool warn)
{
    const policy_request_t *r = &s->req;
    const char *qid = policy_request_get(r, POLICY_A_QUEUE_ID);
    char kw[32];
    size_t kwlen = strcspn(action, " \t");
    osp_buf_t b;

    osp_buf_init(&b, 4096);
    if (*qid)
        (void)osp_buf_append_printable(&b, qid, strnlen(qid, 32));
    else
        (void)osp_buf_append_str(&b, "NOQUEUE");
    (void)osp_buf_printf(&b, ": session=%s", s->id);
    (void)osp_buf_append_str(&b, " client=");
    {
        const char *n = policy_request_get(r, POLICY_A_CLIENT_NAME);
        const char *a = policy_request_get(r, POLICY_A_CLIENT_ADDRESS);
        (void)osp_buf_append_printable(&b, n, strnlen(n, 255));
        (void)osp_buf_append_char(&b, '[');
        (void)osp_buf_append_printable(&b, a, strnlen(a, 64));
        (void)osp_buf_append_char(&b, ']');
    }
    if (policy_request_has(r, POLICY_A_SASL_USERNAME) &&
        *policy_request_get(r, POLICY_A_SASL_USERNAME))
        policyd_session__kv(&b, "sasl_username", policy_request_get(r, POLICY_A_SASL_USERNAME),
                            255, "", "");
    policyd_session__kv(&b, "helo", policy_request_get(r, POLICY_A_HELO_NAME), 255, "", "");
    policyd_session__kv(&b, "sender", policy_request_get(r, POLICY_A_SENDER), 320, "<", ">");
    policyd_session__kv(&b, "recipient", policy_request_get(r, POLICY_A_RECIPIENT), 320, "<",
                        ">");
    policyd_session__kv(&b, "state", policy_request_get(r, POLICY_A_PROTOCOL_STATE), 32, "",
                        "");
    (void)osp_buf_printf(&b, " check=%s", check ? check : "none");
    if (kwlen >= sizeof(kw))
        kwlen = sizeof(kw) - 1;
    memcpy(kw, action, kwlen);
    kw[kwlen] = '\0';
    (void)osp_buf_printf(&b, " action=%s delay=%.4f", kw, delay);
    if (reason && *reason)
        (void)osp_buf_printf(&b, " reason=%s", reason);   /* made printable by the check */
    if (warn)
        osp_warn("%s", osp_buf_cstr(&b));
    else if (check)
        osp_info("%s", osp_buf_cstr(&b));
    else
        osp_debug(1, "%s", osp_buf_cstr(&b));
    osp_buf_close(&b);
}

/* ---- one request ------------------------------------------------------- */

static double policyd_session__elapsed(const policyd_session_t *s)
{
    return (double)(uv_hrtime() - s->started_ns) / 1e9;
}

/* The request is answered (or abandoned): get ready for the next one. */
static void policyd_session__request_done(policyd_session_t *s)
{
    (void)uv_timer_stop(&s->deadline_timer);
    policy_request_reset(&s->req);
    s->state = POLICYD_S_READING;
    if (!s->reading) {
        int rc = uv_read_start(&s->h.stream, policyd_session__alloc_cb,
                               policyd_session__read_cb);
        if (rc < 0) {
            osp_warn("%s: cannot read from %s: %s", s->id, s->peer, uv_strerror(rc));
            policyd_session_close(s, "read start failed");
            return;
        }
        s->reading = true;
    }
    if (!s->in_process)
        policyd_session__process(s);
}

static void policyd_session__eval_done_cb(policyd_eval_t *ev, void *data)
{
    policyd_session_t *s = data;
    double delay = policyd_session__elapsed(s);
    const policyd_verdict_t *v = &ev->verdict;

    osp_histogram_observe(s->w->metrics->latency, delay);
    policyd_metrics_action(s->w->metrics, v->action);
    policyd_metrics_check(s->w->metrics, v->check);
    policyd_session__log(s, v->check, v->action, v->reason, delay, false);
    policyd_session__send(s, v->action);
    if (s->state == POLICYD_S_CLOSING)
        return;
    policyd_session__request_done(s);
}

static void policyd_session__deadline_cb(uv_timer_t *t)
{
    policyd_session_t *s = t->data;
    const char *ea = s->w->conf->error_action;

    if (s->state != POLICYD_S_BUSY)
        return;
    policyd_eval_cancel(&s->eval);
    osp_counter_inc(s->w->metrics->timeouts);
    osp_histogram_observe(s->w->metrics->latency, policyd_session__elapsed(s));
    policyd_session__log(s, "time_limit", ea ? ea : "disconnect",
                         "time limit exceeded (policyd_time_limit)",
                         policyd_session__elapsed(s), true);
    if (ea == NULL) {
        policyd_session_close(s, "time limit, error action disconnect");
        return;
    }
    policyd_metrics_action(s->w->metrics, ea);
    policyd_session__send(s, ea);
    if (s->state == POLICYD_S_CLOSING)
        return;
    policyd_session__request_done(s);
}

/* A complete request is in s->req. */
static void policyd_session__start_request(policyd_session_t *s)
{
    const char *rq = policy_request_get(&s->req, POLICY_A_REQUEST);

    s->requests++;
    s->started_ns = uv_hrtime();
    osp_counter_inc(s->w->metrics->requests);
    if (strcmp(rq, "smtpd_access_policy") != 0) {
        osp_buf_t b;
        osp_buf_init(&b, 200);
        (void)osp_buf_append_printable(&b, rq, strnlen(rq, 64));
        osp_warn("%s: protocol error from %s: request=\"%s\" is not smtpd_access_policy; "
                 "closing connection", s->id, s->peer, osp_buf_cstr(&b));
        osp_buf_close(&b);
        osp_counter_inc(s->w->metrics->protocol_errors);
        policyd_session_close(s, "protocol error");
        return;
    }
    s->state = POLICYD_S_BUSY;
    (void)uv_timer_start(&s->deadline_timer, policyd_session__deadline_cb,
                         s->w->conf->time_limit_ms, 0);
    policyd_eval_start(&s->eval, s->w->checks, &s->req, uv_hrtime() / 1000000,
                       policyd_session__eval_done_cb, s);
}

/* Parse buffered input and start requests while idle. */
static void policyd_session__process(policyd_session_t *s)
{
    s->in_process = true;
    while (s->state == POLICYD_S_READING && s->inbuf.len > 0) {
        size_t used = 0;
        enum policy_parse_result r = policy_parser_feed(&s->parser, s->inbuf.data,
                                                        s->inbuf.len, &s->req, &used);
        osp_buf_consume(&s->inbuf, used);
        if (r == POLICY_PARSE_MORE)
            break;
        if (r == POLICY_PARSE_ERROR) {
            osp_warn("%s: protocol error from %s: %s; closing connection", s->id, s->peer,
                     policy_parser_error(&s->parser));
            osp_counter_inc(s->w->metrics->protocol_errors);
            policyd_session_close(s, "protocol error");
            break;
        }
        policyd_session__start_request(s);
    }
    s->in_process = false;
    /* Backpressure: a client that pipelines faster than we answer waits. */
    if (s->state == POLICYD_S_BUSY && s->reading &&
        s->inbuf.len >= s->w->conf->limits.max_request) {
        (void)uv_read_stop(&s->h.stream);
        s->reading = false;
    }
}

/* ---- reading ----------------------------------------------------------- */

static void policyd_session__alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    policyd_session_t *s = h->data;

    (void)hint;
    buf->base = s->readbuf;
    buf->len = sizeof(s->readbuf);
}

static void policyd_session__idle_cb(uv_timer_t *t)
{
    policyd_session_t *s = t->data;

    if (s->state == POLICYD_S_BUSY) {
        /* The deadline bounds a busy session; look again later. */
        (void)uv_timer_start(&s->idle_timer, policyd_session__idle_cb,
                             s->w->conf->idle_timeout_ms, 0);
        return;
    }
    osp_counter_inc(s->w->metrics->idle_timeouts);
    osp_info("%s: idle timeout after %llums from %s requests=%lu; closing connection", s->id,
             (unsigned long long)s->w->conf->idle_timeout_ms, s->peer, s->requests);
    policyd_session_close(s, "idle timeout");
}

static void policyd_session__read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    policyd_session_t *s = stream->data;

    if (s->state == POLICYD_S_CLOSING)
        return;
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            osp_warn("%s: read from %s failed: %s", s->id, s->peer,
                     uv_strerror((int)nread));
        else if (s->state == POLICYD_S_BUSY || s->inbuf.len > 0)
            osp_info("%s: %s disconnected in the middle of a request", s->id, s->peer);
        policyd_session_close(s, nread == UV_EOF ? "end of input" : "read error");
        return;
    }
    if (nread == 0)
        return;
    (void)uv_timer_start(&s->idle_timer, policyd_session__idle_cb,
                         s->w->conf->idle_timeout_ms, 0);
    if (osp_buf_append(&s->inbuf, buf->base, (size_t)nread) < 0)
        osp_panic("policyd: input buffer overflow despite read back-pressure");
    policyd_session__process(s);
}

/* ---- accept ------------------------------------------------------------ */

static void policyd_session__peer(policyd_session_t *s, bool is_unix)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    osp_ip_t ip;
    char buf[OSP_IP_STRLEN];

    if (is_unix) {
        osp_strlcpy(s->peer, "local", sizeof(s->peer));
        return;
    }
    if (uv_tcp_getpeername(&s->h.tcp, (struct sockaddr *)&ss, &len) == 0 &&
        osp_ip_from_sockaddr((struct sockaddr *)&ss, &ip) == 0) {
        unsigned port = ss.ss_family == AF_INET
                            ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                            : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        osp_snprintf(s->peer, sizeof(s->peer), "%s%s%s:%u", ip.family == OSP_IP_V6 ? "[" : "",
                     osp_ip_format(&ip, buf, sizeof(buf)), ip.family == OSP_IP_V6 ? "]" : "",
                     port);
    } else {
        osp_strlcpy(s->peer, "unknown", sizeof(s->peer));
    }
}

void policyd_session_accept(policyd_worker_t *w, uv_stream_t *server, bool is_unix)
{
    policyd_session_t *s = osp_calloc(1, sizeof(*s));
    unsigned n;
    int rc;

    s->w = w;
    osp_snprintf(s->id, sizeof(s->id), "%u.%llu", w->id, (unsigned long long)++w->next_session);
    if (is_unix)
        rc = uv_pipe_init(&w->loop, &s->h.pipe, 0);
    else
        rc = uv_tcp_init(&w->loop, &s->h.tcp);
    if (rc < 0)
        osp_panic("policyd: cannot initialise a stream handle: %s", uv_strerror(rc));
    (void)uv_timer_init(&w->loop, &s->idle_timer);
    (void)uv_timer_init(&w->loop, &s->deadline_timer);
    s->h.handle.data = s;
    s->idle_timer.data = s;
    s->deadline_timer.data = s;
    s->open_handles = 3;
    policy_parser_init(&s->parser, &w->conf->limits);
    policy_request_init(&s->req, w->conf->limits.max_request);
    osp_buf_init(&s->inbuf, w->conf->limits.max_request + POLICYD_READ_CHUNK);
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    s->state = POLICYD_S_READING;

    rc = uv_accept(server, &s->h.stream);
    if (rc < 0) {
        osp_warn("policyd: accept failed: %s", uv_strerror(rc));
        policyd_session_close(s, "accept failed");
        return;
    }
    policyd_session__peer(s, is_unix);
    osp_counter_inc(w->metrics->connections);
    n = atomic_fetch_add(w->connections, 1) + 1;
    s->counted = true;
    osp_gauge_add(w->metrics->active, 1);
    if (n > w->conf->max_connections) {
        osp_counter_inc(w->metrics->rejected_connections);
        osp_warn("%s: too many connections (%u, policyd_max_connections=%u); "
                 "closing new connection from %s", s->id, n - 1, w->conf->max_connections,
                 s->peer);
        policyd_session_close(s, "too many connections");
        return;
    }
    osp_debug(1, "%s: connect from %s", s->id, s->peer);
    (void)uv_timer_start(&s->idle_timer, policyd_session__idle_cb, w->conf->idle_timeout_ms,
                         0);
    rc = uv_read_start(&s->h.stream, policyd_session__alloc_cb, policyd_session__read_cb);
    if (rc < 0) {
        osp_warn("%s: cannot read from %s: %s", s->id, s->peer, uv_strerror(rc));
        policyd_session_close(s, "read start failed");
        return;
    }
    s->reading = true;
}
