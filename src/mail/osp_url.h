/*
 * osp_url: URLs and host names in mail text and HTML, for URL rules and
 * URI blocklist lookups.
 *
 * Two ways in:
 *   - osp_url_extract() finds URLs in plain text ("see http://x.example/a.",
 *     "www.x.example/b", "hxxp://x.example");
 *   - osp_url_list_add() takes one value that is meant to be a URL, such as
 *     an HTML href after entity decoding.
 * Both normalise the URL with osp_url_normalize() and add it to a list that
 * keeps each distinct URL once and each distinct host once, up to a cap:
 *
 *   osp_url_list_t l;
 *
 *   osp_url_list_init(&l, 1000);
 *   osp_url_extract(&l, text, text_len);
 *   osp_url_list_add(&l, href, href_len, OSP_URL_F_HTML);
 *   for (i = 0; i < l.n_urls; i++)
 *       ... l.urls[i].url, l.urls[i].host, l.urls[i].flags ...
 *   for (i = 0; i < l.n_hosts; i++)
 *       ... l.hosts[i] ...
 *   osp_url_list_close(&l);
 *
 * What is a URL here: the schemes http, https and ftp; the obfuscated
 * schemes "hxxp", "hxxps", "h**p", "htxp", "hxtp", "ttp", "ttps" (read as
 * http/https); a scheme-less "www." host; in hrefs also a scheme-relative
 * "//host".  Other schemes (mailto:, javascript:, data:, cid:) and
 * relative references are not URLs and are refused.
 *
 * Normalisation, as browsers do it (WHATWG URL Standard) so that the host
 * we check is the host a click would reach:
 *   - tabs and line breaks inside the value are removed, leading and
 *     trailing blanks and control characters trimmed;
 *   - any run of '/' and '\' after the scheme is accepted ("http:/\x",
 *     "http:\\x", "http:x"; flagged unless it was exactly "//"), and '\'
 *     in the path becomes '/';
 *   - userinfo is dropped: "http://paypal.com@evil.example/" has the host
 *     evil.example (the last '@' of the authority counts);
 *   - the host is percent-decoded, the ideographic full stops U+3002,
 *     U+FF0E and U+FF61 become '.', one trailing dot is dropped, ASCII is
 *     lower-cased and non-ASCII converted to A-labels with libidn2
 *     (UTS #46, non-transitional, then transitional); if libidn2 refuses
 *     the name it is kept as lower-case UTF-8 with OSP_URL_F_BAD_IDN (also
 *     when a list has used up its 1024 libidn2 calls, which bounds the cost
 *     of text full of non-ASCII "www." names); a host that is not valid
 *     UTF-8 after percent-decoding is refused;
 *   - a host whose last label is a number is an IPv4 address in
 *     inet_aton() syntax (decimal, 0x hex, 0-prefixed octal, one to four
 *     parts): "3232235777", "0xC0A80101" and "0300.0250.1.1" all become
 *     "192.168.1.1"; if it does not parse as one the URL is refused;
 *     "[v6]" literals are canonicalised with inet_ntop;
 *   - the port is dropped when it is the scheme's default;
 *   - the result is "scheme://host[:port]/rest", at most OSP_URL_MAX
 *     bytes (a longer path is cut).
 * Host names may contain letters, digits, '-', '_' and dots (no empty
 * labels), at most 253 octets; anything else refuses the URL.
 *
 * In text, a URL starts at a word boundary and ends before white space,
 * a control character, '<', '>', '"', '`', '{', '}', '|', '^', U+00A0,
 * Unicode spaces, ideographic or full-width commas, guillemets or a
 * typographic quote, or where the next URL starts; trailing ".,;:!?'*(["
 * ideographic full stops and unbalanced ')' or ']' are then stripped, so
 * "(see http://x.example/a)." yields "http://x.example/a" and
 * "http://a.example/(http://b.example)" yields both.  No byte of the text
 * is examined for more than one candidate: time is linear.  Scheme-less domains other than "www." are not
 * recognised in text ("visit example.com"): that needs a public suffix
 * list.
 *
 * Nothing here is thread-unsafe: lists are independent objects.
 */
#ifndef OSP_URL_H
#define OSP_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"

#define OSP_URL_MAX          2048   /* normalised URL, bytes */
#define OSP_URL_HOST_BUFSIZE 256    /* any host and its NUL */

/* How a URL was written: osp_url_t.flags, osp_url_normalize() *flags_r. */
#define OSP_URL_F_HTML      0x0001u /* from an HTML attribute (caller's flag) */
#define OSP_URL_F_NO_SCHEME 0x0002u /* "www.x" or "//x" without scheme */
#define OSP_URL_F_HXXP      0x0004u /* obfuscated scheme ("hxxp") */
#define OSP_URL_F_SLASHES   0x0008u /* not exactly "//" after the scheme */
#define OSP_URL_F_USERINFO  0x0010u /* "user@" before the host */
#define OSP_URL_F_PCT_HOST  0x0020u /* percent-encoded host */
#define OSP_URL_F_IDN       0x0040u /* non-ASCII host, now A-labels */
#define OSP_URL_F_IP        0x0080u /* host is an IP address */
#define OSP_URL_F_ODD_IP    0x0100u /* IPv4 not in dotted-decimal form */
#define OSP_URL_F_BAD_IDN   0x0200u /* libidn2 refused: host is UTF-8 */
#define OSP_URL_F_PORT      0x0400u /* non-default port */
#define OSP_URL_F_TEXT      0x0800u /* found in plain text (osp_url_extract) */

/* Options for osp_url_normalize(). */
#define OSP_URL_NORM_HREF   0x1u  /* also accept scheme-relative "//host" */
#define OSP_URL_NORM_BARE   0x2u  /* also accept a bare "host.tld[/...]":
                                   * two labels or more, the last one
                                   * alphabetic; for anchor text */

typedef struct osp_url {
    const char *url;    /* normalised, NUL-terminated */
    const char *host;   /* lower-case A-labels, dotted quad or "[v6]" */
    unsigned flags;     /* OSP_URL_F_* of the first occurrence */
} osp_url_t;

/*
 * A de-duplicating list of URLs, embedded in its owner's struct:
 * osp_url_list_init/osp_url_list_close.  The list owns all strings;
 * borrow them until close.  hosts[] holds each distinct host once, in
 * order of first appearance, pointing into urls[].
 */
typedef struct osp_url_list {
    osp_url_t *urls;
    size_t n_urls;
    const char **hosts;
    size_t n_hosts;
    size_t max;         /* cap on n_urls */
    bool truncated;     /* a URL was dropped because of the cap */
    /* private */
    size_t url_alloc, host_alloc;
    uint32_t *url_slots, *host_slots;   /* open hash: index + 1, 0 = free */
    uint64_t *url_hash, *host_hash;     /* hashes of urls[] and hosts[] */
    size_t url_nslots, host_nslots;
    char **mem;                         /* one block per URL */
    unsigned idn_budget;                /* libidn2 calls left */
} osp_url_list_t;

/* max is the most distinct URLs the list keeps (0: 1000).  No allocation. */
void osp_url_list_init(osp_url_list_t *l, size_t max);
void osp_url_list_close(osp_url_list_t *l);

/*
 * Normalise the len bytes at s (a URL, e.g. an href) and add the result.
 * flags are or'ed into the entry's flags (e.g. OSP_URL_F_HTML), opts are
 * OSP_URL_NORM_*.  s is copied.  Returns 1 if added, 0 if already there,
 * -1 if s is not a URL, -2 if the list is full (truncated is then set).
 */
int osp_url_list_add(osp_url_list_t *l, const char *s, size_t len,
                     unsigned flags, unsigned opts);

/*
 * Add a URL that osp_url_normalize() already gave (url and host as it
 * wrote them); both copied.  Returns 1, 0 or -2 as osp_url_list_add.
 */
int osp_url_list_insert(osp_url_list_t *l, const char *url, const char *host, unsigned flags);

/*
 * Find URLs in len bytes of text (UTF-8 or ASCII; need not be
 * NUL-terminated) and add them with OSP_URL_F_TEXT.  Returns how many
 * were found (duplicates included).  Linear in len.
 */
size_t osp_url_extract(osp_url_list_t *l, const char *text, size_t len);

/* Is host in the list? */
bool osp_url_list_has_host(const osp_url_list_t *l, const char *host);

/*
 * Normalise one URL as described above.  On success returns 0, replaces
 * url_r's contents with the URL (url_r must hold OSP_URL_MAX bytes), writes
 * the host to host_r (OSP_URL_HOST_BUFSIZE bytes) and the OSP_URL_F_* flags
 * to *flags_r (may be NULL).  Returns -1 if s is not a URL; the outputs are
 * then unspecified.  At most the first 8 KiB of s are looked at.
 */
int osp_url_normalize(const char *s, size_t len, unsigned opts,
                      osp_buf_t *url_r, char *host_r, unsigned *flags_r);

/*
 * Do two normalised hosts belong to the same site?  True if equal, if one
 * is a subdomain of the other, or if they share the registrable part,
 * guessed without a public suffix list as the last two labels, or three
 * when the top-level label has two letters and the second-level label at
 * most three characters ("example.co.uk").  IP hosts must be equal.
 */
bool osp_url_same_site(const char *a, const char *b);

#endif
