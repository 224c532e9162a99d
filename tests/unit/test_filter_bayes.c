/*
 * osprey-filter's Bayes: the hot-token cache (hits, misses, least recently
 * used eviction, TTL expiry, accounts kept apart), classification from the
 * cache agreeing with the in-memory classifier, and the two-step scan on a
 * real libuv loop: parse and tokenize in the thread pool, look up per
 * recipient account, then rules that read `bayes`, each recipient scored
 * with its own account's probability; no store means no Bayes, not a
 * failed scan.
 */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "../../contentfilter/filter_bayes.h"
#include "../../contentfilter/filter_body.h"
#include "../../contentfilter/filter_engine.h"
#include "../../contentfilter/filter_scan.h"
#include "osp_bayes.h"
#include "osp_buf.h"
#include "osp_mime.h"

/* ---- cache ----------------------------------------------------------------- */

static void test_cache_hit_miss(void **state)
{
    filter_bayes_cache_t *c = filter_bayes_cache_create(100, 1000);
    filter_bayes_cache_stats_t st;
    uint32_t s = 99, h = 99;

    (void)state;
    assert_false(filter_bayes_cache_get(c, 0, 42, 0, &s, &h));
    filter_bayes_cache_put(c, 0, 42, 3, 4, 0);
    filter_bayes_cache_put(c, 7, 42, 1, 0, 0);
    assert_true(filter_bayes_cache_get(c, 0, 42, 10, &s, &h));
    assert_int_equal(s, 3);
    assert_int_equal(h, 4);
    /* Same token, another account: its own entry. */
    assert_true(filter_bayes_cache_get(c, 7, 42, 10, &s, &h));
    assert_int_equal(s, 1);
    assert_int_equal(h, 0);
    assert_false(filter_bayes_cache_get(c, 8, 42, 10, &s, &h));
    /* Negative answers are cached too. */
    filter_bayes_cache_put(c, 8, 42, 0, 0, 10);
    assert_true(filter_bayes_cache_get(c, 8, 42, 10, &s, &h));
    assert_int_equal(s + h, 0);
    /* A put refreshes the value. */
    filter_bayes_cache_put(c, 0, 42, 5, 6, 20);
    assert_true(filter_bayes_cache_get(c, 0, 42, 20, &s, &h));
    assert_int_equal(s, 5);
    assert_int_equal(h, 6);
    filter_bayes_cache_stats(c, &st);
    assert_int_equal(st.size, 3);
    assert_int_equal(st.hits, 4);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.evictions, 0);
    filter_bayes_cache_free(&c);
    assert_null(c);
    filter_bayes_cache_free(&c);
}

static void test_cache_ttl(void **state)
{
    filter_bayes_cache_t *c = filter_bayes_cache_create(10, 100);
    filter_bayes_cache_stats_t st;
    uint32_t s, h;

    (void)state;
    filter_bayes_cache_put(c, 3, 1, 1, 2, 1000);
    assert_true(filter_bayes_cache_get(c, 3, 1, 1099, &s, &h));
    /* Expired at put + TTL: training elsewhere shows up after that. */
    assert_false(filter_bayes_cache_get(c, 3, 1, 1100, &s, &h));
    assert_false(filter_bayes_cache_get(c, 3, 1, 5000, &s, &h));
    /* A get does not extend the life of an entry; a put does. */
    filter_bayes_cache_put(c, 3, 1, 7, 8, 5000);
    assert_true(filter_bayes_cache_get(c, 3, 1, 5050, &s, &h));
    assert_true(filter_bayes_cache_get(c, 3, 1, 5099, &s, &h));
    assert_int_equal(s, 7);
    assert_false(filter_bayes_cache_get(c, 3, 1, 5100, &s, &h));
    filter_bayes_cache_stats(c, &st);
    assert_int_equal(st.expired, 3);
    assert_int_equal(st.size, 1);
    filter_bayes_cache_free(&c);

    /* TTL 0: nothing is ever trusted. */
    c = filter_bayes_cache_create(10, 0);
    filter_bayes_cache_put(c, 0, 9, 1, 1, 50);
    assert_false(filter_bayes_cache_get(c, 0, 9, 50, &s, &h));
    filter_bayes_cache_free(&c);
}

static void test_cache_lru_eviction(void **state)
{
    filter_bayes_cache_t *c = filter_bayes_cache_create(3, 1000000);
    filter_bayes_cache_stats_t st;
    uint32_t s, h;

    (void)state;
    filter_bayes_cache_put(c, 1, 100, 1, 0, 0);   /* a */
    filter_bayes_cache_put(c, 1, 200, 2, 0, 0);   /* b */
    filter_bayes_cache_put(c, 1, 300, 3, 0, 0);   /* c */
    assert_true(filter_bayes_cache_get(c, 1, 100, 1, &s, &h));   /* a is recent now */
    filter_bayes_cache_put(c, 1, 400, 4, 0, 1);   /* evicts b, the least recent */
    assert_false(filter_bayes_cache_get(c, 1, 200, 2, &s, &h));
    assert_true(filter_bayes_cache_get(c, 1, 100, 2, &s, &h));
    assert_int_equal(s, 1);
    assert_true(filter_bayes_cache_get(c, 1, 300, 2, &s, &h));
    assert_int_equal(s, 3);
    assert_true(filter_bayes_cache_get(c, 1, 400, 2, &s, &h));
    assert_int_equal(s, 4);
    /* Refreshing an entry moves it to the front too: now a is the oldest. */
    filter_bayes_cache_put(c, 1, 300, 30, 0, 3);
    filter_bayes_cache_put(c, 1, 400, 40, 0, 3);
    filter_bayes_cache_put(c, 1, 500, 5, 0, 3);   /* evicts a */
    assert_false(filter_bayes_cache_get(c, 1, 100, 4, &s, &h));
    filter_bayes_cache_stats(c, &st);
    assert_int_equal(st.size, 3);
    assert_int_equal(st.max, 3);
    assert_int_equal(st.evictions, 2);
    filter_bayes_cache_free(&c);
}

static void test_cache_bounded(void **state)
{
    filter_bayes_cache_t *c = filter_bayes_cache_create(1000, 1000000);
    filter_bayes_cache_stats_t st;
    uint32_t s, h;
    uint64_t i;
    size_t found = 0;

    (void)state;
    for (i = 1; i <= 20000; i++)
        filter_bayes_cache_put(c, (int64_t)(i % 3), i * 0x9E3779B97F4A7C15ull, (uint32_t)i, 0,
                               0);
    filter_bayes_cache_stats(c, &st);
    assert_int_equal(st.size, 1000);
    assert_int_equal(st.evictions, 19000);
    /* Exactly the last 1000 are there, with their values. */
    for (i = 1; i <= 20000; i++)
        if (filter_bayes_cache_get(c, (int64_t)(i % 3), i * 0x9E3779B97F4A7C15ull, 0, &s, &h)) {
            assert_true(i > 19000);
            assert_int_equal(s, (uint32_t)i);
            found++;
        }
    assert_int_equal(found, 1000);
    filter_bayes_cache_free(&c);
}

/* ---- classification from the cache ----------------------------------------- */

static const char *spam_text[] = {
    "cheap pills online discount viagra offer click here now",
    "limited offer buy cheap pills discount online pharmacy",
    "click here for cheap viagra discount offer",
};
static const char *ham_text[] = {
    "hello bob the meeting agenda for the project review is attached",
    "project review meeting moved to thursday agenda attached",
    "notes from the project meeting and the review agenda",
};

static void tokens_of(const char *text, osp_bayes_tokens_t *t)
{
    osp_bayes_tokens_init(t, true);
    osp_bayes_tokenize_text(t, "", text, strlen(text), 0);
    osp_bayes_tokens_finish(t);
}

/* Copy b's rows for t (account and global) and the totals into the cache. */
static void fill_cache(filter_bayes_cache_t *c, const osp_bayes_t *b, int64_t account,
                       const osp_bayes_tokens_t *t, uint64_t now)
{
    uint32_t s, h;
    size_t i;

    for (i = 0; i < t->n; i++) {
        osp_bayes_counts(b, 0, t->hash[i], &s, &h);
        filter_bayes_cache_put(c, 0, t->hash[i], s, h, now);
        osp_bayes_counts(b, (uint32_t)account, t->hash[i], &s, &h);
        filter_bayes_cache_put(c, account, t->hash[i], s, h, now);
    }
    osp_bayes_totals(b, 0, &s, &h);
    filter_bayes_cache_put(c, 0, 0, s, h, now);
    osp_bayes_totals(b, (uint32_t)account, &s, &h);
    filter_bayes_cache_put(c, account, 0, s, h, now);
}

static void never_cb(void *ctx)
{
    (void)ctx;
    fail_msg("no callback expected for an answer from the cache");
}

static void test_classify_from_cache(void **state)
{
    uv_loop_t loop;
    osp_bayes_t *b = osp_bayes_create(NULL);
    filter_bayes_conf_t conf;
    filter_bayes_t *fb;
    osp_bayes_tokens_t t, q;
    osp_bayes_result_t want;
    filter_bayes_answer_t ans[2];
    filter_bayes_stats_t st;
    size_t i;

    (void)state;
    uv_loop_init(&loop);
    for (i = 0; i < 3; i++) {
        tokens_of(spam_text[i], &t);
        osp_bayes_train(b, 5, &t, true, 1);
        osp_bayes_tokens_close(&t);
        tokens_of(ham_text[i], &t);
        osp_bayes_train(b, 6, &t, false, 1);
        osp_bayes_tokens_close(&t);
    }
    memset(&conf, 0, sizeof(conf));
    osp_bayes_params_default(&conf.params);
    conf.cache_size = 1000;
    conf.cache_ttl_ms = 60000;
    conf.timeout_ms = 1000;
    conf.min_messages = 3;
    conf.nclues = 3;
    fb = filter_bayes_create(&loop, NULL, &conf);
    tokens_of("cheap discount pills offer for the project", &q);
    fill_cache(filter_bayes_cache(fb), b, 5, &q, uv_now(&loop));
    fill_cache(filter_bayes_cache(fb), b, 6, &q, uv_now(&loop));
    memset(ans, 0, sizeof(ans));
    ans[0].account = 5;
    ans[1].account = 6;
    assert_int_equal(filter_bayes_classify(fb, &q, ans, 2, never_cb, NULL), 0);
    /* The same numbers as the in-memory classifier over the same rows. */
    osp_bayes_classify(b, 5, &q, &want);
    assert_true(fabs(ans[0].prob - want.prob) < 1e-12);
    assert_true(ans[0].prob > 0.5);
    osp_bayes_result_close(&want);
    osp_bayes_classify(b, 6, &q, &want);
    assert_true(fabs(ans[1].prob - want.prob) < 1e-12);
    assert_true(ans[1].prob < ans[0].prob);
    osp_bayes_result_close(&want);
    assert_int_equal(ans[0].ntokens, q.n);
    /* Readable clues: "TOKEN=P, ..." with at most nclues entries. */
    assert_non_null(strstr(ans[0].clues, "="));
    assert_null(strstr(ans[0].clues, ";"));
    {
        size_t commas = 0;
        const char *p;
        for (p = ans[0].clues; *p; p++)
            commas += *p == ',';
        assert_true(commas <= 2);
    }
    /* Too little training: no verdict (absent, not 0.5). */
    filter_bayes_free(&fb);
    conf.min_messages = 1000;
    fb = filter_bayes_create(&loop, NULL, &conf);
    fill_cache(filter_bayes_cache(fb), b, 5, &q, uv_now(&loop));
    ans[0].account = 5;
    assert_int_equal(filter_bayes_classify(fb, &q, ans, 1, never_cb, NULL), 0);
    assert_true(ans[0].prob < 0);
    /* Not cached and no store: absent, one failure counted, no callback. */
    ans[0].account = 77;
    assert_int_equal(filter_bayes_classify(fb, &q, ans, 1, never_cb, NULL), 0);
    assert_true(ans[0].prob < 0);
    filter_bayes_stats(fb, &st);
    assert_int_equal(st.failures, 1);
    assert_true(st.outage);
    /* Autolearn is off by default and never learns without a verdict. */
    assert_int_equal(filter_bayes_autolearn(fb, 5, &q, 20.0, 0.5, "T"), OSP_BAYES_LEARN_NONE);
    filter_bayes_free(&fb);
    osp_bayes_tokens_close(&q);
    osp_bayes_free(&b);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the two-step scan on a loop ------------------------------------------- */

static const char scan_msg[] =
    "From: deals@cheap-pills.example\r\n"
    "To: a@example.com\r\n"
    "Subject: cheap pills discount\r\n"
    "\r\n"
    "Buy cheap pills online now, discount offer, click here.\r\n";

static int scan_done_calls;

static void scan_done_cb(filter_scan_job_t *job, int status)
{
    (void)job;
    assert_int_equal(status, 0);
    scan_done_calls++;
}

static void test_two_step_scan_per_account(void **state)
{
    char rules[] = "/tmp/osprey-test-bayes-rules.XXXXXX";
    const char *files[] = { rules };
    const char *rcpts[] = { "a@example.com", "b@example.com", "c@example.com",
                            "d@example.com" };
    uv_loop_t loop;
    filter_bayes_conf_t conf;
    filter_bayes_t *fb;
    filter_bayes_cache_t *c;
    filter_scan_thresholds_t none = { INFINITY, INFINITY };
    filter_scan_t *scan;
    filter_scanner_t engine;
    filter_scan_job_t job;
    filter_scan_msg_t msg;
    filter_body_t body;
    osp_buf_t err, h;
    osp_mime_message_t *m;
    osp_bayes_tokens_t t;
    const char *text =
        "rule BAYES_HIGH: bayes > 0.9 => score 10 \"Bayes high\"\n"
        "rule BAYES_LOW: bayes < 0.1 => score -3 \"Bayes low\"\n"
        "rule PILLS: subject contains \"pills\" => score 1 \"pills\"\n";
    int fd = mkstemp(rules);
    uint64_t now;
    size_t i;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    uv_loop_init(&loop);
    memset(&conf, 0, sizeof(conf));
    osp_bayes_params_default(&conf.params);
    conf.cache_size = 10000;
    conf.cache_ttl_ms = 600000;
    conf.timeout_ms = 1000;
    conf.min_messages = 1;
    conf.nclues = 5;
    fb = filter_bayes_create(&loop, NULL, &conf);
    c = filter_bayes_cache(fb);

    /* The message's tokens: account 7 has seen them only in spam, 8 only in ham. */
    m = osp_mime_parse(scan_msg, strlen(scan_msg), NULL);
    osp_bayes_tokens_init(&t, false);
    osp_bayes_tokenize(m, 0, &t);
    assert_true(t.n > 3);
    now = uv_now(&loop);
    for (i = 0; i < t.n; i++) {
        filter_bayes_cache_put(c, 0, t.hash[i], 40, 40, now);   /* everyone: both */
        filter_bayes_cache_put(c, 7, t.hash[i], 40, 0, now);
        filter_bayes_cache_put(c, 8, t.hash[i], 0, 40, now);
    }
    filter_bayes_cache_put(c, 0, 0, 100, 100, now);
    filter_bayes_cache_put(c, 7, 0, 50, 50, now);
    filter_bayes_cache_put(c, 8, 0, 50, 50, now);
    osp_bayes_tokens_close(&t);
    osp_mime_message_free(&m);

    scan = filter_scan_create(&none);
    osp_buf_init(&err, 65536);
    if (filter_engine_create(files, 1, 1 << 20, &engine, &err) < 0)
        fail_msg("rules: %s", osp_buf_cstr(&err));
    osp_buf_close(&err);
    filter_scan_add(scan, &engine);
    filter_engine_two_step(scan, &engine, true);
    filter_scan_set_bayes(scan, fb);

    filter_body_init(&body, 1 << 20, "/tmp");
    filter_body_append(&body, scan_msg, strlen(scan_msg));
    memset(&msg, 0, sizeof(msg));
    msg.scan_id = "T2";
    msg.queue_id = "";
    msg.sender = "deals@cheap-pills.example";
    msg.nrcpt = 4;
    msg.rcpts = rcpts;
    msg.client_addr = msg.client_name = msg.helo = "";
    msg.body = &body;
    msg.headers = scan_msg;
    msg.headers_len = strlen(scan_msg);
    filter_scan_job_init(&job, scan, &msg);
    filter_scan_job_set_account(&job, 0, 7);
    filter_scan_job_set_account(&job, 1, 8);
    filter_scan_job_set_account(&job, 2, 7);
    filter_scan_job_set_account(&job, 3, 99);   /* not cached, no store: no Bayes */
    assert_int_equal(filter_scan_start(&job, &loop, scan_done_cb), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(scan_done_calls, 1);

    assert_int_equal(job.result.bayes.n, 3);
    assert_true(filter_scan_rcpt_bayes(&job.result, 0)->prob > 0.9);
    assert_true(filter_scan_rcpt_bayes(&job.result, 1)->prob < 0.1);
    assert_ptr_equal(filter_scan_rcpt_bayes(&job.result, 2),
                     filter_scan_rcpt_bayes(&job.result, 0));
    assert_null(filter_scan_rcpt_bayes(&job.result, 3));
    /*
     * Each recipient scored with its own account's Bayes answer: the rules
     * (with their Bayes bands) plus FILTER_ENGINE_BAYES_WEIGHT x probability.
     */
    {
        double p7 = filter_scan_rcpt_bayes(&job.result, 0)->prob;
        double p8 = filter_scan_rcpt_bayes(&job.result, 1)->prob;
        assert_true(fabs(filter_scan_rcpt_score(&job.result, 0) -
                         (11.0 + FILTER_ENGINE_BAYES_WEIGHT * p7)) < 1e-9);
        assert_true(fabs(filter_scan_rcpt_score(&job.result, 1) -
                         (-2.0 + FILTER_ENGINE_BAYES_WEIGHT * p8)) < 1e-9);
        assert_true(fabs(filter_scan_rcpt_score(&job.result, 2) -
                         (11.0 + FILTER_ENGINE_BAYES_WEIGHT * p7)) < 1e-9);
    }
    assert_true(fabs(filter_scan_rcpt_score(&job.result, 3) - 1.0) < 1e-9);
    /* The header names the probability, the account and the clues. */
    osp_buf_init(&h, 4096);
    filter_scan_bayes_header(&job.result, 0, &h);
    assert_true(strncmp(osp_buf_cstr(&h), "X-Spam-Bayes: prob=", 19) == 0);
    assert_true(strtod(osp_buf_cstr(&h) + 19, NULL) > 0.9);
    assert_non_null(strstr(osp_buf_cstr(&h), "account=7;"));
    assert_non_null(strstr(osp_buf_cstr(&h), "clues="));
    assert_non_null(strstr(osp_buf_cstr(&h), "pills="));
    osp_buf_truncate(&h, 0);
    filter_scan_bayes_header(&job.result, 3, &h);
    assert_int_equal(h.len, 0);
    osp_buf_close(&h);

    filter_scan_job_close(&job);
    filter_body_close(&body);
    filter_scan_free(&scan);
    filter_bayes_free(&fb);
    assert_int_equal(uv_loop_close(&loop), 0);
    unlink(rules);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_hit_miss),
        cmocka_unit_test(test_cache_ttl),
        cmocka_unit_test(test_cache_lru_eviction),
        cmocka_unit_test(test_cache_bounded),
        cmocka_unit_test(test_classify_from_cache),
        cmocka_unit_test(test_two_step_scan_per_account),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
