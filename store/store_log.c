/*
 * store_log: the message_log writer.  See osp_store.h for the contract.
 *
 * Rows are formatted once, at append time, as lines of COPY text format
 * (tab-separated, backslash escapes, \N for NULL).  The same line is what
 * goes to the database, to the journal and, from the journal, back to the
 * database, so a row is byte-for-byte the same on every path and carries
 * its own (id, logged_at) key.
 *
 * Files (PATH is conf->journal_path):
 *   PATH          the journal: appended (O_APPEND) and fsynced in groups,
 *                 through the libuv thread pool, one write+fsync in flight
 *   PATH.replay   the journal being replayed: PATH is renamed to it when a
 *                 replay starts, read in chunks, sent in transactions, and
 *                 removed at the end.  If it exists at start-up a replay was
 *                 interrupted: it is replayed again (first), duplicates are
 *                 skipped by ON CONFLICT DO NOTHING.
 *   PATH.bad      rows the database refused as invalid, kept for the admin
 *
 * The small file operations (open, rename, unlink) are synchronous
 * metadata calls; every write, fsync and read of data goes through uv_fs
 * and the thread pool, except at shutdown, where the writer saves what it
 * holds with plain write()+fsync() before it lets go.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "store_int.h"

#define LOG_FIELDS 17
#define LOG_FIELD_MAX 8192
#define LOG_READ_CHUNK (1024 * 1024)
#define LOG_JOURNAL_BUF_MAX ((size_t)256 * 1024 * 1024)

#define LOG_COLUMNS \
    "id, logged_at, account_id, queue_id, reinject_queue_id, message_id, client_address," \
    " client_name, helo, sender, recipient, subject, size, score, verdict, rules_hit, delivery"

struct osp_store_log {
    uv_loop_t *loop;
    osp_store_log_conf_t conf;
    char *conninfo, *path, *replay_path, *bad_path;
    store__conn_t conn;
    bool conn_closed;
    uv_timer_t flush_timer;
    uv_timer_t jtimer;
    int handles;                  /* open uv handles of our own (timers) */
    int fs_pending;               /* uv_fs requests in flight */
    bool closing;

    uint32_t instance;
    uint64_t seq;
    osp_buf_t line;               /* scratch for one row */
    osp_buf_t field;              /* scratch for one field */

    osp_buf_t q;                  /* queued lines */
    size_t qrows;
    bool flush_due;

    store__req_t *req;            /* in flight on conn */
    osp_buf_t inflight;           /* the lines it carries */
    size_t inrows;
    bool in_replay;

    /* journal */
    uv_file jfd;
    osp_buf_t jbuf;               /* waiting for the next write */
    osp_buf_t jwbuf;              /* being written */
    size_t jwoff;
    bool jbusy, jtimer_armed;
    uv_fs_t jreq;
    bool journal_has_data;        /* PATH holds rows not yet replayed */

    /* replay */
    bool replaying, reading, replay_eof;
    uv_file rfd;
    int64_t roff;                 /* file offset of the next unsent line */
    uv_fs_t rreq;
    char *rchunk;
    osp_buf_t rbatch;             /* validated lines ready to send */
    size_t rrows;
    size_t rconsumed;             /* bytes of the file they cover */
    bool alternate;

    osp_store_log_stats_t stats;
};

static void log_kick(osp_store_log_t *lw);
static void log_maybe_free(osp_store_log_t *lw);
static void journal_schedule(osp_store_log_t *lw);

/* ------------------------------------------------------------ formatting */

static void esc(osp_buf_t *out, const char *s, size_t len)
{
    size_t i;
    unsigned char ch;

    for (i = 0; i < len; i++) {
        ch = (unsigned char)s[i];
        switch (ch) {
        case '\\': osp_buf_append(out, "\\\\", 2); break;
        case '\t': osp_buf_append(out, "\\t", 2); break;
        case '\n': osp_buf_append(out, "\\n", 2); break;
        case '\r': osp_buf_append(out, "\\r", 2); break;
        default:
            osp_buf_append_char(out, ch < 0x20 || ch == 0x7f ? ' ' : (char)ch);
        }
    }
}

static void field_text(osp_store_log_t *lw, const char *s)
{
    osp_buf_append_char(&lw->line, '\t');
    if (s == NULL) {
        osp_buf_append(&lw->line, "\\N", 2);
        return;
    }
    osp_buf_reset(&lw->field);
    store__utf8_clean(&lw->field, s, LOG_FIELD_MAX);
    esc(&lw->line, lw->field.data ? lw->field.data : "", lw->field.len);
}

static void format_row(osp_store_log_t *lw, const osp_store_log_row_t *row)
{
    osp_buf_t *b = &lw->line;
    int64_t us = row->logged_at_us > 0 ? row->logged_at_us : store__now_us();
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;
    osp_ip_t ip;
    osp_buf_t arr;
    uint64_t id;
    size_t i;

    osp_buf_reset(b);
    id = (1ULL << 62) | ((uint64_t)lw->instance << 40) | (lw->seq++ & ((1ULL << 40) - 1));
    gmtime_r(&sec, &tm);
    osp_buf_printf(b, "%llu\t%04d-%02d-%02d %02d:%02d:%02d.%06d+00", (unsigned long long)id,
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, (int)(us % 1000000));
    if (row->account_id < 0)
        osp_buf_append(b, "\t\\N", 3);
    else
        osp_buf_printf(b, "\t%lld", (long long)row->account_id);
    field_text(lw, row->queue_id);
    field_text(lw, row->reinject_queue_id);
    field_text(lw, row->message_id);
    field_text(lw, row->client_address && osp_ip_parse(row->client_address, &ip) == 0
                   ? row->client_address : NULL);
    field_text(lw, row->client_name);
    field_text(lw, row->helo);
    field_text(lw, row->sender);
    field_text(lw, row->recipient);
    field_text(lw, row->subject);
    if (row->size < 0)
        osp_buf_append(b, "\t\\N", 3);
    else
        osp_buf_printf(b, "\t%lld", (long long)row->size);
    if (!isfinite(row->score))
        osp_buf_append(b, "\t\\N", 3);
    else
        osp_buf_printf(b, "\t%.17g", row->score);
    field_text(lw, row->verdict);
    osp_buf_init(&arr, OSP_BUF_UNLIMITED);
    {
        const char **items = osp_calloc(row->nrules_hit + 1, sizeof(*items));
        osp_buf_t one;

        for (i = 0; i < row->nrules_hit; i++) {
            osp_buf_init(&one, OSP_BUF_UNLIMITED);
            store__utf8_clean(&one, row->rules_hit[i] ? row->rules_hit[i] : "", 256);
            items[i] = osp_buf_steal(&one);
            osp_buf_close(&one);
        }
        store__array_literal(&arr, items, row->nrules_hit);
        for (i = 0; i < row->nrules_hit; i++)
            free((void *)items[i]);
        free(items);
    }
    osp_buf_append_char(b, '\t');
    esc(b, osp_buf_cstr(&arr), arr.len);
    osp_buf_close(&arr);
    field_text(lw, row->delivery);
    osp_buf_append_char(b, '\n');
}

/* A journal line is valid if it has the right number of fields. */
static bool line_valid(const char *p, size_t len)
{
    size_t i, tabs = 0;

    if (len < 20 || p[0] < '1' || p[0] > '9')
        return false;
    for (i = 0; i < len; i++)
        if (p[i] == '\t')
            tabs++;
    return tabs == LOG_FIELDS - 1;
}

/* ------------------------------------------------------------ bad rows */

static void write_all_fd(int fd, const char *p, size_t len)
{
    ssize_t n;

    while (len > 0) {
        n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

static void set_aside(osp_store_log_t *lw, const char *data, size_t len, size_t rows,
                      const char *why)
{
    int fd = open(lw->bad_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

    osp_error("store: message log: %zu rows refused by the database (%s), kept in %s",
              rows, why, lw->bad_path);
    lw->stats.bad += rows;
    if (fd < 0)
        return;
    write_all_fd(fd, data, len);
    fsync(fd);
    close(fd);
}

/* ------------------------------------------------------------ journal */

static int journal_open(osp_store_log_t *lw)
{
    if (lw->jfd >= 0)
        return 0;
    lw->jfd = open(lw->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (lw->jfd < 0) {
        osp_error("store: message log journal %s: %s", lw->path, strerror(errno));
        return -1;
    }
    return 0;
}

static void journal_add(osp_store_log_t *lw, const char *data, size_t len, size_t rows)
{
    if (rows == 0)
        return;
    if (lw->jbuf.len + len > LOG_JOURNAL_BUF_MAX) {
        lw->stats.dropped += rows;
        osp_error("store: message log journal backlog full: %zu rows dropped", rows);
        return;
    }
    osp_buf_append(&lw->jbuf, data, len);
    lw->stats.journaled += rows;
    lw->journal_has_data = true;
    journal_schedule(lw);
}

static void jsync_cb(uv_fs_t *req)
{
    osp_store_log_t *lw = req->data;

    lw->fs_pending--;
    if (req->result < 0)
        osp_error("store: message log journal fsync: %s", uv_strerror((int)req->result));
    uv_fs_req_cleanup(req);
    lw->jbusy = false;
    osp_buf_reset(&lw->jwbuf);
    lw->jwoff = 0;
    if (lw->closing) {
        log_maybe_free(lw);
        return;
    }
    if (lw->jbuf.len > 0)
        journal_schedule(lw);
    log_kick(lw);
}

static void jwrite_cb(uv_fs_t *req)
{
    osp_store_log_t *lw = req->data;
    uv_buf_t ub;
    int rc;

    lw->fs_pending--;
    if (req->result < 0) {
        osp_error("store: message log journal write: %s", uv_strerror((int)req->result));
        uv_fs_req_cleanup(req);
        lw->jbusy = false;
        osp_buf_reset(&lw->jwbuf);
        if (lw->closing)
            log_maybe_free(lw);
        else
            log_kick(lw);
        return;
    }
    lw->jwoff += (size_t)req->result;
    uv_fs_req_cleanup(req);
    if (lw->jwoff < lw->jwbuf.len) {
        ub = uv_buf_init(lw->jwbuf.data + lw->jwoff, (unsigned)(lw->jwbuf.len - lw->jwoff));
        rc = uv_fs_write(lw->loop, &lw->jreq, lw->jfd, &ub, 1, -1, jwrite_cb);
    } else {
        rc = uv_fs_fsync(lw->loop, &lw->jreq, lw->jfd, jsync_cb);
    }
    if (rc < 0) {
        osp_error("store: message log journal: %s", uv_strerror(rc));
        lw->jbusy = false;
        return;
    }
    lw->fs_pending++;
}

static void journal_write_start(osp_store_log_t *lw)
{
    uv_buf_t ub;
    int rc;

    if (lw->jbusy || lw->jbuf.len == 0)
        return;
    if (journal_open(lw) < 0)
        return;             /* retried at the next append */
    /* swap: jbuf collects while jwbuf is written */
    {
        osp_buf_t tmp = lw->jwbuf;

        lw->jwbuf = lw->jbuf;
        lw->jbuf = tmp;
        osp_buf_reset(&lw->jbuf);
    }
    lw->jwoff = 0;
    lw->jreq.data = lw;
    ub = uv_buf_init(lw->jwbuf.data, (unsigned)lw->jwbuf.len);
    rc = uv_fs_write(lw->loop, &lw->jreq, lw->jfd, &ub, 1, -1, jwrite_cb);
    if (rc < 0) {
        osp_error("store: message log journal write: %s", uv_strerror(rc));
        return;
    }
    lw->jbusy = true;
    lw->fs_pending++;
}

static void jtimer_cb(uv_timer_t *t)
{
    osp_store_log_t *lw = t->data;

    lw->jtimer_armed = false;
    journal_write_start(lw);
}

static void journal_schedule(osp_store_log_t *lw)
{
    if (lw->jbusy || lw->jtimer_armed || lw->closing)
        return;
    lw->jtimer_armed = true;
    uv_timer_start(&lw->jtimer, jtimer_cb, lw->conf.journal_sync_ms, 0);
}

/* ------------------------------------------------------------ replay */

static void replay_read_cb(uv_fs_t *req);

static void replay_finish(osp_store_log_t *lw)
{
    if (lw->rfd >= 0) {
        close(lw->rfd);
        lw->rfd = -1;
    }
    if (unlink(lw->replay_path) < 0 && errno != ENOENT)
        osp_error("store: message log: cannot remove %s: %s", lw->replay_path, strerror(errno));
    osp_info("store: message log journal replayed");
    lw->replaying = false;
    lw->replay_eof = false;
}

static void replay_begin(osp_store_log_t *lw)
{
    struct stat sb;

    if (stat(lw->replay_path, &sb) < 0) {
        /* all journal data is on disk (no write in flight): take it */
        if (lw->jfd >= 0) {
            close(lw->jfd);
            lw->jfd = -1;
        }
        if (rename(lw->path, lw->replay_path) < 0) {
            if (errno != ENOENT)
                osp_error("store: message log: rename %s: %s", lw->path, strerror(errno));
            lw->journal_has_data = false;
            return;
        }
        lw->journal_has_data = false;
    }
    lw->rfd = open(lw->replay_path, O_RDONLY | O_CLOEXEC);
    if (lw->rfd < 0) {
        osp_error("store: message log: open %s: %s", lw->replay_path, strerror(errno));
        return;
    }
    osp_info("store: message log: replaying journal %s", lw->replay_path);
    lw->replaying = true;
    lw->replay_eof = false;
    lw->roff = 0;
    lw->rrows = 0;
    osp_buf_reset(&lw->rbatch);
}

static void replay_read(osp_store_log_t *lw)
{
    uv_buf_t ub = uv_buf_init(lw->rchunk, LOG_READ_CHUNK);
    int rc;

    lw->rreq.data = lw;
    rc = uv_fs_read(lw->loop, &lw->rreq, lw->rfd, &ub, 1, lw->roff, replay_read_cb);
    if (rc < 0) {
        osp_error("store: message log: read %s: %s", lw->replay_path, uv_strerror(rc));
        return;
    }
    lw->reading = true;
    lw->fs_pending++;
}

static void replay_read_cb(uv_fs_t *req)
{
    osp_store_log_t *lw = req->data;
    ssize_t n = req->result;
    const char *p, *nl, *end;

    lw->fs_pending--;
    lw->reading = false;
    uv_fs_req_cleanup(req);
    if (lw->closing) {
        log_maybe_free(lw);
        return;
    }
    if (n < 0) {
        osp_error("store: message log: read %s: %s", lw->replay_path, uv_strerror((int)n));
        return;
    }
    osp_buf_reset(&lw->rbatch);
    lw->rrows = 0;
    lw->rconsumed = 0;
    p = lw->rchunk;
    end = lw->rchunk + n;
    while (p < end && lw->rrows < lw->conf.batch_max) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        if (line_valid(p, (size_t)(nl - p))) {
            osp_buf_append(&lw->rbatch, p, (size_t)(nl - p + 1));
            lw->rrows++;
        } else {
            set_aside(lw, p, (size_t)(nl - p + 1), 1, "malformed journal line");
        }
        lw->rconsumed += (size_t)(nl - p + 1);
        p = nl + 1;
    }
    if (lw->rconsumed == 0) {
        if (n > 0)
            osp_warn("store: message log: %zd bytes of an incomplete last line in %s ignored",
                     n, lw->replay_path);
        lw->replay_eof = true;
    } else if (lw->rrows == 0) {
        lw->roff += (int64_t)lw->rconsumed;      /* only bad lines: go on */
        lw->rconsumed = 0;
    }
    log_kick(lw);
}

/* ------------------------------------------------------------ batches */

static void batch_finish(store__req_t *r, enum store__outcome outcome, const char *error)
{
    osp_store_log_t *lw = r->data;
    bool replay = lw->in_replay;

    lw->req = NULL;
    store__req_free(r);
    if (lw->closing) {
        /* osp_store_log_free already saved the batch */
        return;
    }
    if (replay) {
        if (outcome == STORE_DONE) {
            lw->stats.replayed += lw->rrows;
            lw->roff += (int64_t)lw->rconsumed;
        } else {
            osp_warn("store: message log replay batch failed, will retry: %s", error);
        }
        /* read again from roff: after a failure the same rows go again */
        osp_buf_reset(&lw->rbatch);
        lw->rrows = 0;
        lw->rconsumed = 0;
    } else {
        if (outcome == STORE_DONE) {
            lw->stats.committed += lw->inrows;
        } else {
            osp_warn("store: message log: batch of %zu rows not confirmed (%s): journaled",
                     lw->inrows, error);
            journal_add(lw, lw->inflight.data, lw->inflight.len, lw->inrows);
        }
        osp_buf_reset(&lw->inflight);
        lw->inrows = 0;
    }
    lw->in_replay = false;
    log_kick(lw);
}

/* SQL errors need the SQLSTATE, which only the request has: classify here. */
static void batch_finish_classify(store__req_t *r, enum store__outcome outcome,
                                  const char *error)
{
    osp_store_log_t *lw = r->data;

    if (outcome == STORE_SQL_ERROR && !lw->closing && !store__sqlstate_transient(r->sqlstate) &&
        (lw->in_replay || !strncmp(r->sqlstate, "22", 2))) {
        /* bad data: retrying cannot help */
        if (lw->in_replay) {
            set_aside(lw, lw->rbatch.data, lw->rbatch.len, lw->rrows, error);
            outcome = STORE_DONE;
            lw->rrows = 0;      /* not counted as replayed */
        } else {
            set_aside(lw, lw->inflight.data, lw->inflight.len, lw->inrows, error);
            lw->inrows = 0;
            osp_buf_reset(&lw->inflight);
            outcome = STORE_DONE;
        }
    }
    batch_finish(r, outcome, error);
}

static void start_copy(osp_store_log_t *lw)
{
    store__req_t *r = store__req_new();
    store__step_t *s;
    osp_buf_t tmp = lw->inflight;

    lw->inflight = lw->q;
    lw->q = tmp;
    osp_buf_reset(&lw->q);
    lw->inrows = lw->qrows;
    lw->qrows = 0;
    lw->flush_due = false;
    uv_timer_stop(&lw->flush_timer);
    r->data = lw;
    r->finish = batch_finish_classify;
    s = store__req_step(r, STORE_STEP_COPY, NULL,
                        "COPY message_log (" LOG_COLUMNS ") FROM STDIN", PGRES_COMMAND_OK);
    s->copy_data = lw->inflight.data;
    s->copy_len = lw->inflight.len;
    lw->req = r;
    lw->in_replay = false;
    store__conn_run(&lw->conn, r);
}

static void start_replay_batch(osp_store_log_t *lw)
{
    store__req_t *r = store__req_new();
    store__step_t *s;

    r->data = lw;
    r->finish = batch_finish_classify;
    store__req_step(r, STORE_STEP_SQL, NULL, "BEGIN", PGRES_COMMAND_OK);
    /* the journal goes once this commits: make the commit durable */
    store__req_step(r, STORE_STEP_SQL, NULL, "SET LOCAL synchronous_commit = on",
                    PGRES_COMMAND_OK);
    s = store__req_step(r, STORE_STEP_COPY, NULL,
                        "COPY osp_log_stage (" LOG_COLUMNS ") FROM STDIN", PGRES_COMMAND_OK);
    s->copy_data = lw->rbatch.data;
    s->copy_len = lw->rbatch.len;
    /* rows of a day whose partition is gone (or never made): make it */
    store__req_step(r, STORE_STEP_SQL, NULL,
                    "SELECT osprey_partition_create('message_log', d)"
                    "  FROM (SELECT DISTINCT (logged_at AT TIME ZONE 'UTC')::date AS d"
                    "          FROM osp_log_stage) s"
                    " WHERE to_regclass('public.message_log_p' || to_char(d, 'YYYYMMDD')) IS NULL",
                    PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_SQL, NULL,
                    "INSERT INTO message_log (" LOG_COLUMNS ")"
                    " SELECT " LOG_COLUMNS " FROM osp_log_stage ON CONFLICT DO NOTHING",
                    PGRES_COMMAND_OK);
    store__req_step(r, STORE_STEP_SQL, NULL, "COMMIT", PGRES_COMMAND_OK);
    lw->req = r;
    lw->in_replay = true;
    store__conn_run(&lw->conn, r);
}

static void queue_to_journal(osp_store_log_t *lw)
{
    journal_add(lw, lw->q.data, lw->q.len, lw->qrows);
    osp_buf_reset(&lw->q);
    lw->qrows = 0;
    lw->flush_due = false;
    uv_timer_stop(&lw->flush_timer);
}

static void log_kick(osp_store_log_t *lw)
{
    bool normal_ready;

    if (lw->closing)
        return;
    normal_ready = lw->qrows > 0 && (lw->flush_due || lw->qrows >= lw->conf.batch_max);
    if (!store__conn_up(&lw->conn)) {
        if (normal_ready)
            queue_to_journal(lw);
        return;
    }
    if (lw->conn.state != STORE_CONN_IDLE || lw->req != NULL)
        return;
    if (normal_ready && (!lw->replaying || lw->alternate || lw->rrows == 0)) {
        lw->alternate = false;
        start_copy(lw);
        return;
    }
    if (lw->replaying) {
        if (lw->rrows > 0) {
            lw->alternate = true;
            start_replay_batch(lw);
        } else if (lw->replay_eof) {
            replay_finish(lw);
            log_kick(lw);
        } else if (!lw->reading) {
            replay_read(lw);
        }
        return;
    }
    if (lw->journal_has_data && !lw->jbusy && lw->jbuf.len == 0 && !lw->jtimer_armed) {
        replay_begin(lw);
        if (lw->replaying)
            replay_read(lw);
        return;
    }
}

static void flush_timer_cb(uv_timer_t *t)
{
    osp_store_log_t *lw = t->data;

    lw->flush_due = true;
    log_kick(lw);
}

/* ------------------------------------------------------------ connection */

static void log_setup(store__conn_t *c, store__req_t *r)
{
    osp_store_log_t *lw = c->owner;
    store__step_t *s;

    (void)lw;
    s = store__req_step(r, STORE_STEP_SQL, NULL,
                        "SELECT set_config('statement_timeout', $1, false)", PGRES_TUPLES_OK);
    store__step_param_i64(r, s, (int64_t)c->query_timeout_ms);
    store__req_step(r, STORE_STEP_SQL, NULL,
                    "CREATE TEMP TABLE IF NOT EXISTS osp_log_stage ("
                    " id bigint, logged_at timestamptz, account_id bigint, queue_id text,"
                    " reinject_queue_id text, message_id text, client_address inet,"
                    " client_name text, helo text, sender text, recipient text, subject text,"
                    " size bigint, score double precision, verdict text, rules_hit text[],"
                    " delivery text) ON COMMIT DELETE ROWS", PGRES_COMMAND_OK);
}

static void log_ready(store__conn_t *c)
{
    osp_store_log_t *lw = c->owner;

    lw->stats.connected = true;
    log_kick(lw);
}

static void log_down(store__conn_t *c, const char *error)
{
    osp_store_log_t *lw = c->owner;

    if (lw->stats.connected && !lw->closing)
        osp_warn("store: message log connection: %s", error);
    lw->stats.connected = false;
    /* a replay batch that was lost is simply sent again later */
    log_kick(lw);
}

static void log_maybe_free(osp_store_log_t *lw)
{
    if (!lw->closing || lw->handles > 0 || !lw->conn_closed || lw->fs_pending > 0)
        return;
    if (lw->jfd >= 0)
        close(lw->jfd);
    if (lw->rfd >= 0)
        close(lw->rfd);
    osp_buf_close(&lw->line);
    osp_buf_close(&lw->field);
    osp_buf_close(&lw->q);
    osp_buf_close(&lw->inflight);
    osp_buf_close(&lw->jbuf);
    osp_buf_close(&lw->jwbuf);
    osp_buf_close(&lw->rbatch);
    free(lw->rchunk);
    free(lw->conninfo);
    free(lw->path);
    free(lw->replay_path);
    free(lw->bad_path);
    free(lw);
}

static void log_closed(store__conn_t *c)
{
    osp_store_log_t *lw = c->owner;

    lw->conn_closed = true;
    log_maybe_free(lw);
}

static void log_handle_close_cb(uv_handle_t *h)
{
    osp_store_log_t *lw = h->data;

    lw->handles--;
    log_maybe_free(lw);
}

static const store__conn_ops_t log_ops = {
    .setup = log_setup,
    .ready = log_ready,
    .down = log_down,
    .closed = log_closed,
};

/* ------------------------------------------------------------ API */

osp_store_log_t *osp_store_log_create(osp_store_t *st, const osp_store_log_conf_t *conf,
                                      const char **error_r)
{
    osp_store_log_t *lw;
    struct stat sb;
    size_t len;
    int fd;

    if (conf->journal_path == NULL || *conf->journal_path == '\0') {
        *error_r = "message log: no journal path";
        return NULL;
    }
    /* can we write there?  (a start-up problem, reported before serving) */
    fd = open(conf->journal_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        *error_r = "message log: cannot open the journal file for writing";
        return NULL;
    }
    lw = osp_calloc(1, sizeof(*lw));
    lw->jfd = fd;
    lw->rfd = -1;
    lw->loop = store__loop(st);
    lw->conf = *conf;
    if (lw->conf.queue_max == 0)
        lw->conf.queue_max = 100000;
    if (lw->conf.batch_max == 0)
        lw->conf.batch_max = 5000;
    if (lw->conf.flush_interval_ms == 0)
        lw->conf.flush_interval_ms = 200;
    if (lw->conf.journal_sync_ms == 0)
        lw->conf.journal_sync_ms = 100;
    if (lw->conf.retry_ms == 0)
        lw->conf.retry_ms = 500;
    lw->conninfo = osp_strdup(store__conninfo(st));
    lw->path = osp_strdup(conf->journal_path);
    lw->conf.journal_path = lw->path;
    len = strlen(lw->path) + 16;
    lw->replay_path = osp_malloc(len);
    osp_snprintf(lw->replay_path, len, "%s.replay", lw->path);
    lw->bad_path = osp_malloc(len);
    osp_snprintf(lw->bad_path, len, "%s.bad", lw->path);
    lw->rchunk = osp_malloc(LOG_READ_CHUNK);
    if (getrandom(&lw->instance, sizeof(lw->instance), 0) != sizeof(lw->instance))
        lw->instance = (uint32_t)getpid() ^ (uint32_t)store__now_us();
    lw->instance &= (1u << 22) - 1;
    osp_buf_init(&lw->line, OSP_BUF_UNLIMITED);
    osp_buf_init(&lw->field, OSP_BUF_UNLIMITED);
    osp_buf_init(&lw->q, OSP_BUF_UNLIMITED);
    osp_buf_init(&lw->inflight, OSP_BUF_UNLIMITED);
    osp_buf_init(&lw->jbuf, OSP_BUF_UNLIMITED);
    osp_buf_init(&lw->jwbuf, OSP_BUF_UNLIMITED);
    osp_buf_init(&lw->rbatch, OSP_BUF_UNLIMITED);
    if (fstat(fd, &sb) == 0 && sb.st_size > 0)
        lw->journal_has_data = true;
    if (stat(lw->replay_path, &sb) == 0)
        lw->journal_has_data = true;    /* an interrupted replay: replay_begin takes it first */
    uv_timer_init(lw->loop, &lw->flush_timer);
    uv_timer_init(lw->loop, &lw->jtimer);
    lw->flush_timer.data = lw;
    lw->jtimer.data = lw;
    lw->handles = 2;
    store__conn_init(&lw->conn, lw->loop, lw->conninfo, &log_ops, lw);
    lw->conn.pipeline = false;      /* COPY does not work in pipeline mode */
    lw->conn.query_timeout_ms = store__query_timeout(st) * 3;
    lw->conn.backoff_min_ms = lw->conf.retry_ms;
    lw->conn.backoff_max_ms = 10000;
    store__conn_connect(&lw->conn);
    return lw;
}

int osp_store_log_append(osp_store_log_t *lw, const osp_store_log_row_t *row)
{
    if (lw->closing)
        return -1;
    format_row(lw, row);
    lw->stats.appended++;
    if (lw->qrows >= lw->conf.queue_max) {
        /* spill: never block, never grow without bound */
        uint64_t before = lw->stats.dropped;

        journal_add(lw, lw->line.data, lw->line.len, 1);
        return lw->stats.dropped > before ? -1 : 0;
    }
    osp_buf_append(&lw->q, lw->line.data, lw->line.len);
    if (++lw->qrows == 1)
        uv_timer_start(&lw->flush_timer, flush_timer_cb, lw->conf.flush_interval_ms, 0);
    if (lw->qrows >= lw->conf.batch_max)
        log_kick(lw);
    return 0;
}

void osp_store_log_stats(const osp_store_log_t *lw, osp_store_log_stats_t *s)
{
    *s = lw->stats;
    s->queued = lw->qrows;
    s->replaying = lw->replaying;
    s->journal_pending = lw->replaying || lw->journal_has_data;
}

void osp_store_log_free(osp_store_log_t **lwp)
{
    osp_store_log_t *lw = *lwp;
    size_t rows = 0;

    if (lw == NULL)
        return;
    *lwp = NULL;
    /* Save, synchronously: the pending journal bytes, the batch whose
     * outcome we will not learn, and the queue. */
    if (lw->req != NULL && !lw->in_replay) {
        osp_buf_append(&lw->jbuf, lw->inflight.data, lw->inflight.len);
        rows += lw->inrows;
    }
    osp_buf_append(&lw->jbuf, lw->q.data, lw->q.len);
    rows += lw->qrows;
    lw->stats.journaled += rows;
    if (lw->jbuf.len > 0 && journal_open(lw) == 0) {
        write_all_fd(lw->jfd, lw->jbuf.data, lw->jbuf.len);
        if (fsync(lw->jfd) < 0)
            osp_error("store: message log journal fsync: %s", strerror(errno));
    }
    osp_buf_reset(&lw->jbuf);
    lw->closing = true;
    uv_close((uv_handle_t *)&lw->flush_timer, log_handle_close_cb);
    uv_close((uv_handle_t *)&lw->jtimer, log_handle_close_cb);
    store__conn_close(&lw->conn);
}
