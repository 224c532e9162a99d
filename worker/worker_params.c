/* osprey-worker's parameter table: names, types, defaults, bounds, help. */
#include "config.h"

#include "worker.h"

const osp_param_def_t worker_params[] = {
    { "worker_concurrency", OSP_PT_INT, "2", 1, 256, 0,
      "Jobs run at the same time" },
    { "worker_max_attempts", OSP_PT_INT, "8", 1, 1000, OSP_PF_RELOADABLE,
      "Attempts before a failing job is moved to the dead state" },
    { "worker_retry_backoff", OSP_PT_DURATION, "30s", 1000, 86400000, OSP_PF_RELOADABLE,
      "Delay before the first retry of a failed job; doubled on each attempt" },
    OSP_PARAM_END
};
