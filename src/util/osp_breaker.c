#include "config.h"
extern int osp_breaker_placeholder;
