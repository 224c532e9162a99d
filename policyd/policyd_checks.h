/*
 * policyd_checks: the check pipeline of osprey-policyd.
 *
 * policyd_checks_create() builds, from the configuration, every list,
 * rate-limit table and action once, at start-up; the result is read-only
 * afterwards (the rate-limit tables lock internally) and shared by all
 * worker threads.
 *
 * A request is evaluated by a policyd_eval_t that the session embeds:
 *
 *   policyd_eval_start(&s->eval, checks, &s->req, now_ms, done_cb, s);
 *       ... done_cb(ev, s) runs exactly once, possibly before
 *       policyd_eval_start returns; ev->verdict holds the answer ...
 *   policyd_eval_cancel(&s->eval);     deadline passed or client gone:
 *                                      no done_cb after this returns
 *
 * Checks run in the order of policyd_checks.  Each returns
 *   POLICYD_NEXT     no opinion: go on with the next check;
 *   POLICYD_STOP     it called policyd_eval_decide(): answer that;
 *   POLICYD_PENDING  it started asynchronous work (DNS, database): for each
 *                    operation it called policyd_eval_pending_add() with a
 *                    cancel function, and each operation ends with
 *                    policyd_eval_resume(ev, id) (after policyd_eval_decide() if
 *                    it reached a verdict).  When the last one has
 *                    resumed, the pipeline answers the verdict or goes on.
 * One deadline timer in the session bounds the whole request; when it
 * fires the session answers policyd_error_action and cancels the eval,
 * which calls every outstanding cancel function; after a cancel function
 * returns, its operation must never call policyd_eval_resume().
 *
 * At protocol_state END-OF-MESSAGE no check runs: every check's account
 * hook runs instead (rate limits count the message there, once) and the
 * answer is DUNNO.
 *
 * List files (client, sender, recipient; allow and block): one entry per
 * line, "#" starts a comment, blank lines are ignored.  Client entries are
 * addresses or CIDR prefixes of either family.  Sender and recipient
 * entries follow Postfix access(5) address patterns, matched case
 * insensitively: "user@example.com" (that address), "example.com" (any
 * address in that domain), ".example.com" (any address in a subdomain),
 * "user@" (that local part in any domain), and "<>" (the null sender).
 * A bad line is reported as "FILE, line N: problem" and skipped; a file
 * that cannot be read is a start-up error.
 */
#ifndef POLICYD_CHECKS_H
#define POLICYD_CHECKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "policyd_proto.h"

typedef struct policyd_checks policyd_checks_t;
typedef struct policyd_eval policyd_eval_t;

enum policyd_step {
    POLICYD_NEXT,
    POLICYD_STOP,
    POLICYD_PENDING,
};

typedef struct policyd_verdict {
    const char *check;       /* deciding check ("client_block"), or NULL: none */
    const char *action;      /* borrowed from the checks; "DUNNO" when none */
    bool allow;              /* an allow list matched */
    char reason[256];        /* printable; "" when none */
} policyd_verdict_t;

/* A check: run at any state but END-OF-MESSAGE; account at END-OF-MESSAGE. */
typedef enum policyd_step (*policyd_check_run_fn)(policyd_eval_t *ev, void *ctx);
typedef void (*policyd_check_account_fn)(policyd_eval_t *ev, void *ctx);

typedef struct policyd_check_def {
    const char *name;                 /* static */
    policyd_check_run_fn run;         /* NULL: none */
    policyd_check_account_fn account; /* NULL: none */
    void *ctx;                        /* borrowed */
} policyd_check_def_t;

#define POLICYD_MAX_PENDING 16
/* Longest action built per request (a reply carrying DNS text, a PREPEND). */
#define POLICYD_ACTION_MAX 1024

typedef void (*policyd_eval_done_fn)(policyd_eval_t *ev, void *data);
typedef void (*policyd_cancel_fn)(void *arg);
typedef void (*policyd_default_fn)(void *arg, bool used);

struct policyd_eval {
    const policyd_checks_t *checks;   /* borrowed */
    const policy_request_t *req;      /* borrowed until done or cancel */
    uint64_t now_ms;                  /* monotonic clock at start */
    size_t next;                      /* next check to run */
    unsigned pending;                 /* asynchronous operations outstanding */
    struct {
        policyd_cancel_fn fn;
        void *arg;
        bool busy;
    } cancel[POLICYD_MAX_PENDING];
    bool active, running, decided;
    policyd_verdict_t verdict;
    policyd_eval_done_fn done_cb;
    void *data;
    /* Per-request actions (policyd_eval_action_copy, policyd_eval_default). */
    char action_buf[POLICYD_ACTION_MAX];
    char default_action[POLICYD_ACTION_MAX];
    const char *default_check;
    policyd_default_fn default_done;
    void *default_arg;
    /* The list snapshot this request uses: referenced once, by the first
     * list check, and dropped when the evaluation ends or is cancelled. */
    struct policyd_lists *lists;
};

/*
 * Build the pipeline from the configuration: list files, HELO names,
 * rate-limit rules, actions.  Start-up errors (unreadable file, unknown
 * check name, bad rule, bad action) are appended to errors, one per line,
 * naming the parameter; bad list lines go to warnings.  Returns NULL if
 * there were errors.  cfg is only read during the call.
 */
policyd_checks_t *policyd_checks_create(const osp_config_t *cfg, osp_buf_t *errors,
                                        osp_buf_t *warnings);
void policyd_checks_free(policyd_checks_t **cp);
/*
 * Read the list files again (the same parameters of cfg, e.g. on SIGHUP).
 * If every file could be read, the new lists replace the old ones as a
 * whole for checks that start afterwards (a check running meanwhile
 * finishes with the lists it started with) and *entries_r (may be NULL)
 * gets how many entries they hold; bad lines are warnings, as at
 * start-up.  If a file cannot be read, nothing changes, errors says why
 * and -1 is returned.  Any thread; one reload at a time.
 */
int policyd_checks_reload_lists(policyd_checks_t *c, const osp_config_t *cfg,
                                osp_buf_t *errors, osp_buf_t *warnings, size_t *entries_r);

/* Add a check at the end of the pipeline (tests, future modules); def copied. */
void policyd_checks_append(policyd_checks_t *c, const policyd_check_def_t *def);
/*
 * A check defined in another file (database lists, greylisting): once
 * registered, policyd_checks_create() accepts its name in policyd_checks
 * and puts it at that place in the pipeline; when policyd_checks does not
 * name it, place -1 puts it first, +1 last, 0 leaves it out.  def copied;
 * registering a name again replaces it.  Start-up only (not thread-safe).
 */
void policyd_checks_register(const policyd_check_def_t *def, int place);

/*
 * Cluster-wide rate counting (policyd_share.c), optional.  count() runs
 * for every unit counted locally at END-OF-MESSAGE; remote() answers, at
 * check time, how many units other instances have counted for the key
 * (added to the local count when deciding).  key is the rule's key value
 * (len bytes, not NUL-terminated), rule the rule as configured; both
 * borrowed for the call.  Called from any worker thread.
 */
typedef struct policyd_rate_share {
    void (*count)(void *ctx, const char *rule, const char *key, size_t len,
                  uint64_t window_ms, uint64_t n);
    uint64_t (*remote)(void *ctx, const char *rule, const char *key, size_t len,
                       uint64_t window_ms);
    void *ctx;
} policyd_rate_share_t;
/* Before the workers start; share copied. */
void policyd_checks_set_rate_share(policyd_checks_t *c, const policyd_rate_share_t *share);
/* Names of the checks in pipeline order, for metrics. */
size_t policyd_checks_count(const policyd_checks_t *c);
const char *policyd_checks_name(const policyd_checks_t *c, size_t i);
/* Every name a verdict's check field can take, NULL-terminated (static). */
extern const char *const policyd_check_verdict_names[];
/* Live rate-limit keys over all rules, for metrics. */
size_t policyd_checks_ratelimit_keys(const policyd_checks_t *c);
/* Remove idle rate-limit keys (call now and then). */
void policyd_checks_expire(policyd_checks_t *c, uint64_t now_ms);

/* ---- evaluation ---------------------------------------------------------- */

void policyd_eval_start(policyd_eval_t *ev, const policyd_checks_t *checks,
                        const policy_request_t *req, uint64_t now_ms,
                        policyd_eval_done_fn done_cb, void *data);
/* Record the verdict (action borrowed; must outlive the request). */
void policyd_eval_decide(policyd_eval_t *ev, const char *check, const char *action,
                         bool allow, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/*
 * An asynchronous operation starts: returns its id for
 * policyd_eval_resume.  cancel(arg) is called if the request is abandoned
 * (deadline, client gone, shutdown) while it is pending; after cancel
 * returns, the operation must not resume.  At most POLICYD_MAX_PENDING at
 * once (more is a bug).
 */
unsigned policyd_eval_pending_add(policyd_eval_t *ev, policyd_cancel_fn cancel, void *arg);
/* Operation op has finished (after policyd_eval_decide, if it decided). */
void policyd_eval_resume(policyd_eval_t *ev, unsigned op);
void policyd_eval_cancel(policyd_eval_t *ev);
/*
 * An action made for this request (a reply with DNS text in it): copied
 * into the eval, truncated to POLICYD_ACTION_MAX - 1 bytes; the copy,
 * valid until the request ends, is what to pass to policyd_eval_decide.
 * One per request (a second call overwrites the first).
 */
const char *policyd_eval_action_copy(policyd_eval_t *ev, const char *action);
/*
 * Answer action (copied; e.g. "PREPEND Received-SPF: ...") instead of
 * DUNNO when no check decides, with check named as the deciding one.
 * done(arg, used) runs exactly once when the request ends -- answered,
 * decided by another check, or cancelled -- and says whether the action
 * was answered.  One per request (more is a bug).
 */
void policyd_eval_default(policyd_eval_t *ev, const char *check, const char *action,
                          policyd_default_fn done, void *arg);

/* ---- list files (exposed for tests) ---------------------------------- */

typedef struct policyd_addrlist policyd_addrlist_t;
policyd_addrlist_t *policyd_addrlist_create(void);
void policyd_addrlist_free(policyd_addrlist_t **lp);
/* Load one file; 0, or -1 if it cannot be read (message in errors). */
int policyd_addrlist_load(policyd_addrlist_t *l, const char *path, osp_buf_t *errors,
                          osp_buf_t *warnings);
/*
 * Look an address up (Postfix internal form; "" is the null sender).
 * Returns true on a match and writes what matched ("FILE, line N:
 * PATTERN") to why.
 */
bool policyd_addrlist_lookup(const policyd_addrlist_t *l, const char *addr, char *why,
                             size_t whysize);

#endif
