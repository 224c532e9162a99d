/*
 * osprey-policyd: main.  Reads the configuration, builds the checks, binds
 * the listeners, drops privileges, starts the workers, and waits on the
 * main loop (signals, metrics endpoint, rate-limit expiry) until SIGTERM or
 * SIGINT.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "osp_httpd.h"
#include "osp_log.h"
#include "osp_prog.h"
#include "osp_store.h"
#include "policyd.h"
#include "policyd_checks.h"
#include "policyd_dblists.h"
#include "policyd_dns.h"
#include "policyd_greylist.h"
#include "policyd_shared.h"
#include "policyd_metrics.h"
#include "policyd_server.h"

#define POLICYD_EXPIRE_INTERVAL_MS 60000

typedef struct policyd_main {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_signal_t sighup;              /* reload list files and database lists */
    const osp_config_t *cfg;         /* borrowed from prog */
    uv_timer_t expire_timer;
    policyd_server_t *srv;
    policyd_checks_t *checks;
    policyd_metrics_t metrics;
    osp_httpd_t *http;
    osp_store_t *store;              /* NULL: no database */
    policyd_dblists_t *dblists;
    policyd_greycheck_t *grey;
    policyd_dnschecks_t *dns;        /* spf, dnsbl, rdns */
    policyd_shared_t *shared;
} policyd_main_t;

static void policyd_main__signal_cb(uv_signal_t *sig, int signum)
{
    policyd_main_t *m = sig->data;

    osp_info("%s received, shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    policyd_server_stop(m->srv);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    uv_close((uv_handle_t *)&m->expire_timer, NULL);
    osp_httpd_close(m->http);
    m->http = NULL;
    policyd_dblists_stop(m->dblists);
    policyd_shared_stop(m->shared);
    osp_store_free(&m->store);
}

/*
 * SIGHUP: read the list files again and reload the database lists, without
 * dropping connections.  The configuration itself is not re-read.  A file
 * that cannot be read keeps every list as it was.
 */
static void policyd_main__hup_cb(uv_signal_t *sig, int signum)
{
    policyd_main_t *m = sig->data;
    osp_buf_t errors, warnings;
    size_t n = 0;
    const char *p;

    (void)signum;
    osp_buf_init(&errors, 1024 * 1024);
    osp_buf_init(&warnings, 1024 * 1024);
    if (policyd_checks_reload_lists(m->checks, m->cfg, &errors, &warnings, &n) == 0)
        osp_info("SIGHUP: list files reloaded: %zu entries", n);
    for (p = osp_buf_cstr(&warnings); *p;) {
        size_t len = strcspn(p, "\n");
        osp_warn("SIGHUP: %.*s", (int)len, p);
        p += len + (p[len] ? 1 : 0);
    }
    for (p = osp_buf_cstr(&errors); *p;) {
        size_t len = strcspn(p, "\n");
        osp_error("SIGHUP: %.*s; the list files in use are kept", (int)len, p);
        p += len + (p[len] ? 1 : 0);
    }
    if (policyd_dblists_enabled(m->dblists)) {
        osp_info("SIGHUP: reloading the database lists");
        policyd_dblists_reload(m->dblists);
    }
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
}

static void policyd_main__expire_cb(uv_timer_t *t)
{
    policyd_main_t *m = t->data;

    policyd_checks_expire(m->checks, uv_hrtime() / 1000000);
    policyd_greycheck_expire(m->grey, uv_hrtime() / 1000000);
    osp_gauge_set(m->metrics.ratelimit_keys, (double)policyd_checks_ratelimit_keys(m->checks));
}

/* Before each /metrics render: gauges that are read, not counted. */
static void policyd_main__collect(osp_metrics_t *reg, void *ctx)
{
    policyd_main_t *m = ctx;

    (void)reg;
    osp_gauge_set(m->metrics.ratelimit_keys, (double)policyd_checks_ratelimit_keys(m->checks));
}

/* Run as osprey_user from now on; start-up errors are fatal. */
static void policyd_main__drop_privileges(const char *user)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return;
    errno = 0;
    pw = getpwnam(user);
    if (pw == NULL) {
        osp_warn("osprey_user \"%s\" does not exist: still running as root", user);
        return;
    }
    if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
        osp_fatal("cannot run as osprey_user \"%s\": %s", user, strerror(errno));
    if (setuid(0) == 0)
        osp_fatal("cannot drop root privileges: setuid(0) still works after setuid(%u)",
                  (unsigned)pw->pw_uid);
    osp_debug(1, "running as %s (uid %u)", user, (unsigned)pw->pw_uid);
}

static void policyd_main__report(const char *label, osp_buf_t *b)
{
    const char *s = osp_buf_cstr(b);

    while (*s) {
        size_t n = strcspn(s, "\n");
        if (label[0] == 'w')
            osp_warn("%.*s", (int)n, s);
        else
            osp_error("%.*s", (int)n, s);
        s += n + (s[n] ? 1 : 0);
    }
}

int main(int argc, char **argv)
{
    osp_prog_t prog;
    policyd_main_t m;
    policyd_conf_t conf;
    osp_buf_t errors, warnings;
    int rc;

    osp_prog_init(&prog, "policyd", policyd_params, NULL, argc, argv);
    if (prog.argc > 0) {
        osp_error("unexpected argument \"%s\"", prog.argv[0]);
        osp_prog_close(&prog);
        return 2;
    }
    memset(&m, 0, sizeof(m));
    osp_buf_init(&errors, 1024 * 1024);
    osp_buf_init(&warnings, 1024 * 1024);
    /* Both, so that every configuration error is reported at once. */
    (void)policyd_conf_load(&conf, prog.cfg, &errors);
    m.dblists = policyd_dblists_create(prog.cfg, &errors);
    m.grey = policyd_greycheck_create(prog.cfg, &errors);
    m.dns = policyd_dnschecks_create(prog.cfg, &errors);
    if (m.dns)
        policyd_dnschecks_register(m.dns);   /* before greylist: it goes last */
    {
        policyd_check_def_t d = { "database_lists", policyd_dblists_check, NULL, m.dblists };
        policyd_check_def_t g = { "greylist", policyd_greycheck_run, NULL, m.grey };
        policyd_checks_register(&d, policyd_dblists_enabled(m.dblists) ? -1 : 0);
        policyd_checks_register(&g, policyd_greycheck_enabled(m.grey) ? 1 : 0);
    }
    m.checks = policyd_checks_create(prog.cfg, &errors, &warnings);
    m.shared = policyd_shared_create(prog.cfg);
    if (m.checks) {
        policyd_rate_share_t share;

        policyd_shared_hooks(m.shared, &share);
        policyd_checks_set_rate_share(m.checks, &share);
    }
    policyd_main__report("warning", &warnings);
    if (errors.len) {
        policyd_main__report("error", &errors);
        policyd_checks_free(&m.checks);
        osp_fatal("configuration %s: errors above; not starting", prog.config_path);
    }
    policyd_metrics_init(&m.metrics);
    if (uv_loop_init(&m.loop) != 0)
        osp_fatal("uv_loop_init failed");
    if (m.dns && policyd_dnschecks_probe(m.dns, &m.loop, &errors) < 0) {
        policyd_main__report("error", &errors);
        osp_fatal("DNS resolver settings: errors above; not starting");
    }
    if (policyd_dblists_enabled(m.dblists) || policyd_shared_enabled(m.shared)) {
        osp_store_conf_t sc;

        osp_store_conf_init(&sc, prog.cfg);
        m.store = osp_store_create(&m.loop, &sc);
    }
    if (policyd_dblists_enabled(m.dblists))
        policyd_dblists_start(m.dblists, &m.loop, m.store);
    if (policyd_shared_enabled(m.shared))
        policyd_shared_start(m.shared, &m.loop, m.store);
    m.srv = policyd_server_create(&conf, m.checks, &m.metrics, &errors);
    if (m.srv == NULL) {
        policyd_main__report("error", &errors);
        osp_fatal("cannot start listeners");
    }
    if (m.dns)
        policyd_server_set_worker_hooks(m.srv, policyd_dns_worker_init, policyd_dns_worker_fini,
                                        m.dns);
    if (conf.metrics_listen[0]) {
        char err[512];

        osp_metrics_set_collect(m.metrics.reg, policyd_main__collect, &m);
        m.http = osp_httpd_create(&m.loop, conf.metrics_listen, "policyd_metrics_listen",
                                  m.metrics.reg, err, sizeof(err));
        if (m.http == NULL)
            osp_fatal("cannot start the metrics endpoint: %s", err);
    }
    policyd_main__drop_privileges(osp_config_str(prog.cfg, "osprey_user"));

    (void)uv_signal_init(&m.loop, &m.sigterm);
    (void)uv_signal_init(&m.loop, &m.sigint);
    (void)uv_timer_init(&m.loop, &m.expire_timer);
    m.sigterm.data = m.sigint.data = m.expire_timer.data = &m;
    (void)uv_signal_start(&m.sigterm, policyd_main__signal_cb, SIGTERM);
    (void)uv_signal_start(&m.sigint, policyd_main__signal_cb, SIGINT);
    m.cfg = prog.cfg;
    (void)uv_signal_init(&m.loop, &m.sighup);
    m.sighup.data = &m;
    (void)uv_signal_start(&m.sighup, policyd_main__hup_cb, SIGHUP);
    (void)uv_timer_start(&m.expire_timer, policyd_main__expire_cb, POLICYD_EXPIRE_INTERVAL_MS,
                         POLICYD_EXPIRE_INTERVAL_MS);
    /* Blocking SIGPIPE: a client that hangs up must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    if (policyd_server_start(m.srv, &errors) < 0) {
        policyd_main__report("error", &errors);
        osp_fatal("cannot start worker threads");
    }
    osp_info("daemon started: %u workers, %zu listeners, checks:%s%s", conf.workers,
             conf.nlisten, policyd_checks_count(m.checks) ? "" : " none",
             policyd_checks_count(m.checks) ? " configured" : "");

    (void)uv_run(&m.loop, UV_RUN_DEFAULT);
    rc = policyd_server_join(m.srv);
    policyd_server_free(&m.srv);
    if (uv_loop_close(&m.loop) != 0) {
        osp_error("main loop did not close cleanly");
        rc = -1;
    }
    policyd_checks_free(&m.checks);
    policyd_dblists_free(&m.dblists);
    policyd_greycheck_free(&m.grey);
    policyd_dnschecks_free(&m.dns);
    policyd_shared_free(&m.shared);
    policyd_metrics_close(&m.metrics);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_info("daemon stopped");
    osp_prog_close(&prog);
    return rc == 0 ? 0 : 1;
}
