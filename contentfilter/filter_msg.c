/* filter_msg: per-message helpers shared by the SMTP/LMTP and milter front ends. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_store.h"
#include "filter_msg.h"
#include "filter_server.h"

char *filter_printable(const char *s)
{
    osp_buf_t b;

    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_printable(&b, s, strlen(s));
    return osp_buf_steal(&b);
}

void filter_scan_id_make(char *buf, size_t size)
{
    static uint32_t counter;

    osp_snprintf(buf, size, "%08llX%05X%04X", (unsigned long long)time(NULL),
                 (unsigned)getpid() & 0xFFFFF, (unsigned)(++counter & 0xFFFF));
}

char *filter_header_value(const char *h, size_t len, const char *name)
{
    size_t nlen = strlen(name), i = 0;

    while (i < len) {
        size_t eol = i;
        while (eol < len && h[eol] != '\n')
            eol++;
        if (eol - i > nlen && strncasecmp(h + i, name, nlen) == 0 && h[i + nlen] == ':') {
            osp_buf_t v;
            size_t j = i + nlen + 1;
            osp_buf_init(&v, 998);
            for (;;) {
                for (; j < eol; j++)
                    if (h[j] != '\r' && osp_buf_append_char(&v, h[j] == '\t' ? ' ' : h[j]) < 0)
                        break;
                /* continuation lines start with white space */
                if (eol + 1 < len && (h[eol + 1] == ' ' || h[eol + 1] == '\t')) {
                    j = eol + 1;
                    eol = j;
                    while (eol < len && h[eol] != '\n')
                        eol++;
                    continue;
                }
                break;
            }
            {
                char *r = osp_buf_steal(&v), *p = r, *e;
                while (*p == ' ')
                    p++;
                memmove(r, p, strlen(p) + 1);
                e = r + strlen(r);
                while (e > r && e[-1] == ' ')
                    *--e = '\0';
                return r;
            }
        }
        i = eol + 1;
    }
    return NULL;
}

void filter_own_headers(const char *scan_id, const filter_scan_result_t *res, size_t ri,
                        bool spam, const filter_rcpt_settings_t *set, osp_buf_t *out)
{
    double score = filter_scan_rcpt_score(res, ri);

    osp_buf_printf(out, "X-Osprey-Scan-Id: %s\r\n", scan_id);
    osp_buf_printf(out, "X-Spam-Score: %.1f\r\n", score);
    osp_buf_printf(out, "X-Spam-Status: %s, score=%.1f tag=%.1f quarantine=%.1f\r\n",
                   spam ? "Yes" : "No", score, set->tag_score, set->quarantine_score);
    filter_scan_bayes_header(res, ri, out);
    osp_buf_append(out, res->add_headers.data, res->add_headers.len);
}

void filter_apply_thresholds(filter_scan_result_t *res, const filter_rcpt_settings_t *settings)
{
    size_t i;

    for (i = 0; i < res->nrcpt; i++) {
        const filter_rcpt_settings_t *set = &settings[i];
        double score = filter_scan_rcpt_score(res, i);
        char why[64];
        if (score >= set->quarantine_score) {
            osp_snprintf(why, sizeof(why), "score %.1f >= %.1f", score, set->quarantine_score);
            filter_scan_result_raise(res, i, set->spam_action, why);
        }
        if (score >= set->tag_score) {
            osp_snprintf(why, sizeof(why), "score %.1f >= %.1f", score, set->tag_score);
            filter_scan_result_raise(res, i, FILTER_ACTION_TAG, why);
        }
    }
}

int filter_msg_scan_start(filter_scan_job_t *job, filter_scan_t *scan, uv_loop_t *loop,
                          const filter_scan_msg_t *msg, const filter_rcpt_settings_t *settings,
                          filter_scan_done_cb done, void *data)
{
    size_t i;

    filter_scan_job_init(job, scan, msg);
    for (i = 0; i < msg->nrcpt; i++)
        filter_scan_job_set_account(job, i, settings[i].account_id);
    job->work.data = data;
    return filter_scan_start(job, loop, done);
}

void filter_qset_init(filter_qset_t *qs)
{
    memset(qs, 0, sizeof(*qs));
    osp_buf_init(&qs->headers, OSP_BUF_UNLIMITED);
}

void filter_qset_add(filter_qset_t *qs, const char *rcpt, size_t i, int64_t account)
{
    qs->rcpts = osp_reallocarray(qs->rcpts, qs->n + 1, sizeof(*qs->rcpts));
    qs->map = osp_reallocarray(qs->map, qs->n + 1, sizeof(*qs->map));
    qs->accounts = osp_reallocarray(qs->accounts, qs->n + 1, sizeof(*qs->accounts));
    qs->rcpts[qs->n] = rcpt;
    qs->map[qs->n] = i;
    qs->accounts[qs->n] = account;
    qs->n++;
}

int filter_qset_store(filter_qset_t *qs, filter_quarantine_t *q, const filter_scan_msg_t *msg,
                      const filter_scan_result_t *res, const filter_rcpt_settings_t *settings,
                      const char *subject, const char *message_id, filter_quarantine_cb done,
                      void *data)
{
    filter_quarantine_req_t *r = &qs->req;
    size_t first = qs->map[0];

    filter_own_headers(msg->scan_id, res, first, true, &settings[first], &qs->headers);
    memset(r, 0, sizeof(*r));
    r->scan_id = msg->scan_id;
    r->queue_id = msg->queue_id;
    r->sender = msg->sender;
    r->nrcpt = qs->n;
    r->rcpts = qs->rcpts;
    r->reason = res->rcpt[first].reason;
    r->score = filter_scan_rcpt_score(res, first);
    r->add_headers = qs->headers.data ? qs->headers.data : "";
    r->add_headers_len = qs->headers.len;
    r->body = msg->body;
    r->accounts = qs->accounts;
    r->client_addr = msg->client_addr;
    r->client_name = msg->client_name;
    r->helo = msg->helo;
    r->subject = subject;
    r->message_id = message_id;
    r->strip_authserv_id = res->strip_authserv_id;
    r->data = data;
    return filter_quarantine_store(q, r, done);
}

void filter_qset_free(filter_qset_t *qs)
{
    free(qs->rcpts);
    free(qs->map);
    free(qs->accounts);
    osp_buf_close(&qs->headers);
    memset(qs, 0, sizeof(*qs));
}

/* One message_log row for recipient i (never blocks; a refused row is counted). */
static void filter_msg_log_row(filter_server_t *srv, const filter_msg_info_t *mi, size_t i,
                               const char *rcpt, const char *action, int code,
                               const char *text)
{
    osp_store_log_row_t row;
    char delivery[512], rqid[64] = "";
    const char *rules[2], *q;
    char bayes[32];

    memset(&row, 0, sizeof(row));
    row.account_id = mi->settings ? mi->settings[i].account_id : -1;
    row.queue_id = mi->queue_id && *mi->queue_id ? mi->queue_id : NULL;
    /* The reinjection smtpd's "250 2.0.0 Ok: queued as QUEUEID". */
    if ((q = strstr(text, "queued as ")) != NULL) {
        size_t n = strspn(q + 10, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
        if (n > 0 && n < sizeof(rqid)) {
            memcpy(rqid, q + 10, n);
            rqid[n] = '\0';
            row.reinject_queue_id = rqid;
        }
    }
    row.message_id = mi->message_id;
    row.client_address = mi->client_addr && *mi->client_addr ? mi->client_addr : NULL;
    row.client_name = mi->client_name && *mi->client_name ? mi->client_name : NULL;
    row.helo = mi->helo && *mi->helo ? mi->helo : NULL;
    row.sender = mi->sender;
    row.recipient = rcpt;
    row.subject = mi->subject;
    row.size = (int64_t)mi->size;
    row.score = mi->res ? filter_scan_rcpt_score(mi->res, i) : NAN;
    row.verdict = action;
    if (mi->res && i < mi->res->nrcpt && mi->res->rcpt[i].reason[0]) {
        rules[0] = mi->res->rcpt[i].reason;
        row.rules_hit = rules;
        row.nrules_hit = 1;
    }
    if (mi->res && filter_scan_rcpt_bayes(mi->res, i)) {
        osp_snprintf(bayes, sizeof(bayes), "bayes=%.4f", filter_scan_rcpt_bayes(mi->res, i)->prob);
        rules[row.nrules_hit++] = bayes;
        row.rules_hit = rules;
    }
    osp_snprintf(delivery, sizeof(delivery), "%d %s", code, text);
    row.delivery = delivery;
    if (osp_store_log_append(srv->msglog, &row) < 0)
        srv->n_log_dropped++;
}

void filter_msg_report(filter_server_t *srv, const filter_msg_info_t *mi, size_t i,
                       const char *rcpt, const char *action, const char *verdict, int code,
                       const char *text)
{
    const filter_bayes_answer_t *ba = mi->res ? filter_scan_rcpt_bayes(mi->res, i) : NULL;
    char bayes[16] = "none";
    char *to = filter_printable(rcpt);

    if (strcmp(action, "deliver") == 0 || strcmp(action, "tag") == 0)
        srv->n_delivered++;
    else if (strcmp(action, "quarantine") == 0)
        srv->n_quarantined++;
    else if (strcmp(action, "discard") == 0)
        srv->n_discarded++;
    else if (strcmp(action, "reject") == 0)
        srv->n_rejected++;
    else
        srv->n_tempfail++;
    if (ba)
        osp_snprintf(bayes, sizeof(bayes), "%.4f", ba->prob);
    osp_info("%s: scan_id=%s to=<%s> action=%s verdict=%s score=%.1f bayes=%s status=%d "
             "delay=%.3f reply=\"%s\"", mi->log_id, mi->scan_id, to, action, verdict,
             mi->res ? filter_scan_rcpt_score(mi->res, i) : 0.0, bayes, code,
             (double)mi->delay_ms / 1000.0, text);
    free(to);
    if (srv->msglog)
        filter_msg_log_row(srv, mi, i, rcpt, action, code, text);
}
