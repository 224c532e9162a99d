/*
 * dkim_sign: sign a message with libopendkim (a test aid).
 *
 *   dkim_sign KEYFILE SELECTOR DOMAIN < message > signed-message
 *
 * Reads the message (LF or CR LF line ends), writes it with a
 * DKIM-Signature field (relaxed/relaxed, rsa-sha256) in front, CR LF line
 * ends throughout.  Exit 0, or 1 with the reason on stderr.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendkim/dkim.h>

#include "osp_buf.h"

static int dkim_sign__read(const char *path, osp_buf_t *out)
{
    FILE *f = path ? fopen(path, "r") : stdin;
    char chunk[8192];
    size_t n;

    if (f == NULL)
        return -1;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (osp_buf_append(out, chunk, n) < 0)
            return -1;
    if (path)
        fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    osp_buf_t key, in, msg;
    DKIM_LIB *lib;
    DKIM *d;
    DKIM_STAT st;
    size_t i, body, start;
    u_char *sig = NULL;
    size_t siglen = 0;

    if (argc != 4) {
        fprintf(stderr, "usage: dkim_sign KEYFILE SELECTOR DOMAIN < msg\n");
        return 1;
    }
    osp_buf_init(&key, 65536);
    osp_buf_init(&in, 64 * 1024 * 1024);
    osp_buf_init(&msg, 64 * 1024 * 1024);
    if (dkim_sign__read(argv[1], &key) < 0 || dkim_sign__read(NULL, &in) < 0) {
        fprintf(stderr, "dkim_sign: cannot read the key or the message\n");
        return 1;
    }
    /* CR LF everywhere. */
    for (i = 0; i < in.len; i++) {
        if (in.data[i] == '\n' && (i == 0 || in.data[i - 1] != '\r'))
            osp_buf_append_char(&msg, '\r');
        osp_buf_append_char(&msg, in.data[i]);
    }
    lib = dkim_init(NULL, NULL);
    d = dkim_sign(lib, (const u_char *)"dkim_sign", NULL, (dkim_sigkey_t)osp_buf_cstr(&key),
                  (const u_char *)argv[2], (const u_char *)argv[3], DKIM_CANON_RELAXED,
                  DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
    if (d == NULL) {
        fprintf(stderr, "dkim_sign: %s\n", dkim_getresultstr(st));
        return 1;
    }
    /* Header fields (with their folded lines) until the empty line. */
    start = 0;
    body = msg.len;
    for (i = 0; i + 1 < msg.len; i++) {
        if (msg.data[i] != '\r' || msg.data[i + 1] != '\n')
            continue;
        if (i == start) {           /* the empty line */
            body = i + 2;
            break;
        }
        if (i + 2 < msg.len && (msg.data[i + 2] == ' ' || msg.data[i + 2] == '\t'))
            continue;
        dkim_header(d, (u_char *)msg.data + start, i - start);
        start = i + 2;
    }
    dkim_eoh(d);
    if (body < msg.len)
        dkim_body(d, (u_char *)msg.data + body, msg.len - body);
    st = dkim_eom(d, NULL);
    if (st != DKIM_STAT_OK ||
        dkim_getsighdr_d(d, strlen(DKIM_SIGNHEADER) + 2, &sig, &siglen) != DKIM_STAT_OK) {
        fprintf(stderr, "dkim_sign: %s\n", dkim_geterror(d) ? dkim_geterror(d) : "failed");
        return 1;
    }
    printf("%s: ", DKIM_SIGNHEADER);
    for (i = 0; i < siglen; i++) {
        if (sig[i] == '\n' && (i == 0 || sig[i - 1] != '\r'))
            putchar('\r');
        putchar(sig[i]);
    }
    printf("\r\n");
    fwrite(msg.data, 1, msg.len, stdout);
    dkim_free(d);
    dkim_close(lib);
    osp_buf_close(&key);
    osp_buf_close(&in);
    osp_buf_close(&msg);
    return 0;
}
