/* Unit tests for osp_net: address and CIDR parsing, prefix sets. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "osp_net.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------ */

/* splitmix64: small, fast, and the same sequence everywhere. */
static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned rnd_below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static osp_ip_t ip_of(const char *s)
{
    osp_ip_t ip;

    if (osp_ip_parse(s, &ip) != 0)
        fail_msg("cannot parse address \"%s\"", s);
    return ip;
}

static osp_cidr_t cidr_of(const char *s)
{
    osp_cidr_t c;
    char err[256];

    if (osp_cidr_parse(s, &c, err, sizeof(err)) != 0)
        fail_msg("cannot parse prefix \"%s\": %s", s, err);
    return c;
}

static osp_ip_t ip_v4(uint32_t a)
{
    osp_ip_t ip;

    memset(&ip, 0, sizeof(ip));
    ip.family = OSP_IP_V4;
    ip.addr[0] = (uint8_t)(a >> 24);
    ip.addr[1] = (uint8_t)(a >> 16);
    ip.addr[2] = (uint8_t)(a >> 8);
    ip.addr[3] = (uint8_t)a;
    return ip;
}

/* Parse with the C library, as the reference for plain address text. */
static int libc_parse(const char *s, osp_ip_t *ip_r)
{
    memset(ip_r, 0, sizeof(*ip_r));
    if (inet_pton(AF_INET, s, ip_r->addr) == 1) {
        ip_r->family = OSP_IP_V4;
        return 0;
    }
    if (inet_pton(AF_INET6, s, ip_r->addr) == 1) {
        ip_r->family = OSP_IP_V6;
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------ */

static const struct good_ip {
    const char *in;
    int family;
    const char *canon;
} good_ips[] = {
    { "0.0.0.0", OSP_IP_V4, "0.0.0.0" },
    { "192.0.2.1", OSP_IP_V4, "192.0.2.1" },
    { "255.255.255.255", OSP_IP_V4, "255.255.255.255" },
    { "10.0.0.0", OSP_IP_V4, "10.0.0.0" },
    { "[192.0.2.1]", OSP_IP_V4, "192.0.2.1" },
    { "::", OSP_IP_V6, "::" },
    { "::1", OSP_IP_V6, "::1" },
    { "1::", OSP_IP_V6, "1::" },
    { "2001:db8::7", OSP_IP_V6, "2001:db8::7" },
    { "1:2:3:4:5:6:7:8", OSP_IP_V6, "1:2:3:4:5:6:7:8" },
    { "2001:0db8:0000:0000:0000:0000:0000:0001", OSP_IP_V6, "2001:db8::1" },
    { "2001:DB8::AbCd", OSP_IP_V6, "2001:db8::abcd" },
    { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OSP_IP_V6,
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
    /* "::" may stand for a single group when parsing... */
    { "1:2:3:4:5:6:7::", OSP_IP_V6, "1:2:3:4:5:6:7:0" },
    { "::2:3:4:5:6:7:8", OSP_IP_V6, "0:2:3:4:5:6:7:8" },
    { "1:2:3::5:6:7:8", OSP_IP_V6, "1:2:3:0:5:6:7:8" },
    /* ...but formatting compresses the longest run of two or more, first on a tie */
    { "1:0:0:2:0:0:0:3", OSP_IP_V6, "1:0:0:2::3" },
    { "1:0:0:2:0:0:3:4", OSP_IP_V6, "1::2:0:0:3:4" },
    { "0:0:1:0:0:0:0:0", OSP_IP_V6, "0:0:1::" },
    { "0:0:0:0:1:0:0:0", OSP_IP_V6, "::1:0:0:0" },
    { "fe80::", OSP_IP_V6, "fe80::" },
    /* embedded IPv4 */
    { "::ffff:1.2.3.4", OSP_IP_V6, "::ffff:1.2.3.4" },
    { "::FFFF:1.2.3.4", OSP_IP_V6, "::ffff:1.2.3.4" },
    { "0:0:0:0:0:ffff:102:304", OSP_IP_V6, "::ffff:1.2.3.4" },
    { "::ffff:0:0", OSP_IP_V6, "::ffff:0.0.0.0" },
    { "::1.2.3.4", OSP_IP_V6, "::102:304" },
    { "1:2:3:4:5:6:1.2.3.4", OSP_IP_V6, "1:2:3:4:5:6:102:304" },
    { "64:ff9b::192.0.2.33", OSP_IP_V6, "64:ff9b::c000:221" },
    /* Postfix / RFC 5321 address literal forms */
    { "IPV6:2001:db8::1", OSP_IP_V6, "2001:db8::1" },
    { "ipv6:::1", OSP_IP_V6, "::1" },
    { "[IPv6:2001:db8::1]", OSP_IP_V6, "2001:db8::1" },
    { "[2001:db8::1]", OSP_IP_V6, "2001:db8::1" },
    { "IPv6:::ffff:1.2.3.4", OSP_IP_V6, "::ffff:1.2.3.4" },
};

static void test_ip_parse_good(void **state)
{
    size_t i;

    for (i = 0; i < NELEM(good_ips); i++) {
        const struct good_ip *t = &good_ips[i];
        osp_ip_t ip, again;
        char buf[OSP_IP_STRLEN];

        if (osp_ip_parse(t->in, &ip) != 0)
            fail_msg("rejected \"%s\"", t->in);
        assert_int_equal(ip.family, t->family);
        assert_string_equal(osp_ip_format(&ip, buf, sizeof(buf)), t->canon);
        /* The canonical form parses back to the same address. */
        assert_int_equal(osp_ip_parse(buf, &again), 0);
        assert_true(osp_ip_equal(&ip, &again));
        if (ip.family == OSP_IP_V4)
            assert_true(ip.addr[4] == 0 && ip.addr[15] == 0);
    }
}

static const char *const bad_ips[] = {
    "", " ", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.2.3.1000",
    "01.2.3.4", "1.2.3.04", "00.0.0.0", "1..2.3", "1.2.3.", ".1.2.3", "1.2.3.-1",
    "+1.2.3.4", "0x1.2.3.4", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", "1.2.3.4/32",
    "a.b.c.d", "4294967295", "1",
    ":", ":::", "1:::2", "12345::", "::12345", "1::2::3", ":1::", "1::2:",
    ":1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "1:2:3:4::5:6:7:8", "g::1", "::g",
    "fe80::1%eth0", "2001:db8::/32", "2001:db8:: ", "::ffff:1.2.3", "::ffff:1.2.3.4.5",
    "::ffff:01.2.3.4", "::ffff:256.2.3.4", "1.2.3.4::", "::1.2.3.4:1",
    "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5:6:7:8:1.2.3.4", "::ffff:1.2.3.4.",
    "::a.2.3.4", "::1.2.3.4x", "0:0:0:0:0:0:0:0:0",
    "[1.2.3.4", "1.2.3.4]", "[]", "[[::1]]", "[::1", "IPv6:1.2.3.4", "[IPv6:1.2.3.4]",
    "IPv6:", "IPv6:[::1]", "IPv4:1.2.3.4", "IPv6 :::1", "[ ::1]",
};

static void test_ip_parse_bad(void **state)
{
    size_t i;

    for (i = 0; i < NELEM(bad_ips); i++) {
        osp_ip_t ip;

        if (osp_ip_parse(bad_ips[i], &ip) != -1)
            fail_msg("accepted \"%s\"", bad_ips[i]);
    }
}

/*
 * Against the C library's inet_pton: every prefix of every good address
 * (the parser's byte-boundary cases), single-character edits of them, and
 * short random strings over the address alphabet must be accepted or
 * rejected alike, with the same result.
 */
static void check_like_libc(const char *s)
{
    osp_ip_t mine, ref;
    int r1 = osp_ip_parse(s, &mine), r2 = libc_parse(s, &ref);

    if (r1 != r2)
        fail_msg("\"%s\": osp_ip_parse %d, inet_pton %d", s, r1, r2);
    if (r1 == 0 && !osp_ip_equal(&mine, &ref))
        fail_msg("\"%s\": different address", s);
}

static void test_ip_parse_like_libc(void **state)
{
    static const char alphabet[] = "0123456789abcdefABCDEFg:::..";
    char s[64];
    size_t i, n, k;

    rng_state = 1;
    for (i = 0; i < NELEM(good_ips) + NELEM(bad_ips); i++) {
        const char *src = i < NELEM(good_ips) ? good_ips[i].in : bad_ips[i - NELEM(good_ips)];
        size_t len = strlen(src);

        if (strchr(src, '[') != NULL || strchr(src, 'I') != NULL || strchr(src, 'i') != NULL
            || len + 2 > sizeof(s))
            continue;
        for (n = 0; n <= len; n++) {
            memcpy(s, src, n);
            s[n] = '\0';
            check_like_libc(s);
        }
        for (n = 0; n < len; n++) {
            for (k = 0; k < sizeof(alphabet) - 1; k++) {
                strcpy(s, src);
                s[n] = alphabet[k];                     /* replace */
                check_like_libc(s);
                memcpy(s, src, n);                      /* insert */
                s[n] = alphabet[k];
                strcpy(s + n + 1, src + n);
                check_like_libc(s);
            }
            memcpy(s, src, n);                          /* delete */
            strcpy(s + n, src + n + 1);
            check_like_libc(s);
        }
    }
    for (i = 0; i < 100000; i++) {
        n = rnd_below(20);
        for (k = 0; k < n; k++)
            s[k] = alphabet[rnd_below(sizeof(alphabet) - 1)];
        s[n] = '\0';
        check_like_libc(s);
    }
}

/*
 * Random addresses (biased towards zero groups) format to what the C
 * library's inet_ntop prints, except the deprecated IPv4-compatible form
 * where we follow RFC 5952, and parse back unchanged.
 */
static void test_ip_format_roundtrip(void **state)
{
    size_t i;
    int g;

    rng_state = 2;
    for (i = 0; i < 20000; i++) {
        osp_ip_t ip, back;
        char mine[OSP_IP_STRLEN], ref[INET6_ADDRSTRLEN];

        memset(&ip, 0, sizeof(ip));
        ip.family = i % 4 == 0 ? OSP_IP_V4 : OSP_IP_V6;
        for (g = 0; g < (ip.family == OSP_IP_V4 ? 4 : 16); g += 2) {
            uint64_t r = rnd();

            if (ip.family == OSP_IP_V4 || r % 3 == 0) {
                ip.addr[g] = (uint8_t)(r >> 8);
                ip.addr[g + 1] = (uint8_t)(r >> 16);
            }
        }
        if (i % 50 == 1) {          /* IPv4-mapped */
            memset(ip.addr, 0, 10);
            ip.addr[10] = ip.addr[11] = 0xff;
        }
        osp_ip_format(&ip, mine, sizeof(mine));
        assert_int_equal(osp_ip_parse(mine, &back), 0);
        assert_true(osp_ip_equal(&ip, &back));
        inet_ntop(ip.family == OSP_IP_V4 ? AF_INET : AF_INET6, ip.addr, ref, sizeof(ref));
        if (strchr(ref, '.') != NULL && ip.family == OSP_IP_V6 && !osp_ip_is_v4mapped(&ip))
            continue;
        assert_string_equal(mine, ref);
    }
}

static void test_ip_format_truncates(void **state)
{
    osp_ip_t ip = ip_of("2001:db8::1");
    char buf[8];

    assert_string_equal(osp_ip_format(&ip, buf, sizeof(buf)), "2001:db");
    ip = ip_of("192.0.2.1");
    assert_string_equal(osp_ip_format(&ip, buf, sizeof(buf)), "192.0.2");
    ip = ip_of("::ffff:192.0.2.1");
    assert_string_equal(osp_ip_format(&ip, buf, sizeof(buf)), "::ffff:");
}

static void test_ip_helpers(void **state)
{
    osp_ip_t v4 = ip_of("192.0.2.1"), mapped = ip_of("::ffff:192.0.2.1");
    osp_ip_t v6 = ip_of("2001:db8::1"), compat = ip_of("::192.0.2.1");
    osp_ip_t x;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr sa;

    assert_true(osp_ip_is_v4(&v4));
    assert_false(osp_ip_is_v4(&mapped));
    assert_false(osp_ip_is_v4(&v6));
    assert_true(osp_ip_is_v4mapped(&mapped));
    assert_false(osp_ip_is_v4mapped(&v4));
    assert_false(osp_ip_is_v4mapped(&v6));
    assert_false(osp_ip_is_v4mapped(&compat));

    /* Exact comparison: mapped differs from IPv4 until unmapped. */
    assert_false(osp_ip_equal(&v4, &mapped));
    x = mapped;
    assert_true(osp_ip_unmap(&x));
    assert_true(osp_ip_equal(&x, &v4));
    assert_false(osp_ip_unmap(&x));
    x = v6;
    assert_false(osp_ip_unmap(&x));
    assert_true(osp_ip_equal(&x, &v6));
    x = compat;
    assert_false(osp_ip_unmap(&x));

    /* Order: IPv4 first, then bytes. */
    assert_true(osp_ip_compare(&v4, &v6) < 0);
    assert_true(osp_ip_compare(&v6, &v4) > 0);
    x = ip_of("192.0.2.2");
    assert_true(osp_ip_compare(&v4, &x) < 0);
    assert_true(osp_ip_compare(&x, &v4) > 0);
    x = ip_of("2001:db8::");
    assert_true(osp_ip_compare(&x, &v6) < 0);
    assert_int_equal(osp_ip_compare(&v6, &v6), 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(25);
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    assert_int_equal(osp_ip_from_sockaddr((struct sockaddr *)&sin, &x), 0);
    assert_true(osp_ip_equal(&x, &v4));
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:192.0.2.1", &sin6.sin6_addr);
    assert_int_equal(osp_ip_from_sockaddr((struct sockaddr *)&sin6, &x), 0);
    assert_true(osp_ip_equal(&x, &mapped));
    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_UNIX;
    assert_int_equal(osp_ip_from_sockaddr(&sa, &x), -1);
}

static void test_ip_reverse_name(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "192.0.2.1", "1.2.0.192" },
        { "127.0.0.2", "2.0.0.127" },
        { "0.0.0.0", "0.0.0.0" },
        { "::ffff:192.0.2.1", "1.2.0.192" },
        /* RFC 3596 section 2.5 */
        { "4321:0:1:2:3:4:567:89ab",
          "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4" },
        { "2001:db8::1",
          "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2" },
        { "::", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0" },
    };
    char buf[OSP_IP_REVERSE_LEN], small[16];
    size_t i;
    osp_ip_t ip;

    for (i = 0; i < NELEM(cases); i++) {
        ip = ip_of(cases[i].in);
        assert_int_equal(osp_ip_reverse_name(&ip, buf, sizeof(buf)), 0);
        assert_string_equal(buf, cases[i].out);
    }
    ip = ip_of("2001:db8::1");
    assert_int_equal(osp_ip_reverse_name(&ip, buf, sizeof(buf) - 1), -1);
    assert_string_equal(buf, "");
    assert_int_equal(osp_ip_reverse_name(&ip, small, sizeof(small)), -1);
    assert_string_equal(small, "");
    ip = ip_of("255.255.255.255");
    assert_int_equal(osp_ip_reverse_name(&ip, small, sizeof(small)), 0);
    assert_string_equal(small, "255.255.255.255");
    assert_int_equal(osp_ip_reverse_name(&ip, small, 15), -1);
}

/* ------------------------------------------------------------------
 * CIDR prefixes
 * ------------------------------------------------------------------ */

static void test_cidr_parse_good(void **state)
{
    static const struct {
        const char *in, *canon;
    } cases[] = {
        { "10.0.0.0/8", "10.0.0.0/8" },
        { "0.0.0.0/0", "0.0.0.0/0" },
        { "192.0.2.1", "192.0.2.1/32" },
        { "192.0.2.1/32", "192.0.2.1/32" },
        { "192.0.2.128/25", "192.0.2.128/25" },
        { "192.0.2.254/31", "192.0.2.254/31" },
        { "2001:db8::/32", "2001:db8::/32" },
        { "2001:DB8:0::/48", "2001:db8::/48" },
        { "::/0", "::/0" },
        { "::1", "::1/128" },
        { "::1/128", "::1/128" },
        { "2001:db8::8000/113", "2001:db8::8000/113" },
        { "::ffff:192.0.2.0/120", "::ffff:192.0.2.0/120" },
        { "[2001:db8::]/32", "2001:db8::/32" },
        { "[2001:db8::/32]", "2001:db8::/32" },
        { "[192.0.2.0]/24", "192.0.2.0/24" },
        { "[192.0.2.0/24]", "192.0.2.0/24" },
        { "[2001:db8::1]", "2001:db8::1/128" },
        { "IPv6:2001:db8::/32", "2001:db8::/32" },
    };
    size_t i;

    for (i = 0; i < NELEM(cases); i++) {
        osp_cidr_t c;
        char err[256] = "untouched", buf[OSP_CIDR_STRLEN];

        if (osp_cidr_parse(cases[i].in, &c, err, sizeof(err)) != 0)
            fail_msg("rejected \"%s\": %s", cases[i].in, err);
        assert_string_equal(osp_cidr_format(&c, buf, sizeof(buf)), cases[i].canon);
    }
}

static void test_cidr_parse_bad(void **state)
{
    static const struct {
        const char *in, *err;
    } cases[] = {
        { "192.0.2.1/24",
          "non-null host address bits in \"192.0.2.1/24\", "
          "perhaps you should use \"192.0.2.0/24\"" },
        { "1.2.3.4/24",
          "non-null host address bits in \"1.2.3.4/24\", perhaps you should use \"1.2.3.0/24\"" },
        { "11.0.0.0/7",
          "non-null host address bits in \"11.0.0.0/7\", perhaps you should use \"10.0.0.0/7\"" },
        { "2001:db8::1/32",
          "non-null host address bits in \"2001:db8::1/32\", "
          "perhaps you should use \"2001:db8::/32\"" },
        { "[2001:db8::1]/64",
          "non-null host address bits in \"[2001:db8::1]/64\", "
          "perhaps you should use \"2001:db8::/64\"" },
        { "1.0.0.0/0",
          "non-null host address bits in \"1.0.0.0/0\", perhaps you should use \"0.0.0.0/0\"" },
        { "::1/0", "non-null host address bits in \"::1/0\", perhaps you should use \"::/0\"" },
        { "192.0.2.0/33", "prefix length \"33\" out of range 0-32 in \"192.0.2.0/33\"" },
        { "192.0.2.0/1000", "prefix length \"1000\" out of range 0-32 in \"192.0.2.0/1000\"" },
        { "2001:db8::/129", "prefix length \"129\" out of range 0-128 in \"2001:db8::/129\"" },
        { "::/99999999999999999999",
          "prefix length \"99999999999999999999\" out of range 0-128 "
          "in \"::/99999999999999999999\"" },
        { "192.0.2.0/", "invalid prefix length \"\" in \"192.0.2.0/\"" },
        { "192.0.2.0/-1", "invalid prefix length \"-1\" in \"192.0.2.0/-1\"" },
        { "192.0.2.0/+24", "invalid prefix length \"+24\" in \"192.0.2.0/+24\"" },
        { "192.0.2.0/024", "invalid prefix length \"024\" in \"192.0.2.0/024\"" },
        { "192.0.2.0/ 24", "invalid prefix length \" 24\" in \"192.0.2.0/ 24\"" },
        { "192.0.2.0/24 ", "invalid prefix length \"24 \" in \"192.0.2.0/24 \"" },
        { "192.0.2.0/24x", "invalid prefix length \"24x\" in \"192.0.2.0/24x\"" },
        { "192.0.2.0/0x18", "invalid prefix length \"0x18\" in \"192.0.2.0/0x18\"" },
        { "", "invalid IP address \"\"" },
        { "/24", "invalid IP address \"\" in \"/24\"" },
        { "foo", "invalid IP address \"foo\"" },
        { "foo/8", "invalid IP address \"foo\" in \"foo/8\"" },
        { "1.2.3/24", "invalid IP address \"1.2.3\" in \"1.2.3/24\"" },
        { "256.0.0.0/8", "invalid IP address \"256.0.0.0\" in \"256.0.0.0/8\"" },
        { "1:::2/64", "invalid IP address \"1:::2\" in \"1:::2/64\"" },
        { "192.0.2.0/24/24", "invalid IP address \"192.0.2.0/24\" in \"192.0.2.0/24/24\"" },
        { " 192.0.2.0/24", "invalid IP address \" 192.0.2.0\" in \" 192.0.2.0/24\"" },
        { "[192.0.2.0/24", "missing \"]\" in \"[192.0.2.0/24\"" },
        { "[192.0.2.0]24", "unexpected text after \"]\" in \"[192.0.2.0]24\"" },
        { "[2001:db8::/32]/32", "invalid IP address \"2001:db8::/32\" in \"[2001:db8::/32]/32\"" },
        { "[]", "invalid IP address \"\" in \"[]\"" },
        { "192.0.2.0]/24", "invalid IP address \"192.0.2.0]\" in \"192.0.2.0]/24\"" },
        { "fe80::1%eth0/64", "invalid IP address \"fe80::1%eth0\" in \"fe80::1%eth0/64\"" },
        /* bytes from a database or a file are escaped */
        { "10.0.0.0/8\n", "invalid prefix length \"8\\x0a\" in \"10.0.0.0/8\\x0a\"" },
        { "\x1b[31m/8", "invalid IP address \"\\x1b[31m\" in \"\\x1b[31m/8\"" },
    };
    size_t i;

    for (i = 0; i < NELEM(cases); i++) {
        osp_cidr_t c;
        char err[256];

        if (osp_cidr_parse(cases[i].in, &c, err, sizeof(err)) != -1)
            fail_msg("accepted \"%s\"", cases[i].in);
        assert_string_equal(err, cases[i].err);
        /* err is optional */
        assert_int_equal(osp_cidr_parse(cases[i].in, &c, NULL, 0), -1);
    }
}

static void test_cidr_parse_error_text_bounded(void **state)
{
    char in[600], err[256], tiny[8];
    osp_cidr_t c;

    /* A huge input is quoted cut short; the message stays bounded. */
    memset(in, 'x', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    assert_int_equal(osp_cidr_parse(in, &c, err, sizeof(err)), -1);
    assert_true(strlen(err) < 256);
    assert_non_null(strstr(err, "xxx...\""));
    assert_int_equal(strncmp(err, "invalid IP address \"xxx", 23), 0);

    /* A tiny error buffer is still terminated. */
    memset(tiny, '#', sizeof(tiny));
    assert_int_equal(osp_cidr_parse("1.2.3.4/24", &c, tiny, sizeof(tiny)), -1);
    assert_string_equal(tiny, "non-nul");
    tiny[0] = '#';
    assert_int_equal(osp_cidr_parse("1.2.3.4/24", &c, tiny, 0), -1);
    assert_int_equal(tiny[0], '#');
}

static void test_cidr_match(void **state)
{
    static const struct {
        const char *net, *ip;
        bool match;
    } cases[] = {
        { "10.0.0.0/8", "10.0.0.0", true },
        { "10.0.0.0/8", "10.255.255.255", true },
        { "10.0.0.0/8", "9.255.255.255", false },
        { "10.0.0.0/8", "11.0.0.0", false },
        { "10.0.0.0/8", "::ffff:10.1.2.3", true },
        { "10.0.0.0/8", "::10.1.2.3", false },
        { "10.0.0.0/8", "a00::", false },
        { "0.0.0.0/0", "255.255.255.255", true },
        { "0.0.0.0/0", "::ffff:1.2.3.4", true },
        { "0.0.0.0/0", "::", false },
        { "::/0", "2001:db8::1", true },
        { "::/0", "1.2.3.4", false },
        { "::/0", "::ffff:1.2.3.4", false },
        { "2001:db8::/32", "2001:db8::", true },
        { "2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true },
        { "2001:db8::/32", "2001:db9::", false },
        { "2001:db8::/32", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false },
        { "::ffff:10.0.0.0/104", "10.9.8.7", true },
        { "::ffff:10.0.0.0/104", "::ffff:10.9.8.7", true },
        { "::ffff:10.0.0.0/104", "11.0.0.0", false },
        { "::ffff:0:0/96", "1.2.3.4", true },
        { "192.0.2.1", "192.0.2.1", true },
        { "192.0.2.1", "192.0.2.0", false },
        { "::1", "::1", true },
        { "::1", "::", false },
    };
    size_t i;

    for (i = 0; i < NELEM(cases); i++) {
        osp_cidr_t c = cidr_of(cases[i].net);
        osp_ip_t ip = ip_of(cases[i].ip);

        if (osp_cidr_match(&c, &ip) != cases[i].match)
            fail_msg("%s in %s: expected %d", cases[i].ip, cases[i].net, cases[i].match);
    }
}

/* ------------------------------------------------------------------
 * Prefix sets
 * ------------------------------------------------------------------ */

struct lookup_case {
    const char *ip;
    bool found;
    uint32_t value;
    unsigned prefixlen;
};

static void check_lookups(const osp_cidrset_t *set, const struct lookup_case *cases, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        osp_ip_t ip = ip_of(cases[i].ip);
        uint32_t value = 0xdeadbeef;
        unsigned plen = 999;
        enum osp_cidrset_result r = osp_cidrset_lookup(set, &ip, &value, &plen);

        if (r != (cases[i].found ? OSP_CIDRSET_FOUND : OSP_CIDRSET_NOTFOUND))
            fail_msg("%s: found %d, expected %d", cases[i].ip, r, cases[i].found);
        if (!cases[i].found) {
            assert_int_equal(value, 0xdeadbeef);
            continue;
        }
        if (value != cases[i].value || plen != cases[i].prefixlen)
            fail_msg("%s: value %u /%u, expected %u /%u", cases[i].ip, value, plen,
                     cases[i].value, cases[i].prefixlen);
    }
}

static osp_cidrset_t *set_of(const char *const *nets, const uint32_t *values, size_t n)
{
    osp_cidrset_t *set = osp_cidrset_create();
    size_t i;

    for (i = 0; i < n; i++) {
        osp_cidr_t c = cidr_of(nets[i]);

        assert_int_equal(osp_cidrset_add(set, &c, values[i]), 1);
    }
    assert_int_equal(osp_cidrset_count(set), n);
    return set;
}

static void test_cidrset_boundaries(void **state)
{
    static const char *const nets[] = { "2001:db8::/32", "10.0.0.0/8" };
    static const uint32_t values[] = { 32, 8 };
    static const struct lookup_case cases[] = {
        { "2001:db8::", true, 32, 32 },
        { "2001:db8::1", true, 32, 32 },
        { "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true, 32, 32 },
        { "2001:db9::", false, 0, 0 },
        { "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false, 0, 0 },
        { "::", false, 0, 0 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false, 0, 0 },
        { "10.0.0.0", true, 8, 8 },
        { "10.255.255.255", true, 8, 8 },
        { "9.255.255.255", false, 0, 0 },
        { "11.0.0.0", false, 0, 0 },
        { "0.0.0.0", false, 0, 0 },
        { "255.255.255.255", false, 0, 0 },
        /* same bits, other family */
        { "a00::", false, 0, 0 },
        { "32.1.13.184", false, 0, 0 },
    };
    osp_cidrset_t *set = set_of(nets, values, NELEM(nets));

    check_lookups(set, cases, NELEM(cases));
    osp_cidrset_free(&set);
    assert_null(set);
}

/* Nested prefixes in every insertion order give the same answers. */
static void test_cidrset_longest_prefix(void **state)
{
    static const char *const nets[] = {
        "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.1.2.128/25",
    };
    static const uint32_t values[] = { 8, 16, 24, 32, 25 };
    static const struct lookup_case cases[] = {
        { "10.1.2.3", true, 32, 32 },
        { "10.1.2.4", true, 24, 24 },
        { "10.1.2.2", true, 24, 24 },
        { "10.1.2.127", true, 24, 24 },
        { "10.1.2.128", true, 25, 25 },
        { "10.1.2.255", true, 25, 25 },
        { "10.1.3.0", true, 16, 16 },
        { "10.1.1.255", true, 16, 16 },
        { "10.1.255.255", true, 16, 16 },
        { "10.2.0.0", true, 8, 8 },
        { "10.0.255.255", true, 8, 8 },
        { "11.1.2.3", false, 0, 0 },
        { "::ffff:10.1.2.3", true, 32, 32 },
        { "::ffff:10.1.2.200", true, 25, 25 },
        { "::ffff:10.9.9.9", true, 8, 8 },
        { "::ffff:11.1.2.3", false, 0, 0 },
    };
    static const struct lookup_case with_default[] = {
        { "11.1.2.3", true, 0, 0 },
        { "10.1.2.3", true, 32, 32 },
        { "10.2.0.0", true, 8, 8 },
        { "::ffff:11.1.2.3", true, 0, 0 },
        { "2001:db8::1", false, 0, 0 },
    };
    size_t n = NELEM(nets), perm[NELEM(nets)], i, k;
    unsigned orders = 0;

    /* All 5! orders: k read as a number in factorial base picks one. */
    for (k = 0; k < 120; k++) {
        const char *order[NELEM(nets)];
        uint32_t ovalues[NELEM(nets)];
        size_t code = k;
        osp_cidrset_t *set;
        osp_cidr_t def = cidr_of("0.0.0.0/0");

        for (i = 0; i < n; i++)
            perm[i] = i;
        for (i = 0; i < n; i++) {
            size_t pick = i + code % (n - i), tmp;

            code /= n - i;
            tmp = perm[i];
            perm[i] = perm[pick];
            perm[pick] = tmp;
        }
        for (i = 0; i < n; i++) {
            order[i] = nets[perm[i]];
            ovalues[i] = values[perm[i]];
        }
        set = set_of(order, ovalues, n);
        check_lookups(set, cases, NELEM(cases));
        assert_int_equal(osp_cidrset_add(set, &def, 0), 1);
        check_lookups(set, with_default, NELEM(with_default));
        osp_cidrset_free(&set);
        orders++;
    }
    assert_int_equal(orders, 120);
}

static void test_cidrset_zero_prefix(void **state)
{
    static const char *const nets[] = { "0.0.0.0/0", "::/0", "2001:db8::/32", "192.0.2.0/24" };
    static const uint32_t values[] = { 4, 6, 32, 24 };
    static const struct lookup_case cases[] = {
        { "0.0.0.0", true, 4, 0 },
        { "255.255.255.255", true, 4, 0 },
        { "192.0.2.77", true, 24, 24 },
        { "::", true, 6, 0 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true, 6, 0 },
        { "2001:db8:1::", true, 32, 32 },
        { "::ffff:8.8.8.8", true, 4, 0 },        /* IPv4, not ::/0 */
        { "::ffff:192.0.2.1", true, 24, 24 },
        { "::8.8.8.8", true, 6, 0 },             /* IPv4-compatible is plain IPv6 */
    };
    osp_cidrset_t *set = set_of(nets, values, NELEM(nets));

    check_lookups(set, cases, NELEM(cases));
    osp_cidrset_free(&set);

    /* Only IPv6 /0: IPv4 and mapped addresses are not in it. */
    {
        static const char *const v6only[] = { "::/0" };
        static const uint32_t v[] = { 6 };
        static const struct lookup_case c6[] = {
            { "1.2.3.4", false, 0, 0 },
            { "::ffff:1.2.3.4", false, 0, 0 },
            { "::1", true, 6, 0 },
        };

        set = set_of(v6only, v, 1);
        check_lookups(set, c6, NELEM(c6));
        osp_cidrset_free(&set);
    }
}

static void test_cidrset_v4mapped(void **state)
{
    static const char *const nets[] = {
        "192.0.2.0/24", "::ffff:198.51.100.0/120", "::ffff:203.0.113.7", "::fffe:0:0/95",
    };
    static const uint32_t values[] = { 1, 2, 3, 4 };
    static const struct lookup_case cases[] = {
        { "::ffff:192.0.2.1", true, 1, 24 },
        { "192.0.2.1", true, 1, 24 },
        /* a mapped prefix of >= 96 bits is the IPv4 prefix */
        { "198.51.100.9", true, 2, 24 },
        { "::ffff:198.51.100.9", true, 2, 24 },
        { "203.0.113.7", true, 3, 32 },
        { "203.0.113.8", false, 0, 0 },
        /* a shorter IPv6 prefix does not cover mapped addresses */
        { "::ffff:8.8.8.8", false, 0, 0 },
        { "::fffe:0:1", true, 4, 95 },
    };
    osp_cidrset_t *set = set_of(nets, values, NELEM(nets));
    osp_cidr_t same = cidr_of("198.51.100.0/24");

    check_lookups(set, cases, NELEM(cases));
    /* 198.51.100.0/24 is the prefix added as ::ffff:198.51.100.0/120. */
    assert_int_equal(osp_cidrset_add(set, &same, 22), 0);
    assert_int_equal(osp_cidrset_count(set), NELEM(nets));
    {
        static const struct lookup_case after[] = { { "::ffff:198.51.100.1", true, 22, 24 } };

        check_lookups(set, after, NELEM(after));
    }
    osp_cidrset_free(&set);

    /* ::ffff:0:0/96 is 0.0.0.0/0. */
    {
        static const char *const all[] = { "::ffff:0:0/96" };
        static const uint32_t v[] = { 9 };
        static const struct lookup_case c96[] = {
            { "8.8.8.8", true, 9, 0 },
            { "::ffff:8.8.8.8", true, 9, 0 },
            { "::8.8.8.8", false, 0, 0 },
        };
        osp_cidr_t zero = cidr_of("0.0.0.0/0");

        set = set_of(all, v, 1);
        check_lookups(set, c96, NELEM(c96));
        assert_int_equal(osp_cidrset_add(set, &zero, 10), 0);
        assert_int_equal(osp_cidrset_count(set), 1);
        osp_cidrset_free(&set);
    }
}

static void test_cidrset_replace_count(void **state)
{
    osp_cidrset_t *set = osp_cidrset_create(), *none = NULL;
    osp_cidr_t a = cidr_of("10.0.0.0/8"), b = cidr_of("10.0.0.0/16"), c = cidr_of("2001:db8::/32");
    osp_ip_t ip = ip_of("10.0.0.1");
    osp_cidr_t hostbits;
    uint32_t v;
    unsigned plen;

    assert_int_equal(osp_cidrset_count(set), 0);
    assert_int_equal(osp_cidrset_lookup(set, &ip, &v, &plen), OSP_CIDRSET_NOTFOUND);
    assert_int_equal(osp_cidrset_add(set, &a, 1), 1);
    assert_int_equal(osp_cidrset_add(set, &b, 2), 1);
    assert_int_equal(osp_cidrset_add(set, &c, 3), 1);
    assert_int_equal(osp_cidrset_count(set), 3);
    assert_int_equal(osp_cidrset_add(set, &b, 20), 0);
    assert_int_equal(osp_cidrset_add(set, &a, 10), 0);
    assert_int_equal(osp_cidrset_count(set), 3);
    assert_int_equal(osp_cidrset_lookup(set, &ip, &v, &plen), OSP_CIDRSET_FOUND);
    assert_int_equal(v, 20);
    assert_int_equal(plen, 16);
    /* out-parameters are optional */
    assert_int_equal(osp_cidrset_lookup(set, &ip, NULL, NULL), OSP_CIDRSET_FOUND);
    ip = ip_of("10.1.0.1");
    assert_int_equal(osp_cidrset_lookup(set, &ip, &v, NULL), OSP_CIDRSET_FOUND);
    assert_int_equal(v, 10);

    /* Host bits in a hand-built prefix are ignored: this is 10.0.0.0/16. */
    hostbits = b;
    hostbits.net = ip_of("10.0.99.99");
    assert_int_equal(osp_cidrset_add(set, &hostbits, 30), 0);
    ip = ip_of("10.0.200.1");
    assert_int_equal(osp_cidrset_lookup(set, &ip, &v, NULL), OSP_CIDRSET_FOUND);
    assert_int_equal(v, 30);
    assert_int_equal(osp_cidrset_count(set), 3);
    assert_true(osp_cidrset_memory(set) > sizeof(void *));

    /* An address of no family is found nowhere. */
    memset(&ip, 0, sizeof(ip));
    assert_int_equal(osp_cidrset_lookup(set, &ip, &v, NULL), OSP_CIDRSET_NOTFOUND);

    osp_cidrset_free(&set);
    assert_null(set);
    osp_cidrset_free(&set);
    osp_cidrset_free(&none);
}

/*
 * Brute force: a few thousand clustered, heavily nested prefixes of both
 * families (with duplicates) against a linear scan, for addresses inside
 * the prefixes, near them and anywhere.
 */
struct ref_prefix {
    osp_ip_t net;
    unsigned len;
    uint32_t value;
};

static bool ref_match(const struct ref_prefix *p, const osp_ip_t *ip)
{
    unsigned i, full = p->len / 8, rest = p->len % 8;

    if (p->net.family != ip->family)
        return false;
    for (i = 0; i < full; i++)
        if (p->net.addr[i] != ip->addr[i])
            return false;
    return rest == 0 || ((p->net.addr[full] ^ ip->addr[full]) >> (8 - rest)) == 0;
}

static void ref_mask(osp_ip_t *ip, unsigned len)
{
    unsigned i;

    for (i = 0; i < 16; i++) {
        if (len >= 8 * (i + 1))
            continue;
        ip->addr[i] &= len > 8 * i ? (uint8_t)(0xff << (8 - (len - 8 * i))) : 0;
    }
}

static osp_ip_t random_near(const osp_ip_t *base)
{
    osp_ip_t ip = *base;
    unsigned bits = ip.family == OSP_IP_V4 ? 32 : 128;
    unsigned from = rnd_below(bits + 1), i;

    /* keep the first `from` bits, randomise the rest */
    for (i = from; i < bits; i++)
        if (rnd() & 1)
            ip.addr[i / 8] ^= (uint8_t)(0x80 >> (i % 8));
    return ip;
}

static void test_cidrset_vs_linear_scan(void **state)
{
    enum { NCLUSTER = 16, NPREFIX = 5000, NADDR = 20000 };
    osp_ip_t clusters[NCLUSTER];
    struct ref_prefix *ref = calloc(NPREFIX, sizeof(*ref));
    osp_cidrset_t *set = osp_cidrset_create();
    size_t i, j, distinct = 0, hits = 0;

    assert_non_null(ref);
    rng_state = 3;
    for (i = 0; i < NCLUSTER; i++) {
        memset(&clusters[i], 0, sizeof(clusters[i]));
        clusters[i].family = i % 2 ? OSP_IP_V6 : OSP_IP_V4;
        for (j = 0; j < (i % 2 ? 16u : 4u); j++)
            clusters[i].addr[j] = (uint8_t)rnd();
    }
    for (i = 0; i < NPREFIX; i++) {
        struct ref_prefix *p = &ref[i];
        osp_cidr_t c;
        bool dup = false;

        if (i > 0 && i % 10 == 0) {
            *p = ref[rnd_below((unsigned)i)];   /* a duplicate, new value */
        } else {
            const osp_ip_t *base = &clusters[rnd_below(NCLUSTER)];
            unsigned bits = base->family == OSP_IP_V4 ? 32 : 128;

            p->net = random_near(base);
            /* mostly longer than a quarter of the bits, sometimes anything */
            if (rnd_below(8) == 0)
                p->len = rnd_below(bits + 1);
            else
                p->len = bits / 4 + rnd_below(bits - bits / 4 + 1);
            ref_mask(&p->net, p->len);
        }
        p->value = (uint32_t)i;
        for (j = 0; j < i && !dup; j++)
            dup = ref[j].len == p->len && osp_ip_equal(&ref[j].net, &p->net);
        distinct += !dup;
        c.net = p->net;
        c.prefixlen = (uint8_t)p->len;
        assert_int_equal(osp_cidrset_add(set, &c, p->value), dup ? 0 : 1);
    }
    assert_int_equal(osp_cidrset_count(set), distinct);

    for (i = 0; i < NADDR; i++) {
        osp_ip_t ip, query;
        const struct ref_prefix *best = NULL;
        uint32_t value = 0;
        unsigned plen = 0, pick = rnd_below(4);
        enum osp_cidrset_result r;

        if (pick == 0) {
            const struct ref_prefix *p = &ref[rnd_below(NPREFIX)];
            unsigned bits = p->net.family == OSP_IP_V4 ? 32 : 128, k;

            ip = p->net;                        /* inside p, random host bits */
            for (k = p->len; k < bits; k++)
                if (rnd() & 1)
                    ip.addr[k / 8] |= (uint8_t)(0x80 >> (k % 8));
        } else if (pick == 1) {
            ip = ref[rnd_below(NPREFIX)].net;   /* a network address itself */
        } else if (pick == 2) {
            ip = random_near(&clusters[rnd_below(NCLUSTER)]);
        } else {
            memset(&ip, 0, sizeof(ip));
            ip.family = rnd() & 1 ? OSP_IP_V4 : OSP_IP_V6;
            for (j = 0; j < (ip.family == OSP_IP_V4 ? 4u : 16u); j++)
                ip.addr[j] = (uint8_t)rnd();
        }
        for (j = 0; j < NPREFIX; j++)
            if (ref_match(&ref[j], &ip) && (best == NULL || ref[j].len >= best->len))
                best = &ref[j];

        /* Every fifth IPv4 query goes in IPv4-mapped form. */
        query = ip;
        if (ip.family == OSP_IP_V4 && i % 5 == 0) {
            memset(query.addr, 0, sizeof(query.addr));
            query.family = OSP_IP_V6;
            query.addr[10] = query.addr[11] = 0xff;
            memcpy(query.addr + 12, ip.addr, 4);
        }
        r = osp_cidrset_lookup(set, &query, &value, &plen);
        if (best == NULL) {
            if (r != OSP_CIDRSET_NOTFOUND) {
                char buf[OSP_IP_STRLEN];

                fail_msg("%s: found /%u, expected nothing",
                         osp_ip_format(&ip, buf, sizeof(buf)), plen);
            }
            continue;
        }
        hits++;
        if (r != OSP_CIDRSET_FOUND || value != best->value || plen != best->len) {
            char buf[OSP_IP_STRLEN];

            fail_msg("%s: got %d %u /%u, expected %u /%u", osp_ip_format(&ip, buf, sizeof(buf)),
                     r, value, plen, best->value, best->len);
        }
    }
    /* The test means something only if most queries hit. */
    assert_true(hits > NADDR / 2);
    osp_cidrset_free(&set);
    free(ref);
}

/*
 * A million random IPv4 prefixes.  The reference is a sorted array
 * searched once per prefix length, longest first.
 */
struct big_prefix {
    uint32_t net;
    uint8_t len;
    uint32_t value;
};

static int big_cmp(const void *a, const void *b)
{
    const struct big_prefix *x = a, *y = b;

    if (x->net != y->net)
        return x->net < y->net ? -1 : 1;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    /* later values last, so the kept duplicate is the last added */
    return x->value < y->value ? -1 : x->value > y->value;
}

static uint32_t mask_of(unsigned len)
{
    return len == 0 ? 0 : UINT32_MAX << (32 - len);
}

static const struct big_prefix *big_find(const struct big_prefix *a, size_t n,
                                         uint32_t net, unsigned len)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (a[mid].net < net || (a[mid].net == net && a[mid].len < len))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && a[lo].net == net && a[lo].len == len ? &a[lo] : NULL;
}

static void test_cidrset_million(void **state)
{
    enum { NPREFIX = 1000000, NQUERY = 40000 };
    struct big_prefix *all = malloc(NPREFIX * sizeof(*all));
    osp_cidrset_t *set = osp_cidrset_create();
    size_t i, n, hits = 0;

    assert_non_null(all);
    rng_state = 4;
    for (i = 0; i < NPREFIX; i++) {
        uint64_t r = rnd();
        /* mostly /16../32 like real lists, some shorter */
        unsigned len = (r >> 32) % 8 == 0 ? (unsigned)((r >> 40) % 33)
                                          : 16 + (unsigned)((r >> 40) % 17);
        osp_cidr_t c;

        all[i].len = (uint8_t)len;
        all[i].net = (uint32_t)r & mask_of(len);
        all[i].value = (uint32_t)i;
        c.net = ip_v4(all[i].net);
        c.prefixlen = (uint8_t)len;
        osp_cidrset_add(set, &c, all[i].value);
    }
    qsort(all, NPREFIX, sizeof(*all), big_cmp);
    for (i = n = 0; i < NPREFIX; i++) {
        if (n > 0 && all[n - 1].net == all[i].net && all[n - 1].len == all[i].len)
            all[n - 1] = all[i];
        else
            all[n++] = all[i];
    }
    assert_int_equal(osp_cidrset_count(set), n);
    /* 20 bytes a node, at most 2n - 1 nodes */
    assert_true(osp_cidrset_memory(set) < 48u * 1024 * 1024);

    for (i = 0; i < NQUERY; i++) {
        uint32_t a, value = 0;
        unsigned plen = 0;
        int len;
        const struct big_prefix *best = NULL;
        osp_ip_t ip;
        enum osp_cidrset_result r;

        if (i % 2) {
            const struct big_prefix *p = &all[rnd_below((unsigned)n)];

            a = p->net | ((uint32_t)rnd() & ~mask_of(p->len));
        } else {
            a = (uint32_t)rnd();
        }
        for (len = 32; len >= 0 && best == NULL; len--)
            best = big_find(all, n, a & mask_of((unsigned)len), (unsigned)len);
        ip = ip_v4(a);
        r = osp_cidrset_lookup(set, &ip, &value, &plen);
        if (best == NULL) {
            assert_int_equal(r, OSP_CIDRSET_NOTFOUND);
            continue;
        }
        hits++;
        if (r != OSP_CIDRSET_FOUND || value != best->value || plen != best->len)
            fail_msg("%08x: got %d %u /%u, expected %u /%u", a, r, value, plen,
                     best->value, best->len);
    }
    assert_true(hits > NQUERY / 2);
    osp_cidrset_free(&set);
    free(all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_parse_good),
        cmocka_unit_test(test_ip_parse_bad),
        cmocka_unit_test(test_ip_parse_like_libc),
        cmocka_unit_test(test_ip_format_roundtrip),
        cmocka_unit_test(test_ip_format_truncates),
        cmocka_unit_test(test_ip_helpers),
        cmocka_unit_test(test_ip_reverse_name),
        cmocka_unit_test(test_cidr_parse_good),
        cmocka_unit_test(test_cidr_parse_bad),
        cmocka_unit_test(test_cidr_parse_error_text_bounded),
        cmocka_unit_test(test_cidr_match),
        cmocka_unit_test(test_cidrset_boundaries),
        cmocka_unit_test(test_cidrset_longest_prefix),
        cmocka_unit_test(test_cidrset_zero_prefix),
        cmocka_unit_test(test_cidrset_v4mapped),
        cmocka_unit_test(test_cidrset_replace_count),
        cmocka_unit_test(test_cidrset_vs_linear_scan),
        cmocka_unit_test(test_cidrset_million),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
