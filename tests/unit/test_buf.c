/* Unit tests for osp_buf and the bounded string helpers. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "osp_buf.h"
#include "osp_mem.h"

static void test_append_and_cap(void **state)
{
    osp_buf_t b;

    (void)state;
    osp_buf_init(&b, 10);
    assert_string_equal(osp_buf_cstr(&b), "");
    assert_int_equal(osp_buf_append_str(&b, "hello"), 0);
    assert_int_equal(osp_buf_append(&b, "\0x", 2), 0);       /* binary-safe */
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.data, "hello\0x", 7);
    assert_int_equal(b.data[7], '\0');
    /* Exactly at the cap is fine; one more byte fails and changes nothing. */
    assert_int_equal(osp_buf_append(&b, "abc", 3), 0);
    assert_int_equal(b.len, 10);
    assert_int_equal(osp_buf_append_char(&b, 'z'), -1);
    assert_int_equal(b.len, 10);
    assert_int_equal(osp_buf_printf(&b, "%d", 1), -1);
    assert_int_equal(b.len, 10);
    osp_buf_close(&b);
}

static void test_printf(void **state)
{
    osp_buf_t b;
    char big[1000];

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    osp_buf_init(&b, 2000);
    assert_int_equal(osp_buf_printf(&b, "%s=%d;", "x", 42), 0);
    assert_string_equal(osp_buf_cstr(&b), "x=42;");
    /* Longer than the internal small buffer. */
    assert_int_equal(osp_buf_printf(&b, "%s", big), 0);
    assert_int_equal(b.len, 5 + 999);
    assert_int_equal(b.data[b.len], '\0');
    /* Would exceed the cap: fails whole. */
    assert_int_equal(osp_buf_printf(&b, "%s", big), -1);
    assert_int_equal(b.len, 1004);
    osp_buf_close(&b);
}

static void test_consume_truncate_steal(void **state)
{
    osp_buf_t b;
    char *s;

    (void)state;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    osp_buf_append_str(&b, "line1\r\nline2");
    osp_buf_consume(&b, 7);
    assert_string_equal(osp_buf_cstr(&b), "line2");
    osp_buf_truncate(&b, 4);
    assert_string_equal(osp_buf_cstr(&b), "line");
    osp_buf_truncate(&b, 100);
    assert_int_equal(b.len, 4);
    osp_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    osp_buf_append_str(&b, "kept");
    s = osp_buf_steal(&b);
    assert_string_equal(s, "kept");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    s = osp_buf_steal(&b);      /* empty buffer: an empty string, never NULL */
    assert_string_equal(s, "");
    free(s);
    osp_buf_close(&b);
}

static void test_growth(void **state)
{
    osp_buf_t b;
    size_t i;

    (void)state;
    osp_buf_init(&b, 100000);
    for (i = 0; i < 100000; i++)
        assert_int_equal(osp_buf_append_char(&b, (char)('a' + i % 26)), 0);
    assert_int_equal(osp_buf_append_char(&b, 'x'), -1);
    assert_true(b.size <= 100001);
    assert_int_equal(b.data[99999], 'a' + 99999 % 26);
    osp_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(osp_buf_cstr(&b), "");
    osp_buf_close(&b);
}

static void test_printable(void **state)
{
    osp_buf_t b;

    (void)state;
    osp_buf_init(&b, 100);
    assert_int_equal(osp_buf_append_printable(&b, "ok \r\n\\\x7f\xc3\xa9\0", 10), 0);
    assert_string_equal(osp_buf_cstr(&b), "ok \\x0d\\x0a\\x5c\\x7f\\xc3\\xa9\\x00");
    osp_buf_close(&b);
    osp_buf_init(&b, 5);
    assert_int_equal(osp_buf_append_printable(&b, "\n\n", 2), -1);
    osp_buf_close(&b);
}

static void test_strings(void **state)
{
    char small[5];

    (void)state;
    assert_int_equal(osp_strlcpy(small, "abc", sizeof(small)), 3);
    assert_string_equal(small, "abc");
    assert_int_equal(osp_strlcpy(small, "abcdefgh", sizeof(small)), 8);
    assert_string_equal(small, "abcd");
    assert_int_equal(osp_snprintf(small, sizeof(small), "%d", 123456), 6);
    assert_string_equal(small, "1234");
    {
        char *d = osp_memdup0("a\0b", 3);
        assert_memory_equal(d, "a\0b\0", 4);
        free(d);
        d = osp_strndup("abcdef", 3);
        assert_string_equal(d, "abc");
        OSP_FREE(&d);
        assert_null(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_cap),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_consume_truncate_steal),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_printable),
        cmocka_unit_test(test_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
