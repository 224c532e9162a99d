/* policyd_metrics: metric registration (served by osp_httpd). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "policyd_metrics.h"

static const char *const policyd_metric_actions[] = {
    "dunno", "ok", "reject", "defer", "defer_if_permit", "defer_if_reject", "hold",
    "discard", "warn", "info", "filter", "prepend", "redirect", "bcc", "other", NULL
};

void policyd_metrics_init(policyd_metrics_t *m)
{
    osp_counter_vec_t *actions, *checks;
    size_t i;

    memset(m, 0, sizeof(*m));
    m->reg = osp_metrics_create();
    m->requests = osp_metrics_counter(m->reg, "osprey_policyd_requests_total",
                                      "Policy requests received.");
    m->connections = osp_metrics_counter(m->reg, "osprey_policyd_connections_total",
                                         "Client connections accepted.");
    m->rejected_connections = osp_metrics_counter(
        m->reg, "osprey_policyd_connections_rejected_total",
        "Connections closed at once because policyd_max_connections was reached.");
    m->protocol_errors = osp_metrics_counter(m->reg, "osprey_policyd_protocol_errors_total",
                                             "Connections closed for a malformed request.");
    m->timeouts = osp_metrics_counter(m->reg, "osprey_policyd_time_limit_total",
                                      "Requests answered with the error action after policyd_time_limit.");
    m->idle_timeouts = osp_metrics_counter(m->reg, "osprey_policyd_idle_timeouts_total",
                                           "Connections closed after policyd_idle_timeout.");
    m->active = osp_metrics_gauge(m->reg, "osprey_policyd_connections",
                                  "Client connections open now.");
    m->ratelimit_keys = osp_metrics_gauge(m->reg, "osprey_policyd_ratelimit_keys",
                                          "Keys held by the rate-limit tables.");
    m->latency = osp_metrics_histogram(m->reg, "osprey_policyd_request_seconds",
                                       "Time from a complete request to its answer.", NULL, 0);
    actions = osp_metrics_counter_vec(m->reg, "osprey_policyd_actions_total",
                                      "Answers by action keyword.", "action", NULL);
    for (i = 0; policyd_metric_actions[i] && i < POLICYD_METRIC_ACTIONS; i++) {
        m->action_names[i] = policyd_metric_actions[i];
        m->actions[i] = osp_counter_vec_get(actions, policyd_metric_actions[i], NULL);
    }
    m->nactions = i;
    checks = osp_metrics_counter_vec(m->reg, "osprey_policyd_decisions_total",
                                     "Answers by the check that decided them.", "check", NULL);
    for (i = 0; policyd_check_verdict_names[i] && i + 2 < POLICYD_METRIC_CHECKS; i++) {
        m->check_names[i] = policyd_check_verdict_names[i];
        m->checks[i] = osp_counter_vec_get(checks, policyd_check_verdict_names[i], NULL);
    }
    m->check_names[i] = "time_limit";
    m->checks[i] = osp_counter_vec_get(checks, "time_limit", NULL);
    i++;
    m->check_names[i] = "none";
    m->checks[i] = osp_counter_vec_get(checks, "none", NULL);
    m->nchecks = i + 1;
}

void policyd_metrics_close(policyd_metrics_t *m)
{
    osp_metrics_free(&m->reg);
}

void policyd_metrics_action(policyd_metrics_t *m, const char *action)
{
    const char *cls = policy_action_class(action);
    size_t i;

    /* policy_action_class returns our static strings: compare pointers first. */
    for (i = 0; i < m->nactions; i++)
        if (m->action_names[i] == cls || strcmp(m->action_names[i], cls) == 0) {
            osp_counter_inc(m->actions[i]);
            return;
        }
}

void policyd_metrics_check(policyd_metrics_t *m, const char *check)
{
    size_t i;

    if (check == NULL)
        check = "none";
    for (i = 0; i < m->nchecks; i++)
        if (strcmp(m->check_names[i], check) == 0) {
            osp_counter_inc(m->checks[i]);
            return;
        }
}
