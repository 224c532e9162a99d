/* osprey-policyd's parameter table: names, types, defaults, bounds, help. */
#include "config.h"

#include "policyd.h"

const osp_param_def_t policyd_params[] = {
    { "policyd_listen", OSP_PT_LIST, "inet:127.0.0.1:10040", 0, 0, 0,
      "Listeners: inet:ADDR:PORT (IPv4 or [IPv6]) and unix:PATH, comma separated" },
    { "policyd_time_limit", OSP_PT_DURATION, "3s", 10, 600000, OSP_PF_RELOADABLE,
      "Time budget for one policy request, after which the error action is answered" },
    { "policyd_error_action", OSP_PT_STRING, "DUNNO", 0, 0, OSP_PF_RELOADABLE,
      "Answer on internal errors: DUNNO, DEFER_IF_PERMIT, or disconnect" },
    { "policyd_max_request_size", OSP_PT_SIZE, "16k", 256, 1048576, 0,
      "Largest policy request accepted; a larger one closes the connection" },
    { "policyd_max_attribute_size", OSP_PT_SIZE, "4k", 64, 65536, 0,
      "Largest single name=value attribute line accepted" },
    { "policyd_max_connections", OSP_PT_INT, "1000", 1, 100000, 0,
      "Concurrent client connections served" },
    { "policyd_idle_timeout", OSP_PT_DURATION, "300s", 1000, 86400000, OSP_PF_RELOADABLE,
      "Idle time after which a client connection is closed" },
    { "policyd_metrics_listen", OSP_PT_STRING, "127.0.0.1:10041", 0, 0, 0,
      "Loopback address and port for Prometheus metrics and health; empty disables" },
    OSP_PARAM_END
};
