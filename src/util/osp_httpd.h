/*
 * osp_httpd: the tiny loopback HTTP/1.0 endpoint every daemon serves for
 * monitoring: "GET /metrics" renders an osp_metrics registry in Prometheus
 * text format (its collect callback runs first), "GET /health" answers
 * "ok".  One request per connection, bounded head and body, a 5-second
 * deadline per connection and at most 32 connections at once.
 *
 *   h = osp_httpd_create(loop, "127.0.0.1:10041", "policyd_metrics_listen",
 *                        reg, err, sizeof(err));
 *   ...
 *   osp_httpd_close(h);   (frees itself once its handles are closed; the
 *                          registry is borrowed and no longer used after)
 */
#ifndef OSP_HTTPD_H
#define OSP_HTTPD_H

#include <stddef.h>

#include <uv.h>

#include "osp_metrics.h"

typedef struct osp_httpd osp_httpd_t;

/*
 * Listen on "ADDRESS:PORT" (IPv4, or [IPv6]:PORT).  param names the
 * configuration parameter in error text.  reg is borrowed and must live
 * until osp_httpd_close.  NULL with err set on failure.
 */
osp_httpd_t *osp_httpd_create(uv_loop_t *loop, const char *listen, const char *param,
                              osp_metrics_t *reg, char *err, size_t errsize);
/* Stop listening and close every connection; NULL is fine. */
void osp_httpd_close(osp_httpd_t *h);

#endif
