/* osp_log: Postfix-style lines to syslog (mail facility) or stderr. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "osp_buf.h"
#include "osp_log.h"

static struct {
    char ident[64];           /* "osprey/NAME" */
    enum osp_log_target target;
    int verbose;
    int syslog_open;
    osp_log_hook_fn hook;
    void *hook_ctx;
} osp_log_state = { "osprey", OSP_LOG_TO_STDERR, 0, 0, NULL, NULL };

void osp_log_open(const char *syslog_name, const char *name, enum osp_log_target target)
{
    osp_log_close();
    osp_snprintf(osp_log_state.ident, sizeof(osp_log_state.ident), "%s/%s", syslog_name, name);
    osp_log_state.target = target;
    if (target == OSP_LOG_TO_SYSLOG) {
        openlog(osp_log_state.ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
        osp_log_state.syslog_open = 1;
    }
}

void osp_log_close(void)
{
    if (osp_log_state.syslog_open)
        closelog();
    osp_log_state.syslog_open = 0;
}

void osp_log_set_verbose(int verbose)
{
    osp_log_state.verbose = verbose;
}

int osp_log_verbose(void)
{
    return osp_log_state.verbose;
}

const char *osp_log_name(void)
{
    return osp_log_state.ident;
}

void osp_log_set_hook(osp_log_hook_fn fn, void *ctx)
{
    osp_log_state.hook = fn;
    osp_log_state.hook_ctx = ctx;
}

static const char *osp_log_label(enum osp_log_level level)
{
    switch (level) {
    case OSP_LOG_DEBUG:
    case OSP_LOG_INFO:
        return "";
    case OSP_LOG_WARNING:
        return "warning: ";
    case OSP_LOG_ERROR:
        return "error: ";
    case OSP_LOG_FATAL:
        return "fatal: ";
    }
    return "";
}

static int osp_log_priority(enum osp_log_level level)
{
    switch (level) {
    case OSP_LOG_DEBUG:
        return LOG_DEBUG;
    case OSP_LOG_INFO:
        return LOG_INFO;
    case OSP_LOG_WARNING:
        return LOG_WARNING;
    case OSP_LOG_ERROR:
        return LOG_ERR;
    case OSP_LOG_FATAL:
        return LOG_CRIT;
    }
    return LOG_INFO;
}

void osp_vlog(enum osp_log_level level, const char *fmt, va_list ap)
{
    char line[2048];
    int n;

    n = osp_snprintf(line, sizeof(line), "%s", osp_log_label(level));
    if (n < 0)
        n = 0;
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);

    if (osp_log_state.hook) {
        osp_log_state.hook(level, line, osp_log_state.hook_ctx);
        return;
    }
    if (osp_log_state.target == OSP_LOG_TO_SYSLOG && osp_log_state.syslog_open)
        syslog(osp_log_priority(level), "%s", line);
    else
        fprintf(stderr, "%s[%ld]: %s\n", osp_log_state.ident, (long)getpid(), line);
}

#define OSP_LOG_BODY(level) do { \
        va_list ap; \
        va_start(ap, fmt); \
        osp_vlog((level), fmt, ap); \
        va_end(ap); \
    } while (0)

void osp_info(const char *fmt, ...)
{
    OSP_LOG_BODY(OSP_LOG_INFO);
}

void osp_warn(const char *fmt, ...)
{
    OSP_LOG_BODY(OSP_LOG_WARNING);
}

void osp_error(const char *fmt, ...)
{
    OSP_LOG_BODY(OSP_LOG_ERROR);
}

void osp_debug(int level, const char *fmt, ...)
{
    if (level > osp_log_state.verbose)
        return;
    OSP_LOG_BODY(OSP_LOG_DEBUG);
}

void osp_fatal(const char *fmt, ...)
{
    OSP_LOG_BODY(OSP_LOG_FATAL);
    exit(1);
}

void osp_panic(const char *fmt, ...)
{
    OSP_LOG_BODY(OSP_LOG_FATAL);
    abort();
}
