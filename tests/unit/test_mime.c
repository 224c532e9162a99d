/* Unit tests for osp_mime: headers, RFC 2047/2231, MIME structure, decoders,
 * charsets, sniffing, limits, and every input replayed split at every byte. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <iconv.h>
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
#define VALGRIND_DISABLE_ERROR_REPORTING do { } while (0)
#define VALGRIND_ENABLE_ERROR_REPORTING do { } while (0)
#endif

#include "osp_buf.h"
#include "osp_mime.h"

#define A(x) OSP_MIME_A_##x

static osp_mime_message_t *parse(const char *s)
{
    return osp_mime_parse(s, strlen(s), NULL);
}

static const osp_mime_part_t *part_of_type(const osp_mime_message_t *m, const char *type, int nth)
{
    size_t i;

    for (i = 0; i < m->n_parts; i++)
        if (strcmp(m->parts[i].type, type) == 0 && nth-- == 0)
            return &m->parts[i];
    return NULL;
}

static bool has_url(const osp_mime_message_t *m, const char *url)
{
    size_t i;

    for (i = 0; i < m->urls.n_urls; i++)
        if (strcmp(m->urls.urls[i].url, url) == 0)
            return true;
    return false;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A wall-clock bound for the pathological inputs (generous under valgrind). */
static double time_limit(double seconds)
{
    return RUNNING_ON_VALGRIND ? seconds * 100 : seconds;
}

/*
 * glibc's gconv modules for CJK charsets (UHC for CP949, EUC-KR, EUC-JP,
 * ISO-2022-JP, ...) have RUNPATH $ORIGIN.  dlopen()ing them makes ld.so's
 * own strncmp read a word past a strdup()ed "$ORIGIN", which valgrind 3.19
 * reports: a false positive inside ld.so, not in our code.  Load those
 * modules once with error reporting off and keep them loaded, so that the
 * library's own iconv_open() calls find them already there.
 */
static const char *const preload_charsets[] = {
    "CP949", "EUC-KR", "EUC-JP", "ISO-2022-JP", "CP932", "GB18030", "BIG5-HKSCS", NULL,
};
static iconv_t preloaded[8];

static void gconv_preload(void)
{
    size_t i;

    VALGRIND_DISABLE_ERROR_REPORTING;
    for (i = 0; preload_charsets[i]; i++)
        preloaded[i] = iconv_open("UTF-8", preload_charsets[i]);
    VALGRIND_ENABLE_ERROR_REPORTING;
}

static void gconv_unload(void)
{
    size_t i;

    for (i = 0; preload_charsets[i]; i++)
        if (preloaded[i] != (iconv_t)-1)
            iconv_close(preloaded[i]);
}

#define assert_anomalies(m, want) do {                                        \
        uint64_t got_ = (m)->anomalies & (want);                              \
        if (got_ != (want)) {                                                 \
            osp_buf_t b_;                                                     \
            osp_buf_init(&b_, 4096);                                          \
            osp_mime_anomaly_format((want) & ~got_, &b_);                     \
            fail_msg("missing anomalies: %s", osp_buf_cstr(&b_));            \
        }                                                                     \
    } while (0)

#define assert_no_anomalies(m, unwanted) do {                                 \
        uint64_t got_ = (m)->anomalies & (unwanted);                          \
        if (got_ != 0) {                                                      \
            osp_buf_t b_;                                                     \
            osp_buf_init(&b_, 4096);                                          \
            osp_mime_anomaly_format(got_, &b_);                               \
            fail_msg("unexpected anomalies: %s", osp_buf_cstr(&b_));         \
        }                                                                     \
    } while (0)

/* ---- A canonical dump of a parse, to compare split replays ------------ */

/* Raw bytes with their length: cheap, and exact (escaped only for display). */
static void dump_str(osp_buf_t *b, const char *label, const char *s, size_t n)
{
    osp_buf_append_str(b, label);
    osp_buf_printf(b, "[%zu]=", n);
    osp_buf_append(b, s, n);
    osp_buf_append_char(b, '\n');
}

static void print_dumps(const char *what, const osp_buf_t *ref, const osp_buf_t *got)
{
    osp_buf_t a, b;

    osp_buf_init(&a, OSP_BUF_UNLIMITED);
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_printable(&a, ref->data, ref->len);
    osp_buf_append_printable(&b, got->data, got->len);
    print_message("--- whole:\n%s\n--- %s:\n%s\n", a.data, what, b.data);
    osp_buf_close(&a);
    osp_buf_close(&b);
}

static void dump(const osp_mime_message_t *m, osp_buf_t *b)
{
    size_t i, j;

    osp_buf_reset(b);
    osp_buf_printf(b, "size=%zu parts=%zu headers=%zu anomalies=%#llx\n", m->size, m->n_parts,
                   m->n_headers, (unsigned long long)m->anomalies);
    for (i = 0; i < m->n_parts; i++) {
        const osp_mime_part_t *p = &m->parts[i];

        osp_buf_printf(b, "part %zu parent=%ld depth=%zu kind=%d type=%s decl=%s cs=%s bd=%s cte=%d/%s "
                       "disp=%s fn=%s att=%d raw=%zu sniff=%s kids=%zu an=%#llx\n",
                       p->index, p->parent, p->depth, (int)p->kind, p->type, p->declared_type, p->charset,
                       p->boundary, (int)p->cte, p->cte_name, p->disposition, p->filename,
                       (int)p->attachment, p->raw_size, p->sniffed, p->n_children,
                       (unsigned long long)p->anomalies);
        for (j = 0; j < p->n_headers; j++) {
            dump_str(b, p->headers[j].name, p->headers[j].raw, strlen(p->headers[j].raw));
            dump_str(b, "  value", p->headers[j].value, strlen(p->headers[j].value));
        }
        for (j = 0; j < p->n_params; j++)
            osp_buf_printf(b, "  param %s=%s\n", p->params[j].name, p->params[j].value);
        for (j = 0; j < p->n_disp_params; j++)
            osp_buf_printf(b, "  dparam %s=%s\n", p->disp_params[j].name, p->disp_params[j].value);
        dump_str(b, "  body", (const char *)p->body, p->body_len);
        if (p->text)
            dump_str(b, "  text", p->text, p->text_len);
        dump_str(b, "  visible", p->visible, p->visible_len);
    }
    dump_str(b, "text", m->text, m->text_len);
    dump_str(b, "invisible", m->invisible, m->invisible_len);
    osp_buf_printf(b, "n_invisible=%zu\n", m->n_invisible);
    for (i = 0; i < m->urls.n_urls; i++)
        osp_buf_printf(b, "url %s %s %#x\n", m->urls.urls[i].url, m->urls.urls[i].host, m->urls.urls[i].flags);
    for (i = 0; i < m->urls.n_hosts; i++)
        osp_buf_printf(b, "host %s\n", m->urls.hosts[i]);
    for (i = 0; i < m->n_links; i++)
        osp_buf_printf(b, "link %d %s %s [%s] %s %#x\n", (int)m->links[i].kind, m->links[i].url,
                       m->links[i].host, m->links[i].text, m->links[i].text_host, m->links[i].flags);
    for (i = 0; i < m->n_attachments; i++)
        osp_buf_printf(b, "attachment %zu\n", m->attachments[i]);
}

/*
 * Parse whole, then fed in two pieces at split points, then one byte at a
 * time, all with one reused parser: every result must be the same.  With
 * stride > 1 only every stride-th split point after the first 1 KiB.
 */
static void check_splits(const char *msg, size_t len, const osp_mime_limits_t *lim, size_t stride)
{
    osp_mime_parser_t *p = osp_mime_parser_create(lim);
    osp_mime_message_t *m;
    osp_buf_t ref, got;
    size_t k;

    osp_buf_init(&ref, OSP_BUF_UNLIMITED);
    osp_buf_init(&got, OSP_BUF_UNLIMITED);
    osp_mime_parser_feed(p, msg, len);
    m = osp_mime_parser_finish(p);
    dump(m, &ref);
    osp_mime_message_free(&m);
    for (k = 0; k <= len; k += (k < 1024 ? 1 : stride)) {
        osp_mime_parser_feed(p, msg, k);
        osp_mime_parser_feed(p, msg + k, len - k);
        m = osp_mime_parser_finish(p);
        dump(m, &got);
        osp_mime_message_free(&m);
        if (got.len != ref.len || memcmp(got.data, ref.data, ref.len) != 0) {
            print_dumps("split", &ref, &got);
            fail_msg("parse differs when split at byte %zu", k);
        }
    }
    for (k = 0; k < len; k++)
        osp_mime_parser_feed(p, msg + k, 1);
    m = osp_mime_parser_finish(p);
    dump(m, &got);
    osp_mime_message_free(&m);
    if (got.len != ref.len || memcmp(got.data, ref.data, ref.len) != 0) {
        print_dumps("byte by byte", &ref, &got);
        fail_msg("parse differs when fed byte by byte");
    }
    osp_buf_close(&ref);
    osp_buf_close(&got);
    osp_mime_parser_free(&p);
}

/* ---- Test data files --------------------------------------------------- */

static char *read_data(const char *name, size_t *len_r)
{
    char path[1024];
    const char *top = getenv("top_srcdir");
    FILE *f;
    char *buf;
    long n;

    if (top)
        snprintf(path, sizeof(path), "%s/tests/data/mime/%s", top, name);
    else
        snprintf(path, sizeof(path), "%.*s/../data/mime/%s",
                 (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__, name);
    f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len_r = (size_t)n;
    return buf;
}

static const char *const data_files[] = {
    "newsletter.eml", "nested.eml", "broken.eml", "phish.eml", "rfc2231.eml", NULL,
};

/* ---- Small messages, also replayed split ------------------------------ */

static const char msg_headers[] =
    "From: Alice <alice@example.com>\r\n"
    "Subject: a folded\r\n"
    "\tsubject  line \r\n"
    "Subject : second, obsolete colon\r\n"
    "X-Empty:\r\n"
    "X-Long: one\r\n"
    "  two\r\n"
    "   three\r\n"
    "\r\n"
    "body\r\n";

static const char msg_no_colon[] =
    "Subject: x\n"
    "this line is not a header\n"
    "X-After: y\n"
    "\n"
    "more\n";

static const char msg_mbox[] =
    "From alice@example.com Tue Mar 12 10:15:00 2024\n"
    "Subject: mbox\n"
    " \n"
    "body after a blank-only line\n";

static const char msg_multipart[] =
    "Content-Type: multipart/mixed; boundary=\"XX\"\n"
    "\n"
    "This is the preamble.\n"
    "--XX\n"
    "Content-Type: text/plain\n"
    "\n"
    "first part, with --XX inside a line\n"
    "--XXY is not the boundary\n"
    "--XX  \t\n"
    "\n"
    "second part, no headers\n"
    "\n"
    "--XX--\n"
    "epilogue text\n";

static const char msg_nested[] =
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "plain text\n"
    "--inner\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<p>html <b>text</b></p>\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: application/octet-stream; name=data.bin\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAw==\n"
    "--outer--\n";

static const char msg_rfc822[] =
    "Subject: outer\n"
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain\n"
    "\n"
    "see attached\n"
    "--b\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: inner =?utf-8?q?caf=C3=A9?=\n"
    "From: x@example.net\n"
    "Content-Type: multipart/alternative; boundary=c\n"
    "\n"
    "--c\n"
    "Content-Type: text/plain\n"
    "\n"
    "inner text\n"
    "--c--\n"
    "--b--\n";

static const char msg_missing_close[] =
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain\n"
    "\n"
    "only part\n"
    "never closed\n";

static const char msg_dup_boundary[] =
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "--b\n"
    "Content-Type: multipart/alternative; boundary=b\n"
    "\n"
    "--b\n"
    "\n"
    "inner one\n"
    "--b--\n"
    "--b\n"
    "\n"
    "outer three\n"
    "--b--\n";

static const char msg_not_found[] =
    "Content-Type: multipart/mixed; boundary=missing\n"
    "\n"
    "--other\n"
    "Content-Type: text/plain\n"
    "\n"
    "hidden spam http://spam.example/\n";

static const char msg_no_boundary[] =
    "Content-Type: multipart/mixed\n"
    "\n"
    "text without boundary\n";

static const char msg_qp_b64[] =
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: Quoted-Printable\n"
    "\n"
    "soft=\n"
    "break, caf=c3=a9, bad =ZZ =4, trailing   \n"
    "tail=3D=\n"
    "--b\n"
    "Content-Type: text/plain\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "aGVs*bG8g\n"
    "d29y bGQ\n"
    "--b\n"
    "Content-Type: text/plain\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "YQ==YQ==Yg\n"
    "--b--\n";

static const char msg_charsets[] =
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "utf-8 under us-ascii: caf\xc3\xa9\n"
    "--b\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "latin1 under us-ascii: caf\xe9\n"
    "--b\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "\n"
    "utf-8 under latin1: caf\xc3\xa9\n"
    "--b\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "broken utf-8: caf\xe9!\n"
    "--b\n"
    "Content-Type: text/plain; charset=x-no-such-charset\n"
    "\n"
    "unknown: caf\xe9\n"
    "--b\n"
    "Content-Type: text/plain; charset=ks_c_5601-1987\n"
    "\n"
    "korean: \xc7\xd1\xb1\xb9\n"
    "--b--\n";

static const char msg_exe[] =
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: application/pdf; name=\"invoice.pdf\"\n"
    "Content-Disposition: attachment; filename=\"invoice.pdf\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=\n"
    "--b\n"
    "Content-Type: application/pdf; name=\"real.pdf\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "JVBERi0xLjQKJSVFT0YK\n"
    "--b--\n";

static const char msg_text_html[] =
    "Content-Type: text/html; charset=windows-1252\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<html><body><p>Caf=E9 &amp; cr=E8me</p><div style=3D\"display:none\">buy pills</div>=\n"
    "<a href=3D\"http://evil.example/\">http://www.bank.example/</a></body></html>\n";

static const struct {
    const char *name;
    const char *msg;
    size_t len;
} small_msgs[] = {
#define M(x) { #x, x, sizeof(x) - 1 }
    M(msg_headers), M(msg_no_colon), M(msg_mbox), M(msg_multipart), M(msg_nested),
    M(msg_rfc822), M(msg_missing_close), M(msg_dup_boundary), M(msg_not_found),
    M(msg_no_boundary), M(msg_qp_b64), M(msg_charsets), M(msg_exe), M(msg_text_html),
#undef M
};

/* ---- Headers ---------------------------------------------------------- */

static void test_header_unfolding(void **state)
{
    osp_mime_message_t *m = parse(msg_headers);

    (void)state;
    assert_int_equal(m->n_headers, 5);
    assert_string_equal(osp_mime_header_get(m, "from", 0), "Alice <alice@example.com>");
    assert_string_equal(osp_mime_header_get(m, "Subject", 0), "a folded\tsubject  line");
    assert_string_equal(osp_mime_header_get(m, "SUBJECT", 1), "second, obsolete colon");
    assert_null(osp_mime_header_get(m, "Subject", 2));
    assert_int_equal(osp_mime_header_count(m, "subject"), 2);
    assert_string_equal(m->headers[1].raw, " a folded\n\tsubject  line ");
    assert_string_equal(m->headers[2].name, "Subject");
    assert_string_equal(osp_mime_header_get(m, "X-Empty", 0), "");
    assert_string_equal(osp_mime_header_get(m, "X-Long", 0), "one  two   three");
    assert_string_equal(m->text, "body\n");
    assert_anomalies(m, A(HEADER_SPACE_COLON));
    assert_no_anomalies(m, A(HEADER_MALFORMED) | A(HEADER_8BIT));
    osp_mime_message_free(&m);
    assert_null(m);
    osp_mime_message_free(&m);      /* NULL is fine */
}

static void test_header_malformed(void **state)
{
    osp_mime_message_t *m;

    (void)state;
    /* A non-field line ends the header section and is the first body line. */
    m = parse(msg_no_colon);
    assert_int_equal(m->n_headers, 1);
    assert_string_equal(m->text, "this line is not a header\nX-After: y\n\nmore\n");
    assert_anomalies(m, A(HEADER_MALFORMED));
    osp_mime_message_free(&m);

    /* mbox "From " line skipped; a blank-only line ends the headers. */
    m = parse(msg_mbox);
    assert_int_equal(m->n_headers, 1);
    assert_string_equal(osp_mime_header_get(m, "Subject", 0), "mbox");
    assert_string_equal(m->text, "body after a blank-only line\n");
    assert_anomalies(m, A(MBOX_FROM));
    osp_mime_message_free(&m);

    /* A continuation with no field before it is skipped. */
    m = parse(" orphan\nSubject: s\n\nb");
    assert_int_equal(m->n_headers, 1);
    assert_anomalies(m, A(HEADER_MALFORMED));
    osp_mime_message_free(&m);

    /* 8-bit bytes: UTF-8 kept, anything else read as windows-1252. */
    m = parse("X-A: caf\xc3\xa9\nX-B: caf\xe9 \x80\nX-C: a\001b\n\n");
    assert_string_equal(osp_mime_header_get(m, "X-A", 0), "caf\xc3\xa9");
    assert_string_equal(osp_mime_header_get(m, "X-B", 0), "caf\xc3\xa9 \xe2\x82\xac");
    assert_string_equal(osp_mime_header_get(m, "X-C", 0), "a\001b");
    assert_anomalies(m, A(HEADER_8BIT));
    osp_mime_message_free(&m);

    /* NUL in a header. */
    m = osp_mime_parse("X-N: a\0b\n\nbody", 15, NULL);
    assert_string_equal(osp_mime_header_get(m, "X-N", 0), "a\xef\xbf\xbd" "b");
    assert_anomalies(m, A(NUL));
    osp_mime_message_free(&m);

    /* Only headers, no blank line; empty input. */
    m = parse("Subject: only headers");
    assert_string_equal(osp_mime_header_get(m, "Subject", 0), "only headers");
    assert_int_equal(m->n_parts, 1);
    assert_int_equal(m->parts[0].body_len, 0);
    assert_anomalies(m, A(HEADER_UNTERMINATED));
    osp_mime_message_free(&m);
    m = osp_mime_parse("", 0, NULL);
    assert_int_equal(m->n_parts, 1);
    assert_int_equal(m->n_headers, 0);
    assert_string_equal(m->text, "");
    assert_string_equal(m->parts[0].type, "text/plain");
    osp_mime_message_free(&m);
}

static const struct {
    const char *in;
    const char *out;
    uint64_t an;
} ew_cases[] = {
    { "=?UTF-8?B?w6k=?=", "\xc3\xa9", 0 },
    { "=?iso-8859-1?q?caf=E9?=", "caf\xc3\xa9", 0 },
    { "=?utf-8?q?caf=c3=a9?=", "caf\xc3\xa9", 0 },                    /* lower-case hex */
    { "=?utf-8?q?a_b?=", "a b", 0 },
    { "=?utf-8?q?a?= =?utf-8?q?b?=", "ab", 0 },                       /* adjacent */
    { "=?utf-8?q?a?=\t  =?utf-8?b?Yg==?=", "ab", 0 },
    { "=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b", 0 },                  /* text between */
    { "Re: =?utf-8?q?caf=C3=A9?= ok", "Re: caf\xc3\xa9 ok", 0 },
    { "=?utf-8?B?ww==?= =?utf-8?B?qQ==?=", "\xc3\xa9", 0 },           /* char split over words */
    { "=?iso-8859-1?q?=E9?= =?utf-8?q?=C3=A9?=", "\xc3\xa9\xc3\xa9", 0 },
    { "foo=?utf-8?q?bar?=baz", "foobarbaz", 0 },                      /* inside a word */
    { "=?utf-8*en?q?hi?=", "hi", 0 },                                 /* RFC 2231 language */
    { "=?ks_c_5601-1987?B?x9GxuQ==?=", "\xed\x95\x9c\xea\xb5\xad", 0 },
    { "=?gb2312?B?xOO6ww==?=", "\xe4\xbd\xa0\xe5\xa5\xbd", 0 },
    { "=?utf8?q?=C3=A9?= =?latin1?q?=E9?=", "\xc3\xa9\xc3\xa9", 0 },
    { "=?x-bogus?q?caf=E9?=", "caf\xc3\xa9", A(UNKNOWN_CHARSET) },
    { "=?utf-8?x?abc?=", "=?utf-8?x?abc?=", A(BAD_ENCODED_WORD) },
    { "=?utf-8?q?abc", "=?utf-8?q?abc", A(BAD_ENCODED_WORD) },
    { "=?utf-8?q?a b?=", "=?utf-8?q?a b?=", A(BAD_ENCODED_WORD) },
    { "=?=?=?=?", "=?=?=?=?", 0 },
    { "=??q?x?=", "=??q?x?=", 0 },
    { "=?utf-8?q?a=00b?=", "a\xef\xbf\xbd" "b", A(NUL) },
    { "=?utf-8?q?a=0D=0Ab?=", "a b", 0 },
    { "=?utf-8?b?!!w6k=?=", "\xc3\xa9", 0 },                         /* garbage skipped */
    { "=?utf-8?q?" "?=", "", 0 },                                     /* empty word */
    { "plain caf\xe9", "plain caf\xc3\xa9", 0 },
};

static void test_rfc2047(void **state)
{
    osp_buf_t out;
    size_t i;

    (void)state;
    osp_buf_init(&out, 4096);
    for (i = 0; i < sizeof(ew_cases) / sizeof(ew_cases[0]); i++) {
        uint64_t an;

        osp_buf_reset(&out);
        an = osp_mime_decode_header(ew_cases[i].in, strlen(ew_cases[i].in), &out);
        if (strcmp(osp_buf_cstr(&out), ew_cases[i].out) != 0)
            fail_msg("case %zu: %s: got \"%s\" want \"%s\"", i, ew_cases[i].in, osp_buf_cstr(&out),
                     ew_cases[i].out);
        if ((an & ew_cases[i].an) != ew_cases[i].an || (!ew_cases[i].an && an))
            fail_msg("case %zu: %s: anomalies %#llx want %#llx", i, ew_cases[i].in,
                     (unsigned long long)an, (unsigned long long)ew_cases[i].an);
    }
    osp_buf_close(&out);
}

static void test_rfc2231(void **state)
{
    osp_mime_message_t *m;
    size_t len;
    char *data = read_data("rfc2231.eml", &len);
    const osp_mime_part_t *p;

    (void)state;
    m = osp_mime_parse(data, len, NULL);
    assert_string_equal(osp_mime_header_get(m, "Subject", 0), "\xe2\x82\xac rates for 2024");
    assert_string_equal(m->parts[0].boundary, "long-boundary");
    assert_int_equal(m->n_parts, 4);
    assert_string_equal(m->parts[1].charset, "utf-8");
    p = &m->parts[2];
    assert_string_equal(p->filename, "\xe2\x82\xac rates.xlsx");       /* RFC 2231 wins */
    assert_string_equal(osp_mime_part_param(p, "name"), "\xe2\x82\xac rates.xlsx");
    assert_true(p->attachment);
    assert_string_equal(p->sniffed, "application/zip");
    p = &m->parts[3];
    assert_string_equal(p->filename, "\xc3\xa9t\xc3\xa9.png");         /* RFC 2047 in quotes */
    assert_string_equal(p->sniffed, "image/png");
    assert_int_equal(m->n_attachments, 2);
    assert_no_anomalies(m, A(BAD_PARAM) | A(DUP_PARAM) | A(TYPE_MISMATCH));
    osp_mime_message_free(&m);
    free(data);

    /* Single extended value, lenient values, comments, gaps. */
    m = parse("Content-Type: text/plain charset=\"utf-8\" (comment)\n"
              "Content-Disposition: attachment; filename*=iso-8859-1'en'caf%E9%2Epdf;\n"
              "  size=12 (bytes)\n\nx");
    assert_string_equal(m->parts[0].charset, "utf-8");
    assert_string_equal(m->parts[0].filename, "caf\xc3\xa9.pdf");
    assert_string_equal(m->parts[0].disp_params[1].value, "12");
    osp_mime_message_free(&m);

    m = parse("Content-Type: application/x-stuff; name=my file.exe; charset=us-ascii (Plain text)\n\nx");
    assert_string_equal(m->parts[0].filename, "my file.exe");
    assert_string_equal(m->parts[0].charset, "us-ascii");
    osp_mime_message_free(&m);

    m = parse("Content-Type: application/x-stuff; name*0=\"a\"; name*2=\"c\"; name=\"x\"; name=\"y\"\n\nx");
    assert_string_equal(m->parts[0].filename, "a");
    assert_anomalies(m, A(BAD_PARAM) | A(DUP_PARAM));
    osp_mime_message_free(&m);

    m = parse("Content-Type: application/x-stuff; name*=utf-8'noquote\n\nx");
    assert_string_equal(m->parts[0].filename, "utf-8'noquote");
    assert_anomalies(m, A(BAD_PARAM));
    osp_mime_message_free(&m);

    m = parse("Content-Type: text/plain; name=\"a\\\"b\\\\c\"; charset=\"unterminated\n\nx");
    assert_string_equal(m->parts[0].filename, "a\"b\\c");
    assert_string_equal(m->parts[0].charset, "unterminated");
    assert_anomalies(m, A(BAD_PARAM));
    osp_mime_message_free(&m);
}

/* ---- Structure -------------------------------------------------------- */

static void test_multipart_preamble_epilogue(void **state)
{
    osp_mime_message_t *m = parse(msg_multipart);

    (void)state;
    assert_int_equal(m->n_parts, 3);
    assert_int_equal(m->parts[0].kind, OSP_MIME_MULTIPART);
    assert_int_equal(m->parts[0].n_children, 2);
    assert_string_equal((const char *)m->parts[0].body, "This is the preamble.");
    assert_string_equal((const char *)m->parts[1].body,
                        "first part, with --XX inside a line\n--XXY is not the boundary");
    assert_int_equal(m->parts[2].n_headers, 0);
    assert_string_equal(m->parts[2].type, "text/plain");
    assert_string_equal((const char *)m->parts[2].body, "second part, no headers\n");
    assert_string_equal(m->text, "first part, with --XX inside a line\n--XXY is not the boundary\n"
                                 "second part, no headers\n");
    assert_int_equal(m->parts[1].visible_len, 61);
    assert_memory_equal(m->parts[1].visible, "first part, with --XX inside a line\n--XXY is not the boundary", 61);
    assert_anomalies(m, A(EPILOGUE_TEXT));
    assert_no_anomalies(m, A(MISSING_CLOSE) | A(BOUNDARY_NOT_FOUND));
    osp_mime_message_free(&m);
}

static void test_nested_alternative(void **state)
{
    osp_mime_message_t *m = parse(msg_nested);
    const osp_mime_part_t *p;

    (void)state;
    assert_int_equal(m->n_parts, 5);
    assert_int_equal(m->parts[1].kind, OSP_MIME_MULTIPART);
    assert_string_equal(m->parts[1].type, "multipart/alternative");
    assert_int_equal(m->parts[1].parent, 0);
    assert_int_equal(m->parts[1].depth, 1);
    p = part_of_type(m, "text/html", 0);
    assert_non_null(p);
    assert_int_equal(p->parent, 1);
    assert_int_equal(p->depth, 2);
    assert_int_equal(p->visible_len, 9);
    assert_memory_equal(p->visible, "html text", 9);
    p = &m->parts[4];
    assert_string_equal(p->filename, "data.bin");
    assert_int_equal(p->body_len, 4);
    assert_memory_equal(p->body, "\0\1\2\3", 4);
    assert_string_equal(p->sniffed, "application/octet-stream");
    assert_int_equal(m->n_attachments, 1);
    assert_int_equal(m->attachments[0], 4);
    assert_string_equal(m->text, "plain text\nhtml text");
    assert_int_equal(m->anomalies, 0);
    osp_mime_message_free(&m);
}

static void test_message_rfc822(void **state)
{
    osp_mime_message_t *m = parse(msg_rfc822);
    const osp_mime_part_t *msg, *inner;

    (void)state;
    assert_int_equal(m->n_parts, 5);
    msg = part_of_type(m, "message/rfc822", 0);
    assert_non_null(msg);
    assert_int_equal(msg->kind, OSP_MIME_MESSAGE);
    assert_int_equal(msg->n_children, 1);
    inner = &m->parts[msg->index + 1];
    assert_int_equal(inner->parent, (long)msg->index);
    assert_int_equal(inner->depth, 2);
    assert_string_equal(inner->type, "multipart/alternative");
    assert_string_equal(osp_mime_part_header_get(inner, "subject", 0), "inner caf\xc3\xa9");
    assert_string_equal(osp_mime_header_get(m, "subject", 0), "outer");
    assert_null(osp_mime_header_get(m, "From", 0));     /* top level only */
    assert_int_equal(m->parts[4].depth, 3);
    assert_string_equal(m->text, "see attached\ninner text");
    assert_int_equal(m->anomalies, 0);
    osp_mime_message_free(&m);

    /* Base64-encoded message/rfc822 is kept opaque. */
    m = parse("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
              "U3ViamVjdDogeAoKaHR0cDovL2hpZGRlbi5leGFtcGxlLwo=\n");
    assert_int_equal(m->n_parts, 1);
    assert_string_equal((const char *)m->parts[0].body, "Subject: x\n\nhttp://hidden.example/\n");
    assert_true(has_url(m, "http://hidden.example/"));
    assert_anomalies(m, A(ENCODED_MESSAGE));
    osp_mime_message_free(&m);

    /* multipart/digest children default to message/rfc822. */
    m = parse("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in digest\n\nhi\n--d--\n");
    assert_string_equal(m->parts[1].type, "message/rfc822");
    assert_string_equal(osp_mime_part_header_get(&m->parts[2], "Subject", 0), "in digest");
    osp_mime_message_free(&m);
}

static void test_boundary_anomalies(void **state)
{
    osp_mime_message_t *m;

    (void)state;
    m = parse(msg_missing_close);
    assert_int_equal(m->n_parts, 2);
    assert_string_equal((const char *)m->parts[1].body, "only part\nnever closed\n");
    assert_anomalies(m, A(MISSING_CLOSE));
    osp_mime_message_free(&m);

    /* Consecutive delimiters give an empty part; the inner multipart owns
     * the reused boundary until it is closed. */
    m = parse(msg_dup_boundary);
    assert_int_equal(m->n_parts, 5);
    assert_int_equal(m->parts[1].body_len, 0);
    assert_int_equal(m->parts[2].kind, OSP_MIME_MULTIPART);
    assert_string_equal((const char *)m->parts[3].body, "inner one");
    assert_int_equal(m->parts[3].parent, 2);
    assert_string_equal((const char *)m->parts[4].body, "outer three");
    assert_int_equal(m->parts[4].parent, 0);
    assert_anomalies(m, A(DUP_BOUNDARY));
    osp_mime_message_free(&m);

    /* The boundary never appears: the body is scanned as text. */
    m = parse(msg_not_found);
    assert_int_equal(m->n_parts, 1);
    assert_string_equal(m->text, "--other\nContent-Type: text/plain\n\nhidden spam http://spam.example/\n");
    assert_true(has_url(m, "http://spam.example/"));
    assert_anomalies(m, A(BOUNDARY_NOT_FOUND));
    osp_mime_message_free(&m);

    m = parse(msg_no_boundary);
    assert_string_equal(m->parts[0].type, "text/plain");
    assert_string_equal(m->text, "text without boundary\n");
    assert_anomalies(m, A(NO_BOUNDARY));
    osp_mime_message_free(&m);

    /* An outer boundary closes an unclosed inner multipart. */
    m = parse("Content-Type: multipart/mixed; boundary=o\n\n--o\n"
              "Content-Type: multipart/mixed; boundary=i\n\n--i\n\nin\n--o\n\nafter\n--o--\n");
    assert_int_equal(m->n_parts, 4);
    assert_string_equal((const char *)m->parts[2].body, "in");
    assert_string_equal((const char *)m->parts[3].body, "after");
    assert_int_equal(m->parts[3].parent, 0);
    assert_true(m->parts[1].anomalies & A(MISSING_CLOSE));
    osp_mime_message_free(&m);

    /* A delimiter after the close is epilogue; close at EOF without newline. */
    m = parse("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b--\n--b\n\nlate\n");
    assert_int_equal(m->n_parts, 2);
    assert_anomalies(m, A(EPILOGUE_TEXT));
    osp_mime_message_free(&m);
    m = parse("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b--");
    assert_int_equal(m->n_parts, 2);
    assert_no_anomalies(m, A(MISSING_CLOSE));
    osp_mime_message_free(&m);
}

/* ---- Decoders ----------------------------------------------------------- */

static const struct {
    const char *in;
    const char *out;
    size_t outlen;
    uint64_t an;
} b64_cases[] = {
    { "aGVsbG8=", "hello", 5, 0 },
    { "aGVs\r\nbG8=\r\n", "hello", 5, 0 },
    { "aGVsbG8", "hello", 5, 0 },                   /* missing padding */
    { "aGVsbG8===", "hello", 5, 0 },                /* extra padding */
    { "YQ==YQ==", "aa", 2, 0 },                     /* concatenated */
    { "aGVs!bG8=", "hello", 5, A(BAD_BASE64) },     /* invalid char skipped */
    { "aGVsbG8gd29ybGQ=x", "hello world", 11, A(BAD_BASE64) },   /* dangling char */
    { "=====", "", 0, 0 },
    { "AA==", "\0", 1, 0 },
    { "", "", 0, 0 },
};

static const struct {
    const char *in;
    const char *out;
    uint64_t an;
} qp_cases[] = {
    { "caf=C3=A9", "caf\xc3\xa9", 0 },
    { "caf=c3=a9", "caf\xc3\xa9", 0 },              /* lower-case hex */
    { "soft=\nbreak", "softbreak", 0 },
    { "soft=  \r\nbreak", "softbreak", 0 },         /* blanks after the soft break */
    { "trailing   \nblanks\t\n", "trailing\nblanks\n", 0 },
    { "a=ZZb", "a=ZZb", A(BAD_QP) },
    { "a=4", "a=4", A(BAD_QP) },
    { "a==3D", "a==", A(BAD_QP) },
    { "end=", "end", 0 },
    { "x=20=20\n", "x  \n", 0 },
    { "a\r\nb", "a\nb", 0 },
};

static void test_decoders(void **state)
{
    osp_buf_t out;
    size_t i;

    (void)state;
    osp_buf_init(&out, 4096);
    for (i = 0; i < sizeof(b64_cases) / sizeof(b64_cases[0]); i++) {
        uint64_t an;

        osp_buf_reset(&out);
        an = osp_mime_base64_decode(b64_cases[i].in, strlen(b64_cases[i].in), &out);
        if (out.len != b64_cases[i].outlen || memcmp(osp_buf_cstr(&out), b64_cases[i].out, out.len) != 0)
            fail_msg("base64 case %zu: %s: got \"%s\"", i, b64_cases[i].in, osp_buf_cstr(&out));
        if (an != b64_cases[i].an)
            fail_msg("base64 case %zu: anomalies %#llx", i, (unsigned long long)an);
    }
    for (i = 0; i < sizeof(qp_cases) / sizeof(qp_cases[0]); i++) {
        uint64_t an;

        osp_buf_reset(&out);
        an = osp_mime_qp_decode(qp_cases[i].in, strlen(qp_cases[i].in), &out);
        if (strcmp(osp_buf_cstr(&out), qp_cases[i].out) != 0)
            fail_msg("qp case %zu: %s: got \"%s\" want \"%s\"", i, qp_cases[i].in, osp_buf_cstr(&out),
                     qp_cases[i].out);
        if (an != qp_cases[i].an)
            fail_msg("qp case %zu: anomalies %#llx", i, (unsigned long long)an);
    }
    osp_buf_close(&out);
}

static void test_decoding_in_message(void **state)
{
    osp_mime_message_t *m = parse(msg_qp_b64);

    (void)state;
    assert_int_equal(m->n_parts, 4);
    assert_string_equal((const char *)m->parts[1].body,
                        "softbreak, caf\xc3\xa9, bad =ZZ =4, trailing\ntail=");
    assert_string_equal(m->parts[1].cte_name, "quoted-printable");
    assert_string_equal((const char *)m->parts[2].body, "hello world");
    assert_string_equal((const char *)m->parts[3].body, "aab");
    assert_true(m->parts[1].anomalies & A(BAD_QP));
    assert_true(m->parts[2].anomalies & A(BAD_BASE64));
    assert_false(m->parts[3].anomalies & A(BAD_BASE64));
    osp_mime_message_free(&m);

    /* Unknown transfer encodings are read as identity. */
    m = parse("Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n");
    assert_int_equal(m->parts[0].cte, OSP_MIME_CTE_UNKNOWN);
    assert_string_equal((const char *)m->parts[0].body, "begin 644 x\n");
    assert_anomalies(m, A(BAD_CTE));
    osp_mime_message_free(&m);
}

/* ---- Charsets ----------------------------------------------------------- */

static const struct {
    const char *cs;
    const char *in;
    const char *out;
    uint64_t an;
} cs_cases[] = {
    { "utf-8", "caf\xc3\xa9", "caf\xc3\xa9", 0 },
    { "UTF8", "caf\xc3\xa9", "caf\xc3\xa9", 0 },
    { "utf-8", "caf\xe9!", "caf\xef\xbf\xbd!", A(BAD_CHARSET_DATA) },
    { "utf-8", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", A(BAD_CHARSET_DATA) },
    { "latin1", "caf\xe9", "caf\xc3\xa9", 0 },
    { "\"ISO-8859-1\"", "\x80", "\xe2\x82\xac", 0 },         /* WHATWG: windows-1252 */
    { "us-ascii", "plain", "plain", 0 },
    { "us-ascii", "caf\xc3\xa9", "caf\xc3\xa9", A(CHARSET_MISMATCH) },
    { "us-ascii", "caf\xe9", "caf\xc3\xa9", A(CHARSET_MISMATCH) },
    { "iso-8859-1", "caf\xc3\xa9", "caf\xc3\xa9", A(CHARSET_MISMATCH) },
    { "iso-8859-2", "\xb1", "\xc4\x85", 0 },
    { "koi8-r", "\xc1", "\xd0\xb0", 0 },
    { "windows-1251", "\xe0", "\xd0\xb0", 0 },
    { "ks_c_5601-1987", "\xc7\xd1\xb1\xb9", "\xed\x95\x9c\xea\xb5\xad", 0 },
    { "euc-kr", "\xc7\xd1", "\xed\x95\x9c", 0 },
    { "gb2312", "\xc4\xe3\xba\xc3", "\xe4\xbd\xa0\xe5\xa5\xbd", 0 },
    { "shift_jis", "\x82\xa0", "\xe3\x81\x82", 0 },
    { "iso-2022-jp", "\x1b$B$\"\x1b(B", "\xe3\x81\x82", 0 },
    { "utf-7", "+AOk-", "\xc3\xa9", 0 },
    { "x-no-such-charset", "caf\xe9", "caf\xc3\xa9", A(UNKNOWN_CHARSET) },
    { "x-no-such-charset", "caf\xc3\xa9", "caf\xc3\xa9", A(UNKNOWN_CHARSET) },
    { "unknown-8bit", "ascii", "ascii", 0 },
    { "", "caf\xe9", "caf\xc3\xa9", A(CHARSET_MISMATCH) },
    { "gb2312", "\xc4", "\xef\xbf\xbd", A(BAD_CHARSET_DATA) },     /* truncated */
    { "utf-8", "a\r\nb\rc", "a\nb\rc", 0 },
};

static void test_charsets(void **state)
{
    osp_buf_t out;
    size_t i;

    (void)state;
    osp_buf_init(&out, 4096);
    for (i = 0; i < sizeof(cs_cases) / sizeof(cs_cases[0]); i++) {
        uint64_t an;

        osp_buf_reset(&out);
        an = osp_mime_charset_to_utf8(cs_cases[i].cs, cs_cases[i].in, strlen(cs_cases[i].in), &out);
        if (strcmp(osp_buf_cstr(&out), cs_cases[i].out) != 0)
            fail_msg("charset case %zu (%s): got \"%s\"", i, cs_cases[i].cs, osp_buf_cstr(&out));
        if ((an & cs_cases[i].an) != cs_cases[i].an || (!cs_cases[i].an && an))
            fail_msg("charset case %zu (%s): anomalies %#llx", i, cs_cases[i].cs, (unsigned long long)an);
    }
    /* Output stops at the cap. */
    osp_buf_close(&out);
    osp_buf_init(&out, 4);
    osp_mime_charset_to_utf8("latin1", "\xe9\xe9\xe9", 3, &out);
    assert_int_equal(out.len, 4);
    osp_buf_close(&out);
}

static void test_lying_charsets_in_message(void **state)
{
    osp_mime_message_t *m = parse(msg_charsets);

    (void)state;
    assert_int_equal(m->n_parts, 7);
    assert_string_equal(m->parts[1].text, "utf-8 under us-ascii: caf\xc3\xa9");
    assert_true(m->parts[1].anomalies & A(CHARSET_MISMATCH));
    assert_string_equal(m->parts[2].text, "latin1 under us-ascii: caf\xc3\xa9");
    assert_true(m->parts[2].anomalies & A(CHARSET_MISMATCH));
    assert_string_equal(m->parts[3].text, "utf-8 under latin1: caf\xc3\xa9");
    assert_true(m->parts[3].anomalies & A(CHARSET_MISMATCH));
    assert_string_equal(m->parts[4].text, "broken utf-8: caf\xef\xbf\xbd!");
    assert_true(m->parts[4].anomalies & A(BAD_CHARSET_DATA));
    assert_string_equal(m->parts[5].text, "unknown: caf\xc3\xa9");
    assert_true(m->parts[5].anomalies & A(UNKNOWN_CHARSET));
    assert_string_equal(m->parts[6].text, "korean: \xed\x95\x9c\xea\xb5\xad");
    assert_int_equal(m->parts[6].anomalies, 0);
    osp_mime_message_free(&m);
}

/* ---- Sniffing ----------------------------------------------------------- */

static const struct {
    const char *data;
    size_t len;
    const char *type;
} sniff_cases[] = {
#define S(d, t) { d, sizeof(d) - 1, t }
    S("MZ\x90\x00\x03", "application/x-dosexec"),
    S("\x7f" "ELF\x02\x01\x01", "application/x-executable"),
    S("\xcf\xfa\xed\xfe\x07", "application/x-mach-binary"),
    S("PK\x03\x04\x14\x00\x00\x00\x08\x00", "application/zip"),
    S("PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00\x21\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
      "\x00\x00\x13\x00\x00\x00[Content_Types].xml....word/document.xml",
      "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    S("%PDF-1.7\n", "application/pdf"),
    S("\r\n\r\n%PDF-1.4", "application/pdf"),
    S("GIF89a\x01\x00", "image/gif"),
    S("\x89PNG\r\n\x1a\n\x00", "image/png"),
    S("\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
    S("Rar!\x1a\x07\x01\x00", "application/x-rar"),
    S("7z\xbc\xaf\x27\x1c\x00\x04", "application/x-7z-compressed"),
    S("\x1f\x8b\x08\x00", "application/gzip"),
    S("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "application/x-ole-storage"),
    S("{\\rtf1\\ansi", "application/rtf"),
    S("MSCF\0\0\0\0", "application/vnd.ms-cab-compressed"),
    S("<!DOCTYPE html><html>", "text/html"),
    S("\xef\xbb\xbf  <HTML>\n<body>", "text/html"),
    S("<p>hello</p>", "text/html"),
    S("<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\">", "image/svg+xml"),
    S("<?xml version=\"1.0\"?><note/>", "application/xml"),
    S("#!/bin/sh\n", "text/x-script"),
    S("Hello, world.\n", "text/plain"),
    S("caf\xe9 au lait", "text/plain"),
    S("<peter@example.com> wrote", "text/plain"),
    S("\x00\x01\x02\x03", "application/octet-stream"),
    S("", "application/x-empty"),
#undef S
};

static void test_sniff(void **state)
{
    osp_mime_message_t *m;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sniff_cases) / sizeof(sniff_cases[0]); i++) {
        const char *t = osp_mime_sniff(sniff_cases[i].data, sniff_cases[i].len);

        if (strcmp(t, sniff_cases[i].type) != 0)
            fail_msg("sniff case %zu: got %s want %s", i, t, sniff_cases[i].type);
    }

    /* An .exe named invoice.pdf is visible; a real PDF is fine. */
    m = parse(msg_exe);
    assert_string_equal(m->parts[1].filename, "invoice.pdf");
    assert_string_equal(m->parts[1].sniffed, "application/x-dosexec");
    assert_true(m->parts[1].anomalies & A(TYPE_MISMATCH));
    assert_true(m->parts[1].anomalies & A(EXECUTABLE));
    assert_string_equal(m->parts[2].sniffed, "application/pdf");
    assert_int_equal(m->parts[2].anomalies, 0);
    assert_int_equal(m->n_attachments, 2);
    osp_mime_message_free(&m);

    /* Windows ignores trailing dots and blanks; unknown extensions with an executable. */
    m = parse("Content-Type: application/octet-stream; name=\"photo.jpg. \"\n"
              "Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n");
    assert_true(m->parts[0].anomalies & A(TYPE_MISMATCH));
    osp_mime_message_free(&m);
    m = parse("Content-Type: application/octet-stream; name=\"x.unknownext\"\n"
              "Content-Transfer-Encoding: base64\n\nf0VMRgIBAQ==\n");
    assert_true(m->parts[0].anomalies & A(TYPE_MISMATCH));
    assert_true(m->parts[0].anomalies & A(EXECUTABLE));
    osp_mime_message_free(&m);
}

/* ---- Text, HTML and URLs through the message ----------------------------- */

static void test_text_html_urls(void **state)
{
    osp_mime_message_t *m = parse(msg_text_html);

    (void)state;
    assert_string_equal(m->text, "Caf\xc3\xa9 & cr\xc3\xa8me\nhttp://www.bank.example/");
    assert_string_equal(m->invisible, "buy pills");
    assert_int_equal(m->n_invisible, 1);
    assert_int_equal(m->n_links, 1);
    assert_string_equal(m->links[0].host, "evil.example");
    assert_string_equal(m->links[0].text_host, "www.bank.example");
    assert_true(m->links[0].flags & OSP_HTML_LINK_MISMATCH);
    assert_true(has_url(m, "http://evil.example/"));
    assert_true(has_url(m, "http://www.bank.example/"));
    assert_true(osp_url_list_has_host(&m->urls, "evil.example"));
    assert_anomalies(m, A(HTML_INVISIBLE) | A(LINK_MISMATCH));
    osp_mime_message_free(&m);
}

static void test_data_files(void **state)
{
    osp_mime_message_t *m;
    size_t len;
    char *data;

    (void)state;
    data = read_data("newsletter.eml", &len);
    m = osp_mime_parse(data, len, NULL);
    assert_int_equal(m->n_parts, 3);
    assert_string_equal(osp_mime_header_get(m, "Subject", 0), "Spring sale \xe2\x80\x93 up to 50 % off");
    assert_string_equal(osp_mime_header_get(m, "From", 0), "Shop Example <news@shop.example.com>");
    assert_string_equal(m->invisible, "Your exclusive offer inside \xe2\x80\x93 open now");
    assert_non_null(strstr(m->text, "Spring sale \xe2\x80\x93 up to 50 % off\n"));
    assert_non_null(strstr(m->text, "Item 15\nDear customer"));
    assert_true(has_url(m, "https://track.example.net/open.gif?u=12345"));
    assert_true(has_url(m, "https://shop.example.com/item/3?utm_source=news&id=3"));
    assert_int_equal(m->urls.n_hosts, 3);
    assert_int_equal(m->n_links, 18);
    assert_anomalies(m, A(HTML_INVISIBLE));
    assert_no_anomalies(m, ~A(HTML_INVISIBLE));
    osp_mime_message_free(&m);
    free(data);

    data = read_data("nested.eml", &len);
    m = osp_mime_parse(data, len, NULL);
    assert_int_equal(m->n_parts, 9);
    assert_string_equal(osp_mime_part_header_get(&m->parts[5], "Subject", 0), "R\xc3\xa9union de lundi");
    assert_string_equal(m->parts[6].text, "R\xc3\xa9union lundi \xc3\xa0 10h, voir http://intranet.example.net/agenda");
    assert_string_equal(m->parts[7].filename, "agenda.csv");
    assert_string_equal(m->parts[8].sniffed, "application/pdf");
    assert_int_equal(m->n_attachments, 2);
    assert_int_equal(m->anomalies, 0);
    osp_mime_message_free(&m);
    free(data);

    data = read_data("broken.eml", &len);
    m = osp_mime_parse(data, len, NULL);
    assert_string_equal(osp_mime_header_get(m, "From", 0), "Caf\xc3\xa9 <x@example.com>");
    assert_string_equal(osp_mime_header_get(m, "X-Latin1", 0), "caf\xc3\xa9 cr\xc3\xa8me");
    assert_string_equal((const char *)m->parts[1].body, "Price: 10\xe2\x82\xac =ZZ and soft break, lower \xc3\xa9 hex  ");
    assert_string_equal((const char *)m->parts[2].body, "Hello worldHi");
    assert_anomalies(m, A(HEADER_8BIT) | A(HEADER_SPACE_COLON) | A(UNKNOWN_CHARSET) | A(CHARSET_MISMATCH)
                     | A(BAD_CHARSET_DATA) | A(BAD_BASE64) | A(BAD_QP) | A(MISSING_CLOSE));
    osp_mime_message_free(&m);
    free(data);

    data = read_data("phish.eml", &len);
    m = osp_mime_parse(data, len, NULL);
    assert_true(has_url(m, "http://evil.example/a"));
    assert_true(has_url(m, "http://evil2.example/b"));
    assert_true(has_url(m, "http://192.168.1.1/c"));
    assert_true(has_url(m, "http://192.168.1.1/d"));
    assert_true(has_url(m, "http://evil3.example/e"));
    assert_true(has_url(m, "http://www.evil4.example/"));
    assert_true(has_url(m, "http://xn--pypal-gra.example/"));
    assert_true(has_url(m, "http://xn--r8jz45g.xn--zckzah/x"));
    assert_true(has_url(m, "http://198.51.100.7/login"));
    assert_true(has_url(m, "http://secure-paypa1.example/verify"));
    assert_int_equal(m->n_links, 3);
    assert_true(m->links[0].flags & OSP_HTML_LINK_MISMATCH);
    assert_true(m->links[1].flags & OSP_HTML_LINK_MISMATCH);
    assert_false(m->links[2].flags & OSP_HTML_LINK_MISMATCH);
    assert_int_equal(m->n_invisible, 3);
    assert_anomalies(m, A(TYPE_MISMATCH) | A(EXECUTABLE) | A(HTML_INVISIBLE) | A(LINK_MISMATCH)
                     | A(URL_OBFUSCATED));
    osp_mime_message_free(&m);
    free(data);
}

/* ---- Limits ------------------------------------------------------------- */

static void test_limit_depth(void **state)
{
    osp_buf_t b;
    osp_mime_message_t *m;
    double t0;
    int i;

    (void)state;
    /* 1000 nested multiparts. */
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    for (i = 0; i < 1000; i++)
        osp_buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
    osp_buf_append_str(&b, "\ndeep http://deep.example/\n");
    for (i = 999; i >= 0; i--)
        osp_buf_printf(&b, "--b%d--\n", i);
    t0 = now();
    m = osp_mime_parse(b.data, b.len, NULL);
    assert_true(now() - t0 < time_limit(1.0));
    assert_int_equal(m->n_parts, 21);
    assert_int_equal(m->parts[20].depth, 20);
    assert_int_equal(m->parts[20].kind, OSP_MIME_LEAF);
    assert_true(has_url(m, "http://deep.example/"));
    assert_anomalies(m, A(DEPTH_LIMIT));
    osp_mime_message_free(&m);

    /* 1000 nested messages. */
    osp_buf_reset(&b);
    for (i = 0; i < 1000; i++)
        osp_buf_append_str(&b, "Content-Type: message/rfc822\n\n");
    osp_buf_append_str(&b, "Subject: deepest\n\nbody\n");
    t0 = now();
    m = osp_mime_parse(b.data, b.len, NULL);
    assert_true(now() - t0 < time_limit(1.0));
    assert_int_equal(m->n_parts, 21);
    assert_anomalies(m, A(DEPTH_LIMIT));
    osp_mime_message_free(&m);
    osp_buf_close(&b);
}

static void test_limit_parts(void **state)
{
    osp_buf_t b;
    osp_mime_message_t *m;
    double t0;
    int i;

    (void)state;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_str(&b, "Content-Type: multipart/mixed; boundary=b\n\n");
    for (i = 0; i < 100000; i++)
        osp_buf_printf(&b, "--b\nContent-Type: text/plain\n\npart %d\n", i);
    osp_buf_append_str(&b, "--b--\n");
    t0 = now();
    m = osp_mime_parse(b.data, b.len, NULL);
    assert_true(now() - t0 < time_limit(2.0));
    assert_int_equal(m->n_parts, 1000);
    assert_int_equal(m->parts[0].n_children, 999);
    assert_anomalies(m, A(PART_LIMIT));
    assert_no_anomalies(m, A(MISSING_CLOSE));
    osp_mime_message_free(&m);
    osp_buf_close(&b);
}

static void test_limit_headers(void **state)
{
    osp_buf_t b;
    osp_mime_message_t *m;
    osp_mime_limits_t lim = osp_mime_limits_default();
    double t0;
    int i;

    (void)state;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    for (i = 0; i < 200000; i++)
        osp_buf_printf(&b, "X-H%d: value %d\n", i, i);
    osp_buf_append_str(&b, "Content-Type: text/html\n\n<p>body</p>\n");
    t0 = now();
    m = osp_mime_parse(b.data, b.len, NULL);
    assert_true(now() - t0 < time_limit(2.0));
    assert_int_equal(m->n_headers, lim.max_headers);
    assert_string_equal(m->parts[0].type, "text/html");   /* still applied */
    assert_string_equal(m->text, "body");
    assert_anomalies(m, A(HEADER_LIMIT));
    osp_mime_message_free(&m);

    /* One enormous folded field. */
    osp_buf_reset(&b);
    osp_buf_append_str(&b, "Subject: x");
    for (i = 0; i < 100000; i++)
        osp_buf_append_str(&b, "\n y");
    osp_buf_append_str(&b, "\n\nbody\n");
    m = osp_mime_parse(b.data, b.len, NULL);
    assert_true(strlen(m->headers[0].raw) <= lim.max_header_len);
    assert_string_equal(m->text, "body\n");
    assert_anomalies(m, A(HEADER_TOO_LONG));
    osp_mime_message_free(&m);
    osp_buf_close(&b);
}

static void test_limit_sizes(void **state)
{
    osp_mime_limits_t lim;
    osp_mime_message_t *m;
    osp_buf_t b;
    int i;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_part_size = 100;
    lim.max_total_size = 150;
    lim.max_text = 120;
    lim.max_urls = 3;
    lim.max_line = 1024;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_str(&b, "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n");
    for (i = 0; i < 30; i++)
        osp_buf_printf(&b, "http://u%d.example/ ", i);
    osp_buf_append_str(&b, "\n--b\nContent-Transfer-Encoding: base64\n\n");
    for (i = 0; i < 400; i++)
        osp_buf_append_str(&b, "QUFB");
    osp_buf_append_str(&b, "\n--b\n\nlast\n--b--\n");
    m = osp_mime_parse(b.data, b.len, &lim);
    assert_int_equal(m->n_parts, 4);
    assert_int_equal(m->parts[1].body_len, 100);
    assert_int_equal(m->parts[2].body_len, 50);     /* what the total leaves */
    assert_int_equal(m->parts[2].raw_size, 1601);
    assert_int_equal(m->parts[3].body_len, 0);
    assert_true(m->text_len <= 120);
    assert_int_equal(m->urls.n_urls, 3);
    assert_anomalies(m, A(PART_TRUNCATED) | A(TOTAL_LIMIT) | A(URL_LIMIT) | A(LINE_TOO_LONG));
    osp_mime_message_free(&m);
    osp_buf_close(&b);
}

/* Long lines are cut into pieces the same way whatever the split. */
static void test_long_lines_split(void **state)
{
    osp_mime_limits_t lim;
    osp_buf_t b;
    int i;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_line = 1024;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_str(&b, "Subject: ");
    for (i = 0; i < 300; i++)
        osp_buf_append_str(&b, "word ");
    osp_buf_append_str(&b, "\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\n");
    for (i = 0; i < 700; i++)
        osp_buf_append_str(&b, "QUJD");
    osp_buf_append_str(&b, "\r\n--b\nContent-Transfer-Encoding: quoted-printable\n\n");
    for (i = 0; i < 500; i++)
        osp_buf_append_str(&b, "ab=3D");
    osp_buf_append_str(&b, "=\r\nend\n--b\n\n");
    for (i = 0; i < 1100; i++)
        osp_buf_append_char(&b, 'x');
    osp_buf_append_str(&b, "\r\n--b--\n");
    for (i = 0; i < 2048; i++)
        osp_buf_append_char(&b, 'y');
    check_splits(b.data, b.len, &lim, 13);
    osp_buf_close(&b);
}

/* ---- Splits, reuse, names ------------------------------------------------ */

static void test_splits_small(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(small_msgs) / sizeof(small_msgs[0]); i++)
        check_splits(small_msgs[i].msg, small_msgs[i].len, NULL, 1);
}

static void test_splits_files(void **state)
{
    size_t i, len;

    (void)state;
    for (i = 0; data_files[i]; i++) {
        char *data = read_data(data_files[i], &len);

        check_splits(data, len, NULL, 37);
        free(data);
    }
}

static void test_parser_reuse(void **state)
{
    osp_mime_parser_t *p = osp_mime_parser_create(NULL);
    osp_mime_message_t *m;

    (void)state;
    osp_mime_parser_feed(p, msg_nested, 40);       /* abandoned half-way by finish */
    m = osp_mime_parser_finish(p);
    osp_mime_message_free(&m);
    osp_mime_parser_feed(p, "Subject: two\n\nsecond\n", 21);
    m = osp_mime_parser_finish(p);
    assert_int_equal(m->n_parts, 1);
    assert_string_equal(osp_mime_header_get(m, "Subject", 0), "two");
    assert_string_equal(m->text, "second\n");
    osp_mime_message_free(&m);
    m = osp_mime_parser_finish(p);                  /* nothing fed */
    assert_int_equal(m->n_parts, 1);
    assert_int_equal(m->size, 0);
    osp_mime_message_free(&m);
    osp_mime_parser_feed(p, "Subject: left", 13);   /* freed with a message in progress */
    osp_mime_parser_free(&p);
    assert_null(p);
    osp_mime_parser_free(&p);
}

static void test_anomaly_names(void **state)
{
    osp_buf_t b;
    int i, j;

    (void)state;
    for (i = 0; i < OSP_MIME_A_COUNT; i++) {
        const char *n = osp_mime_anomaly_name(UINT64_C(1) << i);

        assert_non_null(n);
        assert_int_equal(osp_mime_anomaly_from_name(n), UINT64_C(1) << i);
        for (j = 0; j < i; j++)
            assert_string_not_equal(n, osp_mime_anomaly_name(UINT64_C(1) << j));
    }
    assert_null(osp_mime_anomaly_name(UINT64_C(1) << OSP_MIME_A_COUNT));
    assert_null(osp_mime_anomaly_name(3));
    assert_int_equal(osp_mime_anomaly_from_name("nope"), 0);
    assert_string_equal(osp_mime_anomaly_name(A(MISSING_CLOSE)), "missing_close");
    osp_buf_init(&b, 64);
    assert_int_equal(osp_mime_anomaly_format(A(BAD_QP) | A(EXECUTABLE), &b), 0);
    assert_string_equal(osp_buf_cstr(&b), "bad_qp executable");
    osp_buf_close(&b);
    osp_buf_init(&b, 5);
    assert_int_equal(osp_mime_anomaly_format(A(BAD_QP) | A(EXECUTABLE), &b), -1);
    assert_string_equal(osp_buf_cstr(&b), "");
    osp_buf_close(&b);
}

static void test_crlf_and_lf_agree(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(small_msgs) / sizeof(small_msgs[0]); i++) {
        osp_buf_t crlf;
        osp_mime_message_t *a, *b;
        size_t k;

        if (memchr(small_msgs[i].msg, '\r', small_msgs[i].len))
            continue;
        osp_buf_init(&crlf, OSP_BUF_UNLIMITED);
        for (k = 0; k < small_msgs[i].len; k++) {
            if (small_msgs[i].msg[k] == '\n')
                osp_buf_append_char(&crlf, '\r');
            osp_buf_append_char(&crlf, small_msgs[i].msg[k]);
        }
        a = osp_mime_parse(small_msgs[i].msg, small_msgs[i].len, NULL);
        b = osp_mime_parse(crlf.data, crlf.len, NULL);
        assert_int_equal(a->n_parts, b->n_parts);
        assert_int_equal(a->anomalies, b->anomalies);
        assert_string_equal(a->text, b->text);
        for (k = 0; k < a->n_parts; k++) {
            assert_int_equal(a->parts[k].body_len, b->parts[k].body_len);
            assert_memory_equal(a->parts[k].body, b->parts[k].body, a->parts[k].body_len);
        }
        osp_mime_message_free(&a);
        osp_mime_message_free(&b);
        osp_buf_close(&crlf);
    }
}

int main(void)
{
    int r;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_unfolding),
        cmocka_unit_test(test_header_malformed),
        cmocka_unit_test(test_rfc2047),
        cmocka_unit_test(test_rfc2231),
        cmocka_unit_test(test_multipart_preamble_epilogue),
        cmocka_unit_test(test_nested_alternative),
        cmocka_unit_test(test_message_rfc822),
        cmocka_unit_test(test_boundary_anomalies),
        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_decoding_in_message),
        cmocka_unit_test(test_charsets),
        cmocka_unit_test(test_lying_charsets_in_message),
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_text_html_urls),
        cmocka_unit_test(test_data_files),
        cmocka_unit_test(test_limit_depth),
        cmocka_unit_test(test_limit_parts),
        cmocka_unit_test(test_limit_headers),
        cmocka_unit_test(test_limit_sizes),
        cmocka_unit_test(test_long_lines_split),
        cmocka_unit_test(test_splits_small),
        cmocka_unit_test(test_splits_files),
        cmocka_unit_test(test_parser_reuse),
        cmocka_unit_test(test_anomaly_names),
        cmocka_unit_test(test_crlf_and_lf_agree),
    };

    gconv_preload();
    r = cmocka_run_group_tests(tests, NULL, NULL);
    gconv_unload();
    return r;
}
