/*
 * filter_body: where a message being filtered is kept.
 *
 * The first `threshold` bytes live in memory.  When a message grows past
 * that, everything is moved to a temporary file in the temporary directory
 * and the memory is released, so a 50 MB message costs at most the
 * threshold in RAM.  The file is unlinked as soon as it is created: it
 * disappears when it is closed or when the process dies, so a crash leaves
 * nothing behind.  It is never fsync'ed: Postfix holds the durable copy
 * until we answer.
 *
 * A write error (disk full, quota) is remembered and every later append is
 * ignored; the caller checks filter_body_error() at the end of DATA and
 * answers 452 4.3.1.  The file is closed (and so freed) at once.
 *
 *   filter_body_init(&b, 1 << 20, "/var/lib/osprey/tmp");
 *   filter_body_append(&b, p, n);          ... during DATA
 *   if (filter_body_error(&b)) -> 452
 *   filter_body_read(&b, off, buf, len);   ... from any thread, once complete
 *   filter_body_close(&b);
 *
 * Writes happen on the calling thread with write(2) into the page cache;
 * reads use pread(2) or memcpy and are safe from several threads at once
 * as long as nobody appends.
 */
#ifndef FILTER_BODY_H
#define FILTER_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "osp_buf.h"

typedef struct filter_body {
    osp_buf_t mem;          /* owned; the message while it is small */
    size_t threshold;       /* bytes kept in memory at most */
    const char *tmpdir;     /* borrowed; must outlive the body */
    int fd;                 /* owned; -1 while in memory or after an error */
    uint64_t size;          /* bytes appended successfully */
    int error;              /* errno of the first failure, 0 if none */
} filter_body_t;

void filter_body_init(filter_body_t *b, size_t threshold, const char *tmpdir);
/* Closes (and so deletes) the temporary file and frees the memory. */
void filter_body_close(filter_body_t *b);
/* Start over with an empty body (same threshold and directory). */
void filter_body_reset(filter_body_t *b);

/* Append len bytes (copied).  0, or -1 once an error has happened. */
int filter_body_append(filter_body_t *b, const void *p, size_t len);
/* errno of the first failure, 0 if none. */
int filter_body_error(const filter_body_t *b);
bool filter_body_spilled(const filter_body_t *b);

/*
 * Copy up to len bytes from offset off into buf.  Returns the number
 * copied (0 at the end), or -1 with errno set.
 */
ssize_t filter_body_read(const filter_body_t *b, uint64_t off, void *buf, size_t len);

/*
 * Find the end of the header section: the offset just after the empty line
 * that ends it, looking at the first `max` bytes at most.  A message
 * without a body (no empty line) gives its size.  Returns 0 and the offset
 * in *end_r, or -1 if the header section is longer than max or a read
 * failed.
 */
int filter_body_header_end(const filter_body_t *b, size_t max, uint64_t *end_r);

#endif
