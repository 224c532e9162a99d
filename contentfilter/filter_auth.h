/*
 * filter_auth: DKIM, SPF and DMARC (osp_auth) as a filter_scan scanner.
 *
 * It must be added to the pipeline before the rules engine: it stores the
 * three results in the scan result (res->spf, res->dkim, res->dmarc) where
 * filter_engine hands them to the rules, and it adds the
 * Authentication-Results field (RFC 8601) to the header lines every
 * delivered or quarantined copy gets.
 *
 * A DMARC failure whose policy is reject or quarantine adds dmarc_score
 * to the message score and raises every recipient to the configured
 * action (by default: p=reject quarantines, p=quarantine only scores).
 * Nothing is ever rejected (5xx) unless an action says "reject".  A
 * temporary DNS failure is reported as temperror and does not fail the
 * scan: the message is judged on the rest.
 *
 *   filter_auth_conf_t c = { .authserv_id = host, ... };
 *   if (filter_auth_create(&c, &s, &err) < 0) fatal;
 *   filter_scan_add(scan, &s);          (the pipeline owns it from then on)
 */
#ifndef FILTER_AUTH_H
#define FILTER_AUTH_H

#include <stddef.h>

#include "filter_scan.h"
#include "osp_buf.h"
#include "osp_config.h"

typedef struct filter_auth_conf {
    const char *authserv_id;            /* copied */
    const char *zone_file;              /* "" or NULL: DNS; else TXT records from it */
    unsigned dns_timeout_s;             /* per server, for DNS */
    const char *psl_file;               /* public suffix list, "" none */
    double dmarc_score;                 /* added on DMARC fail with p=quarantine|reject */
    enum filter_action dmarc_reject_action;
    enum filter_action dmarc_quarantine_action;
    size_t max_size;                    /* larger messages are not checked */
} filter_auth_conf_t;

/* 0 and *s_r (ctx owned by the pipeline), or -1 with the reason in err. */
int filter_auth_create(const filter_auth_conf_t *conf, filter_scanner_t *s_r, osp_buf_t *err);

/*
 * The same from osprey-filter's parameters (filter_auth_*, filter_dmarc_*,
 * filter_authserv_id, dns_zone_file, filter_scan_size_limit).  1 when
 * filter_auth_checks is off (no scanner), 0, or -1 with "parameter:
 * problem" in err.
 */
int filter_auth_create_from_config(const osp_config_t *cfg, filter_scanner_t *s_r,
                                   osp_buf_t *err);

#endif
