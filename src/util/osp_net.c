#include "config.h"
extern int osp_net_placeholder;
