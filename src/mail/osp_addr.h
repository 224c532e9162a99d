/*
 * osp_addr: envelope addresses (RFC 5321 paths) and domain names.
 *
 * osp_addr_parse_path() takes what follows "MAIL FROM:" or "RCPT TO:", or
 * the value of a Postfix policy attribute ("sender=", "recipient="), checks
 * it and splits it into a local part and a domain:
 *
 *   osp_addr_t a;
 *   const char *err;
 *
 *   if (osp_addr_parse_path(arg, arg_len, OSP_ADDR_MAIL_FROM, &a, NULL,
 *                           &err) < 0)
 *       reply 501 5.1.7 with err;
 *   ... use a.local, a.domain_norm, osp_addr_equal(&a, &b) ...
 *   osp_addr_close(&a);
 *
 * Two input forms:
 *   - SMTP form (default): a Path per RFC 5321 4.1.2, with RFC 6531
 *     (SMTPUTF8) extensions when OSP_ADDR_SMTPUTF8 is given.  The angle
 *     brackets may be left out (as Postfix accepts with the default
 *     strict_rfc821_envelopes = no) unless OSP_ADDR_REQUIRE_BRACKETS is
 *     given; a leading "<" decides.  Leading blanks are skipped, as Postfix
 *     does for "MAIL FROM: <a@b>".  Source routes "<@a,@b:user@dom>" are
 *     checked for syntax and dropped (RFC 5321 C); OSP_ADDR_F_SOURCE_ROUTE
 *     records that there was one.
 *   - Postfix internal form (OSP_ADDR_INTERNAL): what smtpd(8) hands to a
 *     policy server.  Postfix has already removed the brackets, the source
 *     route and the quoting, so '"john doe"@example.com' arrives as
 *     'john doe@example.com'.  Everything before the last '@' is the local
 *     part, verbatim; the empty value is the null sender.
 *
 * Limits, counted on the input as given: local part 64 octets, domain 255
 * octets, path 256 octets counting the angle brackets (also when they were
 * left out).  NUL, other ASCII and C1 control characters are never
 * accepted, nor (with OSP_ADDR_SMTPUTF8) malformed UTF-8.  Every problem is
 * returned as a static string naming it, e.g. "empty domain", suitable for
 * a 501 reply and for logging.
 *
 * Where the RFC and Postfix differ, the default is the RFC and a flag gives
 * Postfix's leniency (Postfix itself checks almost nothing):
 *   - A local part without a domain is refused ("missing @ in address"),
 *     except "postmaster" (any case) with OSP_ADDR_ALLOW_POSTMASTER
 *     (RFC 5321 4.1.1.3, for RCPT TO) or any with OSP_ADDR_ALLOW_NO_DOMAIN
 *     (Postfix appends $myorigin).
 *   - Unquoted local parts with leading, trailing or doubled dots
 *     ("taro..yamada.@docomo.ne.jp", sent by some Japanese mobile
 *     carriers) need OSP_ADDR_ALLOW_BAD_DOTS; they are then formatted
 *     quoted, which is what they mean.
 *   - Local parts longer than 64 octets (long VERP and SRS addresses exist)
 *     need OSP_ADDR_ALLOW_LONG_LOCAL; the 256-octet path limit still holds.
 *   - Underscores in domain labels need OSP_ADDR_ALLOW_UNDERSCORE.
 * OSP_ADDR_LENIENT turns on all four: use it for addresses Postfix has
 * already accepted, where our job is to classify, not to police syntax.
 * Policy attributes: OSP_ADDR_INTERNAL | OSP_ADDR_LENIENT |
 * OSP_ADDR_SMTPUTF8, plus OSP_ADDR_ALLOW_NULL for "sender=".
 *
 * Other decisions:
 *   - The empty quoted string ('""@example.com') is refused as an empty
 *     local part.
 *   - A domain may end in one dot ("example.com."); the normalised form
 *     drops it.  The top-level label must not be all digits, so a bare
 *     "user@1.2.3.4" is refused: the literal "[1.2.3.4]" is the way.
 *   - Address literals must be IPv4 or "IPv6:" (tag in any case) and are
 *     normalised to the inet_ntop() form: "[IPv6:2001:DB8:0::1]" becomes
 *     "[IPv6:2001:db8::1]".  Other tags are refused, as Postfix does.
 *   - Domains containing non-ASCII are converted with libidn2 (UTS #46
 *     non-transitional, NFC): "Bücher.example" becomes
 *     "xn--bcher-kva.example".  ASCII names, including A-labels, are only
 *     lower-cased, not decoded, so we refuse nothing Postfix would pass.
 *   - Local parts are never case-folded or Unicode-normalised.
 */
#ifndef OSP_ADDR_H
#define OSP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "osp_buf.h"

/* Parse flags for osp_addr_parse_path(). */
#define OSP_ADDR_ALLOW_NULL        0x001u /* accept "<>" (internal form: "") */
#define OSP_ADDR_REQUIRE_BRACKETS  0x002u /* SMTP form only */
#define OSP_ADDR_INTERNAL          0x004u /* Postfix internal form, see above */
#define OSP_ADDR_SMTPUTF8          0x008u /* UTF-8 allowed (RFC 6531) */
#define OSP_ADDR_ALLOW_POSTMASTER  0x010u /* bare "postmaster", RCPT TO */
#define OSP_ADDR_ALLOW_NO_DOMAIN   0x020u /* any local part without domain */
#define OSP_ADDR_ALLOW_BAD_DOTS    0x040u /* "a..b", ".a", "a." unquoted */
#define OSP_ADDR_ALLOW_LONG_LOCAL  0x080u /* no 64-octet local part limit */
#define OSP_ADDR_ALLOW_UNDERSCORE  0x100u /* "_" in domain labels */

#define OSP_ADDR_LENIENT (OSP_ADDR_ALLOW_NO_DOMAIN | OSP_ADDR_ALLOW_BAD_DOTS | \
                          OSP_ADDR_ALLOW_LONG_LOCAL | OSP_ADDR_ALLOW_UNDERSCORE)
/* Starting points for the two commands; add OSP_ADDR_SMTPUTF8 as needed. */
#define OSP_ADDR_MAIL_FROM OSP_ADDR_ALLOW_NULL
#define OSP_ADDR_RCPT_TO   OSP_ADDR_ALLOW_POSTMASTER

/* Result flags in osp_addr_t.flags. */
#define OSP_ADDR_F_NULL          0x01u /* "<>": local and domains are "" */
#define OSP_ADDR_F_SOURCE_ROUTE  0x02u /* a source route was dropped */
#define OSP_ADDR_F_QUOTED        0x04u /* local part was a quoted string
                                        * (internal form: is no dot-atom) */
#define OSP_ADDR_F_UTF8          0x08u /* non-ASCII in local part or domain */
#define OSP_ADDR_F_NO_DOMAIN     0x10u /* no "@domain": domains are "" */
#define OSP_ADDR_F_LITERAL       0x20u /* domain is an address literal */
#define OSP_ADDR_F_BRACKETS      0x40u /* input had angle brackets */

/*
 * A parsed address, embedded in its owner's struct: osp_addr_init (or a
 * successful or failed osp_addr_parse_path) and osp_addr_close.  The three
 * strings are NUL-terminated, never NULL, and owned by the struct (one
 * allocation): borrow them, do not free them.
 */
typedef struct osp_addr {
    /* Unquoted (quoting and quoted-pairs removed), case preserved. */
    const char *local;
    /* As given: case, U-labels, trailing dot, literal brackets kept. */
    const char *domain;
    /* Lower-case A-labels without trailing dot, or canonical literal. */
    const char *domain_norm;
    unsigned flags;         /* OSP_ADDR_F_* */
    char *mem;              /* private: backs the strings */
} osp_addr_t;

/* Make addr empty: all strings "", no flags.  Allocates nothing. */
void osp_addr_init(osp_addr_t *addr);
/* Release what addr owns and leave it as after osp_addr_init. */
void osp_addr_close(osp_addr_t *addr);

/*
 * Parse len bytes at s (need not be NUL-terminated; never read past len).
 * *addr_r is treated as uninitialised and always written: on success with
 * the address, on failure left empty as by osp_addr_init, so
 * osp_addr_close(addr_r) is always correct.  To reuse a parsed struct,
 * close it first.  Nothing of s is kept.
 *
 * With end_r NULL the whole input must be the path (trailing blanks
 * allowed).  With end_r non-NULL, parsing stops after the path and, on
 * success, *end_r is its end: len, or the offset of the blank before the
 * ESMTP parameters (internal form: always len).
 *
 * Returns 0, or -1 with a static message in *error_r (error_r may be NULL).
 */
int osp_addr_parse_path(const char *s, size_t len, unsigned flags,
                        osp_addr_t *addr_r, size_t *end_r,
                        const char **error_r);

/*
 * Append the canonical form "local@domain_norm" to out, quoting the local
 * part if it is not a dot-atom (and then escaping '"' and '\').  A null
 * address appends nothing, one without domain only its local part; add the
 * angle brackets yourself for a path.  Returns 0, or -1 if out's cap would
 * be exceeded (out is then unchanged).
 */
int osp_addr_format(const osp_addr_t *addr, osp_buf_t *out);

/*
 * Same address?  Domains compare by domain_norm (so IDNA and case do not
 * matter), local parts byte for byte (case-sensitive, RFC 5321 2.4), except
 * that two domain-less "postmaster" compare without regard to case.  Two
 * null addresses are equal.
 */
bool osp_addr_equal(const osp_addr_t *a, const osp_addr_t *b);

/* ---- Domain names ---------------------------------------------------- */

/* A buffer this big holds any normalised domain and its NUL. */
#define OSP_DOMAIN_BUFSIZE 256

#define OSP_DOMAIN_ALLOW_UNDERSCORE 0x1u /* "_" in labels (HELO leniency) */

/*
 * Is the len bytes at name a host name: ASCII labels of 1-63 letters,
 * digits and hyphens, not starting or ending with a hyphen, separated by
 * single dots, at most 253 octets, no trailing dot, top-level label not
 * all digits?  Use it for HELO/EHLO arguments; convert U-labels first with
 * osp_domain_normalize.  On false *error_r (if error_r is not NULL) names
 * the problem.
 */
bool osp_domain_valid(const char *name, size_t len, unsigned flags,
                      const char **error_r);

/*
 * Write the normalised form of the domain in (NUL-terminated, UTF-8 or
 * ASCII) to out: lower-case, U-labels converted to A-labels, trailing dot
 * removed.  The result must be a host name (253 octets at most) as for
 * osp_domain_valid, except that underscores are accepted: normalising is
 * not a syntax policy, and lookup keys like "_dmarc.example.com" must
 * survive it.  Address literals are not domains here.  Returns 0, or -1
 * with a static message in *error_r (may be NULL), also when out (of
 * outsize bytes; OSP_DOMAIN_BUFSIZE always suffices) is too small.
 */
int osp_domain_normalize(const char *in, char *out, size_t outsize,
                         const char **error_r);

/*
 * Is sub equal to parent or below it, at a label boundary?
 * "a.b.example.com" and "example.com" are under "example.com";
 * "badexample.com" is not.  ASCII case and one trailing dot on either
 * side are ignored; pass normalised names.  An empty sub or parent matches
 * nothing (a missing setting must not match every domain).
 */
bool osp_domain_is_subdomain(const char *sub, const char *parent);

/*
 * The mailboxes of an address header field value ("Name <a@b>",
 * "a@b (Name)", lists, groups "team: a@b;", quoted strings and comments
 * respected): for each, its display name, address and domain (part
 * OSP_MAILBOX_NAME / _ADDRESS / _DOMAIN, "" when absent).  Parse appends
 * to the list; reset empties it.
 */
enum { OSP_MAILBOX_NAME = 0, OSP_MAILBOX_ADDRESS = 1, OSP_MAILBOX_DOMAIN = 2 };
typedef struct osp_mailbox_list {
    osp_buf_t store;
    size_t *off;                /* 3 per mailbox: name, address, domain */
    size_t n, alloc;
} osp_mailbox_list_t;

void osp_mailbox_list_init(osp_mailbox_list_t *l);
void osp_mailbox_list_reset(osp_mailbox_list_t *l);
void osp_mailbox_list_close(osp_mailbox_list_t *l);
void osp_mailbox_parse(osp_mailbox_list_t *l, const char *value);
const char *osp_mailbox_part(const osp_mailbox_list_t *l, size_t i, unsigned part);

#endif
