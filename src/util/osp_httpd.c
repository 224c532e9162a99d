/* osp_httpd: /metrics and /health over HTTP/1.0 on the libuv loop. */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_httpd.h"
#include "osp_mem.h"

#define OSP_HTTPD_MAX_HEAD 2048
#define OSP_HTTPD_MAX_CONNS 32
#define OSP_HTTPD_TIMEOUT_MS 5000
#define OSP_HTTPD_MAX_BODY (4 * 1024 * 1024)

typedef struct osp_httpd_conn osp_httpd_conn_t;

struct osp_httpd {
    uv_tcp_t listener;
    osp_metrics_t *reg;             /* borrowed */
    osp_httpd_conn_t *conns;        /* live connections */
    unsigned nconns;
    unsigned open_handles;          /* listener + connections */
    bool closing;
};

struct osp_httpd_conn {
    osp_httpd_t *http;
    osp_httpd_conn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    unsigned open_handles;
    bool closing, answered;
    osp_buf_t head;
    osp_buf_t out;                  /* lives until the write callback */
    char readbuf[1024];
};

static void osp_httpd__maybe_free(osp_httpd_t *h)
{
    if (h->closing && h->open_handles == 0)
        free(h);
}

static void osp_httpd__conn_close_cb(uv_handle_t *hd)
{
    osp_httpd_conn_t *c = hd->data;
    osp_httpd_t *h = c->http;

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
    osp_httpd__maybe_free(h);
}

static void osp_httpd__conn_close(osp_httpd_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, osp_httpd__conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, osp_httpd__conn_close_cb);
}

static void osp_httpd__timeout_cb(uv_timer_t *t)
{
    osp_httpd__conn_close(t->data);
}

static void osp_httpd__write_cb(uv_write_t *req, int status)
{
    (void)status;
    osp_httpd__conn_close(req->data);
}

/* Answer and close; text is the whole body. */
static void osp_httpd__respond(osp_httpd_conn_t *c, int code, const char *reason,
                               const char *ctype, const char *text, size_t len)
{
    uv_buf_t buf;

    (void)osp_buf_printf(&c->out, "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         code, reason, ctype, len);
    (void)osp_buf_append(&c->out, text, len);
    c->answered = true;
    (void)uv_read_stop((uv_stream_t *)&c->tcp);
    c->wreq.data = c;
    buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, osp_httpd__write_cb) < 0)
        osp_httpd__conn_close(c);
}

#define OSP_HTTPD_TEXT(c, code, reason, s) \
    osp_httpd__respond((c), (code), (reason), "text/plain", (s), sizeof(s) - 1)

static void osp_httpd__handle(osp_httpd_conn_t *c)
{
    const char *s = osp_buf_cstr(&c->head);
    const char *path = s + 4;
    size_t plen;

    if (strncmp(s, "GET ", 4) != 0) {
        OSP_HTTPD_TEXT(c, 400, "Bad Request", "bad request\n");
        return;
    }
    plen = strcspn(path, " \r\n");
    if (plen == 8 && strncmp(path, "/metrics", 8) == 0) {
        osp_buf_t body;
        osp_buf_init(&body, OSP_HTTPD_MAX_BODY);
        if (osp_metrics_render(c->http->reg, &body) == 0)
            osp_httpd__respond(c, 200, "OK", "text/plain; version=0.0.4",
                               osp_buf_cstr(&body), body.len);
        else
            OSP_HTTPD_TEXT(c, 500, "Internal Server Error", "metrics too large\n");
        osp_buf_close(&body);
    } else if (plen == 7 && strncmp(path, "/health", 7) == 0) {
        OSP_HTTPD_TEXT(c, 200, "OK", "ok\n");
    } else {
        OSP_HTTPD_TEXT(c, 404, "Not Found", "not found\n");
    }
}

static void osp_httpd__alloc_cb(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    osp_httpd_conn_t *c = hd->data;

    (void)hint;
    buf->base = c->readbuf;
    buf->len = sizeof(c->readbuf);
}

static void osp_httpd__read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    osp_httpd_conn_t *c = st->data;

    if (c->closing || c->answered)
        return;
    if (nread < 0) {
        osp_httpd__conn_close(c);
        return;
    }
    if (osp_buf_append(&c->head, buf->base, (size_t)nread) < 0) {
        OSP_HTTPD_TEXT(c, 431, "Request Header Fields Too Large", "request too large\n");
        return;
    }
    if (strstr(osp_buf_cstr(&c->head), "\r\n\r\n") || strstr(osp_buf_cstr(&c->head), "\n\n"))
        osp_httpd__handle(c);
}

static void osp_httpd__connection_cb(uv_stream_t *server, int status)
{
    osp_httpd_t *h = server->data;
    osp_httpd_conn_t *c;

    if (status < 0 || h->closing)
        return;
    c = osp_calloc(1, sizeof(*c));
    c->http = h;
    (void)uv_tcp_init(server->loop, &c->tcp);
    (void)uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    osp_buf_init(&c->head, OSP_HTTPD_MAX_HEAD);
    osp_buf_init(&c->out, OSP_HTTPD_MAX_BODY + 512);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    h->open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || h->nconns > OSP_HTTPD_MAX_CONNS) {
        osp_httpd__conn_close(c);
        return;
    }
    (void)uv_timer_start(&c->timer, osp_httpd__timeout_cb, OSP_HTTPD_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, osp_httpd__alloc_cb, osp_httpd__read_cb) < 0)
        osp_httpd__conn_close(c);
}

static void osp_httpd__listener_close_cb(uv_handle_t *hd)
{
    osp_httpd_t *h = hd->data;

    h->open_handles--;
    osp_httpd__maybe_free(h);
}

/* "ADDRESS:PORT" or "[IPV6]:PORT" into ss; 0 or -1. */
static int osp_httpd__parse(const char *listen, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port;
    size_t hl;

    if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
        return -1;
    hl = (size_t)(colon - listen);
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port <= 0 || port > 65535)
        return -1;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0)
        return -1;
    return 0;
}

osp_httpd_t *osp_httpd_create(uv_loop_t *loop, const char *listen, const char *param,
                              osp_metrics_t *reg, char *err, size_t errsize)
{
    osp_httpd_t *h;
    struct sockaddr_storage ss;
    int rc;

    memset(&ss, 0, sizeof(ss));
    if (osp_httpd__parse(listen, &ss) < 0) {
        osp_snprintf(err, errsize, "%s: \"%s\" is not a numeric ADDRESS:PORT", param, listen);
        return NULL;
    }
    h = osp_calloc(1, sizeof(*h));
    h->reg = reg;
    (void)uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->open_handles = 1;
    rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 64, osp_httpd__connection_cb);
    if (rc < 0) {
        osp_snprintf(err, errsize, "%s: cannot listen on %s: %s", param, listen,
                     uv_strerror(rc));
        osp_httpd_close(h);
        return NULL;
    }
    return h;
}

void osp_httpd_close(osp_httpd_t *h)
{
    osp_httpd_conn_t *c;

    if (h == NULL || h->closing)
        return;
    h->closing = true;
    uv_close((uv_handle_t *)&h->listener, osp_httpd__listener_close_cb);
    for (c = h->conns; c; c = c->next)
        osp_httpd__conn_close(c);
}
