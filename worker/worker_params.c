#include "config.h"
extern int worker_params_placeholder;
