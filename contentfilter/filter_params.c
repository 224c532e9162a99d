/* osprey-filter's parameter table: names, types, defaults, bounds, help. */
#include "config.h"

#include "filter.h"

const osp_param_def_t filter_params[] = {
    { "filter_listen", OSP_PT_LIST, "inet:127.0.0.1:10025", 0, 0, 0,
      "Listeners for mail from Postfix: inet:ADDR:PORT or unix:PATH (SMTP and LMTP)" },
    { "filter_reinject", OSP_PT_STRING, "inet:127.0.0.1:10026", 0, 0, OSP_PF_RELOADABLE,
      "Postfix smtpd that receives scanned mail" },
    { "filter_max_sessions", OSP_PT_INT, "50", 1, 10000, 0,
      "Concurrent sessions; more are answered 421 so Postfix backs off" },
    { "filter_message_size_limit", OSP_PT_SIZE, "50M", 1024, 4294967296LL, OSP_PF_RELOADABLE,
      "Largest message accepted (announced as SIZE and enforced during DATA)" },
    { "filter_memory_threshold", OSP_PT_SIZE, "1M", 4096, 268435456, 0,
      "Message bytes kept in memory; larger messages spill to a temporary file" },
    { "filter_temp_directory", OSP_PT_STRING, "$state_directory/tmp", 0, 0, 0,
      "Directory for message bodies larger than filter_memory_threshold" },
    { "filter_timeout", OSP_PT_DURATION, "300s", 1000, 3600000, OSP_PF_RELOADABLE,
      "Per-command read timeout for sessions from Postfix" },
    { "filter_metrics_listen", OSP_PT_STRING, "127.0.0.1:10027", 0, 0, 0,
      "Loopback address and port for Prometheus metrics and health; empty disables" },
    OSP_PARAM_END
};
