/* filter_reinject: pooled, pipelining SMTP client for reinjection into Postfix. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_auth.h"
#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "filter_conn.h"
#include "filter_reinject.h"

#define RI_LINE_MAX 2048            /* reply line */
#define RI_REPLY_MAX 16384          /* one whole (multi-line) reply */
#define RI_CHUNK 65536              /* body bytes per write */
#define RI_HEADER_MAX (256 * 1024)  /* header section rewritten for tagging */

enum ri_state {
    RI_CONNECTING = 0,
    RI_GREETING,                    /* waiting for 220 */
    RI_EHLO,                        /* waiting for the EHLO reply */
    RI_IDLE,                        /* in the pool */
    RI_COMMANDS,                    /* RSET/XFORWARD/MAIL/RCPT/DATA replies */
    RI_BODY,                        /* writing the message */
    RI_DOT,                         /* waiting for the reply to "." */
    RI_QUIT,                        /* QUIT sent, closing */
    RI_CLOSING,
};

enum ri_exp {
    RI_EXP_RSET,
    RI_EXP_XFORWARD,
    RI_EXP_MAIL,
    RI_EXP_RCPT,
    RI_EXP_DATA,
};

#define RI_EXT_PIPELINING 0x01u
#define RI_EXT_XFORWARD   0x02u
#define RI_EXT_SIZE       0x04u
#define RI_EXT_8BITMIME   0x08u
#define RI_EXT_SMTPUTF8   0x10u
#define RI_EXT_DSN        0x20u

typedef struct ri_cmd {
    enum ri_exp exp;
    size_t rcpt;                    /* RI_EXP_RCPT: which recipient */
    char *line;                     /* owned, with CR LF */
} ri_cmd_t;

typedef struct ri_conn ri_conn_t;

struct filter_reinject {
    uv_loop_t *loop;                /* borrowed */
    filter_reinject_conf_t conf;    /* strings borrowed from the caller's conf */
    bool is_unix;
    char host[256];
    int port;
    struct sockaddr_storage addr;
    osp_breaker_t breaker;
    ri_conn_t *conns;               /* every connection (list through next) */
    unsigned nidle;
    unsigned nconns;
    bool shutting_down;
    uint64_t seq;
};

struct ri_conn {
    filter_reinject_t *ri;
    ri_conn_t *next;
    filter_stream_t h;
    uv_timer_t timer;
    uv_connect_t connect_req;
    int open_handles;               /* handles to close before freeing */
    enum ri_state state;
    unsigned ext;
    uint64_t server_size;           /* SIZE limit announced (0: none) */
    filter_line_t line;
    osp_buf_t reply;                /* the reply being assembled, lines joined by \n */
    int reply_code;
    filter_reinject_req_t *req;     /* current request, borrowed */
    bool reused;                    /* the current request got a pooled connection */
    bool got_reply;                 /* any reply for the current request yet */
    bool mail_ok;
    size_t accepted;                /* recipients accepted by RCPT */
    bool *rcpt_ok;                  /* owned; per recipient */
    ri_cmd_t *cmds;                 /* owned */
    size_t ncmds, sent, answered;
    /* body streaming */
    osp_buf_t hdr;                  /* rewritten header section (tagging), or empty */
    bool use_hdr;
    int part;                       /* 0 prepend, 1 header, 2 rest of body, 3 end */
    uint64_t off;
    bool bol;
    bool writing;
    uint64_t id;
};

typedef struct ri_write {
    uv_write_t req;
    ri_conn_t *conn;
    bool body;                      /* a body chunk: continue streaming after it */
    size_t len;
    char data[];
} ri_write_t;

static void ri_conn_fail(ri_conn_t *c, const char *why);
static void ri_tx_begin(ri_conn_t *c);
static void ri_body_next(ri_conn_t *c);
static int ri_write(ri_conn_t *c, const char *p, size_t len, bool body);
static void ri_timer_arm(ri_conn_t *c, uint64_t ms);

const osp_breaker_t *filter_reinject_breaker(const filter_reinject_t *ri)
{
    return &ri->breaker;
}

int filter_reinject_parse_target(const char *spec, bool *unix_r, char *host, size_t hostsize,
                                 int *port_r)
{
    const char *p = spec, *colon;
    char *end;
    long port;
    size_t hl;

    if (strncmp(p, "unix:", 5) == 0) {
        if (p[5] != '/' || strlen(p + 5) >= hostsize)
            return -1;
        *unix_r = true;
        osp_strlcpy(host, p + 5, hostsize);
        *port_r = 0;
        return 0;
    }
    *unix_r = false;
    if (strncmp(p, "inet:", 5) == 0)
        p += 5;
    if (*p == '[') {
        const char *rb = strchr(p, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        hl = (size_t)(rb - p - 1);
        if (hl == 0 || hl >= hostsize)
            return -1;
        memcpy(host, p + 1, hl);
        host[hl] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(p, ':');
        if (colon == NULL || colon == p)
            return -1;
        hl = (size_t)(colon - p);
        if (hl >= hostsize)
            return -1;
        memcpy(host, p, hl);
        host[hl] = '\0';
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (*end || errno || port < 1 || port > 65535 || colon[1] == '\0')
        return -1;
    *port_r = (int)port;
    return 0;
}

filter_reinject_t *filter_reinject_create(uv_loop_t *loop, const filter_reinject_conf_t *conf,
                                          char *err, size_t errsize)
{
    filter_reinject_t *ri = osp_calloc(1, sizeof(*ri));

    ri->loop = loop;
    ri->conf = *conf;
    if (filter_reinject_parse_target(conf->target, &ri->is_unix, ri->host, sizeof(ri->host),
                                     &ri->port) < 0) {
        osp_snprintf(err, errsize, "filter_reinject: bad target \"%s\" "
                     "(expected inet:ADDRESS:PORT or unix:/PATH)", conf->target);
        free(ri);
        return NULL;
    }
    if (!ri->is_unix &&
        uv_ip4_addr(ri->host, ri->port, (struct sockaddr_in *)&ri->addr) != 0 &&
        uv_ip6_addr(ri->host, ri->port, (struct sockaddr_in6 *)&ri->addr) != 0) {
        osp_snprintf(err, errsize, "filter_reinject: \"%s\" is not a numeric address",
                     ri->host);
        free(ri);
        return NULL;
    }
    osp_breaker_init(&ri->breaker, &conf->breaker, "reinject");
    return ri;
}

bool filter_reinject_idle(const filter_reinject_t *ri)
{
    return ri->conns == NULL;
}

void filter_reinject_free(filter_reinject_t **rip)
{
    filter_reinject_t *ri = *rip;

    if (ri == NULL)
        return;
    if (ri->conns != NULL)
        osp_panic("filter_reinject_free: connections still open");
    free(ri);
    *rip = NULL;
}

/* ---- connection lifetime ------------------------------------------------- */

static void ri_tx_clear(ri_conn_t *c)
{
    size_t i;

    for (i = 0; i < c->ncmds; i++)
        free(c->cmds[i].line);
    OSP_FREE(&c->cmds);
    OSP_FREE(&c->rcpt_ok);
    c->ncmds = c->sent = c->answered = 0;
    c->accepted = 0;
    c->mail_ok = false;
    c->got_reply = false;
    osp_buf_close(&c->hdr);
    osp_buf_init(&c->hdr, RI_HEADER_MAX + 1024);
    c->use_hdr = false;
}

static void ri_close_cb(uv_handle_t *h)
{
    ri_conn_t *c = h->data;
    filter_reinject_t *ri = c->ri;
    ri_conn_t **pp;

    if (--c->open_handles > 0)
        return;
    for (pp = &ri->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    ri->nconns--;
    ri_tx_clear(c);
    osp_buf_close(&c->hdr);
    filter_line_close(&c->line);
    osp_buf_close(&c->reply);
    free(c);
}

static void ri_conn_close(ri_conn_t *c)
{
    if (c->state == RI_CLOSING)
        return;
    if (c->state == RI_IDLE)
        c->ri->nidle--;
    c->state = RI_CLOSING;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, ri_close_cb);
    uv_close(&c->h.handle, ri_close_cb);
}

static void ri_timer_cb(uv_timer_t *t)
{
    ri_conn_t *c = t->data;

    if (c->state == RI_IDLE) {
        /* The idle timeout: say goodbye so Postfix's smtpd logs no error. */
        c->ri->nidle--;
        c->state = RI_QUIT;
        if (ri_write(c, "QUIT\r\n", 6, false) == 0)
            ri_timer_arm(c, 2000);
        return;
    }
    ri_conn_fail(c, "timeout");
}

static void ri_timer_arm(ri_conn_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, ri_timer_cb, ms, 0);
}

static void ri_write_cb(uv_write_t *wr, int status)
{
    ri_write_t *w = (ri_write_t *)wr;
    ri_conn_t *c = w->conn;
    bool body = w->body;

    free(w);
    if (status == UV_ECANCELED)
        return;
    if (body)
        c->writing = false;
    if (status < 0) {
        ri_conn_fail(c, uv_strerror(status));
        return;
    }
    if (body && c->state == RI_BODY) {
        ri_timer_arm(c, c->ri->conf.timeout_ms);
        ri_body_next(c);
    }
}

/* Write len bytes (copied).  0, or -1 after failing the connection. */
static int ri_write(ri_conn_t *c, const char *p, size_t len, bool body)
{
    ri_write_t *w = osp_malloc(sizeof(*w) + len);
    uv_buf_t b;
    int rc;

    w->conn = c;
    w->body = body;
    w->len = len;
    memcpy(w->data, p, len);
    b = uv_buf_init(w->data, (unsigned)len);
    rc = uv_write(&w->req, &c->h.stream, &b, 1, ri_write_cb);
    if (rc < 0) {
        free(w);
        ri_conn_fail(c, uv_strerror(rc));
        return -1;
    }
    if (body)
        c->writing = true;
    return 0;
}

/* ---- finishing a request --------------------------------------------- */

static void ri_set_result(filter_reinject_rcpt_t *r, int code, const char *text)
{
    osp_buf_t b;

    r->code = code;
    osp_buf_init(&b, sizeof(r->text) - 1);
    osp_buf_append_printable(&b, text, strnlen(text, sizeof(r->text) - 1));
    osp_strlcpy(r->text, osp_buf_cstr(&b), sizeof(r->text));
    osp_buf_close(&b);
}

/* Complete the current request: report to the breaker, call back. */
static void ri_finish(ri_conn_t *c, bool backend_ok)
{
    filter_reinject_req_t *req = c->req;
    filter_reinject_t *ri = c->ri;

    c->req = NULL;
    if (backend_ok)
        osp_breaker_success(&ri->breaker, uv_now(ri->loop));
    else
        osp_breaker_failure(&ri->breaker, uv_now(ri->loop));
    ri_tx_clear(c);
    req->conn = NULL;
    req->done(req);
}

/* The connection broke (or timed out) for the current request, if any. */
static void ri_conn_fail(ri_conn_t *c, const char *why)
{
    filter_reinject_req_t *req = c->req;
    filter_reinject_t *ri = c->ri;
    const char *stage;
    size_t i;

    if (c->state == RI_CLOSING)
        return;
    switch (c->state) {
    case RI_CONNECTING: stage = "connect"; break;
    case RI_GREETING: stage = "greeting"; break;
    case RI_EHLO: stage = "EHLO"; break;
    case RI_COMMANDS: stage = "MAIL/RCPT/DATA"; break;
    case RI_BODY: stage = "message transfer"; break;
    case RI_DOT: stage = "end of data"; break;
    default: stage = "idle"; break;
    }
    ri_conn_close(c);
    if (req == NULL)
        return;
    c->req = NULL;
    /* A pooled connection found dead before it said anything: retry once. */
    if (c->reused && !c->got_reply && !req->retried && !ri->shutting_down) {
        req->retried = true;
        osp_debug(1, "%s: pooled reinjection connection dead (%s), retrying",
                  req->log_id, why);
        ri_tx_clear(c);
        req->conn = NULL;
        /* The breaker slot is reused by the retry: nothing reported yet. */
        if (filter_reinject_send(ri, req, req->done) == 0)
            return;
        osp_breaker_failure(&ri->breaker, uv_now(ri->loop));
        for (i = 0; i < req->nrcpt; i++)
            ri_set_result(&req->rcpts[i], 451, "4.4.2 reinjection retry failed");
        req->done(req);
        return;
    }
    osp_snprintf(req->error, sizeof(req->error), "%s during %s with %s", why, stage,
                 ri->conf.target);
    for (i = 0; i < req->nrcpt; i++) {
        /* Recipients the server already refused keep that reply. */
        if (c->rcpt_ok == NULL || c->rcpt_ok[i] || req->rcpts[i].code == 0) {
            char text[300];
            osp_snprintf(text, sizeof(text), "4.4.2 reinjection failed: %s", req->error);
            ri_set_result(&req->rcpts[i], 451, text);
        }
    }
    c->req = req;
    ri_finish(c, false);
}

/* Back to the pool, or QUIT. */
static void ri_conn_release(ri_conn_t *c)
{
    filter_reinject_t *ri = c->ri;

    if (c->state == RI_CLOSING)
        return;
    if (ri->shutting_down || ri->nidle >= ri->conf.pool_size) {
        c->state = RI_QUIT;
        if (ri_write(c, "QUIT\r\n", 6, false) == 0) {
            ri_timer_arm(c, 2000);
        }
        return;
    }
    c->state = RI_IDLE;
    ri->nidle++;
    ri_timer_arm(c, ri->conf.idle_timeout_ms);
}

/* ---- the transaction ------------------------------------------------------ */

static void ri_cmd_add(ri_conn_t *c, enum ri_exp exp, size_t rcpt, const osp_buf_t *line)
{
    c->cmds = osp_reallocarray(c->cmds, c->ncmds + 1, sizeof(*c->cmds));
    c->cmds[c->ncmds].exp = exp;
    c->cmds[c->ncmds].rcpt = rcpt;
    c->cmds[c->ncmds].line = osp_memdup0(line->data, line->len);
    c->ncmds++;
}

static void ri_cmds_send(ri_conn_t *c)
{
    osp_buf_t out;

    osp_buf_init(&out, OSP_BUF_UNLIMITED);
    while (c->sent < c->ncmds) {
        osp_buf_append_str(&out, c->cmds[c->sent].line);
        c->sent++;
        if (!(c->ext & RI_EXT_PIPELINING))
            break;
    }
    if (out.len > 0 && ri_write(c, out.data, out.len, false) == 0)
        ri_timer_arm(c, c->ri->conf.timeout_ms);
    osp_buf_close(&out);
}

/* Insert prefix into the Subject of the header section; false if none. */
static bool ri_tag_subject(osp_buf_t *hdr, const char *prefix)
{
    size_t i = 0;

    while (i < hdr->len) {
        const char *eol = memchr(hdr->data + i, '\n', hdr->len - i);
        size_t next = eol ? (size_t)(eol - hdr->data) + 1 : hdr->len;
        if (hdr->len - i >= 8 && strncasecmp(hdr->data + i, "Subject:", 8) == 0) {
            osp_buf_t n;
            size_t at = i + 8;
            if (at < hdr->len && hdr->data[at] == ' ')
                at++;
            osp_buf_init(&n, OSP_BUF_UNLIMITED);
            osp_buf_append(&n, hdr->data, i);
            osp_buf_printf(&n, "Subject: %s ", prefix);
            osp_buf_append(&n, hdr->data + at, hdr->len - at);
            osp_buf_reset(hdr);
            osp_buf_append(hdr, n.data, n.len);
            osp_buf_close(&n);
            return true;
        }
        i = next;
    }
    return false;
}

static void ri_tx_begin(ri_conn_t *c)
{
    filter_reinject_req_t *req = c->req;
    osp_buf_t line;
    size_t i;
    int a;
    uint64_t size;

    ri_tx_clear(c);
    c->state = RI_COMMANDS;
    c->rcpt_ok = osp_calloc(req->nrcpt ? req->nrcpt : 1, sizeof(bool));
    for (i = 0; i < req->nrcpt; i++) {
        req->rcpts[i].code = 0;
        req->rcpts[i].text[0] = '\0';
    }
    /*
     * Tagging and removing forged Authentication-Results fields rewrite the
     * header section, so it is sent from memory.
     */
    size = req->prepend_len + req->body->size;
    if ((req->subject_prefix || req->strip_authserv_id) && req->header_end > 0 &&
        req->header_end <= RI_HEADER_MAX) {
        char chunk[8192];
        uint64_t off = 0;
        while (off < req->header_end) {
            size_t want = sizeof(chunk);
            ssize_t n;
            if (want > req->header_end - off)
                want = (size_t)(req->header_end - off);
            n = filter_body_read(req->body, off, chunk, want);
            if (n <= 0)
                break;
            osp_buf_append(&c->hdr, chunk, (size_t)n);
            off += (uint64_t)n;
        }
        if (off == req->header_end) {
            if (req->strip_authserv_id)
                (void)osp_auth_strip_ours(&c->hdr, req->strip_authserv_id);
            if (req->subject_prefix && !ri_tag_subject(&c->hdr, req->subject_prefix)) {
                /* No Subject: add one in front of the header section. */
                osp_buf_t n;
                osp_buf_init(&n, OSP_BUF_UNLIMITED);
                osp_buf_printf(&n, "Subject: %s\r\n", req->subject_prefix);
                osp_buf_append(&n, c->hdr.data, c->hdr.len);
                osp_buf_reset(&c->hdr);
                osp_buf_append(&c->hdr, n.data, n.len);
                osp_buf_close(&n);
            }
            c->use_hdr = true;
            size = req->prepend_len + c->hdr.len + (req->body->size - req->header_end);
        } else {
            osp_buf_reset(&c->hdr);
        }
    }

    osp_buf_init(&line, OSP_BUF_UNLIMITED);
    if (c->reused) {
        osp_buf_append_str(&line, "RSET\r\n");
        ri_cmd_add(c, RI_EXP_RSET, 0, &line);
    }
    if (c->ext & RI_EXT_XFORWARD) {
        osp_buf_reset(&line);
        for (a = 0; a < FILTER_XA__COUNT; a++) {
            if (req->xforward[a] == NULL)
                continue;
            if (line.len == 0)
                osp_buf_append_str(&line, "XFORWARD");
            osp_buf_printf(&line, " %s=%s", filter_xattr_names[a], req->xforward[a]);
            /* Keep each command short, as Postfix's own client does. */
            if (line.len > 400) {
                osp_buf_append_str(&line, "\r\n");
                ri_cmd_add(c, RI_EXP_XFORWARD, 0, &line);
                osp_buf_reset(&line);
            }
        }
        if (line.len > 0) {
            osp_buf_append_str(&line, "\r\n");
            ri_cmd_add(c, RI_EXP_XFORWARD, 0, &line);
        }
    }
    osp_buf_reset(&line);
    osp_buf_printf(&line, "MAIL FROM:<%s>", req->sender);
    if (c->ext & RI_EXT_SIZE)
        osp_buf_printf(&line, " SIZE=%llu", (unsigned long long)size);
    if (req->body_type == FILTER_BODY_8BITMIME && (c->ext & RI_EXT_8BITMIME))
        osp_buf_append_str(&line, " BODY=8BITMIME");
    else if (req->body_type == FILTER_BODY_7BIT && (c->ext & RI_EXT_8BITMIME))
        osp_buf_append_str(&line, " BODY=7BIT");
    if (req->smtputf8 && (c->ext & RI_EXT_SMTPUTF8))
        osp_buf_append_str(&line, " SMTPUTF8");
    if (c->ext & RI_EXT_DSN) {
        if (req->ret != FILTER_RET_UNSPEC)
            osp_buf_append_str(&line, req->ret == FILTER_RET_FULL ? " RET=FULL" : " RET=HDRS");
        if (req->envid)
            osp_buf_printf(&line, " ENVID=%s", req->envid);
    }
    osp_buf_append_str(&line, "\r\n");
    ri_cmd_add(c, RI_EXP_MAIL, 0, &line);
    for (i = 0; i < req->nrcpt; i++) {
        const filter_reinject_rcpt_t *r = &req->rcpts[i];
        osp_buf_reset(&line);
        osp_buf_printf(&line, "RCPT TO:<%s>", r->addr);
        if (c->ext & RI_EXT_DSN) {
            if (r->notify) {
                const char *sep = "";
                osp_buf_append_str(&line, " NOTIFY=");
                if (r->notify & FILTER_NOTIFY_NEVER)
                    osp_buf_append_str(&line, "NEVER");
                if (r->notify & FILTER_NOTIFY_SUCCESS) {
                    osp_buf_printf(&line, "%sSUCCESS", sep);
                    sep = ",";
                }
                if (r->notify & FILTER_NOTIFY_FAILURE) {
                    osp_buf_printf(&line, "%sFAILURE", sep);
                    sep = ",";
                }
                if (r->notify & FILTER_NOTIFY_DELAY)
                    osp_buf_printf(&line, "%sDELAY", sep);
            }
            if (r->orcpt)
                osp_buf_printf(&line, " ORCPT=%s", r->orcpt);
        }
        osp_buf_append_str(&line, "\r\n");
        ri_cmd_add(c, RI_EXP_RCPT, i, &line);
    }
    osp_buf_reset(&line);
    osp_buf_append_str(&line, "DATA\r\n");
    ri_cmd_add(c, RI_EXP_DATA, 0, &line);
    osp_buf_close(&line);
    ri_cmds_send(c);
}

/* Append p to out with dot-stuffing; *bol tracks the line start across calls. */
static void ri_stuff(osp_buf_t *out, const char *p, size_t len, bool *bol)
{
    size_t i, run = 0;

    for (i = 0; i < len; i++) {
        if (*bol && p[i] == '.') {
            osp_buf_append(out, p + run, i - run);
            osp_buf_append_char(out, '.');
            run = i;
        }
        *bol = p[i] == '\n';
    }
    osp_buf_append(out, p + run, len - run);
}

static void ri_body_next(ri_conn_t *c)
{
    filter_reinject_req_t *req = c->req;
    osp_buf_t out;
    char chunk[RI_CHUNK];

    if (c->writing || c->state != RI_BODY)
        return;
    osp_buf_init(&out, OSP_BUF_UNLIMITED);
    while (out.len < RI_CHUNK && c->part < 3) {
        if (c->part == 0) {
            ri_stuff(&out, req->prepend, req->prepend_len, &c->bol);
            c->part = 1;
            c->off = 0;
        } else if (c->part == 1) {
            if (c->use_hdr)
                ri_stuff(&out, c->hdr.data, c->hdr.len, &c->bol);
            c->part = 2;
            c->off = c->use_hdr ? req->header_end : 0;
        } else {
            ssize_t n = filter_body_read(req->body, c->off, chunk, sizeof(chunk));
            if (n < 0) {
                osp_buf_close(&out);
                ri_conn_fail(c, "cannot read the message body");
                return;
            }
            if (n == 0) {
                c->part = 3;
                osp_buf_append_str(&out, c->bol ? ".\r\n" : "\r\n.\r\n");
                break;
            }
            ri_stuff(&out, chunk, (size_t)n, &c->bol);
            c->off += (uint64_t)n;
        }
    }
    if (c->part == 3)
        c->state = RI_DOT;
    if (ri_write(c, out.data, out.len, true) == 0)
        ri_timer_arm(c, c->ri->conf.timeout_ms);
    osp_buf_close(&out);
}

/* Extract "queued as XXXX" from a reply text. */
static void ri_queue_id(filter_reinject_req_t *req, const char *text)
{
    const char *q = strstr(text, "queued as ");
    size_t n = 0;

    if (q == NULL)
        return;
    q += 10;
    while (n + 1 < sizeof(req->queue_id) && (isalnum((unsigned char)q[n])))
        n++;
    memcpy(req->queue_id, q, n);
    req->queue_id[n] = '\0';
}

/* The reply's last line text after the code, e.g. "2.0.0 Ok". */
static const char *ri_reply_text(ri_conn_t *c)
{
    const char *last = strrchr(osp_buf_cstr(&c->reply), '\n');
    const char *t = last ? last + 1 : osp_buf_cstr(&c->reply);

    t += 3;
    if (*t == ' ' || *t == '-')
        t++;
    return t;
}

static void ri_on_command_reply(ri_conn_t *c, int code, const char *text)
{
    filter_reinject_req_t *req = c->req;
    ri_cmd_t *cmd;
    size_t i;

    if (c->answered >= c->sent)
        return ri_conn_fail(c, "unexpected reply");
    cmd = &c->cmds[c->answered++];
    c->got_reply = true;
    if (code == 421)
        goto fail421;
    switch (cmd->exp) {
    case RI_EXP_RSET:
    case RI_EXP_XFORWARD:
        if (code / 100 != 2)
            return ri_conn_fail(c, cmd->exp == RI_EXP_RSET ? "RSET refused" : "XFORWARD refused");
        break;
    case RI_EXP_MAIL:
        c->mail_ok = code / 100 == 2;
        if (!c->mail_ok)
            for (i = 0; i < req->nrcpt; i++)
                if (req->rcpts[i].code == 0)
                    ri_set_result(&req->rcpts[i], code, text);
        break;
    case RI_EXP_RCPT:
        if (!c->mail_ok)
            break;
        if (code / 100 == 2) {
            c->rcpt_ok[cmd->rcpt] = true;
            c->accepted++;
        } else {
            ri_set_result(&req->rcpts[cmd->rcpt], code, text);
        }
        break;
    case RI_EXP_DATA:
        if (code == 354) {
            if (!c->mail_ok || c->accepted == 0)
                return ri_conn_fail(c, "354 without recipients");
            c->state = RI_BODY;
            c->part = 0;
            c->off = 0;
            c->bol = true;
            ri_body_next(c);
            return;
        }
        for (i = 0; i < req->nrcpt; i++)
            if (c->rcpt_ok[i] || req->rcpts[i].code == 0)
                ri_set_result(&req->rcpts[i], code / 100 == 2 ? 451 : code,
                              code / 100 == 2 ? "4.3.0 reinjection: no 354" : text);
        ri_finish(c, c->mail_ok || code / 100 == 5);
        ri_conn_release(c);
        return;
    default:
        osp_panic("ri_on_command_reply: %d", (int)cmd->exp);
    }
    if (c->answered == c->sent && c->sent < c->ncmds)
        ri_cmds_send(c);
    return;

fail421:
    ri_conn_fail(c, "421 from server");
}

static void ri_parse_ehlo(ri_conn_t *c)
{
    const char *p = osp_buf_cstr(&c->reply);

    c->ext = 0;
    c->server_size = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        const char *kw = p + 4;
        size_t kn = n > 4 ? n - 4 : 0;
#define KW(s) (kn >= sizeof(s) - 1 && strncasecmp(kw, s, sizeof(s) - 1) == 0 && \
               (kn == sizeof(s) - 1 || kw[sizeof(s) - 1] == ' '))
        if (KW("PIPELINING"))
            c->ext |= RI_EXT_PIPELINING;
        else if (KW("XFORWARD"))
            c->ext |= RI_EXT_XFORWARD;
        else if (KW("SIZE")) {
            c->ext |= RI_EXT_SIZE;
            c->server_size = strtoull(kw + 4, NULL, 10);
        } else if (KW("8BITMIME"))
            c->ext |= RI_EXT_8BITMIME;
        else if (KW("SMTPUTF8"))
            c->ext |= RI_EXT_SMTPUTF8;
        else if (KW("DSN"))
            c->ext |= RI_EXT_DSN;
#undef KW
        p += n;
        if (*p == '\n')
            p++;
    }
}

/* One complete reply has arrived. */
static void ri_on_reply(ri_conn_t *c, int code)
{
    const char *text = ri_reply_text(c);
    osp_buf_t cmd;

    switch (c->state) {
    case RI_GREETING:
        if (code != 220)
            return ri_conn_fail(c, "greeting refused");
        osp_buf_init(&cmd, 1024);
        osp_buf_printf(&cmd, "EHLO %s\r\n", c->ri->conf.helo);
        c->state = RI_EHLO;
        if (ri_write(c, cmd.data, cmd.len, false) == 0)
            ri_timer_arm(c, c->ri->conf.timeout_ms);
        osp_buf_close(&cmd);
        return;
    case RI_EHLO:
        if (code != 250)
            return ri_conn_fail(c, "EHLO refused");
        ri_parse_ehlo(c);
        if (c->req == NULL)
            return ri_conn_release(c);
        ri_tx_begin(c);
        return;
    case RI_COMMANDS:
        ri_on_command_reply(c, code, text);
        return;
    case RI_BODY:
        return ri_conn_fail(c, "reply during message transfer");
    case RI_DOT: {
        filter_reinject_req_t *req = c->req;
        size_t i;
        if (code == 421)
            return ri_conn_fail(c, "421 after end of data");
        for (i = 0; i < req->nrcpt; i++)
            if (c->rcpt_ok[i])
                ri_set_result(&req->rcpts[i], code, text);
        if (code / 100 == 2)
            ri_queue_id(req, text);
        ri_finish(c, code / 100 != 4);
        ri_conn_release(c);
        return;
    }
    case RI_IDLE:
        /* e.g. "421 timeout" from an idle server: just go. */
        ri_conn_close(c);
        return;
    case RI_QUIT:
        ri_conn_close(c);
        return;
    case RI_CONNECTING:
    case RI_CLOSING:
    default:
        osp_panic("ri_on_reply in state %d", (int)c->state);
    }
}

static void ri_on_line(ri_conn_t *c)
{
    const char *l = c->line.buf.data ? c->line.buf.data : "";
    size_t n = c->line.buf.len;
    int code;

    if (c->line.overflow || n < 3 || !isdigit((unsigned char)l[0]) ||
        !isdigit((unsigned char)l[1]) || !isdigit((unsigned char)l[2]) ||
        (n > 3 && l[3] != ' ' && l[3] != '-'))
        return ri_conn_fail(c, "malformed reply");
    code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (c->reply.len > 0 && code != c->reply_code)
        return ri_conn_fail(c, "inconsistent multi-line reply");
    c->reply_code = code;
    if ((c->reply.len > 0 && osp_buf_append_char(&c->reply, '\n') < 0) ||
        osp_buf_append(&c->reply, l, n) < 0)
        return ri_conn_fail(c, "reply too long");
    if (n > 3 && l[3] == '-')
        return;
    ri_on_reply(c, code);
    if (c->state != RI_CLOSING)
        osp_buf_reset(&c->reply);
}

static void ri_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = osp_malloc(8192);
    buf->len = 8192;
}

static void ri_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ri_conn_t *c = s->data;
    const char *p = buf->base;
    size_t len = nread > 0 ? (size_t)nread : 0;

    if (nread < 0) {
        free(buf->base);
        if (c->state == RI_QUIT || c->state == RI_IDLE)
            ri_conn_close(c);
        else
            ri_conn_fail(c, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        return;
    }
    while (len > 0 && c->state != RI_CLOSING) {
        bool complete;
        size_t used = filter_line_feed(&c->line, p, len, &complete);
        p += used;
        len -= used;
        if (complete) {
            ri_on_line(c);
            filter_line_reset(&c->line);
        }
    }
    free(buf->base);
}

static void ri_connect_cb(uv_connect_t *cr, int status)
{
    ri_conn_t *c = cr->data;

    if (status == UV_ECANCELED || c->state == RI_CLOSING)
        return;
    if (status < 0)
        return ri_conn_fail(c, uv_strerror(status));
    c->state = RI_GREETING;
    ri_timer_arm(c, c->ri->conf.timeout_ms);
    if (uv_read_start(&c->h.stream, ri_alloc_cb, ri_read_cb) < 0)
        ri_conn_fail(c, "read start failed");
}

static ri_conn_t *ri_conn_create(filter_reinject_t *ri)
{
    ri_conn_t *c = osp_calloc(1, sizeof(*c));
    int rc;

    c->ri = ri;
    c->id = ++ri->seq;
    filter_line_init(&c->line, RI_LINE_MAX);
    osp_buf_init(&c->reply, RI_REPLY_MAX);
    osp_buf_init(&c->hdr, RI_HEADER_MAX + 1024);
    uv_timer_init(ri->loop, &c->timer);
    c->timer.data = c;
    if (ri->is_unix)
        uv_pipe_init(ri->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(ri->loop, &c->h.tcp);
    c->h.handle.data = c;
    c->open_handles = 2;
    c->next = ri->conns;
    ri->conns = c;
    ri->nconns++;
    c->state = RI_CONNECTING;
    c->connect_req.data = c;
    if (ri->is_unix) {
        uv_pipe_connect(&c->connect_req, &c->h.pipe, ri->host, ri_connect_cb);
    } else {
        rc = uv_tcp_connect(&c->connect_req, &c->h.tcp, (struct sockaddr *)&ri->addr,
                            ri_connect_cb);
        if (rc < 0) {
            ri_conn_close(c);
            return NULL;
        }
        uv_tcp_nodelay(&c->h.tcp, 1);
    }
    ri_timer_arm(c, ri->conf.connect_timeout_ms);
    return c;
}

int filter_reinject_send(filter_reinject_t *ri, filter_reinject_req_t *req,
                         filter_reinject_cb done)
{
    ri_conn_t *c;

    req->done = done;
    req->error[0] = '\0';
    req->queue_id[0] = '\0';
    if (ri->shutting_down) {
        osp_strlcpy(req->error, "shutting down", sizeof(req->error));
        return -1;
    }
    if (!req->retried && !osp_breaker_allow(&ri->breaker, uv_now(ri->loop))) {
        osp_strlcpy(req->error, "reinjection unavailable (circuit breaker open)",
                    sizeof(req->error));
        return -1;
    }
    for (c = ri->conns; c; c = c->next)
        if (c->state == RI_IDLE)
            break;
    if (c != NULL) {
        ri->nidle--;
        uv_timer_stop(&c->timer);
        c->req = req;
        c->reused = true;
        req->conn = c;
        ri_tx_begin(c);
        return 0;
    }
    c = ri_conn_create(ri);
    if (c == NULL) {
        osp_strlcpy(req->error, "cannot create a connection", sizeof(req->error));
        osp_breaker_failure(&ri->breaker, uv_now(ri->loop));
        return -1;
    }
    c->req = req;
    c->reused = false;
    req->conn = c;
    return 0;
}

void filter_reinject_shutdown(filter_reinject_t *ri)
{
    ri_conn_t *c, *next;

    ri->shutting_down = true;
    for (c = ri->conns; c; c = next) {
        next = c->next;
        if (c->req)
            ri_conn_fail(c, "shutting down");
        else
            ri_conn_close(c);
    }
}
