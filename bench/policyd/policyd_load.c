/*
 * policyd_load: a load generator for osprey-policyd or any other Postfix
 * policy server (bench/policyd/run.sh drives it).
 *
 * Like Postfix's smtpd processes it keeps N persistent connections and
 * never pipelines: a connection sends one request, waits for the answer,
 * then may send the next.  Two ways to pace:
 *
 *   closed loop (default)  every connection sends its next request as soon
 *                          as the answer arrives: the server's throughput;
 *   open loop (-r RATE)    requests are scheduled at RATE per second
 *                          whatever the server does; a request whose
 *                          connections are all busy waits in a queue, and
 *                          latency counts from the scheduled time, so a
 *                          stalled server cannot hide its stall
 *                          (no coordinated omission).
 *
 * Requests come from a built-in mix (below) or, with -f FILE, from a file of
 * requests separated by empty lines, replayed in turn (lines starting with
 * '#' are not sent).  Built-in mix, per 100 requests:
 *
 *   clean RCPT (70 % IPv4 client, 30 % IPv6)  -> DUNNO
 *   END-OF-MESSAGE of a clean or hot user     -> DUNNO from osprey (it only
 *                                                counts), DUNNO or DEFER from
 *                                                a server that counts and
 *                                                refuses there
 *   RCPT of one of 10 hot users               -> DUNNO, later DEFER/HOLD
 *   RCPT from a blocked IPv4 / IPv6 client    -> REJECT
 *   RCPT with a blocked sender                -> REJECT
 *
 * The blocked clients and senders are drawn from the same numbering that
 * -G writes into list files, so the answers can be checked: a blocked
 * request not answered REJECT, or a clean RCPT answered anything but
 * DUNNO/OK, counts as "wrong" and makes the exit status 1.
 *
 * Modes:
 *   (default)  load, then one summary line of key=value fields;
 *   -P         probe: a fixed sequence of requests with known answers
 *              (blocked IPv4, IPv6 client, blocked sender, clean, a user
 *              over its limit of -L messages); prints each, exit 1 if wrong;
 *   -K COUNT   keys: COUNT END-OF-MESSAGE requests, each with a new
 *              sasl_username (fills a rate-limit table), closed loop;
 *   -G DIR     write list files for N=-l entries per list into DIR:
 *              client_block (IPv4 and IPv6 networks, osprey format),
 *              client_block4, client_block6.re (postfwd: CIDR, regex),
 *              sender_block.
 *
 *   policyd_load [-h HOST] [-p PORT | -U PATH] [-c CONNS] [-t THREADS]
 *                [-d SECONDS] [-r RATE] [-f FILE] [-l LIST_ENTRIES]
 *                [-u USERS] [-L LIMIT] [-P | -K COUNT | -G DIR]
 *
 * Loopback only, by intent: HOST must be 127.0.0.1 or ::1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOAD_MAX_CONNS 4096
#define LOAD_MAX_THREADS 64
#define LOAD_REQ_SIZE 2048
#define LOAD_ANSWER_SIZE 1024
#define LOAD_HOT_USERS 10

enum load_class {
    C_CLEAN, C_EOM, C_HOT, C_BLOCK4, C_BLOCK6, C_BLOCKSND, C_FILE, C_NCLASS
};
static const char *const load_class_names[] = {
    "clean", "eom", "hot", "block4", "block6", "blocksender", "file"
};

enum load_action { A_REJECT, A_DEFER, A_HOLD, A_DUNNO, A_OK, A_OTHER, A_NACTION };
static const char *const load_action_names[] = {
    "REJECT", "DEFER", "HOLD", "DUNNO", "OK", "other"
};

/* Options. */
static const char *opt_host = "127.0.0.1", *opt_port = "10040", *opt_unix, *opt_file;
static int opt_conns = 20, opt_threads = 1, opt_seconds = 10;
static double opt_rate;
static unsigned opt_list = 1000, opt_users = 100000, opt_limit = 100;
static unsigned long opt_keys;

/* Request file (-f): requests, each ending with the empty line. */
static char **file_req;
static size_t *file_len, file_n;

typedef struct load_conn {
    int fd;
    bool busy;
    enum load_class cls;
    uint64_t t_sched;           /* ns: when the request was due */
    size_t got;
    char ans[LOAD_ANSWER_SIZE];
    struct load_thread *th;
} load_conn_t;

typedef struct load_thread {
    pthread_t tid;
    unsigned id;
    int ep;
    int tfd;                    /* open loop: fires at the next due time */
    load_conn_t *conn;
    unsigned nconn;
    unsigned *freelist;         /* indexes of idle connections */
    unsigned nfree;
    uint64_t *backlog;          /* open loop: scheduled times not yet sent */
    size_t bl_head, bl_tail, bl_cap;
    uint64_t rng;
    uint64_t seq;               /* requests generated */
    uint64_t *lat;              /* ns per answered request */
    size_t nlat, caplat;
    uint64_t nreq, nerr, nwrong;
    uint64_t actions[A_NACTION], classes[C_NCLASS];
    unsigned long keys_next, keys_end;   /* -K: this thread's range */
    char wrong_example[256];
} load_thread_t;

static uint64_t t_start, t_end;
static struct addrinfo *target;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("policyd_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);

    if (p == NULL)
        die("out of memory");
    return p;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: fast, good enough to pick request types. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/* ---- the numbering shared by the list files and the built-in mix ------- */

/*
 * Entry i of the client list: even i an IPv4 network (i % 4 == 2 a single
 * host), odd i an IPv6 /64.  IPv4 networks are /24s from 11.0.0.0 on, IPv6
 * ones 2001:db8:G3:G4::/64 with non-zero groups, so that the regular
 * expression "^2001:db8:G3:G4:" (postfwd compares IPv6 addresses only as
 * strings) matches exactly the addresses inside.  Clean clients come from
 * 100.64.0.0/10 and 2001:db8:8000::/33, which no list entry touches.
 */
static void list_v4(unsigned i, unsigned *a, unsigned *b, unsigned *c)
{
    unsigned k = i / 2;

    *a = 11 + k / 65536;
    *b = k / 256 % 256;
    *c = k % 256;
}

static void list_v6(unsigned i, unsigned *g3, unsigned *g4)
{
    unsigned k = i / 2;

    *g3 = 0x100 + k / 4096;
    *g4 = 0x1000 + k % 4096;
}

static int generate_lists(const char *dir)
{
    char path[4096];
    FILE *all, *v4, *v6, *snd;
    unsigned i;

    snprintf(path, sizeof(path), "%s/client_block", dir);
    all = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/client_block4", dir);
    v4 = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/client_block6.re", dir);
    v6 = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/sender_block", dir);
    snd = fopen(path, "w");
    if (!all || !v4 || !v6 || !snd)
        die("cannot create list files in %s: %s", dir, strerror(errno));
    fprintf(all, "# generated by policyd_load -G: %u entries\n", opt_list);
    for (i = 0; i < opt_list; i++) {
        unsigned a, b, c, g3, g4;
        if (i % 2 == 0) {
            list_v4(i, &a, &b, &c);
            if (i % 4 == 2) {
                fprintf(all, "%u.%u.%u.77\n", a, b, c);
                fprintf(v4, "%u.%u.%u.77\n", a, b, c);
            } else {
                fprintf(all, "%u.%u.%u.0/24\n", a, b, c);
                fprintf(v4, "%u.%u.%u.0/24\n", a, b, c);
            }
        } else {
            list_v6(i, &g3, &g4);
            fprintf(all, "2001:db8:%x:%x::/64\n", g3, g4);
            fprintf(v6, "^2001:db8:%x:%x:\n", g3, g4);
        }
        fprintf(snd, "spam%u@bulk%u.example\n", i, i % 997);
    }
    if (fclose(all) || fclose(v4) || fclose(v6) || fclose(snd))
        die("cannot write list files in %s", dir);
    return 0;
}

/* ---- requests ------------------------------------------------------------ */

static int req_format(char *out, size_t size, const char *state, const char *client,
                      const char *sender, const char *rcpt, const char *user,
                      unsigned rcpt_count, uint64_t seq)
{
    return snprintf(out, size,
                    "request=smtpd_access_policy\nprotocol_state=%s\n"
                    "protocol_name=ESMTP\nclient_address=%s\n"
                    "client_name=unknown\nreverse_client_name=unknown\n"
                    "helo_name=mx%llu.example.net\nsender=%s\n"
                    "recipient=%s\nrecipient_count=%u\nqueue_id=%s\n"
                    "instance=%llx.%llx.0\nsize=%u\nsasl_method=%s\nsasl_username=%s\n"
                    "sasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n"
                    "encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\n"
                    "encryption_keysize=256\n"
                    "server_address=127.0.0.1\nserver_port=25\n"
                    "policy_context=\ncompatibility_level=3.6\nmail_version=3.7.11\n\n",
                    state, client, (unsigned long long)(seq % 1000), sender, rcpt, rcpt_count,
                    strcmp(state, "RCPT") == 0 ? "" : "4Xk2Lq0Zz1",
                    (unsigned long long)(seq >> 20), (unsigned long long)(seq & 0xfffff),
                    (unsigned)(1000 + seq % 50000), *user ? "plain" : "", user);
}

static void clean_client(load_thread_t *t, char *buf, size_t size)
{
    uint64_t r = rng_next(&t->rng);

    if (r % 10 < 7)
        snprintf(buf, size, "100.%u.%u.%u", 64 + (unsigned)(r >> 8) % 64,
                 (unsigned)(r >> 16) % 256, 1 + (unsigned)(r >> 24) % 254);
    else
        snprintf(buf, size, "2001:db8:%x:%x::%x", 0x8000 + (unsigned)(r >> 8) % 0x8000,
                 (unsigned)(r >> 24) % 0x10000, 1 + (unsigned)(r >> 40) % 0xfffe);
}

/* Build the next built-in request into out; returns its length and class. */
static int req_builtin(load_thread_t *t, char *out, size_t size, enum load_class *cls)
{
    uint64_t r = rng_next(&t->rng), seq = t->seq++;
    unsigned pick = (unsigned)(r % 100), u = (unsigned)((r >> 8) % opt_users);
    unsigned i = (unsigned)((r >> 32) % opt_list);
    char client[64], sender[128], rcpt[128], user[64];

    clean_client(t, client, sizeof(client));
    snprintf(sender, sizeof(sender), "user%u@example%u.org", u, u % 5000);
    snprintf(rcpt, sizeof(rcpt), "rcpt%u@example.com", (unsigned)(r >> 20) % 100000);
    snprintf(user, sizeof(user), "user%u", u);
    if (pick < 45) {
        *cls = C_CLEAN;
        return req_format(out, size, "RCPT", client, sender, rcpt, user, 0, seq);
    }
    if (pick < 70) {
        *cls = C_EOM;
        if (pick < 52)
            snprintf(user, sizeof(user), "hot%u", (unsigned)(r >> 40) % LOAD_HOT_USERS);
        return req_format(out, size, "END-OF-MESSAGE", client, sender, rcpt, user, 1, seq);
    }
    if (pick < 75) {
        *cls = C_HOT;
        snprintf(user, sizeof(user), "hot%u", (unsigned)(r >> 40) % LOAD_HOT_USERS);
        return req_format(out, size, "RCPT", client, sender, rcpt, user, 0, seq);
    }
    if (pick < 85) {
        unsigned a, b, c;
        *cls = C_BLOCK4;
        i &= ~1u;                               /* an IPv4 entry */
        list_v4(i, &a, &b, &c);
        snprintf(client, sizeof(client), "%u.%u.%u.%u", a, b, c,
                 i % 4 == 2 ? 77 : 1 + (unsigned)(r >> 12) % 254);
        return req_format(out, size, "RCPT", client, sender, rcpt, user, 0, seq);
    }
    if (pick < 92) {
        unsigned g3, g4;
        *cls = C_BLOCK6;
        i |= 1u;                                /* an IPv6 entry */
        if (i >= opt_list)
            i -= 2;
        list_v6(i, &g3, &g4);
        snprintf(client, sizeof(client), "2001:db8:%x:%x:%x::%x", g3, g4,
                 1 + (unsigned)(r >> 12) % 0xfffe, 1 + (unsigned)(r >> 44) % 0xfff);
        return req_format(out, size, "RCPT", client, sender, rcpt, user, 0, seq);
    }
    *cls = C_BLOCKSND;
    snprintf(sender, sizeof(sender), "spam%u@bulk%u.example", i, i % 997);
    return req_format(out, size, "RCPT", client, sender, rcpt, "", 0, seq);
}

static enum load_action action_of(const char *ans)
{
    static const struct { const char *p; enum load_action a; } map[] = {
        { "REJECT", A_REJECT }, { "5", A_REJECT }, { "DEFER", A_DEFER },
        { "4", A_DEFER }, { "HOLD", A_HOLD }, { "DUNNO", A_DUNNO }, { "OK", A_OK },
    };
    size_t k;

    if (strncmp(ans, "action=", 7) != 0)
        return A_OTHER;
    ans += 7;
    for (k = 0; k < sizeof(map) / sizeof(map[0]); k++)
        if (strncasecmp(ans, map[k].p, strlen(map[k].p)) == 0)
            return map[k].a;
    return A_OTHER;
}

static bool answer_ok(enum load_class cls, enum load_action a)
{
    switch (cls) {
    case C_CLEAN:
        return a == A_DUNNO || a == A_OK;
    case C_EOM:
    case C_HOT:
        return a == A_DUNNO || a == A_OK || a == A_DEFER || a == A_HOLD;
    case C_BLOCK4:
    case C_BLOCK6:
    case C_BLOCKSND:
        return a == A_REJECT;
    case C_FILE:
        return a != A_OTHER;
    default:
        abort();
    }
}

/* ---- connections --------------------------------------------------------- */

static int conn_open(void)
{
    int fd, one = 1;

    if (opt_unix) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", opt_unix);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
            die("connect %s: %s", opt_unix, strerror(errno));
    } else {
        fd = socket(target->ai_family, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, target->ai_addr, target->ai_addrlen) < 0)
            die("connect %s port %s: %s", opt_host, opt_port, strerror(errno));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* Blocking exchange, for -P. */
static enum load_action exchange(int fd, const char *req, char *ans, size_t size)
{
    size_t len = strlen(req), got = 0;
    ssize_t n;

    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
        die("send: %s", strerror(errno));
    for (;;) {
        n = recv(fd, ans + got, size - 1 - got, 0);
        if (n <= 0)
            die("server closed the connection or failed: %s", n ? strerror(errno) : "EOF");
        got += (size_t)n;
        ans[got] = '\0';
        if (got >= 2 && ans[got - 1] == '\n' && ans[got - 2] == '\n')
            break;
        if (got >= size - 1)
            die("answer too long");
    }
    ans[strcspn(ans, "\n")] = '\0';
    return action_of(ans);
}

static void conn_send(load_thread_t *t, load_conn_t *c, uint64_t sched)
{
    char req[LOAD_REQ_SIZE];
    const char *p = req;
    int len;

    if (opt_keys) {
        char user[32];
        snprintf(user, sizeof(user), "key%lu", t->keys_next++);
        len = req_format(req, sizeof(req), "END-OF-MESSAGE", "100.64.0.1",
                         "sender@example.org", "rcpt@example.com", user, 1, t->seq++);
        c->cls = C_EOM;
    } else if (file_n) {
        size_t k = (size_t)(t->seq++ * (uint64_t)opt_threads + t->id) % file_n;
        p = file_req[k];
        len = (int)file_len[k];
        c->cls = C_FILE;
    } else {
        len = req_builtin(t, req, sizeof(req), &c->cls);
    }
    if (len <= 0 || len >= LOAD_REQ_SIZE)
        die("request too long");
    c->t_sched = sched;
    c->got = 0;
    c->busy = true;
    /* A policy request fits the socket buffer: one send. */
    if (send(c->fd, p, (size_t)len, MSG_NOSIGNAL) != len) {
        t->nerr++;
        die("send: %s", strerror(errno));
    }
}

static void record(load_thread_t *t, load_conn_t *c, uint64_t now)
{
    enum load_action a;

    c->ans[c->got] = '\0';
    a = action_of(c->ans);
    t->actions[a]++;
    t->classes[c->cls]++;
    if (!answer_ok(c->cls, a)) {
        if (t->nwrong++ == 0)
            snprintf(t->wrong_example, sizeof(t->wrong_example), "class %s got %.*s",
                     load_class_names[c->cls], (int)strcspn(c->ans, "\n"), c->ans);
    }
    t->nreq++;
    if (t->nlat == t->caplat) {
        t->caplat = t->caplat ? t->caplat * 2 : 65536;
        t->lat = realloc(t->lat, t->caplat * sizeof(*t->lat));
        if (t->lat == NULL)
            die("out of memory");
    }
    t->lat[t->nlat++] = now - c->t_sched;
    c->busy = false;
}

static bool bl_empty(const load_thread_t *t)
{
    return t->bl_head == t->bl_tail;
}

static void bl_push(load_thread_t *t, uint64_t v)
{
    if (t->bl_tail - t->bl_head == t->bl_cap) {
        size_t ncap = t->bl_cap ? t->bl_cap * 2 : 1024, k;
        uint64_t *nb = xcalloc(ncap, sizeof(*nb));
        for (k = t->bl_head; k < t->bl_tail; k++)
            nb[k - t->bl_head] = t->backlog[k % t->bl_cap];
        free(t->backlog);
        t->backlog = nb;
        t->bl_tail -= t->bl_head;
        t->bl_head = 0;
        t->bl_cap = ncap;
    }
    t->backlog[t->bl_tail++ % t->bl_cap] = v;
}

static uint64_t bl_pop(load_thread_t *t)
{
    return t->backlog[t->bl_head++ % t->bl_cap];
}

static void *thread_main(void *arg)
{
    load_thread_t *t = arg;
    struct epoll_event ev[64];
    double interval = opt_rate > 0 ? 1e9 * opt_threads / opt_rate : 0;
    uint64_t k_sched = 0, next_due = t_start + (uint64_t)(interval * t->id / opt_threads);
    unsigned i;
    bool stopping = false;
    uint64_t armed = 0;

    /* Wake up within microseconds of the due time, not 50 us later. */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    /* Closed loop: every connection starts at once. */
    if (interval == 0) {
        for (i = 0; i < t->nconn; i++) {
            if (opt_keys && t->keys_next >= t->keys_end)
                break;
            conn_send(t, &t->conn[i], now_ns());
        }
    } else {
        for (i = 0; i < t->nconn; i++)
            t->freelist[t->nfree++] = i;
    }
    for (;;) {
        uint64_t now = now_ns();
        int n, timeout = 100, e;
        unsigned busy = 0;

        if (!opt_keys && now >= t_end)
            stopping = true;
        if (interval > 0 && !stopping) {
            while (next_due <= now) {
                if (t->nfree > 0)
                    conn_send(t, &t->conn[t->freelist[--t->nfree]], next_due);
                else
                    bl_push(t, next_due);
                k_sched++;
                next_due = t_start + (uint64_t)(interval * (double)(k_sched * opt_threads + t->id) / opt_threads);
            }
            if (next_due != armed) {
                /* Sleep in epoll until the timer fires: no spinning on a 2-core box. */
                struct itimerspec its;
                memset(&its, 0, sizeof(its));
                its.it_value.tv_sec = (time_t)(next_due / 1000000000u);
                its.it_value.tv_nsec = (long)(next_due % 1000000000u);
                if (timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
                    die("timerfd_settime: %s", strerror(errno));
                armed = next_due;
            }
        }
        for (i = 0; i < t->nconn; i++)
            busy += t->conn[i].busy;
        if (busy == 0 && (stopping || (opt_keys && t->keys_next >= t->keys_end)))
            break;
        if (stopping && now > t_end + 5000000000u) {
            fprintf(stderr, "policyd_load: %u answers still missing 5 s after the end\n", busy);
            t->nerr += busy;
            break;
        }
        n = epoll_wait(t->ep, ev, 64, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (e = 0; e < n; e++) {
            load_conn_t *c = ev[e].data.ptr;
            ssize_t got;

            if (c == NULL) {
                uint64_t expirations;
                if (read(t->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                    die("timerfd read: %s", strerror(errno));
                continue;
            }

            for (;;) {
                got = recv(c->fd, c->ans + c->got, sizeof(c->ans) - 1 - c->got, 0);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (got <= 0)
                    die("server closed a connection (%s) after %llu answers",
                        got ? strerror(errno) : "EOF", (unsigned long long)t->nreq);
                c->got += (size_t)got;
                if (c->got >= sizeof(c->ans) - 1)
                    die("answer too long");
                if (!c->busy)
                    die("answer without a request");
                if (c->got >= 2 && c->ans[c->got - 1] == '\n' && c->ans[c->got - 2] == '\n')
                    break;
            }
            if (!c->busy || c->got < 2 || c->ans[c->got - 1] != '\n' ||
                c->ans[c->got - 2] != '\n')
                continue;
            now = now_ns();
            record(t, c, now);
            if (stopping || (!opt_keys && now >= t_end))
                continue;
            if (interval > 0) {
                if (!bl_empty(t))
                    conn_send(t, c, bl_pop(t));
                else
                    t->freelist[t->nfree++] = (unsigned)(c - t->conn);
            } else if (!opt_keys || t->keys_next < t->keys_end) {
                conn_send(t, c, now);
            }
        }
    }
    /* Scheduled but never sent: they count as not answered. */
    t->nerr += t->bl_tail - t->bl_head;
    return NULL;
}

/* ---- probe mode ----------------------------------------------------------- */

static int probe_one(int fd, const char *what, const char *req, int want, int *bad)
{
    char ans[LOAD_ANSWER_SIZE];
    enum load_action a = exchange(fd, req, ans, sizeof(ans));
    bool ok = want < 0 || (want == A_DEFER ? a == A_DEFER || a == A_HOLD : a == (enum load_action)want)
              || (want == A_DUNNO && a == A_OK);

    if (want >= 0)
        printf("probe %-26s %-6s %s\n", what, ok ? "ok" : "WRONG", ans);
    if (!ok)
        (*bad)++;
    return (int)a;
}

static int probe(void)
{
    int fd = conn_open(), bad = 0;
    char req[LOAD_REQ_SIZE], user[64], what[64];
    unsigned a, b, c, g3, g4, k;

    list_v4(0, &a, &b, &c);
    list_v6(1, &g3, &g4);
    char v4[64], v6[64];
    snprintf(v4, sizeof(v4), "%u.%u.%u.9", a, b, c);
    snprintf(v6, sizeof(v6), "2001:db8:%x:%x::25", g3, g4);
    req_format(req, sizeof(req), "RCPT", v4, "user1@example1.org", "r@example.com", "", 0, 1);
    probe_one(fd, "blocked IPv4 client", req, A_REJECT, &bad);
    req_format(req, sizeof(req), "RCPT", v6, "user1@example1.org", "r@example.com", "", 0, 2);
    probe_one(fd, "blocked IPv6 client", req, A_REJECT, &bad);
    snprintf(what, sizeof(what), "spam%u@bulk%u.example", opt_list - 1, (opt_list - 1) % 997);
    req_format(req, sizeof(req), "RCPT", "100.64.0.1", what, "r@example.com", "", 0, 3);
    probe_one(fd, "blocked sender", req, A_REJECT, &bad);
    req_format(req, sizeof(req), "RCPT", "100.64.0.1", "user1@example1.org", "r@example.com",
               "", 0, 4);
    probe_one(fd, "clean IPv4", req, A_DUNNO, &bad);
    req_format(req, sizeof(req), "RCPT", "2001:db8:8001::1", "user1@example1.org",
               "r@example.com", "", 0, 5);
    probe_one(fd, "clean IPv6", req, A_DUNNO, &bad);

    /*
     * A user with its own name: -L messages pass (RCPT and END-OF-MESSAGE
     * both not refused), the next one is refused at RCPT or, by a server
     * that counts and refuses in the same request, at END-OF-MESSAGE.
     */
    snprintf(user, sizeof(user), "probe%ld.%ld", (long)getpid(), (long)time(NULL));
    for (k = 0; k < opt_limit; k++) {
        int ra, ea;
        req_format(req, sizeof(req), "RCPT", "100.64.0.2", "u@example.org", "r@example.com",
                   user, 0, 10 + 2 * k);
        ra = probe_one(fd, "", req, -1, &bad);
        req_format(req, sizeof(req), "END-OF-MESSAGE", "100.64.0.2", "u@example.org",
                   "r@example.com", user, 1, 11 + 2 * k);
        ea = probe_one(fd, "", req, -1, &bad);
        if (ra != A_DUNNO && ra != A_OK) {
            printf("probe %-26s WRONG  message %u of %u refused at RCPT\n", "user under limit",
                   k + 1, opt_limit);
            bad++;
            break;
        }
        if (ea != A_DUNNO && ea != A_OK) {
            printf("probe %-26s WRONG  message %u of %u refused at END-OF-MESSAGE\n",
                   "user under limit", k + 1, opt_limit);
            bad++;
            break;
        }
    }
    if (k == opt_limit)
        printf("probe %-26s ok     %u messages accepted\n", "user under limit", opt_limit);
    req_format(req, sizeof(req), "RCPT", "100.64.0.2", "u@example.org", "r@example.com", user,
               0, 9999990);
    k = (unsigned)probe_one(fd, "", req, -1, &bad);
    if (k == A_DEFER || k == A_HOLD) {
        printf("probe %-26s ok     message %u refused at RCPT\n", "user over limit",
               opt_limit + 1);
    } else {
        char ans[LOAD_ANSWER_SIZE];
        enum load_action ea;
        req_format(req, sizeof(req), "END-OF-MESSAGE", "100.64.0.2", "u@example.org",
                   "r@example.com", user, 1, 9999991);
        ea = exchange(fd, req, ans, sizeof(ans));
        if (ea == A_DEFER || ea == A_HOLD) {
            printf("probe %-26s ok     message %u refused at END-OF-MESSAGE: %s\n",
                   "user over limit", opt_limit + 1, ans);
        } else {
            printf("probe %-26s WRONG  message %u accepted: %s\n", "user over limit",
                   opt_limit + 1, ans);
            bad++;
        }
    }
    close(fd);
    printf("probes wrong=%d\n", bad);
    return bad ? 1 : 0;
}

/* ---- request file --------------------------------------------------------- */

static void load_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL, cur[LOAD_REQ_SIZE];
    size_t cap = 0, len = 0;
    ssize_t n;

    if (fp == NULL)
        die("cannot open %s: %s", path, strerror(errno));
    for (;;) {
        n = getline(&line, &cap, fp);
        if (n > 0 && line[0] == '#')
            continue;
        if (n <= 0 || strcmp(line, "\n") == 0) {
            if (len > 0) {
                cur[len++] = '\n';
                file_req = realloc(file_req, (file_n + 1) * sizeof(*file_req));
                file_len = realloc(file_len, (file_n + 1) * sizeof(*file_len));
                if (!file_req || !file_len)
                    die("out of memory");
                file_req[file_n] = xcalloc(1, len + 1);
                memcpy(file_req[file_n], cur, len);
                file_len[file_n++] = len;
                len = 0;
            }
            if (n <= 0)
                break;
            continue;
        }
        if (len + (size_t)n + 2 > sizeof(cur))
            die("%s: request %zu longer than %d bytes", path, file_n + 1, LOAD_REQ_SIZE);
        memcpy(cur + len, line, (size_t)n);
        len += (size_t)n;
    }
    free(line);
    fclose(fp);
    if (file_n == 0)
        die("%s: no requests", path);
}

/* ---- main ---------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p)
{
    size_t k;

    if (n == 0)
        return 0;
    k = (size_t)(p * (double)n);
    if (k >= n)
        k = n - 1;
    return (double)v[k] / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: policyd_load [-h HOST] [-p PORT | -U PATH] [-c CONNS] [-t THREADS]\n"
            "                    [-d SECONDS] [-r RATE] [-f FILE] [-l LIST_ENTRIES]\n"
            "                    [-u USERS] [-L LIMIT] [-P | -K COUNT | -G DIR]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    load_thread_t *th;
    const char *gen_dir = NULL;
    bool do_probe = false;
    int ch, i;
    uint64_t nreq = 0, nerr = 0, nwrong = 0, actions[A_NACTION] = { 0 };
    uint64_t classes[C_NCLASS] = { 0 }, *all;
    size_t nall = 0, k;
    double secs;
    char *end;

    while ((ch = getopt(argc, argv, "h:p:U:c:t:d:r:f:l:u:L:PK:G:")) != -1) {
        switch (ch) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = optarg; break;
        case 'U': opt_unix = optarg; break;
        case 'c': opt_conns = atoi(optarg); break;
        case 't': opt_threads = atoi(optarg); break;
        case 'd': opt_seconds = atoi(optarg); break;
        case 'r': opt_rate = strtod(optarg, &end); if (*end) usage(); break;
        case 'f': opt_file = optarg; break;
        case 'l': opt_list = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'u': opt_users = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'L': opt_limit = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'P': do_probe = true; break;
        case 'K': opt_keys = strtoul(optarg, NULL, 10); break;
        case 'G': gen_dir = optarg; break;
        default: usage();
        }
    }
    if (optind != argc || opt_conns < 1 || opt_conns > LOAD_MAX_CONNS || opt_threads < 1 ||
        opt_threads > LOAD_MAX_THREADS || opt_threads > opt_conns || opt_seconds < 1 ||
        opt_list < 2 || opt_users < 1 || opt_limit < 1 || opt_rate < 0)
        usage();
    if (gen_dir)
        return generate_lists(gen_dir);
    if (!opt_unix) {
        struct addrinfo hints;
        if (strcmp(opt_host, "127.0.0.1") != 0 && strcmp(opt_host, "::1") != 0)
            die("loopback only: -h 127.0.0.1 or ::1");
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        if (getaddrinfo(opt_host, opt_port, &hints, &target) != 0)
            die("bad host or port: %s %s", opt_host, opt_port);
    }
    if (do_probe)
        return probe();
    if (opt_file)
        load_file(opt_file);

    th = xcalloc((size_t)opt_threads, sizeof(*th));
    for (i = 0; i < opt_threads; i++) {
        load_thread_t *t = &th[i];
        unsigned c;
        t->id = (unsigned)i;
        t->nconn = (unsigned)(opt_conns / opt_threads + (i < opt_conns % opt_threads));
        t->conn = xcalloc(t->nconn, sizeof(*t->conn));
        t->freelist = xcalloc(t->nconn, sizeof(*t->freelist));
        t->rng = UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)(i + 1) ^ (uint64_t)now_ns();
        if (t->rng == 0)
            t->rng = 1;
        t->keys_next = opt_keys * (unsigned long)i / (unsigned long)opt_threads;
        t->keys_end = opt_keys * (unsigned long)(i + 1) / (unsigned long)opt_threads;
        t->ep = epoll_create1(0);
        if (t->ep < 0)
            die("epoll_create1: %s", strerror(errno));
        t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (t->tfd < 0)
            die("timerfd_create: %s", strerror(errno));
        {
            struct epoll_event tev = { .events = EPOLLIN, .data.ptr = NULL };
            if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->tfd, &tev) < 0)
                die("epoll_ctl: %s", strerror(errno));
        }
        for (c = 0; c < t->nconn; c++) {
            struct epoll_event ev = { .events = EPOLLIN };
            t->conn[c].fd = conn_open();
            t->conn[c].th = t;
            (void)fcntl(t->conn[c].fd, F_SETFL, O_NONBLOCK);
            ev.data.ptr = &t->conn[c];
            if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->conn[c].fd, &ev) < 0)
                die("epoll_ctl: %s", strerror(errno));
        }
    }
    t_start = now_ns();
    t_end = t_start + (uint64_t)opt_seconds * 1000000000u;
    for (i = 0; i < opt_threads; i++)
        if (pthread_create(&th[i].tid, NULL, thread_main, &th[i]) != 0)
            die("pthread_create failed");
    for (i = 0; i < opt_threads; i++)
        pthread_join(th[i].tid, NULL);
    secs = (double)(now_ns() - t_start) / 1e9;
    if (!opt_keys && secs > opt_seconds)
        secs = opt_seconds;     /* the tail after t_end only drains answers */

    for (i = 0; i < opt_threads; i++) {
        nreq += th[i].nreq;
        nerr += th[i].nerr;
        nwrong += th[i].nwrong;
        nall += th[i].nlat;
        for (k = 0; k < A_NACTION; k++)
            actions[k] += th[i].actions[k];
        for (k = 0; k < C_NCLASS; k++)
            classes[k] += th[i].classes[k];
    }
    all = xcalloc(nall + 1, sizeof(*all));
    nall = 0;
    for (i = 0; i < opt_threads; i++) {
        memcpy(all + nall, th[i].lat, th[i].nlat * sizeof(*all));
        nall += th[i].nlat;
    }
    qsort(all, nall, sizeof(*all), cmp_u64);
    printf("mode=%s connections=%d threads=%d target_rate=%.0f seconds=%.2f requests=%llu "
           "rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f "
           "errors=%llu wrong=%llu",
           opt_keys ? "keys" : opt_rate > 0 ? "open" : "closed", opt_conns, opt_threads,
           opt_rate, secs, (unsigned long long)nreq, (double)nreq / secs, pct(all, nall, 0.50),
           pct(all, nall, 0.90), pct(all, nall, 0.99), pct(all, nall, 0.999),
           nall ? (double)all[nall - 1] / 1e6 : 0.0, (unsigned long long)nerr,
           (unsigned long long)nwrong);
    for (k = 0; k < A_NACTION; k++)
        printf(" %s=%llu", load_action_names[k], (unsigned long long)actions[k]);
    for (k = 0; k < C_NCLASS; k++)
        if (classes[k])
            printf(" class_%s=%llu", load_class_names[k], (unsigned long long)classes[k]);
    printf("\n");
    for (i = 0; i < opt_threads; i++)
        if (th[i].nwrong) {
            fprintf(stderr, "policyd_load: wrong answer, e.g. %s\n", th[i].wrong_example);
            break;
        }
    for (i = 0; i < opt_threads; i++) {
        for (k = 0; k < th[i].nconn; k++)
            close(th[i].conn[k].fd);
        close(th[i].ep);
        close(th[i].tfd);
        free(th[i].conn);
        free(th[i].freelist);
        free(th[i].backlog);
        free(th[i].lat);
    }
    free(th);
    free(all);
    if (target)
        freeaddrinfo(target);
    return nwrong || nerr ? 1 : 0;
}
