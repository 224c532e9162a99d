/*
 * osp_log: Postfix-style logging.
 *
 * Lines go to syslog with the mail facility and the ident "osprey/NAME",
 * so they read "osprey/filter[1234]: 4F2D1: action=deliver ...", exactly
 * like Postfix's own.  In the foreground (-f) they go to stderr instead,
 * with the same "osprey/NAME[pid]: " prefix.  Warnings, errors and fatal
 * messages carry Postfix's "warning: ", "error: ", "fatal: " labels.
 *
 * Callers must make peer-supplied bytes printable (osp_buf_append_printable)
 * before logging them.
 */
#ifndef OSP_LOG_H
#define OSP_LOG_H

#include <stdarg.h>

enum osp_log_level {
    OSP_LOG_DEBUG,
    OSP_LOG_INFO,
    OSP_LOG_WARNING,
    OSP_LOG_ERROR,
    OSP_LOG_FATAL,
};

/* Where lines go; OSP_LOG_TO_SYSLOG is the default. */
enum osp_log_target {
    OSP_LOG_TO_SYSLOG,
    OSP_LOG_TO_STDERR,
};

/*
 * syslog_name is the ident prefix ("osprey", or the syslog_name parameter
 * for a second instance), name the program role ("policyd", "filter");
 * both copied.  The ident becomes "syslog_name/name".
 */
void osp_log_open(const char *syslog_name, const char *name, enum osp_log_target target);
void osp_log_close(void);
/* Each -v raises verbosity by one; osp_debug(level) prints if level <= it. */
void osp_log_set_verbose(int verbose);
int osp_log_verbose(void);
const char *osp_log_name(void);

/*
 * A hook sees every formatted line (without prefix) instead of the target;
 * tests use it to assert on log text.  NULL restores the target.
 */
typedef void (*osp_log_hook_fn)(enum osp_log_level level, const char *line, void *ctx);
void osp_log_set_hook(osp_log_hook_fn fn, void *ctx);

void osp_vlog(enum osp_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
void osp_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void osp_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void osp_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void osp_debug(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Log and exit(1): start-up problems only. */
void osp_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Log and abort(): broken invariants. */
void osp_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
