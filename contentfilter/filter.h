/* osprey-filter: after-queue SMTP/LMTP content filter. */
#ifndef FILTER_H
#define FILTER_H

#include "osp_config.h"

/* filter_params.c */
extern const osp_param_def_t filter_params[];

#endif
