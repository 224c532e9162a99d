/*
 * store_conn: one libpq connection driven by the libuv loop, the request
 * objects it runs, and the pool of connections behind osp_store_t.
 *
 * A connection is a small state machine (DOWN -> CONNECTING -> SETUP ->
 * IDLE <-> BUSY, back to DOWN on any failure).  While connecting, the
 * socket may change at every PQconnectPoll step (multi-host strings try
 * one host after another), so the uv_poll handle is closed before each
 * step and a new one is made on the socket libpq reports afterwards.
 * Each poll handle is allocated on its own and freed in its close
 * callback; the connection counts its open handles.
 *
 * The connection never cancels a query (PQcancel blocks): a query that
 * outlives its deadline costs the connection, which is dropped and
 * reconnected.  The server's statement_timeout is set to the query
 * timeout so it normally gives up first.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "store_int.h"

struct store__poll {
    uv_poll_t h;
    store__conn_t *c;
    int fd;
};

static void conn_poll_cb(uv_poll_t *h, int status, int events);
static void conn_results(store__conn_t *c);
static void conn_complete(store__conn_t *c, enum store__outcome outcome, const char *error);
static int conn_flush(store__conn_t *c);

int64_t store__now_us(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ------------------------------------------------------------ requests */

store__req_t *store__req_new(void)
{
    store__req_t *r = osp_calloc(1, sizeof(*r));

    osp_buf_init(&r->scratch, OSP_BUF_UNLIMITED);
    return r;
}

void *store__req_keep(store__req_t *r, void *p)
{
    r->ptrs = osp_reallocarray(r->ptrs, r->nptrs + 1, sizeof(*r->ptrs));
    r->ptrs[r->nptrs++] = p;
    return p;
}

const char *store__req_copy(store__req_t *r, const void *p, size_t len)
{
    return store__req_keep(r, osp_memdup0(p, len));
}

const char *store__req_strdup(store__req_t *r, const char *s)
{
    return s ? store__req_copy(r, s, strlen(s)) : NULL;
}

store__step_t *store__req_step(store__req_t *r, enum store__step_kind kind, const char *name,
                               const char *sql, ExecStatusType expect)
{
    store__step_t *s;

    if (r->nsteps == r->maxsteps) {
        r->maxsteps = r->maxsteps ? r->maxsteps * 2 : 4;
        r->steps = osp_reallocarray(r->steps, r->maxsteps, sizeof(*r->steps));
        r->res = osp_reallocarray(r->res, r->maxsteps, sizeof(*r->res));
    }
    s = &r->steps[r->nsteps];
    memset(s, 0, sizeof(*s));
    r->res[r->nsteps] = NULL;
    r->nsteps++;
    s->kind = kind;
    s->name = name;
    s->sql = sql;
    s->expect = expect;
    return s;
}

static void step_add(store__step_t *s, const char *v, int len, int fmt)
{
    if (s->nparams == STORE_MAX_PARAMS)
        osp_panic("store: too many parameters for %s", s->name ? s->name : s->sql);
    s->values[s->nparams] = v;
    s->lengths[s->nparams] = len;
    s->formats[s->nparams] = fmt;
    s->nparams++;
}

void store__step_param(store__req_t *r, store__step_t *s, const char *text)
{
    step_add(s, text ? store__req_strdup(r, text) : NULL, 0, 0);
}

void store__step_param_bin(store__req_t *r, store__step_t *s, const void *p, size_t len)
{
    if (len > INT32_MAX)
        osp_panic("store: binary parameter of %zu bytes", len);
    step_add(s, store__req_copy(r, p, len), (int)len, 1);
}

void store__step_param_i64(store__req_t *r, store__step_t *s, int64_t v)
{
    char tmp[32];

    osp_snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
    store__step_param(r, s, tmp);
}

void store__req_free(store__req_t *r)
{
    int i;
    size_t k;

    if (r == NULL)
        return;
    for (i = 0; i < r->nsteps; i++)
        PQclear(r->res[i]);
    for (k = 0; k < r->nptrs; k++)
        free(r->ptrs[k]);
    free(r->ptrs);
    free(r->steps);
    free(r->res);
    osp_buf_close(&r->scratch);
    free(r);
}

static void req_timer_close_cb(uv_handle_t *h)
{
    store__req_free(h->data);
}

void store__req_release(store__req_t *r)
{
    r->finished = true;
    if (r->conn != NULL)
        return;                 /* the connection releases it when done */
    if (r->timer_started) {
        if (!r->timer_closing) {
            r->timer_closing = true;
            uv_close((uv_handle_t *)&r->timer, req_timer_close_cb);
        }
        return;
    }
    store__req_free(r);
}

void store__array_literal(osp_buf_t *out, const char *const *items, size_t n)
{
    size_t i;
    const char *p;

    osp_buf_append_char(out, '{');
    for (i = 0; i < n; i++) {
        if (i)
            osp_buf_append_char(out, ',');
        osp_buf_append_char(out, '"');
        for (p = items[i] ? items[i] : ""; *p; p++) {
            if (*p == '"' || *p == '\\')
                osp_buf_append_char(out, '\\');
            osp_buf_append_char(out, *p);
        }
        osp_buf_append_char(out, '"');
    }
    osp_buf_append_char(out, '}');
}

bool store__sqlstate_transient(const char *ss)
{
    if (ss == NULL || strlen(ss) != 5)
        return true;            /* no SQLSTATE: not from the server */
    if (!strncmp(ss, "08", 2) || !strncmp(ss, "40", 2) || !strncmp(ss, "53", 2) ||
        !strncmp(ss, "57", 2) || !strncmp(ss, "58", 2) || !strncmp(ss, "XX", 2))
        return true;
    /* read-only transaction (a standby), lock not available */
    return !strcmp(ss, "25006") || !strcmp(ss, "55P03") || !strcmp(ss, "55006");
}

/* ------------------------------------------------------------ connection */

static void conn_handle_closed(store__conn_t *c)
{
    if (--c->open_handles == 0 && c->closing) {
        c->state = STORE_CONN_CLOSED;
        c->ops->closed(c);
    }
}

static void conn_handle_close_cb(uv_handle_t *h)
{
    conn_handle_closed(h->data);
}

static void poll_close_cb(uv_handle_t *h)
{
    struct store__poll *p = h->data;
    store__conn_t *c = p->c;

    free(p);
    conn_handle_closed(c);
}

static void conn_unwatch(store__conn_t *c)
{
    if (c->poll == NULL)
        return;
    uv_close((uv_handle_t *)&c->poll->h, poll_close_cb);
    c->poll = NULL;
    c->poll_events = 0;
}

/*
 * Watch the connection's current socket for events.  fresh: make a new
 * handle even if the descriptor number is the same (it may be a new
 * socket that reuses the number).
 */
static int conn_watch(store__conn_t *c, int events, bool fresh)
{
    int fd = PQsocket(c->pg);
    struct store__poll *p;
    int rc;

    if (fd < 0)
        return -1;
    if (c->poll != NULL && (fresh || c->poll->fd != fd))
        conn_unwatch(c);
    if (c->poll == NULL) {
        p = osp_calloc(1, sizeof(*p));
        p->c = c;
        p->fd = fd;
        rc = uv_poll_init(c->loop, &p->h, fd);
        if (rc < 0) {
            free(p);
            osp_buf_reset(&c->error);
            osp_buf_printf(&c->error, "uv_poll_init: %s", uv_strerror(rc));
            return -1;
        }
        p->h.data = p;
        c->open_handles++;
        c->poll = p;
        c->poll_events = 0;
    }
    if (events != c->poll_events) {
        rc = uv_poll_start(&c->poll->h, events, conn_poll_cb);
        if (rc < 0)
            return -1;
        c->poll_events = events;
    }
    return 0;
}

static void conn_set_error(store__conn_t *c, const char *error)
{
    size_t len;

    if (error == c->error.data)
        return;
    osp_buf_reset(&c->error);
    osp_buf_append_str(&c->error, error ? error : "unknown error");
    len = c->error.len;
    while (len > 0 && (c->error.data[len - 1] == '\n' || c->error.data[len - 1] == ' '))
        len--;
    osp_buf_truncate(&c->error, len);
    /* libpq's multi-line messages read better on one log line */
    for (len = 0; len < c->error.len; len++)
        if (c->error.data[len] == '\n')
            c->error.data[len] = ' ';
}

static void conn_drop(store__conn_t *c)
{
    conn_unwatch(c);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    uv_timer_stop(&c->ctimer);
    uv_timer_stop(&c->qtimer);
    c->copy_sending = false;
    c->copy_ended = false;
    c->flushing = false;
}

static void conn_ctimer_cb(uv_timer_t *t);

void store__conn_fail(store__conn_t *c, const char *error)
{
    store__req_t *r = c->req;
    enum store__conn_state prev = c->state;
    uint64_t delay;

    if (c->closing || prev == STORE_CONN_DOWN || prev == STORE_CONN_CLOSED)
        return;
    conn_set_error(c, error);
    conn_drop(c);
    c->req = NULL;
    c->state = STORE_CONN_DOWN;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : c->backoff_min_ms;
    if (c->backoff_ms > c->backoff_max_ms)
        c->backoff_ms = c->backoff_max_ms;
    /* +-25% so that a fleet does not reconnect in step */
    delay = c->backoff_ms - c->backoff_ms / 4 + (uint64_t)random() % (c->backoff_ms / 2 + 1);
    uv_timer_start(&c->ctimer, conn_ctimer_cb, delay, 0);
    if (r != NULL) {
        r->conn = NULL;
        r->finish(r, prev == STORE_CONN_CONNECTING ? STORE_REFUSED : STORE_LOST,
                  osp_buf_cstr(&c->error));
    }
    c->ops->down(c, osp_buf_cstr(&c->error));
}

/* The setup request dies with its connection: nobody waits for it. */
static void setup_req_lost(store__req_t *r, enum store__outcome outcome, const char *error)
{
    (void)outcome;
    (void)error;
    store__req_free(r);
}

static void conn_connect_step(store__conn_t *c, PostgresPollingStatusType ps)
{
    store__req_t *r;

    switch (ps) {
    case PGRES_POLLING_READING:
        if (conn_watch(c, UV_READABLE, true) < 0)
            store__conn_fail(c, "cannot watch the database socket");
        return;
    case PGRES_POLLING_WRITING:
        if (conn_watch(c, UV_WRITABLE, true) < 0)
            store__conn_fail(c, "cannot watch the database socket");
        return;
    case PGRES_POLLING_FAILED:
        store__conn_fail(c, PQerrorMessage(c->pg));
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        osp_panic("store: PQconnectPoll returned %d", (int)ps);
    }
    uv_timer_stop(&c->ctimer);
    if (PQsetnonblocking(c->pg, 1) != 0 ||
        (c->pipeline && PQenterPipelineMode(c->pg) != 1)) {
        store__conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    if (conn_watch(c, UV_READABLE, true) < 0) {
        store__conn_fail(c, "cannot watch the database socket");
        return;
    }
    c->state = STORE_CONN_SETUP;
    r = store__req_new();
    r->internal = true;
    r->finish = setup_req_lost;
    c->ops->setup(c, r);
    store__conn_run(c, r);
}

void store__conn_connect(store__conn_t *c)
{
    if (c->closing || c->state != STORE_CONN_DOWN)
        return;
    uv_timer_stop(&c->ctimer);
    c->attempts++;
    c->pg = PQconnectStart(c->conninfo);
    if (c->pg == NULL)
        osp_panic("store: out of memory in PQconnectStart");
    c->state = STORE_CONN_CONNECTING;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        store__conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    uv_timer_start(&c->ctimer, conn_ctimer_cb, c->connect_timeout_ms, 0);
    conn_connect_step(c, PGRES_POLLING_WRITING);
}

static void conn_ctimer_cb(uv_timer_t *t)
{
    store__conn_t *c = t->data;

    if (c->state == STORE_CONN_DOWN)
        store__conn_connect(c);
    else if (c->state == STORE_CONN_CONNECTING)
        store__conn_fail(c, "timed out connecting to the database");
}

static void conn_qtimer_cb(uv_timer_t *t)
{
    store__conn_t *c = t->data;
    char msg[96];

    osp_snprintf(msg, sizeof(msg), "database query timed out after %llu ms",
                 (unsigned long long)c->query_timeout_ms);
    store__conn_fail(c, msg);
}

void store__conn_init(store__conn_t *c, uv_loop_t *loop, const char *conninfo,
                      const store__conn_ops_t *ops, void *owner)
{
    memset(c, 0, sizeof(*c));
    c->loop = loop;
    c->conninfo = conninfo;
    c->ops = ops;
    c->owner = owner;
    c->state = STORE_CONN_DOWN;
    c->connect_timeout_ms = 5000;
    c->query_timeout_ms = 10000;
    c->backoff_min_ms = 100;
    c->backoff_max_ms = 10000;
    osp_buf_init(&c->error, 4096);
    uv_timer_init(loop, &c->ctimer);
    uv_timer_init(loop, &c->qtimer);
    c->ctimer.data = c;
    c->qtimer.data = c;
    c->open_handles = 2;
}

bool store__conn_up(const store__conn_t *c)
{
    return c->state == STORE_CONN_IDLE || c->state == STORE_CONN_BUSY;
}

void store__conn_close(store__conn_t *c)
{
    store__req_t *r = c->req;

    if (c->closing)
        return;
    c->closing = true;
    c->req = NULL;
    conn_drop(c);
    if (r != NULL) {
        r->conn = NULL;
        r->finish(r, STORE_LOST, "shutting down");
    }
    osp_buf_close(&c->error);
    uv_close((uv_handle_t *)&c->ctimer, conn_handle_close_cb);
    uv_close((uv_handle_t *)&c->qtimer, conn_handle_close_cb);
}

/* ------------------------------------------------------------ running */

static int conn_send_step(store__conn_t *c, int i)
{
    store__step_t *s = &c->req->steps[i];
    int ok = 0;

    switch (s->kind) {
    case STORE_STEP_PREPARED:
        ok = PQsendQueryPrepared(c->pg, s->name, s->nparams, s->values, s->lengths,
                                 s->formats, 0);
        break;
    case STORE_STEP_SQL:
    case STORE_STEP_COPY:
        ok = PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, s->values, s->lengths,
                               s->formats, 0);
        break;
    case STORE_STEP_PREPARE:
        ok = PQsendPrepare(c->pg, s->name, s->sql, 0, NULL);
        break;
    }
    if (!ok) {
        store__conn_fail(c, PQerrorMessage(c->pg));
        return -1;
    }
    return 0;
}

void store__conn_run(store__conn_t *c, store__req_t *r)
{
    int i;

    if (c->state != STORE_CONN_IDLE && c->state != STORE_CONN_SETUP)
        osp_panic("store: request run on a connection in state %d", (int)c->state);
    if (r->nsteps == 0)
        osp_panic("store: request without steps");
    c->req = r;
    r->conn = c;
    r->pipeline = c->pipeline;
    if (c->state == STORE_CONN_IDLE)
        c->state = STORE_CONN_BUSY;
    c->send_step = 0;
    c->recv_step = 0;
    c->step_has_result = false;
    c->failed_step = false;
    c->copy_sending = false;
    c->copy_ended = false;
    r->sqlstate[0] = '\0';
    uv_timer_start(&c->qtimer, conn_qtimer_cb, c->query_timeout_ms + 1000, 0);
    if (c->pipeline) {
        for (i = 0; i < r->nsteps; i++)
            if (conn_send_step(c, i) < 0)
                return;
        if (PQpipelineSync(c->pg) != 1) {
            store__conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
    } else if (conn_send_step(c, 0) < 0) {
        return;
    }
    conn_flush(c);
}

/* 0: all sent; 1: more to send (watching writable); -1: failed (c is down). */
static int conn_flush(store__conn_t *c)
{
    int rc = PQflush(c->pg);

    if (rc < 0) {
        store__conn_fail(c, PQerrorMessage(c->pg));
        return -1;
    }
    c->flushing = rc == 1;
    if (conn_watch(c, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE, false) < 0) {
        store__conn_fail(c, "cannot watch the database socket");
        return -1;
    }
    return rc;
}

/* Push the COPY data.  true when it has all been queued and ended. */
static bool conn_copy(store__conn_t *c)
{
    store__step_t *s = &c->req->steps[c->recv_step];
    size_t n;
    int rc;

    while (c->copy_off < s->copy_len) {
        n = s->copy_len - c->copy_off;
        if (n > 256 * 1024)
            n = 256 * 1024;
        rc = PQputCopyData(c->pg, s->copy_data + c->copy_off, (int)n);
        if (rc < 0) {
            store__conn_fail(c, PQerrorMessage(c->pg));
            return false;
        }
        if (rc == 0) {
            conn_watch(c, UV_READABLE | UV_WRITABLE, false);
            return false;
        }
        c->copy_off += n;
    }
    if (!c->copy_ended) {
        rc = PQputCopyEnd(c->pg, NULL);
        if (rc < 0) {
            store__conn_fail(c, PQerrorMessage(c->pg));
            return false;
        }
        if (rc == 0) {
            conn_watch(c, UV_READABLE | UV_WRITABLE, false);
            return false;
        }
        c->copy_ended = true;
    }
    if (conn_flush(c) < 0)
        return false;
    c->copy_sending = false;
    return true;
}

static void conn_step_error(store__conn_t *c, PGresult *res)
{
    store__req_t *r = c->req;
    const char *ss, *msg;
    char tmp[128];

    if (c->failed_step)
        return;
    c->failed_step = true;
    ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    osp_strlcpy(r->sqlstate, ss ? ss : "", sizeof(r->sqlstate));
    msg = PQresultErrorMessage(res);
    if (msg == NULL || *msg == '\0') {
        osp_snprintf(tmp, sizeof(tmp), "unexpected result %s from the database",
                     PQresStatus(PQresultStatus(res)));
        msg = tmp;
    }
    conn_set_error(c, msg);
}

static void conn_results(store__conn_t *c)
{
    store__req_t *r;
    PGresult *res;
    ExecStatusType s;

    while ((r = c->req) != NULL &&
           (c->state == STORE_CONN_BUSY || c->state == STORE_CONN_SETUP)) {
        if (c->copy_sending && !conn_copy(c))
            return;
        if (PQisBusy(c->pg))
            return;
        res = PQgetResult(c->pg);
        if (res == NULL) {
            if (!c->step_has_result)
                return;
            c->step_has_result = false;
            c->recv_step++;
            if (!r->pipeline) {
                if (c->failed_step || c->recv_step == r->nsteps) {
                    conn_complete(c, c->failed_step ? STORE_SQL_ERROR : STORE_DONE,
                                  osp_buf_cstr(&c->error));
                } else if (conn_send_step(c, c->recv_step) == 0) {
                    conn_flush(c);
                }
            }
            continue;
        }
        s = PQresultStatus(res);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (!c->failed_step && c->recv_step != r->nsteps) {
                c->failed_step = true;
                conn_set_error(c, "database pipeline ended early");
            }
            conn_complete(c, c->failed_step ? STORE_SQL_ERROR : STORE_DONE,
                          osp_buf_cstr(&c->error));
            continue;
        }
        c->step_has_result = true;
        if (c->recv_step >= r->nsteps) {
            PQclear(res);
            continue;
        }
        if (s == PGRES_COPY_IN && r->steps[c->recv_step].kind == STORE_STEP_COPY &&
            !c->copy_ended) {
            PQclear(res);
            c->copy_sending = true;
            c->copy_off = 0;
            continue;
        }
        if (s == r->steps[c->recv_step].expect && !c->failed_step) {
            PQclear(r->res[c->recv_step]);
            r->res[c->recv_step] = res;
        } else {
            if (s != PGRES_PIPELINE_ABORTED)
                conn_step_error(c, res);
            c->failed_step = true;
            PQclear(res);
        }
    }
}

static void conn_notifies(store__conn_t *c)
{
    PGnotify *n;

    while (c->pg != NULL && (n = PQnotifies(c->pg)) != NULL) {
        if (c->notify != NULL)
            c->notify(c, n->relname, n->extra);
        PQfreemem(n);
    }
}

static void conn_complete(store__conn_t *c, enum store__outcome outcome, const char *error)
{
    store__req_t *r = c->req;
    bool setup = c->state == STORE_CONN_SETUP;
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    char *err = osp_strdup(error ? error : "");

    c->req = NULL;
    r->conn = NULL;
    uv_timer_stop(&c->qtimer);
    if (c->state == STORE_CONN_BUSY)
        c->state = STORE_CONN_IDLE;
    if (ts != PQTRANS_IDLE && !setup) {
        /* A failed step inside BEGIN leaves the transaction aborted:
         * start over on a clean connection rather than guess. */
        c->req = NULL;
        store__conn_fail(c, "transaction left open after an error");
    }
    if (setup) {
        if (outcome == STORE_DONE && ts == PQTRANS_IDLE) {
            c->state = STORE_CONN_IDLE;
            c->backoff_ms = 0;
            c->connects++;
        } else {
            store__conn_fail(c, outcome == STORE_DONE ? "setup left a transaction open" : err);
        }
        store__req_free(r);
    } else {
        r->finish(r, outcome, err);
    }
    free(err);
    if (c->state == STORE_CONN_IDLE && c->req == NULL && !c->closing)
        c->ops->ready(c);
}

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
    struct store__poll *p = h->data;
    store__conn_t *c = p->c;
    char msg[128];

    if (c->poll != p)
        return;                 /* stale: being closed */
    if (status < 0) {
        osp_snprintf(msg, sizeof(msg), "database socket: %s", uv_strerror(status));
        store__conn_fail(c, msg);
        return;
    }
    if (c->state == STORE_CONN_CONNECTING) {
        /* PQconnectPoll may close the socket and open another. */
        conn_unwatch(c);
        conn_connect_step(c, PQconnectPoll(c->pg));
        return;
    }
    if ((events & UV_WRITABLE) && c->req != NULL) {
        if (c->copy_sending) {
            if (!conn_copy(c))
                return;
        } else if (c->flushing && conn_flush(c) < 0) {
            return;
        }
    }
    if (events & (UV_READABLE | UV_DISCONNECT)) {
        if (!PQconsumeInput(c->pg)) {
            store__conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
        conn_notifies(c);
    }
    conn_results(c);
    if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_BAD)
        store__conn_fail(c, PQerrorMessage(c->pg));
}
