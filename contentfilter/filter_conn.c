/* filter_conn: buffered replies and closing for connections from Postfix. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "filter_conn.h"

typedef struct filter_conn_write {
    uv_write_t req;
    filter_conn_t *c;
    char data[];
} filter_conn_write_t;

void filter_conn_init(filter_conn_t *c, uv_loop_t *loop, bool is_unix, size_t out_max,
                      const char *id, void *owner, void (*owner_close)(filter_conn_t *c),
                      void (*after_close)(filter_conn_t *c))
{
    memset(c, 0, sizeof(*c));
    if (is_unix)
        uv_pipe_init(loop, &c->h.pipe, 0);
    else
        uv_tcp_init(loop, &c->h.tcp);
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->deadline);
    uv_timer_init(loop, &c->pause);
    c->h.handle.data = owner;
    c->timer.data = owner;
    c->deadline.data = owner;
    c->pause.data = owner;
    c->open_handles = 4;
    osp_buf_init(&c->out, out_max);
    c->id = id;
    c->owner_close = owner_close;
    c->after_close = after_close;
}

static void filter_conn_closed_cb(uv_handle_t *h)
{
    filter_conn_t *c = h->data;

    if (--c->open_handles == 0)
        c->after_close(c);
}

void filter_conn_close(filter_conn_t *c)
{
    if (c->closed)
        return;
    c->closed = true;
    /* No callback of the owner's runs after uv_close: the handles are ours now. */
    c->timer.data = c;
    c->deadline.data = c;
    c->pause.data = c;
    c->h.handle.data = c;
    uv_close((uv_handle_t *)&c->timer, filter_conn_closed_cb);
    uv_close((uv_handle_t *)&c->deadline, filter_conn_closed_cb);
    uv_close((uv_handle_t *)&c->pause, filter_conn_closed_cb);
    uv_close(&c->h.handle, filter_conn_closed_cb);
}

static void filter_conn_write_cb(uv_write_t *wr, int status)
{
    filter_conn_write_t *w = (filter_conn_write_t *)wr;
    filter_conn_t *c = w->c;

    free(w);
    c->writes--;
    if (c->closed)
        return;
    if (status < 0) {
        osp_info("%s: write failed: %s", c->id, uv_strerror(status));
        c->owner_close(c);
        return;
    }
    if (c->close_after_flush && c->writes == 0)
        c->owner_close(c);
}

void filter_conn_flush(filter_conn_t *c)
{
    filter_conn_write_t *w;
    uv_buf_t b;
    int rc;

    if (c->closed)
        return;
    if (c->out.len == 0) {
        if (c->close_after_flush && c->writes == 0)
            c->owner_close(c);
        return;
    }
    w = osp_malloc(sizeof(*w) + c->out.len);
    w->c = c;
    memcpy(w->data, c->out.data, c->out.len);
    b = uv_buf_init(w->data, (unsigned)c->out.len);
    osp_buf_reset(&c->out);
    rc = uv_write(&w->req, &c->h.stream, &b, 1, filter_conn_write_cb);
    if (rc < 0) {
        free(w);
        osp_info("%s: write failed: %s", c->id, uv_strerror(rc));
        c->owner_close(c);
        return;
    }
    c->writes++;
}

void filter_conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = osp_malloc(FILTER_CONN_READ_SIZE);
    buf->len = FILTER_CONN_READ_SIZE;
}
