/*
 * filter_metrics: osprey-filter's Prometheus metrics and health endpoint.
 *
 * A tiny HTTP/1.0 server on the loop (filter_metrics_listen): "GET
 * /metrics" renders an osp_metrics registry in the Prometheus text format,
 * "GET /health" answers "ok"; anything else 404.  One request per
 * connection, the request head limited to 2048 bytes and 5 seconds, at most
 * 32 connections at once.  The numbers are copied from the server, the
 * store, the log writer and the account cache at each render (the hot path
 * does not touch the registry).
 *
 *   m = filter_metrics_create(loop, "127.0.0.1:10027", srv, st, lw, fa, err, sizeof(err));
 *   ...
 *   filter_metrics_close(m);     freed now; the endpoint's handles close later
 */
#ifndef FILTER_METRICS_H
#define FILTER_METRICS_H

#include <stddef.h>

#include <uv.h>

#include "filter_accounts.h"
#include "filter_bayes.h"
#include "filter_server.h"

struct osp_store;
struct osp_store_log;
typedef struct filter_metrics filter_metrics_t;

/* Everything borrowed; st, lw and fa may be NULL.  NULL with err set if it cannot listen. */
filter_metrics_t *filter_metrics_create(uv_loop_t *loop, const char *listen,
                                        const filter_server_t *srv, struct osp_store *st,
                                        struct osp_store_log *lw, filter_accounts_t *fa,
                                        char *err, size_t errsize);
/* The message log writer, once it exists (NULL m is fine). */
void filter_metrics_set_log(filter_metrics_t *m, struct osp_store_log *lw);
/* The Bayes classifier, when filter_bayes is on (NULL m is fine). */
void filter_metrics_set_bayes(filter_metrics_t *m, filter_bayes_t *fb);
/* Forget the store, log writer, account cache and Bayes (they are being freed). */
void filter_metrics_detach(filter_metrics_t *m);
void filter_metrics_close(filter_metrics_t *m);

#endif
