/* osprey-worker: runs deferred jobs from the database job queue. */
#ifndef WORKER_H
#define WORKER_H

#include "osp_config.h"

/* worker_params.c */
extern const osp_param_def_t worker_params[];

#endif
