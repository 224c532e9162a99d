/*
 * filter_server: osprey-filter's listeners, session accounting and the
 * objects every session shares (configuration, scan pipeline, quarantine,
 * reinjection client).
 *
 *   filter_conf_load(cfg, &conf, &err)             (start-up; class-2 errors)
 *   srv = filter_server_create(loop, &conf, scan, quarantine, reinject);
 *   filter_server_listen(srv, "inet:127.0.0.1:10025", err, sizeof(err));
 *   uv_run(loop) ... filter_server_shutdown(srv) on SIGTERM ...
 *   filter_server_free(&srv);   (after uv_run returned)
 *
 * Back-pressure: at most conf.max_sessions sessions are served; a
 * connection beyond that gets "421 4.3.2" and is closed, which makes
 * Postfix's smtp/lmtp client defer and retry later.
 */
#ifndef FILTER_SERVER_H
#define FILTER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "osp_config.h"
#include "filter_accounts.h"
#include "filter_conn.h"
#include "filter_quarantine.h"
#include "filter_reinject.h"
#include "filter_scan.h"

/* Test-only pause points (filter_debug_pause_stage). */
enum filter_pause_stage {
    FILTER_PAUSE_NONE = 0,
    FILTER_PAUSE_DATA,              /* message received, before the scan */
    FILTER_PAUSE_AFTER_SCAN,        /* scanned, before reinjection/quarantine */
    FILTER_PAUSE_AFTER_REINJECT,    /* delivered downstream, before our reply */
};

/* Everything read from the configuration, once, at start-up. */
typedef struct filter_conf {
    const char *const *listen;      /* borrowed from the config */
    size_t nlisten;
    const char *const *milter_listen;   /* borrowed: milter listeners */
    size_t nmilter_listen;
    unsigned max_sessions;
    unsigned milter_max_sessions;   /* milter connections (one per Postfix smtpd) */
    uint64_t size_limit;
    size_t memory_threshold;
    const char *temp_dir;           /* borrowed */
    const char *quarantine_dir;     /* borrowed */
    const char *hostname;           /* borrowed: our name in the greeting */
    uint64_t timeout_ms;            /* per command / per read */
    uint64_t process_timeout_ms;    /* scan + delivery of one message */
    size_t line_limit;
    unsigned rcpt_limit;
    unsigned error_limit;
    const char *tag_prefix;         /* borrowed */
    filter_scan_thresholds_t thresholds;
    const char *const *static_rules;
    size_t nstatic_rules;
    enum filter_pause_stage pause_stage;
    uint64_t pause_ms;
    filter_reinject_conf_t reinject;  /* target and helo owned */
    /* Store-backed parts (main.c wires them; all optional). */
    const char *quarantine_backend; /* "database" or "spool" (borrowed) */
    bool account_settings;          /* resolve recipients' settings */
    uint64_t account_cache_ttl_ms;
    size_t account_cache_size;
    uint64_t account_timeout_ms;
    uint64_t quarantine_timeout_ms;
    bool message_log;
    const char *message_log_journal;/* borrowed */
    const char *metrics_listen;     /* borrowed; "" disables */
} filter_conf_t;

/* Read and check the parameters; -1 with err set names the parameter. */
int filter_conf_load(const osp_config_t *cfg, filter_conf_t *conf, char *err, size_t errsize);
void filter_conf_close(filter_conf_t *conf);

typedef struct filter_session filter_session_t;

typedef struct filter_listener {
    filter_stream_t h;
    bool is_unix;
    bool milter;                    /* milter protocol, not SMTP/LMTP */
    struct filter_server *srv;
} filter_listener_t;

typedef struct filter_server {
    uv_loop_t *loop;                /* borrowed */
    const filter_conf_t *conf;      /* borrowed */
    filter_scan_t *scan;            /* borrowed */
    filter_quarantine_t *quarantine;/* borrowed */
    filter_reinject_t *reinject;    /* borrowed */
    filter_accounts_t *accounts;    /* borrowed; NULL: global defaults for everyone */
    filter_rcpt_settings_t defaults;/* the global thresholds, prefix and action */
    struct osp_store_log *msglog;   /* borrowed; NULL: no message log */
    filter_listener_t *listeners;   /* owned array */
    size_t nlisteners;
    unsigned listeners_open;
    filter_session_t *sessions;     /* every live session (list) */
    struct filter_milter *milters;  /* every live milter connection (list) */
    unsigned nsessions;             /* sessions being served */
    unsigned nmilters;              /* milter connections being served */
    unsigned nrefused;              /* busy sessions saying 421 */
    uint64_t seq;                   /* session ids */
    bool shutting_down;
    /* Counters since start, for logs and (later) metrics. */
    uint64_t n_messages, n_delivered, n_quarantined, n_discarded, n_rejected, n_tempfail;
    uint64_t n_log_dropped;         /* message log rows the writer refused */
} filter_server_t;

filter_server_t *filter_server_create(uv_loop_t *loop, const filter_conf_t *conf,
                                      filter_scan_t *scan, filter_quarantine_t *quarantine,
                                      filter_reinject_t *reinject);
/*
 * "inet:ADDR:PORT" or "unix:PATH", for SMTP/LMTP or (milter) the milter
 * protocol; 0, or -1 with err set (start-up error).
 */
int filter_server_listen(filter_server_t *srv, const char *spec, bool milter, char *err,
                         size_t errsize);
/*
 * Stop accepting, drop every session (a message without a reply is
 * retried by Postfix), abort reinjection.  Handles close as the loop runs.
 */
void filter_server_shutdown(filter_server_t *srv);
void filter_server_free(filter_server_t **srvp);

/* For filter_session.c: a session is gone (after its last close). */
void filter_server__session_gone(filter_server_t *srv, filter_session_t *sess, bool counted);
/* For filter_milter.c: a milter connection is gone. */
void filter_server__milter_gone(filter_server_t *srv, struct filter_milter *m, bool counted);

#endif
