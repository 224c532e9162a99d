/*
 * ospreyctl rule check | rule test | regex test: validate rule files, run
 * rules on a message, and try a regular expression the way rules use it.
 */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "osp_buf.h"
#include "osp_mem.h"
#include "osp_mime.h"
#include "osp_rules.h"

#define DEFAULT_RULES PKGDATADIR "/default.rules"
#define MAX_MESSAGE (64u * 1024 * 1024)
#define MAX_SETS 16
#define MAX_LIST 64

static int rule_check(int argc, char **argv)
{
    int i, status = 0;

    if (argc < 1) {
        fprintf(stderr, "usage: ospreyctl rule check FILE...\n");
        return 2;
    }
    for (i = 0; i < argc; i++) {
        osp_buf_t errors;
        size_t n_errors = 0;
        osp_rules_t *rs;

        osp_buf_init(&errors, OSP_BUF_UNLIMITED);
        rs = osp_rules_load_file(argv[i], NULL, &errors, &n_errors);
        if (rs == NULL) {
            fputs(osp_buf_cstr(&errors), stderr);
            fprintf(stderr, "%s: %zu error%s\n", argv[i], n_errors, n_errors == 1 ? "" : "s");
            status = 1;
        } else {
            printf("%s: %zu rules, no errors\n", argv[i], osp_rules_count(rs));
        }
        osp_rules_free(&rs);
        osp_buf_close(&errors);
    }
    return status;
}

int ctl_read_file(const char *path, const char *what, osp_buf_t *out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char chunk[65536];
    size_t n;
    int rc = 0;

    if (f == NULL) {
        fprintf(stderr, "ospreyctl: %scannot read %s: %s\n", what, path, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (osp_buf_append(out, chunk, n) < 0) {
            fprintf(stderr, "ospreyctl: %s%s: larger than %zu bytes\n", what, path, out->max);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "ospreyctl: %scannot read %s: %s\n", what, path, strerror(errno));
        rc = -1;
    }
    if (f != stdin)
        fclose(f);
    return rc;
}

static int rule_test(int argc, char **argv)
{
    const char *rule_files[MAX_SETS], *recipients[MAX_LIST], *dnsbl[MAX_LIST];
    const char *message = NULL;
    size_t n_files = 0, i;
    osp_rules_t *sets[MAX_SETS];
    osp_rules_ctx_t ctx;
    osp_rules_result_t res;
    osp_rules_scratch_t *scratch;
    osp_mime_message_t *msg;
    osp_buf_t data;
    int a, status = 0;

    osp_rules_ctx_init(&ctx);
    for (a = 0; a < argc; a++) {
        const char *opt = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;

        if (val == NULL || strncmp(opt, "--", 2) != 0)
            goto usage;
        a++;
        if (strcmp(opt, "--rules") == 0 && n_files < MAX_SETS)
            rule_files[n_files++] = val;
        else if (strcmp(opt, "--message") == 0)
            message = val;
        else if (strcmp(opt, "--sender") == 0)
            ctx.sender = val;
        else if (strcmp(opt, "--recipient") == 0 && ctx.n_recipients < MAX_LIST)
            recipients[ctx.n_recipients++] = val;
        else if (strcmp(opt, "--client-address") == 0)
            ctx.client_address = val;
        else if (strcmp(opt, "--client-name") == 0)
            ctx.client_name = val;
        else if (strcmp(opt, "--helo") == 0)
            ctx.helo = val;
        else if (strcmp(opt, "--spf") == 0)
            ctx.spf = val;
        else if (strcmp(opt, "--dkim") == 0)
            ctx.dkim = val;
        else if (strcmp(opt, "--dmarc") == 0)
            ctx.dmarc = val;
        else if (strcmp(opt, "--dnsbl") == 0 && ctx.n_dnsbl < MAX_LIST)
            dnsbl[ctx.n_dnsbl++] = val;
        else if (strcmp(opt, "--bayes") == 0) {
            char *end;

            ctx.bayes = strtod(val, &end);
            if (*end != '\0' || end == val || ctx.bayes > 1) {
                fprintf(stderr, "ospreyctl: --bayes wants a probability 0..1, got \"%s\"\n", val);
                return 2;
            }
        } else
            goto usage;
    }
    if (message == NULL)
        goto usage;
    ctx.recipients = recipients;
    ctx.dnsbl = dnsbl;
    if (n_files == 0)
        rule_files[n_files++] = DEFAULT_RULES;
    for (i = 0; i < n_files; i++) {
        osp_buf_t errors;

        osp_buf_init(&errors, OSP_BUF_UNLIMITED);
        sets[i] = osp_rules_load_file(rule_files[i], NULL, &errors, NULL);
        if (sets[i] == NULL) {
            fputs(osp_buf_cstr(&errors), stderr);
            status = 1;
        }
        osp_buf_close(&errors);
    }
    osp_buf_init(&data, MAX_MESSAGE);
    if (status != 0 || ctl_read_file(message, "", &data) < 0) {
        for (i = 0; i < n_files; i++)
            osp_rules_free(&sets[i]);
        osp_buf_close(&data);
        return 1;
    }
    msg = osp_mime_parse(data.data != NULL ? data.data : "", data.len, NULL);
    ctx.msg = msg;
    scratch = osp_rules_scratch_create();
    osp_rules_result_init(&res);
    osp_rules_eval_sets((const osp_rules_t *const *)sets, n_files, &ctx, scratch, &res);
    for (i = 0; i < res.n_hits; i++) {
        const osp_rules_hit_t *h = &res.hits[i];

        printf("%-28s %7.2f  %-10s %s\n", h->name, h->score,
               h->action != OSP_RULES_DELIVER ? osp_rules_action_name(h->action) : "-",
               h->description);
    }
    if (res.n_errors > 0)
        printf("regex errors: %u (first in rule %s)\n", res.n_errors, res.error_rule);
    printf("score: %.2f (spam at %.1f)\naction: %s\n", res.score, OSP_RULES_SPAM_THRESHOLD,
           osp_rules_action_name(res.action));
    osp_rules_result_close(&res);
    osp_rules_scratch_free(&scratch);
    osp_mime_message_free(&msg);
    osp_buf_close(&data);
    for (i = 0; i < n_files; i++)
        osp_rules_free(&sets[i]);
    return 0;
usage:
    fprintf(stderr, "usage: ospreyctl rule test [--rules FILE]... [--sender ADDR] "
            "[--recipient ADDR]... [--client-address IP] [--client-name NAME] [--helo NAME] "
            "[--spf R] [--dkim R] [--dmarc R] [--bayes P] [--dnsbl LIST]... --message FILE\n");
    return 2;
}

int ctl_rule(const osp_config_t *cfg, int argc, char **argv)
{
    (void)cfg;
    if (argc >= 1 && strcmp(argv[0], "check") == 0)
        return rule_check(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "test") == 0)
        return rule_test(argc - 1, argv + 1);
    fprintf(stderr, "usage: ospreyctl rule check FILE... | rule test [OPTIONS] --message FILE\n");
    return 2;
}

/*
 * "ospreyctl regex test [-i] PATTERN TEXT".  PATTERN may also be written
 * as in a rule file, /.../flags.  Compiled as rules compile regexes.
 */
int ctl_regex(const osp_config_t *cfg, int argc, char **argv)
{
    uint32_t flags = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    const char *pat, *text;
    size_t patlen;
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    int errcode, rc, i;
    PCRE2_SIZE off, *ov;
    PCRE2_UCHAR msg[256];

    (void)cfg;
    if (argc < 1 || strcmp(argv[0], "test") != 0)
        goto usage;
    argc--;
    argv++;
    if (argc >= 1 && strcmp(argv[0], "-i") == 0) {
        flags |= PCRE2_CASELESS;
        argc--;
        argv++;
    }
    if (argc != 2)
        goto usage;
    pat = argv[0];
    text = argv[1];
    patlen = strlen(pat);
    if (patlen >= 2 && pat[0] == '/') {
        const char *end = strrchr(pat + 1, '/');

        if (end != NULL && strspn(end + 1, "imsx") == strlen(end + 1)) {
            const char *fl;

            for (fl = end + 1; *fl != '\0'; fl++)
                flags |= *fl == 'i' ? PCRE2_CASELESS : *fl == 'm' ? PCRE2_MULTILINE
                         : *fl == 's' ? PCRE2_DOTALL : PCRE2_EXTENDED;
            pat++;
            patlen = (size_t)(end - pat);
        }
    }
    re = pcre2_compile((PCRE2_SPTR)pat, patlen, flags, &errcode, &off, NULL);
    if (re == NULL) {
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        printf("error at offset %zu: %s\n  %.*s\n  %*s^\n", (size_t)off, (const char *)msg,
               (int)patlen, pat, (int)off, "");
        return 1;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    md = pcre2_match_data_create_from_pattern(re, NULL);
    mctx = pcre2_match_context_create(NULL);
    if (md == NULL || mctx == NULL) {
        fprintf(stderr, "ospreyctl: out of memory\n");
        abort();
    }
    pcre2_set_match_limit(mctx, 100000);
    pcre2_set_depth_limit(mctx, 2000);
    rc = pcre2_match(re, (PCRE2_SPTR)text, strlen(text), 0, 0, md, mctx);
    if (rc == PCRE2_ERROR_NOMATCH) {
        printf("no match\n");
        rc = 1;
    } else if (rc < 0) {
        pcre2_get_error_message(rc, msg, sizeof(msg));
        printf("error: %s (counts as no match in rules)\n", (const char *)msg);
        rc = 1;
    } else {
        ov = pcre2_get_ovector_pointer(md);
        printf("match at %zu-%zu: \"%.*s\"\n", (size_t)ov[0], (size_t)ov[1],
               (int)(ov[1] - ov[0]), text + ov[0]);
        for (i = 1; i < (int)pcre2_get_ovector_count(md); i++) {
            if (i < rc && ov[2 * i] != PCRE2_UNSET)
                printf("  $%d = \"%.*s\"\n", i, (int)(ov[2 * i + 1] - ov[2 * i]), text + ov[2 * i]);
            else
                printf("  $%d unset\n", i);
        }
        rc = 0;
    }
    pcre2_match_context_free(mctx);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
usage:
    fprintf(stderr, "usage: ospreyctl regex test [-i] PATTERN TEXT\n");
    return 2;
}
