/*
 * osp_spf: macro expansion (the examples of RFC 7208 7.4), record syntax
 * tables, and an evaluation fed by hand through the missing-answer loop.
 * The whole RFC 7208 suite runs in test_spf_suite.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_spf.h"

static void test_macros(void **state)
{
    static const struct {
        const char *macro, *want;   /* want NULL: syntax error */
        bool v6, exp;
    } cases[] = {
        { "%{s}", "strong-bad@email.example.com", false, false },
        { "%{o}", "email.example.com", false, false },
        { "%{d}", "email.example.com", false, false },
        { "%{d4}", "email.example.com", false, false },
        { "%{d3}", "email.example.com", false, false },
        { "%{d2}", "example.com", false, false },
        { "%{d1}", "com", false, false },
        { "%{dr}", "com.example.email", false, false },
        { "%{d2r}", "example.email", false, false },
        { "%{l}", "strong-bad", false, false },
        { "%{l-}", "strong.bad", false, false },
        { "%{lr}", "strong-bad", false, false },
        { "%{lr-}", "bad.strong", false, false },
        { "%{l1r-}", "strong", false, false },
        { "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com", false, false },
        { "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com", false, false },
        { "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
          "bad.strong.lp.3.2.0.192.in-addr._spf.example.com", false, false },
        { "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
          "3.2.0.192.in-addr.strong.lp._spf.example.com", false, false },
        { "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net", false,
          false },
        { "%{ir}.%{v}._spf.%{d2}",
          "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com",
          true, false },
        { "%%%_%-", "% %20", false, false },
        { "%{L}", "strong-bad", false, false },
        { "%{S}", "strong-bad%40email.example.com", false, false },
        { "%{c}", NULL, false, false },           /* explanation letters only in exp */
        { "%{c} %{r} %{t}", "192.0.2.3 mx.example.org 1700000000", false, true },
        { "%{d0}", NULL, false, false },
        { "%{x}", NULL, false, false },
        { "%{d", NULL, false, false },
        { "%a", NULL, false, false },
        { "%{p}", "unknown", false, false },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_spf_request_t req;
        osp_buf_t out;
        int rc;

        memset(&req, 0, sizeof(req));
        assert_int_equal(osp_ip_parse(cases[i].v6 ? "2001:db8::cb01" : "192.0.2.3", &req.ip), 0);
        req.sender = "strong-bad@email.example.com";
        req.helo = "mx.example.com";
        req.receiver = "mx.example.org";
        req.now = 1700000000;
        osp_buf_init(&out, 4096);
        rc = osp_spf_macro_expand(&req, "email.example.com", cases[i].macro, cases[i].exp, &out);
        if (cases[i].want == NULL) {
            if (rc != -1)
                fail_msg("%s: expected a syntax error, got \"%s\"", cases[i].macro,
                         osp_buf_cstr(&out));
        } else {
            if (rc != 0 || strcmp(osp_buf_cstr(&out), cases[i].want) != 0)
                fail_msg("%s: got %d \"%s\", want \"%s\"", cases[i].macro, rc,
                         osp_buf_cstr(&out), cases[i].want);
        }
        osp_buf_close(&out);
    }
}

static void test_records(void **state)
{
    static const struct {
        const char *rec;
        const char *err;   /* NULL: valid; else a substring of the problem */
    } cases[] = {
        { "v=spf1", NULL },
        { "v=spf1 -all", NULL },
        { "V=SPF1 +A MX/24 ~IP4:192.0.2.0/24 ?ip6:2001:db8::/32 -ALL", NULL },
        { "v=spf1 a:foo:bar/baz.example.com", NULL },
        { "v=spf1 a/24//64 mx:%{d}/0 ptr ptr:example.com exists:%{i}.x.example", NULL },
        { "v=spf1 include:_spf.example.com redirect=_spf.example.net exp=e.%{d}", NULL },
        { "v=spf1 moo=bar foo.bar=%{d} -all", NULL },
        { "v=spf1  a  -all ", NULL },
        { "v=spf1 ip4:0.0.0.0/0 ip6:::/0", NULL },
        { "v=spf1 foo", "unknown mechanism" },
        { "v=spf1 -all:x", "takes no argument" },
        { "v=spf1 include", "needs" },
        { "v=spf1 a:", "bad domain-spec" },
        { "v=spf1 a:museum", "bad domain-spec" },
        { "v=spf1 a:example.123", "bad domain-spec" },
        { "v=spf1 ip4:1.2.3.4/33", "bad CIDR" },
        { "v=spf1 ip4:1.2.3.4/024", "bad CIDR" },
        { "v=spf1 ip6:::1/129", "bad CIDR" },
        { "v=spf1 ip4:1.2.3", "bad ip4" },
        { "v=spf1 ip4:2001:db8::1", "bad ip4" },
        { "v=spf1 ip6:192.0.2.1", "bad ip6" },
        { "v=spf1 redirect=a.example redirect=b.example", "more than one" },
        { "v=spf1 exp=a.example exp=b.example", "more than one" },
        { "v=spf1 exp=", "bad domain-spec" },
        { "v=spf1 a:%{x}.example.com", "bad domain-spec" },
        { "v=spf1 \x80" "a -all", "non-ASCII" },
        { "v=spf1 a:example.com\x01", "control" },
        { "spf2.0/pra -all", "not an SPF record" },
        { "v=spf10 -all", "not an SPF record" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        int rc = osp_spf_record_check(cases[i].rec, err, sizeof(err));
        if (cases[i].err == NULL && rc != 0)
            fail_msg("\"%s\": unexpected error %s", cases[i].rec, err);
        if (cases[i].err != NULL && (rc == 0 || strstr(err, cases[i].err) == NULL))
            fail_msg("\"%s\": got %d \"%s\", want \"%s\"", cases[i].rec, rc, err,
                     cases[i].err);
    }
}

/* Feed answers by hand: TXT, then the include's TXT, then its A. */
static void test_eval_by_hand(void **state)
{
    osp_spf_request_t req;
    osp_spf_eval_t *e;
    const char *name;
    int type;
    osp_dns_result_t r;
    const uint8_t *data[1];
    size_t len[1];
    uint8_t txt1[] = "\x1dv=spf1 include:i.example ~all";
    uint8_t txt2[] = "\x10v=spf1 a -all   ";
    uint8_t a[4] = { 192, 0, 2, 1 };
    const osp_spf_outcome_t *o;

    (void)state;
    memset(&req, 0, sizeof(req));
    assert_int_equal(osp_ip_parse("::ffff:192.0.2.1", &req.ip), 0);   /* mapped: IPv4 */
    req.sender = "user@d.example";
    req.helo = "h.example";
    e = osp_spf_eval_create(&req);
    memset(&r, 0, sizeof(r));
    r.status = OSP_DNS_FOUND;
    r.n = 1;
    r.data = data;
    r.len = len;

    assert_int_equal(osp_spf_eval_run(e), OSP_SPF_NEED_DNS);
    assert_int_equal(osp_spf_eval_nmissing(e), 1);
    osp_spf_eval_missing(e, 0, &name, &type);
    assert_string_equal(name, "d.example");
    assert_int_equal(type, OSP_DNS_TXT);
    data[0] = txt1;
    len[0] = sizeof(txt1) - 1;
    osp_spf_eval_add(e, name, type, &r);

    assert_int_equal(osp_spf_eval_run(e), OSP_SPF_NEED_DNS);
    osp_spf_eval_missing(e, 0, &name, &type);
    assert_string_equal(name, "i.example");
    data[0] = txt2;
    len[0] = 17;
    osp_spf_eval_add(e, name, type, &r);

    assert_int_equal(osp_spf_eval_run(e), OSP_SPF_NEED_DNS);
    osp_spf_eval_missing(e, 0, &name, &type);
    assert_string_equal(name, "i.example");
    assert_int_equal(type, OSP_DNS_A);
    data[0] = a;
    len[0] = 4;
    osp_spf_eval_add(e, name, type, &r);

    assert_int_equal(osp_spf_eval_run(e), OSP_SPF_DONE);
    o = osp_spf_eval_outcome(e);
    assert_int_equal(o->result, OSP_SPF_PASS);
    assert_string_equal(o->domain, "d.example");
    assert_string_equal(o->identity, "mailfrom");
    assert_non_null(strstr(o->comment, "include:i.example"));
    {
        osp_buf_t b;
        osp_buf_init(&b, 4096);
        osp_spf_received(&b, &req, o, "mx.example.org");
        assert_string_equal(osp_buf_cstr(&b),
                            "pass (mx.example.org: domain of d.example designates 192.0.2.1 as "
                            "permitted sender) client-ip=192.0.2.1; envelope-from="
                            "\"user@d.example\"; helo=h.example; receiver=mx.example.org; "
                            "identity=mailfrom;");
        osp_buf_close(&b);
    }
    osp_spf_eval_free(&e);
    assert_null(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_eval_by_hand),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
