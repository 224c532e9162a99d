/* osp_spf: RFC 7208 check_host() over a cache of DNS answers, resumable by re-running. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_spf.h"

#define SPF_MAX_LOOKUPS 10     /* RFC 7208 4.6.4 */
#define SPF_MAX_VOIDS 2
#define SPF_MAX_MX 10
#define SPF_MAX_PTR 10
#define SPF_MAX_DEPTH 20       /* include/redirect nesting; the lookup limit bites first */
#define SPF_MAX_CACHE 512      /* answers one evaluation may gather */
#define SPF_MAX_TEXT 4096      /* expanded strings, explanation */

/* Internal result beyond enum osp_spf_result: answers still missing. */
#define SPF_SUSPEND 100

typedef struct spf_answer {
    char *name;                /* lower case, no trailing dot */
    int type;
    enum osp_dns_status st;
    size_t n;
    char **s;                  /* TXT (concatenated, NUL-terminated), MX/PTR names */
    osp_ip_t *ip;              /* A/AAAA */
} spf_answer_t;

typedef struct spf_missing {
    char *name;
    int type;
} spf_missing_t;

struct osp_spf_eval {
    osp_spf_request_t req;     /* strings point at the copies below */
    char *sender, *helo, *receiver;
    osp_ip_t ip;               /* unmapped */
    bool v6;
    char *local, *sender_domain;
    spf_answer_t *ans;
    size_t nans;
    spf_missing_t *miss;
    size_t nmiss;
    /* Per run. */
    int lookups, voids;
    osp_buf_t expl, comment;
    char *domain;
    osp_spf_outcome_t out;
};

enum spf_mech { M_ALL, M_INCLUDE, M_A, M_MX, M_PTR, M_IP4, M_IP6, M_EXISTS };

static const char *const spf_mech_names[] = {
    "all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"
};

typedef struct spf_term {
    char qual;                 /* '+', '-', '~', '?' */
    enum spf_mech mech;
    char *spec;                /* domain-spec or NULL */
    int cidr4, cidr6;          /* -1: none */
    osp_cidr_t net;            /* ip4/ip6 */
    char *text;                /* the term as written, for comments */
} spf_term_t;

typedef struct spf_record {
    spf_term_t *t;
    size_t n;
    char *redirect, *exp;
} spf_record_t;

const char *osp_spf_result_name(enum osp_spf_result r)
{
    static const char *const names[] = {
        "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"
    };

    return (unsigned)r < OSP_SPF_NRESULTS ? names[r] : "?";
}

/* ---- names ---------------------------------------------------------------- */

static char *spf__norm(const char *name)
{
    char *s = osp_strdup(name);
    size_t n;

    for (n = 0; s[n]; n++)
        s[n] = (char)tolower((unsigned char)s[n]);
    while (n > 0 && s[n - 1] == '.')
        s[--n] = '\0';
    return s;
}

/* A name we may send to DNS: labels of 1..63, at most 253, not empty. */
static bool spf__name_ok(const char *name)
{
    size_t len = strlen(name), lab = 0, i;

    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (lab == 0)
                return false;
            lab = 0;
        } else if (++lab > 63) {
            return false;
        }
    }
    return lab > 0;
}

/* 4.3: a multi-label name with valid labels. */
static bool spf__domain_ok(const char *d)
{
    return spf__name_ok(d) && strchr(d, '.') != NULL &&
           strchr(d, '.') != d + strlen(d) - 1;
}

/* ---- the answer cache ------------------------------------------------------ */

enum spf_lk { LK_FOUND, LK_NOTFOUND, LK_TEMPFAIL, LK_MISSING };

static const spf_answer_t *spf__find(const osp_spf_eval_t *e, const char *norm, int type)
{
    size_t i;

    for (i = 0; i < e->nans; i++)
        if (e->ans[i].type == type && strcmp(e->ans[i].name, norm) == 0)
            return &e->ans[i];
    return NULL;
}

static void spf__want(osp_spf_eval_t *e, const char *norm, int type)
{
    size_t i;

    for (i = 0; i < e->nmiss; i++)
        if (e->miss[i].type == type && strcmp(e->miss[i].name, norm) == 0)
            return;
    e->miss = osp_reallocarray(e->miss, e->nmiss + 1, sizeof(*e->miss));
    e->miss[e->nmiss].name = osp_strdup(norm);
    e->miss[e->nmiss].type = type;
    e->nmiss++;
}

static enum spf_lk spf__lookup(osp_spf_eval_t *e, const char *name, int type,
                               const spf_answer_t **a_r)
{
    char *norm;
    const spf_answer_t *a;

    *a_r = NULL;
    if (!spf__name_ok(name))
        return LK_NOTFOUND;
    norm = spf__norm(name);
    a = spf__find(e, norm, type);
    if (a == NULL) {
        if (e->nans + e->nmiss >= SPF_MAX_CACHE) {
            free(norm);
            return LK_TEMPFAIL;
        }
        spf__want(e, norm, type);
        free(norm);
        return LK_MISSING;
    }
    free(norm);
    *a_r = a;
    switch (a->st) {
    case OSP_DNS_FOUND:
        return a->n > 0 ? LK_FOUND : LK_NOTFOUND;
    case OSP_DNS_NOTFOUND:
        return LK_NOTFOUND;
    case OSP_DNS_TEMPFAIL:
        return LK_TEMPFAIL;
    }
    return LK_TEMPFAIL;
}

void osp_spf_eval_add(osp_spf_eval_t *e, const char *name, int rrtype,
                      const osp_dns_result_t *r)
{
    spf_answer_t *a;
    char *norm = spf__norm(name);
    size_t i;

    if (spf__find(e, norm, rrtype)) {
        free(norm);
        return;
    }
    e->ans = osp_reallocarray(e->ans, e->nans + 1, sizeof(*e->ans));
    a = &e->ans[e->nans++];
    memset(a, 0, sizeof(*a));
    a->name = norm;
    a->type = rrtype;
    a->st = r->status;
    if (r->status != OSP_DNS_FOUND)
        return;
    for (i = 0; i < r->n; i++) {
        const uint8_t *d = r->data[i];
        size_t len = r->len[i], off = 0;
        char nb[256];
        osp_buf_t t;

        switch (rrtype) {
        case OSP_DNS_A:
        case OSP_DNS_AAAA:
            if (len != (rrtype == OSP_DNS_A ? 4u : 16u))
                continue;
            a->ip = osp_reallocarray(a->ip, a->n + 1, sizeof(*a->ip));
            memset(&a->ip[a->n], 0, sizeof(osp_ip_t));
            a->ip[a->n].family = rrtype == OSP_DNS_A ? OSP_IP_V4 : OSP_IP_V6;
            memcpy(a->ip[a->n].addr, d, len);
            a->n++;
            break;
        case OSP_DNS_TXT:
            osp_buf_init(&t, 65536);
            if (osp_dns_rdata_txt(d, len, &t) == 0) {
                size_t k;
                /* A NUL octet must not end the text early: make it a
                 * control character, which the record parser refuses. */
                for (k = 0; k < t.len; k++)
                    if (t.data[k] == '\0')
                        t.data[k] = '\x01';
                a->s = osp_reallocarray(a->s, a->n + 1, sizeof(char *));
                a->s[a->n++] = osp_memdup0(t.data ? t.data : "", t.len);
            }
            osp_buf_close(&t);
            break;
        case OSP_DNS_MX:
            if (len < 3)
                continue;
            off = 2;
            /* fall through */
        case OSP_DNS_PTR:
            if (osp_dns_rdata_name(d, len, &off, nb, sizeof(nb), true) < 0)
                continue;
            a->s = osp_reallocarray(a->s, a->n + 1, sizeof(char *));
            a->s[a->n++] = osp_strdup(nb);
            break;
        default:
            break;
        }
    }
    if (a->n == 0)
        a->st = OSP_DNS_NOTFOUND;
}

/* ---- macros (RFC 7208 7) -------------------------------------------------- */

static bool spf__is_delim(char c)
{
    return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

static void spf__ip_dotted(const osp_ip_t *ip, osp_buf_t *out)
{
    char buf[OSP_IP_STRLEN];
    size_t i;

    if (ip->family == OSP_IP_V4) {
        (void)osp_buf_append_str(out, osp_ip_format(ip, buf, sizeof(buf)));
        return;
    }
    /* Upper-case nibbles, as in the examples of RFC 7208 7.4 (DNS ignores case). */
    for (i = 0; i < 16; i++)
        (void)osp_buf_printf(out, "%s%X.%X", i ? "." : "", ip->addr[i] >> 4, ip->addr[i] & 15);
}

static int spf__validated_ptr(osp_spf_eval_t *e, const char *target, bool for_macro,
                              char **name_r);

/* The value of one macro letter into v.  SPF_SUSPEND if %{p} needs answers. */
static int spf__macro_value(osp_spf_eval_t *e, const osp_spf_request_t *req, const char *domain,
                            char letter, osp_buf_t *v)
{
    osp_ip_t ip = req->ip;
    char buf[OSP_IP_STRLEN];
    const char *s, *at;
    char *p = NULL;
    int rc;

    (void)osp_ip_unmap(&ip);
    switch (tolower((unsigned char)letter)) {
    case 's':
        s = e ? e->req.sender : req->sender;
        (void)osp_buf_append_str(v, s);
        return 0;
    case 'l':
        s = e ? e->req.sender : req->sender;
        at = strrchr(s, '@');
        if (at == NULL || at == s)
            (void)osp_buf_append_str(v, "postmaster");
        else
            (void)osp_buf_append(v, s, (size_t)(at - s));
        return 0;
    case 'o':
        s = e ? e->req.sender : req->sender;
        at = strrchr(s, '@');
        (void)osp_buf_append_str(v, at ? at + 1 : s);
        return 0;
    case 'd':
        (void)osp_buf_append_str(v, domain);
        return 0;
    case 'i':
        spf__ip_dotted(&ip, v);
        return 0;
    case 'p':
        if (e == NULL) {
            (void)osp_buf_append_str(v, "unknown");
            return 0;
        }
        rc = spf__validated_ptr(e, domain, true, &p);
        if (rc == SPF_SUSPEND)
            return rc;
        (void)osp_buf_append_str(v, p ? p : "unknown");
        free(p);
        return 0;
    case 'v':
        (void)osp_buf_append_str(v, ip.family == OSP_IP_V4 ? "in-addr" : "ip6");
        return 0;
    case 'h':
        (void)osp_buf_append_str(v, req->helo ? req->helo : "");
        return 0;
    case 'c':
        (void)osp_buf_append_str(v, osp_ip_format(&ip, buf, sizeof(buf)));
        return 0;
    case 'r':
        (void)osp_buf_append_str(v, req->receiver && req->receiver[0] ? req->receiver
                                                                       : "unknown");
        return 0;
    case 't':
        (void)osp_buf_printf(v, "%lld", (long long)(req->now ? req->now : time(NULL)));
        return 0;
    default:
        return -1;
    }
}

/*
 * Expand (or with out == NULL only check) a macro-string.  exp allows the
 * letters c, r, t and spaces.  Returns 0, -1 (syntax) or SPF_SUSPEND.
 */
static int spf__expand(osp_spf_eval_t *e, const osp_spf_request_t *req, const char *domain,
                       const char *m, bool exp, osp_buf_t *out)
{
    const char *p = m;

    while (*p) {
        unsigned char c = (unsigned char)*p;
        if (c != '%') {
            if (c < 0x21 || c > 0x7e) {
                if (!(exp && c == ' '))
                    return -1;
            }
            if (out && osp_buf_append_char(out, (char)c) < 0)
                return -1;
            p++;
            continue;
        }
        p++;
        if (*p == '%' || *p == '_' || *p == '-') {
            const char *rep = *p == '%' ? "%" : *p == '_' ? " " : "%20";
            if (out && osp_buf_append_str(out, rep) < 0)
                return -1;
            p++;
            continue;
        }
        if (*p != '{')
            return -1;
        p++;
        {
            char letter = *p++;
            unsigned long digits = 0;
            bool have_digits = false, rev = false;
            char delims[16];
            size_t nd = 0;
            const char *lc = "slodiphcrtv";
            osp_buf_t val, res;
            char *parts[256];
            size_t np = 0, i, first;
            int rc;

            if (letter == '\0' || strchr(lc, tolower((unsigned char)letter)) == NULL)
                return -1;
            if (!exp && strchr("crt", tolower((unsigned char)letter)) != NULL)
                return -1;
            while (isdigit((unsigned char)*p)) {
                have_digits = true;
                digits = digits * 10 + (unsigned long)(*p - '0');
                if (digits > 1000)
                    return -1;
                p++;
            }
            if (have_digits && digits == 0)
                return -1;
            if (*p == 'r' || *p == 'R') {
                rev = true;
                p++;
            }
            while (spf__is_delim(*p)) {
                if (nd < sizeof(delims) - 1)
                    delims[nd++] = *p;
                p++;
            }
            delims[nd] = '\0';
            if (*p != '}')
                return -1;
            p++;
            if (out == NULL)
                continue;
            osp_buf_init(&val, SPF_MAX_TEXT);
            rc = spf__macro_value(e, req, domain, letter, &val);
            if (rc != 0) {
                osp_buf_close(&val);
                return rc;
            }
            /* Split on the delimiters, reverse, keep the rightmost parts, join. */
            {
                char *s = val.data ? val.data : (char *)"";
                char *start = s;
                const char *dl = nd ? delims : ".";
                for (;; s++) {
                    if (*s == '\0' || strchr(dl, *s) != NULL) {
                        bool end = *s == '\0';
                        if (np < 256)
                            parts[np++] = start;
                        *s = '\0';
                        start = s + 1;
                        if (end)
                            break;
                    }
                }
            }
            if (rev)
                for (i = 0; i < np / 2; i++) {
                    char *t = parts[i];
                    parts[i] = parts[np - 1 - i];
                    parts[np - 1 - i] = t;
                }
            first = have_digits && digits < np ? np - digits : 0;
            osp_buf_init(&res, SPF_MAX_TEXT);
            for (i = first; i < np; i++) {
                if (i > first)
                    (void)osp_buf_append_char(&res, '.');
                (void)osp_buf_append_str(&res, parts[i]);
            }
            osp_buf_close(&val);
            if (isupper((unsigned char)letter)) {
                const char *q;
                for (q = osp_buf_cstr(&res); *q; q++) {
                    unsigned char ch = (unsigned char)*q;
                    if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~')
                        rc = osp_buf_append_char(out, (char)ch);
                    else
                        rc = osp_buf_printf(out, "%%%02X", ch);
                    if (rc < 0)
                        break;
                }
            } else {
                rc = osp_buf_append(out, res.data ? res.data : "", res.len);
            }
            osp_buf_close(&res);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

int osp_spf_macro_expand(const osp_spf_request_t *req, const char *domain, const char *macro,
                         bool exp, osp_buf_t *out)
{
    return spf__expand(NULL, req, domain, macro, exp, out) == 0 ? 0 : -1;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool spf__toplabel(const char *s, size_t n)
{
    size_t i;
    bool alpha = false;

    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (i = 0; i < n; i++) {
        if (isalpha((unsigned char)s[i]))
            alpha = true;
        else if (s[i] == '-')
            alpha = true;   /* the second form: a hyphen inside makes it valid */
        else if (!isdigit((unsigned char)s[i]))
            return false;
    }
    return alpha;
}

/* domain-spec = macro-string domain-end; domain-end = "." toplabel ["."] / macro-expand */
static bool spf__domain_spec_ok(const char *spec)
{
    size_t n = strlen(spec);
    const char *dot;
    size_t end;

    if (n == 0 || spf__expand(NULL, NULL, "", spec, false, NULL) != 0)
        return false;
    if (spec[n - 1] == '}')
        return true;
    if (n >= 2 && spec[n - 2] == '%' && strchr("%_-", spec[n - 1]) &&
        (n < 3 || spec[n - 3] != '%'))
        return true;
    end = n;
    if (spec[end - 1] == '.')
        end--;
    if (end == 0)
        return false;
    for (dot = spec + end - 1; dot > spec && *dot != '.'; dot--)
        ;
    if (*dot != '.')
        return false;
    return spf__toplabel(dot + 1, (size_t)(spec + end - dot - 1));
}

/* Expand a domain-spec and shorten it to 253 octets from the left (RFC 7208 7.3). */
static int spf__expand_domain(osp_spf_eval_t *e, const char *domain, const char *spec,
                              char **out_r)
{
    osp_buf_t b;
    const char *s;
    int rc;

    osp_buf_init(&b, SPF_MAX_TEXT);
    rc = spf__expand(e, &e->req, domain, spec, false, &b);
    if (rc != 0) {
        osp_buf_close(&b);
        return rc;
    }
    s = osp_buf_cstr(&b);
    while (strlen(s) > 253) {
        const char *dot = strchr(s, '.');
        if (dot == NULL)
            break;
        s = dot + 1;
    }
    *out_r = osp_strdup(s);
    osp_buf_close(&b);
    return 0;
}

/* ---- records -------------------------------------------------------------- */

static void spf__record_free(spf_record_t *r)
{
    size_t i;

    for (i = 0; i < r->n; i++) {
        free(r->t[i].spec);
        free(r->t[i].text);
    }
    free(r->t);
    free(r->redirect);
    free(r->exp);
    memset(r, 0, sizeof(*r));
}

/* "/N": N without leading zeros, at most max.  Advances *p. */
static int spf__cidr_len(const char **p, int max)
{
    const char *s = *p;
    int v = 0;

    if (!isdigit((unsigned char)*s))
        return -1;
    if (*s == '0' && isdigit((unsigned char)s[1]))
        return -1;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
        s++;
    }
    *p = s;
    return v;
}

static int spf__parse_term(spf_record_t *r, const char *tok, char *err, size_t errsize)
{
    spf_term_t t;
    const char *p = tok, *eq, *name_end;
    size_t i, n;

    memset(&t, 0, sizeof(t));
    t.cidr4 = t.cidr6 = -1;
    /* A modifier: name "=" macro-string, name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
    eq = strchr(tok, '=');
    if (eq && isalpha((unsigned char)tok[0])) {
        for (name_end = tok; name_end < eq; name_end++)
            if (!isalnum((unsigned char)*name_end) && !strchr("-_.", *name_end))
                break;
        if (name_end == eq) {
            size_t nl = (size_t)(eq - tok);
            const char *val = eq + 1;
            if ((nl == 8 && strncasecmp(tok, "redirect", 8) == 0) ||
                (nl == 3 && strncasecmp(tok, "exp", 3) == 0)) {
                char **slot = nl == 8 ? &r->redirect : &r->exp;
                if (*slot) {
                    osp_snprintf(err, errsize, "more than one %.*s= modifier", (int)nl, tok);
                    return -1;
                }
                if (!spf__domain_spec_ok(val)) {
                    osp_snprintf(err, errsize, "bad domain-spec in %.*s=", (int)nl, tok);
                    return -1;
                }
                *slot = osp_strdup(val);
                return 0;
            }
            if (spf__expand(NULL, NULL, "", val, false, NULL) != 0) {
                osp_snprintf(err, errsize, "bad macro-string in modifier %.*s", (int)nl, tok);
                return -1;
            }
            return 0;   /* unknown modifiers are ignored */
        }
    }
    t.qual = '+';
    if (*p && strchr("+-~?", *p))
        t.qual = *p++;
    n = strcspn(p, ":/");
    for (i = 0; i < sizeof(spf_mech_names) / sizeof(spf_mech_names[0]); i++)
        if (strlen(spf_mech_names[i]) == n && strncasecmp(p, spf_mech_names[i], n) == 0)
            break;
    if (i == sizeof(spf_mech_names) / sizeof(spf_mech_names[0])) {
        osp_snprintf(err, errsize, "unknown mechanism");
        return -1;
    }
    t.mech = (enum spf_mech)i;
    p += n;
    switch (t.mech) {
    case M_ALL:
        if (*p) {
            osp_snprintf(err, errsize, "\"all\" takes no argument");
            return -1;
        }
        break;
    case M_INCLUDE:
    case M_EXISTS:
    case M_PTR:
        if (*p == ':') {
            if (!spf__domain_spec_ok(p + 1)) {
                osp_snprintf(err, errsize, "bad domain-spec");
                return -1;
            }
            t.spec = osp_strdup(p + 1);
        } else if (*p || t.mech != M_PTR) {
            osp_snprintf(err, errsize, "%s needs \":domain\"", spf_mech_names[t.mech]);
            return -1;
        }
        break;
    case M_A:
    case M_MX:
        if (*p == ':') {
            /*
             * The dual-cidr is whatever "/digits" and "//digits" end the
             * term; "/" and ":" before that belong to the domain-spec
             * ("a:foo:bar/baz.example.com").
             */
            const char *q = p + strlen(p), *d;
            for (d = q; d > p + 1 && isdigit((unsigned char)d[-1]); d--)
                ;
            if (d < q && d[-1] == '/') {
                if (d - 2 > p && d[-2] == '/') {
                    q = d - 2;
                    for (d = q; d > p + 1 && isdigit((unsigned char)d[-1]); d--)
                        ;
                    if (d < q && d[-1] == '/' && !(d - 2 > p && d[-2] == '/'))
                        q = d - 1;
                } else {
                    q = d - 1;
                }
            }
            t.spec = osp_strndup(p + 1, (size_t)(q - p - 1));
            if (!spf__domain_spec_ok(t.spec)) {
                free(t.spec);
                osp_snprintf(err, errsize, "bad domain-spec");
                return -1;
            }
            p = q;
        }
        if (*p == '/' && p[1] != '/') {
            p++;
            if ((t.cidr4 = spf__cidr_len(&p, 32)) < 0)
                goto bad_cidr;
        }
        if (*p == '/' && p[1] == '/') {
            p += 2;
            if ((t.cidr6 = spf__cidr_len(&p, 128)) < 0)
                goto bad_cidr;
        }
        if (*p)
            goto bad_cidr;
        break;
    case M_IP4:
    case M_IP6: {
        char addr[OSP_IP_STRLEN + 1];
        const char *slash;
        size_t al;
        osp_ip_t ip;
        int len, max = t.mech == M_IP4 ? 32 : 128;

        if (*p != ':') {
            osp_snprintf(err, errsize, "%s needs an address", spf_mech_names[t.mech]);
            return -1;
        }
        p++;
        slash = strchr(p, '/');
        al = slash ? (size_t)(slash - p) : strlen(p);
        if (al == 0 || al >= sizeof(addr) || strchr(p, '[') || strncasecmp(p, "ipv6:", 5) == 0) {
            osp_snprintf(err, errsize, "bad %s address", spf_mech_names[t.mech]);
            return -1;
        }
        memcpy(addr, p, al);
        addr[al] = '\0';
        if (osp_ip_parse(addr, &ip) < 0 ||
            ip.family != (t.mech == M_IP4 ? OSP_IP_V4 : OSP_IP_V6)) {
            osp_snprintf(err, errsize, "bad %s address", spf_mech_names[t.mech]);
            return -1;
        }
        len = max;
        if (slash) {
            const char *q = slash + 1;
            if ((len = spf__cidr_len(&q, max)) < 0 || *q)
                goto bad_cidr;
        }
        /* Build the network: zero the host bits. */
        t.net.net = ip;
        t.net.prefixlen = (uint8_t)len;
        for (i = 0; i < 16; i++) {
            int bits = len - (int)i * 8;
            if (bits >= 8)
                continue;
            t.net.net.addr[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
        }
        break;
    }
    }
    t.text = osp_strdup(tok);
    r->t = osp_reallocarray(r->t, r->n + 1, sizeof(*r->t));
    r->t[r->n++] = t;
    return 0;
bad_cidr:
    free(t.spec);
    osp_snprintf(err, errsize, "bad CIDR length");
    return -1;
}

/* Parse a whole record; any syntax error anywhere is a permerror (4.6). */
static int spf__parse(const char *text, spf_record_t *r, char *err, size_t errsize)
{
    const char *p = text + 6;
    size_t i;

    memset(r, 0, sizeof(*r));
    for (i = 0; text[i]; i++)
        if ((unsigned char)text[i] > 0x7e ||
            ((unsigned char)text[i] < 0x20 && text[i] != '\t')) {
            osp_snprintf(err, errsize, "non-ASCII or control character in record");
            return -1;
        }
    for (;;) {
        size_t n;
        char *tok;
        int rc;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        n = strcspn(p, " ");
        tok = osp_strndup(p, n);
        p += n;
        rc = spf__parse_term(r, tok, err, errsize);
        if (rc < 0) {
            char e2[256];
            osp_snprintf(e2, sizeof(e2), "%s in \"%.64s\"", err, tok);
            osp_strlcpy(err, e2, errsize);
            free(tok);
            spf__record_free(r);
            return -1;
        }
        free(tok);
    }
    return 0;
}

static bool spf__is_spf1(const char *s)
{
    return strncasecmp(s, "v=spf1", 6) == 0 && (s[6] == '\0' || s[6] == ' ');
}

int osp_spf_record_check(const char *record, char *err, size_t errsize)
{
    spf_record_t r;

    if (!spf__is_spf1(record)) {
        osp_snprintf(err, errsize, "not an SPF record (no \"v=spf1\")");
        return -1;
    }
    if (spf__parse(record, &r, err, errsize) < 0)
        return -1;
    spf__record_free(&r);
    return 0;
}

/* ---- check_host() ------------------------------------------------------- */

static void spf__comment(osp_spf_eval_t *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void spf__comment(osp_spf_eval_t *e, const char *fmt, ...)
{
    va_list ap;

    osp_buf_reset(&e->comment);
    va_start(ap, fmt);
    (void)osp_buf_vprintf(&e->comment, fmt, ap);
    va_end(ap);
}

static int spf__count_lookup(osp_spf_eval_t *e)
{
    if (++e->lookups > SPF_MAX_LOOKUPS) {
        spf__comment(e, "more than %d DNS-querying terms", SPF_MAX_LOOKUPS);
        return OSP_SPF_PERMERROR;
    }
    return 0;
}

static int spf__count_void(osp_spf_eval_t *e)
{
    if (++e->voids > SPF_MAX_VOIDS) {
        spf__comment(e, "more than %d void DNS lookups", SPF_MAX_VOIDS);
        return OSP_SPF_PERMERROR;
    }
    return 0;
}

static bool spf__ip_in(const osp_ip_t *client, const osp_ip_t *addr, int cidr)
{
    osp_cidr_t c;
    size_t i;

    if (client->family != addr->family)
        return false;
    c.net = *addr;
    c.prefixlen = (uint8_t)cidr;
    for (i = 0; i < 16; i++) {
        int bits = cidr - (int)i * 8;
        if (bits >= 8)
            continue;
        c.net.addr[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
    }
    return osp_cidr_match(&c, client);
}

/*
 * The PTR names of the client that resolve back to it (5.5): with target,
 * whether one equals it or is below it (returns 1/0); for %{p}, the best
 * name into *name_r (NULL: none).  DNS errors skip names.
 */
static int spf__validated_ptr(osp_spf_eval_t *e, const char *target, bool for_macro,
                              char **name_r)
{
    char rev[OSP_IP_REVERSE_LEN + 16];
    const spf_answer_t *a, *h;
    enum spf_lk lk;
    size_t i, j, n;
    bool missing = false;
    const char *best = NULL;
    int best_rank = 0;
    char *tn = spf__norm(target);

    if (name_r)
        *name_r = NULL;
    (void)osp_ip_reverse_name(&e->ip, rev, OSP_IP_REVERSE_LEN);
    osp_strlcpy(rev + strlen(rev), e->v6 ? ".ip6.arpa" : ".in-addr.arpa", 16);
    lk = spf__lookup(e, rev, OSP_DNS_PTR, &a);
    if (lk == LK_MISSING) {
        free(tn);
        return SPF_SUSPEND;
    }
    if (lk != LK_FOUND) {
        free(tn);
        if (lk == LK_NOTFOUND && !for_macro)
            return -2;   /* void */
        return 0;
    }
    n = a->n < SPF_MAX_PTR ? a->n : SPF_MAX_PTR;
    for (i = 0; i < n; i++) {
        const char *name = a->s[i];
        size_t ln = strlen(name), lt = strlen(tn);
        int rank;

        if (strcmp(name, tn) == 0)
            rank = 3;
        else if (ln > lt && name[ln - lt - 1] == '.' && strcmp(name + ln - lt, tn) == 0)
            rank = 2;
        else if (for_macro)
            rank = 1;
        else
            continue;
        if (rank <= best_rank)
            continue;
        lk = spf__lookup(e, name, e->v6 ? OSP_DNS_AAAA : OSP_DNS_A, &h);
        if (lk == LK_MISSING) {
            missing = true;
            continue;
        }
        if (lk != LK_FOUND)
            continue;
        for (j = 0; j < h->n; j++)
            if (osp_ip_equal(&h->ip[j], &e->ip))
                break;
        if (j == h->n)
            continue;
        if (missing)
            continue;
        best = name;
        best_rank = rank;
    }
    free(tn);
    if (missing)
        return SPF_SUSPEND;
    if (name_r && best)
        *name_r = osp_strdup(best);
    return best != NULL && best_rank >= 2 ? 1 : 0;
}

static int spf__check_host(osp_spf_eval_t *e, const char *domain, int depth, bool want_exp);

/* Evaluate one mechanism: 1 match, 0 no match, or OSP_SPF_TEMPERROR/PERMERROR/SUSPEND. */
static int spf__mechanism(osp_spf_eval_t *e, const spf_term_t *t, const char *domain, int depth)
{
    char *target = NULL;
    const spf_answer_t *a, *h;
    enum spf_lk lk;
    int rc = 0;
    size_t i, j;
    int c4 = t->cidr4 < 0 ? 32 : t->cidr4, c6 = t->cidr6 < 0 ? 128 : t->cidr6;
    int atype = e->v6 ? OSP_DNS_AAAA : OSP_DNS_A;

    switch (t->mech) {
    case M_ALL:
        return 1;
    case M_IP4:
    case M_IP6:
        return osp_cidr_match(&t->net, &e->ip) && t->net.net.family == e->ip.family;
    default:
        break;
    }
    if ((rc = spf__count_lookup(e)) != 0)
        return rc;
    if (t->spec) {
        rc = spf__expand_domain(e, domain, t->spec, &target);
        if (rc == SPF_SUSPEND)
            return rc;
        if (rc != 0) {
            spf__comment(e, "macro error in \"%s\"", t->text);
            return OSP_SPF_PERMERROR;
        }
    } else {
        target = osp_strdup(domain);
    }
    switch (t->mech) {
    case M_INCLUDE:
        rc = spf__check_host(e, target, depth + 1, false);
        switch (rc) {
        case OSP_SPF_PASS:
            rc = 1;
            break;
        case OSP_SPF_FAIL:
        case OSP_SPF_SOFTFAIL:
        case OSP_SPF_NEUTRAL:
            rc = 0;
            break;
        case OSP_SPF_NONE:
            spf__comment(e, "included domain %s has no SPF record", target);
            rc = OSP_SPF_PERMERROR;
            break;
        default:
            break;   /* temperror, permerror, suspend */
        }
        break;
    case M_A:
        lk = spf__lookup(e, target, atype, &a);
        if (lk == LK_MISSING) {
            rc = SPF_SUSPEND;
        } else if (lk == LK_TEMPFAIL) {
            spf__comment(e, "DNS failure looking up %s", target);
            rc = OSP_SPF_TEMPERROR;
        } else if (lk == LK_NOTFOUND) {
            rc = spf__count_void(e);
        } else {
            for (i = 0; i < a->n && rc == 0; i++)
                rc = spf__ip_in(&e->ip, &a->ip[i], e->v6 ? c6 : c4);
        }
        break;
    case M_MX: {
        bool missing = false;
        lk = spf__lookup(e, target, OSP_DNS_MX, &a);
        if (lk == LK_MISSING) {
            rc = SPF_SUSPEND;
            break;
        }
        if (lk == LK_TEMPFAIL) {
            spf__comment(e, "DNS failure looking up MX %s", target);
            rc = OSP_SPF_TEMPERROR;
            break;
        }
        if (lk == LK_NOTFOUND) {
            rc = spf__count_void(e);
            break;
        }
        if (a->n > SPF_MAX_MX) {
            spf__comment(e, "more than %d MX names for %s", SPF_MAX_MX, target);
            rc = OSP_SPF_PERMERROR;
            break;
        }
        for (i = 0; i < a->n && rc == 0; i++) {
            if (a->s[i][0] == '\0')
                continue;   /* null MX */
            lk = spf__lookup(e, a->s[i], atype, &h);
            if (lk == LK_MISSING) {
                missing = true;
                continue;
            }
            if (missing)
                continue;
            if (lk == LK_TEMPFAIL) {
                spf__comment(e, "DNS failure looking up %s", a->s[i]);
                rc = OSP_SPF_TEMPERROR;
                break;
            }
            if (lk == LK_NOTFOUND)
                continue;
            for (j = 0; j < h->n && rc == 0; j++)
                rc = spf__ip_in(&e->ip, &h->ip[j], e->v6 ? c6 : c4);
        }
        if (missing)
            rc = SPF_SUSPEND;
        break;
    }
    case M_PTR:
        rc = spf__validated_ptr(e, target, false, NULL);
        if (rc == -2)
            rc = spf__count_void(e);
        break;
    case M_EXISTS:
        lk = spf__lookup(e, target, OSP_DNS_A, &a);
        if (lk == LK_MISSING) {
            rc = SPF_SUSPEND;
        } else if (lk == LK_TEMPFAIL) {
            spf__comment(e, "DNS failure looking up %s", target);
            rc = OSP_SPF_TEMPERROR;
        } else if (lk == LK_NOTFOUND) {
            rc = spf__count_void(e);
        } else {
            rc = 1;
        }
        break;
    default:
        osp_panic("spf: mechanism %d", (int)t->mech);
    }
    free(target);
    return rc;
}

/* exp= (6.2): the explanation into e->expl, or nothing on any problem. */
static int spf__explain(osp_spf_eval_t *e, const char *domain, const char *spec)
{
    char *target = NULL;
    const spf_answer_t *a;
    enum spf_lk lk;
    int rc;
    osp_buf_t b;

    rc = spf__expand_domain(e, domain, spec, &target);
    if (rc != 0)
        return rc == SPF_SUSPEND ? rc : 0;
    lk = spf__lookup(e, target, OSP_DNS_TXT, &a);
    free(target);
    if (lk == LK_MISSING)
        return SPF_SUSPEND;
    if (lk != LK_FOUND || a->n != 1)
        return 0;
    osp_buf_init(&b, SPF_MAX_TEXT);
    rc = spf__expand(e, &e->req, domain, a->s[0], true, &b);
    if (rc == SPF_SUSPEND) {
        osp_buf_close(&b);
        return rc;
    }
    if (rc == 0) {
        osp_buf_reset(&e->expl);
        (void)osp_buf_append_printable(&e->expl, b.data ? b.data : "", b.len);
    }
    osp_buf_close(&b);
    return 0;
}

static int spf__check_host(osp_spf_eval_t *e, const char *domain, int depth, bool want_exp)
{
    const spf_answer_t *a;
    enum spf_lk lk;
    const char *text = NULL;
    spf_record_t r;
    char err[256];
    size_t i;
    int rc;

    if (depth > SPF_MAX_DEPTH) {
        spf__comment(e, "include/redirect nested too deeply");
        return OSP_SPF_PERMERROR;
    }
    if (!spf__domain_ok(domain)) {
        spf__comment(e, "%s is not a valid domain name", depth ? "target" : "identity");
        return OSP_SPF_NONE;
    }
    lk = spf__lookup(e, domain, OSP_DNS_TXT, &a);
    if (lk == LK_MISSING)
        return SPF_SUSPEND;
    if (lk == LK_TEMPFAIL) {
        spf__comment(e, "DNS failure looking up TXT %s", domain);
        return OSP_SPF_TEMPERROR;
    }
    if (lk == LK_FOUND) {
        for (i = 0; i < a->n; i++) {
            if (!spf__is_spf1(a->s[i]))
                continue;
            if (text) {
                spf__comment(e, "%s has more than one SPF record", domain);
                return OSP_SPF_PERMERROR;
            }
            text = a->s[i];
        }
    }
    if (text == NULL) {
        spf__comment(e, "%s has no SPF record", domain);
        return OSP_SPF_NONE;
    }
    if (spf__parse(text, &r, err, sizeof(err)) < 0) {
        spf__comment(e, "bad SPF record for %s: %s", domain, err);
        return OSP_SPF_PERMERROR;
    }
    for (i = 0; i < r.n; i++) {
        const spf_term_t *t = &r.t[i];
        rc = spf__mechanism(e, t, domain, depth);
        if (rc == 0)
            continue;
        if (rc != 1)
            goto out;
        switch (t->qual) {
        case '-':
            rc = OSP_SPF_FAIL;
            break;
        case '~':
            rc = OSP_SPF_SOFTFAIL;
            break;
        case '?':
            rc = OSP_SPF_NEUTRAL;
            break;
        default:
            rc = OSP_SPF_PASS;
            break;
        }
        spf__comment(e, "mechanism %s matched in the record of %s", t->text, domain);
        if (rc == OSP_SPF_FAIL && want_exp && r.exp) {
            int erc = spf__explain(e, domain, r.exp);
            if (erc == SPF_SUSPEND)
                rc = erc;
        }
        goto out;
    }
    if (r.redirect) {
        char *target = NULL;
        if ((rc = spf__count_lookup(e)) != 0)
            goto out;
        rc = spf__expand_domain(e, domain, r.redirect, &target);
        if (rc == SPF_SUSPEND)
            goto out;
        if (rc != 0) {
            spf__comment(e, "macro error in redirect=%s", r.redirect);
            rc = OSP_SPF_PERMERROR;
            goto out;
        }
        rc = spf__check_host(e, target, depth + 1, want_exp);
        if (rc == OSP_SPF_NONE) {
            spf__comment(e, "redirect target %s has no SPF record", target);
            rc = OSP_SPF_PERMERROR;
        }
        free(target);
        goto out;
    }
    spf__comment(e, "no mechanism matched in the record of %s", domain);
    rc = OSP_SPF_NEUTRAL;
out:
    spf__record_free(&r);
    return rc;
}

/* ---- the evaluation object -------------------------------------------------- */

osp_spf_eval_t *osp_spf_eval_create(const osp_spf_request_t *req)
{
    osp_spf_eval_t *e = osp_calloc(1, sizeof(*e));
    const char *at;
    osp_buf_t s;

    e->req = *req;
    e->helo = osp_strdup(req->helo ? req->helo : "");
    e->receiver = osp_strdup(req->receiver ? req->receiver : "unknown");
    e->ip = req->ip;
    (void)osp_ip_unmap(&e->ip);
    e->v6 = e->ip.family == OSP_IP_V6;
    e->req.ip = e->ip;
    osp_buf_init(&s, 1024);
    /* 4.3/4.4: the null sender and HELO checks use postmaster@HELO. */
    if (req->helo_identity || req->sender == NULL || req->sender[0] == '\0') {
        (void)osp_buf_printf(&s, "postmaster@%s", e->helo);
    } else {
        at = strrchr(req->sender, '@');
        if (at == NULL)
            (void)osp_buf_printf(&s, "postmaster@%s", req->sender);
        else if (at == req->sender)
            (void)osp_buf_printf(&s, "postmaster%s", req->sender);
        else
            (void)osp_buf_append_str(&s, req->sender);
    }
    e->sender = osp_buf_steal(&s);
    osp_buf_close(&s);
    at = strrchr(e->sender, '@');
    e->sender_domain = osp_strdup(at + 1);
    e->req.sender = e->sender;
    e->req.helo = e->helo;
    e->req.receiver = e->receiver;
    if (e->req.now == 0)
        e->req.now = time(NULL);
    osp_buf_init(&e->expl, SPF_MAX_TEXT);
    osp_buf_init(&e->comment, 1024);
    e->out.identity = req->helo_identity ? "helo" : "mailfrom";
    return e;
}

void osp_spf_eval_free(osp_spf_eval_t **ep)
{
    osp_spf_eval_t *e = *ep;
    size_t i, j;

    if (e == NULL)
        return;
    for (i = 0; i < e->nans; i++) {
        free(e->ans[i].name);
        for (j = 0; e->ans[i].s && j < e->ans[i].n; j++)
            free(e->ans[i].s[j]);
        free(e->ans[i].s);
        free(e->ans[i].ip);
    }
    free(e->ans);
    for (i = 0; i < e->nmiss; i++)
        free(e->miss[i].name);
    free(e->miss);
    free(e->sender);
    free(e->helo);
    free(e->receiver);
    free(e->local);
    free(e->sender_domain);
    free(e->domain);
    osp_buf_close(&e->expl);
    osp_buf_close(&e->comment);
    free(e);
    *ep = NULL;
}

enum osp_spf_step osp_spf_eval_run(osp_spf_eval_t *e)
{
    size_t i;
    int rc;

    for (i = 0; i < e->nmiss; i++)
        free(e->miss[i].name);
    e->nmiss = 0;
    e->lookups = e->voids = 0;
    osp_buf_reset(&e->expl);
    osp_buf_reset(&e->comment);
    free(e->domain);
    e->domain = osp_strdup(e->req.helo_identity ? e->helo : e->sender_domain);
    rc = spf__check_host(e, e->domain, 0, true);
    if (rc == SPF_SUSPEND) {
        if (e->nmiss == 0)
            osp_panic("spf: suspended without a missing answer");
        return OSP_SPF_NEED_DNS;
    }
    e->out.result = (enum osp_spf_result)rc;
    e->out.domain = e->domain;
    e->out.explanation = osp_buf_cstr(&e->expl);
    e->out.comment = osp_buf_cstr(&e->comment);
    return OSP_SPF_DONE;
}

size_t osp_spf_eval_nmissing(const osp_spf_eval_t *e)
{
    return e->nmiss;
}

void osp_spf_eval_missing(const osp_spf_eval_t *e, size_t i, const char **name_r, int *type_r)
{
    if (i >= e->nmiss)
        osp_panic("osp_spf_eval_missing: %zu out of range", i);
    *name_r = e->miss[i].name;
    *type_r = e->miss[i].type;
}

const osp_spf_outcome_t *osp_spf_eval_outcome(const osp_spf_eval_t *e)
{
    return &e->out;
}

/* ---- Received-SPF ------------------------------------------------------------ */

void osp_spf_received(osp_buf_t *out, const osp_spf_request_t *req,
                      const osp_spf_outcome_t *o, const char *receiver)
{
    osp_ip_t ip = req->ip;
    char ipbuf[OSP_IP_STRLEN];
    const char *rcv = receiver && receiver[0] ? receiver : "unknown";
    const char *s = req->sender ? req->sender : "";
    const char *helo = req->helo ? req->helo : "";

    (void)osp_ip_unmap(&ip);
    (void)osp_ip_format(&ip, ipbuf, sizeof(ipbuf));
    (void)osp_buf_printf(out, "%s (%s: ", osp_spf_result_name(o->result), rcv);
    switch (o->result) {
    case OSP_SPF_PASS:
        (void)osp_buf_printf(out, "domain of %s designates %s as permitted sender", o->domain,
                             ipbuf);
        break;
    case OSP_SPF_FAIL:
    case OSP_SPF_SOFTFAIL:
        (void)osp_buf_printf(out, "domain of %s does not designate %s as permitted sender",
                             o->domain, ipbuf);
        break;
    case OSP_SPF_NEUTRAL:
        (void)osp_buf_printf(out, "%s is neither permitted nor denied by domain of %s", ipbuf,
                             o->domain);
        break;
    default:
        /* The comment may carry peer bytes; keep parentheses balanced. */
        for (const char *c = o->comment ? o->comment : ""; *c; c++)
            (void)osp_buf_append_char(out, *c == '(' || *c == ')' || (unsigned char)*c < 0x20 ||
                                      (unsigned char)*c > 0x7e ? '_' : *c);
        break;
    }
    (void)osp_buf_printf(out, ") client-ip=%s; envelope-from=\"", ipbuf);
    for (; *s; s++)
        (void)osp_buf_append_char(out, *s == '"' || *s == '\\' || (unsigned char)*s < 0x20 ||
                                  (unsigned char)*s > 0x7e ? '_' : *s);
    (void)osp_buf_append_str(out, "\"; helo=");
    for (; *helo; helo++)
        (void)osp_buf_append_char(out, (unsigned char)*helo <= 0x20 || *helo == ';' ||
                                  (unsigned char)*helo > 0x7e ? '_' : *helo);
    (void)osp_buf_printf(out, "; receiver=%s; identity=%s;", rcv, o->identity);
}

/* ---- the asynchronous driver ---------------------------------------------- */

#define SPF_MAX_PARALLEL 32

typedef struct spf_op {
    osp_spf_check_t *c;
    osp_dns_query_t *q;
    char *name;
    int type;
} spf_op_t;

struct osp_spf_check {
    osp_dns_t *dns;
    osp_spf_eval_t *e;
    spf_op_t ops[SPF_MAX_PARALLEL];
    unsigned pending;
    bool starting;
    osp_spf_done_cb cb;
    void *arg;
};

static void spf__check_free(osp_spf_check_t *c)
{
    size_t i;

    for (i = 0; i < SPF_MAX_PARALLEL; i++) {
        osp_dns_cancel(&c->ops[i].q);
        free(c->ops[i].name);
    }
    osp_spf_eval_free(&c->e);
    free(c);
}

/* Run the evaluation; start lookups or finish.  true when finished (c freed). */
static bool spf__check_step(osp_spf_check_t *c);

static void spf__dns_cb(const osp_dns_result_t *r, void *arg)
{
    spf_op_t *op = arg;
    osp_spf_check_t *c = op->c;

    op->q = NULL;
    osp_spf_eval_add(c->e, op->name, op->type, r);
    free(op->name);
    op->name = NULL;
    if (--c->pending == 0)
        (void)spf__check_step(c);
}

static bool spf__check_step(osp_spf_check_t *c)
{
    size_t i, n;

    if (osp_spf_eval_run(c->e) == OSP_SPF_DONE) {
        c->cb(osp_spf_eval_outcome(c->e), c->arg);
        spf__check_free(c);
        return true;
    }
    n = osp_spf_eval_nmissing(c->e);
    if (n > SPF_MAX_PARALLEL)
        n = SPF_MAX_PARALLEL;
    for (i = 0; i < n; i++) {
        spf_op_t *op = &c->ops[i];
        const char *name;
        int type;

        osp_spf_eval_missing(c->e, i, &name, &type);
        op->c = c;
        op->name = osp_strdup(name);
        op->type = type;
        c->pending++;
    }
    /* Start them only now: no callback can run before the loop turns. */
    for (i = 0; i < n; i++)
        c->ops[i].q = osp_dns_query(c->dns, c->ops[i].name, c->ops[i].type, spf__dns_cb,
                                    &c->ops[i]);
    return false;
}

osp_spf_check_t *osp_spf_check_start(osp_dns_t *dns, const osp_spf_request_t *req,
                                     osp_spf_done_cb cb, void *arg)
{
    osp_spf_check_t *c = osp_calloc(1, sizeof(*c));

    c->dns = dns;
    c->cb = cb;
    c->arg = arg;
    c->e = osp_spf_eval_create(req);
    if (spf__check_step(c))
        return NULL;
    return c;
}

void osp_spf_check_cancel(osp_spf_check_t **cp)
{
    osp_spf_check_t *c = *cp;

    if (c == NULL)
        return;
    *cp = NULL;
    spf__check_free(c);
}
