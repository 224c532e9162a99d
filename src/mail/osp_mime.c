/* osp_mime: streaming MIME parser, decoders, charsets, content sniffing. */
#include "config.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_buf.h"
#include "osp_html.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_mime.h"
#include "osp_url.h"

#define ARENA_CHUNK         16384
#define ICONV_CACHE         6
#define ICONV_MAX_ERRORS    256     /* then the rest is read as windows-1252 */
#define CHARSET_NAME_MAX    40
#define MAX_SECTIONS        64      /* RFC 2231 continuations per parameter */
#define MAX_PARAMS_HARD     256
#define SNIFF_TEXT_BYTES    512

osp_mime_limits_t osp_mime_limits_default(void)
{
    osp_mime_limits_t l = {
        .max_parts = 1000,
        .max_depth = 20,
        .max_headers = 2000,
        .max_header_len = 16 * 1024,
        .max_header_bytes = 1024 * 1024,
        .max_line = 64 * 1024,
        .max_part_size = 10 * 1024 * 1024,
        .max_total_size = 32 * 1024 * 1024,
        .max_text = 2 * 1024 * 1024,
        .max_urls = 1000,
        .max_links = 1000,
        .max_params = 32,
    };
    return l;
}

/* ---- Anomaly names ------------------------------------------------------ */

static const char *const anomaly_names[OSP_MIME_A_COUNT] = {
    "header_8bit", "nul", "header_malformed", "header_space_colon",
    "header_limit", "header_too_long", "header_unterminated", "mbox_from",
    "bad_encoded_word", "unknown_charset", "charset_mismatch",
    "bad_charset_data", "bad_base64", "bad_qp", "bad_cte",
    "bad_content_type", "dup_content_header", "bad_param", "dup_param",
    "no_boundary", "boundary_not_found", "missing_close", "dup_boundary",
    "epilogue_text", "depth_limit", "part_limit", "part_truncated",
    "total_limit", "text_limit", "url_limit", "line_too_long",
    "encoded_message", "type_mismatch", "executable", "html_invisible",
    "link_mismatch", "url_obfuscated", "zero_width",
};

const char *osp_mime_anomaly_name(uint64_t bit)
{
    int i;

    for (i = 0; i < OSP_MIME_A_COUNT; i++)
        if (bit == (UINT64_C(1) << i))
            return anomaly_names[i];
    return NULL;
}

uint64_t osp_mime_anomaly_from_name(const char *name)
{
    int i;

    for (i = 0; i < OSP_MIME_A_COUNT; i++)
        if (strcmp(anomaly_names[i], name) == 0)
            return UINT64_C(1) << i;
    return 0;
}

int osp_mime_anomaly_format(uint64_t mask, osp_buf_t *out)
{
    size_t start = out->len;
    int i;

    for (i = 0; i < OSP_MIME_A_COUNT; i++) {
        if (!(mask & (UINT64_C(1) << i)))
            continue;
        if ((out->len > start && osp_buf_append_char(out, ' ') < 0)
            || osp_buf_append_str(out, anomaly_names[i]) < 0) {
            osp_buf_truncate(out, start);
            return -1;
        }
    }
    return 0;
}

/* ---- Small helpers ------------------------------------------------------- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool is_wsp(int c)
{
    return c == ' ' || c == '\t';
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool has_8bit(const char *s, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w;

        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080))
            return true;
    }
    for (; i < n; i++)
        if ((unsigned char)s[i] & 0x80)
            return true;
    return false;
}

/* Append the first room bytes that fit; -1 if not everything did. */
static int buf_put(osp_buf_t *b, const void *p, size_t n)
{
    size_t room = b->max - b->len;

    if (n <= room)
        return osp_buf_append(b, p, n);
    if (room > 0)
        (void)osp_buf_append(b, p, room);
    return -1;
}

/* ---- Arena: the message's small strings, freed at once ------------------ */

struct chunk {
    struct chunk *next;
    size_t used, size;
    char data[];
};

struct arena {
    struct chunk *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
    struct chunk *c = a->head;
    void *p;

    n = (n + 7) & ~(size_t)7;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;

        c = osp_malloc(sizeof(*c) + size);
        c->used = 0;
        c->size = size;
        if (size > ARENA_CHUNK && a->head) {
            /* A big block goes behind the current chunk, which stays in use. */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    p = c->data + c->used;
    c->used += n;
    return p;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *arena_lower(struct arena *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    size_t i;

    for (i = 0; i < n; i++)
        d[i] = (char)lower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

static void arena_free(struct arena *a)
{
    while (a->head) {
        struct chunk *n = a->head->next;

        free(a->head);
        a->head = n;
    }
}

/* ---- Charsets ------------------------------------------------------------ */

/* windows-1252 0x80-0x9f (WHATWG: undefined bytes map to C1 controls). */
static const unsigned short cp1252_c1[32] = {
    0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
    0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008d, 0x017d, 0x008f,
    0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
};

static const char replacement[3] = { (char)0xef, (char)0xbf, (char)0xbd };

static size_t utf8_put(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
            return 0;   /* overlong, surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

/*
 * Is s valid UTF-8 without NUL and CR (which need rewriting)?  *has8_r
 * says whether there were non-ASCII bytes.
 */
static bool utf8_clean(const char *s, size_t n, bool *has8_r)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    *has8_r = false;
    while (i < n) {
        size_t k;

        /* Eight bytes at a time while they are ASCII without NUL or CR. */
        while (i + 8 <= n) {
            uint64_t w, z, r;

            memcpy(&w, u + i, 8);
            z = (w - UINT64_C(0x0101010101010101)) & ~w;
            r = ((w ^ UINT64_C(0x0d0d0d0d0d0d0d0d)) - UINT64_C(0x0101010101010101))
                & ~(w ^ UINT64_C(0x0d0d0d0d0d0d0d0d));
            if ((w | z | r) & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (u[i] < 0x80) {
            if (u[i] == 0 || u[i] == '\r')
                return false;
            i++;
            continue;
        }
        *has8_r = true;
        k = utf8_seq(u + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Is s valid UTF-8 (any bytes allowed)? */
static bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        size_t k;

        if (u[i] < 0x80) {
            i++;
            continue;
        }
        k = utf8_seq(u + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/*
 * Copy UTF-8 to out: invalid sequences and NUL become U+FFFD, CR before
 * LF is dropped.  Returns anomaly bits.
 */
static uint64_t utf8_sanitize(const char *s, size_t n, osp_buf_t *out)
{
    const unsigned char *u = (const unsigned char *)s;
    uint64_t an = 0;
    size_t i = 0, run = 0;

    while (i < n) {
        size_t k;

        if (u[i] >= 0x20 && u[i] < 0x80) {
            i++;
            continue;
        }
        if (u[i] >= 0x80) {
            k = utf8_seq(u + i, n - i);
            if (k > 0) {
                i += k;
                continue;
            }
        } else if (u[i] != 0 && u[i] != '\r') {
            i++;
            continue;
        } else if (u[i] == '\r' && !(i + 1 < n && u[i + 1] == '\n')) {
            i++;    /* a bare CR is kept */
            continue;
        }
        if (buf_put(out, s + run, i - run) < 0)
            return an;
        if (u[i] == '\r') {
            i++;
        } else {
            an |= u[i] == 0 ? OSP_MIME_A_NUL : OSP_MIME_A_BAD_CHARSET_DATA;
            if (buf_put(out, replacement, 3) < 0)
                return an;
            i++;
        }
        run = i;
    }
    (void)buf_put(out, s + run, i - run);
    return an;
}

/* windows-1252 to UTF-8 (NUL as U+FFFD, CR before LF dropped). */
static uint64_t cp1252_to_utf8(const char *s, size_t n, osp_buf_t *out)
{
    const unsigned char *u = (const unsigned char *)s;
    uint64_t an = 0;
    size_t i, run = 0;

    for (i = 0; i < n; i++) {
        char tmp[3];
        size_t tl;

        if (u[i] >= 0x20 && u[i] < 0x80)
            continue;
        if (u[i] < 0x80 && u[i] != 0 && !(u[i] == '\r' && i + 1 < n && u[i + 1] == '\n'))
            continue;
        if (buf_put(out, s + run, i - run) < 0)
            return an;
        run = i + 1;
        if (u[i] == '\r')
            continue;
        if (u[i] == 0) {
            an |= OSP_MIME_A_NUL;
            tl = 3;
            memcpy(tmp, replacement, 3);
        } else {
            tl = utf8_put(u[i] < 0xa0 ? cp1252_c1[u[i] - 0x80] : u[i], tmp);
        }
        if (buf_put(out, tmp, tl) < 0)
            return an;
    }
    (void)buf_put(out, s + run, n - run);
    return an;
}

enum cs_kind { CS_UTF8, CS_ASCII, CS_1252, CS_ICONV, CS_UNKNOWN };

#define CSF_LIE   0x1   /* valid non-ASCII UTF-8 under this label is a lie */
#define CSF_ASCII 0x2   /* ASCII bytes mean ASCII characters */

struct cs_alias {
    const char *label;
    enum cs_kind kind;
    const char *iconv_name;
    unsigned flags;
};

/* Labels after lower-casing; WHATWG Encoding Standard where it applies. */
static const struct cs_alias cs_aliases[] = {
    { "utf-8", CS_UTF8, NULL, CSF_ASCII },
    { "utf8", CS_UTF8, NULL, CSF_ASCII },
    { "unicode-1-1-utf-8", CS_UTF8, NULL, CSF_ASCII },
    { "x-unicode20utf8", CS_UTF8, NULL, CSF_ASCII },
    { "us-ascii", CS_ASCII, NULL, CSF_LIE | CSF_ASCII },
    { "ascii", CS_ASCII, NULL, CSF_LIE | CSF_ASCII },
    { "ansi_x3.4-1968", CS_ASCII, NULL, CSF_LIE | CSF_ASCII },
    { "iso646-us", CS_ASCII, NULL, CSF_LIE | CSF_ASCII },
    { "us", CS_ASCII, NULL, CSF_LIE | CSF_ASCII },
    { "iso-8859-1", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "iso8859-1", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "iso_8859-1", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "iso_8859-1:1987", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "latin1", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "latin-1", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "l1", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "cp819", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "ibm819", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "windows-1252", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "cp1252", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "x-cp1252", CS_1252, NULL, CSF_LIE | CSF_ASCII },
    { "ks_c_5601-1987", CS_ICONV, "CP949", CSF_ASCII },
    { "ks_c_5601-1989", CS_ICONV, "CP949", CSF_ASCII },
    { "ks_c_5601", CS_ICONV, "CP949", CSF_ASCII },
    { "ksc5601", CS_ICONV, "CP949", CSF_ASCII },
    { "ksc_5601", CS_ICONV, "CP949", CSF_ASCII },
    { "euc-kr", CS_ICONV, "CP949", CSF_ASCII },
    { "korean", CS_ICONV, "CP949", CSF_ASCII },
    { "windows-949", CS_ICONV, "CP949", CSF_ASCII },
    { "cp949", CS_ICONV, "CP949", CSF_ASCII },
    { "gb2312", CS_ICONV, "GB18030", CSF_ASCII },
    { "gb_2312-80", CS_ICONV, "GB18030", CSF_ASCII },
    { "csgb2312", CS_ICONV, "GB18030", CSF_ASCII },
    { "gbk", CS_ICONV, "GB18030", CSF_ASCII },
    { "x-gbk", CS_ICONV, "GB18030", CSF_ASCII },
    { "cp936", CS_ICONV, "GB18030", CSF_ASCII },
    { "euc-cn", CS_ICONV, "GB18030", CSF_ASCII },
    { "chinese", CS_ICONV, "GB18030", CSF_ASCII },
    { "gb18030", CS_ICONV, "GB18030", CSF_ASCII },
    { "big5", CS_ICONV, "BIG5-HKSCS", CSF_ASCII },
    { "big5-hkscs", CS_ICONV, "BIG5-HKSCS", CSF_ASCII },
    { "cn-big5", CS_ICONV, "BIG5-HKSCS", CSF_ASCII },
    { "x-x-big5", CS_ICONV, "BIG5-HKSCS", CSF_ASCII },
    { "shift_jis", CS_ICONV, "CP932", CSF_ASCII },
    { "shift-jis", CS_ICONV, "CP932", CSF_ASCII },
    { "sjis", CS_ICONV, "CP932", CSF_ASCII },
    { "x-sjis", CS_ICONV, "CP932", CSF_ASCII },
    { "ms_kanji", CS_ICONV, "CP932", CSF_ASCII },
    { "csshiftjis", CS_ICONV, "CP932", CSF_ASCII },
    { "windows-31j", CS_ICONV, "CP932", CSF_ASCII },
    { "cp932", CS_ICONV, "CP932", CSF_ASCII },
    { "euc-jp", CS_ICONV, "EUC-JP", CSF_ASCII },
    { "iso-2022-jp", CS_ICONV, "ISO-2022-JP", CSF_LIE },
    { "iso-2022-kr", CS_ICONV, "ISO-2022-KR", CSF_LIE },
    { "iso-2022-cn", CS_ICONV, "ISO-2022-CN", CSF_LIE },
    { "hz-gb-2312", CS_ICONV, "GB18030", CSF_ASCII },
    { "utf-7", CS_ICONV, "UTF-7", CSF_LIE },
    { "unicode-1-1-utf-7", CS_ICONV, "UTF-7", CSF_LIE },
    { "iso-8859-9", CS_ICONV, "CP1254", CSF_LIE | CSF_ASCII },
    { "latin5", CS_ICONV, "CP1254", CSF_LIE | CSF_ASCII },
    { "iso-8859-11", CS_ICONV, "CP874", CSF_LIE | CSF_ASCII },
    { "tis-620", CS_ICONV, "CP874", CSF_LIE | CSF_ASCII },
    { "windows-874", CS_ICONV, "CP874", CSF_LIE | CSF_ASCII },
    { "x-mac-roman", CS_ICONV, "MACINTOSH", CSF_LIE | CSF_ASCII },
    { "macintosh", CS_ICONV, "MACINTOSH", CSF_LIE | CSF_ASCII },
    { "mac", CS_ICONV, "MACINTOSH", CSF_LIE | CSF_ASCII },
    { "utf-16", CS_ICONV, "UTF-16", 0 },
    { "utf-16le", CS_ICONV, "UTF-16LE", 0 },
    { "utf-16be", CS_ICONV, "UTF-16BE", 0 },
    { "unknown-8bit", CS_UNKNOWN, NULL, CSF_LIE | CSF_ASCII },
    { "unknown", CS_UNKNOWN, NULL, CSF_LIE | CSF_ASCII },
    { "x-unknown", CS_UNKNOWN, NULL, CSF_LIE | CSF_ASCII },
    { "x-user-defined", CS_UNKNOWN, NULL, CSF_LIE | CSF_ASCII },
    { "default", CS_UNKNOWN, NULL, CSF_LIE | CSF_ASCII },
    { "charset", CS_UNKNOWN, NULL, CSF_LIE | CSF_ASCII },
};

struct cs_info {
    enum cs_kind kind;
    unsigned flags;
    char iconv_name[CHARSET_NAME_MAX + 1];
};

static bool prefixed(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Classify a charset label (n bytes, any case, maybe quoted). */
static void cs_resolve(const char *label, size_t n, struct cs_info *ci)
{
    char l[CHARSET_NAME_MAX + 1];
    size_t i, k = 0;

    while (n > 0 && (is_wsp((unsigned char)*label) || *label == '"' || *label == '\''))
        label++, n--;
    while (n > 0 && (is_wsp((unsigned char)label[n - 1]) || label[n - 1] == '"' || label[n - 1] == '\''))
        n--;
    ci->iconv_name[0] = '\0';
    if (n == 0) {
        ci->kind = CS_ASCII;
        ci->flags = CSF_LIE | CSF_ASCII;
        return;
    }
    if (n > CHARSET_NAME_MAX) {
        ci->kind = CS_UNKNOWN;
        ci->flags = CSF_LIE | CSF_ASCII;
        return;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)label[i];

        if (c <= ' ' || c >= 0x7f) {
            ci->kind = CS_UNKNOWN;
            ci->flags = CSF_LIE | CSF_ASCII;
            return;
        }
        l[k++] = (char)lower(c);
    }
    l[k] = '\0';
    for (i = 0; i < sizeof(cs_aliases) / sizeof(cs_aliases[0]); i++) {
        if (strcmp(cs_aliases[i].label, l) == 0) {
            ci->kind = cs_aliases[i].kind;
            ci->flags = cs_aliases[i].flags;
            if (cs_aliases[i].iconv_name)
                memcpy(ci->iconv_name, cs_aliases[i].iconv_name, strlen(cs_aliases[i].iconv_name) + 1);
            return;
        }
    }
    ci->kind = CS_ICONV;
    memcpy(ci->iconv_name, l, k + 1);
    /* Single-byte families are ASCII-compatible; valid UTF-8 there is a lie. */
    if (prefixed(l, "iso-8859-") || prefixed(l, "iso8859-") || prefixed(l, "iso_8859-")
        || prefixed(l, "windows-125") || prefixed(l, "cp125") || prefixed(l, "koi8")
        || prefixed(l, "x-mac") || prefixed(l, "cp8") || prefixed(l, "ibm8"))
        ci->flags = CSF_LIE | CSF_ASCII;
    else if (prefixed(l, "iso-2022-") || prefixed(l, "utf-7"))
        ci->flags = CSF_LIE;
    else if (prefixed(l, "utf-16") || prefixed(l, "utf-32") || prefixed(l, "ucs-")
             || prefixed(l, "utf16") || prefixed(l, "utf32") || prefixed(l, "ebcdic")
             || prefixed(l, "cp037") || prefixed(l, "ibm037") || prefixed(l, "cp500")
             || prefixed(l, "ibm500") || prefixed(l, "cp1026"))
        ci->flags = 0;
    else
        ci->flags = CSF_ASCII;
}

/* A few iconv descriptors kept open: iconv_open costs more than a small conversion. */
struct iconv_slot {
    char name[CHARSET_NAME_MAX + 1];
    iconv_t cd;     /* (iconv_t)-1: iconv does not know the name */
};

struct cs_ctx {
    struct iconv_slot slot[ICONV_CACHE];
    size_t n, next;
};

static void cs_ctx_close(struct cs_ctx *cx)
{
    size_t i;

    for (i = 0; i < cx->n; i++)
        if (cx->slot[i].cd != (iconv_t)-1)
            iconv_close(cx->slot[i].cd);
    cx->n = cx->next = 0;
}

static iconv_t cs_iconv(struct cs_ctx *cx, const char *name)
{
    struct iconv_slot *s;
    size_t i;

    for (i = 0; i < cx->n; i++)
        if (strcmp(cx->slot[i].name, name) == 0)
            return cx->slot[i].cd;
    if (cx->n < ICONV_CACHE) {
        s = &cx->slot[cx->n++];
    } else {
        s = &cx->slot[cx->next];
        cx->next = (cx->next + 1) % ICONV_CACHE;
        if (s->cd != (iconv_t)-1)
            iconv_close(s->cd);
    }
    memcpy(s->name, name, strlen(name) + 1);
    s->cd = iconv_open("UTF-8", name);
    return s->cd;
}

/* Convert with iconv; invalid input becomes U+FFFD. */
static uint64_t iconv_to_utf8(iconv_t cd, const char *s, size_t n, osp_buf_t *out)
{
    char obuf[4096];
    char *ip = (char *)s;
    size_t il = n, errors = 0, start = out->len;
    uint64_t an = 0;

    iconv(cd, NULL, NULL, NULL, NULL);
    while (il > 0) {
        char *op = obuf;
        size_t ol = sizeof(obuf), r;

        r = iconv(cd, &ip, &il, &op, &ol);
        if (buf_put(out, obuf, (size_t)(op - obuf)) < 0)
            return an;
        if (r != (size_t)-1 || errno == E2BIG)
            continue;
        an |= OSP_MIME_A_BAD_CHARSET_DATA;
        if (buf_put(out, replacement, 3) < 0)
            return an;
        if (errno == EINVAL || il == 0)
            break;      /* incomplete sequence at the end */
        ip++;
        il--;
        iconv(cd, NULL, NULL, NULL, NULL);
        if (++errors >= ICONV_MAX_ERRORS) {
            an |= OSP_MIME_A_CHARSET_MISMATCH;
            an |= cp1252_to_utf8(ip, il, out);
            return an;
        }
    }
    {
        char *op = obuf;
        size_t ol = sizeof(obuf);

        if (iconv(cd, NULL, NULL, &op, &ol) != (size_t)-1)
            (void)buf_put(out, obuf, (size_t)(op - obuf));
    }
    /* iconv passes NUL and CRLF through: rewrite them like the rest. */
    if (out->len > start
        && (memchr(out->data + start, '\0', out->len - start) || memchr(out->data + start, '\r', out->len - start))) {
        char *d = out->data + start;
        size_t len = out->len - start, i, k = 0;
        osp_buf_t tmp;

        osp_buf_init(&tmp, out->max);
        for (i = 0; i < len; i++) {
            if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n')
                continue;
            if (d[i] == '\0') {
                an |= OSP_MIME_A_NUL;
                (void)osp_buf_append(&tmp, replacement, 3);
            } else {
                (void)osp_buf_append_char(&tmp, d[i]);
            }
            k++;
        }
        osp_buf_truncate(out, start);
        (void)buf_put(out, tmp.data ? tmp.data : "", tmp.len);
        osp_buf_close(&tmp);
    }
    return an;
}

/*
 * Convert n bytes labelled charset (csn bytes, may be empty) to UTF-8,
 * appended to out.  See the header for the fallbacks.  Returns anomalies.
 */
static uint64_t cs_convert(struct cs_ctx *cx, const char *charset, size_t csn,
                           const char *s, size_t n, osp_buf_t *out)
{
    struct cs_info ci;
    iconv_t cd;

    cs_resolve(charset, csn, &ci);
    if (ci.kind == CS_UTF8)
        return utf8_sanitize(s, n, out);
    if ((ci.flags & CSF_ASCII) && !has_8bit(s, n))
        return utf8_sanitize(s, n, out);
    if (ci.kind == CS_ICONV) {
        cd = cs_iconv(cx, ci.iconv_name);
        if (cd == (iconv_t)-1) {
            ci.kind = CS_UNKNOWN;
            ci.flags = CSF_LIE | CSF_ASCII;
        }
    }
    if (ci.flags & CSF_LIE) {
        if (has_8bit(s, n) && utf8_valid(s, n))
            return utf8_sanitize(s, n, out)
                | (ci.kind == CS_UNKNOWN ? OSP_MIME_A_UNKNOWN_CHARSET : OSP_MIME_A_CHARSET_MISMATCH);
    }
    switch (ci.kind) {
    case CS_ASCII:
        return cp1252_to_utf8(s, n, out) | OSP_MIME_A_CHARSET_MISMATCH;
    case CS_1252:
        return cp1252_to_utf8(s, n, out);
    case CS_UNKNOWN:
        return cp1252_to_utf8(s, n, out) | OSP_MIME_A_UNKNOWN_CHARSET;
    case CS_ICONV:
        return iconv_to_utf8(cs_iconv(cx, ci.iconv_name), s, n, out);
    case CS_UTF8:
        break;
    }
    return utf8_sanitize(s, n, out);
}

uint64_t osp_mime_charset_to_utf8(const char *charset, const void *in, size_t len, osp_buf_t *out)
{
    struct cs_ctx cx;
    uint64_t an;

    memset(&cx, 0, sizeof(cx));
    an = cs_convert(&cx, charset ? charset : "", charset ? strlen(charset) : 0, in, len, out);
    cs_ctx_close(&cx);
    return an;
}

/* ---- Transfer decodings ---------------------------------------------- */

#define B64_PAD 64
#define B64_WSP 65
#define B64_BAD 66

static unsigned char b64_tab[256];
static bool b64_ready;

static void b64_init(void)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char t[256];
    int i;

    if (__atomic_load_n(&b64_ready, __ATOMIC_ACQUIRE))
        return;
    memset(t, B64_BAD, sizeof(t));
    for (i = 0; i < 64; i++)
        t[(unsigned char)alpha[i]] = (unsigned char)i;
    t['='] = B64_PAD;
    t[' '] = t['\t'] = t['\r'] = t['\n'] = t['\f'] = t['\v'] = B64_WSP;
    /* Idempotent: racing threads write the same bytes. */
    memcpy(b64_tab, t, sizeof(t));
    __atomic_store_n(&b64_ready, true, __ATOMIC_RELEASE);
}

struct b64_state {
    uint32_t acc;
    unsigned n;
};

/* Decode n bytes of base64; output stops at out's cap.  Returns anomalies. */
static uint64_t b64_feed(struct b64_state *st, const char *s, size_t n, osp_buf_t *out)
{
    unsigned char o[3 * 256];
    const unsigned char *u = (const unsigned char *)s;
    size_t i, k = 0;
    uint64_t an = 0;

    for (i = 0; i < n; i++) {
        unsigned v;

        if (st->n == 0) {
            /* Fast path: whole quanta of alphabet characters. */
            while (i + 4 <= n) {
                unsigned a = b64_tab[u[i]], b = b64_tab[u[i + 1]];
                unsigned c = b64_tab[u[i + 2]], d = b64_tab[u[i + 3]];

                if ((a | b | c | d) >= 64)
                    break;
                o[k++] = (unsigned char)(a << 2 | b >> 4);
                o[k++] = (unsigned char)(b << 4 | c >> 2);
                o[k++] = (unsigned char)(c << 6 | d);
                i += 4;
                if (k + 3 > sizeof(o)) {
                    if (buf_put(out, o, k) < 0)
                        return an;
                    k = 0;
                }
            }
            if (i >= n)
                break;
        }
        v = b64_tab[u[i]];
        if (v < 64) {
            st->acc = st->acc << 6 | v;
            if (++st->n == 4) {
                o[k++] = (unsigned char)(st->acc >> 16);
                o[k++] = (unsigned char)(st->acc >> 8);
                o[k++] = (unsigned char)st->acc;
                st->n = 0;
                st->acc = 0;
                if (k == sizeof(o)) {
                    if (buf_put(out, o, k) < 0)
                        return an;
                    k = 0;
                }
            }
        } else if (v == B64_PAD) {
            /* End of a quantum; a padded end is not the end of the data. */
            if (st->n == 2) {
                o[k++] = (unsigned char)(st->acc >> 4);
            } else if (st->n == 3) {
                o[k++] = (unsigned char)(st->acc >> 10);
                o[k++] = (unsigned char)(st->acc >> 2);
            } else if (st->n == 1) {
                an |= OSP_MIME_A_BAD_BASE64;
            }
            st->n = 0;
            st->acc = 0;
            if (k + 3 > sizeof(o)) {
                if (buf_put(out, o, k) < 0)
                    return an;
                k = 0;
            }
        } else if (v == B64_BAD) {
            an |= OSP_MIME_A_BAD_BASE64;
        }
    }
    (void)buf_put(out, o, k);
    return an;
}

/* End of base64 data: keep the bytes of an unpadded final quantum. */
static uint64_t b64_end(struct b64_state *st, osp_buf_t *out)
{
    unsigned char o[2];
    uint64_t an = 0;

    if (st->n == 2) {
        o[0] = (unsigned char)(st->acc >> 4);
        (void)buf_put(out, o, 1);
    } else if (st->n == 3) {
        o[0] = (unsigned char)(st->acc >> 10);
        o[1] = (unsigned char)(st->acc >> 2);
        (void)buf_put(out, o, 2);
    } else if (st->n == 1) {
        an = OSP_MIME_A_BAD_BASE64;
    }
    st->n = 0;
    st->acc = 0;
    return an;
}

uint64_t osp_mime_base64_decode(const char *in, size_t len, osp_buf_t *out)
{
    struct b64_state st = { 0, 0 };
    uint64_t an;

    b64_init();
    an = b64_feed(&st, in, len, out);
    return an | b64_end(&st, out);
}

/*
 * Quoted-printable, one line (or a piece of a long line) at a time.  With
 * end set the line ends after s: trailing blanks go and a final '=' is a
 * soft break (*soft).  Otherwise an escape cut at the end of s is left
 * unconsumed; the return value is the bytes consumed.
 */
static size_t qp_core(const char *s, size_t n, bool end, osp_buf_t *out, uint64_t *an_r, bool *soft_r)
{
    size_t e = n, i = 0;

    *soft_r = false;
    if (end)
        while (e > 0 && is_wsp((unsigned char)s[e - 1]))
            e--;
    while (i < e) {
        const char *eq = memchr(s + i, '=', e - i);
        size_t seg = eq ? (size_t)(eq - s) - i : e - i;
        int a, b;

        if (seg > 0 && buf_put(out, s + i, seg) < 0)
            return n;
        i += seg;
        if (eq == NULL)
            break;
        if (end && i + 1 == e) {
            *soft_r = true;
            return n;
        }
        if (!end && i + 2 >= e)
            return i;   /* "=" or "=X" at the end of a piece: wait for more */
        if (i + 2 < e && (a = hexval((unsigned char)s[i + 1])) >= 0
            && (b = hexval((unsigned char)s[i + 2])) >= 0) {
            char c = (char)(a * 16 + b);

            if (buf_put(out, &c, 1) < 0)
                return n;
            i += 3;
        } else {
            *an_r |= OSP_MIME_A_BAD_QP;
            if (buf_put(out, "=", 1) < 0)
                return n;
            i++;
        }
    }
    return end ? n : e;
}

struct qp_state {
    char carry[2];
    size_t ncarry;
};

static uint64_t qp_seg(struct qp_state *st, const char *s, size_t n, bool end, osp_buf_t *out, bool *soft_r)
{
    uint64_t an = 0;
    size_t used;

    *soft_r = false;
    if (st->ncarry > 0) {
        char tmp[4];
        size_t k = st->ncarry, take = n < 3 - k ? n : 3 - k;

        memcpy(tmp, st->carry, k);
        memcpy(tmp + k, s, take);
        used = qp_core(tmp, k + take, end && take == n, out, &an, soft_r);
        st->ncarry = 0;
        if (used < k + take) {
            /* Still incomplete (only possible when s was tiny). */
            st->ncarry = k + take - used;
            memcpy(st->carry, tmp + used, st->ncarry);
            return an;
        }
        s += take;
        n -= take;
        if (n == 0)
            return an;
    }
    used = qp_core(s, n, end, out, &an, soft_r);
    if (used < n) {
        st->ncarry = n - used;
        memcpy(st->carry, s + used, st->ncarry);
    }
    return an;
}

/* An incomplete escape at the end of the data is kept literally. */
static uint64_t qp_end(struct qp_state *st, osp_buf_t *out)
{
    uint64_t an = 0;

    if (st->ncarry > 0) {
        an = OSP_MIME_A_BAD_QP;
        (void)buf_put(out, st->carry, st->ncarry);
        st->ncarry = 0;
    }
    return an;
}

uint64_t osp_mime_qp_decode(const char *in, size_t len, osp_buf_t *out)
{
    struct qp_state st = { { 0, 0 }, 0 };
    uint64_t an = 0;
    size_t i = 0;

    while (i < len) {
        const char *nl = memchr(in + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - in) : len, ll = e - i;
        bool soft;

        if (ll > 0 && in[e - 1] == '\r' && nl)
            ll--;
        an |= qp_seg(&st, in + i, ll, true, out, &soft);
        if (nl && !soft)
            (void)buf_put(out, "\n", 1);
        i = nl ? e + 1 : len;
    }
    return an | qp_end(&st, out);
}

/* ---- RFC 2047 encoded words ------------------------------------------- */

/* Append plain header text: UTF-8 if valid, else windows-1252. */
static uint64_t header_plain(const char *s, size_t n, osp_buf_t *out)
{
    if (!has_8bit(s, n) || utf8_valid(s, n))
        return utf8_sanitize(s, n, out);
    return cp1252_to_utf8(s, n, out);
}

/* Convert the pending encoded-word bytes; CR and LF become spaces. */
static uint64_t ew_flush(struct cs_ctx *cx, const char *cs, size_t csn, osp_buf_t *bytes, osp_buf_t *out)
{
    size_t start = out->len, i;
    uint64_t an;

    an = cs_convert(cx, cs, csn, bytes->data ? bytes->data : "", bytes->len, out);
    for (i = start; i < out->len; i++)
        if (out->data[i] == '\r' || out->data[i] == '\n')
            out->data[i] = ' ';
    osp_buf_reset(bytes);
    return an & ~OSP_MIME_A_CHARSET_MISMATCH;
}

static bool ew_charset_char(unsigned char c)
{
    return c > ' ' && c < 0x7f && c != '?' && c != '"' && c != '(' && c != ')'
        && c != ',' && c != ';' && c != '<' && c != '>' && c != '@';
}

/*
 * Decode the unfolded header value s (n bytes), appending UTF-8 to out;
 * bytes is scratch space.  Returns anomalies.
 */
static uint64_t decode_words(struct cs_ctx *cx, const char *s, size_t n, osp_buf_t *out, osp_buf_t *bytes)
{
    size_t i = 0, plain = 0, last_end = (size_t)-1, cs_off = 0, cs_len = 0;
    bool pending = false;
    uint64_t an = 0;

    osp_buf_reset(bytes);
    while (i + 1 < n) {
        const char *q = memchr(s + i, '=', n - i - 1);
        size_t p, cs0, cs1, t0, t1, k, csn;
        char enc;

        if (q == NULL)
            break;
        p = (size_t)(q - s);
        if (s[p + 1] != '?') {
            i = p + 1;
            continue;
        }
        /* =?charset?X?text?= */
        cs0 = p + 2;
        for (cs1 = cs0; cs1 < n && ew_charset_char((unsigned char)s[cs1]); cs1++)
            ;
        enc = cs1 + 1 < n ? (char)lower((unsigned char)s[cs1 + 1]) : 0;
        if (cs1 == cs0 || cs1 + 2 >= n || s[cs1] != '?' || s[cs1 + 2] != '?'
            || (enc != 'b' && enc != 'q')) {
            if (cs1 > cs0 && cs1 < n && s[cs1] == '?' && lower((unsigned char)s[cs0]) >= 'a'
                && lower((unsigned char)s[cs0]) <= 'z')
                an |= OSP_MIME_A_BAD_ENCODED_WORD;
            i = p + 2;
            continue;
        }
        t0 = cs1 + 3;
        for (t1 = t0; t1 < n && s[t1] != '?' && (unsigned char)s[t1] > ' ' && s[t1] != 0x7f; t1++)
            ;
        if (t1 + 1 >= n || s[t1] != '?' || s[t1 + 1] != '=') {
            an |= OSP_MIME_A_BAD_ENCODED_WORD;
            i = p + 2;
            continue;
        }
        /* A valid word.  Blanks between two adjacent words vanish. */
        if (p > plain) {
            bool adjacent = false;

            if (last_end == plain) {
                for (k = plain; k < p && is_wsp((unsigned char)s[k]); k++)
                    ;
                adjacent = k == p;
            }
            if (!adjacent) {
                if (pending) {
                    an |= ew_flush(cx, s + cs_off, cs_len, bytes, out);
                    pending = false;
                }
                an |= header_plain(s + plain, p - plain, out);
            }
        }
        csn = cs1 - cs0;
        {
            const char *star = memchr(s + cs0, '*', csn);    /* RFC 2231 language */

            if (star)
                csn = (size_t)(star - (s + cs0));
        }
        if (pending && (csn != cs_len || strncasecmp(s + cs0, s + cs_off, csn) != 0)) {
            an |= ew_flush(cx, s + cs_off, cs_len, bytes, out);
            pending = false;
        }
        cs_off = cs0;
        cs_len = csn;
        pending = true;
        if (enc == 'b') {
            struct b64_state st = { 0, 0 };

            b64_init();
            (void)b64_feed(&st, s + t0, t1 - t0, bytes);
            (void)b64_end(&st, bytes);
        } else {
            for (k = t0; k < t1; k++) {
                int a, b;
                char c = s[k];

                if (c == '_') {
                    c = ' ';
                } else if (c == '=' && k + 2 < t1 && (a = hexval((unsigned char)s[k + 1])) >= 0
                           && (b = hexval((unsigned char)s[k + 2])) >= 0) {
                    c = (char)(a * 16 + b);
                    k += 2;
                }
                (void)osp_buf_append_char(bytes, c);
            }
        }
        i = plain = last_end = t1 + 2;
    }
    if (pending)
        an |= ew_flush(cx, s + cs_off, cs_len, bytes, out);
    if (plain < n)
        an |= header_plain(s + plain, n - plain, out);
    return an;
}

uint64_t osp_mime_decode_header(const char *s, size_t len, osp_buf_t *out)
{
    struct cs_ctx cx;
    osp_buf_t bytes;
    uint64_t an;

    memset(&cx, 0, sizeof(cx));
    osp_buf_init(&bytes, len + 16);
    an = decode_words(&cx, s, len, out, &bytes);
    osp_buf_close(&bytes);
    cs_ctx_close(&cx);
    return an;
}

/* ---- Parameters (RFC 2045, RFC 2231) ------------------------------------- */

/* RFC 2045 token characters. */
static bool is_token(unsigned char c)
{
    return c > ' ' && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

static size_t skip_comment(const char *s, size_t n, size_t i)
{
    int depth = 0;

    for (; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n)
            i++;
        else if (s[i] == '(')
            depth++;
        else if (s[i] == ')' && --depth == 0)
            return i + 1;
    }
    return n;
}

/* Does a "token=" start after the blanks at s[i]?  (A ';' was left out.) */
static bool param_follows(const char *s, size_t n, size_t i)
{
    size_t k;

    while (i < n && is_wsp((unsigned char)s[i]))
        i++;
    for (k = i; k < n && (is_token((unsigned char)s[k]) || s[k] == '*'); k++)
        ;
    while (k < n && is_wsp((unsigned char)s[k]))
        k++;
    return k > i && k < n && s[k] == '=';
}

struct rawparam {
    const char *name;   /* base name, without "*N*" */
    size_t nlen;
    int section;        /* RFC 2231 section number, -1 if none */
    bool ext;           /* charset'lang'%XX encoded */
    size_t voff, vlen;  /* value (unquoted) in the values buffer */
};

/* Collect "name=value" pairs from s[i..n). */
static size_t params_scan(const char *s, size_t n, size_t i, struct rawparam *rp, size_t max,
                          osp_buf_t *vals, uint64_t *an)
{
    size_t np = 0;

    osp_buf_reset(vals);
    while (i < n) {
        size_t ns, ne, voff, k;

        while (i < n && (is_wsp((unsigned char)s[i]) || s[i] == ';'))
            i++;
        if (i < n && s[i] == '(') {
            i = skip_comment(s, n, i);
            continue;
        }
        if (i >= n)
            break;
        ns = i;
        while (i < n && s[i] != '=' && s[i] != ';' && s[i] != '"' && !is_wsp((unsigned char)s[i]))
            i++;
        ne = i;
        while (i < n && is_wsp((unsigned char)s[i]))
            i++;
        if (ne == ns || i >= n || s[i] != '=') {
            /* Junk: skip a quoted string or one character. */
            *an |= OSP_MIME_A_BAD_PARAM;
            if (i < n && s[i] == '"') {
                for (i++; i < n && s[i] != '"'; i++)
                    if (s[i] == '\\')
                        i++;
                i++;
            } else if (ne == ns) {
                i++;
            }
            continue;
        }
        i++;
        while (i < n && is_wsp((unsigned char)s[i]))
            i++;
        voff = vals->len;
        if (i < n && s[i] == '"') {
            size_t run = ++i;

            while (i < n && s[i] != '"') {
                if (s[i] == '\\' && i + 1 < n) {
                    (void)osp_buf_append(vals, s + run, i - run);
                    run = ++i;
                }
                i++;
            }
            (void)osp_buf_append(vals, s + run, i - run);
            if (i >= n)
                *an |= OSP_MIME_A_BAD_PARAM;
            else
                i++;
        } else {
            size_t vs = i, ve;

            while (i < n && s[i] != ';' && !(is_wsp((unsigned char)s[i]) && param_follows(s, n, i)))
                i++;
            ve = i;
            while (ve > vs && is_wsp((unsigned char)s[ve - 1]))
                ve--;
            /* A trailing " (comment)". */
            if (ve > vs && s[ve - 1] == ')') {
                for (k = vs; k < ve; k++) {
                    if (s[k] == '(' && k > vs && is_wsp((unsigned char)s[k - 1])) {
                        ve = k;
                        while (ve > vs && is_wsp((unsigned char)s[ve - 1]))
                            ve--;
                        break;
                    }
                }
            }
            (void)osp_buf_append(vals, s + vs, ve - vs);
        }
        if (np >= max) {
            *an |= OSP_MIME_A_BAD_PARAM;
            continue;
        }
        /* RFC 2231: name*, name*N, name*N* */
        {
            struct rawparam *r = &rp[np++];
            const char *star = memchr(s + ns, '*', ne - ns);

            r->name = s + ns;
            r->nlen = ne - ns;
            r->section = -1;
            r->ext = false;
            r->voff = voff;
            r->vlen = vals->len - voff;
            if (star) {
                size_t sp = (size_t)(star - s) + 1, num = 0, digits = 0;

                while (sp < ne && s[sp] >= '0' && s[sp] <= '9' && digits < 6) {
                    num = num * 10 + (size_t)(s[sp] - '0');
                    sp++;
                    digits++;
                }
                if (sp < ne && s[sp] == '*' && sp + 1 == ne) {
                    r->ext = true;
                    sp++;
                }
                if (sp == ne) {
                    r->nlen = (size_t)(star - (s + ns));
                    r->section = digits ? (int)num : -1;
                    if (digits == 0)
                        r->ext = true;
                }
            }
        }
    }
    return np;
}

static void pct_decode(const char *s, size_t n, osp_buf_t *out)
{
    size_t i, run = 0;

    for (i = 0; i < n; i++) {
        int a, b;

        if (s[i] != '%' || i + 2 >= n)
            continue;
        if ((a = hexval((unsigned char)s[i + 1])) < 0 || (b = hexval((unsigned char)s[i + 2])) < 0)
            continue;
        (void)osp_buf_append(out, s + run, i - run);
        (void)osp_buf_append_char(out, (char)(a * 16 + b));
        i += 2;
        run = i + 1;
    }
    (void)osp_buf_append(out, s + run, n - run);
}

/* ---- Content sniffing ---------------------------------------------------- */

static bool ci_prefix(const unsigned char *d, size_t n, const char *lit)
{
    size_t l = strlen(lit);

    return n >= l && strncasecmp((const char *)d, lit, l) == 0;
}

static const char *zip_kind(const unsigned char *d, size_t len)
{
    size_t n = len < 65536 ? len : 65536;

#define HAS(lit) (memmem(d, n, lit, sizeof(lit) - 1) != NULL)
    if (HAS("word/document.xml") || HAS("word/_rels"))
        return "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    if (HAS("xl/workbook") || HAS("xl/_rels"))
        return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    if (HAS("ppt/presentation") || HAS("ppt/_rels"))
        return "application/vnd.openxmlformats-officedocument.presentationml.presentation";
    if (n >= 30 + 43 && memcmp(d + 30, "mimetypeapplication/vnd.oasis.opendocument.", 43) == 0)
        return "application/vnd.oasis.opendocument";
    if (HAS("META-INF/MANIFEST.MF"))
        return "application/java-archive";
#undef HAS
    return "application/zip";
}

static const char *const html_starts[] = {
    "<!doctype html", "<html", "<head", "<script", "<iframe", "<h1", "<div", "<font",
    "<table", "<a", "<style", "<title", "<b", "<body", "<br", "<p", "<!--", "<meta",
    "<form", "<img", "<span", "<center", "<link", NULL,
};

const char *osp_mime_sniff(const void *data, size_t len)
{
    const unsigned char *d = data;
    size_t i, n, ctl = 0;

    if (len == 0)
        return "application/x-empty";
#define M(off, lit) (len >= (size_t)(off) + sizeof(lit) - 1 && memcmp(d + (off), lit, sizeof(lit) - 1) == 0)
    if (M(0, "MZ"))
        return "application/x-dosexec";
    if (M(0, "\x7f" "ELF"))
        return "application/x-executable";
    if (M(0, "\xfe\xed\xfa\xce") || M(0, "\xfe\xed\xfa\xcf") || M(0, "\xce\xfa\xed\xfe")
        || M(0, "\xcf\xfa\xed\xfe"))
        return "application/x-mach-binary";
    if (M(0, "PK\x03\x04"))
        return zip_kind(d, len);
    if (M(0, "PK\x05\x06") || M(0, "PK\x07\x08"))
        return "application/zip";
    if (memmem(d, len < 1024 ? len : 1024, "%PDF-", 5))
        return "application/pdf";
    if (M(0, "GIF87a") || M(0, "GIF89a"))
        return "image/gif";
    if (M(0, "\x89PNG\r\n\x1a\n"))
        return "image/png";
    if (M(0, "\xff\xd8\xff"))
        return "image/jpeg";
    if (M(0, "BM") && len >= 26 && d[6] == 0 && d[7] == 0 && d[8] == 0 && d[9] == 0)
        return "image/bmp";
    if (M(0, "II*\0") || M(0, "MM\0*"))
        return "image/tiff";
    if (M(0, "Rar!\x1a\x07"))
        return "application/x-rar";
    if (M(0, "7z\xbc\xaf\x27\x1c"))
        return "application/x-7z-compressed";
    if (M(0, "\x1f\x8b"))
        return "application/gzip";
    if (M(0, "BZh") && len >= 10 && d[3] >= '1' && d[3] <= '9' && memcmp(d + 4, "1AY&SY", 6) == 0)
        return "application/x-bzip2";
    if (M(0, "\xfd" "7zXZ\0"))
        return "application/x-xz";
    if (M(0, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"))
        return "application/x-ole-storage";
    if (M(0, "{\\rtf"))
        return "application/rtf";
    if (M(0, "MSCF\0\0\0\0"))
        return "application/vnd.ms-cab-compressed";
    if (M(0, "\x4c\x00\x00\x00\x01\x14\x02\x00"))
        return "application/x-ms-shortcut";
    if (M(0x8001, "CD001"))
        return "application/x-iso9660-image";
    if (M(0, "#!"))
        return "text/x-script";
    if (M(0, "\xff\xfe") || M(0, "\xfe\xff"))
        return "text/plain";    /* UTF-16 byte order mark */
#undef M
    i = 0;
    if (len >= 3 && memcmp(d, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n' || d[i] == '\f'))
        i++;
    if (i < len && d[i] == '<') {
        const unsigned char *t = d + i;
        size_t tn = len - i, k;

        if (ci_prefix(t, tn, "<?xml")) {
            if (memmem(t, tn < 1024 ? tn : 1024, "<svg", 4))
                return "image/svg+xml";
            return "application/xml";
        }
        if (ci_prefix(t, tn, "<svg"))
            return "image/svg+xml";
        for (k = 0; html_starts[k]; k++) {
            size_t l = strlen(html_starts[k]);

            if (ci_prefix(t, tn, html_starts[k])
                && (strcmp(html_starts[k], "<!--") == 0 || tn == l || t[l] == ' ' || t[l] == '>'
                    || t[l] == '\t' || t[l] == '\n' || t[l] == '\r'))
                return "text/html";
        }
    }
    n = len < SNIFF_TEXT_BYTES ? len : SNIFF_TEXT_BYTES;
    for (i = 0; i < n; i++) {
        if (d[i] == 0)
            return "application/octet-stream";
        if (d[i] < 0x20 && d[i] != '\t' && d[i] != '\n' && d[i] != '\r' && d[i] != '\f' && d[i] != 0x1b)
            ctl++;
    }
    return ctl * 50 > n ? "application/octet-stream" : "text/plain";
}

/* Families for comparing sniffed content with names and declared types. */
enum family { F_NONE, F_EXE, F_ZIP, F_PDF, F_IMAGE, F_RAR, F_7Z, F_GZIP, F_OLE, F_RTF,
              F_HTML, F_TEXT, F_ISO, F_CAB };

static enum family sniff_family(const char *t)
{
    if (strcmp(t, "application/x-dosexec") == 0 || strcmp(t, "application/x-executable") == 0
        || strcmp(t, "application/x-mach-binary") == 0)
        return F_EXE;
    if (strcmp(t, "application/zip") == 0 || prefixed(t, "application/vnd.openxml")
        || prefixed(t, "application/vnd.oasis") || strcmp(t, "application/java-archive") == 0)
        return F_ZIP;
    if (strcmp(t, "application/pdf") == 0)
        return F_PDF;
    if (prefixed(t, "image/") && strcmp(t, "image/svg+xml") != 0)
        return F_IMAGE;
    if (strcmp(t, "application/x-rar") == 0)
        return F_RAR;
    if (strcmp(t, "application/x-7z-compressed") == 0)
        return F_7Z;
    if (strcmp(t, "application/gzip") == 0)
        return F_GZIP;
    if (strcmp(t, "application/x-ole-storage") == 0)
        return F_OLE;
    if (strcmp(t, "application/rtf") == 0)
        return F_RTF;
    if (strcmp(t, "text/html") == 0)
        return F_HTML;
    if (strcmp(t, "application/x-iso9660-image") == 0)
        return F_ISO;
    if (strcmp(t, "application/vnd.ms-cab-compressed") == 0)
        return F_CAB;
    return F_NONE;  /* text, octet-stream, empty, ...: no claim */
}

#define FB(f) (1u << (f))

struct ext_family {
    const char *ext;
    unsigned families;
};

static const struct ext_family ext_families[] = {
    { "pdf", FB(F_PDF) },
    { "doc", FB(F_OLE) | FB(F_RTF) | FB(F_HTML) | FB(F_ZIP) },
    { "dot", FB(F_OLE) | FB(F_RTF) },
    { "xls", FB(F_OLE) | FB(F_HTML) | FB(F_ZIP) },
    { "ppt", FB(F_OLE) },
    { "msg", FB(F_OLE) },
    { "msi", FB(F_OLE) },
    { "docx", FB(F_ZIP) }, { "docm", FB(F_ZIP) }, { "xlsx", FB(F_ZIP) },
    { "xlsm", FB(F_ZIP) }, { "pptx", FB(F_ZIP) }, { "pptm", FB(F_ZIP) },
    { "odt", FB(F_ZIP) }, { "ods", FB(F_ZIP) }, { "odp", FB(F_ZIP) },
    { "zip", FB(F_ZIP) }, { "jar", FB(F_ZIP) }, { "apk", FB(F_ZIP) },
    { "jpg", FB(F_IMAGE) }, { "jpeg", FB(F_IMAGE) }, { "png", FB(F_IMAGE) },
    { "gif", FB(F_IMAGE) }, { "bmp", FB(F_IMAGE) }, { "tif", FB(F_IMAGE) },
    { "tiff", FB(F_IMAGE) },
    { "exe", FB(F_EXE) }, { "dll", FB(F_EXE) }, { "scr", FB(F_EXE) },
    { "com", FB(F_EXE) }, { "pif", FB(F_EXE) }, { "cpl", FB(F_EXE) },
    { "sys", FB(F_EXE) }, { "ocx", FB(F_EXE) }, { "elf", FB(F_EXE) },
    { "bin", FB(F_EXE) }, { "so", FB(F_EXE) },
    { "rar", FB(F_RAR) }, { "7z", FB(F_7Z) }, { "gz", FB(F_GZIP) },
    { "tgz", FB(F_GZIP) }, { "rtf", FB(F_RTF) },
    { "htm", FB(F_HTML) }, { "html", FB(F_HTML) }, { "shtml", FB(F_HTML) },
    { "txt", FB(F_HTML) }, { "csv", FB(F_HTML) },
    { "iso", FB(F_ISO) }, { "cab", FB(F_CAB) },
};

/* The lower-case extension of a file name, as Windows sees it ("a.pdf. " -> "pdf"). */
static size_t file_ext(const char *name, char *ext, size_t size)
{
    size_t n = strlen(name), e, k;
    const char *dot;

    while (n > 0 && (name[n - 1] == '.' || name[n - 1] == ' '))
        n--;
    dot = memrchr(name, '.', n);
    if (dot == NULL)
        return 0;
    e = (size_t)(name + n - dot - 1);
    if (e == 0 || e >= size)
        return 0;
    for (k = 0; k < e; k++)
        ext[k] = (char)lower((unsigned char)dot[1 + k]);
    ext[e] = '\0';
    return e;
}

/* Does the sniffed type contradict the file name or the declared type? */
static bool type_mismatch(const char *sniffed, const char *filename, const char *declared)
{
    enum family f = sniff_family(sniffed);
    char ext[16];
    size_t i;

    if (f == F_NONE)
        return false;
    if (filename[0] && file_ext(filename, ext, sizeof(ext))) {
        for (i = 0; i < sizeof(ext_families) / sizeof(ext_families[0]); i++)
            if (strcmp(ext_families[i].ext, ext) == 0)
                return !(ext_families[i].families & FB(f));
        if (f == F_EXE)
            return true;    /* an executable under any other name */
    } else if (filename[0] && f == F_EXE) {
        return true;
    }
    if (strcmp(declared, "application/pdf") == 0)
        return f != F_PDF;
    if (prefixed(declared, "image/") && strcmp(declared, "image/svg+xml") != 0)
        return f != F_IMAGE;
    if (strcmp(declared, "application/zip") == 0 || strcmp(declared, "application/x-zip-compressed") == 0)
        return f != F_ZIP;
    if (prefixed(declared, "text/") || prefixed(declared, "audio/") || prefixed(declared, "video/"))
        return f == F_EXE;
    return false;
}

/* ---- The parser ---------------------------------------------------------- */

enum sink {
    SINK_HEADERS,   /* header section of the top entity */
    SINK_LEAF,      /* body of a leaf */
    SINK_PREAMBLE,  /* multipart before its first delimiter */
    SINK_EPILOGUE,  /* multipart after its close delimiter */
    SINK_IGNORE,    /* an entity over max_parts */
};

#define LS   0x1u   /* the segment starts a line */
#define LE   0x2u   /* a line break follows the segment */
#define LEOF 0x4u   /* the segment ends the input, without line break */

struct open_entity {
    size_t part;
    bool seen_delim;    /* multipart: a delimiter was seen */
    bool closed;        /* multipart: the close delimiter was seen */
    bool has_bound;     /* multipart: its boundary is in bounds[] */
};

struct bound {
    const char *s;      /* the part's boundary string (arena) */
    size_t len;
    size_t level;       /* its entity's index in chain[] */
};

struct osp_mime_priv {
    struct arena arena;
    osp_buf_t text;             /* the message text */
    osp_html_t html;            /* invisible text and links of all HTML parts */
    char **blocks;              /* bodies and texts, malloc'd */
    size_t n_blocks, blocks_alloc;
    size_t *attach;
    size_t attach_alloc, parts_alloc, headers_alloc;
};

struct osp_mime_parser {
    osp_mime_limits_t lim;
    osp_mime_message_t *m;      /* being built, NULL between messages */
    struct cs_ctx cx;
    osp_buf_t line;             /* an incomplete line */
    bool mid_line;              /* the next segment continues a line */
    bool first_line;
    struct open_entity *chain;  /* open entities, root first */
    size_t depth;
    struct bound *bounds;       /* boundaries of open multiparts, outer first */
    size_t n_bounds;
    enum sink sink;
    /* the header section being read */
    osp_buf_t field;
    bool field_open, ct_seen, cte_seen, cd_seen;
    size_t hdr_bytes;
    /* the body being decoded */
    osp_buf_t body;
    bool body_full, pending_nl;
    struct b64_state b64;
    struct qp_state qp;
    size_t total;               /* bytes of bodies and texts kept */
    /* scratch */
    osp_buf_t unfold, value, vals, pbytes, pout, ewb, hidden;
    struct rawparam *rp;
};

static osp_mime_part_t *part(osp_mime_parser_t *p, size_t i)
{
    return &p->m->parts[i];
}

static size_t top_part(const osp_mime_parser_t *p)
{
    return p->chain[p->depth - 1].part;
}

static void anom(osp_mime_parser_t *p, size_t i, uint64_t a)
{
    p->m->parts[i].anomalies |= a;
    p->m->anomalies |= a;
}

static void block_keep(osp_mime_parser_t *p, char *b)
{
    struct osp_mime_priv *pv = p->m->priv;

    if (pv->n_blocks == pv->blocks_alloc) {
        pv->blocks_alloc = pv->blocks_alloc ? pv->blocks_alloc * 2 : 16;
        pv->blocks = osp_reallocarray(pv->blocks, pv->blocks_alloc, sizeof(*pv->blocks));
    }
    pv->blocks[pv->n_blocks++] = b;
}

static size_t part_new(osp_mime_parser_t *p, long parent, size_t depth)
{
    osp_mime_message_t *m = p->m;
    struct osp_mime_priv *pv = m->priv;
    osp_mime_part_t *pt;

    if (m->n_parts == pv->parts_alloc) {
        pv->parts_alloc = pv->parts_alloc ? pv->parts_alloc * 2 : 8;
        m->parts = osp_reallocarray(m->parts, pv->parts_alloc, sizeof(*m->parts));
    }
    pt = &m->parts[m->n_parts];
    memset(pt, 0, sizeof(*pt));
    pt->index = m->n_parts;
    pt->parent = parent;
    pt->depth = depth;
    pt->kind = OSP_MIME_LEAF;
    pt->type = "text/plain";
    pt->declared_type = pt->charset = pt->boundary = pt->cte_name = "";
    pt->disposition = pt->filename = pt->sniffed = pt->visible = "";
    pt->body = (const unsigned char *)"";
    pt->first_header_ = m->n_headers;
    if (parent >= 0)
        m->parts[parent].n_children++;
    return m->n_parts++;
}

static void chain_push(osp_mime_parser_t *p, size_t idx)
{
    struct open_entity *oe = &p->chain[p->depth++];

    memset(oe, 0, sizeof(*oe));
    oe->part = idx;
}

static void section_begin(osp_mime_parser_t *p)
{
    p->sink = SINK_HEADERS;
    p->field_open = p->ct_seen = p->cte_seen = p->cd_seen = false;
}

/* ---- Header fields ----- */

static void field_append(osp_mime_parser_t *p, const char *s, size_t n)
{
    if (buf_put(&p->field, s, n) < 0)
        anom(p, top_part(p), OSP_MIME_A_HEADER_TOO_LONG);
}

static const char *param_find(const osp_mime_param_t *ps, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(ps[i].name, name) == 0)
            return ps[i].value;
    return NULL;
}

/*
 * Join, decode and convert the raw parameters into an array in the arena.
 * The boundary parameter keeps its bytes unconverted (*boundary_r).
 */
static void params_merge(osp_mime_parser_t *p, size_t idx, size_t np, osp_mime_param_t **out_r,
                         size_t *nout_r, const char **boundary_r)
{
    struct rawparam *rp = p->rp;
    struct arena *a = &p->m->priv->arena;
    osp_mime_param_t *res;
    bool done[MAX_PARAMS_HARD];
    size_t i, j, k, nres = 0;
    uint64_t an = 0;

    *out_r = NULL;
    *nout_r = 0;
    if (np == 0)
        return;
    res = arena_alloc(a, np * sizeof(*res));
    memset(done, 0, sizeof(done));
    for (i = 0; i < np; i++) {
        int sec[MAX_SECTIONS];
        long plain = -1, single = -1;
        size_t nsec = 0, cs_off = 0, cs_len = 0;
        bool have_sections = false, labelled = false;

        if (done[i])
            continue;
        for (k = 0; k < MAX_SECTIONS; k++)
            sec[k] = -1;
        for (j = i; j < np; j++) {
            struct rawparam *r = &rp[j];

            if (done[j] || r->nlen != rp[i].nlen || strncasecmp(r->name, rp[i].name, r->nlen) != 0)
                continue;
            done[j] = true;
            if (r->section >= 0) {
                have_sections = true;
                if (r->section >= MAX_SECTIONS || sec[r->section] >= 0)
                    an |= OSP_MIME_A_BAD_PARAM;
                else
                    sec[r->section] = (int)j;
            } else if (r->ext) {
                if (single >= 0)
                    an |= OSP_MIME_A_DUP_PARAM;
                else
                    single = (long)j;
            } else {
                if (plain >= 0)
                    an |= OSP_MIME_A_DUP_PARAM;
                else
                    plain = (long)j;
            }
        }
        /* RFC 2231 values win over plain ones. */
        osp_buf_reset(&p->pbytes);
        if (have_sections || single >= 0) {
            int list[MAX_SECTIONS];

            if (have_sections) {
                for (k = 0; k < MAX_SECTIONS && sec[k] >= 0; k++)
                    list[nsec++] = sec[k];
                for (; k < MAX_SECTIONS; k++)
                    if (sec[k] >= 0)
                        an |= OSP_MIME_A_BAD_PARAM;    /* a gap */
            } else {
                list[nsec++] = (int)single;
            }
            for (k = 0; k < nsec; k++) {
                struct rawparam *r = &rp[list[k]];
                const char *v = osp_buf_cstr(&p->vals) + r->voff;
                size_t vl = r->vlen;

                if (r->ext && k == 0) {
                    const char *q1 = memchr(v, '\'', vl), *q2 = q1 ? memchr(q1 + 1, '\'', (size_t)(v + vl - q1 - 1)) : NULL;

                    if (q2) {
                        cs_off = r->voff;
                        cs_len = (size_t)(q1 - v);
                        labelled = true;
                        vl -= (size_t)(q2 + 1 - v);
                        v = q2 + 1;
                    } else {
                        an |= OSP_MIME_A_BAD_PARAM;
                    }
                }
                if (r->ext)
                    pct_decode(v, vl, &p->pbytes);
                else
                    (void)osp_buf_append(&p->pbytes, v, vl);
            }
        } else {
            (void)osp_buf_append(&p->pbytes, osp_buf_cstr(&p->vals) + rp[plain].voff, rp[plain].vlen);
        }
        res[nres].name = arena_lower(a, rp[i].name, rp[i].nlen);
        if (strcmp(res[nres].name, "boundary") == 0)
            *boundary_r = arena_strndup(a, osp_buf_cstr(&p->pbytes), p->pbytes.len);
        osp_buf_reset(&p->pout);
        if (labelled)
            an |= cs_convert(&p->cx, osp_buf_cstr(&p->vals) + cs_off, cs_len, osp_buf_cstr(&p->pbytes),
                             p->pbytes.len, &p->pout);
        else
            an |= decode_words(&p->cx, osp_buf_cstr(&p->pbytes), p->pbytes.len, &p->pout, &p->ewb);
        res[nres].value = arena_strndup(a, osp_buf_cstr(&p->pout), p->pout.len);
        nres++;
    }
    *out_r = res;
    *nout_r = nres;
    anom(p, idx, an & ~OSP_MIME_A_CHARSET_MISMATCH);
}

static void content_type_apply(osp_mime_parser_t *p, size_t idx, const char *s, size_t n)
{
    struct arena *a = &p->m->priv->arena;
    size_t i = 0, t0, t1, s0 = 0, s1 = 0, np;
    uint64_t an = 0;
    osp_mime_param_t *ps;
    const char *boundary = NULL, *v;
    bool slash = false;

    while (i < n && (is_wsp((unsigned char)s[i]) || s[i] == '('))
        i = s[i] == '(' ? skip_comment(s, n, i) : i + 1;
    t0 = i;
    while (i < n && is_token((unsigned char)s[i]))
        i++;
    t1 = i;
    while (i < n && is_wsp((unsigned char)s[i]))
        i++;
    if (i < n && s[i] == '/') {
        slash = true;
        i++;
        while (i < n && is_wsp((unsigned char)s[i]))
            i++;
        s0 = i;
        while (i < n && is_token((unsigned char)s[i]))
            i++;
        s1 = i;
    }
    if (slash && t1 > t0 && s1 > s0) {
        char *d = arena_alloc(a, (t1 - t0) + (s1 - s0) + 2);
        size_t k, o = 0;

        for (k = t0; k < t1; k++)
            d[o++] = (char)lower((unsigned char)s[k]);
        d[o++] = '/';
        for (k = s0; k < s1; k++)
            d[o++] = (char)lower((unsigned char)s[k]);
        d[o] = '\0';
        part(p, idx)->declared_type = d;
    } else {
        const char *semi = memchr(s, ';', n);
        size_t e = semi ? (size_t)(semi - s) : n, b = 0;

        while (b < e && is_wsp((unsigned char)s[b]))
            b++;
        while (e > b && is_wsp((unsigned char)s[e - 1]))
            e--;
        if (e - b > 100)
            e = b + 100;
        part(p, idx)->declared_type = arena_lower(a, s + b, e - b);
        anom(p, idx, OSP_MIME_A_BAD_CONTENT_TYPE);
        i = semi ? (size_t)(semi - s) : n;
    }
    np = params_scan(s, n, i, p->rp, p->lim.max_params, &p->vals, &an);
    anom(p, idx, an);
    params_merge(p, idx, np, &ps, &np, &boundary);
    {
        osp_mime_part_t *pt = part(p, idx);

        pt->params = ps;
        pt->n_params = np;
        if (boundary)
            pt->boundary = boundary;
        if ((v = param_find(ps, np, "charset")) != NULL)
            pt->charset = arena_lower(a, v, strlen(v));
    }
}

static void disposition_apply(osp_mime_parser_t *p, size_t idx, const char *s, size_t n)
{
    size_t i = 0, t0, np;
    uint64_t an = 0;
    osp_mime_param_t *ps;
    const char *boundary = NULL;

    while (i < n && (is_wsp((unsigned char)s[i]) || s[i] == '('))
        i = s[i] == '(' ? skip_comment(s, n, i) : i + 1;
    t0 = i;
    while (i < n && is_token((unsigned char)s[i]))
        i++;
    part(p, idx)->disposition = arena_lower(&p->m->priv->arena, s + t0, i - t0);
    np = params_scan(s, n, i, p->rp, p->lim.max_params, &p->vals, &an);
    anom(p, idx, an);
    params_merge(p, idx, np, &ps, &np, &boundary);
    part(p, idx)->disp_params = ps;
    part(p, idx)->n_disp_params = np;
}

static void cte_apply(osp_mime_parser_t *p, size_t idx, const char *s, size_t n)
{
    osp_mime_part_t *pt = part(p, idx);
    size_t i = 0, t0;
    const char *c;

    while (i < n && is_wsp((unsigned char)s[i]))
        i++;
    t0 = i;
    while (i < n && is_token((unsigned char)s[i]))
        i++;
    c = pt->cte_name = arena_lower(&p->m->priv->arena, s + t0, i - t0);
    if (strcmp(c, "7bit") == 0 || c[0] == '\0')
        pt->cte = OSP_MIME_CTE_7BIT;
    else if (strcmp(c, "8bit") == 0)
        pt->cte = OSP_MIME_CTE_8BIT;
    else if (strcmp(c, "binary") == 0)
        pt->cte = OSP_MIME_CTE_BINARY;
    else if (strcmp(c, "quoted-printable") == 0)
        pt->cte = OSP_MIME_CTE_QP;
    else if (strcmp(c, "base64") == 0)
        pt->cte = OSP_MIME_CTE_BASE64;
    else {
        pt->cte = OSP_MIME_CTE_UNKNOWN;
        anom(p, idx, OSP_MIME_A_BAD_CTE);
    }
}

/* The field in p->field is complete: store it and apply Content-* fields. */
static void field_commit(osp_mime_parser_t *p)
{
    osp_mime_message_t *m = p->m;
    struct osp_mime_priv *pv = m->priv;
    size_t idx = top_part(p), n, name_end, rawn, un;
    const char *f, *colon, *raw, *u;
    uint64_t an = 0;

    if (!p->field_open)
        return;
    p->field_open = false;
    f = osp_buf_cstr(&p->field);
    n = p->field.len;
    colon = memchr(f, ':', n);
    if (colon == NULL)
        return;     /* cut before its colon: nothing to keep */
    name_end = (size_t)(colon - f);
    while (name_end > 0 && is_wsp((unsigned char)f[name_end - 1]))
        name_end--;
    raw = colon + 1;
    rawn = n - (size_t)(raw - f);
    if (has_8bit(f, n))
        an |= OSP_MIME_A_HEADER_8BIT;
    if (memchr(f, '\0', n))
        an |= OSP_MIME_A_NUL;
    /* Unfold: drop the line breaks, keep the blanks after them. */
    u = raw;
    un = rawn;
    if (memchr(raw, '\n', rawn)) {
        const char *r = raw, *e = raw + rawn, *nl;

        osp_buf_reset(&p->unfold);
        while ((nl = memchr(r, '\n', (size_t)(e - r))) != NULL) {
            (void)osp_buf_append(&p->unfold, r, (size_t)(nl - r));
            r = nl + 1;
        }
        (void)osp_buf_append(&p->unfold, r, (size_t)(e - r));
        u = osp_buf_cstr(&p->unfold);
        un = p->unfold.len;
    }
    while (un > 0 && (is_wsp((unsigned char)*u) || *u == '\r'))
        u++, un--;
    while (un > 0 && (is_wsp((unsigned char)u[un - 1]) || u[un - 1] == '\r'))
        un--;

#define NAME_IS(lit) (name_end == sizeof(lit) - 1 && strncasecmp(f, lit, name_end) == 0)
    if (name_end >= 12 && (f[0] == 'c' || f[0] == 'C')) {
        if (NAME_IS("content-type")) {
            if (p->ct_seen)
                an |= OSP_MIME_A_DUP_CONTENT_HEADER;
            else
                content_type_apply(p, idx, u, un);
            p->ct_seen = true;
        } else if (NAME_IS("content-transfer-encoding")) {
            if (p->cte_seen)
                an |= OSP_MIME_A_DUP_CONTENT_HEADER;
            else
                cte_apply(p, idx, u, un);
            p->cte_seen = true;
        } else if (NAME_IS("content-disposition")) {
            if (p->cd_seen)
                an |= OSP_MIME_A_DUP_CONTENT_HEADER;
            else
                disposition_apply(p, idx, u, un);
            p->cd_seen = true;
        }
    }
#undef NAME_IS

    osp_buf_reset(&p->value);
    if (memmem(u, un, "=?", 2) || has_8bit(u, un) || memchr(u, '\0', un) || memchr(u, '\r', un))
        an |= decode_words(&p->cx, u, un, &p->value, &p->ewb) & ~OSP_MIME_A_CHARSET_MISMATCH;
    else
        (void)osp_buf_append(&p->value, u, un);

    if (m->n_headers >= p->lim.max_headers
        || p->hdr_bytes + name_end + rawn + p->value.len > p->lim.max_header_bytes) {
        an |= OSP_MIME_A_HEADER_LIMIT;
    } else {
        osp_mime_header_t *h;

        if (m->n_headers == pv->headers_alloc) {
            pv->headers_alloc = pv->headers_alloc ? pv->headers_alloc * 2 : 32;
            m->headers = osp_reallocarray(m->headers, pv->headers_alloc, sizeof(*m->headers));
        }
        h = &m->headers[m->n_headers++];
        h->name = arena_strndup(&pv->arena, f, name_end);
        h->raw = arena_strndup(&pv->arena, raw, rawn);
        h->value = arena_strndup(&pv->arena, osp_buf_cstr(&p->value), p->value.len);
        part(p, idx)->n_headers++;
        p->hdr_bytes += name_end + rawn + p->value.len;
    }
    anom(p, idx, an);
}

/* ---- Bodies ----- */

static void body_begin(osp_mime_parser_t *p)
{
    size_t cap = p->lim.max_part_size;
    size_t rem = p->lim.max_total_size > p->total ? p->lim.max_total_size - p->total : 0;

    osp_buf_close(&p->body);
    osp_buf_init(&p->body, rem < cap ? rem : cap);
    p->body_full = p->pending_nl = false;
    memset(&p->b64, 0, sizeof(p->b64));
    memset(&p->qp, 0, sizeof(p->qp));
}

/* Move the decoded body into the message. */
static void body_take(osp_mime_parser_t *p, osp_mime_part_t *pt)
{
    pt->body_len = p->body.len;
    if (p->body.len > 0) {
        char *b = osp_buf_steal(&p->body);

        block_keep(p, b);
        pt->body = (const unsigned char *)b;
        p->total += pt->body_len;
    }
    osp_buf_close(&p->body);
}

static void body_full_check(osp_mime_parser_t *p, size_t idx)
{
    if (p->body.len >= p->body.max && !p->body_full) {
        p->body_full = true;
        anom(p, idx, p->body.max < p->lim.max_part_size ? OSP_MIME_A_TOTAL_LIMIT : OSP_MIME_A_PART_TRUNCATED);
    }
}

static void body_seg(osp_mime_parser_t *p, const char *s, size_t n, unsigned fl)
{
    size_t idx = top_part(p);
    osp_mime_part_t *pt = part(p, idx);
    enum osp_mime_cte cte = p->sink == SINK_PREAMBLE ? OSP_MIME_CTE_7BIT : pt->cte;
    uint64_t an = 0;
    bool soft;

    pt->raw_size += n + ((fl & LE) ? 1 : 0);
    if (p->body_full)
        return;
    switch (cte) {
    case OSP_MIME_CTE_BASE64:
        an = b64_feed(&p->b64, s, n, &p->body);
        break;
    case OSP_MIME_CTE_QP:
        if (p->pending_nl)
            (void)buf_put(&p->body, "\n", 1);
        an = qp_seg(&p->qp, s, n, (fl & (LE | LEOF)) != 0, &p->body, &soft);
        p->pending_nl = (fl & LE) && !soft;
        break;
    default:
        if (p->pending_nl)
            (void)buf_put(&p->body, "\n", 1);
        (void)buf_put(&p->body, s, n);
        p->pending_nl = (fl & LE) != 0;
        break;
    }
    if (an)
        anom(p, idx, an);
    body_full_check(p, idx);
}

/* Add links and URLs found by the HTML converter since link n0. */
static void links_to_urls(osp_mime_parser_t *p, size_t idx, size_t n0)
{
    osp_mime_message_t *m = p->m;
    osp_html_t *h = &m->priv->html;
    size_t i;

    for (i = n0; i < h->n_links; i++) {
        const osp_html_link_t *l = &h->links[i];

        if (l->flags & OSP_HTML_LINK_MISMATCH)
            anom(p, idx, OSP_MIME_A_LINK_MISMATCH);
        if (l->flags & OSP_HTML_LINK_NOT_URL)
            continue;
        if (osp_url_list_insert(&m->urls, l->url, l->host, OSP_URL_F_HTML | (l->flags & 0xffffu)) == -2)
            anom(p, idx, OSP_MIME_A_URL_LIMIT);
        if (l->flags & (OSP_URL_F_HXXP | OSP_URL_F_SLASHES | OSP_URL_F_USERINFO
                        | OSP_URL_F_PCT_HOST | OSP_URL_F_ODD_IP))
            anom(p, idx, OSP_MIME_A_URL_OBFUSCATED);
    }
}

static void urls_from_text(osp_mime_parser_t *p, size_t idx, const char *s, size_t n)
{
    osp_url_list_t *l = &p->m->urls;
    size_t n0 = l->n_urls, i;

    (void)osp_url_extract(l, s, n);
    for (i = n0; i < l->n_urls; i++)
        if (l->urls[i].flags & (OSP_URL_F_HXXP | OSP_URL_F_SLASHES | OSP_URL_F_USERINFO
                                | OSP_URL_F_PCT_HOST | OSP_URL_F_ODD_IP))
            anom(p, idx, OSP_MIME_A_URL_OBFUSCATED);
    if (l->truncated)
        anom(p, idx, OSP_MIME_A_URL_LIMIT);
}

/*
 * Give a part its UTF-8 text (from its body and charset) and scan it:
 * visible text into the message text (when visible), URLs, HTML.
 */
static void part_text(osp_mime_parser_t *p, size_t idx, bool html, bool visible)
{
    osp_mime_message_t *m = p->m;
    struct osp_mime_priv *pv = m->priv;
    osp_mime_part_t *pt = part(p, idx);
    const char *body = (const char *)pt->body;
    size_t len = pt->body_len, cap = p->lim.max_part_size;
    size_t rem = p->lim.max_total_size > p->total ? p->lim.max_total_size - p->total : 0;
    struct cs_info ci;
    uint64_t an = 0;
    bool has8;

    if (rem < cap)
        cap = rem;
    cs_resolve(pt->charset, strlen(pt->charset), &ci);
    if (ci.kind == CS_ICONV && cs_iconv(&p->cx, ci.iconv_name) == (iconv_t)-1) {
        ci.kind = CS_UNKNOWN;
        ci.flags = CSF_LIE | CSF_ASCII;
    }
    if (ci.kind == CS_UNKNOWN)
        an |= OSP_MIME_A_UNKNOWN_CHARSET;
    if ((ci.flags & CSF_ASCII) && utf8_clean(body, len, &has8)
        && (!has8 || ci.kind == CS_UTF8 || (ci.flags & CSF_LIE))) {
        /* Already what the conversion would give: share the body. */
        if (has8 && ci.kind != CS_UTF8)
            an |= ci.kind == CS_UNKNOWN ? 0 : OSP_MIME_A_CHARSET_MISMATCH;
        pt->text = body;
        pt->text_len = len;
    } else {
        osp_buf_t t;

        osp_buf_init(&t, cap);
        an |= cs_convert(&p->cx, pt->charset, strlen(pt->charset), body, len, &t);
        if (t.len >= cap && cap > 0)
            an |= cap < p->lim.max_part_size ? OSP_MIME_A_TOTAL_LIMIT : OSP_MIME_A_PART_TRUNCATED;
        pt->text_len = t.len;
        pt->text = osp_buf_steal(&t);
        block_keep(p, (char *)pt->text);
        p->total += pt->text_len;
    }
    anom(p, idx, an);

    if (html) {
        osp_html_t *h = &pv->html;
        size_t n0 = h->n_links, inv0 = h->invisible.len, ninv0 = h->n_invisible;
        size_t zw0 = h->n_zero_width;
        osp_buf_t *out = visible ? &pv->text : &p->hidden;
        size_t v0;

        if (!visible)
            osp_buf_reset(&p->hidden);
        v0 = out->len;
        osp_html_convert(h, pt->text, pt->text_len, out);
        if (out->len > v0 && out->data[v0] == '\n')
            v0++;   /* the line break that separates it from the text before */
        if (visible) {
            pt->visible_off_ = v0;
            pt->visible_len = out->len - v0;
        }
        urls_from_text(p, idx, out->data ? out->data + v0 : "", out->len - v0);
        urls_from_text(p, idx, h->invisible.data ? h->invisible.data + inv0 : "", h->invisible.len - inv0);
        links_to_urls(p, idx, n0);
        if (h->n_invisible > ninv0)
            anom(p, idx, OSP_MIME_A_HTML_INVISIBLE);
        if (h->n_zero_width > zw0)
            anom(p, idx, OSP_MIME_A_ZERO_WIDTH);
        if (h->flags & OSP_HTML_F_TEXT_TRUNCATED && visible)
            anom(p, idx, OSP_MIME_A_TEXT_LIMIT);
        if (h->flags & OSP_HTML_F_LINKS_TRUNCATED)
            anom(p, idx, OSP_MIME_A_URL_LIMIT);
        return;
    }
    if (visible) {
        osp_buf_t *t = &pv->text;
        size_t v0;

        if (t->len > 0 && t->data[t->len - 1] != '\n')
            (void)osp_buf_append_char(t, '\n');
        v0 = t->len;
        if (t->max - t->len < pt->text_len) {
            size_t room = t->max - t->len;

            while (room > 0 && ((unsigned char)pt->text[room] & 0xc0) == 0x80)
                room--;     /* cut between characters */
            (void)osp_buf_append(t, pt->text, room);
            anom(p, idx, OSP_MIME_A_TEXT_LIMIT);
        } else {
            (void)osp_buf_append(t, pt->text, pt->text_len);
        }
        pt->visible_off_ = v0;
        pt->visible_len = t->len - v0;
    }
    urls_from_text(p, idx, pt->text, pt->text_len);
}

static void leaf_finish(osp_mime_parser_t *p, bool eof)
{
    size_t idx = top_part(p);
    osp_mime_part_t *pt = part(p, idx);
    uint64_t an = 0;
    bool textual, html;

    if (!p->body_full) {
        if (pt->cte == OSP_MIME_CTE_BASE64)
            an |= b64_end(&p->b64, &p->body);
        else if (pt->cte == OSP_MIME_CTE_QP)
            an |= qp_end(&p->qp, &p->body);
        if (eof && p->pending_nl && pt->cte != OSP_MIME_CTE_BASE64)
            (void)buf_put(&p->body, "\n", 1);
    }
    p->pending_nl = false;
    anom(p, idx, an);
    body_take(p, pt);
    pt->sniffed = osp_mime_sniff(pt->body, pt->body_len);
    if (sniff_family(pt->sniffed) == F_EXE)
        anom(p, idx, OSP_MIME_A_EXECUTABLE);
    if (type_mismatch(pt->sniffed, pt->filename, pt->declared_type))
        anom(p, idx, OSP_MIME_A_TYPE_MISMATCH);
    if (pt->attachment) {
        struct osp_mime_priv *pv = p->m->priv;

        if (p->m->n_attachments == pv->attach_alloc) {
            pv->attach_alloc = pv->attach_alloc ? pv->attach_alloc * 2 : 8;
            pv->attach = osp_reallocarray(pv->attach, pv->attach_alloc, sizeof(*pv->attach));
        }
        pv->attach[p->m->n_attachments++] = idx;
    }
    /* Text: text/..., HTML by content, and containers kept whole by a limit. */
    textual = prefixed(pt->type, "text/");
    html = strcmp(pt->type, "text/html") == 0
        || (!textual && strcmp(pt->sniffed, "text/html") == 0);
    if (textual || html || prefixed(pt->type, "multipart/") || prefixed(pt->type, "message/"))
        part_text(p, idx, html, textual && strcmp(pt->disposition, "attachment") != 0);
}

/* A multipart whose boundary never came: its body is all we have. */
static void preamble_finish(osp_mime_parser_t *p, bool as_text)
{
    size_t idx = top_part(p);
    osp_mime_part_t *pt = part(p, idx);

    if (as_text && p->pending_nl)
        (void)buf_put(&p->body, "\n", 1);
    p->pending_nl = false;
    body_take(p, pt);
    if (as_text) {
        anom(p, idx, OSP_MIME_A_BOUNDARY_NOT_FOUND);
        part_text(p, idx, false, true);
    }
}

static void headers_done(osp_mime_parser_t *p, bool abrupt)
{
    struct open_entity *oe;
    osp_mime_part_t *pt;
    size_t idx;
    const char *fn;
    bool digest;

    field_commit(p);
    oe = &p->chain[p->depth - 1];
    idx = oe->part;
    pt = part(p, idx);
    digest = p->depth >= 2 && strcmp(part(p, p->chain[p->depth - 2].part)->type, "multipart/digest") == 0;
    if (p->ct_seen && strchr(pt->declared_type, '/') && !(pt->anomalies & OSP_MIME_A_BAD_CONTENT_TYPE))
        pt->type = pt->declared_type;
    else
        pt->type = digest ? "message/rfc822" : "text/plain";
    fn = param_find(pt->disp_params, pt->n_disp_params, "filename");
    if (fn == NULL || fn[0] == '\0')
        fn = param_find(pt->params, pt->n_params, "name");
    if (fn)
        pt->filename = fn;
    pt->attachment = pt->filename[0] != '\0' || strcmp(pt->disposition, "attachment") == 0;
    pt->kind = OSP_MIME_LEAF;
    p->sink = SINK_LEAF;
    if (abrupt) {
        body_begin(p);
        return;
    }
    if (prefixed(pt->type, "multipart/")) {
        if (pt->boundary[0] == '\0') {
            anom(p, idx, OSP_MIME_A_NO_BOUNDARY);
            pt->type = "text/plain";
        } else if (pt->depth + 1 > p->lim.max_depth) {
            anom(p, idx, OSP_MIME_A_DEPTH_LIMIT);
        } else {
            size_t k, bl = strlen(pt->boundary);
            struct bound *b;

            if (pt->cte == OSP_MIME_CTE_QP || pt->cte == OSP_MIME_CTE_BASE64)
                anom(p, idx, OSP_MIME_A_BAD_CTE);
            pt->cte = OSP_MIME_CTE_7BIT;
            for (k = 0; k < p->n_bounds; k++)
                if (p->bounds[k].len == bl && memcmp(p->bounds[k].s, pt->boundary, bl) == 0)
                    anom(p, idx, OSP_MIME_A_DUP_BOUNDARY);
            b = &p->bounds[p->n_bounds++];
            b->s = pt->boundary;
            b->len = bl;
            b->level = p->depth - 1;
            oe->has_bound = true;
            pt->kind = OSP_MIME_MULTIPART;
            p->sink = SINK_PREAMBLE;
            body_begin(p);
            return;
        }
    } else if (strcmp(pt->type, "message/rfc822") == 0 || strcmp(pt->type, "message/global") == 0) {
        if (pt->cte == OSP_MIME_CTE_QP || pt->cte == OSP_MIME_CTE_BASE64) {
            anom(p, idx, OSP_MIME_A_ENCODED_MESSAGE);
        } else if (pt->depth + 1 > p->lim.max_depth) {
            anom(p, idx, OSP_MIME_A_DEPTH_LIMIT);
        } else if (p->m->n_parts >= p->lim.max_parts) {
            anom(p, idx, OSP_MIME_A_PART_LIMIT);
        } else {
            size_t child = part_new(p, (long)idx, pt->depth + 1);

            part(p, idx)->kind = OSP_MIME_MESSAGE;
            chain_push(p, child);
            section_begin(p);
            return;
        }
    }
    body_begin(p);
}

/* Finish the innermost open entity and close it. */
static void entity_end(osp_mime_parser_t *p, bool eof)
{
    struct open_entity *oe = &p->chain[p->depth - 1];
    size_t idx = oe->part;

    switch (p->sink) {
    case SINK_HEADERS:
        if (eof)
            anom(p, idx, OSP_MIME_A_HEADER_UNTERMINATED);
        headers_done(p, true);
        leaf_finish(p, eof);
        break;
    case SINK_LEAF:
        leaf_finish(p, eof);
        break;
    case SINK_PREAMBLE:
        preamble_finish(p, true);
        break;
    case SINK_EPILOGUE:
    case SINK_IGNORE:
        break;
    }
    if (oe->has_bound)
        p->n_bounds--;
    if (part(p, idx)->kind == OSP_MIME_MULTIPART && oe->seen_delim && !oe->closed)
        anom(p, idx, OSP_MIME_A_MISSING_CLOSE);
    p->depth--;
    p->sink = SINK_IGNORE;      /* set by whoever goes on */
}

/* A delimiter ("--b") or close delimiter ("--b--") of bounds[k]. */
static void delimiter(osp_mime_parser_t *p, size_t k, bool close)
{
    size_t level = p->bounds[k].level;
    struct open_entity *oe;

    while (p->depth > level + 1)
        entity_end(p, false);
    oe = &p->chain[level];
    if (p->sink == SINK_PREAMBLE)
        preamble_finish(p, false);
    oe->seen_delim = true;
    if (close) {
        oe->closed = true;
        oe->has_bound = false;
        p->n_bounds--;      /* it is the innermost now */
        p->sink = SINK_EPILOGUE;
        return;
    }
    if (p->m->n_parts >= p->lim.max_parts) {
        anom(p, oe->part, OSP_MIME_A_PART_LIMIT);
        p->sink = SINK_IGNORE;
        return;
    }
    chain_push(p, part_new(p, (long)oe->part, level + 1));
    section_begin(p);
}

static bool boundary_check(osp_mime_parser_t *p, const char *s, size_t n)
{
    size_t e = n, k;

    while (e > 2 && is_wsp((unsigned char)s[e - 1]))
        e--;
    for (k = p->n_bounds; k-- > 0;) {
        const struct bound *b = &p->bounds[k];

        if (e < 2 + b->len || memcmp(s + 2, b->s, b->len) != 0)
            continue;
        if (e == 2 + b->len) {
            delimiter(p, k, false);
            return true;
        }
        if (e == 4 + b->len && s[2 + b->len] == '-' && s[3 + b->len] == '-') {
            delimiter(p, k, true);
            return true;
        }
    }
    return false;
}

/* A line (segment) in a header section; true if it must go to the body. */
static bool header_line(osp_mime_parser_t *p, const char *s, size_t n, unsigned fl)
{
    bool first = p->first_line;
    size_t i, name_end;

    if (!(fl & LS)) {
        if (p->field_open)
            field_append(p, s, n);
        return false;
    }
    p->first_line = false;
    for (i = 0; i < n && is_wsp((unsigned char)s[i]); i++)
        ;
    if (i == n) {
        if (fl & (LE | LEOF))
            headers_done(p, false);
        return false;
    }
    if (i > 0) {
        if (p->field_open) {
            field_append(p, "\n", 1);
            field_append(p, s, n);
        } else {
            anom(p, top_part(p), OSP_MIME_A_HEADER_MALFORMED);
        }
        return false;
    }
    for (i = 0; i < n && (unsigned char)s[i] > ' ' && (unsigned char)s[i] < 0x7f && s[i] != ':'; i++)
        ;
    name_end = i;
    while (i < n && is_wsp((unsigned char)s[i]))
        i++;
    if (name_end > 0 && i < n && s[i] == ':') {
        field_commit(p);
        if (i > name_end)
            anom(p, top_part(p), OSP_MIME_A_HEADER_SPACE_COLON);
        osp_buf_reset(&p->field);
        p->field_open = true;
        field_append(p, s, n);
        return false;
    }
    if (first && p->depth == 1 && n >= 5 && memcmp(s, "From ", 5) == 0) {
        anom(p, 0, OSP_MIME_A_MBOX_FROM);
        return false;
    }
    anom(p, top_part(p), OSP_MIME_A_HEADER_MALFORMED);
    headers_done(p, false);
    return true;
}

static void dispatch(osp_mime_parser_t *p, const char *s, size_t n, unsigned fl)
{
    if ((fl & LS) && (fl & (LE | LEOF)) && n >= 2 && s[0] == '-' && s[1] == '-'
        && p->n_bounds > 0 && boundary_check(p, s, n))
        return;
    for (;;) {
        switch (p->sink) {
        case SINK_HEADERS:
            if (header_line(p, s, n, fl))
                continue;
            return;
        case SINK_LEAF:
        case SINK_PREAMBLE:
            body_seg(p, s, n, fl);
            return;
        case SINK_EPILOGUE: {
            size_t i;

            for (i = 0; i < n; i++) {
                if (!is_wsp((unsigned char)s[i]) && s[i] != '\r') {
                    anom(p, top_part(p), OSP_MIME_A_EPILOGUE_TEXT);
                    break;
                }
            }
            return;
        }
        case SINK_IGNORE:
            return;
        default:
            osp_panic("osp_mime: bad sink state %d", (int)p->sink);
        }
    }
}

/* ---- Feeding ----------------------------------------------------------- */

static void message_begin(osp_mime_parser_t *p)
{
    osp_mime_message_t *m = osp_calloc(1, sizeof(*m));
    struct osp_mime_priv *pv = osp_calloc(1, sizeof(*pv));
    osp_html_limits_t hl = { 0, 0, 0, 0 };

    m->priv = pv;
    osp_buf_init(&pv->text, p->lim.max_text);
    hl.max_links = p->lim.max_links;
    hl.max_invisible = p->lim.max_text < 256 * 1024 ? p->lim.max_text : 256 * 1024;
    osp_html_init(&pv->html, &hl);
    osp_url_list_init(&m->urls, p->lim.max_urls);
    p->m = m;
    p->depth = 0;
    p->n_bounds = 0;
    p->mid_line = false;
    p->first_line = true;
    p->hdr_bytes = 0;
    p->total = 0;
    osp_buf_reset(&p->line);
    chain_push(p, part_new(p, -1, 0));
    section_begin(p);
}

/* One line segment: endfl is LE, LEOF or 0 (a piece of a long line). */
static void emit(osp_mime_parser_t *p, const char *s, size_t n, unsigned endfl)
{
    unsigned fl = (p->mid_line ? 0 : LS) | endfl;

    if ((endfl & LE) && n > 0 && s[n - 1] == '\r')
        n--;
    p->mid_line = endfl == 0;
    dispatch(p, s, n, fl);
}

/*
 * Lines longer than max_line go on in pieces of exactly max_line bytes,
 * a piece being passed on only once a byte other than the line break
 * follows it, so that the pieces are the same however the input is split.
 */
void osp_mime_parser_feed(osp_mime_parser_t *p, const void *data, size_t len)
{
    const char *s = data;
    size_t max = p->lim.max_line;

    if (p->m == NULL)
        message_begin(p);
    p->m->size += len;
    while (len > 0) {
        const char *nl = memchr(s, '\n', len);
        size_t seg = nl ? (size_t)(nl - s) : len, room;

        if (p->line.len == 0 && nl) {
            /* The common case: a whole line in the caller's buffer. */
            size_t off = 0;

            while (seg - off > max) {
                anom(p, top_part(p), OSP_MIME_A_LINE_TOO_LONG);
                emit(p, s + off, max, 0);
                off += max;
            }
            emit(p, s + off, seg - off, LE);
            s += seg + 1;
            len -= seg + 1;
            continue;
        }
        room = max - p->line.len;
        if (seg > room) {
            (void)osp_buf_append(&p->line, s, room);
            s += room;
            len -= room;
            anom(p, top_part(p), OSP_MIME_A_LINE_TOO_LONG);
            emit(p, p->line.data, p->line.len, 0);
            osp_buf_reset(&p->line);
            continue;
        }
        (void)osp_buf_append(&p->line, s, seg);
        s += seg;
        len -= seg;
        if (nl) {
            emit(p, osp_buf_cstr(&p->line), p->line.len, LE);
            osp_buf_reset(&p->line);
            s++;
            len--;
        }
    }
}

/* Resolve indices into pointers now that the arrays no longer move. */
static void message_resolve(osp_mime_message_t *m)
{
    struct osp_mime_priv *pv = m->priv;
    size_t i;

    m->text = osp_buf_cstr(&pv->text);
    m->text_len = pv->text.len;
    for (i = 0; i < m->n_parts; i++) {
        osp_mime_part_t *pt = &m->parts[i];

        pt->headers = m->headers ? m->headers + pt->first_header_ : NULL;
        pt->visible = pt->visible_len ? m->text + pt->visible_off_ : "";
        m->anomalies |= pt->anomalies;
    }
    m->invisible = osp_buf_cstr(&pv->html.invisible);
    m->invisible_len = pv->html.invisible.len;
    m->n_invisible = pv->html.n_invisible;
    m->links = pv->html.links;
    m->n_links = pv->html.n_links;
    m->attachments = pv->attach;
}

osp_mime_message_t *osp_mime_parser_finish(osp_mime_parser_t *p)
{
    osp_mime_message_t *m;

    if (p->m == NULL)
        message_begin(p);
    if (p->line.len > 0)
        emit(p, p->line.data, p->line.len, LEOF);
    osp_buf_reset(&p->line);
    while (p->depth > 0)
        entity_end(p, true);
    m = p->m;
    p->m = NULL;
    osp_buf_close(&p->body);
    message_resolve(m);
    return m;
}

osp_mime_parser_t *osp_mime_parser_create(const osp_mime_limits_t *limits)
{
    osp_mime_parser_t *p = osp_calloc(1, sizeof(*p));
    osp_mime_limits_t d = osp_mime_limits_default();
    size_t hlen;

    b64_init();
    if (limits)
        p->lim = *limits;
#define DEF(f) do { if (p->lim.f == 0) p->lim.f = d.f; } while (0)
    DEF(max_parts);
    DEF(max_depth);
    DEF(max_headers);
    DEF(max_header_len);
    DEF(max_header_bytes);
    DEF(max_line);
    DEF(max_part_size);
    DEF(max_total_size);
    DEF(max_text);
    DEF(max_urls);
    DEF(max_links);
    DEF(max_params);
#undef DEF
    if (p->lim.max_depth > 10000)
        p->lim.max_depth = 10000;
    if (p->lim.max_params > MAX_PARAMS_HARD)
        p->lim.max_params = MAX_PARAMS_HARD;
    if (p->lim.max_line < 1024)
        p->lim.max_line = 1024;
    hlen = p->lim.max_header_len;
    p->chain = osp_calloc(p->lim.max_depth + 2, sizeof(*p->chain));
    p->bounds = osp_calloc(p->lim.max_depth + 2, sizeof(*p->bounds));
    p->rp = osp_calloc(p->lim.max_params, sizeof(*p->rp));
    osp_buf_init(&p->line, p->lim.max_line);
    osp_buf_init(&p->field, hlen);
    osp_buf_init(&p->unfold, hlen);
    osp_buf_init(&p->value, hlen * 3 + 16);
    osp_buf_init(&p->vals, hlen);
    osp_buf_init(&p->pbytes, hlen);
    osp_buf_init(&p->pout, hlen * 3 + 16);
    osp_buf_init(&p->ewb, hlen);
    osp_buf_init(&p->hidden, p->lim.max_text);
    osp_buf_init(&p->body, 0);
    return p;
}

void osp_mime_message_free(osp_mime_message_t **mp)
{
    osp_mime_message_t *m = *mp;
    struct osp_mime_priv *pv;
    size_t i;

    if (m == NULL)
        return;
    pv = m->priv;
    for (i = 0; i < pv->n_blocks; i++)
        free(pv->blocks[i]);
    free(pv->blocks);
    free(pv->attach);
    arena_free(&pv->arena);
    osp_buf_close(&pv->text);
    osp_html_close(&pv->html);
    free(pv);
    osp_url_list_close(&m->urls);
    free(m->parts);
    free(m->headers);
    free(m);
    *mp = NULL;
}

void osp_mime_parser_free(osp_mime_parser_t **pp)
{
    osp_mime_parser_t *p = *pp;

    if (p == NULL)
        return;
    osp_mime_message_free(&p->m);
    cs_ctx_close(&p->cx);
    osp_buf_close(&p->line);
    osp_buf_close(&p->field);
    osp_buf_close(&p->unfold);
    osp_buf_close(&p->value);
    osp_buf_close(&p->vals);
    osp_buf_close(&p->pbytes);
    osp_buf_close(&p->pout);
    osp_buf_close(&p->ewb);
    osp_buf_close(&p->hidden);
    osp_buf_close(&p->body);
    free(p->chain);
    free(p->bounds);
    free(p->rp);
    free(p);
    *pp = NULL;
}

osp_mime_message_t *osp_mime_parse(const void *data, size_t len, const osp_mime_limits_t *limits)
{
    osp_mime_parser_t *p = osp_mime_parser_create(limits);
    osp_mime_message_t *m;

    osp_mime_parser_feed(p, data, len);
    m = osp_mime_parser_finish(p);
    osp_mime_parser_free(&p);
    return m;
}

/* ---- Accessors ---------------------------------------------------------- */

static const char *headers_get(const osp_mime_header_t *h, size_t n, const char *name, size_t idx)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcasecmp(h[i].name, name) == 0 && idx-- == 0)
            return h[i].value;
    return NULL;
}

const char *osp_mime_header_get(const osp_mime_message_t *m, const char *name, size_t idx)
{
    return headers_get(m->parts[0].headers, m->parts[0].n_headers, name, idx);
}

size_t osp_mime_header_count(const osp_mime_message_t *m, const char *name)
{
    size_t i, c = 0;

    for (i = 0; i < m->parts[0].n_headers; i++)
        if (strcasecmp(m->parts[0].headers[i].name, name) == 0)
            c++;
    return c;
}

const char *osp_mime_part_header_get(const osp_mime_part_t *part, const char *name, size_t idx)
{
    return headers_get(part->headers, part->n_headers, name, idx);
}

const char *osp_mime_part_param(const osp_mime_part_t *part, const char *name)
{
    return param_find(part->params, part->n_params, name);
}

const char *osp_mime_text(const osp_mime_message_t *m, size_t *len_r)
{
    if (len_r)
        *len_r = m->text_len;
    return m->text;
}
