/* policyd_checks: lists, HELO checks and rate limits, run as a pipeline. */
#include "config.h"

#include <stdatomic.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_addr.h"
#include "osp_config.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "osp_ratelimit.h"
#include "policyd_checks.h"

/* A list entry's origin: file index (8 bits) and line number (24 bits). */
#define POLICYD_ORIGIN(file, line) ((uint32_t)(file) << 24 | ((uint32_t)(line) & 0xffffffu))
#define POLICYD_MAX_LIST_FILES 255

/* Files named by the lists, for "FILE, line N" in reasons. */
typedef struct policyd_files {
    char **path;
    size_t n;
} policyd_files_t;

typedef struct policyd_cidrlist {
    osp_cidrset_t *set;       /* owned */
    policyd_files_t files;
} policyd_cidrlist_t;

typedef struct policyd_addr_entry {
    char *pat;                /* owned, lower case */
    uint32_t origin;
} policyd_addr_entry_t;

struct policyd_addrlist {
    policyd_addr_entry_t *v;  /* owned; sorted by pat once loading is over */
    size_t n;
    bool sorted;
    policyd_files_t files;
};

enum policyd_rl_key {
    RL_KEY_SASL_USERNAME,
    RL_KEY_SENDER,
    RL_KEY_SENDER_DOMAIN,
    RL_KEY_CLIENT_ADDRESS,
    RL_KEY_RECIPIENT_DOMAIN,
};

static const char *const policyd_rl_key_names[] = {
    "sasl_username", "sender", "sender_domain", "client_address", "recipient_domain", NULL
};

typedef struct policyd_rl_rule {
    char *text;               /* owned: the rule as configured */
    enum policyd_rl_key key;
    bool recipients;          /* count recipients, not messages */
    char *action;             /* owned: "DEFER 4.7.1 text" or "HOLD text" */
    osp_ratelimit_t *rl;      /* owned */
    atomic_bool full_warned;  /* "table full" logged; cleared when a count fits again */
} policyd_rl_rule_t;

/* The list files: read-only once loaded, swapped as a whole on reload. */
typedef struct policyd_lists {
    atomic_uint refs;
    policyd_cidrlist_t client_allow, client_block;
    policyd_addrlist_t *sender_allow, *sender_block, *recipient_allow, *recipient_block;
} policyd_lists_t;

struct policyd_checks {
    policyd_check_def_t *pipe;    /* owned array */
    size_t npipe;
    policyd_lists_t *lists;       /* one reference held here; lists_mu guards the pointer */
    pthread_mutex_t lists_mu;
    char **my_names;              /* owned, lower case, no trailing dot */
    size_t nmy_names;
    policyd_rl_rule_t *rules;
    size_t nrules;
    policyd_rate_share_t share;   /* cluster-wide counts; zeroed: none */
    /* Actions, owned copies validated at start-up. */
    char *allow_action;
    char *client_block_action, *sender_block_action, *recipient_block_action;
    char *helo_invalid_action, *helo_ours_action, *helo_mismatch_action;
};

const char *const policyd_check_verdict_names[] = {
    "client_allow", "client_block", "sender_allow", "sender_block",
    "recipient_allow", "recipient_block", "helo_invalid", "helo_ours",
    "helo_mismatch", "rate_limit", "rdns", "dnsbl", "spf", "database_lists", "greylist", NULL
};

/* ---- small helpers ------------------------------------------------------ */

static void policyd__lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Append a printable copy of peer bytes, at most max of them. */
static void policyd__printable(osp_buf_t *b, const char *s, size_t max)
{
    size_t n = strlen(s);

    (void)osp_buf_append_printable(b, s, n > max ? max : n);
}

static const char *policyd__file(const policyd_files_t *f, uint32_t origin)
{
    size_t i = origin >> 24;

    return i < f->n ? f->path[i] : "?";
}

static int policyd__file_add(policyd_files_t *f, const char *path, osp_buf_t *errors)
{
    if (f->n >= POLICYD_MAX_LIST_FILES) {
        (void)osp_buf_printf(errors, "%s: more than %d list files\n", path,
                             POLICYD_MAX_LIST_FILES);
        return -1;
    }
    f->path = osp_reallocarray(f->path, f->n + 1, sizeof(char *));
    f->path[f->n++] = osp_strdup(path);
    return (int)(f->n - 1);
}

static void policyd__files_free(policyd_files_t *f)
{
    size_t i;

    for (i = 0; i < f->n; i++)
        free(f->path[i]);
    OSP_FREE(&f->path);
    f->n = 0;
}

/*
 * Read the list file line by line: cb gets each entry (comments and blanks
 * removed, trimmed) with its line number and returns NULL or a problem.
 */
typedef const char *(*policyd_line_fn)(void *ctx, const char *entry, uint32_t origin,
                                       char *err, size_t errsize);

static int policyd__read_list(const char *path, policyd_files_t *files, policyd_line_fn cb,
                              void *ctx, osp_buf_t *errors, osp_buf_t *warnings)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL, err[256];
    size_t cap = 0;
    ssize_t got;
    unsigned long lineno = 0;
    int fi;

    if (fp == NULL) {
        (void)osp_buf_printf(errors, "cannot open list file %s: %s\n", path, strerror(errno));
        return -1;
    }
    fi = policyd__file_add(files, path, errors);
    if (fi < 0) {
        fclose(fp);
        return -1;
    }
    while ((got = getline(&line, &cap, fp)) >= 0) {
        char *s = line, *e, *hash;
        const char *problem;

        lineno++;
        if (memchr(line, '\0', (size_t)got) != NULL) {
            (void)osp_buf_printf(warnings, "%s, line %lu: NUL byte; line skipped\n", path,
                                 lineno);
            continue;
        }
        hash = strchr(s, '#');
        if (hash)
            *hash = '\0';
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (*s == '\0')
            continue;
        if (lineno > 0xffffff) {
            (void)osp_buf_printf(warnings, "%s, line %lu: file too long; rest skipped\n",
                                 path, lineno);
            break;
        }
        if (strcspn(s, " \t") != strlen(s)) {
            problem = "more than one field (only the pattern belongs here)";
        } else {
            err[0] = '\0';
            problem = cb(ctx, s, POLICYD_ORIGIN(fi, lineno), err, sizeof(err));
        }
        if (problem) {
            osp_buf_t pr;
            osp_buf_init(&pr, 300);
            policyd__printable(&pr, s, 200);
            /* osp_cidr_parse already quotes the input (escaped) in its message. */
            if (strstr(problem, osp_buf_cstr(&pr)) != NULL)
                (void)osp_buf_printf(warnings, "%s, line %lu: %s; line skipped\n", path,
                                     lineno, problem);
            else
                (void)osp_buf_printf(warnings, "%s, line %lu: %s: \"%s\"; line skipped\n",
                                     path, lineno, problem, osp_buf_cstr(&pr));
            osp_buf_close(&pr);
        }
    }
    free(line);
    fclose(fp);
    return 0;
}

/* ---- client address lists ---------------------------------------------- */

static const char *policyd__cidr_line(void *ctx, const char *entry, uint32_t origin,
                                      char *err, size_t errsize)
{
    policyd_cidrlist_t *l = ctx;
    osp_cidr_t cidr;

    if (osp_cidr_parse(entry, &cidr, err, errsize) < 0)
        return err;
    (void)osp_cidrset_add(l->set, &cidr, origin);
    return NULL;
}

static int policyd__cidrlist_load(policyd_cidrlist_t *l, const osp_config_t *cfg,
                                  const char *param, osp_buf_t *errors, osp_buf_t *warnings)
{
    size_t n, i;
    const char *const *files = osp_config_list(cfg, param, &n);
    int rc = 0;

    l->set = osp_cidrset_create();
    for (i = 0; i < n; i++) {
        osp_buf_t e;
        osp_buf_init(&e, 4096);
        if (policyd__read_list(files[i], &l->files, policyd__cidr_line, l, &e, warnings) < 0) {
            (void)osp_buf_printf(errors, "parameter \"%s\": %s", param, osp_buf_cstr(&e));
            rc = -1;
        }
        osp_buf_close(&e);
    }
    return rc;
}

static void policyd__cidrlist_close(policyd_cidrlist_t *l)
{
    osp_cidrset_free(&l->set);
    policyd__files_free(&l->files);
}

/* ---- address lists ----------------------------------------------------- */

policyd_addrlist_t *policyd_addrlist_create(void)
{
    return osp_calloc(1, sizeof(policyd_addrlist_t));
}

void policyd_addrlist_free(policyd_addrlist_t **lp)
{
    policyd_addrlist_t *l = *lp;
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->n; i++)
        free(l->v[i].pat);
    free(l->v);
    policyd__files_free(&l->files);
    free(l);
    *lp = NULL;
}

static const char *policyd__addr_line(void *ctx, const char *entry, uint32_t origin,
                                      char *err, size_t errsize)
{
    policyd_addrlist_t *l = ctx;
    char dom[OSP_DOMAIN_BUFSIZE];
    const char *at, *derr = NULL, *d;
    osp_buf_t pat;

    osp_buf_init(&pat, 1024);
    if (strcmp(entry, "<>") == 0) {
        (void)osp_buf_append_str(&pat, "<>");
    } else if ((at = strrchr(entry, '@')) != NULL) {
        size_t i;
        if (at == entry) {
            osp_buf_close(&pat);
            return "empty local part (write the bare domain to match a whole domain)";
        }
        for (i = 0; entry + i < at; i++)
            if ((unsigned char)entry[i] < 0x21 || entry[i] == 0x7f) {
                osp_buf_close(&pat);
                return "control character in local part";
            }
        (void)osp_buf_append(&pat, entry, (size_t)(at - entry + 1));
        if (at[1] != '\0') {
            if (osp_domain_normalize(at + 1, dom, sizeof(dom), &derr) < 0) {
                osp_snprintf(err, errsize, "bad domain: %s", derr);
                osp_buf_close(&pat);
                return err;
            }
            (void)osp_buf_append_str(&pat, dom);
        }
    } else {
        d = entry[0] == '.' ? entry + 1 : entry;
        if (osp_domain_normalize(d, dom, sizeof(dom), &derr) < 0) {
            osp_snprintf(err, errsize, "bad domain: %s", derr);
            osp_buf_close(&pat);
            return err;
        }
        if (entry[0] == '.')
            (void)osp_buf_append_char(&pat, '.');
        (void)osp_buf_append_str(&pat, dom);
    }
    l->v = osp_reallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n].pat = osp_buf_steal(&pat);
    policyd__lower(l->v[l->n].pat);
    l->v[l->n].origin = origin;
    l->n++;
    l->sorted = false;
    osp_buf_close(&pat);
    return NULL;
}

static int policyd__entry_cmp(const void *a, const void *b)
{
    const policyd_addr_entry_t *x = a, *y = b;
    int c = strcmp(x->pat, y->pat);

    /* Equal patterns: the first one loaded wins the lookup. */
    if (c == 0)
        return x->origin < y->origin ? -1 : x->origin > y->origin;
    return c;
}

int policyd_addrlist_load(policyd_addrlist_t *l, const char *path, osp_buf_t *errors,
                          osp_buf_t *warnings)
{
    int rc = policyd__read_list(path, &l->files, policyd__addr_line, l, errors, warnings);

    if (l->n > 1)
        qsort(l->v, l->n, sizeof(*l->v), policyd__entry_cmp);
    l->sorted = true;
    return rc;
}

static const policyd_addr_entry_t *policyd__addr_find(const policyd_addrlist_t *l,
                                                      const char *key)
{
    size_t lo = 0, hi = l->n;

    /* Lower bound, so duplicates give the first loaded. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(l->v[mid].pat, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < l->n && strcmp(l->v[lo].pat, key) == 0 ? &l->v[lo] : NULL;
}

bool policyd_addrlist_lookup(const policyd_addrlist_t *l, const char *addr, char *why,
                             size_t whysize)
{
    const policyd_addr_entry_t *e = NULL;
    char *key, *at, *d;
    size_t len;

    if (l == NULL || l->n == 0)
        return false;
    if (!l->sorted)
        osp_panic("policyd_addrlist_lookup: list not sorted");
    len = strlen(addr);
    if (len == 0) {
        e = policyd__addr_find(l, "<>");
    } else {
        key = osp_malloc(len + 2);
        memcpy(key, addr, len + 1);
        policyd__lower(key);
        /* A trailing dot on the domain does not matter. */
        if (len > 1 && key[len - 1] == '.' && strchr(key, '@'))
            key[--len] = '\0';
        e = policyd__addr_find(l, key);
        at = strrchr(key, '@');
        if (e == NULL && at && at[1]) {
            /* The domain itself, then its parents ".b.example.com", ".example.com". */
            e = policyd__addr_find(l, at + 1);
            for (d = strchr(at + 1, '.'); e == NULL && d; d = strchr(d + 1, '.'))
                e = policyd__addr_find(l, d);
        }
        if (e == NULL && at) {
            at[1] = '\0';
            e = policyd__addr_find(l, key);
        }
        free(key);
    }
    if (e == NULL)
        return false;
    if (why)
        osp_snprintf(why, whysize, "%s, line %u: %s", policyd__file(&l->files, e->origin),
                     (unsigned)(e->origin & 0xffffff), e->pat);
    return true;
}

static int policyd__addrlist_load_param(policyd_addrlist_t **lp, const osp_config_t *cfg,
                                        const char *param, osp_buf_t *errors,
                                        osp_buf_t *warnings)
{
    size_t n, i;
    const char *const *files = osp_config_list(cfg, param, &n);
    int rc = 0;

    *lp = policyd_addrlist_create();
    for (i = 0; i < n; i++) {
        osp_buf_t e;
        osp_buf_init(&e, 4096);
        if (policyd_addrlist_load(*lp, files[i], &e, warnings) < 0) {
            (void)osp_buf_printf(errors, "parameter \"%s\": %s", param, osp_buf_cstr(&e));
            rc = -1;
        }
        osp_buf_close(&e);
    }
    return rc;
}

/* ---- evaluation machinery ---------------------------------------------- */

/* The default action's owner learns whether it was answered; once. */
static void policyd_eval__default_done(policyd_eval_t *ev, bool used)
{
    policyd_default_fn fn = ev->default_done;

    ev->default_done = NULL;
    if (fn)
        fn(ev->default_arg, used);
}

static void policyd__lists_put(policyd_lists_t **lp);

static void policyd_eval__finish(policyd_eval_t *ev)
{
    ev->active = false;
    policyd__lists_put(&ev->lists);
    if (ev->default_action[0]) {
        bool used = !ev->decided;
        if (used) {
            ev->verdict.check = ev->default_check;
            ev->verdict.action = ev->default_action;
        }
        policyd_eval__default_done(ev, used);
    }
    ev->done_cb(ev, ev->data);
}

/* Run checks from ev->next until one stops, one is pending, or none is left. */
static void policyd_eval__run(policyd_eval_t *ev)
{
    const policyd_checks_t *c = ev->checks;

    ev->running = true;
    while (ev->next < c->npipe) {
        const policyd_check_def_t *d = &c->pipe[ev->next++];
        enum policyd_step st;

        if (d->run == NULL)
            continue;
        st = d->run(ev, d->ctx);
        switch (st) {
        case POLICYD_NEXT:
            if (ev->decided)
                osp_panic("check %s decided but returned NEXT", d->name);
            continue;
        case POLICYD_STOP:
            if (!ev->decided)
                osp_panic("check %s returned STOP without a verdict", d->name);
            ev->running = false;
            policyd_eval__finish(ev);
            return;
        case POLICYD_PENDING:
            if (ev->pending == 0) {
                /* Everything already completed inside run(). */
                if (ev->decided) {
                    ev->running = false;
                    policyd_eval__finish(ev);
                    return;
                }
                continue;
            }
            ev->running = false;
            return;
        default:
            osp_panic("check %s returned %d", d->name, (int)st);
        }
    }
    ev->running = false;
    policyd_eval__finish(ev);
}

void policyd_eval_start(policyd_eval_t *ev, const policyd_checks_t *checks,
                        const policy_request_t *req, uint64_t now_ms,
                        policyd_eval_done_fn done_cb, void *data)
{
    size_t i;

    if (ev->active)
        osp_panic("policyd_eval_start: evaluation already active");
    memset(ev, 0, sizeof(*ev));
    ev->checks = checks;
    ev->req = req;
    ev->now_ms = now_ms;
    ev->done_cb = done_cb;
    ev->data = data;
    ev->active = true;
    ev->verdict.action = "DUNNO";
    if (strcasecmp(policy_request_get(req, POLICY_A_PROTOCOL_STATE), "END-OF-MESSAGE") == 0) {
        for (i = 0; i < checks->npipe; i++)
            if (checks->pipe[i].account)
                checks->pipe[i].account(ev, checks->pipe[i].ctx);
        policyd_eval__finish(ev);
        return;
    }
    policyd_eval__run(ev);
}

void policyd_eval_decide(policyd_eval_t *ev, const char *check, const char *action,
                         bool allow, const char *fmt, ...)
{
    va_list ap;

    if (ev->decided)
        return;   /* the first verdict wins (parallel operations) */
    ev->decided = true;
    ev->verdict.check = check;
    ev->verdict.action = action;
    ev->verdict.allow = allow;
    va_start(ap, fmt);
    vsnprintf(ev->verdict.reason, sizeof(ev->verdict.reason), fmt, ap);
    va_end(ap);
}

unsigned policyd_eval_pending_add(policyd_eval_t *ev, policyd_cancel_fn cancel, void *arg)
{
    unsigned i;

    if (!ev->active)
        osp_panic("policyd_eval_pending_add: evaluation not active");
    for (i = 0; i < POLICYD_MAX_PENDING; i++)
        if (!ev->cancel[i].busy)
            break;
    if (i == POLICYD_MAX_PENDING)
        osp_panic("policyd_eval_pending_add: more than %d operations", POLICYD_MAX_PENDING);
    ev->cancel[i].fn = cancel;
    ev->cancel[i].arg = arg;
    ev->cancel[i].busy = true;
    ev->pending++;
    return i;
}

void policyd_eval_resume(policyd_eval_t *ev, unsigned op)
{
    if (!ev->active || op >= POLICYD_MAX_PENDING || !ev->cancel[op].busy)
        osp_panic("policyd_eval_resume: operation %u is not pending", op);
    ev->cancel[op].busy = false;
    ev->pending--;
    if (ev->pending > 0 || ev->running)
        return;
    if (ev->decided)
        policyd_eval__finish(ev);
    else
        policyd_eval__run(ev);
}

void policyd_eval_cancel(policyd_eval_t *ev)
{
    unsigned i;

    if (!ev->active)
        return;
    ev->active = false;
    for (i = 0; i < POLICYD_MAX_PENDING; i++) {
        if (ev->cancel[i].busy) {
            ev->cancel[i].busy = false;
            if (ev->cancel[i].fn)
                ev->cancel[i].fn(ev->cancel[i].arg);
        }
    }
    ev->pending = 0;
    policyd__lists_put(&ev->lists);
    policyd_eval__default_done(ev, false);
}

const char *policyd_eval_action_copy(policyd_eval_t *ev, const char *action)
{
    osp_strlcpy(ev->action_buf, action, sizeof(ev->action_buf));
    return ev->action_buf;
}

void policyd_eval_default(policyd_eval_t *ev, const char *check, const char *action,
                          policyd_default_fn done, void *arg)
{
    if (ev->default_action[0])
        osp_panic("policyd_eval_default: a default action is already set");
    osp_strlcpy(ev->default_action, action, sizeof(ev->default_action));
    ev->default_check = check;
    ev->default_done = done;
    ev->default_arg = arg;
}

/* ---- checks ------------------------------------------------------------ */

static enum policyd_step policyd__client_list(policyd_eval_t *ev, const policyd_cidrlist_t *l,
                                              const char *check, const char *action, bool allow)
{
    const char *ca = policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS);
    osp_ip_t ip;
    uint32_t origin;
    char buf[OSP_IP_STRLEN];

    if (osp_cidrset_count(l->set) == 0 || osp_ip_parse(ca, &ip) < 0)
        return POLICYD_NEXT;
    if (osp_cidrset_lookup(l->set, &ip, &origin, NULL) != OSP_CIDRSET_FOUND)
        return POLICYD_NEXT;
    policyd_eval_decide(ev, check, action, allow, "client address %s listed in %s, line %u",
                        osp_ip_format(&ip, buf, sizeof(buf)),
                        policyd__file(&l->files, origin), (unsigned)(origin & 0xffffff));
    return POLICYD_STOP;
}

/* A reference to the current lists; policyd__lists_put drops it. */
static policyd_lists_t *policyd__lists_get(const policyd_checks_t *c)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&c->lists_mu;
    policyd_lists_t *l;

    pthread_mutex_lock(mu);
    l = c->lists;
    atomic_fetch_add(&l->refs, 1);
    pthread_mutex_unlock(mu);
    return l;
}

/* The request's lists: one reference per evaluation, however many list checks run. */
static const policyd_lists_t *policyd__eval_lists(policyd_eval_t *ev)
{
    if (ev->lists == NULL)
        ev->lists = policyd__lists_get(ev->checks);
    return ev->lists;
}

static void policyd__lists_put(policyd_lists_t **lp)
{
    policyd_lists_t *l = *lp;

    *lp = NULL;
    if (l == NULL || atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    policyd__cidrlist_close(&l->client_allow);
    policyd__cidrlist_close(&l->client_block);
    policyd_addrlist_free(&l->sender_allow);
    policyd_addrlist_free(&l->sender_block);
    policyd_addrlist_free(&l->recipient_allow);
    policyd_addrlist_free(&l->recipient_block);
    free(l);
}

static enum policyd_step policyd__check_client_allow(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const policyd_lists_t *l = policyd__eval_lists(ev);

    return policyd__client_list(ev, &l->client_allow, "client_allow", c->allow_action, true);
}

static enum policyd_step policyd__check_client_block(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const policyd_lists_t *l = policyd__eval_lists(ev);

    return policyd__client_list(ev, &l->client_block, "client_block",
                                c->client_block_action, false);
}

static enum policyd_step policyd__addr_list(policyd_eval_t *ev, const policyd_addrlist_t *l,
                                            enum policy_attr a, const char *check,
                                            const char *action, bool allow)
{
    char why[600];
    osp_buf_t b;

    /* No recipient before RCPT; no sender attribute before MAIL. */
    if (!policy_request_has(ev->req, a))
        return POLICYD_NEXT;
    if (a == POLICY_A_RECIPIENT && policy_request_get(ev->req, a)[0] == '\0')
        return POLICYD_NEXT;
    if (!policyd_addrlist_lookup(l, policy_request_get(ev->req, a), why, sizeof(why)))
        return POLICYD_NEXT;
    osp_buf_init(&b, 1024);
    policyd__printable(&b, policy_request_get(ev->req, a), 256);
    (void)osp_buf_append_str(&b, "> listed in ");
    policyd__printable(&b, why, 400);
    policyd_eval_decide(ev, check, action, allow, "%s <%s",
                        a == POLICY_A_SENDER ? "sender" : "recipient", osp_buf_cstr(&b));
    osp_buf_close(&b);
    return POLICYD_STOP;
}

static enum policyd_step policyd__check_sender_allow(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const policyd_lists_t *l = policyd__eval_lists(ev);

    return policyd__addr_list(ev, l->sender_allow, POLICY_A_SENDER, "sender_allow",
                              c->allow_action, true);
}

static enum policyd_step policyd__check_sender_block(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const policyd_lists_t *l = policyd__eval_lists(ev);

    return policyd__addr_list(ev, l->sender_block, POLICY_A_SENDER, "sender_block",
                              c->sender_block_action, false);
}

static enum policyd_step policyd__check_recipient_allow(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const policyd_lists_t *l = policyd__eval_lists(ev);

    return policyd__addr_list(ev, l->recipient_allow, POLICY_A_RECIPIENT, "recipient_allow",
                              c->allow_action, true);
}

static enum policyd_step policyd__check_recipient_block(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const policyd_lists_t *l = policyd__eval_lists(ev);

    return policyd__addr_list(ev, l->recipient_block, POLICY_A_RECIPIENT, "recipient_block",
                              c->recipient_block_action, false);
}

static enum policyd_step policyd__check_helo(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    const char *helo = policy_request_get(ev->req, POLICY_A_HELO_NAME);
    const char *problem = NULL;
    osp_ip_t hip, cip, sip;
    bool is_ip = false;
    size_t len = strlen(helo), i;
    osp_buf_t ph;

    if (len == 0)
        return POLICYD_NEXT;
    osp_buf_init(&ph, 300);
    policyd__printable(&ph, helo, 255);
    if (helo[0] == '[') {
        if (osp_ip_parse(helo, &hip) < 0)
            problem = "malformed address literal";
        else
            is_ip = true;
    } else if (osp_ip_parse(helo, &hip) == 0) {
        is_ip = true;
    } else if (!osp_domain_valid(helo, len > 0 && helo[len - 1] == '.' ? len - 1 : len,
                                 OSP_DOMAIN_ALLOW_UNDERSCORE, &problem)) {
        if (problem == NULL)
            problem = "invalid host name";
    }
    if (problem) {
        policyd_eval_decide(ev, "helo_invalid", c->helo_invalid_action, false,
                            "HELO %s: %s", osp_buf_cstr(&ph), problem);
        osp_buf_close(&ph);
        return POLICYD_STOP;
    }
    if (is_ip) {
        bool have_c = osp_ip_parse(policy_request_get(ev->req, POLICY_A_CLIENT_ADDRESS),
                                   &cip) == 0;
        bool have_s = osp_ip_parse(policy_request_get(ev->req, POLICY_A_SERVER_ADDRESS),
                                   &sip) == 0;
        (void)osp_ip_unmap(&hip);
        if (have_c)
            (void)osp_ip_unmap(&cip);
        if (have_s)
            (void)osp_ip_unmap(&sip);
        if (have_s && osp_ip_equal(&hip, &sip) && !(have_c && osp_ip_equal(&hip, &cip))) {
            policyd_eval_decide(ev, "helo_ours", c->helo_ours_action, false,
                                "HELO %s is our own address", osp_buf_cstr(&ph));
            osp_buf_close(&ph);
            return POLICYD_STOP;
        }
        if (have_c && !osp_ip_equal(&hip, &cip)) {
            char cbuf[OSP_IP_STRLEN];
            policyd_eval_decide(ev, "helo_mismatch", c->helo_mismatch_action, false,
                                "HELO %s does not match client address %s",
                                osp_buf_cstr(&ph), osp_ip_format(&cip, cbuf, sizeof(cbuf)));
            osp_buf_close(&ph);
            return POLICYD_STOP;
        }
    } else {
        size_t n = len > 0 && helo[len - 1] == '.' ? len - 1 : len;
        for (i = 0; i < c->nmy_names; i++) {
            if (strlen(c->my_names[i]) == n && strncasecmp(c->my_names[i], helo, n) == 0) {
                policyd_eval_decide(ev, "helo_ours", c->helo_ours_action, false,
                                    "HELO %s is one of our names", osp_buf_cstr(&ph));
                osp_buf_close(&ph);
                return POLICYD_STOP;
            }
        }
    }
    osp_buf_close(&ph);
    return POLICYD_NEXT;
}

/* The key of a rule for this request into out; false when it has none. */
static bool policyd__rl_key(const policyd_rl_rule_t *r, const policy_request_t *req,
                            osp_buf_t *out)
{
    const char *v, *at;
    osp_ip_t ip;
    char buf[OSP_IP_STRLEN];

    switch (r->key) {
    case RL_KEY_SASL_USERNAME:
        v = policy_request_get(req, POLICY_A_SASL_USERNAME);
        if (*v == '\0')
            return false;
        (void)osp_buf_append_str(out, v);
        return true;
    case RL_KEY_SENDER:
        v = policy_request_get(req, POLICY_A_SENDER);
        if (*v == '\0')
            return false;
        (void)osp_buf_append_str(out, v);
        policyd__lower(out->data);
        return true;
    case RL_KEY_SENDER_DOMAIN:
    case RL_KEY_RECIPIENT_DOMAIN:
        v = policy_request_get(req, r->key == RL_KEY_SENDER_DOMAIN ? POLICY_A_SENDER
                                                                   : POLICY_A_RECIPIENT);
        at = strrchr(v, '@');
        if (at == NULL || at[1] == '\0')
            return false;
        (void)osp_buf_append_str(out, at + 1);
        policyd__lower(out->data);
        if (out->len > 1 && out->data[out->len - 1] == '.')
            osp_buf_truncate(out, out->len - 1);
        return true;
    case RL_KEY_CLIENT_ADDRESS:
        if (osp_ip_parse(policy_request_get(req, POLICY_A_CLIENT_ADDRESS), &ip) < 0)
            return false;
        (void)osp_ip_unmap(&ip);
        (void)osp_buf_append_str(out, osp_ip_format(&ip, buf, sizeof(buf)));
        return true;
    }
    osp_panic("policyd__rl_key: bad key type %d", (int)r->key);
}

static void policyd__window_text(uint64_t ms, char *buf, size_t size)
{
    if (ms % 3600000 == 0)
        osp_snprintf(buf, size, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        osp_snprintf(buf, size, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        osp_snprintf(buf, size, "%llus", (unsigned long long)(ms / 1000));
    else
        osp_snprintf(buf, size, "%llums", (unsigned long long)ms);
}

static enum policyd_step policyd__check_rate(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    size_t i;
    osp_buf_t key;

    osp_buf_init(&key, 1024);
    for (i = 0; i < c->nrules; i++) {
        const policyd_rl_rule_t *r = &c->rules[i];
        bool first = false;
        char win[32];
        osp_buf_t pk;
        uint64_t n = 1;

        osp_buf_reset(&key);
        if (!policyd__rl_key(r, ev->req, &key))
            continue;
        if (c->share.remote)
            n += c->share.remote(c->share.ctx, r->text, key.data, key.len,
                                 osp_ratelimit_window_ms(r->rl));
        if (osp_ratelimit_check(r->rl, osp_ratelimit_hash(key.data, key.len), n, ev->now_ms,
                                &first) == OSP_RATELIMIT_PASS)
            continue;
        policyd__window_text(osp_ratelimit_window_ms(r->rl), win, sizeof(win));
        osp_buf_init(&pk, 700);
        policyd__printable(&pk, key.data, 256);
        if (first)
            osp_warn("rate limit alert: %s=%s reached %llu %s per %s (rule %s); "
                     "further mail gets action=%s until it drops below the limit",
                     policyd_rl_key_names[r->key], osp_buf_cstr(&pk),
                     (unsigned long long)osp_ratelimit_limit(r->rl),
                     r->recipients ? "recipients" : "messages", win, r->text, r->action);
        policyd_eval_decide(ev, "rate_limit", r->action, false, "%s=%s over %llu %s per %s",
                            policyd_rl_key_names[r->key], osp_buf_cstr(&pk),
                            (unsigned long long)osp_ratelimit_limit(r->rl),
                            r->recipients ? "recipients" : "messages", win);
        osp_buf_close(&pk);
        osp_buf_close(&key);
        return POLICYD_STOP;
    }
    osp_buf_close(&key);
    return POLICYD_NEXT;
}

static void policyd__account_rate(policyd_eval_t *ev, void *ctx)
{
    const policyd_checks_t *c = ctx;
    size_t i;
    osp_buf_t key;
    int64_t nrcpt = 0;

    if (osp_parse_int(policy_request_get(ev->req, POLICY_A_RECIPIENT_COUNT), &nrcpt) < 0 ||
        nrcpt < 1)
        nrcpt = 1;
    osp_buf_init(&key, 1024);
    for (i = 0; i < c->nrules; i++) {
        policyd_rl_rule_t *r = &c->rules[i];

        osp_buf_reset(&key);
        if (!policyd__rl_key(r, ev->req, &key))
            continue;
        if (osp_ratelimit_add(r->rl, osp_ratelimit_hash(key.data, key.len),
                              r->recipients ? (uint64_t)nrcpt : 1, ev->now_ms) < 0) {
            /* Once per episode, not once per message: a flood of new keys
             * must not become a flood of log lines. */
            if (!atomic_exchange(&r->full_warned, true))
                osp_warn("rate limit table full (rule %s): new keys are not counted "
                         "until old ones expire (policyd_rate_limit_max_keys)", r->text);
        } else if (atomic_load_explicit(&r->full_warned, memory_order_relaxed)) {
            atomic_store(&r->full_warned, false);
        }
        if (c->share.count)
            c->share.count(c->share.ctx, r->text, key.data, key.len,
                           osp_ratelimit_window_ms(r->rl), r->recipients ? (uint64_t)nrcpt : 1);
    }
    osp_buf_close(&key);
}

/* ---- construction -------------------------------------------------------- */

static const struct {
    const char *name;
    policyd_check_run_fn run;
    policyd_check_account_fn account;
} policyd__builtin[] = {
    { "client_allow", policyd__check_client_allow, NULL },
    { "client_block", policyd__check_client_block, NULL },
    { "sender_allow", policyd__check_sender_allow, NULL },
    { "sender_block", policyd__check_sender_block, NULL },
    { "recipient_allow", policyd__check_recipient_allow, NULL },
    { "recipient_block", policyd__check_recipient_block, NULL },
    { "helo", policyd__check_helo, NULL },
    { "rate_limit", policyd__check_rate, policyd__account_rate },
};

/*
 * KEY:LIMIT/WINDOW:messages|recipients[:DEFER|HOLD], e.g.
 * sasl_username:100/1h:messages:HOLD.
 */
static int policyd__rule_parse(policyd_rl_rule_t *r, const char *text, const char *reply_text,
                               size_t max_keys, char *err, size_t errsize)
{
    char *copy = osp_strdup(text), *f[5], *s = copy, *slash;
    size_t n = 0, i;
    int64_t limit = 0, window = 0;
    osp_buf_t act;

    memset(r, 0, sizeof(*r));
    while (n < 5) {
        f[n++] = s;
        s = strchr(s, ':');
        if (s == NULL)
            break;
        *s++ = '\0';
    }
    if (s != NULL || n < 3) {
        osp_snprintf(err, errsize, "expected KEY:LIMIT/WINDOW:messages|recipients[:DEFER|HOLD]");
        goto bad;
    }
    for (i = 0; policyd_rl_key_names[i]; i++)
        if (strcmp(f[0], policyd_rl_key_names[i]) == 0)
            break;
    if (policyd_rl_key_names[i] == NULL) {
        osp_snprintf(err, errsize, "unknown key \"%.64s\" (expected sasl_username, sender, "
                     "sender_domain, client_address or recipient_domain)", f[0]);
        goto bad;
    }
    r->key = (enum policyd_rl_key)i;
    slash = strchr(f[1], '/');
    if (slash == NULL) {
        osp_snprintf(err, errsize, "expected LIMIT/WINDOW, e.g. 100/1h");
        goto bad;
    }
    *slash = '\0';
    if (osp_parse_int(f[1], &limit) < 0 || limit < 1 || limit > 1000000000) {
        osp_snprintf(err, errsize, "limit \"%.32s\" is not a number from 1 to 1000000000", f[1]);
        goto bad;
    }
    if (osp_parse_duration_ms(slash + 1, &window) < 0 || window < 1000 ||
        window > INT64_C(31) * 86400 * 1000) {
        osp_snprintf(err, errsize, "window \"%.32s\" is not a duration from 1s to 31d",
                     slash + 1);
        goto bad;
    }
    if (strcmp(f[2], "messages") == 0) {
        r->recipients = false;
    } else if (strcmp(f[2], "recipients") == 0) {
        r->recipients = true;
    } else {
        osp_snprintf(err, errsize, "expected messages or recipients, not \"%.32s\"", f[2]);
        goto bad;
    }
    osp_buf_init(&act, 1024);
    if (n < 4 || strcasecmp(f[3], "DEFER") == 0) {
        (void)osp_buf_printf(&act, "DEFER 4.7.1 %s", reply_text);
    } else if (strcasecmp(f[3], "HOLD") == 0) {
        (void)osp_buf_printf(&act, "HOLD %s", reply_text);
    } else {
        osp_buf_close(&act);
        osp_snprintf(err, errsize, "action \"%.32s\" is not DEFER or HOLD", f[3]);
        goto bad;
    }
    r->action = osp_buf_steal(&act);
    osp_buf_close(&act);
    r->text = osp_strdup(text);
    r->rl = osp_ratelimit_create((uint64_t)limit, (uint64_t)window, max_keys);
    free(copy);
    return 0;
bad:
    free(copy);
    return -1;
}

/* Checks of other files, by name (policyd_checks_register). */
#define POLICYD_MAX_REGISTERED 16
static policyd_check_def_t policyd__ext[POLICYD_MAX_REGISTERED];
static int policyd__ext_place[POLICYD_MAX_REGISTERED];
static size_t policyd__next;

void policyd_checks_register(const policyd_check_def_t *def, int place)
{
    size_t i;

    for (i = 0; i < policyd__next; i++)
        if (strcmp(policyd__ext[i].name, def->name) == 0)
            break;
    if (i == POLICYD_MAX_REGISTERED)
        osp_panic("policyd_checks_register: more than %d checks", POLICYD_MAX_REGISTERED);
    policyd__ext[i] = *def;
    policyd__ext_place[i] = place;
    if (i == policyd__next)
        policyd__next++;
}

static bool policyd__registered(const char *name, policyd_check_def_t *d_r)
{
    size_t i;

    for (i = 0; i < policyd__next; i++)
        if (strcmp(policyd__ext[i].name, name) == 0) {
            *d_r = policyd__ext[i];
            return true;
        }
    return false;
}

static void policyd__pipe_add(policyd_checks_t *c, const policyd_check_def_t *d)
{
    c->pipe = osp_reallocarray(c->pipe, c->npipe + 1, sizeof(*c->pipe));
    c->pipe[c->npipe++] = *d;
}

/* Every list file named in cfg; unreadable files go to errors. */
static policyd_lists_t *policyd__lists_load(const osp_config_t *cfg, osp_buf_t *errors,
                                            osp_buf_t *warnings)
{
    policyd_lists_t *l = osp_calloc(1, sizeof(*l));

    atomic_init(&l->refs, 1);
    (void)policyd__cidrlist_load(&l->client_allow, cfg, "policyd_client_allow_files", errors,
                                 warnings);
    (void)policyd__cidrlist_load(&l->client_block, cfg, "policyd_client_block_files", errors,
                                 warnings);
    (void)policyd__addrlist_load_param(&l->sender_allow, cfg, "policyd_sender_allow_files",
                                       errors, warnings);
    (void)policyd__addrlist_load_param(&l->sender_block, cfg, "policyd_sender_block_files",
                                       errors, warnings);
    (void)policyd__addrlist_load_param(&l->recipient_allow, cfg,
                                       "policyd_recipient_allow_files", errors, warnings);
    (void)policyd__addrlist_load_param(&l->recipient_block, cfg,
                                       "policyd_recipient_block_files", errors, warnings);
    return l;
}

int policyd_checks_reload_lists(policyd_checks_t *c, const osp_config_t *cfg,
                                osp_buf_t *errors, osp_buf_t *warnings, size_t *entries_r)
{
    size_t before = errors->len;
    policyd_lists_t *l = policyd__lists_load(cfg, errors, warnings), *old;

    if (errors->len != before) {
        policyd__lists_put(&l);
        return -1;
    }
    if (entries_r)
        *entries_r = osp_cidrset_count(l->client_allow.set) +
                     osp_cidrset_count(l->client_block.set) + l->sender_allow->n +
                     l->sender_block->n + l->recipient_allow->n + l->recipient_block->n;
    pthread_mutex_lock(&c->lists_mu);
    old = c->lists;
    c->lists = l;
    pthread_mutex_unlock(&c->lists_mu);
    policyd__lists_put(&old);
    return 0;
}

policyd_checks_t *policyd_checks_create(const osp_config_t *cfg, osp_buf_t *errors,
                                        osp_buf_t *warnings)
{
    policyd_checks_t *c = osp_calloc(1, sizeof(*c));
    size_t before = errors->len, n, i, j;
    const char *const *v;
    const char *text = osp_config_str(cfg, "policyd_rate_limit_text");
    char err[256];

    c->allow_action = policy_action_param(cfg, "policyd_allow_action", errors);
    c->client_block_action = policy_action_param(cfg, "policyd_client_block_action", errors);
    c->sender_block_action = policy_action_param(cfg, "policyd_sender_block_action", errors);
    c->recipient_block_action = policy_action_param(cfg, "policyd_recipient_block_action",
                                                      errors);
    c->helo_invalid_action = policy_action_param(cfg, "policyd_helo_invalid_action", errors);
    c->helo_ours_action = policy_action_param(cfg, "policyd_helo_ours_action", errors);
    c->helo_mismatch_action = policy_action_param(cfg, "policyd_helo_mismatch_action",
                                                    errors);
    for (i = 0; text[i]; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            (void)osp_buf_printf(errors, "parameter \"policyd_rate_limit_text\": "
                                 "control character in text\n");
            break;
        }

    pthread_mutex_init(&c->lists_mu, NULL);
    c->lists = policyd__lists_load(cfg, errors, warnings);

    v = osp_config_list(cfg, "policyd_my_names", &n);
    c->my_names = osp_calloc(n + 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        char *s = osp_strdup(v[i]);
        size_t l = strlen(s);
        if (l > 0 && s[l - 1] == '.')
            s[l - 1] = '\0';
        policyd__lower(s);
        c->my_names[c->nmy_names++] = s;
    }

    v = osp_config_list(cfg, "policyd_rate_limits", &n);
    c->rules = osp_calloc(n + 1, sizeof(*c->rules));
    for (i = 0; i < n; i++) {
        if (policyd__rule_parse(&c->rules[c->nrules], v[i], text,
                                (size_t)osp_config_int(cfg, "policyd_rate_limit_max_keys"), err,
                                sizeof(err)) < 0) {
            osp_buf_t pr;
            osp_buf_init(&pr, 300);
            policyd__printable(&pr, v[i], 200);
            (void)osp_buf_printf(errors, "parameter \"policyd_rate_limits\": rule \"%s\": %s\n",
                                 osp_buf_cstr(&pr), err);
            osp_buf_close(&pr);
            continue;
        }
        c->nrules++;
    }

    v = osp_config_list(cfg, "policyd_checks", &n);
    for (i = 0; i < n; i++) {
        policyd_check_def_t d;
        for (j = 0; j < sizeof(policyd__builtin) / sizeof(policyd__builtin[0]); j++)
            if (strcmp(v[i], policyd__builtin[j].name) == 0)
                break;
        if (j == sizeof(policyd__builtin) / sizeof(policyd__builtin[0]) &&
            policyd__registered(v[i], &d)) {
            policyd__pipe_add(c, &d);
            continue;
        }
        if (j == sizeof(policyd__builtin) / sizeof(policyd__builtin[0])) {
            osp_buf_t pr;
            osp_buf_init(&pr, 300);
            policyd__printable(&pr, v[i], 64);
            (void)osp_buf_printf(errors, "parameter \"policyd_checks\": unknown check \"%s\" "
                                 "(known: client_allow, client_block, sender_allow, "
                                 "sender_block, recipient_allow, recipient_block, helo, "
                                 "rate_limit)\n", osp_buf_cstr(&pr));
            osp_buf_close(&pr);
            continue;
        }
        d.name = policyd__builtin[j].name;
        d.run = policyd__builtin[j].run;
        d.account = policyd__builtin[j].account;
        d.ctx = c;
        policyd__pipe_add(c, &d);
    }
    /* Registered checks enabled but not named: first or last. */
    for (j = 0; j < policyd__next; j++) {
        for (i = 0; i < c->npipe; i++)
            if (strcmp(c->pipe[i].name, policyd__ext[j].name) == 0)
                break;
        if (i < c->npipe || policyd__ext_place[j] == 0)
            continue;
        policyd__pipe_add(c, &policyd__ext[j]);
        if (policyd__ext_place[j] < 0) {
            memmove(c->pipe + 1, c->pipe, (c->npipe - 1) * sizeof(*c->pipe));
            c->pipe[0] = policyd__ext[j];
        }
    }
    if (c->nrules > 0) {
        for (i = 0; i < c->npipe; i++)
            if (strcmp(c->pipe[i].name, "rate_limit") == 0)
                break;
        if (i == c->npipe)
            (void)osp_buf_printf(warnings, "parameter \"policyd_rate_limits\" is set but "
                                 "\"rate_limit\" is not in policyd_checks: nothing is counted\n");
    }
    if (errors->len != before) {
        policyd_checks_free(&c);
        return NULL;
    }
    return c;
}

void policyd_checks_free(policyd_checks_t **cp)
{
    policyd_checks_t *c = *cp;
    size_t i;

    if (c == NULL)
        return;
    free(c->pipe);
    policyd__lists_put(&c->lists);
    pthread_mutex_destroy(&c->lists_mu);
    for (i = 0; i < c->nmy_names; i++)
        free(c->my_names[i]);
    free(c->my_names);
    for (i = 0; i < c->nrules; i++) {
        free(c->rules[i].text);
        free(c->rules[i].action);
        osp_ratelimit_free(&c->rules[i].rl);
    }
    free(c->rules);
    free(c->allow_action);
    free(c->client_block_action);
    free(c->sender_block_action);
    free(c->recipient_block_action);
    free(c->helo_invalid_action);
    free(c->helo_ours_action);
    free(c->helo_mismatch_action);
    free(c);
    *cp = NULL;
}

void policyd_checks_set_rate_share(policyd_checks_t *c, const policyd_rate_share_t *share)
{
    c->share = *share;
}

void policyd_checks_append(policyd_checks_t *c, const policyd_check_def_t *def)
{
    policyd__pipe_add(c, def);
}

size_t policyd_checks_count(const policyd_checks_t *c)
{
    return c->npipe;
}

const char *policyd_checks_name(const policyd_checks_t *c, size_t i)
{
    return i < c->npipe ? c->pipe[i].name : NULL;
}

size_t policyd_checks_ratelimit_keys(const policyd_checks_t *c)
{
    size_t i, n = 0;

    for (i = 0; i < c->nrules; i++)
        n += osp_ratelimit_count(c->rules[i].rl);
    return n;
}

void policyd_checks_expire(policyd_checks_t *c, uint64_t now_ms)
{
    size_t i;

    for (i = 0; i < c->nrules; i++)
        (void)osp_ratelimit_expire(c->rules[i].rl, now_ms);
}
