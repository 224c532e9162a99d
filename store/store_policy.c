/*
 * store_policy: the policy daemon's snapshot -- list entries, the account
 * tree, and domain and address ownership, read in one REPEATABLE READ
 * READ ONLY transaction (one round trip on a pipelined connection).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "osp_mem.h"
#include "store_int.h"

static osp_store_owner_t *sp_owners(const PGresult *res, size_t *n_r)
{
    int i, n = PQntuples(res);
    osp_store_owner_t *o = osp_calloc((size_t)n + 1, sizeof(*o));

    for (i = 0; i < n; i++) {
        o[i].name = PQgetvalue(res, i, 0);
        o[i].account_id = store__val_i64(res, i, 1);
    }
    *n_r = (size_t)n;
    return o;
}

static void policy_snapshot_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_policy_snapshot_cb *cb = (osp_store_policy_snapshot_cb *)r->cb;
    osp_store_policy_snapshot_t snap;
    osp_store_list_entry_t *e;
    osp_store_account_node_t *a;
    osp_store_owner_t *d, *ad;
    const PGresult *le = r->res[1], *ac = r->res[2];
    int i;

    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, error);
        return;
    }
    memset(&snap, 0, sizeof(snap));
    e = store__list_entries(le, &snap.nentries);
    snap.naccounts = (size_t)PQntuples(ac);
    a = osp_calloc(snap.naccounts + 1, sizeof(*a));
    for (i = 0; i < PQntuples(ac); i++) {
        a[i].id = store__val_i64(ac, i, 0);
        a[i].parent_id = store__val_i64(ac, i, 1);
    }
    d = sp_owners(r->res[3], &snap.ndomains);
    ad = sp_owners(r->res[4], &snap.naddresses);
    snap.entries = e;
    snap.accounts = a;
    snap.domains = d;
    snap.addresses = ad;
    cb(r->ctx, OSP_STORE_OK, &snap, NULL);
    free(e);
    free(a);
    free(d);
    free(ad);
}

osp_store_req_t *osp_store_load_policy_snapshot(osp_store_t *st, uint64_t timeout_ms,
                                                osp_store_policy_snapshot_cb *cb, void *ctx,
                                                const char **error_r)
{
    store__req_t *r = store__req_new();

    store__req_step(r, STORE_STEP_SQL, NULL, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    PGRES_COMMAND_OK);
    store__req_step(r, STORE_STEP_PREPARED, "osp_lists", NULL, PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_SQL, NULL, "SELECT id, parent_id FROM accounts ORDER BY id",
                    PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_SQL, NULL, "SELECT name, account_id FROM domains",
                    PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_SQL, NULL, "SELECT address, account_id FROM addresses",
                    PGRES_TUPLES_OK);
    store__req_step(r, STORE_STEP_SQL, NULL, "COMMIT", PGRES_COMMAND_OK);
    return store__start(st, r, (void *)cb, ctx, policy_snapshot_deliver, timeout_ms, error_r);
}

/* ------------------------------------------------------------ rate counters */

static void rate_hit_deliver(store__req_t *r, int status, const char *error)
{
    osp_store_rate_cb *cb = (osp_store_rate_cb *)r->cb;
    size_t want = (size_t)(uintptr_t)r->data, i;
    const PGresult *res = r->res[0];
    int64_t *counts;

    if (status == OSP_STORE_OK && (size_t)PQntuples(res) != want) {
        status = OSP_STORE_TEMPFAIL;
        error = "osprey_rate_hit: unexpected number of rows";
    }
    store__count(r->st, status);
    if (status != OSP_STORE_OK) {
        cb(r->ctx, status, NULL, 0, error);
        return;
    }
    counts = osp_calloc(want + 1, sizeof(*counts));
    for (i = 0; i < want; i++)
        counts[i] = store__val_i64(res, (int)i, 1);
    cb(r->ctx, OSP_STORE_OK, counts, want, NULL);
    free(counts);
}

static void sp_i64_array(osp_buf_t *b, const osp_store_rate_item_t *items, size_t n, int field)
{
    size_t i;

    (void)osp_buf_append_char(b, '{');
    for (i = 0; i < n; i++) {
        int64_t v = field == 0 ? items[i].window_start_ms
                    : field == 1 ? items[i].window_ms : items[i].n;
        (void)osp_buf_printf(b, "%s%lld", i ? "," : "", (long long)v);
    }
    (void)osp_buf_append_char(b, '}');
}

osp_store_req_t *osp_store_rate_hit(osp_store_t *st, const osp_store_rate_item_t *items,
                                    size_t n, uint64_t timeout_ms, osp_store_rate_cb *cb,
                                    void *ctx, const char **error_r)
{
    store__req_t *r = store__req_new();
    store__step_t *s;
    const char **keys = osp_calloc(n + 1, sizeof(*keys));
    osp_buf_t b;
    size_t i;
    int f;

    s = store__req_step(r, STORE_STEP_SQL, NULL,
                        "SELECT u.i, osprey_rate_hit(u.k, to_timestamp(u.ws / 1000.0),"
                        "       u.w * interval '1 millisecond', u.n)"
                        "  FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])"
                        "       WITH ORDINALITY AS u(k, ws, w, n, i)"
                        " ORDER BY u.i",
                        PGRES_TUPLES_OK);
    for (i = 0; i < n; i++)
        keys[i] = items[i].key;
    osp_buf_init(&b, OSP_BUF_UNLIMITED);
    store__array_literal(&b, keys, n);
    store__step_param(r, s, osp_buf_cstr(&b));
    free(keys);
    for (f = 0; f < 3; f++) {
        osp_buf_reset(&b);
        sp_i64_array(&b, items, n, f);
        store__step_param(r, s, osp_buf_cstr(&b));
    }
    osp_buf_close(&b);
    r->data = (void *)(uintptr_t)n;
    return store__start(st, r, (void *)cb, ctx, rate_hit_deliver, timeout_ms, error_r);
}
