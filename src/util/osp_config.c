/* osp_config: Postfix main.cf-style configuration with typed parameters. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"

#define OSP_CONFIG_MAX_LINE   (64 * 1024)   /* one logical line */
#define OSP_CONFIG_MAX_FILE   (4 * 1024 * 1024)
#define OSP_CONFIG_MAX_DEPTH  32            /* $name nesting */
#define OSP_CONFIG_MAX_VALUE  (256 * 1024)  /* after expansion */

/* Programs whose parameters share osprey.conf; see osp_config.h. */
static const char *const osp_config_prefixes[] = {
    "policyd_", "filter_", "worker_", "ctl_", NULL
};

/* One parameter: known (def != NULL) or unknown (from the file). */
typedef struct osp_param {
    const osp_param_def_t *def;
    char *name;          /* owned */
    char *raw;           /* owned; as written (or the default) */
    char *origin;        /* owned; "FILE, line N", "-o" or NULL for default */
    bool set;            /* set in a file or with -o */
    bool expanding;      /* recursion guard */
    char *value;         /* owned; expanded */
    union {
        int64_t i;
        bool b;
        uint64_t u;
    } v;
    char **list;         /* owned, for OSP_PT_LIST */
    size_t nlist;
} osp_param_t;

struct osp_config {
    char *prog;                 /* owned; "policyd_" or NULL */
    osp_param_t *params;        /* owned array */
    size_t nparams;
    size_t nknown;              /* params[0..nknown) come from the tables */
    bool finished;
};

/* ------------------------------------------------------------------ */

static osp_param_t *osp_config__find(const osp_config_t *cfg, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < cfg->nparams; i++) {
        if (strlen(cfg->params[i].name) == len && memcmp(cfg->params[i].name, name, len) == 0)
            return &cfg->params[i];
    }
    return NULL;
}

osp_config_t *osp_config_create(const char *prog, const osp_param_def_t *const *tables)
{
    osp_config_t *cfg = osp_calloc(1, sizeof(*cfg));
    size_t n = 0, t, i;

    for (t = 0; tables[t]; t++)
        for (i = 0; tables[t][i].name; i++)
            n++;
    cfg->params = osp_calloc(n ? n : 1, sizeof(osp_param_t));
    for (t = 0; tables[t]; t++) {
        for (i = 0; tables[t][i].name; i++) {
            const osp_param_def_t *d = &tables[t][i];
            osp_param_t *p;

            if (osp_config__find(cfg, d->name, strlen(d->name)))
                osp_panic("config: parameter %s defined twice", d->name);
            p = &cfg->params[cfg->nparams++];
            p->def = d;
            p->name = osp_strdup(d->name);
            p->raw = osp_strdup(d->defval ? d->defval : "");
        }
    }
    cfg->nknown = cfg->nparams;
    if (prog) {
        size_t len = strlen(prog);
        cfg->prog = osp_malloc(len + 2);
        memcpy(cfg->prog, prog, len);
        memcpy(cfg->prog + len, "_", 2);
    }
    return cfg;
}

static void osp_config__clear_value(osp_param_t *p)
{
    size_t i;

    OSP_FREE(&p->value);
    for (i = 0; i < p->nlist; i++)
        free(p->list[i]);
    OSP_FREE(&p->list);
    p->nlist = 0;
}

void osp_config_free(osp_config_t **cfgp)
{
    osp_config_t *cfg = *cfgp;
    size_t i;

    if (cfg == NULL)
        return;
    for (i = 0; i < cfg->nparams; i++) {
        osp_param_t *p = &cfg->params[i];
        osp_config__clear_value(p);
        free(p->name);
        free(p->raw);
        free(p->origin);
    }
    free(cfg->params);
    free(cfg->prog);
    free(cfg);
    *cfgp = NULL;
}

/* Add errors/warnings one per line. */
static void osp_config__msg(osp_buf_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void osp_config__msg(osp_buf_t *out, const char *fmt, ...)
{
    va_list ap;

    if (out == NULL)
        return;
    va_start(ap, fmt);
    (void)osp_buf_vprintf(out, fmt, ap);
    va_end(ap);
    (void)osp_buf_append_char(out, '\n');
}

static bool osp_config__valid_name(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > 128 || isdigit((unsigned char)s[0]))
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_'))
            return false;
    }
    return true;
}

/* Record name = value from origin (owned copy made). */
static void osp_config__assign(osp_config_t *cfg, const char *name, size_t nlen,
                               const char *value, size_t vlen, const char *origin)
{
    osp_param_t *p = osp_config__find(cfg, name, nlen);

    if (p == NULL) {
        cfg->params = osp_reallocarray(cfg->params, cfg->nparams + 1, sizeof(osp_param_t));
        p = &cfg->params[cfg->nparams++];
        memset(p, 0, sizeof(*p));
        p->name = osp_memdup0(name, nlen);
    }
    free(p->raw);
    free(p->origin);
    p->raw = osp_memdup0(value, vlen);
    p->origin = osp_strdup(origin);
    p->set = true;
    cfg->finished = false;
}

static void osp_config__trim(const char **s, size_t *len)
{
    while (*len && isspace((unsigned char)(*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len && isspace((unsigned char)(*s)[*len - 1]))
        (*len)--;
}

/* Parse one logical line (continuations already joined). */
static int osp_config__logical(osp_config_t *cfg, const char *origin, unsigned lineno,
                               const char *line, size_t len, osp_buf_t *errors)
{
    const char *eq = memchr(line, '=', len);
    const char *name = line, *value;
    size_t nlen, vlen;
    char where[512];

    osp_snprintf(where, sizeof(where), "%s, line %u", origin, lineno);
    if (eq == NULL) {
        osp_buf_t shown;
        osp_buf_init(&shown, 80);
        (void)osp_buf_append_printable(&shown, line, len > 60 ? 60 : len);
        osp_config__msg(errors, "%s: missing '=' after parameter name in \"%s\"",
                        where, osp_buf_cstr(&shown));
        osp_buf_close(&shown);
        return -1;
    }
    nlen = (size_t)(eq - line);
    osp_config__trim(&name, &nlen);
    if (!osp_config__valid_name(name, nlen)) {
        osp_buf_t shown;
        osp_buf_init(&shown, 160);
        (void)osp_buf_append_printable(&shown, name, nlen > 60 ? 60 : nlen);
        osp_config__msg(errors, "%s: invalid parameter name \"%s\" "
                        "(expected letters, digits and underscores)",
                        where, osp_buf_cstr(&shown));
        osp_buf_close(&shown);
        return -1;
    }
    value = eq + 1;
    vlen = len - (size_t)(value - line);
    osp_config__trim(&value, &vlen);
    osp_config__assign(cfg, name, nlen, value, vlen, where);
    return 0;
}

int osp_config_read_string(osp_config_t *cfg, const char *origin, const char *text,
                           osp_buf_t *errors)
{
    osp_buf_t logical;
    const char *p = text;
    unsigned lineno = 0, start_line = 0;
    int nerr = 0;
    bool have = false;

    osp_buf_init(&logical, OSP_CONFIG_MAX_LINE);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *q = p;
        size_t qlen = len;
        bool indented = isspace((unsigned char)p[0]);

        lineno++;
        p = nl ? nl + 1 : p + len;
        if (qlen && q[qlen - 1] == '\r')
            qlen--;
        osp_config__trim(&q, &qlen);
        /* Blank lines and lines starting with '#' (only there, as in Postfix). */
        if (qlen == 0 || q[0] == '#')
            continue;
        if (indented) {
            /* An indented line continues the previous logical line. */
            if (!have) {
                osp_config__msg(errors, "%s, line %u: indented line does not continue a "
                                "parameter (remove the leading whitespace)", origin, lineno);
                nerr++;
                continue;
            }
            if (osp_buf_append_char(&logical, ' ') < 0 || osp_buf_append(&logical, q, qlen) < 0) {
                osp_config__msg(errors, "%s, line %u: logical line longer than %d bytes",
                                origin, lineno, OSP_CONFIG_MAX_LINE);
                nerr++;
                have = false;
                osp_buf_reset(&logical);
            }
            continue;
        }
        if (have && osp_config__logical(cfg, origin, start_line, logical.data, logical.len,
                                        errors) < 0)
            nerr++;
        osp_buf_reset(&logical);
        if (osp_buf_append(&logical, q, qlen) < 0) {
            osp_config__msg(errors, "%s, line %u: logical line longer than %d bytes",
                            origin, lineno, OSP_CONFIG_MAX_LINE);
            nerr++;
            have = false;
            continue;
        }
        have = true;
        start_line = lineno;
    }
    if (have && osp_config__logical(cfg, origin, start_line, logical.data, logical.len,
                                    errors) < 0)
        nerr++;
    osp_buf_close(&logical);
    return nerr;
}

int osp_config_read_file(osp_config_t *cfg, const char *path, osp_buf_t *errors)
{
    FILE *fp = fopen(path, "r");
    osp_buf_t text;
    char chunk[8192];
    size_t n;
    int r;

    if (fp == NULL) {
        osp_config__msg(errors, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    osp_buf_init(&text, OSP_CONFIG_MAX_FILE);
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
        if (memchr(chunk, '\0', n)) {
            osp_config__msg(errors, "%s: file contains a NUL byte", path);
            fclose(fp);
            osp_buf_close(&text);
            return -1;
        }
        if (osp_buf_append(&text, chunk, n) < 0) {
            osp_config__msg(errors, "%s: file larger than %d bytes", path, OSP_CONFIG_MAX_FILE);
            fclose(fp);
            osp_buf_close(&text);
            return -1;
        }
    }
    if (ferror(fp)) {
        osp_config__msg(errors, "cannot read %s: %s", path, strerror(errno));
        fclose(fp);
        osp_buf_close(&text);
        return -1;
    }
    fclose(fp);
    r = osp_config_read_string(cfg, path, osp_buf_cstr(&text), errors);
    osp_buf_close(&text);
    return r;
}

int osp_config_override(osp_config_t *cfg, const char *assignment, osp_buf_t *errors)
{
    const char *eq = strchr(assignment, '=');
    const char *name = assignment, *value;
    size_t nlen, vlen;

    if (eq == NULL) {
        osp_config__msg(errors, "-o %s: expected name=value", assignment);
        return -1;
    }
    nlen = (size_t)(eq - assignment);
    osp_config__trim(&name, &nlen);
    if (!osp_config__valid_name(name, nlen)) {
        osp_config__msg(errors, "-o %s: invalid parameter name "
                        "(expected letters, digits and underscores)", assignment);
        return -1;
    }
    value = eq + 1;
    vlen = strlen(value);
    osp_config__trim(&value, &vlen);
    osp_config__assign(cfg, name, nlen, value, vlen, "-o");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Typed parsers */

int osp_parse_int(const char *s, int64_t *v_r)
{
    char *end;
    long long v;

    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return -1;
    *v_r = v;
    return 0;
}

int osp_parse_bool(const char *s, bool *b_r)
{
    static const char *const yes[] = { "yes", "true", "on", "1", NULL };
    static const char *const no[] = { "no", "false", "off", "0", NULL };
    size_t i;

    for (i = 0; yes[i]; i++)
        if (strcasecmp(s, yes[i]) == 0) {
            *b_r = true;
            return 0;
        }
    for (i = 0; no[i]; i++)
        if (strcasecmp(s, no[i]) == 0) {
            *b_r = false;
            return 0;
        }
    return -1;
}

/* A non-negative decimal number followed by a unit; 0 or -1. */
static int osp_parse__number_unit(const char *s, uint64_t *num_r, const char **unit_r)
{
    uint64_t v = 0;
    const char *p = s;

    while (isspace((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        p++;
    }
    *num_r = v;
    *unit_r = p;
    return 0;
}

int osp_parse_duration_ms(const char *s, int64_t *ms_r)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
        { "h", 3600000 }, { "d", 86400000 }, { "w", 604800000 },
    };
    uint64_t n;
    const char *unit;
    size_t i, ulen;

    if (osp_parse__number_unit(s, &n, &unit) < 0)
        return -1;
    ulen = strlen(unit);
    while (ulen && isspace((unsigned char)unit[ulen - 1]))
        ulen--;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strlen(units[i].unit) == ulen && strncmp(unit, units[i].unit, ulen) == 0) {
            if (n > (uint64_t)INT64_MAX / units[i].ms)
                return -1;
            *ms_r = (int64_t)(n * units[i].ms);
            return 0;
        }
    }
    return -1;
}

int osp_parse_size(const char *s, uint64_t *bytes_r)
{
    static const struct { const char *unit; uint64_t mult; } units[] = {
        { "", 1 }, { "b", 1 }, { "k", 1024 }, { "kb", 1024 },
        { "m", 1024 * 1024 }, { "mb", 1024 * 1024 },
        { "g", 1024ULL * 1024 * 1024 }, { "gb", 1024ULL * 1024 * 1024 },
    };
    uint64_t n;
    const char *unit;
    size_t i, ulen;

    if (osp_parse__number_unit(s, &n, &unit) < 0)
        return -1;
    ulen = strlen(unit);
    while (ulen && isspace((unsigned char)unit[ulen - 1]))
        ulen--;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strlen(units[i].unit) == ulen && strncasecmp(unit, units[i].unit, ulen) == 0) {
            if (n > UINT64_MAX / units[i].mult)
                return -1;
            *bytes_r = n * units[i].mult;
            return 0;
        }
    }
    return -1;
}

size_t osp_edit_distance(const char *a, const char *b)
{
    /* Optimal string alignment: insert, delete, substitute, transpose. */
    size_t la = strlen(a), lb = strlen(b), i, j, r;
    size_t *d;

    if (la > 256 || lb > 256)
        return (size_t)-1;
    d = osp_malloc((la + 1) * (lb + 1) * sizeof(size_t));
#define D(x, y) d[(x) * (lb + 1) + (y)]
    for (i = 0; i <= la; i++)
        D(i, 0) = i;
    for (j = 0; j <= lb; j++)
        D(0, j) = j;
    for (i = 1; i <= la; i++) {
        for (j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = D(i - 1, j - 1) + cost;
            if (D(i - 1, j) + 1 < best)
                best = D(i - 1, j) + 1;
            if (D(i, j - 1) + 1 < best)
                best = D(i, j - 1) + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                D(i - 2, j - 2) + 1 < best)
                best = D(i - 2, j - 2) + 1;
            D(i, j) = best;
        }
    }
    r = D(la, lb);
#undef D
    free(d);
    return r;
}

/* ------------------------------------------------------------------ */
/* Expansion and validation */

static const char *osp_config__where(const osp_param_t *p)
{
    return p->origin ? p->origin : "default";
}

/* Expand p->raw into p->value; 0 or -1 (message appended). */
static int osp_config__expand(osp_config_t *cfg, osp_param_t *p, unsigned depth, osp_buf_t *errors);

static int osp_config__expand_into(osp_config_t *cfg, osp_param_t *p, unsigned depth,
                                   osp_buf_t *out, osp_buf_t *errors)
{
    const char *s = p->raw;

    while (*s) {
        const char *name;
        size_t nlen;
        osp_param_t *ref;

        if (*s != '$') {
            const char *d = strchr(s, '$');
            size_t n = d ? (size_t)(d - s) : strlen(s);
            if (osp_buf_append(out, s, n) < 0)
                goto too_long;
            s += n;
            continue;
        }
        s++;
        if (*s == '$') {            /* "$$" is a literal dollar */
            if (osp_buf_append_char(out, '$') < 0)
                goto too_long;
            s++;
            continue;
        }
        if (*s == '{' || *s == '(') {
            char close = *s == '{' ? '}' : ')';
            const char *e = strchr(s + 1, close);
            if (e == NULL) {
                osp_config__msg(errors, "%s: parameter \"%s\": missing '%c' in \"%s\"",
                                osp_config__where(p), p->name, close, p->raw);
                return -1;
            }
            name = s + 1;
            nlen = (size_t)(e - name);
            s = e + 1;
        } else {
            name = s;
            while (isalnum((unsigned char)*s) || *s == '_')
                s++;
            nlen = (size_t)(s - name);
        }
        if (!osp_config__valid_name(name, nlen)) {
            osp_config__msg(errors, "%s: parameter \"%s\": '$' not followed by a parameter "
                            "name (write $$ for a literal dollar sign)",
                            osp_config__where(p), p->name);
            return -1;
        }
        ref = osp_config__find(cfg, name, nlen);
        if (ref == NULL) {
            osp_config__msg(errors, "%s: parameter \"%s\": reference to undefined "
                            "parameter \"$%.*s\"", osp_config__where(p), p->name,
                            (int)nlen, name);
            return -1;
        }
        if (osp_config__expand(cfg, ref, depth + 1, errors) < 0)
            return -1;
        if (osp_buf_append_str(out, ref->value) < 0)
            goto too_long;
    }
    return 0;
too_long:
    osp_config__msg(errors, "%s: parameter \"%s\": value longer than %d bytes after "
                    "expansion", osp_config__where(p), p->name, OSP_CONFIG_MAX_VALUE);
    return -1;
}

static int osp_config__expand(osp_config_t *cfg, osp_param_t *p, unsigned depth, osp_buf_t *errors)
{
    osp_buf_t out;
    int r;

    if (p->value)
        return 0;
    if (p->expanding || depth > OSP_CONFIG_MAX_DEPTH) {
        osp_config__msg(errors, "%s: parameter \"%s\": recursive reference to \"$%s\"",
                        osp_config__where(p), p->name, p->name);
        return -1;
    }
    p->expanding = true;
    osp_buf_init(&out, OSP_CONFIG_MAX_VALUE);
    r = osp_config__expand_into(cfg, p, depth, &out, errors);
    p->expanding = false;
    if (r < 0) {
        osp_buf_close(&out);
        return -1;
    }
    p->value = osp_buf_steal(&out);
    return 0;
}

static const char *osp_config__type_name(enum osp_param_type t)
{
    switch (t) {
    case OSP_PT_STRING:
        return "string";
    case OSP_PT_INT:
        return "integer";
    case OSP_PT_BOOL:
        return "boolean";
    case OSP_PT_DURATION:
        return "duration";
    case OSP_PT_SIZE:
        return "size";
    case OSP_PT_LIST:
        return "list";
    }
    return "?";
}

static void osp_config__split_list(osp_param_t *p)
{
    const char *s = p->value;

    while (*s) {
        size_t n;
        while (*s && (*s == ',' || isspace((unsigned char)*s)))
            s++;
        if (*s == '\0')
            break;
        n = strcspn(s, ", \t\r\n");
        p->list = osp_reallocarray(p->list, p->nlist + 1, sizeof(char *));
        p->list[p->nlist++] = osp_memdup0(s, n);
        s += n;
    }
}

static void osp_config__format_bound(const osp_param_def_t *d, int64_t v, char *buf, size_t size)
{
    if (d->type == OSP_PT_DURATION) {
        if (v % 1000 == 0)
            osp_snprintf(buf, size, "%llds", (long long)(v / 1000));
        else
            osp_snprintf(buf, size, "%lldms", (long long)v);
    } else {
        osp_snprintf(buf, size, "%lld", (long long)v);
    }
}

static int osp_config__check(osp_param_t *p, osp_buf_t *errors)
{
    const osp_param_def_t *d = p->def;
    int64_t num = 0;
    bool bounded = !(d->min == 0 && d->max == 0);
    char lo[32], hi[32];

    switch (d->type) {
    case OSP_PT_STRING:
        return 0;
    case OSP_PT_LIST:
        osp_config__split_list(p);
        return 0;
    case OSP_PT_BOOL:
        if (osp_parse_bool(p->value, &p->v.b) < 0) {
            osp_config__msg(errors, "%s: parameter \"%s\": invalid boolean \"%s\" "
                            "(expected yes or no)", osp_config__where(p), p->name, p->value);
            return -1;
        }
        return 0;
    case OSP_PT_INT:
        if (osp_parse_int(p->value, &num) < 0) {
            osp_config__msg(errors, "%s: parameter \"%s\": invalid integer \"%s\"",
                            osp_config__where(p), p->name, p->value);
            return -1;
        }
        p->v.i = num;
        break;
    case OSP_PT_DURATION:
        if (osp_parse_duration_ms(p->value, &num) < 0) {
            osp_config__msg(errors, "%s: parameter \"%s\": invalid duration \"%s\" "
                            "(expected a number with unit ms, s, m, h, d or w)",
                            osp_config__where(p), p->name, p->value);
            return -1;
        }
        p->v.i = num;
        break;
    case OSP_PT_SIZE: {
        uint64_t u;
        if (osp_parse_size(p->value, &u) < 0) {
            osp_config__msg(errors, "%s: parameter \"%s\": invalid size \"%s\" "
                            "(expected a number with optional unit k, M or G)",
                            osp_config__where(p), p->name, p->value);
            return -1;
        }
        p->v.u = u;
        num = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        break;
    }
    }
    if (bounded && (num < d->min || num > d->max)) {
        osp_config__format_bound(d, d->min, lo, sizeof(lo));
        osp_config__format_bound(d, d->max, hi, sizeof(hi));
        osp_config__msg(errors, "%s: parameter \"%s\": value \"%s\" out of range "
                        "(expected %s between %s and %s)", osp_config__where(p), p->name,
                        p->value, osp_config__type_name(d->type), lo, hi);
        return -1;
    }
    return 0;
}

static bool osp_config__other_program(const osp_config_t *cfg, const char *name)
{
    size_t i;

    for (i = 0; osp_config_prefixes[i]; i++) {
        const char *pre = osp_config_prefixes[i];
        if (strncmp(name, pre, strlen(pre)) == 0)
            return cfg->prog == NULL || strcmp(pre, cfg->prog) != 0;
    }
    return false;
}

static const char *osp_config__suggest(const osp_config_t *cfg, const char *name)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1, i, limit;

    for (i = 0; i < cfg->nknown; i++) {
        size_t dist = osp_edit_distance(name, cfg->params[i].name);
        if (dist < bestd) {
            bestd = dist;
            best = cfg->params[i].name;
        }
    }
    limit = strlen(name) / 3;
    if (limit < 2)
        limit = 2;
    return bestd <= limit ? best : NULL;
}

int osp_config_finish(osp_config_t *cfg, osp_buf_t *errors, osp_buf_t *warnings)
{
    size_t i;
    int nerr = 0;

    for (i = 0; i < cfg->nparams; i++)
        osp_config__clear_value(&cfg->params[i]);
    for (i = 0; i < cfg->nparams; i++) {
        osp_param_t *p = &cfg->params[i];

        if (osp_config__expand(cfg, p, 0, errors) < 0) {
            nerr++;
            /* Leave a value so later references do not report again. */
            if (p->value == NULL)
                p->value = osp_strdup("");
            continue;
        }
        if (p->def == NULL) {
            if (!osp_config__other_program(cfg, p->name)) {
                const char *s = osp_config__suggest(cfg, p->name);
                if (s)
                    osp_config__msg(warnings, "%s: unknown parameter \"%s\"; did you mean "
                                    "\"%s\"?", osp_config__where(p), p->name, s);
                else
                    osp_config__msg(warnings, "%s: unknown parameter \"%s\"",
                                    osp_config__where(p), p->name);
            }
            continue;
        }
        if (osp_config__check(p, errors) < 0)
            nerr++;
    }
    cfg->finished = nerr == 0;
    return nerr;
}

/* ------------------------------------------------------------------ */
/* Getters */

static const osp_param_t *osp_config__get(const osp_config_t *cfg, const char *name,
                                          enum osp_param_type type)
{
    const osp_param_t *p = osp_config__find(cfg, name, strlen(name));

    if (p == NULL || p->def == NULL)
        osp_panic("config: no parameter named %s", name);
    if (!cfg->finished)
        osp_panic("config: %s read before osp_config_finish succeeded", name);
    if (p->def->type != type)
        osp_panic("config: parameter %s is a %s, not a %s", name,
                  osp_config__type_name(p->def->type), osp_config__type_name(type));
    return p;
}

const char *osp_config_str(const osp_config_t *cfg, const char *name)
{
    return osp_config__get(cfg, name, OSP_PT_STRING)->value;
}

int64_t osp_config_int(const osp_config_t *cfg, const char *name)
{
    return osp_config__get(cfg, name, OSP_PT_INT)->v.i;
}

bool osp_config_bool(const osp_config_t *cfg, const char *name)
{
    return osp_config__get(cfg, name, OSP_PT_BOOL)->v.b;
}

int64_t osp_config_duration_ms(const osp_config_t *cfg, const char *name)
{
    return osp_config__get(cfg, name, OSP_PT_DURATION)->v.i;
}

uint64_t osp_config_size(const osp_config_t *cfg, const char *name)
{
    return osp_config__get(cfg, name, OSP_PT_SIZE)->v.u;
}

const char *const *osp_config_list(const osp_config_t *cfg, const char *name, size_t *n_r)
{
    const osp_param_t *p = osp_config__get(cfg, name, OSP_PT_LIST);

    *n_r = p->nlist;
    return (const char *const *)p->list;
}

bool osp_config_is_set(const osp_config_t *cfg, const char *name)
{
    const osp_param_t *p = osp_config__find(cfg, name, strlen(name));

    return p && p->set;
}

static int osp_config__cmp(const void *a, const void *b)
{
    const osp_param_t *const *pa = a, *const *pb = b;

    return strcmp((*pa)->name, (*pb)->name);
}

void osp_config_print(const osp_config_t *cfg, FILE *out, enum osp_config_print mode)
{
    const osp_param_t **sorted = osp_calloc(cfg->nknown ? cfg->nknown : 1, sizeof(*sorted));
    size_t i, n = 0;

    for (i = 0; i < cfg->nknown; i++)
        sorted[n++] = &cfg->params[i];
    qsort(sorted, n, sizeof(*sorted), osp_config__cmp);
    for (i = 0; i < n; i++) {
        const osp_param_t *p = sorted[i];
        const char *v;

        if (mode == OSP_CONFIG_PRINT_SET && !p->set)
            continue;
        if (mode == OSP_CONFIG_PRINT_DEFAULTS)
            v = p->def->defval ? p->def->defval : "";
        else
            v = mode == OSP_CONFIG_PRINT_SET ? p->raw : (p->value ? p->value : p->raw);
        if ((p->def->flags & OSP_PF_SECRET) && *v && mode != OSP_CONFIG_PRINT_DEFAULTS)
            v = "********";
        fprintf(out, "%s = %s\n", p->name, v);
    }
    free(sorted);
}
