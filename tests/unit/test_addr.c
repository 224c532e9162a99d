/* Unit tests for osp_addr: path parsing, formatting, equality, domains. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_addr.h"
#include "osp_buf.h"

/* Long strings, built by the preprocessor. */
#define A10 "aaaaaaaaaa"
#define A57 A10 A10 A10 A10 A10 "aaaaaaa"
#define A58 A57 "a"
#define A63 A10 A10 A10 A10 A10 A10 "aaa"
#define A64 A63 "a"
#define A65 A64 "a"
#define Q63 "\"" A63 "\""                                 /* 65 octets */
#define D189 A63 "." A63 "." A57 ".com"                    /* 189 */
#define D190 A63 "." A63 "." A58 ".com"                    /* 190 */
#define D253 A63 "." A63 "." A63 "." A57 ".com"            /* 253 */
#define D254 A63 "." A63 "." A63 "." A58 ".com"            /* 254 */
#define D255 A63 "." A63 "." A63 "." A63                   /* 255 */
#define D256 "b." D254                                     /* 256 */

_Static_assert(sizeof(A64) - 1 == 64, "A64");
_Static_assert(sizeof(Q63) - 1 == 65, "Q63");
_Static_assert(sizeof(D189) - 1 == 189, "D189");
_Static_assert(sizeof(D190) - 1 == 190, "D190");
_Static_assert(sizeof(D253) - 1 == 253, "D253");
_Static_assert(sizeof(D254) - 1 == 254, "D254");
_Static_assert(sizeof(D255) - 1 == 255, "D255");
_Static_assert(sizeof(D256) - 1 == 256, "D256");

#define MF   OSP_ADDR_MAIL_FROM
#define RT   OSP_ADDR_RCPT_TO
#define U8   OSP_ADDR_SMTPUTF8
#define INT  OSP_ADDR_INTERNAL
#define REQ  OSP_ADDR_REQUIRE_BRACKETS

#define F_NULL  OSP_ADDR_F_NULL
#define F_SR    OSP_ADDR_F_SOURCE_ROUTE
#define F_Q     OSP_ADDR_F_QUOTED
#define F_U8    OSP_ADDR_F_UTF8
#define F_ND    OSP_ADDR_F_NO_DOMAIN
#define F_LIT   OSP_ADDR_F_LITERAL
#define F_BR    OSP_ADDR_F_BRACKETS

struct parse_case {
    const char *in;
    size_t len;             /* literal's size, so inputs may hold NUL */
    unsigned flags;
    const char *local;      /* expected on success */
    const char *domain;
    const char *norm;
    unsigned rflags;
    const char *error;      /* expected error; NULL: must succeed */
};

#define OK(in, fl, lo, dom, norm, rf) { in, sizeof(in) - 1, fl, lo, dom, norm, rf, NULL }
#define ERR(in, fl, err) { in, sizeof(in) - 1, fl, NULL, NULL, NULL, 0, err }

static const struct parse_case parse_cases[] = {
    /* Plain addresses, brackets present or not. */
    OK("<user@example.com>", MF, "user", "example.com", "example.com", F_BR),
    OK("user@example.com", MF, "user", "example.com", "example.com", 0),
    OK("<User.Name+tag@Example.COM>", 0, "User.Name+tag", "Example.COM", "example.com", F_BR),
    OK("  <user@example.com>", 0, "user", "example.com", "example.com", F_BR),
    OK("<user@example.com> \t", 0, "user", "example.com", "example.com", F_BR),
    OK("<!#$%&'*+-/=?^_`{|}~@example.com>", 0, "!#$%&'*+-/=?^_`{|}~", "example.com", "example.com", F_BR),
    OK("<user@localhost>", 0, "user", "localhost", "localhost", F_BR),
    OK("<user@a-b.123.example>", 0, "user", "a-b.123.example", "a-b.123.example", F_BR),
    OK("<user@example.com.>", 0, "user", "example.com.", "example.com", F_BR),
    OK("<" A64 "@example.com>", 0, A64, "example.com", "example.com", F_BR),
    OK("<" A64 "@" D189 ">", 0, A64, D189, D189, F_BR),           /* path 256 */

    /* Null sender. */
    OK("<>", MF, "", "", "", F_NULL | F_BR),
    OK(" <>", MF, "", "", "", F_NULL | F_BR),
    OK("", INT | MF, "", "", "", F_NULL),

    /* Source routes are dropped. */
    OK("<@a.example,@b.example:user@example.com>", 0, "user", "example.com", "example.com", F_SR | F_BR),
    OK("<@relay.example:user@example.com>", 0, "user", "example.com", "example.com", F_SR | F_BR),
    OK("@relay.example:user@example.com", 0, "user", "example.com", "example.com", F_SR),
    OK("<@[192.0.2.1],@[IPv6:2001:db8::1]:user@example.com>", 0, "user", "example.com", "example.com", F_SR | F_BR),

    /* Quoted local parts. */
    OK("<\"john doe\"@example.com>", 0, "john doe", "example.com", "example.com", F_Q | F_BR),
    OK("<\"john \\\"jd\\\" doe\"@example.com>", 0, "john \"jd\" doe", "example.com", "example.com", F_Q | F_BR),
    OK("<\"a\\\\b\"@example.com>", 0, "a\\b", "example.com", "example.com", F_Q | F_BR),
    OK("<\"a..b.\"@example.com>", 0, "a..b.", "example.com", "example.com", F_Q | F_BR),
    OK("<\"john@home\"@example.com>", 0, "john@home", "example.com", "example.com", F_Q | F_BR),
    OK("<\"user\"@example.com>", 0, "user", "example.com", "example.com", F_Q | F_BR),
    OK("\"john doe\"@example.com", 0, "john doe", "example.com", "example.com", F_Q),
    OK("<" Q63 "@x.example>", OSP_ADDR_ALLOW_LONG_LOCAL, A63, "x.example", "x.example", F_Q | F_BR),

    /* Without a domain. */
    OK("<postmaster>", RT, "postmaster", "", "", F_ND | F_BR),
    OK("<PostMaster>", RT, "PostMaster", "", "", F_ND | F_BR),
    OK("postmaster", RT, "postmaster", "", "", F_ND),
    OK("<\"postmaster\">", RT, "postmaster", "", "", F_ND | F_Q | F_BR),
    OK("<user>", OSP_ADDR_ALLOW_NO_DOMAIN, "user", "", "", F_ND | F_BR),

    /* SMTPUTF8 and IDNA. */
    OK("<jöhn@bücher.example>", U8, "jöhn", "bücher.example", "xn--bcher-kva.example", F_U8 | F_BR),
    OK("<用户@例え.テスト>", U8, "用户", "例え.テスト", "xn--r8jz45g.xn--zckzah", F_U8 | F_BR),
    OK("<\"jö hn\"@example.com>", U8, "jö hn", "example.com", "example.com", F_Q | F_U8 | F_BR),
    OK("<user@Bücher.Example>", U8, "user", "Bücher.Example", "xn--bcher-kva.example", F_U8 | F_BR),
    OK("<user@BÜCHER.example.>", U8, "user", "BÜCHER.example.", "xn--bcher-kva.example", F_U8 | F_BR),
    OK("<user@faß.de>", U8, "user", "faß.de", "xn--fa-hia.de", F_U8 | F_BR),
    OK("<user@XN--BCHER-KVA.EXAMPLE>", 0, "user", "XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example", F_BR),
    OK("<user@example.com>", U8, "user", "example.com", "example.com", F_BR),

    /* Address literals. */
    OK("<user@[192.0.2.1]>", 0, "user", "[192.0.2.1]", "[192.0.2.1]", F_LIT | F_BR),
    OK("<user@[IPv6:2001:DB8:0:0::1]>", 0, "user", "[IPv6:2001:DB8:0:0::1]", "[IPv6:2001:db8::1]", F_LIT | F_BR),
    OK("<user@[ipv6:::1]>", 0, "user", "[ipv6:::1]", "[IPv6:::1]", F_LIT | F_BR),
    OK("<user@[IPv6:::ffff:192.0.2.1]>", 0, "user", "[IPv6:::ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]", F_LIT | F_BR),
    OK("user@[192.0.2.1]", 0, "user", "[192.0.2.1]", "[192.0.2.1]", F_LIT),

    /* Leniency flags. */
    OK("<taro..yamada.@docomo.ne.jp>", OSP_ADDR_ALLOW_BAD_DOTS, "taro..yamada.", "docomo.ne.jp", "docomo.ne.jp", F_BR),
    OK("<.user@example.com>", OSP_ADDR_ALLOW_BAD_DOTS, ".user", "example.com", "example.com", F_BR),
    OK("<" A65 "@example.com>", OSP_ADDR_ALLOW_LONG_LOCAL, A65, "example.com", "example.com", F_BR),
    OK("<user@host_1.example.com>", OSP_ADDR_ALLOW_UNDERSCORE, "user", "host_1.example.com", "host_1.example.com", F_BR),
    OK("<user@host_1.example.com>", OSP_ADDR_LENIENT, "user", "host_1.example.com", "host_1.example.com", F_BR),
    OK("<user>", OSP_ADDR_LENIENT, "user", "", "", F_ND | F_BR),

    /* Postfix internal form (policy attributes). */
    OK("john doe@example.com", INT, "john doe", "example.com", "example.com", F_Q),
    OK("a\"b@example.com", INT, "a\"b", "example.com", "example.com", F_Q),
    OK("a@b@example.com", INT, "a@b", "example.com", "example.com", F_Q),
    OK("user@Example.COM", INT, "user", "Example.COM", "example.com", 0),
    OK("taro..yamada.@docomo.ne.jp", INT, "taro..yamada.", "docomo.ne.jp", "docomo.ne.jp", F_Q),
    OK("<user@example.com", INT, "<user", "example.com", "example.com", F_Q),
    OK("postmaster", INT | RT, "postmaster", "", "", F_ND),
    ERR("\"postmaster\"", INT | RT, "missing @ in address"),
    OK("jöhn@bücher.example", INT | U8, "jöhn", "bücher.example", "xn--bcher-kva.example", F_U8),
    OK("user@[IPv6:2001:db8::1]", INT, "user", "[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]", F_LIT),
    OK("user@host_1.example", INT | OSP_ADDR_LENIENT, "user", "host_1.example", "host_1.example", 0),

    /* Brackets. */
    ERR("<user@example.com", 0, "unbalanced angle brackets"),
    ERR("user@example.com>", 0, "unbalanced angle brackets"),
    ERR("<<user@example.com>>", 0, "unbalanced angle brackets"),
    ERR("<user@example.com>>", 0, "unbalanced angle brackets"),
    ERR("<user@example.com SIZE=10", 0, "unbalanced angle brackets"),
    ERR("<postmaster", RT, "unbalanced angle brackets"),
    ERR("us<er@example.com", 0, "unbalanced angle brackets"),
    ERR("<", MF, "unbalanced angle brackets"),
    ERR("  <", MF, "unbalanced angle brackets"),
    ERR("user@example.com", REQ, "angle brackets required"),
    ERR("<user@example.com>x", 0, "unexpected text after address"),
    ERR("<user@example.com> x", 0, "unexpected text after address"),
    ERR("user@example.com x", 0, "unexpected text after address"),
    ERR("", 0, "empty address"),
    ERR("  ", MF, "empty address"),

    /* Null address where it is not allowed (RCPT TO:<>). */
    ERR("<>", 0, "null address not allowed"),
    ERR("<>", RT, "null address not allowed"),
    ERR("", INT, "null address not allowed"),

    /* Missing parts. */
    ERR("<userexample.com>", MF, "missing @ in address"),
    ERR("userexample.com", MF, "missing @ in address"),
    ERR("<user>", RT, "missing @ in address"),
    ERR("<postmaster>", MF, "missing @ in address"),
    ERR("userexample.com", INT, "missing @ in address"),
    ERR("<@example.com>", 0, "empty local part"),
    ERR("@example.com", 0, "empty local part"),
    ERR("<\"\"@example.com>", 0, "empty local part"),
    ERR("@example.com", INT, "empty local part"),
    ERR("<@relay.example:>", 0, "empty local part"),
    ERR("<user@>", 0, "empty domain"),
    ERR("user@", 0, "empty domain"),
    ERR("<user@.>", 0, "empty domain"),
    ERR("user@", INT, "empty domain"),

    /* Lengths. */
    ERR("<" A65 "@example.com>", 0, "local part longer than 64 octets"),
    ERR("<" Q63 "@x.example>", 0, "local part longer than 64 octets"),
    ERR(A65 "@example.com", INT, "local part longer than 64 octets"),
    ERR("<x@" D256 ">", 0, "domain longer than 255 octets"),
    ERR("x@" D256, INT, "domain longer than 255 octets"),
    ERR("<x@" D255 ">", 0, "path longer than 256 octets"),
    ERR("<" A64 "@" D190 ">", 0, "path longer than 256 octets"),
    ERR(A64 "@" D190, 0, "path longer than 256 octets"),
    ERR(A64 "@" D190, INT, "path longer than 256 octets"),
    ERR("<" A64 A64 A64 A64 "@example.com>", OSP_ADDR_ALLOW_LONG_LOCAL, "path longer than 256 octets"),
    ERR("<user@" A64 ".com>", 0, "domain label longer than 63 octets"),

    /* Dots. */
    ERR("<user..name@example.com>", 0, "consecutive dots in local part"),
    ERR("<.user@example.com>", 0, "local part starts with a dot"),
    ERR("<user.@example.com>", 0, "local part ends with a dot"),
    ERR("<.@example.com>", 0, "local part starts with a dot"),
    ERR("<user@example..com>", 0, "empty label in domain"),
    ERR("<user@.example.com>", 0, "empty label in domain"),
    ERR("<user@example.com..>", 0, "empty label in domain"),

    /* Characters. */
    ERR("<us er@example.com>", 0, "invalid character in local part"),
    ERR("<us(er)@example.com>", 0, "invalid character in local part"),
    ERR("<us,er@example.com>", 0, "invalid character in local part"),
    ERR("<\"user\"x@example.com>", 0, "invalid character in local part"),
    ERR("<user\"x\"@example.com>", 0, "invalid character in local part"),
    ERR("<user@exa mple.com>", 0, "invalid character in domain"),
    ERR("<user@exam!ple.com>", 0, "invalid character in domain"),
    ERR("<user@a@example.com>", 0, "invalid character in domain"),
    ERR("<user@host_1.example.com>", 0, "invalid character in domain"),
    ERR("<user@example.com >", 0, "invalid character in domain"),
    ERR("<user@-example.com>", 0, "domain label starts with a hyphen"),
    ERR("<user@example-.com>", 0, "domain label ends with a hyphen"),
    ERR("<user@-bücher.example>", U8, "domain label starts with a hyphen"),
    ERR("<user@1.2.3.4>", 0, "top-level domain label is all-numeric"),
    ERR("<\"user@example.com>", 0, "unterminated quoted string"),
    ERR("<\"user\\", 0, "unterminated quoted string"),
    ERR("\"user", 0, "unterminated quoted string"),

    /* Control characters and NUL. */
    ERR("<us\001er@example.com>", 0, "control character in local part"),
    ERR("<us\000er@example.com>", 0, "control character in local part"),
    ERR("<\"us\ter\"@example.com>", 0, "control character in local part"),
    ERR("<\"us\\\001\"@example.com>", 0, "control character in local part"),
    ERR("<\"a\000\"@example.com>", 0, "control character in local part"),
    ERR("<us\177er@example.com>", 0, "control character in local part"),
    ERR("<a\xc2\x85" "b@example.com>", U8, "control character in local part"),
    ERR("user\r@example.com", INT, "control character in local part"),
    ERR("<user@exa\177mple.com>", 0, "control character in domain"),
    ERR("<user@example.com\000>", 0, "control character in domain"),
    ERR("<user@example.com\r\n>", 0, "control character in domain"),
    ERR("user@exa\nmple.com", INT, "control character in domain"),
    ERR("<user@[192.0.2.1\001]>", 0, "control character in domain"),

    /* 8-bit without SMTPUTF8, and malformed UTF-8. */
    ERR("<jöhn@example.com>", 0, "8-bit character in local part without SMTPUTF8"),
    ERR("<\"jö\"@example.com>", 0, "8-bit character in local part without SMTPUTF8"),
    ERR("jöhn@example.com", INT, "8-bit character in local part without SMTPUTF8"),
    ERR("<user@bücher.example>", 0, "8-bit character in domain without SMTPUTF8"),
    ERR("<j\xc3(@example.com>", U8, "invalid UTF-8 in local part"),
    ERR("<\xff@example.com>", U8, "invalid UTF-8 in local part"),
    ERR("<\xc0\xafx@example.com>", U8, "invalid UTF-8 in local part"),
    ERR("<\xed\xa0\x80@example.com>", U8, "invalid UTF-8 in local part"),
    ERR("<\xf4\x90\x80\x80@example.com>", U8, "invalid UTF-8 in local part"),
    ERR("<\"\xe2\x82\"@example.com>", U8, "invalid UTF-8 in local part"),
    ERR("j\xc3", INT | U8, "invalid UTF-8 in local part"),
    ERR("<user@example.c\xc3>", U8, "invalid UTF-8 in domain"),
    ERR("<user@b\xc3\xbc\xff.example>", U8, "invalid UTF-8 in domain"),
    ERR("user@b\xc3", INT | U8, "invalid UTF-8 in domain"),
    ERR("<\"a\\ä\"@example.com>", U8, "invalid quoted pair in local part"),
    ERR("<user@☃.example>", U8, "invalid internationalized domain name"),

    /* Address literals. */
    ERR("<user@[192.0.2.256]>", 0, "invalid IPv4 address literal"),
    ERR("<user@[192.0.2]>", 0, "invalid IPv4 address literal"),
    ERR("<user@[]>", 0, "invalid IPv4 address literal"),
    ERR("<user@[192.0.2.1>", 0, "unterminated address literal"),
    ERR("<user@[IPv6:2001:db8::g]>", 0, "invalid IPv6 address literal"),
    ERR("<user@[IPv6:]>", 0, "invalid IPv6 address literal"),
    ERR("<user@[IPv6:fe80::1%eth0]>", 0, "invalid IPv6 address literal"),
    ERR("<user@[2001:db8::1]>", 0, "unsupported address literal"),
    ERR("<user@[x400:foo]>", 0, "unsupported address literal"),
    ERR("<user@[192.0.2.1]x>", 0, "invalid character in domain"),
    ERR("<user@[192.0.2.1].example>", 0, "invalid character in domain"),

    /* Source routes. */
    ERR("<@:user@example.com>", 0, "invalid source route"),
    ERR("<@a,:user@example.com>", 0, "invalid source route"),
    ERR("<@a,b:user@example.com>", 0, "invalid source route"),
    ERR("<@exa_mple:user@example.com>", 0, "invalid source route"),
    ERR("<@[192.0.2.1]x:user@example.com>", 0, "invalid source route"),
};

#define NCASES (sizeof(parse_cases) / sizeof(parse_cases[0]))

static osp_buf_t show_buf;

/* The input, printable, for failure messages; valid until the next call. */
static const char *show(const char *s, size_t len)
{
    osp_buf_reset(&show_buf);
    (void)osp_buf_append_printable(&show_buf, s, len);
    return osp_buf_cstr(&show_buf);
}

/*
 * Parse the len bytes at s as case c says and compare.  Returns nothing;
 * fails the test with the case number on a mismatch.
 */
static void check_case(size_t i, const struct parse_case *c, const char *s)
{
    osp_addr_t a;
    const char *err = NULL;
    int rc;

    rc = osp_addr_parse_path(s, c->len, c->flags, &a, NULL, &err);
    if (c->error != NULL) {
        if (rc != -1 || err == NULL || strcmp(err, c->error) != 0)
            fail_msg("case %zu <%s>: want error \"%s\", got rc %d \"%s\"",
                     i, show(c->in, c->len), c->error, rc,
                     err ? err : "(none)");
        /* A failed parse leaves the struct empty. */
        assert_string_equal(a.local, "");
        assert_string_equal(a.domain_norm, "");
        assert_int_equal(a.flags, 0);
        assert_null(a.mem);
    } else {
        if (rc != 0)
            fail_msg("case %zu <%s>: want success, got \"%s\"",
                     i, show(c->in, c->len), err ? err : "(none)");
        if (strcmp(a.local, c->local) != 0 || strcmp(a.domain, c->domain) != 0
            || strcmp(a.domain_norm, c->norm) != 0 || a.flags != c->rflags)
            fail_msg("case %zu <%s>: got local \"%s\" domain \"%s\" norm \"%s\""
                     " flags %#x; want \"%s\" \"%s\" \"%s\" %#x",
                     i, show(c->in, c->len), a.local, a.domain,
                     a.domain_norm, a.flags, c->local, c->domain, c->norm,
                     c->rflags);
    }
    osp_addr_close(&a);
}

static void test_parse_table(void **state)
{
    size_t i;

    for (i = 0; i < NCASES; i++)
        check_case(i, &parse_cases[i], parse_cases[i].in);
}

/*
 * Every input again, copied into a heap block of exactly len bytes with no
 * NUL after it, so that ASan and valgrind see any read past len; then every
 * prefix the same way, where only "0, or -1 with an error" is required.
 */
static void test_parse_exact_buffers(void **state)
{
    size_t i, k;

    for (i = 0; i < NCASES; i++) {
        const struct parse_case *c = &parse_cases[i];
        char *copy = malloc(c->len ? c->len : 1);

        assert_non_null(copy);
        memcpy(copy, c->in, c->len);
        check_case(i, c, copy);
        free(copy);

        for (k = 0; k < c->len; k++) {
            osp_addr_t a;
            const char *err = NULL;
            size_t end = SIZE_MAX;
            char *prefix = malloc(k ? k : 1);
            int rc;

            assert_non_null(prefix);
            memcpy(prefix, c->in, k);
            rc = osp_addr_parse_path(prefix, k, c->flags, &a, NULL, &err);
            assert_true(rc == 0 || (rc == -1 && err != NULL));
            osp_addr_close(&a);
            if (!(c->flags & INT)) {
                rc = osp_addr_parse_path(prefix, k, c->flags, &a, &end, &err);
                assert_true(rc == -1 || end <= k);
                osp_addr_close(&a);
            }
            free(prefix);
        }
    }
}

/*
 * Canonical form of a parsed address re-parsed as an SMTP path: the same
 * address.  Checked for every successful parse.
 */
static void check_roundtrip(const osp_addr_t *a, unsigned flags,
                            const char *what)
{
    osp_buf_t b;
    osp_addr_t again;
    const char *err = NULL;
    unsigned f;

    osp_buf_init(&b, 4096);
    assert_int_equal(osp_buf_append_char(&b, '<'), 0);
    assert_int_equal(osp_addr_format(a, &b), 0);
    assert_int_equal(osp_buf_append_char(&b, '>'), 0);
    f = (flags & ~(unsigned)INT) | OSP_ADDR_ALLOW_NULL | OSP_ADDR_ALLOW_LONG_LOCAL;
    /* Quoting can push a long local part over the path limit. */
    if (b.len <= 256) {
        if (osp_addr_parse_path(b.data, b.len, f, &again, NULL, &err) != 0)
            fail_msg("%s: canonical %s does not parse: %s", what, b.data, err);
        if (!osp_addr_equal(a, &again))
            fail_msg("%s: canonical %s parses to a different address",
                     what, b.data);
        osp_addr_close(&again);
    }
    osp_buf_close(&b);
}

static void test_format_roundtrip_table(void **state)
{
    size_t i;

    for (i = 0; i < NCASES; i++) {
        const struct parse_case *c = &parse_cases[i];
        osp_addr_t a;
        const char *err;

        if (c->error != NULL)
            continue;
        assert_int_equal(osp_addr_parse_path(c->in, c->len, c->flags, &a,
                                             NULL, &err), 0);
        check_roundtrip(&a, c->flags, show(c->in, c->len));
        osp_addr_close(&a);
    }
}

/*
 * Each input with each byte replaced by characters that matter to the
 * grammar: never a crash or overread, and what parses survives the
 * format/parse round trip.
 */
static void test_parse_mutations(void **state)
{
    static const unsigned char subst[] = {
        '<', '>', '@', '"', '\\', '.', ',', ':', '[', ']', ' ', '\t', 0,
        0x7f, 0x80, 0xc3, 0xff, 'A', '-', '_',
    };
    size_t i, k, j;

    for (i = 0; i < NCASES; i++) {
        const struct parse_case *c = &parse_cases[i];

        for (k = 0; k < c->len; k++) {
            for (j = 0; j < sizeof(subst); j++) {
                char *m = malloc(c->len);
                osp_addr_t a;
                const char *err = NULL;
                int rc;

                assert_non_null(m);
                memcpy(m, c->in, c->len);
                m[k] = (char)subst[j];
                rc = osp_addr_parse_path(m, c->len, c->flags, &a, NULL, &err);
                assert_true(rc == 0 || (rc == -1 && err != NULL));
                if (rc == 0)
                    check_roundtrip(&a, c->flags, show(m, c->len));
                osp_addr_close(&a);
                free(m);
            }
        }
    }
}

struct end_case {
    const char *in;
    unsigned flags;
    int rc;
    size_t end;
    const char *error;
};

static void test_parse_end_offset(void **state)
{
    static const struct end_case cases[] = {
        { "<user@example.com> SIZE=1000 BODY=8BITMIME", MF, 0, 18, NULL },
        { "<user@example.com>", MF, 0, 18, NULL },
        { "user@example.com SIZE=1000", MF, 0, 16, NULL },
        { "user@example.com\tSIZE=1000", MF, 0, 16, NULL },
        { "<\"john doe\"@example.com> SIZE=1", MF, 0, 24, NULL },
        { "<> SIZE=1", MF, 0, 2, NULL },
        { " <> SIZE=1", MF, 0, 3, NULL },
        { "<postmaster> NOTIFY=NEVER", RT, 0, 12, NULL },
        { "postmaster NOTIFY=NEVER", RT, 0, 10, NULL },
        { "<@r.example:user@example.com> SIZE=1", MF, 0, 29, NULL },
        { "john doe@example.com", INT, 0, 20, NULL },
        { "<user@example.com>SIZE=1", MF, -1, 0, "unexpected text after address" },
        { "<user@example.com>> SIZE=1", MF, -1, 0, "unbalanced angle brackets" },
        { "<user@example.com SIZE=1", MF, -1, 0, "unbalanced angle brackets" },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_addr_t a;
        const char *err = NULL;
        size_t end = SIZE_MAX;
        int rc;

        rc = osp_addr_parse_path(cases[i].in, strlen(cases[i].in),
                                 cases[i].flags, &a, &end, &err);
        if (rc != cases[i].rc)
            fail_msg("end case %zu (%s): rc %d, error %s", i, cases[i].in,
                     rc, err ? err : "(none)");
        if (rc == 0)
            assert_int_equal(end, cases[i].end);
        else
            assert_string_equal(err, cases[i].error);
        osp_addr_close(&a);
    }
}

struct format_case {
    const char *in;
    unsigned flags;
    const char *out;
};

static void test_format(void **state)
{
    static const struct format_case cases[] = {
        { "<user@Example.COM>", 0, "user@example.com" },
        { "<\"john doe\"@Example.COM>", 0, "\"john doe\"@example.com" },
        { "<\"user\"@example.com>", 0, "user@example.com" },
        { "<\"john \\\"jd\\\" doe\"@example.com>", 0, "\"john \\\"jd\\\" doe\"@example.com" },
        { "<\"a\\\\b\"@example.com>", 0, "\"a\\\\b\"@example.com" },
        { "<\"a\\b\"@example.com>", 0, "ab@example.com" },
        { "<>", MF, "" },
        { "<Postmaster>", RT, "Postmaster" },
        { "<\"post master\">", OSP_ADDR_ALLOW_NO_DOMAIN, "\"post master\"" },
        { "<@r.example:user@example.com>", 0, "user@example.com" },
        { "<taro..yamada.@docomo.ne.jp>", OSP_ADDR_ALLOW_BAD_DOTS, "\"taro..yamada.\"@docomo.ne.jp" },
        { "taro..yamada.@docomo.ne.jp", INT, "\"taro..yamada.\"@docomo.ne.jp" },
        { "john doe@example.com", INT, "\"john doe\"@example.com" },
        { "a\"b@example.com", INT, "\"a\\\"b\"@example.com" },
        { "<user@[IPv6:2001:DB8::1]>", 0, "user@[IPv6:2001:db8::1]" },
        { "<jöhn@Bücher.example.>", U8, "jöhn@xn--bcher-kva.example" },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_addr_t a;
        osp_buf_t b;
        const char *err = NULL;

        if (osp_addr_parse_path(cases[i].in, strlen(cases[i].in),
                                cases[i].flags, &a, NULL, &err) != 0)
            fail_msg("format case %zu (%s): %s", i, cases[i].in, err);
        osp_buf_init(&b, 1024);
        assert_int_equal(osp_buf_append_str(&b, "x"), 0);
        assert_int_equal(osp_addr_format(&a, &b), 0);
        if (strcmp(osp_buf_cstr(&b) + 1, cases[i].out) != 0)
            fail_msg("format case %zu (%s): got %s want %s", i, cases[i].in,
                     osp_buf_cstr(&b) + 1, cases[i].out);
        osp_buf_close(&b);
        osp_addr_close(&a);
    }
}

/* A buffer cap too small: -1 and the buffer as it was. */
static void test_format_cap(void **state)
{
    osp_addr_t a;
    osp_buf_t b;
    const char *err;
    size_t cap;
    const char *in = "<\"john doe\"@example.com>";
    const char *want = "\"john doe\"@example.com";

    assert_int_equal(osp_addr_parse_path(in, strlen(in), 0, &a, NULL, &err), 0);
    for (cap = 1; cap < strlen(want) + 1; cap++) {
        osp_buf_init(&b, cap);
        assert_int_equal(osp_buf_append_str(&b, "<"), 0);
        assert_int_equal(osp_addr_format(&a, &b), -1);
        assert_string_equal(osp_buf_cstr(&b), "<");
        osp_buf_close(&b);
    }
    osp_buf_init(&b, strlen(want) + 1);
    assert_int_equal(osp_buf_append_str(&b, "<"), 0);
    assert_int_equal(osp_addr_format(&a, &b), 0);
    assert_string_equal(osp_buf_cstr(&b) + 1, want);
    osp_buf_close(&b);
    osp_addr_close(&a);
}

struct equal_case {
    const char *a;
    unsigned af;
    const char *b;
    unsigned bf;
    bool equal;
};

static void test_equal(void **state)
{
    static const struct equal_case cases[] = {
        { "<user@bücher.example>", U8, "<user@xn--bcher-kva.example>", 0, true },
        { "<user@bücher.example>", U8, "<user@XN--BCHER-KVA.EXAMPLE>", 0, true },
        { "<user@BÜCHER.Example.>", U8, "user@xn--bcher-kva.example", INT, true },
        { "<user@Example.COM>", 0, "<user@example.com>", 0, true },
        { "<user@example.com.>", 0, "<user@example.com>", 0, true },
        { "<User@example.com>", 0, "<user@example.com>", 0, false },
        { "<user@example.com>", 0, "<user@example.org>", 0, false },
        { "<user@example.com>", 0, "<user2@example.com>", 0, false },
        { "<\"john doe\"@example.com>", 0, "john doe@example.com", INT, true },
        { "<\"user\"@example.com>", 0, "<user@example.com>", 0, true },
        { "<@r.example:user@example.com>", 0, "<user@example.com>", 0, true },
        { "<user@[IPv6:2001:db8:0::1]>", 0, "<user@[ipv6:2001:DB8::1]>", 0, true },
        { "<user@[192.0.2.1]>", 0, "<user@[192.0.2.2]>", 0, false },
        { "<>", MF, "", INT | MF, true },
        { "<>", MF, "<user@example.com>", 0, false },
        { "<postmaster>", RT, "<POSTMASTER>", RT, true },
        { "<postmaster>", RT, "<postmaster@example.com>", 0, false },
        { "<user>", OSP_ADDR_ALLOW_NO_DOMAIN, "<User>", OSP_ADDR_ALLOW_NO_DOMAIN, false },
        { "<user>", OSP_ADDR_ALLOW_NO_DOMAIN, "<user>", OSP_ADDR_ALLOW_NO_DOMAIN, true },
        { "<jöhn@example.com>", U8, "<jöhn@example.com>", U8, true },
        { "<jöhn@example.com>", U8, "<JÖHN@example.com>", U8, false },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        osp_addr_t a, b;
        const char *err = NULL;

        if (osp_addr_parse_path(cases[i].a, strlen(cases[i].a), cases[i].af,
                                &a, NULL, &err) != 0
            || osp_addr_parse_path(cases[i].b, strlen(cases[i].b),
                                   cases[i].bf, &b, NULL, &err) != 0)
            fail_msg("equal case %zu: %s", i, err);
        if (osp_addr_equal(&a, &b) != cases[i].equal
            || osp_addr_equal(&b, &a) != cases[i].equal)
            fail_msg("equal case %zu: %s vs %s: want %s", i, cases[i].a,
                     cases[i].b, cases[i].equal ? "equal" : "different");
        osp_addr_close(&a);
        osp_addr_close(&b);
    }
}

static void test_init_close(void **state)
{
    osp_addr_t a, b;
    const char *err;

    osp_addr_init(&a);
    osp_addr_init(&b);
    assert_true(osp_addr_equal(&a, &b));
    osp_addr_close(&a);
    osp_addr_close(&a);         /* twice is fine */
    assert_int_equal(osp_addr_parse_path("<u@x.example>", 13, 0, &a, NULL,
                                         &err), 0);
    assert_non_null(a.mem);
    osp_addr_close(&a);
    assert_null(a.mem);
    assert_string_equal(a.local, "");
    /* error_r may be NULL. */
    assert_int_equal(osp_addr_parse_path("<u>", 3, 0, &a, NULL, NULL), -1);
    osp_addr_close(&a);
}

struct domain_case {
    const char *in;
    size_t len;
    unsigned flags;
    const char *out;        /* expected normalised form, or NULL */
    const char *error;      /* expected error, or NULL */
};

#define DOK(in, fl, out) { in, sizeof(in) - 1, fl, out, NULL }
#define DERR(in, fl, err) { in, sizeof(in) - 1, fl, NULL, err }

static void test_domain_normalize(void **state)
{
    static const struct domain_case cases[] = {
        DOK("Example.COM", 0, "example.com"),
        DOK("example.com.", 0, "example.com"),
        DOK("localhost", 0, "localhost"),
        DOK("Bücher.example", 0, "xn--bcher-kva.example"),
        DOK("XN--BCHER-KVA.example", 0, "xn--bcher-kva.example"),
        DOK("faß.de", 0, "xn--fa-hia.de"),
        DOK("例え.テスト.", 0, "xn--r8jz45g.xn--zckzah"),
        DOK("_dmarc.Example.com", 0, "_dmarc.example.com"),
        DOK(D253, 0, D253),
        DOK(D253 ".", 0, D253),
        DERR("", 0, "empty domain"),
        DERR(".", 0, "empty domain"),
        DERR("a..b", 0, "empty label in domain"),
        DERR(".example", 0, "empty label in domain"),
        DERR("example.com..", 0, "empty label in domain"),
        DERR("-a.example", 0, "domain label starts with a hyphen"),
        DERR("a-.example", 0, "domain label ends with a hyphen"),
        DERR("bü-.example", 0, "domain label ends with a hyphen"),
        DERR(A64 ".example", 0, "domain label longer than 63 octets"),
        DERR(D254, 0, "domain longer than 253 octets"),
        DERR("exa mple.com", 0, "invalid character in domain"),
        DERR("[192.0.2.1]", 0, "invalid character in domain"),
        DERR("exa\001mple.com", 0, "control character in domain"),
        DERR("b\xff.example", 0, "invalid UTF-8 in domain"),
        DERR("☃.example", 0, "invalid internationalized domain name"),
        DERR("xn--zz.bücher", 0, "invalid internationalized domain name"),
        DERR("192.0.2.1", 0, "top-level domain label is all-numeric"),
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[OSP_DOMAIN_BUFSIZE];
        const char *err = NULL;
        int rc = osp_domain_normalize(cases[i].in, out, sizeof(out), &err);

        if (cases[i].error != NULL) {
            if (rc != -1 || err == NULL || strcmp(err, cases[i].error) != 0)
                fail_msg("normalize case %zu (%s): want \"%s\", got %d \"%s\"",
                         i, cases[i].in, cases[i].error, rc,
                         err ? err : "(none)");
            assert_string_equal(out, "");
        } else {
            if (rc != 0 || strcmp(out, cases[i].out) != 0)
                fail_msg("normalize case %zu (%s): got %d \"%s\" (%s)", i,
                         cases[i].in, rc, rc == 0 ? out : "",
                         err ? err : "");
        }
    }
}

static void test_domain_normalize_small_buffer(void **state)
{
    char out[12];
    const char *err = NULL;

    assert_int_equal(osp_domain_normalize("Example.COM", out, sizeof(out), &err), 0);
    assert_string_equal(out, "example.com");
    assert_int_equal(osp_domain_normalize("Example.COMX", out, sizeof(out), &err), -1);
    assert_string_equal(err, "domain too long for output buffer");
    assert_string_equal(out, "");
    assert_int_equal(osp_domain_normalize("bücher.de", out, sizeof(out), NULL), -1);
    assert_int_equal(osp_domain_normalize("x", out, 0, &err), -1);
}

static void test_domain_valid(void **state)
{
    static const struct domain_case cases[] = {
        DOK("mail.example.com", 0, ""),
        DOK("MAIL.Example.COM", 0, ""),
        DOK("localhost", 0, ""),
        DOK("a", 0, ""),
        DOK("1a.example", 0, ""),
        DOK("123.example", 0, ""),
        DOK("a-b--c.example", 0, ""),
        DOK("xn--bcher-kva.example", 0, ""),
        DOK(D253, 0, ""),
        DOK(A63 ".example", 0, ""),
        DOK("host_1.example", OSP_DOMAIN_ALLOW_UNDERSCORE, ""),
        DOK("_a_.example", OSP_DOMAIN_ALLOW_UNDERSCORE, ""),
        DERR("", 0, "empty domain"),
        DERR("example.com.", 0, "empty label in domain"),
        DERR(".example.com", 0, "empty label in domain"),
        DERR("a..example", 0, "empty label in domain"),
        DERR("-a.example", 0, "domain label starts with a hyphen"),
        DERR("a-.example", 0, "domain label ends with a hyphen"),
        DERR("a.example-", 0, "domain label ends with a hyphen"),
        DERR(A64 ".example", 0, "domain label longer than 63 octets"),
        DERR(D254, 0, "domain longer than 253 octets"),
        DERR("host_1.example", 0, "invalid character in domain"),
        DERR("bücher.example", 0, "invalid character in domain"),
        DERR("[192.0.2.1]", 0, "invalid character in domain"),
        DERR("exa mple", 0, "invalid character in domain"),
        DERR("192.0.2.1", 0, "top-level domain label is all-numeric"),
        DERR("exa\001mple", 0, "control character in domain"),
        DERR("example.com\000evil.example", 0, "control character in domain"),
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *err = NULL;
        char *copy = malloc(cases[i].len ? cases[i].len : 1);
        bool ok;

        assert_non_null(copy);
        memcpy(copy, cases[i].in, cases[i].len);    /* exact size, no NUL */
        ok = osp_domain_valid(copy, cases[i].len, cases[i].flags, &err);
        free(copy);
        if (cases[i].error == NULL && !ok)
            fail_msg("valid case %zu (%s): rejected: %s", i,
                     show(cases[i].in, cases[i].len), err);
        if (cases[i].error != NULL
            && (ok || err == NULL || strcmp(err, cases[i].error) != 0))
            fail_msg("valid case %zu (%s): want \"%s\", got %s", i,
                     show(cases[i].in, cases[i].len), cases[i].error,
                     ok ? "valid" : err);
    }
    assert_false(osp_domain_valid("a b", 3, 0, NULL));
}

struct sub_case {
    const char *sub;
    const char *parent;
    bool result;
};

static void test_domain_is_subdomain(void **state)
{
    static const struct sub_case cases[] = {
        { "a.b.example.com", "example.com", true },
        { "b.example.com", "example.com", true },
        { "example.com", "example.com", true },
        { "EXAMPLE.com.", "example.COM", true },
        { "a.example.com", "example.com.", true },
        { "badexample.com", "example.com", false },
        { "xample.com", "example.com", false },
        { "example.com", "a.example.com", false },
        { "com", "example.com", false },
        { "example.com.evil", "example.com", false },
        { "example.org", "example.com", false },
        { "", "example.com", false },
        { "example.com", "", false },
        { "example.com", ".", false },
        { "", "", false },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (osp_domain_is_subdomain(cases[i].sub, cases[i].parent)
            != cases[i].result)
            fail_msg("subdomain case %zu: %s under %s: want %s", i,
                     cases[i].sub, cases[i].parent,
                     cases[i].result ? "yes" : "no");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_exact_buffers),
        cmocka_unit_test(test_format_roundtrip_table),
        cmocka_unit_test(test_parse_mutations),
        cmocka_unit_test(test_parse_end_offset),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_cap),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_init_close),
        cmocka_unit_test(test_domain_normalize),
        cmocka_unit_test(test_domain_normalize_small_buffer),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_domain_is_subdomain),
    };

    int failed;

    osp_buf_init(&show_buf, 4096);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    osp_buf_close(&show_buf);
    return failed;
}
