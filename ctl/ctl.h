/* ospreyctl: the administrator's command line. */
#ifndef CTL_H
#define CTL_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "osp_buf.h"
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
 * LOCALSTATEDIR/lib/osprey/bayes.tokens); "bayes train --database" trains
 * into PostgreSQL and "bayes vote" queues a train job for osprey-worker.
 * Exit status as for ctl_db.
 */
int ctl_bayes(const osp_config_t *cfg, int argc, char **argv);

/*
 * ctl_pg.c: the database session of the admin commands.  Blocking libpq.
 * ctl_pg_take_as() removes "--as ROLE" from argv (anywhere); ctl_pg_open()
 * connects with database_connection and, given a role, SETs ROLE to it and
 * checks that it is a mapped admin (row-level security then limits every
 * statement to its subtree).  Functions returning int answer 0 or -1 with
 * the error already printed; ctl_pg_exec() returns the result (the caller
 * PQclear()s it) or NULL.
 */
typedef struct ctl_pg {
    PGconn *conn;
    const char *as_role;   /* borrowed; NULL: the connecting role */
    const osp_config_t *cfg;   /* borrowed */
} ctl_pg_t;
int ctl_pg_take_as(int *argc, char **argv, const char **role_r);
/*
 * One command group ("quarantine", "list", ...): take --as, pick the
 * subcommand argv[0] from subs (usage and exit 2 when missing or unknown,
 * usage on stdout and 0 for "help"), open the session and run it with the
 * arguments after the subcommand.  Returns the exit status.
 */
typedef struct ctl_pg_sub {
    const char *name;
    int (*run)(ctl_pg_t *pg, int argc, char **argv);
} ctl_pg_sub_t;
int ctl_pg_run(const osp_config_t *cfg, const char *group, const ctl_pg_sub_t *subs,
               size_t nsubs, void (*usage)(FILE *out), int argc, char **argv);
int ctl_pg_open(ctl_pg_t *pg, const osp_config_t *cfg, const char *as_role);
void ctl_pg_close(ctl_pg_t *pg);
void ctl_pg_report(const char *what, const PGresult *res, const PGconn *conn);
PGresult *ctl_pg_exec(ctl_pg_t *pg, const char *what, const char *sql, int n,
                      const char *const *params);
int ctl_pg_cmd(ctl_pg_t *pg, const char *what, const char *sql, int n,
               const char *const *params);
/* An account given by id or by (unique, visible) name -> its id as text. */
int ctl_pg_account(ctl_pg_t *pg, const char *spec, char id_r[32]);
int ctl_pg_audit(ctl_pg_t *pg, const char *account_id, const char *action,
                 const char *object_type, const char *object_id, const char *details_json);
void ctl_pg_print_table(const PGresult *res);
/*
 * Read the file at path ("-": standard input) into out, up to out's size
 * cap.  0, or -1 with an error printed, prefixed with what ("" or e.g.
 * "rule add: ").
 */
int ctl_read_file(const char *path, const char *what, osp_buf_t *out);
/* Run a query and print its table: 0, or 1 (error printed). */
int ctl_pg_show(ctl_pg_t *pg, const char *what, const char *sql, int n,
                const char *const *params);

/* One option of a subcommand: "--name VALUE" (value set) or a flag "--name" (flag set). */
typedef struct ctl_opt {
    const char *name;
    const char **value;
    bool *flag;
} ctl_opt_t;
/*
 * Match argv against opts (a later option overrides an earlier one); the
 * arguments that do not start with "--" fill pos[0..maxpos) in order.
 * Returns how many positional arguments there were, or -1 for an unknown
 * option, an option without its value or a positional argument too many
 * (the caller prints its usage).
 */
int ctl_opts(int argc, char **argv, const ctl_opt_t *opts, size_t nopts, const char **pos,
             int maxpos);
/*
 * "CMD [FLAG ACCOUNT]": run sql with $1 = that account's id ("" without
 * the flag) and print the table.  Usage on stderr and 2 for other
 * arguments.
 */
int ctl_pg_list_query(ctl_pg_t *pg, int argc, char **argv, const char *flag,
                      void (*usage)(FILE *out), const char *what, const char *sql);
int ctl_pg_parse_limit(const char *s, long *n_r);
/* As ctl_pg_account; spec NULL: the --as admin's own account, else the
 * root (0: global). */
int ctl_pg_default_account(ctl_pg_t *pg, const char *spec, char id_r[32]);
/* "--since": a timestamp, or an age N{s,m,h,d,w} -> timestamptz text. */
int ctl_pg_since(ctl_pg_t *pg, const char *spec, char out[64]);

/*
 * Admin commands on the database; argv[0] is the subcommand; "--as ROLE"
 * anywhere.  Exit status as for ctl_db.
 *   ctl_quarantine.c  quarantine list|show|release|delete
 *   ctl_lists.c       list add|del|show
 *   ctl_accounts.c    account add|list|show|del, domain/address add|del,
 *                     rule add|list|del (ctl_rule_db, from ctl_rule)
 *   ctl_log.c         log search
 */
int ctl_quarantine(const osp_config_t *cfg, int argc, char **argv);
int ctl_list(const osp_config_t *cfg, int argc, char **argv);
int ctl_account(const osp_config_t *cfg, int argc, char **argv);
int ctl_rule_db(const osp_config_t *cfg, int argc, char **argv);
int ctl_log(const osp_config_t *cfg, int argc, char **argv);

#endif
