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

typedef struct item {
    char label[16];
    char *path;
} item_t;

/* Read a list file; returns the items (caller frees them and each path). */
static item_t *read_list(const char *file, size_t *n_r)
{
    FILE *fp = fopen(file, "r");
    char line[4096];
    item_t *v = NULL;
    size_t n = 0, alloc = 0;

    if (fp == NULL) {
        perror(file);
        exit(1);
    }
    while (fgets(line, sizeof(line), fp)) {
        char label[16], path[4000];
        if (sscanf(line, "%15s %3999s", label, path) != 2)
            continue;
        if (n == alloc) {
            alloc = alloc ? 2 * alloc : 1024;
            v = osp_realloc(v, alloc * sizeof(*v));
        }
        memcpy(v[n].label, label, sizeof(label));
        v[n].path = osp_strdup(path);
        n++;
    }
    fclose(fp);
    *n_r = n;
    return v;
}

static void free_list(item_t *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

typedef struct bench {
    unsigned flags;
    osp_bayes_params_t params;
    osp_rules_t *rules;
    osp_rules_scratch_t *scratch;
    osp_bayes_tokens_t t;
    double parse_s, tok_s, class_s, rules_s;
    size_t ntrain, ntest;
} bench_t;

/* Train a new classifier on v[i] for i % k != fold (k == 0: all of v). */
static osp_bayes_t *train(bench_t *bn, const item_t *v, size_t n, size_t k, size_t fold)
{
    osp_bayes_t *b = osp_bayes_create(&bn->params);
    osp_mime_message_t *m;
    char *data;
    size_t i;

    for (i = 0; i < n; i++) {
        if (k && i % k == fold)
            continue;
        tokenize_file(v[i].path, bn->flags, &bn->t, &bn->parse_s, &bn->tok_s, &m, &data);
        osp_bayes_train(b, 0, &bn->t, strcmp(v[i].label, "spam") == 0, 1);
        osp_mime_message_free(&m);
        free(data);
        bn->ntrain++;
    }
    return b;
}

/* Score v[i] for i % k == fold (k == 0: all of v) and print one line each. */
static void score(bench_t *bn, const osp_bayes_t *b, const item_t *v, size_t n, size_t k,
                  size_t fold)
{
    osp_mime_message_t *m;
    char *data;
    size_t i, j;

    for (i = 0; i < n; i++) {
        osp_bayes_result_t r;
        double t0;

        if (k && i % k != fold)
            continue;
        tokenize_file(v[i].path, bn->flags, &bn->t, &bn->parse_s, &bn->tok_s, &m, &data);
        t0 = now();
        osp_bayes_classify(b, 0, &bn->t, &r);
        bn->class_s += now() - t0;
        if (bn->rules) {
            osp_rules_ctx_t ctx;
            osp_rules_result_t rr;
            osp_rules_ctx_init(&ctx);
            ctx.msg = m;
            ctx.bayes = r.prob;
            osp_rules_result_init(&rr);
            t0 = now();
            osp_rules_eval(bn->rules, &ctx, bn->scratch, &rr);
            bn->rules_s += now() - t0;
            printf("%s %.3f %s %.6f ", v[i].label, rr.score, v[i].path, r.prob);
            for (j = 0; j < rr.n_hits; j++)
                printf("%s%s", j ? "," : "", rr.hits[j].name);
            printf("%s\n", rr.n_hits ? "" : "-");
            osp_rules_result_close(&rr);
        } else {
            printf("%s %.6f %s\n", v[i].label, r.prob, v[i].path);
        }
        osp_bayes_result_close(&r);
        osp_mime_message_free(&m);
        free(data);
        bn->ntest++;
    }
}

int main(int argc, char **argv)
{
    bench_t bn;
    int ch;
    size_t k = 0, fold, ntrain = 0, ntest = 0;
    item_t *trainv, *testv = NULL;
    osp_bayes_t *b = NULL;

    memset(&bn, 0, sizeof(bn));
    osp_bayes_params_default(&bn.params);
    while ((ch = getopt(argc, argv, "bF:k:r:s:u:d:m:c:")) != -1) {
        if (ch == 'b') {
            bn.flags |= OSP_BAYES_BIGRAMS;
        } else if (ch == 'F') {         /* tokenizer flags, for experiments */
            bn.flags = (unsigned)strtoul(optarg, NULL, 0);
        } else if (ch == 'k') {
            k = (size_t)strtoul(optarg, NULL, 10);
        } else if (ch == 's') {
            bn.params.robinson_s = strtod(optarg, NULL);
        } else if (ch == 'u') {
            bn.params.user_s = strtod(optarg, NULL);
        } else if (ch == 'd') {
            bn.params.min_dev = strtod(optarg, NULL);
        } else if (ch == 'm') {
            bn.params.max_tokens = (unsigned)strtoul(optarg, NULL, 10);
        } else if (ch == 'c') {
            bn.params.min_count = (unsigned)strtoul(optarg, NULL, 10);
        } else if (ch == 'r') {
            osp_buf_t errors;
            osp_buf_init(&errors, 1 << 20);
            bn.rules = osp_rules_load_file(optarg, NULL, &errors, NULL);
            if (bn.rules == NULL) {
                fprintf(stderr, "%s", osp_buf_cstr(&errors));
                return 1;
            }
            osp_buf_close(&errors);
            bn.scratch = osp_rules_scratch_create();
        } else {
            return 2;
        }
    }
    if (argc - optind != (k ? 1 : 2) || k == 1) {
        fprintf(stderr, "usage: osprey_bayes_bench [-b] [-F FLAGS] [-s S] [-u S] [-d DEV] "
                "[-m MAX] [-c MIN] [-r RULES] TRAIN-LIST TEST-LIST\n"
                "       osprey_bayes_bench -k K [options] TRAIN-LIST  (K >= 2)\n");
        return 2;
    }
    osp_bayes_tokens_init(&bn.t, false);
    trainv = read_list(argv[optind], &ntrain);
    if (k) {
        for (fold = 0; fold < k; fold++) {
            b = train(&bn, trainv, ntrain, k, fold);
            score(&bn, b, trainv, ntrain, k, fold);
            osp_bayes_free(&b);
        }
    } else {
        testv = read_list(argv[optind + 1], &ntest);
        b = train(&bn, trainv, ntrain, 0, 0);
        score(&bn, b, testv, ntest, 0, 0);
    }
    fprintf(stderr, "osprey: trained %zu, scored %zu, %zu tokens; CPU per message: "
            "parse %.1f us, tokenize %.1f us, classify %.1f us, rules %.1f us\n", bn.ntrain,
            bn.ntest, b ? osp_bayes_size(b) : (size_t)0,
            bn.parse_s * 1e6 / (double)(bn.ntrain + bn.ntest),
            bn.tok_s * 1e6 / (double)(bn.ntrain + bn.ntest),
            bn.class_s * 1e6 / (double)(bn.ntest ? bn.ntest : 1),
            bn.rules_s * 1e6 / (double)(bn.ntest ? bn.ntest : 1));
    osp_rules_scratch_free(&bn.scratch);
    osp_rules_free(&bn.rules);
    osp_bayes_tokens_close(&bn.t);
    osp_bayes_free(&b);
    free_list(trainv, ntrain);
    free_list(testv, ntest);
    return 0;
}
