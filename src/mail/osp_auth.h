/*
 * osp_auth: message authentication for the content filter: DKIM
 * (RFC 6376, verified with libopendkim), the SPF result taken over from
 * our own policy server's Received-SPF field (RFC 7208 9.1), DMARC
 * (RFC 7489, evaluated with libopendmarc), and the Authentication-Results
 * field (RFC 8601) that reports them.
 *
 *   osp_auth_conf_t conf = { .txt = osp_auth_txt_dns, .txt_arg = &timeout_s };
 *   osp_auth_t *a = osp_auth_create(&conf, &err);      start-up
 *   osp_auth_result_t r;
 *   osp_auth_check(a, msg, len, &r);                   any thread
 *   osp_auth_header(&out, "mx.example.org", &r);
 *   osp_auth_free(&a);
 *
 * Where DNS answers come from.  Every lookup (DKIM keys at
 * SELECTOR._domainkey.DOMAIN, DMARC records at _dmarc.DOMAIN) goes through
 * one injectable TXT function, conf.txt.  libopendkim gets it as its key
 * lookup callback (dkim_set_key_lookup), so neither library ever resolves
 * anything itself.  Two are provided:
 *   osp_auth_txt_dns   the system resolver (res_nquery with its own
 *                      res_state, so it is thread-safe), bounded by a
 *                      timeout per server with one try each.  osp_auth_check
 *                      is called from the libuv thread pool, never from
 *                      the loop thread, so a slow answer costs a pool
 *                      thread, not the loop.  (osp_dns's libunbound
 *                      context belongs to the loop thread and cannot be
 *                      used from the pool.)
 *   osp_auth_txt_zone  TXT records from a zone file (the dns_zone_file
 *                      format: "name TTL IN TXT "text" ..."; other types
 *                      ignored); no network.  For tests.
 * A lookup answers found / not found / temporary failure; a temporary
 * failure becomes dkim=temperror or dmarc=temperror, never a pass or fail.
 *
 * SPF.  The filter does not evaluate SPF again: osprey-policyd prepends a
 * Received-SPF field at the border, and osp_auth_check takes over its
 * result.  Only a Received-SPF field that is the topmost one and comes
 * before every Received field is trusted: Postfix's smtpd writes the
 * policy server's PREPEND above its own Received line, so such a field was
 * added by our border MX; anything below a Received line came with the
 * message and may be forged.  Without such a field SPF is "none".
 *
 * Thread-safety: an osp_auth_t is read-only after creation and may be
 * shared by every thread-pool thread.
 */
#ifndef OSP_AUTH_H
#define OSP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"

enum osp_auth_lookup {
    OSP_AUTH_FOUND,
    OSP_AUTH_NOTFOUND,      /* NXDOMAIN or no TXT record */
    OSP_AUTH_TEMPFAIL,      /* timeout, SERVFAIL, ... */
};

/*
 * Find the TXT records at name.  On FOUND, out holds every record (its
 * strings concatenated), each followed by one '\0'; *n_r counts them.
 * Called from any thread.
 */
typedef enum osp_auth_lookup (*osp_auth_txt_fn)(void *arg, const char *name, osp_buf_t *out,
                                                size_t *n_r);

/* The system resolver; arg points to an unsigned timeout in seconds (1..30). */
enum osp_auth_lookup osp_auth_txt_dns(void *arg, const char *name, osp_buf_t *out, size_t *n_r);

/* TXT records of a zone file; arg is an osp_auth_zone_t. */
typedef struct osp_auth_zone osp_auth_zone_t;
/* NULL with "FILE, line N: problem" in err. */
osp_auth_zone_t *osp_auth_zone_load(const char *path, osp_buf_t *err);
void osp_auth_zone_free(osp_auth_zone_t **zp);
enum osp_auth_lookup osp_auth_txt_zone(void *arg, const char *name, osp_buf_t *out, size_t *n_r);

/* Results in the words of RFC 8601's registry. */
enum osp_auth_res {
    OSP_AUTH_NONE = 0,
    OSP_AUTH_PASS,
    OSP_AUTH_FAIL,
    OSP_AUTH_SOFTFAIL,      /* spf only */
    OSP_AUTH_NEUTRAL,
    OSP_AUTH_POLICY,        /* dkim: a signature we do not accept (e.g. key too small) */
    OSP_AUTH_TEMPERROR,
    OSP_AUTH_PERMERROR,
};
/* "none", "pass", ...; static. */
const char *osp_auth_res_name(enum osp_auth_res r);

/* The DMARC policy the From domain publishes. */
enum osp_auth_dmarc_policy {
    OSP_AUTH_P_ABSENT = 0,  /* no record (dmarc=none) */
    OSP_AUTH_P_NONE,
    OSP_AUTH_P_QUARANTINE,
    OSP_AUTH_P_REJECT,
};
/* "absent", "none", "quarantine", "reject"; static. */
const char *osp_auth_policy_name(enum osp_auth_dmarc_policy p);

#define OSP_AUTH_MAX_SIGS 8

typedef struct osp_auth_sig {
    enum osp_auth_res res;
    char domain[256];       /* d= */
    char selector[64];      /* s= */
    char reason[96];        /* why not pass; printable; "" for pass */
} osp_auth_sig_t;

typedef struct osp_auth_result {
    /* DKIM: every signature (the first OSP_AUTH_MAX_SIGS), and the summary
     * for rules: pass if any passed, else the first signature's result. */
    enum osp_auth_res dkim;
    size_t nsigs;
    osp_auth_sig_t sigs[OSP_AUTH_MAX_SIGS];
    /* SPF from the trusted Received-SPF field. */
    enum osp_auth_res spf;
    bool spf_helo;          /* identity=helo rather than mailfrom */
    char spf_domain[256];   /* the domain checked; "" unknown */
    /* DMARC. */
    enum osp_auth_res dmarc;
    enum osp_auth_dmarc_policy policy;  /* what the record asks for (p=, or sp=) */
    char from_domain[256];  /* header.from; "" when absent or unusable */
    char dmarc_reason[96];  /* printable; "" if none */
} osp_auth_result_t;

typedef struct osp_auth_conf {
    osp_auth_txt_fn txt;    /* required */
    void *txt_arg;          /* borrowed; must outlive the osp_auth_t */
    const char *psl_file;   /* public suffix list for organisational domains; NULL/"": none */
    uint64_t fixed_time;    /* tests: DKIM's "now" (0: the clock) */
} osp_auth_conf_t;

typedef struct osp_auth osp_auth_t;

/* conf is copied.  NULL with the reason in err when a library refuses. */
osp_auth_t *osp_auth_create(const osp_auth_conf_t *conf, osp_buf_t *err);
void osp_auth_free(osp_auth_t **ap);

/*
 * Check the message msg[len] (header section, empty line, body; CR LF or
 * LF line ends).  id names the message in library messages.  Always fills
 * *r; a lookup failure shows as temperror in it.
 */
void osp_auth_check(const osp_auth_t *a, const char *id, const char *msg, size_t len,
                    osp_auth_result_t *r);

/*
 * The SPF part alone (what osp_auth_check does with the header section):
 * find the trusted Received-SPF field in headers[len] and fill r->spf,
 * r->spf_helo and r->spf_domain.
 */
void osp_auth_spf_from_headers(const char *headers, size_t len, osp_auth_result_t *r);

/*
 * Append "Authentication-Results: AUTHSERV-ID; dkim=...; spf=...;
 * dmarc=..." with CR LF line ends and folded lines.
 */
void osp_auth_header(osp_buf_t *out, const char *authserv_id, const osp_auth_result_t *r);

/*
 * Authentication-Results fields that claim authserv_id arrived with the
 * message: nobody upstream may speak for us (RFC 8601 section 5), so they
 * are removed before delivery.  osp_auth_count_ours() counts them in the
 * header section hdr[len] (LF or CR LF lines; the authserv-id is the
 * first word of the value, comments skipped, compared case-insensitively);
 * osp_auth_strip_ours() removes them, continuation lines included, and
 * returns how many it removed.
 */
size_t osp_auth_count_ours(const char *hdr, size_t len, const char *authserv_id);
/*
 * The pieces of those two, for callers that walk a header section field by
 * field (the milter deletes fields by their position): the end of the
 * field starting at h[i] (after its continuation lines), and whether the
 * field h[i..end) is an Authentication-Results claiming authserv_id.
 */
size_t osp_auth_field_end(const char *h, size_t len, size_t i);
bool osp_auth_field_is_ours(const char *h, size_t i, size_t end, const char *authserv_id);
size_t osp_auth_strip_ours(osp_buf_t *hdr, const char *authserv_id);

#endif
