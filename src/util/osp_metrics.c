#include "config.h"
extern int osp_metrics_placeholder;
