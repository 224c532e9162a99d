/*
 * osp_metrics: counters, gauges and latency histograms, exported in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * A registry holds metric families.  Register every metric at start-up and
 * keep the handle it returns; the hot path then only touches the handle:
 * osp_counter_inc(), osp_gauge_set(), osp_histogram_observe() are O(1)
 * (a histogram does a binary search over its few bounds) and never
 * allocate, format or look up a string.
 *
 *   reg = osp_metrics_create();
 *   m->requests = osp_metrics_counter(reg, "osprey_policyd_requests_total",
 *                                     "Policy requests received.");
 *   m->latency = osp_metrics_histogram(reg, "osprey_policyd_request_seconds",
 *                                      "Time to answer a request.", NULL, 0);
 *   actions = osp_metrics_counter_vec(reg, "osprey_policyd_actions_total",
 *                                     "Answers by action.", "action", NULL);
 *   m->rejects = osp_counter_vec_get(actions, "reject", NULL);
 *   m->defers = osp_counter_vec_get(actions, "defer", NULL);
 *   ...
 *   osp_counter_inc(m->requests);
 *   osp_histogram_observe(m->latency, (uv_now(loop) - start_ms) / 1e3);
 *   ...
 *   osp_metrics_render(reg, &http_body);
 *
 * Labels: a family registered with *_vec takes a fixed, NULL-terminated
 * list of label names; *_vec_get() returns the child for one set of label
 * values (in the same order, NULL-terminated), creating it on first use.
 * It compares strings and may allocate, so call it at start-up (or once
 * per new value) and keep the child.  A family with no children yet is
 * left out of the output.
 *
 * Output lists families in registration order and, within a family, the
 * children in creation order.  Label values and help text are escaped as
 * the format requires; any bytes are allowed in them.
 *
 * Bugs abort through osp_panic: an invalid metric or label name, a name
 * registered twice (including a histogram's _bucket/_sum/_count series),
 * the reserved label "le" on a histogram, bounds that are not strictly
 * ascending, a wrong number of label values.
 *
 * Threads: every update (inc, add, set, observe) is a relaxed C11 atomic
 * operation, so the loop threads and the thread pool of one daemon may
 * share one registry and a render may run while they update it.  A
 * histogram's _count is the sum of its buckets, so it always equals the
 * +Inf bucket; its _sum may lag by an observation in progress.  Set-up is
 * not thread-safe: create, register, *_vec_get, osp_metrics_set_collect
 * and free must not run while another thread uses the registry (do them
 * before starting threads, or on the thread that renders when no other
 * thread holds the registry).
 *
 * Every handle (family, child) is owned by the registry and valid until
 * osp_metrics_free().
 */
#ifndef OSP_METRICS_H
#define OSP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"

typedef struct osp_metrics osp_metrics_t;
typedef struct osp_counter osp_counter_t;
typedef struct osp_gauge osp_gauge_t;
typedef struct osp_histogram osp_histogram_t;
typedef struct osp_counter_vec osp_counter_vec_t;
typedef struct osp_gauge_vec osp_gauge_vec_t;
typedef struct osp_histogram_vec osp_histogram_vec_t;

/*
 * Default latency buckets in seconds, used when bounds is NULL:
 * 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5
 * 1 2.5 5 10 (and the implicit +Inf).
 */
extern const double osp_metrics_latency_bounds[];
extern const size_t osp_metrics_latency_nbounds;

osp_metrics_t *osp_metrics_create(void);
/* Frees the registry and every handle in it; NULL is fine; clears *reg. */
void osp_metrics_free(osp_metrics_t **reg);

/*
 * Registration.  name must match [a-zA-Z_:][a-zA-Z0-9_:]* and be new in
 * the registry; help is one line of text (NULL: no HELP line).  Both are
 * copied.  The returned handle is owned by the registry.
 */
osp_counter_t *osp_metrics_counter(osp_metrics_t *reg, const char *name,
                                   const char *help);
osp_gauge_t *osp_metrics_gauge(osp_metrics_t *reg, const char *name,
                               const char *help);
/*
 * bounds: the buckets' inclusive upper bounds in seconds, strictly
 * ascending and not NaN; a trailing +Inf is optional (always added).
 * Copied.  NULL (nbounds ignored) selects osp_metrics_latency_bounds.
 */
osp_histogram_t *osp_metrics_histogram(osp_metrics_t *reg, const char *name,
                                       const char *help, const double *bounds,
                                       size_t nbounds);

/*
 * Labelled families.  The variadic arguments are the label names, each
 * matching [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", distinct,
 * at least one, and terminated by NULL.  Names are copied.
 */
osp_counter_vec_t *osp_metrics_counter_vec(osp_metrics_t *reg, const char *name,
                                           const char *help, ...)
    __attribute__((sentinel));
osp_gauge_vec_t *osp_metrics_gauge_vec(osp_metrics_t *reg, const char *name,
                                       const char *help, ...)
    __attribute__((sentinel));
osp_histogram_vec_t *osp_metrics_histogram_vec(osp_metrics_t *reg, const char *name,
                                               const char *help, const double *bounds,
                                               size_t nbounds, ...)
    __attribute__((sentinel));

/*
 * The child for these label values, one per label name, in order, then
 * NULL.  Values are copied; the same values always give the same child.
 * Not for the hot path: keep the returned handle.
 */
osp_counter_t *osp_counter_vec_get(osp_counter_vec_t *vec, ...)
    __attribute__((sentinel));
osp_gauge_t *osp_gauge_vec_get(osp_gauge_vec_t *vec, ...)
    __attribute__((sentinel));
osp_histogram_t *osp_histogram_vec_get(osp_histogram_vec_t *vec, ...)
    __attribute__((sentinel));

/* Updates: O(1), no allocation, safe from any thread. */
void osp_counter_inc(osp_counter_t *c);
void osp_counter_add(osp_counter_t *c, uint64_t n);
/*
 * Mirror a monotonic count kept elsewhere (e.g. osp_breaker_stats) into a
 * counter, typically from the collect callback.  It must never decrease.
 */
void osp_counter_set(osp_counter_t *c, uint64_t v);
uint64_t osp_counter_value(const osp_counter_t *c);

void osp_gauge_set(osp_gauge_t *g, double v);
/* Add v (may be negative). */
void osp_gauge_add(osp_gauge_t *g, double v);
double osp_gauge_value(const osp_gauge_t *g);

/*
 * Count one observation (a duration in seconds) in the first bucket whose
 * bound is >= seconds, and add it to the sum.  NaN lands in +Inf and makes
 * the sum NaN, as in other Prometheus clients.
 */
void osp_histogram_observe(osp_histogram_t *h, double seconds);

/*
 * Called at the start of every osp_metrics_render(), so the owner can copy
 * state kept elsewhere (a breaker's state and stats, queue lengths) into
 * gauges and counters.  NULL removes it.  ctx is borrowed.
 */
typedef void (*osp_metrics_collect_fn)(osp_metrics_t *reg, void *ctx);
void osp_metrics_set_collect(osp_metrics_t *reg, osp_metrics_collect_fn fn, void *ctx);

/*
 * Append the whole registry to out in the text exposition format
 * (Content-Type: text/plain; version=0.0.4).  Returns 0, or -1 if out
 * reached its cap, leaving out as it was.
 */
int osp_metrics_render(osp_metrics_t *reg, osp_buf_t *out);

/*
 * Append v as Prometheus parses it: the fewest digits that read back as
 * the same double ("0.005", "100000", "0.30000000000000004", "1e+15",
 * "1e-05"), or +Inf, -Inf, NaN.  Exposed for tests and for callers that
 * write samples themselves.
 */
int osp_metrics_format_double(osp_buf_t *out, double v);

#endif
