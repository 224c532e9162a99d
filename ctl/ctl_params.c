/* ospreyctl's parameter table: names, types, defaults, bounds, help. */
#include "config.h"

#include "ctl.h"

const osp_param_def_t ctl_params[] = {
    { "ctl_page_size", OSP_PT_INT, "50", 1, 10000, 0,
      "Rows shown per page by list commands" },
    OSP_PARAM_END
};
