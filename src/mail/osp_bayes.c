/* osp_bayes: tokenizer, in-memory token counts, Robinson-Fisher classifier. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "osp_bayes.h"
#include "osp_log.h"
#include "osp_mem.h"

#define OSP_BAYES_MIN_WORD   3
#define OSP_BAYES_MAX_WORD   40
#define OSP_BAYES_MAX_TOKEN  128     /* prefix + text, longer is cut */
#define OSP_BAYES_TOTALS     UINT64_C(0)   /* reserved hash: per-account totals */
#define OSP_BAYES_SEED       UINT64_C(0x6f73707265790001)

/* ------------------------------------------------------------------ */
/* Hashing */

static inline uint64_t osp_bayes__mix(uint64_t x)
{
    x ^= x >> 32;
    x *= UINT64_C(0xd6e8feb86659fd93);
    x ^= x >> 32;
    x *= UINT64_C(0xd6e8feb86659fd93);
    x ^= x >> 32;
    return x;
}

uint64_t osp_bayes_hash(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ ((uint64_t)len * UINT64_C(0x9e3779b97f4a7c15));
    uint64_t k;

    while (len >= 8) {
        memcpy(&k, p, 8);
        h = (h ^ osp_bayes__mix(k)) * UINT64_C(0x9e3779b97f4a7c15);
        p += 8;
        len -= 8;
    }
    k = 0;
    if (len)
        memcpy(&k, p, len);
    h = (h ^ osp_bayes__mix(k ^ (uint64_t)len)) * UINT64_C(0x9e3779b97f4a7c15);
    h = osp_bayes__mix(h);
    return h == OSP_BAYES_TOTALS ? 1 : h;
}

/* ------------------------------------------------------------------ */
/* Token sets */

void osp_bayes_tokens_init(osp_bayes_tokens_t *t, bool keep_text)
{
    memset(t, 0, sizeof(*t));
    t->keep_text = keep_text;
}

static void osp_bayes__tokens_reset(osp_bayes_tokens_t *t)
{
    size_t i;

    if (t->text)
        for (i = 0; i < t->n; i++)
            free(t->text[i]);
    t->n = 0;
    t->ntrace = 0;
}

void osp_bayes_tokens_close(osp_bayes_tokens_t *t)
{
    osp_bayes__tokens_reset(t);
    OSP_FREE(&t->hash);
    OSP_FREE(&t->text);
    OSP_FREE(&t->trace);
    t->alloc = 0;
    t->trace_alloc = 0;
}

/* Remember t->hash[from..n) as trace tokens (left out of the message key). */
static void osp_bayes__trace(osp_bayes_tokens_t *t, size_t from)
{
    for (; from < t->n; from++) {
        if (t->ntrace == t->trace_alloc) {
            t->trace_alloc = t->trace_alloc ? t->trace_alloc * 2 : 64;
            t->trace = osp_reallocarray(t->trace, t->trace_alloc, sizeof(uint64_t));
        }
        t->trace[t->ntrace++] = t->hash[from];
    }
}

void osp_bayes_tokens_add(osp_bayes_tokens_t *t, const char *prefix, const char *s, size_t len)
{
    char tok[OSP_BAYES_MAX_TOKEN];
    size_t plen = strlen(prefix), n;

    if (plen >= sizeof(tok))
        plen = sizeof(tok) - 1;
    memcpy(tok, prefix, plen);
    n = len < sizeof(tok) - plen ? len : sizeof(tok) - plen;
    memcpy(tok + plen, s, n);
    n += plen;
    if (t->n == t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 256;
        t->hash = osp_reallocarray(t->hash, t->alloc, sizeof(uint64_t));
        if (t->keep_text)
            t->text = osp_reallocarray(t->text, t->alloc, sizeof(char *));
    }
    t->hash[t->n] = osp_bayes_hash(tok, n, OSP_BAYES_SEED);
    if (t->keep_text)
        t->text[t->n] = osp_memdup0(tok, n);
    t->n++;
}

static int osp_bayes__cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Sort 64-bit hashes in place: quicksort (median of three, recursing into
 * the smaller side, so depth is O(log n)), insertion sort for short runs.
 * qsort()'s comparator calls and glibc's temporary buffer cost more than
 * the rest of the tokenizer's bookkeeping. */
static void osp_bayes__sort_u64(uint64_t *a, size_t n)
{
    while (n > 16) {
        size_t i = 0, j = n - 1, m = (n - 1) / 2;
        uint64_t p, x;

        if (a[m] < a[0]) { x = a[m]; a[m] = a[0]; a[0] = x; }
        if (a[j] < a[0]) { x = a[j]; a[j] = a[0]; a[0] = x; }
        if (a[j] < a[m]) { x = a[j]; a[j] = a[m]; a[m] = x; }
        p = a[m];
        for (;;) {
            while (a[i] < p)
                i++;
            while (a[j] > p)
                j--;
            if (i >= j)
                break;
            x = a[i]; a[i] = a[j]; a[j] = x;
            i++;
            j--;
        }
        /* a[0..j] <= p <= a[j+1..n) */
        if (j + 1 < n - j - 1) {
            osp_bayes__sort_u64(a, j + 1);
            a += j + 1;
            n -= j + 1;
        } else {
            osp_bayes__sort_u64(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    for (size_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        size_t k = i;
        while (k > 0 && a[k - 1] > v) {
            a[k] = a[k - 1];
            k--;
        }
        a[k] = v;
    }
}

struct osp_bayes__pair {
    uint64_t h;
    char *s;
};

static int osp_bayes__cmp_pair(const void *a, const void *b)
{
    return osp_bayes__cmp_u64(&((const struct osp_bayes__pair *)a)->h,
                              &((const struct osp_bayes__pair *)b)->h);
}

void osp_bayes_tokens_finish(osp_bayes_tokens_t *t)
{
    size_t i, o = 0;

    if (t->ntrace > 0) {
        osp_bayes__sort_u64(t->trace, t->ntrace);
        for (i = 0; i < t->ntrace; i++)
            if (o == 0 || t->trace[i] != t->trace[o - 1])
                t->trace[o++] = t->trace[i];
        t->ntrace = o;
        o = 0;
    }
    if (t->n == 0)
        return;
    if (!t->keep_text) {
        osp_bayes__sort_u64(t->hash, t->n);
        for (i = 0; i < t->n; i++)
            if (o == 0 || t->hash[i] != t->hash[o - 1])
                t->hash[o++] = t->hash[i];
        t->n = o;
        return;
    }
    {
        struct osp_bayes__pair *p = osp_malloc(t->n * sizeof(*p));
        for (i = 0; i < t->n; i++) {
            p[i].h = t->hash[i];
            p[i].s = t->text[i];
        }
        qsort(p, t->n, sizeof(*p), osp_bayes__cmp_pair);
        for (i = 0; i < t->n; i++) {
            if (o == 0 || p[i].h != t->hash[o - 1]) {
                t->hash[o] = p[i].h;
                t->text[o] = p[i].s;
                o++;
            } else {
                free(p[i].s);
            }
        }
        t->n = o;
        free(p);
    }
}

const char *osp_bayes_tokens_text(const osp_bayes_tokens_t *t, uint64_t h)
{
    size_t lo = 0, hi = t->n;

    if (!t->keep_text)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->hash[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->n && t->hash[lo] == h ? t->text[lo] : NULL;
}

/* ------------------------------------------------------------------ */
/* Words */

/* Decode one UTF-8 code point at s (len > 0); returns bytes used (>= 1). */
static size_t osp_bayes__utf8(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xe0) == 0xc0 && len >= 2 && (s[1] & 0xc0) == 0x80) {
        *cp = ((uint32_t)(c & 0x1f) << 6) | (s[1] & 0x3f);
        return 2;
    }
    if ((c & 0xf0) == 0xe0 && len >= 3 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80) {
        *cp = ((uint32_t)(c & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
        return 3;
    }
    if ((c & 0xf8) == 0xf0 && len >= 4 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 &&
        (s[3] & 0xc0) == 0x80) {
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3f) << 12) |
              ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
        return 4;
    }
    *cp = 0xfffd;
    return 1;
}

static uint32_t osp_bayes__fold(uint32_t cp)
{
    if (cp >= 'A' && cp <= 'Z')
        return cp + 32;
    if (cp < 0x80)
        return cp;
    if (cp >= 0xc0 && cp <= 0xde && cp != 0xd7)            /* Latin-1 */
        return cp + 32;
    if (cp >= 0x100 && cp <= 0x17f && cp != 0x130 && cp != 0x131 && cp != 0x138 &&
        cp != 0x149 && cp != 0x17f) {                       /* Latin Extended-A pairs */
        if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17e))
            return (cp & 1) ? cp + 1 : cp;
        return (cp & 1) ? cp : cp + 1;
    }
    if (cp >= 0x391 && cp <= 0x3ab && cp != 0x3a2)          /* Greek */
        return cp + 32;
    if (cp >= 0x410 && cp <= 0x42f)                         /* Cyrillic */
        return cp + 32;
    if (cp >= 0x400 && cp <= 0x40f)
        return cp + 80;
    return cp;
}

static bool osp_bayes__word_char(uint32_t cp)
{
    if (cp < 0x80)
        return isalnum((int)cp) || cp == '$' || cp == '\'' || cp == '-';
    /* Non-ASCII letters: skip the Latin-1 punctuation block and the general
     * punctuation, symbols and replacement characters. */
    if (cp < 0xc0 || cp == 0xd7 || cp == 0xf7)
        return false;
    if ((cp >= 0x2000 && cp <= 0x2bff) || (cp >= 0x3000 && cp <= 0x303f) || cp == 0xfffd ||
        (cp >= 0xfe00 && cp <= 0xfe0f) || cp == 0xfeff)
        return false;
    return true;
}

static size_t osp_bayes__put_utf8(char *out, uint32_t cp)
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
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

void osp_bayes_tokenize_text(osp_bayes_tokens_t *t, const char *prefix, const char *s,
                             size_t len, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    char word[OSP_BAYES_MAX_WORD + 8], prev[OSP_BAYES_MAX_WORD + 8];
    char prev2[OSP_BAYES_MAX_WORD + 8];
    size_t wlen = 0, raw = 0, prevlen = 0, prev2len = 0;
    bool overlong = false;
    char first = 0;
    char bprefix[OSP_BAYES_MAX_TOKEN];

    osp_snprintf(bprefix, sizeof(bprefix), "%sb:", prefix);
    for (;;) {
        uint32_t cp = 0;
        size_t n = 0;
        bool wc;

        if (p < end) {
            n = osp_bayes__utf8(p, (size_t)(end - p), &cp);
            wc = osp_bayes__word_char(cp);
        } else {
            wc = false;
        }
        if (wc) {
            cp = osp_bayes__fold(cp);
            if (raw == 0)
                first = cp < 0x80 ? (char)cp : 'u';
            raw += n;
            /* Folding keeps the UTF-8 length (n) of every code point it maps. */
            if (!overlong && wlen + n <= OSP_BAYES_MAX_WORD)
                wlen += osp_bayes__put_utf8(word + wlen, cp);
            else
                overlong = true;
            p += n;
            continue;
        }
        if (raw) {
            /* Trim punctuation we allowed inside words from the ends. */
            size_t b = 0, e = wlen;
            while (b < e && (word[b] == '\'' || word[b] == '-'))
                b++;
            while (e > b && (word[e - 1] == '\'' || word[e - 1] == '-'))
                e--;
            if (overlong || raw > OSP_BAYES_MAX_WORD) {
                char skip[32];
                int sn = osp_snprintf(skip, sizeof(skip), "skip:%c %zu", first, raw / 10 * 10);
                osp_bayes_tokens_add(t, prefix, skip, (size_t)sn);
                prevlen = prev2len = 0;
            } else if (e - b >= OSP_BAYES_MIN_WORD) {
                osp_bayes_tokens_add(t, prefix, word + b, e - b);
                if ((flags & OSP_BAYES_BIGRAMS) && prevlen) {
                    char pair[2 * OSP_BAYES_MAX_WORD + 20];
                    memcpy(pair, prev, prevlen);
                    pair[prevlen] = ' ';
                    memcpy(pair + prevlen + 1, word + b, e - b);
                    osp_bayes_tokens_add(t, bprefix, pair, prevlen + 1 + e - b);
                }
                if ((flags & OSP_BAYES_SPARSE) && prev2len) {
                    char pair[2 * OSP_BAYES_MAX_WORD + 20];
                    memcpy(pair, prev2, prev2len);
                    memcpy(pair + prev2len, " * ", 3);
                    memcpy(pair + prev2len + 3, word + b, e - b);
                    osp_bayes_tokens_add(t, bprefix, pair, prev2len + 3 + e - b);
                }
                memcpy(prev2, prev, prevlen);
                prev2len = prevlen;
                memcpy(prev, word + b, e - b);
                prevlen = e - b;
            }
            wlen = raw = 0;
            overlong = false;
        }
        if (p >= end)
            break;
        p += n;
    }
}

/* ------------------------------------------------------------------ */
/* Header and structure tokens */

static void osp_bayes__lower_add(osp_bayes_tokens_t *t, const char *prefix, const char *s,
                                 size_t len)
{
    char buf[OSP_BAYES_MAX_TOKEN];
    size_t i;

    if (len > sizeof(buf))
        len = sizeof(buf);
    for (i = 0; i < len; i++)
        buf[i] = (char)tolower((unsigned char)s[i]);
    osp_bayes_tokens_add(t, prefix, buf, len);
}

static bool osp_bayes__addr_char(unsigned char c)
{
    return isalnum(c) || c == '.' || c == '-' || c == '_' || c == '+' || c == '%' || c == '=';
}

/* Addresses found in a header value: "P:addr" and "P:@domain". */
static void osp_bayes__addresses(osp_bayes_tokens_t *t, const char *prefix, const char *v)
{
    const char *at = v;
    char pre[32];

    osp_snprintf(pre, sizeof(pre), "%s@", prefix);
    while ((at = strchr(at, '@')) != NULL) {
        const char *b = at, *e = at + 1;
        while (b > v && osp_bayes__addr_char((unsigned char)b[-1]))
            b--;
        while (*e && osp_bayes__addr_char((unsigned char)*e))
            e++;
        if (e > at + 1) {
            osp_bayes__lower_add(t, prefix, b, (size_t)(e - b));
            osp_bayes__lower_add(t, pre, at + 1, (size_t)(e - at - 1));
        }
        at = e;
    }
}

/* Split on blanks and ()[]<>;, keeping dotted names and IP addresses. */
static void osp_bayes__header_words(osp_bayes_tokens_t *t, const char *prefix, const char *v)
{
    const char *p = v;

    while (*p) {
        const char *b;
        while (*p && (isspace((unsigned char)*p) || strchr("()[]<>;,\"=", *p)))
            p++;
        b = p;
        while (*p && !isspace((unsigned char)*p) && !strchr("()[]<>;,\"=", *p))
            p++;
        if (p - b >= 3 && p - b <= 64)
            osp_bayes__lower_add(t, prefix, b, (size_t)(p - b));
    }
}

/* URL host and its parent domains down to two labels. */
static void osp_bayes__host(osp_bayes_tokens_t *t, const char *host)
{
    const char *d = host;
    int labels = 0;

    osp_bayes_tokens_add(t, "url:", host, strlen(host));
    for (const char *q = host; *q; q++)
        if (*q == '.')
            labels++;
    while (labels > 1 && (d = strchr(d, '.')) != NULL) {
        d++;
        labels--;
        osp_bayes_tokens_add(t, "url:.", d, strlen(d));
    }
}

/* URL paths as words, URL oddities, links whose text names another host,
 * and invisible HTML text. */
static void osp_bayes__url_words(osp_bayes_tokens_t *t, const osp_mime_message_t *m)
{
    static const struct { unsigned flag; const char *name; } uf[] = {
        { OSP_URL_F_NO_SCHEME, "noscheme" }, { OSP_URL_F_HXXP, "hxxp" },
        { OSP_URL_F_SLASHES, "slashes" }, { OSP_URL_F_USERINFO, "userinfo" },
        { OSP_URL_F_PCT_HOST, "pcthost" }, { OSP_URL_F_IDN, "idn" }, { OSP_URL_F_IP, "ip" },
    };
    size_t i, k, nurl = m->urls.n_urls < 100 ? m->urls.n_urls : 100;

    for (i = 0; i < nurl; i++) {
        const osp_url_t *u = &m->urls.urls[i];
        const char *path = strstr(u->url, "://");
        path = path ? strchr(path + 3, '/') : NULL;
        if (path)
            osp_bayes_tokenize_text(t, "urlp:", path, strlen(path), 0);
        for (k = 0; k < sizeof(uf) / sizeof(uf[0]); k++)
            if (u->flags & uf[k].flag)
                osp_bayes_tokens_add(t, "urlf:", uf[k].name, strlen(uf[k].name));
    }
    for (i = 0; i < m->n_links && i < 100; i++) {
        const osp_html_link_t *l = &m->links[i];
        if (l->text_host[0] && l->host[0] && strcmp(l->text_host, l->host) != 0)
            osp_bayes_tokens_add(t, "link:", "mismatch", 8);
    }
    if (m->invisible_len)
        osp_bayes_tokenize_text(t, "inv:", m->invisible,
                                m->invisible_len < 4096 ? m->invisible_len : 4096, 0);
}

void osp_bayes_tokenize(const osp_mime_message_t *m, unsigned flags, osp_bayes_tokens_t *t)
{
    const osp_mime_part_t *root = m->n_parts ? &m->parts[0] : NULL;
    size_t i, nh = 0;
    uint64_t bit;

    osp_bayes__tokens_reset(t);
    if (root) {
        for (i = 0; i < root->n_headers; i++) {
            const osp_mime_header_t *h = &root->headers[i];
            const char *v = h->value ? h->value : "";
            char hn[48];
            size_t k, nl = strlen(h->name);

            if (nl >= sizeof(hn))
                nl = sizeof(hn) - 1;
            for (k = 0; k < nl; k++)
                hn[k] = (char)tolower((unsigned char)h->name[k]);
            hn[nl] = '\0';
            osp_bayes_tokens_add(t, "hdr:", hn, nl);
            if (strcmp(hn, "subject") == 0) {
                osp_bayes_tokenize_text(t, "subject:", v, strlen(v), flags);
            } else if (strcmp(hn, "from") == 0 || strcmp(hn, "reply-to") == 0) {
                osp_bayes__addresses(t, "from:", v);
                osp_bayes_tokenize_text(t, "fromname:", v, strcspn(v, "<"), 0);
            } else if (strcmp(hn, "to") == 0 || strcmp(hn, "cc") == 0) {
                osp_bayes__addresses(t, "to:", v);
            } else if (strcmp(hn, "return-path") == 0) {
                osp_bayes__addresses(t, "rp:", v);
            } else if (strcmp(hn, "received") == 0) {
                size_t from = t->n;
                osp_bayes__header_words(t, "rcvd:", v);
                osp_bayes__trace(t, from);
            } else if (strcmp(hn, "content-type") == 0) {
                osp_bayes__header_words(t, "ct:", v);
            } else if (strcmp(hn, "x-mailer") == 0 || strcmp(hn, "user-agent") == 0) {
                osp_bayes__lower_add(t, "xm:", v, strlen(v) > 60 ? 60 : strlen(v));
                osp_bayes_tokenize_text(t, "xmw:", v, strlen(v), 0);
            } else if (strcmp(hn, "message-id") == 0) {
                const char *at = strrchr(v, '@');
                if (at) {
                    size_t dl = strcspn(at + 1, ">");
                    osp_bayes__lower_add(t, "mid:", at + 1, dl);
                } else {
                    osp_bayes_tokens_add(t, "mid:", "none", 4);
                }
            } else if ((flags & OSP_BAYES_ALLHEADERS) && nh++ < 64) {
                char pre[64];
                osp_snprintf(pre, sizeof(pre), "h:%s:", hn);
                osp_bayes__header_words(t, pre, v);
            }
        }
    }
    for (i = 1; i < m->n_parts; i++)
        osp_bayes__lower_add(t, "part:", m->parts[i].type, strlen(m->parts[i].type));
    for (i = 0; i < m->urls.n_hosts; i++)
        osp_bayes__host(t, m->urls.hosts[i]);
    osp_bayes__url_words(t, m);
    for (i = 0; i < m->n_attachments; i++) {
        const osp_mime_part_t *a = &m->parts[m->attachments[i]];
        const char *dot = strrchr(a->filename, '.');

        osp_bayes_tokens_add(t, "att:", a->declared_type, strlen(a->declared_type));
        osp_bayes_tokens_add(t, "atts:", a->sniffed, strlen(a->sniffed));
        if (dot && strlen(dot) <= 12)
            osp_bayes__lower_add(t, "atte:", dot, strlen(dot));
    }
    for (bit = 1; bit; bit <<= 1) {
        if (m->anomalies & bit) {
            const char *name = osp_mime_anomaly_name(bit);
            if (name)
                osp_bayes_tokens_add(t, "anom:", name, strlen(name));
        }
    }
    if (m->text_len)
        osp_bayes_tokenize_text(t, "", m->text, m->text_len, flags);
    if (m->n_invisible)
        osp_bayes_tokens_add(t, "html:", "invisible", 9);
    osp_bayes_tokens_finish(t);
}

/* ------------------------------------------------------------------ */
/* Count table: open addressing on (account, hash) */

#define OSP_BAYES_EMPTY   UINT32_MAX
#define OSP_BAYES_DELETED (UINT32_MAX - 1)

typedef struct osp_bayes_entry {
    uint64_t h;
    uint32_t account;   /* OSP_BAYES_EMPTY / OSP_BAYES_DELETED mark free slots */
    uint32_t spam, ham;
    uint32_t day;
} osp_bayes_entry_t;

typedef struct osp_bayes_table {
    osp_bayes_entry_t *e;
    size_t mask;        /* slots - 1 (power of two) */
    size_t used;        /* live entries */
    size_t deleted;
} osp_bayes_table_t;

struct osp_bayes {
    osp_bayes_params_t params;
    osp_bayes_table_t tokens;   /* tokens, and per-account totals at hash 0 */
    osp_bayes_table_t trained;  /* (account, message key) -> spam=1 or ham=1 */
};

static void osp_bayes__table_init(osp_bayes_table_t *tb, size_t slots)
{
    size_t i;

    tb->e = osp_malloc(slots * sizeof(osp_bayes_entry_t));
    for (i = 0; i < slots; i++)
        tb->e[i].account = OSP_BAYES_EMPTY;
    tb->mask = slots - 1;
    tb->used = tb->deleted = 0;
}

static inline size_t osp_bayes__slot(uint32_t account, uint64_t h)
{
    return (size_t)osp_bayes__mix(h ^ ((uint64_t)account * UINT64_C(0x9e3779b97f4a7c15)));
}

static const osp_bayes_entry_t *osp_bayes__find(const osp_bayes_table_t *tb, uint32_t account,
                                                uint64_t h)
{
    size_t i = osp_bayes__slot(account, h) & tb->mask;

    for (;;) {
        const osp_bayes_entry_t *e = &tb->e[i];
        if (e->account == OSP_BAYES_EMPTY)
            return NULL;
        if (e->account == account && e->h == h)
            return e;
        i = (i + 1) & tb->mask;
    }
}

static void osp_bayes__rehash(osp_bayes_table_t *tb, size_t slots)
{
    osp_bayes_table_t old = *tb;
    size_t i;

    osp_bayes__table_init(tb, slots);
    for (i = 0; i <= old.mask; i++) {
        osp_bayes_entry_t *e = &old.e[i];
        size_t j;
        if (e->account >= OSP_BAYES_DELETED)
            continue;
        j = osp_bayes__slot(e->account, e->h) & tb->mask;
        while (tb->e[j].account != OSP_BAYES_EMPTY)
            j = (j + 1) & tb->mask;
        tb->e[j] = *e;
        tb->used++;
    }
    free(old.e);
}

/* Find or insert; never returns NULL. */
static osp_bayes_entry_t *osp_bayes__get(osp_bayes_table_t *tb, uint32_t account, uint64_t h)
{
    size_t i, tomb = SIZE_MAX;

    if ((tb->used + tb->deleted + 1) * 10 > (tb->mask + 1) * 7)
        osp_bayes__rehash(tb, tb->used * 10 > (tb->mask + 1) * 4 ? (tb->mask + 1) * 2
                                                                 : tb->mask + 1);
    i = osp_bayes__slot(account, h) & tb->mask;
    for (;;) {
        osp_bayes_entry_t *e = &tb->e[i];
        if (e->account == OSP_BAYES_EMPTY)
            break;
        if (e->account == OSP_BAYES_DELETED) {
            if (tomb == SIZE_MAX)
                tomb = i;
        } else if (e->account == account && e->h == h) {
            return e;
        }
        i = (i + 1) & tb->mask;
    }
    if (tomb != SIZE_MAX) {
        i = tomb;
        tb->deleted--;
    }
    tb->e[i].h = h;
    tb->e[i].account = account;
    tb->e[i].spam = tb->e[i].ham = tb->e[i].day = 0;
    tb->used++;
    return &tb->e[i];
}

static void osp_bayes__del(osp_bayes_table_t *tb, osp_bayes_entry_t *e)
{
    e->account = OSP_BAYES_DELETED;
    tb->used--;
    tb->deleted++;
}

void osp_bayes_params_default(osp_bayes_params_t *p)
{
    p->robinson_s = 1.0;
    p->user_s = 3.0;
    p->min_dev = 0.1;
    p->max_tokens = 150;
    p->min_count = 1;
    p->autolearn_spam = 12.0;
    p->autolearn_ham = -2.0;
    p->autolearn_sure = 0.001;
}

osp_bayes_t *osp_bayes_create(const osp_bayes_params_t *params)
{
    osp_bayes_t *b = osp_calloc(1, sizeof(*b));

    if (params)
        b->params = *params;
    else
        osp_bayes_params_default(&b->params);
    osp_bayes__table_init(&b->tokens, 1024);
    osp_bayes__table_init(&b->trained, 256);
    return b;
}

void osp_bayes_free(osp_bayes_t **bp)
{
    osp_bayes_t *b = *bp;

    if (b == NULL)
        return;
    free(b->tokens.e);
    free(b->trained.e);
    free(b);
    *bp = NULL;
}

size_t osp_bayes_size(const osp_bayes_t *b)
{
    return b->tokens.used;
}

void osp_bayes_message_key(const osp_bayes_tokens_t *t, uint8_t key_r[OSP_BAYES_KEY_LEN])
{
    uint64_t *keep = osp_malloc((t->n ? t->n : 1) * sizeof(uint64_t));
    size_t n = 0, i, j = 0;
    unsigned k;

    /* both sorted: the message's tokens that are not trace tokens */
    for (i = 0; i < t->n; i++) {
        while (j < t->ntrace && t->trace[j] < t->hash[i])
            j++;
        if (j < t->ntrace && t->trace[j] == t->hash[i])
            continue;
        keep[n++] = t->hash[i];
    }
    for (k = 0; k < OSP_BAYES_KEY_LEN / 8; k++) {
        uint64_t h = osp_bayes_hash(keep, n * sizeof(uint64_t),
                                    OSP_BAYES_SEED ^ (UINT64_C(0x4d5347) + k));
        memcpy(key_r + 8 * k, &h, 8);
    }
    free(keep);
}

void osp_bayes_tokenize_message(const void *data, size_t len, osp_bayes_tokens_t *t)
{
    osp_mime_message_t *m = osp_mime_parse(data != NULL ? data : "", len, NULL);

    osp_bayes_tokenize(m, 0, t);
    osp_mime_message_free(&m);
}

void osp_bayes_train_params(const osp_bayes_tokens_t *t, char key_r[OSP_BAYES_KEY_HEX_SIZE],
                            osp_buf_t *array_r)
{
    uint8_t key[OSP_BAYES_KEY_LEN];
    size_t i;

    osp_bayes_message_key(t, key);
    key_r[0] = '\\';
    key_r[1] = 'x';
    for (i = 0; i < OSP_BAYES_KEY_LEN; i++)
        snprintf(key_r + 2 + 2 * i, 3, "%02x", key[i]);
    osp_buf_reset(array_r);
    osp_buf_append_char(array_r, '{');
    for (i = 0; i < t->n; i++)
        osp_buf_printf(array_r, "%s%lld", i ? "," : "", (long long)(int64_t)t->hash[i]);
    osp_buf_append_char(array_r, '}');
}

static void osp_bayes__bump(uint32_t *c, int delta)
{
    if (delta > 0)
        *c += (*c < UINT32_MAX);
    else if (*c > 0)
        (*c)--;
}

static void osp_bayes__apply(osp_bayes_t *b, uint32_t account, const uint64_t *hashes,
                             size_t n, bool spam, int delta, uint32_t day)
{
    uint32_t accts[2] = { account, 0 };
    size_t na = account ? 2 : 1, a, i;

    for (a = 0; a < na; a++) {
        osp_bayes_entry_t *tot = osp_bayes__get(&b->tokens, accts[a], OSP_BAYES_TOTALS);
        osp_bayes__bump(spam ? &tot->spam : &tot->ham, delta);
        for (i = 0; i < n; i++) {
            osp_bayes_entry_t *e;
            if (hashes[i] == OSP_BAYES_TOTALS)
                continue;       /* not a token hash (cannot come from osp_bayes_hash) */
            e = osp_bayes__get(&b->tokens, accts[a], hashes[i]);
            osp_bayes__bump(spam ? &e->spam : &e->ham, delta);
            if (day > e->day)
                e->day = day;
            if (e->spam == 0 && e->ham == 0)
                osp_bayes__del(&b->tokens, e);
        }
    }
}

/* Train (or with forget, untrain) hashes[0..n) under message key. */
static enum osp_bayes_train_result osp_bayes__train(osp_bayes_t *b, uint32_t account,
                                                    const uint8_t key[OSP_BAYES_KEY_LEN],
                                                    bool spam, bool forget,
                                                    const uint64_t *hashes, size_t n,
                                                    uint32_t day)
{
    uint64_t k;
    osp_bayes_entry_t *m;
    bool was_spam, was_ham;

    memcpy(&k, key, sizeof(k));
    if (forget) {
        const osp_bayes_entry_t *c = osp_bayes__find(&b->trained, account, k);
        if (c == NULL)
            return OSP_BAYES_NOT_TRAINED;
        m = (osp_bayes_entry_t *)c;
        osp_bayes__apply(b, account, hashes, n, m->spam != 0, -1, 0);
        osp_bayes__del(&b->trained, m);
        return OSP_BAYES_UNTRAINED;
    }
    m = osp_bayes__get(&b->trained, account, k);
    was_spam = m->spam != 0;
    was_ham = m->ham != 0;
    if ((spam && was_spam) || (!spam && was_ham))
        return OSP_BAYES_UNCHANGED;
    if (was_spam || was_ham)
        osp_bayes__apply(b, account, hashes, n, was_spam, -1, day);
    osp_bayes__apply(b, account, hashes, n, spam, +1, day);
    m->spam = spam;
    m->ham = !spam;
    m->day = day;
    return (was_spam || was_ham) ? OSP_BAYES_RETRAINED : OSP_BAYES_TRAINED;
}

enum osp_bayes_train_result osp_bayes_train(osp_bayes_t *b, uint32_t account,
                                            const osp_bayes_tokens_t *t, bool spam,
                                            uint32_t day)
{
    uint8_t key[OSP_BAYES_KEY_LEN];

    osp_bayes_message_key(t, key);
    return osp_bayes__train(b, account, key, spam, false, t->hash, t->n, day);
}

enum osp_bayes_train_result osp_bayes_untrain(osp_bayes_t *b, uint32_t account,
                                              const osp_bayes_tokens_t *t)
{
    uint8_t key[OSP_BAYES_KEY_LEN];

    osp_bayes_message_key(t, key);
    return osp_bayes__train(b, account, key, false, true, t->hash, t->n, 0);
}

static int osp_bayes__mem_lookup_cb(void *ctx, uint32_t account, const uint64_t *hashes,
                                    size_t n, osp_bayes_count_t *counts_r,
                                    osp_bayes_count_t *totals_r, const char **error_r)
{
    (void)error_r;
    osp_bayes_lookup(ctx, account, hashes, n, counts_r, totals_r);
    return 0;
}

static int osp_bayes__mem_train_cb(void *ctx, uint32_t account,
                                   const uint8_t key[OSP_BAYES_KEY_LEN], bool spam, bool forget,
                                   const uint64_t *hashes, size_t n, uint32_t day,
                                   enum osp_bayes_train_result *result_r, const char **error_r)
{
    (void)error_r;
    *result_r = osp_bayes__train(ctx, account, key, spam, forget, hashes, n, day);
    return 0;
}

void osp_bayes_store_memory(osp_bayes_t *b, osp_bayes_store_t *store_r)
{
    store_r->ctx = b;
    store_r->lookup = osp_bayes__mem_lookup_cb;
    store_r->train = osp_bayes__mem_train_cb;
}

const osp_bayes_params_t *osp_bayes_params(const osp_bayes_t *b)
{
    return &b->params;
}

/* ------------------------------------------------------------------ */
/* Token file */

#define OSP_BAYES_FILE_MAGIC "OSPBAY01"

static int osp_bayes__write_table(FILE *f, const osp_bayes_table_t *tb)
{
    uint64_t n = tb->used;
    size_t i;

    if (fwrite(&n, sizeof(n), 1, f) != 1)
        return -1;
    for (i = 0; i <= tb->mask; i++)
        if (tb->e[i].account < OSP_BAYES_DELETED &&
            fwrite(&tb->e[i], sizeof(osp_bayes_entry_t), 1, f) != 1)
            return -1;
    return 0;
}

int osp_bayes_save(const osp_bayes_t *b, const char *path, const char **error_r)
{
    size_t plen = strlen(path) + 5;
    char *tmp = osp_malloc(plen);
    FILE *f;
    int ok;

    osp_snprintf(tmp, plen, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (f == NULL) {
        *error_r = "cannot create the temporary file";
        free(tmp);
        return -1;
    }
    ok = fwrite(OSP_BAYES_FILE_MAGIC, 8, 1, f) == 1 &&
         osp_bayes__write_table(f, &b->tokens) == 0 &&
         osp_bayes__write_table(f, &b->trained) == 0;
    ok = (fflush(f) == 0) & ok;
    ok = (fsync(fileno(f)) == 0) & ok;
    ok = (fclose(f) == 0) & ok;
    if (!ok || rename(tmp, path) < 0) {
        *error_r = ok ? "cannot rename the temporary file" : "write error";
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

static int osp_bayes__read_table(FILE *f, osp_bayes_table_t *tb)
{
    uint64_t n, i;
    size_t slots = 1024;

    struct stat st;
    long pos;

    /* A count the file cannot hold is corrupt: do not allocate for it. */
    if (fread(&n, sizeof(n), 1, f) != 1 || fstat(fileno(f), &st) < 0 ||
        (pos = ftell(f)) < 0 || st.st_size < pos ||
        n > (uint64_t)(st.st_size - pos) / sizeof(osp_bayes_entry_t))
        return -1;
    while (slots * 7 < n * 10 + 10)
        slots *= 2;
    free(tb->e);
    osp_bayes__table_init(tb, slots);
    for (i = 0; i < n; i++) {
        osp_bayes_entry_t e, *d;
        if (fread(&e, sizeof(e), 1, f) != 1 || e.account >= OSP_BAYES_DELETED)
            return -1;
        d = osp_bayes__get(tb, e.account, e.h);
        *d = e;
    }
    return 0;
}

osp_bayes_t *osp_bayes_load(const char *path, const osp_bayes_params_t *params,
                            const char **error_r)
{
    FILE *f = fopen(path, "rb");
    char magic[8];
    osp_bayes_t *b;

    if (f == NULL) {
        *error_r = errno == ENOENT ? "no such file" : "cannot open";
        return NULL;
    }
    b = osp_bayes_create(params);
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, OSP_BAYES_FILE_MAGIC, 8) != 0 ||
        osp_bayes__read_table(f, &b->tokens) < 0 || osp_bayes__read_table(f, &b->trained) < 0 ||
        fgetc(f) != EOF) {
        fclose(f);
        osp_bayes_free(&b);
        *error_r = "not an Osprey token file, or truncated";
        errno = EINVAL;
        return NULL;
    }
    fclose(f);
    return b;
}

void osp_bayes_counts(const osp_bayes_t *b, uint32_t account, uint64_t h, uint32_t *spam_r,
                      uint32_t *ham_r)
{
    const osp_bayes_entry_t *e = osp_bayes__find(&b->tokens, account, h);

    *spam_r = e ? e->spam : 0;
    *ham_r = e ? e->ham : 0;
}

static void osp_bayes__put(osp_bayes_t *b, uint32_t account, uint64_t h, uint32_t spam,
                           uint32_t ham, uint32_t day)
{
    osp_bayes_entry_t *e;

    if (spam == 0 && ham == 0) {
        const osp_bayes_entry_t *c = osp_bayes__find(&b->tokens, account, h);
        if (c)
            osp_bayes__del(&b->tokens, (osp_bayes_entry_t *)c);
        return;
    }
    e = osp_bayes__get(&b->tokens, account, h);
    e->spam = spam;
    e->ham = ham;
    e->day = day;
}

void osp_bayes_put(osp_bayes_t *b, uint32_t account, uint64_t h, uint32_t spam, uint32_t ham,
                   uint32_t day)
{
    if (h == OSP_BAYES_TOTALS)
        abort();        /* not a token hash: a caller bug */
    osp_bayes__put(b, account, h, spam, ham, day);
}

void osp_bayes_put_totals(osp_bayes_t *b, uint32_t account, uint32_t nspam, uint32_t nham)
{
    osp_bayes__put(b, account, OSP_BAYES_TOTALS, nspam, nham, 0);
}

void osp_bayes_totals(const osp_bayes_t *b, uint32_t account, uint32_t *nspam_r,
                      uint32_t *nham_r)
{
    osp_bayes_counts(b, account, OSP_BAYES_TOTALS, nspam_r, nham_r);
}

size_t osp_bayes_expire(osp_bayes_t *b, uint32_t min_day, uint32_t max_count)
{
    size_t i, n = 0;

    for (i = 0; i <= b->tokens.mask; i++) {
        osp_bayes_entry_t *e = &b->tokens.e[i];
        if (e->account >= OSP_BAYES_DELETED || e->h == OSP_BAYES_TOTALS)
            continue;
        if (e->day < min_day && (uint64_t)e->spam + e->ham <= max_count) {
            osp_bayes__del(&b->tokens, e);
            n++;
        }
    }
    if (b->tokens.deleted * 4 > b->tokens.mask + 1)
        osp_bayes__rehash(&b->tokens, b->tokens.mask + 1);
    return n;
}

/* ------------------------------------------------------------------ */
/* Classification */

double osp_bayes_chi2q(double x2, unsigned v)
{
    double m = x2 / 2.0, sum, term;
    unsigned i;

    sum = term = exp(-m);
    for (i = 1; i < v / 2; i++) {
        term *= m / i;
        sum += term;
    }
    return sum < 1.0 ? sum : 1.0;
}

/* Ratio of spam frequency to total frequency, as in Graham/Robinson. */
static double osp_bayes__ratio(uint32_t s, uint32_t h, uint32_t ns, uint32_t nh)
{
    double fs = (double)s / (ns ? ns : 1), fh = (double)h / (nh ? nh : 1);

    return fs + fh > 0 ? fs / (fs + fh) : 0.5;
}

static int osp_bayes__cmp_clue(const void *a, const void *b)
{
    double da = fabs(((const osp_bayes_clue_t *)a)->prob - 0.5);
    double db = fabs(((const osp_bayes_clue_t *)b)->prob - 0.5);

    return da < db ? 1 : da > db ? -1 : 0;
}

void osp_bayes_lookup(const osp_bayes_t *b, uint32_t account, const uint64_t *hashes,
                      size_t n, osp_bayes_count_t *counts_r, osp_bayes_count_t *totals_r)
{
    size_t i;

    memset(totals_r, 0, sizeof(*totals_r));
    osp_bayes_totals(b, 0, &totals_r->gspam, &totals_r->gham);
    if (account)
        osp_bayes_totals(b, account, &totals_r->spam, &totals_r->ham);
    for (i = 0; i < n; i++) {
        osp_bayes_count_t *c = &counts_r[i];
        osp_bayes_counts(b, 0, hashes[i], &c->gspam, &c->gham);
        c->spam = c->ham = 0;
        /* A user's count is never above the global one: skip the probe. */
        if (account && (c->gspam || c->gham))
            osp_bayes_counts(b, account, hashes[i], &c->spam, &c->ham);
    }
}

void osp_bayes_score(const osp_bayes_params_t *pr, const uint64_t *hashes, size_t n_hashes,
                     const osp_bayes_count_t *counts, const osp_bayes_count_t *totals,
                     bool account_data, osp_bayes_result_t *res)
{
    size_t i, n = 0;
    double sum_ln_p = 0, sum_ln_q = 0, s, h;

    memset(res, 0, sizeof(*res));
    res->prob = 0.5;
    if (n_hashes == 0)
        return;
    res->clues = osp_malloc(n_hashes * sizeof(osp_bayes_clue_t));
    for (i = 0; i < n_hashes; i++) {
        const osp_bayes_count_t *k = &counts[i];
        osp_bayes_clue_t c;
        double f, ng, nu;

        c.hash = hashes[i];
        c.gspam = k->gspam;
        c.gham = k->gham;
        c.spam = account_data ? k->spam : 0;
        c.ham = account_data ? k->ham : 0;
        ng = (double)c.gspam + c.gham;
        if (ng < pr->min_count)
            continue;
        f = (pr->robinson_s * 0.5 +
             ng * osp_bayes__ratio(c.gspam, c.gham, totals->gspam, totals->gham)) /
            (pr->robinson_s + ng);
        nu = (double)c.spam + c.ham;
        if (nu > 0)
            f = (pr->user_s * f + nu * osp_bayes__ratio(c.spam, c.ham, totals->spam,
                                                        totals->ham)) / (pr->user_s + nu);
        if (fabs(f - 0.5) < pr->min_dev)
            continue;
        if (f < 0.0001)
            f = 0.0001;
        if (f > 0.9999)
            f = 0.9999;
        c.prob = f;
        res->clues[n++] = c;
    }
    qsort(res->clues, n, sizeof(osp_bayes_clue_t), osp_bayes__cmp_clue);
    if (n > pr->max_tokens)
        n = pr->max_tokens;
    res->n_clues = n;
    if (n == 0)
        return;
    for (i = 0; i < n; i++) {
        sum_ln_p += log(res->clues[i].prob);
        sum_ln_q += log(1.0 - res->clues[i].prob);
    }
    /* Fisher: H and S are how unlikely the clues are as ham and as spam. */
    s = 1.0 - osp_bayes_chi2q(-2.0 * sum_ln_q, 2 * (unsigned)n);
    h = 1.0 - osp_bayes_chi2q(-2.0 * sum_ln_p, 2 * (unsigned)n);
    res->prob = (s - h + 1.0) / 2.0;
}

void osp_bayes_classify(const osp_bayes_t *b, uint32_t account, const osp_bayes_tokens_t *t,
                        osp_bayes_result_t *res)
{
    osp_bayes_count_t totals, *counts = osp_malloc((t->n ? t->n : 1) * sizeof(*counts));

    osp_bayes_lookup(b, account, t->hash, t->n, counts, &totals);
    osp_bayes_score(&b->params, t->hash, t->n, counts, &totals, account != 0, res);
    free(counts);
}

int osp_bayes_classify_store(const osp_bayes_store_t *store, const osp_bayes_params_t *p,
                             uint32_t account, const osp_bayes_tokens_t *t,
                             osp_bayes_result_t *res, const char **error_r)
{
    osp_bayes_count_t totals, *counts = osp_malloc((t->n ? t->n : 1) * sizeof(*counts));

    if (store->lookup(store->ctx, account, t->hash, t->n, counts, &totals, error_r) < 0) {
        free(counts);
        memset(res, 0, sizeof(*res));
        res->prob = 0.5;
        return -1;
    }
    osp_bayes_score(p, t->hash, t->n, counts, &totals, account != 0, res);
    free(counts);
    return 0;
}

enum osp_bayes_autolearn osp_bayes_autolearn(const osp_bayes_params_t *p, double rules_score,
                                             double bayes_prob)
{
    if (rules_score >= p->autolearn_spam && bayes_prob < 1.0 - p->autolearn_sure)
        return OSP_BAYES_LEARN_SPAM;
    if (rules_score <= p->autolearn_ham && bayes_prob > p->autolearn_sure)
        return OSP_BAYES_LEARN_HAM;
    return OSP_BAYES_LEARN_NONE;
}

void osp_bayes_result_close(osp_bayes_result_t *res)
{
    OSP_FREE(&res->clues);
    res->n_clues = 0;
}
