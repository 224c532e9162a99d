/*
 * policyd_load: a load generator for osprey-policyd (or any Postfix policy
 * server).  Like Postfix's smtpd processes, each of N persistent
 * connections sends one request, waits for the answer, and sends the next.
 * Prints requests/s and the latency percentiles seen by the client.
 *
 *   cc -O2 -pthread -o policyd_load bench/policyd/policyd_load.c -lm
 *   ./policyd_load [-c CONNECTIONS] [-d SECONDS] [-b] HOST PORT
 *
 * -b mixes in requests from a blocked client network (203.0.113.0/24) and
 * rotates the SASL user, sender and client over 10,000 values so rate-limit
 * tables and lists see realistic key churn.  Loopback only, by intent: the
 * host must be 127.0.0.1 or ::1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define MAX_SAMPLES (1u << 20)

static const char *host, *port;
static int duration = 5, mix;
static atomic_int stop;
static atomic_ullong total, errors;
static uint32_t *samples;           /* latency in microseconds, sampled */
static atomic_uint nsamples;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(void)
{
    struct addrinfo hints, *res;
    int fd;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void *worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seq = 0;
    char req[1024], buf[512];
    int fd = connect_to();

    if (fd < 0) {
        fprintf(stderr, "connection %u: %s\n", id, strerror(errno));
        return NULL;
    }
    while (!atomic_load(&stop)) {
        unsigned k = (id * 7919u + seq++) % 10000u;
        char addr[64];
        int len;

        if (mix && k % 10 == 0)
            snprintf(addr, sizeof(addr), "203.0.113.%u", k % 256);
        else
            snprintf(addr, sizeof(addr), "192.0.%u.%u", mix ? k / 256 % 256 : 2, k % 256);
        len = snprintf(req, sizeof(req),
                           "request=smtpd_access_policy\nprotocol_state=RCPT\n"
                           "protocol_name=ESMTP\nclient_address=%s\n"
                           "client_name=host%u.example\nreverse_client_name=host%u.example\n"
                           "helo_name=host%u.example\nsender=user%u@example.org\n"
                           "recipient=rcpt%u@example.com\nrecipient_count=0\nqueue_id=\n"
                           "instance=%x.%x\nsize=%u\nsasl_method=%s\nsasl_username=%s%u\n"
                           "server_address=127.0.0.1\nserver_port=25\n"
                           "policy_context=\ncompatibility_level=3.6\n"
                           "mail_version=3.7.11\n\n",
                           addr, k, k, k, k, k, id, seq, 1000 + k,
                           mix ? "plain" : "", mix ? "user" : "", mix ? k : 0);
        double t0 = now_s();
        size_t got = 0;
        ssize_t n;

        if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
            break;
        for (;;) {
            n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0)
                goto out;
            got += (size_t)n;
            if (got >= 2 && buf[got - 1] == '\n' && buf[got - 2] == '\n')
                break;
            if (got >= sizeof(buf) - 1)
                goto out;
        }
        if (strncmp(buf, "action=", 7) != 0)
            atomic_fetch_add(&errors, 1);
        atomic_fetch_add(&total, 1);
        {
            unsigned i = atomic_fetch_add(&nsamples, 1);
            if (i < MAX_SAMPLES)
                samples[i] = (uint32_t)((now_s() - t0) * 1e6);
        }
    }
out:
    close(fd);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int conns = 20, ch, i;
    pthread_t th[MAX_CONNS];
    double t0, t1;
    unsigned n;

    while ((ch = getopt(argc, argv, "c:d:b")) != -1) {
        switch (ch) {
        case 'c':
            conns = atoi(optarg);
            break;
        case 'd':
            duration = atoi(optarg);
            break;
        case 'b':
            mix = 1;
            break;
        default:
            fprintf(stderr, "usage: %s [-c CONNS] [-d SECONDS] [-b] HOST PORT\n", argv[0]);
            return 2;
        }
    }
    if (argc - optind != 2 || conns < 1 || conns > MAX_CONNS || duration < 1) {
        fprintf(stderr, "usage: %s [-c 1-%d] [-d SECONDS] [-b] HOST PORT\n", argv[0],
                MAX_CONNS);
        return 2;
    }
    host = argv[optind];
    port = argv[optind + 1];
    if (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "::1") != 0) {
        fprintf(stderr, "loopback only: 127.0.0.1 or ::1\n");
        return 2;
    }
    samples = calloc(MAX_SAMPLES, sizeof(*samples));
    t0 = now_s();
    for (i = 0; i < conns; i++)
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i);
    sleep((unsigned)duration);
    atomic_store(&stop, 1);
    for (i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    t1 = now_s();
    n = atomic_load(&nsamples);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    qsort(samples, n, sizeof(*samples), cmp_u32);
    printf("connections=%d seconds=%.1f requests=%llu errors=%llu requests/s=%.0f "
           "p50=%.3fms p99=%.3fms max=%.3fms\n",
           conns, t1 - t0, (unsigned long long)atomic_load(&total),
           (unsigned long long)atomic_load(&errors), (double)atomic_load(&total) / (t1 - t0),
           n ? samples[n / 2] / 1e3 : 0.0, n ? samples[(size_t)n * 99 / 100] / 1e3 : 0.0,
           n ? samples[n - 1] / 1e3 : 0.0);
    free(samples);
    return 0;
}
