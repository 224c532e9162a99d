/* Unit tests for osp_html (HTML to text, invisible text, links) and
 * osp_url (normalisation, obfuscations, extraction from text, lists). */
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

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#include "osp_buf.h"
#include "osp_html.h"
#include "osp_url.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A wall-clock bound for pathological inputs (generous under valgrind). */
static double time_limit(double seconds)
{
    return RUNNING_ON_VALGRIND ? seconds * 100 : seconds;
}

/* ---- Character references ------------------------------------------------ */

static const struct {
    const char *in;
    const char *out;
} entity_cases[] = {
    { "&amp; &lt; &gt; &quot; &apos;", "& < > \" '" },
    { "a&nbsp;b", "a\xc2\xa0" "b" },
    { "&#65;&#x42;&#X43;&#0068;", "ABCD" },
    { "&eacute;&Eacute;&euro;&hellip;&mdash;", "\xc3\xa9\xc3\x89\xe2\x82\xac\xe2\x80\xa6\xe2\x80\x94" },
    { "&amp &copy 2024", "& \xc2\xa9 2024" },           /* legacy, no ';' */
    { "&copy2024", "&copy2024" },                       /* name runs on: not one */
    { "?a=1&amp=2", "?a=1&amp=2" },                     /* "&amp=" in a query */
    { "&nosuchentity; & &; &#; &#x;", "&nosuchentity; & &; &#; &#x;" },
    { "&#0;&#xD800;&#x110000;&#99999999999;", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
    { "&#128;&#x99;", "\xe2\x82\xac\xe2\x84\xa2" },     /* windows-1252 range */
    { "&#x1F600;", "\xf0\x9f\x98\x80" },
    { "&", "&" },
    { "&#", "&#" },
};

static void test_entities(void **state)
{
    osp_buf_t out;
    size_t i;

    (void)state;
    osp_buf_init(&out, 1024);
    for (i = 0; i < sizeof(entity_cases) / sizeof(entity_cases[0]); i++) {
        osp_buf_reset(&out);
        assert_int_equal(osp_html_decode_entities(entity_cases[i].in, strlen(entity_cases[i].in), &out), 0);
        if (strcmp(osp_buf_cstr(&out), entity_cases[i].out) != 0)
            fail_msg("entity case %zu: %s: got \"%s\"", i, entity_cases[i].in, osp_buf_cstr(&out));
    }
    osp_buf_close(&out);
    osp_buf_init(&out, 2);
    assert_int_equal(osp_html_decode_entities("&eacute;&eacute;", 16, &out), -1);
    osp_buf_close(&out);
}

/* ---- Conversion ---------------------------------------------------------- */

static const struct {
    const char *in;
    const char *text;       /* visible */
    const char *invisible;
    size_t n_invisible;
} conv_cases[] = {
    /* Structure and white space. */
    { "<p>Hello</p><p>World</p>", "Hello\nWorld", "", 0 },
    { "a<br>b<br/>c</br>d", "a\nb\nc\nd", "", 0 },
    { "a   \n\t b", "a b", "", 0 },
    { "  <div> lead </div>  trail  ", "lead\ntrail", "", 0 },
    { "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc", "", 0 },
    { "<ul><li>one<li>two</ul>", "one\ntwo", "", 0 },
    { "<pre>a  b\n c</pre>d", "a  b\n c\nd", "", 0 },
    { "<b>bo</b><i>ld</i>", "bold", "", 0 },
    { "<title>Title</title><body>Body</body>", "Title\nBody", "", 0 },
    /* Comments, declarations, raw text. */
    { "a<!-- hidden -->b", "ab", "", 0 },
    { "a<!-- x -- y -->b<!---->c<!-->d<!--->e", "abcde", "", 0 },
    { "a<!-- never closed", "a", "", 0 },
    { "<!DOCTYPE html><?xml x?>a<![CDATA[x]]>b", "ab", "", 0 },
    { "a<script>document.write('<b>x</b>')</script>b", "ab", "", 0 },
    { "a<SCRIPT type=x>if (a </b) {}</SCRIPT >b", "ab", "", 0 },
    { "a<style>p { color: red }</style>b", "ab", "", 0 },
    { "a<script>never closed", "a", "", 0 },
    { "<textarea><b>raw</b> &amp;</textarea>", "<b>raw</b> &", "", 0 },
    /* Odd markup. */
    { "a < b > c", "a < b > c", "", 0 },
    { "a <3 b", "a <3 b", "", 0 },
    { "x</>y</ z>w", "xyw", "", 0 },
    { "a<b", "a", "", 0 },
    { "a<img src=\"x.png", "a", "", 0 },
    { "<p title='a>b'>t</p>", "t", "", 0 },
    { "<p>caf&eacute; &amp; cr&egrave;me &#8364;5&nbsp;&nbsp;off</p>", "caf\xc3\xa9 & cr\xc3\xa8me \xe2\x82\xac" "5 off", "", 0 },
    /* Zero-width characters. */
    { "V&shy;i&#8203;a\xe2\x80\x8cg\xef\xbb\xbfra", "Viagra", "", 0 },
    /* Invisible text. */
    { "a<div style=\"display:none\">hidden</div>b", "a\nb", "hidden", 1 },
    { "a<span style=\"DISPLAY : None !important\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"visibility:hidden\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"font-size:0\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"font-size:1px\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"font-size:0.1em\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"font-size:12px\">v</span>b", "avb", "", 0 },
    { "a<span style=\"color:#fff\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"color:#ffffff\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"color:rgb(254,254,254)\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"color:white\">h</span>b", "ab", "h", 1 },
    { "a<span style=\"color:transparent\">h</span>b", "ab", "h", 1 },
    { "a<font color=\"#FFFFFF\">h</font>b", "ab", "h", 1 },
    { "a<font color=ffffff>h</font>b", "ab", "h", 1 },
    { "<body bgcolor=\"#000000\"><font color=\"#ffffff\">white on black</font></body>", "white on black", "", 0 },
    { "<table bgcolor=red><tr><td><font color=red>h</font>v</td></tr></table>", "v", "h", 1 },
    { "<div style=\"background:#000 url(x.png)\"><span style=\"color:#010101\">h</span></div>", "", "h", 1 },
    { "<body text=\"#ffffff\">h</body>", "", "h", 1 },
    { "a<span hidden>h</span>b", "ab", "h", 1 },
    { "a<span style=\"opacity:0\">h</span>b", "ab", "h", 1 },
    { "a<div style=\"max-height:0;overflow:hidden\">h</div>b", "a\nb", "h", 1 },
    { "a<div style=\"mso-hide:all\">h</div>b", "a\nb", "h", 1 },
    { "<style>.x, p.y { display: none }</style>a<span class=\"z x\">h</span>b<p class=y>h2</p>",
      "ab", "h\nh2", 2 },
    { "<style>@media (max-width:600px) { .m { display:none } } /* c */ .n{color:red}</style>"
      "<span class=m>v</span><span class=n>w</span>", "vw", "", 0 },
    { "<div style=\"display:none\">a<b>b</b> c</div>v<span style=\"font-size:0\">d</span>",
      "v", "ab c\nd", 2 },
    { "<div style=\"display:none\"><p style=\"display:block\">still hidden</p></div>", "", "still hidden", 1 },
    { "<p style=\"color:#fff\">h<p>v", "v", "h", 1 },          /* <p> closes <p> */
};

static void test_convert(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(conv_cases) / sizeof(conv_cases[0]); i++) {
        osp_html_t h;
        osp_buf_t text;

        osp_html_init(&h, NULL);
        osp_buf_init(&text, 4096);
        osp_html_convert(&h, conv_cases[i].in, strlen(conv_cases[i].in), &text);
        if (strcmp(osp_buf_cstr(&text), conv_cases[i].text) != 0)
            fail_msg("case %zu: %s\n  text \"%s\" want \"%s\"", i, conv_cases[i].in, osp_buf_cstr(&text),
                     conv_cases[i].text);
        if (strcmp(osp_buf_cstr(&h.invisible), conv_cases[i].invisible) != 0)
            fail_msg("case %zu: %s\n  invisible \"%s\" want \"%s\"", i, conv_cases[i].in,
                     osp_buf_cstr(&h.invisible), conv_cases[i].invisible);
        if (h.n_invisible != conv_cases[i].n_invisible)
            fail_msg("case %zu: %s\n  n_invisible %zu want %zu", i, conv_cases[i].in, h.n_invisible,
                     conv_cases[i].n_invisible);
        osp_buf_close(&text);
        osp_html_close(&h);
    }
}

static void test_convert_accumulates(void **state)
{
    osp_html_t h;
    osp_buf_t text;

    (void)state;
    osp_html_init(&h, NULL);
    osp_buf_init(&text, 12);
    osp_buf_append_str(&text, "plain");
    osp_html_convert(&h, "<p>one</p>", 10, &text);
    assert_string_equal(text.data, "plain\none");
    osp_html_convert(&h, "<style>.q{display:none}</style><i class=q>x</i>two three", 57, &text);
    assert_string_equal(text.data, "plain\none\ntw");  /* the cap */
    assert_true(h.flags & OSP_HTML_F_TEXT_TRUNCATED);
    assert_string_equal(h.invisible.data, "x");
    /* Class rules belong to one document. */
    osp_html_convert(&h, "<i class=q>y</i>", 16, &text);
    assert_string_equal(h.invisible.data, "x");
    assert_int_equal(h.n_zero_width, 0);
    osp_buf_close(&text);
    osp_html_close(&h);
}

/* ---- Links ---------------------------------------------------------------- */

static void test_links(void **state)
{
    static const char html[] =
        "<a href=\"http://evil.example/login\">https://www.bank.example/</a>\n"
        "<a href=\"https://bank.example/x\">www.bank.example</a>\n"
        "<a href=\"https://www.bank.example/y\">bank.example/y</a>\n"
        "<a href=\"https://mail.bank.co.uk/\">online.bank.co.uk</a>\n"
        "<a href=\"https://bank.co.uk/\">other.co.uk</a>\n"
        "<a href='http://x.example/?a=1&amp;b=2'>  click\n   <b>here</b>  </a>\n"
        "<a href=\"mailto:someone@example.com\">someone@example.com</a>\n"
        "<a name=\"anchor\">no link</a>\n"
        "<img src=\"//cdn.example/pic.png\"><iframe src=\"hxxp://frame.example\"></iframe>\n"
        "<form action=\"http://phish.example/post\"><input type=image src=\"http://in.example/i.png\"></form>\n"
        "<meta http-equiv=\"Refresh\" content=\"0; URL='http://refresh.example/'\">\n"
        "<map><area href=\"http://area.example/\"></map>\n"
        "<table background=\"http://bg.example/b.gif\"><tr><td>t</td></tr></table>\n"
        "<div style=\"display:none\"><a href=\"http://hidden.example/\">h</a></div>\n"
        "<a href=\"http://one.example/\">one <a href=\"http://two.example/\">two</a>\n"
        "<script src=\"http://js.example/a.js\"></script>\n"
        "<a href=\"http://1.2.3.4/\">1.2.3.4</a><a href=\"http://last.example/\">unterminated";
    osp_html_t h;
    osp_buf_t text;
    const osp_html_link_t *l;

    (void)state;
    osp_html_init(&h, NULL);
    osp_buf_init(&text, 4096);
    osp_html_convert(&h, html, sizeof(html) - 1, &text);
    assert_int_equal(h.n_links, 20);
    l = h.links;
    assert_string_equal(l[0].url, "http://evil.example/login");
    assert_string_equal(l[0].host, "evil.example");
    assert_string_equal(l[0].text, "https://www.bank.example/");
    assert_string_equal(l[0].text_host, "www.bank.example");
    assert_true(l[0].flags & OSP_HTML_LINK_MISMATCH);
    assert_int_equal(l[0].kind, OSP_HTML_LINK_A);
    assert_string_equal(l[1].text_host, "www.bank.example");
    assert_false(l[1].flags & OSP_HTML_LINK_MISMATCH);         /* same site */
    assert_string_equal(l[2].text_host, "bank.example");
    assert_false(l[2].flags & OSP_HTML_LINK_MISMATCH);
    assert_false(l[3].flags & OSP_HTML_LINK_MISMATCH);         /* bank.co.uk */
    assert_true(l[4].flags & OSP_HTML_LINK_MISMATCH);          /* other.co.uk */
    assert_string_equal(l[5].url, "http://x.example/?a=1&b=2");
    assert_string_equal(l[5].text, "click here");
    assert_string_equal(l[5].text_host, "");
    assert_true(l[6].flags & OSP_HTML_LINK_NOT_URL);
    assert_string_equal(l[6].url, "mailto:someone@example.com");
    assert_string_equal(l[6].host, "");
    assert_false(l[6].flags & OSP_HTML_LINK_MISMATCH);
    assert_string_equal(l[7].url, "http://cdn.example/pic.png");
    assert_int_equal(l[7].kind, OSP_HTML_LINK_SRC);
    assert_string_equal(l[8].url, "http://frame.example/");
    assert_true(l[8].flags & OSP_URL_F_HXXP);
    assert_int_equal(l[9].kind, OSP_HTML_LINK_FORM);
    assert_string_equal(l[9].host, "phish.example");
    assert_string_equal(l[10].host, "in.example");
    assert_int_equal(l[11].kind, OSP_HTML_LINK_REFRESH);
    assert_string_equal(l[11].url, "http://refresh.example/");
    assert_string_equal(l[12].host, "area.example");
    assert_string_equal(l[13].host, "bg.example");
    assert_string_equal(l[14].host, "hidden.example");
    assert_true(l[14].flags & OSP_HTML_LINK_HIDDEN);
    assert_false(l[0].flags & OSP_HTML_LINK_HIDDEN);
    assert_string_equal(l[15].text, "one");
    assert_string_equal(l[16].text, "two");
    assert_string_equal(l[17].host, "js.example");
    assert_string_equal(l[18].host, "1.2.3.4");
    assert_string_equal(l[18].text_host, "1.2.3.4");
    assert_false(l[18].flags & OSP_HTML_LINK_MISMATCH);        /* IP equals IP */
    assert_string_equal(l[19].host, "last.example");
    assert_string_equal(l[19].text, "unterminated");
    osp_buf_close(&text);
    osp_html_close(&h);
}

static void test_links_limit(void **state)
{
    osp_html_limits_t lim = { 5, 0, 0, 8 };
    osp_html_t h;
    osp_buf_t text, in;
    int i;

    (void)state;
    osp_html_init(&h, &lim);
    osp_buf_init(&text, 1 << 20);
    osp_buf_init(&in, 1 << 20);
    for (i = 0; i < 20; i++)
        osp_buf_printf(&in, "<a href=\"http://l%d.example/\">anchor text %d</a>", i, i);
    osp_html_convert(&h, in.data, in.len, &text);
    assert_int_equal(h.n_links, 5);
    assert_true(h.flags & OSP_HTML_F_LINKS_TRUNCATED);
    assert_string_equal(h.links[0].text, "anchor");   /* anchor text cap: 8 */
    osp_buf_close(&in);
    osp_buf_close(&text);
    osp_html_close(&h);
}

/* Deep nesting and pathological input stay linear. */
static void test_html_pathological(void **state)
{
    osp_html_t h;
    osp_buf_t text, in;
    double t0;
    int i;

    (void)state;
    osp_html_init(&h, NULL);
    osp_buf_init(&text, 1 << 20);
    osp_buf_init(&in, OSP_BUF_UNLIMITED);
    for (i = 0; i < 100000; i++)
        osp_buf_append_str(&in, "<div style=\"color:#fff\">");
    osp_buf_append_str(&in, "deep");
    for (i = 0; i < 100000; i++)
        osp_buf_append_str(&in, "</div>");
    for (i = 0; i < 100000; i++)
        osp_buf_append_str(&in, "<!-- -- ");
    osp_html_convert(&h, in.data, in.len, &text);
    assert_true(h.flags & OSP_HTML_F_DEPTH);
    assert_string_equal(h.invisible.data, "deep");
    osp_buf_reset(&in);
    osp_buf_reset(&text);
    for (i = 0; i < 100000; i++)
        osp_buf_append_str(&in, "&#x1;&amp<a <p =");
    osp_html_convert(&h, in.data, in.len, &text);

    /* Unmatched end tags and sibling searches under deep nesting are O(1). */
    osp_buf_reset(&in);
    osp_buf_reset(&text);
    osp_buf_append_str(&in, "<li>");
    for (i = 0; i < 300; i++)
        osp_buf_append_str(&in, "<x>");
    for (i = 0; i < 300000; i++)
        osp_buf_append_str(&in, "</y><li>");
    t0 = now();
    osp_html_convert(&h, in.data, in.len, &text);
    assert_true(now() - t0 < time_limit(1.0));
    osp_buf_close(&in);
    osp_buf_close(&text);
    osp_html_close(&h);
}

/* ---- URL normalisation ----------------------------------------------------- */

static const struct {
    const char *in;
    unsigned opts;
    const char *url;        /* NULL: not a URL */
    const char *host;
    unsigned flags;
} norm_cases[] = {
    { "http://Example.COM", 0, "http://example.com/", "example.com", 0 },
    { "HTTPS://example.com/Path?Q=1#F", 0, "https://example.com/Path?Q=1#F", "example.com", 0 },
    { "ftp://files.example/pub", 0, "ftp://files.example/pub", "files.example", 0 },
    { "hxxp://evil.example/x", 0, "http://evil.example/x", "evil.example", OSP_URL_F_HXXP },
    { "hXXps://evil.example", 0, "https://evil.example/", "evil.example", OSP_URL_F_HXXP },
    { "h**p://evil.example", 0, "http://evil.example/", "evil.example", OSP_URL_F_HXXP },
    { "ttp://evil.example", 0, "http://evil.example/", "evil.example", OSP_URL_F_HXXP },
    { "http:/\\evil.example/a", 0, "http://evil.example/a", "evil.example", OSP_URL_F_SLASHES },
    { "http:\\\\evil.example\\a\\b?x=\\y", 0, "http://evil.example/a/b?x=\\y", "evil.example", OSP_URL_F_SLASHES },
    { "http:evil.example", 0, "http://evil.example/", "evil.example", OSP_URL_F_SLASHES },
    { "http:///evil.example", 0, "http://evil.example/", "evil.example", OSP_URL_F_SLASHES },
    { "www.example.com/path", 0, "http://www.example.com/path", "www.example.com", OSP_URL_F_NO_SCHEME },
    { "WWW.Example.com", 0, "http://www.example.com/", "www.example.com", OSP_URL_F_NO_SCHEME },
    { "//cdn.example/x", OSP_URL_NORM_HREF, "http://cdn.example/x", "cdn.example", OSP_URL_F_NO_SCHEME },
    { "//cdn.example/x", 0, NULL, NULL, 0 },
    { "http://%65%76%69%6C.example/", 0, "http://evil.example/", "evil.example", OSP_URL_F_PCT_HOST },
    { "http://b\xc3\xbc" "cher.example/", 0, "http://xn--bcher-kva.example/", "xn--bcher-kva.example", OSP_URL_F_IDN },
    { "http://B\xc3\x9c" "CHER.example/", 0, "http://xn--bcher-kva.example/", "xn--bcher-kva.example", OSP_URL_F_IDN },
    { "http://%C3%BC.example/", 0, "http://xn--tda.example/", "xn--tda.example", OSP_URL_F_IDN | OSP_URL_F_PCT_HOST },
    { "http://\xe4\xbe\x8b\xe3\x81\x88\xe3\x80\x82\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88/x", 0,
      "http://xn--r8jz45g.xn--zckzah/x", "xn--r8jz45g.xn--zckzah", OSP_URL_F_IDN },
    { "http://3232235777/", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP | OSP_URL_F_ODD_IP },
    { "http://0xC0A80101/", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP | OSP_URL_F_ODD_IP },
    { "http://0300.0250.01.01/", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP | OSP_URL_F_ODD_IP },
    { "http://0xc0.168.0x1.1/", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP | OSP_URL_F_ODD_IP },
    { "http://192.168.257/", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP | OSP_URL_F_ODD_IP },
    { "http://192.168.1.1./", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP },
    { "http://192.168.1.1/", 0, "http://192.168.1.1/", "192.168.1.1", OSP_URL_F_IP },
    { "http://1.2.3.4.5/", 0, NULL, NULL, 0 },
    { "http://256.1.1.1/", 0, NULL, NULL, 0 },
    { "http://4294967296/", 0, NULL, NULL, 0 },
    { "http://09.1.1.1/", 0, NULL, NULL, 0 },
    { "http://foo.123/", 0, NULL, NULL, 0 },
    { "http://[2001:DB8::1]:8080/v6", 0, "http://[2001:db8::1]:8080/v6", "[2001:db8::1]", OSP_URL_F_IP | OSP_URL_F_PORT },
    { "http://[zz]/", 0, NULL, NULL, 0 },
    { "http://paypal.com@evil.example/", 0, "http://evil.example/", "evil.example", OSP_URL_F_USERINFO },
    { "http://user:pass@evil.example:8080/x", 0, "http://evil.example:8080/x", "evil.example",
      OSP_URL_F_USERINFO | OSP_URL_F_PORT },
    { "http://a@b@evil.example/", 0, "http://evil.example/", "evil.example", OSP_URL_F_USERINFO },
    { "http://example.com:80/", 0, "http://example.com/", "example.com", 0 },
    { "https://example.com:443", 0, "https://example.com/", "example.com", 0 },
    { "http://example.com:x/", 0, NULL, NULL, 0 },
    { "http://example.com:99999/", 0, NULL, NULL, 0 },
    { "  http://ex\tam\nple.com/ \r\n", 0, "http://example.com/", "example.com", 0 },
    { "http://Example.com./", 0, "http://example.com/", "example.com", 0 },
    { "http://exa mple.com", 0, NULL, NULL, 0 },
    { "http://a..b.example/", 0, NULL, NULL, 0 },
    { "http://%00evil.example/", 0, NULL, NULL, 0 },
    { "http://%ff.example/", 0, NULL, NULL, 0 },                 /* not UTF-8 */
    { "http:///", 0, NULL, NULL, 0 },
    { "http://", 0, NULL, NULL, 0 },
    { "http://host_1.example", 0, "http://host_1.example/", "host_1.example", 0 },
    { "mailto:a@example.com", 0, NULL, NULL, 0 },
    { "javascript:alert(1)", 0, NULL, NULL, 0 },
    { "data:text/html,x", 0, NULL, NULL, 0 },
    { "/relative/path", OSP_URL_NORM_HREF, NULL, NULL, 0 },
    { "#top", OSP_URL_NORM_HREF, NULL, NULL, 0 },
    { "", 0, NULL, NULL, 0 },
    { "paypal.com", OSP_URL_NORM_BARE, "http://paypal.com/", "paypal.com", OSP_URL_F_NO_SCHEME },
    { "paypal.com/login", OSP_URL_NORM_BARE, "http://paypal.com/login", "paypal.com", OSP_URL_F_NO_SCHEME },
    { "paypal", OSP_URL_NORM_BARE, NULL, NULL, 0 },
    { "version1.5", OSP_URL_NORM_BARE, NULL, NULL, 0 },
    { "a@paypal.com", OSP_URL_NORM_BARE, NULL, NULL, 0 },
    { "1.2.3.4", OSP_URL_NORM_BARE, "http://1.2.3.4/", "1.2.3.4", OSP_URL_F_NO_SCHEME | OSP_URL_F_IP },
    { "paypal.com", 0, NULL, NULL, 0 },
};

static void test_url_normalize(void **state)
{
    osp_buf_t url;
    char host[OSP_URL_HOST_BUFSIZE];
    size_t i;

    (void)state;
    osp_buf_init(&url, OSP_URL_MAX);
    for (i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
        unsigned fl = 0;
        int r = osp_url_normalize(norm_cases[i].in, strlen(norm_cases[i].in), norm_cases[i].opts, &url,
                                  host, &fl);

        if (norm_cases[i].url == NULL) {
            if (r != -1)
                fail_msg("case %zu: %s: accepted as %s", i, norm_cases[i].in, osp_buf_cstr(&url));
            continue;
        }
        if (r != 0)
            fail_msg("case %zu: %s: refused", i, norm_cases[i].in);
        if (strcmp(osp_buf_cstr(&url), norm_cases[i].url) != 0 || strcmp(host, norm_cases[i].host) != 0)
            fail_msg("case %zu: %s: got %s host %s", i, norm_cases[i].in, osp_buf_cstr(&url), host);
        if (fl != norm_cases[i].flags)
            fail_msg("case %zu: %s: flags %#x want %#x", i, norm_cases[i].in, fl, norm_cases[i].flags);
    }
    /* Long URLs are cut, not refused, and never mid-character. */
    {
        osp_buf_t in;
        int k;

        osp_buf_init(&in, OSP_BUF_UNLIMITED);
        osp_buf_append_str(&in, "http://long.example/");
        for (k = 0; k < 3000; k++)
            osp_buf_append_str(&in, "\xc3\xa9");
        assert_int_equal(osp_url_normalize(in.data, in.len, 0, &url, host, NULL), 0);
        assert_true(url.len <= OSP_URL_MAX);
        assert_true(url.len >= OSP_URL_MAX - 1);
        assert_int_equal((unsigned char)url.data[url.len - 1], 0xa9);
        osp_buf_close(&in);
    }
    osp_buf_close(&url);
}

/* ---- Extraction from text ------------------------------------------------- */

static const struct {
    const char *text;
    const char *urls[4];
} extract_cases[] = {
    { "see http://a.example/x.", { "http://a.example/x" } },
    { "(http://a.example/y), and", { "http://a.example/y" } },
    { "http://en.wikipedia.org/wiki/Foo_(bar) ok", { "http://en.wikipedia.org/wiki/Foo_(bar)" } },
    { "[http://a.example/z]", { "http://a.example/z" } },
    { "visit www.b.example, now!", { "http://www.b.example/" } },
    { "hxxp://c.example and h**ps://c2.example/p?", { "http://c.example/", "https://c2.example/p" } },
    { "<http://d.example/>", { "http://d.example/" } },
    { "\"http://q.example/\"", { "http://q.example/" } },
    { "mail john@www.e.example", { NULL } },
    { "xhttp://f.example ahttps://f2.example", { NULL } },
    { "\xe8\xaf\xb7\xe8\xae\xbf\xe9\x97\xaehttp://g.example/\xe3\x80\x82", { "http://g.example/" } },
    { "\xe2\x80\x9chttp://h.example/q\xe2\x80\x9d", { "http://h.example/q" } },
    { "http:// and http:/ and www. and www.", { NULL } },
    { "http://a.example/(http://b.example)", { "http://a.example/", "http://b.example/" } },
    { "go:http://c.example/x?u=http://d.example/", { "http://c.example/x?u=http://d.example/" } },
    { "HTTP://I.EXAMPLE/Path http://i.example/Path", { "http://i.example/Path" } },
    { "http:/\\j.example/a http://3232235777/ www.k.example/b.", { "http://j.example/a", "http://192.168.1.1/",
                                                                   "http://www.k.example/b" } },
    { "ftp://l.example/f;type=a", { "ftp://l.example/f;type=a" } },
    { "a:http://m.example/", { "http://m.example/" } },
    { "http://paypal.com@n.example/", { "http://n.example/" } },
    { "no urls here at all: http, www, ftp.", { NULL } },
};

static void test_url_extract(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(extract_cases) / sizeof(extract_cases[0]); i++) {
        osp_url_list_t l;
        size_t want = 0;

        osp_url_list_init(&l, 0);
        osp_url_extract(&l, extract_cases[i].text, strlen(extract_cases[i].text));
        while (want < 4 && extract_cases[i].urls[want])
            want++;
        if (l.n_urls != want)
            fail_msg("case %zu: \"%s\": %zu URLs, want %zu (first: %s)", i, extract_cases[i].text, l.n_urls,
                     want, l.n_urls ? l.urls[0].url : "-");
        for (k = 0; k < want; k++) {
            if (strcmp(l.urls[k].url, extract_cases[i].urls[k]) != 0)
                fail_msg("case %zu: URL %zu is %s, want %s", i, k, l.urls[k].url, extract_cases[i].urls[k]);
            assert_true(l.urls[k].flags & OSP_URL_F_TEXT);
        }
        osp_url_list_close(&l);
    }
}

static void test_url_list(void **state)
{
    osp_url_list_t l;
    osp_buf_t text;
    int i;

    (void)state;
    osp_url_list_init(&l, 50);
    assert_int_equal(osp_url_list_add(&l, "http://a.example/1", 18, OSP_URL_F_HTML, 0), 1);
    assert_int_equal(osp_url_list_add(&l, "HTTP://A.example/1", 18, 0, 0), 0);
    assert_int_equal(osp_url_list_add(&l, "http://a.example/2", 18, 0, 0), 1);
    assert_int_equal(osp_url_list_add(&l, "mailto:x@a.example", 18, 0, 0), -1);
    assert_int_equal(l.n_urls, 2);
    assert_int_equal(l.n_hosts, 1);
    assert_true(l.urls[0].flags & OSP_URL_F_HTML);
    assert_true(osp_url_list_has_host(&l, "a.example"));
    assert_false(osp_url_list_has_host(&l, "b.example"));
    /* Many, to grow the tables; the cap holds. */
    osp_buf_init(&text, OSP_BUF_UNLIMITED);
    for (i = 0; i < 200; i++)
        osp_buf_printf(&text, "http://h%d.example/ http://h%d.example/again ", i % 30, i % 30);
    osp_url_extract(&l, text.data, text.len);
    assert_int_equal(l.n_urls, 50);
    assert_int_equal(l.n_hosts, 25);
    assert_true(l.truncated);
    assert_int_equal(osp_url_list_add(&l, "http://z.example/", 17, 0, 0), -2);
    assert_int_equal(osp_url_list_add(&l, "http://a.example/1", 18, 0, 0), 0);
    for (i = 0; i < 24; i++) {
        char h[32];

        snprintf(h, sizeof(h), "h%d.example", i);
        assert_true(osp_url_list_has_host(&l, h));
    }
    osp_buf_close(&text);
    osp_url_list_close(&l);
    osp_url_list_close(&l);     /* closing twice is harmless */
}

/* Text built to make candidates rescan each other stays linear. */
static void test_url_extract_pathological(void **state)
{
    static const char *const units[] = {
        "http:/%(((((", "(http://", "www.(", "www.\xc3\xa9", "http://%(", "(www.x.(", NULL,
    };
    size_t u;

    (void)state;
    for (u = 0; units[u]; u++) {
        osp_url_list_t l;
        osp_buf_t text;
        double t0;
        int i;

        osp_url_list_init(&l, 0);
        osp_buf_init(&text, OSP_BUF_UNLIMITED);
        for (i = 0; i < 200000; i++)
            osp_buf_append_str(&text, units[u]);
        osp_buf_append_str(&text, ")))) http://last.example/");
        t0 = now();
        osp_url_extract(&l, text.data, text.len);
        if (now() - t0 > time_limit(0.5))
            fail_msg("unit \"%s\": %.2f s", units[u], now() - t0);
        assert_string_equal(l.urls[l.n_urls - 1].url, "http://last.example/");
        osp_buf_close(&text);
        osp_url_list_close(&l);
    }
}

static const struct {
    const char *a, *b;
    bool same;
} site_cases[] = {
    { "example.com", "example.com", true },
    { "www.example.com", "example.com", true },
    { "example.com", "a.b.example.com", true },
    { "a.example.com", "b.example.com", true },
    { "badexample.com", "example.com", false },
    { "example.com", "example.net", false },
    { "www.bank.co.uk", "login.bank.co.uk", true },
    { "bank.co.uk", "other.co.uk", false },
    { "a.github.io", "b.github.io", true },   /* no public suffix list: a known limit */
    { "1.2.3.4", "1.2.3.4", true },
    { "1.2.3.4", "2.3.4", false },
    { "[::1]", "[::1]", true },
    { "localhost", "example.com", false },
    { "", "example.com", false },
};

static void test_same_site(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(site_cases) / sizeof(site_cases[0]); i++) {
        if (osp_url_same_site(site_cases[i].a, site_cases[i].b) != site_cases[i].same
            || osp_url_same_site(site_cases[i].b, site_cases[i].a) != site_cases[i].same)
            fail_msg("case %zu: %s vs %s: want %d", i, site_cases[i].a, site_cases[i].b, site_cases[i].same);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entities),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_convert_accumulates),
        cmocka_unit_test(test_links),
        cmocka_unit_test(test_links_limit),
        cmocka_unit_test(test_html_pathological),
        cmocka_unit_test(test_url_normalize),
        cmocka_unit_test(test_url_extract),
        cmocka_unit_test(test_url_extract_pathological),
        cmocka_unit_test(test_url_list),
        cmocka_unit_test(test_same_site),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
