/*
 * osprey_bayes_bench: train Osprey's Bayes classifier on one list of
 * messages and score another, for bench/bayes/run.sh.
 *
 *   osprey_bayes_bench [-b] [-F FLAGS] [-s S] [-u S] [-d DEV] [-m MAX] [-c MIN] [-r RULES]
 *                      TRAIN-LIST TEST-LIST
 *
 * Each list line is "spam PATH" or "ham PATH".  Prints one line per test
 * message: "LABEL SCORE PATH", then timing on standard error.  SCORE is
 * the Bayes probability, or with -r the total score of the rule file
 * (which sees the Bayes probability through its "bayes" field).
 * -b adds word bigrams to the tokens (-F sets the tokenizer flags as a
 * number); -s, -u, -d, -m and -c override the classifier parameters
 * robinson_s, user_s, min_dev, max_tokens and min_count (osp_bayes.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "osp_bayes.h"
#include "osp_buf.h"
#include "osp_mem.h"
#include "osp_mime.h"
#include "osp_rules.h"

static char *slurp(const char *path, size_t *len_r)
{
    FILE *fp = fopen(path, "rb");
    osp_buf_t b;
    char chunk[65536];
    size_t n;

    if (fp == NULL) {
        perror(path);
        exit(1);
    }
    osp_buf_init(&b, 64 * 1024 * 1024);
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        if (osp_buf_append(&b, chunk, n) < 0)
            break;
    fclose(fp);
    *len_r = b.len;
    return osp_buf_steal(&b);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Parse and tokenize; the caller frees *m_r and *data_r. */
static void tokenize_file(const char *path, unsigned flags, osp_bayes_tokens_t *t,
                          double *parse_s, double *tok_s, osp_mime_message_t **m_r,
                          char **data_r)
{
    size_t len;
    char *data = slurp(path, &len);
    double t0 = now(), t1, t2;
    osp_mime_message_t *m = osp_mime_parse(data, len, NULL);

    t1 = now();
    osp_bayes_tokenize(m, flags, t);
    t2 = now();
    *parse_s += t1 - t0;
    *tok_s += t2 - t1;
    *m_r = m;
    *data_r = data;
}

int main(int argc, char **argv)
{
    unsigned flags = 0;
    int ch;
    char line[4096];
    FILE *fp;
    osp_bayes_params_t params;
    osp_bayes_t *b;
    osp_bayes_tokens_t t;
    double parse_s = 0, tok_s = 0, class_s = 0, rules_s = 0;
    size_t ntrain = 0, ntest = 0;
    osp_rules_t *rules = NULL;
    osp_rules_scratch_t *scratch = NULL;
    osp_mime_message_t *m;
    char *data;

    osp_bayes_params_default(&params);
    while ((ch = getopt(argc, argv, "bF:r:s:u:d:m:c:")) != -1) {
        if (ch == 'b') {
            flags |= OSP_BAYES_BIGRAMS;
        } else if (ch == 'F') {         /* tokenizer flags, for experiments */
            flags = (unsigned)strtoul(optarg, NULL, 0);
        } else if (ch == 's') {
            params.robinson_s = strtod(optarg, NULL);
        } else if (ch == 'u') {
            params.user_s = strtod(optarg, NULL);
        } else if (ch == 'd') {
            params.min_dev = strtod(optarg, NULL);
        } else if (ch == 'm') {
            params.max_tokens = (unsigned)strtoul(optarg, NULL, 10);
        } else if (ch == 'c') {
            params.min_count = (unsigned)strtoul(optarg, NULL, 10);
        } else if (ch == 'r') {
            osp_buf_t errors;
            osp_buf_init(&errors, 1 << 20);
            rules = osp_rules_load_file(optarg, NULL, &errors, NULL);
            if (rules == NULL) {
                fprintf(stderr, "%s", osp_buf_cstr(&errors));
                return 1;
            }
            osp_buf_close(&errors);
            scratch = osp_rules_scratch_create();
        } else {
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: osprey_bayes_bench [-b] [-F FLAGS] [-s S] [-u S] [-d DEV] "
                "[-m MAX] [-c MIN] [-r RULES] TRAIN-LIST TEST-LIST\n");
        return 2;
    }
    b = osp_bayes_create(&params);
    osp_bayes_tokens_init(&t, false);
    fp = fopen(argv[optind], "r");
    if (fp == NULL) {
        perror(argv[optind]);
        return 1;
    }
    while (fgets(line, sizeof(line), fp)) {
        char label[16], path[4000];
        if (sscanf(line, "%15s %3999s", label, path) != 2)
            continue;
        tokenize_file(path, flags, &t, &parse_s, &tok_s, &m, &data);
        osp_bayes_train(b, 0, &t, strcmp(label, "spam") == 0, 1);
        osp_mime_message_free(&m);
        free(data);
        ntrain++;
    }
    fclose(fp);
    fp = fopen(argv[optind + 1], "r");
    if (fp == NULL) {
        perror(argv[optind + 1]);
        return 1;
    }
    while (fgets(line, sizeof(line), fp)) {
        char label[16], path[4000];
        osp_bayes_result_t r;
        double t0;

        if (sscanf(line, "%15s %3999s", label, path) != 2)
            continue;
        tokenize_file(path, flags, &t, &parse_s, &tok_s, &m, &data);
        t0 = now();
        osp_bayes_classify(b, 0, &t, &r);
        class_s += now() - t0;
        if (rules) {
            osp_rules_ctx_t ctx;
            osp_rules_result_t rr;
            osp_rules_ctx_init(&ctx);
            ctx.msg = m;
            ctx.bayes = r.prob;
            osp_rules_result_init(&rr);
            t0 = now();
            osp_rules_eval(rules, &ctx, scratch, &rr);
            rules_s += now() - t0;
            printf("%s %.3f %s %.6f\n", label, rr.score, path, r.prob);
            osp_rules_result_close(&rr);
        } else {
            printf("%s %.6f %s\n", label, r.prob, path);
        }
        osp_bayes_result_close(&r);
        osp_mime_message_free(&m);
        free(data);
        ntest++;
    }
    fclose(fp);
    fprintf(stderr, "osprey: trained %zu, scored %zu, %zu tokens; CPU per message: "
            "parse %.1f us, tokenize %.1f us, classify %.1f us, rules %.1f us\n", ntrain, ntest,
            osp_bayes_size(b), parse_s * 1e6 / (double)(ntrain + ntest),
            tok_s * 1e6 / (double)(ntrain + ntest), class_s * 1e6 / (double)(ntest ? ntest : 1),
            rules_s * 1e6 / (double)(ntest ? ntest : 1));
    osp_rules_scratch_free(&scratch);
    osp_rules_free(&rules);
    osp_bayes_tokens_close(&t);
    osp_bayes_free(&b);
    return 0;
}
