/*
 * osprey_scan_bench: the content scan's CPU cost, for bench/scan/run.sh.
 *
 *   osprey_scan_bench [-t THREADS] [-p PASSES] [-T TOKENS] -r RULES TRAIN-LIST SCAN-LIST
 *
 * Trains Bayes on TRAIN-LIST ("spam PATH" / "ham PATH") for account 1 (so
 * every lookup probes the account and account 0), pads the table with
 * synthetic tokens up to TOKENS rows (default 1,000,000), then scans every
 * message of SCAN-LIST PASSES times on THREADS threads: MIME parse, Bayes
 * (tokenize and classify) and the rule set (which sees the Bayes
 * probability); no DNS.  Reading the file is not counted.  Prints one
 * line: threads, messages, wall seconds, messages/s, messages/s per
 * thread, per-message CPU microseconds of each stage (thread CPU time),
 * token rows and peak RSS.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "osp_bayes.h"
#include "osp_buf.h"
#include "osp_mem.h"
#include "osp_mime.h"
#include "osp_rules.h"

typedef struct scan_job {
    const osp_bayes_t *bayes;
    const osp_rules_t *rules;
    char **paths;
    size_t n_paths;
    unsigned tid, nthreads, passes;
    /* results */
    size_t n;
    double parse_s, bayes_s, rules_s;
    double score_sum;
} scan_job_t;

static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int slurp(const char *path, osp_buf_t *b)
{
    FILE *fp = fopen(path, "rb");
    char chunk[65536];
    size_t n;

    osp_buf_reset(b);
    if (fp == NULL) {
        perror(path);
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        if (osp_buf_append(b, chunk, n) < 0)
            break;
    fclose(fp);
    return 0;
}

static char **read_list(const char *path, size_t *n_r, bool **spam_r)
{
    FILE *fp = fopen(path, "r");
    char line[4096], label[16], file[4000];
    char **v = NULL;
    bool *spam = NULL;
    size_t n = 0, alloc = 0;

    if (fp == NULL) {
        perror(path);
        exit(1);
    }
    while (fgets(line, sizeof(line), fp)) {
        if (sscanf(line, "%15s %3999s", label, file) != 2)
            continue;
        if (n == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            v = osp_reallocarray(v, alloc, sizeof(*v));
            spam = osp_reallocarray(spam, alloc, sizeof(*spam));
        }
        spam[n] = strcmp(label, "spam") == 0;
        v[n++] = osp_strdup(file);
    }
    fclose(fp);
    *n_r = n;
    if (spam_r)
        *spam_r = spam;
    else
        free(spam);
    return v;
}

static void *scan_thread(void *arg)
{
    scan_job_t *j = arg;
    osp_rules_scratch_t *scratch = osp_rules_scratch_create();
    osp_bayes_tokens_t t;
    osp_rules_result_t rr;
    osp_buf_t buf;
    unsigned pass;
    size_t i;

    osp_bayes_tokens_init(&t, false);
    osp_rules_result_init(&rr);
    osp_buf_init(&buf, 64 * 1024 * 1024);
    for (pass = 0; pass < j->passes; pass++) {
        for (i = j->tid; i < j->n_paths; i += j->nthreads) {
            osp_mime_message_t *m;
            osp_bayes_result_t br;
            osp_rules_ctx_t ctx;
            double t0, t1, t2, t3;

            if (slurp(j->paths[i], &buf) < 0)
                continue;
            t0 = cpu_now();
            m = osp_mime_parse(buf.data ? buf.data : "", buf.len, NULL);
            t1 = cpu_now();
            osp_bayes_tokenize(m, 0, &t);
            osp_bayes_classify(j->bayes, 1, &t, &br);
            t2 = cpu_now();
            osp_rules_ctx_init(&ctx);
            ctx.msg = m;
            ctx.bayes = br.prob;
            osp_rules_result_reset(&rr);
            osp_rules_eval(j->rules, &ctx, scratch, &rr);
            t3 = cpu_now();
            j->parse_s += t1 - t0;
            j->bayes_s += t2 - t1;
            j->rules_s += t3 - t2;
            j->score_sum += rr.score;
            j->n++;
            osp_bayes_result_close(&br);
            osp_mime_message_free(&m);
        }
    }
    osp_buf_close(&buf);
    osp_rules_result_close(&rr);
    osp_bayes_tokens_close(&t);
    osp_rules_scratch_free(&scratch);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned nthreads = 1, passes = 1, k;
    size_t target = 1000000, n_train, n_scan, i, total = 0;
    const char *rules_path = NULL;
    osp_rules_t *rules;
    osp_bayes_t *b = osp_bayes_create(NULL);
    osp_bayes_tokens_t t;
    osp_buf_t buf, errors;
    char **train, **scan;
    bool *spam;
    scan_job_t *jobs;
    pthread_t *tids;
    double w0, wall, parse = 0, bay = 0, rul = 0;
    struct rusage ru;
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
    int ch;

    while ((ch = getopt(argc, argv, "t:p:T:r:")) != -1) {
        if (ch == 't')
            nthreads = (unsigned)strtoul(optarg, NULL, 10);
        else if (ch == 'p')
            passes = (unsigned)strtoul(optarg, NULL, 10);
        else if (ch == 'T')
            target = strtoul(optarg, NULL, 10);
        else if (ch == 'r')
            rules_path = optarg;
        else
            return 2;
    }
    if (argc - optind != 2 || rules_path == NULL || nthreads == 0 || nthreads > 256) {
        fprintf(stderr, "usage: osprey_scan_bench [-t THREADS] [-p PASSES] [-T TOKENS] "
                "-r RULES TRAIN-LIST SCAN-LIST\n");
        return 2;
    }
    osp_buf_init(&errors, 1 << 20);
    rules = osp_rules_load_file(rules_path, NULL, &errors, NULL);
    if (rules == NULL) {
        fprintf(stderr, "%s", osp_buf_cstr(&errors));
        return 1;
    }
    osp_buf_close(&errors);

    train = read_list(argv[optind], &n_train, &spam);
    scan = read_list(argv[optind + 1], &n_scan, NULL);
    osp_bayes_tokens_init(&t, false);
    osp_buf_init(&buf, 64 * 1024 * 1024);
    for (i = 0; i < n_train; i++) {
        osp_mime_message_t *m;
        if (slurp(train[i], &buf) < 0)
            continue;
        m = osp_mime_parse(buf.data ? buf.data : "", buf.len, NULL);
        osp_bayes_tokenize(m, 0, &t);
        osp_bayes_train(b, 1, &t, spam[i], 1);
        osp_mime_message_free(&m);
    }
    osp_buf_close(&buf);
    /* Synthetic messages of 100 random tokens each (account 0 only: other
     * users' vocabulary) until the table holds the target row count. */
    while (osp_bayes_size(b) < target) {
        t.n = 0;
        for (k = 0; k < 100; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (t.n == t.alloc) {
                t.alloc = t.alloc ? t.alloc * 2 : 256;
                t.hash = osp_reallocarray(t.hash, t.alloc, sizeof(uint64_t));
            }
            t.hash[t.n++] = x | 1;
        }
        osp_bayes_tokens_finish(&t);
        osp_bayes_train(b, 0, &t, (x >> 8) & 1, 1);
    }
    osp_bayes_tokens_close(&t);

    jobs = osp_calloc(nthreads, sizeof(*jobs));
    tids = osp_calloc(nthreads, sizeof(*tids));
    w0 = wall_now();
    for (k = 0; k < nthreads; k++) {
        jobs[k] = (scan_job_t){ .bayes = b, .rules = rules, .paths = scan, .n_paths = n_scan,
                                .tid = k, .nthreads = nthreads, .passes = passes };
        if (pthread_create(&tids[k], NULL, scan_thread, &jobs[k]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (k = 0; k < nthreads; k++) {
        pthread_join(tids[k], NULL);
        total += jobs[k].n;
        parse += jobs[k].parse_s;
        bay += jobs[k].bayes_s;
        rul += jobs[k].rules_s;
    }
    wall = wall_now() - w0;
    getrusage(RUSAGE_SELF, &ru);
    printf("%7u %9zu %8.2f %9.0f %9.0f %9.1f %9.1f %9.1f %9.1f %9zu %7.1f\n", nthreads, total,
           wall, (double)total / wall, (double)total / wall / nthreads,
           parse * 1e6 / (double)total, bay * 1e6 / (double)total, rul * 1e6 / (double)total,
           (parse + bay + rul) * 1e6 / (double)total, osp_bayes_size(b),
           (double)ru.ru_maxrss / 1024.0);
    for (i = 0; i < n_train; i++)
        free(train[i]);
    for (i = 0; i < n_scan; i++)
        free(scan[i]);
    free(train);
    free(scan);
    free(spam);
    free(jobs);
    free(tids);
    osp_rules_free(&rules);
    osp_bayes_free(&b);
    return 0;
}
