/* policyd_server: listeners, worker threads and their loops. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "policyd_server.h"
#include "policyd_session.h"

struct policyd_server {
    const policyd_conf_t *conf;
    const policyd_checks_t *checks;
    policyd_metrics_t *metrics;
    policyd_worker_t *workers;        /* owned array */
    unsigned nworkers;
    atomic_uint connections;
    atomic_bool stop_requested;       /* policyd_server_stop is idempotent */
    int *unix_fds;                    /* per listener: the bound unix socket, or -1 */
    char **unix_paths;                /* per listener: path to unlink at the end, or NULL */
    int *ports;                       /* per listener: bound TCP port */
    bool started, joined;
    policyd_worker_init_fn worker_init; /* policyd_server_set_worker_hooks */
    policyd_worker_fini_fn worker_fini;
    void *hook_arg;
};

/* ---- configuration ---------------------------------------------------- */

int policyd_conf_load(policyd_conf_t *conf, const osp_config_t *cfg, osp_buf_t *errors)
{
    const char *ea = osp_config_str(cfg, "policyd_error_action");
    int64_t workers = osp_config_int(cfg, "policyd_workers");
    size_t before = errors->len;

    memset(conf, 0, sizeof(*conf));
    conf->listen = osp_config_list(cfg, "policyd_listen", &conf->nlisten);
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (n > 256 ? 256 : n) : 1;
    }
    conf->workers = (unsigned)workers;
    conf->max_connections = (unsigned)osp_config_int(cfg, "policyd_max_connections");
    conf->idle_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "policyd_idle_timeout");
    conf->time_limit_ms = (uint64_t)osp_config_duration_ms(cfg, "policyd_time_limit");
    conf->limits.max_line = (size_t)osp_config_size(cfg, "policyd_max_attribute_size");
    conf->limits.max_request = (size_t)osp_config_size(cfg, "policyd_max_request_size");
    conf->limits.max_attrs = (unsigned)osp_config_int(cfg, "policyd_max_attributes");
    conf->metrics_listen = osp_config_str(cfg, "policyd_metrics_listen");
    if (strcasecmp(ea, "disconnect") == 0) {
        conf->error_action = NULL;
    } else if (strcasecmp(ea, "DUNNO") == 0 || strncasecmp(ea, "DEFER_IF_PERMIT", 15) == 0) {
        char err[256];
        if (policy_action_check(ea, err, sizeof(err)) < 0)
            (void)osp_buf_printf(errors, "parameter \"policyd_error_action\": %s\n", err);
        conf->error_action = ea;
    } else {
        (void)osp_buf_printf(errors, "parameter \"policyd_error_action\": \"%.100s\" is not "
                             "DUNNO, DEFER_IF_PERMIT [text] or disconnect\n", ea);
    }
    if (conf->limits.max_line > conf->limits.max_request)
        (void)osp_buf_printf(errors, "parameter \"policyd_max_attribute_size\" is larger "
                             "than policyd_max_request_size\n");
    return errors->len == before ? 0 : -1;
}

/* ---- listener specs ---------------------------------------------------- */

int policyd_listen_parse(const char *spec, struct sockaddr_storage *ss, const char **path_r,
                         char *err, size_t errsize)
{
    const char *rest, *colon;
    char host[128];
    int64_t port;
    size_t hlen;

    memset(ss, 0, sizeof(*ss));
    *path_r = NULL;
    if (strncmp(spec, "unix:", 5) == 0) {
        rest = spec + 5;
        if (*rest != '/' || strlen(rest) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            osp_snprintf(err, errsize, "\"%.200s\": unix socket path must be absolute and "
                         "shorter than 108 bytes", spec);
            return -1;
        }
        *path_r = rest;
        return 0;
    }
    if (strncmp(spec, "inet:", 5) != 0) {
        osp_snprintf(err, errsize, "\"%.200s\": expected inet:ADDR:PORT, inet:[IPV6]:PORT "
                     "or unix:PATH", spec);
        return -1;
    }
    rest = spec + 5;
    if (*rest == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL || close[1] != ':') {
            osp_snprintf(err, errsize, "\"%.200s\": expected inet:[IPV6]:PORT", spec);
            return -1;
        }
        hlen = (size_t)(close - rest - 1);
        rest++;
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL) {
            osp_snprintf(err, errsize, "\"%.200s\": missing :PORT", spec);
            return -1;
        }
        hlen = (size_t)(colon - rest);
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        osp_snprintf(err, errsize, "\"%.200s\": bad address", spec);
        return -1;
    }
    memcpy(host, rest, hlen);
    host[hlen] = '\0';
    if (osp_parse_int(colon + 1, &port) < 0 || port < 0 || port > 65535) {
        osp_snprintf(err, errsize, "\"%.200s\": bad port", spec);
        return -1;
    }
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0) {
        osp_snprintf(err, errsize, "\"%.200s\": \"%.100s\" is not an IP address", spec, host);
        return -1;
    }
    return 0;
}

/* Bind and listen on a unix socket once, as root, before the workers exist. */
static int policyd_server__unix_bind(const char *path, osp_buf_t *errors)
{
    struct sockaddr_un sun;
    struct stat st;
    int fd;

    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            (void)osp_buf_printf(errors, "unix:%s exists and is not a socket\n", path);
            return -1;
        }
        (void)unlink(path);   /* a stale socket from an earlier run */
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        (void)osp_buf_printf(errors, "unix:%s: socket: %s\n", path, strerror(errno));
        return -1;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    osp_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        chmod(path, 0666) < 0 || listen(fd, 511) < 0) {
        (void)osp_buf_printf(errors, "cannot listen on unix:%s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- workers ----------------------------------------------------------- */

static void policyd_worker__connection_cb(uv_stream_t *server, int status)
{
    policyd_listener_t *l = server->data;

    if (status < 0) {
        osp_warn("policyd: listener %s: %s", l->name, uv_strerror(status));
        return;
    }
    if (l->w->stopping)
        return;
    policyd_session_accept(l->w, server, l->is_unix);
}

static void policyd_worker__close_listeners(policyd_worker_t *w)
{
    size_t i;

    for (i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].initialised && !uv_is_closing(&w->listeners[i].h.handle))
            uv_close(&w->listeners[i].h.handle, NULL);
}

/* The per-worker state of the hooks goes, after the sessions. */
static void policyd_worker__fini(policyd_worker_t *w)
{
    void *st = w->hook_state;

    w->hook_state = NULL;
    if (st && w->srv->worker_fini)
        w->srv->worker_fini(st, w->srv->hook_arg);
}

static void policyd_worker__stop_cb(uv_async_t *a)
{
    policyd_worker_t *w = a->data;

    w->stopping = true;
    policyd_worker__close_listeners(w);
    policyd_session_close_all(w, "shutdown");
    policyd_worker__fini(w);
    uv_close((uv_handle_t *)&w->stop_async, NULL);
}

static void policyd_worker__thread(void *arg)
{
    policyd_worker_t *w = arg;

    if (w->srv->worker_init)
        w->hook_state = w->srv->worker_init(&w->loop, w->srv->hook_arg);
    (void)uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->hook_state) {
        policyd_worker__fini(w);
        (void)uv_run(&w->loop, UV_RUN_DEFAULT);
    }
}

void policyd_server_set_worker_hooks(policyd_server_t *srv, policyd_worker_init_fn init,
                                     policyd_worker_fini_fn fini, void *arg)
{
    if (srv->started)
        osp_panic("policyd_server_set_worker_hooks: workers already started");
    srv->worker_init = init;
    srv->worker_fini = fini;
    srv->hook_arg = arg;
}

/* Close whatever a worker has and run its loop dry; 0 if uv_loop_close is 0. */
static int policyd_worker__teardown(policyd_worker_t *w)
{
    int rc = 0;

    if (!w->loop_ok)
        return 0;
    policyd_worker__close_listeners(w);
    if (w->async_ok && !uv_is_closing((uv_handle_t *)&w->stop_async))
        uv_close((uv_handle_t *)&w->stop_async, NULL);
    (void)uv_run(&w->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&w->loop);
    if (rc != 0)
        osp_error("policyd: worker %u: uv_loop_close: %s", w->id, uv_strerror(rc));
    w->loop_ok = false;
    return rc;
}

static int policyd_worker__listen_tcp(policyd_worker_t *w, policyd_listener_t *l,
                                      struct sockaddr_storage *ss, int *port_io,
                                      osp_buf_t *errors)
{
    uv_os_fd_t fd;
    int on = 1, rc;
    unsigned flags = 0;
    struct sockaddr_storage bound;
    int blen = sizeof(bound);

    if (*port_io > 0) {
        if (ss->ss_family == AF_INET)
            ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)*port_io);
        else
            ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)*port_io);
    }
    rc = uv_tcp_init_ex(&w->loop, &l->h.tcp, ss->ss_family);
    if (rc < 0) {
        (void)osp_buf_printf(errors, "%s: %s\n", l->name, uv_strerror(rc));
        return -1;
    }
    l->initialised = true;
    l->h.handle.data = l;
    if (uv_fileno(&l->h.handle, &fd) == 0 &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) < 0) {
        (void)osp_buf_printf(errors, "%s: SO_REUSEPORT: %s\n", l->name, strerror(errno));
        return -1;
    }
    if (ss->ss_family == AF_INET6)
        flags |= UV_TCP_IPV6ONLY;
    rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)ss, flags);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 511, policyd_worker__connection_cb);
    if (rc < 0) {
        (void)osp_buf_printf(errors, "cannot listen on %s: %s\n", l->name, uv_strerror(rc));
        return -1;
    }
    if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&bound, &blen) == 0)
        *port_io = ntohs(bound.ss_family == AF_INET
                             ? ((struct sockaddr_in *)&bound)->sin_port
                             : ((struct sockaddr_in6 *)&bound)->sin6_port);
    return 0;
}

static int policyd_worker__listen_unix(policyd_worker_t *w, policyd_listener_t *l, int fd,
                                       osp_buf_t *errors)
{
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0), rc;

    if (dfd < 0) {
        (void)osp_buf_printf(errors, "%s: dup: %s\n", l->name, strerror(errno));
        return -1;
    }
    (void)uv_pipe_init(&w->loop, &l->h.pipe, 0);
    l->initialised = true;
    l->is_unix = true;
    l->h.handle.data = l;
    rc = uv_pipe_open(&l->h.pipe, dfd);
    if (rc < 0) {
        close(dfd);
    } else {
        rc = uv_listen(&l->h.stream, 511, policyd_worker__connection_cb);
    }
    if (rc < 0) {
        (void)osp_buf_printf(errors, "cannot listen on %s: %s\n", l->name, uv_strerror(rc));
        return -1;
    }
    return 0;
}

/* ---- server ------------------------------------------------------------ */

policyd_server_t *policyd_server_create(const policyd_conf_t *conf,
                                        const policyd_checks_t *checks,
                                        policyd_metrics_t *metrics, osp_buf_t *errors)
{
    policyd_server_t *srv = osp_calloc(1, sizeof(*srv));
    struct sockaddr_storage *addrs;
    size_t i;
    unsigned wi;
    char err[300];
    bool failed = false;

    srv->conf = conf;
    srv->checks = checks;
    srv->metrics = metrics;
    atomic_init(&srv->connections, 0);
    atomic_init(&srv->stop_requested, false);
    srv->nworkers = conf->workers;
    srv->workers = osp_calloc(srv->nworkers, sizeof(*srv->workers));
    srv->unix_fds = osp_calloc(conf->nlisten + 1, sizeof(int));
    srv->unix_paths = osp_calloc(conf->nlisten + 1, sizeof(char *));
    srv->ports = osp_calloc(conf->nlisten + 1, sizeof(int));
    addrs = osp_calloc(conf->nlisten + 1, sizeof(*addrs));

    for (i = 0; i < conf->nlisten; i++) {
        const char *path;
        srv->unix_fds[i] = -1;
        if (policyd_listen_parse(conf->listen[i], &addrs[i], &path, err, sizeof(err)) < 0) {
            (void)osp_buf_printf(errors, "parameter \"policyd_listen\": %s\n", err);
            failed = true;
            continue;
        }
        if (path) {
            srv->unix_fds[i] = policyd_server__unix_bind(path, errors);
            if (srv->unix_fds[i] < 0)
                failed = true;
            else
                srv->unix_paths[i] = osp_strdup(path);
        }
    }
    if (conf->nlisten == 0) {
        (void)osp_buf_printf(errors, "parameter \"policyd_listen\": no listener\n");
        failed = true;
    }
    for (wi = 0; wi < srv->nworkers && !failed; wi++) {
        policyd_worker_t *w = &srv->workers[wi];
        int rc;

        w->srv = srv;
        w->id = wi;
        w->conf = conf;
        w->checks = checks;
        w->metrics = metrics;
        w->connections = &srv->connections;
        rc = uv_loop_init(&w->loop);
        if (rc < 0) {
            (void)osp_buf_printf(errors, "uv_loop_init: %s\n", uv_strerror(rc));
            failed = true;
            break;
        }
        w->loop_ok = true;
        rc = uv_async_init(&w->loop, &w->stop_async, policyd_worker__stop_cb);
        if (rc < 0) {
            (void)osp_buf_printf(errors, "uv_async_init: %s\n", uv_strerror(rc));
            failed = true;
            break;
        }
        w->stop_async.data = w;
        w->async_ok = true;
        w->listeners = osp_calloc(conf->nlisten, sizeof(*w->listeners));
        w->nlisteners = conf->nlisten;
        for (i = 0; i < conf->nlisten && !failed; i++) {
            policyd_listener_t *l = &w->listeners[i];
            l->w = w;
            l->name = conf->listen[i];
            if (srv->unix_fds[i] >= 0)
                failed = policyd_worker__listen_unix(w, l, srv->unix_fds[i], errors) < 0;
            else
                failed = policyd_worker__listen_tcp(w, l, &addrs[i], &srv->ports[i],
                                                    errors) < 0;
        }
    }
    free(addrs);
    if (failed) {
        policyd_server_free(&srv);
        return NULL;
    }
    return srv;
}

int policyd_server_start(policyd_server_t *srv, osp_buf_t *errors)
{
    unsigned wi;

    for (wi = 0; wi < srv->nworkers; wi++) {
        policyd_worker_t *w = &srv->workers[wi];
        int rc = uv_thread_create(&w->thread, policyd_worker__thread, w);
        if (rc < 0) {
            (void)osp_buf_printf(errors, "cannot start worker thread: %s\n", uv_strerror(rc));
            policyd_server_stop(srv);
            return -1;
        }
        w->thread_ok = true;
    }
    srv->started = true;
    return 0;
}

void policyd_server_stop(policyd_server_t *srv)
{
    unsigned wi;

    if (atomic_exchange(&srv->stop_requested, true))
        return;
    for (wi = 0; wi < srv->nworkers; wi++)
        if (srv->workers[wi].async_ok)
            (void)uv_async_send(&srv->workers[wi].stop_async);
}

int policyd_server_join(policyd_server_t *srv)
{
    unsigned wi;
    int bad = 0;

    for (wi = 0; wi < srv->nworkers; wi++) {
        policyd_worker_t *w = &srv->workers[wi];
        if (w->thread_ok) {
            (void)uv_thread_join(&w->thread);
            w->thread_ok = false;
        }
        if (w->loop_ok) {
            int rc = uv_loop_close(&w->loop);
            if (rc != 0) {
                osp_error("policyd: worker %u: uv_loop_close: %s", w->id, uv_strerror(rc));
                bad = -1;
            }
            w->loop_ok = false;
        }
    }
    srv->joined = true;
    return bad;
}

void policyd_server_free(policyd_server_t **srvp)
{
    policyd_server_t *srv = *srvp;
    unsigned wi;
    size_t i;

    if (srv == NULL)
        return;
    if (srv->started && !srv->joined) {
        policyd_server_stop(srv);
        (void)policyd_server_join(srv);
    }
    for (wi = 0; wi < srv->nworkers; wi++) {
        (void)policyd_worker__teardown(&srv->workers[wi]);
        free(srv->workers[wi].listeners);
    }
    for (i = 0; i < srv->conf->nlisten; i++) {
        if (srv->unix_fds[i] >= 0)
            close(srv->unix_fds[i]);
        if (srv->unix_paths[i]) {
            (void)unlink(srv->unix_paths[i]);
            free(srv->unix_paths[i]);
        }
    }
    free(srv->unix_fds);
    free(srv->unix_paths);
    free(srv->ports);
    free(srv->workers);
    free(srv);
    *srvp = NULL;
}

int policyd_server_port(policyd_server_t *srv, size_t i)
{
    if (i >= srv->conf->nlisten || srv->unix_fds[i] >= 0)
        return -1;
    return srv->ports[i];
}

unsigned policyd_server_connections(policyd_server_t *srv)
{
    return atomic_load(&srv->connections);
}
