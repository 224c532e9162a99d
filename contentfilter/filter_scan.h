/*
 * filter_scan: the scan pipeline, verdicts and verdict routing.
 *
 * A pipeline is an ordered list of scanners.  For each message the whole
 * list runs in one libuv thread-pool job: every scanner sees the envelope
 * and the body (read-only) and adds to one shared result: score, header
 * lines to add, and per-recipient actions.  A recipient's action only ever
 * gets stronger (DELIVER < TAG < QUARANTINE < DISCARD < REJECT), so the
 * order of scanners does not change the outcome.  After the last scanner
 * the score thresholds apply (score >= tag_score: at least TAG; score >=
 * quarantine_score: at least QUARANTINE).
 *
 * A scanner that fails (returns -1: DNS timeout, database away, a bug in a
 * rule) fails the whole scan, and the message is answered 4xx: a scan that
 * did not finish never lets mail through unscanned.
 *
 *   filter_scan_t *scan = filter_scan_create(&thresholds);
 *   filter_scan_add(scan, &my_scanner);           (start-up, loop thread)
 *   filter_scan_job_init(&job, scan, &msg, nrcpt);
 *   filter_scan_start(&job, loop, done_cb);       (done_cb on the loop thread)
 *   ... job.result ...
 *   filter_scan_job_close(&job);
 *
 * Routing (filter_route) turns the verdicts into what the session does
 * with each recipient; see there for the SMTP-specific rule.
 *
 * Two steps around Bayes.  With a prepare step (filter_scan_set_prepare:
 * the engine parses the message and makes its Bayes tokens) and a Bayes
 * classifier (filter_scan_set_bayes), a job runs: prepare in the thread
 * pool; the token lookup on the loop thread (cache, then PostgreSQL,
 * asynchronously), once per distinct recipient account (set with
 * filter_scan_job_set_account before the start); then the scanners in the
 * thread pool, which see each account's probability in res->bayes; then,
 * on the loop, autolearn.  A failed lookup only leaves Bayes absent.
 * When recipients' accounts get different Bayes answers, a scanner may
 * give recipients their own extra score (res->rcpt[i].score): use
 * filter_scan_rcpt_score() for recipient i's total.
 *
 * The built-in scanner (filter_scan_static_create) evaluates a few static
 * rules from configuration; it exists so that verdict routing can be
 * exercised end to end before the real scanners are written.
 */
#ifndef FILTER_SCAN_H
#define FILTER_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "osp_bayes.h"
#include "osp_buf.h"
#include "filter_bayes.h"
#include "filter_body.h"

/* Ordered by strength: a stronger action wins when scanners disagree. */
enum filter_action {
    FILTER_ACTION_DELIVER = 0,
    FILTER_ACTION_TAG,
    FILTER_ACTION_QUARANTINE,
    FILTER_ACTION_DISCARD,
    FILTER_ACTION_REJECT,
};
#define FILTER_ACTION__COUNT 5

/* "deliver", "tag", ...; static. */
const char *filter_action_name(enum filter_action a);
/* 0, or -1 for an unknown name. */
int filter_action_parse(const char *name, enum filter_action *a_r);

/* What a scanner sees: all borrowed, read-only, valid during the scan. */
typedef struct filter_scan_msg {
    const char *scan_id;
    const char *queue_id;           /* Postfix queue id from XFORWARD, or "" */
    const char *sender;             /* "" for the null sender */
    size_t nrcpt;
    const char *const *rcpts;       /* addresses without brackets */
    const char *client_addr;        /* XFORWARD ADDR, or "" */
    const char *client_name;        /* XFORWARD NAME, or "" */
    const char *helo;               /* XFORWARD HELO, or "" */
    const filter_body_t *body;      /* complete, CR LF line ends */
    const char *headers;            /* the header section (may be cut at a cap) */
    size_t headers_len;
} filter_scan_msg_t;

typedef struct filter_verdict {
    enum filter_action action;
    char reason[128];               /* why; printable; "" if none */
    double score;                   /* added to the message score for this recipient */
    int64_t account;                /* the recipient's account; < 0 none (global Bayes) */
    size_t bayes_idx;               /* its entry in res->bayes.ans */
} filter_verdict_t;

/* Bayes state of one scan (see the top of this file). */
typedef struct filter_scan_bayes {
    osp_bayes_tokens_t tokens;      /* owned; filled by the prepare step */
    bool tokenized;                 /* tokens are valid: a lookup is due */
    size_t n;                       /* distinct accounts */
    filter_bayes_answer_t *ans;     /* owned; n; prob < 0: absent */
    bool want_rules_score;          /* autolearn is on: compute rules_score */
    double rules_score;             /* rules score without Bayes; NAN: not computed */
} filter_scan_bayes_t;

typedef struct filter_scan_result {
    double score;
    size_t nrcpt;
    filter_verdict_t *rcpt;         /* owned; nrcpt entries */
    osp_buf_t add_headers;          /* complete header lines ending in CR LF */
    char error[256];                /* why the scan failed; printable */
    /* Authentication results for later scanners (static strings such as
     * "pass"; NULL when not checked); set by filter_auth. */
    const char *spf, *dkim, *dmarc;
    /* Our authserv-id when the message came with Authentication-Results
     * fields claiming it (forged: removed before reinjection), else NULL;
     * borrowed from filter_auth, which outlives every scan.  */
    const char *strip_authserv_id;
    filter_scan_bayes_t bayes;
    void *state;                    /* the prepare step's, for the scanners */
    void (*free_state)(void *state);
} filter_scan_result_t;

/* Recipient i's score: the message's plus its own. */
double filter_scan_rcpt_score(const filter_scan_result_t *res, size_t i);
/* Recipient i's Bayes answer, or NULL when Bayes is absent for it. */
const filter_bayes_answer_t *filter_scan_rcpt_bayes(const filter_scan_result_t *res, size_t i);
/* Whether recipients i and j got the same Bayes answer (or none both). */
bool filter_scan_same_bayes(const filter_scan_result_t *res, size_t i, size_t j);
/*
 * Append "X-Spam-Bayes: ..." for recipient i to out, if it has an answer.
 * Recipients with the same answer share a copy, so account= names the
 * account of the copy's first recipient.
 */
void filter_scan_bayes_header(const filter_scan_result_t *res, size_t i, osp_buf_t *out);

/*
 * Raise recipient i's action to a (no-op if it is already stronger);
 * i == FILTER_ALL_RCPTS raises every recipient.  reason is copied when the
 * action changes.  For scanners.
 */
#define FILTER_ALL_RCPTS ((size_t)-1)
void filter_scan_result_raise(filter_scan_result_t *res, size_t i, enum filter_action a,
                              const char *reason);

/*
 * A scanner.  Runs on a thread-pool thread; must not touch the loop, must
 * be thread-safe with respect to its ctx (several messages run at once).
 * Returns 0, or -1 with res->error set for a temporary failure.
 */
typedef int (*filter_scanner_fn)(void *ctx, const filter_scan_msg_t *msg,
                                 filter_scan_result_t *res);

typedef struct filter_scanner {
    const char *name;               /* borrowed, static */
    filter_scanner_fn scan;
    void *ctx;                      /* borrowed; owned by whoever added it */
    void (*free_ctx)(void *ctx);    /* called by filter_scan_free, or NULL */
} filter_scanner_t;

typedef struct filter_scan_thresholds {
    double tag_score;
    double quarantine_score;
} filter_scan_thresholds_t;

typedef struct filter_scan filter_scan_t;

filter_scan_t *filter_scan_create(const filter_scan_thresholds_t *t);
/* Frees the pipeline and every scanner's ctx (free_ctx).  No job may run. */
void filter_scan_free(filter_scan_t **scanp);
/* Append a scanner (copied). */
void filter_scan_add(filter_scan_t *scan, const filter_scanner_t *s);
/*
 * The first step (thread pool, before the Bayes lookup): may set
 * res->state/free_state and fill res->bayes.tokens (tokenized = true).
 * ctx borrowed.  Returns 0, or -1 with res->error set.
 */
typedef int (*filter_scan_prepare_fn)(void *ctx, const filter_scan_msg_t *msg,
                                      filter_scan_result_t *res);
void filter_scan_set_prepare(filter_scan_t *scan, filter_scan_prepare_fn fn, void *ctx);
/* Look tokens up with fb (borrowed; NULL: no Bayes). */
void filter_scan_set_bayes(filter_scan_t *scan, filter_bayes_t *fb);

typedef struct filter_scan_job filter_scan_job_t;
typedef void (*filter_scan_done_cb)(filter_scan_job_t *job, int status);

struct filter_scan_job {
    uv_work_t work;                 /* work.data is free for the caller */
    filter_scan_t *scan;            /* borrowed */
    const filter_scan_msg_t *msg;   /* borrowed; must live until done */
    filter_scan_result_t result;    /* owned */
    int status;                     /* 0, or -1: result.error says why */
    filter_scan_done_cb done;
    bool running;
    uv_loop_t *loop;                /* borrowed, while running */
};

void filter_scan_job_init(filter_scan_job_t *job, filter_scan_t *scan,
                          const filter_scan_msg_t *msg);
/* Must not be called while the job is running. */
void filter_scan_job_close(filter_scan_job_t *job);
/* Recipient i's account (< 0: none), before the start. */
void filter_scan_job_set_account(filter_scan_job_t *job, size_t i, int64_t account);
/*
 * Queue the job; done runs on the loop thread with status 0 or -1.
 * Returns 0, or a negative libuv error (done is then not called).
 */
int filter_scan_start(filter_scan_job_t *job, uv_loop_t *loop, filter_scan_done_cb done);

/*
 * Run the pipeline synchronously on this thread (what the job does,
 * without the Bayes lookup); exposed for tests.  0 or -1.
 */
int filter_scan_run(filter_scan_t *scan, const filter_scan_msg_t *msg,
                    filter_scan_result_t *res);

/* ---- routing ------------------------------------------------------------ */

/* What happens to one recipient. */
enum filter_route {
    FILTER_ROUTE_REINJECT = 0,      /* reinject the untouched message (+ headers) */
    FILTER_ROUTE_REINJECT_TAGGED,   /* reinject with Subject prefix, spam status Yes */
    FILTER_ROUTE_QUARANTINE,
    FILTER_ROUTE_DISCARD,
    FILTER_ROUTE_REJECT,
};
const char *filter_route_name(enum filter_route r);

/*
 * Route each recipient of res into routes_r[nrcpt].
 *
 * LMTP gives one reply per recipient, so every verdict maps directly.
 * SMTP has one reply for the whole message: a REJECT verdict can only be
 * given when every recipient is rejected.  When some recipients of an SMTP
 * transaction are rejected and others are not, the rejected ones are
 * quarantined instead: nothing is lost or bounced by accident, nothing is
 * duplicated, and an administrator can still release or delete it.  (A
 * 4xx would make Postfix retry, get the same verdict and duplicate the
 * other recipients' copies until the message expires.)
 */
void filter_route(const filter_scan_result_t *res, bool lmtp, enum filter_route *routes_r);

/* ---- the built-in static-rule scanner (test aid) ------------------------ */

/*
 * Rules "FIELD:VALUE:ACTION[:SCORE]" (from filter_static_rules):
 *   rcpt:ADDRESS       the recipient (case-insensitive); acts on that one
 *   sender:ADDRESS     the envelope sender (case-insensitive); all recipients
 *   subject:TEXT       Subject contains TEXT (case-insensitive); all recipients
 *   client:ADDRESS     XFORWARD ADDR equals it; all recipients
 * ACTION is deliver, tag, quarantine, discard, reject, or tempfail (the scan
 * fails: tests the 4xx path).  SCORE (a decimal number) is added to the
 * message score when the rule matches.
 *
 * Returns 0 and fills *s_r (ctx owned by the scanner; freed by
 * filter_scan_free), or -1 with a message in err naming the bad rule.
 */
int filter_scan_static_create(const char *const *rules, size_t nrules,
                              filter_scanner_t *s_r, osp_buf_t *err);

#endif
