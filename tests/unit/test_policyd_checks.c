/*
 * Unit tests for policyd_checks: each check driven by a table of requests
 * with the expected check and action, list files with bad lines reported
 * as "FILE, line N", start-up errors for bad configuration, rate limits
 * counted at END-OF-MESSAGE and enforced at RCPT with one alert per
 * episode, and the asynchronous pipeline (pending, resume, cancel).
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

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_proto.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "policyd_test.h"

static char tmpdir[256];

static struct {
    int warnings;
    char last[1024];
} logged;

static void log_hook(enum osp_log_level level, const char *line, void *ctx)
{
    (void)ctx;
    if (level == OSP_LOG_WARNING) {
        logged.warnings++;
        osp_strlcpy(logged.last, line, sizeof(logged.last));
    }
}

static const char *write_file(const char *name, const char *text)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    FILE *fp;

    snprintf(p, 512, "%s/%s", tmpdir, name);
    fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    return p;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_policyd_checks.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    osp_log_set_hook(log_hook, NULL);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];

    (void)state;
    osp_log_set_hook(NULL, NULL);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- running requests -------------------------------------------------- */

struct done {
    int calls;
};

static void done_cb(policyd_eval_t *ev, void *data)
{
    struct done *d = data;

    (void)ev;
    d->calls++;
}

/* "name=value" pairs separated by '|'. */
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

static const policyd_verdict_t *run(const policyd_checks_t *c, policy_request_t *req,
                                    const char *spec, uint64_t now_ms)
{
    static policyd_eval_t ev;
    struct done d = { 0 };

    build(req, spec);
    memset(&ev, 0, sizeof(ev));
    policyd_eval_start(&ev, c, req, now_ms, done_cb, &d);
    assert_int_equal(d.calls, 1);
    return &ev.verdict;
}

struct req_case {
    const char *spec;
    const char *check;   /* NULL: none decided */
    const char *action;  /* prefix of the action */
    const char *reason;  /* substring of the reason, or NULL */
};

static void run_table(const policyd_checks_t *c, const struct req_case *cases, size_t n)
{
    policy_request_t req;
    size_t i;

    policy_request_init(&req, 16384);
    for (i = 0; i < n; i++) {
        const policyd_verdict_t *v = run(c, &req, cases[i].spec, 1000000);
        if ((v->check == NULL) != (cases[i].check == NULL) ||
            (v->check && strcmp(v->check, cases[i].check) != 0))
            fail_msg("case %zu (%s): check %s, want %s (reason %s)", i, cases[i].spec,
                     v->check ? v->check : "none", cases[i].check ? cases[i].check : "none",
                     v->reason);
        if (strncmp(v->action, cases[i].action, strlen(cases[i].action)) != 0)
            fail_msg("case %zu (%s): action \"%s\", want \"%s\"", i, cases[i].spec, v->action,
                     cases[i].action);
        if (cases[i].reason && strstr(v->reason, cases[i].reason) == NULL)
            fail_msg("case %zu: reason \"%s\" lacks \"%s\"", i, v->reason, cases[i].reason);
    }
    policy_request_close(&req);
}

/* ---- tests ------------------------------------------------------------- */

static void test_client_lists(void **state)
{
    const char *allow = write_file("callow", "# allowed\n203.0.113.128/25\n2001:db8:1::/48\n");
    const char *block = write_file("cblock",
                                   "203.0.113.0/24   # documentation net\n"
                                   "\n"
                                   "  2001:db8::/32\n"
                                   "198.51.100.7\n");
    char conf[2048];
    osp_config_t *cfg;
    osp_buf_t errors, warnings;
    policyd_checks_t *c;
    const struct req_case cases[] = {
        { "protocol_state=RCPT|client_address=203.0.113.7", "client_block", "REJECT 5.7.1",
          "client address 203.0.113.7 listed in" },
        { "protocol_state=RCPT|client_address=203.0.113.200", "client_allow", "DUNNO", "line 2" },
        { "protocol_state=RCPT|client_address=2001:db8::7", "client_block", "REJECT", "line 3" },
        { "protocol_state=RCPT|client_address=2001:db8:1::7", "client_allow", "DUNNO", NULL },
        { "protocol_state=RCPT|client_address=::ffff:198.51.100.7", "client_block", "REJECT",
          "line 4" },
        { "protocol_state=RCPT|client_address=198.51.100.8", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT|client_address=unknown", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT", NULL, "DUNNO", NULL },
        /* END-OF-MESSAGE: only accounting, never a block. */
        { "protocol_state=END-OF-MESSAGE|client_address=203.0.113.7", NULL, "DUNNO", NULL },
    };

    (void)state;
    snprintf(conf, sizeof(conf), "policyd_client_allow_files = %s\n"
             "policyd_client_block_files = %s\n", allow, block);
    cfg = policyd_test_config(conf);
    osp_buf_init(&errors, 4096);
    osp_buf_init(&warnings, 4096);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    assert_int_equal(warnings.len, 0);
    run_table(c, cases, sizeof(cases) / sizeof(cases[0]));
    policyd_checks_free(&c);
    assert_null(c);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_config_free(&cfg);
}

static void test_list_file_errors(void **state)
{
    const char *block = write_file("cbad",
                                   "192.0.2.0/24\n"
                                   "192.0.2.1/24\n"
                                   "not-an-address\n"
                                   "10.0.0.0/33\n"
                                   "10.1.0.0/16 REJECT\n"
                                   "10.2.0.0/16\n");
    const char *senders = write_file("sbad",
                                     "ok@example.com\n"
                                     "@example.com\n"
                                     "bad..domain\n"
                                     "user@exa mple.com\n"
                                     ".sub.example.net\n");
    char conf[2048], want[512];
    osp_config_t *cfg;
    osp_buf_t errors, warnings;
    policyd_checks_t *c;
    const struct req_case cases[] = {
        { "protocol_state=RCPT|client_address=10.2.3.4", "client_block", "REJECT", "line 6" },
        { "protocol_state=RCPT|client_address=192.0.2.9", "client_block", "REJECT", "line 1" },
        { "protocol_state=RCPT|client_address=10.1.0.1", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT|sender=x@a.sub.example.net", "sender_block", "REJECT", "line 5" },
    };

    (void)state;
    snprintf(conf, sizeof(conf), "policyd_client_block_files = %s\n"
             "policyd_sender_block_files = %s\n", block, senders);
    cfg = policyd_test_config(conf);
    osp_buf_init(&errors, 4096);
    osp_buf_init(&warnings, 8192);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    assert_int_equal(errors.len, 0);
    snprintf(want, sizeof(want), "%s, line 2: non-null host address bits in \"192.0.2.1/24\", perhaps you should use \"192.0.2.0/24\"; line skipped", block);
    if (strstr(osp_buf_cstr(&warnings), want) == NULL)
        fail_msg("warnings lack \"%s\":\n%s", want, osp_buf_cstr(&warnings));
    snprintf(want, sizeof(want), "%s, line 3: ", block);
    assert_non_null(strstr(osp_buf_cstr(&warnings), want));
    snprintf(want, sizeof(want), "%s, line 4: ", block);
    assert_non_null(strstr(osp_buf_cstr(&warnings), want));
    snprintf(want, sizeof(want), "%s, line 5: more than one field", block);
    assert_non_null(strstr(osp_buf_cstr(&warnings), want));
    snprintf(want, sizeof(want), "%s, line 2: empty local part", senders);
    assert_non_null(strstr(osp_buf_cstr(&warnings), want));
    snprintf(want, sizeof(want), "%s, line 3: bad domain", senders);
    assert_non_null(strstr(osp_buf_cstr(&warnings), want));
    snprintf(want, sizeof(want), "%s, line 4: more than one field", senders);
    assert_non_null(strstr(osp_buf_cstr(&warnings), want));
    snprintf(want, sizeof(want), "%s, line 1:", senders);
    assert_null(strstr(osp_buf_cstr(&warnings), want));
    run_table(c, cases, sizeof(cases) / sizeof(cases[0]));
    policyd_checks_free(&c);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_config_free(&cfg);
}

static void test_startup_errors(void **state)
{
    static const struct {
        const char *conf;
        const char *error;
    } cases[] = {
        { "policyd_client_block_files = /nonexistent/osprey-list\n",
          "parameter \"policyd_client_block_files\": cannot open list file "
          "/nonexistent/osprey-list: No such file or directory" },
        { "policyd_sender_allow_files = /nonexistent/s\n",
          "parameter \"policyd_sender_allow_files\": cannot open list file /nonexistent/s" },
        { "policyd_client_block_action = REJECT 4.7.1 nope\n",
          "parameter \"policyd_client_block_action\": enhanced status code class does not "
          "match the action" },
        { "policyd_helo_ours_action = BOUNCE\n",
          "parameter \"policyd_helo_ours_action\": unknown action: \"BOUNCE\"" },
        { "policyd_checks = client_block, spf\n",
          "parameter \"policyd_checks\": unknown check \"spf\"" },
        { "policyd_rate_limits = sasl_username:100/1h:messages:HOLD, nobody:1/1h:messages\n",
          "parameter \"policyd_rate_limits\": rule \"nobody:1/1h:messages\": unknown key" },
        { "policyd_rate_limits = sender:x/1h:messages\n", "limit \"x\" is not a number" },
        { "policyd_rate_limits = sender:10/1y:messages\n", "window \"1y\" is not a duration" },
        { "policyd_rate_limits = sender:10/1h:bytes\n", "expected messages or recipients" },
        { "policyd_rate_limits = sender:10/1h:messages:REJECT\n",
          "action \"REJECT\" is not DEFER or HOLD" },
        { "policyd_rate_limits = sender:10\n", "expected KEY:LIMIT/WINDOW" },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_config_t *cfg = policyd_test_config(cases[i].conf);
        osp_buf_t errors, warnings;
        policyd_checks_t *c;

        osp_buf_init(&errors, 4096);
        osp_buf_init(&warnings, 4096);
        c = policyd_checks_create(cfg, &errors, &warnings);
        assert_null(c);
        if (strstr(osp_buf_cstr(&errors), cases[i].error) == NULL)
            fail_msg("case %zu: errors \"%s\" lack \"%s\"", i, osp_buf_cstr(&errors),
                     cases[i].error);
        osp_buf_close(&errors);
        osp_buf_close(&warnings);
        osp_config_free(&cfg);
    }
}

static void test_helo(void **state)
{
    const struct req_case cases[] = {
        { "protocol_state=RCPT|helo_name=mail.example.com|client_address=203.0.113.7", NULL,
          "DUNNO", NULL },
        { "protocol_state=RCPT|helo_name=bad_host.example.com|client_address=203.0.113.7",
          NULL, "DUNNO", NULL },   /* underscores are tolerated */
        { "protocol_state=RCPT|helo_name=-bad.example|client_address=203.0.113.7",
          "helo_invalid", "REJECT 5.5.2", "HELO -bad.example" },
        { "protocol_state=RCPT|helo_name=a..b|client_address=203.0.113.7", "helo_invalid",
          "REJECT", NULL },
        { "protocol_state=RCPT|helo_name=[300.1.1.1]|client_address=203.0.113.7",
          "helo_invalid", "REJECT", "malformed address literal" },
        { "protocol_state=RCPT|helo_name=bad\001name|client_address=203.0.113.7",
          "helo_invalid", "REJECT", "bad\\x01name" },
        { "protocol_state=RCPT|helo_name=[203.0.113.7]|client_address=203.0.113.7", NULL,
          "DUNNO", NULL },
        { "protocol_state=RCPT|helo_name=[203.0.113.8]|client_address=203.0.113.7",
          "helo_mismatch", "REJECT", "does not match client address 203.0.113.7" },
        { "protocol_state=RCPT|helo_name=[IPv6:2001:db8::7]|client_address=2001:db8::7", NULL,
          "DUNNO", NULL },
        { "protocol_state=RCPT|helo_name=[IPv6:2001:db8::8]|client_address=2001:db8::7",
          "helo_mismatch", "REJECT", NULL },
        { "protocol_state=RCPT|helo_name=MX.Example.NET.|client_address=203.0.113.7",
          "helo_ours", "REJECT", "one of our names" },
        { "protocol_state=RCPT|helo_name=[192.0.2.1]|client_address=203.0.113.7"
          "|server_address=192.0.2.1", "helo_ours", "REJECT", "our own address" },
        { "protocol_state=RCPT|helo_name=[192.0.2.1]|client_address=192.0.2.1"
          "|server_address=192.0.2.1", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT|client_address=203.0.113.7", NULL, "DUNNO", NULL },
    };
    osp_config_t *cfg = policyd_test_config("policyd_my_names = mx.example.net, example.net\n");
    osp_buf_t errors, warnings;
    policyd_checks_t *c;

    (void)state;
    osp_buf_init(&errors, 4096);
    osp_buf_init(&warnings, 4096);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    run_table(c, cases, sizeof(cases) / sizeof(cases[0]));
    policyd_checks_free(&c);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_config_free(&cfg);
}

static void test_address_lists(void **state)
{
    const char *sallow = write_file("sallow", "vip@partner.example\n");
    const char *sblock = write_file("sblock",
                                    "spammer@example.org\n"
                                    "bad.example\n"
                                    ".evil.example\n"
                                    "postmaster@\n"
                                    "<>\n"
                                    "Bücher.example\n");
    const char *rblock = write_file("rblock", "closed@example.com\n");
    const char *cblock = write_file("cblock2", "203.0.113.0/24\n");
    char conf[2048];
    osp_config_t *cfg;
    osp_buf_t errors, warnings;
    policyd_checks_t *c;
    const struct req_case cases[] = {
        { "protocol_state=RCPT|sender=spammer@example.org", "sender_block", "REJECT 5.7.1",
          "sender <spammer@example.org> listed in" },
        { "protocol_state=RCPT|sender=SPAMMER@Example.ORG", "sender_block", "REJECT", NULL },
        { "protocol_state=RCPT|sender=other@example.org", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT|sender=x@bad.example", "sender_block", "REJECT", "bad.example" },
        { "protocol_state=RCPT|sender=x@sub.bad.example", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT|sender=x@evil.example", NULL, "DUNNO", NULL },
        { "protocol_state=RCPT|sender=x@a.b.evil.example", "sender_block", "REJECT",
          ".evil.example" },
        { "protocol_state=RCPT|sender=postmaster@anything.example", "sender_block", "REJECT",
          "postmaster@" },
        { "protocol_state=RCPT|sender=", "sender_block", "REJECT", "<>" },
        { "protocol_state=RCPT|sender=x@xn--bcher-kva.example", "sender_block", "REJECT", NULL },
        { "protocol_state=RCPT|sender=a@b.com|recipient=closed@example.com", "recipient_block",
          "REJECT 5.7.1 Recipient", NULL },
        { "protocol_state=RCPT|sender=a@b.com|recipient=open@example.com", NULL, "DUNNO",
          NULL },
        /* An allowed sender bypasses the client block that comes later. */
        { "protocol_state=RCPT|sender=vip@partner.example|client_address=203.0.113.9",
          "sender_allow", "OK", NULL },
        { "protocol_state=RCPT|sender=x@y.example|client_address=203.0.113.9",
          "client_block", "REJECT", NULL },
        /* No sender attribute at all: the sender lists are skipped. */
        { "protocol_state=CONNECT|client_address=198.51.100.1", NULL, "DUNNO", NULL },
    };

    (void)state;
    snprintf(conf, sizeof(conf),
             "policyd_sender_allow_files = %s\npolicyd_sender_block_files = %s\n"
             "policyd_recipient_block_files = %s\npolicyd_client_block_files = %s\n"
             "policyd_allow_action = OK\n", sallow, sblock, rblock, cblock);
    cfg = policyd_test_config(conf);
    osp_buf_init(&errors, 4096);
    osp_buf_init(&warnings, 4096);
    c = policyd_checks_create(cfg, &errors, &warnings);
    if (c == NULL)
        fail_msg("%s", osp_buf_cstr(&errors));
    assert_int_equal(warnings.len, 0);
    run_table(c, cases, sizeof(cases) / sizeof(cases[0]));
    policyd_checks_free(&c);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_config_free(&cfg);
}

static void test_rate_limits(void **state)
{
    osp_config_t *cfg = policyd_test_config(
        "policyd_rate_limits = sasl_username:3/1h:messages:HOLD, "
        "client_address:5/1h:recipients, recipient_domain:2/1m:messages\n"
        "policyd_rate_limit_text = Slow down\n");
    osp_buf_t errors, warnings;
    policyd_checks_t *c;
    policy_request_t req;
    const policyd_verdict_t *v;
    uint64_t now = 5000000;
    int i;

    (void)state;
    osp_buf_init(&errors, 4096);
    osp_buf_init(&warnings, 4096);
    c = policyd_checks_create(cfg, &errors, &warnings);
    if (c == NULL)
        fail_msg("%s", osp_buf_cstr(&errors));
    policy_request_init(&req, 16384);
    logged.warnings = 0;

    /* Three messages by alice pass at RCPT and are counted at END-OF-MESSAGE. */
    for (i = 0; i < 3; i++) {
        v = run(c, &req, "protocol_state=RCPT|sasl_username=alice|client_address=192.0.2.1"
                "|recipient=r@one.example", now);
        assert_null(v->check);
        v = run(c, &req, "protocol_state=END-OF-MESSAGE|sasl_username=alice"
                "|client_address=192.0.2.1|recipient_count=1", now);
        assert_string_equal(v->action, "DUNNO");
    }
    /* The fourth is held; an alert is logged once. */
    v = run(c, &req, "protocol_state=RCPT|sasl_username=alice|client_address=192.0.2.1", now);
    assert_string_equal(v->check, "rate_limit");
    assert_string_equal(v->action, "HOLD Slow down");
    assert_string_equal(v->reason, "sasl_username=alice over 3 messages per 1h");
    assert_int_equal(logged.warnings, 1);
    assert_non_null(strstr(logged.last, "rate limit alert: sasl_username=alice reached 3 "
                                        "messages per 1h"));
    v = run(c, &req, "protocol_state=RCPT|sasl_username=alice|client_address=192.0.2.1", now + 1);
    assert_string_equal(v->action, "HOLD Slow down");
    assert_int_equal(logged.warnings, 1);
    /* Bob is not alice. */
    v = run(c, &req, "protocol_state=RCPT|sasl_username=bob|client_address=192.0.2.2", now);
    assert_null(v->check);
    /* 20 minutes later one message has come back (T = 20 min). */
    v = run(c, &req, "protocol_state=RCPT|sasl_username=alice|client_address=192.0.2.9",
            now + 1200000);
    assert_null(v->check);

    /* Recipients per client address: one message with 5 recipients fills it. */
    v = run(c, &req, "protocol_state=END-OF-MESSAGE|client_address=198.51.100.1"
            "|recipient_count=5", now);
    v = run(c, &req, "protocol_state=RCPT|client_address=198.51.100.1", now);
    assert_string_equal(v->check, "rate_limit");
    assert_string_equal(v->action, "DEFER 4.7.1 Slow down");
    assert_string_equal(v->reason, "client_address=198.51.100.1 over 5 recipients per 1h");
    /* IPv4-mapped form is the same client. */
    v = run(c, &req, "protocol_state=RCPT|client_address=::ffff:198.51.100.1", now);
    assert_string_equal(v->check, "rate_limit");

    /* Recipient domain, counted when the message has one recipient. */
    for (i = 0; i < 2; i++)
        (void)run(c, &req, "protocol_state=END-OF-MESSAGE|recipient=x@Busy.Example"
                  "|recipient_count=1", now);
    v = run(c, &req, "protocol_state=RCPT|recipient=y@busy.example", now);
    assert_string_equal(v->check, "rate_limit");
    v = run(c, &req, "protocol_state=RCPT|recipient=y@busy.example", now + 30000);
    assert_null(v->check);

    assert_true(policyd_checks_ratelimit_keys(c) >= 3);
    policyd_checks_expire(c, now + 10 * 3600000ULL);
    assert_int_equal(policyd_checks_ratelimit_keys(c), 0);

    policy_request_close(&req);
    policyd_checks_free(&c);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_config_free(&cfg);
}

/* ---- the asynchronous pipeline ------------------------------------------ */

struct fake_async {
    policyd_eval_t *ev;
    int started, cancelled;
    unsigned op[2];
};

static void fake_cancel(void *arg)
{
    struct fake_async *f = arg;

    f->cancelled++;
}

static enum policyd_step fake_run(policyd_eval_t *ev, void *ctx)
{
    struct fake_async *f = ctx;

    f->ev = ev;
    f->started++;
    f->op[0] = policyd_eval_pending_add(ev, fake_cancel, f);
    f->op[1] = policyd_eval_pending_add(ev, fake_cancel, f);
    return POLICYD_PENDING;
}

static enum policyd_step after_run(policyd_eval_t *ev, void *ctx)
{
    int *n = ctx;

    (*n)++;
    policyd_eval_decide(ev, "after", "REJECT after", false, "after ran");
    return POLICYD_STOP;
}

static void test_async_pipeline(void **state)
{
    osp_config_t *cfg = policyd_test_config("policyd_checks = helo\n");
    osp_buf_t errors, warnings;
    policyd_checks_t *c;
    policy_request_t req;
    struct fake_async f = { 0 };
    int after = 0;
    policyd_check_def_t d1 = { "fake", fake_run, NULL, &f };
    policyd_check_def_t d2 = { "after", after_run, NULL, &after };
    policyd_eval_t ev;
    struct done d = { 0 };

    (void)state;
    osp_buf_init(&errors, 4096);
    osp_buf_init(&warnings, 4096);
    c = policyd_checks_create(cfg, &errors, &warnings);
    policyd_checks_append(c, &d1);
    policyd_checks_append(c, &d2);
    assert_int_equal(policyd_checks_count(c), 3);
    assert_string_equal(policyd_checks_name(c, 1), "fake");
    policy_request_init(&req, 4096);
    build(&req, "protocol_state=RCPT|helo_name=ok.example");

    /* Two operations; the pipeline continues after both resume. */
    memset(&ev, 0, sizeof(ev));
    policyd_eval_start(&ev, c, &req, 0, done_cb, &d);
    assert_int_equal(f.started, 1);
    assert_int_equal(d.calls, 0);
    policyd_eval_resume(&ev, f.op[1]);
    assert_int_equal(d.calls, 0);
    policyd_eval_resume(&ev, f.op[0]);
    assert_int_equal(d.calls, 1);
    assert_int_equal(after, 1);
    assert_string_equal(ev.verdict.check, "after");

    /* A verdict from an async operation stops the pipeline. */
    memset(&ev, 0, sizeof(ev));
    d.calls = 0;
    policyd_eval_start(&ev, c, &req, 0, done_cb, &d);
    policyd_eval_decide(&ev, "fake", "DEFER_IF_PERMIT x", false, "fake said so");
    policyd_eval_resume(&ev, f.op[0]);
    policyd_eval_resume(&ev, f.op[1]);
    assert_int_equal(d.calls, 1);
    assert_int_equal(after, 1);
    assert_string_equal(ev.verdict.action, "DEFER_IF_PERMIT x");

    /* Cancel calls the cancel function of each pending operation only. */
    memset(&ev, 0, sizeof(ev));
    d.calls = 0;
    policyd_eval_start(&ev, c, &req, 0, done_cb, &d);
    policyd_eval_resume(&ev, f.op[0]);
    policyd_eval_cancel(&ev);
    assert_int_equal(f.cancelled, 1);
    assert_int_equal(d.calls, 0);
    policyd_eval_cancel(&ev);
    assert_int_equal(f.cancelled, 1);
    memset(&ev, 0, sizeof(ev));
    policyd_eval_start(&ev, c, &req, 0, done_cb, &d);
    policyd_eval_cancel(&ev);
    assert_int_equal(f.cancelled, 3);
    assert_int_equal(d.calls, 0);
    policyd_eval_cancel(&ev);
    assert_int_equal(f.cancelled, 3);

    policy_request_close(&req);
    policyd_checks_free(&c);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_lists),
        cmocka_unit_test(test_list_file_errors),
        cmocka_unit_test(test_startup_errors),
        cmocka_unit_test(test_helo),
        cmocka_unit_test(test_address_lists),
        cmocka_unit_test(test_rate_limits),
        cmocka_unit_test(test_async_pipeline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
