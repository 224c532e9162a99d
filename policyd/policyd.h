/*
 * osprey-policyd: Postfix SMTPD access policy delegation server.
 *
 * Files: main.c wires the pieces together; policyd_params.c is the
 * parameter table; policyd_proto.c the protocol; policyd_checks.c the check
 * pipeline; policyd_server.c listeners and worker threads;
 * policyd_session.c one client connection; policyd_metrics.c counters and
 * the HTTP endpoint; policyd_dblists.c the database allow/block lists;
 * policyd_greylist.c greylisting; policyd_shared.c rate counts shared
 * through the database.
 */
#ifndef POLICYD_H
#define POLICYD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_config.h"
#include "osp_metrics.h"
#include "policyd_proto.h"

/* policyd_params.c */
extern const osp_param_def_t policyd_params[];

/*
 * Settings the server and sessions use, read once at start-up (never at
 * the point of use).  Strings are borrowed from the configuration, which
 * outlives the server.
 */
typedef struct policyd_conf {
    const char *const *listen;     /* policyd_listen */
    size_t nlisten;
    unsigned workers;              /* resolved: never 0 */
    unsigned max_connections;
    uint64_t idle_timeout_ms;
    uint64_t time_limit_ms;
    const char *error_action;      /* NULL: disconnect */
    policy_limits_t limits;
    const char *metrics_listen;    /* "" disables */
} policyd_conf_t;

/* Fill conf from cfg; start-up errors (naming the parameter) go to errors. */
int policyd_conf_load(policyd_conf_t *conf, const osp_config_t *cfg, osp_buf_t *errors);

/*
 * Metric handles, registered once at start-up (policyd_metrics.c) and
 * updated from every worker thread without locks.
 */
#define POLICYD_METRIC_ACTIONS 16
#define POLICYD_METRIC_CHECKS 24

typedef struct policyd_metrics {
    osp_metrics_t *reg;                 /* owned */
    osp_counter_t *requests;
    osp_counter_t *connections;
    osp_counter_t *rejected_connections;
    osp_counter_t *protocol_errors;
    osp_counter_t *timeouts;
    osp_counter_t *idle_timeouts;
    osp_gauge_t *active;
    osp_gauge_t *ratelimit_keys;
    osp_histogram_t *latency;
    const char *action_names[POLICYD_METRIC_ACTIONS];  /* static strings */
    osp_counter_t *actions[POLICYD_METRIC_ACTIONS];
    const char *check_names[POLICYD_METRIC_CHECKS];
    osp_counter_t *checks[POLICYD_METRIC_CHECKS];
    size_t nactions, nchecks;
} policyd_metrics_t;

#endif
