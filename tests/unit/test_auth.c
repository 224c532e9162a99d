/*
 * osp_auth and filter_auth: real messages signed here with libopendkim and
 * the key in tests/data/dkim/, verified through the zone file there (no
 * network): pass, tampered body, unknown key, lookup failure; the SPF
 * takeover from Received-SPF; DMARC pass and fail with each policy; the
 * Authentication-Results field; the scanner's verdicts and the results
 * reaching the rules.
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

#include <opendkim/dkim.h>

#include "../../contentfilter/filter_auth.h"
#include "../../contentfilter/filter_body.h"
#include "../../contentfilter/filter_engine.h"
#include "../../contentfilter/filter_scan.h"
#include "osp_auth.h"
#include "osp_buf.h"

static char *path_of(const char *rel)
{
    const char *top = getenv("top_srcdir");
    char *p = malloc(4096);

    snprintf(p, 4096, "%s/%s", top ? top : ".", rel);
    return p;
}

static char *read_file(const char *rel)
{
    char *path = path_of(rel);
    FILE *f = fopen(path, "r");
    char *data = calloc(1, 65536);
    size_t n;

    assert_non_null(f);
    n = fread(data, 1, 65535, f);
    data[n] = '\0';
    fclose(f);
    free(path);
    return data;
}

/* Sign msg (CR LF) with the test key as SELECTOR/DOMAIN; returns the signed message. */
static char *sign(const char *msg, const char *selector, const char *domain)
{
    char *key = read_file("tests/data/dkim/test.key");
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    DKIM_STAT st;
    DKIM *d = dkim_sign(lib, (const u_char *)"test", NULL, (dkim_sigkey_t)key,
                        (const u_char *)selector, (const u_char *)domain, DKIM_CANON_RELAXED,
                        DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
    const char *p = msg, *body;
    u_char *sig = NULL;
    size_t siglen = 0;
    osp_buf_t out;

    assert_non_null(d);
    body = strstr(msg, "\r\n\r\n");
    assert_non_null(body);
    while (p < body + 2) {
        const char *e = p;
        for (;;) {
            e = strstr(e, "\r\n");
            if (e[2] != ' ' && e[2] != '\t')
                break;
            e += 2;
        }
        assert_int_equal(dkim_header(d, (u_char *)p, (size_t)(e - p)), DKIM_STAT_OK);
        p = e + 2;
    }
    assert_int_equal(dkim_eoh(d), DKIM_STAT_OK);
    assert_int_equal(dkim_body(d, (u_char *)body + 4, strlen(body + 4)), DKIM_STAT_OK);
    assert_int_equal(dkim_eom(d, NULL), DKIM_STAT_OK);
    assert_int_equal(dkim_getsighdr_d(d, strlen(DKIM_SIGNHEADER) + 2, &sig, &siglen),
                     DKIM_STAT_OK);
    osp_buf_init(&out, 1 << 20);
    osp_buf_printf(&out, "%s: ", DKIM_SIGNHEADER);
    for (size_t i = 0; i < siglen; i++) {
        if (sig[i] == '\n' && (i == 0 || sig[i - 1] != '\r'))
            osp_buf_append_char(&out, '\r');
        osp_buf_append_char(&out, (char)sig[i]);
    }
    osp_buf_append_str(&out, "\r\n");
    osp_buf_append_str(&out, msg);
    dkim_free(d);
    dkim_close(lib);
    free(key);
    return osp_buf_steal(&out);
}

#define MSG(from) \
    "From: Alice <alice@" from ">\r\n" \
    "To: bob@example.org\r\n" \
    "Subject: quarterly\r\n" \
    "  report\r\n" \
    "Date: Fri, 27 Nov 2026 03:00:00 +0000\r\n" \
    "Message-ID: <1@" from ">\r\n" \
    "\r\n" \
    "Hello Bob,\r\n" \
    "the numbers are in.\r\n"

typedef struct fixture {
    osp_auth_zone_t *zone;
    osp_auth_t *auth;
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    char *zp = path_of("tests/data/dkim/zone");
    osp_auth_conf_t c = { 0 };
    osp_buf_t err;

    osp_buf_init(&err, 4096);
    fx->zone = osp_auth_zone_load(zp, &err);
    if (fx->zone == NULL)
        fail_msg("zone: %s", osp_buf_cstr(&err));
    c.txt = osp_auth_txt_zone;
    c.txt_arg = fx->zone;
    c.psl_file = "";
    fx->auth = osp_auth_create(&c, &err);
    assert_non_null(fx->auth);
    osp_buf_close(&err);
    free(zp);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;

    osp_auth_free(&fx->auth);
    osp_auth_zone_free(&fx->zone);
    free(fx);
    return 0;
}

static char *header_of(const osp_auth_result_t *r)
{
    osp_buf_t b;

    osp_buf_init(&b, 65536);
    osp_auth_header(&b, "mx.test", r);
    return osp_buf_steal(&b);
}

static void test_dkim_pass(void **state)
{
    fixture_t *fx = *state;
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    osp_auth_result_t r;
    char *h;

    osp_auth_check(fx->auth, "t1", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_PASS);
    assert_int_equal(r.nsigs, 1);
    assert_string_equal(r.sigs[0].domain, "example.com");
    assert_string_equal(r.sigs[0].selector, "sel1");
    assert_int_equal(r.spf, OSP_AUTH_NONE);
    /* d= aligns with the From domain: DMARC passes; the record says p=reject. */
    assert_string_equal(r.from_domain, "example.com");
    assert_int_equal(r.dmarc, OSP_AUTH_PASS);
    assert_int_equal(r.policy, OSP_AUTH_P_REJECT);
    h = header_of(&r);
    assert_string_equal(h, "Authentication-Results: mx.test;"
                        " dkim=pass header.d=example.com header.s=sel1;\r\n"
                        "\tspf=none; dmarc=pass (p=reject) header.from=example.com\r\n");
    free(h);
    free(m);
}

static void test_dkim_pass_lf(void **state)
{
    fixture_t *fx = *state;
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    char *lf = calloc(1, strlen(m) + 1);
    size_t o = 0;
    osp_auth_result_t r;

    for (size_t i = 0; m[i]; i++)
        if (m[i] != '\r')
            lf[o++] = m[i];
    osp_auth_check(fx->auth, "t2", lf, o, &r);
    assert_int_equal(r.dkim, OSP_AUTH_PASS);
    free(lf);
    free(m);
}

/* Long body lines and many lines: the body goes to libopendkim in pieces. */
static void test_dkim_pass_long_body(void **state)
{
    fixture_t *fx = *state;
    size_t n = 300000, o;
    char *raw = malloc(n + 4096), *m;
    osp_auth_result_t r;

    o = (size_t)sprintf(raw, "From: alice@example.com\r\nSubject: long\r\n\r\n");
    memset(raw + o, 'x', 150000);               /* one 150000-byte line */
    o += 150000;
    memcpy(raw + o, "\r\n", 2);
    o += 2;
    while (o < n) {
        memcpy(raw + o, "short line\r\n", 12);
        o += 12;
    }
    raw[o] = '\0';
    m = sign(raw, "sel1", "example.com");
    osp_auth_check(fx->auth, "t13", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_PASS);
    free(m);
    free(raw);
}

static void test_dkim_tampered(void **state)
{
    fixture_t *fx = *state;
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    char *p = strstr(m, "numbers");
    osp_auth_result_t r;
    char *h;

    p[0] = 'N';
    osp_auth_check(fx->auth, "t3", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_FAIL);
    assert_string_equal(r.sigs[0].reason, "body hash did not verify");
    /* Nothing aligned passes: DMARC fails with the domain's p=reject. */
    assert_int_equal(r.dmarc, OSP_AUTH_FAIL);
    assert_int_equal(r.policy, OSP_AUTH_P_REJECT);
    h = header_of(&r);
    assert_non_null(strstr(h, "dkim=fail (body hash did not verify) header.d=example.com"));
    assert_non_null(strstr(h, "dmarc=fail (p=reject) header.from=example.com"));
    free(h);
    free(m);
}

static void test_dkim_tampered_header(void **state)
{
    fixture_t *fx = *state;
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    char *p = strstr(m, "quarterly");
    osp_auth_result_t r;

    p[0] = 'Q';
    osp_auth_check(fx->auth, "t4", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_FAIL);
    assert_string_equal(r.sigs[0].reason, "signature did not verify");
    free(m);
}

static void test_dkim_unknown_key(void **state)
{
    fixture_t *fx = *state;
    char *m = sign(MSG("example.com"), "nokey", "example.com");
    osp_auth_result_t r;
    char *h;

    osp_auth_check(fx->auth, "t5", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_PERMERROR);
    assert_string_equal(r.sigs[0].reason, "no key for signature");
    assert_int_equal(r.dmarc, OSP_AUTH_FAIL);
    h = header_of(&r);
    assert_non_null(strstr(h, "dkim=permerror (no key for signature) header.d=example.com"
                           " header.s=nokey"));
    free(h);
    free(m);
}

static void test_unsigned(void **state)
{
    fixture_t *fx = *state;
    const char *m = MSG("example.org");
    osp_auth_result_t r;
    char *h;

    osp_auth_check(fx->auth, "t6", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_NONE);
    assert_int_equal(r.nsigs, 0);
    assert_int_equal(r.dmarc, OSP_AUTH_FAIL);
    assert_int_equal(r.policy, OSP_AUTH_P_NONE);
    h = header_of(&r);
    assert_non_null(strstr(h, "dkim=none;"));
    assert_non_null(strstr(h, "dmarc=fail (p=none) header.from=example.org"));
    free(h);
}

static void test_no_dmarc_record(void **state)
{
    fixture_t *fx = *state;
    const char *m = MSG("elsewhere.test");
    osp_auth_result_t r;

    osp_auth_check(fx->auth, "t7", m, strlen(m), &r);
    assert_int_equal(r.dmarc, OSP_AUTH_NONE);
    assert_int_equal(r.policy, OSP_AUTH_P_ABSENT);
}

/* DMARC at the organisational domain: a.b.example.net has none of its own. */
static void test_dmarc_org_domain(void **state)
{
    fixture_t *fx = *state;
    const char *m = MSG("a.b.example.net");
    osp_auth_result_t r;

    osp_auth_check(fx->auth, "t8", m, strlen(m), &r);
    assert_int_equal(r.dmarc, OSP_AUTH_FAIL);
    assert_int_equal(r.policy, OSP_AUTH_P_QUARANTINE);
}

/* ---- SPF from Received-SPF ---------------------------------------------- */

static void test_spf_trusted(void **state)
{
    fixture_t *fx = *state;
    const char *m =
        "Received-SPF: pass (mx.test: domain of bounce@example.com designates 192.0.2.1 as\r\n"
        " permitted sender) client-ip=192.0.2.1; envelope-from=\"bounce@example.com\";\r\n"
        " helo=mail.example.com; receiver=mx.test; identity=mailfrom;\r\n"
        "Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
        "\tby mx.test (Postfix) with ESMTP id 4AB\r\n"
        MSG("example.com");
    osp_auth_result_t r;
    char *h;

    osp_auth_check(fx->auth, "t9", m, strlen(m), &r);
    assert_int_equal(r.spf, OSP_AUTH_PASS);
    assert_false(r.spf_helo);
    assert_string_equal(r.spf_domain, "example.com");
    /* Unsigned, but SPF passes for an aligned domain. */
    assert_int_equal(r.dkim, OSP_AUTH_NONE);
    assert_int_equal(r.dmarc, OSP_AUTH_PASS);
    h = header_of(&r);
    assert_non_null(strstr(h, "spf=pass smtp.mailfrom=example.com"));
    free(h);
}

/* Relaxed alignment: SPF for example.com, From sub.example.com (record at example.com). */
static void test_spf_relaxed_alignment(void **state)
{
    fixture_t *fx = *state;
    const char *m =
        "Received-SPF: pass envelope-from=\"b@example.com\"; identity=mailfrom;\r\n"
        MSG("sub.example.com");
    osp_auth_result_t r;

    osp_auth_check(fx->auth, "t12", m, strlen(m), &r);
    assert_string_equal(r.from_domain, "sub.example.com");
    assert_int_equal(r.dmarc, OSP_AUTH_PASS);
    assert_int_equal(r.policy, OSP_AUTH_P_REJECT);
}

/* The From domain is the author's, read as a mailbox: an address inside a
 * comment or a quoted display name is not it; two authors are refused. */
static void test_from_domain_mailbox(void **state)
{
    fixture_t *fx = *state;
    static const char *const cases[][2] = {
        { "From: a@bad.example (x <y@example.com>)\r\n", "bad.example" },
        { "From: \"y@example.com <y@example.com>\" <a@Bad.Example>\r\n", "bad.example" },
        { "From: a@bad.example, b@example.com\r\n", "" },
    };
    osp_auth_result_t r;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char m[512];
        snprintf(m, sizeof(m), "%sTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n",
                 cases[i][0]);
        osp_auth_check(fx->auth, "tf", m, strlen(m), &r);
        assert_string_equal(r.from_domain, cases[i][1]);
        if (i == 2)
            assert_int_equal(r.dmarc, OSP_AUTH_PERMERROR);
    }
}

static void test_spf_below_received_ignored(void **state)
{
    fixture_t *fx = *state;
    const char *m =
        "Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
        "\tby mx.test (Postfix) with ESMTP id 4AB\r\n"
        "Received-SPF: pass (forged) client-ip=192.0.2.1; envelope-from=\"x@example.com\";\r\n"
        " helo=h; identity=mailfrom;\r\n"
        MSG("example.com");
    osp_auth_result_t r;

    osp_auth_check(fx->auth, "t10", m, strlen(m), &r);
    assert_int_equal(r.spf, OSP_AUTH_NONE);
    assert_string_equal(r.spf_domain, "");
    assert_int_equal(r.dmarc, OSP_AUTH_FAIL);
}

static void test_spf_parse_cases(void **state)
{
    static const struct {
        const char *headers;
        enum osp_auth_res res;
        bool helo;
        const char *domain;
    } cases[] = {
        { "Received-SPF: Fail (a; b=c (nested) d) client-ip=1.2.3.4; envelope-from=u@Ex.COM;"
          " helo=h.example; identity=mailfrom;\r\n\r\n", OSP_AUTH_FAIL, false, "ex.com" },
        { "Received-SPF: softfail client-ip=1.2.3.4; envelope-from=\"\"; helo=h.example;"
          " identity=helo;\r\n\r\n", OSP_AUTH_SOFTFAIL, true, "h.example" },
        { "Received-SPF: none (no record) envelope-from=\"\"; helo=gw.example;\r\n\r\n",
          OSP_AUTH_NONE, false, "gw.example" },
        { "received-spf : temperror (dns) envelope-from=a@b.example;\r\n\r\n",
          OSP_AUTH_TEMPERROR, false, "b.example" },
        { "Received-SPF: bogus\r\n\r\n", OSP_AUTH_PERMERROR, false, "" },
        { "Subject: x\r\n\r\nReceived-SPF: pass envelope-from=a@b.example;\r\n",
          OSP_AUTH_NONE, false, "" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_auth_result_t r;
        memset(&r, 0, sizeof(r));
        osp_auth_spf_from_headers(cases[i].headers, strlen(cases[i].headers), &r);
        if (r.spf != cases[i].res || r.spf_helo != cases[i].helo ||
            strcmp(r.spf_domain, cases[i].domain) != 0)
            fail_msg("case %zu: got %s helo=%d domain=%s", i, osp_auth_res_name(r.spf),
                     r.spf_helo, r.spf_domain);
    }
}

/* ---- lookups that fail ----------------------------------------------------- */

static enum osp_auth_lookup txt_tempfail(void *arg, const char *name, osp_buf_t *out,
                                         size_t *n_r)
{
    (void)arg;
    (void)name;
    (void)out;
    *n_r = 0;
    return OSP_AUTH_TEMPFAIL;
}

static void test_lookup_tempfail(void **state)
{
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    osp_auth_conf_t c = { 0 };
    osp_auth_t *a;
    osp_auth_result_t r;
    osp_buf_t err;

    (void)state;
    c.txt = txt_tempfail;
    osp_buf_init(&err, 4096);
    a = osp_auth_create(&c, &err);
    assert_non_null(a);
    osp_auth_check(a, "t11", m, strlen(m), &r);
    assert_int_equal(r.dkim, OSP_AUTH_TEMPERROR);
    assert_int_equal(r.dmarc, OSP_AUTH_TEMPERROR);
    {
        char *h = header_of(&r);
        assert_string_equal(h, "Authentication-Results: mx.test; dkim=temperror; spf=none;\r\n"
                            "\tdmarc=temperror header.from=example.com\r\n");
        free(h);
    }
    osp_auth_free(&a);
    assert_null(a);
    osp_buf_close(&err);
    free(m);
}

static void test_zone_errors(void **state)
{
    char path[] = "/tmp/test_auth_zoneXXXXXX";
    int fd = mkstemp(path);
    const char *text = "ok.example. 300 IN TXT \"a\" \"b\"\n"
                       "bad.example. 300 IN TXT unquoted\n";
    osp_buf_t err;
    osp_auth_zone_t *z;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    osp_buf_init(&err, 4096);
    z = osp_auth_zone_load(path, &err);
    assert_null(z);
    assert_non_null(strstr(osp_buf_cstr(&err), ", line 2: bad TXT strings"));
    osp_buf_close(&err);
    unlink(path);
}

static void test_zone_lookup(void **state)
{
    fixture_t *fx = *state;
    osp_buf_t out;
    size_t n = 0;

    osp_buf_init(&out, 8192);
    assert_int_equal(osp_auth_txt_zone(fx->zone, "_DMARC.example.com.", &out, &n),
                     OSP_AUTH_FOUND);
    assert_int_equal(n, 1);
    assert_string_equal(out.data, "v=DMARC1; p=reject");
    osp_buf_reset(&out);
    assert_int_equal(osp_auth_txt_zone(fx->zone, "_dmarc.nowhere.test", &out, &n),
                     OSP_AUTH_NOTFOUND);
    osp_buf_close(&out);
}

/* ---- the scanner in the pipeline, with the rules ------------------------------ */

typedef struct scan_out {
    double score;
    enum filter_action action;
    char reason[128];
    char headers[4096];
    char dkim[16];
} scan_out_t;

static void scan_msg(const char *m, enum filter_action reject_action, scan_out_t *o)
{
    char *zp = path_of("tests/data/dkim/zone");
    char rules_path[] = "/tmp/test_auth_rulesXXXXXX";
    const char *rules_text = "rule T_DKIM_PASS: dkim is \"pass\" => score 0.5 \"dkim pass\"\n"
                             "rule T_DKIM_FAIL: dkim is \"fail\" => score 7 \"dkim fail\"\n"
                             "rule T_DMARC_FAIL: dmarc is \"fail\" => score 0.25 \"dmarc fail\"\n";
    const char *files[1] = { rules_path };
    const char *rcpts[] = { "bob@example.org" };
    filter_auth_conf_t c = { 0 };
    filter_scan_thresholds_t none = { INFINITY, INFINITY };
    filter_scan_t *scan = filter_scan_create(&none);
    filter_scanner_t s, e;
    filter_scan_msg_t msg;
    filter_scan_job_t job;
    filter_body_t body;
    osp_buf_t err;
    int fd = mkstemp(rules_path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, rules_text, strlen(rules_text)), (int)strlen(rules_text));
    close(fd);
    c.authserv_id = "mx.test";
    c.zone_file = zp;
    c.psl_file = "";
    c.dmarc_score = 3.0;
    c.dmarc_reject_action = reject_action;
    c.dmarc_quarantine_action = FILTER_ACTION_DELIVER;
    c.max_size = 1 << 20;
    osp_buf_init(&err, 65536);
    if (filter_auth_create(&c, &s, &err) < 0)
        fail_msg("filter_auth_create: %s", osp_buf_cstr(&err));
    filter_scan_add(scan, &s);
    if (filter_engine_create(files, 1, 1 << 20, &e, &err) < 0)
        fail_msg("rules: %s", osp_buf_cstr(&err));
    filter_scan_add(scan, &e);
    osp_buf_close(&err);
    unlink(rules_path);

    filter_body_init(&body, 1 << 20, "/tmp");
    filter_body_append(&body, m, strlen(m));
    memset(&msg, 0, sizeof(msg));
    msg.scan_id = "S1";
    msg.queue_id = "Q1";
    msg.sender = "alice@example.com";
    msg.nrcpt = 1;
    msg.rcpts = rcpts;
    msg.client_addr = "192.0.2.1";
    msg.client_name = "unknown";
    msg.helo = "mail.example.com";
    msg.body = &body;
    filter_scan_job_init(&job, scan, &msg);
    assert_int_equal(filter_scan_run(scan, &msg, &job.result), 0);
    o->score = job.result.score;
    o->action = job.result.rcpt[0].action;
    snprintf(o->reason, sizeof(o->reason), "%s", job.result.rcpt[0].reason);
    snprintf(o->headers, sizeof(o->headers), "%s", osp_buf_cstr(&job.result.add_headers));
    snprintf(o->dkim, sizeof(o->dkim), "%s", job.result.dkim ? job.result.dkim : "(null)");
    filter_scan_job_close(&job);
    filter_body_close(&body);
    filter_scan_free(&scan);
    free(zp);
}

/* Fields claiming our authserv-id are found and removed; others stay. */
static void test_strip_ours(void **state)
{
    static const char hdr[] =
        "Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        "Authentication-Results: MX.Osprey.Test; dkim=pass\r\n"
        "\theader.d=example.com\r\n"
        "Authentication-Results: other.example; spf=pass\r\n"
        "Authentication-Results: (comment) mx.osprey.test;\r\n"
        " dmarc=pass\r\n"
        "Authentication-Results: mx.osprey.test.evil; dkim=pass\r\n"
        "Authentication-Results:mx.osprey.test\r\n"
        "X-Authentication-Results: mx.osprey.test; dkim=pass\r\n"
        "Subject: hi\r\n"
        "\r\n";
    static const char want[] =
        "Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        "Authentication-Results: other.example; spf=pass\r\n"
        "Authentication-Results: mx.osprey.test.evil; dkim=pass\r\n"
        "X-Authentication-Results: mx.osprey.test; dkim=pass\r\n"
        "Subject: hi\r\n"
        "\r\n";
    osp_buf_t b;

    (void)state;
    assert_int_equal(osp_auth_count_ours(hdr, strlen(hdr), "mx.osprey.test"), 3);
    assert_int_equal(osp_auth_count_ours(hdr, strlen(hdr), "nobody.example"), 0);
    assert_int_equal(osp_auth_count_ours(hdr, strlen(hdr), ""), 0);
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append(&b, hdr, strlen(hdr));
    assert_int_equal(osp_auth_strip_ours(&b, "mx.osprey.test"), 3);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    assert_int_equal(osp_auth_strip_ours(&b, "mx.osprey.test"), 0);
    assert_int_equal(b.len, strlen(want));
    osp_buf_close(&b);
}

static void test_scanner_pass(void **state)
{
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    scan_out_t o;

    (void)state;
    scan_msg(m, FILTER_ACTION_QUARANTINE, &o);
    assert_string_equal(o.dkim, "pass");
    assert_int_equal(o.action, FILTER_ACTION_DELIVER);
    assert_true(fabs(o.score - 0.5) < 1e-9);            /* T_DKIM_PASS only */
    assert_non_null(strstr(o.headers, "Authentication-Results: mx.test; dkim=pass"));
    assert_non_null(strstr(o.headers, "T_DKIM_PASS"));
    free(m);
}

static void test_scanner_dmarc_reject_quarantines(void **state)
{
    char *m = sign(MSG("example.com"), "sel1", "example.com");
    scan_out_t o;

    (void)state;
    strstr(m, "numbers")[0] = 'N';
    scan_msg(m, FILTER_ACTION_QUARANTINE, &o);
    assert_string_equal(o.dkim, "fail");
    assert_int_equal(o.action, FILTER_ACTION_QUARANTINE);
    assert_string_equal(o.reason, "DMARC fail, p=reject for example.com");
    /* 3 for DMARC plus the rules T_DKIM_FAIL (7) and T_DMARC_FAIL (0.25). */
    assert_true(fabs(o.score - 10.25) < 1e-9);
    assert_non_null(strstr(o.headers, "dkim=fail"));
    assert_non_null(strstr(o.headers, "T_DKIM_FAIL"));
    free(m);
}

static void test_scanner_dmarc_reject_configured_deliver(void **state)
{
    const char *m = MSG("example.com");
    scan_out_t o;

    (void)state;
    scan_msg(m, FILTER_ACTION_DELIVER, &o);
    assert_string_equal(o.dkim, "none");
    assert_int_equal(o.action, FILTER_ACTION_DELIVER);
    assert_true(fabs(o.score - 3.25) < 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dkim_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dkim_pass_lf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dkim_pass_long_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dkim_tampered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dkim_tampered_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dkim_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsigned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_dmarc_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dmarc_org_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spf_trusted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spf_relaxed_alignment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_domain_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spf_below_received_ignored, setup, teardown),
        cmocka_unit_test(test_spf_parse_cases),
        cmocka_unit_test(test_lookup_tempfail),
        cmocka_unit_test(test_zone_errors),
        cmocka_unit_test_setup_teardown(test_zone_lookup, setup, teardown),
        cmocka_unit_test(test_strip_ours),
        cmocka_unit_test(test_scanner_pass),
        cmocka_unit_test(test_scanner_dmarc_reject_quarantines),
        cmocka_unit_test(test_scanner_dmarc_reject_configured_deliver),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
