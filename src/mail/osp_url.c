/* osp_url: URL extraction and normalisation, de-duplicating URL lists. */
#include "config.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "osp_buf.h"
#include "osp_mem.h"
#include "osp_url.h"

#define URL_INPUT_MAX   8192    /* bytes of a candidate we look at */
#define HOST_INPUT_MAX  1024    /* raw (percent-encoded) host */
#define HOST_MAX        253
#define DEFAULT_MAX     1000
#define IDN_BUDGET      1024    /* libidn2 calls per list */

enum scheme { SCH_HTTP, SCH_HTTPS, SCH_FTP };

static const char *const scheme_name[] = { "http", "https", "ftp" };
static const unsigned scheme_port[] = { 80, 443, 21 };

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * A scheme at s ("http:", "hxxps:"): returns the bytes up to and including
 * the colon and sets *sch and the OSP_URL_F_HXXP flag; 0 if none.
 */
static size_t scheme_parse(const char *s, size_t n, enum scheme *sch, unsigned *fl)
{
    char w[8];
    size_t i;

    for (i = 0; i < n && i < sizeof(w) - 1 && (is_alpha((unsigned char)s[i]) || s[i] == '*'); i++)
        w[i] = (char)lower((unsigned char)s[i]);
    if (i == n || s[i] != ':' || i < 3 || i > 5)
        return 0;
    w[i] = '\0';
    if (strcmp(w, "http") == 0) {
        *sch = SCH_HTTP;
    } else if (strcmp(w, "https") == 0) {
        *sch = SCH_HTTPS;
    } else if (strcmp(w, "ftp") == 0) {
        *sch = SCH_FTP;
    } else if (strcmp(w, "ttp") == 0 || strcmp(w, "ttps") == 0) {
        *sch = i == 3 ? SCH_HTTP : SCH_HTTPS;
        *fl |= OSP_URL_F_HXXP;
    } else if ((i == 4 || (i == 5 && w[4] == 's')) && w[0] == 'h' && w[3] == 'p'
               && strchr("tx*", w[1]) && strchr("tx*", w[2])) {
        /* h??p(s) with ?? in {t,x,*}, not "tt": checked above as "http". */
        *sch = i == 4 ? SCH_HTTP : SCH_HTTPS;
        *fl |= OSP_URL_F_HXXP;
    } else {
        return 0;
    }
    return i + 1;
}

static bool starts_www(const char *s, size_t n)
{
    return n > 4 && lower((unsigned char)s[0]) == 'w' && lower((unsigned char)s[1]) == 'w'
        && lower((unsigned char)s[2]) == 'w' && s[3] == '.';
}

/* ---- IP addresses ---------------------------------------------------- */

/* One inet_aton() part: 0x hex, 0-prefixed octal or decimal. */
static int ipv4_part(const char *s, size_t n, uint64_t *v)
{
    unsigned base = 10;
    uint64_t x = 0;
    size_t i = 0;

    if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    } else if (n >= 2 && s[0] == '0') {
        base = 8;
        i = 1;
    }
    if (n == 0)
        return -1;
    for (; i < n; i++) {
        int d = hexval((unsigned char)s[i]);

        if (d < 0 || (unsigned)d >= base)
            return -1;
        x = x * base + (unsigned)d;
        if (x > 0xffffffffu)
            return -1;
    }
    *v = x;
    return 0;
}

/* Does the last label of host look like a number (WHATWG "ends in a number")? */
static bool ends_in_number(const char *h, size_t n)
{
    const char *dot = memrchr(h, '.', n);
    const char *l = dot ? dot + 1 : h;
    size_t ln = (size_t)(h + n - l), i;

    if (ln == 0)
        return false;
    for (i = 0; i < ln && is_digit((unsigned char)l[i]); i++)
        ;
    if (i == ln)
        return true;
    if (ln >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X')) {
        for (i = 2; i < ln && hexval((unsigned char)l[i]) >= 0; i++)
            ;
        return i == ln;
    }
    return false;
}

/* Parse host as inet_aton() IPv4 into out (dotted quad); -1 if invalid. */
static int ipv4_parse(const char *h, size_t n, char *out, size_t outsize)
{
    uint64_t part[4], addr = 0;
    size_t np = 0, start = 0, i;

    for (i = 0; i <= n; i++) {
        if (i == n || h[i] == '.') {
            if (np == 4 || ipv4_part(h + start, i - start, &part[np]) < 0)
                return -1;
            np++;
            start = i + 1;
        }
    }
    for (i = 0; i + 1 < np; i++) {
        if (part[i] > 255)
            return -1;
        addr |= part[i] << (8 * (3 - i));
    }
    if (part[np - 1] >= (1ull << (8 * (5 - np))))
        return -1;
    addr |= part[np - 1];
    snprintf(out, outsize, "%u.%u.%u.%u", (unsigned)(addr >> 24) & 255,
             (unsigned)(addr >> 16) & 255, (unsigned)(addr >> 8) & 255,
             (unsigned)addr & 255);
    return 0;
}

/* ---- Hosts ----------------------------------------------------------- */

/* Is s (n bytes) valid UTF-8?  Percent-decoding can produce anything. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t k, need;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            need = 1;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3;
        else
            return false;
        if (i + need >= n)
            return false;
        for (k = 1; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0)
            || (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90))
            return false;
        i += need + 1;
    }
    return true;
}

/*
 * Turn the raw host (len bytes, no port, no brackets) into its normal form
 * in out.  *idn_budget (NULL: unlimited) counts the libidn2 calls still
 * allowed; at 0 a non-ASCII host is kept as UTF-8 with OSP_URL_F_BAD_IDN.
 * Returns 0 or -1.
 */
static int host_normalize(const char *raw, size_t len, char *out, unsigned *fl, unsigned *idn_budget)
{
    char h[HOST_INPUT_MAX + 1];
    size_t n = 0, i;
    bool ascii = true;

    if (len == 0 || len > HOST_INPUT_MAX)
        return -1;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)raw[i];
        int a, b;

        if (c == '%' && i + 2 < len && (a = hexval((unsigned char)raw[i + 1])) >= 0
            && (b = hexval((unsigned char)raw[i + 2])) >= 0) {
            c = (unsigned char)(a * 16 + b);
            i += 2;
            *fl |= OSP_URL_F_PCT_HOST;
        }
        h[n++] = (char)c;
    }
    /* Ideographic and full-width full stops separate labels (UTS #46). */
    for (i = 0; i < n; i++) {
        const unsigned char *u = (const unsigned char *)h + i;

        if (u[0] < 0x80) {
            h[i] = (char)lower(u[0]);
            continue;
        }
        ascii = false;
        if (i + 2 < n && ((u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x82)
                          || (u[0] == 0xef && u[1] == 0xbc && u[2] == 0x8e)
                          || (u[0] == 0xef && u[1] == 0xbd && u[2] == 0xa1))) {
            h[i] = '.';
            memmove(h + i + 1, h + i + 3, n - i - 3);
            n -= 2;
        }
    }
    if (n > 0 && h[n - 1] == '.')
        n--;
    if (n == 0)
        return -1;
    h[n] = '\0';
    if (memchr(h, '\0', n))
        return -1;
    if (!ascii && !utf8_ok((const unsigned char *)h, n))
        return -1;
    if (!ascii && idn_budget && *idn_budget == 0) {
        *fl |= OSP_URL_F_BAD_IDN;
    } else if (!ascii) {
        char *res = NULL;
        int rc;

        if (idn_budget)
            (*idn_budget)--;
        rc = idn2_to_ascii_8z(h, &res, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
        if (rc != IDN2_OK) {
            idn2_free(res);
            res = NULL;
            rc = idn2_to_ascii_8z(h, &res, IDN2_NFC_INPUT | IDN2_TRANSITIONAL);
        }
        if (rc == IDN2_OK && strlen(res) <= HOST_MAX) {
            n = strlen(res);
            for (i = 0; i < n; i++)
                h[i] = (char)lower((unsigned char)res[i]);
            h[n] = '\0';
            *fl |= OSP_URL_F_IDN;
            ascii = true;
        } else {
            *fl |= OSP_URL_F_BAD_IDN;
        }
        idn2_free(res);
    }
    if (n > HOST_MAX)
        return -1;
    /* Labels: [a-z0-9_-] (and UTF-8 if libidn2 refused), none empty. */
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];

        if (c == '.') {
            if (i == 0 || h[i - 1] == '.')
                return -1;
        } else if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_' || (c >= 0x80 && !ascii))) {
            return -1;
        }
    }
    if (ascii && ends_in_number(h, n)) {
        if (ipv4_parse(h, n, out, OSP_URL_HOST_BUFSIZE) < 0)
            return -1;
        *fl |= OSP_URL_F_IP;
        if (strcmp(out, h) != 0)
            *fl |= OSP_URL_F_ODD_IP;
        return 0;
    }
    memcpy(out, h, n + 1);
    return 0;
}

/* ---- Normalisation --------------------------------------------------- */

static int url_normalize(const char *s, size_t len, unsigned opts, osp_buf_t *url_r,
                         char *host_r, unsigned *flags_r, unsigned *idn_budget)
{
    char w[URL_INPUT_MAX];
    size_t n = 0, i, p, auth, auth_end, host_start, host_end, restlen;
    enum scheme sch = SCH_HTTP;
    unsigned fl = 0, port = 0;
    bool has_port = false;
    const char *at;

    if (len > URL_INPUT_MAX)
        len = URL_INPUT_MAX;
    /* Trim blanks and controls; drop tabs and line breaks inside. */
    while (len > 0 && (unsigned char)s[0] <= ' ')
        s++, len--;
    while (len > 0 && (unsigned char)s[len - 1] <= ' ')
        len--;
    if (!memchr(s, '\t', len) && !memchr(s, '\n', len) && !memchr(s, '\r', len)) {
        memcpy(w, s, len);
        n = len;
    } else {
        for (i = 0; i < len; i++)
            if (s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
                w[n++] = s[i];
    }
    if (n < 3)
        return -1;

    p = scheme_parse(w, n, &sch, &fl);
    if (p > 0) {
        size_t k = p;

        while (k < n && (w[k] == '/' || w[k] == '\\'))
            k++;
        if (k - p != 2 || w[p] != '/' || w[p + 1] != '/')
            fl |= OSP_URL_F_SLASHES;
        p = k;
    } else if ((opts & OSP_URL_NORM_HREF) && n > 2 && w[0] == '/' && w[1] == '/') {
        fl |= OSP_URL_F_NO_SCHEME;
        p = 2;
    } else if (starts_www(w, n) || (opts & OSP_URL_NORM_BARE)) {
        fl |= OSP_URL_F_NO_SCHEME;
        p = 0;
    } else {
        return -1;
    }

    auth = p;
    for (auth_end = auth; auth_end < n; auth_end++) {
        char c = w[auth_end];

        if (c == '/' || c == '\\' || c == '?' || c == '#')
            break;
    }
    if (p == 0 && !starts_www(w, n) && memchr(w, '@', auth_end))
        return -1;  /* bare "user@example.com" is an address, not a URL */
    at = memrchr(w + auth, '@', auth_end - auth);
    host_start = auth;
    if (at) {
        host_start = (size_t)(at - w) + 1;
        fl |= OSP_URL_F_USERINFO;
    }
    host_end = auth_end;
    if (host_start < auth_end && w[host_start] == '[') {
        const char *rb = memchr(w + host_start, ']', auth_end - host_start);
        char v6[64];
        struct in6_addr a6;
        size_t vl;

        if (rb == NULL)
            return -1;
        vl = (size_t)(rb - w) - host_start - 1;
        if (vl == 0 || vl >= sizeof(v6))
            return -1;
        memcpy(v6, w + host_start + 1, vl);
        v6[vl] = '\0';
        if (inet_pton(AF_INET6, v6, &a6) != 1)
            return -1;
        host_r[0] = '[';
        inet_ntop(AF_INET6, &a6, host_r + 1, OSP_URL_HOST_BUFSIZE - 2);
        strcat(host_r, "]");
        fl |= OSP_URL_F_IP;
        host_end = (size_t)(rb - w) + 1;
        if (host_end < auth_end && w[host_end] != ':')
            return -1;
    } else {
        const char *colon = memchr(w + host_start, ':', auth_end - host_start);

        if (colon)
            host_end = (size_t)(colon - w);
        if (host_normalize(w + host_start, host_end - host_start, host_r, &fl, idn_budget) < 0)
            return -1;
    }
    if (host_end < auth_end) {      /* ":port" */
        size_t k;

        for (k = host_end + 1; k < auth_end; k++) {
            if (!is_digit((unsigned char)w[k]))
                return -1;
            if (port < 100000)
                port = port * 10 + (unsigned)(w[k] - '0');
        }
        if (port > 65535)
            return -1;
        has_port = k > host_end + 1 && port != scheme_port[sch];
    }
    if ((opts & OSP_URL_NORM_BARE) && (fl & OSP_URL_F_NO_SCHEME) && !(fl & OSP_URL_F_IP)) {
        const char *dot = strrchr(host_r, '.');
        size_t k;

        if (dot == NULL || strlen(dot + 1) < 2)
            return -1;
        for (k = 1; dot[k]; k++)
            if (!is_alpha((unsigned char)dot[k]))
                return -1;
    }

    osp_buf_reset(url_r);
    osp_buf_append_str(url_r, scheme_name[sch]);
    osp_buf_append(url_r, "://", 3);
    osp_buf_append_str(url_r, host_r);
    if (has_port) {
        osp_buf_printf(url_r, ":%u", port);
        fl |= OSP_URL_F_PORT;
    }
    restlen = n - auth_end;
    if (restlen == 0 || (w[auth_end] != '/' && w[auth_end] != '\\'))
        osp_buf_append_char(url_r, '/');
    if (restlen > OSP_URL_MAX - url_r->len)
        restlen = OSP_URL_MAX - url_r->len;
    /* Do not cut a UTF-8 sequence. */
    while (restlen > 0 && auth_end + restlen < n
           && ((unsigned char)w[auth_end + restlen] & 0xc0) == 0x80)
        restlen--;
    if (restlen > 0) {
        size_t start = url_r->len, q = restlen;
        char *r;
        const char *qm;

        osp_buf_append(url_r, w + auth_end, restlen);
        r = url_r->data + start;
        qm = memchr(r, '?', restlen);
        if (qm)
            q = (size_t)(qm - r);
        qm = memchr(r, '#', q);
        if (qm)
            q = (size_t)(qm - r);
        for (i = 0; i < q; i++)
            if (r[i] == '\\')
                r[i] = '/';
    }
    if (flags_r)
        *flags_r = fl;
    return 0;
}

int osp_url_normalize(const char *s, size_t len, unsigned opts,
                      osp_buf_t *url_r, char *host_r, unsigned *flags_r)
{
    return url_normalize(s, len, opts, url_r, host_r, flags_r, NULL);
}

bool osp_url_same_site(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    const char *p;
    int labels, i;
    size_t tld_len, sld_len;

    if (strcmp(a, b) == 0)
        return true;
    if (la > lb && a[la - lb - 1] == '.' && strcmp(a + la - lb, b) == 0)
        return !is_digit((unsigned char)b[lb - 1]) && b[lb - 1] != ']';
    if (lb > la && b[lb - la - 1] == '.' && strcmp(b + lb - la, a) == 0)
        return !is_digit((unsigned char)a[la - 1]) && a[la - 1] != ']';
    if (la == 0 || lb == 0 || is_digit((unsigned char)a[la - 1]) || a[la - 1] == ']'
        || is_digit((unsigned char)b[lb - 1]) || b[lb - 1] == ']')
        return false;
    /* Registrable part of a: two labels, three for "x.co.uk" shapes. */
    p = a + la;
    tld_len = sld_len = 0;
    labels = 2;
    for (i = 0; i < 3 && p > a; i++) {
        const char *q = p;

        while (q > a && q[-1] != '.')
            q--;
        if (i == 0)
            tld_len = (size_t)(p - q);
        else if (i == 1)
            sld_len = (size_t)(p - q);
        p = q > a ? q - 1 : a;
    }
    if (tld_len == 2 && sld_len <= 3)
        labels = 3;
    /* Compare the last `labels` labels of both. */
    {
        const char *ea = a + la, *eb = b + lb;
        int k;

        for (k = 0; k < labels; k++) {
            const char *sa = ea, *sb = eb;

            while (sa > a && sa[-1] != '.')
                sa--;
            while (sb > b && sb[-1] != '.')
                sb--;
            if (ea - sa != eb - sb || memcmp(sa, sb, (size_t)(ea - sa)) != 0)
                return false;
            if (sa == a || sb == b)
                return sa == a && sb == b;
            ea = sa - 1;
            eb = sb - 1;
        }
    }
    return true;
}

/* ---- Lists ----------------------------------------------------------- */

void osp_url_list_init(osp_url_list_t *l, size_t max)
{
    memset(l, 0, sizeof(*l));
    l->max = max ? max : DEFAULT_MAX;
    l->idn_budget = IDN_BUDGET;
}

void osp_url_list_close(osp_url_list_t *l)
{
    size_t i;

    for (i = 0; i < l->n_urls; i++)
        free(l->mem[i]);
    free(l->mem);
    free(l->urls);
    free(l->hosts);
    free(l->url_slots);
    free(l->host_slots);
    free(l->url_hash);
    free(l->host_hash);
    memset(l, 0, sizeof(*l));
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/*
 * Find s in an open-addressed table whose slots hold index + 1 into
 * strs(ctx, i).  Returns the slot (free or matching).
 */
typedef const char *(*slot_str_fn)(const osp_url_list_t *l, size_t i);

static const char *url_str(const osp_url_list_t *l, size_t i)
{
    return l->urls[i].url;
}

static const char *host_str(const osp_url_list_t *l, size_t i)
{
    return l->hosts[i];
}

static size_t slot_find(const osp_url_list_t *l, const uint32_t *slots, size_t nslots,
                        slot_str_fn str, const char *s, uint64_t h)
{
    size_t m = nslots - 1, k = (size_t)h & m;

    while (slots[k] != 0 && strcmp(str(l, slots[k] - 1), s) != 0)
        k = (k + 1) & m;
    return k;
}

/* Keep tables at most half full. */
static void slots_grow(uint32_t **slots, size_t *nslots, size_t n, const uint64_t *hashes)
{
    size_t ns, i;
    uint32_t *t;

    if (*nslots >= 2 * (n + 1))
        return;
    ns = *nslots ? *nslots * 2 : 64;
    while (ns < 2 * (n + 1))
        ns *= 2;
    t = osp_calloc(ns, sizeof(*t));
    for (i = 0; i < n; i++) {
        size_t m = ns - 1, k = (size_t)hashes[i] & m;

        while (t[k] != 0)
            k = (k + 1) & m;
        t[k] = (uint32_t)(i + 1);
    }
    free(*slots);
    *slots = t;
    *nslots = ns;
}

static int list_insert(osp_url_list_t *l, const char *url, size_t url_len,
                       const char *host, unsigned flags)
{
    uint64_t uh = hash_str(url), hh;
    size_t k, hl = strlen(host);
    char *mem;
    osp_url_t *u;

    if (l->url_nslots && l->url_slots[slot_find(l, l->url_slots, l->url_nslots, url_str, url, uh)] != 0)
        return 0;
    if (l->n_urls >= l->max) {
        l->truncated = true;
        return -2;
    }
    if (l->n_urls == l->url_alloc) {
        l->url_alloc = l->url_alloc ? l->url_alloc * 2 : 16;
        l->urls = osp_reallocarray(l->urls, l->url_alloc, sizeof(*l->urls));
        l->mem = osp_reallocarray(l->mem, l->url_alloc, sizeof(*l->mem));
        l->url_hash = osp_reallocarray(l->url_hash, l->url_alloc, sizeof(*l->url_hash));
        l->host_hash = osp_reallocarray(l->host_hash, l->url_alloc, sizeof(*l->host_hash));
    }
    mem = osp_malloc(url_len + hl + 2);
    memcpy(mem, url, url_len + 1);
    memcpy(mem + url_len + 1, host, hl + 1);
    u = &l->urls[l->n_urls];
    u->url = mem;
    u->host = mem + url_len + 1;
    u->flags = flags;
    l->mem[l->n_urls] = mem;
    l->url_hash[l->n_urls] = uh;
    l->n_urls++;
    slots_grow(&l->url_slots, &l->url_nslots, l->n_urls, l->url_hash);
    k = slot_find(l, l->url_slots, l->url_nslots, url_str, u->url, uh);
    if (l->url_slots[k] == 0)
        l->url_slots[k] = (uint32_t)l->n_urls;

    hh = hash_str(host);
    if (l->host_nslots == 0
        || l->host_slots[slot_find(l, l->host_slots, l->host_nslots, host_str, host, hh)] == 0) {
        if (l->n_hosts == l->host_alloc) {
            l->host_alloc = l->host_alloc ? l->host_alloc * 2 : 16;
            l->hosts = osp_reallocarray(l->hosts, l->host_alloc, sizeof(*l->hosts));
        }
        l->host_hash[l->n_hosts] = hh;
        l->hosts[l->n_hosts++] = u->host;
        slots_grow(&l->host_slots, &l->host_nslots, l->n_hosts, l->host_hash);
        k = slot_find(l, l->host_slots, l->host_nslots, host_str, u->host, hh);
        if (l->host_slots[k] == 0)
            l->host_slots[k] = (uint32_t)l->n_hosts;
    }
    return 1;
}

bool osp_url_list_has_host(const osp_url_list_t *l, const char *host)
{
    if (l->host_nslots == 0)
        return false;
    return l->host_slots[slot_find(l, l->host_slots, l->host_nslots, host_str, host, hash_str(host))] != 0;
}

int osp_url_list_add(osp_url_list_t *l, const char *s, size_t len,
                     unsigned flags, unsigned opts)
{
    osp_buf_t url;
    char host[OSP_URL_HOST_BUFSIZE];
    unsigned fl = 0;
    int r;

    osp_buf_init(&url, OSP_URL_MAX + 16);
    if (url_normalize(s, len, opts, &url, host, &fl, &l->idn_budget) < 0) {
        osp_buf_close(&url);
        return -1;
    }
    r = list_insert(l, osp_buf_cstr(&url), url.len, host, fl | flags);
    osp_buf_close(&url);
    return r;
}

/* ---- Extraction from text -------------------------------------------- */

/* Bytes that end a URL in text (ASCII only; see also stop_utf8). */
static bool stop_ascii(unsigned char c)
{
    return c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"' || c == '`'
        || c == '{' || c == '}' || c == '|' || c == '^';
}

/* Non-ASCII characters that end a URL: returns their length, 0 if none. */
static size_t stop_utf8(const unsigned char *p, size_t n)
{
    if (n >= 2 && p[0] == 0xc2 && (p[1] == 0xa0 || p[1] == 0xab || p[1] == 0xbb))
        return 2;   /* NBSP, guillemets */
    if (n >= 3 && p[0] == 0xe2 && p[1] == 0x80
        && (p[2] == 0x98 || p[2] == 0x99 || p[2] == 0x9c || p[2] == 0x9d
            || (p[2] >= 0x80 && p[2] <= 0x8b) || p[2] == 0xa8 || p[2] == 0xa9))
        return 3;   /* typographic quotes, Unicode spaces, line separators */
    if (n >= 3 && p[0] == 0xe3 && p[1] == 0x80 && (p[2] == 0x80 || p[2] == 0x81))
        return 3;   /* ideographic space and comma */
    if (n >= 3 && p[0] == 0xef && p[1] == 0xbc && p[2] == 0x8c)
        return 3;   /* full-width comma */
    return 0;
}

/* Letters and digits before a scheme mean it is inside a word. */
static bool is_word(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '_';
}

/*
 * End of the URL candidate starting at s[start], looking no further than
 * lim; trailing punctuation off.
 */
static size_t candidate_end(const char *s, size_t lim, size_t start)
{
    size_t e = start, k;
    int paren = 0, bracket = 0;

    while (e < lim && !stop_ascii((unsigned char)s[e])
           && !((unsigned char)s[e] >= 0x80 && stop_utf8((const unsigned char *)s + e, lim - e)))
        e++;
    for (k = start; k < e; k++) {
        if (s[k] == '(')
            paren++;
        else if (s[k] == ')')
            paren--;
        else if (s[k] == '[')
            bracket++;
        else if (s[k] == ']')
            bracket--;
    }
    while (e > start) {
        char c = s[e - 1];
        const unsigned char *u = (const unsigned char *)s + e - 3;

        /* Ideographic and full-width full stops end a sentence (inside a
         * host they separate labels, so they do not stop a URL). */
        if (e >= start + 3 && ((u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x82)
                               || (u[0] == 0xef && u[1] == 0xbc && u[2] == 0x8e)
                               || (u[0] == 0xef && u[1] == 0xbd && u[2] == 0xa1))) {
            e -= 3;
            continue;
        }
        if (c != '\0' && strchr(".,;:!?'*", c)) {
            e--;
        } else if (c == '(' || c == '[') {
            c == '(' ? paren-- : bracket--;
            e--;
        } else if (c == ')' && paren < 0) {
            paren++;
            e--;
        } else if (c == ']' && bracket < 0) {
            bracket++;
            e--;
        } else {
            break;
        }
    }
    return e;
}

/* May a URL start after the byte c? */
static bool url_may_follow(unsigned char c)
{
    return !is_word(c) && c != '@' && c != '.' && c != '-' && c != '/' && c != '%' && c != '&' && c != '=';
}

/* Where candidates are looked for: memchr positions, kept between calls. */
struct scan {
    const char *text, *end;
    const char *colon, *dot;    /* next ':' and '.' at or after the last position */
};

/*
 * The next candidate at or after position i: the ':' of a scheme followed
 * by '/' or '\\' ("http:/"), or the '.' of "www.", at a word boundary; the
 * scheme's letters are not looked for before floor.  Both are found with
 * memchr, so plain text is skipped fast.  Returns the candidate's start
 * (the text's length if none) and the length of its scheme with the colon
 * in *sl (4 for "www.").
 */
static size_t next_candidate(struct scan *sc, size_t i, size_t floor, size_t *sl)
{
    const char *text = sc->text;
    size_t len = (size_t)(sc->end - text);

    while (i < len) {
        size_t start, c;
        enum scheme sch;
        unsigned fl = 0;

        if (sc->colon == NULL || sc->colon < text + i) {
            sc->colon = memchr(text + i, ':', len - i);
            if (sc->colon == NULL)
                sc->colon = sc->end;
        }
        if (sc->dot == NULL || sc->dot < text + i) {
            sc->dot = memchr(text + i, '.', len - i);
            if (sc->dot == NULL)
                sc->dot = sc->end;
        }
        if (sc->colon == sc->end && sc->dot == sc->end)
            break;
        if (sc->colon < sc->dot) {
            c = (size_t)(sc->colon - text);
            start = c;
            while (start > floor && c - start < 6
                   && (is_alpha((unsigned char)text[start - 1]) || text[start - 1] == '*'))
                start--;
            i = c + 1;
            if (start == c || c + 1 >= len || (text[c + 1] != '/' && text[c + 1] != '\\')
                || scheme_parse(text + start, len - start, &sch, &fl) != c + 1 - start
                || (start > 0 && !url_may_follow((unsigned char)text[start - 1])))
                continue;
            *sl = c + 1 - start;
            return start;
        }
        c = (size_t)(sc->dot - text);
        i = c + 1;
        if (c < floor + 3 || !starts_www(text + c - 3, len - c + 3)
            || (c > 3 && !url_may_follow((unsigned char)text[c - 4])))
            continue;
        *sl = 4;
        return c - 3;
    }
    return len;
}

/*
 * A candidate extends at most to the next candidate's start, so no byte is
 * looked at for more than one candidate and the work is linear in len, and
 * "http://a.example/(http://b.example)" gives both hosts.
 */
size_t osp_url_extract(osp_url_list_t *l, const char *text, size_t len)
{
    struct scan sc = { text, text + len, NULL, NULL };
    osp_buf_t url;
    char host[OSP_URL_HOST_BUFSIZE];
    size_t cur, cur_sl = 0, found = 0;

    osp_buf_init(&url, OSP_URL_MAX + 16);
    cur = next_candidate(&sc, 0, 0, &cur_sl);
    while (cur < len) {
        size_t next_sl = 0, next = next_candidate(&sc, cur + cur_sl, cur + cur_sl, &next_sl);
        size_t e = candidate_end(text, next, cur);
        unsigned fl = 0;

        if (e > cur + cur_sl && url_normalize(text + cur, e - cur, 0, &url, host, &fl, &l->idn_budget) == 0) {
            found++;
            if (list_insert(l, osp_buf_cstr(&url), url.len, host, fl | OSP_URL_F_TEXT) == -2)
                break;
        }
        cur = next;
        cur_sl = next_sl;
    }
    osp_buf_close(&url);
    return found;
}

int osp_url_list_insert(osp_url_list_t *l, const char *url, const char *host, unsigned flags)
{
    return list_insert(l, url, strlen(url), host, flags);
}
