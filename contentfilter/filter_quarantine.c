/* filter_quarantine: the quarantine interface and the local spool backend. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_auth.h"
#include "filter_quarantine.h"

void filter_quarantine__done(filter_quarantine_req_t *req)
{
    filter_quarantine_t *q = req->backend;

    q->pending--;
    req->done(req, req->status);
}

size_t filter_quarantine__strip(char *msg, size_t len, const char *authserv_id)
{
    size_t hlen = 0, i;
    osp_buf_t hdr;

    /* the header section: up to and including the empty line */
    for (i = 0; i < len; i++)
        if (msg[i] == '\n' && (i + 1 == len || msg[i + 1] == '\n' ||
                                (msg[i + 1] == '\r' && i + 2 < len && msg[i + 2] == '\n'))) {
            hlen = i + 1;
            break;
        }
    if (hlen == 0)
        hlen = len;
    osp_buf_init(&hdr, OSP_BUF_UNLIMITED);
    osp_buf_append(&hdr, msg, hlen);
    if (osp_auth_strip_ours(&hdr, authserv_id) > 0) {
        memcpy(msg, hdr.data, hdr.len);
        memmove(msg + hdr.len, msg + hlen, len - hlen);
        len = len - hlen + hdr.len;
    }
    osp_buf_close(&hdr);
    return len;
}

int filter_quarantine_store(filter_quarantine_t *q, filter_quarantine_req_t *req,
                            filter_quarantine_cb done)
{
    req->status = -1;
    req->error[0] = '\0';
    req->location[0] = '\0';
    req->done = done;
    req->backend = q;
    if (q->ops->store(q, req) < 0)
        return -1;
    q->pending++;
    return 0;
}

void filter_quarantine_free(filter_quarantine_t **qp)
{
    filter_quarantine_t *q = *qp;

    if (q == NULL)
        return;
    if (q->pending)
        osp_panic("filter_quarantine_free: %u requests pending", q->pending);
    q->ops->free(q);
    *qp = NULL;
}

/* ---- spool backend ------------------------------------------------------ */

typedef struct filter_qspool {
    filter_quarantine_t q;          /* first: the interface part */
    char *dir;                      /* owned */
} filter_qspool_t;

static int filter_qspool__write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Runs in the thread pool: write, fsync, rename, fsync the directory. */
static void filter_qspool__work_cb(uv_work_t *work)
{
    filter_quarantine_req_t *req = work->data;
    filter_qspool_t *sp = (filter_qspool_t *)req->backend;
    char tmp[4096], final[4096], chunk[65536];
    osp_buf_t head;
    uint64_t off = 0;
    size_t i;
    int fd, dfd;
    const char *step = "open";

    osp_snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", sp->dir, req->scan_id);
    osp_snprintf(final, sizeof(final), "%s/%s.eml", sp->dir, req->scan_id);
    osp_buf_init(&head, OSP_BUF_UNLIMITED);
    osp_buf_printf(&head, "X-Osprey-Quarantine-Id: %s\r\n", req->scan_id);
    osp_buf_printf(&head, "X-Osprey-Quarantine-Queue-Id: %s\r\n", req->queue_id);
    osp_buf_printf(&head, "X-Osprey-Quarantine-Sender: <%s>\r\n", req->sender);
    for (i = 0; i < req->nrcpt; i++)
        osp_buf_printf(&head, "X-Osprey-Quarantine-Recipient: <%s>\r\n", req->rcpts[i]);
    osp_buf_printf(&head, "X-Osprey-Quarantine-Reason: %s\r\n", req->reason);
    osp_buf_printf(&head, "X-Osprey-Quarantine-Score: %.1f\r\n", req->score);
    osp_buf_append(&head, req->add_headers, req->add_headers_len);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto fail;
    step = "write";
    if (filter_qspool__write_all(fd, head.data, head.len) < 0)
        goto fail_fd;
    if (req->strip_authserv_id) {
        /* the header section without forged fields, then the rest as is */
        uint64_t end;
        osp_buf_t hdr;
        step = "read body";
        if (filter_body_header_end(req->body, FILTER_QUARANTINE_HEADERS_MAX, &end) == 0) {
            osp_buf_init(&hdr, OSP_BUF_UNLIMITED);
            while (off < end) {
                size_t want = end - off < sizeof(chunk) ? (size_t)(end - off) : sizeof(chunk);
                ssize_t n = filter_body_read(req->body, off, chunk, want);
                if (n <= 0)
                    break;
                osp_buf_append(&hdr, chunk, (size_t)n);
                off += (uint64_t)n;
            }
            hdr.len = filter_quarantine__strip(hdr.data, hdr.len, req->strip_authserv_id);
            step = "write";
            if (off != end || filter_qspool__write_all(fd, hdr.data, hdr.len) < 0) {
                osp_buf_close(&hdr);
                goto fail_fd;
            }
            osp_buf_close(&hdr);
        }
    }
    for (;;) {
        ssize_t n = filter_body_read(req->body, off, chunk, sizeof(chunk));
        if (n < 0) {
            step = "read body";
            goto fail_fd;
        }
        if (n == 0)
            break;
        if (filter_qspool__write_all(fd, chunk, (size_t)n) < 0)
            goto fail_fd;
        off += (uint64_t)n;
    }
    step = "fsync";
    if (fsync(fd) < 0)
        goto fail_fd;
    step = "close";
    if (close(fd) < 0) {
        fd = -1;
        goto fail_unlink;
    }
    fd = -1;
    step = "rename";
    if (rename(tmp, final) < 0)
        goto fail_unlink;
    step = "fsync directory";
    dfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        /* The name may not be durable: take it back so a retry starts clean. */
        (void)unlink(final);
        errno = e;
        goto fail;
    }
    close(dfd);
    osp_buf_close(&head);
    req->status = 0;
    osp_strlcpy(req->location, final, sizeof(req->location));
    return;

fail_fd:
    {
        int e = errno;
        close(fd);
        errno = e;
    }
fail_unlink:
    {
        int e = errno;
        (void)unlink(tmp);
        errno = e;
    }
fail:
    osp_snprintf(req->error, sizeof(req->error), "quarantine spool %s: %s", step,
                 strerror(errno));
    osp_buf_close(&head);
    req->status = -1;
}

static void filter_qspool__after_cb(uv_work_t *work, int status)
{
    filter_quarantine_req_t *req = work->data;

    if (status == UV_ECANCELED) {
        req->status = -1;
        osp_strlcpy(req->error, "quarantine cancelled", sizeof(req->error));
    }
    filter_quarantine__done(req);
}

static int filter_qspool__store(filter_quarantine_t *q, filter_quarantine_req_t *req)
{
    int rc;

    req->work.data = req;
    rc = uv_queue_work(q->loop, &req->work, filter_qspool__work_cb, filter_qspool__after_cb);
    if (rc < 0) {
        osp_snprintf(req->error, sizeof(req->error), "quarantine: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void filter_qspool__free(filter_quarantine_t *q)
{
    filter_qspool_t *sp = (filter_qspool_t *)q;

    free(sp->dir);
    free(sp);
}

static const filter_quarantine_ops_t filter_qspool_ops = {
    .name = "spool",
    .store = filter_qspool__store,
    .free = filter_qspool__free,
};

filter_quarantine_t *filter_quarantine_spool_create(uv_loop_t *loop, const char *dir,
                                                    char *err, size_t errsize)
{
    filter_qspool_t *sp;
    struct stat st;

    if (stat(dir, &st) < 0) {
        osp_snprintf(err, errsize, "quarantine directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        osp_snprintf(err, errsize, "quarantine directory %s: not a directory", dir);
        return NULL;
    }
    sp = osp_calloc(1, sizeof(*sp));
    sp->q.ops = &filter_qspool_ops;
    sp->q.loop = loop;
    sp->dir = osp_strdup(dir);
    return &sp->q;
}
