/* Unit tests for osp_config: syntax, expansion, typed values, every error path. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "osp_config.h"

static const osp_param_def_t test_params[] = {
    { "name_str", OSP_PT_STRING, "hello", 0, 0, 0, "a string" },
    { "name_int", OSP_PT_INT, "10", 1, 100, 0, "an integer" },
    { "name_free_int", OSP_PT_INT, "-5", 0, 0, 0, "an unbounded integer" },
    { "name_bool", OSP_PT_BOOL, "no", 0, 0, 0, "a boolean" },
    { "name_dur", OSP_PT_DURATION, "5m", 1000, 86400000, 0, "a duration" },
    { "name_size", OSP_PT_SIZE, "64k", 0, 0, 0, "a size" },
    { "name_list", OSP_PT_LIST, "a, b c,,d", 0, 0, 0, "a list" },
    { "name_ref", OSP_PT_STRING, "$name_str/world", 0, 0, 0, "a reference" },
    { "name_secret", OSP_PT_STRING, "", 0, 0, OSP_PF_SECRET, "a secret" },
    { "test_private", OSP_PT_STRING, "", 0, 0, 0, "program-prefixed" },
    OSP_PARAM_END
};

static const osp_param_def_t *const test_tables[] = { test_params, NULL };

struct ctx {
    osp_config_t *cfg;
    osp_buf_t errors, warnings;
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));

    c->cfg = osp_config_create("test", test_tables);
    osp_buf_init(&c->errors, 65536);
    osp_buf_init(&c->warnings, 65536);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;

    osp_config_free(&c->cfg);
    assert_null(c->cfg);
    osp_buf_close(&c->errors);
    osp_buf_close(&c->warnings);
    free(c);
    return 0;
}

static int load(struct ctx *c, const char *text)
{
    int n = osp_config_read_string(c->cfg, "osprey.conf", text, &c->errors);
    return n + osp_config_finish(c->cfg, &c->errors, &c->warnings);
}

static void test_defaults(void **state)
{
    struct ctx *c = *state;
    size_t n;
    const char *const *l;

    assert_int_equal(load(c, ""), 0);
    assert_string_equal(osp_config_str(c->cfg, "name_str"), "hello");
    assert_int_equal(osp_config_int(c->cfg, "name_int"), 10);
    assert_int_equal(osp_config_int(c->cfg, "name_free_int"), -5);
    assert_false(osp_config_bool(c->cfg, "name_bool"));
    assert_int_equal(osp_config_duration_ms(c->cfg, "name_dur"), 300000);
    assert_int_equal(osp_config_size(c->cfg, "name_size"), 65536);
    l = osp_config_list(c->cfg, "name_list", &n);
    assert_int_equal(n, 4);
    assert_string_equal(l[0], "a");
    assert_string_equal(l[1], "b");
    assert_string_equal(l[2], "c");
    assert_string_equal(l[3], "d");
    assert_string_equal(osp_config_str(c->cfg, "name_ref"), "hello/world");
    assert_false(osp_config_is_set(c->cfg, "name_str"));
    assert_int_equal(c->errors.len, 0);
    assert_int_equal(c->warnings.len, 0);
}

static void test_syntax(void **state)
{
    struct ctx *c = *state;
    const char *text =
        "# a comment\n"
        "\n"
        "name_str = first\n"
        "name_str=  second   \n"          /* later assignment wins, trimmed */
        "   # indented comment is a comment\n"
        "name_list = one,\n"
        "    two\r\n"                     /* continuation, CRLF */
        "\tthree\n"
        "name_bool = YES\n"
        "name_int = 42";                  /* no final newline */

    assert_int_equal(load(c, text), 0);
    assert_string_equal(osp_config_str(c->cfg, "name_str"), "second");
    assert_true(osp_config_is_set(c->cfg, "name_str"));
    assert_true(osp_config_bool(c->cfg, "name_bool"));
    assert_int_equal(osp_config_int(c->cfg, "name_int"), 42);
    {
        size_t n;
        const char *const *l = osp_config_list(c->cfg, "name_list", &n);
        assert_int_equal(n, 3);
        assert_string_equal(l[2], "three");
    }
    /* name = value with an empty value is valid. */
    assert_int_equal(load(c, "name_str =\n"), 0);
    assert_string_equal(osp_config_str(c->cfg, "name_str"), "");
}

static void test_expansion(void **state)
{
    struct ctx *c = *state;
    const char *text =
        "name_str = base\n"
        "user_defined = ${name_str}-$(name_str)\n"
        "name_ref = $user_defined/$name_str and $$literal\n";

    assert_int_equal(load(c, text), 0);
    assert_string_equal(osp_config_str(c->cfg, "name_ref"), "base-base/base and $literal");
    /* A reference made before the referenced parameter is defined still works. */
    assert_int_equal(load(c, "name_ref = $later\nlater = x\n"), 0);
    assert_string_equal(osp_config_str(c->cfg, "name_ref"), "x");
    /* References work in typed values too. */
    assert_int_equal(load(c, "base_secs = 7\nname_dur = ${base_secs}s\n"), 0);
    assert_int_equal(osp_config_duration_ms(c->cfg, "name_dur"), 7000);
}

static void test_overrides(void **state)
{
    struct ctx *c = *state;

    assert_int_equal(osp_config_read_string(c->cfg, "osprey.conf", "name_int = 5\n",
                                            &c->errors), 0);
    assert_int_equal(osp_config_override(c->cfg, "name_int=7", &c->errors), 0);
    assert_int_equal(osp_config_override(c->cfg, " name_str = spaced ", &c->errors), 0);
    assert_int_equal(osp_config_finish(c->cfg, &c->errors, &c->warnings), 0);
    assert_int_equal(osp_config_int(c->cfg, "name_int"), 7);
    assert_string_equal(osp_config_str(c->cfg, "name_str"), "spaced");

    assert_int_equal(osp_config_override(c->cfg, "novalue", &c->errors), -1);
    assert_string_equal(osp_buf_cstr(&c->errors), "-o novalue: expected name=value\n");
    osp_buf_reset(&c->errors);
    assert_int_equal(osp_config_override(c->cfg, "bad-name=1", &c->errors), -1);
    assert_string_equal(osp_buf_cstr(&c->errors),
                        "-o bad-name=1: invalid parameter name "
                        "(expected letters, digits and underscores)\n");
}

/* Every error path, with the exact message. */
static const struct {
    const char *text;
    const char *error;
} error_cases[] = {
    { "name_int = abc\n",
      "osprey.conf, line 1: parameter \"name_int\": invalid integer \"abc\"\n" },
    { "\nname_int = 12x\n",
      "osprey.conf, line 2: parameter \"name_int\": invalid integer \"12x\"\n" },
    { "name_int = 0\n",
      "osprey.conf, line 1: parameter \"name_int\": value \"0\" out of range "
      "(expected integer between 1 and 100)\n" },
    { "name_int = 101\n",
      "osprey.conf, line 1: parameter \"name_int\": value \"101\" out of range "
      "(expected integer between 1 and 100)\n" },
    { "name_free_int = 99999999999999999999\n",
      "osprey.conf, line 1: parameter \"name_free_int\": invalid integer "
      "\"99999999999999999999\"\n" },
    { "name_bool = maybe\n",
      "osprey.conf, line 1: parameter \"name_bool\": invalid boolean \"maybe\" "
      "(expected yes or no)\n" },
    { "name_dur = 10x\n",
      "osprey.conf, line 1: parameter \"name_dur\": invalid duration \"10x\" "
      "(expected a number with unit ms, s, m, h, d or w)\n" },
    { "name_dur = -1s\n",
      "osprey.conf, line 1: parameter \"name_dur\": invalid duration \"-1s\" "
      "(expected a number with unit ms, s, m, h, d or w)\n" },
    { "name_dur = 500ms\n",
      "osprey.conf, line 1: parameter \"name_dur\": value \"500ms\" out of range "
      "(expected duration between 1s and 86400s)\n" },
    { "name_dur = 2d\n",
      "osprey.conf, line 1: parameter \"name_dur\": value \"2d\" out of range "
      "(expected duration between 1s and 86400s)\n" },
    { "name_size = 5Q\n",
      "osprey.conf, line 1: parameter \"name_size\": invalid size \"5Q\" "
      "(expected a number with optional unit k, M or G)\n" },
    { "name_size = 99999999999G\n",
      "osprey.conf, line 1: parameter \"name_size\": invalid size \"99999999999G\" "
      "(expected a number with optional unit k, M or G)\n" },
    { "name_str hello\n",
      "osprey.conf, line 1: missing '=' after parameter name in \"name_str hello\"\n" },
    { "bad-name = 1\n",
      "osprey.conf, line 1: invalid parameter name \"bad-name\" "
      "(expected letters, digits and underscores)\n" },
    { " = 1\n",
      "osprey.conf, line 1: indented line does not continue a parameter "
      "(remove the leading whitespace)\n" },
    { "= 1\n",
      "osprey.conf, line 1: invalid parameter name \"\" "
      "(expected letters, digits and underscores)\n" },
    { "  name_str = x\n",
      "osprey.conf, line 1: indented line does not continue a parameter "
      "(remove the leading whitespace)\n" },
    { "name_str = $nosuch\n",
      "osprey.conf, line 1: parameter \"name_str\": reference to undefined "
      "parameter \"$nosuch\"\n" },
    { "name_str = ${name_str\n",
      "osprey.conf, line 1: parameter \"name_str\": missing '}' in \"${name_str\"\n" },
    { "name_str = cost $5\n",
      "osprey.conf, line 1: parameter \"name_str\": '$' not followed by a parameter "
      "name (write $$ for a literal dollar sign)\n" },
    { "name_str = $name_str\n",
      "osprey.conf, line 1: parameter \"name_str\": recursive reference to \"$name_str\"\n" },
    { "x1 = $x2\nx2 = $x1\n",
      "osprey.conf, line 1: parameter \"x1\": recursive reference to \"$x1\"\n" },
};

static void test_errors(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        struct ctx *c;
        int n;

        setup((void **)&c);
        n = load(c, error_cases[i].text);
        if (n == 0 || strcmp(osp_buf_cstr(&c->errors), error_cases[i].error) != 0)
            fail_msg("case %zu: input \"%s\": got %d errors \"%s\", want \"%s\"", i,
                     error_cases[i].text, n, osp_buf_cstr(&c->errors), error_cases[i].error);
        teardown((void **)&c);
    }
    (void)state;
}

static void test_error_from_default_reference(void **state)
{
    struct ctx *c = *state;

    /* A default that references a bad value reports where the value came from. */
    assert_int_equal(load(c, "name_str = $\n"), 1);
    assert_string_equal(osp_buf_cstr(&c->errors),
                        "osprey.conf, line 1: parameter \"name_str\": '$' not followed by a "
                        "parameter name (write $$ for a literal dollar sign)\n");
    osp_buf_reset(&c->errors);
    assert_int_equal(osp_config_override(c->cfg, "name_int=x", &c->errors), 0);
    assert_int_equal(osp_config_finish(c->cfg, &c->errors, &c->warnings), 2);
    assert_non_null(strstr(osp_buf_cstr(&c->errors),
                           "-o: parameter \"name_int\": invalid integer \"x\"\n"));
}

static void test_unknown_warnings(void **state)
{
    struct ctx *c = *state;

    assert_int_equal(load(c, "name_itn = 3\n"
                             "completely_different_thing = 1\n"
                             "policyd_something = 1\n"   /* another program's */
                             "test_privte = 2\n"), 0);
    assert_string_equal(osp_buf_cstr(&c->warnings),
                        "osprey.conf, line 1: unknown parameter \"name_itn\"; did you mean "
                        "\"name_int\"?\n"
                        "osprey.conf, line 2: unknown parameter \"completely_different_thing\"\n"
                        "osprey.conf, line 4: unknown parameter \"test_privte\"; did you mean "
                        "\"test_private\"?\n");
}

static void test_file(void **state)
{
    struct ctx *c = *state;
    char path[] = "/tmp/osp-test-config-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "name_int = 33\nname_bool = on\n";

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(osp_config_read_file(c->cfg, path, &c->errors), 0);
    assert_int_equal(osp_config_finish(c->cfg, &c->errors, &c->warnings), 0);
    assert_int_equal(osp_config_int(c->cfg, "name_int"), 33);
    assert_true(osp_config_bool(c->cfg, "name_bool"));
    /* Error lines name the file. */
    assert_int_equal(osp_config_read_file(c->cfg, path, &c->errors), 0);
    unlink(path);
    assert_int_equal(osp_config_read_file(c->cfg, path, &c->errors), -1);
    assert_non_null(strstr(osp_buf_cstr(&c->errors), "cannot open /tmp/osp-test-config-"));
    assert_non_null(strstr(osp_buf_cstr(&c->errors), ": No such file or directory\n"));
}

static void test_parsers(void **state)
{
    int64_t ms;
    uint64_t sz;
    bool b;

    (void)state;
    assert_int_equal(osp_parse_duration_ms("10s", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(osp_parse_duration_ms("5m", &ms), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(osp_parse_duration_ms("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(osp_parse_duration_ms("2d", &ms), 0);
    assert_int_equal(ms, 172800000);
    assert_int_equal(osp_parse_duration_ms("1w", &ms), 0);
    assert_int_equal(ms, 604800000);
    assert_int_equal(osp_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(osp_parse_duration_ms("30", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(osp_parse_duration_ms("", &ms), -1);
    assert_int_equal(osp_parse_duration_ms("s", &ms), -1);
    assert_int_equal(osp_parse_duration_ms("1.5s", &ms), -1);
    assert_int_equal(osp_parse_duration_ms("1 s x", &ms), -1);
    assert_int_equal(osp_parse_duration_ms("99999999999999999w", &ms), -1);

    assert_int_equal(osp_parse_size("64k", &sz), 0);
    assert_int_equal(sz, 65536);
    assert_int_equal(osp_parse_size("50M", &sz), 0);
    assert_int_equal(sz, 52428800);
    assert_int_equal(osp_parse_size("2G", &sz), 0);
    assert_int_equal(sz, 2147483648ULL);
    assert_int_equal(osp_parse_size("10MB", &sz), 0);
    assert_int_equal(sz, 10485760);
    assert_int_equal(osp_parse_size("123", &sz), 0);
    assert_int_equal(sz, 123);
    assert_int_equal(osp_parse_size("-1", &sz), -1);
    assert_int_equal(osp_parse_size("1T", &sz), -1);

    assert_int_equal(osp_parse_bool("Yes", &b), 0);
    assert_true(b);
    assert_int_equal(osp_parse_bool("off", &b), 0);
    assert_false(b);
    assert_int_equal(osp_parse_bool("2", &b), -1);

    assert_int_equal(osp_edit_distance("kitten", "sitting"), 3);
    assert_int_equal(osp_edit_distance("", "abc"), 3);
    assert_int_equal(osp_edit_distance("same", "same"), 0);
}

static void test_print(void **state)
{
    struct ctx *c = *state;
    char *out = NULL;
    size_t len = 0;
    FILE *fp;

    assert_int_equal(load(c, "name_int = 12\nname_secret = pw\nname_ref = $name_int!\n"), 0);
    fp = open_memstream(&out, &len);
    osp_config_print(c->cfg, fp, OSP_CONFIG_PRINT_SET);
    fclose(fp);
    assert_string_equal(out, "name_int = 12\nname_ref = $name_int!\nname_secret = ********\n");
    free(out);

    fp = open_memstream(&out, &len);
    osp_config_print(c->cfg, fp, OSP_CONFIG_PRINT_ALL);
    fclose(fp);
    assert_non_null(strstr(out, "name_ref = 12!\n"));
    assert_non_null(strstr(out, "name_str = hello\n"));
    assert_non_null(strstr(out, "name_secret = ********\n"));
    free(out);

    fp = open_memstream(&out, &len);
    osp_config_print(c->cfg, fp, OSP_CONFIG_PRINT_DEFAULTS);
    fclose(fp);
    assert_non_null(strstr(out, "name_int = 10\n"));
    assert_non_null(strstr(out, "name_ref = $name_str/world\n"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expansion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overrides, setup, teardown),
        cmocka_unit_test(test_errors),
        cmocka_unit_test_setup_teardown(test_error_from_default_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_warnings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file, setup, teardown),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test_setup_teardown(test_print, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
