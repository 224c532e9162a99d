/*
 * filter_engine: the content scanner of osprey-filter.  Parses the message
 * with osp_mime and evaluates the configured rule files (osp_rules; the
 * shipped default.rules and the site's own) against it and its envelope.
 * The rules' total score goes into the scan result (the session compares
 * it with each recipient's thresholds) and their strongest action raises
 * every recipient's verdict; the rules that hit are listed in an
 * X-Osprey-Rules header.
 *
 *   filter_scanner_t s;
 *   if (filter_engine_create(files, nfiles, max_size, &s, &err) < 0) fatal;
 *   filter_scan_add(scan, &s);          (the pipeline owns it from then on)
 *
 * Rule sets are compiled once at start-up and shared read-only by the
 * thread-pool threads; each scan makes its own match scratch.  Messages
 * larger than max_size are not content-scanned (score 0, logged).
 */
#ifndef FILTER_ENGINE_H
#define FILTER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "filter_scan.h"
#include "osp_buf.h"

/* files: rule files in order, least specific first (borrowed for the call). */
int filter_engine_create(const char *const *files, size_t nfiles, size_t max_size,
                         filter_scanner_t *s_r, osp_buf_t *err);

/*
 * Parse the message in the pipeline's first step (filter_scan_set_prepare)
 * and, with tokenize, make its Bayes tokens there, so that the rules run
 * in the second step with each account's Bayes probability.  engine: as
 * filled by filter_engine_create and added to scan.
 */
void filter_engine_two_step(filter_scan_t *scan, const filter_scanner_t *engine, bool tokenize);

/*
 * A recipient's score is the rules' total (the BAYES_* bands of the
 * default rules see the probability in the "bayes" field) plus weight x
 * the Bayes probability when there is one, so that messages in the same
 * band are still ranked by Bayes; bench/bayes measures exactly this sum.
 */
#define FILTER_ENGINE_BAYES_WEIGHT 4.0
void filter_engine_bayes_weight(const filter_scanner_t *engine, double weight);

#endif
