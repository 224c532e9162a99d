/* osp_addr: RFC 5321 path parsing and domain name normalisation. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#include "osp_addr.h"
#include "osp_buf.h"
#include "osp_mem.h"

#define LOCAL_MAX   64      /* RFC 5321 4.5.3.1.1 */
#define DOMAIN_MAX  255     /* RFC 5321 4.5.3.1.2 */
#define PATH_LIMIT  256     /* RFC 5321 4.5.3.1.3, brackets included */
#define HOST_MAX    253     /* DNS: 255 octets in wire form */
#define LABEL_MAX   63

/* Flags of the internal domain checker. */
#define DOM_UNDERSCORE   0x1u   /* "_" allowed in labels */
#define DOM_UTF8         0x2u   /* U-labels allowed and converted */
#define DOM_TRAILING_DOT 0x4u   /* one trailing dot allowed and dropped */
#define DOM_IN_ADDRESS   0x8u   /* word 8-bit errors for an address */

/* ---- Characters ------------------------------------------------------ */

static bool is_ascii_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_ascii_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* RFC 5322 atext. */
static bool is_atext(unsigned char c)
{
    return is_ascii_alpha(c) || is_ascii_digit(c)
        || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * Length (2-4) of the well-formed UTF-8 sequence at p, looking at no more
 * than avail bytes, or 0: overlong forms, surrogates and code points above
 * U+10FFFF are malformed.
 */
static size_t utf8_seq_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    size_t n, i;

    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (avail < n)
        return 0;
    for (i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)
        || (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

/* U+0080..U+009F, encoded as C2 80..C2 9F. */
static bool is_c1_control(const unsigned char *p)
{
    return p[0] == 0xc2 && p[1] <= 0x9f;
}

/* The error texts for one part of an address. */
struct part_msgs {
    const char *no_smtputf8;
    const char *bad_utf8;
    const char *control;
};

static const struct part_msgs local_msgs = {
    "8-bit character in local part without SMTPUTF8",
    "invalid UTF-8 in local part",
    "control character in local part",
};

/*
 * Check the non-ASCII character at s[i] (i < len); on success store its
 * length in *n_r.
 */
static const char *check_8bit(const unsigned char *s, size_t i, size_t len,
                              bool utf8_ok, const struct part_msgs *msgs,
                              size_t *n_r)
{
    size_t n;

    if (!utf8_ok)
        return msgs->no_smtputf8;
    if ((n = utf8_seq_len(s + i, len - i)) == 0)
        return msgs->bad_utf8;
    if (is_c1_control(s + i))
        return msgs->control;
    *n_r = n;
    return NULL;
}

/* ---- Domains ----------------------------------------------------------- */

static const char *domain_too_long(size_t maxlen)
{
    return maxlen == HOST_MAX ? "domain longer than 253 octets"
                              : "domain longer than 255 octets";
}

/* Label rules on a lower-case ASCII name without trailing dot. */
static const char *domain_check_ascii(const char *d, size_t len,
                                      unsigned dflags, size_t maxlen)
{
    size_t i, label = 0;
    bool numeric = true;

    if (len == 0)
        return "empty domain";
    if (len > maxlen)
        return domain_too_long(maxlen);
    for (i = 0; i <= len; i++) {
        unsigned char c;

        if (i == len || d[i] == '.') {
            if (i == label)
                return "empty label in domain";
            if (i - label > LABEL_MAX)
                return "domain label longer than 63 octets";
            if (d[label] == '-')
                return "domain label starts with a hyphen";
            if (d[i - 1] == '-')
                return "domain label ends with a hyphen";
            if (i == len && numeric)
                return "top-level domain label is all-numeric";
            label = i + 1;
            numeric = true;
            continue;
        }
        c = (unsigned char)d[i];
        if (is_ascii_digit(c))
            continue;
        numeric = false;
        if (is_ascii_alpha(c) || c == '-')
            continue;
        if (c == '_' && (dflags & DOM_UNDERSCORE))
            continue;
        if (is_ctl(c))
            return "control character in domain";
        return "invalid character in domain";
    }
    return NULL;
}

/*
 * Empty labels and hyphens at label ends, checked on the name as given so
 * that a U-label name gets the same messages as an ASCII one.
 */
static const char *domain_check_labels_raw(const char *d, size_t len)
{
    size_t i, label = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && d[i] != '.')
            continue;
        if (i == label)
            return "empty label in domain";
        if (d[label] == '-')
            return "domain label starts with a hyphen";
        if (d[i - 1] == '-')
            return "domain label ends with a hyphen";
        label = i + 1;
    }
    return NULL;
}

static const char *idn2_error(int rc)
{
    switch (rc) {
    case IDN2_TOO_BIG_DOMAIN:
        return "domain longer than 255 octets";
    case IDN2_TOO_BIG_LABEL:
        return "domain label longer than 63 octets";
    default:
        return "invalid internationalized domain name";
    }
}

/*
 * Normalise the domain of len bytes at s into out (OSP_DOMAIN_BUFSIZE
 * bytes): lower-case A-labels, no trailing dot.  *utf8_r tells whether the
 * input had non-ASCII.  Returns NULL or the error.
 */
static const char *domain_normalize_span(const char *s, size_t len,
                                         unsigned dflags, size_t maxlen,
                                         char *out, bool *utf8_r)
{
    static const struct part_msgs domain_msgs = {
        "8-bit character in domain without SMTPUTF8",
        "invalid UTF-8 in domain",
        "control character in domain",
    };
    const unsigned char *u = (const unsigned char *)s;
    const char *err;
    bool utf8 = false;
    size_t i, n, olen;

    *utf8_r = false;
    if ((dflags & DOM_TRAILING_DOT) && len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0)
        return "empty domain";
    if (len > maxlen)
        return domain_too_long(maxlen);
    for (i = 0; i < len; i++) {
        unsigned char c = u[i];

        if (c < 0x80) {
            if (is_ctl(c))
                return "control character in domain";
            if (!is_ascii_alpha(c) && !is_ascii_digit(c)
                && c != '-' && c != '.' && c != '_')
                return "invalid character in domain";
            continue;
        }
        if (!(dflags & DOM_UTF8))
            return (dflags & DOM_IN_ADDRESS) ? domain_msgs.no_smtputf8
                                             : "invalid character in domain";
        if ((err = check_8bit(u, i, len, true, &domain_msgs, &n)) != NULL)
            return err;
        i += n - 1;
        utf8 = true;
    }

    if (!utf8) {
        for (i = 0; i < len; i++)
            out[i] = (char)ascii_lower(u[i]);
        olen = len;
    } else {
        char in[DOMAIN_MAX + 1];
        char *res = NULL;
        int rc;

        if ((err = domain_check_labels_raw(s, len)) != NULL)
            return err;
        memcpy(in, s, len);     /* len <= maxlen <= DOMAIN_MAX */
        in[len] = '\0';
        rc = idn2_to_ascii_8z(in, &res, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
        if (rc != IDN2_OK) {
            idn2_free(res);
            return idn2_error(rc);
        }
        olen = strlen(res);
        if (olen > maxlen) {
            idn2_free(res);
            return domain_too_long(maxlen);
        }
        for (i = 0; i < olen; i++)
            out[i] = (char)ascii_lower((unsigned char)res[i]);
        idn2_free(res);
    }
    out[olen] = '\0';
    if ((err = domain_check_ascii(out, olen, dflags, maxlen)) != NULL)
        return err;
    *utf8_r = utf8;
    return NULL;
}

/*
 * Check the address literal of len bytes at s ("[...]", brackets included)
 * and write its canonical form to out (OSP_DOMAIN_BUFSIZE bytes).
 */
static const char *literal_normalize(const char *s, size_t len, char *out)
{
    char tmp[INET6_ADDRSTRLEN + 1], text[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    const char *body = s + 1;
    size_t blen = len - 2, i;

    for (i = 0; i < blen; i++) {
        unsigned char c = (unsigned char)body[i];

        if (is_ctl(c))
            return "control character in domain";
        if (c >= 0x80)
            return "invalid character in domain";
    }
    if (blen >= 5 && strncasecmp(body, "IPv6:", 5) == 0) {
        if (blen - 5 >= sizeof(tmp))
            return "invalid IPv6 address literal";
        memcpy(tmp, body + 5, blen - 5);
        tmp[blen - 5] = '\0';
        if (inet_pton(AF_INET6, tmp, bin) != 1
            || inet_ntop(AF_INET6, bin, text, sizeof(text)) == NULL)
            return "invalid IPv6 address literal";
        osp_snprintf(out, OSP_DOMAIN_BUFSIZE, "[IPv6:%s]", text);
        return NULL;
    }
    if (memchr(body, ':', blen) != NULL)
        return "unsupported address literal";
    if (blen >= sizeof(tmp))
        return "invalid IPv4 address literal";
    memcpy(tmp, body, blen);
    tmp[blen] = '\0';
    if (inet_pton(AF_INET, tmp, bin) != 1
        || inet_ntop(AF_INET, bin, text, sizeof(text)) == NULL)
        return "invalid IPv4 address literal";
    osp_snprintf(out, OSP_DOMAIN_BUFSIZE, "[%s]", text);
    return NULL;
}

/*
 * A domain inside an address: a host name or "[literal]", len bytes at s.
 * Sets *literal_r and *utf8_r.
 */
static const char *addr_domain(const char *s, size_t len, unsigned flags,
                               char *out, bool *literal_r, bool *utf8_r)
{
    unsigned dflags = DOM_TRAILING_DOT | DOM_IN_ADDRESS;
    const char *rb;

    *literal_r = false;
    *utf8_r = false;
    if (len == 0)
        return "empty domain";
    if (len > DOMAIN_MAX)
        return "domain longer than 255 octets";
    if (s[0] == '[') {
        rb = memchr(s, ']', len);
        if (rb == NULL)
            return "unterminated address literal";
        if ((size_t)(rb - s) != len - 1)
            return "invalid character in domain";
        *literal_r = true;
        return literal_normalize(s, len, out);
    }
    if (flags & OSP_ADDR_SMTPUTF8)
        dflags |= DOM_UTF8;
    if (flags & OSP_ADDR_ALLOW_UNDERSCORE)
        dflags |= DOM_UNDERSCORE;
    return domain_normalize_span(s, len, dflags, DOMAIN_MAX, out, utf8_r);
}

bool osp_domain_valid(const char *name, size_t len, unsigned flags,
                      const char **error_r)
{
    char out[OSP_DOMAIN_BUFSIZE];
    const char *err;
    bool utf8;

    err = domain_normalize_span(name, len,
                                (flags & OSP_DOMAIN_ALLOW_UNDERSCORE)
                                    ? DOM_UNDERSCORE : 0,
                                HOST_MAX, out, &utf8);
    if (err != NULL && error_r != NULL)
        *error_r = err;
    return err == NULL;
}

int osp_domain_normalize(const char *in, char *out, size_t outsize,
                         const char **error_r)
{
    char tmp[OSP_DOMAIN_BUFSIZE];
    const char *err;
    bool utf8;
    size_t len = strlen(in);

    err = domain_normalize_span(in, len,
                                DOM_UNDERSCORE | DOM_UTF8 | DOM_TRAILING_DOT,
                                HOST_MAX, tmp, &utf8);
    if (err == NULL && osp_strlcpy(out, tmp, outsize) >= outsize)
        err = "domain too long for output buffer";
    if (err != NULL) {
        if (outsize > 0)
            out[0] = '\0';
        if (error_r != NULL)
            *error_r = err;
        return -1;
    }
    return 0;
}

/* Length without one trailing dot. */
static size_t domain_len(const char *d)
{
    size_t n = strlen(d);

    return (n > 0 && d[n - 1] == '.') ? n - 1 : n;
}

bool osp_domain_is_subdomain(const char *sub, const char *parent)
{
    size_t slen = domain_len(sub), plen = domain_len(parent);
    const char *tail;

    if (slen == 0 || plen == 0 || slen < plen)
        return false;
    tail = sub + (slen - plen);
    if (strncasecmp(tail, parent, plen) != 0)
        return false;
    return slen == plen || tail[-1] == '.';
}

/* ---- Addresses --------------------------------------------------------- */

void osp_addr_init(osp_addr_t *addr)
{
    addr->local = "";
    addr->domain = "";
    addr->domain_norm = "";
    addr->flags = 0;
    addr->mem = NULL;
}

void osp_addr_close(osp_addr_t *addr)
{
    free(addr->mem);
    osp_addr_init(addr);
}

/* State of one parse; spans are offsets into s. */
struct addr_parse {
    const unsigned char *s;
    size_t len;
    size_t pos;
    unsigned flags;
    bool brackets;
    size_t local_off, local_len;    /* raw, quotes included */
    size_t dom_off, dom_len;
    unsigned rflags;                /* OSP_ADDR_F_* */
    char norm[OSP_DOMAIN_BUFSIZE];
};

static bool is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Does c end the current element (outside quotes) in SMTP form? */
static bool ends_element(const struct addr_parse *p, unsigned char c)
{
    return p->brackets ? c == '>' : is_blank(c);
}

static bool is_dot_atom(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i;

    if (len == 0 || u[0] == '.' || u[len - 1] == '.')
        return false;
    for (i = 0; i < len; i++) {
        if (u[i] == '.') {
            if (u[i + 1] == '.')
                return false;
        } else if (u[i] < 0x80 && !is_atext(u[i])) {
            return false;
        }
    }
    return true;
}

/* "postmaster" in any case; quoted too if the local part is SMTP form. */
static bool is_postmaster(const char *s, size_t len, bool smtp_form)
{
    return (len == 10 && strncasecmp(s, "postmaster", 10) == 0)
        || (smtp_form && len == 12
            && strncasecmp(s, "\"postmaster\"", 12) == 0);
}

/*
 * Source route: "@dom,@dom:" at p->pos (which is at the '@').  Each hop
 * must be a valid domain; the route is then dropped.
 */
static const char *parse_source_route(struct addr_parse *p)
{
    char scratch[OSP_DOMAIN_BUFSIZE];
    bool literal, utf8;
    size_t i = p->pos, start;

    for (;;) {
        if (i >= p->len || p->s[i] != '@')
            return "invalid source route";
        start = ++i;
        if (i < p->len && p->s[i] == '[') {
            while (i < p->len && p->s[i] != ']')
                i++;
            if (i < p->len)
                i++;
        } else {
            while (i < p->len && p->s[i] != ',' && p->s[i] != ':'
                   && !ends_element(p, p->s[i]))
                i++;
        }
        if (i >= p->len || (p->s[i] != ',' && p->s[i] != ':'))
            return "invalid source route";
        if (addr_domain((const char *)p->s + start, i - start, p->flags,
                        scratch, &literal, &utf8) != NULL)
            return "invalid source route";
        if (p->s[i++] == ':')
            break;
    }
    p->pos = i;
    p->rflags |= OSP_ADDR_F_SOURCE_ROUTE;
    return NULL;
}

/*
 * Is the '@' at p->pos the start of a source route: is there a ':' before
 * the end of the path, outside address literals?
 */
static bool looks_like_route(const struct addr_parse *p)
{
    bool in_literal = false;
    size_t i;

    for (i = p->pos; i < p->len; i++) {
        unsigned char c = p->s[i];

        if (c == '[')
            in_literal = true;
        else if (c == ']')
            in_literal = false;
        else if (c == ':' && !in_literal)
            return true;
        else if (c == '"' || c == '<' || c == '>' || is_blank(c))
            return false;
    }
    return false;
}

static const char *parse_quoted_local(struct addr_parse *p)
{
    const unsigned char *s = p->s;
    bool utf8_ok = (p->flags & OSP_ADDR_SMTPUTF8) != 0;
    const char *err;
    size_t i = p->pos + 1, n, content = 0;

    for (;;) {
        unsigned char c;

        if (i >= p->len)
            return "unterminated quoted string";
        c = s[i];
        if (c == '"')
            break;
        if (c == '\\') {
            if (++i >= p->len)
                return "unterminated quoted string";
            c = s[i];
            if (is_ctl(c))
                return "control character in local part";
            if (c >= 0x80)
                return "invalid quoted pair in local part";
            i++;
            content++;
        } else if (is_ctl(c)) {
            return "control character in local part";
        } else if (c >= 0x80) {
            if ((err = check_8bit(s, i, p->len, utf8_ok, &local_msgs, &n)))
                return err;
            i += n;
            content += n;
            p->rflags |= OSP_ADDR_F_UTF8;
        } else {
            i++;
            content++;
        }
    }
    if (content == 0)
        return "empty local part";
    p->pos = i + 1;
    p->rflags |= OSP_ADDR_F_QUOTED;
    return NULL;
}

static const char *parse_dot_string(struct addr_parse *p)
{
    const unsigned char *s = p->s;
    bool utf8_ok = (p->flags & OSP_ADDR_SMTPUTF8) != 0;
    bool dots_ok = (p->flags & OSP_ADDR_ALLOW_BAD_DOTS) != 0;
    bool prev_dot = false;
    const char *err;
    size_t i = p->pos, n;

    while (i < p->len) {
        unsigned char c = s[i];

        if (c == '@' || ends_element(p, c))
            break;
        if (c == '.') {
            if (!dots_ok && i == p->pos)
                return "local part starts with a dot";
            if (!dots_ok && prev_dot)
                return "consecutive dots in local part";
            prev_dot = true;
            i++;
            continue;
        }
        prev_dot = false;
        if (c >= 0x80) {
            if ((err = check_8bit(s, i, p->len, utf8_ok, &local_msgs, &n)))
                return err;
            i += n;
            p->rflags |= OSP_ADDR_F_UTF8;
        } else if (is_atext(c)) {
            i++;
        } else if (is_ctl(c)) {
            return "control character in local part";
        } else if (c == '<' || c == '>') {
            return "unbalanced angle brackets";
        } else {
            return "invalid character in local part";
        }
    }
    if (i == p->pos)
        return "empty local part";
    if (!dots_ok && prev_dot)
        return "local part ends with a dot";
    p->pos = i;
    return NULL;
}

/*
 * SMTP form: [blanks] ["<" [route ":"]] local ["@" domain] [">"], with the
 * brackets optional unless required.  Leaves p->pos after the path and
 * returns the path length counting brackets in *path_len_r.
 */
static const char *parse_smtp(struct addr_parse *p, size_t *path_len_r)
{
    const unsigned char *s = p->s;
    const char *err;
    size_t start, end;
    bool literal, utf8;

    while (p->pos < p->len && is_blank(s[p->pos]))
        p->pos++;
    if (p->pos >= p->len)
        return "empty address";
    start = p->pos;
    if (s[p->pos] == '<') {
        p->brackets = true;
        p->rflags |= OSP_ADDR_F_BRACKETS;
        p->pos++;
        if (p->pos >= p->len)
            return "unbalanced angle brackets";
        if (s[p->pos] == '>') {
            if (!(p->flags & OSP_ADDR_ALLOW_NULL))
                return "null address not allowed";
            p->rflags |= OSP_ADDR_F_NULL;
            p->pos++;
            *path_len_r = 2;
            return NULL;
        }
    } else if (p->flags & OSP_ADDR_REQUIRE_BRACKETS) {
        return "angle brackets required";
    }

    if (p->pos < p->len && s[p->pos] == '@' && looks_like_route(p)
        && (err = parse_source_route(p)) != NULL)
        return err;

    p->local_off = p->pos;
    if (p->pos < p->len && s[p->pos] == '"')
        err = parse_quoted_local(p);
    else
        err = parse_dot_string(p);
    if (err != NULL)
        return err;
    p->local_len = p->pos - p->local_off;

    if (p->pos < p->len && s[p->pos] == '@') {
        p->pos++;
        p->dom_off = p->pos;
        if (p->brackets) {
            const unsigned char *gt = memchr(s + p->pos, '>', p->len - p->pos);

            if (gt == NULL)
                return "unbalanced angle brackets";
            end = (size_t)(gt - s);
        } else {
            for (end = p->pos; end < p->len && !is_blank(s[end]); end++)
                if (s[end] == '<' || s[end] == '>')
                    return "unbalanced angle brackets";
        }
        p->dom_len = end - p->dom_off;
        p->pos = end;
    } else if (p->pos < p->len && !ends_element(p, s[p->pos])) {
        /* Only a quoted string stops elsewhere. */
        return "invalid character in local part";
    } else if (p->brackets && p->pos >= p->len) {
        return "unbalanced angle brackets";
    } else {
        p->rflags |= OSP_ADDR_F_NO_DOMAIN;
    }

    if (p->local_len > LOCAL_MAX && !(p->flags & OSP_ADDR_ALLOW_LONG_LOCAL))
        return "local part longer than 64 octets";
    if (p->rflags & OSP_ADDR_F_NO_DOMAIN) {
        if (!(p->flags & OSP_ADDR_ALLOW_NO_DOMAIN)
            && !((p->flags & OSP_ADDR_ALLOW_POSTMASTER)
                 && is_postmaster((const char *)s + p->local_off,
                                  p->local_len, true)))
            return "missing @ in address";
    } else {
        if ((err = addr_domain((const char *)s + p->dom_off, p->dom_len,
                               p->flags, p->norm, &literal, &utf8)) != NULL)
            return err;
        if (literal)
            p->rflags |= OSP_ADDR_F_LITERAL;
        if (utf8)
            p->rflags |= OSP_ADDR_F_UTF8;
    }
    if (p->brackets)
        p->pos++;               /* the '>' */
    *path_len_r = p->pos - start + (p->brackets ? 0 : 2);
    return NULL;
}

/* Postfix internal form: local part verbatim up to the last '@'. */
static const char *parse_internal(struct addr_parse *p, size_t *path_len_r)
{
    const unsigned char *s = p->s;
    bool utf8_ok = (p->flags & OSP_ADDR_SMTPUTF8) != 0;
    const char *err;
    size_t i, at = p->len, n;
    bool literal, utf8;

    if (p->len == 0) {
        if (!(p->flags & OSP_ADDR_ALLOW_NULL))
            return "null address not allowed";
        p->rflags |= OSP_ADDR_F_NULL;
        *path_len_r = 2;
        return NULL;
    }
    for (i = p->len; i > 0; i--) {
        if (s[i - 1] == '@') {
            at = i - 1;
            break;
        }
    }
    p->local_off = 0;
    p->local_len = at;
    if (at == 0)
        return "empty local part";
    for (i = 0; i < at; i++) {
        if (s[i] >= 0x80) {
            if ((err = check_8bit(s, i, at, utf8_ok, &local_msgs, &n)))
                return err;
            i += n - 1;
            p->rflags |= OSP_ADDR_F_UTF8;
        } else if (is_ctl(s[i])) {
            return "control character in local part";
        }
    }
    if (!is_dot_atom((const char *)s, at))
        p->rflags |= OSP_ADDR_F_QUOTED;
    if (at > LOCAL_MAX && !(p->flags & OSP_ADDR_ALLOW_LONG_LOCAL))
        return "local part longer than 64 octets";
    if (at == p->len) {
        if (!(p->flags & OSP_ADDR_ALLOW_NO_DOMAIN)
            && !((p->flags & OSP_ADDR_ALLOW_POSTMASTER)
                 && is_postmaster((const char *)s, at, false)))
            return "missing @ in address";
        p->rflags |= OSP_ADDR_F_NO_DOMAIN;
    } else {
        p->dom_off = at + 1;
        p->dom_len = p->len - p->dom_off;
        if ((err = addr_domain((const char *)s + p->dom_off, p->dom_len,
                               p->flags, p->norm, &literal, &utf8)) != NULL)
            return err;
        if (literal)
            p->rflags |= OSP_ADDR_F_LITERAL;
        if (utf8)
            p->rflags |= OSP_ADDR_F_UTF8;
    }
    p->pos = p->len;
    *path_len_r = p->len + 2;
    return NULL;
}

/* Copy the local part without quotes and quoted-pair backslashes. */
static size_t unquote_local(const char *raw, size_t len, bool quoted,
                            char *out)
{
    size_t i, n = 0;

    if (!quoted) {
        memcpy(out, raw, len);
        return len;
    }
    for (i = 1; i + 1 < len; i++) {
        if (raw[i] == '\\')
            i++;
        out[n++] = raw[i];
    }
    return n;
}

int osp_addr_parse_path(const char *s, size_t len, unsigned flags,
                        osp_addr_t *addr_r, size_t *end_r,
                        const char **error_r)
{
    struct addr_parse p;
    const char *err;
    size_t path_len = 0, norm_len, n;
    char *base, *mem;

    osp_addr_init(addr_r);
    memset(&p, 0, sizeof(p));
    p.s = (const unsigned char *)s;
    p.len = len;
    p.flags = flags;

    if (flags & OSP_ADDR_INTERNAL) {
        err = parse_internal(&p, &path_len);
    } else {
        err = parse_smtp(&p, &path_len);
        if (err == NULL && p.pos < p.len) {
            if (s[p.pos] == '<' || s[p.pos] == '>')
                err = "unbalanced angle brackets";
            else if (!is_blank(p.s[p.pos]))
                err = "unexpected text after address";
            else if (end_r == NULL) {
                while (p.pos < p.len && is_blank(p.s[p.pos]))
                    p.pos++;
                if (p.pos < p.len)
                    err = "unexpected text after address";
            }
        }
    }
    if (err == NULL && path_len > PATH_LIMIT)
        err = "path longer than 256 octets";
    if (err != NULL) {
        if (error_r != NULL)
            *error_r = err;
        return -1;
    }

    addr_r->flags = p.rflags;
    if (end_r != NULL)
        *end_r = p.pos;
    if (p.rflags & OSP_ADDR_F_NULL)
        return 0;

    /* One block: local, domain as given, normalised domain. */
    norm_len = (p.rflags & OSP_ADDR_F_NO_DOMAIN) ? 0 : strlen(p.norm);
    base = mem = osp_malloc(p.local_len + 1 + p.dom_len + 1 + norm_len + 1);
    n = unquote_local(s + p.local_off, p.local_len,
                      (flags & OSP_ADDR_INTERNAL) == 0
                          && (p.rflags & OSP_ADDR_F_QUOTED) != 0,
                      mem);
    mem[n] = '\0';
    addr_r->local = mem;
    mem += n + 1;
    if (p.dom_len)
        memcpy(mem, s + p.dom_off, p.dom_len);
    mem[p.dom_len] = '\0';
    addr_r->domain = mem;
    mem += p.dom_len + 1;
    memcpy(mem, p.norm, norm_len);
    mem[norm_len] = '\0';
    addr_r->domain_norm = mem;
    addr_r->mem = base;
    return 0;
}

int osp_addr_format(const osp_addr_t *addr, osp_buf_t *out)
{
    size_t start = out->len, len = strlen(addr->local), i;
    int rc = 0;

    if (addr->flags & OSP_ADDR_F_NULL)
        return 0;
    if (is_dot_atom(addr->local, len)) {
        rc |= osp_buf_append(out, addr->local, len);
    } else {
        rc |= osp_buf_append_char(out, '"');
        for (i = 0; i < len && rc == 0; i++) {
            if (addr->local[i] == '"' || addr->local[i] == '\\')
                rc |= osp_buf_append_char(out, '\\');
            rc |= osp_buf_append_char(out, addr->local[i]);
        }
        rc |= osp_buf_append_char(out, '"');
    }
    if (!(addr->flags & OSP_ADDR_F_NO_DOMAIN)) {
        rc |= osp_buf_append_char(out, '@');
        rc |= osp_buf_append_str(out, addr->domain_norm);
    }
    if (rc != 0) {
        osp_buf_truncate(out, start);
        return -1;
    }
    return 0;
}

bool osp_addr_equal(const osp_addr_t *a, const osp_addr_t *b)
{
    unsigned differ = a->flags ^ b->flags;

    if (differ & (OSP_ADDR_F_NULL | OSP_ADDR_F_NO_DOMAIN))
        return false;
    if (a->flags & OSP_ADDR_F_NULL)
        return true;
    if ((a->flags & OSP_ADDR_F_NO_DOMAIN)
        && strcasecmp(a->local, "postmaster") == 0
        && strcasecmp(b->local, "postmaster") == 0)
        return true;
    return strcmp(a->local, b->local) == 0
        && strcmp(a->domain_norm, b->domain_norm) == 0;
}

/* ---- mailbox lists (From:, To:, ...) ----------------------------------- */

void osp_mailbox_list_init(osp_mailbox_list_t *l)
{
    memset(l, 0, sizeof(*l));
    osp_buf_init(&l->store, OSP_BUF_UNLIMITED);
}

void osp_mailbox_list_reset(osp_mailbox_list_t *l)
{
    l->n = 0;
    osp_buf_reset(&l->store);
}

void osp_mailbox_list_close(osp_mailbox_list_t *l)
{
    osp_buf_close(&l->store);
    OSP_FREE(&l->off);
    l->n = l->alloc = 0;
}

const char *osp_mailbox_part(const osp_mailbox_list_t *l, size_t i, unsigned part)
{
    return l->store.data + l->off[3 * i + part];
}

static void osp_mbox__trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t' || **s == '"'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '"'))
        (*n)--;
}

static void osp_mbox__add(osp_mailbox_list_t *l, const char *name, size_t nl, const char *addr, size_t al)
{
    const char *at;
    size_t dl = 0;
    const char *dom = "";

    osp_mbox__trim(&name, &nl);
    osp_mbox__trim(&addr, &al);
    if (nl == 0 && al == 0)
        return;
    at = al > 0 ? memchr(addr, '@', al) : NULL;
    if (at != NULL) {
        const char *last = at;

        while ((at = memchr(last + 1, '@', al - (size_t)(last + 1 - addr))) != NULL)
            last = at;
        dom = last + 1;
        dl = al - (size_t)(dom - addr);
    }
    if (l->n == l->alloc) {
        l->alloc = l->alloc ? l->alloc * 2 : 8;
        l->off = osp_reallocarray(l->off, l->alloc, 3 * sizeof(*l->off));
    }
    l->off[3 * l->n] = l->store.len;
    (void)osp_buf_append(&l->store, name, nl);
    (void)osp_buf_append_char(&l->store, '\0');
    l->off[3 * l->n + 1] = l->store.len;
    (void)osp_buf_append(&l->store, addr, al);
    (void)osp_buf_append_char(&l->store, '\0');
    l->off[3 * l->n + 2] = l->store.len;
    (void)osp_buf_append(&l->store, dom, dl);
    (void)osp_buf_append_char(&l->store, '\0');
    l->n++;
}

/* One mailbox (no top-level commas): "Name <a@b>", "a@b (Name)", "a@b". */
static void osp_mbox__parse_one(osp_mailbox_list_t *l, const char *s, size_t n)
{
    const char *lt = NULL, *gt = NULL, *colon = NULL;
    bool q = false;
    size_t i, depth = 0;

    for (i = 0; i < n; i++) {
        char c = s[i];

        if (c == '\\' && i + 1 < n) {
            i++;
        } else if (c == '"') {
            q = !q;
        } else if (q) {
            continue;
        } else if (c == '(') {
            depth++;
        } else if (c == ')' && depth > 0) {
            depth--;
        } else if (depth == 0 && c == '<' && lt == NULL) {
            lt = s + i;
        } else if (depth == 0 && c == '>' && lt != NULL && gt == NULL) {
            gt = s + i;
        } else if (depth == 0 && c == ':' && lt == NULL && colon == NULL) {
            colon = s + i;
        }
    }
    if (colon != NULL) {
        /* A group: "undisclosed-recipients:;" or "team: a@b". */
        n -= (size_t)(colon + 1 - s);
        s = colon + 1;
        while (n > 0 && (s[n - 1] == ';' || s[n - 1] == ' '))
            n--;
        if (n == 0)
            return;
        osp_mbox__parse_one(l, s, n);
        return;
    }
    if (lt != NULL) {
        size_t al = gt != NULL ? (size_t)(gt - lt - 1) : n - (size_t)(lt + 1 - s);

        osp_mbox__add(l, s, (size_t)(lt - s), lt + 1, al);
        return;
    }
    /* "a@b (Name)": the comment is the name. */
    {
        const char *op = memchr(s, '(', n);

        if (op != NULL) {
            const char *cp = memchr(op, ')', n - (size_t)(op - s));
            size_t nl = cp != NULL ? (size_t)(cp - op - 1) : n - (size_t)(op + 1 - s);

            osp_mbox__add(l, op + 1, nl, s, (size_t)(op - s));
            return;
        }
        if (memchr(s, '@', n) != NULL || memchr(s, ' ', n) == NULL)
            osp_mbox__add(l, "", 0, s, n);
        else
            osp_mbox__add(l, s, n, "", 0);
    }
}

void osp_mailbox_parse(osp_mailbox_list_t *l, const char *s)
{
    size_t n = strlen(s), i, st = 0, depth = 0;
    bool q = false, angle = false;

    for (i = 0; i <= n; i++) {
        char c = i < n ? s[i] : ',';

        if (c == '\\' && i + 1 < n) {
            i++;
            continue;
        }
        if (c == '"' && depth == 0)
            q = !q;
        else if (q && i < n)
            continue;
        else if (c == '(')
            depth++;
        else if (c == ')' && depth > 0)
            depth--;
        else if (c == '<')
            angle = true;
        else if (c == '>')
            angle = false;
        else if ((c == ',' || (c == ';' && i + 1 < n)) && depth == 0 && !angle) {
            if (i > st)
                osp_mbox__parse_one(l, s + st, i - st);
            st = i + 1;
        }
        if (i == n && (q || depth > 0 || angle) && i > st)
            osp_mbox__parse_one(l, s + st, i - st);
    }
}
