/*
 * osprey-filter: main.  Wires configuration, the scan pipeline, the
 * quarantine, the reinjection client and the listeners together; the work
 * is done in filter_server.c, filter_session.c and their helpers.
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

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_prog.h"
#include "filter.h"
#include "filter_quarantine.h"
#include "filter_reinject.h"
#include "filter_scan.h"
#include "filter_server.h"

static filter_server_t *main_server;
static uv_signal_t main_sigterm, main_sigint;

static void main_signal_cb(uv_signal_t *sig, int signum)
{
    osp_info("signal %d: shutting down", signum);
    (void)sig;
    uv_close((uv_handle_t *)&main_sigterm, NULL);
    uv_close((uv_handle_t *)&main_sigint, NULL);
    filter_server_shutdown(main_server);
}

/* Run as osprey_user after binding (start-up error class: exits). */
static void main_drop_privileges(const char *user)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return;
    pw = getpwnam(user);
    if (pw == NULL)
        osp_fatal("osprey_user: unknown user \"%s\"", user);
    if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
        osp_fatal("cannot become user %s: %s", user, strerror(errno));
    if (pw->pw_uid != 0 && setuid(0) == 0)
        osp_fatal("privileges were not dropped");
}

/* A directory we must be able to write to, checked after dropping privileges. */
static void main_check_dir(const char *param, const char *dir)
{
    if (access(dir, W_OK | X_OK) < 0)
        osp_fatal("%s: cannot write to %s: %s", param, dir, strerror(errno));
}

int main(int argc, char **argv)
{
    osp_prog_t prog;
    filter_conf_t conf;
    uv_loop_t loop;
    filter_scan_t *scan;
    filter_scanner_t builtin;
    filter_quarantine_t *quarantine;
    filter_reinject_t *reinject;
    osp_buf_t errs;
    char err[512];
    size_t i;
    int rc;

    osp_prog_init(&prog, "filter", filter_params, NULL, argc, argv);
    if (prog.argc > 0) {
        osp_error("unexpected argument \"%s\"", prog.argv[0]);
        osp_prog_close(&prog);
        return 2;
    }
    if (filter_conf_load(prog.cfg, &conf, err, sizeof(err)) < 0)
        osp_fatal("%s", err);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);

    scan = filter_scan_create(&conf.thresholds);
    osp_buf_init(&errs, 65536);
    if (filter_scan_static_create(conf.static_rules, conf.nstatic_rules, &builtin, &errs) < 0)
        osp_fatal("%s", osp_buf_cstr(&errs));
    osp_buf_close(&errs);
    filter_scan_add(scan, &builtin);

    quarantine = filter_quarantine_spool_create(&loop, conf.quarantine_dir, err, sizeof(err));
    if (quarantine == NULL)
        osp_fatal("filter_quarantine_directory: %s", err);
    reinject = filter_reinject_create(&loop, &conf.reinject, err, sizeof(err));
    if (reinject == NULL)
        osp_fatal("%s", err);
    main_server = filter_server_create(&loop, &conf, scan, quarantine, reinject);
    for (i = 0; i < conf.nlisten; i++)
        if (filter_server_listen(main_server, conf.listen[i], err, sizeof(err)) < 0)
            osp_fatal("%s", err);
    main_drop_privileges(osp_config_str(prog.cfg, "osprey_user"));
    main_check_dir("filter_temp_directory", conf.temp_dir);
    main_check_dir("filter_quarantine_directory", conf.quarantine_dir);

    uv_signal_init(&loop, &main_sigterm);
    uv_signal_init(&loop, &main_sigint);
    uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
    uv_signal_start(&main_sigint, main_signal_cb, SIGINT);
    osp_info("ready: reinject=%s quarantine=%s max_sessions=%u static_rules=%zu%s",
             conf.reinject.target, conf.quarantine_dir, conf.max_sessions, conf.nstatic_rules,
             conf.pause_stage != FILTER_PAUSE_NONE ? " (TEST-ONLY debug pause enabled)" : "");

    uv_run(&loop, UV_RUN_DEFAULT);

    filter_server_free(&main_server);
    filter_reinject_free(&reinject);
    filter_quarantine_free(&quarantine);
    filter_scan_free(&scan);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        osp_panic("uv_loop_close: %s", uv_strerror(rc));
    filter_conf_close(&conf);
    osp_info("stopped");
    osp_prog_close(&prog);
    return 0;
}
