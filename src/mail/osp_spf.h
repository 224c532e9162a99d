/*
 * osp_spf: Sender Policy Framework (RFC 7208) evaluation, our own.
 *
 * libspf2 1.2.10 fails 61 of the 203 RFC 7208 tests and resolves
 * synchronously; the deviations (see doc/spf.md) sit inside its parser and
 * interpreter, where they cannot be corrected from outside, so Osprey
 * evaluates SPF itself.  libspf2 is not used.
 *
 * The evaluator is a pure function of the request and a cache of DNS
 * answers: run it; if it needs names it has not got, it says which, the
 * caller fetches them (in parallel, through osp_dns) and runs it again.
 * Every run starts from the beginning and walks the same path with more
 * answers, so the evaluation needs no saved control state, and tests can
 * feed answers by hand.
 *
 *   osp_spf_eval_t *e = osp_spf_eval_create(&req);
 *   while (osp_spf_eval_run(e) == OSP_SPF_NEED_DNS)
 *       for each osp_spf_eval_missing(e, i, &name, &type):
 *           look it up; osp_spf_eval_add(e, name, type, &dns_result);
 *   osp_spf_eval_outcome(e)->result ...
 *   osp_spf_eval_free(&e);
 *
 * or, on a libuv loop, osp_spf_check_start() does the loop with osp_dns.
 *
 * Limits (RFC 7208 4.6.4): 10 DNS-querying terms (include, a, mx, ptr,
 * exists, redirect; nested includes count), 2 void lookups, 10 MX names
 * per mx (more is a permerror), the first 10 PTR names per ptr or %{p}.
 * An IPv4-mapped IPv6 client is evaluated as its IPv4 address.
 */
#ifndef OSP_SPF_H
#define OSP_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "osp_buf.h"
#include "osp_dns.h"
#include "osp_net.h"

enum osp_spf_result {
    OSP_SPF_NONE,
    OSP_SPF_NEUTRAL,
    OSP_SPF_PASS,
    OSP_SPF_FAIL,
    OSP_SPF_SOFTFAIL,
    OSP_SPF_TEMPERROR,
    OSP_SPF_PERMERROR,
};
#define OSP_SPF_NRESULTS 7

typedef struct osp_spf_request {
    osp_ip_t ip;              /* the SMTP client */
    const char *sender;       /* MAIL FROM, Postfix internal form; "" null sender */
    const char *helo;         /* HELO/EHLO name; may be "" */
    const char *receiver;     /* %{r}; NULL: "unknown" */
    time_t now;               /* %{t}; 0: time(NULL) */
    bool helo_identity;       /* check the HELO identity, not MAIL FROM */
} osp_spf_request_t;

typedef struct osp_spf_outcome {
    enum osp_spf_result result;
    const char *identity;     /* "mailfrom" or "helo" */
    const char *domain;       /* the domain checked ("" if none) */
    const char *explanation;  /* fail: the exp= text or a default; else "" */
    const char *comment;      /* why: "mechanism -all matched", "no SPF record", ... */
} osp_spf_outcome_t;

typedef struct osp_spf_eval osp_spf_eval_t;

enum osp_spf_step {
    OSP_SPF_DONE,
    OSP_SPF_NEED_DNS,
};

/* The request's strings are copied. */
osp_spf_eval_t *osp_spf_eval_create(const osp_spf_request_t *req);
void osp_spf_eval_free(osp_spf_eval_t **ep);
enum osp_spf_step osp_spf_eval_run(osp_spf_eval_t *e);
/* After NEED_DNS: the names still missing (borrowed until the next run). */
size_t osp_spf_eval_nmissing(const osp_spf_eval_t *e);
void osp_spf_eval_missing(const osp_spf_eval_t *e, size_t i, const char **name_r, int *type_r);
/* Store an answer (copied). */
void osp_spf_eval_add(osp_spf_eval_t *e, const char *name, int rrtype,
                      const osp_dns_result_t *r);
/* After DONE; borrowed from e. */
const osp_spf_outcome_t *osp_spf_eval_outcome(const osp_spf_eval_t *e);

/* "pass", "fail", ... as in Received-SPF; static. */
const char *osp_spf_result_name(enum osp_spf_result r);

/* ---- on a libuv loop ------------------------------------------------------ */

typedef struct osp_spf_check osp_spf_check_t;
/* outcome is borrowed for the callback only. */
typedef void (*osp_spf_done_cb)(const osp_spf_outcome_t *outcome, void *arg);

/*
 * Evaluate with the resolver; cb runs exactly once.  When no lookup is
 * needed it runs before this returns, which then returns NULL; otherwise
 * the handle is the caller's until cb runs.  dns is borrowed; the request
 * is copied.
 */
osp_spf_check_t *osp_spf_check_start(osp_dns_t *dns, const osp_spf_request_t *req,
                                     osp_spf_done_cb cb, void *arg);
/* Stop a check whose callback has not run; clears *cp.  NULL is fine. */
void osp_spf_check_cancel(osp_spf_check_t **cp);

/*
 * Append a "Received-SPF:" field value (RFC 7208 9.1), without the field
 * name and without a line break, e.g.
 *   pass (mx.example.org: domain of a@example.com designates 192.0.2.1 as
 *   permitted sender) client-ip=192.0.2.1; envelope-from="a@example.com";
 *   helo=mail.example.com; receiver=mx.example.org; identity=mailfrom;
 * Peer bytes are made printable.  receiver may be NULL.
 */
void osp_spf_received(osp_buf_t *out, const osp_spf_request_t *req,
                      const osp_spf_outcome_t *o, const char *receiver);

/* ---- pieces exposed for tests ------------------------------------------ */

/*
 * Check the syntax of a record ("v=spf1 ...").  0, or -1 with the problem
 * in err.
 */
int osp_spf_record_check(const char *record, char *err, size_t errsize);

/*
 * Expand a macro-string for request req and current domain d (RFC 7208
 * 7): exp selects the explanation letters c, r, t.  No lookups: %{p} is
 * "unknown".  0, or -1 on a syntax error.
 */
int osp_spf_macro_expand(const osp_spf_request_t *req, const char *domain, const char *macro,
                         bool exp, osp_buf_t *out);

#endif
