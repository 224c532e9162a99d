/* Unit tests for osp_log: labels, verbosity, hook, stderr format. */
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

#include "osp_buf.h"
#include "osp_log.h"

static void capture_cb(enum osp_log_level level, const char *line, void *ctx)
{
    osp_buf_t *b = ctx;

    osp_buf_printf(b, "%d|%s\n", (int)level, line);
}

static void test_labels_and_verbosity(void **state)
{
    osp_buf_t b;

    (void)state;
    osp_buf_init(&b, 4096);
    osp_log_set_hook(capture_cb, &b);
    osp_log_set_verbose(1);
    osp_info("4F2D1: action=%s", "deliver");
    osp_warn("breaker %s open", "db");
    osp_error("bad %d", 7);
    osp_debug(1, "shown");
    osp_debug(2, "hidden");
    osp_log_set_hook(NULL, NULL);
    osp_log_set_verbose(0);
    assert_string_equal(osp_buf_cstr(&b),
                        "1|4F2D1: action=deliver\n"
                        "2|warning: breaker db open\n"
                        "3|error: bad 7\n"
                        "0|shown\n");
    osp_buf_close(&b);
}

static void test_stderr_format(void **state)
{
    char path[] = "/tmp/osp-test-log-XXXXXX";
    int fd = mkstemp(path), saved;
    char line[256], want[256];
    FILE *fp;

    (void)state;
    assert_true(fd >= 0);
    saved = dup(2);
    dup2(fd, 2);
    osp_log_open("osprey", "filter", OSP_LOG_TO_STDERR);
    osp_warn("ABC123: reinjection failed");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    assert_string_equal(osp_log_name(), "osprey/filter");
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    unlink(path);
    snprintf(want, sizeof(want), "osprey/filter[%ld]: warning: ABC123: reinjection failed\n",
             (long)getpid());
    assert_string_equal(line, want);
    osp_log_close();
}

static void test_long_line_truncated(void **state)
{
    osp_buf_t b;
    char big[5000];

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    osp_buf_init(&b, 8192);
    osp_log_set_hook(capture_cb, &b);
    osp_info("%s", big);
    osp_log_set_hook(NULL, NULL);
    /* Bounded: the line is cut, never overflows. */
    assert_true(b.len < 2100);
    assert_true(b.len > 2000);
    osp_buf_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels_and_verbosity),
        cmocka_unit_test(test_stderr_format),
        cmocka_unit_test(test_long_line_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
