/*
 * osp_mime: the MIME layer of the scanning engine.
 *
 * Parses an RFC 5322 message with RFC 2045-2049 MIME structure into what
 * the content filter, the rules engine and the Bayes tokenizer need:
 * header fields (raw and decoded), every MIME entity with its type,
 * parameters, file name, decoded body and content-sniffed type, the
 * visible text of the message (text/plain and HTML converted), the
 * invisible HTML text, the URLs and HTML links, and a bit mask of
 * anomalies that the rules language exposes as spam signals.
 *
 * Streaming use (the filter reads the message from the SMTP/LMTP DATA
 * stream; a parser is reusable and should be kept per worker thread, as it
 * caches iconv descriptors and buffers):
 *
 *   osp_mime_parser_t *p = osp_mime_parser_create(NULL);   (default limits)
 *   while (more data)
 *       osp_mime_parser_feed(p, buf, n);      (any split, even one byte)
 *   osp_mime_message_t *m = osp_mime_parser_finish(p);
 *   ... osp_mime_header_get(m, "Subject", 0), m->parts[i], m->text,
 *       m->urls.urls[i].host, m->anomalies & OSP_MIME_A_MISSING_CLOSE ...
 *   osp_mime_message_free(&m);
 *   osp_mime_parser_free(&p);
 * or in one call: m = osp_mime_parse(data, len, NULL).
 *
 * Input is never rejected: malformed input is parsed the way common mail
 * clients read it, and what was odd is recorded in m->anomalies (and per
 * part in part->anomalies).  Every axis is bounded (osp_mime_limits_t);
 * when a limit is reached parsing goes on in a degraded way, recording an
 * anomaly, never failing.  Time is linear in the input: boundaries are
 * only looked for at line starts, among at most max_depth of them.
 *
 * Decisions where the RFCs leave room (or where real mail ignores them):
 *   - Lines end in LF or CRLF; the CR of a CRLF is removed, a bare CR is
 *     data.  Decoded identity and quoted-printable bodies use "\n" line
 *     breaks.  The line break before a boundary belongs to the boundary
 *     (RFC 2046 5.1.1); at the end of the input it belongs to the body.
 *   - Header section: a field name is printable ASCII without ':';
 *     blanks between name and colon are obsolete syntax (RFC 5322 4.5),
 *     accepted and flagged.  A line that is not a field and not a
 *     continuation ends the header section and is the first body line,
 *     as Postfix and mail clients do (OSP_MIME_A_HEADER_MALFORMED).  A
 *     blank-only line ends the header section like an empty one.  A
 *     continuation line with no field before it is skipped.  A leading
 *     mbox "From " line is skipped.  Raw values keep folds as "\n";
 *     decoded values are unfolded (CRLF removed, the blank kept),
 *     trimmed, with RFC 2047 encoded words decoded.
 *   - RFC 2047 words are decoded wherever they occur, also inside words
 *     and quoted strings (as mail clients do); blanks between adjacent
 *     encoded words are dropped; adjacent words in the same charset are
 *     joined before conversion, so characters split across words survive.
 *     Malformed words are left as they are.  Raw 8-bit header bytes are
 *     UTF-8 if valid, otherwise windows-1252.  NUL becomes U+FFFD, CR and
 *     LF inside decoded words become spaces.
 *   - Parameters: RFC 2231 continuations and charset'lang'%XX values are
 *     joined and decoded (they win over a plain parameter of the same
 *     name); RFC 2047 words inside plain values (Outlook's
 *     filename="=?utf-8?B?...?=") are decoded too.  Unquoted values run
 *     to ';' (so name=my file.exe keeps its blank) unless a blank is
 *     followed by "token=" (a missing ';'); a blank-preceded "(comment)"
 *     at the end is dropped.  The first of duplicated parameters wins.
 *   - Content-Type: missing or unparsable means text/plain (message/rfc822
 *     inside multipart/digest); the first of duplicated Content-* fields
 *     wins.  Unknown transfer encodings are read as identity.  A
 *     multipart without boundary parameter is a text/plain leaf.
 *   - Boundaries: "--" boundary ["--"] then only blanks, at a line start;
 *     the innermost open multipart is tried first, and a boundary of an
 *     outer multipart closes the inner ones (OSP_MIME_A_MISSING_CLOSE).
 *     A nested multipart may reuse an enclosing boundary (flagged): the
 *     inner one then owns the delimiter lines until it is closed.  A
 *     multipart whose boundary never appears has its body scanned as
 *     text (OSP_MIME_A_BOUNDARY_NOT_FOUND).  The preamble is kept as the
 *     multipart's body (not scanned: clients do not show it).  After the
 *     closing boundary the epilogue is ignored, a repeated delimiter
 *     included; non-blank epilogue text is OSP_MIME_A_EPILOGUE_TEXT.
 *   - message/rfc822 and message/global entities are parsed as nested
 *     messages (their root is the container's only child) unless they are
 *     base64 or quoted-printable encoded, which is invalid: those are
 *     kept as opaque leaves (OSP_MIME_A_ENCODED_MESSAGE).
 *   - Base64 decoding skips characters outside the alphabet (flagged
 *     unless white space), finishes a quantum at '=' and goes on after it
 *     (concatenated encodings), and keeps the bytes of a final quantum
 *     that lacks its padding; a lone final character is dropped.
 *     Quoted-printable accepts lower-case hex, drops trailing blanks on
 *     a line, treats "=" at line end as a soft break and keeps an invalid
 *     "=" escape literally (flagged).
 *   - Charsets (labels as in the WHATWG Encoding Standard: latin1,
 *     iso-8859-1 and us-ascii mean windows-1252, ks_c_5601-1987 and
 *     euc-kr mean CP949, gb2312 and gbk mean GB18030, shift_jis means
 *     CP932, ...): UTF-8 invalid sequences become U+FFFD.  A label naming
 *     US-ASCII, a single-byte or a 7-bit charset on data that is valid
 *     UTF-8 with non-ASCII characters is a lie: the data is read as
 *     UTF-8 (OSP_MIME_A_CHARSET_MISMATCH).  8-bit data labelled US-ASCII
 *     is read as windows-1252.  Unknown labels: UTF-8 if the data is valid
 *     UTF-8, otherwise windows-1252 (OSP_MIME_A_UNKNOWN_CHARSET); every
 *     byte maps to something, nothing is lost.  Other charsets go through
 *     glibc iconv with invalid sequences replaced by U+FFFD.
 *   - Text: text/... leaves get UTF-8 text (CRLF as "\n", NUL as U+FFFD).
 *     The message text (osp_mime_text) is the text of every text/... leaf
 *     not marked "Content-Disposition: attachment", in order, HTML
 *     converted by osp_html, each part on its own lines; both
 *     alternatives of a multipart/alternative are included, so nothing a
 *     reader might see escapes the rules.  URLs are taken from all text
 *     leaves (attachments included: HTML attachments are a phishing
 *     vector), from HTML links, and from leaves sniffed as HTML.
 *   - A leaf is an attachment when it has a file name or disposition
 *     "attachment".  Its sniffed type (osp_mime_sniff) is compared with
 *     its file name extension and declared type; a contradiction is
 *     OSP_MIME_A_TYPE_MISMATCH ("invoice.pdf" that is an MZ executable).
 *
 * Thread safety: parsers and messages are independent objects; use each
 * from one thread at a time.
 */
#ifndef OSP_MIME_H
#define OSP_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "osp_html.h"
#include "osp_url.h"

/*
 * Limits.  A zero field means its default; osp_mime_limits_default()
 * gives the defaults.  Memory held by one message is bounded by about
 * max_total_size + max_text + max_header_bytes * 2 + small per-part and
 * per-URL overheads.  What happens when one is reached (always with an
 * anomaly, never an error):
 *   max_parts         later entities are skipped up to the next boundary
 *                     of an open multipart (PART_LIMIT);
 *   max_depth         a multipart or message/rfc822 that would nest deeper
 *                     is a leaf; its raw body is kept and searched for
 *                     URLs (DEPTH_LIMIT);
 *   max_headers,      later fields are not stored, but Content-* fields
 *   max_header_bytes  still take effect (HEADER_LIMIT);
 *   max_header_len    the rest of a field is dropped (HEADER_TOO_LONG);
 *   max_line          a longer line is processed in pieces, none of which
 *                     can be a boundary (LINE_TOO_LONG);
 *   max_part_size,    decoding stops, the rest of the part is only
 *   max_total_size    counted in raw_size (PART_TRUNCATED, TOTAL_LIMIT);
 *   max_text          the message text is cut (TEXT_LIMIT);
 *   max_urls,         later ones are dropped (URL_LIMIT);
 *   max_links
 *   max_params        later parameters of a field are ignored (BAD_PARAM).
 * HTML element nesting is tracked 256 deep, and at most 1024 host names
 * per message go through libidn2.
 */
typedef struct osp_mime_limits {
    size_t max_parts;        /* entities incl. root and containers: 1000 */
    size_t max_depth;        /* nesting of multiparts and messages: 20 */
    size_t max_headers;      /* header fields stored per message: 2000 */
    size_t max_header_len;   /* bytes of one field, folds included: 16 KiB */
    size_t max_header_bytes; /* bytes of all stored fields: 1 MiB */
    size_t max_line;         /* longer lines are processed in pieces: 64 KiB */
    size_t max_part_size;    /* decoded bytes of one part (and its text): 10 MiB */
    size_t max_total_size;   /* decoded bytes and text of all parts: 32 MiB */
    size_t max_text;         /* bytes of osp_mime_text: 2 MiB */
    size_t max_urls;         /* distinct URLs kept: 1000 */
    size_t max_links;        /* HTML links kept: 1000 */
    size_t max_params;       /* parameters per Content-Type/-Disposition: 32 */
} osp_mime_limits_t;

osp_mime_limits_t osp_mime_limits_default(void);

/* Anomalies: osp_mime_message_t.anomalies, osp_mime_part_t.anomalies. */
#define OSP_MIME_A_HEADER_8BIT         (UINT64_C(1) << 0)  /* raw 8-bit bytes in a header field */
#define OSP_MIME_A_NUL                 (UINT64_C(1) << 1)  /* NUL in a header or text */
#define OSP_MIME_A_HEADER_MALFORMED    (UINT64_C(1) << 2)  /* a non-field line in a header section */
#define OSP_MIME_A_HEADER_SPACE_COLON  (UINT64_C(1) << 3)  /* blanks before a field's colon */
#define OSP_MIME_A_HEADER_LIMIT        (UINT64_C(1) << 4)  /* fields not stored: max_headers(_bytes) */
#define OSP_MIME_A_HEADER_TOO_LONG     (UINT64_C(1) << 5)  /* field cut at max_header_len */
#define OSP_MIME_A_HEADER_UNTERMINATED (UINT64_C(1) << 6)  /* input ended in a header section */
#define OSP_MIME_A_MBOX_FROM           (UINT64_C(1) << 7)  /* leading "From " line skipped */
#define OSP_MIME_A_BAD_ENCODED_WORD    (UINT64_C(1) << 8)  /* malformed RFC 2047 word */
#define OSP_MIME_A_UNKNOWN_CHARSET     (UINT64_C(1) << 9)  /* charset label not known */
#define OSP_MIME_A_CHARSET_MISMATCH    (UINT64_C(1) << 10) /* data contradicts its charset label */
#define OSP_MIME_A_BAD_CHARSET_DATA    (UINT64_C(1) << 11) /* invalid sequences became U+FFFD */
#define OSP_MIME_A_BAD_BASE64          (UINT64_C(1) << 12) /* invalid base64 characters */
#define OSP_MIME_A_BAD_QP              (UINT64_C(1) << 13) /* invalid quoted-printable escapes */
#define OSP_MIME_A_BAD_CTE             (UINT64_C(1) << 14) /* unknown or misplaced transfer encoding */
#define OSP_MIME_A_BAD_CONTENT_TYPE    (UINT64_C(1) << 15) /* unparsable Content-Type */
#define OSP_MIME_A_DUP_CONTENT_HEADER  (UINT64_C(1) << 16) /* a Content-* field given twice */
#define OSP_MIME_A_BAD_PARAM           (UINT64_C(1) << 17) /* malformed parameter or RFC 2231 value */
#define OSP_MIME_A_DUP_PARAM           (UINT64_C(1) << 18) /* parameter given twice */
#define OSP_MIME_A_NO_BOUNDARY         (UINT64_C(1) << 19) /* multipart without boundary */
#define OSP_MIME_A_BOUNDARY_NOT_FOUND  (UINT64_C(1) << 20) /* boundary never appears */
#define OSP_MIME_A_MISSING_CLOSE       (UINT64_C(1) << 21) /* multipart not closed */
#define OSP_MIME_A_DUP_BOUNDARY        (UINT64_C(1) << 22) /* nested multipart reuses a boundary */
#define OSP_MIME_A_EPILOGUE_TEXT       (UINT64_C(1) << 23) /* text after a closing boundary */
#define OSP_MIME_A_DEPTH_LIMIT         (UINT64_C(1) << 24) /* nesting beyond max_depth */
#define OSP_MIME_A_PART_LIMIT          (UINT64_C(1) << 25) /* entities beyond max_parts ignored */
#define OSP_MIME_A_PART_TRUNCATED      (UINT64_C(1) << 26) /* a part cut at max_part_size */
#define OSP_MIME_A_TOTAL_LIMIT         (UINT64_C(1) << 27) /* max_total_size reached */
#define OSP_MIME_A_TEXT_LIMIT          (UINT64_C(1) << 28) /* message text cut at max_text */
#define OSP_MIME_A_URL_LIMIT           (UINT64_C(1) << 29) /* URLs or links beyond the caps */
#define OSP_MIME_A_LINE_TOO_LONG       (UINT64_C(1) << 30) /* line longer than max_line */
#define OSP_MIME_A_ENCODED_MESSAGE     (UINT64_C(1) << 31) /* encoded message/rfc822, not parsed */
#define OSP_MIME_A_TYPE_MISMATCH       (UINT64_C(1) << 32) /* content contradicts name or type */
#define OSP_MIME_A_EXECUTABLE          (UINT64_C(1) << 33) /* a part is an executable */
#define OSP_MIME_A_HTML_INVISIBLE      (UINT64_C(1) << 34) /* HTML with invisible text */
#define OSP_MIME_A_LINK_MISMATCH       (UINT64_C(1) << 35) /* link text names another site */
#define OSP_MIME_A_URL_OBFUSCATED      (UINT64_C(1) << 36) /* hxxp, slashes, userinfo, %-host, odd IP */
#define OSP_MIME_A_ZERO_WIDTH          (UINT64_C(1) << 37) /* zero-width characters in HTML */
#define OSP_MIME_A_COUNT               38

/*
 * The anomaly's name for the rules language ("missing_close"), NULL if
 * bit is not exactly one known anomaly.
 */
const char *osp_mime_anomaly_name(uint64_t bit);
/* The bit for a name, 0 if unknown. */
uint64_t osp_mime_anomaly_from_name(const char *name);
/* Append the names of the bits in mask, separated by spaces.  0 or -1 (cap). */
int osp_mime_anomaly_format(uint64_t mask, osp_buf_t *out);

enum osp_mime_kind {
    OSP_MIME_LEAF,          /* a body: text, image, attachment, ... */
    OSP_MIME_MULTIPART,     /* children follow; body holds the preamble */
    OSP_MIME_MESSAGE,       /* message/rfc822: one child, the nested message */
};

enum osp_mime_cte {
    OSP_MIME_CTE_7BIT,      /* also when missing */
    OSP_MIME_CTE_8BIT,
    OSP_MIME_CTE_BINARY,
    OSP_MIME_CTE_QP,
    OSP_MIME_CTE_BASE64,
    OSP_MIME_CTE_UNKNOWN,   /* read as identity */
};

typedef struct osp_mime_header {
    const char *name;       /* as written, blanks before the colon removed */
    const char *raw;        /* everything after the colon, folds as "\n" */
    const char *value;      /* unfolded, trimmed, RFC 2047-decoded UTF-8 */
} osp_mime_header_t;

typedef struct osp_mime_param {
    const char *name;       /* lower-case, without RFC 2231 "*N*" */
    const char *value;      /* decoded UTF-8 */
} osp_mime_param_t;

/*
 * One MIME entity.  All pointers are owned by the message and valid until
 * osp_mime_message_free; strings are NUL-terminated and never NULL unless
 * said otherwise; arrays (headers, params, disp_params) may be NULL when
 * their count is 0.
 */
typedef struct osp_mime_part {
    size_t index;           /* in msg->parts */
    long parent;            /* index of the container, -1 for the root */
    size_t depth;           /* 0 for the root */
    enum osp_mime_kind kind;
    const osp_mime_header_t *headers;   /* this entity's header section */
    size_t n_headers;
    const char *type;       /* effective "type/subtype", lower-case */
    const char *declared_type;  /* as given (lower-case), "" if none */
    const osp_mime_param_t *params;     /* Content-Type parameters */
    size_t n_params;
    const char *charset;    /* lower-case charset parameter, "" if none */
    const char *boundary;   /* multipart boundary, "" if none */
    enum osp_mime_cte cte;
    const char *cte_name;   /* lower-case first token, "" if none */
    const char *disposition;    /* lower-case disposition type, "" if none */
    const osp_mime_param_t *disp_params;
    size_t n_disp_params;
    const char *filename;   /* disposition filename or type name, UTF-8, "" */
    bool attachment;        /* has a file name or disposition attachment */
    const unsigned char *body;  /* decoded bytes (NUL-terminated); the
                                 * preamble for multiparts; "" for messages */
    size_t body_len;
    size_t raw_size;        /* encoded body bytes seen */
    const char *sniffed;    /* osp_mime_sniff() of body (leaves), "" else */
    const char *text;       /* UTF-8 text (NUL-terminated) of text/...
                             * leaves (for text/html the HTML source), of
                             * leaves scanned as text (sniffed HTML,
                             * containers kept whole by a limit) and of a
                             * multipart whose boundary never came; else
                             * NULL */
    size_t text_len;
    const char *visible;    /* this part's share of msg->text: a slice,
                             * not NUL-terminated; "" if none */
    size_t visible_len;
    size_t n_children;
    uint64_t anomalies;     /* OSP_MIME_A_* seen in this entity */
    /* private */
    size_t first_header_, visible_off_;
} osp_mime_part_t;

struct osp_mime_priv;

/*
 * A parsed message: read-only for the caller, who owns it and frees it
 * with osp_mime_message_free.  Borrowed pointers stay valid until then.
 */
typedef struct osp_mime_message {
    osp_mime_part_t *parts;     /* parts[0] is the message itself */
    size_t n_parts;
    osp_mime_header_t *headers; /* every stored field of every entity */
    size_t n_headers;
    uint64_t anomalies;         /* union of all parts' and the message's */
    size_t size;                /* bytes fed */
    const char *text;           /* visible text, UTF-8 (osp_mime_text) */
    size_t text_len;
    const char *invisible;      /* invisible HTML text */
    size_t invisible_len;
    size_t n_invisible;         /* runs of invisible HTML text */
    osp_url_list_t urls;        /* distinct URLs and hosts */
    const osp_html_link_t *links;   /* HTML links of all HTML parts */
    size_t n_links;
    const size_t *attachments;  /* indices of attachment parts */
    size_t n_attachments;
    struct osp_mime_priv *priv;
} osp_mime_message_t;

typedef struct osp_mime_parser osp_mime_parser_t;

/* Create a parser; limits is copied (NULL: defaults). */
osp_mime_parser_t *osp_mime_parser_create(const osp_mime_limits_t *limits);
/* Free the parser and any message in progress; NULL is fine; clears *pp. */
void osp_mime_parser_free(osp_mime_parser_t **pp);
/* Feed len more bytes (copied as needed; never fails). */
void osp_mime_parser_feed(osp_mime_parser_t *p, const void *data, size_t len);
/*
 * End of input: returns the message (never NULL; the caller owns it) and
 * makes the parser ready for the next message.
 */
osp_mime_message_t *osp_mime_parser_finish(osp_mime_parser_t *p);
/* Parse a whole message in one call (limits: NULL for defaults). */
osp_mime_message_t *osp_mime_parse(const void *data, size_t len, const osp_mime_limits_t *limits);
/* Free m (NULL is fine) and clear *mp. */
void osp_mime_message_free(osp_mime_message_t **mp);

/*
 * The decoded value of the idx-th (from 0) top-level header field named
 * name (ASCII case-insensitive), or NULL.  Borrowed.
 */
const char *osp_mime_header_get(const osp_mime_message_t *m, const char *name, size_t idx);
/* How many top-level fields are named name. */
size_t osp_mime_header_count(const osp_mime_message_t *m, const char *name);
/* The same for one entity's header section. */
const char *osp_mime_part_header_get(const osp_mime_part_t *part, const char *name, size_t idx);
/* A Content-Type parameter of the part (name lower-case), or NULL. */
const char *osp_mime_part_param(const osp_mime_part_t *part, const char *name);
/* The visible text of the message (see above); *len_r may be NULL. */
const char *osp_mime_text(const osp_mime_message_t *m, size_t *len_r);

/* ---- Building blocks, also used by other modules --------------------- */

/*
 * Decode an unfolded header value (RFC 2047, 8-bit fallback as above),
 * appending UTF-8 to out.  Returns OSP_MIME_A_* bits for what was odd.
 */
uint64_t osp_mime_decode_header(const char *s, size_t len, osp_buf_t *out);
/*
 * Convert len bytes in charset (a label such as "ISO-8859-1"; NULL or ""
 * for unlabelled) to UTF-8, appended to out, with the fallbacks above.
 * Output stops at out's cap.  Returns OSP_MIME_A_* bits.
 */
uint64_t osp_mime_charset_to_utf8(const char *charset, const void *in, size_t len, osp_buf_t *out);
/* Decode base64 / quoted-printable, appending to out.  Return OSP_MIME_A_* bits. */
uint64_t osp_mime_base64_decode(const char *in, size_t len, osp_buf_t *out);
uint64_t osp_mime_qp_decode(const char *in, size_t len, osp_buf_t *out);

/*
 * The media type of data judged by its first bytes: "application/x-dosexec"
 * (MZ), "application/x-executable" (ELF), "application/x-mach-binary",
 * "application/zip" (or the OOXML/ODF/JAR type when the first entry names
 * it), "application/pdf", "image/gif", "image/png", "image/jpeg",
 * "image/bmp", "image/tiff", "application/x-rar", "application/x-7z-compressed",
 * "application/gzip", "application/x-bzip2", "application/x-xz",
 * "application/x-ole-storage" (MS Office 97-2003, MSI), "application/rtf",
 * "application/vnd.ms-cab-compressed", "application/x-ms-shortcut",
 * "application/x-iso9660-image", "image/svg+xml", "application/xml",
 * "text/html", "text/x-script" ("#!"), "text/plain", "application/x-empty"
 * or "application/octet-stream".  Static string.
 */
const char *osp_mime_sniff(const void *data, size_t len);

#endif
