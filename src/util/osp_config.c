#include "config.h"
extern int osp_config_placeholder;
