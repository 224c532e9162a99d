/*
 * osp_prog: what every Osprey program does before it serves anyone.
 *
 * Parses the options Postfix admins expect on every program
 *
 *   -c FILE        configuration file (default SYSCONFDIR/osprey/osprey.conf)
 *   -o name=value  override a parameter (repeatable; wins over the file)
 *   -n             print parameters set in the file or with -o, then exit
 *   -p             print every parameter's effective value, then exit
 *   -d             print every parameter's default, then exit
 *   -f             stay in the foreground and log to stderr
 *   -v             more verbose logging (repeatable)
 *   -h             usage
 *
 * then reads and validates the configuration: unknown names are warned
 * about (with a suggestion), a bad value stops the program with exit
 * status 1 and a message naming file, line and parameter, before any
 * socket is opened.
 *
 *   osp_prog_t prog;
 *   osp_prog_init(&prog, "policyd", policyd_params, argc, argv);
 *   ... osp_config_int(prog.cfg, "policyd_...") ...
 *   osp_prog_close(&prog);
 */
#ifndef OSP_PROG_H
#define OSP_PROG_H

#include <stdbool.h>

#include "osp_config.h"

typedef struct osp_prog {
    const char *name;        /* borrowed: "policyd", "filter", "ctl", "worker" */
    const char *config_path; /* borrowed from argv or the built-in default */
    osp_config_t *cfg;       /* owned */
    bool foreground;
    int verbose;
    int argc;                /* arguments after the options (ctl subcommands) */
    char **argv;
} osp_prog_t;

/* Parameters every program understands (database, breaker, logging). */
extern const osp_param_def_t osp_common_params[];

/*
 * Parse options and configuration; exits on -h/-n/-p/-d and on any error.
 * table is this program's own parameter table (borrowed, static).
 * Logging is opened to syslog, or to stderr with -f.
 */
void osp_prog_init(osp_prog_t *prog, const char *name, const osp_param_def_t *table,
                   const char *usage_args, int argc, char **argv);
void osp_prog_close(osp_prog_t *prog);

/* The built-in default configuration file. */
const char *osp_prog_default_config(void);

#endif
