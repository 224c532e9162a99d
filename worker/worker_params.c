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
    { "worker_poll_interval", OSP_PT_DURATION, "10s", 100, 3600000, OSP_PF_RELOADABLE,
      "How often the queue is polled when no notification comes" },
    { "worker_reclaim_after", OSP_PT_DURATION, "10m", 1000, 86400000, OSP_PF_RELOADABLE,
      "Running jobs claimed longer ago than this are put back in the queue" },
    { "worker_shutdown_timeout", OSP_PT_DURATION, "30s", 100, 3600000, 0,
      "How long a stopping worker waits for its running jobs" },
    { "worker_maintenance_interval", OSP_PT_DURATION, "1h", 1000, 604800000, OSP_PF_RELOADABLE,
      "How often a maintenance job is scheduled" },
    { "worker_partitions_ahead", OSP_PT_INT, "7", 0, 366, OSP_PF_RELOADABLE,
      "Days ahead for which daily partitions are created" },
    { "worker_quarantine_retention", OSP_PT_INT, "30", 0, 3660, OSP_PF_RELOADABLE,
      "Days quarantined mail is kept before its partition is dropped" },
    { "worker_message_log_retention", OSP_PT_INT, "90", 0, 3660, OSP_PF_RELOADABLE,
      "Days message log rows are kept before their partition is dropped" },
    { "worker_job_retention", OSP_PT_DURATION, "7d", 0, 0, OSP_PF_RELOADABLE,
      "How long finished and dead jobs stay in the queue table" },
    { "worker_log_index_interval", OSP_PT_DURATION, "5s", 100, 3600000, OSP_PF_RELOADABLE,
      "How often a log_index job is scheduled" },
    { "worker_log_index_batch", OSP_PT_INT, "5000", 1, 1000000, OSP_PF_RELOADABLE,
      "Message log rows indexed per statement" },
    { "worker_log_index_batches", OSP_PT_INT, "20", 1, 10000, OSP_PF_RELOADABLE,
      "Statements per log_index job; more work is queued as a new job" },
    { "worker_release_address", OSP_PT_STRING, "127.0.0.1:10026", 0, 0, 0,
      "SMTP server (host:port, [ipv6]:port) that released quarantined mail is sent to" },
    { "worker_release_helo", OSP_PT_STRING, "localhost", 0, 0, 0,
      "Name sent in EHLO when released mail is sent" },
    { "worker_release_timeout", OSP_PT_DURATION, "60s", 1000, 3600000, 0,
      "Time limit for each database statement and each SMTP read or write of a release" },
    OSP_PARAM_END
};

void worker_conf_load(const osp_config_t *cfg, worker_conf_t *conf_r)
{
    conf_r->concurrency = (unsigned)osp_config_int(cfg, "worker_concurrency");
    conf_r->max_attempts = (int)osp_config_int(cfg, "worker_max_attempts");
    conf_r->retry_backoff_ms = (uint64_t)osp_config_duration_ms(cfg, "worker_retry_backoff");
    conf_r->poll_interval_ms = (uint64_t)osp_config_duration_ms(cfg, "worker_poll_interval");
    conf_r->reclaim_after_ms = (uint64_t)osp_config_duration_ms(cfg, "worker_reclaim_after");
    conf_r->shutdown_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "worker_shutdown_timeout");
    conf_r->maintenance_interval_ms =
        (uint64_t)osp_config_duration_ms(cfg, "worker_maintenance_interval");
    conf_r->log_index_interval_ms =
        (uint64_t)osp_config_duration_ms(cfg, "worker_log_index_interval");
    conf_r->job_retention_ms = (uint64_t)osp_config_duration_ms(cfg, "worker_job_retention");
    conf_r->partitions_ahead = (int)osp_config_int(cfg, "worker_partitions_ahead");
    conf_r->quarantine_days = (int)osp_config_int(cfg, "worker_quarantine_retention");
    conf_r->log_days = (int)osp_config_int(cfg, "worker_message_log_retention");
    conf_r->log_index_batch = (int)osp_config_int(cfg, "worker_log_index_batch");
    conf_r->log_index_batches = (int)osp_config_int(cfg, "worker_log_index_batches");
    conf_r->conninfo = osp_config_str(cfg, "database_connection");
    conf_r->connect_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "database_connect_timeout");
    conf_r->query_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "database_query_timeout");
    conf_r->release_address = osp_config_str(cfg, "worker_release_address");
    conf_r->release_helo = osp_config_str(cfg, "worker_release_helo");
    conf_r->release_timeout_ms = (uint64_t)osp_config_duration_ms(cfg, "worker_release_timeout");
}
