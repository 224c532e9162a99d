/* filter_auth: osp_auth as a filter_scan scanner. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filter_auth.h"
#include "osp_auth.h"
#include "osp_log.h"
#include "osp_mem.h"

typedef struct filter_auth {
    osp_auth_t *auth;               /* owned */
    osp_auth_zone_t *zone;          /* owned; NULL: DNS */
    unsigned timeout_s;             /* txt_arg for DNS */
    char *authserv_id;              /* owned */
    double dmarc_score;
    enum filter_action reject_action, quarantine_action;
    size_t max_size;
} filter_auth_t;

static void filter_auth__free(void *ctx)
{
    filter_auth_t *fa = ctx;

    osp_auth_free(&fa->auth);
    osp_auth_zone_free(&fa->zone);
    free(fa->authserv_id);
    free(fa);
}

static int filter_auth__scan(void *ctx, const filter_scan_msg_t *msg, filter_scan_result_t *res)
{
    filter_auth_t *fa = ctx;
    uint64_t size = msg->body->size;
    osp_auth_result_t r;
    char *data;
    ssize_t n;
    size_t len;

    if (size > fa->max_size)
        return 0;
    data = osp_malloc((size_t)size + 1);
    n = filter_body_read(msg->body, 0, data, (size_t)size);
    if (n < 0 || (uint64_t)n != size) {
        free(data);
        osp_snprintf(res->error, sizeof(res->error), "cannot read the message body");
        return -1;
    }
    osp_auth_check(fa->auth, msg->scan_id, data, (size_t)n, &r);
    free(data);
    {
        size_t forged = osp_auth_count_ours(msg->headers, msg->headers_len, fa->authserv_id);
        if (forged > 0) {
            res->strip_authserv_id = fa->authserv_id;
            osp_info("%s: %s: %zu Authentication-Results field(s) claiming %s arrived with the "
                     "message: removed", msg->scan_id, msg->queue_id, forged, fa->authserv_id);
        }
    }

    res->spf = osp_auth_res_name(r.spf);
    res->dkim = osp_auth_res_name(r.dkim);
    res->dmarc = osp_auth_res_name(r.dmarc);
    len = res->add_headers.len;
    osp_auth_header(&res->add_headers, fa->authserv_id, &r);
    if (res->add_headers.len < 2 ||
        memcmp(res->add_headers.data + res->add_headers.len - 2, "\r\n", 2) != 0)
        osp_buf_truncate(&res->add_headers, len);   /* did not fit: none rather than half */
    osp_info("%s: %s: dkim=%s spf=%s dmarc=%s policy=%s from_domain=%s", msg->scan_id,
             msg->queue_id, res->dkim, res->spf, res->dmarc, osp_auth_policy_name(r.policy),
             r.from_domain[0] ? r.from_domain : "-");

    if (r.dmarc == OSP_AUTH_FAIL &&
        (r.policy == OSP_AUTH_P_REJECT || r.policy == OSP_AUTH_P_QUARANTINE)) {
        char why[128];
        enum filter_action a = r.policy == OSP_AUTH_P_REJECT ? fa->reject_action
                                                             : fa->quarantine_action;
        res->score += fa->dmarc_score;
        osp_snprintf(why, sizeof(why), "DMARC fail, p=%s for %s", osp_auth_policy_name(r.policy),
                     r.from_domain);
        if (a != FILTER_ACTION_DELIVER)
            filter_scan_result_raise(res, FILTER_ALL_RCPTS, a, why);
    }
    return 0;
}

int filter_auth_create(const filter_auth_conf_t *conf, filter_scanner_t *s_r, osp_buf_t *err)
{
    filter_auth_t *fa = osp_calloc(1, sizeof(*fa));
    osp_auth_conf_t ac;

    fa->timeout_s = conf->dns_timeout_s ? conf->dns_timeout_s : 5;
    fa->authserv_id = osp_strdup(conf->authserv_id);
    fa->dmarc_score = conf->dmarc_score;
    fa->reject_action = conf->dmarc_reject_action;
    fa->quarantine_action = conf->dmarc_quarantine_action;
    fa->max_size = conf->max_size;
    memset(&ac, 0, sizeof(ac));
    if (conf->zone_file && *conf->zone_file) {
        fa->zone = osp_auth_zone_load(conf->zone_file, err);
        if (fa->zone == NULL) {
            filter_auth__free(fa);
            return -1;
        }
        ac.txt = osp_auth_txt_zone;
        ac.txt_arg = fa->zone;
    } else {
        ac.txt = osp_auth_txt_dns;
        ac.txt_arg = &fa->timeout_s;
    }
    ac.psl_file = conf->psl_file;
    fa->auth = osp_auth_create(&ac, err);
    if (fa->auth == NULL) {
        filter_auth__free(fa);
        return -1;
    }
    memset(s_r, 0, sizeof(*s_r));
    s_r->name = "auth";
    s_r->scan = filter_auth__scan;
    s_r->ctx = fa;
    s_r->free_ctx = filter_auth__free;
    return 0;
}

int filter_auth_create_from_config(const osp_config_t *cfg, filter_scanner_t *s_r,
                                   osp_buf_t *err)
{
    filter_auth_conf_t c;
    char host[256];
    const char *s;
    char *end;

    if (!osp_config_bool(cfg, "filter_auth_checks"))
        return 1;
    memset(&c, 0, sizeof(c));
    c.authserv_id = osp_config_str(cfg, "filter_authserv_id");
    if (*c.authserv_id == '\0') {
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            osp_strlcpy(host, "localhost", sizeof(host));
        host[sizeof(host) - 1] = '\0';
        c.authserv_id = host;
    }
    if (strpbrk(c.authserv_id, " \t\r\n;()\"") != NULL) {
        osp_buf_printf(err, "filter_authserv_id: \"%s\" must be one word", c.authserv_id);
        return -1;
    }
    c.zone_file = osp_config_str(cfg, "dns_zone_file");
    c.dns_timeout_s = (unsigned)((osp_config_duration_ms(cfg, "filter_auth_dns_timeout") + 999) / 1000);
    c.psl_file = osp_config_str(cfg, "filter_auth_public_suffix_list");
    if (*c.psl_file && access(c.psl_file, R_OK) != 0) {
        /* Named by the admin: an error.  The default (Debian's publicsuffix
         * package) missing: DMARC falls back to the last two labels. */
        if (osp_config_is_set(cfg, "filter_auth_public_suffix_list")) {
            osp_buf_printf(err, "filter_auth_public_suffix_list: %s: %s", c.psl_file,
                           strerror(errno));
            return -1;
        }
        osp_warn("filter_auth_public_suffix_list: %s: %s; DMARC organisational domains "
                 "use the last two labels (install the publicsuffix package)", c.psl_file,
                 strerror(errno));
        c.psl_file = "";
    }
    s = osp_config_str(cfg, "filter_dmarc_score");
    errno = 0;
    c.dmarc_score = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno || !isfinite(c.dmarc_score)) {
        osp_buf_printf(err, "filter_dmarc_score: \"%s\" is not a number", s);
        return -1;
    }
    s = osp_config_str(cfg, "filter_dmarc_reject_action");
    if (filter_action_parse(s, &c.dmarc_reject_action) < 0) {
        osp_buf_printf(err, "filter_dmarc_reject_action: \"%s\" is not an action", s);
        return -1;
    }
    s = osp_config_str(cfg, "filter_dmarc_quarantine_action");
    if (filter_action_parse(s, &c.dmarc_quarantine_action) < 0) {
        osp_buf_printf(err, "filter_dmarc_quarantine_action: \"%s\" is not an action", s);
        return -1;
    }
    c.max_size = (size_t)osp_config_size(cfg, "filter_scan_size_limit");
    return filter_auth_create(&c, s_r, err);
}
