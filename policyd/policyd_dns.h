/*
 * policyd_dns: the checks of osprey-policyd that depend on DNS -- spf,
 * dnsbl and rdns.
 *
 * policyd_dnschecks_create() reads their parameters once, at start-up
 * (actions, DNSBL sites, the zone file of dns_zone_file), and is shared
 * read-only by every worker.  Each worker thread owns one resolver
 * (osp_dns) and one small SPF result cache, made in that thread by
 * policyd_dns_worker_init() and freed by policyd_dns_worker_fini() when
 * the worker stops (policyd_server_set_worker_hooks takes both):
 *
 *   dc = policyd_dnschecks_create(cfg, &errors);
 *   policyd_dnschecks_register(dc);                 before policyd_checks_create
 *   policyd_server_set_worker_hooks(srv, policyd_dns_worker_init,
 *                                   policyd_dns_worker_fini, dc);
 *   ... policyd_server_join(srv) ...
 *   policyd_dnschecks_free(&dc);
 *
 * The checks find the resolver of the thread they run on; a thread
 * without one (it could not be created) skips them with a warning.
 *
 * spf     (policyd_spf = yes) at RCPT: RFC 7208 on MAIL FROM, or on the
 *         HELO name for the null sender, once per message: the result is
 *         kept per transaction (the "instance" attribute), so further
 *         recipients reuse it.  Each result maps to an action
 *         (policyd_spf_*_action); when it answers DUNNO and no other
 *         check decides, the answer is "PREPEND Received-SPF: ..." (once
 *         per message).  SASL-authenticated clients are not checked.
 * dnsbl   (policyd_dnsbl_sites not empty): the client address reversed
 *         under every list's zone, looked up in parallel (A, and TXT for
 *         the reason where listed); the weights of the lists whose
 *         answer passes their filter are added, and a sum at or above
 *         policyd_dnsbl_threshold answers policyd_dnsbl_action.
 * rdns    (either action not DUNNO): no lookups; Postfix's client_name
 *         and reverse_client_name say whether the client has a PTR and
 *         whether it is forward-confirmed.
 *
 * Actions may contain %{client_address}, %{spf_result}, %{spf_domain},
 * %{spf_explanation}, %{dnsbl_domains}, %{dnsbl_reason} and
 * %{client_name} (not $name: osprey.conf expands that itself); DNS text
 * is made printable and shortened before it goes into a reply.
 */
#ifndef POLICYD_DNS_H
#define POLICYD_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "policyd_checks.h"

typedef struct policyd_dnschecks policyd_dnschecks_t;

/* NULL with one line per problem in errors (naming the parameter). */
policyd_dnschecks_t *policyd_dnschecks_create(const osp_config_t *cfg, osp_buf_t *errors);
void policyd_dnschecks_free(policyd_dnschecks_t **dcp);
/* Register spf, dnsbl and rdns with policyd_checks_register (last when enabled). */
void policyd_dnschecks_register(policyd_dnschecks_t *dc);
bool policyd_dnschecks_need_resolver(const policyd_dnschecks_t *dc);
/*
 * Start-up: make and free one resolver on loop, so that settings unbound
 * refuses (a bad forwarder) stop the daemon before it serves.  0, or -1
 * with the reason in errors.  Its handles close when loop runs.
 */
int policyd_dnschecks_probe(const policyd_dnschecks_t *dc, uv_loop_t *loop, osp_buf_t *errors);

/*
 * Per worker thread, in that thread: the resolver and the SPF cache.
 * init returns the state (NULL, with an error logged, if the resolver
 * cannot be made); fini cancels every query and starts closing the
 * resolver's handles on loop (run it after the sessions are closed).
 */
void *policyd_dns_worker_init(uv_loop_t *loop, void *dc);
void policyd_dns_worker_fini(void *state, void *dc);

/* The check functions (ctx is the policyd_dnschecks_t); exposed for tests. */
enum policyd_step policyd_dns_spf_run(policyd_eval_t *ev, void *ctx);
enum policyd_step policyd_dns_dnsbl_run(policyd_eval_t *ev, void *ctx);
enum policyd_step policyd_dns_rdns_run(policyd_eval_t *ev, void *ctx);

/* ---- DNSBL sites (exposed for tests) ---------------------------------- */

typedef struct policyd_dnsbl_site {
    char zone[256];                /* lower case, no trailing dot */
    bool filter;                   /* an answer filter was given */
    uint8_t octets[4][32];         /* filter: allowed values per octet (bitmaps) */
    int weight;
} policyd_dnsbl_site_t;

/*
 * Parse "zone[=filter][*weight]" as postscreen_dnsbl_sites does, e.g.
 * "zen.example=127.0.0.[2..11]*3" or "wl.example=127.0.[0..255].[1;3]*-2".
 * An octet is a number, or "[" items "]" with items separated by ";",
 * each a number or LOW..HIGH.  Weight defaults to 1.  0, or -1 with the
 * problem in err.
 */
int policyd_dnsbl_site_parse(const char *text, policyd_dnsbl_site_t *site, char *err,
                             size_t errsize);
/* Does an A answer (4 bytes) pass the site's filter?  No filter: any. */
bool policyd_dnsbl_site_match(const policyd_dnsbl_site_t *site, const uint8_t a[4]);

/*
 * Expand %{name} variables of an action template (vars: NULL-terminated
 * name, value pairs); unknown names stay as they are.  Values are made
 * printable.  Result truncated to outsize - 1 bytes.
 */
void policyd_dns_expand(const char *tmpl, const char *const *vars, char *out, size_t outsize);

#endif
