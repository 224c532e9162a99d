/*
 * Unit tests for policyd_dns: the DNSBL site syntax (table of good and bad
 * sites with the expected error text), answer filter matching, action
 * templates, and the spf, dnsbl and rdns checks run through the real
 * pipeline on a libuv loop, with a resolver serving zone data from a
 * file: SPF fail rejected, SPF pass answered once per message as
 * PREPEND Received-SPF, DNSBL weights, threshold and TXT reason for IPv4
 * and IPv6, a cancelled request, and a clean loop close.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_dns.h"
#include "../../policyd/policyd_proto.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_prog.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_policyd_dns.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[300];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- DNSBL site syntax --------------------------------------------------- */

static void test_site_parse(void **state)
{
    static const struct {
        const char *text;
        const char *zone;      /* NULL: error */
        int weight;
        bool filter;
        const char *err;       /* substring of the error */
    } cases[] = {
        { "zen.example", "zen.example", 1, false, NULL },
        { "Zen.Example.", "zen.example", 1, false, NULL },
        { "zen.example*3", "zen.example", 3, false, NULL },
        { "zen.example=127.0.0.2", "zen.example", 1, true, NULL },
        { "zen.example=127.0.0.[2..11]*3", "zen.example", 3, true, NULL },
        { "wl.example=127.0.[0..255].[1;3]*-2", "wl.example", -2, true, NULL },
        { "b.example=127.0.0.[2;4..6;9]", "b.example", 1, true, NULL },
        { "", NULL, 0, false, "bad DNSBL zone" },
        { "=127.0.0.2", NULL, 0, false, "bad DNSBL zone" },
        { "a..b", NULL, 0, false, "bad DNSBL zone" },
        { "a b.example", NULL, 0, false, "bad DNSBL zone" },
        { "zen.example*", NULL, 0, false, "bad weight" },
        { "zen.example*x", NULL, 0, false, "bad weight" },
        { "zen.example*5000", NULL, 0, false, "bad weight" },
        { "zen.example=127.0.0", NULL, 0, false, "bad answer filter" },
        { "zen.example=127.0.0.256", NULL, 0, false, "bad answer filter" },
        { "zen.example=127.0.0.[5..2]", NULL, 0, false, "bad answer filter" },
        { "zen.example=127.0.0.[2", NULL, 0, false, "bad answer filter" },
        { "zen.example=127.0.0.2.1", NULL, 0, false, "bad answer filter" },
        { "zen.example=127.0.0.[]", NULL, 0, false, "bad answer filter" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        policyd_dnsbl_site_t s;
        char err[300] = "";
        int rc = policyd_dnsbl_site_parse(cases[i].text, &s, err, sizeof(err));

        if (cases[i].zone == NULL) {
            if (rc != -1 || strstr(err, cases[i].err) == NULL)
                fail_msg("\"%s\": rc %d, error \"%s\", want \"%s\"", cases[i].text, rc, err,
                         cases[i].err);
            continue;
        }
        if (rc != 0)
            fail_msg("\"%s\": %s", cases[i].text, err);
        assert_string_equal(s.zone, cases[i].zone);
        assert_int_equal(s.weight, cases[i].weight);
        assert_int_equal(s.filter, cases[i].filter);
    }
}

static void test_site_match(void **state)
{
    static const struct {
        const char *site;
        uint8_t a[4];
        bool match;
    } cases[] = {
        { "z.example", { 127, 0, 0, 2 }, true },
        { "z.example", { 127, 0, 0, 255 }, true },
        { "z.example=127.0.0.2", { 127, 0, 0, 2 }, true },
        { "z.example=127.0.0.2", { 127, 0, 0, 3 }, false },
        { "z.example=127.0.0.[2..11]", { 127, 0, 0, 2 }, true },
        { "z.example=127.0.0.[2..11]", { 127, 0, 0, 11 }, true },
        { "z.example=127.0.0.[2..11]", { 127, 0, 0, 12 }, false },
        { "z.example=127.0.0.[2..11]", { 127, 0, 0, 1 }, false },
        { "z.example=127.0.0.[2..11]", { 127, 0, 1, 2 }, false },
        { "z.example=127.0.[0..255].[1;3]", { 127, 0, 200, 3 }, true },
        { "z.example=127.0.[0..255].[1;3]", { 127, 0, 200, 2 }, false },
        { "z.example=127.[0;255].0.[0..255]", { 127, 255, 0, 0 }, true },
        { "z.example=127.[0;255].0.[0..255]", { 127, 254, 0, 0 }, false },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        policyd_dnsbl_site_t s;
        char err[300];

        assert_int_equal(policyd_dnsbl_site_parse(cases[i].site, &s, err, sizeof(err)), 0);
        if (policyd_dnsbl_site_match(&s, cases[i].a) != cases[i].match)
            fail_msg("%s with %u.%u.%u.%u: want %s", cases[i].site, cases[i].a[0],
                     cases[i].a[1], cases[i].a[2], cases[i].a[3],
                     cases[i].match ? "match" : "no match");
    }
}

static void test_expand(void **state)
{
    const char *vars[] = { "client_address", "192.0.2.1", "dnsbl_reason", "bad\r\nhost",
                           "e", "", NULL };
    char out[64];

    (void)state;
    policyd_dns_expand("554 [%{client_address}] %{dnsbl_reason}; %{unknown} % %{e}.", vars, out,
                       sizeof(out));
    assert_string_equal(out, "554 [192.0.2.1] bad??host; %{unknown} % .");
    policyd_dns_expand("%{client_address}%{client_address}%{client_address}", vars, out, 12);
    assert_string_equal(out, "192.0.2.119");
}

/* ---- checks on a loop ------------------------------------------------------ */

static const char zone_text[] =
    "pass.example. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:1::/48 -all\"\n"
    "fail.example. 300 IN TXT \"v=spf1 -all exp=why.fail.example\"\n"
    "why.fail.example. 300 IN TXT \"%{i} may not send for %{d}\"\n"
    "soft.example. 300 IN TXT \"v=spf1 ~all\"\n"
    "helo.example. 300 IN TXT \"v=spf1 a -all\"\n"
    "helo.example. 300 IN A 192.0.2.9\n"
    "slow.example. TIMEOUT\n"
    /* 203.0.113.66: listed by bl1 (weight 2 with filter) and bl2 */
    "66.113.0.203.bl1.example. 300 IN A 127.0.0.2\n"
    "66.113.0.203.bl1.example. 300 IN TXT \"Listed, see https://bl1.example/66\"\n"
    "66.113.0.203.bl2.example. 300 IN A 127.0.0.4\n"
    /* 203.0.113.67: only bl2, weight 1: under the threshold of 2 */
    "67.113.0.203.bl2.example. 300 IN A 127.0.0.4\n"
    /* 203.0.113.68: bl1 answers outside the filter */
    "68.113.0.203.bl1.example. 300 IN A 127.0.0.100\n"
    /* 203.0.113.69: bl1 listing offset by the allow list */
    "69.113.0.203.bl1.example. 300 IN A 127.0.0.3\n"
    "69.113.0.203.wl.example. 300 IN A 127.0.10.1\n"
    /* 2001:db8:bad::66 in bl1 (no TXT) */
    "6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.a.b.0.8.b.d.0.1.0.0.2.bl1.example. "
    "300 IN A 127.0.0.5\n";

typedef struct {
    int calls;
} done_t;

static void done_cb(policyd_eval_t *ev, void *data)
{
    done_t *d = data;

    (void)ev;
    d->calls++;
}

static void build(policy_request_t *req, const char *spec)
{
    char *copy = osp_strdup(spec), *save = NULL, *tok;

    policy_request_reset(req);
    policy_request_set(req, POLICY_A_REQUEST, "smtpd_access_policy");
    for (tok = strtok_r(copy, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
        char *eq = strchr(tok, '=');
        int a;
        assert_non_null(eq);
        a = policy_attr_lookup(tok, (size_t)(eq - tok));
        assert_true(a >= 0);
        policy_request_set(req, (enum policy_attr)a, eq + 1);
    }
    free(copy);
}

typedef struct {
    uv_loop_t loop;
    osp_config_t *cfg;
    policyd_dnschecks_t *dc;
    policyd_checks_t *checks;
    void *worker;
    policy_request_t req;
    policyd_eval_t ev;
} fixture_t;

static void fixture_init(fixture_t *f, const char *extra)
{
    static const osp_param_def_t *const tables[] = { osp_common_params, policyd_params, NULL };
    osp_buf_t errors, warnings, text;
    char zpath[512];
    FILE *fp;

    memset(f, 0, sizeof(*f));
    snprintf(zpath, sizeof(zpath), "%s/zone", tmpdir);
    fp = fopen(zpath, "w");
    assert_non_null(fp);
    fputs(zone_text, fp);
    fclose(fp);
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    osp_buf_init(&text, 65536);
    (void)osp_buf_printf(&text,
                         "dns_zone_file = %s\n"
                         "policyd_checks = client_block\n"
                         "policyd_my_names = mx.test.example\n"
                         "policyd_spf = yes\n"
                         "policyd_dnsbl_sites = bl1.example=127.0.0.[2..11]*2, bl2.example, "
                         "wl.example=127.0.[0..255].1*-5\n"
                         "policyd_dnsbl_threshold = 2\n"
                         "%s\n",
                         zpath, extra);
    f->cfg = osp_config_create("policyd", tables);
    osp_config_read_string(f->cfg, "test", osp_buf_cstr(&text), &errors);
    if (osp_config_finish(f->cfg, &errors, &warnings) != 0)
        fail_msg("config: %s", osp_buf_cstr(&errors));
    f->dc = policyd_dnschecks_create(f->cfg, &errors);
    if (f->dc == NULL)
        fail_msg("dnschecks: %s", osp_buf_cstr(&errors));
    policyd_dnschecks_register(f->dc);
    f->checks = policyd_checks_create(f->cfg, &errors, &warnings);
    if (f->checks == NULL)
        fail_msg("checks: %s", osp_buf_cstr(&errors));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->worker = policyd_dns_worker_init(&f->loop, f->dc);
    assert_non_null(f->worker);
    policy_request_init(&f->req, 16384);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_buf_close(&text);
}

static void fixture_close(fixture_t *f)
{
    policyd_dns_worker_fini(f->worker, f->dc);
    (void)uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    policy_request_close(&f->req);
    policyd_checks_free(&f->checks);
    policyd_dnschecks_free(&f->dc);
    osp_config_free(&f->cfg);
}

/* Run one request to its verdict. */
static const policyd_verdict_t *run(fixture_t *f, const char *spec)
{
    done_t d = { 0 };
    int rounds = 0;

    build(&f->req, spec);
    memset(&f->ev, 0, sizeof(f->ev));
    policyd_eval_start(&f->ev, f->checks, &f->req, uv_hrtime() / 1000000, done_cb, &d);
    while (d.calls == 0 && rounds++ < 10000)
        (void)uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(d.calls, 1);
    return &f->ev.verdict;
}

#define RCPT "protocol_state=RCPT|recipient=r@test.example|"

static void test_pipeline_order(void **state)
{
    fixture_t f;
    size_t i, n;
    const char *want[] = { "client_block", "dnsbl", "spf" };

    (void)state;
    fixture_init(&f, "");
    n = policyd_checks_count(f.checks);
    assert_int_equal(n, 3);   /* rdns is off: both actions DUNNO */
    for (i = 0; i < n; i++)
        assert_string_equal(policyd_checks_name(f.checks, i), want[i]);
    fixture_close(&f);
}

static void test_spf(void **state)
{
    fixture_t f;
    const policyd_verdict_t *v;

    (void)state;
    fixture_init(&f, "");
    /* fail: rejected with the configured code and the exp= text */
    v = run(&f, RCPT "instance=i1|client_address=203.0.113.5|sender=a@fail.example|"
                "helo_name=h.example");
    assert_string_equal(v->check, "spf");
    assert_string_equal(v->action, "550 5.7.23 Message rejected due to SPF policy: "
                                   "203.0.113.5 may not send for fail.example");
    assert_string_equal(v->reason, "SPF fail for fail.example");

    /* pass: no check decides, so the header is answered, once per message */
    v = run(&f, RCPT "instance=i2|client_address=192.0.2.7|sender=a@pass.example|"
                "helo_name=h.example");
    assert_string_equal(v->check, "spf");
    assert_non_null(strstr(v->action, "PREPEND Received-SPF: pass (mx.test.example: "));
    assert_non_null(strstr(v->action, "client-ip=192.0.2.7;"));
    assert_non_null(strstr(v->action, "envelope-from=\"a@pass.example\";"));
    assert_non_null(strstr(v->action, "identity=mailfrom;"));
    v = run(&f, RCPT "instance=i2|client_address=192.0.2.7|sender=a@pass.example|"
                "helo_name=h.example|recipient=r2@test.example");
    assert_null(v->check);
    assert_string_equal(v->action, "DUNNO");
    /* a new message on the same connection gets its own header */
    v = run(&f, RCPT "instance=i3|client_address=192.0.2.7|sender=a@pass.example|"
                "helo_name=h.example");
    assert_non_null(strstr(v->action, "PREPEND Received-SPF: pass"));
    /* IPv6 */
    v = run(&f, RCPT "instance=i4|client_address=2001:db8:1::25|sender=a@pass.example|"
                "helo_name=h.example");
    assert_non_null(strstr(v->action, "PREPEND Received-SPF: pass"));

    /* fail for every recipient of the message, from the cache */
    v = run(&f, RCPT "instance=i1|client_address=203.0.113.5|sender=a@fail.example|"
                "helo_name=h.example|recipient=r2@test.example");
    assert_string_equal(v->check, "spf");

    /* softfail: DUNNO by default, header says softfail */
    v = run(&f, RCPT "instance=i5|client_address=203.0.113.5|sender=a@soft.example|"
                "helo_name=h.example");
    assert_non_null(strstr(v->action, "PREPEND Received-SPF: softfail"));

    /* null sender: the HELO identity */
    v = run(&f, RCPT "instance=i6|client_address=192.0.2.9|sender=|helo_name=helo.example");
    assert_non_null(strstr(v->action, "PREPEND Received-SPF: pass"));
    assert_non_null(strstr(v->action, "identity=helo;"));
    v = run(&f, RCPT "instance=i7|client_address=192.0.2.10|sender=|helo_name=helo.example");
    assert_string_equal(v->check, "spf");
    /* no exp=: a default explanation */
    assert_string_equal(v->action, "550 5.7.23 Message rejected due to SPF policy: "
                                   "helo.example does not designate 192.0.2.10 as "
                                   "permitted sender");

    /* DNS timeout: temperror, DUNNO by default */
    v = run(&f, RCPT "instance=i8|client_address=192.0.2.7|sender=a@slow.example|"
                "helo_name=h.example");
    assert_non_null(strstr(v->action, "PREPEND Received-SPF: temperror"));

    /* not at MAIL FROM; not for SASL clients */
    v = run(&f, "protocol_state=MAIL|instance=i9|client_address=203.0.113.5|"
                "sender=a@fail.example|helo_name=h.example");
    assert_null(v->check);
    v = run(&f, RCPT "instance=i10|client_address=203.0.113.5|sender=a@fail.example|"
                "helo_name=h.example|sasl_username=u");
    assert_null(v->check);
    fixture_close(&f);
}

static void test_spf_actions(void **state)
{
    fixture_t f;
    const policyd_verdict_t *v;

    (void)state;
    fixture_init(&f, "policyd_spf_softfail_action = PREPEND X-Spf-Softfail: %{spf_domain}\n"
                     "policyd_spf_temperror_action = DEFER_IF_PERMIT 4.7.24 SPF %{spf_result}\n"
                     "policyd_spf_header = no\n");
    v = run(&f, RCPT "instance=j1|client_address=203.0.113.5|sender=a@soft.example|"
                "helo_name=h.example");
    assert_string_equal(v->action, "PREPEND X-Spf-Softfail: soft.example");
    v = run(&f, RCPT "instance=j2|client_address=203.0.113.5|sender=a@slow.example|"
                "helo_name=h.example");
    assert_string_equal(v->action, "DEFER_IF_PERMIT 4.7.24 SPF temperror");
    v = run(&f, RCPT "instance=j3|client_address=192.0.2.7|sender=a@pass.example|"
                "helo_name=h.example");
    assert_string_equal(v->action, "DUNNO");
    fixture_close(&f);
}

static void test_dnsbl(void **state)
{
    fixture_t f;
    const policyd_verdict_t *v;

    (void)state;
    fixture_init(&f, "");
    v = run(&f, RCPT "instance=k1|client_address=203.0.113.66|sender=a@nospf.example");
    assert_string_equal(v->check, "dnsbl");
    assert_non_null(strstr(v->action, "554 5.7.1 Service unavailable; client [203.0.113.66] "
                                      "blocked using "));
    assert_non_null(strstr(v->action, "bl1.example"));
    assert_non_null(strstr(v->action, "bl2.example"));
    assert_non_null(strstr(v->action, ": Listed, see https://bl1.example/66"));
    assert_non_null(strstr(v->reason, "score 3"));
    /* bl2 alone (weight 1) is under the threshold of 2 */
    v = run(&f, RCPT "instance=k2|client_address=203.0.113.67|sender=a@nospf.example");
    assert_true(v->check == NULL || strcmp(v->check, "dnsbl") != 0);
    /* an answer outside the filter does not count */
    v = run(&f, RCPT "instance=k3|client_address=203.0.113.68|sender=a@nospf.example");
    assert_true(v->check == NULL || strcmp(v->check, "dnsbl") != 0);
    /* a negative weight offsets a listing */
    v = run(&f, RCPT "instance=k4|client_address=203.0.113.69|sender=a@nospf.example");
    assert_true(v->check == NULL || strcmp(v->check, "dnsbl") != 0);
    /* IPv6, nibble-reversed; no TXT: the answer is the reason */
    v = run(&f, RCPT "instance=k5|client_address=2001:db8:bad::66|sender=a@nospf.example");
    assert_string_equal(v->check, "dnsbl");
    assert_non_null(strstr(v->action, "blocked using bl1.example: listed (127.0.0.5)"));
    fixture_close(&f);
}

static void test_rdns(void **state)
{
    fixture_t f;
    const policyd_verdict_t *v;

    (void)state;
    fixture_init(&f, "policyd_spf = no\npolicyd_dnsbl_sites =\n"
                     "policyd_rdns_missing_action = 450 4.7.25 No PTR for [%{client_address}]\n"
                     "policyd_rdns_unconfirmed_action = WARN unconfirmed %{client_name}\n");
    v = run(&f, RCPT "client_address=192.0.2.1|client_name=unknown|"
                "reverse_client_name=unknown");
    assert_string_equal(v->check, "rdns");
    assert_string_equal(v->action, "450 4.7.25 No PTR for [192.0.2.1]");
    v = run(&f, RCPT "client_address=192.0.2.1|client_name=unknown|"
                "reverse_client_name=ptr.example");
    assert_string_equal(v->action, "WARN unconfirmed ptr.example");
    v = run(&f, RCPT "client_address=192.0.2.1|client_name=ptr.example|"
                "reverse_client_name=ptr.example");
    assert_null(v->check);
    fixture_close(&f);
}

/* The deadline: cancelling a request whose lookups are in flight. */
static void test_cancel(void **state)
{
    fixture_t f;
    done_t d = { 0 };

    (void)state;
    fixture_init(&f, "");
    build(&f.req, RCPT "instance=c1|client_address=203.0.113.66|sender=a@pass.example");
    memset(&f.ev, 0, sizeof(f.ev));
    policyd_eval_start(&f.ev, f.checks, &f.req, 0, done_cb, &d);
    assert_int_equal(d.calls, 0);
    policyd_eval_cancel(&f.ev);
    (void)uv_run(&f.loop, UV_RUN_NOWAIT);
    assert_int_equal(d.calls, 0);
    fixture_close(&f);
    /* and SPF in flight */
    fixture_init(&f, "policyd_dnsbl_sites =");
    build(&f.req, RCPT "instance=c2|client_address=192.0.2.200|sender=a@pass.example");
    memset(&f.ev, 0, sizeof(f.ev));
    policyd_eval_start(&f.ev, f.checks, &f.req, 0, done_cb, &d);
    assert_int_equal(d.calls, 0);
    assert_int_equal(f.ev.pending, 1);
    policyd_eval_cancel(&f.ev);
    (void)uv_run(&f.loop, UV_RUN_NOWAIT);
    assert_int_equal(d.calls, 0);
    fixture_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_site_parse),
        cmocka_unit_test(test_site_match),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_pipeline_order),
        cmocka_unit_test(test_spf),
        cmocka_unit_test(test_spf_actions),
        cmocka_unit_test(test_dnsbl),
        cmocka_unit_test(test_rdns),
        cmocka_unit_test(test_cancel),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
