/* osp_auth: DKIM, SPF (taken over) and DMARC results; Authentication-Results. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>

#include <opendkim/dkim.h>
#include <opendmarc/dmarc.h>

#include "osp_addr.h"
#include "osp_auth.h"
#include "osp_dns.h"
#include "osp_mem.h"

/* Exported by libopendmarc 1.4 but missing from its header. */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

#define OSP_AUTH_TXT_MAX 8192   /* one name's TXT records */

struct osp_auth {
    osp_auth_conf_t conf;
    DKIM_LIB *dkim;
    bool psl;               /* a public suffix list was loaded */
};

static const char *const osp_auth__res_names[] = {
    "none", "pass", "fail", "softfail", "neutral", "policy", "temperror", "permerror",
};

const char *osp_auth_res_name(enum osp_auth_res r)
{
    if ((size_t)r >= sizeof(osp_auth__res_names) / sizeof(osp_auth__res_names[0]))
        return "none";
    return osp_auth__res_names[r];
}

const char *osp_auth_policy_name(enum osp_auth_dmarc_policy p)
{
    switch (p) {
    case OSP_AUTH_P_NONE:
        return "none";
    case OSP_AUTH_P_QUARANTINE:
        return "quarantine";
    case OSP_AUTH_P_REJECT:
        return "reject";
    case OSP_AUTH_P_ABSENT:
        break;
    }
    return "absent";
}

/* ---- TXT from the system resolver ---------------------------------------- */

static int osp_auth__skip_name(const uint8_t *m, size_t len, size_t *off)
{
    while (*off < len) {
        uint8_t l = m[*off];
        if ((l & 0xc0) == 0xc0) {
            *off += 2;
            return *off <= len ? 0 : -1;
        }
        if (l & 0xc0)
            return -1;
        *off += 1 + (size_t)l;
        if (l == 0)
            return *off <= len ? 0 : -1;
    }
    return -1;
}

enum osp_auth_lookup osp_auth_txt_dns(void *arg, const char *name, osp_buf_t *out, size_t *n_r)
{
    unsigned timeout = arg ? *(const unsigned *)arg : 5;
    struct __res_state rs;
    uint8_t *ans;
    size_t off, end;
    int n, i, qd, an, herr;
    osp_buf_t txt;

    *n_r = 0;
    memset(&rs, 0, sizeof(rs));
    if (res_ninit(&rs) != 0)
        return OSP_AUTH_TEMPFAIL;
    rs.retrans = (int)(timeout ? timeout : 1);
    rs.retry = 1;
    ans = osp_malloc(65535);
    n = res_nquery(&rs, name, ns_c_in, ns_t_txt, ans, 65535);
    herr = rs.res_h_errno;
    res_nclose(&rs);
    if (n < 12) {
        free(ans);
        if (n < 0 && (herr == HOST_NOT_FOUND || herr == NO_DATA))
            return OSP_AUTH_NOTFOUND;
        return OSP_AUTH_TEMPFAIL;
    }
    end = (size_t)n;
    qd = ans[4] << 8 | ans[5];
    an = ans[6] << 8 | ans[7];
    off = 12;
    for (i = 0; i < qd; i++)
        if (osp_auth__skip_name(ans, end, &off) < 0 || (off += 4) > end) {
            free(ans);
            return OSP_AUTH_TEMPFAIL;
        }
    osp_buf_init(&txt, OSP_AUTH_TXT_MAX);
    for (i = 0; i < an; i++) {
        unsigned type, rdlen;
        if (osp_auth__skip_name(ans, end, &off) < 0 || off + 10 > end)
            break;
        type = (unsigned)(ans[off] << 8 | ans[off + 1]);
        rdlen = (unsigned)(ans[off + 8] << 8 | ans[off + 9]);
        off += 10;
        if (off + rdlen > end)
            break;
        if (type == ns_t_txt) {
            osp_buf_reset(&txt);
            if (osp_dns_rdata_txt(ans + off, rdlen, &txt) == 0 &&
                osp_buf_append(out, txt.data, txt.len) == 0 &&
                osp_buf_append_char(out, '\0') == 0)
                (*n_r)++;
        }
        off += rdlen;
    }
    osp_buf_close(&txt);
    free(ans);
    return *n_r ? OSP_AUTH_FOUND : OSP_AUTH_NOTFOUND;
}

/* ---- TXT from a zone file ----------------------------------------------------- */

typedef struct osp_auth_zrr {
    char *name;             /* lower case, no final dot */
    char *text;             /* the strings concatenated */
} osp_auth_zrr_t;

struct osp_auth_zone {
    osp_auth_zrr_t *rr;
    size_t n, alloc;
};

void osp_auth_zone_free(osp_auth_zone_t **zp)
{
    osp_auth_zone_t *z = *zp;
    size_t i;

    if (z == NULL)
        return;
    for (i = 0; i < z->n; i++) {
        free(z->rr[i].name);
        free(z->rr[i].text);
    }
    free(z->rr);
    free(z);
    *zp = NULL;
}

/* Parse '"a" "b"' into out.  0, or -1 when malformed. */
static int osp_auth__zone_strings(const char *p, osp_buf_t *out)
{
    int n = 0;

    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '\n' || *p == '\r' || *p == ';')
            return n ? 0 : -1;
        if (*p != '"')
            return -1;
        for (p++; *p != '"'; p++) {
            if (*p == '\0')
                return -1;
            if (*p == '\\' && p[1] != '\0')
                p++;
            if (osp_buf_append_char(out, *p) < 0)
                return -1;
        }
        p++;
        n++;
    }
}

osp_auth_zone_t *osp_auth_zone_load(const char *path, osp_buf_t *err)
{
    osp_auth_zone_t *z = osp_calloc(1, sizeof(*z));
    FILE *f = fopen(path, "r");
    char line[4096];
    unsigned lineno = 0;
    bool bad = false;
    osp_buf_t text;

    if (f == NULL) {
        osp_buf_printf(err, "%s: %s", path, strerror(errno));
        free(z);
        return NULL;
    }
    osp_buf_init(&text, OSP_AUTH_TXT_MAX);
    while (fgets(line, sizeof(line), f) != NULL) {
        char name[256], f2[32], f3[32], f4[32];
        const char *rest;
        int used = 0;
        size_t nl;

        lineno++;
        if (line[0] == '#' || line[0] == ';' || strspn(line, " \t\r\n") == strlen(line))
            continue;
        if (sscanf(line, "%255s %31s %31s %31s %n", name, f2, f3, f4, &used) < 4 || used == 0)
            continue;               /* not a TXT line in our form: other types are ignored */
        if (strcasecmp(f4, "TXT") != 0 || strcasecmp(f3, "IN") != 0)
            continue;
        rest = line + used;
        osp_buf_reset(&text);
        if (osp_auth__zone_strings(rest, &text) < 0) {
            osp_buf_printf(err, "%s%s, line %u: bad TXT strings", bad ? "\n" : "", path, lineno);
            bad = true;
            continue;
        }
        nl = strlen(name);
        if (nl && name[nl - 1] == '.')
            name[--nl] = '\0';
        for (size_t k = 0; k < nl; k++)
            name[k] = (char)tolower((unsigned char)name[k]);
        if (z->n == z->alloc) {
            z->alloc = z->alloc ? 2 * z->alloc : 16;
            z->rr = osp_reallocarray(z->rr, z->alloc, sizeof(*z->rr));
        }
        z->rr[z->n].name = osp_strdup(name);
        z->rr[z->n].text = osp_memdup0(text.data, text.len);
        z->n++;
    }
    osp_buf_close(&text);
    fclose(f);
    if (bad) {
        osp_auth_zone_free(&z);
        return NULL;
    }
    return z;
}

enum osp_auth_lookup osp_auth_txt_zone(void *arg, const char *name, osp_buf_t *out, size_t *n_r)
{
    const osp_auth_zone_t *z = arg;
    size_t i, nl = strlen(name);

    *n_r = 0;
    if (nl && name[nl - 1] == '.')
        nl--;
    for (i = 0; i < z->n; i++)
        if (strlen(z->rr[i].name) == nl && strncasecmp(z->rr[i].name, name, nl) == 0 &&
            osp_buf_append(out, z->rr[i].text, strlen(z->rr[i].text) + 1) == 0)
            (*n_r)++;
    return *n_r ? OSP_AUTH_FOUND : OSP_AUTH_NOTFOUND;
}

/* ---- the library ---------------------------------------------------------------- */

/* Per-verification state reached from libopendkim's key callback. */
typedef struct osp_auth_vctx {
    const osp_auth_t *a;
    DKIM_SIGINFO *tempfail[OSP_AUTH_MAX_SIGS];
    size_t ntempfail;
} osp_auth_vctx_t;

static DKIM_CBSTAT osp_auth__key_cb(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    osp_auth_vctx_t *v = dkim_get_user_context(dkim);
    const char *sel = (const char *)dkim_sig_getselector(sig);
    const char *dom = (const char *)dkim_sig_getdomain(sig);
    char name[512];
    osp_buf_t out;
    size_t n = 0;
    enum osp_auth_lookup lk;

    if (v == NULL || sel == NULL || dom == NULL)
        return DKIM_CBSTAT_ERROR;
    if (osp_snprintf(name, sizeof(name), "%s._domainkey.%s", sel, dom) >= (int)sizeof(name))
        return DKIM_CBSTAT_NOTFOUND;
    osp_buf_init(&out, OSP_AUTH_TXT_MAX);
    lk = v->a->conf.txt(v->a->conf.txt_arg, name, &out, &n);
    if (lk == OSP_AUTH_FOUND && n > 0) {
        /* The first record (RFC 6376 3.6.2.2: several are unspecified). */
        osp_strlcpy((char *)buf, osp_buf_cstr(&out), buflen);
        osp_buf_close(&out);
        return DKIM_CBSTAT_CONTINUE;
    }
    osp_buf_close(&out);
    if (lk == OSP_AUTH_TEMPFAIL) {
        if (v->ntempfail < OSP_AUTH_MAX_SIGS)
            v->tempfail[v->ntempfail++] = sig;
        return DKIM_CBSTAT_TRYAGAIN;
    }
    return DKIM_CBSTAT_NOTFOUND;
}

osp_auth_t *osp_auth_create(const osp_auth_conf_t *conf, osp_buf_t *err)
{
    osp_auth_t *a = osp_calloc(1, sizeof(*a));
    OPENDMARC_LIB_T lib;
    dkim_query_t qm = DKIM_QUERY_DNS;
    static bool dmarc_inited;

    a->conf = *conf;
    a->dkim = dkim_init(NULL, NULL);
    if (a->dkim == NULL) {
        osp_buf_printf(err, "libopendkim: dkim_init failed");
        free(a);
        return NULL;
    }
    dkim_options(a->dkim, DKIM_OP_SETOPT, DKIM_OPTS_QUERYMETHOD, &qm, sizeof(qm));
    if (conf->fixed_time) {
        uint64_t t = conf->fixed_time;
        dkim_options(a->dkim, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME, &t, sizeof(t));
    }
    dkim_set_key_lookup(a->dkim, osp_auth__key_cb);

    /* libopendmarc keeps its settings and suffix list in globals: once. */
    if (!dmarc_inited) {
        memset(&lib, 0, sizeof(lib));
        lib.tld_type = OPENDMARC_TLD_TYPE_NONE;
        if (conf->psl_file && *conf->psl_file) {
            lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
            osp_strlcpy((char *)lib.tld_source_file, conf->psl_file, sizeof(lib.tld_source_file));
        }
        if (opendmarc_policy_library_init(&lib) != DMARC_PARSE_OKAY) {
            osp_buf_printf(err, "libopendmarc: cannot load the public suffix list %s",
                           conf->psl_file ? conf->psl_file : "");
            dkim_close(a->dkim);
            free(a);
            return NULL;
        }
        dmarc_inited = true;
    }
    a->psl = conf->psl_file && *conf->psl_file;
    return a;
}

void osp_auth_free(osp_auth_t **ap)
{
    osp_auth_t *a = *ap;

    if (a == NULL)
        return;
    dkim_close(a->dkim);
    free(a);
    *ap = NULL;
}

/* ---- header helpers ---------------------------------------------------------- */

/* One header field: [start, end) including folded lines, without the final line end. */
typedef struct osp_auth_field {
    const char *p;
    size_t len;
} osp_auth_field_t;

/*
 * The next field of the header section at msg[*off]; 1 with the field,
 * 0 at the end of the header section (*off then at the body), -1 at the
 * end of the input.
 */
static int osp_auth__next_field(const char *msg, size_t len, size_t *off, osp_auth_field_t *f)
{
    size_t i = *off, start = i;

    if (i >= len)
        return -1;
    if (msg[i] == '\n' || (msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n')) {
        *off = i + (msg[i] == '\r' ? 2 : 1);
        return 0;
    }
    for (;;) {
        const char *nl = memchr(msg + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - msg) : len;
        i = nl ? e + 1 : len;
        if (i >= len || (msg[i] != ' ' && msg[i] != '\t')) {
            f->p = msg + start;
            f->len = e - start;
            if (f->len && f->p[f->len - 1] == '\r')
                f->len--;
            *off = i;
            return 1;
        }
    }
}

static bool osp_auth__field_is(const osp_auth_field_t *f, const char *name)
{
    size_t n = strlen(name);
    size_t i = n;

    if (f->len <= n || strncasecmp(f->p, name, n) != 0)
        return false;
    while (i < f->len && (f->p[i] == ' ' || f->p[i] == '\t'))
        i++;
    return i < f->len && f->p[i] == ':';
}

/* The value after "Name:", copied unfolded into out[outsize]. */
static void osp_auth__field_value(const osp_auth_field_t *f, char *out, size_t outsize)
{
    const char *c = memchr(f->p, ':', f->len);
    size_t i, o = 0;

    if (outsize == 0)
        return;
    for (i = c ? (size_t)(c - f->p) + 1 : f->len; i < f->len && o + 1 < outsize; i++)
        if (f->p[i] != '\r' && f->p[i] != '\n')
            out[o++] = f->p[i] == '\t' ? ' ' : f->p[i];
    out[o] = '\0';
}

/* Keep only what may appear in a domain (and is printable) for header output. */
static void osp_auth__domain_copy(char *dst, size_t dsize, const char *src, size_t n)
{
    size_t o = 0, i;

    for (i = 0; i < n && o + 1 < dsize; i++) {
        unsigned char c = (unsigned char)src[i];
        if (isalnum(c) || c == '.' || c == '-' || c == '_')
            dst[o++] = (char)tolower(c);
        else
            break;
    }
    dst[o] = '\0';
    while (o && dst[o - 1] == '.')
        dst[--o] = '\0';
}

/* ---- SPF: the trusted Received-SPF field ----------------------------------------- */

static enum osp_auth_res osp_auth__spf_word(const char *w, size_t n)
{
    static const struct {
        const char *name;
        enum osp_auth_res r;
    } t[] = {
        { "pass", OSP_AUTH_PASS }, { "fail", OSP_AUTH_FAIL }, { "softfail", OSP_AUTH_SOFTFAIL },
        { "neutral", OSP_AUTH_NEUTRAL }, { "none", OSP_AUTH_NONE },
        { "temperror", OSP_AUTH_TEMPERROR }, { "permerror", OSP_AUTH_PERMERROR },
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strlen(t[i].name) == n && strncasecmp(t[i].name, w, n) == 0)
            return t[i].r;
    return OSP_AUTH_PERMERROR;
}

/* The value of key=VALUE or key="VALUE" after the comment, into out. */
static bool osp_auth__spf_kv(const char *s, const char *key, char *out, size_t outsize)
{
    size_t kl = strlen(key);
    const char *p = s;

    while ((p = strcasestr(p, key)) != NULL) {
        if ((p == s || p[-1] == ' ' || p[-1] == ';') && p[kl] == '=') {
            size_t o = 0;
            p += kl + 1;
            if (*p == '"') {
                for (p++; *p && *p != '"' && o + 1 < outsize; p++)
                    out[o++] = *p;
            } else {
                for (; *p && *p != ';' && *p != ' ' && o + 1 < outsize; p++)
                    out[o++] = *p;
            }
            out[o] = '\0';
            return true;
        }
        p += kl;
    }
    return false;
}

static void osp_auth__spf_parse(const char *v, osp_auth_result_t *r)
{
    const char *p = v, *w;
    char buf[512], id[32];
    int depth = 0;

    while (*p == ' ')
        p++;
    w = p;
    while (isalpha((unsigned char)*p))
        p++;
    r->spf = osp_auth__spf_word(w, (size_t)(p - w));
    /* Skip the comment: key=value pairs come after it. */
    while (*p == ' ')
        p++;
    if (*p == '(') {
        for (; *p; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                continue;
            }
            if (*p == '(')
                depth++;
            else if (*p == ')' && --depth == 0) {
                p++;
                break;
            }
        }
    }
    r->spf_helo = osp_auth__spf_kv(p, "identity", id, sizeof(id)) && strcasecmp(id, "helo") == 0;
    if (!r->spf_helo && osp_auth__spf_kv(p, "envelope-from", buf, sizeof(buf))) {
        const char *at = strrchr(buf, '@');
        if (at != NULL && at[1]) {
            osp_auth__domain_copy(r->spf_domain, sizeof(r->spf_domain), at + 1, strlen(at + 1));
            return;
        }
    }
    /* identity=helo, or the null sender (RFC 7208 2.4: postmaster@HELO). */
    if (osp_auth__spf_kv(p, "helo", buf, sizeof(buf)))
        osp_auth__domain_copy(r->spf_domain, sizeof(r->spf_domain), buf, strlen(buf));
}

void osp_auth_spf_from_headers(const char *headers, size_t len, osp_auth_result_t *r)
{
    osp_auth_field_t f;
    size_t off = 0;
    char v[1024];

    r->spf = OSP_AUTH_NONE;
    r->spf_helo = false;
    r->spf_domain[0] = '\0';
    while (osp_auth__next_field(headers, len, &off, &f) == 1) {
        if (osp_auth__field_is(&f, "Received"))
            return;             /* came with the message: not ours */
        if (osp_auth__field_is(&f, "Received-SPF")) {
            osp_auth__field_value(&f, v, sizeof(v));
            osp_auth__spf_parse(v, r);
            return;
        }
    }
}

/* ---- DKIM ---------------------------------------------------------------------------- */

static void osp_auth__dkim(const osp_auth_t *a, const char *id, const char *msg, size_t len,
                           size_t body_off, osp_auth_result_t *r)
{
    osp_auth_vctx_t v;
    DKIM_STAT st;
    DKIM *d;
    DKIM_SIGINFO **sigs = NULL;
    osp_auth_field_t f;
    osp_buf_t line;
    size_t off = 0, i, k;
    int nsigs = 0;
    bool any_pass = false;

    memset(&v, 0, sizeof(v));
    v.a = a;
    r->dkim = OSP_AUTH_NONE;
    d = dkim_verify(a->dkim, (const u_char *)(id && *id ? id : "-"), NULL, &st);
    if (d == NULL) {
        r->dkim = OSP_AUTH_TEMPERROR;
        return;
    }
    dkim_set_user_context(d, &v);
    osp_buf_init(&line, 1024 * 1024);
    while (osp_auth__next_field(msg, body_off, &off, &f) == 1) {
        /* Folded lines with CR LF, as on the wire. */
        osp_buf_reset(&line);
        for (i = 0; i < f.len; i++) {
            if (f.p[i] == '\r')
                continue;
            if (f.p[i] == '\n')
                osp_buf_append_char(&line, '\r');
            osp_buf_append_char(&line, f.p[i]);
        }
        if (dkim_header(d, (u_char *)line.data, line.len) != DKIM_STAT_OK)
            break;
    }
    st = dkim_eoh(d);
    if (st == DKIM_STAT_NOSIG) {
        osp_buf_close(&line);
        dkim_free(d);
        return;
    }
    if (st == DKIM_STAT_OK) {
        /* The body with CR LF line ends, in pieces. */
        const char *p = msg + body_off, *e = msg + len;
        osp_buf_reset(&line);
        while (p < e) {
            const char *nl = memchr(p, '\n', (size_t)(e - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(e - p);
            if (n && p[n - 1] == '\r' && nl)
                n--;
            if (n >= 65536) {
                /* A very long line: straight through, not via the buffer. */
                if (line.len)
                    dkim_body(d, (u_char *)line.data, line.len);
                osp_buf_reset(&line);
                dkim_body(d, (u_char *)p, n);
            } else {
                osp_buf_append(&line, p, n);
            }
            if (nl)
                osp_buf_append(&line, "\r\n", 2);
            p = nl ? nl + 1 : e;
            if (line.len && (line.len >= 65536 || p >= e)) {
                dkim_body(d, (u_char *)line.data, line.len);
                osp_buf_reset(&line);
            }
        }
        (void)dkim_eom(d, NULL);
    }
    osp_buf_close(&line);

    if (dkim_getsiglist(d, &sigs, &nsigs) != DKIM_STAT_OK || nsigs <= 0) {
        /* A key lookup that said "try again" ends the verification with no list. */
        r->dkim = v.ntempfail ? OSP_AUTH_TEMPERROR : OSP_AUTH_PERMERROR;
        dkim_free(d);
        return;
    }
    for (k = 0; k < (size_t)nsigs && r->nsigs < OSP_AUTH_MAX_SIGS; k++) {
        DKIM_SIGINFO *sig = sigs[k];
        osp_auth_sig_t *s = &r->sigs[r->nsigs++];
        const char *dom = (const char *)dkim_sig_getdomain(sig);
        const char *sel = (const char *)dkim_sig_getselector(sig);
        int err = dkim_sig_geterror(sig);
        bool tf = false;

        osp_auth__domain_copy(s->domain, sizeof(s->domain), dom ? dom : "", dom ? strlen(dom) : 0);
        osp_auth__domain_copy(s->selector, sizeof(s->selector), sel ? sel : "",
                              sel ? strlen(sel) : 0);
        for (i = 0; i < v.ntempfail; i++)
            tf = tf || v.tempfail[i] == sig;
        if ((dkim_sig_getflags(sig) & DKIM_SIGFLAG_PASSED) &&
            dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH) {
            s->res = OSP_AUTH_PASS;
            any_pass = true;
        } else if (tf || err == DKIM_SIGERROR_KEYFAIL) {
            s->res = OSP_AUTH_TEMPERROR;
            osp_strlcpy(s->reason, "key lookup failed", sizeof(s->reason));
        } else if (err == DKIM_SIGERROR_NOKEY) {
            s->res = OSP_AUTH_PERMERROR;
            osp_strlcpy(s->reason, "no key for signature", sizeof(s->reason));
        } else if (err == DKIM_SIGERROR_BADSIG || err == DKIM_SIGERROR_OK ||
                   dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) {
            s->res = OSP_AUTH_FAIL;
            osp_strlcpy(s->reason, dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH
                        ? "body hash did not verify" : "signature did not verify",
                        sizeof(s->reason));
        } else if (err == DKIM_SIGERROR_KEYTOOSMALL) {
            s->res = OSP_AUTH_POLICY;
            osp_strlcpy(s->reason, "key too small", sizeof(s->reason));
        } else {
            const char *why = dkim_sig_geterrorstr(err);
            s->res = OSP_AUTH_NEUTRAL;
            osp_strlcpy(s->reason, why ? why : "unusable signature", sizeof(s->reason));
        }
    }
    r->dkim = any_pass ? OSP_AUTH_PASS : r->sigs[0].res;
    dkim_free(d);
}

/* ---- DMARC --------------------------------------------------------------------------- */

/* The domain of the single From field, lower case; false if none or several. */
static bool osp_auth__from_domain(const char *msg, size_t body_off, char *out, size_t outsize,
                                  bool *several_r)
{
    osp_auth_field_t f, from = { NULL, 0 };
    osp_mailbox_list_t l;
    size_t off = 0;
    unsigned n = 0;
    char v[1024];
    const char *d;

    *several_r = false;
    while (osp_auth__next_field(msg, body_off, &off, &f) == 1)
        if (osp_auth__field_is(&f, "From")) {
            from = f;
            n++;
        }
    if (n != 1) {
        *several_r = n > 1;
        return false;
    }
    osp_auth__field_value(&from, v, sizeof(v));
    /* Its one mailbox (comments, quoted names and groups respected). */
    osp_mailbox_list_init(&l);
    osp_mailbox_parse(&l, v);
    if (l.n == 1 && *(d = osp_mailbox_part(&l, 0, OSP_MAILBOX_DOMAIN)) != '\0')
        osp_auth__domain_copy(out, outsize, d, strlen(d));
    else
        *out = '\0';
    *several_r = l.n > 1;
    osp_mailbox_list_close(&l);
    return strchr(out, '.') != NULL;
}

/*
 * The DMARC record at _dmarc.DOMAIN into rec[recsize]: FOUND when exactly
 * one record starts with v=DMARC1 (RFC 7489 6.6.3: otherwise none).
 */
static enum osp_auth_lookup osp_auth__dmarc_record(const osp_auth_t *a, const char *domain,
                                                   char *rec, size_t recsize)
{
    char name[300];
    osp_buf_t out;
    size_t n = 0, i, found = 0;
    const char *p;
    enum osp_auth_lookup lk;

    if (osp_snprintf(name, sizeof(name), "_dmarc.%s", domain) >= (int)sizeof(name))
        return OSP_AUTH_NOTFOUND;
    osp_buf_init(&out, OSP_AUTH_TXT_MAX);
    lk = a->conf.txt(a->conf.txt_arg, name, &out, &n);
    if (lk == OSP_AUTH_FOUND) {
        p = out.data;
        for (i = 0; i < n; i++) {
            const char *q = p;
            while (*q == ' ')
                q++;
            if (strncmp(q, "v=DMARC1", 8) == 0 && (q[8] == ';' || q[8] == ' ' || q[8] == '\0')) {
                found++;
                osp_strlcpy(rec, p, recsize);
            }
            p += strlen(p) + 1;
        }
        lk = found == 1 ? OSP_AUTH_FOUND : OSP_AUTH_NOTFOUND;
    }
    osp_buf_close(&out);
    return lk;
}

static int osp_auth__dmarc_dkim_outcome(enum osp_auth_res r)
{
    switch (r) {
    case OSP_AUTH_PASS:
        return DMARC_POLICY_DKIM_OUTCOME_PASS;
    case OSP_AUTH_TEMPERROR:
        return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
    case OSP_AUTH_NONE:
        return DMARC_POLICY_DKIM_OUTCOME_NONE;
    default:
        return DMARC_POLICY_DKIM_OUTCOME_FAIL;
    }
}

static int osp_auth__dmarc_spf_outcome(enum osp_auth_res r)
{
    switch (r) {
    case OSP_AUTH_PASS:
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    case OSP_AUTH_TEMPERROR:
        return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    case OSP_AUTH_NONE:
        return DMARC_POLICY_SPF_OUTCOME_NONE;
    default:
        return DMARC_POLICY_SPF_OUTCOME_FAIL;
    }
}

static enum osp_auth_dmarc_policy osp_auth__p(int p)
{
    switch (p) {
    case DMARC_RECORD_P_REJECT:
        return OSP_AUTH_P_REJECT;
    case DMARC_RECORD_P_QUARANTINE:
        return OSP_AUTH_P_QUARANTINE;
    default:
        return OSP_AUTH_P_NONE;
    }
}

static void osp_auth__dmarc(const osp_auth_t *a, const char *msg, size_t body_off,
                            osp_auth_result_t *r)
{
    char rec[1024], org[256];
    bool several, at_org = false;
    enum osp_auth_lookup lk;
    DMARC_POLICY_T *pctx;
    int pol, p = 0;
    size_t i;

    r->dmarc = OSP_AUTH_NONE;
    r->policy = OSP_AUTH_P_ABSENT;
    if (!osp_auth__from_domain(msg, body_off, r->from_domain, sizeof(r->from_domain), &several)) {
        r->from_domain[0] = '\0';
        if (several) {
            r->dmarc = OSP_AUTH_PERMERROR;
            osp_strlcpy(r->dmarc_reason, "several From authors", sizeof(r->dmarc_reason));
        }
        return;
    }
    lk = osp_auth__dmarc_record(a, r->from_domain, rec, sizeof(rec));
    org[0] = '\0';
    if (lk == OSP_AUTH_NOTFOUND) {
        /* The organisational domain (RFC 7489 3.2, 6.6.3). */
        if (!a->psl || opendmarc_get_tld((u_char *)r->from_domain, (u_char *)org,
                                         sizeof(org)) != 0)
            org[0] = '\0';
        if (!a->psl) {
            /* No suffix list: the last two labels. */
            const char *dot = strrchr(r->from_domain, '.');
            const char *s = r->from_domain;
            if (dot != NULL)
                for (const char *q = r->from_domain; q < dot; q++)
                    if (*q == '.')
                        s = q + 1;
            osp_strlcpy(org, s, sizeof(org));
        }
        if (*org && strcasecmp(org, r->from_domain) != 0) {
            lk = osp_auth__dmarc_record(a, org, rec, sizeof(rec));
            at_org = true;
        }
    }
    if (lk == OSP_AUTH_TEMPFAIL) {
        r->dmarc = OSP_AUTH_TEMPERROR;
        osp_strlcpy(r->dmarc_reason, "record lookup failed", sizeof(r->dmarc_reason));
        return;
    }
    if (lk == OSP_AUTH_NOTFOUND)
        return;

    pctx = opendmarc_policy_connect_init((u_char *)"0.0.0.0", DMARC_POLICY_IP_TYPE_IPV4);
    if (pctx == NULL) {
        r->dmarc = OSP_AUTH_TEMPERROR;
        return;
    }
    if (opendmarc_policy_store_from_domain(pctx, (u_char *)r->from_domain) != DMARC_PARSE_OKAY ||
        opendmarc_policy_store_dmarc(pctx, (u_char *)rec, (u_char *)r->from_domain,
                                     at_org ? (u_char *)org : NULL) != DMARC_PARSE_OKAY) {
        r->dmarc = OSP_AUTH_PERMERROR;
        osp_strlcpy(r->dmarc_reason, "bad record", sizeof(r->dmarc_reason));
        opendmarc_policy_connect_shutdown(pctx);
        return;
    }
    for (i = 0; i < r->nsigs; i++)
        if (r->sigs[i].domain[0])
            opendmarc_policy_store_dkim(pctx, (u_char *)r->sigs[i].domain,
                                        (u_char *)r->sigs[i].selector,
                                        osp_auth__dmarc_dkim_outcome(r->sigs[i].res), NULL);
    if (r->spf_domain[0])
        opendmarc_policy_store_spf(pctx, (u_char *)r->spf_domain,
                                   osp_auth__dmarc_spf_outcome(r->spf),
                                   r->spf_helo ? DMARC_POLICY_SPF_ORIGIN_HELO
                                               : DMARC_POLICY_SPF_ORIGIN_MAILFROM, NULL);
    pol = opendmarc_get_policy_to_enforce(pctx);
    switch (pol) {
    case DMARC_POLICY_PASS:
        r->dmarc = OSP_AUTH_PASS;
        if (opendmarc_policy_fetch_p(pctx, &p) == DMARC_PARSE_OKAY)
            r->policy = osp_auth__p(p);
        else
            r->policy = OSP_AUTH_P_NONE;
        break;
    case DMARC_POLICY_REJECT:
        r->dmarc = OSP_AUTH_FAIL;
        r->policy = OSP_AUTH_P_REJECT;
        break;
    case DMARC_POLICY_QUARANTINE:
        r->dmarc = OSP_AUTH_FAIL;
        r->policy = OSP_AUTH_P_QUARANTINE;
        break;
    case DMARC_POLICY_NONE:
        r->dmarc = OSP_AUTH_FAIL;
        r->policy = OSP_AUTH_P_NONE;
        break;
    default:
        r->dmarc = OSP_AUTH_NONE;
        break;
    }
    opendmarc_policy_connect_shutdown(pctx);
}

/* ---- the check -------------------------------------------------------------------- */

void osp_auth_check(const osp_auth_t *a, const char *id, const char *msg, size_t len,
                    osp_auth_result_t *r)
{
    osp_auth_field_t f;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    while (osp_auth__next_field(msg, len, &off, &f) == 1)
        ;
    /* off is now at the body (or the end: a message without one). */
    osp_auth_spf_from_headers(msg, off, r);
    osp_auth__dkim(a, id, msg, len, off, r);
    osp_auth__dmarc(a, msg, off, r);
}

/* ---- Authentication-Results ---------------------------------------------------------- */

static void osp_auth__item(osp_buf_t *out, size_t *col, const char *text)
{
    size_t n = strlen(text);

    if (*col + n + 2 > 78) {
        osp_buf_append_str(out, ";\r\n\t");
        *col = 8;
    } else {
        osp_buf_append_str(out, "; ");
        *col += 2;
    }
    osp_buf_append_str(out, text);
    *col += n;
}

void osp_auth_header(osp_buf_t *out, const char *authserv_id, const osp_auth_result_t *r)
{
    char item[700];
    size_t col, i;

    osp_buf_printf(out, "Authentication-Results: %s", authserv_id);
    col = strlen("Authentication-Results: ") + strlen(authserv_id);
    if (r->nsigs == 0) {
        osp_snprintf(item, sizeof(item), "dkim=%s", osp_auth_res_name(r->dkim));
        osp_auth__item(out, &col, item);
    }
    for (i = 0; i < r->nsigs; i++) {
        const osp_auth_sig_t *s = &r->sigs[i];
        osp_snprintf(item, sizeof(item), "dkim=%s%s%s%s header.d=%s header.s=%s",
                     osp_auth_res_name(s->res), s->reason[0] ? " (" : "", s->reason,
                     s->reason[0] ? ")" : "", s->domain[0] ? s->domain : "unknown",
                     s->selector[0] ? s->selector : "unknown");
        osp_auth__item(out, &col, item);
    }
    if (r->spf_domain[0])
        osp_snprintf(item, sizeof(item), "spf=%s smtp.%s=%s", osp_auth_res_name(r->spf),
                     r->spf_helo ? "helo" : "mailfrom", r->spf_domain);
    else
        osp_snprintf(item, sizeof(item), "spf=%s", osp_auth_res_name(r->spf));
    osp_auth__item(out, &col, item);
    if (r->from_domain[0])
        osp_snprintf(item, sizeof(item), "dmarc=%s%s%s%s header.from=%s",
                     osp_auth_res_name(r->dmarc),
                     r->policy != OSP_AUTH_P_ABSENT ? " (p=" : "",
                     r->policy != OSP_AUTH_P_ABSENT ? osp_auth_policy_name(r->policy) : "",
                     r->policy != OSP_AUTH_P_ABSENT ? ")" : "", r->from_domain);
    else
        osp_snprintf(item, sizeof(item), "dmarc=%s", osp_auth_res_name(r->dmarc));
    osp_auth__item(out, &col, item);
    osp_buf_append_str(out, "\r\n");
}

/* ---- Authentication-Results fields that claim our authserv-id ------------ */

size_t osp_auth_field_end(const char *h, size_t len, size_t i)
{
    for (;;) {
        const char *nl = memchr(h + i, '\n', len - i);
        if (nl == NULL)
            return len;
        i = (size_t)(nl - h) + 1;
        if (i >= len || (h[i] != ' ' && h[i] != '\t'))
            return i;
    }
}

bool osp_auth_field_is_ours(const char *h, size_t i, size_t end, const char *id)
{
    static const char name[] = "Authentication-Results";
    size_t n = sizeof(name) - 1, idlen = strlen(id), depth = 0, j;

    if (end - i <= n || strncasecmp(h + i, name, n) != 0)
        return false;
    j = i + n;
    while (j < end && (h[j] == ' ' || h[j] == '\t'))
        j++;
    if (j >= end || h[j] != ':')
        return false;
    j++;
    /* CFWS: white space, folding and (nested) comments */
    while (j < end) {
        if (h[j] == '(')
            depth++;
        else if (h[j] == ')' && depth > 0)
            depth--;
        else if (depth == 0 && !isspace((unsigned char)h[j]))
            break;
        j++;
    }
    if (end - j < idlen || strncasecmp(h + j, id, idlen) != 0)
        return false;
    j += idlen;
    return j >= end || h[j] == ';' || h[j] == '(' || isspace((unsigned char)h[j]);
}

size_t osp_auth_count_ours(const char *hdr, size_t len, const char *authserv_id)
{
    size_t i = 0, n = 0;

    if (hdr == NULL || authserv_id == NULL || *authserv_id == '\0')
        return 0;
    while (i < len) {
        size_t end = osp_auth_field_end(hdr, len, i);
        if (osp_auth_field_is_ours(hdr, i, end, authserv_id))
            n++;
        i = end;
    }
    return n;
}

size_t osp_auth_strip_ours(osp_buf_t *hdr, const char *authserv_id)
{
    size_t i = 0, w = 0, n = 0;

    if (hdr->data == NULL || authserv_id == NULL || *authserv_id == '\0')
        return 0;
    while (i < hdr->len) {
        size_t end = osp_auth_field_end(hdr->data, hdr->len, i);
        if (osp_auth_field_is_ours(hdr->data, i, end, authserv_id)) {
            n++;
        } else {
            memmove(hdr->data + w, hdr->data + i, end - i);
            w += end - i;
        }
        i = end;
    }
    osp_buf_truncate(hdr, w);
    return n;
}
