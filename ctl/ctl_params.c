#include "config.h"
extern int ctl_params_placeholder;
