/* osp_dns: asynchronous libunbound queries on a libuv loop; zone data for tests. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#include "osp_dns.h"
#include "osp_log.h"
#include "osp_mem.h"

#define OSP_DNS_MAX_CNAME 8
#define OSP_DNS_MAX_ZONE_LINE 65536

typedef struct osp_dns_timeout_name {
    char *name;            /* lower case, no trailing dot */
    int *types;            /* types with records in the file; 5 (CNAME) answers all */
    size_t ntypes;
} osp_dns_timeout_name_t;

struct osp_dns_zone {
    char **rr;             /* owned lines, owner names absolute */
    size_t nrr;
    osp_dns_timeout_name_t *timeouts;
    size_t ntimeouts;
};

struct osp_dns {
    uv_loop_t *loop;                /* borrowed */
    struct ub_ctx *ctx;             /* owned */
    const osp_dns_zone_t *zone;     /* borrowed */
    uv_poll_t poll;
    uv_timer_t timer;
    int closing;                    /* handles still to close */
    uint64_t timeout_ms;
    osp_breaker_t breaker;
    osp_dns_query_t *head, *tail;   /* outstanding queries */
    size_t pending;
};

struct osp_dns_query {
    osp_dns_t *dns;
    osp_dns_query_t *prev, *next;
    uint64_t deadline;
    char *name;            /* asked for */
    char *cur;             /* current name (CNAME target) */
    int rrtype;
    int hops;
    int async_id;
    bool in_ub;
    bool counted;          /* let through the breaker: report the outcome */
    const char *fail;      /* complete at once with this temporary failure */
    osp_dns_cb cb;
    void *arg;
};

const char *osp_dns_status_name(enum osp_dns_status st)
{
    switch (st) {
    case OSP_DNS_FOUND:
        return "found";
    case OSP_DNS_NOTFOUND:
        return "not found";
    case OSP_DNS_TEMPFAIL:
        return "temporary failure";
    }
    return "?";
}

void osp_dns_conf_load(osp_dns_conf_t *conf, const osp_config_t *cfg)
{
    memset(conf, 0, sizeof(*conf));
    conf->zone_file = osp_config_str(cfg, "dns_zone_file");
    conf->forwarders = osp_config_list(cfg, "dns_forwarders", &conf->nforwarders);
    conf->resolv_conf = osp_config_str(cfg, "dns_resolv_conf");
    conf->timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "dns_timeout");
    conf->breaker.failure_threshold = (unsigned)osp_config_int(cfg, "breaker_failure_threshold");
    conf->breaker.cooldown_ms = (uint64_t)osp_config_duration_ms(cfg, "breaker_cooldown");
}

/* ---- zone data ---------------------------------------------------------- */

static int osp_dns__type_code(const char *t)
{
    static const struct {
        const char *name;
        int code;
    } types[] = {
        { "A", 1 }, { "NS", 2 }, { "CNAME", 5 }, { "SOA", 6 }, { "PTR", 12 },
        { "MX", 15 }, { "TXT", 16 }, { "AAAA", 28 }, { "SRV", 33 }, { "SPF", 99 },
    };
    size_t i;

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcasecmp(t, types[i].name) == 0)
            return types[i].code;
    if (strncasecmp(t, "TYPE", 4) == 0 && isdigit((unsigned char)t[4]))
        return atoi(t + 4);
    return -1;
}

static void osp_dns__lower_nodot(char *s)
{
    size_t n;

    for (n = 0; s[n]; n++)
        s[n] = (char)tolower((unsigned char)s[n]);
    if (n > 1 && s[n - 1] == '.')
        s[n - 1] = '\0';
}

static osp_dns_timeout_name_t *osp_dns__timeout_find(const osp_dns_zone_t *z, const char *name)
{
    size_t i;

    for (i = 0; i < z->ntimeouts; i++)
        if (strcmp(z->timeouts[i].name, name) == 0)
            return &z->timeouts[i];
    return NULL;
}

void osp_dns_zone_free(osp_dns_zone_t **zp)
{
    osp_dns_zone_t *z = *zp;
    size_t i;

    if (z == NULL)
        return;
    for (i = 0; i < z->nrr; i++)
        free(z->rr[i]);
    free(z->rr);
    for (i = 0; i < z->ntimeouts; i++) {
        free(z->timeouts[i].name);
        free(z->timeouts[i].types);
    }
    free(z->timeouts);
    free(z);
    *zp = NULL;
}

size_t osp_dns_zone_count(const osp_dns_zone_t *zone)
{
    return zone ? zone->nrr + zone->ntimeouts : 0;
}

osp_dns_zone_t *osp_dns_zone_parse(const char *origin, const char *text, osp_buf_t *errors)
{
    osp_dns_zone_t *z = osp_calloc(1, sizeof(*z));
    struct ub_ctx *check = ub_ctx_create();
    const char *p = text;
    unsigned long lineno = 0;
    size_t before = errors->len, i;
    char **types_of = NULL;   /* per rr: owner (lower, no dot) */
    int *type_codes = NULL;

    if (check == NULL)
        osp_panic("ub_ctx_create failed");
    (void)ub_ctx_set_option(check, "local-zone:", ". static");
    while (*p) {
        size_t n = strcspn(p, "\n");
        char *line = osp_strndup(p, n), *s = line, *e, *tok[4];
        size_t ntok = 0;
        char *copy, *save = NULL, *t;

        p += n + (p[n] ? 1 : 0);
        lineno++;
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (*s == '\0' || *s == '#' || *s == ';') {
            free(line);
            continue;
        }
        copy = osp_strdup(s);
        for (t = strtok_r(copy, " \t", &save); t && ntok < 4; t = strtok_r(NULL, " \t", &save))
            tok[ntok++] = t;
        if (ntok == 2 && strcasecmp(tok[1], "TIMEOUT") == 0) {
            z->timeouts = osp_reallocarray(z->timeouts, z->ntimeouts + 1, sizeof(*z->timeouts));
            memset(&z->timeouts[z->ntimeouts], 0, sizeof(*z->timeouts));
            z->timeouts[z->ntimeouts].name = osp_strdup(tok[0]);
            osp_dns__lower_nodot(z->timeouts[z->ntimeouts].name);
            z->ntimeouts++;
        } else if (ntok < 3) {
            (void)osp_buf_printf(errors, "%s, line %lu: expected \"name TTL IN TYPE rdata\"\n",
                                 origin, lineno);
        } else {
            /* Owner names are absolute, with or without the final dot. */
            osp_buf_t rr;
            const char *rest = s + strlen(tok[0]);
            int code = -1, rc;
            size_t k;

            for (k = 1; k < ntok; k++) {
                if (isdigit((unsigned char)tok[k][0]) || strcasecmp(tok[k], "IN") == 0)
                    continue;
                code = osp_dns__type_code(tok[k]);
                break;
            }
            osp_buf_init(&rr, OSP_DNS_MAX_ZONE_LINE);
            (void)osp_buf_append_str(&rr, tok[0]);
            if (tok[0][strlen(tok[0]) - 1] != '.')
                (void)osp_buf_append_char(&rr, '.');
            (void)osp_buf_append_str(&rr, rest);
            if (code < 0) {
                (void)osp_buf_printf(errors, "%s, line %lu: unknown record type\n", origin,
                                     lineno);
            } else if ((rc = ub_ctx_data_add(check, osp_buf_cstr(&rr))) != 0) {
                (void)osp_buf_printf(errors, "%s, line %lu: %s\n", origin, lineno,
                                     ub_strerror(rc));
            } else {
                z->rr = osp_reallocarray(z->rr, z->nrr + 1, sizeof(char *));
                types_of = osp_reallocarray(types_of, z->nrr + 1, sizeof(char *));
                type_codes = osp_reallocarray(type_codes, z->nrr + 1, sizeof(int));
                types_of[z->nrr] = osp_strdup(tok[0]);
                osp_dns__lower_nodot(types_of[z->nrr]);
                type_codes[z->nrr] = code;
                z->rr[z->nrr++] = osp_buf_steal(&rr);
            }
            osp_buf_close(&rr);
        }
        free(copy);
        free(line);
    }
    /* For each TIMEOUT name, the types that do have records. */
    for (i = 0; i < z->nrr; i++) {
        osp_dns_timeout_name_t *tn = osp_dns__timeout_find(z, types_of[i]);
        if (tn) {
            tn->types = osp_reallocarray(tn->types, tn->ntypes + 1, sizeof(int));
            tn->types[tn->ntypes++] = type_codes[i];
        }
        free(types_of[i]);
    }
    free(types_of);
    free(type_codes);
    ub_ctx_delete(check);
    if (errors->len != before)
        osp_dns_zone_free(&z);
    return z;
}

osp_dns_zone_t *osp_dns_zone_load(const char *path, osp_buf_t *errors)
{
    FILE *fp = fopen(path, "r");
    osp_buf_t text;
    char chunk[8192];
    size_t got;
    osp_dns_zone_t *z;

    if (fp == NULL) {
        (void)osp_buf_printf(errors, "cannot open zone file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    osp_buf_init(&text, (size_t)256 * 1024 * 1024);
    while ((got = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
        if (osp_buf_append(&text, chunk, got) < 0) {
            (void)osp_buf_printf(errors, "zone file %s: too large\n", path);
            osp_buf_close(&text);
            fclose(fp);
            return NULL;
        }
    }
    fclose(fp);
    if (memchr(osp_buf_cstr(&text), '\0', text.len) != NULL) {
        (void)osp_buf_printf(errors, "zone file %s: NUL byte\n", path);
        osp_buf_close(&text);
        return NULL;
    }
    z = osp_dns_zone_parse(path, osp_buf_cstr(&text), errors);
    osp_buf_close(&text);
    return z;
}

/* ---- the resolver ------------------------------------------------------- */

static void osp_dns__unlink(osp_dns_t *dns, osp_dns_query_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        dns->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        dns->tail = q->prev;
    q->prev = q->next = NULL;
    dns->pending--;
}

static void osp_dns__query_free(osp_dns_query_t *q)
{
    free(q->name);
    free(q->cur);
    free(q);
}

static void osp_dns__timer_cb(uv_timer_t *t);

static void osp_dns__arm(osp_dns_t *dns)
{
    uint64_t now = uv_now(dns->loop), min = UINT64_MAX;
    osp_dns_query_t *q;

    for (q = dns->head; q; q = q->next)
        if (q->deadline < min)
            min = q->deadline;
    if (min == UINT64_MAX) {
        (void)uv_timer_stop(&dns->timer);
        return;
    }
    (void)uv_timer_start(&dns->timer, osp_dns__timer_cb, min > now ? min - now : 0, 0);
}

/* Deliver a result and forget the query. */
static void osp_dns__complete(osp_dns_query_t *q, const osp_dns_result_t *r)
{
    osp_dns_t *dns = q->dns;
    uint64_t now = uv_now(dns->loop);

    if (q->counted) {
        if (r->status == OSP_DNS_TEMPFAIL)
            osp_breaker_failure(&dns->breaker, now);
        else
            osp_breaker_success(&dns->breaker, now);
    }
    osp_dns__unlink(dns, q);
    q->cb(r, q->arg);
    osp_dns__query_free(q);
}

static void osp_dns__fail(osp_dns_query_t *q, const char *error)
{
    osp_dns_result_t r;

    memset(&r, 0, sizeof(r));
    r.status = OSP_DNS_TEMPFAIL;
    r.name = q->name;
    r.rrtype = q->rrtype;
    r.error = error;
    osp_dns__complete(q, &r);
}

static bool osp_dns__same_name(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la && a[la - 1] == '.')
        la--;
    if (lb && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

static int osp_dns__submit(osp_dns_query_t *q);

static void osp_dns__ub_cb(void *mydata, int err, struct ub_result *res)
{
    osp_dns_query_t *q = mydata;
    osp_dns_result_t r;

    q->in_ub = false;
    if (err != 0 || res == NULL) {
        if (res)
            ub_resolve_free(res);
        osp_dns__fail(q, err ? ub_strerror(err) : "resolver error");
        osp_dns__arm(q->dns);
        return;
    }
    memset(&r, 0, sizeof(r));
    r.name = q->name;
    r.rrtype = q->rrtype;
    if (res->rcode == 3) {
        r.status = OSP_DNS_NOTFOUND;
        r.nxdomain = true;
    } else if (res->rcode != 0) {
        r.status = OSP_DNS_TEMPFAIL;
        r.error = res->rcode == 2 ? "SERVFAIL" : res->rcode == 5 ? "REFUSED" : "DNS error";
    } else if (res->havedata) {
        size_t n = 0;
        while (res->data[n])
            n++;
        r.status = OSP_DNS_FOUND;
        r.n = n;
        r.data = (const uint8_t *const *)res->data;
        r.len = (const size_t *)NULL;
    } else if (res->canonname && !osp_dns__same_name(res->canonname, q->cur) &&
               q->rrtype != 5) {
        /* A CNAME that was not followed (local data): follow it. */
        if (++q->hops > OSP_DNS_MAX_CNAME) {
            r.status = OSP_DNS_TEMPFAIL;
            r.error = "CNAME chain too long";
        } else {
            free(q->cur);
            q->cur = osp_strdup(res->canonname);
            ub_resolve_free(res);
            if (osp_dns__submit(q) < 0)
                osp_dns__fail(q, "resolver error");
            osp_dns__arm(q->dns);
            return;
        }
    } else {
        r.status = OSP_DNS_NOTFOUND;
    }
    if (r.status == OSP_DNS_FOUND) {
        size_t i, *lens = osp_calloc(r.n + 1, sizeof(size_t));
        for (i = 0; i < r.n; i++)
            lens[i] = (size_t)res->len[i];
        r.len = lens;
        osp_dns__complete(q, &r);
        free(lens);
    } else {
        osp_dns__complete(q, &r);
    }
    ub_resolve_free(res);
}

static int osp_dns__submit(osp_dns_query_t *q)
{
    int rc = ub_resolve_async(q->dns->ctx, q->cur, q->rrtype, 1, q, osp_dns__ub_cb,
                              &q->async_id);

    if (rc != 0) {
        osp_warn("dns: ub_resolve_async %s: %s", q->cur, ub_strerror(rc));
        return -1;
    }
    q->in_ub = true;
    return 0;
}

static void osp_dns__timer_cb(uv_timer_t *t)
{
    osp_dns_t *dns = t->data;
    uint64_t now = uv_now(dns->loop);
    osp_dns_query_t *q, *next;

    for (q = dns->head; q; q = next) {
        next = q->next;
        if (q->deadline > now)
            continue;
        if (q->in_ub) {
            (void)ub_cancel(dns->ctx, q->async_id);
            q->in_ub = false;
        }
        /* The callback may cancel other queries: restart the walk. */
        osp_dns__fail(q, q->fail ? q->fail : "timeout");
        next = dns->head;
    }
    osp_dns__arm(dns);
}

static void osp_dns__poll_cb(uv_poll_t *p, int status, int events)
{
    osp_dns_t *dns = p->data;
    int rc;

    (void)events;
    if (status < 0) {
        osp_warn("dns: poll: %s", uv_strerror(status));
        return;
    }
    rc = ub_process(dns->ctx);
    if (rc != 0)
        osp_warn("dns: ub_process: %s", ub_strerror(rc));
    osp_dns__arm(dns);
}

static void osp_dns__close_cb(uv_handle_t *h)
{
    osp_dns_t *dns = h->data;

    if (--dns->closing == 0)
        free(dns);
}

osp_dns_t *osp_dns_create(uv_loop_t *loop, const osp_dns_conf_t *conf,
                          const osp_dns_zone_t *zone, osp_buf_t *errors)
{
    osp_dns_t *dns = osp_calloc(1, sizeof(*dns));
    size_t i;
    int rc;

    dns->loop = loop;
    dns->timeout_ms = conf->timeout_ms ? conf->timeout_ms : 5000;
    osp_breaker_init(&dns->breaker, &conf->breaker, "dns");
    dns->ctx = ub_ctx_create();
    if (dns->ctx == NULL)
        osp_panic("ub_ctx_create failed");
    /* Threads, not a forked process: we live in a threaded daemon. */
    if ((rc = ub_ctx_async(dns->ctx, 1)) != 0)
        goto ub_error;
    if (conf->zone_file && conf->zone_file[0]) {
        if (zone == NULL)
            osp_panic("osp_dns_create: zone_file set but no zone loaded");
        dns->zone = zone;
        /* Every name is local: nothing ever leaves the process. */
        if ((rc = ub_ctx_set_option(dns->ctx, "local-zone:", ". static")) != 0)
            goto ub_error;
        for (i = 0; i < zone->nrr; i++)
            if ((rc = ub_ctx_data_add(dns->ctx, zone->rr[i])) != 0)
                goto ub_error;
    } else if (conf->nforwarders > 0) {
        for (i = 0; i < conf->nforwarders; i++)
            if ((rc = ub_ctx_set_fwd(dns->ctx, conf->forwarders[i])) != 0) {
                (void)osp_buf_printf(errors, "DNS forwarder \"%s\": %s\n", conf->forwarders[i],
                                     ub_strerror(rc));
                ub_ctx_delete(dns->ctx);
                free(dns);
                return NULL;
            }
    } else if (conf->resolv_conf && conf->resolv_conf[0]) {
        if ((rc = ub_ctx_resolvconf(dns->ctx, conf->resolv_conf)) != 0) {
            (void)osp_buf_printf(errors, "DNS resolver file %s: %s\n", conf->resolv_conf,
                                 ub_strerror(rc));
            ub_ctx_delete(dns->ctx);
            free(dns);
            return NULL;
        }
    }
    (void)uv_timer_init(loop, &dns->timer);
    dns->timer.data = dns;
    if ((rc = uv_poll_init(loop, &dns->poll, ub_fd(dns->ctx))) != 0) {
        (void)osp_buf_printf(errors, "DNS: uv_poll_init: %s\n", uv_strerror(rc));
        ub_ctx_delete(dns->ctx);
        dns->ctx = NULL;
        /* Freed when the timer has closed (the caller runs the loop). */
        dns->closing = 1;
        uv_close((uv_handle_t *)&dns->timer, osp_dns__close_cb);
        return NULL;
    }
    dns->poll.data = dns;
    (void)uv_poll_start(&dns->poll, UV_READABLE, osp_dns__poll_cb);
    return dns;

ub_error:
    (void)osp_buf_printf(errors, "DNS resolver settings: %s\n", ub_strerror(rc));
    ub_ctx_delete(dns->ctx);
    free(dns);
    return NULL;
}

void osp_dns_free(osp_dns_t **dnsp)
{
    osp_dns_t *dns = *dnsp;
    osp_dns_query_t *q, *next;

    if (dns == NULL)
        return;
    *dnsp = NULL;
    for (q = dns->head; q; q = next) {
        next = q->next;
        if (q->in_ub)
            (void)ub_cancel(dns->ctx, q->async_id);
        osp_dns__query_free(q);
    }
    dns->head = dns->tail = NULL;
    dns->closing = 2;
    uv_close((uv_handle_t *)&dns->poll, osp_dns__close_cb);
    uv_close((uv_handle_t *)&dns->timer, osp_dns__close_cb);
    ub_ctx_delete(dns->ctx);
    dns->ctx = NULL;
}

static bool osp_dns__zone_timeout(const osp_dns_t *dns, const char *name, int rrtype)
{
    osp_dns_timeout_name_t *tn;
    char *key;
    size_t i;

    if (dns->zone == NULL || dns->zone->ntimeouts == 0)
        return false;
    key = osp_strdup(name);
    osp_dns__lower_nodot(key);
    tn = osp_dns__timeout_find(dns->zone, key);
    free(key);
    if (tn == NULL)
        return false;
    for (i = 0; i < tn->ntypes; i++)
        if (tn->types[i] == rrtype || tn->types[i] == 5)
            return false;
    return true;
}

osp_dns_query_t *osp_dns_query(osp_dns_t *dns, const char *name, int rrtype, osp_dns_cb cb,
                               void *arg)
{
    osp_dns_query_t *q = osp_calloc(1, sizeof(*q));
    uint64_t now = uv_now(dns->loop);

    q->dns = dns;
    q->name = osp_strdup(name);
    q->cur = osp_strdup(name);
    q->rrtype = rrtype;
    q->cb = cb;
    q->arg = arg;
    q->deadline = now + dns->timeout_ms;
    if (osp_dns__zone_timeout(dns, name, rrtype)) {
        q->fail = "timeout";
        q->deadline = now;
    } else if (!osp_breaker_allow(&dns->breaker, now)) {
        q->fail = "resolver unavailable (circuit breaker open)";
        q->deadline = now;
    } else {
        q->counted = true;
        if (osp_dns__submit(q) < 0) {
            q->fail = "resolver error";
            q->deadline = now;
        }
    }
    /* Append; the timer finds the earliest deadline. */
    q->prev = dns->tail;
    if (dns->tail)
        dns->tail->next = q;
    else
        dns->head = q;
    dns->tail = q;
    dns->pending++;
    osp_dns__arm(dns);
    return q;
}

void osp_dns_cancel(osp_dns_query_t **qp)
{
    osp_dns_query_t *q = *qp;

    if (q == NULL)
        return;
    *qp = NULL;
    if (q->in_ub)
        (void)ub_cancel(q->dns->ctx, q->async_id);
    osp_dns__unlink(q->dns, q);
    osp_dns__arm(q->dns);
    osp_dns__query_free(q);
}

size_t osp_dns_pending(const osp_dns_t *dns)
{
    return dns->pending;
}

const osp_breaker_t *osp_dns_breaker(const osp_dns_t *dns)
{
    return &dns->breaker;
}

/* ---- rdata helpers -------------------------------------------------------- */

int osp_dns_rdata_name(const uint8_t *data, size_t len, size_t *off, char *out, size_t outsize,
                       bool lower)
{
    size_t o = *off, w = 0;

    if (outsize == 0)
        return -1;
    for (;;) {
        size_t l, i;
        if (o >= len)
            return -1;
        l = data[o++];
        if (l == 0)
            break;
        if (l > 63 || o + l > len)
            return -1;
        if (w > 0) {
            if (w + 1 >= outsize)
                return -1;
            out[w++] = '.';
        }
        for (i = 0; i < l; i++) {
            char c = (char)data[o + i];
            if (w + 1 >= outsize)
                return -1;
            out[w++] = lower ? (char)tolower((unsigned char)c) : c;
        }
        o += l;
    }
    out[w] = '\0';
    *off = o;
    return 0;
}

int osp_dns_rdata_txt(const uint8_t *data, size_t len, osp_buf_t *out)
{
    size_t o = 0;

    while (o < len) {
        size_t l = data[o++];
        if (o + l > len)
            return -1;
        if (osp_buf_append(out, data + o, l) < 0)
            return -1;
        o += l;
    }
    return 0;
}
