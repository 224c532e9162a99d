/*
 * osp_buf: the one length-carrying, binary-safe buffer type.
 *
 * A buffer grows on demand up to a hard maximum fixed at init.  Every
 * append either fits entirely or fails with -1 and leaves the buffer as it
 * was, so a peer can never make us allocate more than the cap.  The data is
 * always NUL-terminated (the NUL is not counted in len and not in the cap),
 * so a buffer holding text can be passed to C string functions.
 *
 * Buffers are embedded in their owner's struct: osp_buf_init/osp_buf_close.
 */
#ifndef OSP_BUF_H
#define OSP_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct osp_buf {
    char *data;     /* owned; NUL-terminated; NULL until the first append */
    size_t len;     /* bytes in use, excluding the NUL */
    size_t size;    /* bytes allocated */
    size_t max;     /* hard cap on len */
} osp_buf_t;

#define OSP_BUF_UNLIMITED ((size_t)-1 / 2)

void osp_buf_init(osp_buf_t *b, size_t max);
void osp_buf_close(osp_buf_t *b);
/* Forget the contents, keep the allocation. */
void osp_buf_reset(osp_buf_t *b);

/* Append: 0 on success, -1 if the result would exceed the cap. */
int osp_buf_append(osp_buf_t *b, const void *p, size_t len);
int osp_buf_append_str(osp_buf_t *b, const char *s);
int osp_buf_append_char(osp_buf_t *b, char c);
int osp_buf_printf(osp_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int osp_buf_vprintf(osp_buf_t *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Remove the first n bytes (n > len empties the buffer). */
void osp_buf_consume(osp_buf_t *b, size_t n);
/* Shorten to len bytes (no-op if already shorter). */
void osp_buf_truncate(osp_buf_t *b, size_t len);
/* The contents as a C string; never NULL. Borrowed. */
const char *osp_buf_cstr(const osp_buf_t *b);
/* Detach the data: the caller owns the returned string; b is reset empty. */
char *osp_buf_steal(osp_buf_t *b);

/*
 * Append s with every byte outside printable ASCII (and the backslash)
 * written as \xHH, for logging bytes that came from a peer.
 */
int osp_buf_append_printable(osp_buf_t *b, const void *s, size_t len);

/*
 * Bounded string helpers.  Both always NUL-terminate when size > 0 and
 * return the length they tried to create (like strlcpy/snprintf), so
 * truncation is detected with ret >= size.
 */
size_t osp_strlcpy(char *dst, const char *src, size_t size);
int osp_snprintf(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
