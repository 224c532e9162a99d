/* filter_engine: MIME parsing and rules as a filter_scan scanner. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "filter_engine.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_mime.h"
#include "osp_rules.h"

typedef struct filter_engine {
    osp_rules_t **sets;     /* owned */
    size_t nsets;
    size_t max_size;
} filter_engine_t;

static void filter_engine__free(void *ctx)
{
    filter_engine_t *e = ctx;
    size_t i;

    for (i = 0; i < e->nsets; i++)
        osp_rules_free(&e->sets[i]);
    free(e->sets);
    free(e);
}

static enum filter_action filter_engine__action(enum osp_rules_action a)
{
    switch (a) {
    case OSP_RULES_REJECT:
        return FILTER_ACTION_REJECT;
    case OSP_RULES_QUARANTINE:
        return FILTER_ACTION_QUARANTINE;
    case OSP_RULES_DISCARD:
        return FILTER_ACTION_DISCARD;
    case OSP_RULES_TAG:
        return FILTER_ACTION_TAG;
    case OSP_RULES_DELIVER:
        return FILTER_ACTION_DELIVER;
    }
    return FILTER_ACTION_DELIVER;
}

static int filter_engine__scan(void *ctx, const filter_scan_msg_t *msg, filter_scan_result_t *res)
{
    filter_engine_t *e = ctx;
    uint64_t size = msg->body->size;
    char *data;
    ssize_t n;
    osp_mime_message_t *m;
    osp_rules_ctx_t rc;
    osp_rules_result_t rr;
    osp_rules_scratch_t *scratch;
    size_t i, len;

    if (size > e->max_size) {
        osp_info("%s: %s: size %llu over filter_scan_size_limit: not content-scanned",
                 msg->scan_id, msg->queue_id, (unsigned long long)size);
        return 0;
    }
    data = osp_malloc((size_t)size + 1);
    n = filter_body_read(msg->body, 0, data, (size_t)size);
    if (n < 0 || (uint64_t)n != size) {
        free(data);
        osp_snprintf(res->error, sizeof(res->error), "cannot read the message body");
        return -1;
    }
    m = osp_mime_parse(data, (size_t)n, NULL);
    osp_rules_ctx_init(&rc);
    rc.sender = msg->sender;
    rc.recipients = msg->rcpts;
    rc.n_recipients = msg->nrcpt;
    rc.client_address = *msg->client_addr ? msg->client_addr : NULL;
    rc.client_name = *msg->client_name ? msg->client_name : NULL;
    rc.helo = *msg->helo ? msg->helo : NULL;
    rc.msg = m;
    rc.size = (size_t)size;
    osp_rules_result_init(&rr);
    scratch = osp_rules_scratch_create();
    osp_rules_eval_sets((const osp_rules_t *const *)e->sets, e->nsets, &rc, scratch, &rr);
    osp_rules_scratch_free(&scratch);

    res->score += rr.score;
    if (rr.action != OSP_RULES_DELIVER && rr.n_hits) {
        char why[128];
        for (i = 0; i < rr.n_hits && rr.hits[i].action != rr.action; i++)
            ;
        osp_snprintf(why, sizeof(why), "rule %s", i < rr.n_hits ? rr.hits[i].name : "?");
        filter_scan_result_raise(res, FILTER_ALL_RCPTS, filter_engine__action(rr.action), why);
    }
    if (rr.n_hits) {
        len = res->add_headers.len;
        if (osp_buf_append_str(&res->add_headers, "X-Osprey-Rules: ") == 0) {
            for (i = 0; i < rr.n_hits; i++)
                if (osp_buf_printf(&res->add_headers, "%s%s=%.1f", i ? ",\r\n\t" : "",
                                   rr.hits[i].name, rr.hits[i].score) < 0)
                    break;
            if (i < rr.n_hits || osp_buf_append_str(&res->add_headers, "\r\n") < 0)
                osp_buf_truncate(&res->add_headers, len);
        }
    }
    if (rr.n_errors)
        osp_warn("%s: %s: %u rule(s) skipped after a regular-expression limit (first: %s)",
                 msg->scan_id, msg->queue_id, rr.n_errors,
                 rr.error_rule ? rr.error_rule : "?");
    osp_rules_result_close(&rr);
    osp_mime_message_free(&m);
    free(data);
    return 0;
}

int filter_engine_create(const char *const *files, size_t nfiles, size_t max_size,
                         filter_scanner_t *s_r, osp_buf_t *err)
{
    filter_engine_t *e = osp_calloc(1, sizeof(*e));
    size_t i;

    e->sets = osp_calloc(nfiles ? nfiles : 1, sizeof(osp_rules_t *));
    e->max_size = max_size;
    for (i = 0; i < nfiles; i++) {
        e->sets[i] = osp_rules_load_file(files[i], NULL, err, NULL);
        if (e->sets[i] == NULL) {
            e->nsets = i;
            filter_engine__free(e);
            return -1;
        }
        e->nsets = i + 1;
    }
    memset(s_r, 0, sizeof(*s_r));
    s_r->name = "engine";
    s_r->scan = filter_engine__scan;
    s_r->ctx = e;
    s_r->free_ctx = filter_engine__free;
    return 0;
}
