/*
 * ospreyctl spf check --ip IP --sender ADDR --helo NAME [--helo-identity]
 *
 * Evaluates SPF (RFC 7208) with the configured resolver (dns_zone_file,
 * dns_forwarders or dns_resolv_conf) on a private loop and prints the
 * result, why, the explanation and the Received-SPF field osprey-policyd
 * would prepend.  Exit status: 0 a result was computed, 1 failed, 2 usage.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ctl.h"
#include "osp_buf.h"
#include "osp_dns.h"
#include "osp_spf.h"

typedef struct ctl_spf_state {
    uv_loop_t *loop;
    bool done;
    const osp_spf_request_t *req;
} ctl_spf_state_t;

static void ctl_spf__done_cb(const osp_spf_outcome_t *o, void *arg)
{
    ctl_spf_state_t *st = arg;
    osp_buf_t b;

    osp_buf_init(&b, 8192);
    printf("result: %s\n", osp_spf_result_name(o->result));
    printf("identity: %s\n", o->identity);
    (void)osp_buf_append_printable(&b, o->domain, strlen(o->domain));
    printf("domain: %s\n", osp_buf_cstr(&b));
    osp_buf_reset(&b);
    (void)osp_buf_append_printable(&b, o->comment, strlen(o->comment));
    printf("reason: %s\n", osp_buf_cstr(&b));
    if (o->result == OSP_SPF_FAIL)
        printf("explanation: %s\n", o->explanation[0] ? o->explanation
                                                      : "(none published; default used)");
    osp_buf_reset(&b);
    osp_spf_received(&b, st->req, o, NULL);
    printf("Received-SPF: %s\n", osp_buf_cstr(&b));
    osp_buf_close(&b);
    st->done = true;
    uv_stop(st->loop);
}

static int ctl_spf__usage(void)
{
    fprintf(stderr, "usage: ospreyctl spf check --ip IP --sender ADDR --helo NAME "
                    "[--helo-identity]\n");
    return 2;
}

int ctl_spf(const osp_config_t *cfg, int argc, char **argv)
{
    osp_spf_request_t req;
    osp_dns_conf_t conf;
    osp_dns_zone_t *zone = NULL;
    osp_dns_t *dns;
    osp_buf_t errors;
    uv_loop_t loop;
    ctl_spf_state_t st;
    const char *ip = NULL;
    int i, rc = 0;

    if (argc < 1 || strcmp(argv[0], "check") != 0)
        return ctl_spf__usage();
    memset(&req, 0, sizeof(req));
    req.sender = "";
    req.helo = "";
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--helo-identity") == 0) {
            req.helo_identity = true;
        } else if (i + 1 < argc && strcmp(argv[i], "--ip") == 0) {
            ip = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--sender") == 0) {
            req.sender = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--helo") == 0) {
            req.helo = argv[++i];
        } else {
            return ctl_spf__usage();
        }
    }
    if (ip == NULL || osp_ip_parse(ip, &req.ip) < 0) {
        fprintf(stderr, "ospreyctl spf check: --ip needs an IPv4 or IPv6 address\n");
        return 2;
    }
    osp_dns_conf_load(&conf, cfg);
    osp_buf_init(&errors, 65536);
    if (conf.zone_file[0] && (zone = osp_dns_zone_load(conf.zone_file, &errors)) == NULL) {
        fprintf(stderr, "ospreyctl spf check: %s", osp_buf_cstr(&errors));
        osp_buf_close(&errors);
        return 1;
    }
    (void)uv_loop_init(&loop);
    dns = osp_dns_create(&loop, &conf, zone, &errors);
    if (dns == NULL) {
        fprintf(stderr, "ospreyctl spf check: %s", osp_buf_cstr(&errors));
        rc = 1;
    } else {
        memset(&st, 0, sizeof(st));
        st.loop = &loop;
        st.req = &req;
        (void)osp_spf_check_start(dns, &req, ctl_spf__done_cb, &st);
        while (!st.done)
            (void)uv_run(&loop, UV_RUN_ONCE);
        osp_dns_free(&dns);
    }
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&loop);
    osp_dns_zone_free(&zone);
    osp_buf_close(&errors);
    return rc;
}
