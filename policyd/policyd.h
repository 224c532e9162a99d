/* osprey-policyd: Postfix SMTPD access policy delegation server. */
#ifndef POLICYD_H
#define POLICYD_H

#include "osp_config.h"

/* policyd_params.c */
extern const osp_param_def_t policyd_params[];

#endif
