/*
 * osp_html: HTML to text for scanning, with the hidden parts kept apart.
 *
 * The rules engine and the Bayes tokenizer want the words a reader sees;
 * spam rules also want what a reader does not see (text hidden with CSS,
 * white on white, tiny fonts) and where links really go.  One converter
 * pass gives all three:
 *
 *   osp_html_t h;
 *   osp_buf_t text;
 *
 *   osp_html_init(&h, NULL);                  (NULL: default limits)
 *   osp_buf_init(&text, 1 << 20);             (its cap bounds the text)
 *   osp_html_convert(&h, html, html_len, &text);
 *   ... text.data: visible text;  h.invisible.data, h.n_invisible;
 *   ... h.links[i].url, .host, .text, .text_host, .flags ...
 *   osp_buf_close(&text);
 *   osp_html_close(&h);
 *
 * Input is UTF-8 (convert first; osp_mime does).  It is never rejected:
 * this is a tolerant single pass, linear in the input, not an HTML5 tree
 * builder.  What it does:
 *   - tags are removed; comments, "<!...>", "<?...>" and the contents of
 *     <script>, <style>, <template> and <noembed> produce nothing; <title>,
 *     <textarea> and <xmp> contents are text (not markup) and shown, the
 *     title on its own line (Bayes wants its words; mail clients do not
 *     show it, but it is no hiding trick either); an unterminated tag or
 *     comment runs to the end of the input and is dropped, as in HTML5;
 *   - character references are decoded: the HTML 4 named set (Latin-1,
 *     symbols, typographic marks) plus &apos;, with or without the ';'
 *     (without only when the name ends there), and &#NNN; / &#xHH;
 *     (0x80-0x9f as windows-1252, invalid code points as U+FFFD);
 *   - white space collapses to one space except inside <pre>; block
 *     elements (p, div, br, li, tr, h1-h6, table, ...) give a line break,
 *     table cells a space; no-break spaces become spaces;
 *   - zero-width characters (U+200B-U+200D, U+2060, U+FEFF, soft hyphen),
 *     a common way to break up words, are dropped and counted in
 *     n_zero_width;
 *   - text is "invisible" when an enclosing element has the hidden
 *     attribute or style display:none, visibility:hidden|collapse,
 *     opacity below 0.1, mso-hide:all, a font-size of at most 1px/1pt
 *     (0.1em, 10%), zero height or width with overflow:hidden, or a text
 *     colour within a small distance of its background colour (CSS color
 *     and background[-color], and the legacy color/bgcolor/text
 *     attributes; the page background is white unless set).  Class
 *     selectors that hide (".x { display: none }" in a <style> element,
 *     outside @media blocks) hide elements of that class.  Invisible text
 *     goes to h.invisible (runs separated by newlines), not to the
 *     visible text; h.n_invisible counts the runs (a run ends where an
 *     invisible element ends or visible text appears).  Styles are
 *     inherited down a stack of open elements (max_depth deep); an end
 *     tag closes the innermost open element of its name among the 64 on
 *     top of the stack and is otherwise ignored, and <p>, <li>, <td>,
 *     <tr>, <option>, <dt>, <dd> close an open sibling of the same name,
 *     so every tag costs constant time;
 *   - links: <a href>, <area href>, <form action>, <img|iframe|frame|embed|
 *     script|input src>, background="..." and <meta http-equiv=refresh>
 *     give one osp_html_link_t each, with the anchor's visible text for
 *     <a> and <area>.  When the anchor text is itself one URL or domain
 *     name ("www.bank.example", "https://bank.example/login") its host is
 *     text_host, and OSP_HTML_LINK_MISMATCH is set if that is not the
 *     same site (osp_url_same_site) as the link's host.  Values that are
 *     not http(s)/ftp URLs (mailto:, relative) are kept raw with
 *     OSP_HTML_LINK_NOT_URL.  Links inside invisible content have
 *     OSP_HTML_LINK_HIDDEN.
 *
 * osp_html_convert may be called several times (one message, several HTML
 * parts): visible text is appended to the caller's buffer, the rest
 * accumulates in h.  Not thread-safe per object; objects are independent.
 */
#ifndef OSP_HTML_H
#define OSP_HTML_H

#include <stdbool.h>
#include <stddef.h>

#include "osp_buf.h"

typedef struct osp_html_limits {
    size_t max_links;       /* links kept (1000) */
    size_t max_invisible;   /* bytes of invisible text kept (256 KiB) */
    size_t max_depth;       /* open elements tracked for styles (256) */
    size_t max_anchor_text; /* bytes of anchor text per link (256) */
} osp_html_limits_t;

/* Link kinds (osp_html_link_t.kind). */
enum osp_html_link_kind {
    OSP_HTML_LINK_A,        /* <a href>, <area href> */
    OSP_HTML_LINK_FORM,     /* <form action> */
    OSP_HTML_LINK_SRC,      /* src= of img, iframe, frame, embed, script, input; background= */
    OSP_HTML_LINK_REFRESH,  /* <meta http-equiv=refresh content="0;url=..."> */
};

/* osp_html_link_t.flags, besides the OSP_URL_F_* flags of the URL. */
#define OSP_HTML_LINK_MISMATCH  0x10000u /* anchor text names another site */
#define OSP_HTML_LINK_HIDDEN    0x20000u /* inside invisible content */
#define OSP_HTML_LINK_NOT_URL   0x40000u /* not an http(s)/ftp URL: url is
                                          * the raw value, host "" */

typedef struct osp_html_link {
    const char *url;        /* normalised URL (see osp_url), or raw value */
    const char *host;       /* "" when not a URL */
    const char *text;       /* visible anchor text, blanks collapsed */
    const char *text_host;  /* host named by the anchor text, or "" */
    enum osp_html_link_kind kind;
    unsigned flags;         /* OSP_URL_F_* | OSP_HTML_LINK_* */
} osp_html_link_t;

/* osp_html_t.flags */
#define OSP_HTML_F_LINKS_TRUNCATED     0x1u /* more than max_links */
#define OSP_HTML_F_INVISIBLE_TRUNCATED 0x2u /* more than max_invisible */
#define OSP_HTML_F_DEPTH               0x4u /* nesting beyond max_depth */
#define OSP_HTML_F_TEXT_TRUNCATED      0x8u /* the caller's text buffer filled */

/*
 * Conversion results, embedded in the owner's struct: osp_html_init and
 * osp_html_close.  Everything here is owned by h; borrow it until close.
 */
typedef struct osp_html {
    osp_html_limits_t limits;
    osp_buf_t invisible;    /* invisible text */
    size_t n_invisible;     /* runs of invisible text */
    size_t n_zero_width;    /* zero-width characters dropped */
    osp_html_link_t *links;
    size_t n_links;
    unsigned flags;         /* OSP_HTML_F_* */
    /* private */
    size_t links_alloc;
    char **hidden_classes;
    size_t n_hidden_classes;
} osp_html_t;

/* Limits: a NULL pointer or a zero field means the default.  Copied. */
void osp_html_init(osp_html_t *h, const osp_html_limits_t *limits);
void osp_html_close(osp_html_t *h);

/*
 * Convert len bytes of UTF-8 HTML at html (need not be NUL-terminated;
 * borrowed for the call only).  The visible text is appended to text (the
 * caller's buffer; its cap bounds the output, OSP_HTML_F_TEXT_TRUNCATED
 * says it was reached), starting on a new line if text is not empty.
 * Invisible text, links, counters and flags accumulate in h.
 */
void osp_html_convert(osp_html_t *h, const char *html, size_t len, osp_buf_t *text);

/*
 * Decode the character references in len bytes at s and append the
 * result to out (as for attribute values).  Returns 0, or -1 if out's cap
 * was reached.
 */
int osp_html_decode_entities(const char *s, size_t len, osp_buf_t *out);

#endif
