/*
 * Unit tests for contentfilter/filter_proto: command lines (every command,
 * parameters, bad syntax, limits), the line assembler and the DATA decoder
 * (dot-unstuffing, bare LF, end marker), every input replayed split at
 * every byte boundary.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "osp_buf.h"
#include "osp_mem.h"
#include "../../contentfilter/filter_proto.h"

/* ---- commands ------------------------------------------------------------ */

struct cmd_case {
    const char *line;
    int rc;                       /* 0 or -1 */
    enum filter_cmd_kind kind;
    int code;                     /* error reply code when rc < 0 */
    const char *ext;
    const char *addr;             /* expected address, NULL: don't check */
    const char *arg;
};

static const struct cmd_case cmd_cases[] = {
    { "EHLO mx.example", 0, FILTER_CMD_EHLO, 0, NULL, NULL, "mx.example" },
    { "ehlo  mx.example  ", 0, FILTER_CMD_EHLO, 0, NULL, NULL, "mx.example" },
    { "HELO mx", 0, FILTER_CMD_HELO, 0, NULL, NULL, "mx" },
    { "LHLO mx", 0, FILTER_CMD_LHLO, 0, NULL, NULL, "mx" },
    { "EHLO", -1, FILTER_CMD_EHLO, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org>", 0, FILTER_CMD_MAIL, 0, NULL, "a@example.org", NULL },
    { "mail from:<>", 0, FILTER_CMD_MAIL, 0, NULL, "", NULL },
    { "MAIL FROM: <a@example.org>", 0, FILTER_CMD_MAIL, 0, NULL, "a@example.org", NULL },
    { "MAIL FROM:a@example.org", 0, FILTER_CMD_MAIL, 0, NULL, "a@example.org", NULL },
    { "MAIL FROM:<\"a b>c\"@example.org> SIZE=5", 0, FILTER_CMD_MAIL, 0, NULL,
      "\"a b>c\"@example.org", NULL },
    { "MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bd",
      0, FILTER_CMD_MAIL, 0, NULL, "a@example.org", NULL },
    { "MAIL FROM:<a@example.org> BODY=BINARYMIME", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> SIZE=", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> SIZE=12x", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> SIZE=999999999999999999999", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> RET=ALL", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> ENVID=a=b", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> ENVID=a+zz", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> SMTPUTF8=yes", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org> AUTH=<>", -1, FILTER_CMD_MAIL, 555, "5.5.4", NULL, NULL },
    { "MAIL TO:<a@example.org>", -1, FILTER_CMD_MAIL, 501, "5.5.4", NULL, NULL },
    { "MAIL FROM:<a@example.org", -1, FILTER_CMD_MAIL, 501, "5.1.7", NULL, NULL },
    { "MAIL FROM:<a@example.org>x", -1, FILTER_CMD_MAIL, 501, "5.1.7", NULL, NULL },
    { "MAIL FROM:", -1, FILTER_CMD_MAIL, 501, "5.1.7", NULL, NULL },
    { "RCPT TO:<b@example.com>", 0, FILTER_CMD_RCPT, 0, NULL, "b@example.com", NULL },
    { "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com",
      0, FILTER_CMD_RCPT, 0, NULL, "b@example.com", NULL },
    { "RCPT TO:<b@example.com> NOTIFY=NEVER", 0, FILTER_CMD_RCPT, 0, NULL, "b@example.com", NULL },
    { "RCPT TO:<b@example.com> NOTIFY=NEVER,DELAY", -1, FILTER_CMD_RCPT, 501, "5.5.4", NULL, NULL },
    { "RCPT TO:<b@example.com> NOTIFY=SOMETIMES", -1, FILTER_CMD_RCPT, 501, "5.5.4", NULL, NULL },
    { "RCPT TO:<b@example.com> NOTIFY=SUCCESS,", -1, FILTER_CMD_RCPT, 501, "5.5.4", NULL, NULL },
    { "RCPT TO:<b@example.com> ORCPT=rfc822", -1, FILTER_CMD_RCPT, 501, "5.5.4", NULL, NULL },
    { "RCPT TO:<b@example.com> ORCPT=;x", -1, FILTER_CMD_RCPT, 501, "5.5.4", NULL, NULL },
    { "RCPT TO:<b@example.com> FOO=1", -1, FILTER_CMD_RCPT, 555, "5.5.4", NULL, NULL },
    { "RCPT TO:<>", -1, FILTER_CMD_RCPT, 501, "5.1.3", NULL, NULL },
    { "RCPT FROM:<b@example.com>", -1, FILTER_CMD_RCPT, 501, "5.5.4", NULL, NULL },
    { "RCPT TO:<postmaster>", 0, FILTER_CMD_RCPT, 0, NULL, "postmaster", NULL },
    { "DATA", 0, FILTER_CMD_DATA, 0, NULL, NULL, NULL },
    { "DATA now", -1, FILTER_CMD_DATA, 501, "5.5.4", NULL, NULL },
    { "RSET", 0, FILTER_CMD_RSET, 0, NULL, NULL, NULL },
    { "NOOP", 0, FILTER_CMD_NOOP, 0, NULL, NULL, NULL },
    { "NOOP anything", 0, FILTER_CMD_NOOP, 0, NULL, NULL, "anything" },
    { "QUIT", 0, FILTER_CMD_QUIT, 0, NULL, NULL, NULL },
    { "VRFY someone", 0, FILTER_CMD_VRFY, 0, NULL, NULL, "someone" },
    { "VRFY", -1, FILTER_CMD_VRFY, 501, "5.5.4", NULL, NULL },
    { "HELP", 0, FILTER_CMD_HELP, 0, NULL, NULL, "" },
    { "XFORWARD NAME=mx.example ADDR=192.0.2.1 PORT=25 PROTO=ESMTP HELO=mx IDENT=4F2D1 SOURCE=REMOTE",
      0, FILTER_CMD_XFORWARD, 0, NULL, NULL, NULL },
    { "XFORWARD NAME=[UNAVAILABLE]", 0, FILTER_CMD_XFORWARD, 0, NULL, NULL, NULL },
    { "XFORWARD", -1, FILTER_CMD_XFORWARD, 501, "5.5.4", NULL, NULL },
    { "XFORWARD FOO=bar", -1, FILTER_CMD_XFORWARD, 501, "5.5.4", NULL, NULL },
    { "XFORWARD NAME", -1, FILTER_CMD_XFORWARD, 501, "5.5.4", NULL, NULL },
    { "XFORWARD NAME=a NAME=b", -1, FILTER_CMD_XFORWARD, 501, "5.5.4", NULL, NULL },
    { "STARTTLS", 0, FILTER_CMD_UNKNOWN, 0, NULL, NULL, NULL },
    { "BDAT 10 LAST", 0, FILTER_CMD_UNKNOWN, 0, NULL, NULL, NULL },
    { "MAILX FROM:<a@b>", 0, FILTER_CMD_UNKNOWN, 0, NULL, NULL, NULL },
    { "", 0, FILTER_CMD_UNKNOWN, 0, NULL, NULL, NULL },
    { "NOOP \x01", -1, FILTER_CMD_UNKNOWN, 500, "5.5.2", NULL, NULL },
};

static void test_cmd_table(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cmd_cases) / sizeof(cmd_cases[0]); i++) {
        const struct cmd_case *c = &cmd_cases[i];
        char *line = osp_strdup(c->line);
        filter_cmd_t cmd;
        filter_reply_t err = { 0, NULL, NULL };
        int rc = filter_cmd_parse(line, strlen(line), &cmd, &err);

        if (rc != c->rc)
            fail_msg("\"%s\": rc %d, want %d (%s)", c->line, rc, c->rc, err.text ? err.text : "");
        if (rc == 0 && cmd.kind != c->kind)
            fail_msg("\"%s\": kind %s, want %s", c->line, filter_cmd_name(cmd.kind),
                     filter_cmd_name(c->kind));
        if (rc < 0) {
            assert_int_equal(err.code, c->code);
            assert_string_equal(err.ext, c->ext);
            assert_non_null(err.text);
        }
        if (rc == 0 && c->addr)
            assert_string_equal(cmd.addr, c->addr);
        if (rc == 0 && c->arg)
            assert_string_equal(cmd.arg, c->arg);
        free(line);
    }
}

static void test_cmd_fields(void **state)
{
    char l1[] = "MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bd";
    char l2[] = "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com";
    char l3[] = "XFORWARD NAME=mx.example ADDR=192.0.2.1 IDENT=4F2D1";
    char l4[] = "NUL\0HERE";
    filter_cmd_t cmd;
    filter_reply_t err;

    (void)state;
    assert_int_equal(filter_cmd_parse(l1, strlen(l1), &cmd, &err), 0);
    assert_true(cmd.size_set);
    assert_int_equal(cmd.size, 1000);
    assert_int_equal(cmd.body, FILTER_BODY_8BITMIME);
    assert_true(cmd.smtputf8);
    assert_int_equal(cmd.ret, FILTER_RET_HDRS);
    assert_string_equal(cmd.envid, "abc+2Bd");
    assert_int_equal(filter_cmd_parse(l2, strlen(l2), &cmd, &err), 0);
    assert_int_equal(cmd.notify, FILTER_NOTIFY_SUCCESS | FILTER_NOTIFY_FAILURE);
    assert_string_equal(cmd.orcpt, "rfc822;b+40example.com");
    assert_int_equal(filter_cmd_parse(l3, strlen(l3), &cmd, &err), 0);
    assert_string_equal(cmd.xattr[FILTER_XA_NAME], "mx.example");
    assert_string_equal(cmd.xattr[FILTER_XA_ADDR], "192.0.2.1");
    assert_string_equal(cmd.xattr[FILTER_XA_IDENT], "4F2D1");
    assert_null(cmd.xattr[FILTER_XA_HELO]);
    assert_int_equal(filter_cmd_parse(l4, sizeof(l4) - 1, &cmd, &err), -1);
    assert_int_equal(err.code, 500);
}

static void test_xtext(void **state)
{
    osp_buf_t b;

    (void)state;
    assert_true(filter_xtext_valid("abc+2B", 100));
    assert_false(filter_xtext_valid("abc+2b", 100));
    assert_false(filter_xtext_valid("a b", 100));
    assert_false(filter_xtext_valid("abcd", 3));
    osp_buf_init(&b, 100);
    assert_int_equal(filter_xtext_encode(&b, "a+b=c d"), 0);
    assert_string_equal(osp_buf_cstr(&b), "a+2Bb+3Dc+20d");
    osp_buf_close(&b);
}

/* ---- line assembler, split everywhere ---------------------------------- */

static const char line_script[] =
    "EHLO mx.example\r\n"
    "MAIL FROM:<a@example.org> SIZE=10\n"
    "\r\n"
    "RCPT TO:<b@example.com> NOTIFY=SUCCESS\r\n"
    "QUIT\r\n";
static const char *const line_want[] = {
    "EHLO mx.example", "MAIL FROM:<a@example.org> SIZE=10", "",
    "RCPT TO:<b@example.com> NOTIFY=SUCCESS", "QUIT",
};

/* Feed [p, p+len) and append each complete line to got (joined by '|'). */
static void feed_lines(filter_line_t *lb, const char *p, size_t len, osp_buf_t *got)
{
    while (len > 0) {
        bool complete;
        size_t used = filter_line_feed(lb, p, len, &complete);
        assert_true(used > 0 && used <= len);
        p += used;
        len -= used;
        if (complete) {
            osp_buf_append_str(got, lb->overflow ? "<OVERFLOW>" : osp_buf_cstr(&lb->buf));
            osp_buf_append_char(got, '|');
            filter_line_reset(lb);
        }
    }
}

static void test_lines_split(void **state)
{
    size_t n = sizeof(line_script) - 1, cut, cut2, i;
    osp_buf_t want;

    (void)state;
    osp_buf_init(&want, 4096);
    for (i = 0; i < sizeof(line_want) / sizeof(line_want[0]); i++) {
        osp_buf_append_str(&want, line_want[i]);
        osp_buf_append_char(&want, '|');
    }
    for (cut = 0; cut <= n; cut++)
        for (cut2 = cut; cut2 <= n; cut2++) {
            filter_line_t lb;
            osp_buf_t got;
            filter_line_init(&lb, 100);
            osp_buf_init(&got, 4096);
            feed_lines(&lb, line_script, cut, &got);
            feed_lines(&lb, line_script + cut, cut2 - cut, &got);
            feed_lines(&lb, line_script + cut2, n - cut2, &got);
            if (strcmp(osp_buf_cstr(&got), osp_buf_cstr(&want)) != 0)
                fail_msg("split %zu/%zu: got \"%s\"", cut, cut2, osp_buf_cstr(&got));
            osp_buf_close(&got);
            filter_line_close(&lb);
        }
    osp_buf_close(&want);
}

static void test_lines_limit(void **state)
{
    filter_line_t lb;
    osp_buf_t got;
    char longl[300];
    size_t cut;

    (void)state;
    memset(longl, 'x', sizeof(longl));
    for (cut = 1; cut < sizeof(longl); cut += 37) {
        filter_line_init(&lb, 20);
        osp_buf_init(&got, 4096);
        /* exactly at the limit: fine, with CR LF split anywhere */
        feed_lines(&lb, "0123456789012345678", cut % 19, &got);
        feed_lines(&lb, "0123456789012345678" + cut % 19, 19 - cut % 19, &got);
        feed_lines(&lb, "9\r", 2, &got);
        feed_lines(&lb, "\n", 1, &got);
        feed_lines(&lb, longl, cut, &got);
        feed_lines(&lb, longl + cut, sizeof(longl) - cut, &got);
        feed_lines(&lb, "\r\nNOOP\r\n", 8, &got);
        assert_string_equal(osp_buf_cstr(&got), "01234567890123456789|<OVERFLOW>|NOOP|");
        /* The assembler never holds more than the limit. */
        assert_true(lb.buf.size <= 21 + 64);
        osp_buf_close(&got);
        filter_line_close(&lb);
    }
}

/* ---- DATA decoder ---------------------------------------------------------- */

struct data_case {
    const char *in;
    const char *out;
    size_t consumed;              /* bytes consumed when the end is found; 0: not found */
};

static const struct data_case data_cases[] = {
    { "Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\r\n\r\nbody\r\n", 23 },
    { "a\r\n..b\r\n.\r\nQUIT\r\n", "a\r\n.b\r\n", 11 },
    { "..\r\n.\r\n", ".\r\n", 7 },
    { "a\nb\n.\n", "a\r\nb\r\n", 6 },
    { "a\n..\n.\r\nRSET\r\n", "a\r\n.\r\n", 8 },
    { "bare\rcr\r\n.\r\n", "bare\rcr\r\n", 12 },
    { "x\r\r\n.\r\n", "x\r\r\n", 7 },
    { ".\r\n", "", 3 },
    { ".\n", "", 2 },
    { ".x\r\n.\r\n", "x\r\n", 7 },
    { ".\rx\r\n.\r\n", "\rx\r\n", 8 },
    { "a.\r\n. \r\n.\r\n", "a.\r\n \r\n", 11 },
    { "no end\r\n", "no end\r\n", 0 },
    { "no end\r", "no end", 0 },
    { "trailing\r\n.", "trailing\r\n", 0 },
    { "\r\n\r\n.\r\n", "\r\n\r\n", 7 },
};

static void data_out(void *ctx, const char *p, size_t len)
{
    assert_int_equal(osp_buf_append(ctx, p, len), 0);
}

/* Decode in up to three pieces; returns total consumed (or len if not done). */
static size_t decode_pieces(const char *in, size_t n, size_t c1, size_t c2, osp_buf_t *out,
                            bool *done_r)
{
    filter_data_t d;
    size_t bounds[4] = { 0, c1, c2, n }, total = 0;
    int k;

    filter_data_init(&d);
    *done_r = false;
    for (k = 0; k < 3 && !*done_r; k++) {
        size_t from = bounds[k], to = bounds[k + 1];
        if (from < total)
            from = total;
        if (to <= from)
            continue;
        total += filter_data_decode(&d, in + from, to - from, data_out, out, done_r);
    }
    return total;
}

static void test_data_split(void **state)
{
    size_t i, c1, c2;

    (void)state;
    for (i = 0; i < sizeof(data_cases) / sizeof(data_cases[0]); i++) {
        const struct data_case *c = &data_cases[i];
        size_t n = strlen(c->in);
        for (c1 = 0; c1 <= n; c1++)
            for (c2 = c1; c2 <= n; c2++) {
                osp_buf_t out;
                bool done;
                size_t used;
                osp_buf_init(&out, 4096);
                used = decode_pieces(c->in, n, c1, c2, &out, &done);
                if (strcmp(osp_buf_cstr(&out), c->out) != 0)
                    fail_msg("case %zu split %zu/%zu: output mismatch", i, c1, c2);
                if (c->consumed) {
                    if (!done || used != c->consumed)
                        fail_msg("case %zu split %zu/%zu: done=%d used=%zu", i, c1, c2,
                                 done, used);
                } else if (done || used != n) {
                    fail_msg("case %zu split %zu/%zu: unexpected end", i, c1, c2);
                }
                osp_buf_close(&out);
            }
    }
}

/* Every byte fed alone, and a long line (> 998) passes through unchanged. */
static void test_data_bytewise_long_line(void **state)
{
    osp_buf_t in, out, want;
    filter_data_t d;
    size_t i;
    bool done = false;

    (void)state;
    osp_buf_init(&in, OSP_BUF_UNLIMITED);
    osp_buf_init(&out, OSP_BUF_UNLIMITED);
    osp_buf_init(&want, OSP_BUF_UNLIMITED);
    for (i = 0; i < 5000; i++) {
        osp_buf_append_char(&in, (char)('a' + i % 26));
        osp_buf_append_char(&want, (char)('a' + i % 26));
    }
    osp_buf_append_str(&in, "\n.dot\r\n.\r\n");
    osp_buf_append_str(&want, "\r\ndot\r\n");
    filter_data_init(&d);
    for (i = 0; i < in.len && !done; i++)
        assert_int_equal(filter_data_decode(&d, in.data + i, 1, data_out, &out, &done), 1);
    assert_true(done);
    assert_int_equal(i, in.len);
    assert_int_equal(out.len, want.len);
    assert_memory_equal(out.data, want.data, want.len);
    /* After the end nothing more is consumed. */
    assert_int_equal(filter_data_decode(&d, "x", 1, data_out, &out, &done), 0);
    osp_buf_close(&in);
    osp_buf_close(&out);
    osp_buf_close(&want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_table),
        cmocka_unit_test(test_cmd_fields),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_lines_split),
        cmocka_unit_test(test_lines_limit),
        cmocka_unit_test(test_data_split),
        cmocka_unit_test(test_data_bytewise_long_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
