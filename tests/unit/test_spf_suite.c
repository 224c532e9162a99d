/*
 * The RFC 7208 test suite (python3-spf's rfc7208-tests.yml, converted by
 * tests/data/spf/convert-rfc7208.py) against osp_spf, each scenario's zone
 * data served by osp_dns in zone-file mode on a real libuv loop.  TAP.
 *
 *   test_spf_suite [CASES-FILE]      default $top_srcdir/tests/data/spf/rfc7208/rfc7208.cases
 *   SPF_SUITE_ONLY=name              run one test, with its comment
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "osp_buf.h"
#include "osp_dns.h"
#include "osp_mem.h"
#include "osp_spf.h"

typedef struct suite_case {
    char name[128];
    char spec[64];
    char host[64];
    char mailfrom[1024];
    char helo[1024];
    char result[128];
    char explanation[1024];
    bool has_explanation;
} suite_case_t;

typedef struct run_state {
    uv_loop_t *loop;
    bool done;
    enum osp_spf_result result;
    char explanation[1024];
    char comment[1024];
} run_state_t;

static void unflat(char *s)
{
    char *w = s;

    for (; *s; s++) {
        if (*s == '\\' && s[1] == 'n') {
            *w++ = '\n';
            s++;
        } else if (*s == '\\' && s[1] == '\\') {
            *w++ = '\\';
            s++;
        } else {
            *w++ = *s;
        }
    }
    *w = '\0';
}

static void done_cb(const osp_spf_outcome_t *o, void *arg)
{
    run_state_t *st = arg;

    st->done = true;
    /* Timers run before the poll: do not block in it once we are done. */
    uv_stop(st->loop);
    st->result = o->result;
    osp_strlcpy(st->explanation, o->explanation, sizeof(st->explanation));
    osp_strlcpy(st->comment, o->comment, sizeof(st->comment));
}

static bool result_ok(const char *expected, const char *got)
{
    char buf[128], *save = NULL, *t;

    osp_strlcpy(buf, expected, sizeof(buf));
    for (t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
        if (strcmp(t, got) == 0)
            return true;
    return false;
}

static int run_case(uv_loop_t *loop, osp_dns_t *dns, const suite_case_t *c, int n,
                    bool verbose)
{
    osp_spf_request_t req;
    run_state_t st;
    osp_spf_check_t *chk;
    bool ok;
    const char *got;

    memset(&req, 0, sizeof(req));
    memset(&st, 0, sizeof(st));
    st.loop = loop;
    if (osp_ip_parse(c->host, &req.ip) < 0) {
        printf("not ok %d - %s # bad host %s\n", n, c->name, c->host);
        return 1;
    }
    req.sender = c->mailfrom;
    req.helo = c->helo;
    req.receiver = "receivingdomain.com";
    req.now = 1700000000;
    chk = osp_spf_check_start(dns, &req, done_cb, &st);
    while (!st.done)
        (void)uv_run(loop, UV_RUN_ONCE);
    (void)chk;
    got = osp_spf_result_name(st.result);
    ok = result_ok(c->result, got);
    if (ok && c->has_explanation) {
        if (strcmp(c->explanation, "DEFAULT") == 0)
            ok = st.explanation[0] == '\0';
        else
            ok = strcmp(c->explanation, st.explanation) == 0;
    }
    if (ok)
        printf("ok %d - %s\n", n, c->name);
    else
        printf("not ok %d - %s # spec %s: expected %s%s%s, got %s \"%s\" (%s)\n", n, c->name,
               c->spec, c->result, c->has_explanation ? " / " : "",
               c->has_explanation ? c->explanation : "", got, st.explanation, st.comment);
    if (verbose)
        printf("# %s: %s; explanation \"%s\"\n", c->name, st.comment, st.explanation);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *srcdir = getenv("top_srcdir");
    const char *only = getenv("SPF_SUITE_ONLY");
    char path[4096], dir[4096], line[4096];
    FILE *fp;
    uv_loop_t loop;
    osp_dns_t *dns = NULL;
    osp_dns_zone_t *zone = NULL;
    suite_case_t c;
    int n = 0, failed = 0;
    osp_buf_t errors;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        osp_strlcpy(path, argv[1], sizeof(path));
    else
        osp_snprintf(path, sizeof(path), "%s/tests/data/spf/rfc7208/rfc7208.cases",
                     srcdir ? srcdir : ".");
    osp_strlcpy(dir, path, sizeof(dir));
    if (strrchr(dir, '/'))
        *strrchr(dir, '/') = '\0';
    else
        osp_strlcpy(dir, ".", sizeof(dir));
    fp = fopen(path, "r");
    if (fp == NULL) {
        printf("1..0 # SKIP cannot open %s\n", path);
        return 0;
    }
    /* Count the tests for the plan. */
    while (fgets(line, sizeof(line), fp))
        if (strncmp(line, "test ", 5) == 0 &&
            (only == NULL || strncmp(line + 5, only, strlen(only)) == 0))
            n++;
    printf("1..%d\n", n);
    rewind(fp);
    n = 0;
    (void)uv_loop_init(&loop);
    osp_buf_init(&errors, 65536);
    memset(&c, 0, sizeof(c));
    while (fgets(line, sizeof(line), fp)) {
        char *val;
        line[strcspn(line, "\n")] = '\0';
        val = strchr(line, ' ');
        val = val ? val + 1 : line + strlen(line);
        unflat(val);
        if (strncmp(line, "scenario ", 9) == 0) {
            osp_dns_conf_t conf;
            char zpath[8192], zname[256];
            osp_dns_free(&dns);
            (void)uv_run(&loop, UV_RUN_DEFAULT);
            osp_dns_zone_free(&zone);
            osp_snprintf(zname, sizeof(zname), "%.*s", (int)strcspn(val, " "), val);
            osp_snprintf(zpath, sizeof(zpath), "%s/%s", dir, zname);
            osp_buf_reset(&errors);
            zone = osp_dns_zone_load(zpath, &errors);
            if (zone == NULL) {
                printf("Bail out! zone %s: %s\n", zpath, osp_buf_cstr(&errors));
                return 1;
            }
            memset(&conf, 0, sizeof(conf));
            conf.zone_file = zpath;
            conf.timeout_ms = 2000;
            conf.breaker.failure_threshold = 1000;
            dns = osp_dns_create(&loop, &conf, zone, &errors);
            if (dns == NULL) {
                printf("Bail out! resolver: %s\n", osp_buf_cstr(&errors));
                return 1;
            }
            printf("# scenario %s\n", val);
        } else if (strncmp(line, "test ", 5) == 0) {
            memset(&c, 0, sizeof(c));
            osp_strlcpy(c.name, val, sizeof(c.name));
        } else if (strncmp(line, "spec ", 5) == 0) {
            osp_strlcpy(c.spec, val, sizeof(c.spec));
        } else if (strncmp(line, "host ", 5) == 0) {
            osp_strlcpy(c.host, val, sizeof(c.host));
        } else if (strncmp(line, "mailfrom", 8) == 0) {
            osp_strlcpy(c.mailfrom, val, sizeof(c.mailfrom));
        } else if (strncmp(line, "helo", 4) == 0) {
            osp_strlcpy(c.helo, val, sizeof(c.helo));
        } else if (strncmp(line, "result ", 7) == 0) {
            osp_strlcpy(c.result, val, sizeof(c.result));
        } else if (strncmp(line, "explanation", 11) == 0) {
            osp_strlcpy(c.explanation, val, sizeof(c.explanation));
            c.has_explanation = true;
        } else if (strcmp(line, "end") == 0) {
            if (only && strncmp(c.name, only, strlen(only)) != 0)
                continue;
            failed += run_case(&loop, dns, &c, ++n, only != NULL);
        }
    }
    fclose(fp);
    osp_dns_free(&dns);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    osp_dns_zone_free(&zone);
    osp_buf_close(&errors);
    if (uv_loop_close(&loop) != 0) {
        printf("not ok %d - loop closed cleanly\n", ++n);
        failed++;
    }
    printf("# %d of %d RFC 7208 tests passed\n", n - failed, n);
    return failed ? 1 : 0;
}
