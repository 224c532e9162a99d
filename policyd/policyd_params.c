#include "config.h"
extern int policyd_params_placeholder;
