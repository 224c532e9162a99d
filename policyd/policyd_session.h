/*
 * policyd_session: one Postfix client connection, many requests.
 *
 * States: READING (waiting for or parsing a request), BUSY (the check
 * pipeline is working on a request; later requests that arrive meanwhile
 * are buffered, and reading stops when policyd_max_request_size bytes are
 * waiting), CLOSING (closes started; the struct is freed in the last close
 * callback).  Each request is bounded by one deadline timer
 * (policyd_time_limit); the connection by an idle timer
 * (policyd_idle_timeout).  A protocol error (malformed line, a limit
 * exceeded) is logged and closes this connection only.
 *
 * Every answer is logged as one line when a check decided it (at -v, all):
 *   QUEUEID: session=W.N client=NAME[ADDR] helo=... sender=<...>
 *     recipient=<...> check=client_block action=REJECT delay=0.0001
 *     reason=...
 * QUEUEID is NOQUEUE when Postfix has no queue file yet.
 */
#ifndef POLICYD_SESSION_H
#define POLICYD_SESSION_H

#include <stdbool.h>
#include <uv.h>

#include "policyd_server.h"

/*
 * Accept a connection waiting on server (a listener of worker w) into a
 * new session.  Over policyd_max_connections the connection is accepted,
 * logged and closed.
 */
void policyd_session_accept(policyd_worker_t *w, uv_stream_t *server, bool is_unix);
/* Start closing (worker shutdown); why is logged at -v. */
void policyd_session_close(policyd_session_t *s, const char *why);
/* Start closing every session of worker w. */
void policyd_session_close_all(policyd_worker_t *w, const char *why);

#endif
