/* policyd_dns: the spf, dnsbl and rdns checks, and one resolver per worker. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_dns.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_ratelimit.h"
#include "osp_net.h"
#include "osp_spf.h"
#include "policyd_dns.h"
#include "policyd_proto.h"

#define POLICYD_DNSBL_MAX_SITES (POLICYD_MAX_PENDING / 2)  /* an A and a TXT each */
#define POLICYD_SPF_CACHE 512       /* transactions remembered per worker */
#define POLICYD_DNS_TEXT_MAX 200    /* DNS text (TXT, exp=) in one reply */

struct policyd_dnschecks {
    char *spf_action[OSP_SPF_NRESULTS];  /* by result; pass is DUNNO */
    bool spf_header;
    char *receiver;                      /* first of policyd_my_names, or NULL */
    policyd_dnsbl_site_t *sites;
    size_t nsites;
    int threshold;
    char *dnsbl_action;
    char *rdns_missing, *rdns_unconfirmed;
    bool spf_on, dnsbl_on, rdns_on;      /* in the pipeline */
    /* Resolver settings, owned copies. */
    char *zone_file, *resolv_conf;
    char **forwarders;
    osp_dns_conf_t dnsconf;
    osp_dns_zone_t *zone;
};

/* One message's SPF result on one worker; refcounted (cache + defaults). */
typedef struct policyd_spf_entry {
    char *key;
    uint64_t hash;               /* of key */
    unsigned refs;
    enum osp_spf_result result;
    char *domain, *explanation;
    char *prepend;               /* "PREPEND Received-SPF: ..." */
    bool prepended;              /* answered once already */
} policyd_spf_entry_t;

typedef struct policyd_dnsw {
    osp_dns_t *dns;              /* NULL: none on this worker */
    policyd_spf_entry_t *cache[POLICYD_SPF_CACHE];
    size_t next;                 /* ring position */
} policyd_dnsw_t;

/* The state of the worker thread running (policyd_dns_worker_init). */
static _Thread_local policyd_dnsw_t *policyd_dns__worker;

/* ---- helpers ------------------------------------------------------------ */

static bool policyd_dns__is_dunno(const char *action)
{
    return strcasecmp(action, "DUNNO") == 0;
}

void policyd_dns_expand(const char *tmpl, const char *const *vars, char *out, size_t outsize)
{
    size_t o = 0;
    const char *p = tmpl;

    if (outsize == 0)
        return;
    while (*p && o + 1 < outsize) {
        const char *name, *val = NULL;
        size_t nlen, i;

        if (p[0] != '%' || p[1] != '{') {
            out[o++] = *p++;
            continue;
        }
        name = p + 2;
        for (nlen = 0; isalnum((unsigned char)name[nlen]) || name[nlen] == '_'; nlen++)
            ;
        for (i = 0; name[nlen] == '}' && vars && vars[i]; i += 2)
            if (strlen(vars[i]) == nlen && strncmp(vars[i], name, nlen) == 0) {
                val = vars[i + 1] ? vars[i + 1] : "";
                break;
            }
        if (val == NULL) {
            out[o++] = *p++;
            continue;
        }
        for (i = 0; val[i] && i < POLICYD_DNS_TEXT_MAX && o + 1 < outsize; i++) {
            unsigned char ch = (unsigned char)val[i];
            out[o++] = (ch < 0x20 || ch > 0x7e) ? '?' : (char)ch;
        }
        p = name + nlen + 1;
    }
    out[o] = '\0';
}

static bool policyd_dns__named(const osp_config_t *cfg, const char *check)
{
    size_t n, i;
    const char *const *v = osp_config_list(cfg, "policyd_checks", &n);

    for (i = 0; i < n; i++)
        if (strcmp(v[i], check) == 0)
            return true;
    return false;
}

static bool policyd_dns__sasl(const policyd_eval_t *ev)
{
    return policy_request_get(ev->req, POLICY_A_SASL_USERNAME)[0] != '\0';
}

/* ---- DNSBL site syntax ----------------------------------------------------- */

static int policyd_dns__num(const char **pp, unsigned *v_r)
{
    const char *p = *pp;
    unsigned v = 0;

    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (unsigned)(*p++ - '0');
        if (v > 255)
            return -1;
    }
    *pp = p;
    *v_r = v;
    return 0;
}

static int policyd_dns__filter_parse(const char *f, policyd_dnsbl_site_t *site, char *err,
                                     size_t errsize)
{
    const char *p = f;
    int k;

    memset(site->octets, 0, sizeof(site->octets));
    for (k = 0; k < 4; k++) {
        unsigned lo, hi, v;

        if (*p == '[') {
            p++;
            for (;;) {
                if (policyd_dns__num(&p, &lo) < 0)
                    goto bad;
                hi = lo;
                if (p[0] == '.' && p[1] == '.') {
                    p += 2;
                    if (policyd_dns__num(&p, &hi) < 0 || hi < lo)
                        goto bad;
                }
                for (v = lo; v <= hi; v++)
                    site->octets[k][v >> 3] |= (uint8_t)(1u << (v & 7));
                if (*p == ';') {
                    p++;
                    continue;
                }
                if (*p == ']') {
                    p++;
                    break;
                }
                goto bad;
            }
        } else {
            if (policyd_dns__num(&p, &lo) < 0)
                goto bad;
            site->octets[k][lo >> 3] |= (uint8_t)(1u << (lo & 7));
        }
        if (k < 3 && *p++ != '.')
            goto bad;
    }
    if (*p != '\0')
        goto bad;
    site->filter = true;
    return 0;
bad:
    osp_snprintf(err, errsize, "bad answer filter \"%s\" (want e.g. 127.0.0.[2..11;20])", f);
    return -1;
}

int policyd_dnsbl_site_parse(const char *text, policyd_dnsbl_site_t *site, char *err,
                             size_t errsize)
{
    char buf[512];
    char *star, *eq, *end;
    size_t i, n;
    long w = 1;

    memset(site, 0, sizeof(*site));
    site->weight = 1;
    if (osp_strlcpy(buf, text, sizeof(buf)) >= sizeof(buf)) {
        osp_snprintf(err, errsize, "site too long");
        return -1;
    }
    star = strrchr(buf, '*');
    if (star) {
        *star = '\0';
        errno = 0;
        w = strtol(star + 1, &end, 10);
        if (star[1] == '\0' || *end != '\0' || errno != 0 || w < -1000 || w > 1000) {
            osp_snprintf(err, errsize, "bad weight \"%s\" in \"%s\" (want -1000..1000)",
                         star + 1, text);
            return -1;
        }
    }
    site->weight = (int)w;
    eq = strchr(buf, '=');
    if (eq) {
        *eq = '\0';
        if (policyd_dns__filter_parse(eq + 1, site, err, errsize) < 0)
            return -1;
    }
    n = strlen(buf);
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
    if (n == 0 || n >= sizeof(site->zone) || buf[0] == '.' || strstr(buf, "..")) {
        osp_snprintf(err, errsize, "bad DNSBL zone in \"%s\"", text);
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_') {
            osp_snprintf(err, errsize, "bad DNSBL zone in \"%s\"", text);
            return -1;
        }
        site->zone[i] = (char)tolower(ch);
    }
    site->zone[n] = '\0';
    return 0;
}

bool policyd_dnsbl_site_match(const policyd_dnsbl_site_t *site, const uint8_t a[4])
{
    int k;

    if (!site->filter)
        return true;
    for (k = 0; k < 4; k++)
        if (!(site->octets[k][a[k] >> 3] & (1u << (a[k] & 7))))
            return false;
    return true;
}

/* ---- configuration ------------------------------------------------------- */

static const struct {
    enum osp_spf_result result;
    const char *param;
} policyd_spf_params[] = {
    { OSP_SPF_FAIL, "policyd_spf_fail_action" },
    { OSP_SPF_SOFTFAIL, "policyd_spf_softfail_action" },
    { OSP_SPF_NEUTRAL, "policyd_spf_neutral_action" },
    { OSP_SPF_NONE, "policyd_spf_none_action" },
    { OSP_SPF_PERMERROR, "policyd_spf_permerror_action" },
    { OSP_SPF_TEMPERROR, "policyd_spf_temperror_action" },
};

policyd_dnschecks_t *policyd_dnschecks_create(const osp_config_t *cfg, osp_buf_t *errors)
{
    policyd_dnschecks_t *dc = osp_calloc(1, sizeof(*dc));
    size_t before = errors->len, n, i;
    const char *const *v;
    osp_dns_conf_t tmp;

    for (i = 0; i < OSP_SPF_NRESULTS; i++)
        dc->spf_action[i] = osp_strdup("DUNNO");
    for (i = 0; i < sizeof(policyd_spf_params) / sizeof(policyd_spf_params[0]); i++) {
        free(dc->spf_action[policyd_spf_params[i].result]);
        dc->spf_action[policyd_spf_params[i].result] =
            policy_action_param(cfg, policyd_spf_params[i].param, errors);
    }
    dc->spf_header = osp_config_bool(cfg, "policyd_spf_header");
    v = osp_config_list(cfg, "policyd_my_names", &n);
    if (n > 0)
        dc->receiver = osp_strdup(v[0]);
    v = osp_config_list(cfg, "policyd_dnsbl_sites", &n);
    if (n > POLICYD_DNSBL_MAX_SITES) {
        (void)osp_buf_printf(errors, "parameter \"policyd_dnsbl_sites\": %zu sites, at most %d\n",
                             n, POLICYD_DNSBL_MAX_SITES);
        n = POLICYD_DNSBL_MAX_SITES;
    }
    dc->sites = osp_calloc(n ? n : 1, sizeof(*dc->sites));
    for (i = 0; i < n; i++) {
        char err[300];
        if (policyd_dnsbl_site_parse(v[i], &dc->sites[dc->nsites], err, sizeof(err)) < 0)
            (void)osp_buf_printf(errors, "parameter \"policyd_dnsbl_sites\": %s\n", err);
        else
            dc->nsites++;
    }
    dc->threshold = (int)osp_config_int(cfg, "policyd_dnsbl_threshold");
    dc->dnsbl_action = policy_action_param(cfg, "policyd_dnsbl_action", errors);
    dc->rdns_missing = policy_action_param(cfg, "policyd_rdns_missing_action", errors);
    dc->rdns_unconfirmed = policy_action_param(cfg, "policyd_rdns_unconfirmed_action",
                                                     errors);
    dc->spf_on = osp_config_bool(cfg, "policyd_spf") || policyd_dns__named(cfg, "spf");
    dc->dnsbl_on = dc->nsites > 0 || policyd_dns__named(cfg, "dnsbl");
    dc->rdns_on = !policyd_dns__is_dunno(dc->rdns_missing) ||
                  !policyd_dns__is_dunno(dc->rdns_unconfirmed) ||
                  policyd_dns__named(cfg, "rdns");

    /* Resolver settings, copied: workers make their resolvers later. */
    osp_dns_conf_load(&tmp, cfg);
    dc->dnsconf = tmp;
    dc->zone_file = osp_strdup(tmp.zone_file ? tmp.zone_file : "");
    dc->resolv_conf = osp_strdup(tmp.resolv_conf ? tmp.resolv_conf : "");
    dc->forwarders = osp_calloc(tmp.nforwarders + 1, sizeof(char *));
    for (i = 0; i < tmp.nforwarders; i++)
        dc->forwarders[i] = osp_strdup(tmp.forwarders[i]);
    dc->dnsconf.zone_file = dc->zone_file;
    dc->dnsconf.resolv_conf = dc->resolv_conf;
    dc->dnsconf.forwarders = (const char *const *)dc->forwarders;
    if (policyd_dnschecks_need_resolver(dc) && dc->zone_file[0]) {
        osp_buf_t e;
        osp_buf_init(&e, 64 * 1024);
        dc->zone = osp_dns_zone_load(dc->zone_file, &e);
        if (dc->zone == NULL)
            (void)osp_buf_printf(errors, "parameter \"dns_zone_file\": %s%s", osp_buf_cstr(&e),
                                 e.len && e.data[e.len - 1] == '\n' ? "" : "\n");
        osp_buf_close(&e);
    }
    if (errors->len > before) {
        policyd_dnschecks_free(&dc);
        return NULL;
    }
    return dc;
}

void policyd_dnschecks_free(policyd_dnschecks_t **dcp)
{
    policyd_dnschecks_t *dc = *dcp;
    size_t i;

    if (dc == NULL)
        return;
    *dcp = NULL;
    for (i = 0; i < OSP_SPF_NRESULTS; i++)
        free(dc->spf_action[i]);
    free(dc->receiver);
    free(dc->sites);
    free(dc->dnsbl_action);
    free(dc->rdns_missing);
    free(dc->rdns_unconfirmed);
    for (i = 0; dc->forwarders && dc->forwarders[i]; i++)
        free(dc->forwarders[i]);
    free(dc->forwarders);
    free(dc->zone_file);
    free(dc->resolv_conf);
    osp_dns_zone_free(&dc->zone);
    free(dc);
}

bool policyd_dnschecks_need_resolver(const policyd_dnschecks_t *dc)
{
    return dc->spf_on || dc->dnsbl_on;
}

int policyd_dnschecks_probe(const policyd_dnschecks_t *dc, uv_loop_t *loop, osp_buf_t *errors)
{
    osp_dns_t *dns;

    if (!policyd_dnschecks_need_resolver(dc))
        return 0;
    dns = osp_dns_create(loop, &dc->dnsconf, dc->zone, errors);
    if (dns == NULL)
        return -1;
    osp_dns_free(&dns);
    return 0;
}

void policyd_dnschecks_register(policyd_dnschecks_t *dc)
{
    policyd_check_def_t r = { "rdns", policyd_dns_rdns_run, NULL, dc };
    policyd_check_def_t b = { "dnsbl", policyd_dns_dnsbl_run, NULL, dc };
    policyd_check_def_t s = { "spf", policyd_dns_spf_run, NULL, dc };

    /* Cheapest first; all before greylisting, which should see only good mail. */
    policyd_checks_register(&r, dc->rdns_on ? 1 : 0);
    policyd_checks_register(&b, dc->dnsbl_on ? 1 : 0);
    policyd_checks_register(&s, dc->spf_on ? 1 : 0);
}

/* ---- per worker ---------------------------------------------------------- */

static void policyd_spf__unref(policyd_spf_entry_t *e)
{
    if (e == NULL || --e->refs > 0)
        return;
    free(e->key);
    free(e->domain);
    free(e->explanation);
    free(e->prepend);
    free(e);
}

void *policyd_dns_worker_init(uv_loop_t *loop, void *arg)
{
    policyd_dnschecks_t *dc = arg;
    policyd_dnsw_t *w = osp_calloc(1, sizeof(*w));

    if (policyd_dnschecks_need_resolver(dc)) {
        osp_buf_t err;
        osp_buf_init(&err, 4096);
        w->dns = osp_dns_create(loop, &dc->dnsconf, dc->zone, &err);
        if (w->dns == NULL)
            osp_error("DNS resolver of this worker: %s; its spf and dnsbl checks are skipped",
                      osp_buf_cstr(&err));
        osp_buf_close(&err);
    }
    policyd_dns__worker = w;
    return w;
}

void policyd_dns_worker_fini(void *state, void *arg)
{
    policyd_dnsw_t *w = state;
    size_t i;

    (void)arg;
    if (w == NULL)
        return;
    osp_dns_free(&w->dns);
    for (i = 0; i < POLICYD_SPF_CACHE; i++)
        policyd_spf__unref(w->cache[i]);
    if (policyd_dns__worker == w)
        policyd_dns__worker = NULL;
    free(w);
}

/* ---- spf ------------------------------------------------------------------ */

typedef struct policyd_spf_op {
    policyd_eval_t *ev;
    const policyd_dnschecks_t *dc;
    policyd_dnsw_t *w;
    unsigned id;
    osp_spf_check_t *check;
    char *key;                     /* "" when there is no instance: not cached */
    osp_ip_t ip;
    char *sender, *helo;
    bool helo_identity;
} policyd_spf_op_t;

static void policyd_spf__op_free(policyd_spf_op_t *op)
{
    free(op->key);
    free(op->sender);
    free(op->helo);
    free(op);
}

static policyd_spf_entry_t *policyd_spf__find(policyd_dnsw_t *w, const char *key)
{
    uint64_t h = osp_ratelimit_hash(key, strlen(key));
    size_t i;

    for (i = 0; i < POLICYD_SPF_CACHE; i++)
        if (w->cache[i] && w->cache[i]->hash == h && strcmp(w->cache[i]->key, key) == 0)
            return w->cache[i];
    return NULL;
}

static void policyd_spf__default_done(void *arg, bool used)
{
    policyd_spf_entry_t *e = arg;

    if (used)
        e->prepended = true;
    policyd_spf__unref(e);
}

/* Answer an SPF result for this request: its action, or the header later. */
static enum policyd_step policyd_spf__apply(policyd_eval_t *ev, const policyd_dnschecks_t *dc,
                                            policyd_spf_entry_t *e)
{
    const char *action = dc->spf_action[e->result];

    if (!policyd_dns__is_dunno(action)) {
        const char *vars[] = {
            "client_address", policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS),
            "spf_result", osp_spf_result_name(e->result),
            "spf_domain", e->domain,
            "spf_explanation", e->explanation,
            NULL,
        };
        char out[POLICYD_ACTION_MAX];

        policyd_dns_expand(action, vars, out, sizeof(out));
        policyd_eval_decide(ev, "spf", policyd_eval_action_copy(ev, out), false,
                            "SPF %s for %s", osp_spf_result_name(e->result),
                            e->domain[0] ? e->domain : "(no domain)");
        return POLICYD_STOP;
    }
    if (dc->spf_header && !e->prepended && e->prepend) {
        e->refs++;
        policyd_eval_default(ev, "spf", e->prepend, policyd_spf__default_done, e);
    }
    return POLICYD_NEXT;
}

static void policyd_spf__done_cb(const osp_spf_outcome_t *o, void *arg)
{
    policyd_spf_op_t *op = arg;
    policyd_eval_t *ev = op->ev;
    policyd_dnsw_t *w = op->w;
    policyd_spf_entry_t *e = osp_calloc(1, sizeof(*e));
    osp_spf_request_t req;
    osp_buf_t b;
    char ipbuf[OSP_IP_STRLEN];
    unsigned id = op->id;

    op->check = NULL;
    e->key = osp_strdup(op->key);
    e->hash = osp_ratelimit_hash(e->key, strlen(e->key));
    e->refs = 1;
    e->result = o->result;
    e->domain = osp_strdup(o->domain ? o->domain : "");
    if (o->explanation && o->explanation[0]) {
        e->explanation = osp_strdup(o->explanation);
    } else {
        char text[600], ip[OSP_IP_STRLEN];
        osp_snprintf(text, sizeof(text), "%s does not designate %s as permitted sender",
                     e->domain[0] ? e->domain : "the domain",
                     osp_ip_format(&op->ip, ip, sizeof(ip)));
        e->explanation = osp_strdup(text);
    }
    memset(&req, 0, sizeof(req));
    req.ip = op->ip;
    req.sender = op->sender;
    req.helo = op->helo;
    req.helo_identity = op->helo_identity;
    osp_buf_init(&b, POLICYD_ACTION_MAX - 1);
    if (osp_buf_printf(&b, "PREPEND Received-SPF: ") == 0) {
        osp_spf_received(&b, &req, o, op->dc->receiver);
        /* Too long for a reply line: no header rather than a cut one. */
        if (b.len < POLICYD_ACTION_MAX - 1 && !strchr(osp_buf_cstr(&b), '\n'))
            e->prepend = osp_strdup(osp_buf_cstr(&b));
    }
    osp_buf_close(&b);
    osp_debug(1, "spf: client=%s identity=%s domain=%s result=%s (%s)",
              osp_ip_format(&op->ip, ipbuf, sizeof(ipbuf)),
              o->identity ? o->identity : "", e->domain, osp_spf_result_name(o->result),
              o->comment ? o->comment : "");
    if (op->key[0]) {
        size_t slot = w->next;
        policyd_spf__unref(w->cache[slot]);
        w->cache[slot] = e;
        w->next = (slot + 1) % POLICYD_SPF_CACHE;
        e->refs++;   /* the cache's */
    }
    (void)policyd_spf__apply(ev, op->dc, e);
    policyd_spf__unref(e);
    policyd_spf__op_free(op);
    policyd_eval_resume(ev, id);
}

static void policyd_spf__cancel(void *arg)
{
    policyd_spf_op_t *op = arg;

    osp_spf_check_cancel(&op->check);
    policyd_spf__op_free(op);
}

enum policyd_step policyd_dns_spf_run(policyd_eval_t *ev, void *ctx)
{
    const policyd_dnschecks_t *dc = ctx;
    policyd_dnsw_t *w = policyd_dns__worker;
    const policy_request_t *r = ev->req;
    const char *instance = policy_request_get(r, POLICY_A_INSTANCE);
    const char *client = policy_request_get(r, POLICY_A_CLIENT_ADDRESS);
    const char *sender = policy_request_get(r, POLICY_A_SENDER);
    const char *helo = policy_request_get(r, POLICY_A_HELO_NAME);
    policyd_spf_op_t *op;
    policyd_spf_entry_t *e;
    osp_spf_request_t req;
    osp_spf_check_t *h;
    osp_buf_t key;
    osp_ip_t ip;

    if (strcasecmp(policy_request_get(r, POLICY_A_PROTOCOL_STATE), "RCPT") != 0 ||
        policyd_dns__sasl(ev) || osp_ip_parse(client, &ip) < 0)
        return POLICYD_NEXT;
    if (w == NULL || w->dns == NULL)
        return POLICYD_NEXT;
    osp_buf_init(&key, 4096);
    if (instance[0])
        (void)osp_buf_printf(&key, "%s\n%s\n%s\n%s", instance, client, sender, helo);
    e = key.len ? policyd_spf__find(w, osp_buf_cstr(&key)) : NULL;
    if (e) {
        osp_buf_close(&key);
        return policyd_spf__apply(ev, dc, e);
    }
    op = osp_calloc(1, sizeof(*op));
    op->ev = ev;
    op->dc = dc;
    op->w = w;
    op->key = osp_strdup(osp_buf_cstr(&key));
    osp_buf_close(&key);
    op->ip = ip;
    op->sender = osp_strdup(sender);
    op->helo = osp_strdup(helo);
    op->helo_identity = sender[0] == '\0';
    memset(&req, 0, sizeof(req));
    req.ip = ip;
    req.sender = op->sender;
    req.helo = op->helo;
    req.receiver = dc->receiver;
    req.helo_identity = op->helo_identity;
    op->id = policyd_eval_pending_add(ev, policyd_spf__cancel, op);
    /* NULL: done_cb already ran and freed op. */
    h = osp_spf_check_start(w->dns, &req, policyd_spf__done_cb, op);
    if (h)
        op->check = h;
    return POLICYD_PENDING;
}

/* ---- dnsbl ------------------------------------------------------------------ */

typedef struct policyd_dnsbl_req policyd_dnsbl_req_t;

typedef struct policyd_dnsbl_op {
    policyd_dnsbl_req_t *q;
    size_t site;
    unsigned id;
    osp_dns_query_t *query;
} policyd_dnsbl_op_t;

struct policyd_dnsbl_req {
    policyd_eval_t *ev;
    const policyd_dnschecks_t *dc;
    policyd_dnsw_t *w;
    unsigned outstanding;
    int score;
    char rev[OSP_IP_REVERSE_LEN];
    char names[512];             /* lists that listed the client (positive weight) */
    char reason[POLICYD_DNS_TEXT_MAX + 1];
    char answer[64];             /* the first listing A record, for a reason without TXT */
    bool txt_started;
    policyd_dnsbl_op_t a[POLICYD_DNSBL_MAX_SITES];
    policyd_dnsbl_op_t txt[POLICYD_DNSBL_MAX_SITES];
};

static void policyd_dnsbl__decide(policyd_dnsbl_req_t *q)
{
    const char *reason = q->reason[0] ? q->reason : q->answer;
    char why[sizeof(q->answer) + 16];
    const char *vars[] = {
        "client_address", policy_request_get(q->ev->req, POLICY_A_CLIENT_ADDRESS),
        "dnsbl_domains", q->names,
        "dnsbl_reason", reason,
        NULL,
    };
    char out[POLICYD_ACTION_MAX];

    if (q->score < q->dc->threshold || q->names[0] == '\0')
        return;
    if (!q->reason[0]) {
        osp_snprintf(why, sizeof(why), "listed (%s)", q->answer);
        vars[5] = why;
        reason = why;
    }
    policyd_dns_expand(q->dc->dnsbl_action, vars, out, sizeof(out));
    policyd_eval_decide(q->ev, "dnsbl", policyd_eval_action_copy(q->ev, out), false,
                        "client %s listed by %s (score %d): %.100s",
                        policy_request_get(q->ev->req, POLICY_A_CLIENT_ADDRESS), q->names,
                        q->score, reason);
}

/* One lookup is over; the last one decides.  Resumes the eval. */
static void policyd_dnsbl__op_done(policyd_dnsbl_op_t *op)
{
    policyd_dnsbl_req_t *q = op->q;
    policyd_eval_t *ev = q->ev;
    unsigned id = op->id;

    if (--q->outstanding == 0) {
        policyd_dnsbl__decide(q);
        free(q);
    }
    policyd_eval_resume(ev, id);
}

static void policyd_dnsbl__cancel(void *arg)
{
    policyd_dnsbl_op_t *op = arg;
    policyd_dnsbl_req_t *q = op->q;

    osp_dns_cancel(&op->query);
    if (--q->outstanding == 0)
        free(q);
}

static void policyd_dnsbl__txt_cb(const osp_dns_result_t *r, void *arg)
{
    policyd_dnsbl_op_t *op = arg;
    policyd_dnsbl_req_t *q = op->q;

    op->query = NULL;
    if (r->status == OSP_DNS_FOUND && r->n > 0 && q->reason[0] == '\0') {
        osp_buf_t t;
        size_t i, o = 0;

        osp_buf_init(&t, 4096);
        if (osp_dns_rdata_txt(r->data[0], r->len[0], &t) == 0)
            for (i = 0; i < t.len && o < POLICYD_DNS_TEXT_MAX; i++) {
                unsigned char ch = (unsigned char)t.data[i];
                q->reason[o++] = (ch < 0x20 || ch > 0x7e) ? '?' : (char)ch;
            }
        q->reason[o] = '\0';
        osp_buf_close(&t);
    }
    policyd_dnsbl__op_done(op);
}

static void policyd_dnsbl__start(policyd_dnsbl_req_t *q, policyd_dnsbl_op_t *op, size_t site,
                                 int rrtype, osp_dns_cb cb)
{
    char name[OSP_IP_REVERSE_LEN + 260];

    osp_snprintf(name, sizeof(name), "%s.%s", q->rev, q->dc->sites[site].zone);
    op->q = q;
    op->site = site;
    op->query = osp_dns_query(q->w->dns, name, rrtype, cb, op);
    q->outstanding++;
    op->id = policyd_eval_pending_add(q->ev, policyd_dnsbl__cancel, op);
}

static void policyd_dnsbl__a_cb(const osp_dns_result_t *r, void *arg)
{
    policyd_dnsbl_op_t *op = arg;
    policyd_dnsbl_req_t *q = op->q;
    const policyd_dnsbl_site_t *site = &q->dc->sites[op->site];
    size_t i;

    op->query = NULL;
    if (r->status == OSP_DNS_TEMPFAIL)
        osp_debug(1, "dnsbl: %s: %s", r->name, r->error ? r->error : "temporary failure");
    for (i = 0; r->status == OSP_DNS_FOUND && i < r->n; i++) {
        const uint8_t *a = r->data[i];
        if (r->len[i] != 4 || !policyd_dnsbl_site_match(site, a))
            continue;
        q->score += site->weight;
        if (site->weight > 0) {
            size_t n = strlen(q->names);
            osp_snprintf(q->names + n, sizeof(q->names) - n, "%s%s", n ? ", " : "",
                         site->zone);
            if (q->answer[0] == '\0')
                osp_snprintf(q->answer, sizeof(q->answer), "%u.%u.%u.%u", a[0], a[1], a[2],
                             a[3]);
            /* The reason text of the first list that listed the client. */
            if (!q->txt_started) {
                q->txt_started = true;
                policyd_dnsbl__start(q, &q->txt[op->site], op->site, OSP_DNS_TXT,
                                     policyd_dnsbl__txt_cb);
            }
        }
        break;
    }
    policyd_dnsbl__op_done(op);
}

enum policyd_step policyd_dns_dnsbl_run(policyd_eval_t *ev, void *ctx)
{
    const policyd_dnschecks_t *dc = ctx;
    policyd_dnsw_t *w = policyd_dns__worker;
    policyd_dnsbl_req_t *q;
    osp_ip_t ip;
    size_t i;

    if (dc->nsites == 0 || w == NULL || w->dns == NULL || policyd_dns__sasl(ev) ||
        osp_ip_parse(policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS), &ip) < 0)
        return POLICYD_NEXT;
    q = osp_calloc(1, sizeof(*q));
    q->ev = ev;
    q->dc = dc;
    q->w = w;
    if (osp_ip_reverse_name(&ip, q->rev, sizeof(q->rev)) < 0) {
        free(q);
        return POLICYD_NEXT;
    }
    for (i = 0; i < dc->nsites; i++)
        policyd_dnsbl__start(q, &q->a[i], i, OSP_DNS_A, policyd_dnsbl__a_cb);
    return POLICYD_PENDING;
}

/* ---- rdns ------------------------------------------------------------------- */

enum policyd_step policyd_dns_rdns_run(policyd_eval_t *ev, void *ctx)
{
    const policyd_dnschecks_t *dc = ctx;
    const char *name = policy_request_get(ev->req, POLICY_A_CLIENT_NAME);
    const char *rname = policy_request_get(ev->req, POLICY_A_REVERSE_CLIENT_NAME);
    const char *action, *why;
    char out[POLICYD_ACTION_MAX];

    if (policyd_dns__sasl(ev) || rname[0] == '\0')
        return POLICYD_NEXT;   /* Postfix older than 2.5 does not say */
    if (strcasecmp(rname, "unknown") == 0) {
        action = dc->rdns_missing;
        why = "client has no reverse DNS name";
    } else if (strcasecmp(name, "unknown") == 0) {
        action = dc->rdns_unconfirmed;
        why = "reverse DNS name of the client is not forward-confirmed";
    } else {
        return POLICYD_NEXT;
    }
    if (policyd_dns__is_dunno(action))
        return POLICYD_NEXT;
    {
        const char *vars[] = {
            "client_address", policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS),
            "client_name", rname,
            NULL,
        };
        policyd_dns_expand(action, vars, out, sizeof(out));
    }
    policyd_eval_decide(ev, "rdns", policyd_eval_action_copy(ev, out), false, "%s", why);
    return POLICYD_STOP;
}
