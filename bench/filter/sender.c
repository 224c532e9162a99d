/*
 * sender: replay prepared messages over SMTP with N parallel connections.
 * A benchmark aid for bench/filter/run.sh (smtp-source sends one file only).
 *
 *   sender HOST PORT SESSIONS COUNT LISTFILE FROM TO
 *
 * LISTFILE names one message file per line, already in SMTP form (CR LF
 * line ends, dot-stuffed, no final "."); message i uses file i mod n.
 * Each session keeps its connection and sends its share with pipelined
 * MAIL/RCPT/DATA.  Prints "sent=N failed=M seconds=S"; exit 1 on failures.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { char *data; size_t len; } msg_t;

static char rbuf[65536];
static size_t rlen;

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One complete reply; returns its code or -1. */
static int read_reply(int fd)
{
    for (;;) {
        char *nl;
        while ((nl = memchr(rbuf, '\n', rlen)) != NULL) {
            size_t ll = (size_t)(nl - rbuf) + 1;
            int code = ll >= 4 ? atoi(rbuf) : -1;
            int last = ll >= 4 && rbuf[3] != '-';
            memmove(rbuf, nl + 1, rlen - ll);
            rlen -= ll;
            if (last)
                return code;
        }
        if (rlen == sizeof(rbuf))
            return -1;
        ssize_t r = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
        if (r <= 0)
            return -1;
        rlen += (size_t)r;
    }
}

static int session(const char *host, int port, const msg_t *msgs, size_t nmsgs, long first,
                   long count, long step, const char *from, const char *to)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, failed = 0;
    char cmd[1024];
    long i;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return (int)((count - first + step - 1) / step);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (read_reply(fd) != 220)
        return (int)((count - first + step - 1) / step);
    write_all(fd, "EHLO bench.test\r\n", 17);
    if (read_reply(fd) != 250)
        return (int)((count - first + step - 1) / step);
    for (i = first; i < count; i += step) {
        const msg_t *m = &msgs[(size_t)i % nmsgs];
        int n = snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, to);
        if (write_all(fd, cmd, (size_t)n) < 0 || read_reply(fd) != 250 ||
            read_reply(fd) / 100 != 2 || read_reply(fd) != 354) {
            failed++;
            write_all(fd, "RSET\r\n", 6);
            if (read_reply(fd) < 0)
                return failed + (int)((count - i) / step);
            continue;
        }
        if (write_all(fd, m->data, m->len) < 0 || write_all(fd, ".\r\n", 3) < 0 ||
            read_reply(fd) != 250)
            failed++;
    }
    write_all(fd, "QUIT\r\n", 6);
    (void)read_reply(fd);
    close(fd);
    return failed;
}

int main(int argc, char **argv)
{
    FILE *lf;
    char line[4096];
    msg_t *msgs = NULL;
    size_t nmsgs = 0, cap = 0;
    long sessions, count, w, failed = 0;
    struct timeval t0, t1;

    if (argc != 8) {
        fprintf(stderr, "usage: sender HOST PORT SESSIONS COUNT LISTFILE FROM TO\n");
        return 2;
    }
    sessions = atol(argv[3]);
    count = atol(argv[4]);
    if ((lf = fopen(argv[5], "r")) == NULL) {
        perror(argv[5]);
        return 2;
    }
    while (fgets(line, sizeof(line), lf)) {
        FILE *f;
        long sz;
        line[strcspn(line, "\r\n")] = '\0';
        if ((f = fopen(line, "rb")) == NULL)
            continue;
        fseek(f, 0, SEEK_END);
        sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (nmsgs == cap) {
            cap = cap ? cap * 2 : 1024;
            msgs = realloc(msgs, cap * sizeof(*msgs));
        }
        msgs[nmsgs].data = malloc((size_t)sz + 1);
        msgs[nmsgs].len = fread(msgs[nmsgs].data, 1, (size_t)sz, f);
        nmsgs++;
        fclose(f);
    }
    fclose(lf);
    if (nmsgs == 0 || sessions < 1 || count < 1) {
        fprintf(stderr, "sender: no messages\n");
        return 2;
    }
    gettimeofday(&t0, NULL);
    for (w = 0; w < sessions; w++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(session(argv[1], atoi(argv[2]), msgs, nmsgs, w, count, sessions, argv[6],
                          argv[7]) > 0 ? 1 : 0);
    }
    for (w = 0; w < sessions; w++) {
        int st;
        if (wait(&st) > 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
            failed++;
    }
    gettimeofday(&t1, NULL);
    printf("sent=%ld failed_sessions=%ld seconds=%.3f files=%zu\n", count, failed,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6, nmsgs);
    return failed ? 1 : 0;
}
