#include "config.h"
extern int filter_params_placeholder;
