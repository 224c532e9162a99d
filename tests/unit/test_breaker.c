/*
 * Unit tests for osp_breaker.  Most cases are scripts: a configuration and
 * a list of steps (allow / success / failure at a given time), each with
 * the expected answer, the state afterwards and the one log line the step
 * must produce (or none), so every transition is checked to be logged
 * exactly once.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "osp_breaker.h"
#include "osp_buf.h"
#include "osp_log.h"

/* ------------------------------------------------------------------ */
/* Log capture                                                         */
/* ------------------------------------------------------------------ */

static struct {
    int n;
    enum osp_log_level level;
    char line[512];
} logged;

static void log_hook(enum osp_log_level level, const char *line, void *ctx)
{
    (void)ctx;
    logged.n++;
    logged.level = level;
    osp_strlcpy(logged.line, line, sizeof(logged.line));
}

static int setup(void **state)
{
    (void)state;
    memset(&logged, 0, sizeof(logged));
    osp_log_set_hook(log_hook, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    osp_log_set_hook(NULL, NULL);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Scripts                                                             */
/* ------------------------------------------------------------------ */

enum op { ALLOW, SUCCESS, FAILURE };

#define C OSP_BREAKER_CLOSED
#define O OSP_BREAKER_OPEN
#define H OSP_BREAKER_HALF_OPEN

struct step {
    enum op op;
    uint64_t now;
    int allowed;                 /* ALLOW only: expected answer */
    enum osp_breaker_state after;
    const char *log;             /* the one line this step logs, or NULL */
};

struct script {
    const char *what;
    osp_breaker_conf_t conf;
    const struct step *steps;
    size_t nsteps;
    uint64_t opens, rejections;  /* stats at the end */
};

#define OPEN5 "warning: breaker db: state closed -> open after 5 consecutive failures"
#define OPEN3 "warning: breaker db: state closed -> open after 3 consecutive failures"
#define REOPEN(ms) "warning: breaker db: state half-open -> open after a failed probe, next probe in " #ms " ms"

static const struct step threshold_minus_one[] = {
    { ALLOW, 0, 1, C, NULL },
    { FAILURE, 1, 0, C, NULL },
    { FAILURE, 2, 0, C, NULL },
    { FAILURE, 3, 0, C, NULL },
    { FAILURE, 4, 0, C, NULL },
    { ALLOW, 5, 1, C, NULL },
};

static const struct step threshold_opens[] = {
    { FAILURE, 1, 0, C, NULL },
    { FAILURE, 2, 0, C, NULL },
    { FAILURE, 3, 0, C, NULL },
    { FAILURE, 4, 0, C, NULL },
    { FAILURE, 5, 0, O, OPEN5 },
    { ALLOW, 6, 0, O, NULL },
};

static const struct step success_resets[] = {
    { FAILURE, 1, 0, C, NULL },
    { FAILURE, 2, 0, C, NULL },
    { FAILURE, 3, 0, C, NULL },
    { FAILURE, 4, 0, C, NULL },
    { SUCCESS, 5, 0, C, NULL },
    { FAILURE, 6, 0, C, NULL },
    { FAILURE, 7, 0, C, NULL },
    { FAILURE, 8, 0, C, NULL },
    { FAILURE, 9, 0, C, NULL },
    { ALLOW, 10, 1, C, NULL },
    { FAILURE, 11, 0, O, OPEN5 },
};

/* Opens at 100 with a 1000 ms cool-down: allowed again at exactly 1100. */
static const struct step cooldown_boundary[] = {
    { FAILURE, 98, 0, C, NULL },
    { FAILURE, 99, 0, C, NULL },
    { FAILURE, 100, 0, O, OPEN3 },
    { ALLOW, 100, 0, O, NULL },
    { ALLOW, 600, 0, O, NULL },
    { ALLOW, 1099, 0, O, NULL },
    { ALLOW, 1100, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { ALLOW, 1100, 0, H, NULL },
};

/* The first allow after a long outage reports the real time waited. */
static const struct step cooldown_late[] = {
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, O, OPEN3 },
    { ALLOW, 5000, 1, H, "breaker db: state open -> half-open after 5000 ms" },
};

/* Two probes at a time: the third call is refused until one reports. */
static const struct step probe_limit[] = {
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, O, OPEN3 },
    { ALLOW, 1000, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { ALLOW, 1001, 1, H, NULL },
    { ALLOW, 1002, 0, H, NULL },
    { ALLOW, 1003, 0, H, NULL },
    { SUCCESS, 1004, 0, H, NULL },
    { ALLOW, 1005, 1, H, NULL },
    { ALLOW, 1006, 0, H, NULL },
    { SUCCESS, 1007, 0, H, NULL },
    { SUCCESS, 1008, 0, C, "breaker db: state half-open -> closed after 3 successful probe(s)" },
    { ALLOW, 1009, 1, C, NULL },
};

/* A failed probe re-opens with a fresh cool-down from the failure. */
static const struct step probe_fails[] = {
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, O, OPEN3 },
    { ALLOW, 1000, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { FAILURE, 1200, 0, O, REOPEN(1000) },
    { ALLOW, 1201, 0, O, NULL },
    { ALLOW, 2199, 0, O, NULL },
    { ALLOW, 2200, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { SUCCESS, 2300, 0, C, "breaker db: state half-open -> closed after 1 successful probe(s)" },
};

/* Needing 3 successes with 1 probe: a failure after 2 still re-opens. */
static const struct step probe_fails_late[] = {
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, O, OPEN3 },
    { ALLOW, 1000, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { ALLOW, 1000, 0, H, NULL },
    { SUCCESS, 1001, 0, H, NULL },
    { ALLOW, 1002, 1, H, NULL },
    { SUCCESS, 1003, 0, H, NULL },
    { ALLOW, 1004, 1, H, NULL },
    { FAILURE, 1005, 0, O, REOPEN(1000) },
    { ALLOW, 2004, 0, O, NULL },
    { ALLOW, 2005, 1, H, "breaker db: state open -> half-open after 1000 ms" },
};

/* After closing, the failure count starts from zero. */
static const struct step closed_again[] = {
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, O, OPEN3 },
    { ALLOW, 1000, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { SUCCESS, 1001, 0, C, "breaker db: state half-open -> closed after 1 successful probe(s)" },
    { FAILURE, 1002, 0, C, NULL },
    { FAILURE, 1003, 0, C, NULL },
    { ALLOW, 1004, 1, C, NULL },
    { FAILURE, 1005, 0, O, OPEN3 },
};

/* Results of calls let through before it opened change nothing. */
static const struct step late_results[] = {
    { ALLOW, 0, 1, C, NULL },
    { ALLOW, 0, 1, C, NULL },
    { ALLOW, 0, 1, C, NULL },
    { ALLOW, 0, 1, C, NULL },
    { FAILURE, 10, 0, C, NULL },
    { FAILURE, 10, 0, C, NULL },
    { FAILURE, 10, 0, O, OPEN3 },
    { FAILURE, 900, 0, O, NULL },   /* does not extend the cool-down */
    { SUCCESS, 950, 0, O, NULL },   /* does not close it */
    { ALLOW, 1009, 0, O, NULL },
    { ALLOW, 1010, 1, H, "breaker db: state open -> half-open after 1000 ms" },
};

/* A probe whose result never comes stops blocking after a cool-down. */
static const struct step lost_probe[] = {
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, C, NULL },
    { FAILURE, 0, 0, O, OPEN3 },
    { ALLOW, 1000, 1, H, "breaker db: state open -> half-open after 1000 ms" },
    { ALLOW, 1999, 0, H, NULL },
    { ALLOW, 2000, 1, H, "warning: breaker db: no result from 1 probe(s) after 1000 ms, allowing new probes" },
    { ALLOW, 2001, 0, H, NULL },
    { SUCCESS, 2002, 0, C, "breaker db: state half-open -> closed after 1 successful probe(s)" },
};

/* A clock that goes back counts as no time passed. */
static const struct step clock_back[] = {
    { FAILURE, 5000, 0, C, NULL },
    { FAILURE, 5000, 0, C, NULL },
    { FAILURE, 5000, 0, O, OPEN3 },
    { ALLOW, 10, 0, O, NULL },
    { ALLOW, 6000, 1, H, "breaker db: state open -> half-open after 1000 ms" },
};

/* Threshold 1: a single failure opens it. */
static const struct step threshold_one[] = {
    { ALLOW, 0, 1, C, NULL },
    { FAILURE, 0, 0, O, "warning: breaker db: state closed -> open after 1 consecutive failures" },
    { ALLOW, 0, 0, O, NULL },
};

#define SCRIPT(steps) steps, sizeof(steps) / sizeof(steps[0])
#define CONF(th, cool, probes, succ) { (th), (cool), (probes), (succ) }

static const struct script scripts[] = {
    { "threshold-1 failures stay closed", CONF(5, 1000, 1, 1), SCRIPT(threshold_minus_one), 0, 0 },
    { "threshold failures open", CONF(5, 1000, 1, 1), SCRIPT(threshold_opens), 1, 1 },
    { "success resets the count", CONF(5, 1000, 1, 1), SCRIPT(success_resets), 1, 0 },
    { "cool-down boundary", CONF(3, 1000, 1, 1), SCRIPT(cooldown_boundary), 1, 4 },
    { "cool-down long past", CONF(3, 1000, 1, 1), SCRIPT(cooldown_late), 1, 0 },
    { "probe limit", CONF(3, 1000, 2, 3), SCRIPT(probe_limit), 1, 3 },
    { "failed probe re-opens", CONF(3, 1000, 1, 1), SCRIPT(probe_fails), 2, 2 },
    { "failure after some successes", CONF(3, 1000, 1, 3), SCRIPT(probe_fails_late), 2, 2 },
    { "closed again from zero", CONF(3, 1000, 1, 1), SCRIPT(closed_again), 2, 0 },
    { "late results while open", CONF(3, 1000, 1, 1), SCRIPT(late_results), 1, 1 },
    { "lost probe", CONF(3, 1000, 1, 1), SCRIPT(lost_probe), 1, 2 },
    { "clock goes back", CONF(3, 1000, 1, 1), SCRIPT(clock_back), 1, 1 },
    { "threshold one", CONF(1, 1000, 1, 1), SCRIPT(threshold_one), 1, 1 },
};

static void run_script(const struct script *s)
{
    osp_breaker_t b;
    size_t i;

    osp_breaker_init(&b, &s->conf, "db");
    assert_int_equal(osp_breaker_state(&b), OSP_BREAKER_CLOSED);
    for (i = 0; i < s->nsteps; i++) {
        const struct step *st = &s->steps[i];
        char where[160];

        snprintf(where, sizeof(where), "%s, step %zu", s->what, i);
        logged.n = 0;
        switch (st->op) {
        case ALLOW:
            if (osp_breaker_allow(&b, st->now) != (st->allowed != 0))
                fail_msg("%s: allow should be %d", where, st->allowed);
            break;
        case SUCCESS:
            osp_breaker_success(&b, st->now);
            break;
        case FAILURE:
            osp_breaker_failure(&b, st->now);
            break;
        }
        if (osp_breaker_state(&b) != st->after)
            fail_msg("%s: state %s, expected %s", where,
                     osp_breaker_state_name(osp_breaker_state(&b)),
                     osp_breaker_state_name(st->after));
        if (st->log == NULL && logged.n != 0)
            fail_msg("%s: unexpected log \"%s\"", where, logged.line);
        if (st->log && logged.n != 1)
            fail_msg("%s: %d log lines, expected 1", where, logged.n);
        if (st->log && strcmp(logged.line, st->log) != 0)
            fail_msg("%s: logged \"%s\"\n  expected \"%s\"", where, logged.line, st->log);
        if (st->log)
            assert_int_equal(logged.level, strncmp(st->log, "warning: ", 9) == 0
                             ? OSP_LOG_WARNING : OSP_LOG_INFO);
    }
    if (osp_breaker_stats(&b)->opens != s->opens)
        fail_msg("%s: %ju opens, expected %ju", s->what,
                 (uintmax_t)osp_breaker_stats(&b)->opens, (uintmax_t)s->opens);
    if (osp_breaker_stats(&b)->rejections != s->rejections)
        fail_msg("%s: %ju rejections, expected %ju", s->what,
                 (uintmax_t)osp_breaker_stats(&b)->rejections, (uintmax_t)s->rejections);
}

static void test_scripts(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        run_script(&scripts[i]);
}

/* ------------------------------------------------------------------ */
/* Direct tests                                                        */
/* ------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    osp_breaker_t b;
    osp_breaker_conf_t conf = { 0, 0, 0, 0 };
    int i;

    (void)state;
    osp_breaker_init(&b, NULL, "pgsql");
    assert_string_equal(b.name, "pgsql");
    assert_int_equal(b.conf.failure_threshold, OSP_BREAKER_DEFAULT_THRESHOLD);
    assert_int_equal(b.conf.cooldown_ms, OSP_BREAKER_DEFAULT_COOLDOWN_MS);
    assert_int_equal(b.conf.half_open_probes, 1);
    assert_int_equal(b.conf.half_open_successes, 1);

    osp_breaker_init(&b, &conf, "pgsql");
    assert_int_equal(b.conf.failure_threshold, 5);
    assert_int_equal(b.conf.cooldown_ms, 30000);

    /* Default threshold 5 and cool-down 30 s, end to end. */
    for (i = 0; i < 4; i++)
        osp_breaker_failure(&b, 0);
    assert_int_equal(osp_breaker_state(&b), OSP_BREAKER_CLOSED);
    osp_breaker_failure(&b, 0);
    assert_int_equal(osp_breaker_state(&b), OSP_BREAKER_OPEN);
    assert_false(osp_breaker_allow(&b, 29999));
    assert_true(osp_breaker_allow(&b, 30000));
    assert_false(osp_breaker_allow(&b, 30000));
}

static void test_conf_kept(void **state)
{
    osp_breaker_t b;
    osp_breaker_conf_t conf = { 7, 250, 3, 2 };

    (void)state;
    osp_breaker_init(&b, &conf, "dns");
    assert_int_equal(b.conf.failure_threshold, 7);
    assert_int_equal(b.conf.cooldown_ms, 250);
    assert_int_equal(b.conf.half_open_probes, 3);
    assert_int_equal(b.conf.half_open_successes, 2);
}

static void test_name_truncated(void **state)
{
    osp_breaker_t b;
    char longname[200];

    (void)state;
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    osp_breaker_init(&b, NULL, longname);
    assert_int_equal(strlen(b.name), sizeof(b.name) - 1);
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(osp_breaker_state_name(OSP_BREAKER_CLOSED), "closed");
    assert_string_equal(osp_breaker_state_name(OSP_BREAKER_OPEN), "open");
    assert_string_equal(osp_breaker_state_name(OSP_BREAKER_HALF_OPEN), "half-open");
    /* Stable values: exported as a gauge. */
    assert_int_equal(OSP_BREAKER_CLOSED, 0);
    assert_int_equal(OSP_BREAKER_OPEN, 1);
    assert_int_equal(OSP_BREAKER_HALF_OPEN, 2);
}

static void test_stats(void **state)
{
    osp_breaker_t b;
    osp_breaker_conf_t conf = { 2, 100, 1, 1 };
    const osp_breaker_stats_t *st;

    (void)state;
    osp_breaker_init(&b, &conf, "smtp");
    st = osp_breaker_stats(&b);
    assert_true(osp_breaker_allow(&b, 0));
    osp_breaker_success(&b, 0);
    osp_breaker_failure(&b, 1);
    osp_breaker_failure(&b, 2);           /* opens */
    assert_false(osp_breaker_allow(&b, 3));
    assert_false(osp_breaker_allow(&b, 4));
    assert_true(osp_breaker_allow(&b, 102));
    osp_breaker_failure(&b, 103);         /* re-opens */
    assert_false(osp_breaker_allow(&b, 104));
    assert_int_equal(st->opens, 2);
    assert_int_equal(st->rejections, 3);
    assert_int_equal(st->successes, 1);
    assert_int_equal(st->failures, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scripts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conf_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
