/*
 * policyd_metrics: osprey-policyd's counters.
 *
 * policyd_metrics_init registers every metric once, at start-up; the hot
 * path only bumps handles (lock-free, any thread).  main.c serves the
 * registry with osp_httpd on policyd_metrics_listen.
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

#endif
