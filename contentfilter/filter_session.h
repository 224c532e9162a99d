/*
 * filter_session: one SMTP or LMTP connection from Postfix, and the mail
 * transaction inside it.
 *
 * The session (filter_session_t) lives as long as the connection: stream,
 * timers, command-line assembly, XFORWARD attributes, error count.  The
 * transaction (filter_tx_t) lives from MAIL to the reply after DATA (or
 * RSET, or the end of the connection) and owns everything the message
 * gathers: envelope, body, scan result, reinjection and quarantine
 * requests.  filter_tx_free() is the one place where that is released.
 *
 * States: CMD (reading commands) -> DATA (reading the message) -> PROCESS
 * (scan, then quarantine/reinjection in parallel, then the reply; reading
 * is paused) -> CMD ...; CLOSING from anywhere.  A session closes its
 * handles with uv_close and is freed in the last close callback, but not
 * before the transaction's pending operations (thread-pool jobs,
 * reinjection) have called back: those may outlive the connection.
 *
 * The no-loss rule lives in filter_session.c, reply composition: a
 * recipient is answered 2xx only after its copy was accepted downstream,
 * committed to the quarantine or deliberately discarded.
 */
#ifndef FILTER_SESSION_H
#define FILTER_SESSION_H

#include "filter_server.h"

/*
 * Start a session on a freshly accepted client (ownership of the handle
 * memory passes to the session; the stream must be the session's own
 * embedded handle, see filter_session_stream()).  busy: answer 421 and
 * close.
 */
filter_session_t *filter_session_create(filter_server_t *srv, bool is_unix);
uv_stream_t *filter_session_stream(filter_session_t *sess);
void filter_session_start(filter_session_t *sess, bool busy);
/* Close at once (shutdown, accept failure); no reply is sent. */
void filter_session_abort(filter_session_t *sess);
filter_session_t *filter_session_next(const filter_session_t *sess);
void filter_session_set_next(filter_session_t *sess, filter_session_t *next);

/* ---- reply composition, exposed for unit tests ------------------------ */

/* What happened to one recipient. */
typedef struct filter_outcome {
    int code;                       /* SMTP code; 2xx/4xx/5xx */
    const char *text;               /* "2.0.0 ..." (borrowed) */
} filter_outcome_t;

/*
 * The single SMTP reply for n outcomes: 2xx if all are 2xx; the first 5xx
 * if all are 5xx; otherwise 451 4.3.0 (temporary: Postfix retries every
 * recipient, duplicating the ones already served -- the price of SMTP's
 * one reply; LMTP avoids it).  Writes "CODE TEXT" to out.
 * Returns the code.
 */
int filter_smtp_reply(const filter_outcome_t *o, size_t n, const char *ok_text,
                      osp_buf_t *out);

#endif
