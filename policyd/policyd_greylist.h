/*
 * policyd_greylist: greylisting on the triplet (client network, sender,
 * recipient), state in memory per daemon, bounded.
 *
 * The client network is the client's /24 (IPv4) or /64 (IPv6), so a
 * sender's pool of outgoing servers retrying from neighbouring addresses
 * counts as one client.  Addresses are compared case-insensitively; the
 * null sender is "<>".
 *
 * The state machine of one triplet, at time t of an attempt:
 *
 *   unknown            -> pending(first = t)            defer  (NEW)
 *   pending, t < first + delay                          defer  (EARLY; first stays)
 *   pending, first + delay <= t <= first + retry_window -> passed(last = t)
 *                                                       pass   (PASSED)
 *   pending, t > first + retry_window -> pending(first = t)
 *                                                       defer  (EXPIRED)
 *   passed,  t - last <= pass_lifetime -> passed(last = t)
 *                                                       pass   (KNOWN)
 *   passed,  t - last > pass_lifetime  -> pending(first = t)
 *                                                       defer  (NEW)
 *
 * Each PASSED counts for the client network; when a network has passed
 * auto_allow_count times (0: never), greylisting skips that network
 * (AUTO) until it has sent nothing for auto_allow_lifetime.
 *
 * Bounds: at most max_entries triplets and max_entries / 4 (at least
 * 1024) networks, about 40 bytes each, allocated as they are used.  When
 * the table is full and nothing has expired, a new triplet is not
 * tracked and its mail passes (FULL: greylisting fails open, logged once
 * per episode).  policyd_greylist_expire() drops what has expired; the
 * table also expires on its own when it fills up.
 *
 * Thread-safe: one mutex around the table.
 *
 *   g = policyd_greylist_create(&conf);
 *   r = policyd_greylist_check(g, "192.0.2.7", "a@example.org", "b@example.com",
 *                              now_ms, &wait_ms);
 *   if (policyd_greylist_defers(r)) ... answer DEFER_IF_PERMIT ...
 *   policyd_greylist_free(&g);
 */
#ifndef POLICYD_GREYLIST_H
#define POLICYD_GREYLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "policyd_checks.h"

typedef struct policyd_greylist policyd_greylist_t;

typedef struct policyd_greylist_conf {
    uint64_t delay_ms;                 /* policyd_greylist_delay */
    uint64_t retry_window_ms;          /* policyd_greylist_retry_window, from the first attempt */
    uint64_t pass_lifetime_ms;         /* policyd_greylist_pass_lifetime, since last seen */
    unsigned auto_allow_count;         /* policyd_greylist_auto_allow_count; 0: never */
    uint64_t auto_allow_lifetime_ms;   /* policyd_greylist_auto_allow_lifetime */
    size_t max_entries;                /* policyd_greylist_max_entries */
} policyd_greylist_conf_t;

enum policyd_grey {
    POLICYD_GREY_NEW,        /* defer: not seen (or forgotten) */
    POLICYD_GREY_EARLY,      /* defer: retried before the delay */
    POLICYD_GREY_EXPIRED,    /* defer: retried after the retry window; starts over */
    POLICYD_GREY_PASSED,     /* pass: a retry within the window */
    POLICYD_GREY_KNOWN,      /* pass: passed before */
    POLICYD_GREY_AUTO,       /* pass: the client network is allowed automatically */
    POLICYD_GREY_FULL,       /* pass: table full, not tracked */
    POLICYD_GREY_SKIP,       /* pass: no usable client address */
};

policyd_greylist_t *policyd_greylist_create(const policyd_greylist_conf_t *conf);
void policyd_greylist_free(policyd_greylist_t **gp);
/*
 * One attempt (strings borrowed for the call).  *wait_ms_r (may be NULL)
 * gets, for a deferral, how long until a retry can pass.
 */
enum policyd_grey policyd_greylist_check(policyd_greylist_t *g, const char *client_address,
                                         const char *sender, const char *recipient,
                                         uint64_t now_ms, uint64_t *wait_ms_r);
bool policyd_greylist_defers(enum policyd_grey r);
const char *policyd_greylist_result_name(enum policyd_grey r);
/* Drop expired triplets and networks; returns how many. */
size_t policyd_greylist_expire(policyd_greylist_t *g, uint64_t now_ms);
/* Triplets tracked now. */
size_t policyd_greylist_count(policyd_greylist_t *g);

/*
 * The check ("greylist" in policyd_checks), configured from osprey.conf
 * (policyd_greylist, policyd_greylist_*).  Runs at RCPT only.  Bad
 * settings go to errors (NULL returned); with policyd_greylist = no it
 * returns a context whose check has no opinion.
 */
typedef struct policyd_greycheck policyd_greycheck_t;
policyd_greycheck_t *policyd_greycheck_create(const osp_config_t *cfg, osp_buf_t *errors);
void policyd_greycheck_free(policyd_greycheck_t **gcp);
bool policyd_greycheck_enabled(const policyd_greycheck_t *gc);
void policyd_greycheck_expire(policyd_greycheck_t *gc, uint64_t now_ms);
enum policyd_step policyd_greycheck_run(policyd_eval_t *ev, void *ctx);

#endif
