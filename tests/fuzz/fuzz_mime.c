/*
 * fuzz_mime: libFuzzer harness for the MIME layer (osp_mime with osp_html
 * and osp_url underneath).
 *
 * Not built by make.  Build it with clang from the source tree, pointing
 * -I at a configured build directory for config.h (Debian: apt-get install
 * clang libclang-rt-14-dev libidn2-dev):
 *
 *   S=/path/to/osprey B=/path/to/build
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -I"$B" -I"$S/src/util" -I"$S/src/mail" \
 *       "$S/tests/fuzz/fuzz_mime.c" "$S/src/mail/osp_mime.c" "$S/src/mail/osp_html.c" \
 *       "$S/src/mail/osp_url.c" "$S/src/util/osp_buf.c" "$S/src/util/osp_mem.c" \
 *       "$S/src/util/osp_log.c" -lidn2 -o fuzz_mime
 *   cp -r "$S/tests/data/mime" corpus
 *   ./fuzz_mime -dict="$S/tests/fuzz/mime.dict" -max_len=65536 -timeout=5 \
 *       -rss_limit_mb=2048 -max_total_time=120 corpus
 *
 * Each input is parsed once with osp_mime_parse (default limits) and once
 * more with small limits, fed in two pieces split at a point taken from
 * the input and then byte by byte; the split results must match the whole
 * one, or the harness aborts.  Every string the API hands out is read to
 * its end so that the sanitizers see it.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "osp_mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t sink;

static void touch(const char *s)
{
    sink += strlen(s);
}

static void touch_all(const osp_mime_message_t *m)
{
    size_t i, j;

    for (i = 0; i < m->n_headers; i++) {
        touch(m->headers[i].name);
        touch(m->headers[i].raw);
        touch(m->headers[i].value);
    }
    for (i = 0; i < m->n_parts; i++) {
        const osp_mime_part_t *p = &m->parts[i];

        touch(p->type);
        touch(p->declared_type);
        touch(p->charset);
        touch(p->boundary);
        touch(p->cte_name);
        touch(p->disposition);
        touch(p->filename);
        touch(p->sniffed);
        touch((const char *)p->body);
        for (j = 0; j < p->n_params; j++)
            touch(p->params[j].value);
        for (j = 0; j < p->n_disp_params; j++)
            touch(p->disp_params[j].value);
        if (p->text)
            sink += p->text_len + (p->text[p->text_len] == 0);
        if (p->visible_len)
            sink += (unsigned char)p->visible[p->visible_len - 1];
    }
    touch(m->text);
    touch(m->invisible);
    for (i = 0; i < m->urls.n_urls; i++) {
        touch(m->urls.urls[i].url);
        touch(m->urls.urls[i].host);
    }
    for (i = 0; i < m->n_links; i++) {
        touch(m->links[i].url);
        touch(m->links[i].text);
        touch(m->links[i].text_host);
    }
}

/* What must not depend on how the input was split. */
static void same(const osp_mime_message_t *a, const osp_mime_message_t *b)
{
    size_t i;

    if (a->n_parts != b->n_parts || a->n_headers != b->n_headers || a->anomalies != b->anomalies
        || a->text_len != b->text_len || memcmp(a->text, b->text, a->text_len) != 0
        || a->urls.n_urls != b->urls.n_urls || a->n_links != b->n_links)
        abort();
    for (i = 0; i < a->n_parts; i++)
        if (a->parts[i].body_len != b->parts[i].body_len
            || memcmp(a->parts[i].body, b->parts[i].body, a->parts[i].body_len) != 0
            || strcmp(a->parts[i].type, b->parts[i].type) != 0
            || strcmp(a->parts[i].filename, b->parts[i].filename) != 0)
            abort();
    for (i = 0; i < a->n_headers; i++)
        if (strcmp(a->headers[i].value, b->headers[i].value) != 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static osp_mime_parser_t *p;
    osp_mime_limits_t lim;
    osp_mime_message_t *whole, *split;
    size_t cut, i;

    whole = osp_mime_parse(data, size, NULL);
    touch_all(whole);
    osp_mime_message_free(&whole);

    memset(&lim, 0, sizeof(lim));
    lim.max_parts = 40;
    lim.max_depth = 6;
    lim.max_headers = 60;
    lim.max_header_len = 2048;
    lim.max_header_bytes = 16384;
    lim.max_line = 1024;
    lim.max_part_size = 8192;
    lim.max_total_size = 32768;
    lim.max_text = 8192;
    lim.max_urls = 30;
    lim.max_links = 30;
    lim.max_params = 8;
    if (p == NULL)
        p = osp_mime_parser_create(&lim);   /* reused: tests the reset too */

    osp_mime_parser_feed(p, data, size);
    whole = osp_mime_parser_finish(p);
    touch_all(whole);

    cut = size ? (data[0] | (size_t)data[size - 1] << 8) % (size + 1) : 0;
    osp_mime_parser_feed(p, data, cut);
    osp_mime_parser_feed(p, data + cut, size - cut);
    split = osp_mime_parser_finish(p);
    same(whole, split);
    osp_mime_message_free(&split);

    if (size <= 4096) {
        for (i = 0; i < size; i++)
            osp_mime_parser_feed(p, data + i, 1);
        split = osp_mime_parser_finish(p);
        same(whole, split);
        osp_mime_message_free(&split);
    }
    osp_mime_message_free(&whole);
    return 0;
}
