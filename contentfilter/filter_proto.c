/* filter_proto: SMTP/LMTP command lines, commands and the DATA stream. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_log.h"
#include "filter_proto.h"

const char *const filter_xattr_names[FILTER_XA__COUNT] = {
    [FILTER_XA_NAME] = "NAME",
    [FILTER_XA_ADDR] = "ADDR",
    [FILTER_XA_PORT] = "PORT",
    [FILTER_XA_PROTO] = "PROTO",
    [FILTER_XA_HELO] = "HELO",
    [FILTER_XA_IDENT] = "IDENT",
    [FILTER_XA_SOURCE] = "SOURCE",
};

/* ---- command lines ---------------------------------------------------- */

void filter_line_init(filter_line_t *lb, size_t max)
{
    /* One byte more than max for a CR whose LF has not arrived yet. */
    osp_buf_init(&lb->buf, max + 1);
    lb->max = max;
    lb->overflow = false;
    lb->complete = false;
}

void filter_line_close(filter_line_t *lb)
{
    osp_buf_close(&lb->buf);
}

void filter_line_reset(filter_line_t *lb)
{
    osp_buf_reset(&lb->buf);
    lb->overflow = false;
    lb->complete = false;
}

size_t filter_line_feed(filter_line_t *lb, const char *p, size_t len, bool *complete_r)
{
    const char *lf = memchr(p, '\n', len);
    size_t take = lf ? (size_t)(lf - p) : len;

    if (lb->complete)
        osp_panic("filter_line_feed: previous line not reset");
    if (!lb->overflow) {
        if (lb->buf.len + take > lb->max + 1) {
            lb->overflow = true;
            osp_buf_reset(&lb->buf);
        } else if (take > 0 && osp_buf_append(&lb->buf, p, take) < 0) {
            osp_panic("filter_line_feed: buffer cap");
        }
    }
    if (lf == NULL) {
        *complete_r = false;
        return len;
    }
    /* Drop one CR before the LF (it may have arrived in an earlier slice). */
    if (!lb->overflow && lb->buf.len > 0 && lb->buf.data[lb->buf.len - 1] == '\r')
        osp_buf_truncate(&lb->buf, lb->buf.len - 1);
    if (lb->buf.len > lb->max) {
        lb->overflow = true;
        osp_buf_reset(&lb->buf);
    }
    lb->complete = true;
    *complete_r = true;
    return take + 1;
}

/* ---- commands ---------------------------------------------------------- */

static const struct {
    const char *verb;
    enum filter_cmd_kind kind;
} filter_proto__verbs[] = {
    { "HELO", FILTER_CMD_HELO }, { "EHLO", FILTER_CMD_EHLO }, { "LHLO", FILTER_CMD_LHLO },
    { "MAIL", FILTER_CMD_MAIL }, { "RCPT", FILTER_CMD_RCPT }, { "DATA", FILTER_CMD_DATA },
    { "RSET", FILTER_CMD_RSET }, { "NOOP", FILTER_CMD_NOOP }, { "QUIT", FILTER_CMD_QUIT },
    { "VRFY", FILTER_CMD_VRFY }, { "HELP", FILTER_CMD_HELP },
    { "XFORWARD", FILTER_CMD_XFORWARD },
};

const char *filter_cmd_name(enum filter_cmd_kind kind)
{
    size_t i;

    for (i = 0; i < sizeof(filter_proto__verbs) / sizeof(filter_proto__verbs[0]); i++)
        if (filter_proto__verbs[i].kind == kind)
            return filter_proto__verbs[i].verb;
    return "unknown";
}

static int filter_proto__fail(filter_reply_t *err_r, int code, const char *ext,
                              const char *text)
{
    err_r->code = code;
    err_r->ext = ext;
    err_r->text = text;
    return -1;
}

bool filter_xtext_valid(const char *s, size_t max)
{
    size_t n = 0;

    for (; *s; s++, n++) {
        unsigned char c = (unsigned char)*s;
        if (n >= max)
            return false;
        if (c == '+') {
            if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
                return false;
            if (islower((unsigned char)s[1]) || islower((unsigned char)s[2]))
                return false;
            s += 2;
            n += 2;
            continue;
        }
        if (c < 33 || c > 126 || c == '=')
            return false;
    }
    return true;
}

int filter_xtext_encode(osp_buf_t *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t old = out->len;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int rc;
        if (c < 33 || c > 126 || c == '+' || c == '=') {
            char e[3] = { '+', hex[c >> 4], hex[c & 15] };
            rc = osp_buf_append(out, e, 3);
        } else {
            rc = osp_buf_append_char(out, (char)c);
        }
        if (rc < 0) {
            osp_buf_truncate(out, old);
            return -1;
        }
    }
    return 0;
}

/* Any byte below 32 or DEL? (NUL cannot occur: the line is a C string.) */
static bool filter_proto__has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 32 || *s == 127)
            return true;
    return false;
}

/*
 * Parse "<path>" or a bare address at *pp; on success NUL-terminate the
 * address, store it in *addr_r and leave *pp after it.  Quoted strings and
 * backslash pairs may contain '>' and blanks.
 */
static int filter_proto__path(char **pp, const char **addr_r)
{
    char *p = *pp;
    char *start;
    bool quoted = false;

    while (*p == ' ')
        p++;
    if (*p == '<') {
        start = ++p;
        for (; *p; p++) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '"')
                quoted = !quoted;
            else if (*p == '>' && !quoted)
                break;
        }
        if (*p != '>')
            return -1;
        *p++ = '\0';
        if (*p != '\0' && *p != ' ')
            return -1;
    } else {
        start = p;
        for (; *p && *p != ' '; p++) {
            if (*p == '"')
                return -1;  /* quoted local parts need brackets */
        }
        if (p == start)
            return -1;
        if (*p)
            *p++ = '\0';
    }
    *addr_r = start;
    *pp = p;
    return 0;
}

/* Next "KEY[=VALUE]" token; NUL-terminates both.  Returns 0 or 1 at the end. */
static int filter_proto__param(char **pp, char **key_r, char **val_r)
{
    char *p = *pp, *eq;

    while (*p == ' ')
        p++;
    if (*p == '\0')
        return 1;
    *key_r = p;
    while (*p && *p != ' ')
        p++;
    if (*p)
        *p++ = '\0';
    eq = strchr(*key_r, '=');
    if (eq) {
        *eq = '\0';
        *val_r = eq + 1;
    } else {
        *val_r = NULL;
    }
    *pp = p;
    return 0;
}

static int filter_proto__mail_params(char *p, filter_cmd_t *cmd, filter_reply_t *err_r)
{
    char *key, *val;

    while (filter_proto__param(&p, &key, &val) == 0) {
        if (strcasecmp(key, "SIZE") == 0) {
            char *end;
            unsigned long long v;
            if (val == NULL || !isdigit((unsigned char)*val) || strlen(val) > 20)
                return filter_proto__fail(err_r, 501, "5.5.4", "Bad SIZE parameter");
            errno = 0;
            v = strtoull(val, &end, 10);
            if (*end || errno)
                return filter_proto__fail(err_r, 501, "5.5.4", "Bad SIZE parameter");
            cmd->size_set = true;
            cmd->size = v;
        } else if (strcasecmp(key, "BODY") == 0) {
            if (val && strcasecmp(val, "7BIT") == 0)
                cmd->body = FILTER_BODY_7BIT;
            else if (val && strcasecmp(val, "8BITMIME") == 0)
                cmd->body = FILTER_BODY_8BITMIME;
            else
                return filter_proto__fail(err_r, 501, "5.5.4", "Unsupported BODY parameter");
        } else if (strcasecmp(key, "SMTPUTF8") == 0) {
            if (val != NULL)
                return filter_proto__fail(err_r, 501, "5.5.4", "SMTPUTF8 takes no value");
            cmd->smtputf8 = true;
        } else if (strcasecmp(key, "RET") == 0) {
            if (cmd->ret != FILTER_RET_UNSPEC)
                return filter_proto__fail(err_r, 501, "5.5.4", "Duplicate RET parameter");
            if (val && strcasecmp(val, "FULL") == 0)
                cmd->ret = FILTER_RET_FULL;
            else if (val && strcasecmp(val, "HDRS") == 0)
                cmd->ret = FILTER_RET_HDRS;
            else
                return filter_proto__fail(err_r, 501, "5.5.4", "Bad RET parameter");
        } else if (strcasecmp(key, "ENVID") == 0) {
            if (cmd->envid)
                return filter_proto__fail(err_r, 501, "5.5.4", "Duplicate ENVID parameter");
            if (val == NULL || *val == '\0' || !filter_xtext_valid(val, FILTER_ENVID_MAX))
                return filter_proto__fail(err_r, 501, "5.5.4", "Bad ENVID parameter");
            cmd->envid = val;
        } else {
            return filter_proto__fail(err_r, 555, "5.5.4", "Unsupported MAIL parameter");
        }
    }
    return 0;
}

static int filter_proto__notify(const char *val, unsigned *notify_r)
{
    unsigned bits = 0;
    const char *p = val;

    if (val == NULL || *val == '\0')
        return -1;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 5 && strncasecmp(p, "NEVER", 5) == 0)
            bits |= FILTER_NOTIFY_NEVER;
        else if (n == 7 && strncasecmp(p, "SUCCESS", 7) == 0)
            bits |= FILTER_NOTIFY_SUCCESS;
        else if (n == 7 && strncasecmp(p, "FAILURE", 7) == 0)
            bits |= FILTER_NOTIFY_FAILURE;
        else if (n == 5 && strncasecmp(p, "DELAY", 5) == 0)
            bits |= FILTER_NOTIFY_DELAY;
        else
            return -1;
        p += n;
        if (*p == ',' && *++p == '\0')
            return -1;
    }
    /* NEVER must stand alone (RFC 3461 4.1). */
    if ((bits & FILTER_NOTIFY_NEVER) && bits != FILTER_NOTIFY_NEVER)
        return -1;
    *notify_r = bits;
    return 0;
}

static int filter_proto__rcpt_params(char *p, filter_cmd_t *cmd, filter_reply_t *err_r)
{
    char *key, *val;

    while (filter_proto__param(&p, &key, &val) == 0) {
        if (strcasecmp(key, "NOTIFY") == 0) {
            if (cmd->notify != 0 || filter_proto__notify(val, &cmd->notify) < 0)
                return filter_proto__fail(err_r, 501, "5.5.4", "Bad NOTIFY parameter");
        } else if (strcasecmp(key, "ORCPT") == 0) {
            const char *semi = val ? strchr(val, ';') : NULL;
            if (cmd->orcpt || semi == NULL || semi == val ||
                !filter_xtext_valid(semi + 1, FILTER_ORCPT_MAX) || semi[1] == '\0')
                return filter_proto__fail(err_r, 501, "5.5.4", "Bad ORCPT parameter");
            cmd->orcpt = val;
        } else {
            return filter_proto__fail(err_r, 555, "5.5.4", "Unsupported RCPT parameter");
        }
    }
    return 0;
}

static int filter_proto__xforward(char *p, filter_cmd_t *cmd, filter_reply_t *err_r)
{
    char *key, *val;
    int n = 0;

    while (filter_proto__param(&p, &key, &val) == 0) {
        int i;
        if (val == NULL)
            return filter_proto__fail(err_r, 501, "5.5.4", "Bad XFORWARD attribute syntax");
        for (i = 0; i < FILTER_XA__COUNT; i++)
            if (strcasecmp(key, filter_xattr_names[i]) == 0)
                break;
        if (i == FILTER_XA__COUNT)
            return filter_proto__fail(err_r, 501, "5.5.4", "Bad XFORWARD attribute name");
        if (cmd->xattr[i] != NULL)
            return filter_proto__fail(err_r, 501, "5.5.4", "Duplicate XFORWARD attribute");
        if (strlen(val) > FILTER_XATTR_MAX)
            return filter_proto__fail(err_r, 501, "5.5.4", "XFORWARD attribute too long");
        cmd->xattr[i] = val;
        n++;
    }
    if (n == 0)
        return filter_proto__fail(err_r, 501, "5.5.4", "Syntax: XFORWARD attribute=value...");
    return 0;
}

int filter_cmd_parse(char *line, size_t len, filter_cmd_t *cmd_r, filter_reply_t *err_r)
{
    char *p = line, *verb;
    size_t vlen, i;

    memset(cmd_r, 0, sizeof(*cmd_r));
    cmd_r->arg = "";
    if (strlen(line) != len)
        return filter_proto__fail(err_r, 500, "5.5.2", "Error: NUL character in command");
    if (filter_proto__has_ctl(line))
        return filter_proto__fail(err_r, 500, "5.5.2", "Error: control character in command");
    /* Trailing blanks are noise (some clients send them). */
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        line[--len] = '\0';
    verb = p;
    while (*p && *p != ' ')
        p++;
    vlen = (size_t)(p - verb);
    if (*p)
        *p++ = '\0';
    for (i = 0; i < sizeof(filter_proto__verbs) / sizeof(filter_proto__verbs[0]); i++)
        if (strlen(filter_proto__verbs[i].verb) == vlen &&
            strcasecmp(verb, filter_proto__verbs[i].verb) == 0)
            break;
    if (i == sizeof(filter_proto__verbs) / sizeof(filter_proto__verbs[0]))
        return 0; /* FILTER_CMD_UNKNOWN */
    cmd_r->kind = filter_proto__verbs[i].kind;

    switch (cmd_r->kind) {
    case FILTER_CMD_HELO:
    case FILTER_CMD_EHLO:
    case FILTER_CMD_LHLO:
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return filter_proto__fail(err_r, 501, "5.5.4", "Syntax: EHLO hostname");
        cmd_r->arg = p;
        return 0;
    case FILTER_CMD_MAIL:
        if (strncasecmp(p, "FROM:", 5) != 0)
            return filter_proto__fail(err_r, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        p += 5;
        if (filter_proto__path(&p, &cmd_r->addr) < 0)
            return filter_proto__fail(err_r, 501, "5.1.7", "Bad sender address syntax");
        return filter_proto__mail_params(p, cmd_r, err_r);
    case FILTER_CMD_RCPT:
        if (strncasecmp(p, "TO:", 3) != 0)
            return filter_proto__fail(err_r, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        p += 3;
        if (filter_proto__path(&p, &cmd_r->addr) < 0 || *cmd_r->addr == '\0')
            return filter_proto__fail(err_r, 501, "5.1.3", "Bad recipient address syntax");
        return filter_proto__rcpt_params(p, cmd_r, err_r);
    case FILTER_CMD_DATA:
    case FILTER_CMD_RSET:
    case FILTER_CMD_QUIT:
        if (*p != '\0')
            return filter_proto__fail(err_r, 501, "5.5.4", "Syntax: command takes no argument");
        return 0;
    case FILTER_CMD_NOOP:
    case FILTER_CMD_HELP:
        cmd_r->arg = p;
        return 0;
    case FILTER_CMD_VRFY:
        if (*p == '\0')
            return filter_proto__fail(err_r, 501, "5.5.4", "Syntax: VRFY address");
        cmd_r->arg = p;
        return 0;
    case FILTER_CMD_XFORWARD:
        return filter_proto__xforward(p, cmd_r, err_r);
    case FILTER_CMD_UNKNOWN:
    default:
        osp_panic("filter_cmd_parse: kind %d", (int)cmd_r->kind);
    }
}

/* ---- DATA --------------------------------------------------------------- */

void filter_data_init(filter_data_t *d)
{
    d->state = FILTER_DATA_BOL;
}

size_t filter_data_decode(filter_data_t *d, const char *p, size_t len,
                          filter_data_out_fn out, void *ctx, bool *done_r)
{
    size_t i, run = 0;   /* run: start of bytes to pass through unchanged */

#define FLUSH_RUN(end) do { if ((end) > run) out(ctx, p + run, (end) - run); } while (0)
    *done_r = false;
    if (d->state == FILTER_DATA_DONE)
        return 0;
    for (i = 0; i < len; i++) {
        char c = p[i];
        switch (d->state) {
        case FILTER_DATA_BOL:
            if (c == '.') {
                FLUSH_RUN(i);
                run = i + 1;          /* the dot is never copied */
                d->state = FILTER_DATA_DOT;
            } else if (c == '\r') {
                FLUSH_RUN(i);
                run = i + 1;
                d->state = FILTER_DATA_CR;
            } else if (c == '\n') {
                FLUSH_RUN(i);
                out(ctx, "\r\n", 2);
                run = i + 1;
            } else {
                d->state = FILTER_DATA_MID;
            }
            break;
        case FILTER_DATA_DOT:
            if (c == '\r') {
                run = i + 1;
                d->state = FILTER_DATA_DOT_CR;
            } else if (c == '\n') {
                d->state = FILTER_DATA_DONE;
                *done_r = true;
                return i + 1;
            } else {
                /* A stuffed line: the dot is gone, the rest is data. */
                run = i;
                d->state = FILTER_DATA_MID;
            }
            break;
        case FILTER_DATA_DOT_CR:
            if (c == '\n') {
                d->state = FILTER_DATA_DONE;
                *done_r = true;
                return i + 1;
            }
            /* "." CR x: a bare CR after the removed dot; it is data. */
            out(ctx, "\r", 1);
            run = i;
            if (c == '\r') {
                run = i + 1;
                d->state = FILTER_DATA_CR;
            } else {
                d->state = FILTER_DATA_MID;
            }
            break;
        case FILTER_DATA_MID:
            if (c == '\r') {
                FLUSH_RUN(i);
                run = i + 1;
                d->state = FILTER_DATA_CR;
            } else if (c == '\n') {
                FLUSH_RUN(i);
                out(ctx, "\r\n", 2);
                run = i + 1;
                d->state = FILTER_DATA_BOL;
            }
            break;
        case FILTER_DATA_CR:
            if (c == '\n') {
                out(ctx, "\r\n", 2);
                run = i + 1;
                d->state = FILTER_DATA_BOL;
            } else if (c == '\r') {
                out(ctx, "\r", 1);   /* the previous CR was bare */
                run = i + 1;
            } else {
                out(ctx, "\r", 1);
                run = i;
                d->state = FILTER_DATA_MID;
            }
            break;
        case FILTER_DATA_DONE:
        default:
            osp_panic("filter_data_decode: state %d", (int)d->state);
        }
    }
    if (d->state == FILTER_DATA_MID)
        FLUSH_RUN(len);
#undef FLUSH_RUN
    return len;
}
