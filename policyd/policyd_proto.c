/* policyd_proto: policy delegation request parser, action checks, replies. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "policyd_proto.h"

const char *const policy_attr_names[POLICY_A__COUNT] = {
    [POLICY_A_REQUEST] = "request",
    [POLICY_A_PROTOCOL_STATE] = "protocol_state",
    [POLICY_A_PROTOCOL_NAME] = "protocol_name",
    [POLICY_A_HELO_NAME] = "helo_name",
    [POLICY_A_QUEUE_ID] = "queue_id",
    [POLICY_A_SENDER] = "sender",
    [POLICY_A_RECIPIENT] = "recipient",
    [POLICY_A_RECIPIENT_COUNT] = "recipient_count",
    [POLICY_A_CLIENT_ADDRESS] = "client_address",
    [POLICY_A_CLIENT_NAME] = "client_name",
    [POLICY_A_CLIENT_PORT] = "client_port",
    [POLICY_A_REVERSE_CLIENT_NAME] = "reverse_client_name",
    [POLICY_A_INSTANCE] = "instance",
    [POLICY_A_SASL_METHOD] = "sasl_method",
    [POLICY_A_SASL_USERNAME] = "sasl_username",
    [POLICY_A_SASL_SENDER] = "sasl_sender",
    [POLICY_A_SIZE] = "size",
    [POLICY_A_CCERT_SUBJECT] = "ccert_subject",
    [POLICY_A_CCERT_ISSUER] = "ccert_issuer",
    [POLICY_A_CCERT_FINGERPRINT] = "ccert_fingerprint",
    [POLICY_A_CCERT_PUBKEY_FINGERPRINT] = "ccert_pubkey_fingerprint",
    [POLICY_A_ENCRYPTION_PROTOCOL] = "encryption_protocol",
    [POLICY_A_ENCRYPTION_CIPHER] = "encryption_cipher",
    [POLICY_A_ENCRYPTION_KEYSIZE] = "encryption_keysize",
    [POLICY_A_ETRN_DOMAIN] = "etrn_domain",
    [POLICY_A_STRESS] = "stress",
    [POLICY_A_POLICY_CONTEXT] = "policy_context",
    [POLICY_A_SERVER_ADDRESS] = "server_address",
    [POLICY_A_SERVER_PORT] = "server_port",
    [POLICY_A_COMPATIBILITY_LEVEL] = "compatibility_level",
    [POLICY_A_MAIL_VERSION] = "mail_version",
};

#define POLICY_ABSENT UINT32_MAX

/* ---- requests ---------------------------------------------------------- */

void policy_request_init(policy_request_t *req, size_t max_bytes)
{
    osp_buf_init(&req->arena, max_bytes);
    policy_request_reset(req);
}

void policy_request_reset(policy_request_t *req)
{
    size_t i;

    osp_buf_reset(&req->arena);
    for (i = 0; i < POLICY_A__COUNT; i++)
        req->off[i] = POLICY_ABSENT;
    req->nattrs = 0;
}

void policy_request_close(policy_request_t *req)
{
    osp_buf_close(&req->arena);
}

const char *policy_request_get(const policy_request_t *req, enum policy_attr a)
{
    if ((unsigned)a >= POLICY_A__COUNT)
        return "";
    if (req->off[a] == POLICY_ABSENT)
        return "";
    return req->arena.data + req->off[a];
}

bool policy_request_has(const policy_request_t *req, enum policy_attr a)
{
    return (unsigned)a < POLICY_A__COUNT && req->off[a] != POLICY_ABSENT;
}

static int policy_request__set_len(policy_request_t *req, enum policy_attr a,
                                   const char *value, size_t len)
{
    size_t off = req->arena.len;

    if (off >= POLICY_ABSENT)
        return -1;
    if (osp_buf_append(&req->arena, value, len) < 0)
        return -1;
    if (osp_buf_append_char(&req->arena, '\0') < 0) {
        osp_buf_truncate(&req->arena, off);
        return -1;
    }
    req->off[a] = (uint32_t)off;
    return 0;
}

int policy_request_set(policy_request_t *req, enum policy_attr a, const char *value)
{
    if ((unsigned)a >= POLICY_A__COUNT)
        return -1;
    return policy_request__set_len(req, a, value, strlen(value));
}

int policy_attr_lookup(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < POLICY_A__COUNT; i++)
        if (strlen(policy_attr_names[i]) == len && memcmp(policy_attr_names[i], name, len) == 0)
            return (int)i;
    return -1;
}

/* ---- parser ------------------------------------------------------------ */

void policy_parser_init(policy_parser_t *p, const policy_limits_t *limits)
{
    memset(p, 0, sizeof(*p));
    p->limits = *limits;
    /* The LF is not stored, so the line buffer holds max_line - 1 bytes. */
    osp_buf_init(&p->line, limits->max_line > 0 ? limits->max_line - 1 : 0);
}

void policy_parser_close(policy_parser_t *p)
{
    osp_buf_close(&p->line);
}

const char *policy_parser_error(const policy_parser_t *p)
{
    return p->error[0] ? p->error : "no error";
}

static enum policy_parse_result policy_parser__fail(policy_parser_t *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum policy_parse_result policy_parser__fail(policy_parser_t *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(p->error, sizeof(p->error), fmt, ap);
    va_end(ap);
    p->failed = true;
    return POLICY_PARSE_ERROR;
}

/* One complete line (without LF) in p->line. */
static enum policy_parse_result policy_parser__line(policy_parser_t *p, policy_request_t *req)
{
    const char *s = p->line.data ? p->line.data : "";
    size_t len = p->line.len;
    const char *eq;
    int a;

    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (len == 0) {
        if (p->nlines == 0)
            return policy_parser__fail(p, "empty request (blank line without attributes)");
        p->nlines = 0;
        p->request_bytes = 0;
        osp_buf_reset(&p->line);
        return POLICY_PARSE_DONE;
    }
    if (memchr(s, '\0', len) != NULL)
        return policy_parser__fail(p, "NUL byte in attribute line %u", p->nlines + 1);
    if (++p->nlines > p->limits.max_attrs)
        return policy_parser__fail(p, "more than %u attributes in one request",
                                   p->limits.max_attrs);
    eq = memchr(s, '=', len);
    if (eq == NULL)
        return policy_parser__fail(p, "malformed attribute line %u: no \"=\"", p->nlines);
    if (eq == s)
        return policy_parser__fail(p, "malformed attribute line %u: empty name", p->nlines);
    req->nattrs++;
    a = policy_attr_lookup(s, (size_t)(eq - s));
    if (a >= 0 && policy_request__set_len(req, (enum policy_attr)a, eq + 1,
                                          len - (size_t)(eq + 1 - s)) < 0)
        return policy_parser__fail(p, "request larger than %zu bytes", p->limits.max_request);
    osp_buf_reset(&p->line);
    return POLICY_PARSE_MORE;
}

enum policy_parse_result policy_parser_feed(policy_parser_t *p, const char *data, size_t len,
                                            policy_request_t *req, size_t *used_r)
{
    size_t pos = 0;

    *used_r = 0;
    if (p->failed)
        return POLICY_PARSE_ERROR;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t seg = nl ? (size_t)(nl - (data + pos)) : len - pos;
        size_t take = seg + (nl ? 1 : 0);
        enum policy_parse_result r;

        if (p->line.len + seg + (nl ? 1 : 0) > p->limits.max_line ||
            (nl == NULL && p->line.len + seg >= p->limits.max_line)) {
            *used_r = pos;
            return policy_parser__fail(p, "attribute line %u longer than %zu bytes",
                                       p->nlines + 1, p->limits.max_line);
        }
        if (p->request_bytes + take > p->limits.max_request) {
            *used_r = pos;
            return policy_parser__fail(p, "request larger than %zu bytes",
                                       p->limits.max_request);
        }
        if (osp_buf_append(&p->line, data + pos, seg) < 0)
            osp_panic("policy_parser_feed: line buffer overflow after limit check");
        p->request_bytes += take;
        pos += take;
        if (nl == NULL)
            break;
        r = policy_parser__line(p, req);
        if (r != POLICY_PARSE_MORE) {
            *used_r = pos;
            return r;
        }
    }
    *used_r = pos;
    return POLICY_PARSE_MORE;
}

/* ---- actions ----------------------------------------------------------- */

static int policy__err(char *err, size_t errsize, const char *msg, const char *action)
{
    osp_buf_t b;

    osp_buf_init(&b, 200);
    (void)osp_buf_printf(&b, "%s: \"", msg);
    (void)osp_buf_append_printable(&b, action, strnlen(action, 120));
    (void)osp_buf_append_char(&b, '"');
    osp_strlcpy(err, osp_buf_cstr(&b), errsize);
    osp_buf_close(&b);
    return -1;
}

/* Does text start with an enhanced status code "D.DDD.DDD"?  Its class or 0. */
static int policy__enhanced_class(const char *t)
{
    const char *s = t;
    int n;

    if (!(*s == '2' || *s == '4' || *s == '5') || s[1] != '.')
        return 0;
    s += 2;
    for (n = 0; isdigit((unsigned char)*s) && n < 4; n++)
        s++;
    if (n == 0 || n > 3 || *s != '.')
        return 0;
    s++;
    for (n = 0; isdigit((unsigned char)*s) && n < 4; n++)
        s++;
    if (n == 0 || n > 3 || !(*s == ' ' || *s == '\0'))
        return 0;
    return *t - '0';
}

enum policy__kw_arg { KW_NONE, KW_TEXT, KW_REQUIRED };

static const struct {
    const char *kw;
    enum policy__kw_arg arg;
    int cls;               /* enhanced status class the text must have, or 0 */
    const char *metric;
} policy__keywords[] = {
    { "OK", KW_NONE, 0, "ok" },
    { "DUNNO", KW_NONE, 0, "dunno" },
    { "REJECT", KW_TEXT, 5, "reject" },
    { "DEFER", KW_TEXT, 4, "defer" },
    { "DEFER_IF_PERMIT", KW_TEXT, 4, "defer_if_permit" },
    { "DEFER_IF_REJECT", KW_TEXT, 4, "defer_if_reject" },
    { "HOLD", KW_TEXT, 0, "hold" },
    { "DISCARD", KW_TEXT, 0, "discard" },
    { "WARN", KW_TEXT, 0, "warn" },
    { "INFO", KW_TEXT, 0, "info" },
    { "FILTER", KW_REQUIRED, 0, "filter" },
    { "PREPEND", KW_REQUIRED, 0, "prepend" },
    { "REDIRECT", KW_REQUIRED, 0, "redirect" },
    { "BCC", KW_REQUIRED, 0, "bcc" },
};

int policy_action_check(const char *action, char *err, size_t errsize)
{
    const char *s, *arg;
    size_t kwlen, i;

    if (strlen(action) > 512)
        return policy__err(err, errsize, "action longer than 512 bytes", action);
    for (s = action; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return policy__err(err, errsize, "control character in action", action);
    kwlen = strcspn(action, " \t");
    arg = action + kwlen;
    while (*arg == ' ' || *arg == '\t')
        arg++;
    if (kwlen == 0)
        return policy__err(err, errsize, "empty action", action);
    /* Numeric reply code: 4NN or 5NN. */
    if (kwlen == 3 && isdigit((unsigned char)action[0]) && isdigit((unsigned char)action[1]) &&
        isdigit((unsigned char)action[2])) {
        int ec;
        if (action[0] != '4' && action[0] != '5')
            return policy__err(err, errsize, "reply code must be 4NN or 5NN", action);
        ec = policy__enhanced_class(arg);
        if (ec != 0 && ec != action[0] - '0')
            return policy__err(err, errsize,
                               "enhanced status code class does not match the reply code",
                               action);
        return 0;
    }
    for (i = 0; i < sizeof(policy__keywords) / sizeof(policy__keywords[0]); i++) {
        if (strlen(policy__keywords[i].kw) != kwlen ||
            strncasecmp(policy__keywords[i].kw, action, kwlen) != 0)
            continue;
        switch (policy__keywords[i].arg) {
        case KW_NONE:
            if (*arg)
                return policy__err(err, errsize, "this action takes no text", action);
            return 0;
        case KW_TEXT:
            if (policy__keywords[i].cls) {
                int ec = policy__enhanced_class(arg);
                if (ec != 0 && ec != policy__keywords[i].cls)
                    return policy__err(err, errsize,
                                       "enhanced status code class does not match the action",
                                       action);
            }
            return 0;
        case KW_REQUIRED:
            if (*arg == '\0')
                return policy__err(err, errsize, "this action needs an argument", action);
            if (strcasecmp(policy__keywords[i].kw, "FILTER") == 0) {
                const char *c = strchr(arg, ':');
                if (c == NULL || c == arg || strchr(arg, ' '))
                    return policy__err(err, errsize,
                                       "FILTER needs transport:destination", action);
            } else if (strcasecmp(policy__keywords[i].kw, "PREPEND") == 0) {
                size_t n = strcspn(arg, ": \t");
                if (n == 0 || arg[n] != ':')
                    return policy__err(err, errsize,
                                       "PREPEND needs \"Header-Name: value\"", action);
            } else if (strchr(arg, '@') == NULL || strchr(arg, ' ')) {
                return policy__err(err, errsize, "this action needs an address", action);
            }
            return 0;
        }
    }
    return policy__err(err, errsize, "unknown action", action);
}

const char *policy_action_class(const char *action)
{
    size_t kwlen = strcspn(action, " \t"), i;

    if (kwlen == 3 && isdigit((unsigned char)action[0]))
        return action[0] == '4' ? "defer" : action[0] == '5' ? "reject" : "other";
    for (i = 0; i < sizeof(policy__keywords) / sizeof(policy__keywords[0]); i++)
        if (strlen(policy__keywords[i].kw) == kwlen &&
            strncasecmp(policy__keywords[i].kw, action, kwlen) == 0)
            return policy__keywords[i].metric;
    return "other";
}

int policy_reply_format(osp_buf_t *out, const char *action)
{
    size_t mark = out->len;

    if (osp_buf_append_str(out, "action=") < 0 || osp_buf_append_str(out, action) < 0 ||
        osp_buf_append(out, "\n\n", 2) < 0) {
        osp_buf_truncate(out, mark);
        return -1;
    }
    return 0;
}

char *policy_action_param(const osp_config_t *cfg, const char *param, osp_buf_t *errors)
{
    const char *v = osp_config_str(cfg, param);
    char err[256];

    if (policy_action_check(v, err, sizeof(err)) < 0) {
        (void)osp_buf_printf(errors, "parameter \"%s\": %s\n", param, err);
        return osp_strdup("DUNNO");
    }
    return osp_strdup(v);
}
