/*
 * Unit tests for policyd_proto: the request parser (whole, split at every
 * byte boundary, pipelined, each limit, malformed input with its error
 * text) and action validation and reply formatting.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../policyd/policyd_proto.h"
#include "osp_buf.h"

static const char full_request[] =
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=ESMTP\n"
    "client_address=203.0.113.7\n"
    "client_name=client.example\n"
    "client_port=40000\n"
    "reverse_client_name=client.example\n"
    "server_address=192.0.2.1\n"
    "server_port=25\n"
    "helo_name=client.example\n"
    "sender=alice@example.org\n"
    "recipient=bob@example.com\n"
    "recipient_count=0\n"
    "queue_id=\n"
    "instance=123.456.789.0\n"
    "size=12345\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=plain\n"
    "sasl_username=alice\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=TLSv1.3\n"
    "encryption_cipher=TLS_AES_256_GCM_SHA384\n"
    "encryption_keysize=256\n"
    "policy_context=submission\n"
    "compatibility_level=3.6\n"
    "mail_version=3.7.11\n"
    "some_future_attribute=ignored\n"
    "\n";

static const policy_limits_t limits = { 512, 4096, 64 };

static void check_full(const policy_request_t *req)
{
    assert_string_equal(policy_request_get(req, POLICY_A_REQUEST), "smtpd_access_policy");
    assert_string_equal(policy_request_get(req, POLICY_A_PROTOCOL_STATE), "RCPT");
    assert_string_equal(policy_request_get(req, POLICY_A_CLIENT_ADDRESS), "203.0.113.7");
    assert_string_equal(policy_request_get(req, POLICY_A_SENDER), "alice@example.org");
    assert_string_equal(policy_request_get(req, POLICY_A_RECIPIENT), "bob@example.com");
    assert_string_equal(policy_request_get(req, POLICY_A_SASL_USERNAME), "alice");
    assert_string_equal(policy_request_get(req, POLICY_A_MAIL_VERSION), "3.7.11");
    assert_string_equal(policy_request_get(req, POLICY_A_POLICY_CONTEXT), "submission");
    assert_string_equal(policy_request_get(req, POLICY_A_ENCRYPTION_CIPHER),
                        "TLS_AES_256_GCM_SHA384");
    assert_string_equal(policy_request_get(req, POLICY_A_SERVER_PORT), "25");
    assert_true(policy_request_has(req, POLICY_A_QUEUE_ID));
    assert_string_equal(policy_request_get(req, POLICY_A_QUEUE_ID), "");
    assert_int_equal(req->nattrs, 32);
}

static void test_attr_names(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < POLICY_A__COUNT; i++) {
        assert_non_null(policy_attr_names[i]);
        assert_int_equal(policy_attr_lookup(policy_attr_names[i],
                                            strlen(policy_attr_names[i])), (int)i);
    }
    assert_int_equal(policy_attr_lookup("sende", 5), -1);
}

/* The same request split at every byte boundary, then into single bytes. */
static void test_split_every_boundary(void **state)
{
    size_t len = strlen(full_request), cut;

    (void)state;
    for (cut = 0; cut <= len; cut++) {
        policy_parser_t p;
        policy_request_t req;
        size_t used;

        policy_parser_init(&p, &limits);
        policy_request_init(&req, limits.max_request);
        if (cut < len) {
            assert_int_equal(policy_parser_feed(&p, full_request, cut, &req, &used),
                             POLICY_PARSE_MORE);
            assert_int_equal(used, cut);
        }
        assert_int_equal(policy_parser_feed(&p, full_request + cut, len - cut, &req, &used),
                         cut < len ? POLICY_PARSE_DONE : POLICY_PARSE_MORE);
        if (cut < len) {
            assert_int_equal(used, len - cut);
            check_full(&req);
        }
        policy_request_close(&req);
        policy_parser_close(&p);
    }
    {
        policy_parser_t p;
        policy_request_t req;
        size_t used, i;
        enum policy_parse_result r = POLICY_PARSE_MORE;

        policy_parser_init(&p, &limits);
        policy_request_init(&req, limits.max_request);
        for (i = 0; i < len; i++) {
            r = policy_parser_feed(&p, full_request + i, 1, &req, &used);
            assert_int_equal(used, 1);
            assert_int_equal(r, i + 1 == len ? POLICY_PARSE_DONE : POLICY_PARSE_MORE);
        }
        check_full(&req);
        policy_request_close(&req);
        policy_parser_close(&p);
    }
}

/* Three requests in one read; CRLF tolerated; values kept per request. */
static void test_pipelined(void **state)
{
    const char *in =
        "request=smtpd_access_policy\nsender=a@x\n\n"
        "request=smtpd_access_policy\r\nsender=b@x\r\n\r\n"
        "request=smtpd_access_policy\nsender=c@x\nsender=d@x\n\n"
        "request=smtpd_acc";
    const char *want[] = { "a@x", "b@x", "d@x" };
    policy_parser_t p;
    policy_request_t req;
    size_t off = 0, used, i, len = strlen(in);

    (void)state;
    policy_parser_init(&p, &limits);
    policy_request_init(&req, limits.max_request);
    for (i = 0; i < 3; i++) {
        assert_int_equal(policy_parser_feed(&p, in + off, len - off, &req, &used),
                         POLICY_PARSE_DONE);
        assert_string_equal(policy_request_get(&req, POLICY_A_SENDER), want[i]);
        assert_false(policy_request_has(&req, POLICY_A_RECIPIENT));
        off += used;
        policy_request_reset(&req);
    }
    assert_int_equal(policy_parser_feed(&p, in + off, len - off, &req, &used),
                     POLICY_PARSE_MORE);
    assert_int_equal(off + used, len);
    policy_request_close(&req);
    policy_parser_close(&p);
}

struct bad_case {
    const char *input;
    policy_limits_t lim;
    const char *error;
};

static void test_errors(void **state)
{
    static char longline[700], bigreq[5000], many[2000];
    struct bad_case cases[] = {
        { "novalue\n\n", { 512, 4096, 64 }, "malformed attribute line 1: no \"=\"" },
        { "request=x\n=v\n\n", { 512, 4096, 64 }, "malformed attribute line 2: empty name" },
        { "\n", { 512, 4096, 64 }, "empty request (blank line without attributes)" },
        { "a=b\nc=d\0e\n\n", { 512, 4096, 64 }, "NUL byte in attribute line 2" },
        { longline, { 512, 4096, 64 }, "attribute line 1 longer than 512 bytes" },
        { bigreq, { 512, 4096, 1000 }, "request larger than 4096 bytes" },
        { many, { 512, 4096, 64 }, "more than 64 attributes in one request" },
    };
    size_t c, len;

    (void)state;
    memset(longline, 0, sizeof(longline));
    memcpy(longline, "sender=", 7);
    memset(longline + 7, 'x', 600);
    strcat(longline, "\n\n");
    bigreq[0] = '\0';
    while (strlen(bigreq) < 4200)
        strcat(bigreq, "sender=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    strcat(bigreq, "\n");
    many[0] = '\0';
    while (strlen(many) < 65 * 4)
        strcat(many, "a=b\n");
    strcat(many, "\n");

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t cut;
        len = c == 3 ? 12 : strlen(cases[c].input);
        /* Whole, and split at every boundary: same error. */
        for (cut = 0; cut <= len; cut++) {
            policy_parser_t p;
            policy_request_t req;
            size_t used;
            enum policy_parse_result r;

            policy_parser_init(&p, &cases[c].lim);
            policy_request_init(&req, cases[c].lim.max_request);
            r = policy_parser_feed(&p, cases[c].input, cut, &req, &used);
            if (r != POLICY_PARSE_ERROR)
                r = policy_parser_feed(&p, cases[c].input + cut, len - cut, &req, &used);
            if (r != POLICY_PARSE_ERROR)
                fail_msg("case %zu cut %zu: no error", c, cut);
            assert_string_equal(policy_parser_error(&p), cases[c].error);
            /* The parser stays failed. */
            assert_int_equal(policy_parser_feed(&p, "a=b\n\n", 5, &req, &used),
                             POLICY_PARSE_ERROR);
            policy_request_close(&req);
            policy_parser_close(&p);
        }
    }
}

/* A line of exactly max_line bytes (LF included) is fine; one more is not. */
static void test_line_limit_exact(void **state)
{
    policy_limits_t lim = { 64, 4096, 10 };
    char line[80];
    policy_parser_t p;
    policy_request_t req;
    size_t used;

    (void)state;
    memset(line, 'x', sizeof(line));
    memcpy(line, "sender=", 7);
    line[63] = '\n';
    line[64] = '\n';
    policy_parser_init(&p, &lim);
    policy_request_init(&req, lim.max_request);
    assert_int_equal(policy_parser_feed(&p, line, 65, &req, &used), POLICY_PARSE_DONE);
    assert_int_equal(strlen(policy_request_get(&req, POLICY_A_SENDER)), 56);
    policy_request_close(&req);
    policy_parser_close(&p);

    line[63] = 'x';
    line[64] = '\n';
    policy_parser_init(&p, &lim);
    policy_request_init(&req, lim.max_request);
    assert_int_equal(policy_parser_feed(&p, line, 65, &req, &used), POLICY_PARSE_ERROR);
    policy_request_close(&req);
    policy_parser_close(&p);
}

struct action_case {
    const char *action;
    const char *error;      /* NULL: valid */
    const char *cls;
};

static void test_actions(void **state)
{
    static const struct action_case cases[] = {
        { "DUNNO", NULL, "dunno" },
        { "dunno", NULL, "dunno" },
        { "OK", NULL, "ok" },
        { "REJECT", NULL, "reject" },
        { "REJECT 5.7.1 Blocked", NULL, "reject" },
        { "REJECT 4.7.1 Blocked", "enhanced status code class does not match the action: "
          "\"REJECT 4.7.1 Blocked\"", NULL },
        { "DEFER 4.7.1 Try later", NULL, "defer" },
        { "DEFER_IF_PERMIT Service unavailable", NULL, "defer_if_permit" },
        { "DEFER_IF_REJECT", NULL, "defer_if_reject" },
        { "450 4.7.1 Slow down", NULL, "defer" },
        { "554 5.7.1 Go away", NULL, "reject" },
        { "550", NULL, "reject" },
        { "250 ok", "reply code must be 4NN or 5NN: \"250 ok\"", NULL },
        { "550 4.7.1 x", "enhanced status code class does not match the reply code: "
          "\"550 4.7.1 x\"", NULL },
        { "HOLD", NULL, "hold" },
        { "HOLD rate limit", NULL, "hold" },
        { "DISCARD spam", NULL, "discard" },
        { "WARN look at this", NULL, "warn" },
        { "INFO note", NULL, "info" },
        { "FILTER smtp:[127.0.0.1]:10025", NULL, "filter" },
        { "FILTER", "this action needs an argument: \"FILTER\"", NULL },
        { "FILTER nocolon", "FILTER needs transport:destination: \"FILTER nocolon\"", NULL },
        { "PREPEND X-Osprey: checked", NULL, "prepend" },
        { "PREPEND nocolon", "PREPEND needs \"Header-Name: value\": \"PREPEND nocolon\"", NULL },
        { "REDIRECT abuse@example.com", NULL, "redirect" },
        { "BCC archive", "this action needs an address: \"BCC archive\"", NULL },
        { "OK fine", "this action takes no text: \"OK fine\"", NULL },
        { "ACCEPT", "unknown action: \"ACCEPT\"", NULL },
        { "", "empty action: \"\"", NULL },
        { "REJECT bad\ttab", "control character in action: \"REJECT bad\\x09tab\"", NULL },
    };
    size_t i;
    char err[256];

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = policy_action_check(cases[i].action, err, sizeof(err));
        if (cases[i].error == NULL) {
            if (rc != 0)
                fail_msg("\"%s\" refused: %s", cases[i].action, err);
            assert_string_equal(policy_action_class(cases[i].action), cases[i].cls);
        } else {
            if (rc == 0)
                fail_msg("\"%s\" accepted", cases[i].action);
            assert_string_equal(err, cases[i].error);
        }
    }
}

static void test_reply_format(void **state)
{
    osp_buf_t b;

    (void)state;
    osp_buf_init(&b, 64);
    assert_int_equal(policy_reply_format(&b, "DUNNO"), 0);
    assert_string_equal(osp_buf_cstr(&b), "action=DUNNO\n\n");
    assert_int_equal(policy_reply_format(&b, "REJECT 5.7.1 no"), 0);
    assert_string_equal(osp_buf_cstr(&b), "action=DUNNO\n\naction=REJECT 5.7.1 no\n\n");
    osp_buf_close(&b);
    osp_buf_init(&b, 10);
    assert_int_equal(policy_reply_format(&b, "REJECT"), -1);
    assert_int_equal(b.len, 0);
    osp_buf_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attr_names),
        cmocka_unit_test(test_split_every_boundary),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_line_limit_exact),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_reply_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
