/* filter_server: configuration, listeners and session accounting. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "filter_server.h"
#include "filter_milter.h"
#include "filter_session.h"

/* ---- configuration ----------------------------------------------------------- */

static int filter_conf__score(const osp_config_t *cfg, const char *name, double *v_r,
                              char *err, size_t errsize)
{
    const char *s = osp_config_str(cfg, name);
    char *end;

    errno = 0;
    *v_r = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno || !isfinite(*v_r)) {
        osp_snprintf(err, errsize, "%s: \"%s\" is not a number", name, s);
        return -1;
    }
    return 0;
}

int filter_conf_load(const osp_config_t *cfg, filter_conf_t *conf, char *err, size_t errsize)
{
    const char *stage;

    memset(conf, 0, sizeof(*conf));
    conf->listen = osp_config_list(cfg, "filter_listen", &conf->nlisten);
    conf->milter_listen = osp_config_list(cfg, "filter_milter_listen", &conf->nmilter_listen);
    if (conf->nlisten == 0 && conf->nmilter_listen == 0) {
        osp_snprintf(err, errsize, "filter_listen: no listener given (and no filter_milter_listen)");
        return -1;
    }
    conf->max_sessions = (unsigned)osp_config_int(cfg, "filter_max_sessions");
    conf->milter_max_sessions = (unsigned)osp_config_int(cfg, "filter_milter_max_sessions");
    conf->size_limit = osp_config_size(cfg, "filter_message_size_limit");
    conf->memory_threshold = (size_t)osp_config_size(cfg, "filter_memory_threshold");
    conf->temp_dir = osp_config_str(cfg, "filter_temp_directory");
    conf->quarantine_dir = osp_config_str(cfg, "filter_quarantine_directory");
    conf->hostname = osp_config_str(cfg, "filter_hostname");
    conf->timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_timeout");
    conf->process_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_process_timeout");
    conf->line_limit = (size_t)osp_config_int(cfg, "filter_line_length_limit");
    conf->rcpt_limit = (unsigned)osp_config_int(cfg, "filter_recipient_limit");
    conf->error_limit = (unsigned)osp_config_int(cfg, "filter_error_limit");
    conf->tag_prefix = osp_config_str(cfg, "filter_tag_subject_prefix");
    conf->static_rules = osp_config_list(cfg, "filter_static_rules", &conf->nstatic_rules);
    if (filter_conf__score(cfg, "filter_tag_score", &conf->thresholds.tag_score, err,
                           errsize) < 0 ||
        filter_conf__score(cfg, "filter_quarantine_score", &conf->thresholds.quarantine_score,
                           err, errsize) < 0)
        return -1;
    if (*conf->hostname == '\0' || strpbrk(conf->hostname, " \t\r\n") != NULL) {
        osp_snprintf(err, errsize, "filter_hostname: must be one word");
        return -1;
    }
    if (strpbrk(conf->tag_prefix, "\r\n") != NULL) {
        osp_snprintf(err, errsize, "filter_tag_subject_prefix: must be one line");
        return -1;
    }
    stage = osp_config_str(cfg, "filter_debug_pause_stage");
    if (strcmp(stage, "none") == 0 || *stage == '\0')
        conf->pause_stage = FILTER_PAUSE_NONE;
    else if (strcmp(stage, "data") == 0)
        conf->pause_stage = FILTER_PAUSE_DATA;
    else if (strcmp(stage, "after_scan") == 0)
        conf->pause_stage = FILTER_PAUSE_AFTER_SCAN;
    else if (strcmp(stage, "after_reinject") == 0)
        conf->pause_stage = FILTER_PAUSE_AFTER_REINJECT;
    else {
        osp_snprintf(err, errsize, "filter_debug_pause_stage: \"%s\" is not one of none, data, "
                     "after_scan, after_reinject", stage);
        return -1;
    }
    conf->pause_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_debug_pause");
    conf->quarantine_backend = osp_config_str(cfg, "filter_quarantine_backend");
    if (strcmp(conf->quarantine_backend, "database") != 0 &&
        strcmp(conf->quarantine_backend, "spool") != 0) {
        osp_snprintf(err, errsize, "filter_quarantine_backend: \"%s\" is not one of database, "
                     "spool", conf->quarantine_backend);
        return -1;
    }
    conf->quarantine_timeout_ms =
        (uint64_t)osp_config_duration_ms(cfg, "filter_quarantine_timeout");
    conf->account_settings = osp_config_bool(cfg, "filter_account_settings");
    conf->account_cache_ttl_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_account_cache_ttl");
    conf->account_cache_size = (size_t)osp_config_int(cfg, "filter_account_cache_size");
    conf->account_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_account_timeout");
    conf->message_log = osp_config_bool(cfg, "filter_message_log");
    conf->message_log_journal = osp_config_str(cfg, "filter_message_log_journal");
    conf->metrics_listen = osp_config_str(cfg, "filter_metrics_listen");
    conf->reinject.target = osp_strdup(osp_config_str(cfg, "filter_reinject"));
    conf->reinject.helo = osp_strdup(conf->hostname);
    conf->reinject.connect_timeout_ms =
        (uint64_t)osp_config_duration_ms(cfg, "filter_reinject_connect_timeout");
    conf->reinject.timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "filter_reinject_timeout");
    conf->reinject.idle_timeout_ms =
        (uint64_t)osp_config_duration_ms(cfg, "filter_reinject_idle_timeout");
    conf->reinject.pool_size = (unsigned)osp_config_int(cfg, "filter_reinject_pool_size");
    conf->reinject.breaker.failure_threshold =
        (unsigned)osp_config_int(cfg, "breaker_failure_threshold");
    conf->reinject.breaker.cooldown_ms = (uint64_t)osp_config_duration_ms(cfg, "breaker_cooldown");
    return 0;
}

void filter_conf_close(filter_conf_t *conf)
{
    OSP_FREE(&conf->reinject.target);
    OSP_FREE(&conf->reinject.helo);
}

/* ---- server ---------------------------------------------------------------------- */

filter_server_t *filter_server_create(uv_loop_t *loop, const filter_conf_t *conf,
                                      filter_scan_t *scan, filter_quarantine_t *quarantine,
                                      filter_reinject_t *reinject)
{
    filter_server_t *srv = osp_calloc(1, sizeof(*srv));

    srv->loop = loop;
    srv->conf = conf;
    srv->scan = scan;
    srv->quarantine = quarantine;
    srv->reinject = reinject;
    srv->defaults.account_id = -1;
    srv->defaults.tag_score = conf->thresholds.tag_score;
    srv->defaults.quarantine_score = conf->thresholds.quarantine_score;
    osp_strlcpy(srv->defaults.subject_prefix, conf->tag_prefix ? conf->tag_prefix : "",
                sizeof(srv->defaults.subject_prefix));
    srv->defaults.spam_action = FILTER_ACTION_QUARANTINE;
    srv->defaults.source = FILTER_SETTINGS_DEFAULT;
    /* Listeners never move: a fixed array sized for the configuration. */
    srv->listeners = osp_calloc(conf->nlisten + conf->nmilter_listen + 1,
                                sizeof(*srv->listeners));
    return srv;
}

void filter_server__session_gone(filter_server_t *srv, filter_session_t *sess, bool counted)
{
    if (srv->sessions == sess) {
        srv->sessions = filter_session_next(sess);
    } else {
        filter_session_t *p;
        for (p = srv->sessions; p && filter_session_next(p) != sess; p = filter_session_next(p))
            ;
        if (p)
            filter_session_set_next(p, filter_session_next(sess));
    }
    if (counted)
        srv->nsessions--;
    else
        srv->nrefused--;
}

void filter_server__milter_gone(filter_server_t *srv, filter_milter_t *m, bool counted)
{
    if (srv->milters == m) {
        srv->milters = filter_milter_next(m);
    } else {
        filter_milter_t *p;
        for (p = srv->milters; p && filter_milter_next(p) != m; p = filter_milter_next(p))
            ;
        if (p)
            filter_milter_set_next(p, filter_milter_next(m));
    }
    if (counted)
        srv->nmilters--;
}

/*
 * A milter connection.  Postfix keeps one open per smtpd process for the
 * whole SMTP session, idle or not, so they have their own, larger limit
 * (scans still queue for the thread pool); beyond it the connection is
 * closed and Postfix applies milter_default_action.
 */
static void filter_server__accept_milter(filter_server_t *srv, uv_stream_t *ls, bool is_unix)
{
    filter_milter_t *m = filter_milter_create(srv, is_unix);
    bool busy = srv->nmilters >= srv->conf->milter_max_sessions;

    filter_milter_set_next(m, srv->milters);
    srv->milters = m;
    if (busy)
        osp_warn("too many milter connections (%u): closing one", srv->nmilters);
    else
        srv->nmilters++;
    if (uv_accept(ls, filter_milter_stream(m)) < 0) {
        if (!busy)
            srv->nmilters--;        /* started as refused: milter_gone balances */
        filter_milter_start(m, true);
        filter_milter_abort(m);
        return;
    }
    filter_milter_start(m, busy);
}

static void filter_server__accept_cb(uv_stream_t *ls, int status)
{
    filter_listener_t *l = ls->data;
    filter_server_t *srv = l->srv;
    filter_session_t *sess;
    bool busy;

    if (status < 0) {
        osp_warn("accept: %s", uv_strerror(status));
        return;
    }
    if (srv->shutting_down)
        return;
    if (l->milter) {
        filter_server__accept_milter(srv, ls, l->is_unix);
        return;
    }
    sess = filter_session_create(srv, l->is_unix);
    filter_session_set_next(sess, srv->sessions);
    srv->sessions = sess;
    busy = srv->nsessions >= srv->conf->max_sessions;
    if (busy)
        srv->nrefused++;
    else
        srv->nsessions++;
    if (uv_accept(ls, filter_session_stream(sess)) < 0) {
        /* Started as refused (counted = false): session_gone balances that. */
        if (!busy) {
            srv->nsessions--;
            srv->nrefused++;
        }
        filter_session_start(sess, true);
        filter_session_abort(sess);
        return;
    }
    if (busy) {
        if (srv->nrefused > srv->conf->max_sessions) {
            /* Too many even to refuse politely: just close. */
            filter_session_start(sess, true);
            filter_session_abort(sess);
            return;
        }
        osp_warn("too many sessions (%u): answering 421", srv->nsessions);
    }
    filter_session_start(sess, busy);
}

int filter_server_listen(filter_server_t *srv, const char *spec, bool milter, char *err,
                         size_t errsize)
{
    const char *param = milter ? "filter_milter_listen" : "filter_listen";
    filter_listener_t *l;
    char host[4096];
    int port, rc;
    bool is_unix;

    if (srv->nlisteners >= srv->conf->nlisten + srv->conf->nmilter_listen)
        osp_panic("filter_server_listen: more listeners than configured");
    if (filter_reinject_parse_target(spec, &is_unix, host, sizeof(host), &port) < 0) {
        osp_snprintf(err, errsize, "%s: bad listener \"%s\" "
                     "(expected inet:ADDRESS:PORT or unix:/PATH)", param, spec);
        return -1;
    }
    l = &srv->listeners[srv->nlisteners];
    l->srv = srv;
    l->is_unix = is_unix;
    l->milter = milter;
    if (is_unix) {
        struct stat st;
        uv_pipe_init(srv->loop, &l->h.pipe, 0);
        /* A stale socket from a previous run; never remove anything else. */
        if (lstat(host, &st) == 0 && S_ISSOCK(st.st_mode))
            (void)unlink(host);
        rc = uv_pipe_bind(&l->h.pipe, host);
        if (rc == 0)
            rc = uv_pipe_chmod(&l->h.pipe, UV_READABLE | UV_WRITABLE);
    } else {
        struct sockaddr_storage ss;
        uv_tcp_init(srv->loop, &l->h.tcp);
        if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
            uv_close(&l->h.handle, NULL);
            osp_snprintf(err, errsize, "%s: \"%s\" is not a numeric address", param, host);
            srv->nlisteners++;
            srv->listeners_open++;
            return -1;
        }
        rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss, 0);
    }
    l->h.handle.data = l;
    srv->nlisteners++;
    srv->listeners_open++;
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 128, filter_server__accept_cb);
    if (rc < 0) {
        osp_snprintf(err, errsize, "%s: cannot listen on %s: %s", param, spec,
                     uv_strerror(rc));
        return -1;
    }
    osp_info("listening on %s%s", spec, milter ? " (milter)" : "");
    return 0;
}

void filter_server_shutdown(filter_server_t *srv)
{
    filter_session_t *s, *next;
    size_t i;

    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    for (i = 0; i < srv->nlisteners; i++)
        if (!uv_is_closing(&srv->listeners[i].h.handle))
            uv_close(&srv->listeners[i].h.handle, NULL);
    for (s = srv->sessions; s; s = next) {
        next = filter_session_next(s);
        filter_session_abort(s);
    }
    {
        filter_milter_t *m, *mnext;
        for (m = srv->milters; m; m = mnext) {
            mnext = filter_milter_next(m);
            filter_milter_abort(m);
        }
    }
    filter_reinject_shutdown(srv->reinject);
    osp_info("stopping: messages=%llu delivered=%llu quarantined=%llu discarded=%llu "
             "rejected=%llu tempfail=%llu",
             (unsigned long long)srv->n_messages, (unsigned long long)srv->n_delivered,
             (unsigned long long)srv->n_quarantined, (unsigned long long)srv->n_discarded,
             (unsigned long long)srv->n_rejected, (unsigned long long)srv->n_tempfail);
}

void filter_server_free(filter_server_t **srvp)
{
    filter_server_t *srv = *srvp;

    if (srv == NULL)
        return;
    if (srv->sessions || srv->milters)
        osp_panic("filter_server_free: sessions still open");
    free(srv->listeners);
    free(srv);
    *srvp = NULL;
}
