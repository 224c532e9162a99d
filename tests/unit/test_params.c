/*
 * Every program's parameter table is complete and documented: each entry
 * has help text, its program's prefix, a default that passes validation,
 * and an entry in the program's manual page that shows that default.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../contentfilter/filter.h"
#include "../../ctl/ctl.h"
#include "../../policyd/policyd.h"
#include "../../worker/worker.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_mem.h"
#include "osp_prog.h"

struct program {
    const char *prefix;            /* NULL for the shared table */
    const osp_param_def_t *table;
    const char *man;               /* relative to top_srcdir */
};

static const struct program programs[] = {
    { NULL, osp_common_params, "man/osprey.conf.5" },
    { "policyd", policyd_params, "man/osprey-policyd.8" },
    { "filter", filter_params, "man/osprey-filter.8" },
    { "ctl", ctl_params, "man/ospreyctl.8" },
    { "worker", worker_params, "man/osprey-worker.8" },
};

static char *slurp(const char *rel)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    FILE *fp;
    osp_buf_t b;
    char chunk[4096];
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", top ? top : ".", rel);
    fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("cannot open %s (is top_srcdir set?)", path);
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        osp_buf_append(&b, chunk, n);
    fclose(fp);
    return osp_buf_steal(&b);
}

static void test_tables_valid(void **state)
{
    size_t p, i;

    (void)state;
    for (p = 0; p < sizeof(programs) / sizeof(programs[0]); p++) {
        const osp_param_def_t *const tables[] = {
            osp_common_params,
            programs[p].table == osp_common_params ? NULL : programs[p].table,
            NULL
        };
        osp_config_t *cfg = osp_config_create(programs[p].prefix, tables);
        osp_buf_t errors, warnings;

        for (i = 0; programs[p].table[i].name; i++) {
            const osp_param_def_t *d = &programs[p].table[i];
            if (d->help == NULL || strlen(d->help) < 10 || strchr(d->help, '\n'))
                fail_msg("%s: help text missing or not one line", d->name);
            if (programs[p].prefix) {
                size_t l = strlen(programs[p].prefix);
                if (strncmp(d->name, programs[p].prefix, l) != 0 || d->name[l] != '_')
                    fail_msg("%s: does not start with %s_", d->name, programs[p].prefix);
            }
            if (d->min > d->max)
                fail_msg("%s: min > max", d->name);
        }
        /* The defaults alone must validate. */
        osp_buf_init(&errors, 65536);
        osp_buf_init(&warnings, 65536);
        if (osp_config_finish(cfg, &errors, &warnings) != 0)
            fail_msg("defaults do not validate: %s", osp_buf_cstr(&errors));
        assert_int_equal(warnings.len, 0);
        osp_buf_close(&errors);
        osp_buf_close(&warnings);
        osp_config_free(&cfg);
    }
}

static void test_documented(void **state)
{
    size_t p, i;

    (void)state;
    for (p = 0; p < sizeof(programs) / sizeof(programs[0]); p++) {
        char *man = slurp(programs[p].man);

        for (i = 0; programs[p].table[i].name; i++) {
            const osp_param_def_t *d = &programs[p].table[i];
            char entry[512];
            const char *def = d->defval && *d->defval ? d->defval : "empty";

            /* The generated form: ".B name \fR(type, default \fIvalue\fR)" */
            snprintf(entry, sizeof(entry), ".B %s \\fR(", d->name);
            if (strstr(man, entry) == NULL)
                fail_msg("%s is not documented in %s", d->name, programs[p].man);
            if (d->defval && strncmp(d->defval, "/", 1) != 0 &&
                strstr(def, "LOCALSTATEDIR") == NULL) {
                char want[512];
                snprintf(want, sizeof(want), "default \\fI%s\\fR)", def);
                if (strstr(strstr(man, entry), want) == NULL)
                    fail_msg("%s: %s does not show the default \"%s\"", d->name,
                             programs[p].man, def);
            }
        }
        free(man);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_valid),
        cmocka_unit_test(test_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
