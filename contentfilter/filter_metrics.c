/* filter_metrics: the registry, served on /metrics and /health by osp_httpd. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_buf.h"
#include "osp_httpd.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_metrics.h"
#include "osp_store.h"
#include "filter_metrics.h"

/* A counter fed from a monotonic source value at render time. */
typedef struct fm_counter {
    osp_counter_t *c;
    uint64_t last;
} fm_counter_t;

enum {
    FM_MESSAGES, FM_DELIVERED, FM_QUARANTINED, FM_DISCARDED, FM_REJECTED, FM_TEMPFAIL,
    FM_LOG_DROPPED, FM_ACC_HITS, FM_ACC_MISSES, FM_ACC_STALE, FM_ACC_TEMPFAIL,
    FM_ACC_INVALIDATIONS,
    FM_LOG_APPENDED, FM_LOG_COMMITTED, FM_LOG_JOURNALED, FM_LOG_LOST,
    FM_STORE_REQUESTS, FM_STORE_TEMPFAIL,
    FM_BAYES_SCANS, FM_BAYES_DB_LOOKUPS, FM_BAYES_FAILURES, FM_BAYES_CACHE_HITS,
    FM_BAYES_CACHE_MISSES, FM_BAYES_CACHE_EVICTIONS, FM_BAYES_LEARNED_SPAM, FM_BAYES_LEARNED_HAM,
    FM__COUNT
};

struct filter_metrics {
    osp_httpd_t *http;
    const filter_server_t *srv;
    osp_store_t *st;
    osp_store_log_t *lw;
    filter_accounts_t *fa;
    filter_bayes_t *fb;
    osp_metrics_t *reg;
    fm_counter_t counters[FM__COUNT];
    osp_gauge_t *sessions, *milters, *store_up, *breaker_open, *log_queued, *log_journal_pending,
        *acc_entries, *bayes_entries;
};

static void fm_feed(fm_counter_t *c, uint64_t v)
{
    if (v > c->last)
        osp_counter_add(c->c, v - c->last);
    c->last = v;
}

static void fm_collect(osp_metrics_t *reg, void *ctx)
{
    filter_metrics_t *m = ctx;
    const filter_server_t *srv = m->srv;

    (void)reg;
    fm_feed(&m->counters[FM_MESSAGES], srv->n_messages);
    fm_feed(&m->counters[FM_DELIVERED], srv->n_delivered);
    fm_feed(&m->counters[FM_QUARANTINED], srv->n_quarantined);
    fm_feed(&m->counters[FM_DISCARDED], srv->n_discarded);
    fm_feed(&m->counters[FM_REJECTED], srv->n_rejected);
    fm_feed(&m->counters[FM_TEMPFAIL], srv->n_tempfail);
    fm_feed(&m->counters[FM_LOG_DROPPED], srv->n_log_dropped);
    osp_gauge_set(m->sessions, (double)srv->nsessions);
    osp_gauge_set(m->milters, (double)srv->nmilters);
    if (m->fa) {
        filter_accounts_stats_t a;
        filter_accounts_stats(m->fa, &a);
        fm_feed(&m->counters[FM_ACC_HITS], a.hits);
        fm_feed(&m->counters[FM_ACC_MISSES], a.misses);
        fm_feed(&m->counters[FM_ACC_STALE], a.stale);
        fm_feed(&m->counters[FM_ACC_TEMPFAIL], a.tempfail);
        fm_feed(&m->counters[FM_ACC_INVALIDATIONS], a.invalidations);
        osp_gauge_set(m->acc_entries, (double)a.entries);
    }
    if (m->fb) {
        filter_bayes_stats_t b;
        filter_bayes_cache_stats_t c;
        filter_bayes_stats(m->fb, &b);
        filter_bayes_cache_stats(filter_bayes_cache(m->fb), &c);
        fm_feed(&m->counters[FM_BAYES_SCANS], b.lookups);
        fm_feed(&m->counters[FM_BAYES_DB_LOOKUPS], b.db_lookups);
        fm_feed(&m->counters[FM_BAYES_FAILURES], b.failures);
        fm_feed(&m->counters[FM_BAYES_LEARNED_SPAM], b.learned_spam);
        fm_feed(&m->counters[FM_BAYES_LEARNED_HAM], b.learned_ham);
        fm_feed(&m->counters[FM_BAYES_CACHE_HITS], c.hits);
        fm_feed(&m->counters[FM_BAYES_CACHE_MISSES], c.misses);
        fm_feed(&m->counters[FM_BAYES_CACHE_EVICTIONS], c.evictions);
        osp_gauge_set(m->bayes_entries, (double)c.size);
    }
    if (m->lw) {
        osp_store_log_stats_t l;
        osp_store_log_stats(m->lw, &l);
        fm_feed(&m->counters[FM_LOG_APPENDED], l.appended);
        fm_feed(&m->counters[FM_LOG_COMMITTED], l.committed);
        fm_feed(&m->counters[FM_LOG_JOURNALED], l.journaled);
        fm_feed(&m->counters[FM_LOG_LOST], l.dropped);
        osp_gauge_set(m->log_queued, (double)l.queued);
        osp_gauge_set(m->log_journal_pending, l.journal_pending ? 1 : 0);
    }
    if (m->st) {
        osp_store_stats_t s;
        osp_store_stats(m->st, &s);
        fm_feed(&m->counters[FM_STORE_REQUESTS], s.requests);
        fm_feed(&m->counters[FM_STORE_TEMPFAIL], s.tempfail + s.rejected);
        osp_gauge_set(m->store_up, (double)s.connections_up);
        osp_gauge_set(m->breaker_open, s.breaker == OSP_BREAKER_CLOSED ? 0 : 1);
    }
}

static void fm_register(filter_metrics_t *m)
{
    static const struct {
        int id;
        const char *name, *help;
    } defs[] = {
        { FM_MESSAGES, "osprey_filter_messages_total", "Messages received (end of DATA)." },
        { FM_DELIVERED, "osprey_filter_recipients_delivered_total",
          "Recipients answered 2xx after reinjection (deliver or tag)." },
        { FM_QUARANTINED, "osprey_filter_recipients_quarantined_total",
          "Recipients answered 2xx after the quarantine committed." },
        { FM_DISCARDED, "osprey_filter_recipients_discarded_total", "Recipients discarded." },
        { FM_REJECTED, "osprey_filter_recipients_rejected_total", "Recipients rejected (5xx)." },
        { FM_TEMPFAIL, "osprey_filter_recipients_tempfail_total",
          "Recipients answered 4xx (Postfix retries)." },
        { FM_LOG_DROPPED, "osprey_filter_message_log_refused_total",
          "Message log rows the writer refused." },
        { FM_ACC_HITS, "osprey_filter_account_cache_hits_total", "Recipient settings from the cache." },
        { FM_ACC_MISSES, "osprey_filter_account_cache_misses_total",
          "Recipient settings looked up in the database." },
        { FM_ACC_STALE, "osprey_filter_account_stale_total",
          "Expired cached settings used after a temporary failure." },
        { FM_ACC_TEMPFAIL, "osprey_filter_account_tempfail_total",
          "Recipient lookups that failed temporarily." },
        { FM_ACC_INVALIDATIONS, "osprey_filter_account_cache_invalidations_total",
          "Account changes announced by the database (NOTIFY) that expired the cache." },
        { FM_LOG_APPENDED, "osprey_filter_message_log_rows_total", "Message log rows accepted." },
        { FM_LOG_COMMITTED, "osprey_filter_message_log_committed_total",
          "Message log rows written with COPY." },
        { FM_LOG_JOURNALED, "osprey_filter_message_log_journaled_total",
          "Message log rows written to the local journal." },
        { FM_LOG_LOST, "osprey_filter_message_log_dropped_total",
          "Message log rows lost (journal unwritable)." },
        { FM_STORE_REQUESTS, "osprey_filter_store_requests_total", "Database requests." },
        { FM_STORE_TEMPFAIL, "osprey_filter_store_failures_total",
          "Database requests that failed temporarily or were refused by the breaker." },
        { FM_BAYES_SCANS, "osprey_filter_bayes_lookups_total",
          "Bayes classifications asked for (one per message and account)." },
        { FM_BAYES_DB_LOOKUPS, "osprey_filter_bayes_db_lookups_total",
          "Token lookups that went to the database (cache misses)." },
        { FM_BAYES_FAILURES, "osprey_filter_bayes_failures_total",
          "Token lookups that failed (the message was scanned without Bayes)." },
        { FM_BAYES_CACHE_HITS, "osprey_filter_bayes_cache_hits_total", "Tokens found in the cache." },
        { FM_BAYES_CACHE_MISSES, "osprey_filter_bayes_cache_misses_total",
          "Tokens not in the cache, or expired." },
        { FM_BAYES_CACHE_EVICTIONS, "osprey_filter_bayes_cache_evictions_total",
          "Tokens evicted from the full cache (least recently used)." },
        { FM_BAYES_LEARNED_SPAM, "osprey_filter_bayes_autolearn_spam_total",
          "Messages autolearned as spam." },
        { FM_BAYES_LEARNED_HAM, "osprey_filter_bayes_autolearn_ham_total",
          "Messages autolearned as ham." },
    };
    size_t i;

    m->reg = osp_metrics_create();
    for (i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        m->counters[defs[i].id].c = osp_metrics_counter(m->reg, defs[i].name, defs[i].help);
    m->sessions = osp_metrics_gauge(m->reg, "osprey_filter_sessions", "Sessions being served.");
    m->milters = osp_metrics_gauge(m->reg, "osprey_filter_milter_connections",
                                   "Milter connections being served.");
    m->store_up = osp_metrics_gauge(m->reg, "osprey_filter_store_connections_up",
                                    "Database connections ready.");
    m->breaker_open = osp_metrics_gauge(m->reg, "osprey_filter_store_breaker_open",
                                        "1 while the database circuit breaker is not closed.");
    m->log_queued = osp_metrics_gauge(m->reg, "osprey_filter_message_log_queued",
                                      "Message log rows in memory.");
    m->log_journal_pending = osp_metrics_gauge(m->reg, "osprey_filter_message_log_journal_pending",
                                               "1 while a journal waits to be replayed.");
    m->acc_entries = osp_metrics_gauge(m->reg, "osprey_filter_account_cache_entries",
                                       "Recipients in the settings cache.");
    m->bayes_entries = osp_metrics_gauge(m->reg, "osprey_filter_bayes_cache_entries",
                                         "(account, token) counts in the Bayes cache.");
    osp_metrics_set_collect(m->reg, fm_collect, m);
}

filter_metrics_t *filter_metrics_create(uv_loop_t *loop, const char *listen,
                                        const filter_server_t *srv, struct osp_store *st,
                                        struct osp_store_log *lw, filter_accounts_t *fa,
                                        char *err, size_t errsize)
{
    filter_metrics_t *m = osp_calloc(1, sizeof(*m));

    m->srv = srv;
    m->st = st;
    m->lw = lw;
    m->fa = fa;
    fm_register(m);
    m->http = osp_httpd_create(loop, listen, "filter_metrics_listen", m->reg, err, errsize);
    if (m->http == NULL) {
        osp_metrics_free(&m->reg);
        free(m);
        return NULL;
    }
    return m;
}

void filter_metrics_set_log(filter_metrics_t *m, struct osp_store_log *lw)
{
    if (m)
        m->lw = lw;
}

void filter_metrics_set_bayes(filter_metrics_t *m, filter_bayes_t *fb)
{
    if (m)
        m->fb = fb;
}

void filter_metrics_detach(filter_metrics_t *m)
{
    if (m == NULL)
        return;
    m->st = NULL;
    m->lw = NULL;
    m->fa = NULL;
    m->fb = NULL;
}

void filter_metrics_close(filter_metrics_t *m)
{
    if (m == NULL)
        return;
    /* The endpoint renders synchronously and closes every connection now,
     * so the registry is not used after this. */
    osp_httpd_close(m->http);
    osp_metrics_free(&m->reg);
    free(m);
}
