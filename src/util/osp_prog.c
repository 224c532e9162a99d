/* osp_prog: option parsing and configuration loading shared by every program. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_prog.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR "/var"
#endif

const osp_param_def_t osp_common_params[] = {
    { "syslog_name", OSP_PT_STRING, "osprey", 0, 0, 0,
      "Prefix of the syslog ident: lines read \"$syslog_name/filter[pid]: ...\"" },
    { "database_connection", OSP_PT_STRING, "dbname=osprey", 0, 0, OSP_PF_SECRET,
      "libpq connection string; multi-host forms like \"host=a,b target_session_attrs=read-write\" work" },
    { "database_pool_size", OSP_PT_INT, "4", 1, 64, 0,
      "Database connections each program keeps open" },
    { "database_connect_timeout", OSP_PT_DURATION, "5s", 100, 300000, 0,
      "Time allowed for one database connection attempt" },
    { "database_query_timeout", OSP_PT_DURATION, "10s", 100, 600000, OSP_PF_RELOADABLE,
      "Time allowed for one database query before it counts as a failure" },
    { "breaker_failure_threshold", OSP_PT_INT, "5", 1, 10000, OSP_PF_RELOADABLE,
      "Consecutive failures of a remote dependency that open its circuit breaker" },
    { "breaker_cooldown", OSP_PT_DURATION, "30s", 100, 3600000, OSP_PF_RELOADABLE,
      "How long an open circuit breaker fails fast before it lets a probe through" },
    { "dns_zone_file", OSP_PT_STRING, "", 0, 0, 0,
      "Zone data file answering every DNS query, with no network access at all (tests)" },
    { "dns_forwarders", OSP_PT_LIST, "", 0, 0, 0,
      "Resolvers to forward DNS queries to (ADDR or ADDR@PORT); empty uses dns_resolv_conf" },
    { "dns_resolv_conf", OSP_PT_STRING, "/etc/resolv.conf", 0, 0, 0,
      "Resolver list used without dns_forwarders; empty means full recursion from the root" },
    { "dns_timeout", OSP_PT_DURATION, "2s", 10, 60000, 0,
      "Time allowed for one DNS query (CNAMEs followed included) before it is a temporary failure" },
    { "state_directory", OSP_PT_STRING, LOCALSTATEDIR "/lib/osprey", 0, 0, 0,
      "Directory for journals and other local state" },
    { "osprey_user", OSP_PT_STRING, "osprey", 0, 0, 0,
      "Unprivileged user the daemons run as after binding their sockets" },
    OSP_PARAM_END
};

const char *osp_prog_default_config(void)
{
    return SYSCONFDIR "/osprey/osprey.conf";
}

static void osp_prog__usage(const osp_prog_t *prog, const char *usage_args, int status)
    __attribute__((noreturn));

static void osp_prog__usage(const osp_prog_t *prog, const char *usage_args, int status)
{
    FILE *out = status ? stderr : stdout;

    fprintf(out, "usage: %s [-c FILE] [-o name=value ...] [-n | -p | -d] [-f] [-v]%s%s\n",
            prog->name, usage_args ? " " : "", usage_args ? usage_args : "");
    fprintf(out,
            "  -c FILE        configuration file (default %s)\n"
            "  -o name=value  override a configuration parameter (repeatable)\n"
            "  -n             print parameters set in the file or with -o, and exit\n"
            "  -p             print the effective value of every parameter, and exit\n"
            "  -d             print the default of every parameter, and exit\n"
            "  -f             stay in the foreground and log to standard error\n"
            "  -v             more verbose logging (repeatable)\n",
            osp_prog_default_config());
    exit(status);
}

/* Print each message line of buf with a label to stderr. */
static void osp_prog__report(const char *prog, const char *label, const osp_buf_t *buf)
{
    const char *s = osp_buf_cstr(buf);

    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        fprintf(stderr, "%s: %s: %.*s\n", prog, label, (int)n, s);
        s += n + (nl ? 1 : 0);
    }
}

void osp_prog_init(osp_prog_t *prog, const char *name, const osp_param_def_t *table,
                   const char *usage_args, int argc, char **argv)
{
    const osp_param_def_t *tables[3] = { osp_common_params, table, NULL };
    char **overrides = osp_calloc((size_t)argc + 1, sizeof(char *));
    size_t noverrides = 0, i;
    int print = -1, ch;
    osp_buf_t errors, warnings;
    char progname[64];
    bool explicit_config = false;

    memset(prog, 0, sizeof(*prog));
    prog->name = name;
    prog->config_path = osp_prog_default_config();
    osp_snprintf(progname, sizeof(progname), "osprey-%s", name);
    if (strcmp(name, "ctl") == 0)
        osp_snprintf(progname, sizeof(progname), "ospreyctl");

    opterr = 0;
    /* "+": stop at the first non-option (ctl subcommands). */
    while ((ch = getopt(argc, argv, "+c:o:npdfvh")) != -1) {
        switch (ch) {
        case 'c':
            prog->config_path = optarg;
            explicit_config = true;
            break;
        case 'o':
            overrides[noverrides++] = optarg;
            break;
        case 'n':
            print = OSP_CONFIG_PRINT_SET;
            break;
        case 'p':
            print = OSP_CONFIG_PRINT_ALL;
            break;
        case 'd':
            print = OSP_CONFIG_PRINT_DEFAULTS;
            break;
        case 'f':
            prog->foreground = true;
            break;
        case 'v':
            prog->verbose++;
            break;
        case 'h':
            free(overrides);
            prog->name = progname;
            osp_prog__usage(prog, usage_args, 0);
        default:
            fprintf(stderr, "%s: invalid option -%c\n", progname, optopt ? optopt : '?');
            free(overrides);
            prog->name = progname;
            osp_prog__usage(prog, usage_args, 2);
        }
    }
    prog->argc = argc - optind;
    prog->argv = argv + optind;

    prog->cfg = osp_config_create(name, tables);
    osp_buf_init(&errors, 1024 * 1024);
    osp_buf_init(&warnings, 1024 * 1024);
    if (print != OSP_CONFIG_PRINT_DEFAULTS) {
        /* The built-in default file may be absent (defaults apply); -c FILE may not. */
        if (explicit_config || access(prog->config_path, F_OK) == 0)
            (void)osp_config_read_file(prog->cfg, prog->config_path, &errors);
        for (i = 0; i < noverrides; i++)
            (void)osp_config_override(prog->cfg, overrides[i], &errors);
    }
    free(overrides);
    (void)osp_config_finish(prog->cfg, &errors, &warnings);
    osp_prog__report(progname, "warning", &warnings);
    if (errors.len) {
        osp_prog__report(progname, "fatal", &errors);
        osp_buf_close(&errors);
        osp_buf_close(&warnings);
        osp_config_free(&prog->cfg);
        exit(1);
    }
    osp_buf_close(&errors);
    osp_buf_close(&warnings);

    if (print >= 0) {
        osp_config_print(prog->cfg, stdout, (enum osp_config_print)print);
        osp_config_free(&prog->cfg);
        exit(0);
    }

    osp_log_open(osp_config_str(prog->cfg, "syslog_name"), name,
                 prog->foreground ? OSP_LOG_TO_STDERR : OSP_LOG_TO_SYSLOG);
    osp_log_set_verbose(prog->verbose);
}

void osp_prog_close(osp_prog_t *prog)
{
    osp_config_free(&prog->cfg);
    osp_log_close();
}
