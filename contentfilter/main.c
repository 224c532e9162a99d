/*
 * osprey-filter: main.  Wires configuration, the scan pipeline, the
 * quarantine, the reinjection client and the listeners together; the work
 * is done in filter_server.c, filter_session.c and their helpers.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "osp_store.h"
#include "filter.h"
#include "filter_accounts.h"
#include "filter_bayes.h"
#include "filter_metrics.h"
#include "filter_quarantine.h"
#include "filter_reinject.h"
#include "filter_auth.h"
#include "filter_engine.h"
#include "filter_scan.h"
#include "filter_server.h"

static filter_server_t *main_server;
static uv_signal_t main_sigterm, main_sigint;
static osp_store_t *main_store;
static osp_store_log_t *main_msglog;
static filter_accounts_t *main_accounts;
static filter_quarantine_t *main_quarantine;
static filter_metrics_t *main_metrics;
static filter_bayes_t *main_bayes;

static void main_signal_cb(uv_signal_t *sig, int signum)
{
    osp_info("signal %d: shutting down", signum);
    (void)sig;
    uv_close((uv_handle_t *)&main_sigterm, NULL);
    uv_close((uv_handle_t *)&main_sigint, NULL);
    filter_server_shutdown(main_server);
    filter_metrics_detach(main_metrics);
    filter_metrics_close(main_metrics);
    main_metrics = NULL;
    /*
     * The store's handles keep the loop running: let go of it now.  Pending
     * requests call back with a temporary failure (their sessions are
     * already gone, so Postfix retries those messages); rows of the message
     * log still in memory go to its journal.
     */
    main_server->msglog = NULL;
    filter_quarantine_db_detach(main_quarantine);
    filter_accounts_detach(main_accounts);
    filter_bayes_detach(main_bayes);
    osp_store_log_free(&main_msglog);
    osp_store_free(&main_store);
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
    filter_scan_thresholds_t none = { INFINITY, INFINITY };
    filter_reinject_t *reinject;
    bool use_db;
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

    /* Thresholds are applied per recipient (filter_session.c), not in the pipeline. */
    scan = filter_scan_create(&none);
    osp_buf_init(&errs, 65536);
    if (filter_scan_static_create(conf.static_rules, conf.nstatic_rules, &builtin, &errs) < 0)
        osp_fatal("%s", osp_buf_cstr(&errs));
    osp_buf_close(&errs);
    filter_scan_add(scan, &builtin);
    {
        /* Before the engine: the rules read its results. */
        filter_scanner_t auth;

        osp_buf_init(&errs, 65536);
        rc = filter_auth_create_from_config(prog.cfg, &auth, &errs);
        if (rc < 0)
            osp_fatal("%s", osp_buf_cstr(&errs));
        if (rc == 0)
            filter_scan_add(scan, &auth);
        osp_buf_close(&errs);
    }
    {
        size_t nrules;
        const char *const *rules = osp_config_list(prog.cfg, "filter_rules_files", &nrules);
        filter_scanner_t engine;

        osp_buf_init(&errs, 1024 * 1024);
        if (filter_engine_create(rules, nrules, osp_config_size(prog.cfg, "filter_scan_size_limit"),
                                 &engine, &errs) < 0)
            osp_fatal("filter_rules_files: %s", osp_buf_cstr(&errs));
        osp_buf_close(&errs);
        filter_scan_add(scan, &engine);
        /* Bayes: parse and tokenize first, look up on the loop, then the rules. */
        if (osp_config_bool(prog.cfg, "filter_bayes")) {
            const char *w = osp_config_str(prog.cfg, "filter_bayes_weight");
            char *end;
            double weight = strtod(w, &end);
            if (*w == '\0' || *end != '\0' || weight != weight || weight < 0 || weight > 100)
                osp_fatal("filter_bayes_weight: \"%s\" is not a number from 0 to 100", w);
            filter_engine_bayes_weight(&engine, weight);
            filter_engine_two_step(scan, &engine, true);
        }
    }

    use_db = strcmp(conf.quarantine_backend, "database") == 0 || conf.account_settings ||
             conf.message_log || osp_config_bool(prog.cfg, "filter_bayes");
    if (use_db) {
        osp_store_conf_t sc;
        osp_store_conf_init(&sc, prog.cfg);
        main_store = osp_store_create(&loop, &sc);
    }
    if (osp_config_bool(prog.cfg, "filter_bayes")) {
        filter_bayes_conf_t bc;
        if (filter_bayes_conf_load(prog.cfg, &bc, err, sizeof(err)) < 0)
            osp_fatal("%s", err);
        main_bayes = filter_bayes_create(&loop, main_store, &bc);
        filter_scan_set_bayes(scan, main_bayes);
    }
    if (strcmp(conf.quarantine_backend, "database") == 0) {
        main_quarantine = filter_quarantine_db_create(&loop, main_store,
                                                      conf.quarantine_timeout_ms);
    } else {
        main_quarantine = filter_quarantine_spool_create(&loop, conf.quarantine_dir, err,
                                                         sizeof(err));
        if (main_quarantine == NULL)
            osp_fatal("filter_quarantine_directory: %s", err);
    }
    reinject = filter_reinject_create(&loop, &conf.reinject, err, sizeof(err));
    if (reinject == NULL)
        osp_fatal("%s", err);
    main_server = filter_server_create(&loop, &conf, scan, main_quarantine, reinject);
    if (conf.account_settings) {
        main_accounts = filter_accounts_create(&loop, main_store, &main_server->defaults,
                                               conf.account_cache_ttl_ms,
                                               conf.account_cache_size,
                                               conf.account_timeout_ms);
        main_server->accounts = main_accounts;
    }

    for (i = 0; i < conf.nlisten; i++)
        if (filter_server_listen(main_server, conf.listen[i], false, err, sizeof(err)) < 0)
            osp_fatal("%s", err);
    for (i = 0; i < conf.nmilter_listen; i++)
        if (filter_server_listen(main_server, conf.milter_listen[i], true, err, sizeof(err)) < 0)
            osp_fatal("%s", err);
    if (*conf.metrics_listen) {
        main_metrics = filter_metrics_create(&loop, conf.metrics_listen, main_server, main_store,
                                             main_msglog, main_accounts, err, sizeof(err));
        if (main_metrics == NULL)
            osp_fatal("%s", err);
    }
    main_drop_privileges(osp_config_str(prog.cfg, "osprey_user"));
    main_check_dir("filter_temp_directory", conf.temp_dir);
    if (strcmp(conf.quarantine_backend, "spool") == 0)
        main_check_dir("filter_quarantine_directory", conf.quarantine_dir);
    if (conf.message_log) {
        /* After dropping privileges: the journal files must be ours. */
        osp_store_log_conf_t lc;
        const char *lerr = NULL;
        char *copy = osp_strdup(conf.message_log_journal);
        main_check_dir("filter_message_log_journal", dirname(copy));
        free(copy);
        memset(&lc, 0, sizeof(lc));
        lc.journal_path = conf.message_log_journal;
        main_msglog = osp_store_log_create(main_store, &lc, &lerr);
        if (main_msglog == NULL)
            osp_fatal("filter_message_log_journal: %s: %s", conf.message_log_journal,
                      lerr ? lerr : "unusable");
        main_server->msglog = main_msglog;
        filter_metrics_set_log(main_metrics, main_msglog);
    }
    filter_metrics_set_bayes(main_metrics, main_bayes);

    uv_signal_init(&loop, &main_sigterm);
    uv_signal_init(&loop, &main_sigint);
    uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
    uv_signal_start(&main_sigint, main_signal_cb, SIGINT);
    osp_info("ready: reinject=%s quarantine=%s%s%s account_settings=%s message_log=%s "
             "metrics=%s max_sessions=%u static_rules=%zu%s",
             conf.reinject.target, conf.quarantine_backend,
             strcmp(conf.quarantine_backend, "spool") == 0 ? ":" : "",
             strcmp(conf.quarantine_backend, "spool") == 0 ? conf.quarantine_dir : "",
             conf.account_settings ? "yes" : "no", conf.message_log ? "yes" : "no",
             *conf.metrics_listen ? conf.metrics_listen : "off", conf.max_sessions,
             conf.nstatic_rules,
             conf.pause_stage != FILTER_PAUSE_NONE ? " (TEST-ONLY debug pause enabled)" : "");

    uv_run(&loop, UV_RUN_DEFAULT);

    filter_server_free(&main_server);
    filter_reinject_free(&reinject);
    filter_accounts_free(&main_accounts);
    filter_quarantine_free(&main_quarantine);
    filter_scan_free(&scan);
    filter_bayes_free(&main_bayes);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        osp_panic("uv_loop_close: %s", uv_strerror(rc));
    filter_conf_close(&conf);
    osp_info("stopped");
    osp_prog_close(&prog);
    return 0;
}
