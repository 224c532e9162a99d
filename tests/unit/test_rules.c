/* Unit tests for osp_rules: lexer and parser errors, every relation on
 * every field type, precedence, cost ordering, regex limits, networks,
 * multi-valued fields, rule set override, and the default rule set. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "osp_buf.h"
#include "osp_mime.h"
#include "osp_rules.h"

static const char sample_msg[] =
    "Received: from a.example by b.example\r\n"
    "Received: from c.example by d.example\r\n"
    "From: \"Carol Sender\" <carol@sender.example>\r\n"
    "To: Bob <bob@rcpt.example>, dave@other.example (Dave D)\r\n"
    "Subject: =?utf-8?Q?Quarterly_report?=\r\n"
    "Date: Tue, 4 Mar 2025 10:15:00 +0100\r\n"
    "Message-ID: <1234@sender.example>\r\n"
    "X-Mailer: TestMailer 1.0\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"BB\"\r\n"
    "\r\n"
    "--BB\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Hello, the report is at http://reports.example/q1 and http://198.51.100.9/x\r\n"
    "--BB\r\n"
    "Content-Type: application/pdf; name=\"report.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQKJcfs\r\n"
    "--BB--\r\n";

struct env {
    osp_mime_message_t *msg;
    osp_rules_ctx_t ctx;
    osp_rules_scratch_t *sc;
};

static const char *const rcpts[] = { "bob@rcpt.example", "Eve@Other.example" };
static const char *const lists[] = { "zen.spamhaus.org" };

static void env_init(struct env *e)
{
    e->msg = osp_mime_parse(sample_msg, strlen(sample_msg), NULL);
    osp_rules_ctx_init(&e->ctx);
    e->ctx.msg = e->msg;
    e->ctx.sender = "carol@sender.example";
    e->ctx.recipients = rcpts;
    e->ctx.n_recipients = 2;
    e->ctx.client_address = "2001:db8::25";
    e->ctx.client_name = "mx.sender.example";
    e->ctx.helo = "mx.sender.example";
    e->ctx.spf = "pass";
    e->ctx.dkim = "none";
    e->ctx.dmarc = "fail";
    e->ctx.bayes = 0.42;
    e->ctx.dnsbl = lists;
    e->ctx.n_dnsbl = 1;
    e->sc = osp_rules_scratch_create();
}

static void env_close(struct env *e)
{
    osp_mime_message_free(&e->msg);
    osp_rules_scratch_free(&e->sc);
}

static osp_rules_t *compile_ok(const char *src)
{
    osp_buf_t err;
    size_t n = 0;
    osp_rules_t *rs;

    osp_buf_init(&err, OSP_BUF_UNLIMITED);
    rs = osp_rules_compile(src, strlen(src), "t", NULL, &err, &n);
    if (rs == NULL)
        fail_msg("compile failed for %s:\n%s", src, osp_buf_cstr(&err));
    assert_int_equal(n, 0);
    osp_buf_close(&err);
    return rs;
}

/* Does "rule R: EXPR => score 1" hit? -1 if it had a regex error. */
static int expr_hits(struct env *e, const char *expr)
{
    char src[2048];
    osp_rules_t *rs;
    osp_rules_result_t res;
    int hit;

    snprintf(src, sizeof(src), "rule R: %s => score 1", expr);
    rs = compile_ok(src);
    osp_rules_result_init(&res);
    osp_rules_eval(rs, &e->ctx, e->sc, &res);
    hit = res.n_errors > 0 ? -1 : (int)res.n_hits;
    osp_rules_result_close(&res);
    osp_rules_free(&rs);
    return hit;
}

/* ---- Errors ----------------------------------------------------------- */

static const struct {
    const char *src;
    const char *errors;
} error_cases[] = {
    { "rule A: subject containz \"x\" => score 1",
      "t:1:17: expected a relation (is, is not, contains, matches, in, not in, <, >, <=, >=, "
      "exists) after field \"subject\", got \"containz\"\n" },
    { "\n\nrule FOO: subject is \"a\" and subjet contains \"x\" => score 1",
      "t:3:30: unknown field \"subjet\", did you mean \"subject\"?\n" },
    { "rule A: body matches /(ab/ => score 1",
      "t:1:26: bad regular expression: missing closing parenthesis at offset 3\n" },
    { "rule A: body matches /ab/q => score 1",
      "t:1:26: unknown regular expression flag \"q\" (use i, m, s or x)\n" },
    { "rule A: body matches /ab => score 1\nrule B: size > 10 => score 1",
      "t:1:22: unterminated regular expression (missing closing \"/\")\n" },
    { "rule A: subject is \"abc => score 1",
      "t:1:20: unterminated string\n" },
    { "rule A: size > \"big\" => score 1",
      "t:1:16: expected a number after \">\", got \"big\"\n" },
    { "rule A: subject < 3 => score 1",
      "t:1:17: relation \"<\" applies to number fields; \"subject\" is a text field\n" },
    { "rule A: size contains \"1\" => score 1",
      "t:1:14: relation \"contains\" does not apply to the number field \"size\" "
      "(use is, <, >, <=, >=, exists)\n" },
    { "rule A: subject in \"10.0.0.0/8\" => score 1",
      "t:1:17: relation \"in\" applies to address fields (client.address, url.host); "
      "\"subject\" is a text field\n" },
    { "rule A: client.address in \"10.0.0.1/8\" => score 1",
      "t:1:27: non-null host address bits in \"10.0.0.1/8\", perhaps you should use \"10.0.0.0/8\"\n" },
    { "rule A: anomaly contains \"html_invisble\" => score 1",
      "t:1:26: unknown anomaly \"html_invisble\", did you mean \"html_invisible\"?\n" },
    { "rule A: size > 1 => action quarantin",
      "t:1:28: unknown action \"quarantin\" (deliver, tag, discard, quarantine, reject), "
      "did you mean \"quarantine\"?\n" },
    { "rule A: size > 1 =>",
      "t:1:20: expected \"score\" or \"action\" after \"=>\", got end of file\n" },
    { "rule A: (size > 1 or bayes > 0.5 => score 1",
      "t:1:34: expected \")\" to close the \"(\" at 1:9, got \"=>\"\n" },
    { "rule A size > 1 => score 1",
      "t:1:8: expected \":\" after rule name \"A\", got \"size\"\n" },
    { "rule A: size > 1 => score 1\nrule A: size > 2 => score 1",
      "t:2:6: rule \"A\" already defined at line 1\n" },
    { "rule A: header X exists => score 1",
      "t:1:16: expected a header field name in quotes after \"header\", got \"X\"\n" },
    { "frobnicate\nrule A: size > 1 => score 1",
      "t:1:1: expected \"rule\" or \"disable\", got \"frobnicate\"\n" },
    { "rule A: size > 1 => score 1 extra",
      "t:1:29: expected \"rule\", \"disable\" or end of file after rule \"A\", got \"extra\"\n" },
    { "rule A: size @ 1 => score 1",
      "t:1:14: unexpected character \"@\"\n" },
    /* Several errors, recovery at the next rule. */
    { "rule A: subjekt is \"x\" => score 1\n"
      "rule B: size > 1 => score 1\n"
      "rule C: body matches /[/ => score 1\n"
      "rule D: body => score 1\n",
      "t:1:9: unknown field \"subjekt\", did you mean \"subject\"?\n"
      "t:3:24: bad regular expression: missing terminating ] for character class at offset 1\n"
      "t:4:14: expected a relation (is, is not, contains, matches, in, not in, <, >, <=, >=, "
      "exists) after field \"body\", got \"=>\"\n" },
};

static void test_errors(void **state)
{
    size_t i, bad = 0;

    (void)state;
    for (i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        osp_buf_t err;
        size_t n = 0;
        osp_rules_t *rs;

        osp_buf_init(&err, OSP_BUF_UNLIMITED);
        rs = osp_rules_compile(error_cases[i].src, strlen(error_cases[i].src), "t", NULL, &err, &n);
        if (rs != NULL || strcmp(osp_buf_cstr(&err), error_cases[i].errors) != 0)
            print_error("case %zu: %s\nexpected: %sgot:      %s", i, error_cases[i].src,
                     error_cases[i].errors, osp_buf_cstr(&err)), bad++;
        assert_true(n >= 1);
        osp_buf_close(&err);
    }
    assert_int_equal(bad, 0);
}

static void test_good_syntax(void **state)
{
    static const char src[] =
        "# comment\n"
        "rule FORGED_OUTLOOK_ID: header \"X-Mailer\" contains \"Outlook\" and\n"
        "    header \"Message-ID\" not matches /^<[0-9A-F]{28}@/ # trailing comment\n"
        "    => score 2.5 \"Outlook X-Mailer with a non-Outlook Message-ID\"\n"
        "rule BLOCK_EXE: attachment.name matches /\\.(exe|scr|pif)$/i => action quarantine\n"
        "rule BOTH: size >= 1k and size <= 10m => score -0.5 action tag\n"
        "rule BOTH2: not (bayes < 0.5) => action reject score 3 \"d\"\n"
        "rule LIST: client.address not in [\"192.0.2.0/24\", \"2001:db8::/32 10.0.0.0/8\"] => score 1\n"
        "disable SOMETHING\n";
    osp_rules_t *rs = compile_ok(src);

    assert_int_equal(osp_rules_count(rs), 5);
    assert_string_equal(osp_rules_name(rs, 0), "FORGED_OUTLOOK_ID");
    assert_string_equal(osp_rules_name(rs, 4), "LIST");
    assert_null(osp_rules_name(rs, 5));
    osp_rules_free(&rs);
    assert_null(rs);
    osp_rules_free(&rs);
}

/* ---- Relations on every field ------------------------------------------ */

static const struct {
    const char *expr;
    int hit;
} rel_cases[] = {
    /* envelope */
    { "sender is \"CAROL@sender.example\"", 1 },
    { "sender is not \"carol@sender.example\"", 0 },
    { "sender contains \"@SENDER\"", 1 },
    { "sender matches /^carol@/", 1 },
    { "sender matches /^CAROL@/", 0 },
    { "sender matches /^CAROL@/i", 1 },
    { "sender exists", 1 },
    { "sender not exists", 0 },
    { "recipient is \"eve@other.example\"", 1 },
    { "recipient is not \"eve@other.example\"", 0 },
    { "recipient is not \"zed@other.example\"", 1 },
    { "recipient contains \"rcpt\"", 1 },
    { "recipient not contains \"example\"", 0 },
    { "recipient matches /^bob@/", 1 },
    { "recipient.count is 2", 1 },
    { "recipient.count > 1 and recipient.count < 3", 1 },
    { "client.address in \"2001:db8::/32\"", 1 },
    { "client.address in [\"192.0.2.0/24\", \"2001:db8::/48\"]", 1 },
    { "client.address in \"2001:db9::/32, 10.0.0.0/8\"", 0 },
    { "client.address not in \"2001:db9::/32\"", 1 },
    { "client.address not in \"::/0\"", 0 },
    { "client.address is \"2001:DB8::25\"", 1 },
    { "client.name contains \"sender\"", 1 },
    { "helo is \"mx.sender.example\"", 1 },
    { "helo matches /^\\[/", 0 },
    { "spf is \"PASS\"", 1 },
    { "dkim is \"none\"", 1 },
    { "dmarc is not \"pass\"", 1 },
    { "dnsbl exists", 1 },
    { "dnsbl contains \"spamhaus\"", 1 },
    { "bayes > 0.4 and bayes < 0.5", 1 },
    { "bayes is 0.42", 1 },
    { "bayes >= 0.42 and bayes <= 0.42", 1 },
    { "bayes exists", 1 },
    /* headers */
    { "header \"received\" exists", 1 },
    { "header \"X-Nope\" exists", 0 },
    { "header \"X-Nope\" not exists", 1 },
    { "header \"Received\" contains \"c.example\"", 1 },
    { "header \"Received\" matches /^from a\\./", 1 },
    { "header \"Received\" not matches /^from z/", 1 },
    { "header \"X-Nope\" not matches /x/", 1 },
    { "header \"X-Nope\" is \"\"", 0 },
    { "header \"X-Mailer\" is \"testmailer 1.0\"", 1 },
    { "subject is \"quarterly report\"", 1 },
    { "subject contains \"REPORT\"", 1 },
    { "subject matches /^Quarterly report$/", 1 },
    { "from.name is \"Carol Sender\"", 1 },
    { "from.address is \"carol@sender.example\"", 1 },
    { "from.domain is \"sender.example\"", 1 },
    { "to.name is \"Dave D\"", 1 },
    { "to.name is \"Bob\"", 1 },
    { "to.address is \"dave@other.example\"", 1 },
    { "to.domain is \"rcpt.example\"", 1 },
    { "to.domain is not \"rcpt.example\"", 0 },
    /* body, URLs, parts */
    { "body contains \"THE REPORT\"", 1 },
    { "body matches /report is at/", 1 },
    { "body contains \"absent\"", 0 },
    { "body.invisible exists", 0 },
    { "url contains \"reports.example/q1\"", 1 },
    { "url matches /^http:\\/\\/198\\./", 1 },
    { "url.host is \"reports.example\"", 1 },
    { "url.host in \"198.51.100.0/24\"", 1 },
    { "url.host in \"203.0.113.0/24\"", 0 },
    { "url.count is 2", 1 },
    { "attachment.name is \"report.pdf\"", 1 },
    { "attachment.name matches /\\.exe$/i", 0 },
    { "attachment.type is \"application/pdf\"", 1 },
    { "attachment.sniffed is \"application/pdf\"", 1 },
    { "attachment.count > 0", 1 },
    { "part.type is \"text/plain\"", 1 },
    { "part.encoding is \"base64\"", 1 },
    { "part.charset is \"utf-8\"", 1 },
    { "size > 100 and size < 10k", 1 },
    { "anomaly contains \"html_invisible\"", 0 },
    { "anomaly not contains \"html_invisible\"", 1 },
    { "anomaly matches /^zzz/", 0 },
    /* precedence: and binds tighter than or; not binds tightest */
    { "size < 0 and size < 0 or size > 0", 1 },
    { "size > 0 or size < 0 and size < 0", 1 },
    { "(size > 0 or size < 0) and size < 0", 0 },
    { "not size < 0 and size > 0", 1 },
    { "not (size < 0 or size > 0)", 0 },
    { "not not sender exists", 1 },
    { "((((sender exists))))", 1 },
    { "sender not exists or body contains \"hello\" and not subject is \"x\"", 1 },
};

static void test_relations(void **state)
{
    struct env e;
    size_t i;

    (void)state;
    env_init(&e);
    for (i = 0; i < sizeof(rel_cases) / sizeof(rel_cases[0]); i++) {
        int got = expr_hits(&e, rel_cases[i].expr);

        if (got != rel_cases[i].hit)
            fail_msg("case %zu: %s: expected %d, got %d", i, rel_cases[i].expr,
                     rel_cases[i].hit, got);
    }
    env_close(&e);
}

static void test_absent_fields(void **state)
{
    struct env e;
    const osp_mime_message_t *m;

    (void)state;
    env_init(&e);
    m = e.ctx.msg;
    osp_rules_ctx_init(&e.ctx);
    /* Nothing supplied: positive relations fail, negated ones hold. */
    assert_int_equal(expr_hits(&e, "sender exists"), 0);
    assert_int_equal(expr_hits(&e, "sender is not \"x\""), 1);
    assert_int_equal(expr_hits(&e, "bayes exists"), 0);
    assert_int_equal(expr_hits(&e, "bayes < 0.5"), 0);
    assert_int_equal(expr_hits(&e, "bayes > 0.5"), 0);
    assert_int_equal(expr_hits(&e, "subject exists"), 0);
    assert_int_equal(expr_hits(&e, "body contains \"\""), 0);
    assert_int_equal(expr_hits(&e, "size exists"), 0);
    assert_int_equal(expr_hits(&e, "client.address not in \"0.0.0.0/0\""), 1);
    assert_int_equal(expr_hits(&e, "anomaly exists"), 0);
    e.ctx.msg = m;
    e.ctx.sender = "";
    assert_int_equal(expr_hits(&e, "sender is \"\""), 1);
    assert_int_equal(expr_hits(&e, "size exists"), 1);
    env_close(&e);
}

/* ---- Cost ordering ---------------------------------------------------- */

static void test_cost_order(void **state)
{
    /* Each expression written in several operand orders must agree. */
    static const char *const groups[][3] = {
        { "body contains \"hello\" and sender exists and url.count > 5",
          "url.count > 5 and body contains \"hello\" and sender exists",
          "sender exists and url.count > 5 and body contains \"hello\"" },
        { "body matches /report/ or sender is \"x\" or size < 0",
          "size < 0 or body matches /report/ or sender is \"x\"",
          "sender is \"x\" or size < 0 or body matches /report/" },
        { "(body contains \"x\" or subject contains \"report\") and not header \"X-Mailer\" contains \"z\"",
          "not header \"X-Mailer\" contains \"z\" and (subject contains \"report\" or body contains \"x\")",
          "not header \"X-Mailer\" contains \"z\" and (body contains \"x\" or subject contains \"report\")" },
    };
    struct env e;
    size_t i;

    (void)state;
    env_init(&e);
    for (i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        int a = expr_hits(&e, groups[i][0]);

        assert_int_equal(a, expr_hits(&e, groups[i][1]));
        assert_int_equal(a, expr_hits(&e, groups[i][2]));
    }
    assert_int_equal(expr_hits(&e, groups[0][0]), 0);
    assert_int_equal(expr_hits(&e, groups[1][0]), 1);
    assert_int_equal(expr_hits(&e, groups[2][0]), 1);
    env_close(&e);
}

/* ---- Regex limits ----------------------------------------------------- */

static void test_regex_limits(void **state)
{
    static const char src[] =
        "rule CATASTROPHIC: body matches /(a+)+$/ => score 5\n"
        "rule NEGATED: body not matches /(a+)+$/ => score 5\n"
        "rule FINE: body contains \"aaa\" => score 1\n";
    char *text = malloc(20002);
    osp_mime_message_t *m;
    osp_rules_t *rs = compile_ok(src);
    osp_rules_ctx_t ctx;
    osp_rules_result_t res;
    osp_rules_scratch_t *sc = osp_rules_scratch_create();
    clock_t t0;
    double secs;
    size_t hdr;

    (void)state;
    hdr = (size_t)sprintf(text, "Subject: x\n\n");
    memset(text + hdr, 'a', 20000 - hdr - 1);
    text[20000 - 1] = 'b';
    text[20000] = '\0';
    m = osp_mime_parse(text, 20000, NULL);
    osp_rules_ctx_init(&ctx);
    ctx.msg = m;
    osp_rules_result_init(&res);
    t0 = clock();
    osp_rules_eval(rs, &ctx, sc, &res);
    secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_true(secs < 2.0);
    assert_int_equal(res.n_hits, 1);
    assert_string_equal(res.hits[0].name, "FINE");
    assert_int_equal(res.n_errors, 2);
    assert_string_equal(res.error_rule, "CATASTROPHIC");
    osp_rules_result_close(&res);
    osp_rules_scratch_free(&sc);
    osp_rules_free(&rs);
    osp_mime_message_free(&m);
    free(text);
}

/* ---- Results, actions, override --------------------------------------- */

static void test_actions_and_scores(void **state)
{
    static const char src[] =
        "rule T: sender exists => score 1.5 action tag\n"
        "rule Q: sender exists => action quarantine\n"
        "rule D: sender exists => score -0.5 action discard \"drop it\"\n"
        "rule N: sender not exists => action reject\n";
    struct env e;
    osp_rules_t *rs;
    osp_rules_result_t res;

    (void)state;
    env_init(&e);
    rs = compile_ok(src);
    osp_rules_result_init(&res);
    osp_rules_eval(rs, &e.ctx, e.sc, &res);
    assert_int_equal(res.n_hits, 3);
    assert_true(res.score > 0.99 && res.score < 1.01);
    assert_int_equal(res.action, OSP_RULES_QUARANTINE);
    assert_string_equal(res.hits[0].name, "T");
    assert_string_equal(res.hits[1].description, "Q");
    assert_string_equal(res.hits[2].description, "drop it");
    assert_int_equal(res.hits[2].action, OSP_RULES_DISCARD);
    osp_rules_result_reset(&res);
    assert_int_equal(res.n_hits, 0);
    assert_int_equal(res.action, OSP_RULES_DELIVER);
    osp_rules_result_close(&res);
    osp_rules_free(&rs);
    env_close(&e);
    assert_string_equal(osp_rules_action_name(OSP_RULES_REJECT), "reject");
    assert_true(OSP_RULES_REJECT > OSP_RULES_QUARANTINE && OSP_RULES_QUARANTINE > OSP_RULES_DISCARD
                && OSP_RULES_DISCARD > OSP_RULES_TAG && OSP_RULES_TAG > OSP_RULES_DELIVER);
}

static void test_override(void **state)
{
    osp_rules_t *sets[4];
    struct env e;
    osp_rules_result_t res;

    (void)state;
    env_init(&e);
    sets[0] = compile_ok("rule A: sender exists => score 1\n"
                         "rule B: sender exists => score 2\n"
                         "rule C: sender exists => score 4\n");
    sets[1] = compile_ok("rule A: sender exists => score 10 \"reseller A\"\n"
                         "disable C\n");
    sets[2] = NULL;
    sets[3] = compile_ok("rule B: sender not exists => score 100\n"
                         "rule E: sender exists => action tag\n");
    osp_rules_result_init(&res);
    osp_rules_eval_sets((const osp_rules_t *const *)sets, 4, &e.ctx, e.sc, &res);
    /* A from set 1 (overrides set 0), B replaced by a non-hitting rule,
     * C disabled, E added. */
    assert_int_equal(res.n_hits, 2);
    assert_string_equal(res.hits[0].description, "reseller A");
    assert_string_equal(res.hits[1].name, "E");
    assert_true(res.score > 9.99 && res.score < 10.01);
    assert_int_equal(res.action, OSP_RULES_TAG);
    osp_rules_result_close(&res);
    osp_rules_free(&sets[0]);
    osp_rules_free(&sets[1]);
    osp_rules_free(&sets[3]);
    env_close(&e);
}

/* ---- Default rule set and sample messages ----------------------------- */

static char *data_path(const char *rel)
{
    const char *top = getenv("top_srcdir");
    char *p;

    if (top == NULL)
        top = ".";
    p = malloc(strlen(top) + strlen(rel) + 2);
    sprintf(p, "%s/%s", top, rel);
    return p;
}

static osp_mime_message_t *load_msg(const char *rel)
{
    char *path = data_path(rel);
    FILE *f = fopen(path, "rb");
    osp_buf_t b;
    char chunk[4096];
    size_t n;
    osp_mime_message_t *m;

    if (f == NULL)
        fail_msg("cannot open %s", path);
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(osp_buf_append(&b, chunk, n), 0);
    fclose(f);
    m = osp_mime_parse(b.data, b.len, NULL);
    osp_buf_close(&b);
    free(path);
    return m;
}

static bool has_hit(const osp_rules_result_t *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->n_hits; i++)
        if (strcmp(r->hits[i].name, name) == 0)
            return true;
    return false;
}

static void test_default_rules(void **state)
{
    static const struct {
        const char *file;
        double bayes;
        const char *expect[8];
        const char *not_expect[4];
        double min_score, max_score;
        enum osp_rules_action action;
    } cases[] = {
        { "tests/data/rules/ham.eml", 0.002, { "BAYES_00" }, { "MISSING_DATE", "HTML_ONLY" },
          -10, 0, OSP_RULES_DELIVER },
        { "tests/data/rules/ham.eml", -1, { NULL }, { "BAYES_00" }, 0, 0, OSP_RULES_DELIVER },
        { "tests/data/rules/exe.eml", -1, { "ATTACH_EXECUTABLE", "ATTACH_DOUBLE_EXT",
          "ATTACH_RISKY_NAME" }, { NULL }, 5, 100, OSP_RULES_QUARANTINE },
        { "tests/data/rules/spammy.eml", 0.995, { "BAYES_99", "MISSING_DATE", "MISSING_MID",
          "TO_UNDISCLOSED", "SUBJ_ALL_CAPS", "SUBJ_EXCLAIM", "BODY_HIDDEN_TEXT",
          "URL_NUMERIC_IP" }, { "BAYES_90" }, 5, 100, OSP_RULES_DELIVER },
        { "tests/data/rules/spammy.eml", -1, { "URL_LINK_MISMATCH", "BODY_NOT_SPAM_CLAIM",
          "HTML_ONLY", "FROM_NUMERIC_LOCAL", "URL_FORM_CGI_REMOVE" }, { NULL }, 5, 100,
          OSP_RULES_DELIVER },
    };
    char *path = data_path("conf/default.rules");
    osp_buf_t err;
    size_t n_err = 0, i, j;
    osp_rules_t *rs;
    osp_rules_scratch_t *sc = osp_rules_scratch_create();

    (void)state;
    osp_buf_init(&err, OSP_BUF_UNLIMITED);
    rs = osp_rules_load_file(path, NULL, &err, &n_err);
    if (rs == NULL)
        fail_msg("%s", osp_buf_cstr(&err));
    assert_true(osp_rules_count(rs) > 30);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_mime_message_t *m = load_msg(cases[i].file);
        osp_rules_ctx_t ctx;
        osp_rules_result_t res;

        osp_rules_ctx_init(&ctx);
        ctx.msg = m;
        ctx.bayes = cases[i].bayes;
        osp_rules_result_init(&res);
        osp_rules_eval(rs, &ctx, sc, &res);
        for (j = 0; j < 8 && cases[i].expect[j] != NULL; j++)
            if (!has_hit(&res, cases[i].expect[j]))
                fail_msg("case %zu (%s): %s did not hit", i, cases[i].file, cases[i].expect[j]);
        for (j = 0; j < 4 && cases[i].not_expect[j] != NULL; j++)
            if (has_hit(&res, cases[i].not_expect[j]))
                fail_msg("case %zu (%s): %s hit", i, cases[i].file, cases[i].not_expect[j]);
        if (res.score < cases[i].min_score || res.score > cases[i].max_score)
            fail_msg("case %zu (%s): score %.2f", i, cases[i].file, res.score);
        assert_int_equal(res.action, cases[i].action);
        assert_int_equal(res.n_errors, 0);
        osp_rules_result_close(&res);
        osp_mime_message_free(&m);
    }
    osp_rules_free(&rs);
    osp_rules_scratch_free(&sc);
    osp_buf_close(&err);
    free(path);
}

static void test_load_file_errors(void **state)
{
    osp_buf_t err;
    size_t n = 0;

    (void)state;
    osp_buf_init(&err, OSP_BUF_UNLIMITED);
    assert_null(osp_rules_load_file("/nonexistent/x.rules", NULL, &err, &n));
    assert_int_equal(n, 1);
    assert_string_equal(osp_buf_cstr(&err), "/nonexistent/x.rules: cannot read: No such file or directory\n");
    osp_buf_close(&err);
}

/* Every prefix of a valid file must compile or fail cleanly (no crash, no leak). */
static void test_prefixes(void **state)
{
    static const char src[] =
        "rule A: (header \"X\" not matches /a\\/b/i or client.address in [\"::1\", \"10.0.0.0/8\"])\n"
        "  and not size > 1k => score -1.5 action tag \"desc \\\"q\\\"\"\n";
    size_t len = strlen(src), i;

    (void)state;
    for (i = 0; i <= len; i++) {
        osp_buf_t err;
        size_t n = 0;
        osp_rules_t *rs;

        osp_buf_init(&err, OSP_BUF_UNLIMITED);
        rs = osp_rules_compile(src, i, "t", NULL, &err, &n);
        assert_true((rs != NULL) == (n == 0));
        osp_rules_free(&rs);
        osp_buf_close(&err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_good_syntax),
        cmocka_unit_test(test_relations),
        cmocka_unit_test(test_absent_fields),
        cmocka_unit_test(test_cost_order),
        cmocka_unit_test(test_regex_limits),
        cmocka_unit_test(test_actions_and_scores),
        cmocka_unit_test(test_override),
        cmocka_unit_test(test_default_rules),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_prefixes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
