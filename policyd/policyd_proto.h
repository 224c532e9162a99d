/*
 * policyd_proto: the Postfix SMTPD policy delegation protocol
 * (SMTPD_POLICY_README).
 *
 * A request is "name=value" lines, each ending in LF (a CR before it is
 * dropped), and ends with an empty line; the answer is "action=...", LF,
 * and an empty line.  Postfix keeps the connection open and sends the
 * next request after it has read the answer, but nothing stops a client
 * from sending several back to back, so the parser consumes exactly one
 * request and leaves the rest to the next call.
 *
 *   policy_parser_t p;
 *   policy_request_t req;
 *   size_t used;
 *
 *   policy_parser_init(&p, &limits);
 *   policy_request_init(&req, limits.max_request_size);
 *   ... on each read, until the data is used up:
 *   switch (policy_parser_feed(&p, data, len, &req, &used)) {
 *   case POLICY_PARSE_MORE:  all of data used; wait for more input
 *   case POLICY_PARSE_DONE:  used bytes make up the end of a request,
 *                            now in req; the rest of data is the next one
 *   case POLICY_PARSE_ERROR: policy_parser_error(&p) says why; the
 *                            connection cannot be resynchronised: close it
 *   }
 *   ... policy_request_get(&req, POLICY_A_SENDER) ...
 *   policy_request_reset(&req);            before the next request
 *   policy_request_close(&req); policy_parser_close(&p);
 *
 * Limits (all from configuration): the length of one attribute line with
 * its LF, the bytes of a whole request with its empty line, and the number
 * of attribute lines.  Unknown attribute names are counted against the
 * limits and otherwise ignored; a repeated attribute keeps its last value.
 * A line without "=", with an empty name, or with a NUL byte is an error.
 *
 * Replies: policy_action_check() validates an access(5) action such as
 * "REJECT 5.7.1 text", "DEFER_IF_PERMIT text", "450 4.7.1 text", "HOLD",
 * "FILTER smtp:[127.0.0.1]:10025", "PREPEND X-Name: value", at start-up;
 * policy_reply_format() writes "action=...\n\n".
 */
#ifndef POLICYD_PROTO_H
#define POLICYD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"

/* Every attribute Postfix 3.7 sends; the names are in policy_attr_names. */
enum policy_attr {
    POLICY_A_REQUEST,
    POLICY_A_PROTOCOL_STATE,
    POLICY_A_PROTOCOL_NAME,
    POLICY_A_HELO_NAME,
    POLICY_A_QUEUE_ID,
    POLICY_A_SENDER,
    POLICY_A_RECIPIENT,
    POLICY_A_RECIPIENT_COUNT,
    POLICY_A_CLIENT_ADDRESS,
    POLICY_A_CLIENT_NAME,
    POLICY_A_CLIENT_PORT,
    POLICY_A_REVERSE_CLIENT_NAME,
    POLICY_A_INSTANCE,
    POLICY_A_SASL_METHOD,
    POLICY_A_SASL_USERNAME,
    POLICY_A_SASL_SENDER,
    POLICY_A_SIZE,
    POLICY_A_CCERT_SUBJECT,
    POLICY_A_CCERT_ISSUER,
    POLICY_A_CCERT_FINGERPRINT,
    POLICY_A_CCERT_PUBKEY_FINGERPRINT,
    POLICY_A_ENCRYPTION_PROTOCOL,
    POLICY_A_ENCRYPTION_CIPHER,
    POLICY_A_ENCRYPTION_KEYSIZE,
    POLICY_A_ETRN_DOMAIN,
    POLICY_A_STRESS,
    POLICY_A_POLICY_CONTEXT,
    POLICY_A_SERVER_ADDRESS,
    POLICY_A_SERVER_PORT,
    POLICY_A_COMPATIBILITY_LEVEL,
    POLICY_A_MAIL_VERSION,
    POLICY_A__COUNT
};

extern const char *const policy_attr_names[POLICY_A__COUNT];

typedef struct policy_limits {
    size_t max_line;        /* one attribute line including its LF */
    size_t max_request;     /* a whole request including the empty line */
    unsigned max_attrs;     /* attribute lines in one request */
} policy_limits_t;

/*
 * One parsed request.  Values live in one arena owned by the request;
 * policy_request_get() borrows from it until the next reset.
 */
typedef struct policy_request {
    osp_buf_t arena;                      /* values, each NUL-terminated */
    uint32_t off[POLICY_A__COUNT];        /* offset in arena, or UINT32_MAX */
    unsigned nattrs;                      /* lines received, unknown included */
} policy_request_t;

void policy_request_init(policy_request_t *req, size_t max_bytes);
void policy_request_reset(policy_request_t *req);
void policy_request_close(policy_request_t *req);
/* The value, or "" if absent.  Borrowed. */
const char *policy_request_get(const policy_request_t *req, enum policy_attr a);
bool policy_request_has(const policy_request_t *req, enum policy_attr a);
/* Set a value (copied); for tests and for building requests. 0 or -1 (full). */
int policy_request_set(policy_request_t *req, enum policy_attr a, const char *value);
/* Attribute by name, or -1. */
int policy_attr_lookup(const char *name, size_t len);

typedef struct policy_parser {
    policy_limits_t limits;
    osp_buf_t line;          /* the current line so far, without LF */
    size_t request_bytes;    /* bytes of the current request so far */
    unsigned nlines;         /* attribute lines so far */
    bool failed;
    char error[160];
} policy_parser_t;

enum policy_parse_result {
    POLICY_PARSE_MORE,
    POLICY_PARSE_DONE,
    POLICY_PARSE_ERROR,
};

/* limits copied. */
void policy_parser_init(policy_parser_t *p, const policy_limits_t *limits);
void policy_parser_close(policy_parser_t *p);
/*
 * Feed len bytes (borrowed; copied as needed).  req receives the
 * attributes; it must be reset between requests.  *used_r is set to the
 * bytes consumed: all of them on MORE, up to the end of the request on
 * DONE.  After ERROR the parser refuses further input.
 */
enum policy_parse_result policy_parser_feed(policy_parser_t *p, const char *data, size_t len,
                                            policy_request_t *req, size_t *used_r);
/* The last error, printable text naming the limit or the problem. */
const char *policy_parser_error(const policy_parser_t *p);

/* ---- actions and replies --------------------------------------------- */

/*
 * Is action a valid access(5) answer for a policy server?  Accepted:
 * OK, DUNNO, REJECT/DEFER/DEFER_IF_PERMIT/DEFER_IF_REJECT [text],
 * 4NN/5NN [text], HOLD/DISCARD/WARN/INFO [text], FILTER transport:dest,
 * PREPEND header: value, REDIRECT/BCC address.  The keyword is case
 * insensitive.  An enhanced status code at the start of the text must
 * have the class of the reply (4.x.x for DEFER and 4NN, 5.x.x for REJECT
 * and 5NN).  No control characters and at most 512 bytes.  Returns 0, or
 * -1 with a reason in err.
 */
int policy_action_check(const char *action, char *err, size_t errsize);
/*
 * The action in configuration parameter param, checked: a copy (caller
 * frees), or "DUNNO" with an error naming the parameter appended to errors.
 */
struct osp_config;
char *policy_action_param(const struct osp_config *cfg, const char *param, osp_buf_t *errors);

/*
 * The action's keyword, lower case, for metrics: "dunno", "ok", "reject"
 * (also for 5NN), "defer" (also for 4NN), "defer_if_permit", "hold", ...;
 * "other" for anything else.  Static string.
 */
const char *policy_action_class(const char *action);

/* Append "action=ACTION\n\n" to out.  0, or -1 if out is full. */
int policy_reply_format(osp_buf_t *out, const char *action);

#endif
