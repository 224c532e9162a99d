/*
 * store_pool: osp_store_t, the pool of pipelined connections, the queue of
 * requests waiting for one, deadlines, the circuit breaker, LISTEN.
 *
 * Requests are queued and handed to idle connections from a zero-delay
 * timer, never from inside the call that submitted them, so a callback
 * never runs before the submitting call has returned its handle.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "store_int.h"

#define STORE_MAX_LISTENERS 16

typedef struct store_listener {
    char *channel;
    char *sql;                    /* LISTEN "channel" */
    osp_store_notify_cb *cb;
    void *ctx;
} store_listener_t;

struct osp_store {
    uv_loop_t *loop;
    osp_store_conf_t conf;
    char *conninfo;
    store__conn_t *conns;
    unsigned nconns, nclosed;
    uv_timer_t dispatch;          /* zero-delay: hand queued requests out */
    bool dispatch_closed;
    store__req_t *qhead, *qtail;
    size_t qlen;
    osp_breaker_t breaker;
    store_listener_t listeners[STORE_MAX_LISTENERS];
    size_t nlisteners;
    bool closing;
    uint64_t n_requests, n_ok, n_not_found, n_tempfail, n_rejected, n_reconnects;
    osp_buf_t last_error;
};

void osp_store_conf_init(osp_store_conf_t *conf, const osp_config_t *cfg)
{
    memset(conf, 0, sizeof(*conf));
    conf->conninfo = "dbname=osprey";
    conf->pool_size = 4;
    conf->connect_timeout_ms = 5000;
    conf->query_timeout_ms = 10000;
    conf->reconnect_min_ms = 100;
    conf->reconnect_max_ms = 10000;
    conf->max_queue = 10000;
    if (cfg != NULL) {
        conf->conninfo = osp_config_str(cfg, "database_connection");
        conf->pool_size = (unsigned)osp_config_int(cfg, "database_pool_size");
        conf->connect_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "database_connect_timeout");
        conf->query_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "database_query_timeout");
        conf->breaker.failure_threshold =
            (unsigned)osp_config_int(cfg, "breaker_failure_threshold");
        conf->breaker.cooldown_ms = (uint64_t)osp_config_duration_ms(cfg, "breaker_cooldown");
    }
}

const char *store__conninfo(const osp_store_t *st)
{
    return st->conninfo;
}

uv_loop_t *store__loop(const osp_store_t *st)
{
    return st->loop;
}

uint64_t store__query_timeout(const osp_store_t *st)
{
    return st->conf.query_timeout_ms;
}

/* ------------------------------------------------------------ queue */

static void queue_remove(osp_store_t *st, store__req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        st->qhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        st->qtail = r->prev;
    r->next = r->prev = NULL;
    r->queued = false;
    st->qlen--;
}

static void queue_push(osp_store_t *st, store__req_t *r)
{
    r->prev = st->qtail;
    r->next = NULL;
    if (st->qtail)
        st->qtail->next = r;
    else
        st->qhead = r;
    st->qtail = r;
    r->queued = true;
    st->qlen++;
}

static bool store_any_up(const osp_store_t *st, bool or_connecting)
{
    unsigned i;

    for (i = 0; i < st->nconns; i++) {
        if (store__conn_up(&st->conns[i]))
            return true;
        if (or_connecting && (st->conns[i].state == STORE_CONN_CONNECTING ||
                              st->conns[i].state == STORE_CONN_SETUP))
            return true;
    }
    return false;
}

/* The engine's verdict on a request of the pool; runs its callback. */
static void pool_finish(store__req_t *r, enum store__outcome outcome, const char *error)
{
    osp_store_t *st = r->st;
    uint64_t now = uv_now(st->loop);
    int status = outcome == STORE_DONE ? OSP_STORE_OK : OSP_STORE_TEMPFAIL;
    char msg[512];

    if (r->breaker_counted) {
        r->breaker_counted = false;
        if (outcome == STORE_DONE ||
            (outcome == STORE_SQL_ERROR && !store__sqlstate_transient(r->sqlstate)))
            osp_breaker_success(&st->breaker, now);
        else
            osp_breaker_failure(&st->breaker, now);
    }
    if (outcome != STORE_DONE) {
        osp_snprintf(msg, sizeof(msg), "database %s: %s",
                     outcome == STORE_SQL_ERROR ? "error" :
                     outcome == STORE_LOST ? "connection lost, outcome unknown" :
                     "unavailable", error && *error ? error : "unknown error");
        error = msg;
        osp_buf_reset(&st->last_error);
        osp_buf_append_str(&st->last_error, msg);
    }
    if (!r->cancelled && !r->internal) {
        r->finished = true;
        if (r->deliver != NULL)
            r->deliver(r, status, outcome == STORE_DONE ? NULL : error);
    }
    store__req_release(r);
}

static void count_status(osp_store_t *st, int status)
{
    if (status == OSP_STORE_OK)
        st->n_ok++;
    else if (status == OSP_STORE_NOT_FOUND)
        st->n_not_found++;
    else
        st->n_tempfail++;
}

/* Fail every queued request that no connection can serve. */
static void fail_queued(osp_store_t *st, enum store__outcome outcome, const char *error,
                        const store__conn_t *pinned_to)
{
    store__req_t *r, *next;

    for (r = st->qhead; r != NULL; r = next) {
        next = r->next;
        if (pinned_to != NULL && r->pinned != pinned_to)
            continue;
        queue_remove(st, r);
        pool_finish(r, outcome, error);
    }
}

static void dispatch_cb(uv_timer_t *t)
{
    osp_store_t *st = t->data;
    store__req_t *r, *next;
    unsigned i;

    /* requests pinned to a connection that went down: it will LISTEN again */
    for (r = st->qhead; r != NULL; r = next) {
        next = r->next;
        if (r->pinned != NULL && !store__conn_up(r->pinned) &&
            r->pinned->state != STORE_CONN_SETUP) {
            queue_remove(st, r);
            pool_finish(r, STORE_REFUSED, osp_buf_cstr(&st->last_error));
        }
    }
    /* nothing up and nothing trying: fail now rather than at the deadline */
    if (!store_any_up(st, true))
        fail_queued(st, STORE_REFUSED, osp_buf_cstr(&st->last_error), NULL);
    for (i = 0; i < st->nconns && st->qhead != NULL; i++) {
        store__conn_t *c = &st->conns[i];

        if (c->state != STORE_CONN_IDLE)
            continue;
        for (r = st->qhead; r != NULL; r = r->next)
            if (r->pinned == NULL || r->pinned == c)
                break;
        if (r == NULL)
            continue;
        queue_remove(st, r);
        store__conn_run(c, r);
    }
}

static void dispatch_soon(osp_store_t *st)
{
    if (!st->closing && st->qhead != NULL)
        uv_timer_start(&st->dispatch, dispatch_cb, 0, 0);
}

static void req_deadline_cb(uv_timer_t *t)
{
    store__req_t *r = t->data;
    osp_store_t *st = r->st;

    if (r->queued) {
        queue_remove(st, r);
        pool_finish(r, STORE_REFUSED, "timed out waiting for a database connection");
    } else if (r->conn != NULL) {
        store__conn_fail(r->conn, "request deadline exceeded");
    }
}

static osp_store_req_t *submit(osp_store_t *st, store__req_t *r, uint64_t timeout_ms,
                               bool internal, const char **error_r)
{
    unsigned i;

    r->st = st;
    r->finish = pool_finish;
    r->internal = internal;
    if (st->closing) {
        *error_r = "database store is shutting down";
        store__req_free(r);
        return NULL;
    }
    if (!internal) {
        if (st->qlen >= st->conf.max_queue) {
            st->n_rejected++;
            *error_r = "too many database requests waiting";
            store__req_free(r);
            return NULL;
        }
        if (!osp_breaker_allow(&st->breaker, uv_now(st->loop))) {
            st->n_rejected++;
            *error_r = "database unavailable (circuit breaker open)";
            store__req_free(r);
            return NULL;
        }
        r->breaker_counted = true;
        st->n_requests++;
    }
    uv_timer_init(st->loop, &r->timer);
    r->timer.data = r;
    r->timer_started = true;
    if (timeout_ms == 0)
        timeout_ms = st->conf.query_timeout_ms;
    r->deadline_ms = uv_now(st->loop) + timeout_ms;
    uv_timer_start(&r->timer, req_deadline_cb, timeout_ms, 0);
    queue_push(st, r);
    if (!store_any_up(st, true)) {
        /* Everything is backing off: this request is the probe.  A
         * connection attempt that fails at once fails the queue; that is
         * reported from the dispatch timer, never from inside this call. */
        for (i = 0; i < st->nconns; i++)
            if (st->conns[i].state == STORE_CONN_DOWN) {
                store__conn_connect(&st->conns[i]);
                break;
            }
    }
    dispatch_soon(st);
    return r;
}

osp_store_req_t *store__submit(osp_store_t *st, store__req_t *r, uint64_t timeout_ms,
                               const char **error_r)
{
    const char *dummy;

    return submit(st, r, timeout_ms, false, error_r ? error_r : &dummy);
}

void osp_store_cancel(osp_store_req_t **reqp)
{
    store__req_t *r = *reqp;
    osp_store_t *st;

    if (r == NULL)
        return;
    *reqp = NULL;
    if (r->cancelled || r->finished)
        return;
    r->cancelled = true;
    st = r->st;
    if (r->queued) {
        queue_remove(st, r);
        if (r->breaker_counted) {
            /* never reached the database: say what we know of it */
            r->breaker_counted = false;
            if (store_any_up(st, false))
                osp_breaker_success(&st->breaker, uv_now(st->loop));
            else
                osp_breaker_failure(&st->breaker, uv_now(st->loop));
        }
        store__req_release(r);
    }
    /* running: the connection drains its results, then releases it */
}

/* ------------------------------------------------------------ connections */

const store__stmt_t store__stmts[] = {
    { "osp_ping", "SELECT 1" },
    { "osp_sync_on", "SELECT set_config('synchronous_commit', 'on', true)" },
    { "osp_resolve",
      "SELECT account_id, account_path::text, settings::text"
      "  FROM osprey_resolve_recipient($1)" },
    { "osp_lists",
      "SELECT id, account_id, list, kind, coalesce(value, value_net::text)"
      "  FROM list_entries ORDER BY account_id, id" },
    { "osp_rules",
      "SELECT id, account_id, priority, name, source FROM rules"
      " WHERE enabled AND validated ORDER BY account_id, priority DESC, id" },
    { "osp_quarantine",
      "WITH b AS ("
      "  INSERT INTO quarantine_bodies (sha256, body, size)"
      "  VALUES (sha256($1::bytea), $1::bytea, octet_length($1::bytea))"
      "  ON CONFLICT (sha256) DO UPDATE SET last_used_at = now()"
      "  RETURNING sha256"
      "), r AS ("
      "  SELECT * FROM unnest($2::bigint[], $3::text[]) AS u (account_id, recipient)"
      ")"
      " INSERT INTO quarantine (account_id, queue_id, message_id, sender, recipient,"
      "   client_address, client_name, helo, subject, size, score, verdict, reasons,"
      "   body_sha256)"
      " SELECT r.account_id, $4, $5, $6, r.recipient, $7::inet, $8, $9, $10, $11::bigint,"
      "   $12::double precision, $13, $14::text[], b.sha256 FROM r CROSS JOIN b"
      " ON CONFLICT DO NOTHING"
      " RETURNING recipient" },
    { "osp_tokens",
      "SELECT account_id, token, spam_count, ham_count FROM bayes_tokens"
      " WHERE account_id IN (0, $1::bigint) AND token = ANY ($2::bigint[])" },
    { "osp_totals",
      "SELECT account_id, spam_messages, ham_messages FROM bayes_totals"
      " WHERE account_id IN (0, $1::bigint)" },
    { "osp_train", "SELECT osprey_bayes_train($1::bigint, $2::bytea, $3::boolean, $4::bigint[])" },
    { "osp_job_enqueue",
      "SELECT osprey_job_enqueue($1::text, $2::jsonb, $3::bigint,"
      " now() + $4::bigint * interval '1 millisecond', coalesce($5::integer, 10))" },
    { "osp_job_dequeue",
      "SELECT id, kind, account_id, payload::text, attempts"
      "  FROM osprey_job_dequeue($1::text, $2::text[], $3::integer)" },
    { "osp_job_complete", "SELECT osprey_job_complete($1::bigint)" },
    { "osp_job_fail", "SELECT osprey_job_fail($1::bigint, $2::text)" },
    { NULL, NULL },
};

static void pool_setup(store__conn_t *c, store__req_t *r)
{
    osp_store_t *st = c->owner;
    store__step_t *s;
    size_t i;

    s = store__req_step(r, STORE_STEP_SQL, NULL,
                        "SELECT set_config('statement_timeout', $1, false)", PGRES_TUPLES_OK);
    store__step_param_i64(r, s, (int64_t)st->conf.query_timeout_ms);
    for (i = 0; store__stmts[i].name != NULL; i++)
        store__req_step(r, STORE_STEP_PREPARE, store__stmts[i].name, store__stmts[i].sql,
                        PGRES_COMMAND_OK);
    if (c->index == 0)
        for (i = 0; i < st->nlisteners; i++)
            store__req_step(r, STORE_STEP_SQL, NULL, st->listeners[i].sql, PGRES_COMMAND_OK);
}

static void pool_ready(store__conn_t *c)
{
    osp_store_t *st = c->owner;
    size_t i;

    if (!c->ready_seen) {
        /* first time ready since (re)connecting */
        c->ready_seen = true;
        if (c->connects > 1)
            st->n_reconnects++;
        osp_debug(1, "store: connection %u ready", c->index);
        if (c->index == 0)
            for (i = 0; i < st->nlisteners; i++)
                st->listeners[i].cb(st->listeners[i].ctx, st->listeners[i].channel, NULL);
    }
    dispatch_soon(st);
}

static void pool_down(store__conn_t *c, const char *error)
{
    osp_store_t *st = c->owner;

    c->ready_seen = false;
    osp_buf_reset(&st->last_error);
    osp_buf_append_str(&st->last_error, error);
    if (!st->closing)
        osp_warn("store: database connection %u: %s", c->index, error);
    /* The queue is failed from the dispatch timer: this may run inside
     * the call that submitted a request (a connect that fails at once). */
    dispatch_soon(st);
}

static void store_maybe_free(osp_store_t *st)
{
    size_t i;

    if (st->nclosed < st->nconns || !st->dispatch_closed)
        return;
    for (i = 0; i < st->nlisteners; i++) {
        free(st->listeners[i].channel);
        free(st->listeners[i].sql);
    }
    osp_buf_close(&st->last_error);
    free(st->conns);
    free(st->conninfo);
    free(st);
}

static void pool_closed(store__conn_t *c)
{
    osp_store_t *st = c->owner;

    st->nclosed++;
    store_maybe_free(st);
}

static void dispatch_close_cb(uv_handle_t *h)
{
    osp_store_t *st = h->data;

    st->dispatch_closed = true;
    store_maybe_free(st);
}

static void pool_notify(store__conn_t *c, const char *channel, const char *payload)
{
    osp_store_t *st = c->owner;
    size_t i;

    for (i = 0; i < st->nlisteners; i++)
        if (!strcmp(st->listeners[i].channel, channel))
            st->listeners[i].cb(st->listeners[i].ctx, channel, payload ? payload : "");
}

static const store__conn_ops_t pool_ops = {
    .setup = pool_setup,
    .ready = pool_ready,
    .down = pool_down,
    .closed = pool_closed,
};

osp_store_t *osp_store_create(uv_loop_t *loop, const osp_store_conf_t *conf)
{
    osp_store_t *st = osp_calloc(1, sizeof(*st));
    unsigned i;

    st->loop = loop;
    st->conf = *conf;
    if (st->conf.pool_size == 0)
        st->conf.pool_size = 1;
    if (st->conf.query_timeout_ms == 0)
        st->conf.query_timeout_ms = 10000;
    if (st->conf.connect_timeout_ms == 0)
        st->conf.connect_timeout_ms = 5000;
    if (st->conf.reconnect_min_ms == 0)
        st->conf.reconnect_min_ms = 100;
    if (st->conf.reconnect_max_ms < st->conf.reconnect_min_ms)
        st->conf.reconnect_max_ms = st->conf.reconnect_min_ms;
    if (st->conf.max_queue == 0)
        st->conf.max_queue = 10000;
    st->conninfo = osp_strdup(conf->conninfo ? conf->conninfo : "");
    st->conf.conninfo = st->conninfo;
    osp_breaker_init(&st->breaker, &st->conf.breaker, "pgsql");
    osp_buf_init(&st->last_error, 1024);
    uv_timer_init(loop, &st->dispatch);
    st->dispatch.data = st;
    st->nconns = st->conf.pool_size;
    st->conns = osp_calloc(st->nconns, sizeof(*st->conns));
    for (i = 0; i < st->nconns; i++) {
        store__conn_t *c = &st->conns[i];

        store__conn_init(c, loop, st->conninfo, &pool_ops, st);
        c->index = i;
        c->pipeline = true;
        c->notify = pool_notify;
        c->connect_timeout_ms = st->conf.connect_timeout_ms;
        c->query_timeout_ms = st->conf.query_timeout_ms;
        c->backoff_min_ms = st->conf.reconnect_min_ms;
        c->backoff_max_ms = st->conf.reconnect_max_ms;
        store__conn_connect(c);
    }
    return st;
}

void osp_store_free(osp_store_t **stp)
{
    osp_store_t *st = *stp;
    unsigned i;

    if (st == NULL)
        return;
    *stp = NULL;
    st->closing = true;
    fail_queued(st, STORE_REFUSED, "shutting down", NULL);
    uv_close((uv_handle_t *)&st->dispatch, dispatch_close_cb);
    for (i = 0; i < st->nconns; i++)
        store__conn_close(&st->conns[i]);
}

bool osp_store_notify_matches(const char *payload, const char *const *tables, size_t n)
{
    size_t i;

    if (payload == NULL)
        return true;
    for (i = 0; i < n; i++)
        if (strcmp(payload, tables[i]) == 0)
            return true;
    return false;
}

int osp_store_listen(osp_store_t *st, const char *channel, osp_store_notify_cb *cb, void *ctx)
{
    store_listener_t *l;
    osp_buf_t sql;
    const char *p;
    const char *error;
    store__req_t *r;

    if (channel == NULL || !((*channel >= 'a' && *channel <= 'z') || *channel == '_') ||
        strlen(channel) > 63 || st->nlisteners == STORE_MAX_LISTENERS)
        return -1;
    for (p = channel; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return -1;
    /* LISTEN takes an identifier, not a parameter: the name is checked
     * above and quoted anyway. */
    osp_buf_init(&sql, 256);
    osp_buf_append_str(&sql, "LISTEN \"");
    osp_buf_append_str(&sql, channel);
    osp_buf_append_str(&sql, "\"");
    l = &st->listeners[st->nlisteners++];
    l->channel = osp_strdup(channel);
    l->sql = osp_buf_steal(&sql);
    osp_buf_close(&sql);
    l->cb = cb;
    l->ctx = ctx;
    if (st->nconns > 0 && store__conn_up(&st->conns[0])) {
        r = store__req_new();
        r->pinned = &st->conns[0];
        store__req_step(r, STORE_STEP_SQL, NULL, l->sql, PGRES_COMMAND_OK);
        submit(st, r, 0, true, &error);
    }
    return 0;
}

void osp_store_stats(const osp_store_t *st, osp_store_stats_t *s)
{
    unsigned i;

    memset(s, 0, sizeof(*s));
    for (i = 0; i < st->nconns; i++)
        if (store__conn_up(&st->conns[i]))
            s->connections_up++;
    s->queued = st->qlen;
    s->breaker = osp_breaker_state(&st->breaker);
    s->requests = st->n_requests;
    s->ok = st->n_ok;
    s->not_found = st->n_not_found;
    s->tempfail = st->n_tempfail;
    s->rejected = st->n_rejected;
    s->reconnects = st->n_reconnects;
    s->last_error = osp_buf_cstr(&st->last_error);
}

void store__count(osp_store_t *st, int status)
{
    count_status(st, status);
}
