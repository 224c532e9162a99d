/*
 * osp_mem: allocation wrappers.
 *
 * Allocation failure is not a recoverable condition for a mail daemon that
 * has already bounded every input: these wrappers log and abort, so callers
 * never test for NULL.  All functions return memory the caller owns.
 */
#ifndef OSP_MEM_H
#define OSP_MEM_H

#include <stddef.h>

void *osp_malloc(size_t size);
void *osp_calloc(size_t nmemb, size_t size);
void *osp_realloc(void *ptr, size_t size);
/* Grow an array to nmemb elements of size bytes, checking for overflow. */
void *osp_reallocarray(void *ptr, size_t nmemb, size_t size);
char *osp_strdup(const char *s);
char *osp_strndup(const char *s, size_t n);
/* Copy len bytes and add a terminating NUL. */
char *osp_memdup0(const void *p, size_t len);

/* Free *pp (NULL is fine) and clear the caller's pointer. */
#define OSP_FREE(pp) do { free(*(pp)); *(pp) = NULL; } while (0)

#endif
