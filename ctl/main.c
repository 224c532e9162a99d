/*
 * ospreyctl: main.  Parses options and configuration, then dispatches the
 * subcommand.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "osp_log.h"
#include "osp_prog.h"

int main(int argc, char **argv)
{
    osp_prog_t prog;
    int status = 0;

    /* ospreyctl is interactive: log to stderr unless told otherwise. */
    osp_prog_init(&prog, "ctl", ctl_params, "COMMAND [ARGS...]", argc, argv);
    osp_log_open(osp_config_str(prog.cfg, "syslog_name"), "ctl", OSP_LOG_TO_STDERR);
    if (prog.argc == 0 || strcmp(prog.argv[0], "help") == 0) {
        printf("commands:\n"
               "  db migrate [--to VERSION]  apply pending schema migrations\n"
               "  db status                  show the schema version and pending migrations\n"
               "  rule check FILE...         validate rule files\n"
               "  rule test [OPTIONS] --message FILE  run rules on a message\n"
               "  regex test [-i] PATTERN TEXT  try a regular expression\n"
               "  spf check --ip IP --sender ADDR --helo NAME  evaluate SPF\n"
               "  bayes train --spam|--ham|--forget [--account N] [--database] MESSAGE...  train Bayes\n"
               "  bayes explain [--account N] [--top N] MESSAGE  show the deciding tokens\n"
               "  bayes expire [--days N] [--max-count N]  drop rare, stale tokens\n"
               "  bayes stats [--account N]  token and message counts\n"
               "  bayes vote ID|--queue-id QID --spam|--ham [--account A]  train quarantined mail\n"
               "  quarantine list|show|release|delete ...  quarantined mail (database)\n"
               "  list add|del|show ...      allow/block lists (database)\n"
               "  account add|list|show|del ...  accounts, domains, addresses (database)\n"
               "  rule add|list|del ...      custom rules of an account (database)\n"
               "  log search QUERY [--since T] [--limit N]  search the message log\n"
               "  (database commands take --as ROLE to act as that admin)\n"
               "  version                    print the version\n"
               "  help                       this list\n");
    } else if (strcmp(prog.argv[0], "db") == 0) {
        status = ctl_db(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "rule") == 0 && prog.argc > 1 &&
               (strcmp(prog.argv[1], "add") == 0 || strcmp(prog.argv[1], "list") == 0 ||
                strcmp(prog.argv[1], "del") == 0)) {
        status = ctl_rule_db(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "rule") == 0) {
        status = ctl_rule(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "quarantine") == 0) {
        status = ctl_quarantine(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "list") == 0) {
        status = ctl_list(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "account") == 0) {
        status = ctl_account(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "log") == 0) {
        status = ctl_log(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "regex") == 0) {
        status = ctl_regex(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "spf") == 0) {
        status = ctl_spf(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "bayes") == 0) {
        status = ctl_bayes(prog.cfg, prog.argc - 1, prog.argv + 1);
    } else if (strcmp(prog.argv[0], "version") == 0) {
        printf("%s\n", PACKAGE_VERSION);
    } else {
        fprintf(stderr, "ospreyctl: unknown command \"%s\" (try \"ospreyctl help\")\n",
                prog.argv[0]);
        status = 2;
    }
    osp_prog_close(&prog);
    return status;
}
