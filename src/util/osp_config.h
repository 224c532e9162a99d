/*
 * osp_config: configuration in Postfix main.cf syntax.
 *
 *   # comment (only at the start of a line, as in Postfix)
 *   name = value
 *       continued on indented lines
 *   other = $name and ${name}
 *
 * Each program describes its parameters in tables of osp_param_def_t
 * (name, type, default, bounds, flags, one-line help).  The same tables
 * drive parsing, validation, "-n"/"-p" printing and the documentation
 * test.  Use:
 *
 *   cfg = osp_config_create("policyd", tables);
 *   osp_config_read_file(cfg, path, &errors);
 *   osp_config_override(cfg, "name=value", &errors);    (each -o)
 *   osp_config_finish(cfg, &errors, &warnings);         (expand, validate)
 *   osp_config_duration_ms(cfg, "policyd_time_limit");
 *
 * Error text names the origin ("FILE, line N" or "-o"), the parameter and
 * what was expected, one message per line in the caller's buffer.
 *
 * Names beginning with another program's prefix (policyd_, filter_,
 * worker_, ctl_) belong to that program and are left to it, so one
 * osprey.conf serves every program.
 */
#ifndef OSP_CONFIG_H
#define OSP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "osp_buf.h"

enum osp_param_type {
    OSP_PT_STRING,
    OSP_PT_INT,
    OSP_PT_BOOL,
    OSP_PT_DURATION,  /* "10s", "5m", "250ms"; bare number = seconds */
    OSP_PT_SIZE,      /* "64k", "50M"; bare number = bytes; 1024-based */
    OSP_PT_LIST,      /* comma and/or whitespace separated */
};

/* Flags */
#define OSP_PF_RELOADABLE 0x1   /* takes effect on reload without restart */
#define OSP_PF_SECRET     0x2   /* printed as ******** */

typedef struct osp_param_def {
    const char *name;
    enum osp_param_type type;
    const char *defval;   /* text form; may use $name; NULL means "" */
    int64_t min, max;     /* bounds for INT (value), DURATION (ms), SIZE (bytes); min == max == 0: none */
    unsigned flags;
    const char *help;     /* one line */
} osp_param_def_t;

/* A table ends with an entry whose name is NULL. */
#define OSP_PARAM_END { NULL, OSP_PT_STRING, NULL, 0, 0, 0, NULL }

typedef struct osp_config osp_config_t;

enum osp_config_print {
    OSP_CONFIG_PRINT_SET,       /* only parameters set in the file or by -o (postconf -n) */
    OSP_CONFIG_PRINT_ALL,       /* every parameter with its effective value */
    OSP_CONFIG_PRINT_DEFAULTS,  /* every parameter with its default (postconf -d) */
};

/*
 * prog: this program's parameter prefix without "_" ("policyd"), or NULL.
 * tables: NULL-terminated array of parameter tables (borrowed; they must
 * outlive the config, normally static).
 */
osp_config_t *osp_config_create(const char *prog, const osp_param_def_t *const *tables);
void osp_config_free(osp_config_t **cfg);

/*
 * Read a file.  Returns the number of errors appended to errors, or -1 if
 * the file cannot be opened (message appended too).
 */
int osp_config_read_file(osp_config_t *cfg, const char *path, osp_buf_t *errors);
/* The same for text in memory; origin names it in messages. */
int osp_config_read_string(osp_config_t *cfg, const char *origin, const char *text,
                           osp_buf_t *errors);
/* One "-o name=value".  Returns 0 or -1 (message appended). */
int osp_config_override(osp_config_t *cfg, const char *assignment, osp_buf_t *errors);
/*
 * Expand $name references and check every value against its type and
 * bounds.  Unknown parameters become warnings that suggest the closest
 * known name.  Returns the number of errors; getters may be used only
 * after a call that returned 0.
 */
int osp_config_finish(osp_config_t *cfg, osp_buf_t *errors, osp_buf_t *warnings);

/* Typed getters.  Asking for a parameter not in the tables is a bug (abort). */
const char *osp_config_str(const osp_config_t *cfg, const char *name);
int64_t osp_config_int(const osp_config_t *cfg, const char *name);
bool osp_config_bool(const osp_config_t *cfg, const char *name);
int64_t osp_config_duration_ms(const osp_config_t *cfg, const char *name);
uint64_t osp_config_size(const osp_config_t *cfg, const char *name);
/* Borrowed array of n_r borrowed strings. */
const char *const *osp_config_list(const osp_config_t *cfg, const char *name, size_t *n_r);
/* Was the parameter set in a file or with -o? */
bool osp_config_is_set(const osp_config_t *cfg, const char *name);

void osp_config_print(const osp_config_t *cfg, FILE *out, enum osp_config_print mode);

/* Parsers shared with other modules; 0 or -1. */
int osp_parse_duration_ms(const char *s, int64_t *ms_r);
int osp_parse_size(const char *s, uint64_t *bytes_r);
int osp_parse_bool(const char *s, bool *b_r);
int osp_parse_int(const char *s, int64_t *v_r);

/* Levenshtein distance, for "did you mean" suggestions. */
size_t osp_edit_distance(const char *a, const char *b);

#endif
