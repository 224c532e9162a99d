/*
 * osprey-worker: main.  Wires configuration, the store and the job loop
 * (worker_server.c) together and stops cleanly on SIGTERM or SIGINT.
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

#include "osp_log.h"
#include "osp_prog.h"
#include "osp_store.h"
#include "worker.h"

static uv_signal_t main_sigterm, main_sigint;
static worker_server_t *main_server;
static osp_store_t *main_store;

/* Run as osprey_user: the worker binds nothing, so at once.  Start-up
 * errors are fatal. */
static void main_drop_privileges(const char *user)
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
}

static void main_stopped_cb(void *ctx)
{
    (void)ctx;
    osp_store_free(&main_store);
    worker_server_free(&main_server);
}

static void main_signal_cb(uv_signal_t *sig, int signum)
{
    (void)sig;
    osp_info("signal %d: shutting down", signum);
    uv_close((uv_handle_t *)&main_sigterm, NULL);
    uv_close((uv_handle_t *)&main_sigint, NULL);
    worker_server_shutdown(main_server, main_stopped_cb, NULL);
}

int main(int argc, char **argv)
{
    osp_prog_t prog;
    osp_store_conf_t sconf;
    worker_conf_t conf;
    uv_loop_t loop;
    int rc;

    osp_prog_init(&prog, "worker", worker_params, NULL, argc, argv);
    if (prog.argc > 0) {
        osp_error("unexpected argument \"%s\"", prog.argv[0]);
        osp_prog_close(&prog);
        return 2;
    }
    worker_conf_load(prog.cfg, &conf);
    main_drop_privileges(osp_config_str(prog.cfg, "osprey_user"));
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);

    osp_store_conf_init(&sconf, prog.cfg);
    main_store = osp_store_create(&loop, &sconf);
    main_server = worker_server_create(&loop, main_store, &conf);

    uv_signal_init(&loop, &main_sigterm);
    uv_signal_init(&loop, &main_sigint);
    uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
    uv_signal_start(&main_sigint, main_signal_cb, SIGINT);

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        osp_error("event loop not empty at exit: %s", uv_strerror(rc));
    osp_prog_close(&prog);
    return rc == 0 ? 0 : 1;
}
