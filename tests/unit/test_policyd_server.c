/*
 * Component test: the policy server in-process on real libuv loops (its
 * worker threads), driven by a scripted client over loopback TCP and a
 * unix socket: pipelined requests, a malformed or oversized request that
 * closes only its own connection, the idle timeout, the per-request time
 * limit with the error action, the connection limit, and a clean shutdown
 * in which every loop closes with uv_loop_close() == 0.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_metrics.h"
#include "../../policyd/policyd_server.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_prog.h"

static char tmpdir[128];
static char sockpath[256];

/* ---- the server under test --------------------------------------------- */

struct fixture {
    osp_config_t *cfg;
    policyd_conf_t conf;
    policyd_checks_t *checks;
    policyd_metrics_t metrics;
    policyd_server_t *srv;
    int port;
};

static atomic_int slow_cancelled;

static void slow_cancel(void *arg)
{
    (void)arg;
    atomic_fetch_add(&slow_cancelled, 1);
}

/* Never answers for HELO slow.example: only the deadline can end it. */
static enum policyd_step slow_run(policyd_eval_t *ev, void *ctx)
{
    (void)ctx;
    if (strcmp(policy_request_get(ev->req, POLICY_A_HELO_NAME), "slow.example") != 0)
        return POLICYD_NEXT;
    policyd_eval_pending_add(ev, slow_cancel, NULL);
    return POLICYD_PENDING;
}

/* Worker hooks (policyd_server_set_worker_hooks), for test_worker_hooks. */
static struct {
    bool on;
    atomic_int inits, finis, in_main_thread, bad;
    uv_thread_t main_thread;
} hooks;

static void *hook_init(uv_loop_t *loop, void *arg)
{
    uv_thread_t self = uv_thread_self();
    uv_timer_t *t = osp_calloc(1, sizeof(*t));

    /* No cmocka asserts here: this is a worker thread. */
    if (arg != &hooks)
        hooks.bad++;
    if (uv_thread_equal(&self, &hooks.main_thread))
        hooks.in_main_thread++;
    /* A handle on the worker's loop: the loop closes cleanly only if fini closes it. */
    if (uv_timer_init(loop, t) != 0)
        hooks.bad++;
    hooks.inits++;
    return t;
}

static void hook_close_cb(uv_handle_t *h)
{
    free(h);
}

static void hook_fini(void *state, void *arg)
{
    uv_thread_t self = uv_thread_self();

    if (arg != &hooks)
        hooks.bad++;
    if (uv_thread_equal(&self, &hooks.main_thread))
        hooks.in_main_thread++;
    uv_close((uv_handle_t *)state, hook_close_cb);
    hooks.finis++;
}

static void start_server(struct fixture *f, const char *extra)
{
    static const osp_param_def_t *const tables[] = { osp_common_params, policyd_params, NULL };
    char text[4096], list[512];
    osp_buf_t errors, warnings;
    FILE *fp;
    policyd_check_def_t slow = { "slow", slow_run, NULL, NULL };

    memset(f, 0, sizeof(*f));
    snprintf(list, sizeof(list), "%s/block", tmpdir);
    fp = fopen(list, "w");
    assert_non_null(fp);
    fputs("203.0.113.0/24\n", fp);
    fclose(fp);
    snprintf(text, sizeof(text),
             "policyd_listen = inet:127.0.0.1:0, unix:%s\n"
             "policyd_workers = 1\n"
             "policyd_client_block_files = %s\n"
             "policyd_max_request_size = 1k\n"
             "policyd_max_attribute_size = 256\n"
             "%s", sockpath, list, extra);
    f->cfg = osp_config_create("policyd", tables);
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    (void)osp_config_read_string(f->cfg, "test", text, &errors);
    if (osp_config_finish(f->cfg, &errors, &warnings) != 0 ||
        policyd_conf_load(&f->conf, f->cfg, &errors) != 0)
        fail_msg("config: %s", osp_buf_cstr(&errors));
    f->checks = policyd_checks_create(f->cfg, &errors, &warnings);
    if (f->checks == NULL)
        fail_msg("checks: %s", osp_buf_cstr(&errors));
    policyd_checks_append(f->checks, &slow);
    policyd_metrics_init(&f->metrics);
    f->srv = policyd_server_create(&f->conf, f->checks, &f->metrics, &errors);
    if (f->srv == NULL)
        fail_msg("server: %s", osp_buf_cstr(&errors));
    f->port = policyd_server_port(f->srv, 0);
    assert_true(f->port > 0);
    assert_int_equal(policyd_server_port(f->srv, 1), -1);
    if (hooks.on)
        policyd_server_set_worker_hooks(f->srv, hook_init, hook_fini, &hooks);
    assert_int_equal(policyd_server_start(f->srv, &errors), 0);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
}

static void stop_server(struct fixture *f)
{
    policyd_server_stop(f->srv);
    policyd_server_stop(f->srv);      /* idempotent */
    /* Every worker loop must close cleanly. */
    assert_int_equal(policyd_server_join(f->srv), 0);
    assert_int_equal(policyd_server_connections(f->srv), 0);
    policyd_server_free(&f->srv);
    assert_null(f->srv);
    policyd_checks_free(&f->checks);
    policyd_metrics_close(&f->metrics);
    osp_config_free(&f->cfg);
}

/* ---- a scripted client ---------------------------------------------------- */

static int connect_tcp(int port)
{
    struct sockaddr_in sin;
    struct timeval tv = { 5, 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static int connect_unix(void)
{
    struct sockaddr_un sun;
    struct timeval tv = { 5, 0 };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    osp_strlcpy(sun.sun_path, sockpath, sizeof(sun.sun_path));
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        s += n;
        len -= (size_t)n;
    }
}

/* Read one reply ("...\n\n") into buf; returns its length, 0 on EOF. */
static size_t read_reply(int fd, char *buf, size_t size)
{
    size_t len = 0;

    while (len + 1 < size) {
        ssize_t n = recv(fd, buf + len, 1, 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail_msg("recv: %s", strerror(errno));
        }
        len++;
        buf[len] = '\0';
        if (len >= 2 && buf[len - 1] == '\n' && buf[len - 2] == '\n')
            return len;
    }
    fail_msg("reply too long");
    return 0;
}

/* After the server closed: recv sees EOF (or a reset). */
static bool closed_by_server(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);

    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static char *request(char *buf, size_t size, const char *client, const char *helo)
{
    snprintf(buf, size,
             "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
             "client_address=%s\nclient_name=c.example\nhelo_name=%s\n"
             "sender=a@example.org\nrecipient=b@example.com\nqueue_id=\n\n", client, helo);
    return buf;
}

static void send_request(int fd, const char *client, const char *helo)
{
    char req[1024];

    request(req, sizeof(req), client, helo);
    send_all(fd, req, strlen(req));
}

/* ---- tests ---------------------------------------------------------------- */

static void test_pipelined(void **state)
{
    struct fixture f;
    char req[1024], all[4096], reply[256];
    int fd, i;

    (void)state;
    start_server(&f, "");
    all[0] = '\0';
    strcat(all, request(req, sizeof(req), "192.0.2.1", "ok.example"));
    strcat(all, request(req, sizeof(req), "203.0.113.7", "ok.example"));
    strcat(all, request(req, sizeof(req), "192.0.2.2", "ok.example"));
    fd = connect_tcp(f.port);
    /* All three in one write, and then the same again byte by byte. */
    send_all(fd, all, strlen(all));
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=DUNNO\n\n");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=REJECT 5.7.1 Client address rejected by policy\n\n");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=DUNNO\n\n");
    for (i = 0; all[i]; i++)
        send_all(fd, all + i, 1);
    for (i = 0; i < 3; i++)
        assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=DUNNO\n\n");
    close(fd);

    /* The unix socket answers too and is usable by other users. */
    {
        struct stat st;
        assert_int_equal(stat(sockpath, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0666);
    }
    fd = connect_unix();
    send_request(fd, "203.0.113.9", "ok.example");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=REJECT 5.7.1 Client address rejected by policy\n\n");
    close(fd);
    assert_true(osp_counter_value(f.metrics.requests) == 7);
    stop_server(&f);
    assert_int_equal(access(sockpath, F_OK), -1);   /* unlinked at the end */
}

static void test_bad_request_closes_only_its_connection(void **state)
{
    struct fixture f;
    char reply[256], big[2048];
    int good, bad;

    (void)state;
    start_server(&f, "");
    good = connect_tcp(f.port);
    send_request(good, "192.0.2.1", "ok.example");
    assert_true(read_reply(good, reply, sizeof(reply)) > 0);

    /* Oversized request (over policyd_max_request_size = 1k). */
    bad = connect_tcp(f.port);
    big[0] = '\0';
    while (strlen(big) < 1500)
        strcat(big, "sender=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    send_all(bad, big, strlen(big));
    assert_true(closed_by_server(bad));
    close(bad);
    /* A malformed line. */
    bad = connect_tcp(f.port);
    send_all(bad, "request=smtpd_access_policy\nno equals sign\n\n", 45);
    assert_true(closed_by_server(bad));
    close(bad);
    /* A line over policyd_max_attribute_size. */
    bad = connect_tcp(f.port);
    memset(big, 'x', 400);
    memcpy(big, "helo_name=", 10);
    send_all(bad, big, 400);
    assert_true(closed_by_server(bad));
    close(bad);
    /* Not a policy request. */
    bad = connect_unix();
    send_all(bad, "request=junk\n\n", 14);
    assert_true(closed_by_server(bad));
    close(bad);

    /* The first connection still works. */
    send_request(good, "203.0.113.1", "ok.example");
    assert_true(read_reply(good, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=REJECT 5.7.1 Client address rejected by policy\n\n");
    assert_true(osp_counter_value(f.metrics.protocol_errors) == 4);
    close(good);
    stop_server(&f);
}

static void test_idle_timeout(void **state)
{
    struct fixture f;
    char reply[256];
    int fd;
    struct timespec t0, t1;
    double secs;

    (void)state;
    start_server(&f, "policyd_idle_timeout = 300ms\n");
    fd = connect_tcp(f.port);
    send_request(fd, "192.0.2.1", "ok.example");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_true(closed_by_server(fd));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs > 0.2 && secs < 3.0);
    close(fd);
    assert_true(osp_counter_value(f.metrics.idle_timeouts) == 1);
    stop_server(&f);
}

static void test_time_limit(void **state)
{
    struct fixture f;
    char reply[256];
    int fd;

    (void)state;
    atomic_store(&slow_cancelled, 0);
    start_server(&f, "policyd_time_limit = 150ms\n"
                     "policyd_error_action = DEFER_IF_PERMIT Service temporarily unavailable\n");
    fd = connect_tcp(f.port);
    /* The slow request and a quick one pipelined behind it: answers in order. */
    send_request(fd, "192.0.2.1", "slow.example");
    send_request(fd, "203.0.113.1", "ok.example");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=DEFER_IF_PERMIT Service temporarily unavailable\n\n");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    assert_string_equal(reply, "action=REJECT 5.7.1 Client address rejected by policy\n\n");
    assert_int_equal(atomic_load(&slow_cancelled), 1);
    /* A client that leaves during a pending request: the eval is cancelled. */
    send_request(fd, "192.0.2.1", "slow.example");
    usleep(30000);
    close(fd);
    usleep(50000);
    assert_int_equal(atomic_load(&slow_cancelled), 2);
    /* Shutdown with a request pending. */
    fd = connect_tcp(f.port);
    send_request(fd, "192.0.2.1", "slow.example");
    usleep(30000);
    stop_server(&f);
    assert_int_equal(atomic_load(&slow_cancelled), 3);
    assert_true(closed_by_server(fd));
    close(fd);

    /* error action "disconnect": no answer, the connection is closed. */
    start_server(&f, "policyd_time_limit = 100ms\npolicyd_error_action = disconnect\n");
    fd = connect_tcp(f.port);
    send_request(fd, "192.0.2.1", "slow.example");
    assert_true(closed_by_server(fd));
    close(fd);
    stop_server(&f);
}

static void test_max_connections(void **state)
{
    struct fixture f;
    char reply[256];
    int fds[3], extra, i;

    (void)state;
    start_server(&f, "policyd_max_connections = 3\n");
    for (i = 0; i < 3; i++) {
        fds[i] = connect_tcp(f.port);
        send_request(fds[i], "192.0.2.1", "ok.example");
        assert_true(read_reply(fds[i], reply, sizeof(reply)) > 0);
    }
    extra = connect_tcp(f.port);
    assert_true(closed_by_server(extra));
    close(extra);
    assert_true(osp_counter_value(f.metrics.rejected_connections) == 1);
    /* Room again after one leaves. */
    close(fds[0]);
    usleep(50000);
    extra = connect_tcp(f.port);
    send_request(extra, "192.0.2.1", "ok.example");
    assert_true(read_reply(extra, reply, sizeof(reply)) > 0);
    /* Shut down with connections open: still a clean close. */
    stop_server(&f);
    close(extra);
    close(fds[1]);
    close(fds[2]);
}

static void test_two_workers(void **state)
{
    struct fixture f;
    char reply[256];
    int fds[16], i;

    (void)state;
    start_server(&f, "policyd_workers = 2\n");
    for (i = 0; i < 16; i++)
        fds[i] = i % 2 ? connect_unix() : connect_tcp(f.port);
    for (i = 0; i < 16; i++) {
        send_request(fds[i], "192.0.2.1", "ok.example");
        assert_true(read_reply(fds[i], reply, sizeof(reply)) > 0);
        assert_string_equal(reply, "action=DUNNO\n\n");
    }
    for (i = 0; i < 16; i++)
        close(fds[i]);
    stop_server(&f);
}

/* Per-worker state is made and freed in each worker thread, and its handles close. */
static void test_worker_hooks(void **state)
{
    struct fixture f;
    char reply[256];
    int fd;

    (void)state;
    memset(&hooks, 0, sizeof(hooks));
    hooks.on = true;
    hooks.main_thread = uv_thread_self();
    start_server(&f, "policyd_workers = 2\n");
    fd = connect_tcp(f.port);
    send_request(fd, "192.0.2.1", "ok.example");
    assert_true(read_reply(fd, reply, sizeof(reply)) > 0);
    close(fd);
    stop_server(&f);      /* asserts every loop closed */
    assert_int_equal(hooks.inits, 2);
    assert_int_equal(hooks.finis, 2);
    assert_int_equal(hooks.bad, 0);
    assert_int_equal(hooks.in_main_thread, 0);
    hooks.on = false;
}

static void test_listen_parse(void **state)
{
    struct sockaddr_storage ss;
    const char *path;
    char err[256];

    (void)state;
    assert_int_equal(policyd_listen_parse("inet:127.0.0.1:10040", &ss, &path, err, 256), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(policyd_listen_parse("inet:[::1]:10040", &ss, &path, err, 256), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(policyd_listen_parse("unix:/run/p.sock", &ss, &path, err, 256), 0);
    assert_string_equal(path, "/run/p.sock");
    assert_int_equal(policyd_listen_parse("unix:rel.sock", &ss, &path, err, 256), -1);
    assert_int_equal(policyd_listen_parse("inet:localhost:25", &ss, &path, err, 256), -1);
    assert_string_equal(err, "\"inet:localhost:25\": \"localhost\" is not an IP address");
    assert_int_equal(policyd_listen_parse("inet:127.0.0.1:99999", &ss, &path, err, 256), -1);
    assert_int_equal(policyd_listen_parse("tcp:127.0.0.1:1", &ss, &path, err, 256), -1);
    assert_int_equal(policyd_listen_parse("inet:[::1:25", &ss, &path, err, 256), -1);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_policyd_server.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(sockpath, sizeof(sockpath), "%s/policyd.sock", tmpdir);
    osp_log_open("osprey", "policyd-test", OSP_LOG_TO_STDERR);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_parse),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_bad_request_closes_only_its_connection),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_time_limit),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_two_workers),
        cmocka_unit_test(test_worker_hooks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
