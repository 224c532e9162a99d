/* osp_metrics: counters, gauges, histograms; Prometheus text format. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_metrics.h"

enum osp_metric_type {
    OSP_METRIC_COUNTER,
    OSP_METRIC_GAUGE,
    OSP_METRIC_HISTOGRAM,
};

/* The handles the hot path uses.  Doubles are kept as their bit pattern. */
struct osp_counter {
    _Atomic uint64_t value;
};

struct osp_gauge {
    _Atomic uint64_t bits;
};

struct osp_histogram {
    const double *bounds;        /* the family's */
    size_t nbounds;
    _Atomic uint64_t *buckets;   /* nbounds + 1, the last is +Inf; not cumulative */
    _Atomic uint64_t sum_bits;
};

/* One time series (or, for a histogram, one set of them). */
struct osp_metric_child {
    struct osp_metric_child *next;
    char **values;               /* nlabels label values, for lookup */
    char *labels;                /* rendered 'a="x",b="y"'; NULL when unlabelled */
    union {
        struct osp_counter counter;
        struct osp_gauge gauge;
        struct osp_histogram histogram;
    } u;
};

/*
 * A family: one name, type, help and label set.  The public vec types
 * osp_counter_vec_t etc. are never defined; they are this struct under a
 * type the compiler can tell apart.
 */
struct osp_metric_family {
    struct osp_metric_family *next;
    enum osp_metric_type type;
    char *name;
    char *help;                  /* NULL: no HELP line */
    char **label_names;
    size_t nlabels;
    double *bounds;              /* histograms */
    size_t nbounds;
    char **le;                   /* nbounds + 1 rendered 'le="0.005"', last +Inf */
    struct osp_metric_child *children;
    struct osp_metric_child **children_tail;
};

struct osp_metrics {
    struct osp_metric_family *families;
    struct osp_metric_family **families_tail;
    osp_metrics_collect_fn collect;
    void *collect_ctx;
};

const double osp_metrics_latency_bounds[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
const size_t osp_metrics_latency_nbounds =
    sizeof(osp_metrics_latency_bounds) / sizeof(osp_metrics_latency_bounds[0]);

static const char *const osp_metric_type_names[] = {
    [OSP_METRIC_COUNTER] = "counter",
    [OSP_METRIC_GAUGE] = "gauge",
    [OSP_METRIC_HISTOGRAM] = "histogram",
};

static uint64_t osp_metrics_d2u(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

static double osp_metrics_u2d(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof(d));
    return d;
}

/* ------------------------------------------------------------------ */
/* Registry                                                            */
/* ------------------------------------------------------------------ */

osp_metrics_t *osp_metrics_create(void)
{
    osp_metrics_t *reg = osp_calloc(1, sizeof(*reg));

    reg->families_tail = &reg->families;
    return reg;
}

static void osp_metrics_child_free(struct osp_metric_family *f,
                                   struct osp_metric_child *c)
{
    size_t i;

    if (c->values) {
        for (i = 0; i < f->nlabels; i++)
            free(c->values[i]);
        free(c->values);
    }
    free(c->labels);
    if (f->type == OSP_METRIC_HISTOGRAM)
        free(c->u.histogram.buckets);
    free(c);
}

void osp_metrics_free(osp_metrics_t **regp)
{
    osp_metrics_t *reg = *regp;
    struct osp_metric_family *f, *fnext;
    struct osp_metric_child *c, *cnext;
    size_t i;

    if (reg == NULL)
        return;
    for (f = reg->families; f; f = fnext) {
        fnext = f->next;
        for (c = f->children; c; c = cnext) {
            cnext = c->next;
            osp_metrics_child_free(f, c);
        }
        for (i = 0; i < f->nlabels; i++)
            free(f->label_names[i]);
        free(f->label_names);
        if (f->le)
            for (i = 0; i <= f->nbounds; i++)
                free(f->le[i]);
        free(f->le);
        free(f->bounds);
        free(f->name);
        free(f->help);
        free(f);
    }
    free(reg);
    *regp = NULL;
}

void osp_metrics_set_collect(osp_metrics_t *reg, osp_metrics_collect_fn fn, void *ctx)
{
    reg->collect = fn;
    reg->collect_ctx = ctx;
}

/* ------------------------------------------------------------------ */
/* Validation (failures are bugs in the caller)                        */
/* ------------------------------------------------------------------ */

static int osp_metrics_name_ok(const char *s, int colon)
{
    const char *p;

    if (*s == '\0')
        return 0;
    for (p = s; *p; p++) {
        char c = *p;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
            || (colon && c == ':'))
            continue;
        if (c >= '0' && c <= '9' && p != s)
            continue;
        return 0;
    }
    return 1;
}

/* Suffixes of the names a family owns: its own, and a histogram's series. */
static const char *const osp_metrics_suffixes[] = { "", "_bucket", "_sum", "_count" };

static size_t osp_metrics_nsuffixes(enum osp_metric_type type)
{
    return type == OSP_METRIC_HISTOGRAM ? 4 : 1;
}

/* Is a1 + a2 the same string as b1 + b2? */
static int osp_metrics_concat_eq(const char *a1, const char *a2,
                                 const char *b1, const char *b2)
{
    size_t la1 = strlen(a1), lb1 = strlen(b1), len = la1 + strlen(a2), i;

    if (len != lb1 + strlen(b2))
        return 0;
    for (i = 0; i < len; i++) {
        char ca = i < la1 ? a1[i] : a2[i - la1];
        char cb = i < lb1 ? b1[i] : b2[i - lb1];

        if (ca != cb)
            return 0;
    }
    return 1;
}

/* A new family may not share any series name with an existing one. */
static void osp_metrics_check_name(const osp_metrics_t *reg, const char *name,
                                   enum osp_metric_type type)
{
    const struct osp_metric_family *f;
    size_t i, j;

    if (!osp_metrics_name_ok(name, 1))
        osp_panic("metrics: invalid metric name \"%s\"", name);
    for (f = reg->families; f; f = f->next)
        for (i = 0; i < osp_metrics_nsuffixes(type); i++)
            for (j = 0; j < osp_metrics_nsuffixes(f->type); j++)
                if (osp_metrics_concat_eq(name, osp_metrics_suffixes[i],
                                          f->name, osp_metrics_suffixes[j]))
                    osp_panic("metrics: metric \"%s%s\" registered twice",
                              name, osp_metrics_suffixes[i]);
}

/* ------------------------------------------------------------------ */
/* Families and children                                               */
/* ------------------------------------------------------------------ */

static struct osp_metric_family *
osp_metrics_family_new(osp_metrics_t *reg, enum osp_metric_type type,
                       const char *name, const char *help,
                       const double *bounds, size_t nbounds, va_list *labels)
{
    struct osp_metric_family *f;
    const char *l;
    size_t i, j;

    osp_metrics_check_name(reg, name, type);
    f = osp_calloc(1, sizeof(*f));
    f->type = type;
    f->name = osp_strdup(name);
    f->help = help ? osp_strdup(help) : NULL;
    f->children_tail = &f->children;

    if (type == OSP_METRIC_HISTOGRAM) {
        if (bounds == NULL) {
            bounds = osp_metrics_latency_bounds;
            nbounds = osp_metrics_latency_nbounds;
        }
        if (nbounds > 0 && bounds[nbounds - 1] == INFINITY)
            nbounds--;                  /* +Inf is always there */
        for (i = 0; i < nbounds; i++) {
            if (isnan(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i])))
                osp_panic("metrics: histogram \"%s\": bounds not strictly ascending"
                          " at index %zu", name, i);
        }
        f->bounds = osp_reallocarray(NULL, nbounds, sizeof(double));
        if (nbounds)
            memcpy(f->bounds, bounds, nbounds * sizeof(double));
        f->nbounds = nbounds;
        f->le = osp_reallocarray(NULL, nbounds + 1, sizeof(char *));
        for (i = 0; i <= nbounds; i++) {
            osp_buf_t le;

            osp_buf_init(&le, OSP_BUF_UNLIMITED);
            osp_buf_append_str(&le, "le=\"");
            if (i < nbounds)
                osp_metrics_format_double(&le, bounds[i]);
            else
                osp_buf_append_str(&le, "+Inf");
            osp_buf_append_char(&le, '"');
            f->le[i] = osp_buf_steal(&le);
        }
    }

    if (labels) {
        while ((l = va_arg(*labels, const char *)) != NULL) {
            if (!osp_metrics_name_ok(l, 0) || strncmp(l, "__", 2) == 0)
                osp_panic("metrics: \"%s\": invalid label name \"%s\"", name, l);
            if (type == OSP_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
                osp_panic("metrics: \"%s\": label \"le\" is reserved in a histogram", name);
            for (j = 0; j < f->nlabels; j++)
                if (strcmp(f->label_names[j], l) == 0)
                    osp_panic("metrics: \"%s\": label \"%s\" given twice", name, l);
            f->label_names = osp_reallocarray(f->label_names, f->nlabels + 1,
                                              sizeof(char *));
            f->label_names[f->nlabels++] = osp_strdup(l);
        }
        if (f->nlabels == 0)
            osp_panic("metrics: \"%s\": labelled family without label names", name);
    }

    *reg->families_tail = f;
    reg->families_tail = &f->next;
    return f;
}

/* Append s with the escapes of the format: \\ and \n, plus \" if quote. */
static int osp_metrics_escape(osp_buf_t *out, const char *s, int quote)
{
    const char *p;

    for (p = s; *p; p++) {
        int r;

        if (*p == '\\')
            r = osp_buf_append(out, "\\\\", 2);
        else if (*p == '\n')
            r = osp_buf_append(out, "\\n", 2);
        else if (quote && *p == '"')
            r = osp_buf_append(out, "\\\"", 2);
        else
            r = osp_buf_append_char(out, *p);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* values: nlabels strings (borrowed, copied here), or NULL if unlabelled. */
static struct osp_metric_child *
osp_metrics_child_new(struct osp_metric_family *f, const char *const *values)
{
    struct osp_metric_child *c = osp_calloc(1, sizeof(*c));
    size_t i;

    if (f->nlabels) {
        osp_buf_t lb;

        osp_buf_init(&lb, OSP_BUF_UNLIMITED);
        c->values = osp_reallocarray(NULL, f->nlabels, sizeof(char *));
        for (i = 0; i < f->nlabels; i++) {
            c->values[i] = osp_strdup(values[i]);
            osp_buf_printf(&lb, "%s%s=\"", i ? "," : "", f->label_names[i]);
            osp_metrics_escape(&lb, values[i], 1);
            osp_buf_append_char(&lb, '"');
        }
        c->labels = osp_buf_steal(&lb);
    }

    switch (f->type) {
    case OSP_METRIC_COUNTER:
        atomic_init(&c->u.counter.value, 0);
        break;
    case OSP_METRIC_GAUGE:
        atomic_init(&c->u.gauge.bits, osp_metrics_d2u(0.0));
        break;
    case OSP_METRIC_HISTOGRAM:
        c->u.histogram.bounds = f->bounds;
        c->u.histogram.nbounds = f->nbounds;
        c->u.histogram.buckets = osp_reallocarray(NULL, f->nbounds + 1,
                                                  sizeof(_Atomic uint64_t));
        for (i = 0; i <= f->nbounds; i++)
            atomic_init(&c->u.histogram.buckets[i], 0);
        atomic_init(&c->u.histogram.sum_bits, osp_metrics_d2u(0.0));
        break;
    default:
        osp_panic("metrics: \"%s\": bad type %d", f->name, (int)f->type);
    }

    *f->children_tail = c;
    f->children_tail = &c->next;
    return c;
}

/* Find or create the child for the NULL-terminated label values in ap. */
static struct osp_metric_child *
osp_metrics_child_get(struct osp_metric_family *f, enum osp_metric_type type,
                      va_list ap)
{
    const char **values;
    const char *v;
    struct osp_metric_child *c;
    size_t n = 0, i;

    if (f->type != type)
        osp_panic("metrics: \"%s\" is a %s, not a %s", f->name,
                  osp_metric_type_names[f->type], osp_metric_type_names[type]);
    values = osp_calloc(f->nlabels + 1, sizeof(char *));
    while ((v = va_arg(ap, const char *)) != NULL) {
        if (n == f->nlabels)
            osp_panic("metrics: \"%s\": more than %zu label values", f->name, f->nlabels);
        values[n++] = v;
    }
    if (n != f->nlabels)
        osp_panic("metrics: \"%s\": %zu label values for %zu labels",
                  f->name, n, f->nlabels);

    for (c = f->children; c; c = c->next) {
        for (i = 0; i < n; i++)
            if (strcmp(c->values[i], values[i]) != 0)
                break;
        if (i == n)
            break;
    }
    if (c == NULL)
        c = osp_metrics_child_new(f, values);
    free(values);
    return c;
}

/* ------------------------------------------------------------------ */
/* Registration                                                        */
/* ------------------------------------------------------------------ */

osp_counter_t *osp_metrics_counter(osp_metrics_t *reg, const char *name,
                                   const char *help)
{
    struct osp_metric_family *f =
        osp_metrics_family_new(reg, OSP_METRIC_COUNTER, name, help, NULL, 0, NULL);

    return &osp_metrics_child_new(f, NULL)->u.counter;
}

osp_gauge_t *osp_metrics_gauge(osp_metrics_t *reg, const char *name,
                               const char *help)
{
    struct osp_metric_family *f =
        osp_metrics_family_new(reg, OSP_METRIC_GAUGE, name, help, NULL, 0, NULL);

    return &osp_metrics_child_new(f, NULL)->u.gauge;
}

osp_histogram_t *osp_metrics_histogram(osp_metrics_t *reg, const char *name,
                                       const char *help, const double *bounds,
                                       size_t nbounds)
{
    struct osp_metric_family *f =
        osp_metrics_family_new(reg, OSP_METRIC_HISTOGRAM, name, help,
                               bounds, nbounds, NULL);

    return &osp_metrics_child_new(f, NULL)->u.histogram;
}

osp_counter_vec_t *osp_metrics_counter_vec(osp_metrics_t *reg, const char *name,
                                           const char *help, ...)
{
    struct osp_metric_family *f;
    va_list ap;

    va_start(ap, help);
    f = osp_metrics_family_new(reg, OSP_METRIC_COUNTER, name, help, NULL, 0, &ap);
    va_end(ap);
    return (osp_counter_vec_t *)f;
}

osp_gauge_vec_t *osp_metrics_gauge_vec(osp_metrics_t *reg, const char *name,
                                       const char *help, ...)
{
    struct osp_metric_family *f;
    va_list ap;

    va_start(ap, help);
    f = osp_metrics_family_new(reg, OSP_METRIC_GAUGE, name, help, NULL, 0, &ap);
    va_end(ap);
    return (osp_gauge_vec_t *)f;
}

osp_histogram_vec_t *osp_metrics_histogram_vec(osp_metrics_t *reg, const char *name,
                                               const char *help, const double *bounds,
                                               size_t nbounds, ...)
{
    struct osp_metric_family *f;
    va_list ap;

    va_start(ap, nbounds);
    f = osp_metrics_family_new(reg, OSP_METRIC_HISTOGRAM, name, help,
                               bounds, nbounds, &ap);
    va_end(ap);
    return (osp_histogram_vec_t *)f;
}

osp_counter_t *osp_counter_vec_get(osp_counter_vec_t *vec, ...)
{
    struct osp_metric_child *c;
    va_list ap;

    va_start(ap, vec);
    c = osp_metrics_child_get((struct osp_metric_family *)vec, OSP_METRIC_COUNTER, ap);
    va_end(ap);
    return &c->u.counter;
}

osp_gauge_t *osp_gauge_vec_get(osp_gauge_vec_t *vec, ...)
{
    struct osp_metric_child *c;
    va_list ap;

    va_start(ap, vec);
    c = osp_metrics_child_get((struct osp_metric_family *)vec, OSP_METRIC_GAUGE, ap);
    va_end(ap);
    return &c->u.gauge;
}

osp_histogram_t *osp_histogram_vec_get(osp_histogram_vec_t *vec, ...)
{
    struct osp_metric_child *c;
    va_list ap;

    va_start(ap, vec);
    c = osp_metrics_child_get((struct osp_metric_family *)vec, OSP_METRIC_HISTOGRAM, ap);
    va_end(ap);
    return &c->u.histogram;
}

/* ------------------------------------------------------------------ */
/* Updates: relaxed atomics, no allocation                             */
/* ------------------------------------------------------------------ */

void osp_counter_inc(osp_counter_t *c)
{
    atomic_fetch_add_explicit(&c->value, 1, memory_order_relaxed);
}

void osp_counter_add(osp_counter_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void osp_counter_set(osp_counter_t *c, uint64_t v)
{
    atomic_store_explicit(&c->value, v, memory_order_relaxed);
}

uint64_t osp_counter_value(const osp_counter_t *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

void osp_gauge_set(osp_gauge_t *g, double v)
{
    atomic_store_explicit(&g->bits, osp_metrics_d2u(v), memory_order_relaxed);
}

/* Add v to the double stored as bits in *a. */
static void osp_metrics_add_double(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(
               a, &old, osp_metrics_d2u(osp_metrics_u2d(old) + v),
               memory_order_relaxed, memory_order_relaxed))
        ;
}

void osp_gauge_add(osp_gauge_t *g, double v)
{
    osp_metrics_add_double(&g->bits, v);
}

double osp_gauge_value(const osp_gauge_t *g)
{
    return osp_metrics_u2d(atomic_load_explicit(&g->bits, memory_order_relaxed));
}

void osp_histogram_observe(osp_histogram_t *h, double seconds)
{
    size_t lo = 0, hi = h->nbounds;

    /* First bucket with seconds <= bound; NaN compares false: +Inf. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (seconds <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    osp_metrics_add_double(&h->sum_bits, seconds);
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */
/* ------------------------------------------------------------------ */

/*
 * The fewest significant digits that read back as the same double, in
 * plain notation when the decimal exponent is in [-4, 15) (so integers up
 * to 10^15 print as integers) and in e-notation otherwise.  Daemons keep
 * the C locale for LC_NUMERIC, so the decimal point is '.'.
 */
int osp_metrics_format_double(osp_buf_t *out, double v)
{
    char tmp[40];
    const char *e;
    int digits, exp;

    if (isnan(v))
        return osp_buf_append_str(out, "NaN");
    if (isinf(v))
        return osp_buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
    for (digits = 1; digits < 17; digits++) {
        osp_snprintf(tmp, sizeof(tmp), "%.*e", digits - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    osp_snprintf(tmp, sizeof(tmp), "%.*e", digits - 1, v);
    e = strchr(tmp, 'e');
    exp = e ? atoi(e + 1) : 0;
    if (exp >= -4 && exp < 15)
        osp_snprintf(tmp, sizeof(tmp), "%.*g", digits > exp + 1 ? digits : exp + 1, v);
    return osp_buf_append_str(out, tmp);
}

/* "name<suffix>{labels[,extra]} " */
static int osp_metrics_series(osp_buf_t *out, const struct osp_metric_family *f,
                              const char *suffix, const struct osp_metric_child *c,
                              const char *extra)
{
    if (osp_buf_printf(out, "%s%s", f->name, suffix) < 0)
        return -1;
    if (c->labels || extra) {
        if (osp_buf_printf(out, "{%s%s%s}", c->labels ? c->labels : "",
                           c->labels && extra ? "," : "", extra ? extra : "") < 0)
            return -1;
    }
    return osp_buf_append_char(out, ' ');
}

static int osp_metrics_render_histogram(osp_buf_t *out,
                                        const struct osp_metric_family *f,
                                        const struct osp_metric_child *c)
{
    const struct osp_histogram *h = &c->u.histogram;
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i <= h->nbounds; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (osp_metrics_series(out, f, "_bucket", c, f->le[i]) < 0
            || osp_buf_printf(out, "%" PRIu64 "\n", cum) < 0)
            return -1;
    }
    if (osp_metrics_series(out, f, "_sum", c, NULL) < 0
        || osp_metrics_format_double(out, osp_metrics_u2d(
               atomic_load_explicit(&h->sum_bits, memory_order_relaxed))) < 0
        || osp_buf_append_char(out, '\n') < 0)
        return -1;
    /* _count from the buckets, so it always matches le="+Inf". */
    if (osp_metrics_series(out, f, "_count", c, NULL) < 0
        || osp_buf_printf(out, "%" PRIu64 "\n", cum) < 0)
        return -1;
    return 0;
}

static int osp_metrics_render_family(osp_buf_t *out, const struct osp_metric_family *f)
{
    const struct osp_metric_child *c;

    if (f->children == NULL)
        return 0;
    if (f->help) {
        if (osp_buf_printf(out, "# HELP %s ", f->name) < 0
            || osp_metrics_escape(out, f->help, 0) < 0
            || osp_buf_append_char(out, '\n') < 0)
            return -1;
    }
    if (osp_buf_printf(out, "# TYPE %s %s\n", f->name,
                       osp_metric_type_names[f->type]) < 0)
        return -1;
    for (c = f->children; c; c = c->next) {
        int r;

        switch (f->type) {
        case OSP_METRIC_COUNTER:
            r = osp_metrics_series(out, f, "", c, NULL) < 0
                || osp_buf_printf(out, "%" PRIu64 "\n",
                                  osp_counter_value(&c->u.counter)) < 0;
            break;
        case OSP_METRIC_GAUGE:
            r = osp_metrics_series(out, f, "", c, NULL) < 0
                || osp_metrics_format_double(out, osp_gauge_value(&c->u.gauge)) < 0
                || osp_buf_append_char(out, '\n') < 0;
            break;
        case OSP_METRIC_HISTOGRAM:
            r = osp_metrics_render_histogram(out, f, c) < 0;
            break;
        default:
            osp_panic("metrics: \"%s\": bad type %d", f->name, (int)f->type);
        }
        if (r)
            return -1;
    }
    return 0;
}

int osp_metrics_render(osp_metrics_t *reg, osp_buf_t *out)
{
    const struct osp_metric_family *f;
    size_t start = out->len;

    if (reg->collect)
        reg->collect(reg, reg->collect_ctx);
    for (f = reg->families; f; f = f->next) {
        if (osp_metrics_render_family(out, f) < 0) {
            osp_buf_truncate(out, start);
            return -1;
        }
    }
    return 0;
}
