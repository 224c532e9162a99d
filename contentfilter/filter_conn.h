/*
 * filter_conn: the stream side of a connection from Postfix, shared by the
 * SMTP/LMTP sessions and the milter connections: the accepted handle,
 * replies gathered in a buffer and written with one uv_write per flush,
 * and "close once everything is written".
 *
 *   filter_conn_init(&c, loop, is_unix, out_max, id, owner, owner_close, after_close);
 *   ... osp_buf_append(&c.out, ...); filter_conn_flush(&c);
 *   c.close_after_flush = true; filter_conn_flush(&c);   (closes when written)
 *
 * It also holds the owner's three timers (read timeout, processing
 * deadline, test-only pause); every handle's data is the owner.  The owner
 * closes with filter_conn_close() (from its owner_close, which a write
 * error or close_after_flush also calls); after that, flushes and write
 * completions do nothing, and after_close runs once every handle is
 * closed (open_handles == 0): the owner may then free itself.
 */
#ifndef FILTER_CONN_H
#define FILTER_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "osp_buf.h"

#define FILTER_CONN_READ_SIZE 65536

/* A TCP or unix stream handle, seen as any of its types. */
typedef union filter_stream {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} filter_stream_t;

typedef struct filter_conn filter_conn_t;

struct filter_conn {
    filter_stream_t h;
    osp_buf_t out;                  /* replies not yet written */
    unsigned writes;                /* writes in flight */
    bool close_after_flush;
    bool closed;                    /* filter_conn_close() was called */
    uv_timer_t timer;               /* read timeout */
    uv_timer_t deadline;            /* processing deadline */
    uv_timer_t pause;               /* test-only pauses */
    int open_handles;
    const char *id;                 /* borrowed: the owner's id, for logs */
    void (*owner_close)(filter_conn_t *c);
    void (*after_close)(filter_conn_t *c);
};

void filter_conn_init(filter_conn_t *c, uv_loop_t *loop, bool is_unix, size_t out_max,
                      const char *id, void *owner, void (*owner_close)(filter_conn_t *c),
                      void (*after_close)(filter_conn_t *c));
/* Close the stream and the timers (once); after_close follows. */
void filter_conn_close(filter_conn_t *c);
/* Write what is in c->out; close (owner_close) if that was asked and all is written. */
void filter_conn_flush(filter_conn_t *c);
/* uv_alloc_cb for reads: FILTER_CONN_READ_SIZE bytes, freed by the read callback. */
void filter_conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

#endif
