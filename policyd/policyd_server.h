/*
 * policyd_server: listeners and worker threads.
 *
 * Every core serves: policyd_workers threads, each with its own uv loop.
 * TCP listeners ("inet:127.0.0.1:10040", "inet:[::1]:10040") are bound
 * once per worker with SO_REUSEPORT, so the kernel spreads new
 * connections over the workers' own accept queues.  A unix-domain
 * listener ("unix:/run/osprey/policyd.sock") is bound once, made mode
 * 0666 (access is controlled by the directory it is in), and each worker
 * polls a dup() of the one listening descriptor: whichever worker's
 * accept() wins gets the connection, the others see EAGAIN.  A
 * connection then lives on one worker for its whole life.
 *
 *   srv = policyd_server_create(&conf, checks, &metrics, &errors);  binds
 *   ... drop privileges ...
 *   policyd_server_start(srv, &errors);                 starts the threads
 *   policyd_server_stop(srv);                 from any thread (a signal)
 *   policyd_server_join(srv);                 0 when every loop closed clean
 *   policyd_server_free(&srv);
 *
 * Stopping closes every listener and every session on every worker
 * (answers in flight are dropped; Postfix retries or applies its
 * default_action), then each loop runs out of handles and is closed.
 */
#ifndef POLICYD_SERVER_H
#define POLICYD_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "osp_buf.h"
#include "policyd.h"
#include "policyd_checks.h"

typedef struct policyd_server policyd_server_t;
typedef struct policyd_session policyd_session_t;

typedef struct policyd_listener {
    struct policyd_worker *w;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    bool is_unix;
    bool initialised;
    const char *name;            /* borrowed from the configuration */
} policyd_listener_t;

/* One worker thread; shared with policyd_session.c. */
typedef struct policyd_worker {
    policyd_server_t *srv;
    unsigned id;
    uv_loop_t loop;
    bool loop_ok;
    uv_async_t stop_async;
    bool async_ok;
    uv_thread_t thread;
    bool thread_ok;
    policyd_listener_t *listeners;     /* owned array */
    size_t nlisteners;
    policyd_session_t *sessions;       /* intrusive list of live sessions */
    uint64_t next_session;
    bool stopping;
    const policyd_conf_t *conf;        /* borrowed */
    const policyd_checks_t *checks;    /* borrowed */
    policyd_metrics_t *metrics;        /* borrowed */
    atomic_uint *connections;          /* the server's count of every worker's */
    void *hook_state;                  /* from the worker_init hook, or NULL */
} policyd_worker_t;

/*
 * Per-worker state made in the worker thread (a resolver): init(loop,
 * arg) runs in each worker thread before it serves; fini(state, arg) runs
 * there when the worker stops, after its sessions are closed, and must
 * close the handles it made on loop.
 */
typedef void *(*policyd_worker_init_fn)(uv_loop_t *loop, void *arg);
typedef void (*policyd_worker_fini_fn)(void *state, void *arg);
/* Before policyd_server_start; arg borrowed until policyd_server_join. */
void policyd_server_set_worker_hooks(policyd_server_t *srv, policyd_worker_init_fn init,
                                     policyd_worker_fini_fn fini, void *arg);

policyd_server_t *policyd_server_create(const policyd_conf_t *conf,
                                        const policyd_checks_t *checks,
                                        policyd_metrics_t *metrics, osp_buf_t *errors);
int policyd_server_start(policyd_server_t *srv, osp_buf_t *errors);
void policyd_server_stop(policyd_server_t *srv);
int policyd_server_join(policyd_server_t *srv);
void policyd_server_free(policyd_server_t **srvp);

/* The port listener i is bound to (TCP), e.g. after asking for port 0; or -1. */
int policyd_server_port(policyd_server_t *srv, size_t i);
unsigned policyd_server_connections(policyd_server_t *srv);

/* Parse "inet:ADDR:PORT", "inet:[V6]:PORT", "unix:PATH".  0 or -1 (err). */
int policyd_listen_parse(const char *spec, struct sockaddr_storage *ss, const char **path_r,
                         char *err, size_t errsize);

#endif
