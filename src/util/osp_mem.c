/* osp_mem: allocation wrappers that abort on failure. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osp_mem.h"

static void osp_mem_fail(size_t size) __attribute__((noreturn));

static void osp_mem_fail(size_t size)
{
    /* Do not allocate here: write straight to stderr and abort. */
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", size);
    abort();
}

void *osp_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        osp_mem_fail(size);
    return p;
}

void *osp_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        osp_mem_fail(nmemb * size);
    return p;
}

void *osp_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        osp_mem_fail(size);
    return p;
}

void *osp_reallocarray(void *ptr, size_t nmemb, size_t size)
{
    if (size != 0 && nmemb > SIZE_MAX / size)
        osp_mem_fail(SIZE_MAX);
    return osp_realloc(ptr, nmemb * size);
}

char *osp_strdup(const char *s)
{
    return osp_memdup0(s, strlen(s));
}

char *osp_strndup(const char *s, size_t n)
{
    return osp_memdup0(s, strnlen(s, n));
}

char *osp_memdup0(const void *p, size_t len)
{
    char *d;

    if (len == SIZE_MAX)
        osp_mem_fail(len);
    d = osp_malloc(len + 1);
    if (len)
        memcpy(d, p, len);
    d[len] = '\0';
    return d;
}
