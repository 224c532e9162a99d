/*
 * filter_msg: what both front ends (SMTP/LMTP sessions and milter
 * sessions) do the same way around one message: scan ids, header values,
 * our header lines, the recipients' thresholds, and the final report of
 * each recipient (counter, log line, message_log row).
 */
#ifndef FILTER_MSG_H
#define FILTER_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "filter_accounts.h"
#include "filter_quarantine.h"
#include "filter_scan.h"

struct filter_server;

/* A printable copy of peer bytes for logging; caller frees. */
char *filter_printable(const char *s);

/* A new scan id (time, process, counter) into buf. */
void filter_scan_id_make(char *buf, size_t size);

/*
 * The unfolded value of the first header field NAME in the header section
 * h[0..len) (raw: not MIME-decoded), trimmed, at most 998 bytes; caller
 * frees.  NULL if absent.
 */
char *filter_header_value(const char *h, size_t len, const char *name);

/*
 * Our header lines for the copy recipient ri gets (scan id, score, status,
 * Bayes, then the scanners' lines such as Authentication-Results),
 * appended to out, each ending in CR LF.
 */
void filter_own_headers(const char *scan_id, const filter_scan_result_t *res, size_t ri,
                        bool spam, const filter_rcpt_settings_t *set, osp_buf_t *out);

/*
 * Raise each recipient's action by its own thresholds (settings[i], one
 * per recipient of res): quarantine_score gives its spam action,
 * tag_score TAG.
 */
void filter_apply_thresholds(filter_scan_result_t *res, const filter_rcpt_settings_t *settings);

/*
 * Start the scan job for msg (borrowed until done), Bayes per recipient
 * account (settings[i], one per recipient); job->work.data = data.  0, or
 * a negative libuv error (done is then not called).
 */
int filter_msg_scan_start(filter_scan_job_t *job, filter_scan_t *scan, uv_loop_t *loop,
                          const filter_scan_msg_t *msg, const filter_rcpt_settings_t *settings,
                          filter_scan_done_cb done, void *data);

/* The recipients of one message that go to the quarantine, and their request. */
typedef struct filter_qset {
    const char **rcpts;             /* owned array of borrowed addresses */
    size_t *map;                    /* owned: rcpts[k] is the message's recipient map[k] */
    int64_t *accounts;              /* owned: their accounts */
    size_t n;
    osp_buf_t headers;              /* our header lines on the stored copy */
    filter_quarantine_req_t req;
} filter_qset_t;

void filter_qset_init(filter_qset_t *qs);
void filter_qset_add(filter_qset_t *qs, const char *rcpt, size_t i, int64_t account);
/*
 * Store the message for the set (n > 0): our headers as the first
 * recipient's (spam), reason and score from res, everything else from msg
 * (all borrowed until done).  filter_quarantine_store()'s result: 0, or -1
 * with qs->req.error set (done not called).
 */
int filter_qset_store(filter_qset_t *qs, filter_quarantine_t *q, const filter_scan_msg_t *msg,
                      const filter_scan_result_t *res, const filter_rcpt_settings_t *settings,
                      const char *subject, const char *message_id, filter_quarantine_cb done,
                      void *data);
void filter_qset_free(filter_qset_t *qs);

/* One finished message, for filter_msg_report. */
typedef struct filter_msg_info {
    const char *log_id, *scan_id;
    const char *queue_id;                   /* "" or NULL: unknown */
    const char *sender, *client_addr, *client_name, *helo;
    const char *subject, *message_id;       /* NULL: absent */
    uint64_t size;
    uint64_t delay_ms;
    const filter_scan_result_t *res;        /* NULL: no finished scan */
    const filter_rcpt_settings_t *settings; /* NULL: not resolved */
} filter_msg_info_t;

/*
 * Recipient i (address rcpt) ended with action ("deliver", "tag",
 * "quarantine", "discard", "reject", "tempfail"), routed as verdict, and
 * answered code/text: count it, log it, and queue its message_log row.
 */
void filter_msg_report(struct filter_server *srv, const filter_msg_info_t *mi, size_t i,
                       const char *rcpt, const char *action, const char *verdict, int code,
                       const char *text);

#endif
