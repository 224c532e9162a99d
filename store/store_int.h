/*
 * store_int.h: what the files of store/ share and nobody else sees.
 *
 * A store__req is a list of steps (prepared statements, plain SQL, COPY)
 * run on one connection: in pipeline mode all at once followed by one
 * Sync (one round trip), otherwise one after the other.  The engine
 * (store_conn.c) keeps each step's PGresult; when the steps are done (or
 * failed, or timed out, or the connection died) it calls the request's
 * finish function exactly once.
 */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "osp_breaker.h"
#include "osp_buf.h"
#include "osp_store.h"

enum store__step_kind {
    STORE_STEP_PREPARED,   /* name + params */
    STORE_STEP_SQL,        /* sql + params (PQsendQueryParams) */
    STORE_STEP_PREPARE,    /* PQsendPrepare(name, sql) */
    STORE_STEP_COPY,       /* sql is COPY ... FROM STDIN; copy_data is sent */
};

#define STORE_MAX_PARAMS 16

typedef struct store__step {
    enum store__step_kind kind;
    const char *name;             /* borrowed (static) */
    const char *sql;              /* borrowed (static) */
    int nparams;
    const char *values[STORE_MAX_PARAMS];   /* borrowed from the request */
    int lengths[STORE_MAX_PARAMS];
    int formats[STORE_MAX_PARAMS];
    ExecStatusType expect;        /* the only status that counts as success */
    const char *copy_data;        /* borrowed */
    size_t copy_len;
} store__step_t;

/* Outcome of a request as the engine sees it. */
enum store__outcome {
    STORE_DONE = 0,        /* every step answered with its expected status */
    STORE_SQL_ERROR,       /* the server refused a step; the transaction did not commit */
    STORE_LOST,            /* connection lost or timed out: outcome unknown */
    STORE_REFUSED,         /* never sent (shutdown, no connection, queue full) */
};

typedef struct store__conn store__conn_t;
typedef struct osp_store_req store__req_t;

typedef void store__finish_fn(store__req_t *r, enum store__outcome outcome, const char *error);

struct osp_store_req {
    osp_store_t *st;              /* NULL for requests of the log writer */
    store__conn_t *conn;          /* running on it */
    store__conn_t *pinned;        /* only this connection may run it */
    struct osp_store_req *next, *prev;   /* in the store's queue */
    uv_timer_t timer;             /* deadline */
    bool queued, timer_started, timer_closing, finished, cancelled, internal;
    bool breaker_counted;         /* osp_breaker_allow() let it through */
    uint64_t deadline_ms;

    store__step_t *steps;         /* owned, nsteps of them */
    PGresult **res;               /* owned, one per step (NULL until answered) */
    int nsteps, maxsteps;
    bool pipeline;                /* one round trip (the connection's mode) */
    char sqlstate[6];

    store__finish_fn *finish;     /* engine -> owner */
    void (*deliver)(store__req_t *r, int status, const char *error);   /* typed calls */
    void *cb;
    void *ctx;
    void *data;                   /* owner's */
    osp_buf_t scratch;            /* owned; typed calls */
    void **ptrs;                  /* owned array of owned allocations */
    size_t nptrs;
};

/* ---------------------------------------------------------- connections */
enum store__conn_state {
    STORE_CONN_DOWN,          /* waiting for the back-off timer */
    STORE_CONN_CONNECTING,    /* PQconnectPoll */
    STORE_CONN_SETUP,         /* running its setup request */
    STORE_CONN_IDLE,
    STORE_CONN_BUSY,
    STORE_CONN_CLOSED,
};

typedef struct store__conn_ops {
    /* build the setup request (prepares, LISTEN, settings) into r */
    void (*setup)(store__conn_t *c, store__req_t *r);
    /* connected and set up, or idle again: may start work */
    void (*ready)(store__conn_t *c);
    /* the connection went down (error text) */
    void (*down)(store__conn_t *c, const char *error);
    /* all handles closed after store__conn_close */
    void (*closed)(store__conn_t *c);
} store__conn_ops_t;

struct store__poll;

struct store__conn {
    uv_loop_t *loop;
    const char *conninfo;         /* borrowed from the owner */
    const store__conn_ops_t *ops;
    void *owner;
    unsigned index;
    bool pipeline;                /* enter pipeline mode after connect */
    uint64_t connect_timeout_ms, query_timeout_ms;
    uint64_t backoff_min_ms, backoff_max_ms, backoff_ms;

    enum store__conn_state state;
    PGconn *pg;
    struct store__poll *poll;
    int poll_events;
    uv_timer_t ctimer;            /* connect timeout and back-off */
    uv_timer_t qtimer;            /* query timeout */
    int open_handles;
    bool closing;

    store__req_t *req;            /* running, or the setup request */
    int send_step;                /* non-pipeline: the step being answered */
    int recv_step;
    bool step_has_result;
    bool failed_step;             /* a step answered with an error */
    bool copy_sending;
    size_t copy_off;
    bool copy_ended;
    bool flushing;
    osp_buf_t error;
    uint64_t attempts;            /* connection attempts */
    uint64_t connects;            /* successful */
    bool ready_seen;              /* owner saw it ready since it connected */

    /* notifications */
    void (*notify)(store__conn_t *c, const char *channel, const char *payload);
};

void store__conn_init(store__conn_t *c, uv_loop_t *loop, const char *conninfo,
                      const store__conn_ops_t *ops, void *owner);
/* Start connecting now (from DOWN: cancels the back-off). */
void store__conn_connect(store__conn_t *c);
/* Run r on c, which must be IDLE. */
void store__conn_run(store__conn_t *c, store__req_t *r);
/* Drop the connection (failing its request as lost) and back off. */
void store__conn_fail(store__conn_t *c, const char *error);
/* Close everything; ops->closed when done.  A running request finishes as lost. */
void store__conn_close(store__conn_t *c);
bool store__conn_up(const store__conn_t *c);

/* ---------------------------------------------------------- requests */
store__req_t *store__req_new(void);
/* Copy len bytes (plus a NUL), kept until the request is freed. */
const char *store__req_copy(store__req_t *r, const void *p, size_t len);
const char *store__req_strdup(store__req_t *r, const char *s);
/* Keep an allocation to free with the request; returns p. */
void *store__req_keep(store__req_t *r, void *p);
/* Add a step; returns it for the parameters (valid until the next step is added). */
store__step_t *store__req_step(store__req_t *r, enum store__step_kind kind, const char *name,
                               const char *sql, ExecStatusType expect);
/* Add a text parameter (NULL: SQL NULL), copied. */
void store__step_param(store__req_t *r, store__step_t *s, const char *text);
/* A binary parameter, copied. */
void store__step_param_bin(store__req_t *r, store__step_t *s, const void *p, size_t len);
void store__step_param_i64(store__req_t *r, store__step_t *s, int64_t v);
/* Submit r with its callback (deliver turns the results into cb's call). */
osp_store_req_t *store__start(osp_store_t *st, store__req_t *r, void *cb, void *ctx,
                              void (*deliver)(store__req_t *, int, const char *),
                              uint64_t timeout_ms, const char **error_r);
/* A bigint column, -1 for NULL. */
int64_t store__val_i64(const PGresult *res, int row, int col);
/* Rows (id, account_id, list, kind, value) as list entries (strings borrowed from res). */
osp_store_list_entry_t *store__list_entries(const PGresult *res, size_t *n_r);
/* Free a finished request now (no timer started). */
void store__req_free(store__req_t *r);
/* Free once finished and off its connection; closes the timer. */
void store__req_release(store__req_t *r);

/* Text of an array literal of strings: {"a","b\"c"}. */
void store__array_literal(osp_buf_t *out, const char *const *items, size_t n);
/* Append s with invalid UTF-8 bytes replaced by '?', at most max bytes. */
void store__utf8_clean(osp_buf_t *out, const char *s, size_t max);
/* Is this SQLSTATE a transient condition (retry) rather than bad data? */
bool store__sqlstate_transient(const char *sqlstate);
int64_t store__now_us(void);

/* store_conn.c: queue helpers used by store_calls.c */
osp_store_req_t *store__submit(osp_store_t *st, store__req_t *r, uint64_t timeout_ms,
                               const char **error_r);
void store__req_abandon(store__req_t *r);
/* Count a delivered status in the store's statistics. */
void store__count(osp_store_t *st, int status);
const char *store__conninfo(const osp_store_t *st);
uv_loop_t *store__loop(const osp_store_t *st);
uint64_t store__query_timeout(const osp_store_t *st);

/* Prepared statements of the pool, prepared on every connection. */
typedef struct store__stmt {
    const char *name;
    const char *sql;
} store__stmt_t;
extern const store__stmt_t store__stmts[];

#endif
