/*
 * Unit tests for osp_metrics: exact rendered text, bucket boundaries,
 * escaping, number formatting, the buffer cap, the collect callback,
 * concurrent updates, and the registration bugs that must abort.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_metrics.h"

/* Render reg and compare with want, showing both on a mismatch. */
static void assert_render(osp_metrics_t *reg, const char *want)
{
    osp_buf_t out;

    osp_buf_init(&out, OSP_BUF_UNLIMITED);
    assert_int_equal(osp_metrics_render(reg, &out), 0);
    if (strcmp(osp_buf_cstr(&out), want) != 0) {
        print_error("got:\n%s\nwanted:\n%s\n", osp_buf_cstr(&out), want);
        osp_buf_close(&out);
        fail();
    }
    osp_buf_close(&out);
}

/* Does the rendering of reg contain line (a whole line)? */
static void assert_has_line(osp_metrics_t *reg, const char *line)
{
    osp_buf_t out, want;

    osp_buf_init(&out, OSP_BUF_UNLIMITED);
    osp_buf_init(&want, OSP_BUF_UNLIMITED);
    osp_buf_printf(&want, "\n%s\n", line);
    osp_buf_append_char(&out, '\n');
    assert_int_equal(osp_metrics_render(reg, &out), 0);
    if (strstr(osp_buf_cstr(&out), osp_buf_cstr(&want)) == NULL) {
        print_error("no line \"%s\" in:%s", line, osp_buf_cstr(&out));
        osp_buf_close(&out);
        osp_buf_close(&want);
        fail();
    }
    osp_buf_close(&out);
    osp_buf_close(&want);
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */
/* ------------------------------------------------------------------ */

static void test_render_small(void **state)
{
    static const double bounds[] = { 0.25, 0.5, 1 };
    osp_metrics_t *reg = osp_metrics_create();
    osp_counter_t *c;
    osp_gauge_t *g;
    osp_histogram_t *h;

    (void)state;
    c = osp_metrics_counter(reg, "osprey_requests_total", "Requests received.");
    g = osp_metrics_gauge(reg, "osprey_sessions", "Sessions open.");
    h = osp_metrics_histogram(reg, "osprey_latency_seconds", "Time to answer.", bounds, 3);

    osp_counter_inc(c);
    osp_counter_add(c, 2);
    osp_gauge_set(g, 3);
    osp_gauge_add(g, -1.5);
    osp_histogram_observe(h, 0.125);    /* below the first bound */
    osp_histogram_observe(h, 0.25);     /* exactly on it: le is inclusive */
    osp_histogram_observe(h, 0.375);
    osp_histogram_observe(h, 0.5);
    osp_histogram_observe(h, 1);
    osp_histogram_observe(h, 2);        /* only in +Inf */

    assert_int_equal(osp_counter_value(c), 3);
    assert_true(osp_gauge_value(g) == 1.5);
    assert_render(reg,
        "# HELP osprey_requests_total Requests received.\n"
        "# TYPE osprey_requests_total counter\n"
        "osprey_requests_total 3\n"
        "# HELP osprey_sessions Sessions open.\n"
        "# TYPE osprey_sessions gauge\n"
        "osprey_sessions 1.5\n"
        "# HELP osprey_latency_seconds Time to answer.\n"
        "# TYPE osprey_latency_seconds histogram\n"
        "osprey_latency_seconds_bucket{le=\"0.25\"} 2\n"
        "osprey_latency_seconds_bucket{le=\"0.5\"} 4\n"
        "osprey_latency_seconds_bucket{le=\"1\"} 5\n"
        "osprey_latency_seconds_bucket{le=\"+Inf\"} 6\n"
        "osprey_latency_seconds_sum 4.25\n"
        "osprey_latency_seconds_count 6\n");
    osp_metrics_free(&reg);
    assert_null(reg);
    osp_metrics_free(&reg);             /* NULL is fine */
}

static void test_render_empty(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_histogram_t *h;

    (void)state;
    assert_render(reg, "");
    osp_metrics_counter(reg, "zero_total", NULL);
    h = osp_metrics_histogram(reg, "h", "No observations.", (const double[]){ 1 }, 1);
    (void)h;
    assert_render(reg,
        "# TYPE zero_total counter\n"
        "zero_total 0\n"
        "# HELP h No observations.\n"
        "# TYPE h histogram\n"
        "h_bucket{le=\"1\"} 0\n"
        "h_bucket{le=\"+Inf\"} 0\n"
        "h_sum 0\n"
        "h_count 0\n");
    osp_metrics_free(&reg);
}

static void test_labels(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_counter_vec_t *actions;
    osp_gauge_vec_t *up;
    osp_counter_t *reject, *defer, *reject2, *odd;

    (void)state;
    actions = osp_metrics_counter_vec(reg, "osprey_actions_total",
                                      "Answers by action.", "action", "reason", NULL);
    up = osp_metrics_gauge_vec(reg, "osprey_backend_up", "Backend reachable.",
                               "backend", NULL);
    /* A family with no children yet is left out. */
    osp_metrics_gauge_vec(reg, "osprey_unused", "Never used.", "x", NULL);

    reject = osp_counter_vec_get(actions, "reject", "rbl", NULL);
    defer = osp_counter_vec_get(actions, "defer", "greylist", NULL);
    reject2 = osp_counter_vec_get(actions, "reject", "rbl", NULL);
    assert_ptr_equal(reject, reject2);
    assert_ptr_not_equal(reject, defer);
    assert_ptr_not_equal(osp_counter_vec_get(actions, "rbl", "reject", NULL), reject);
    odd = osp_counter_vec_get(actions, "a\\b\"c\nd", "", NULL);

    osp_counter_add(reject, 5);
    osp_counter_inc(defer);
    osp_counter_inc(odd);
    osp_gauge_set(osp_gauge_vec_get(up, "pgsql", NULL), 1);
    osp_gauge_set(osp_gauge_vec_get(up, "dns", NULL), 0);

    assert_render(reg,
        "# HELP osprey_actions_total Answers by action.\n"
        "# TYPE osprey_actions_total counter\n"
        "osprey_actions_total{action=\"reject\",reason=\"rbl\"} 5\n"
        "osprey_actions_total{action=\"defer\",reason=\"greylist\"} 1\n"
        "osprey_actions_total{action=\"rbl\",reason=\"reject\"} 0\n"
        "osprey_actions_total{action=\"a\\\\b\\\"c\\nd\",reason=\"\"} 1\n"
        "# HELP osprey_backend_up Backend reachable.\n"
        "# TYPE osprey_backend_up gauge\n"
        "osprey_backend_up{backend=\"pgsql\"} 1\n"
        "osprey_backend_up{backend=\"dns\"} 0\n");
    osp_metrics_free(&reg);
}

static void test_help_escaping(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();

    (void)state;
    /* HELP escapes backslash and newline but not the double quote. */
    osp_metrics_gauge(reg, "g", "a \\ b\n\"c\"");
    assert_render(reg,
        "# HELP g a \\\\ b\\n\"c\"\n"
        "# TYPE g gauge\n"
        "g 0\n");
    osp_metrics_free(&reg);
}

static void test_histogram_labels(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_histogram_vec_t *q;
    osp_histogram_t *pg, *dns;

    (void)state;
    q = osp_metrics_histogram_vec(reg, "osprey_query_seconds", "Query time.",
                                  (const double[]){ 0.5, 1, INFINITY }, 3,
                                  "backend", NULL);
    pg = osp_histogram_vec_get(q, "pgsql", NULL);
    dns = osp_histogram_vec_get(q, "dns", NULL);
    assert_ptr_equal(osp_histogram_vec_get(q, "pgsql", NULL), pg);
    osp_histogram_observe(pg, 0.5);
    osp_histogram_observe(pg, 0.75);
    osp_histogram_observe(dns, 4);

    /* The trailing +Inf in the bounds is not doubled. */
    assert_render(reg,
        "# HELP osprey_query_seconds Query time.\n"
        "# TYPE osprey_query_seconds histogram\n"
        "osprey_query_seconds_bucket{backend=\"pgsql\",le=\"0.5\"} 1\n"
        "osprey_query_seconds_bucket{backend=\"pgsql\",le=\"1\"} 2\n"
        "osprey_query_seconds_bucket{backend=\"pgsql\",le=\"+Inf\"} 2\n"
        "osprey_query_seconds_sum{backend=\"pgsql\"} 1.25\n"
        "osprey_query_seconds_count{backend=\"pgsql\"} 2\n"
        "osprey_query_seconds_bucket{backend=\"dns\",le=\"0.5\"} 0\n"
        "osprey_query_seconds_bucket{backend=\"dns\",le=\"1\"} 0\n"
        "osprey_query_seconds_bucket{backend=\"dns\",le=\"+Inf\"} 1\n"
        "osprey_query_seconds_sum{backend=\"dns\"} 4\n"
        "osprey_query_seconds_count{backend=\"dns\"} 1\n");
    osp_metrics_free(&reg);
}

/* Each observation and the cumulative bucket counts it must produce. */
static void test_bucket_boundaries(void **state)
{
    static const double bounds[] = { 0.001, 0.01, 0.1 };
    static const struct {
        double v;
        int bucket;     /* index of the first bucket it falls in; 3 = +Inf */
    } cases[] = {
        { -1, 0 },
        { 0, 0 },
        { 0.001, 0 },
        { 0.0010000000000000002, 1 },   /* nextafter(0.001, +Inf) */
        { 0.009999999999999998, 1 },    /* nextafter(0.01, 0) */
        { 0.01, 1 },
        { 0.05, 2 },
        { 0.1, 2 },
        { 0.10000000000000002, 3 },     /* nextafter(0.1, +Inf) */
        { 10, 3 },
        { INFINITY, 3 },
    };
    size_t i, j, ncases = sizeof(cases) / sizeof(cases[0]);

    (void)state;
    assert_true(cases[3].v == nextafter(0.001, INFINITY));
    assert_true(cases[4].v == nextafter(0.01, 0));
    assert_true(cases[8].v == nextafter(0.1, INFINITY));

    /* One observation at a time: exactly the buckets from its own on. */
    for (i = 0; i < ncases; i++) {
        osp_metrics_t *reg = osp_metrics_create();
        osp_histogram_t *h = osp_metrics_histogram(reg, "h", NULL, bounds, 3);
        static const char *const le[] = { "0.001", "0.01", "0.1", "+Inf" };
        char line[64];

        osp_histogram_observe(h, cases[i].v);
        for (j = 0; j < 4; j++) {
            snprintf(line, sizeof(line), "h_bucket{le=\"%s\"} %d", le[j],
                     (int)j >= cases[i].bucket);
            assert_has_line(reg, line);
        }
        assert_has_line(reg, "h_count 1");
        osp_metrics_free(&reg);
    }

    /* All together: cumulative counts and the count. */
    {
        osp_metrics_t *reg = osp_metrics_create();
        osp_histogram_t *h = osp_metrics_histogram(reg, "h", NULL, bounds, 3);

        for (i = 0; i < ncases - 1; i++)    /* leave out +Inf to keep the sum finite */
            osp_histogram_observe(h, cases[i].v);
        assert_has_line(reg, "h_bucket{le=\"0.001\"} 3");
        assert_has_line(reg, "h_bucket{le=\"0.01\"} 6");
        assert_has_line(reg, "h_bucket{le=\"0.1\"} 8");
        assert_has_line(reg, "h_bucket{le=\"+Inf\"} 10");
        assert_has_line(reg, "h_count 10");
        osp_metrics_free(&reg);
    }
}

static void test_histogram_nan(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_histogram_t *h = osp_metrics_histogram(reg, "h", NULL, (const double[]){ 1 }, 1);

    (void)state;
    osp_histogram_observe(h, 0.5);
    osp_histogram_observe(h, NAN);
    assert_render(reg,
        "# TYPE h histogram\n"
        "h_bucket{le=\"1\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\n"
        "h_sum NaN\n"
        "h_count 2\n");
    osp_metrics_free(&reg);
}

static void test_default_bounds(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_histogram_t *h;

    (void)state;
    assert_int_equal(osp_metrics_latency_nbounds, 16);
    h = osp_metrics_histogram(reg, "lat_seconds", "Latency.", NULL, 0);
    osp_histogram_observe(h, 0.003);
    assert_render(reg,
        "# HELP lat_seconds Latency.\n"
        "# TYPE lat_seconds histogram\n"
        "lat_seconds_bucket{le=\"0.0001\"} 0\n"
        "lat_seconds_bucket{le=\"0.00025\"} 0\n"
        "lat_seconds_bucket{le=\"0.0005\"} 0\n"
        "lat_seconds_bucket{le=\"0.001\"} 0\n"
        "lat_seconds_bucket{le=\"0.0025\"} 0\n"
        "lat_seconds_bucket{le=\"0.005\"} 1\n"
        "lat_seconds_bucket{le=\"0.01\"} 1\n"
        "lat_seconds_bucket{le=\"0.025\"} 1\n"
        "lat_seconds_bucket{le=\"0.05\"} 1\n"
        "lat_seconds_bucket{le=\"0.1\"} 1\n"
        "lat_seconds_bucket{le=\"0.25\"} 1\n"
        "lat_seconds_bucket{le=\"0.5\"} 1\n"
        "lat_seconds_bucket{le=\"1\"} 1\n"
        "lat_seconds_bucket{le=\"2.5\"} 1\n"
        "lat_seconds_bucket{le=\"5\"} 1\n"
        "lat_seconds_bucket{le=\"10\"} 1\n"
        "lat_seconds_bucket{le=\"+Inf\"} 1\n"
        "lat_seconds_sum 0.003\n"
        "lat_seconds_count 1\n");
    osp_metrics_free(&reg);
}

static void test_format_double(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        { 0, "0" },
        { 1, "1" },
        { -2.5, "-2.5" },
        { 0.1, "0.1" },
        { 0.1 + 0.2, "0.30000000000000004" },
        { 1.0 / 3, "0.3333333333333333" },
        { -0.0, "-0" },
        { 100000, "100000" },
        { 1e6, "1000000" },
        { 123456789012.0, "123456789012" },
        { 1e14, "100000000000000" },
        { 999999999999999.0, "999999999999999" },
        { 1e15, "1e+15" },
        { 9007199254740993.0, "9.007199254740992e+15" },
        { 1.5e20, "1.5e+20" },
        { 0.0001, "0.0001" },
        { 0.00025, "0.00025" },
        { 1e-5, "1e-05" },
        { 1.5e-5, "1.5e-05" },
        { 1e-7, "1e-07" },
        { DBL_MAX, "1.7976931348623157e+308" },
        { DBL_MIN, "2.2250738585072014e-308" },
        { 5e-324, "5e-324" },
        { INFINITY, "+Inf" },
        { -INFINITY, "-Inf" },
        { NAN, "NaN" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_buf_t out;

        osp_buf_init(&out, 64);
        assert_int_equal(osp_metrics_format_double(&out, cases[i].v), 0);
        if (strcmp(osp_buf_cstr(&out), cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", wanted \"%s\"", i,
                     osp_buf_cstr(&out), cases[i].want);
        if (!isnan(cases[i].v) && !isinf(cases[i].v))
            assert_true(strtod(osp_buf_cstr(&out), NULL) == cases[i].v);
        osp_buf_close(&out);
    }
}

static void test_counter_u64(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_counter_t *c = osp_metrics_counter(reg, "big_total", NULL);

    (void)state;
    osp_counter_set(c, UINT64_MAX - 1);
    osp_counter_inc(c);
    assert_render(reg,
        "# TYPE big_total counter\n"
        "big_total 18446744073709551615\n");
    osp_metrics_free(&reg);
}

static void test_render_cap(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    osp_buf_t out;
    osp_counter_t *c = osp_metrics_counter(reg, "a_total", "A.");

    (void)state;
    osp_counter_inc(c);
    osp_metrics_gauge(reg, "b", "B.");
    osp_buf_init(&out, 60);
    osp_buf_append_str(&out, "before\n");
    assert_int_equal(osp_metrics_render(reg, &out), -1);
    assert_string_equal(osp_buf_cstr(&out), "before\n");
    osp_buf_close(&out);

    /* Exactly big enough works; appends after what is there. */
    osp_buf_init(&out, 7 + 82);
    osp_buf_append_str(&out, "before\n");
    assert_int_equal(osp_metrics_render(reg, &out), 0);
    assert_string_equal(osp_buf_cstr(&out),
        "before\n"
        "# HELP a_total A.\n"          /* 18 */
        "# TYPE a_total counter\n"     /* 23 */
        "a_total 1\n"                  /* 10 */
        "# HELP b B.\n"                /* 12 */
        "# TYPE b gauge\n"             /* 15 */
        "b 0\n");                      /* 4 */
    osp_buf_close(&out);
    osp_buf_init(&out, 7 + 82 - 1);
    osp_buf_append_str(&out, "before\n");
    assert_int_equal(osp_metrics_render(reg, &out), -1);
    assert_string_equal(osp_buf_cstr(&out), "before\n");
    osp_buf_close(&out);
    osp_metrics_free(&reg);
}

struct backend {
    int up;
    uint64_t opens;
    osp_gauge_t *up_g;
    osp_counter_t *opens_c;
    int calls;
};

static void collect_cb(osp_metrics_t *reg, void *ctx)
{
    struct backend *be = ctx;

    (void)reg;
    be->calls++;
    osp_gauge_set(be->up_g, be->up);
    osp_counter_set(be->opens_c, be->opens);
}

static void test_collect(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    struct backend be = { 1, 0, NULL, NULL, 0 };

    (void)state;
    be.up_g = osp_metrics_gauge(reg, "up", NULL);
    be.opens_c = osp_metrics_counter(reg, "opens_total", NULL);
    osp_metrics_set_collect(reg, collect_cb, &be);
    assert_render(reg, "# TYPE up gauge\nup 1\n# TYPE opens_total counter\nopens_total 0\n");
    be.up = 0;
    be.opens = 3;
    assert_render(reg, "# TYPE up gauge\nup 0\n# TYPE opens_total counter\nopens_total 3\n");
    assert_int_equal(be.calls, 2);
    osp_metrics_set_collect(reg, NULL, NULL);
    be.up = 1;
    assert_render(reg, "# TYPE up gauge\nup 0\n# TYPE opens_total counter\nopens_total 3\n");
    assert_int_equal(be.calls, 2);
    osp_metrics_free(&reg);
}

static void test_valid_names(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();

    (void)state;
    osp_metrics_counter(reg, "a", NULL);
    osp_metrics_counter(reg, "_x9", NULL);
    osp_metrics_counter(reg, "ns:sub_total", NULL);
    osp_metrics_counter(reg, ":colon", NULL);
    /* Near misses of a histogram's series names are fine. */
    osp_metrics_histogram(reg, "h", NULL, NULL, 0);
    osp_metrics_counter(reg, "h_counts", NULL);
    osp_metrics_counter(reg, "h_su", NULL);
    osp_metrics_gauge(reg, "h_bucket_", NULL);
    osp_metrics_counter_vec(reg, "v", NULL, "_a", "B1", "le", NULL);
    osp_metrics_free(&reg);
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

#define NTHREADS 4
#define NITER 20000

struct shared {
    osp_counter_t *c;
    osp_gauge_t *g;
    osp_histogram_t *h;
};

static void *worker(void *arg)
{
    struct shared *s = arg;
    int i;

    for (i = 0; i < NITER; i++) {
        osp_counter_inc(s->c);
        osp_gauge_add(s->g, 1);
        osp_histogram_observe(s->h, (i & 1) ? 0.5 : 2);
    }
    return NULL;
}

static void test_threads(void **state)
{
    osp_metrics_t *reg = osp_metrics_create();
    struct shared s;
    pthread_t t[NTHREADS];
    char line[64];
    int i;

    (void)state;
    s.c = osp_metrics_counter(reg, "c_total", NULL);
    s.g = osp_metrics_gauge(reg, "g", NULL);
    s.h = osp_metrics_histogram(reg, "h", NULL, (const double[]){ 1 }, 1);
    for (i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &s), 0);
    for (i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    snprintf(line, sizeof(line), "c_total %d", NTHREADS * NITER);
    assert_has_line(reg, line);
    snprintf(line, sizeof(line), "g %d", NTHREADS * NITER);
    assert_has_line(reg, line);
    snprintf(line, sizeof(line), "h_bucket{le=\"1\"} %d", NTHREADS * NITER / 2);
    assert_has_line(reg, line);
    snprintf(line, sizeof(line), "h_count %d", NTHREADS * NITER);
    assert_has_line(reg, line);
    snprintf(line, sizeof(line), "h_sum %d", NTHREADS * NITER / 2 * 5 / 2);
    assert_has_line(reg, line);
    osp_metrics_free(&reg);
}

/* ------------------------------------------------------------------ */
/* Bugs abort                                                          */
/* ------------------------------------------------------------------ */

static void bad_name_digit(osp_metrics_t *r) { osp_metrics_counter(r, "1abc", NULL); }
static void bad_name_dash(osp_metrics_t *r) { osp_metrics_gauge(r, "a-b", NULL); }
static void bad_name_empty(osp_metrics_t *r) { osp_metrics_counter(r, "", NULL); }
static void bad_name_space(osp_metrics_t *r) { osp_metrics_histogram(r, "a b", NULL, NULL, 0); }
static void bad_name_utf8(osp_metrics_t *r) { osp_metrics_counter(r, "caf\xc3\xa9", NULL); }
static void dup_name(osp_metrics_t *r)
{
    osp_metrics_counter(r, "x", NULL);
    osp_metrics_gauge(r, "x", NULL);
}
static void dup_hist_after(osp_metrics_t *r)
{
    osp_metrics_histogram(r, "lat", NULL, NULL, 0);
    osp_metrics_counter(r, "lat_count", NULL);
}
static void dup_hist_before(osp_metrics_t *r)
{
    osp_metrics_gauge(r, "lat_sum", NULL);
    osp_metrics_histogram(r, "lat", NULL, NULL, 0);
}
static void dup_hist_hist(osp_metrics_t *r)
{
    osp_metrics_histogram(r, "a_bucket", NULL, NULL, 0);
    osp_metrics_histogram(r, "a", NULL, NULL, 0);
}
static void bad_label_colon(osp_metrics_t *r) { osp_metrics_counter_vec(r, "v", NULL, "a:b", NULL); }
static void bad_label_reserved(osp_metrics_t *r) { osp_metrics_counter_vec(r, "v", NULL, "__name", NULL); }
static void bad_label_digit(osp_metrics_t *r) { osp_metrics_gauge_vec(r, "v", NULL, "0a", NULL); }
static void bad_label_le(osp_metrics_t *r) { osp_metrics_histogram_vec(r, "v", NULL, NULL, 0, "le", NULL); }
static void dup_label(osp_metrics_t *r) { osp_metrics_counter_vec(r, "v", NULL, "a", "b", "a", NULL); }
static void no_labels(osp_metrics_t *r) { osp_metrics_counter_vec(r, "v", NULL, NULL); }
static void bounds_unsorted(osp_metrics_t *r)
{
    osp_metrics_histogram(r, "h", NULL, (const double[]){ 1, 0.5 }, 2);
}
static void bounds_equal(osp_metrics_t *r)
{
    osp_metrics_histogram(r, "h", NULL, (const double[]){ 1, 1 }, 2);
}
static void bounds_nan(osp_metrics_t *r)
{
    osp_metrics_histogram(r, "h", NULL, (const double[]){ 0.1, NAN, 1 }, 3);
}
static void too_few_values(osp_metrics_t *r)
{
    osp_counter_vec_get(osp_metrics_counter_vec(r, "v", NULL, "a", "b", NULL), "x", NULL);
}
static void too_many_values(osp_metrics_t *r)
{
    osp_counter_vec_get(osp_metrics_counter_vec(r, "v", NULL, "a", NULL), "x", "y", NULL);
}
static void wrong_type(osp_metrics_t *r)
{
    osp_gauge_vec_get((osp_gauge_vec_t *)osp_metrics_counter_vec(r, "v", NULL, "a", NULL),
                      "x", NULL);
}

static void quiet_hook(enum osp_log_level level, const char *line, void *ctx)
{
    (void)level;
    (void)line;
    (void)ctx;
}

static void test_bugs_abort(void **state)
{
    static const struct {
        const char *what;
        void (*fn)(osp_metrics_t *);
    } cases[] = {
        { "name starts with a digit", bad_name_digit },
        { "name with a dash", bad_name_dash },
        { "empty name", bad_name_empty },
        { "name with a space", bad_name_space },
        { "name with UTF-8", bad_name_utf8 },
        { "duplicate name", dup_name },
        { "counter named like a histogram's _count", dup_hist_after },
        { "histogram whose _sum exists", dup_hist_before },
        { "histogram whose _bucket is a histogram", dup_hist_hist },
        { "label with a colon", bad_label_colon },
        { "label starting with __", bad_label_reserved },
        { "label starting with a digit", bad_label_digit },
        { "le on a histogram", bad_label_le },
        { "label twice", dup_label },
        { "vec without labels", no_labels },
        { "bounds descending", bounds_unsorted },
        { "bounds repeated", bounds_equal },
        { "NaN bound", bounds_nan },
        { "too few label values", too_few_values },
        { "too many label values", too_many_values },
        { "vec of another type", wrong_type },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pid_t pid;
        int status;

        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            osp_metrics_t *reg = osp_metrics_create();

            osp_log_set_hook(quiet_hook, NULL);
            cases[i].fn(reg);
            osp_metrics_free(&reg);
            _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
            fail_msg("%s: did not abort (status %#x)", cases[i].what, status);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_small),
        cmocka_unit_test(test_render_empty),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_help_escaping),
        cmocka_unit_test(test_histogram_labels),
        cmocka_unit_test(test_bucket_boundaries),
        cmocka_unit_test(test_histogram_nan),
        cmocka_unit_test(test_default_bounds),
        cmocka_unit_test(test_format_double),
        cmocka_unit_test(test_counter_u64),
        cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_collect),
        cmocka_unit_test(test_valid_names),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_bugs_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
