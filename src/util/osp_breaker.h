/*
 * osp_breaker: a circuit breaker in front of a backend (PostgreSQL, a DNS
 * resolver, a downstream SMTP server).
 *
 * While the backend works the breaker is closed and every call proceeds.
 * After failure_threshold consecutive failures it opens: calls are refused
 * at once, so a dead backend costs a quick temporary failure instead of a
 * timeout per request.  Once cooldown_ms have passed, the next
 * osp_breaker_allow() moves it to half-open and lets up to
 * half_open_probes calls through at a time.  half_open_successes
 * successful probes close it again; one failed probe re-opens it with a
 * fresh cool-down.
 *
 *   osp_breaker_init(&db->breaker, &conf, "pgsql");
 *   ...
 *   if (!osp_breaker_allow(&db->breaker, uv_now(loop)))
 *       return answer_tempfail("database unavailable");
 *   start_query(...);
 *   ...                         in the query's completion callback:
 *   if (ok)
 *       osp_breaker_success(&db->breaker, uv_now(loop));
 *   else
 *       osp_breaker_failure(&db->breaker, uv_now(loop));
 *
 * Every call that osp_breaker_allow() let through must be reported exactly
 * once, as a success or a failure (a timeout is a failure); otherwise a
 * half-open breaker keeps waiting for the probe's result.  As a safety net,
 * a probe whose result has not come within cooldown_ms no longer holds its
 * slot.  Results that arrive while the breaker is open (calls let through
 * before it opened) are counted but change nothing; such a late result
 * arriving in half-open counts like a probe's.
 *
 * Time is passed in by the caller as monotonic milliseconds (uv_now()), so
 * the breaker never reads a clock and tests are deterministic.
 *
 * Each state change is logged once: opening with osp_warn, the others with
 * osp_info, e.g. "breaker pgsql: state closed -> open after 5 consecutive
 * failures".
 *
 * A breaker is embedded in its owner's struct and holds no allocation, so
 * there is no _close.  It is not thread-safe: use it from the one loop
 * thread that talks to the backend.
 */
#ifndef OSP_BREAKER_H
#define OSP_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

/* The numeric values are stable, so they can be exported as a gauge. */
enum osp_breaker_state {
    OSP_BREAKER_CLOSED = 0,     /* calls proceed; failures are counted */
    OSP_BREAKER_OPEN = 1,       /* calls are refused until the cool-down ends */
    OSP_BREAKER_HALF_OPEN = 2,  /* a limited number of probe calls proceed */
};

/* Defaults, used for every field of the conf that is 0. */
#define OSP_BREAKER_DEFAULT_THRESHOLD 5
#define OSP_BREAKER_DEFAULT_COOLDOWN_MS 30000
#define OSP_BREAKER_DEFAULT_PROBES 1
#define OSP_BREAKER_DEFAULT_SUCCESSES 1

typedef struct osp_breaker_conf {
    unsigned failure_threshold;    /* consecutive failures that open it */
    uint64_t cooldown_ms;          /* how long it stays open before a probe */
    unsigned half_open_probes;     /* probes in flight at once in half-open */
    unsigned half_open_successes;  /* successful probes that close it */
} osp_breaker_conf_t;

/* Monotonic counts since init, for metrics. */
typedef struct osp_breaker_stats {
    uint64_t opens;       /* transitions into open */
    uint64_t rejections;  /* osp_breaker_allow() answered false */
    uint64_t successes;   /* osp_breaker_success() calls */
    uint64_t failures;    /* osp_breaker_failure() calls */
} osp_breaker_stats_t;

typedef struct osp_breaker {
    char name[64];                  /* for log lines; copied at init */
    osp_breaker_conf_t conf;        /* copied at init, defaults filled in */
    enum osp_breaker_state state;
    unsigned consecutive_failures;  /* closed: failures since the last success */
    unsigned probes_in_flight;      /* half-open: allowed, not yet reported */
    unsigned probe_successes;       /* half-open: successes so far */
    uint64_t opened_ms;             /* when it last opened */
    uint64_t probe_ms;              /* half-open: when the last probe started */
    osp_breaker_stats_t stats;
} osp_breaker_t;

/*
 * Start closed.  conf is copied (NULL: all defaults); name is copied
 * (truncated to 63 bytes) and appears in log lines.
 */
void osp_breaker_init(osp_breaker_t *b, const osp_breaker_conf_t *conf,
                      const char *name);

/*
 * May a call proceed now?  Closed: always.  Open: no, until cooldown_ms
 * have passed since it opened (now_ms - opened_ms >= cooldown_ms); then it
 * turns half-open.  Half-open: yes while fewer than half_open_probes probes
 * are in flight, and the caller's call is then one of them.
 */
bool osp_breaker_allow(osp_breaker_t *b, uint64_t now_ms);

/* Report the outcome of a call that osp_breaker_allow() let through. */
void osp_breaker_success(osp_breaker_t *b, uint64_t now_ms);
void osp_breaker_failure(osp_breaker_t *b, uint64_t now_ms);

enum osp_breaker_state osp_breaker_state(const osp_breaker_t *b);
/* "closed", "open", "half-open"; static strings. */
const char *osp_breaker_state_name(enum osp_breaker_state state);
/* Borrowed; valid as long as the breaker. */
const osp_breaker_stats_t *osp_breaker_stats(const osp_breaker_t *b);

#endif
