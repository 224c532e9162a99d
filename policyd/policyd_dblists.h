/*
 * policyd_dblists: the allow and block lists kept in the database
 * (list_entries, migration 002), per account and inherited down the
 * account tree, served from memory.
 *
 * A snapshot (policyd_dbsnap_t) is built from one consistent read of
 * list_entries, accounts, domains and addresses
 * (osp_store_load_policy_snapshot) and never changes afterwards, so every
 * worker thread reads it without locks.  The holder (policyd_dblists_t)
 * keeps the current snapshot behind a mutex with a reference count: a
 * check takes a reference (policyd_dblists_acquire), looks up, and drops
 * it (policyd_dbsnap_release); a reload swaps a new snapshot in and the old
 * one is freed by whoever drops its last reference.  Connections are never
 * dropped by a reload.
 *
 * Reloads run on the main loop: at start, on NOTIFY osprey_config with the
 * payload list_entries, accounts, domains or addresses, and after the
 * store's listening connection reconnects (NULL payload: something may
 * have been missed).  A failed load keeps the previous snapshot serving
 * and is retried after policyd_database_retry.  Until the first load
 * succeeds the check has no opinion.
 *
 * Lookup (policyd_dbsnap_lookup): the recipient's account is the owner of
 * the exact address, else of its domain, else the root account (0); with
 * no recipient yet, the root.  From that account up to the root, nearest
 * first, each account's allow entries and then its block entries are
 * tried; the first that matches decides (so an account can allow what an
 * ancestor blocks, and block what an ancestor allows).  Within one
 * account and list the kinds are tried in this order: client_network,
 * client_name, helo, helo_domain, sender, sender_domain, recipient,
 * recipient_domain.  Domain kinds follow Postfix: "example.com" matches
 * that domain only, ".example.com" any subdomain of it.
 *
 * As a check ("database_lists" in policyd_checks): an allow match answers
 * policyd_allow_action (and short-circuits later checks); a block match
 * answers policyd_client_block_action (client_network, client_name, helo,
 * helo_domain), policyd_sender_block_action or
 * policyd_recipient_block_action.
 */
#ifndef POLICYD_DBLISTS_H
#define POLICYD_DBLISTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "osp_buf.h"
#include "osp_config.h"
#include "osp_store.h"
#include "policyd_checks.h"

typedef struct policyd_dbsnap policyd_dbsnap_t;
typedef struct policyd_dblists policyd_dblists_t;

/* What a lookup looks at; NULL or "" fields are absent (sender "" is <>). */
typedef struct policyd_dbquery {
    const char *client_address, *client_name, *helo;
    const char *sender;           /* NULL: no sender yet; "": the null sender */
    const char *recipient;        /* NULL or "": none */
} policyd_dbquery_t;

enum policyd_dbresult {
    POLICYD_DB_NONE,
    POLICYD_DB_ALLOW,
    POLICYD_DB_BLOCK,
};

typedef struct policyd_dbmatch {
    const char *kind;             /* static: "client_network", "sender_domain", ... */
    int64_t entry_id, account_id; /* the entry and the account it belongs to */
} policyd_dbmatch_t;

/*
 * Build a snapshot from the store's rows (copied).  Entries that cannot be
 * used (unknown kind, bad network, unknown account) are reported in
 * warnings and skipped.  The snapshot starts with one reference.
 */
policyd_dbsnap_t *policyd_dbsnap_build(const osp_store_policy_snapshot_t *s, osp_buf_t *warnings);
/* Drop one reference; the last frees it.  NULL is fine; clears *sp. */
void policyd_dbsnap_release(policyd_dbsnap_t **sp);
size_t policyd_dbsnap_entries(const policyd_dbsnap_t *s);
/* The account that owns a recipient address (0: nobody but the root). */
int64_t policyd_dbsnap_account(const policyd_dbsnap_t *s, const char *recipient);
enum policyd_dbresult policyd_dbsnap_lookup(const policyd_dbsnap_t *s, const policyd_dbquery_t *q,
                                            policyd_dbmatch_t *m_r);

/*
 * The holder.  Reads policyd_database_lists, policyd_database_retry,
 * database_query_timeout and the actions from cfg (only during the call);
 * bad actions go to errors.  Returns NULL on errors.
 */
policyd_dblists_t *policyd_dblists_create(const osp_config_t *cfg, osp_buf_t *errors);
bool policyd_dblists_enabled(const policyd_dblists_t *dl);
/* Loop thread: listen on osprey_config and load the first snapshot (st borrowed). */
void policyd_dblists_start(policyd_dblists_t *dl, uv_loop_t *loop, osp_store_t *st);
/* Loop thread: load a new snapshot now (SIGHUP). */
void policyd_dblists_reload(policyd_dblists_t *dl);
/* Loop thread: cancel a load in flight and close the timer (before freeing st). */
void policyd_dblists_stop(policyd_dblists_t *dl);
/* After the loop has run the close callbacks.  NULL is fine; clears *dlp. */
void policyd_dblists_free(policyd_dblists_t **dlp);
/* Swap a snapshot in (takes the caller's reference); the old one is released. */
void policyd_dblists_set(policyd_dblists_t *dl, policyd_dbsnap_t *snap);
/* A reference to the current snapshot, or NULL before the first load; any thread. */
policyd_dbsnap_t *policyd_dblists_acquire(policyd_dblists_t *dl);

/* The check ("database_lists"); ctx is the holder (NULL or disabled: no opinion). */
enum policyd_step policyd_dblists_check(policyd_eval_t *ev, void *ctx);

#endif
