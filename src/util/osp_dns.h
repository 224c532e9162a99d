/*
 * osp_dns: asynchronous DNS on a libuv loop, through libunbound.
 *
 * One osp_dns_t per loop (each policyd worker has its own): it owns a
 * ub_ctx whose answers arrive on a descriptor polled with uv_poll, so
 * nothing blocks the loop.  unbound's own cache serves repeated names.
 * Every query has a deadline (conf.timeout_ms); the resolver sits behind a
 * circuit breaker (temporary failures open it; while open, queries fail
 * at once).
 *
 *   osp_dns_zone_t *zone = NULL;
 *   if (conf.zone_file[0] && (zone = osp_dns_zone_load(conf.zone_file, &err)) == NULL)
 *       start-up error;
 *   dns = osp_dns_create(loop, &conf, zone, &err);    zone borrowed, read-only
 *   q = osp_dns_query(dns, "example.com", OSP_DNS_TXT, done_cb, arg);
 *       ... done_cb(result, arg) runs once, later, from the loop ...
 *   osp_dns_cancel(&q);                 before it ran: it never will
 *   osp_dns_free(&dns);                 cancels everything; handles close
 *                                       on the loop, so run it once more
 *
 * Results are found / not found (NXDOMAIN or NODATA) / temporary failure
 * (SERVFAIL, REFUSED, timeout, breaker open) -- never a boolean.  CNAMEs
 * are followed (at most 8), also in local data.
 *
 * Where the answers come from (osp_dns_conf_t):
 *   zone data (zone_file): every answer comes from the file, loaded into
 *     unbound as local data under a static root zone, with no network
 *     access at all.  For tests.
 *   forwarders: ub_ctx_set_fwd() for each (ADDR or ADDR@PORT).
 *   otherwise resolv_conf ("" means full recursion from the root hints).
 *
 * Zone file format: RFC 1035 master-file lines, one RR per line,
 *   name TTL IN TYPE rdata          e.g.  example.com. 300 IN TXT "v=spf1 -all"
 * as unbound's local-data reads them (absolute names; generic "TYPE99 \# 3
 * 616263" accepted).  "#" or ";" at the start of a line is a comment.  One
 * test-only extension:
 *   name TIMEOUT
 * makes every query for exactly that name whose type has no record in the
 * file a temporary failure ("timeout"), as a dead server would.
 *
 * Not thread-safe: one osp_dns_t per loop thread.  A zone is read-only
 * after loading and may be shared by every thread's resolver.
 */
#ifndef OSP_DNS_H
#define OSP_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "osp_breaker.h"
#include "osp_buf.h"
#include "osp_config.h"

/* RR types we ask for. */
#define OSP_DNS_A 1
#define OSP_DNS_PTR 12
#define OSP_DNS_MX 15
#define OSP_DNS_TXT 16
#define OSP_DNS_AAAA 28

enum osp_dns_status {
    OSP_DNS_FOUND,      /* answer with at least one record */
    OSP_DNS_NOTFOUND,   /* NXDOMAIN or NODATA: the name definitely has none */
    OSP_DNS_TEMPFAIL,   /* SERVFAIL, timeout, resolver unavailable: try later */
};

typedef struct osp_dns_result {
    enum osp_dns_status status;
    bool nxdomain;                 /* NOTFOUND because the name does not exist */
    const char *name;              /* the name asked for */
    int rrtype;
    size_t n;                      /* records, when FOUND */
    const uint8_t *const *data;    /* rdata in wire format (names uncompressed) */
    const size_t *len;
    const char *error;             /* TEMPFAIL: "timeout", "SERVFAIL", ... */
} osp_dns_result_t;

/* The result and everything in it are borrowed for the callback only. */
typedef void (*osp_dns_cb)(const osp_dns_result_t *r, void *arg);

typedef struct osp_dns_conf {
    const char *zone_file;             /* "" or NULL: real DNS */
    const char *const *forwarders;     /* borrowed */
    size_t nforwarders;
    const char *resolv_conf;           /* used without forwarders; "": recursion */
    uint64_t timeout_ms;               /* per query; 0: 5000 */
    osp_breaker_conf_t breaker;
} osp_dns_conf_t;

/*
 * Fill conf from the common parameters dns_zone_file, dns_forwarders,
 * dns_resolv_conf, dns_timeout, breaker_failure_threshold and
 * breaker_cooldown (strings borrowed from cfg).
 */
void osp_dns_conf_load(osp_dns_conf_t *conf, const osp_config_t *cfg);

typedef struct osp_dns osp_dns_t;
typedef struct osp_dns_query osp_dns_query_t;
typedef struct osp_dns_zone osp_dns_zone_t;

/*
 * Read a zone file.  Returns NULL with "FILE, line N: problem" lines in
 * errors when it cannot be read or a line is bad (every bad line listed).
 */
osp_dns_zone_t *osp_dns_zone_load(const char *path, osp_buf_t *errors);
/* The same from text in memory; origin names it in messages. */
osp_dns_zone_t *osp_dns_zone_parse(const char *origin, const char *text, osp_buf_t *errors);
size_t osp_dns_zone_count(const osp_dns_zone_t *zone);
void osp_dns_zone_free(osp_dns_zone_t **zp);

/*
 * conf is copied (strings borrowed: they must outlive the resolver);
 * zone (when conf->zone_file is set) is borrowed read-only.  NULL with the
 * reason in errors if unbound refuses the settings.
 */
osp_dns_t *osp_dns_create(uv_loop_t *loop, const osp_dns_conf_t *conf,
                          const osp_dns_zone_t *zone, osp_buf_t *errors);
/* Cancel every query (no callbacks), close the handles; NULL is fine. */
void osp_dns_free(osp_dns_t **dnsp);

/*
 * Start a query (name copied; trailing dot optional).  The callback runs
 * exactly once, never before osp_dns_query returns.  The handle is the
 * caller's until the callback runs or osp_dns_cancel.
 */
osp_dns_query_t *osp_dns_query(osp_dns_t *dns, const char *name, int rrtype, osp_dns_cb cb,
                               void *arg);
/* Forget a query whose callback has not run; clears *qp.  NULL is fine. */
void osp_dns_cancel(osp_dns_query_t **qp);

/* Queries outstanding; the breaker, for metrics. */
size_t osp_dns_pending(const osp_dns_t *dns);
const osp_breaker_t *osp_dns_breaker(const osp_dns_t *dns);

/* "found", "not found", "temporary failure"; static. */
const char *osp_dns_status_name(enum osp_dns_status st);

/* ---- rdata helpers (wire format in, text out) --------------------------- */

/*
 * A domain name at data[*off] (uncompressed) as text without the final
 * dot, lower-cased only if lower; advances *off.  0, or -1 if malformed
 * or it does not fit.
 */
int osp_dns_rdata_name(const uint8_t *data, size_t len, size_t *off, char *out, size_t outsize,
                       bool lower);
/* TXT: the character-strings concatenated into out (bytes as they are).  0/-1. */
int osp_dns_rdata_txt(const uint8_t *data, size_t len, osp_buf_t *out);

#endif
