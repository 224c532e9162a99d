/*
 * Unit tests for reloading the list files (SIGHUP): new entries take
 * effect and old ones go, bad lines are warnings, a file that cannot be
 * read keeps every list as it was.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_proto.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "policyd_test.h"

static char dir[256], cpath[512], spath[512];

static void put(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static const char *decide(const policyd_checks_t *c, policy_request_t *req, const char *client,
                          const char *sender)
{
    const policyd_verdict_t *v;

    policyd_test_request(req, "RCPT", client, sender, "r@example.com");
    v = policyd_test_decide(c, req, 1000);
    return v->check ? v->check : "none";
}

static void test_reload(void **state)
{
    static const osp_param_def_t *const tables[] = { osp_common_params, policyd_params, NULL };
    osp_config_t *cfg = osp_config_create("policyd", tables);
    osp_buf_t errors, warnings, text;
    policyd_checks_t *c;
    policy_request_t req;
    size_t n = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_policyd_reload.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cpath, sizeof(cpath), "%s/client_block", dir);
    snprintf(spath, sizeof(spath), "%s/sender_block", dir);
    put(cpath, "192.0.2.0/24\n");
    put(spath, "old@example.org\n");
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    osp_buf_init(&text, 4096);
    (void)osp_buf_printf(&text, "policyd_client_block_files = %s\n"
                         "policyd_sender_block_files = %s\n", cpath, spath);
    osp_config_read_string(cfg, "test", osp_buf_cstr(&text), &errors);
    assert_int_equal(osp_config_finish(cfg, &errors, &warnings), 0);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    policy_request_init(&req, 4096);
    assert_string_equal(decide(c, &req, "192.0.2.5", "a@example.org"), "client_block");
    assert_string_equal(decide(c, &req, "203.0.113.5", "old@example.org"), "sender_block");

    /* New contents, one bad line: the rest loads, the old entries go. */
    put(cpath, "198.51.100.0/24\nnot-a-network\n2001:db8::/32\n");
    put(spath, "new@example.org\n");
    assert_int_equal(policyd_checks_reload_lists(c, cfg, &errors, &warnings, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(errors.len, 0);
    assert_non_null(strstr(osp_buf_cstr(&warnings), "client_block, line 2"));
    assert_string_equal(decide(c, &req, "192.0.2.5", "a@example.org"), "none");
    assert_string_equal(decide(c, &req, "198.51.100.5", "a@example.org"), "client_block");
    assert_string_equal(decide(c, &req, "2001:db8::1", "a@example.org"), "client_block");
    assert_string_equal(decide(c, &req, "203.0.113.5", "old@example.org"), "none");
    assert_string_equal(decide(c, &req, "203.0.113.5", "new@example.org"), "sender_block");

    /* A file that cannot be read: nothing changes, not even the readable one. */
    put(cpath, "10.0.0.0/8\n");
    assert_int_equal(unlink(spath), 0);
    assert_int_equal(policyd_checks_reload_lists(c, cfg, &errors, &warnings, NULL), -1);
    assert_non_null(strstr(osp_buf_cstr(&errors), "cannot open list file"));
    assert_non_null(strstr(osp_buf_cstr(&errors), "policyd_sender_block_files"));
    assert_string_equal(decide(c, &req, "10.1.2.3", "a@example.org"), "none");
    assert_string_equal(decide(c, &req, "198.51.100.5", "a@example.org"), "client_block");
    assert_string_equal(decide(c, &req, "203.0.113.5", "new@example.org"), "sender_block");

    policy_request_close(&req);
    policyd_checks_free(&c);
    osp_config_free(&cfg);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    osp_buf_close(&text);
    unlink(cpath);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
