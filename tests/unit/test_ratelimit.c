/*
 * Unit tests for osp_ratelimit: GCRA window edges (burst, refill one unit
 * per T, full refill after a window), the alert-once flag, the two-window
 * cap, expiry of idle keys, table limits, memory for a million keys, and
 * SipHash-2-4 against the reference vector.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "osp_ratelimit.h"

#define PASS OSP_RATELIMIT_PASS
#define OVER OSP_RATELIMIT_EXCEEDED

/* Base time far from 0, as a monotonic clock would be. */
#define T0 UINT64_C(86400000)

struct step {
    char op;            /* 'c' check, 'a' add, 'u' used */
    uint64_t at_ms;     /* relative to T0 */
    uint64_t n;
    int want;           /* check: PASS/OVER; add: 0/-1; used: units */
    int first;          /* check: expected first flag (-1: don't care) */
};

static void run_steps(osp_ratelimit_t *rl, uint64_t key, const struct step *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        bool first = false;
        switch (s[i].op) {
        case 'c': {
            int got = osp_ratelimit_check(rl, key, s[i].n, T0 + s[i].at_ms, &first);
            if (got != s[i].want)
                fail_msg("step %zu: check n=%llu at %llu: got %d want %d", i,
                         (unsigned long long)s[i].n, (unsigned long long)s[i].at_ms, got,
                         s[i].want);
            if (s[i].first >= 0 && (int)first != s[i].first)
                fail_msg("step %zu: first=%d want %d", i, first, s[i].first);
            break;
        }
        case 'a':
            assert_int_equal(osp_ratelimit_add(rl, key, s[i].n, T0 + s[i].at_ms), s[i].want);
            break;
        case 'u': {
            uint64_t u = osp_ratelimit_used(rl, key, T0 + s[i].at_ms);
            if (u != (uint64_t)s[i].want)
                fail_msg("step %zu: used at %llu = %llu want %d", i,
                         (unsigned long long)s[i].at_ms, (unsigned long long)u, s[i].want);
            break;
        }
        default:
            fail();
        }
    }
}

/* 3 per 3 s: T = 1 s. */
static void test_window_edges(void **state)
{
    static const struct step steps[] = {
        { 'c', 0, 1, PASS, 0 },
        { 'c', 0, 3, PASS, 0 },
        { 'c', 0, 4, OVER, 1 },        /* a new key: more than the limit at once */
        { 'a', 0, 1, 0, 0 },
        { 'a', 0, 1, 0, 0 },
        { 'u', 0, 0, 2, 0 },
        { 'c', 0, 1, PASS, 0 },        /* the third conforms */
        { 'a', 0, 1, 0, 0 },
        { 'u', 0, 0, 3, 0 },
        { 'c', 0, 1, OVER, 1 },        /* the fourth does not; first alert */
        { 'c', 500, 1, OVER, 0 },      /* still over: no second alert */
        { 'c', 999, 1, OVER, 0 },      /* one ms before a unit comes back */
        { 'c', 1000, 1, PASS, -1 },    /* exactly T later: one unit */
        { 'c', 1000, 2, OVER, -1 },    /* but not two */
        { 'u', 1000, 0, 2, 0 },
        { 'c', 2000, 2, PASS, -1 },
        { 'c', 2999, 3, OVER, -1 },
        { 'c', 3000, 3, PASS, -1 },    /* a full window later: the whole burst */
        { 'u', 3000, 0, 0, 0 },
    };

    osp_ratelimit_t *rl = osp_ratelimit_create(3, 3000, 1000);
    (void)state;
    run_steps(rl, 42, steps, sizeof(steps) / sizeof(steps[0]));
    osp_ratelimit_free(&rl);
    assert_null(rl);
}

/* The alert flag clears when the key conforms again, so a new episode alerts again. */
static void test_alert_once_per_episode(void **state)
{
    static const struct step steps[] = {
        { 'a', 0, 2, 0, 0 },
        { 'c', 0, 1, OVER, 1 },
        { 'c', 10, 1, OVER, 0 },
        { 'c', 20, 1, OVER, 0 },
        { 'c', 30000, 1, PASS, 0 },    /* back under */
        { 'a', 30000, 1, 0, 0 },
        { 'c', 30001, 1, OVER, 1 },    /* new episode: alert again */
    };
    osp_ratelimit_t *rl = osp_ratelimit_create(2, 60000, 1000);

    (void)state;
    run_steps(rl, 7, steps, sizeof(steps) / sizeof(steps[0]));
    osp_ratelimit_free(&rl);
}

/* Counting far beyond the limit blocks for at most two windows. */
static void test_cap_two_windows(void **state)
{
    static const struct step steps[] = {
        { 'a', 0, 1000, 0, 0 },
        { 'u', 0, 0, 20, 0 },          /* capped at 2 windows = 20 units */
        { 'c', 10999, 1, OVER, -1 },
        { 'c', 11000, 1, PASS, -1 },
        { 'c', 20000, 10, PASS, -1 },
    };
    osp_ratelimit_t *rl = osp_ratelimit_create(10, 10000, 1000);

    (void)state;
    run_steps(rl, 9, steps, sizeof(steps) / sizeof(steps[0]));
    osp_ratelimit_free(&rl);
}

/* A limit that does not divide the window: L*T <= W keeps the burst. */
static void test_uneven_interval(void **state)
{
    osp_ratelimit_t *rl = osp_ratelimit_create(3, 1000, 1000);
    int i;

    (void)state;
    for (i = 0; i < 3; i++) {
        assert_int_equal(osp_ratelimit_check(rl, 1, 1, T0, NULL), PASS);
        assert_int_equal(osp_ratelimit_add(rl, 1, 1, T0), 0);
    }
    assert_int_equal(osp_ratelimit_check(rl, 1, 1, T0, NULL), OVER);
    assert_int_equal(osp_ratelimit_check(rl, 1, 1, T0 + 333, NULL), OVER);
    assert_int_equal(osp_ratelimit_check(rl, 1, 1, T0 + 334, NULL), PASS);
    osp_ratelimit_free(&rl);
}

static void test_keys_independent_and_zero(void **state)
{
    osp_ratelimit_t *rl = osp_ratelimit_create(1, 1000, 1000);

    (void)state;
    assert_int_equal(osp_ratelimit_add(rl, 0, 1, T0), 0);   /* hash 0 is a valid key */
    assert_int_equal(osp_ratelimit_check(rl, 0, 1, T0, NULL), OVER);
    assert_int_equal(osp_ratelimit_check(rl, 2, 1, T0, NULL), PASS);
    assert_int_equal(osp_ratelimit_check(rl, UINT64_MAX, 1, T0, NULL), PASS);
    assert_int_equal(osp_ratelimit_add(rl, 0, 0, T0), 0);   /* n = 0 counts nothing */
    assert_int_equal(osp_ratelimit_count(rl), 1);
    osp_ratelimit_free(&rl);
}

/* Idle keys go away: by a full sweep and incrementally. */
static void test_expiry(void **state)
{
    osp_ratelimit_t *rl = osp_ratelimit_create(10, 1000, 100000);
    uint64_t k;

    (void)state;
    for (k = 1; k <= 5000; k++)
        assert_int_equal(osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0), 0);
    assert_int_equal(osp_ratelimit_count(rl), 5000);
    assert_int_equal(osp_ratelimit_expire(rl, T0 + 99), 0);   /* T = 100 ms */
    assert_int_equal(osp_ratelimit_expire(rl, T0 + 100), 5000);
    assert_int_equal(osp_ratelimit_count(rl), 0);
    /* Every surviving key must still be found after deletions moved entries. */
    for (k = 1; k <= 5000; k++)
        (void)osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), k % 2 ? 1 : 20, T0);
    (void)osp_ratelimit_expire(rl, T0 + 150);
    assert_int_equal(osp_ratelimit_count(rl), 2500);
    for (k = 1; k <= 5000; k++)
        assert_int_equal(osp_ratelimit_used(rl, osp_ratelimit_hash(&k, sizeof(k)), T0 + 150),
                         k % 2 ? 0 : 19);
    /* Incremental sweeping by traffic on other keys. */
    for (k = 10000; k < 200000; k++)
        (void)osp_ratelimit_check(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0 + 5000, NULL);
    assert_true(osp_ratelimit_count(rl) < 2500);
    osp_ratelimit_free(&rl);
}

/* max_keys bounds the table; expired keys make room again. */
static void test_full(void **state)
{
    osp_ratelimit_t *rl = osp_ratelimit_create(1, 1000, 64 * 4);
    uint64_t k;
    int refused = 0;

    (void)state;
    for (k = 0; k < 2000; k++)
        if (osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0) < 0)
            refused++;
    assert_true(refused > 0);
    assert_true(osp_ratelimit_count(rl) <= 64 * 4);
    k = 99999;
    assert_int_equal(osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0 + 1000), 0);
    osp_ratelimit_free(&rl);
}

/* The bound is for the whole table: exactly max_keys distinct keys fit,
 * however unevenly they fall into the shards, and the next is refused. */
static void test_full_exact(void **state)
{
    osp_ratelimit_t *rl = osp_ratelimit_create(5, 3600000, 1000);
    uint64_t k;

    (void)state;
    for (k = 0; k < 1000; k++)
        assert_int_equal(osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0), 0);
    assert_int_equal(osp_ratelimit_count(rl), 1000);
    k = 1000;
    assert_true(osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0) < 0);
    osp_ratelimit_free(&rl);
}

/* A million keys stay well under 100 MB. */
static void test_million_keys_memory(void **state)
{
    osp_ratelimit_t *rl = osp_ratelimit_create(100, 3600000, 2000000);
    uint64_t k;

    (void)state;
    for (k = 0; k < 1000000; k++)
        assert_int_equal(osp_ratelimit_add(rl, osp_ratelimit_hash(&k, sizeof(k)), 1, T0), 0);
    assert_int_equal(osp_ratelimit_count(rl), 1000000);
    print_message("# 1,000,000 keys: %zu bytes\n", osp_ratelimit_memory(rl));
    assert_true(osp_ratelimit_memory(rl) <= 40u * 1024 * 1024);
    k = 123456;
    assert_int_equal(osp_ratelimit_used(rl, osp_ratelimit_hash(&k, sizeof(k)), T0), 1);
    osp_ratelimit_free(&rl);
}

/* SipHash-2-4 reference: key 00..0f, message 00..0e -> a129ca6149be45e5. */
static void test_siphash_vector(void **state)
{
    unsigned char msg[15];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)i;
    osp_ratelimit_hash_seed(UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908));
    assert_true(osp_ratelimit_hash(msg, 15) == UINT64_C(0xa129ca6149be45e5));
    assert_true(osp_ratelimit_hash("", 0) == UINT64_C(0x726fdb47dd0e0e31));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_alert_once_per_episode),
        cmocka_unit_test(test_cap_two_windows),
        cmocka_unit_test(test_uneven_interval),
        cmocka_unit_test(test_keys_independent_and_zero),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_full_exact),
        cmocka_unit_test(test_million_keys_memory),
        cmocka_unit_test(test_siphash_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
