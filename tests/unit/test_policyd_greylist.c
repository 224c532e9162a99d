/*
 * Unit tests for policyd_greylist: the triplet state machine at the edges
 * of the delay, the retry window and the pass lifetime (one millisecond
 * either side), client networks (/24, /64) as one client, automatic
 * allowing of a network after N passes and its expiry, the bounded table
 * (full: pass untracked; expiry frees room), and the check in the
 * pipeline (RCPT only, DEFER_IF_PERMIT with the configured text, put last
 * when policyd_checks does not name it).
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_greylist.h"
#include "../../policyd/policyd_proto.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "policyd_test.h"

#define SEC 1000ULL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static policyd_greylist_conf_t conf(void)
{
    policyd_greylist_conf_t c;

    memset(&c, 0, sizeof(c));
    c.delay_ms = 5 * MIN;
    c.retry_window_ms = 24 * HOUR;
    c.pass_lifetime_ms = 35 * DAY;
    c.auto_allow_count = 0;
    c.auto_allow_lifetime_ms = 7 * DAY;
    c.max_entries = 1000;
    return c;
}

#define T0 (1000 * DAY)   /* far from zero, as a monotonic clock is */

static enum policyd_grey chk(policyd_greylist_t *g, const char *ip, const char *from,
                             const char *to, uint64_t t)
{
    return policyd_greylist_check(g, ip, from, to, t, NULL);
}

static void test_delay_edges(void **state)
{
    policyd_greylist_conf_t c = conf();
    policyd_greylist_t *g = policyd_greylist_create(&c);
    uint64_t wait = 0;

    (void)state;
    assert_int_equal(policyd_greylist_check(g, "192.0.2.1", "a@x.example", "b@y.example", T0,
                                            &wait), POLICYD_GREY_NEW);
    assert_int_equal(wait, 5 * MIN);
    /* One millisecond before the delay: still deferred, and first stays. */
    assert_int_equal(policyd_greylist_check(g, "192.0.2.1", "a@x.example", "b@y.example",
                                            T0 + 5 * MIN - 1, &wait), POLICYD_GREY_EARLY);
    assert_int_equal(wait, 1);
    /* At the delay exactly: passes. */
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "b@y.example", T0 + 5 * MIN),
                     POLICYD_GREY_PASSED);
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "b@y.example", T0 + 6 * MIN),
                     POLICYD_GREY_KNOWN);
    assert_true(policyd_greylist_defers(POLICYD_GREY_NEW));
    assert_true(policyd_greylist_defers(POLICYD_GREY_EARLY));
    assert_true(policyd_greylist_defers(POLICYD_GREY_EXPIRED));
    assert_false(policyd_greylist_defers(POLICYD_GREY_PASSED));
    assert_false(policyd_greylist_defers(POLICYD_GREY_FULL));
    policyd_greylist_free(&g);
    assert_null(g);
}

static void test_retry_window_edges(void **state)
{
    policyd_greylist_conf_t c = conf();
    policyd_greylist_t *g = policyd_greylist_create(&c);

    (void)state;
    /* A retry at the last millisecond of the window passes... */
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "b@y.example", T0), POLICYD_GREY_NEW);
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "b@y.example", T0 + 24 * HOUR),
                     POLICYD_GREY_PASSED);
    /* ...one a millisecond later starts over and is deferred again. */
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "c@y.example", T0), POLICYD_GREY_NEW);
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "c@y.example", T0 + 24 * HOUR + 1),
                     POLICYD_GREY_EXPIRED);
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "c@y.example",
                         T0 + 24 * HOUR + 1 + 5 * MIN - 1), POLICYD_GREY_EARLY);
    assert_int_equal(chk(g, "192.0.2.1", "a@x.example", "c@y.example",
                         T0 + 24 * HOUR + 1 + 5 * MIN), POLICYD_GREY_PASSED);
    policyd_greylist_free(&g);
}

static void test_pass_lifetime_edges(void **state)
{
    policyd_greylist_conf_t c = conf();
    policyd_greylist_t *g = policyd_greylist_create(&c);
    uint64_t t;

    (void)state;
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", T0), POLICYD_GREY_NEW);
    t = T0 + 5 * MIN;
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", t), POLICYD_GREY_PASSED);
    /* Each mail refreshes the lifetime. */
    t += 35 * DAY;
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", t), POLICYD_GREY_KNOWN);
    /* Silent for one millisecond past the lifetime: greylisted again. */
    t += 35 * DAY + 1;
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", t), POLICYD_GREY_NEW);
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", t + 5 * MIN), POLICYD_GREY_PASSED);
    /* A request that started before the last pass was stored (a slower
     * worker): still known, and the table keeps the later time. */
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", t + 5 * MIN - 2000),
                     POLICYD_GREY_KNOWN);
    assert_int_equal(policyd_greylist_expire(g, t + 5 * MIN - 3000), 0);
    assert_int_equal(chk(g, "192.0.2.1", "", "b@y.example", t + 5 * MIN + 35 * DAY),
                     POLICYD_GREY_KNOWN);
    policyd_greylist_free(&g);
}

static void test_networks_and_case(void **state)
{
    policyd_greylist_conf_t c = conf();
    policyd_greylist_t *g = policyd_greylist_create(&c);

    (void)state;
    /* Same /24, different host, different case: the same triplet. */
    assert_int_equal(chk(g, "192.0.2.1", "A@X.example", "b@y.example", T0), POLICYD_GREY_NEW);
    assert_int_equal(chk(g, "192.0.2.200", "a@x.EXAMPLE", "B@y.example", T0 + 5 * MIN),
                     POLICYD_GREY_PASSED);
    /* Another /24: a new triplet. */
    assert_int_equal(chk(g, "192.0.3.1", "a@x.example", "b@y.example", T0 + 5 * MIN),
                     POLICYD_GREY_NEW);
    /* IPv4-mapped IPv6 is the IPv4 client. */
    assert_int_equal(chk(g, "::ffff:192.0.2.9", "a@x.example", "b@y.example", T0 + 6 * MIN),
                     POLICYD_GREY_KNOWN);
    /* IPv6: the /64 counts. */
    assert_int_equal(chk(g, "2001:db8:1:2::1", "a@x.example", "b@y.example", T0),
                     POLICYD_GREY_NEW);
    assert_int_equal(chk(g, "2001:db8:1:2:ffff::9", "a@x.example", "b@y.example",
                         T0 + 5 * MIN), POLICYD_GREY_PASSED);
    assert_int_equal(chk(g, "2001:db8:1:3::1", "a@x.example", "b@y.example", T0 + 5 * MIN),
                     POLICYD_GREY_NEW);
    /* No usable client address: not greylisted. */
    assert_int_equal(chk(g, "unknown", "a@x.example", "b@y.example", T0), POLICYD_GREY_SKIP);
    assert_int_equal(policyd_greylist_count(g), 4);
    policyd_greylist_free(&g);
}

static void test_auto_allow(void **state)
{
    policyd_greylist_conf_t c = conf();
    policyd_greylist_t *g;
    char to[64];
    int i;
    uint64_t t;

    (void)state;
    c.auto_allow_count = 3;
    g = policyd_greylist_create(&c);
    for (i = 0; i < 3; i++) {
        snprintf(to, sizeof(to), "r%d@y.example", i);
        assert_int_equal(chk(g, "198.51.100.1", "a@x.example", to, T0), POLICYD_GREY_NEW);
        assert_int_equal(chk(g, "198.51.100.1", "a@x.example", to, T0 + 5 * MIN),
                         POLICYD_GREY_PASSED);
    }
    /* Three passes: the network now skips greylisting for new triplets. */
    t = T0 + 5 * MIN;
    assert_int_equal(chk(g, "198.51.100.77", "z@x.example", "new@y.example", t),
                     POLICYD_GREY_AUTO);
    /* Not its neighbour network. */
    assert_int_equal(chk(g, "198.51.101.1", "z@x.example", "new@y.example", t),
                     POLICYD_GREY_NEW);
    /* Allowed until auto_allow_lifetime after its last mail, not a millisecond more. */
    t += 7 * DAY;
    assert_int_equal(chk(g, "198.51.100.5", "q@x.example", "new2@y.example", t),
                     POLICYD_GREY_AUTO);
    t += 7 * DAY + 1;
    assert_int_equal(chk(g, "198.51.100.5", "q@x.example", "new3@y.example", t),
                     POLICYD_GREY_NEW);
    policyd_greylist_free(&g);

    /* Two passes of the same triplet count once. */
    g = policyd_greylist_create(&c);
    assert_int_equal(chk(g, "198.51.100.1", "a@x.example", "b@y.example", T0),
                     POLICYD_GREY_NEW);
    for (i = 0; i < 5; i++)
        assert_int_equal(chk(g, "198.51.100.1", "a@x.example", "b@y.example",
                             T0 + 5 * MIN + (uint64_t)i),
                         i == 0 ? POLICYD_GREY_PASSED : POLICYD_GREY_KNOWN);
    assert_int_equal(chk(g, "198.51.100.1", "a@x.example", "c@y.example", T0 + 10 * MIN),
                     POLICYD_GREY_NEW);
    policyd_greylist_free(&g);
}

static void test_bounded_table(void **state)
{
    policyd_greylist_conf_t c = conf();
    policyd_greylist_t *g;
    char to[64];
    size_t i;

    (void)state;
    c.max_entries = 1000;
    g = policyd_greylist_create(&c);
    for (i = 0; i < 1000; i++) {
        snprintf(to, sizeof(to), "r%zu@y.example", i);
        assert_int_equal(chk(g, "203.0.113.1", "a@x.example", to, T0), POLICYD_GREY_NEW);
    }
    assert_int_equal(policyd_greylist_count(g), 1000);
    /* Full, nothing expired: the new triplet passes untracked. */
    assert_int_equal(chk(g, "203.0.113.1", "a@x.example", "extra@y.example", T0 + 2000),
                     POLICYD_GREY_FULL);
    assert_int_equal(chk(g, "203.0.113.1", "a@x.example", "extra@y.example", T0 + 3000),
                     POLICYD_GREY_FULL);
    /* Known triplets still work while full. */
    assert_int_equal(chk(g, "203.0.113.1", "a@x.example", "r7@y.example", T0 + 5 * MIN),
                     POLICYD_GREY_PASSED);
    /* Past the retry window the pending ones expire (the one that passed stays). */
    assert_int_equal(policyd_greylist_expire(g, T0 + 24 * HOUR), 0);
    assert_int_equal(policyd_greylist_expire(g, T0 + 24 * HOUR + 1), 999);
    assert_int_equal(policyd_greylist_count(g), 1);
    assert_int_equal(chk(g, "203.0.113.1", "a@x.example", "extra@y.example",
                         T0 + 24 * HOUR + 2), POLICYD_GREY_NEW);
    assert_int_equal(chk(g, "203.0.113.1", "a@x.example", "r7@y.example", T0 + 24 * HOUR + 2),
                     POLICYD_GREY_KNOWN);
    policyd_greylist_free(&g);

    /* When full, a check expires on its own (at most once a second). */
    g = policyd_greylist_create(&c);
    for (i = 0; i < 1000; i++) {
        snprintf(to, sizeof(to), "r%zu@y.example", i);
        (void)chk(g, "203.0.113.1", "a@x.example", to, T0);
    }
    assert_int_equal(chk(g, "203.0.113.1", "a@x.example", "late@y.example", T0 + 25 * HOUR),
                     POLICYD_GREY_NEW);
    assert_int_equal(policyd_greylist_count(g), 1);
    policyd_greylist_free(&g);
}

/* ---- the check in the pipeline ------------------------------------------ */

static const policyd_verdict_t *eval(const policyd_checks_t *c, policy_request_t *req,
                                     const char *state_, const char *rcpt, uint64_t now)
{
    policyd_test_request(req, state_, "192.0.2.10", "s@example.org", rcpt);
    return policyd_test_decide(c, req, now);
}

static void test_check(void **state)
{
    osp_config_t *cfg = policyd_test_config("policyd_greylist = yes\npolicyd_greylist_delay = 2s\n"
                                    "policyd_greylist_text = Come back later\n"
                                    "policyd_checks = client_block\n");
    osp_buf_t errors, warnings;
    policyd_greycheck_t *gc;
    policyd_checks_t *c;
    policyd_check_def_t d = { "greylist", policyd_greycheck_run, NULL, NULL };
    policy_request_t req;
    const policyd_verdict_t *v;

    (void)state;
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    gc = policyd_greycheck_create(cfg, &errors);
    assert_non_null(gc);
    assert_true(policyd_greycheck_enabled(gc));
    d.ctx = gc;
    policyd_checks_register(&d, 1);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    assert_int_equal(policyd_checks_count(c), 2);
    assert_string_equal(policyd_checks_name(c, 1), "greylist");
    policy_request_init(&req, 4096);

    v = eval(c, &req, "RCPT", "r@example.com", T0);
    assert_string_equal(v->check, "greylist");
    assert_string_equal(v->action, "DEFER_IF_PERMIT 4.7.1 Come back later");
    assert_non_null(strstr(v->reason, "greylisted (new), a retry passes after 2s"));
    v = eval(c, &req, "RCPT", "r@example.com", T0 + 1999);
    assert_string_equal(v->check, "greylist");
    /* Not at other stages, and not counted there. */
    v = eval(c, &req, "DATA", "r@example.com", T0 + 1999);
    assert_null(v->check);
    v = eval(c, &req, "RCPT", "r@example.com", T0 + 2000);
    assert_null(v->check);
    assert_string_equal(v->action, "DUNNO");

    /* Disabled: the check is there but has no opinion. */
    policy_request_close(&req);
    policyd_checks_free(&c);
    policyd_greycheck_free(&gc);
    osp_config_free(&cfg);
    cfg = policyd_test_config("policyd_greylist = no\n");
    gc = policyd_greycheck_create(cfg, &errors);
    assert_false(policyd_greycheck_enabled(gc));
    assert_int_equal(policyd_greycheck_run(NULL, gc), POLICYD_NEXT);
    policyd_greycheck_free(&gc);
    osp_config_free(&cfg);

    /* Bad settings are start-up errors naming the parameter. */
    cfg = policyd_test_config("policyd_greylist_delay = 1h\npolicyd_greylist_retry_window = 30m\n");
    assert_null(policyd_greycheck_create(cfg, &errors));
    assert_non_null(strstr(osp_buf_cstr(&errors), "policyd_greylist_retry_window"));
    osp_config_free(&cfg);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_edges),
        cmocka_unit_test(test_retry_window_edges),
        cmocka_unit_test(test_pass_lifetime_edges),
        cmocka_unit_test(test_networks_and_case),
        cmocka_unit_test(test_auto_allow),
        cmocka_unit_test(test_bounded_table),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
