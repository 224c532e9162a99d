/* osprey-filter's content scanner: MIME + the shipped default rules. */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../contentfilter/filter_body.h"
#include "../../contentfilter/filter_engine.h"
#include "../../contentfilter/filter_scan.h"
#include "osp_buf.h"

static char *path_of(const char *rel)
{
    const char *top = getenv("top_srcdir");
    char *p = malloc(4096);

    snprintf(p, 4096, "%s/%s", top ? top : ".", rel);
    return p;
}

/* Scan the file rel with the default rules; returns score, fills action and headers. */
static double scan_file(const char *rel, size_t max_size, enum filter_action *action_r,
                        char *headers, size_t hsize)
{
    char *rules = path_of("conf/default.rules"), *msgpath = path_of(rel);
    const char *files[] = { rules };
    const char *rcpts[] = { "user@example.com" };
    filter_scanner_t s;
    filter_scan_thresholds_t none = { INFINITY, INFINITY };
    filter_scan_t *scan = filter_scan_create(&none);
    filter_scan_job_t job;
    filter_scan_msg_t msg;
    filter_body_t body;
    osp_buf_t err;
    FILE *fp = fopen(msgpath, "r");
    char line[4096];
    double score;

    assert_non_null(fp);
    osp_buf_init(&err, 65536);
    if (filter_engine_create(files, 1, max_size, &s, &err) < 0)
        fail_msg("rules: %s", osp_buf_cstr(&err));
    osp_buf_close(&err);
    filter_scan_add(scan, &s);
    filter_body_init(&body, 1 << 20, "/tmp");
    while (fgets(line, sizeof(line), fp)) {
        size_t n = strcspn(line, "\n");
        filter_body_append(&body, line, n);
        filter_body_append(&body, "\r\n", 2);
    }
    fclose(fp);
    memset(&msg, 0, sizeof(msg));
    msg.scan_id = "T1";
    msg.queue_id = "Q1";
    msg.sender = "sender@deals.example";
    msg.nrcpt = 1;
    msg.rcpts = rcpts;
    msg.client_addr = "192.0.2.1";
    msg.client_name = "unknown";
    msg.helo = "deals.example";
    msg.body = &body;
    filter_scan_job_init(&job, scan, &msg);
    assert_int_equal(filter_scan_run(scan, &msg, &job.result), 0);
    score = job.result.score;
    *action_r = job.result.rcpt[0].action;
    snprintf(headers, hsize, "%s", osp_buf_cstr(&job.result.add_headers));
    filter_scan_job_close(&job);
    filter_body_close(&body);
    filter_scan_free(&scan);
    free(rules);
    free(msgpath);
    return score;
}

static void test_spammy(void **state)
{
    enum filter_action a;
    char h[8192];
    double score = scan_file("tests/data/rules/spammy.eml", 10 << 20, &a, h, sizeof(h));

    (void)state;
    assert_true(score >= 5.0);
    assert_non_null(strstr(h, "X-Osprey-Rules: "));
    assert_non_null(strstr(h, "\r\n"));
}

static void test_ham(void **state)
{
    enum filter_action a;
    char h[8192];
    double score = scan_file("tests/data/rules/ham.eml", 10 << 20, &a, h, sizeof(h));

    (void)state;
    assert_true(score < 5.0);
    assert_int_equal(a, FILTER_ACTION_DELIVER);
}

static void test_executable_quarantined(void **state)
{
    enum filter_action a;
    char h[8192];

    (void)state;
    (void)scan_file("tests/data/rules/exe.eml", 10 << 20, &a, h, sizeof(h));
    assert_int_equal(a, FILTER_ACTION_QUARANTINE);
}

static void test_size_limit_skips(void **state)
{
    enum filter_action a;
    char h[8192];
    double score = scan_file("tests/data/rules/spammy.eml", 100, &a, h, sizeof(h));

    (void)state;
    assert_true(score == 0.0);
    assert_string_equal(h, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spammy),
        cmocka_unit_test(test_ham),
        cmocka_unit_test(test_executable_quarantined),
        cmocka_unit_test(test_size_limit_skips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
