/*
 * osp_dns: the zone-file loader (good and bad lines), and queries answered
 * from zone data on a real loop: found, NODATA, NXDOMAIN, CNAME followed,
 * TIMEOUT, cancel, and a clean loop close.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "osp_buf.h"
#include "osp_dns.h"

static const char zone_text[] =
    "; comment\n"
    "# another\n"
    "example.org. 300 IN A 192.0.2.1\n"
    "example.org 300 IN TXT \"v=spf1 \" \"-all\"\n"
    "alias.example.org. 300 IN CNAME example.org.\n"
    "mx.example.org. 300 IN MX 10 mail.example.org.\n"
    "slow.example.org. 300 IN A 192.0.2.9\n"
    "slow.example.org TIMEOUT\n";

static void test_zone_parse(void **state)
{
    osp_buf_t err;
    osp_dns_zone_t *z;

    (void)state;
    osp_buf_init(&err, 4096);
    z = osp_dns_zone_parse("t", zone_text, &err);
    assert_non_null(z);
    assert_int_equal(osp_dns_zone_count(z), 6);
    osp_dns_zone_free(&z);
    assert_null(z);

    z = osp_dns_zone_parse("t", "ok.example. 300 IN A 192.0.2.1\nbad\n"
                                "x.example. 300 IN A 999.1.1.1\ny.example. 300 IN BOGUS x\n",
                           &err);
    assert_null(z);
    assert_non_null(strstr(osp_buf_cstr(&err), "t, line 2: expected"));
    assert_non_null(strstr(osp_buf_cstr(&err), "t, line 3: "));
    assert_non_null(strstr(osp_buf_cstr(&err), "t, line 4: unknown record type"));
    osp_buf_reset(&err);
    assert_null(osp_dns_zone_load("/nonexistent/zone", &err));
    assert_non_null(strstr(osp_buf_cstr(&err), "cannot open zone file"));
    osp_buf_close(&err);
}

typedef struct q_state {
    uv_loop_t *loop;
    int done;
    enum osp_dns_status st;
    size_t n;
    char text[256];
} q_state_t;

static void q_cb(const osp_dns_result_t *r, void *arg)
{
    q_state_t *s = arg;
    osp_buf_t b;
    size_t off = 0;

    s->done++;
    s->st = r->status;
    s->n = r->n;
    s->text[0] = '\0';
    if (r->status == OSP_DNS_FOUND && r->rrtype == OSP_DNS_TXT) {
        osp_buf_init(&b, 1024);
        assert_int_equal(osp_dns_rdata_txt(r->data[0], r->len[0], &b), 0);
        osp_strlcpy(s->text, osp_buf_cstr(&b), sizeof(s->text));
        osp_buf_close(&b);
    } else if (r->status == OSP_DNS_FOUND && r->rrtype == OSP_DNS_MX) {
        off = 2;
        assert_int_equal(osp_dns_rdata_name(r->data[0], r->len[0], &off, s->text,
                                            sizeof(s->text), true), 0);
    } else if (r->status == OSP_DNS_TEMPFAIL) {
        osp_strlcpy(s->text, r->error, sizeof(s->text));
    }
    uv_stop(s->loop);
}

static void ask(uv_loop_t *loop, osp_dns_t *dns, const char *name, int type, q_state_t *s)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    (void)osp_dns_query(dns, name, type, q_cb, s);
    assert_int_equal(s->done, 0);   /* never before osp_dns_query returns */
    while (!s->done)
        (void)uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(s->done, 1);
}

static void test_queries(void **state)
{
    uv_loop_t loop;
    osp_buf_t err;
    osp_dns_zone_t *z;
    osp_dns_conf_t conf;
    osp_dns_t *dns;
    osp_dns_query_t *q;
    q_state_t s;

    (void)state;
    osp_buf_init(&err, 4096);
    z = osp_dns_zone_parse("t", zone_text, &err);
    assert_non_null(z);
    assert_int_equal(uv_loop_init(&loop), 0);
    memset(&conf, 0, sizeof(conf));
    conf.zone_file = "t";
    conf.timeout_ms = 1000;
    dns = osp_dns_create(&loop, &conf, z, &err);
    assert_non_null(dns);

    ask(&loop, dns, "example.org", OSP_DNS_A, &s);
    assert_int_equal(s.st, OSP_DNS_FOUND);
    assert_int_equal(s.n, 1);
    ask(&loop, dns, "EXAMPLE.org.", OSP_DNS_TXT, &s);
    assert_int_equal(s.st, OSP_DNS_FOUND);
    assert_string_equal(s.text, "v=spf1 -all");
    ask(&loop, dns, "example.org", OSP_DNS_AAAA, &s);
    assert_int_equal(s.st, OSP_DNS_NOTFOUND);          /* NODATA */
    ask(&loop, dns, "nope.example.org", OSP_DNS_A, &s);
    assert_int_equal(s.st, OSP_DNS_NOTFOUND);          /* NXDOMAIN */
    ask(&loop, dns, "alias.example.org", OSP_DNS_TXT, &s);
    assert_int_equal(s.st, OSP_DNS_FOUND);             /* CNAME followed */
    assert_string_equal(s.text, "v=spf1 -all");
    ask(&loop, dns, "mx.example.org", OSP_DNS_MX, &s);
    assert_string_equal(s.text, "mail.example.org");
    ask(&loop, dns, "slow.example.org", OSP_DNS_TXT, &s);
    assert_int_equal(s.st, OSP_DNS_TEMPFAIL);
    assert_string_equal(s.text, "timeout");
    ask(&loop, dns, "slow.example.org", OSP_DNS_A, &s);
    assert_int_equal(s.st, OSP_DNS_FOUND);             /* a type with records answers */

    /* Cancelled: the callback never runs. */
    memset(&s, 0, sizeof(s));
    s.loop = &loop;
    q = osp_dns_query(dns, "example.org", OSP_DNS_A, q_cb, &s);
    assert_int_equal(osp_dns_pending(dns), 1);
    osp_dns_cancel(&q);
    assert_null(q);
    assert_int_equal(osp_dns_pending(dns), 0);
    (void)uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(s.done, 0);

    /* Freed with a query outstanding: no callback, clean close. */
    (void)osp_dns_query(dns, "example.org", OSP_DNS_A, q_cb, &s);
    osp_dns_free(&dns);
    assert_null(dns);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.done, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    osp_dns_zone_free(&z);
    osp_buf_close(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zone_parse),
        cmocka_unit_test(test_queries),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
