#include "config.h"
extern int osp_addr_placeholder;
