/*
 * filter_milter: osprey-filter as a Sendmail/Postfix milter (protocol
 * version 6), the before-queue front end.
 *
 * Postfix's smtpd talks to it while the client is still connected
 * (smtpd_milters = inet:127.0.0.1:10029): Postfix queues each message
 * once, and the scan's answer reaches the client directly.  The scan, the
 * recipients' settings, Bayes, quarantine and message log are the same as
 * for the after-queue sessions (filter_session.c); only the delivery
 * differs: Postfix keeps the message and we tell it what to change.
 *
 * At the end of a message, per recipient verdict:
 *   - deliver/tag: the message stays; our header lines are inserted at the
 *     top and, for tag, the Subject gets the prefix.  The milter protocol
 *     has one copy per message, so the copy gets the headers (and tag) of
 *     its first delivered recipient: per-recipient copies need the
 *     after-queue mode.
 *   - quarantine: the message is committed to the quarantine first; then
 *     the recipient is removed (SMFIR_DELRCPT), or the whole message is
 *     discarded when no recipient is left (the client sees 250).
 *   - discard: removed, or the message discarded, the same way.
 *   - reject: 550 to the client when every recipient is rejected (when
 *     only some are, they are quarantined, as for SMTP; filter_route).
 * Any failure (scan, quarantine, timeout) answers tempfail, so the client
 * gets 4xx and keeps the message: the no-loss contract holds because
 * Postfix answers the client only after our reply.  With
 * milter_default_action = tempfail, the filter being down does the same.
 *
 * Protocol: 4-byte length, 1-byte command, data.  We negotiate "no reply"
 * for every command Postfix offers it for, leading white space in header
 * values, and no DATA/unknown events, so a message costs one round trip
 * (end of message) besides the packets Postfix streams.
 */
#ifndef FILTER_MILTER_H
#define FILTER_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "osp_buf.h"

struct filter_server;
typedef struct filter_milter filter_milter_t;

filter_milter_t *filter_milter_create(struct filter_server *srv, bool is_unix);
uv_stream_t *filter_milter_stream(filter_milter_t *m);
/* busy: close at once (Postfix applies milter_default_action). */
void filter_milter_start(filter_milter_t *m, bool busy);
void filter_milter_abort(filter_milter_t *m);
filter_milter_t *filter_milter_next(const filter_milter_t *m);
void filter_milter_set_next(filter_milter_t *m, filter_milter_t *next);

/* ---- packet codec, exposed for tests ----------------------------------- */

/* Largest packet accepted (Postfix sends body chunks of at most 64 KB). */
#define FILTER_MILTER_PACKET_MAX (1024 * 1024)

typedef struct filter_milter_packet {
    char cmd;
    const char *data;               /* borrowed from the input */
    size_t len;
} filter_milter_packet_t;

/*
 * Parse one packet from buf[0..len): 1 and *used_r bytes consumed, 0 if
 * more input is needed, -1 with err set if the input is not a milter
 * packet (zero or oversized length).
 */
int filter_milter_parse(const char *buf, size_t len, filter_milter_packet_t *p,
                        size_t *used_r, char *err, size_t errsize);
/* Append one packet to out. */
void filter_milter_put(osp_buf_t *out, char cmd, const void *data, size_t len);

/*
 * Split the NUL-terminated strings of a packet's data: up to max pointers
 * into argv (borrowed from data).  Returns how many, or -1 if the data
 * does not end in NUL.
 */
int filter_milter_strings(const char *data, size_t len, const char **argv, int max);

#endif
