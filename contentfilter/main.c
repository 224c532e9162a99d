/*
 * osprey-filter: main.  Parses options and configuration; the service itself
 * is wired in here as it is built.
 */
#include "config.h"

#include <stdlib.h>

#include "osp_log.h"
#include "osp_prog.h"
#include "filter.h"

int main(int argc, char **argv)
{
    osp_prog_t prog;

    osp_prog_init(&prog, "filter", filter_params, NULL, argc, argv);
    if (prog.argc > 0) {
        osp_error("unexpected argument \"%s\"", prog.argv[0]);
        osp_prog_close(&prog);
        return 2;
    }
    osp_info("configuration %s is valid; the service is not built yet", prog.config_path);
    osp_prog_close(&prog);
    return 0;
}
