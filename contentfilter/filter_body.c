/* filter_body: message storage, in memory up to a threshold, then in a file. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "filter_body.h"

void filter_body_init(filter_body_t *b, size_t threshold, const char *tmpdir)
{
    osp_buf_init(&b->mem, threshold);
    b->threshold = threshold;
    b->tmpdir = tmpdir;
    b->fd = -1;
    b->size = 0;
    b->error = 0;
}

void filter_body_close(filter_body_t *b)
{
    osp_buf_close(&b->mem);
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    b->size = 0;
}

void filter_body_reset(filter_body_t *b)
{
    size_t threshold = b->threshold;
    const char *tmpdir = b->tmpdir;

    filter_body_close(b);
    filter_body_init(b, threshold, tmpdir);
}

/* Write all of p or fail with errno. */
static int filter_body__write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int filter_body__fail(filter_body_t *b, int err)
{
    b->error = err ? err : EIO;
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    osp_buf_close(&b->mem);
    osp_buf_init(&b->mem, 0);
    return -1;
}

/* Move the body into an unlinked temporary file. */
static int filter_body__spill(filter_body_t *b)
{
    char path[4096];
    int fd;

    if (osp_snprintf(path, sizeof(path), "%s/osprey-body.XXXXXX", b->tmpdir) >=
        (int)sizeof(path))
        return filter_body__fail(b, ENAMETOOLONG);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return filter_body__fail(b, errno);
    (void)unlink(path);
    b->fd = fd;
    if (filter_body__write_all(fd, b->mem.data ? b->mem.data : "", b->mem.len) < 0)
        return filter_body__fail(b, errno);
    /* Give the memory back: from now on the file is the body. */
    osp_buf_close(&b->mem);
    osp_buf_init(&b->mem, 0);
    return 0;
}

int filter_body_append(filter_body_t *b, const void *p, size_t len)
{
    if (b->error)
        return -1;
    if (len == 0)
        return 0;
    if (b->fd < 0 && b->mem.len + len > b->threshold && filter_body__spill(b) < 0)
        return -1;
    if (b->fd >= 0) {
        if (filter_body__write_all(b->fd, p, len) < 0)
            return filter_body__fail(b, errno);
    } else if (osp_buf_append(&b->mem, p, len) < 0) {
        osp_panic("filter_body_append: memory cap");
    }
    b->size += len;
    return 0;
}

int filter_body_error(const filter_body_t *b)
{
    return b->error;
}

bool filter_body_spilled(const filter_body_t *b)
{
    return b->fd >= 0;
}

ssize_t filter_body_read(const filter_body_t *b, uint64_t off, void *buf, size_t len)
{
    if (b->error) {
        errno = b->error;
        return -1;
    }
    if (off >= b->size)
        return 0;
    if (len > b->size - off)
        len = (size_t)(b->size - off);
    if (b->fd < 0) {
        memcpy(buf, b->mem.data + off, len);
        return (ssize_t)len;
    }
    for (;;) {
        ssize_t n = pread(b->fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

int filter_body_header_end(const filter_body_t *b, size_t max, uint64_t *end_r)
{
    char chunk[8192];
    uint64_t off = 0;
    int state = 1;  /* 1: at the start of a line; 2: after CR at the start */

    while (off < b->size) {
        ssize_t n = filter_body_read(b, off, chunk, sizeof(chunk));
        ssize_t i;
        if (n <= 0)
            return -1;
        for (i = 0; i < n; i++) {
            char c = chunk[i];
            if (state == 2 && c == '\n') {
                *end_r = off + (uint64_t)i + 1;
                return 0;
            }
            if (state == 1 && c == '\r')
                state = 2;
            else
                state = c == '\n' ? 1 : 0;
            if (off + (uint64_t)i >= max)
                return -1;
        }
        off += (uint64_t)n;
    }
    *end_r = b->size;
    return 0;
}
