#include "config.h"
extern int osp_prog_placeholder;
