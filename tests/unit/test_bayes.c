/* Unit tests for osp_bayes: tokenizer, maths, shared prior, training. */
#include "config.h"

#include <errno.h>
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
    osp_bayes_tokens_close(&t);
    /* Bounds: 40 bytes is a word, 41 bytes a "skip" token (by length/10). */
    {
        const char *w40 = "abcdefghijabcdefghijabcdefghijabcdefghij";
        char both[100];
        snprintf(both, sizeof(both), "%s %sk", w40, w40);
        osp_bayes_tokens_init(&t, true);
        osp_bayes_tokenize_text(&t, "", both, strlen(both), 0);
        osp_bayes_tokens_finish(&t);
        assert_true(has_token(&t, w40));
        assert_true(has_token(&t, "skip:a 40"));
        assert_int_equal(t.n, 2);
        osp_bayes_tokens_close(&t);
    }
    /* Non-ASCII words are bounded in bytes too: 20 Cyrillic letters are 40. */
    {
        const char *cy = "ЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖ ЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖ";
        osp_bayes_tokens_init(&t, true);
        osp_bayes_tokenize_text(&t, "", cy, strlen(cy), 0);
    }
    osp_bayes_tokens_finish(&t);
    assert_true(has_token(&t, "жжжжжжжжжжжжжжжжжжжж"));
    assert_true(has_token(&t, "skip:u 40"));
    assert_int_equal(t.n, 2);
    osp_bayes_tokens_close(&t);
    osp_bayes_tokens_init(&t, true);
    osp_bayes_tokenize_text(&t, "", text, strlen(text), 0);
    osp_bayes_tokens_finish(&t);
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
    /* Sparse bigrams skip one word. */
    osp_bayes_tokens_init(&t, true);
    osp_bayes_tokenize_text(&t, "", text, strlen(text), OSP_BAYES_SPARSE);
    osp_bayes_tokens_finish(&t);
    assert_true(has_token(&t, "b:cheap * online"));
    assert_false(has_token(&t, "b:cheap meds"));
    assert_int_equal(t.n, 4);
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
        "Claim at http://www.claim.prize.example.org/now/Unsubscribe.php today\r\n"
        "or hxxp://192.0.2.9/x\r\n"
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
    assert_true(has_token(&t, "urlp:unsubscribe"));
    assert_true(has_token(&t, "urlp:php"));
    assert_true(has_token(&t, "urlf:hxxp"));
    assert_true(has_token(&t, "urlf:ip"));
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
    /* Golden values: the stored token hashes depend on these. */
    assert_true(osp_bayes_hash("viagra", 6, 1) == UINT64_C(0x096c03eed85bf4b5));
    assert_true(osp_bayes_hash("0123456789abcdefXYZ", 19, UINT64_C(0x6f73707265790001)) ==
                UINT64_C(0x45dc5bc08ac44e69));
    assert_true(osp_bayes_hash("", 0, 0) == 1);     /* 0 is reserved for totals */
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

/* osp_bayes_score over hand-made counts: f1 = (0.5 + 1*1)/(1 + 1) = 0.75,
 * f2 = (0.5 + 4*1)/(1 + 4) = 0.9; Fisher with Q(x, 4) = e^-m (1 + m):
 * S = 1 - Q(-2 ln(0.25 * 0.1), 4), H = 1 - Q(-2 ln(0.75 * 0.9), 4),
 * (S - H + 1) / 2 = 0.91154088031056... (computed by hand / bc). */
static void test_score_pure(void **state)
{
    osp_bayes_params_t p;
    uint64_t h[3] = { 11, 22, 33 };
    osp_bayes_count_t c[3] = {
        { .gspam = 1, .gham = 0 }, { .gspam = 4, .gham = 0 }, { .gspam = 2, .gham = 2 },
    };
    osp_bayes_count_t tot = { .spam = 2, .ham = 2, .gspam = 4, .gham = 4 };
    osp_bayes_result_t r;

    (void)state;
    osp_bayes_params_default(&p);
    osp_bayes_score(&p, h, 3, c, &tot, false, &r);
    assert_int_equal(r.n_clues, 2);             /* the 2/2 token is 0.5: dropped */
    assert_true(r.clues[0].hash == 22);         /* most significant first */
    assert_true(fabs(r.clues[0].prob - 0.9) < 1e-12);
    assert_true(fabs(r.clues[1].prob - 0.75) < 1e-12);
    assert_true(fabs(r.prob - 0.9115408803105682) < 1e-12);
    osp_bayes_result_close(&r);
    /* The user's own data (0 spam, 2 ham of 2/2 messages) pulls token 11 to
     * (3 * 0.75 + 2 * 0) / (3 + 2) = 0.45, now insignificant; one clue of
     * 0.9 left: S = 1 - 0.1, H = 1 - 0.9, prob = 0.9 exactly. */
    c[0].ham = 2;
    osp_bayes_score(&p, h, 3, c, &tot, true, &r);
    assert_int_equal(r.n_clues, 1);
    assert_true(fabs(r.prob - 0.9) < 1e-12);
    osp_bayes_result_close(&r);
    /* min_count 2 ignores the hapax (1/0): one clue of 0.9 left. */
    c[0].ham = 0;
    p.min_count = 2;
    osp_bayes_score(&p, h, 3, c, &tot, false, &r);
    assert_int_equal(r.n_clues, 1);
    assert_true(fabs(r.prob - 0.9) < 1e-12);
    osp_bayes_result_close(&r);
    /* No tokens: 0.5 and no clues. */
    osp_bayes_score(&p, h, 0, c, &tot, true, &r);
    assert_true(r.prob == 0.5 && r.n_clues == 0 && r.clues == NULL);
    osp_bayes_result_close(&r);
}

static int failing_lookup_cb(void *ctx, uint32_t account, const uint64_t *hashes, size_t n,
                             osp_bayes_count_t *counts_r, osp_bayes_count_t *totals_r,
                             const char **error_r)
{
    (void)ctx; (void)account; (void)hashes; (void)n; (void)counts_r; (void)totals_r;
    *error_r = "database unavailable";
    return -1;
}

/* The store interface gives the same verdict as the direct call, and a
 * failing store is a temporary failure, not a verdict. */
static void test_store_interface(void **state)
{
    osp_bayes_t *b = osp_bayes_create(NULL);
    osp_bayes_store_t st, bad;
    osp_bayes_tokens_t sp, hm, q;
    osp_bayes_result_t r1, r2;
    enum osp_bayes_train_result tr;
    uint8_t key[OSP_BAYES_KEY_LEN];
    const char *err = NULL;
    uint32_t s, h;

    (void)state;
    osp_bayes_store_memory(b, &st);
    tokens_of(&sp, "cheap pills online now");
    tokens_of(&hm, "meeting notes attached now");
    tokens_of(&q, "cheap pills meeting");
    osp_bayes_message_key(&sp, key);
    assert_int_equal(st.train(st.ctx, 3, key, true, false, sp.hash, sp.n, 1, &tr, &err), 0);
    assert_int_equal(tr, OSP_BAYES_TRAINED);
    assert_int_equal(st.train(st.ctx, 3, key, true, false, sp.hash, sp.n, 1, &tr, &err), 0);
    assert_int_equal(tr, OSP_BAYES_UNCHANGED);
    osp_bayes_message_key(&hm, key);
    assert_int_equal(st.train(st.ctx, 4, key, false, false, hm.hash, hm.n, 1, &tr, &err), 0);
    assert_int_equal(tr, OSP_BAYES_TRAINED);
    osp_bayes_totals(b, 0, &s, &h);
    assert_int_equal(s, 1);
    assert_int_equal(h, 1);
    assert_int_equal(osp_bayes_classify_store(&st, osp_bayes_params(b), 3, &q, &r1, &err), 0);
    osp_bayes_classify(b, 3, &q, &r2);
    assert_true(r1.prob == r2.prob);
    assert_int_equal(r1.n_clues, r2.n_clues);
    assert_true(r1.prob > 0.5);
    osp_bayes_result_close(&r1);
    osp_bayes_result_close(&r2);
    /* Forget through the store. */
    assert_int_equal(st.train(st.ctx, 4, key, false, true, hm.hash, hm.n, 1, &tr, &err), 0);
    assert_int_equal(tr, OSP_BAYES_UNTRAINED);
    osp_bayes_totals(b, 4, &s, &h);
    assert_int_equal(s + h, 0);
    bad = st;
    bad.lookup = failing_lookup_cb;
    assert_int_equal(osp_bayes_classify_store(&bad, osp_bayes_params(b), 3, &q, &r1, &err), -1);
    assert_string_equal(err, "database unavailable");
    assert_true(r1.prob == 0.5 && r1.n_clues == 0);
    osp_bayes_result_close(&r1);
    osp_bayes_tokens_close(&sp);
    osp_bayes_tokens_close(&hm);
    osp_bayes_tokens_close(&q);
    osp_bayes_free(&b);
}

/* The message key depends on the token set only, not on word order. */
static void test_message_key(void **state)
{
    osp_bayes_tokens_t a, b, c;
    uint8_t ka[OSP_BAYES_KEY_LEN], kb[OSP_BAYES_KEY_LEN], kc[OSP_BAYES_KEY_LEN];

    (void)state;
    tokens_of(&a, "one two three three");
    tokens_of(&b, "three two one");
    tokens_of(&c, "three two one four");
    osp_bayes_message_key(&a, ka);
    osp_bayes_message_key(&b, kb);
    osp_bayes_message_key(&c, kc);
    assert_memory_equal(ka, kb, sizeof(ka));
    assert_memory_not_equal(ka, kc, sizeof(ka));
    assert_memory_not_equal(ka, ka + 8, 8);     /* four different 64-bit words */
    osp_bayes_tokens_close(&a);
    osp_bayes_tokens_close(&b);
    osp_bayes_tokens_close(&c);
}

/*
 * The same message sent twice (other Received lines: queue id, date,
 * relay) has one key, though the Received words are still tokens for the
 * classifier; another body has another key.
 */
static void test_message_key_ignores_trace(void **state)
{
    static const char *const msgs[] = {
        "Received: from a.example (a.example [192.0.2.1]) by mx.example.com (Postfix)\r\n"
        "\twith ESMTP id 4711ABC for <u@example.com>; Fri, 27 Nov 2026 05:23:49 +0000\r\n"
        "From: s@example.org\r\nSubject: Cheap pills\r\n\r\nBuy cheap pills today\r\n",
        "Received: from b.example (b.example [198.51.100.9]) by mx2.example.com (Postfix)\r\n"
        "\twith ESMTP id 9F00DEE for <u@example.com>; Sat, 28 Nov 2026 11:02:03 +0000\r\n"
        "Received: from relay.example by b.example; Sat, 28 Nov 2026 11:02:01 +0000\r\n"
        "From: s@example.org\r\nSubject: Cheap pills\r\n\r\nBuy cheap pills today\r\n",
        "Received: from a.example (a.example [192.0.2.1]) by mx.example.com (Postfix)\r\n"
        "\twith ESMTP id 4711ABC for <u@example.com>; Fri, 27 Nov 2026 05:23:49 +0000\r\n"
        "From: s@example.org\r\nSubject: Cheap pills\r\n\r\nBuy cheap pills tomorrow\r\n",
    };
    osp_bayes_tokens_t t[3];
    uint8_t k[3][OSP_BAYES_KEY_LEN];
    size_t i;

    (void)state;
    for (i = 0; i < 3; i++) {
        osp_bayes_tokens_init(&t[i], false);
        osp_bayes_tokenize_message(msgs[i], strlen(msgs[i]), &t[i]);
        osp_bayes_message_key(&t[i], k[i]);
    }
    assert_true(t[0].ntrace > 5);                         /* Received words are tokens */
    assert_true(t[0].n != t[1].n || memcmp(t[0].hash, t[1].hash, t[0].n * 8) != 0);
    assert_memory_equal(k[0], k[1], OSP_BAYES_KEY_LEN);  /* ... but not part of the key */
    assert_memory_not_equal(k[0], k[2], OSP_BAYES_KEY_LEN);
    for (i = 0; i < 3; i++)
        osp_bayes_tokens_close(&t[i]);
}

/* A message's tokens are the filter's; the database training parameters
 * are the key as a bytea literal and the hashes as a bigint[] literal; t
 * and the array are reset on reuse. */
static void test_train_message(void **state)
{
    static const char msg[] = "From: a@example.com\r\nSubject: Cheap pills now\r\n"
                              "Content-Type: text/plain\r\n\r\nBuy cheap pills today at "
                              "http://pills.example/buy\r\n";
    osp_bayes_tokens_t want, t;
    osp_mime_message_t *m;
    uint8_t key[OSP_BAYES_KEY_LEN];
    char hex[OSP_BAYES_KEY_HEX_SIZE], expect[OSP_BAYES_KEY_HEX_SIZE];
    osp_buf_t arr;
    const char *p;
    size_t i, round;

    (void)state;
    osp_bayes_tokens_init(&want, false);
    m = osp_mime_parse(msg, sizeof(msg) - 1, NULL);
    osp_bayes_tokenize(m, 0, &want);
    osp_mime_message_free(&m);
    assert_true(want.n > 5);
    osp_bayes_message_key(&want, key);
    expect[0] = '\\';
    expect[1] = 'x';
    for (i = 0; i < OSP_BAYES_KEY_LEN; i++)
        snprintf(expect + 2 + 2 * i, 3, "%02x", key[i]);
    osp_bayes_tokens_init(&t, false);
    osp_buf_init(&arr, OSP_BUF_UNLIMITED);
    for (round = 0; round < 2; round++) {
        osp_bayes_tokenize_message(msg, sizeof(msg) - 1, &t);
        osp_bayes_train_params(&t, hex, &arr);
        assert_int_equal(t.n, want.n);
        assert_memory_equal(t.hash, want.hash, want.n * sizeof(uint64_t));
        assert_string_equal(hex, expect);
        p = osp_buf_cstr(&arr);
        assert_int_equal(*p, '{');
        for (i = 0; i < want.n; i++) {
            char *end;
            long long v = strtoll(p + 1, &end, 10);

            assert_true((uint64_t)(int64_t)v == want.hash[i]);
            assert_int_equal(*end, i + 1 < want.n ? ',' : '}');
            p = end;
        }
        assert_string_equal(p, "}");
    }
    osp_bayes_tokenize_message(NULL, 0, &t);     /* empty message */
    osp_bayes_train_params(&t, hex, &arr);
    assert_true(t.n < want.n);
    assert_int_equal(osp_buf_cstr(&arr)[0], '{');
    osp_buf_close(&arr);
    osp_bayes_tokens_close(&t);
    osp_bayes_tokens_close(&want);
}

static void test_autolearn(void **state)
{
    osp_bayes_params_t p;

    (void)state;
    osp_bayes_params_default(&p);
    assert_int_equal(osp_bayes_autolearn(&p, 15.0, 0.5), OSP_BAYES_LEARN_SPAM);
    assert_int_equal(osp_bayes_autolearn(&p, 12.0, 0.0), OSP_BAYES_LEARN_SPAM);
    assert_int_equal(osp_bayes_autolearn(&p, 15.0, 0.9995), OSP_BAYES_LEARN_NONE);
    assert_int_equal(osp_bayes_autolearn(&p, 5.0, 0.5), OSP_BAYES_LEARN_NONE);
    assert_int_equal(osp_bayes_autolearn(&p, -3.0, 0.7), OSP_BAYES_LEARN_HAM);
    assert_int_equal(osp_bayes_autolearn(&p, -3.0, 0.0005), OSP_BAYES_LEARN_NONE);
    assert_int_equal(osp_bayes_autolearn(&p, 0.0, 0.0), OSP_BAYES_LEARN_NONE);
}

/* Filled as a cache from store rows, the table classifies like a trained one. */
static void test_put_cache(void **state)
{
    osp_bayes_t *trained = osp_bayes_create(NULL), *cache = osp_bayes_create(NULL);
    osp_bayes_tokens_t sp, hm, q;
    osp_bayes_result_t r1, r2;
    uint32_t s, h;
    size_t i;

    (void)state;
    tokens_of(&sp, "cheap pills online");
    tokens_of(&hm, "project meeting online");
    tokens_of(&q, "cheap meeting online");
    osp_bayes_train(trained, 0, &sp, true, 1);
    osp_bayes_train(trained, 0, &hm, false, 1);
    for (i = 0; i < sp.n; i++) {
        osp_bayes_counts(trained, 0, sp.hash[i], &s, &h);
        osp_bayes_put(cache, 0, sp.hash[i], s, h, 1);
    }
    for (i = 0; i < hm.n; i++) {
        osp_bayes_counts(trained, 0, hm.hash[i], &s, &h);
        osp_bayes_put(cache, 0, hm.hash[i], s, h, 1);
    }
    osp_bayes_put_totals(cache, 0, 1, 1);
    osp_bayes_classify(trained, 0, &q, &r1);
    osp_bayes_classify(cache, 0, &q, &r2);
    assert_true(r1.prob == r2.prob);
    assert_int_equal(osp_bayes_size(cache), osp_bayes_size(trained));
    osp_bayes_result_close(&r1);
    osp_bayes_result_close(&r2);
    /* 0/0 removes a row. */
    osp_bayes_put(cache, 0, sp.hash[0], 0, 0, 1);
    assert_int_equal(osp_bayes_size(cache), osp_bayes_size(trained) - 1);
    osp_bayes_tokens_close(&sp);
    osp_bayes_tokens_close(&hm);
    osp_bayes_tokens_close(&q);
    osp_bayes_free(&trained);
    osp_bayes_free(&cache);
}

/* Save and load keep counts, totals, days and training state. */
static void test_save_load(void **state)
{
    char path[] = "/tmp/test_bayes_XXXXXX";
    int fd = mkstemp(path);
    osp_bayes_t *b = osp_bayes_create(NULL), *c;
    osp_bayes_tokens_t t, u;
    const char *err = NULL;
    uint32_t s, h;
    FILE *f;

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    tokens_of(&t, "saved words here");
    tokens_of(&u, "other words there");
    osp_bayes_train(b, 9, &t, true, 10);
    osp_bayes_train(b, 9, &u, false, 20);
    assert_int_equal(osp_bayes_save(b, path, &err), 0);
    c = osp_bayes_load(path, NULL, &err);
    assert_non_null(c);
    assert_int_equal(osp_bayes_size(c), osp_bayes_size(b));
    osp_bayes_counts(c, 9, t.hash[0], &s, &h);
    assert_int_equal(s, 1);
    osp_bayes_totals(c, 0, &s, &h);
    assert_int_equal(s, 1);
    assert_int_equal(h, 1);
    assert_int_equal(osp_bayes_train(c, 9, &t, true, 30), OSP_BAYES_UNCHANGED);
    assert_int_equal(osp_bayes_train(c, 9, &u, true, 30), OSP_BAYES_RETRAINED);
    /* Days survived the file: "saved" and "here" (count 1, day 10) expire
     * before day 15 for account 9 and account 0; "words" (count 2) and the
     * tokens retrained on day 30 stay. */
    assert_int_equal(osp_bayes_expire(c, 15, 1), 4);
    osp_bayes_free(&c);
    /* A truncated file and a missing file are errors, not empty tables. */
    f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 20), 0);
    fclose(f);
    assert_null(osp_bayes_load(path, NULL, &err));
    assert_int_equal(errno, EINVAL);
    /* A row count larger than the file is refused before allocating. */
    f = fopen(path, "wb");
    assert_non_null(f);
    {
        uint64_t huge = UINT64_C(1) << 40;
        assert_int_equal(fwrite("OSPBAY01", 8, 1, f), 1);
        assert_int_equal(fwrite(&huge, sizeof(huge), 1, f), 1);
    }
    fclose(f);
    assert_null(osp_bayes_load(path, NULL, &err));
    assert_int_equal(errno, EINVAL);
    unlink(path);
    assert_null(osp_bayes_load(path, NULL, &err));
    assert_int_equal(errno, ENOENT);
    osp_bayes_tokens_close(&t);
    osp_bayes_tokens_close(&u);
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
        cmocka_unit_test(test_score_pure),
        cmocka_unit_test(test_store_interface),
        cmocka_unit_test(test_message_key),
        cmocka_unit_test(test_message_key_ignores_trace),
        cmocka_unit_test(test_train_message),
        cmocka_unit_test(test_autolearn),
        cmocka_unit_test(test_put_cache),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
