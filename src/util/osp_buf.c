/* osp_buf: growable, capped, binary-safe buffer. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_mem.h"

void osp_buf_init(osp_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->size = 0;
    b->max = max > OSP_BUF_UNLIMITED ? OSP_BUF_UNLIMITED : max;
}

void osp_buf_close(osp_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->size = 0;
}

void osp_buf_reset(osp_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Make room for need more bytes plus the NUL; -1 if over the cap. */
static int osp_buf_reserve(osp_buf_t *b, size_t need)
{
    size_t want, nsize;

    if (need > b->max - b->len)
        return -1;
    want = b->len + need + 1;
    if (want <= b->size)
        return 0;
    nsize = b->size ? b->size : 64;
    while (nsize < want)
        nsize = nsize > OSP_BUF_UNLIMITED ? want : nsize * 2;
    if (nsize > b->max + 1)
        nsize = b->max + 1;
    b->data = osp_realloc(b->data, nsize);
    b->size = nsize;
    return 0;
}

int osp_buf_append(osp_buf_t *b, const void *p, size_t len)
{
    if (osp_buf_reserve(b, len) < 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int osp_buf_append_str(osp_buf_t *b, const char *s)
{
    return osp_buf_append(b, s, strlen(s));
}

int osp_buf_append_char(osp_buf_t *b, char c)
{
    return osp_buf_append(b, &c, 1);
}

int osp_buf_vprintf(osp_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    char small[256];

    va_copy(ap2, ap);
    n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof(small))
        return osp_buf_append(b, small, (size_t)n);
    if (osp_buf_reserve(b, (size_t)n) < 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int osp_buf_printf(osp_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = osp_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

void osp_buf_consume(osp_buf_t *b, size_t n)
{
    if (n >= b->len) {
        osp_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void osp_buf_truncate(osp_buf_t *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

const char *osp_buf_cstr(const osp_buf_t *b)
{
    return b->data ? b->data : "";
}

char *osp_buf_steal(osp_buf_t *b)
{
    char *d = b->data ? b->data : osp_strdup("");

    b->data = NULL;
    b->len = b->size = 0;
    return d;
}

int osp_buf_append_printable(osp_buf_t *b, const void *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s;
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = p[i];
        int r;

        if (c >= 0x20 && c < 0x7f && c != '\\') {
            r = osp_buf_append_char(b, (char)c);
        } else {
            char esc[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
            r = osp_buf_append(b, esc, sizeof(esc));
        }
        if (r < 0)
            return -1;
    }
    return 0;
}

size_t osp_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);

    if (size) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int osp_snprintf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    return n;
}
