/* Unit tests for osp_bayes: tokenizer, maths, shared prior, training. */
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

#include "osp_bayes.h"
#include "osp_mime.h"

static bool has_token(const osp_bayes_tokens_t *t, const char *s)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        if (strcmp(t->text[i], s) == 0)
            return true;
    return false;
}

static void test_words(void **state)
{
    osp_bayes_tokens_t t;
    const char *text = "Hello WORLD, hello again! ÉCOLE Straße ΑΒΓΔ МОСКВА to a "
                       "--dash-- it's $100 "
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    (void)state;
    osp_bayes_tokens_init(&t, true);
    osp_bayes_tokenize_text(&t, "", text, strlen(text), 0);
    osp_bayes_tokens_finish(&t);
    assert_true(has_token(&t, "hello"));
    assert_true(has_token(&t, "world"));
    assert_true(has_token(&t, "again"));
    assert_true(has_token(&t, "école"));
    assert_true(has_token(&t, "straße"));
    assert_true(has_token(&t, "αβγδ"));
    assert_true(has_token(&t, "москва"));
    assert_true(has_token(&t, "dash"));
    assert_true(has_token(&t, "it's"));
    assert_true(has_token(&t, "$100"));
    assert_true(has_token(&t, "skip:a 50"));
    assert_false(has_token(&t, "to"));          /* shorter than 3 bytes */
    assert_false(has_token(&t, "Hello"));       /* folded */
    /* de-duplicated: "hello" twice is one token */
    {
        size_t i, n = 0;
        for (i = 0; i < t.n; i++)
            n += strcmp(t.text[i], "hello") == 0;
        assert_int_equal(n, 1);
    }
    osp_bayes_tokens_close(&t);
}

static void test_bigrams_and_prefix(void **state)
{
    osp_bayes_tokens_t t;
    const char *text = "cheap meds online";

    (void)state;
    osp_bayes_tokens_init(&t, true);
    osp_bayes_tokenize_text(&t, "subject:", text, strlen(text), OSP_BAYES_BIGRAMS);
    osp_bayes_tokens_finish(&t);
    assert_true(has_token(&t, "subject:cheap"));
    assert_true(has_token(&t, "subject:b:cheap meds"));
    assert_true(has_token(&t, "subject:b:meds online"));
    assert_int_equal(t.n, 5);
    osp_bayes_tokens_close(&t);
}

static void test_message_tokens(void **state)
{
    static const char msg[] =
        "From: \"Prize Dept\" <Winner@Prize.Example.org>\r\n"
        "To: someone@example.com\r\n"
        "Subject: You WON\r\n"
        "Received: from mx.bad.example (mx.bad.example [192.0.2.7]) by mail.example.com\r\n"
        "X-Mailer: BulkMailer 3.1\r\n"
        "Message-ID: <abc@bulk.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "Claim at http://www.claim.prize.example.org/now today\r\n"
        "--b\r\n"
        "Content-Type: application/octet-stream; name=\"doc.pdf.exe\"\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n"
        "--b--\r\n";
    osp_mime_message_t *m = osp_mime_parse(msg, sizeof(msg) - 1, NULL);
    osp_bayes_tokens_t t;

    (void)state;
    assert_non_null(m);
    osp_bayes_tokens_init(&t, true);
    osp_bayes_tokenize(m, 0, &t);
    assert_true(has_token(&t, "from:winner@prize.example.org"));
    assert_true(has_token(&t, "from:@prize.example.org"));
    assert_true(has_token(&t, "fromname:prize"));
    assert_true(has_token(&t, "to:@example.com"));
    assert_true(has_token(&t, "subject:won"));
    assert_true(has_token(&t, "rcvd:192.0.2.7"));
    assert_true(has_token(&t, "rcvd:mx.bad.example"));
    assert_true(has_token(&t, "xm:bulkmailer 3.1"));
    assert_true(has_token(&t, "mid:bulk.example.net"));
    assert_true(has_token(&t, "url:www.claim.prize.example.org"));
    assert_true(has_token(&t, "url:.prize.example.org"));
    assert_true(has_token(&t, "url:.example.org"));
    assert_true(has_token(&t, "atte:.exe"));
    assert_true(has_token(&t, "hdr:x-mailer"));
    assert_true(has_token(&t, "claim"));
    /* sorted and unique */
    {
        size_t i;
        for (i = 1; i < t.n; i++)
            assert_true(t.hash[i - 1] < t.hash[i]);
    }
    /* hashes do not depend on keeping the text */
    {
        osp_bayes_tokens_t t2;
        osp_bayes_tokens_init(&t2, false);
        osp_bayes_tokenize(m, 0, &t2);
        assert_int_equal(t2.n, t.n);
        assert_memory_equal(t2.hash, t.hash, t.n * sizeof(uint64_t));
        osp_bayes_tokens_close(&t2);
    }
    osp_bayes_tokens_close(&t);
    osp_mime_message_free(&m);
}

static void test_hash_stable(void **state)
{
    (void)state;
    /* Stored in the database: the value must never change. */
    assert_true(osp_bayes_hash("viagra", 6, 1) == osp_bayes_hash("viagra", 6, 1));
    assert_true(osp_bayes_hash("viagra", 6, 1) != osp_bayes_hash("viagrb", 6, 1));
    assert_true(osp_bayes_hash("abcdefgh", 8, 1) != osp_bayes_hash("abcdefgh\0", 9, 1));
    assert_true(osp_bayes_hash("", 0, 7) != 0);
}

static void test_chi2q(void **state)
{
    (void)state;
    /* Q(x2, 2) = exp(-x2/2) */
    assert_true(fabs(osp_bayes_chi2q(2.0, 2) - exp(-1.0)) < 1e-12);
    /* Q(x2, 4) = exp(-m)(1 + m), m = x2/2 */
    assert_true(fabs(osp_bayes_chi2q(6.0, 4) - exp(-3.0) * 4.0) < 1e-12);
    assert_true(osp_bayes_chi2q(0.0, 10) == 1.0);
    assert_true(osp_bayes_chi2q(1e6, 10) < 1e-100);
}

static void tokens_of(osp_bayes_tokens_t *t, const char *words)
{
    osp_bayes_tokens_init(t, false);
    osp_bayes_tokenize_text(t, "", words, strlen(words), 0);
    osp_bayes_tokens_finish(t);
}

/* Hand-computed: one spam and one ham message, classify a message with one
 * spam-only token "alpha" and one unseen token. */
static void test_classify_exact(void **state)
{
    osp_bayes_t *b = osp_bayes_create(NULL);
    osp_bayes_tokens_t spam, ham, q;
    osp_bayes_result_t r;
    double f, s, h;

    (void)state;
    tokens_of(&spam, "alpha");
    tokens_of(&ham, "omega");
    tokens_of(&q, "alpha unseen");
    assert_int_equal(osp_bayes_train(b, 0, &spam, true, 1), OSP_BAYES_TRAINED);
    assert_int_equal(osp_bayes_train(b, 0, &ham, false, 1), OSP_BAYES_TRAINED);
    osp_bayes_classify(b, 0, &q, &r);
    /* ratio = 1, n = 1, s = 1: f = (0.5 + 1) / 2 = 0.75; unseen is 0.5: dropped */
    f = 0.75;
    assert_int_equal(r.n_clues, 1);
    assert_true(fabs(r.clues[0].prob - f) < 1e-12);
    s = 1.0 - osp_bayes_chi2q(-2.0 * log(1.0 - f), 2);
    h = 1.0 - osp_bayes_chi2q(-2.0 * log(f), 2);
    assert_true(fabs(r.prob - (s - h + 1.0) / 2.0) < 1e-12);
    assert_true(r.prob > 0.5);
    osp_bayes_result_close(&r);
    osp_bayes_tokens_close(&spam);
    osp_bayes_tokens_close(&ham);
    osp_bayes_tokens_close(&q);
    osp_bayes_free(&b);
    assert_null(b);
}

/* Votes are shared: a user without data gets the global verdict; a user
 * with strong data of its own overrides it. */
static void test_shared_prior(void **state)
{
    osp_bayes_t *b = osp_bayes_create(NULL);
    osp_bayes_tokens_t news, other, q;
    osp_bayes_result_t r;
    uint32_t s, h;
    int i;

    (void)state;
    tokens_of(&news, "newsletter weekly digest offers");
    tokens_of(&other, "meeting agenda minutes project");
    /* Users 10..29 each call the newsletter spam, once. */
    for (i = 10; i < 30; i++) {
        char extra[96];
        osp_bayes_tokens_t t;
        snprintf(extra, sizeof(extra), "newsletter weekly digest offers u%d", i);
        tokens_of(&t, extra);
        osp_bayes_train(b, (uint32_t)i, &t, true, 1);
        osp_bayes_tokens_close(&t);
        snprintf(extra, sizeof(extra), "meeting agenda minutes project u%d", i);
        tokens_of(&t, extra);
        osp_bayes_train(b, (uint32_t)i, &t, false, 1);
        osp_bayes_tokens_close(&t);
    }
    osp_bayes_totals(b, 0, &s, &h);
    assert_int_equal(s, 20);
    assert_int_equal(h, 20);
    tokens_of(&q, "newsletter weekly digest offers");
    /* A brand-new user (99) is protected by everyone's votes. */
    osp_bayes_classify(b, 99, &q, &r);
    assert_true(r.prob > 0.95);
    osp_bayes_result_close(&r);
    /* User 7 subscribed: it trains the newsletter as ham many times (each a
     * different issue), and its own statistics take over. */
    for (i = 0; i < 30; i++) {
        char txt[64];
        osp_bayes_tokens_t t;
        snprintf(txt, sizeof(txt), "newsletter weekly digest offers issue%d", i);
        tokens_of(&t, txt);
        osp_bayes_train(b, 7, &t, false, 2);
        osp_bayes_tokens_close(&t);
        snprintf(txt, sizeof(txt), "lottery winner claim prize n%d", i);
        tokens_of(&t, txt);
        osp_bayes_train(b, 7, &t, true, 2);
        osp_bayes_tokens_close(&t);
    }
    osp_bayes_classify(b, 7, &q, &r);
    assert_true(r.prob < 0.2);
    osp_bayes_result_close(&r);
    /* ...while the new user still sees it as spam: the global counts now
     * hold 20 spam and 30 ham votes for these words, but user 99 has none,
     * so it follows the global estimate, which is no longer spam-certain. */
    osp_bayes_classify(b, 98, &q, &r);
    assert_true(r.prob > 0.2);
    osp_bayes_result_close(&r);
    osp_bayes_tokens_close(&news);
    osp_bayes_tokens_close(&other);
    osp_bayes_tokens_close(&q);
    osp_bayes_free(&b);
}

static void test_train_once(void **state)
{
    osp_bayes_t *b = osp_bayes_create(NULL);
    osp_bayes_tokens_t t;
    uint32_t s, h, ns, nh;

    (void)state;
    tokens_of(&t, "some message words here");
    assert_int_equal(osp_bayes_train(b, 5, &t, false, 1), OSP_BAYES_TRAINED);
    assert_int_equal(osp_bayes_train(b, 5, &t, false, 1), OSP_BAYES_UNCHANGED);
    osp_bayes_counts(b, 5, t.hash[0], &s, &h);
    assert_int_equal(s, 0);
    assert_int_equal(h, 1);
    osp_bayes_counts(b, 0, t.hash[0], &s, &h);
    assert_int_equal(h, 1);
    /* Moving it to spam corrects both counts, for the user and globally. */
    assert_int_equal(osp_bayes_train(b, 5, &t, true, 1), OSP_BAYES_RETRAINED);
    osp_bayes_counts(b, 5, t.hash[0], &s, &h);
    assert_int_equal(s, 1);
    assert_int_equal(h, 0);
    osp_bayes_totals(b, 0, &ns, &nh);
    assert_int_equal(ns, 1);
    assert_int_equal(nh, 0);
    /* Another account training the same message counts separately. */
    assert_int_equal(osp_bayes_train(b, 6, &t, true, 1), OSP_BAYES_TRAINED);
    osp_bayes_counts(b, 0, t.hash[0], &s, &h);
    assert_int_equal(s, 2);
    /* Untrain removes it everywhere. */
    assert_int_equal(osp_bayes_untrain(b, 5, &t), OSP_BAYES_UNTRAINED);
    assert_int_equal(osp_bayes_untrain(b, 5, &t), OSP_BAYES_NOT_TRAINED);
    osp_bayes_counts(b, 5, t.hash[0], &s, &h);
    assert_int_equal(s + h, 0);
    osp_bayes_counts(b, 0, t.hash[0], &s, &h);
    assert_int_equal(s, 1);
    osp_bayes_tokens_close(&t);
    osp_bayes_free(&b);
}

static void test_expire_and_growth(void **state)
{
    osp_bayes_t *b = osp_bayes_create(NULL);
    char txt[64];
    int i;
    size_t before;

    (void)state;
    for (i = 0; i < 5000; i++) {
        osp_bayes_tokens_t t;
        snprintf(txt, sizeof(txt), "common word%d", i);
        tokens_of(&t, txt);
        osp_bayes_train(b, 0, &t, i % 2, (uint32_t)(i < 2500 ? 1 : 100));
        osp_bayes_tokens_close(&t);
    }
    before = osp_bayes_size(b);
    assert_int_equal(before, 5000 + 1 + 1);    /* words, "common", totals */
    /* Old hapaxes (days < 50, count <= 1) go; "common" stays. */
    assert_int_equal(osp_bayes_expire(b, 50, 1), 2500);
    assert_int_equal(osp_bayes_size(b), before - 2500);
    {
        osp_bayes_tokens_t t;
        uint32_t s, h;
        tokens_of(&t, "common");
        osp_bayes_counts(b, 0, t.hash[0], &s, &h);
        assert_int_equal(s + h, 5000);
        osp_bayes_tokens_close(&t);
        tokens_of(&t, "word4999");
        osp_bayes_counts(b, 0, t.hash[0], &s, &h);
        assert_int_equal(s + h, 1);
        osp_bayes_tokens_close(&t);
    }
    osp_bayes_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_bigrams_and_prefix),
        cmocka_unit_test(test_message_tokens),
        cmocka_unit_test(test_hash_stable),
        cmocka_unit_test(test_chi2q),
        cmocka_unit_test(test_classify_exact),
        cmocka_unit_test(test_shared_prior),
        cmocka_unit_test(test_train_once),
        cmocka_unit_test(test_expire_and_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
