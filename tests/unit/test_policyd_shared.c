/*
 * Unit tests for policyd_shared: what a flush sends (local deltas per key,
 * keys sorted, escaped, zero for keys only checked), what the others have
 * counted (cluster - own flushed), the previous window's share fading out
 * across the sliding window, deltas kept for the next flush when the
 * database fails, the key bound, and the rate-limit check deciding on
 * local + remote.
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
#include <time.h>

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_proto.h"
#include "../../policyd/policyd_shared.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "policyd_test.h"

#define HOUR 3600000LL
#define W0 (1800000000000LL - 1800000000000LL % HOUR)   /* a window start, Unix ms */

static void test_flush_and_remote(void **state)
{
    osp_config_t *cfg = policyd_test_config("policyd_rate_share = yes\n");
    policyd_shared_t *sh = policyd_shared_create(cfg);
    const osp_store_rate_item_t *it;
    int64_t counts[3];
    size_t n;

    (void)state;
    assert_true(policyd_shared_enabled(sh));
    policyd_shared_count(sh, "r1", "bob", 3, HOUR, 2);
    policyd_shared_count(sh, "r1", "bob", 3, HOUR, 1);
    policyd_shared_count(sh, "r1", "a b\xc3", 4, HOUR, 1);
    /* Only checked: sent with 0, so its cluster count comes back. */
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "carol", 5, HOUR, W0 + 10), 0);
    n = policyd_shared_collect(sh, W0 + 100, &it);
    assert_int_equal(n, 3);
    assert_string_equal(it[0].key, "r1|a%20b%C3");
    assert_string_equal(it[1].key, "r1|bob");
    assert_string_equal(it[2].key, "r1|carol");
    assert_int_equal(it[1].n, 3);
    assert_int_equal(it[1].window_start_ms, W0);
    assert_int_equal(it[1].window_ms, HOUR);
    assert_int_equal(it[2].n, 0);
    counts[0] = 1;
    counts[1] = 10;   /* 7 from the other instances */
    counts[2] = 4;
    policyd_shared_flushed(sh, OSP_STORE_OK, counts, 3);
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + 200), 7);
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "carol", 5, HOUR, W0 + 200), 4);
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "a b\xc3", 4, HOUR, W0 + 200), 0);
    /* Another rule, same key: its own counter. */
    assert_int_equal(policyd_shared_remote_at(sh, "r2", "bob", 3, HOUR, W0 + 200), 0);

    /* More local counts, then the database fails: the deltas wait. */
    policyd_shared_count(sh, "r1", "bob", 3, HOUR, 5);
    n = policyd_shared_collect(sh, W0 + 1000, &it);
    assert_int_equal(n, 4);
    assert_int_equal(it[1].n, 5);
    policyd_shared_flushed(sh, OSP_STORE_TEMPFAIL, NULL, 0);
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + 1100), 7);
    policyd_shared_count(sh, "r1", "bob", 3, HOUR, 1);
    n = policyd_shared_collect(sh, W0 + 2000, &it);
    assert_int_equal(it[1].n, 6);
    {
        int64_t c4[4] = { 1, 20, 4, 0 };   /* own 3 + 6 = 9: others 11 */
        policyd_shared_flushed(sh, OSP_STORE_OK, c4, 4);
    }
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + 2100), 11);

    /* Next window: the others' 11 fade out across it. */
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + HOUR), 11);
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + HOUR + HOUR / 2),
                     5);
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + 2 * HOUR - 1), 0);
    /* Two windows later nothing of it is left. */
    assert_int_equal(policyd_shared_remote_at(sh, "r1", "bob", 3, HOUR, W0 + 3 * HOUR), 0);

    /* Idle keys go. */
    assert_int_equal(policyd_shared_keys(sh), 4);
    n = policyd_shared_collect(sh, W0 + 10 * HOUR, &it);
    assert_int_equal(n, 0);
    policyd_shared_flushed(sh, OSP_STORE_OK, NULL, 0);
    assert_int_equal(policyd_shared_keys(sh), 0);
    policyd_shared_free(&sh);
    assert_null(sh);
    osp_config_free(&cfg);
}

static void test_bound(void **state)
{
    osp_config_t *cfg = policyd_test_config("policyd_rate_share = yes\n"
                                    "policyd_rate_limit_max_keys = 1000\n");
    policyd_shared_t *sh = policyd_shared_create(cfg);
    const osp_store_rate_item_t *it;
    char k[32];
    int i;

    (void)state;
    for (i = 0; i < 1001; i++) {
        snprintf(k, sizeof(k), "u%d", i);
        policyd_shared_count(sh, "r", k, strlen(k), HOUR, 1);
    }
    assert_int_equal(policyd_shared_keys(sh), 1000);
    assert_int_equal(policyd_shared_collect(sh, W0, &it), 1000);
    policyd_shared_flushed(sh, OSP_STORE_OK, NULL, 0);
    policyd_shared_free(&sh);
    osp_config_free(&cfg);

    /* Disabled: no hooks. */
    cfg = policyd_test_config("policyd_rate_share = no\n");
    sh = policyd_shared_create(cfg);
    {
        policyd_rate_share_t s;
        policyd_shared_hooks(sh, &s);
        assert_null(s.count);
        assert_null(s.remote);
    }
    policyd_shared_free(&sh);
    osp_config_free(&cfg);
}

static const policyd_verdict_t *eval(const policyd_checks_t *c, policy_request_t *req,
                                     const char *state_)
{
    policyd_test_request(req, state_, "192.0.2.10", "alice@example.org", "r@example.com");
    policy_request_set(req, POLICY_A_SASL_USERNAME, "alice");
    return policyd_test_decide(c, req, 1000);
}

static void test_check_uses_remote(void **state)
{
    osp_config_t *cfg = policyd_test_config("policyd_rate_share = yes\n"
                                    "policyd_checks = rate_limit\n"
                                    "policyd_rate_limits = sasl_username:5/1h:messages\n");
    policyd_shared_t *sh = policyd_shared_create(cfg);
    osp_buf_t errors, warnings;
    policyd_checks_t *c;
    policyd_rate_share_t share;
    policy_request_t req;
    const osp_store_rate_item_t *it;
    struct timespec ts;
    int64_t now, counts[1];

    (void)state;
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    policyd_shared_hooks(sh, &share);
    policyd_checks_set_rate_share(c, &share);
    policy_request_init(&req, 4096);

    /* Two messages here. */
    assert_null(eval(c, &req, "END-OF-MESSAGE")->check);
    assert_null(eval(c, &req, "END-OF-MESSAGE")->check);
    assert_null(eval(c, &req, "RCPT")->check);
    clock_gettime(CLOCK_REALTIME, &ts);
    now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_int_equal(policyd_shared_collect(sh, now, &it), 1);
    assert_string_equal(it[0].key, "sasl_username:5/1h:messages|alice");
    assert_int_equal(it[0].n, 2);
    /* The cluster has 4 (2 elsewhere): 2 + 2 + 1 <= 5 passes. */
    counts[0] = 4;
    policyd_shared_flushed(sh, OSP_STORE_OK, counts, 1);
    assert_null(eval(c, &req, "RCPT")->check);
    /* 3 elsewhere: 2 + 3 + 1 > 5 is refused. */
    assert_int_equal(policyd_shared_collect(sh, now + 1, &it), 1);
    assert_int_equal(it[0].n, 0);
    counts[0] = 5;
    policyd_shared_flushed(sh, OSP_STORE_OK, counts, 1);
    assert_string_equal(eval(c, &req, "RCPT")->check, "rate_limit");

    policy_request_close(&req);
    policyd_checks_free(&c);
    policyd_shared_free(&sh);
    osp_config_free(&cfg);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flush_and_remote),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_check_uses_remote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
