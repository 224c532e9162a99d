/*
 * Component test: osprey-filter's server, sessions, scan pipeline,
 * quarantine and reinjection client in-process on a real libuv loop (its
 * own thread), a scripted client over loopback TCP, and a scripted fake
 * downstream smtpd (threads with blocking sockets) that can refuse chosen
 * recipients.  At the end every handle is closed and uv_loop_close()
 * returns 0.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "../../contentfilter/filter.h"
#include "../../contentfilter/filter_milter.h"
#include "../../contentfilter/filter_server.h"

/* ---- fake downstream smtpd ---------------------------------------------- */

static pthread_mutex_t ds_lock = PTHREAD_MUTEX_INITIALIZER;
static osp_buf_t ds_log;           /* every line the downstream received */
static int ds_listen_fd = -1;
static int ds_port;

static int read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;

    while (n + 1 < size) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0)
            return -1;
        buf[n++] = c;
        if (c == '\n')
            break;
    }
    buf[n] = '\0';
    return (int)n;
}

static void ds_send(int fd, const char *s)
{
    ssize_t r = write(fd, s, strlen(s));
    (void)r;
}

static void *ds_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char line[4096];
    bool data = false;

    ds_send(fd, "220 fake ESMTP\r\n");
    while (read_line(fd, line, sizeof(line)) > 0) {
        pthread_mutex_lock(&ds_lock);
        osp_buf_append_str(&ds_log, line);
        pthread_mutex_unlock(&ds_lock);
        if (data) {
            if (strcmp(line, ".\r\n") == 0) {
                data = false;
                ds_send(fd, "250 2.0.0 Ok: queued as FAKE1\r\n");
            }
            continue;
        }
        if (strncasecmp(line, "EHLO", 4) == 0)
            ds_send(fd, "250-fake\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n"
                        "250-DSN\r\n250-SMTPUTF8\r\n"
                        "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n");
        else if (strncasecmp(line, "RCPT", 4) == 0)
            ds_send(fd, strstr(line, "tempfail@") ? "450 4.2.0 try later\r\n"
                        : strstr(line, "perm@") ? "550 5.1.1 unknown user\r\n"
                        : "250 2.1.5 Ok\r\n");
        else if (strncasecmp(line, "DATA", 4) == 0) {
            ds_send(fd, "354 go\r\n");
            data = true;
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            ds_send(fd, "221 bye\r\n");
            break;
        } else
            ds_send(fd, "250 2.0.0 Ok\r\n");
    }
    close(fd);
    return NULL;
}

static void *ds_accept(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_t t;
        int fd = accept(ds_listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_create(&t, NULL, ds_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static int listen_any(int *port_r)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port_r = ntohs(sa.sin_port);
    return fd;
}

/* A free port: bind, read it, close. */
static int free_port(void)
{
    int port, fd = listen_any(&port);
    close(fd);
    return port;
}

/* ---- the filter on its own loop thread ---------------------------------- */

static uv_loop_t loop;
static uv_async_t stop_async;
static pthread_t loop_thread;
static osp_config_t *cfg;
static filter_conf_t conf;
static filter_scan_t *scan;
static filter_quarantine_t *quarantine;
static filter_reinject_t *reinject;
static filter_server_t *server;
static int filter_port;
static int milter_port;
static char qdir[] = "/tmp/osprey-test-q.XXXXXX";
static char tdir[] = "/tmp/osprey-test-t.XXXXXX";

static void stop_cb(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    filter_server_shutdown(server);
}

static void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static void quiet_hook(enum osp_log_level level, const char *line, void *ctx)
{
    (void)ctx;
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "log %d: %s\n", (int)level, line);
}

static int setup(void **state)
{
    static const osp_param_def_t *const tables[] = { osp_common_params, filter_params, NULL };
    osp_buf_t errors, warnings;
    filter_scanner_t s;
    char ov[512], err[512];
    pthread_t t;
    const char *overrides[16];
    int i, n = 0;

    (void)state;
    osp_log_set_hook(quiet_hook, NULL);
    osp_buf_init(&ds_log, OSP_BUF_UNLIMITED);
    ds_listen_fd = listen_any(&ds_port);
    pthread_create(&t, NULL, ds_accept, NULL);
    pthread_detach(t);
    assert_non_null(mkdtemp(qdir));
    assert_non_null(mkdtemp(tdir));
    filter_port = free_port();
    milter_port = free_port();

    cfg = osp_config_create("filter", tables);
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    snprintf(ov, sizeof(ov), "filter_listen=inet:127.0.0.1:%d", filter_port);
    overrides[n++] = osp_strdup(ov);
    snprintf(ov, sizeof(ov), "filter_reinject=inet:127.0.0.1:%d", ds_port);
    overrides[n++] = osp_strdup(ov);
    snprintf(ov, sizeof(ov), "filter_quarantine_directory=%s", qdir);
    overrides[n++] = osp_strdup(ov);
    snprintf(ov, sizeof(ov), "filter_temp_directory=%s", tdir);
    overrides[n++] = osp_strdup(ov);
    overrides[n++] = osp_strdup("filter_static_rules=rcpt:quar@example.com:quarantine "
                                "rcpt:drop@example.com:discard rcpt:rej@example.com:reject");
    snprintf(ov, sizeof(ov), "filter_milter_listen=inet:127.0.0.1:%d", milter_port);
    overrides[n++] = osp_strdup(ov);
    overrides[n++] = osp_strdup("filter_max_sessions=3");
    overrides[n++] = osp_strdup("filter_milter_max_sessions=3");
    overrides[n++] = osp_strdup("filter_message_size_limit=64k");
    overrides[n++] = osp_strdup("filter_memory_threshold=4k");
    overrides[n++] = osp_strdup("filter_error_limit=5");
    overrides[n++] = osp_strdup("filter_line_length_limit=512");
    for (i = 0; i < n; i++) {
        assert_int_equal(osp_config_override(cfg, overrides[i], &errors), 0);
        free((char *)overrides[i]);
    }
    assert_int_equal(osp_config_finish(cfg, &errors, &warnings), 0);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    assert_int_equal(filter_conf_load(cfg, &conf, err, sizeof(err)), 0);

    uv_loop_init(&loop);
    scan = filter_scan_create(&conf.thresholds);
    osp_buf_init(&errors, 1024);
    assert_int_equal(filter_scan_static_create(conf.static_rules, conf.nstatic_rules, &s,
                                               &errors), 0);
    osp_buf_close(&errors);
    filter_scan_add(scan, &s);
    quarantine = filter_quarantine_spool_create(&loop, qdir, err, sizeof(err));
    assert_non_null(quarantine);
    reinject = filter_reinject_create(&loop, &conf.reinject, err, sizeof(err));
    assert_non_null(reinject);
    server = filter_server_create(&loop, &conf, scan, quarantine, reinject);
    snprintf(ov, sizeof(ov), "inet:127.0.0.1:%d", filter_port);
    assert_int_equal(filter_server_listen(server, ov, false, err, sizeof(err)), 0);
    snprintf(ov, sizeof(ov), "inet:127.0.0.1:%d", milter_port);
    assert_int_equal(filter_server_listen(server, ov, true, err, sizeof(err)), 0);
    uv_async_init(&loop, &stop_async, stop_cb);
    pthread_create(&loop_thread, NULL, loop_main, NULL);
    return 0;
}

static int teardown(void **state)
{
    char cmd[256];

    (void)state;
    uv_async_send(&stop_async);
    pthread_join(loop_thread, NULL);
    filter_server_free(&server);
    filter_reinject_free(&reinject);
    filter_quarantine_free(&quarantine);
    filter_scan_free(&scan);
    assert_int_equal(uv_loop_close(&loop), 0);
    filter_conf_close(&conf);
    osp_config_free(&cfg);
    close(ds_listen_fd);
    usleep(100000);   /* downstream threads see EOF and exit */
    /* Detached downstream threads may still hold the log lock briefly. */
    pthread_mutex_lock(&ds_lock);
    osp_buf_close(&ds_log);
    pthread_mutex_unlock(&ds_lock);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", qdir, tdir);
    assert_int_equal(system(cmd), 0);
    osp_log_set_hook(NULL, NULL);
    return 0;
}

/* ---- the scripted client -------------------------------------------------- */

static int client_connect_to(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { 10, 0 };

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static int client_connect(void)
{
    return client_connect_to(filter_port);
}

/* Read one (possibly multi-line) reply; returns its last line (static). */
static const char *reply(int fd)
{
    static char line[4096];

    do {
        if (read_line(fd, line, sizeof(line)) < 0) {
            strcpy(line, "<EOF>");
            return line;
        }
    } while (strlen(line) > 3 && line[3] == '-');
    line[strcspn(line, "\r\n")] = '\0';
    return line;
}

static void say(int fd, const char *s)
{
    ssize_t r = write(fd, s, strlen(s));
    assert_int_equal(r, (ssize_t)strlen(s));
}

#define EXPECT(fd, prefix) do { \
        const char *r_ = reply(fd); \
        if (strncmp(r_, prefix, strlen(prefix)) != 0) \
            fail_msg("line %d: got \"%s\", want \"%s...\"", __LINE__, r_, prefix); \
    } while (0)

static bool ds_saw(const char *needle)
{
    bool found;

    pthread_mutex_lock(&ds_lock);
    found = strstr(osp_buf_cstr(&ds_log), needle) != NULL;
    pthread_mutex_unlock(&ds_lock);
    return found;
}

static void ds_clear(void)
{
    pthread_mutex_lock(&ds_lock);
    osp_buf_reset(&ds_log);
    pthread_mutex_unlock(&ds_lock);
}

/* ---- cases ---------------------------------------------------------------- */

static void test_smtp_pipelined(void **state)
{
    int fd = client_connect();

    (void)state;
    ds_clear();
    EXPECT(fd, "220 ");
    say(fd, "EHLO postfix.test\r\n");
    EXPECT(fd, "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE");
    /* Everything pipelined, as Postfix's smtp client does; bare LF in the body. */
    say(fd, "XFORWARD NAME=client.example ADDR=203.0.113.7 IDENT=ABC123 HELO=helo.example\r\n"
            "MAIL FROM:<s@example.org> BODY=8BITMIME RET=HDRS ENVID=env+2B1\r\n"
            "RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.com\r\n"
            "RCPT TO:<quar@example.com>\r\n"
            "DATA\r\n");
    EXPECT(fd, "250 ");
    EXPECT(fd, "250 ");
    EXPECT(fd, "250 ");
    EXPECT(fd, "250 ");
    EXPECT(fd, "354 ");
    say(fd, "Subject: hello\r\n\r\n..stuffed line\nbare lf line\r\n.\r\nNOOP\r\n");
    EXPECT(fd, "250 2.0.0 Ok: scanned as ");
    EXPECT(fd, "250 2.0.0 Ok");
    assert_true(ds_saw("XFORWARD NAME=client.example ADDR=203.0.113.7 HELO=helo.example IDENT=ABC123"));
    assert_true(ds_saw("MAIL FROM:<s@example.org> SIZE="));
    assert_true(ds_saw("BODY=8BITMIME RET=HDRS ENVID=env+2B1"));
    assert_true(ds_saw("RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.com"));
    assert_false(ds_saw("RCPT TO:<quar@example.com>"));
    assert_true(ds_saw("X-Osprey-Scan-Id: "));
    assert_true(ds_saw("X-Spam-Status: No, score=0.0"));
    assert_true(ds_saw("\r\n..stuffed line\r\nbare lf line\r\n.\r\n"));
    say(fd, "QUIT\r\n");
    EXPECT(fd, "221 ");
    close(fd);
}

static void test_lmtp_per_recipient(void **state)
{
    int fd = client_connect();

    (void)state;
    EXPECT(fd, "220 ");
    say(fd, "LHLO postfix.test\r\n");
    EXPECT(fd, "250 XFORWARD");
    say(fd, "MAIL FROM:<s@example.org>\r\nRCPT TO:<ok@example.com>\r\n"
            "RCPT TO:<tempfail@example.com>\r\nRCPT TO:<perm@example.com>\r\n"
            "RCPT TO:<drop@example.com>\r\nRCPT TO:<rej@example.com>\r\n"
            "RCPT TO:<quar@example.com>\r\nDATA\r\n");
    for (int i = 0; i < 7; i++)
        EXPECT(fd, "250 ");
    EXPECT(fd, "354 ");
    say(fd, "Subject: x\r\n\r\nbody\r\n.\r\n");
    EXPECT(fd, "250 2.0.0 Ok: queued as FAKE1");   /* ok */
    EXPECT(fd, "450 4.2.0 try later");             /* downstream 4xx for this one only */
    EXPECT(fd, "550 5.1.1 unknown user");          /* downstream 5xx passed through */
    EXPECT(fd, "250 2.0.0 Ok: discarded");
    EXPECT(fd, "550 5.7.1 Message rejected");
    EXPECT(fd, "250 2.0.0 Ok: quarantined");
    say(fd, "QUIT\r\n");
    EXPECT(fd, "221 ");
    close(fd);
}

static void test_smtp_partial_failure_is_451(void **state)
{
    int fd = client_connect();

    (void)state;
    EXPECT(fd, "220 ");
    say(fd, "EHLO postfix.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<ok@example.com>\r\n"
            "RCPT TO:<tempfail@example.com>\r\nRCPT TO:<rej@example.com>\r\nDATA\r\n");
    EXPECT(fd, "250 XFORWARD");
    for (int i = 0; i < 4; i++)
        reply(fd);
    EXPECT(fd, "354 ");
    say(fd, "Subject: x\r\n\r\nbody\r\n.\r\n");
    EXPECT(fd, "451 4.3.0 ");
    /* all recipients rejected: the 5xx is given */
    say(fd, "MAIL FROM:<s@example.org>\r\nRCPT TO:<rej@example.com>\r\nDATA\r\n");
    EXPECT(fd, "250 ");
    EXPECT(fd, "250 ");
    EXPECT(fd, "354 ");
    say(fd, "Subject: x\r\n\r\nbody\r\n.\r\n");
    EXPECT(fd, "550 5.7.1 ");
    close(fd);
}

static void test_limits_and_errors(void **state)
{
    int fd = client_connect(), i;
    char big[2048];

    (void)state;
    EXPECT(fd, "220 ");
    say(fd, "MAIL FROM:<s@example.org>\r\n");
    EXPECT(fd, "503 5.5.1 ");                       /* no EHLO yet */
    say(fd, "EHLO postfix.test\r\n");
    EXPECT(fd, "250 ");
    say(fd, "VRFY x\r\nNOOP\r\nRSET\r\n");
    EXPECT(fd, "252 ");
    EXPECT(fd, "250 ");
    EXPECT(fd, "250 ");
    say(fd, "MAIL FROM:<s@example.org> SIZE=999999\r\n");
    EXPECT(fd, "552 5.3.4 ");
    say(fd, "RCPT TO:<a@example.com>\r\n");
    EXPECT(fd, "503 5.5.1 ");
    /* too big during DATA: 552 after the data ends, not mid-stream */
    say(fd, "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    EXPECT(fd, "250 ");
    EXPECT(fd, "250 ");
    EXPECT(fd, "354 ");
    memset(big, 'x', sizeof(big) - 2);
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '\0';
    for (i = 0; i < 40; i++)
        say(fd, big);
    say(fd, ".\r\n");
    EXPECT(fd, "552 5.3.4 ");
    say(fd, "STARTTLS\r\n");
    EXPECT(fd, "502 5.5.2 ");
    memset(big, 'A', 600);
    big[600] = '\0';
    say(fd, big);
    say(fd, "\r\n");
    EXPECT(fd, "500 5.5.2 ");
    say(fd, "BOGUS\r\n");                           /* 5th error: limit reached */
    EXPECT(fd, "502 5.5.2 ");
    EXPECT(fd, "421 4.7.0 ");
    EXPECT(fd, "<EOF>");
    close(fd);
}

static void test_max_sessions(void **state)
{
    int fds[3], extra, i;

    (void)state;
    for (i = 0; i < 3; i++) {
        fds[i] = client_connect();
        EXPECT(fds[i], "220 ");
    }
    extra = client_connect();
    EXPECT(extra, "421 4.3.2 ");
    EXPECT(extra, "<EOF>");
    close(extra);
    for (i = 0; i < 3; i++)
        close(fds[i]);
    usleep(100000);
    extra = client_connect();
    EXPECT(extra, "220 ");
    close(extra);
}

static void test_spilled_body_reinjected(void **state)
{
    int fd = client_connect(), i;
    char line[100];

    (void)state;
    ds_clear();
    EXPECT(fd, "220 ");
    say(fd, "EHLO postfix.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    for (i = 0; i < 3; i++)
        reply(fd);
    EXPECT(fd, "354 ");
    say(fd, "Subject: big\r\n\r\n");
    for (i = 0; i < 500; i++) {   /* ~40 KB, more than the 4 KB threshold */
        /* lines starting with "." are stuffed by the client, re-stuffed by us */
        snprintf(line, sizeof(line), "%s%05d %070d\r\n", i % 7 ? "" : "..", i, 0);
        say(fd, line);
    }
    say(fd, ".\r\n");
    EXPECT(fd, "250 2.0.0 Ok: scanned as ");
    assert_true(ds_saw("\r\n..00497 "));
    assert_true(ds_saw("\r\n00499 "));
    assert_false(ds_saw("\r\n.00497 "));
    close(fd);
}

/* ---- milter ------------------------------------------------------------------ */

static void mpkt(int fd, char cmd, const void *data, size_t len)
{
    osp_buf_t b;
    ssize_t r;

    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    filter_milter_put(&b, cmd, data, len);
    r = write(fd, b.data, b.len);
    assert_int_equal(r, (ssize_t)b.len);
    osp_buf_close(&b);
}

/* NUL-separated strings "a\0b\0" given as "a|b|" */
static void mpkt_s(int fd, char cmd, const char *bars)
{
    char buf[1024];
    size_t i, n = strlen(bars);

    assert_true(n < sizeof(buf));
    for (i = 0; i < n; i++)
        buf[i] = bars[i] == '|' ? '\0' : bars[i];
    mpkt(fd, cmd, buf, n);
}

/* Read one packet: its command ('\0' at EOF) and data into buf. */
static char mread(int fd, char *buf, size_t size, size_t *len_r)
{
    uint32_t n;
    size_t got = 0;
    char cmd;

    if (recv(fd, &n, 4, MSG_WAITALL) != 4)
        return '\0';
    n = ntohl(n);
    if (n == 0 || recv(fd, &cmd, 1, MSG_WAITALL) != 1)
        return '\0';
    n--;
    assert_true(n < size);
    if (n > 0)
        got = (size_t)recv(fd, buf, n, MSG_WAITALL);
    assert_int_equal(got, n);
    buf[n] = '\0';
    *len_r = n;
    return cmd;
}

static int milter_open(uint32_t proto)
{
    int fd = client_connect_to(milter_port);
    uint32_t v[3] = { htonl(6), htonl(0x1ff), htonl(proto) };
    char buf[256];
    size_t len;

    mpkt(fd, 'O', v, sizeof(v));
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'O');
    assert_int_equal(len, 12);
    memcpy(v, buf, 12);
    assert_int_equal(ntohl(v[0]), 6);
    assert_int_equal(ntohl(v[1]) & 0x19, 0x19);   /* add/change headers, remove recipients */
    assert_int_equal(ntohl(v[2]), proto & 0x1ff380u);
    return fd;
}

/* One message through a negotiated connection (no NR flags: every event answered). */
static void milter_message(int fd, const char *rcpts_bars, const char *subject)
{
    char buf[4096], rc[256], *r, *save = NULL;
    size_t len;
    static const char body[] = "hello\r\n.leading dot\r\n";

    mpkt_s(fd, 'C', "client.example|4pp192.0.2.1|");
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'c');
    mpkt_s(fd, 'M', "<sender@example.org>|");
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'c');
    osp_strlcpy(rc, rcpts_bars, sizeof(rc));
    for (r = strtok_r(rc, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
        char arg[128];
        snprintf(arg, sizeof(arg), "<%s>|", r);
        mpkt_s(fd, 'R', arg);
        assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'c');
    }
    mpkt_s(fd, 'D', "Ei|4711ABC|");
    snprintf(buf, sizeof(buf), "Subject| %s|", subject);
    mpkt_s(fd, 'L', buf);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'c');
    mpkt(fd, 'N', NULL, 0);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'c');
    mpkt(fd, 'B', body, sizeof(body) - 1);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'c');
    mpkt(fd, 'E', NULL, 0);
}

static void test_milter_verdicts(void **state)
{
    char buf[4096];
    size_t len;
    char cmd;
    bool del_quar = false, ins_scan = false, ins_status = false;
    int fd;

    (void)state;
    /* Postfix-like offer without "no reply" flags; leading space kept. */
    fd = milter_open(0x100000u);
    milter_message(fd, "deliver@example.com,quar@example.com", "two");
    while ((cmd = mread(fd, buf, sizeof(buf), &len)) != 'c') {
        assert_true(cmd == '-' || cmd == 'i');
        if (cmd == '-' && strcmp(buf, "<quar@example.com>") == 0)
            del_quar = true;
        if (cmd == 'i' && strcmp(buf + 4, "X-Osprey-Scan-Id") == 0)
            ins_scan = true;
        if (cmd == 'i' && strcmp(buf + 4, "X-Spam-Status") == 0 &&
            strncmp(buf + 4 + strlen("X-Spam-Status") + 1, " No, score=", 11) == 0)
            ins_status = true;
    }
    assert_true(del_quar);
    assert_true(ins_scan);
    assert_true(ins_status);
    /* The quarantined copy is in the spool, with Postfix's queue id (macro i). */
    {
        char cmdline[512];
        snprintf(cmdline, sizeof(cmdline),
                 "grep -l '^X-Osprey-Quarantine-Queue-Id: 4711ABC' %s/*.eml | "
                 "xargs grep -q '^X-Osprey-Quarantine-Recipient: <quar@example.com>'", qdir);
        assert_int_equal(system(cmdline), 0);
    }
    /* Everyone quarantined or discarded: the message is discarded. */
    mpkt(fd, 'A', NULL, 0);
    milter_message(fd, "quar@example.com,drop@example.com", "gone");
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'd');
    /* Everyone rejected: 550 to the client. */
    milter_message(fd, "rej@example.com", "no");
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'y');
    assert_memory_equal(buf, "550 5.7.1", 9);
    mpkt(fd, 'Q', NULL, 0);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), '\0');
    close(fd);
}

static void test_milter_bad_input(void **state)
{
    char buf[256];
    size_t len;
    uint32_t zero = 0, huge = htonl(FILTER_MILTER_PACKET_MAX + 1);
    int fd, fd2;

    (void)state;
    /* A command before negotiation closes the connection. */
    fd = client_connect_to(milter_port);
    mpkt_s(fd, 'M', "<a@example.org>|");
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), '\0');
    close(fd);
    /* A zero or oversized length closes it; another connection is served. */
    fd = milter_open(0);
    fd2 = milter_open(0);
    assert_int_equal(write(fd, &zero, 4), 4);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), '\0');
    close(fd);
    fd = milter_open(0);
    assert_int_equal(write(fd, &huge, 4), 4);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), '\0');
    close(fd);
    /* An unknown command too. */
    fd = milter_open(0);
    mpkt(fd, 'Z', "x", 1);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), '\0');
    close(fd);
    /* With "no reply" flags only the end of message is answered. */
    mpkt_s(fd2, 'H', "helo.example|");
    assert_int_equal(mread(fd2, buf, sizeof(buf), &len), 'c');
    close(fd2);
    fd2 = milter_open(0x1ff380u);
    mpkt_s(fd2, 'M', "<s@example.org>|");
    mpkt_s(fd2, 'R', "<deliver@example.com>|");
    mpkt_s(fd2, 'L', "Subject| fine|");
    mpkt(fd2, 'N', NULL, 0);
    mpkt(fd2, 'E', "body\r\n", 6);
    {
        char cmd;
        while ((cmd = mread(fd2, buf, sizeof(buf), &len)) == 'i')
            ;
        assert_int_equal(cmd, 'c');
    }
    close(fd2);
}

/* A message answered at once (no recipients: tempfail) with the next one
 * pipelined behind it in the same write: each is answered once, in order. */
static void test_milter_pipelined(void **state)
{
    osp_buf_t b;
    char buf[4096], cmd;
    size_t len;
    int fd;

    (void)state;
    fd = milter_open(0x1ff380u);
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    filter_milter_put(&b, 'M', "<s@example.org>\0", 16);
    filter_milter_put(&b, 'E', NULL, 0);
    filter_milter_put(&b, 'M', "<s@example.org>\0", 16);
    filter_milter_put(&b, 'R', "<deliver@example.com>\0", 22);
    filter_milter_put(&b, 'L', "Subject\0 second\0", 17);
    filter_milter_put(&b, 'N', NULL, 0);
    filter_milter_put(&b, 'E', "body\r\n", 6);
    assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
    osp_buf_close(&b);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 't');
    while ((cmd = mread(fd, buf, sizeof(buf), &len)) == 'i')
        ;
    assert_int_equal(cmd, 'c');
    mpkt(fd, 'Q', NULL, 0);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), '\0');   /* nothing more */
    close(fd);
}

/* Postfix's queue id (macro "i") belongs to one message: the next one
 * without it is not stored under the previous message's id. */
static void test_milter_queue_id_per_message(void **state)
{
    char buf[512], cmdline[512];
    size_t len;
    int fd;

    (void)state;
    fd = milter_open(0x1ff380u);
    mpkt_s(fd, 'M', "<s@example.org>|");
    mpkt_s(fd, 'R', "<quar@example.com>|");
    mpkt_s(fd, 'L', "Subject| qid-first|");
    mpkt(fd, 'N', NULL, 0);
    mpkt_s(fd, 'D', "Ei|QIDFIRST1|");
    mpkt(fd, 'E', "one\r\n", 5);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'd');
    mpkt_s(fd, 'M', "<s@example.org>|");
    mpkt_s(fd, 'R', "<quar@example.com>|");
    mpkt_s(fd, 'L', "Subject| qid-second|");
    mpkt(fd, 'N', NULL, 0);
    mpkt(fd, 'E', "two\r\n", 5);
    assert_int_equal(mread(fd, buf, sizeof(buf), &len), 'd');
    close(fd);
    snprintf(cmdline, sizeof(cmdline),
             "f=$(grep -l '^Subject: qid-second' %s/*.eml) && [ -n \"$f\" ] && "
             "! grep -q QIDFIRST1 $f && grep -q QIDFIRST1 $(grep -l '^Subject: qid-first' %s/*.eml)",
             qdir, qdir);
    assert_int_equal(system(cmdline), 0);
}

static void test_milter_max_sessions(void **state)
{
    char buf[64];
    size_t len;
    uint32_t v[3] = { htonl(6), htonl(0x1ff), htonl(0) };
    int fd[3], extra, i;

    (void)state;
    usleep(200000);   /* connections of earlier cases are gone */
    for (i = 0; i < 3; i++)
        fd[i] = milter_open(0);
    /* The fourth is closed at once: Postfix applies milter_default_action. */
    extra = client_connect_to(milter_port);
    mpkt(extra, 'O', v, sizeof(v));
    assert_int_equal(mread(extra, buf, sizeof(buf), &len), '\0');
    close(extra);
    close(fd[0]);
    usleep(200000);
    fd[0] = milter_open(0);   /* a slot is free again */
    for (i = 0; i < 3; i++)
        close(fd[i]);
}

static void test_milter_codec(void **state)
{
    osp_buf_t b;
    filter_milter_packet_t p;
    size_t used;
    char err[128];
    const char *argv[4];

    (void)state;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    filter_milter_put(&b, 'L', "Subject\0 hi\0", 12);
    assert_int_equal(b.len, 4 + 1 + 12);
    assert_int_equal(filter_milter_parse(b.data, 3, &p, &used, err, sizeof(err)), 0);
    assert_int_equal(filter_milter_parse(b.data, b.len - 1, &p, &used, err, sizeof(err)), 0);
    assert_int_equal(filter_milter_parse(b.data, b.len, &p, &used, err, sizeof(err)), 1);
    assert_int_equal(used, b.len);
    assert_int_equal(p.cmd, 'L');
    assert_int_equal(p.len, 12);
    assert_int_equal(filter_milter_strings(p.data, p.len, argv, 4), 2);
    assert_string_equal(argv[0], "Subject");
    assert_string_equal(argv[1], " hi");
    assert_int_equal(filter_milter_strings("abc", 3, argv, 4), -1);
    osp_buf_reset(&b);
    osp_buf_append(&b, "\0\0\0\0", 4);
    assert_int_equal(filter_milter_parse(b.data, b.len, &p, &used, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bad packet length 0"));
    osp_buf_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smtp_pipelined),
        cmocka_unit_test(test_lmtp_per_recipient),
        cmocka_unit_test(test_smtp_partial_failure_is_451),
        cmocka_unit_test(test_limits_and_errors),
        cmocka_unit_test(test_max_sessions),
        cmocka_unit_test(test_spilled_body_reinjected),
        cmocka_unit_test(test_milter_codec),
        cmocka_unit_test(test_milter_verdicts),
        cmocka_unit_test(test_milter_bad_input),
        cmocka_unit_test(test_milter_pipelined),
        cmocka_unit_test(test_milter_queue_id_per_message),
        cmocka_unit_test(test_milter_max_sessions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
