/*
 * Unit tests for contentfilter's body storage (spill to a file, read back,
 * failures), the scan pipeline (static rules, thresholds, strongest action
 * wins), the verdict routing table (LMTP and SMTP) and the single SMTP
 * reply composed from per-recipient outcomes.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "osp_buf.h"
#include "osp_mem.h"
#include "../../contentfilter/filter_accounts.h"
#include "../../contentfilter/filter_body.h"
#include "../../contentfilter/filter_scan.h"
#include "../../contentfilter/filter_session.h"

/* ---- body storage ---------------------------------------------------------- */

static void test_body_memory_then_file(void **state)
{
    char dir[] = "/tmp/osprey-test-body.XXXXXX";
    filter_body_t b;
    char buf[100000];
    size_t i;
    uint64_t off = 0, end;
    osp_buf_t all;

    (void)state;
    assert_non_null(mkdtemp(dir));
    filter_body_init(&b, 4096, dir);
    osp_buf_init(&all, OSP_BUF_UNLIMITED);
    assert_int_equal(filter_body_append(&b, "Subject: x\r\n\r\n", 14), 0);
    osp_buf_append(&all, "Subject: x\r\n\r\n", 14);
    assert_false(filter_body_spilled(&b));
    assert_int_equal(filter_body_header_end(&b, 1000, &end), 0);
    assert_int_equal(end, 14);
    for (i = 0; i < 200; i++) {
        char line[600];
        int n = snprintf(line, sizeof(line), "%0500zu\r\n", i);
        assert_int_equal(filter_body_append(&b, line, (size_t)n), 0);
        osp_buf_append(&all, line, (size_t)n);
    }
    assert_true(filter_body_spilled(&b));
    /* Memory was given back: no more than the threshold was ever held. */
    assert_true(b.mem.size == 0);
    assert_int_equal(b.size, all.len);
    for (;;) {
        ssize_t n = filter_body_read(&b, off, buf, 3333);
        assert_true(n >= 0);
        if (n == 0)
            break;
        assert_memory_equal(buf, all.data + off, (size_t)n);
        off += (uint64_t)n;
    }
    assert_int_equal(off, all.len);
    assert_int_equal(filter_body_header_end(&b, 1000, &end), 0);
    assert_int_equal(end, 14);
    /* The temporary file is unlinked: the directory is empty. */
    assert_int_equal(rmdir(dir), 0);
    filter_body_close(&b);
    osp_buf_close(&all);
}

static void test_body_errors(void **state)
{
    filter_body_t b;
    char big[5000];
    uint64_t end;

    (void)state;
    memset(big, 'x', sizeof(big));
    filter_body_init(&b, 4096, "/nonexistent/osprey");
    assert_int_equal(filter_body_append(&b, big, 100), 0);
    assert_int_equal(filter_body_append(&b, big, sizeof(big)), -1);
    assert_int_equal(filter_body_error(&b), ENOENT);
    assert_int_equal(filter_body_append(&b, big, 1), -1);
    assert_int_equal(filter_body_read(&b, 0, big, 10), -1);
    filter_body_close(&b);
    /* header too long for the cap, and a message without a body */
    filter_body_init(&b, 4096, "/tmp");
    assert_int_equal(filter_body_append(&b, "A: b\r\nC: d\r\n", 12), 0);
    assert_int_equal(filter_body_header_end(&b, 5, &end), -1);
    assert_int_equal(filter_body_header_end(&b, 100, &end), 0);
    assert_int_equal(end, 12);
    filter_body_reset(&b);
    assert_int_equal(b.size, 0);
    filter_body_close(&b);
}

/* ---- scan pipeline and static rules ---------------------------------------- */

static filter_scan_msg_t make_msg(filter_body_t *b, const char *const *rcpts, size_t n,
                                  const char *headers)
{
    filter_scan_msg_t m;

    memset(&m, 0, sizeof(m));
    m.scan_id = "TEST";
    m.queue_id = "";
    m.sender = "s@example.org";
    m.nrcpt = n;
    m.rcpts = rcpts;
    m.client_addr = "192.0.2.1";
    m.client_name = "";
    m.helo = "";
    m.body = b;
    m.headers = headers;
    m.headers_len = strlen(headers);
    return m;
}

static void test_static_rules(void **state)
{
    static const char *const rules[] = {
        "rcpt:Q@example.com:quarantine", "subject:viagra:tag:6", "rcpt:d@example.com:discard",
        "client:192.0.2.1:deliver:1.5", "rcpt:r@example.com:reject",
    };
    static const char *const rcpts[] = { "a@example.com", "q@example.com", "d@example.com",
                                         "r@example.com" };
    filter_scanner_t s;
    filter_scan_t *scan;
    filter_scan_thresholds_t t = { 5.0, 15.0 };
    filter_scan_result_t res;
    filter_body_t b;
    filter_scan_msg_t m;
    osp_buf_t err;
    filter_scan_job_t job;

    (void)state;
    osp_buf_init(&err, 4096);
    assert_int_equal(filter_scan_static_create(rules, 5, &s, &err), 0);
    scan = filter_scan_create(&t);
    filter_scan_add(scan, &s);
    filter_body_init(&b, 4096, "/tmp");
    m = make_msg(&b, rcpts, 4, "From: x\r\nSubject: Cheap VIAGRA now\r\n\r\n");
    filter_scan_job_init(&job, scan, &m);
    assert_int_equal(filter_scan_run(scan, &m, &job.result), 0);
    res = job.result;
    assert_true(res.score > 7.4 && res.score < 7.6);
    assert_int_equal(res.rcpt[0].action, FILTER_ACTION_TAG);
    assert_int_equal(res.rcpt[1].action, FILTER_ACTION_QUARANTINE);
    assert_int_equal(res.rcpt[2].action, FILTER_ACTION_DISCARD);
    assert_int_equal(res.rcpt[3].action, FILTER_ACTION_REJECT);
    assert_string_equal(res.rcpt[3].reason, "rcpt:r@example.com:reject");
    filter_scan_job_close(&job);
    filter_scan_free(&scan);
    assert_null(scan);
    filter_body_close(&b);

    /* tempfail, and bad rules are named */
    {
        static const char *const tf[] = { "sender:s@example.org:tempfail" };
        static const char *const bad[] = { "rcpt:x", "color:red:tag", "rcpt:a@b:explode",
                                           "subject:x:tag:5" };
        assert_int_equal(filter_scan_static_create(tf, 1, &s, &err), 0);
        scan = filter_scan_create(&t);
        filter_scan_add(scan, &s);
        filter_body_init(&b, 4096, "/tmp");
        m = make_msg(&b, rcpts, 1, "");
        filter_scan_job_init(&job, scan, &m);
        assert_int_equal(filter_scan_run(scan, &m, &job.result), -1);
        assert_non_null(strstr(job.result.error, "tempfail"));
        filter_scan_job_close(&job);
        filter_scan_free(&scan);
        filter_body_close(&b);
        osp_buf_reset(&err);
        assert_int_equal(filter_scan_static_create(bad, 4, &s, &err), -1);
        assert_non_null(strstr(osp_buf_cstr(&err), "\"rcpt:x\": expected"));
        assert_non_null(strstr(osp_buf_cstr(&err), "\"color:red:tag\": unknown field"));
        assert_non_null(strstr(osp_buf_cstr(&err), "\"rcpt:a@b:explode\": unknown action"));
        assert_null(strstr(osp_buf_cstr(&err), "subject:x:tag:5"));
    }
    osp_buf_close(&err);
}

static void test_thresholds(void **state)
{
    static const char *const r1[] = { "subject:a:deliver:5" };
    static const char *const r2[] = { "subject:a:deliver:15" };
    static const char *const rcpts[] = { "a@example.com" };
    const char *const *sets[] = { r1, r2 };
    enum filter_action want[] = { FILTER_ACTION_TAG, FILTER_ACTION_QUARANTINE };
    filter_scan_thresholds_t t = { 5.0, 15.0 };
    int k;

    (void)state;
    for (k = 0; k < 2; k++) {
        filter_scanner_t s;
        filter_scan_t *scan;
        filter_body_t b;
        filter_scan_msg_t m;
        filter_scan_job_t job;
        osp_buf_t err;
        osp_buf_init(&err, 1024);
        assert_int_equal(filter_scan_static_create(sets[k], 1, &s, &err), 0);
        scan = filter_scan_create(&t);
        filter_scan_add(scan, &s);
        filter_body_init(&b, 4096, "/tmp");
        m = make_msg(&b, rcpts, 1, "Subject: a\r\n");
        filter_scan_job_init(&job, scan, &m);
        assert_int_equal(filter_scan_run(scan, &m, &job.result), 0);
        assert_int_equal(job.result.rcpt[0].action, want[k]);
        filter_scan_job_close(&job);
        filter_scan_free(&scan);
        filter_body_close(&b);
        osp_buf_close(&err);
    }
}

/* ---- routing table ---------------------------------------------------------- */

struct route_case {
    const char *actions;          /* one letter per recipient: D T Q X(discard) R */
    const char *lmtp;             /* expected routes: d t q x r */
    const char *smtp;
};

static const struct route_case route_cases[] = {
    { "D", "d", "d" },
    { "T", "t", "t" },
    { "Q", "q", "q" },
    { "X", "x", "x" },
    { "R", "r", "r" },
    { "RR", "rr", "rr" },
    { "DR", "dr", "dq" },      /* SMTP: a partial reject becomes quarantine */
    { "DTQXR", "dtqxr", "dtqxq" },
    { "RX", "rx", "qx" },
    { "TTD", "ttd", "ttd" },
};

static enum filter_action letter_action(char c)
{
    switch (c) {
    case 'D': return FILTER_ACTION_DELIVER;
    case 'T': return FILTER_ACTION_TAG;
    case 'Q': return FILTER_ACTION_QUARANTINE;
    case 'X': return FILTER_ACTION_DISCARD;
    default: return FILTER_ACTION_REJECT;
    }
}

static char route_letter(enum filter_route r)
{
    return "dtqxr"[r];
}

static void test_route_table(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(route_cases) / sizeof(route_cases[0]); i++) {
        const struct route_case *c = &route_cases[i];
        size_t n = strlen(c->actions);
        filter_scan_result_t res;
        enum filter_route routes[16];
        char got[17];
        int mode;

        memset(&res, 0, sizeof(res));
        res.nrcpt = n;
        res.rcpt = osp_calloc(n, sizeof(*res.rcpt));
        for (k = 0; k < n; k++)
            res.rcpt[k].action = letter_action(c->actions[k]);
        for (mode = 0; mode < 2; mode++) {
            filter_route(&res, mode == 0, routes);
            for (k = 0; k < n; k++)
                got[k] = route_letter(routes[k]);
            got[n] = '\0';
            if (strcmp(got, mode == 0 ? c->lmtp : c->smtp) != 0)
                fail_msg("%s %s: got %s", c->actions, mode == 0 ? "LMTP" : "SMTP", got);
        }
        free(res.rcpt);
    }
}

static void test_raise_only_stronger(void **state)
{
    filter_scan_result_t res;

    (void)state;
    memset(&res, 0, sizeof(res));
    res.nrcpt = 2;
    res.rcpt = osp_calloc(2, sizeof(*res.rcpt));
    filter_scan_result_raise(&res, 0, FILTER_ACTION_QUARANTINE, "q");
    filter_scan_result_raise(&res, 0, FILTER_ACTION_TAG, "t");
    filter_scan_result_raise(&res, FILTER_ALL_RCPTS, FILTER_ACTION_TAG, "all");
    assert_int_equal(res.rcpt[0].action, FILTER_ACTION_QUARANTINE);
    assert_string_equal(res.rcpt[0].reason, "q");
    assert_int_equal(res.rcpt[1].action, FILTER_ACTION_TAG);
    assert_string_equal(res.rcpt[1].reason, "all");
    free(res.rcpt);
}

/* ---- the single SMTP reply ----------------------------------------------- */

struct reply_case {
    int codes[4];
    size_t n;
    int want;
    const char *prefix;
};

static const struct reply_case reply_cases[] = {
    { { 250, 250 }, 2, 250, "250 ok" },
    { { 550, 554 }, 2, 550, "550 t0" },
    { { 250, 451 }, 2, 451, "451 4.3.0 Error: t1" },
    { { 250, 550 }, 2, 451, "451 4.3.0 Error: t1 (mixed" },
    { { 451, 550 }, 2, 451, "451 4.3.0 Error: t0" },
    { { 450 }, 1, 451, "451 4.3.0 Error: t0" },
    { { 250, 250, 250, 421 }, 4, 451, "451 4.3.0 Error: t3" },
};

/* Account settings JSON -> per-recipient thresholds, prefix and action. */
static void test_settings_parse(void **state)
{
    static const struct {
        const char *json;
        int rc;
        double tag, quar;
        const char *prefix;
        enum filter_action action;
    } cases[] = {
        { "{}", 0, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
        { "{\"spam_tag_score\": 2.5, \"spam_quarantine_score\": 8}", 0, 2.5, 8, "[SPAM]",
          FILTER_ACTION_QUARANTINE },
        { " { \"spam_subject_prefix\" : \"[N\\u0045T] \\\"x\\\"\" , \"spam_action\":\"tag\" } ", 0,
          5, 15, "[NET] \"x\"", FILTER_ACTION_TAG },
        /* other keys, nested values, numbers as strings */
        { "{\"a\": {\"b\": [1, {\"c\": \"}\"}]}, \"spam_tag_score\": \"3\", \"z\": null}", 0, 3, 15,
          "[SPAM]", FILTER_ACTION_QUARANTINE },
        /* bad values keep the defaults */
        { "{\"spam_tag_score\": \"x\", \"spam_action\": \"explode\", \"spam_quarantine_score\": true}",
          0, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
        { "{\"spam_action\": \"discard\"}", 0, 5, 15, "[SPAM]", FILTER_ACTION_DISCARD },
        /* not an object, or broken: -1 and nothing changes */
        { "[]", -1, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
        { "{\"spam_tag_score\": 1", -1, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
        { "{\"spam_tag_score\": 1,}", -1, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
        { "", -1, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
        { NULL, -1, 5, 15, "[SPAM]", FILTER_ACTION_QUARANTINE },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        filter_rcpt_settings_t s;
        memset(&s, 0, sizeof(s));
        s.tag_score = 5;
        s.quarantine_score = 15;
        osp_strlcpy(s.subject_prefix, "[SPAM]", sizeof(s.subject_prefix));
        s.spam_action = FILTER_ACTION_QUARANTINE;
        if (filter_settings_parse(cases[i].json, &s) != cases[i].rc)
            fail_msg("case %zu (%s): rc", i, cases[i].json ? cases[i].json : "NULL");
        if (s.tag_score != cases[i].tag || s.quarantine_score != cases[i].quar ||
            strcmp(s.subject_prefix, cases[i].prefix) != 0 || s.spam_action != cases[i].action)
            fail_msg("case %zu (%s): got tag=%g quar=%g prefix=%s action=%d", i,
                     cases[i].json ? cases[i].json : "NULL", s.tag_score, s.quarantine_score,
                     s.subject_prefix, (int)s.spam_action);
    }
}

static void test_smtp_reply(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
        const struct reply_case *c = &reply_cases[i];
        filter_outcome_t o[4];
        static const char *const texts[] = { "t0", "t1", "t2", "t3" };
        osp_buf_t out;
        osp_buf_init(&out, 1024);
        for (k = 0; k < c->n; k++) {
            o[k].code = c->codes[k];
            o[k].text = texts[k];
        }
        assert_int_equal(filter_smtp_reply(o, c->n, "ok", &out), c->want);
        if (strncmp(osp_buf_cstr(&out), c->prefix, strlen(c->prefix)) != 0)
            fail_msg("case %zu: got \"%s\"", i, osp_buf_cstr(&out));
        osp_buf_close(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_memory_then_file),
        cmocka_unit_test(test_body_errors),
        cmocka_unit_test(test_static_rules),
        cmocka_unit_test(test_thresholds),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_raise_only_stronger),
        cmocka_unit_test(test_smtp_reply),
        cmocka_unit_test(test_settings_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
