/*
 * filter_proto: the SMTP/LMTP server side of osprey-filter, without I/O.
 *
 * Three pieces, each fed arbitrary slices of the input stream (a TCP read
 * may end anywhere, so each keeps its own state across calls):
 *
 *   filter_line_t    assembles command lines ending in CRLF or a bare LF,
 *                    with a hard length limit;
 *   filter_cmd_parse splits one command line into a filter_cmd_t;
 *   filter_data_t    decodes the DATA stream: removes dot-stuffing, turns
 *                    bare LF into CRLF, finds the terminating "." line.
 *
 *   filter_line_init(&lb, 2048);
 *   while (len > 0) {
 *       used = filter_line_feed(&lb, p, len, &complete);
 *       p += used; len -= used;
 *       if (!complete) break;
 *       if (lb.overflow) reply 500 5.5.2 ... ;
 *       else if (filter_cmd_parse(lb.buf.data, lb.buf.len, &cmd, &err) < 0)
 *           reply err.code err.ext err.text;
 *       else handle cmd;
 *       filter_line_reset(&lb);
 *   }
 *
 * Decisions where the RFCs leave room:
 *   - Command lines may end in a bare LF (Postfix's smtpd accepts them too).
 *   - Body lines have no length limit here: they pass through as they are
 *     and Postfix's reinjection smtpd applies its own line_length_limit.
 *   - A bare CR in the body is data and passes through; a bare LF becomes
 *     CRLF.  A "." line ended by a bare LF ends the data, as in Postfix.
 *   - Paths are checked only for what the protocol needs (brackets,
 *     balanced quotes, no control characters, the line limit): Postfix has
 *     queued the address already, and refusing it here would bounce mail
 *     because of our strictness rather than the sender's.
 */
#ifndef FILTER_PROTO_H
#define FILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"

/* ---- command lines ---------------------------------------------------- */

typedef struct filter_line {
    osp_buf_t buf;    /* the line so far, without CR LF; owned */
    size_t max;       /* longest line accepted, without CR LF */
    bool overflow;    /* the line was longer than max: its bytes were dropped */
    bool complete;    /* a whole line is in buf; call filter_line_reset next */
} filter_line_t;

void filter_line_init(filter_line_t *lb, size_t max);
void filter_line_close(filter_line_t *lb);
/* Forget the current line after it has been handled. */
void filter_line_reset(filter_line_t *lb);
/*
 * Consume bytes up to and including the next LF.  Returns how many bytes
 * were used; *complete_r tells whether a line ended (then lb->buf holds it
 * without its CR LF, or lb->overflow is set).  Does not copy more than max
 * bytes of any line.
 */
size_t filter_line_feed(filter_line_t *lb, const char *p, size_t len, bool *complete_r);

/* ---- commands ---------------------------------------------------------- */

enum filter_cmd_kind {
    FILTER_CMD_UNKNOWN = 0,
    FILTER_CMD_HELO,
    FILTER_CMD_EHLO,
    FILTER_CMD_LHLO,
    FILTER_CMD_MAIL,
    FILTER_CMD_RCPT,
    FILTER_CMD_DATA,
    FILTER_CMD_RSET,
    FILTER_CMD_NOOP,
    FILTER_CMD_QUIT,
    FILTER_CMD_VRFY,
    FILTER_CMD_HELP,
    FILTER_CMD_XFORWARD,
};

enum filter_body_type {
    FILTER_BODY_UNSPEC = 0,
    FILTER_BODY_7BIT,
    FILTER_BODY_8BITMIME,
};

enum filter_ret {
    FILTER_RET_UNSPEC = 0,
    FILTER_RET_FULL,
    FILTER_RET_HDRS,
};

/* DSN NOTIFY bits (RFC 3461); 0 means "not given". */
#define FILTER_NOTIFY_NEVER   0x1u
#define FILTER_NOTIFY_SUCCESS 0x2u
#define FILTER_NOTIFY_FAILURE 0x4u
#define FILTER_NOTIFY_DELAY   0x8u

/* XFORWARD attributes we keep (Postfix XFORWARD_README). */
enum filter_xattr {
    FILTER_XA_NAME = 0,
    FILTER_XA_ADDR,
    FILTER_XA_PORT,
    FILTER_XA_PROTO,
    FILTER_XA_HELO,
    FILTER_XA_IDENT,
    FILTER_XA_SOURCE,
    FILTER_XA__COUNT
};
extern const char *const filter_xattr_names[FILTER_XA__COUNT];

/* Longest XFORWARD value and ENVID/ORCPT values we accept. */
#define FILTER_XATTR_MAX 255
#define FILTER_ENVID_MAX 100
#define FILTER_ORCPT_MAX 500

/*
 * One parsed command.  Every pointer borrows from the line passed to
 * filter_cmd_parse (which writes NULs into it) and lives as long as it.
 */
typedef struct filter_cmd {
    enum filter_cmd_kind kind;
    const char *arg;          /* HELO/EHLO/LHLO domain, VRFY/HELP argument, "" if none */
    /* MAIL, RCPT */
    const char *addr;         /* the address without angle brackets ("" for <>) */
    /* MAIL */
    bool size_set;
    uint64_t size;
    enum filter_body_type body;
    bool smtputf8;
    enum filter_ret ret;
    const char *envid;        /* xtext as received, NULL if absent */
    /* RCPT */
    unsigned notify;          /* FILTER_NOTIFY_* */
    const char *orcpt;        /* "addr-type;xtext" as received, NULL if absent */
    /* XFORWARD: NULL where not given in this command */
    const char *xattr[FILTER_XA__COUNT];
} filter_cmd_t;

/* A reply for a command that could not be parsed. */
typedef struct filter_reply {
    int code;                 /* 500, 501, 504, 555 */
    const char *ext;          /* enhanced status code, "5.5.4" */
    const char *text;         /* static */
} filter_reply_t;

/*
 * Parse one command line (len bytes at line, no CR LF; line[len] must be
 * NUL).  The line is modified in place.  Returns 0, or -1 with the reply to
 * give in *err_r.  An unknown verb is not an error: kind is
 * FILTER_CMD_UNKNOWN and the caller answers 502 5.5.2.
 */
int filter_cmd_parse(char *line, size_t len, filter_cmd_t *cmd_r, filter_reply_t *err_r);

/* "MAIL", "RCPT", ... for logs. */
const char *filter_cmd_name(enum filter_cmd_kind kind);

/* ---- DATA --------------------------------------------------------------- */

enum filter_data_state {
    FILTER_DATA_BOL = 0,   /* at the start of a line */
    FILTER_DATA_DOT,       /* after a "." at the start of a line */
    FILTER_DATA_DOT_CR,    /* after "." CR at the start of a line */
    FILTER_DATA_MID,       /* inside a line */
    FILTER_DATA_CR,        /* after a CR inside a line */
    FILTER_DATA_DONE,      /* the terminating "." line was seen */
};

typedef struct filter_data {
    enum filter_data_state state;
} filter_data_t;

/* Receives decoded message bytes; ctx is the caller's. */
typedef void (*filter_data_out_fn)(void *ctx, const char *p, size_t len);

void filter_data_init(filter_data_t *d);
/*
 * Decode up to len bytes of the DATA stream, passing the message (CR LF
 * line ends, dot-stuffing removed, without the final ".") to out in runs.
 * Returns the bytes consumed: all of them, or fewer when the end marker
 * was found (the rest belongs to the next command; *done_r is then true).
 */
size_t filter_data_decode(filter_data_t *d, const char *p, size_t len,
                          filter_data_out_fn out, void *ctx, bool *done_r);

/* ---- helpers shared with the reinjection client ----------------------- */

/* Is s valid xtext (RFC 3461 4) of at most max bytes? */
bool filter_xtext_valid(const char *s, size_t max);
/* Append s made xtext ("+HH" for '+', '=', and bytes outside 33..126). */
int filter_xtext_encode(osp_buf_t *out, const char *s);

#endif
