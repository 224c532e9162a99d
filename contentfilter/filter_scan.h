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

#include "osp_buf.h"
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
} filter_verdict_t;

typedef struct filter_scan_result {
    double score;
    size_t nrcpt;
    filter_verdict_t *rcpt;         /* owned; nrcpt entries */
    osp_buf_t add_headers;          /* complete header lines ending in CR LF */
    char error[256];                /* why the scan failed; printable */
} filter_scan_result_t;

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
};

void filter_scan_job_init(filter_scan_job_t *job, filter_scan_t *scan,
                          const filter_scan_msg_t *msg);
/* Must not be called while the job is running. */
void filter_scan_job_close(filter_scan_job_t *job);
/*
 * Queue the job; done runs on the loop thread with status 0 or -1.
 * Returns 0, or a negative libuv error (done is then not called).
 */
int filter_scan_start(filter_scan_job_t *job, uv_loop_t *loop, filter_scan_done_cb done);

/*
 * Run the pipeline synchronously on this thread (what the job does);
 * exposed for tests.  0 or -1.
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
