/* ospreyctl: the administrator's command line. */
#ifndef CTL_H
#define CTL_H

#include <stddef.h>

#include "osp_config.h"

/* ctl_params.c */
extern const osp_param_def_t ctl_params[];

/*
 * One schema migration, sql/NNN_name.sql, embedded at build time by
 * build-aux/sql2c.sh (ctl_migrations.c in the build tree).  The table is
 * in increasing version order; all strings are static.
 */
typedef struct ctl_migration {
    unsigned version;   /* NNN */
    const char *name;   /* "core" */
    const char *file;   /* "001_core.sql" */
    const char *sql;    /* the file's exact bytes, NUL-terminated */
    size_t len;
} ctl_migration_t;

extern const ctl_migration_t ctl_migrations[];
extern const size_t ctl_migrations_count;

/*
 * ctl_db.c: "ospreyctl db SUBCOMMAND ARGS...".  argv[0] is the subcommand.
 * Returns the exit status: 0 done, 1 failed (message printed), 2 usage.
 */
int ctl_db(const osp_config_t *cfg, int argc, char **argv);

/*
 * ctl_rules.c: "ospreyctl rule check|test ..." and "ospreyctl regex test
 * ...".  argv[0] is the subcommand.  Exit status as for ctl_db; "regex
 * test" returns 1 for no match or a bad pattern.
 */
int ctl_rule(const osp_config_t *cfg, int argc, char **argv);
int ctl_regex(const osp_config_t *cfg, int argc, char **argv);

/*
 * ctl_spf.c: "ospreyctl spf check --ip IP --sender ADDR --helo NAME
 * [--helo-identity]" with the configured resolver.  Exit status as for
 * ctl_db.
 */
int ctl_spf(const osp_config_t *cfg, int argc, char **argv);

/*
 * ctl_bayes.c: "ospreyctl bayes train|explain|expire|stats ..." on a local
 * token file (--file, $OSPREY_BAYES_FILE, default
 * LOCALSTATEDIR/lib/osprey/bayes.tokens).  Exit status as for ctl_db.
 */
int ctl_bayes(const osp_config_t *cfg, int argc, char **argv);

#endif
