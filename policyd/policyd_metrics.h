/*
 * policyd_metrics: osprey-policyd's counters and its HTTP endpoint.
 *
 * policyd_metrics_init registers every metric once, at start-up; the hot
 * path only bumps handles (lock-free, any thread).  The endpoint is a tiny
 * HTTP/1.0 server on the main thread's loop: "GET /metrics" answers the
 * Prometheus text format, "GET /health" answers "ok"; anything else 404.
 * One request per connection, the request head limited to 2048 bytes and
 * 5 seconds, at most 32 connections at once.
 */
#ifndef POLICYD_METRICS_H
#define POLICYD_METRICS_H

#include <uv.h>

#include "osp_buf.h"
#include "policyd.h"
#include "policyd_checks.h"

/* Register everything in a new registry owned by m. */
void policyd_metrics_init(policyd_metrics_t *m);
void policyd_metrics_close(policyd_metrics_t *m);
/* Count an answer by its action keyword (see policy_action_class). */
void policyd_metrics_action(policyd_metrics_t *m, const char *action);
/* Count the check that decided (NULL: none did). */
void policyd_metrics_check(policyd_metrics_t *m, const char *check);

typedef struct policyd_http policyd_http_t;

/*
 * Listen on "ADDR:PORT" ("[::1]:PORT" for IPv6) on loop.  Returns NULL
 * with a message in errors if it cannot.  m and checks are borrowed.
 */
policyd_http_t *policyd_http_create(uv_loop_t *loop, const char *listen,
                                    policyd_metrics_t *m, const policyd_checks_t *checks,
                                    osp_buf_t *errors);
/* Start closing every handle; the struct is freed in the last close callback. */
void policyd_http_close(policyd_http_t *h);

#endif
