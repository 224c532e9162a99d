/* ospreyctl: the administrator's command line. */
#ifndef CTL_H
#define CTL_H

#include "osp_config.h"

/* ctl_params.c */
extern const osp_param_def_t ctl_params[];

#endif
