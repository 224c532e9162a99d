/*
 * Unit tests for policyd_dblists: a snapshot built from store rows (an
 * account tree root > 10 > 11 > 12, domains and addresses owned at
 * different levels, entries of every kind), looked up by a table of
 * requests with the expected result, entry and account: the recipient's
 * account and its ancestors apply, nearest first, allow before block;
 * unusable rows are reported and skipped; the holder swaps snapshots
 * while references taken before the swap stay valid; and the check in
 * the pipeline answers the configured actions and goes first when
 * policyd_checks does not name it.
 */
#include "config.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../policyd/policyd.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_dblists.h"
#include "../../policyd/policyd_proto.h"
#include "osp_buf.h"
#include "osp_config.h"
#include "osp_mem.h"
#include "osp_prog.h"
#include "policyd_test.h"

static const osp_store_account_node_t accounts[] = {
    { 0, -1 }, { 10, 0 }, { 11, 10 }, { 12, 11 },
};
static const osp_store_owner_t domains[] = {
    { "example.com", 11 }, { "other.example", 10 },
};
static const osp_store_owner_t addresses[] = {
    { "boss@example.com", 12 },
};
static const osp_store_list_entry_t entries[] = {
    { 1, 0, "block", "client_network", "198.51.100.0/24" },
    { 2, 0, "block", "sender_domain", ".spam.example" },
    { 3, 11, "allow", "sender", "vip@partner.example" },
    { 4, 11, "block", "sender_domain", "partner.example" },
    { 5, 12, "allow", "client_network", "198.51.100.7/32" },
    { 6, 10, "block", "recipient", "noone@other.example" },
    { 7, 11, "block", "client_network", "2001:db8:bad::/48" },
    { 8, 0, "block", "helo_domain", ".bad-helo.example" },
    { 9, 11, "allow", "client_name", "mx.friend.example" },
    { 10, 999, "block", "sender", "x@y.example" },
    { 11, 0, "block", "colour", "blue" },
    { 12, 0, "block", "client_network", "300.1.1.1/8" },
    { 13, 0, "allow", "recipient_domain", "postmaster.example" },
    { 14, 0, "block", "helo", "localhost" },
};

static osp_store_policy_snapshot_t rows(void)
{
    osp_store_policy_snapshot_t s;

    memset(&s, 0, sizeof(s));
    s.accounts = accounts;
    s.naccounts = sizeof(accounts) / sizeof(accounts[0]);
    s.domains = domains;
    s.ndomains = sizeof(domains) / sizeof(domains[0]);
    s.addresses = addresses;
    s.naddresses = sizeof(addresses) / sizeof(addresses[0]);
    s.entries = entries;
    s.nentries = sizeof(entries) / sizeof(entries[0]);
    return s;
}

struct lookup_case {
    const char *client, *client_name, *helo, *sender, *recipient;
    enum policyd_dbresult want;
    int64_t entry, account;
};

static void test_lookup(void **state)
{
    static const struct lookup_case cases[] = {
        /* Root's network block applies below every account. */
        { "198.51.100.5", NULL, NULL, "a@b.example", "x@example.com", POLICYD_DB_BLOCK, 1, 0 },
        { "198.51.100.5", NULL, NULL, "a@b.example", NULL, POLICYD_DB_BLOCK, 1, 0 },
        /* The user (12) allows one host its ancestors block; its neighbours do not. */
        { "198.51.100.7", NULL, NULL, "a@b.example", "boss@example.com", POLICYD_DB_ALLOW, 5,
          12 },
        { "198.51.100.7", NULL, NULL, "a@b.example", "other@example.com", POLICYD_DB_BLOCK, 1,
          0 },
        /* Allow before block within one account. */
        { "203.0.113.1", NULL, NULL, "vip@partner.example", "a@example.com", POLICYD_DB_ALLOW,
          3, 11 },
        { "203.0.113.1", NULL, NULL, "joe@partner.example", "a@example.com", POLICYD_DB_BLOCK,
          4, 11 },
        { "203.0.113.1", NULL, NULL, "JOE@Partner.Example.", "boss@example.com",
          POLICYD_DB_BLOCK, 4, 11 },
        /* An account's entries do not apply to others. */
        { "203.0.113.1", NULL, NULL, "joe@partner.example", "a@unknown.example",
          POLICYD_DB_NONE, 0, 0 },
        { "203.0.113.1", NULL, NULL, "joe@partner.example", "a@other.example", POLICYD_DB_NONE,
          0, 0 },
        /* ".domain": subdomains only. */
        { "203.0.113.1", NULL, NULL, "x@a.b.spam.example", "a@unknown.example",
          POLICYD_DB_BLOCK, 2, 0 },
        { "203.0.113.1", NULL, NULL, "x@spam.example", "a@unknown.example", POLICYD_DB_NONE, 0,
          0 },
        /* Recipient entries; case and a trailing dot do not matter. */
        { "203.0.113.1", NULL, NULL, "", "noone@other.example", POLICYD_DB_BLOCK, 6, 10 },
        { "203.0.113.1", NULL, NULL, "", "NoOne@Other.Example.", POLICYD_DB_BLOCK, 6, 10 },
        { "203.0.113.1", NULL, NULL, "", "noone@example.com", POLICYD_DB_NONE, 0, 0 },
        { "198.51.100.5", NULL, NULL, "", "abuse@postmaster.example", POLICYD_DB_ALLOW, 13, 0 },
        /* IPv6 networks; IPv4-mapped clients are IPv4. */
        { "2001:db8:bad::1", NULL, NULL, "a@b.example", "a@example.com", POLICYD_DB_BLOCK, 7,
          11 },
        { "2001:db8:bad::1", NULL, NULL, "a@b.example", "a@other.example", POLICYD_DB_NONE, 0,
          0 },
        { "::ffff:198.51.100.9", NULL, NULL, "a@b.example", NULL, POLICYD_DB_BLOCK, 1, 0 },
        /* HELO names and domains. */
        { "203.0.113.1", NULL, "mail.bad-helo.example", "a@b.example", NULL, POLICYD_DB_BLOCK,
          8, 0 },
        { "203.0.113.1", NULL, "LOCALHOST", "a@b.example", NULL, POLICYD_DB_BLOCK, 14, 0 },
        /* Client name allowed by 11 wins over root's network block. */
        { "198.51.100.9", "MX.friend.example", NULL, "a@b.example", "a@example.com",
          POLICYD_DB_ALLOW, 9, 11 },
        { "198.51.100.9", "mx.friend.example", NULL, "a@b.example", "a@unknown.example",
          POLICYD_DB_BLOCK, 1, 0 },
        /* Nothing matches; garbage in every field. */
        { "203.0.113.1", "unknown", "x", "", "", POLICYD_DB_NONE, 0, 0 },
        { "not an address", NULL, NULL, NULL, NULL, POLICYD_DB_NONE, 0, 0 },
    };
    osp_store_policy_snapshot_t r = rows();
    osp_buf_t w;
    policyd_dbsnap_t *s;
    size_t i;

    (void)state;
    osp_buf_init(&w, 65536);
    s = policyd_dbsnap_build(&r, &w);
    assert_non_null(s);
    assert_int_equal(policyd_dbsnap_entries(s), 11);
    assert_non_null(strstr(osp_buf_cstr(&w), "list entry 10: unknown account; skipped"));
    assert_non_null(strstr(osp_buf_cstr(&w), "list entry 11: unknown kind or list; skipped"));
    assert_non_null(strstr(osp_buf_cstr(&w), "list entry 12: "));
    assert_int_equal(policyd_dbsnap_account(s, "boss@example.com"), 12);
    assert_int_equal(policyd_dbsnap_account(s, "Other@Example.COM"), 11);
    assert_int_equal(policyd_dbsnap_account(s, "a@sub.example.com"), 0);
    assert_int_equal(policyd_dbsnap_account(s, NULL), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct lookup_case *c = &cases[i];
        policyd_dbquery_t q = { c->client, c->client_name, c->helo, c->sender, c->recipient };
        policyd_dbmatch_t m;
        enum policyd_dbresult got = policyd_dbsnap_lookup(s, &q, &m);

        if (got != c->want || (got != POLICYD_DB_NONE &&
                               (m.entry_id != c->entry || m.account_id != c->account)))
            fail_msg("case %zu (%s %s -> %s): got %d entry %lld account %lld (%s), want %d "
                     "entry %lld account %lld", i, c->client, c->sender ? c->sender : "-",
                     c->recipient ? c->recipient : "-", (int)got, (long long)m.entry_id,
                     (long long)m.account_id, m.kind ? m.kind : "-", (int)c->want,
                     (long long)c->entry, (long long)c->account);
    }
    policyd_dbsnap_release(&s);
    assert_null(s);
    osp_buf_close(&w);
}

static void test_cycle_and_empty(void **state)
{
    /* A parent loop (cannot happen in the database) must not hang a lookup. */
    static const osp_store_account_node_t loop_accounts[] = { { 1, 2 }, { 2, 1 } };
    static const osp_store_owner_t loop_domains[] = { { "loop.example", 1 } };
    osp_store_policy_snapshot_t r;
    policyd_dbquery_t q = { "192.0.2.1", NULL, NULL, "a@b.example", "x@loop.example" };
    policyd_dbmatch_t m;
    policyd_dbsnap_t *s;
    osp_buf_t w;

    (void)state;
    osp_buf_init(&w, 4096);
    memset(&r, 0, sizeof(r));
    r.accounts = loop_accounts;
    r.naccounts = 2;
    r.domains = loop_domains;
    r.ndomains = 1;
    s = policyd_dbsnap_build(&r, &w);
    assert_int_equal(policyd_dbsnap_lookup(s, &q, &m), POLICYD_DB_NONE);
    policyd_dbsnap_release(&s);
    memset(&r, 0, sizeof(r));
    s = policyd_dbsnap_build(&r, &w);
    assert_int_equal(policyd_dbsnap_lookup(s, &q, &m), POLICYD_DB_NONE);
    assert_int_equal(policyd_dbsnap_entries(s), 0);
    policyd_dbsnap_release(&s);
    osp_buf_close(&w);
}

static const policyd_verdict_t *eval(const policyd_checks_t *c, policy_request_t *req,
                                     const char *client, const char *sender, const char *rcpt)
{
    policyd_test_request(req, "RCPT", client, sender, rcpt);
    return policyd_test_decide(c, req, 1000);
}

static void test_holder_and_check(void **state)
{
    osp_config_t *cfg = policyd_test_config("policyd_database_lists = yes\n"
                                    "policyd_allow_action = OK\n"
                                    "policyd_sender_block_action = REJECT 5.7.1 No thanks\n");
    osp_buf_t errors, warnings;
    policyd_dblists_t *dl;
    policyd_dbsnap_t *s1, *ref, *ref2;
    policyd_checks_t *c;
    policyd_check_def_t d = { "database_lists", policyd_dblists_check, NULL, NULL };
    osp_store_policy_snapshot_t r = rows();
    policy_request_t req;
    const policyd_verdict_t *v;

    (void)state;
    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    dl = policyd_dblists_create(cfg, &errors);
    assert_non_null(dl);
    assert_true(policyd_dblists_enabled(dl));
    d.ctx = dl;
    policyd_checks_register(&d, -1);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    assert_string_equal(policyd_checks_name(c, 0), "database_lists");
    policy_request_init(&req, 4096);

    /* No snapshot yet: no opinion. */
    assert_null(policyd_dblists_acquire(dl));
    v = eval(c, &req, "198.51.100.5", "a@b.example", "x@example.com");
    assert_null(v->check);

    s1 = policyd_dbsnap_build(&r, &warnings);
    policyd_dblists_set(dl, s1);
    v = eval(c, &req, "198.51.100.5", "a@b.example", "x@example.com");
    assert_string_equal(v->check, "database_lists");
    assert_string_equal(v->action, "REJECT 5.7.1 Client address rejected by policy");
    assert_string_equal(v->reason, "client_network 198.51.100.5 on the database block list "
                                   "(entry 1, account 0)");
    v = eval(c, &req, "203.0.113.1", "joe@partner.example", "x@example.com");
    assert_string_equal(v->action, "REJECT 5.7.1 No thanks");
    v = eval(c, &req, "203.0.113.1", "vip@partner.example", "x@example.com");
    assert_string_equal(v->action, "OK");
    assert_true(v->allow);

    /* A reference taken before a swap stays usable; the swap takes effect at once. */
    ref = policyd_dblists_acquire(dl);
    assert_ptr_equal(ref, s1);
    memset(&r, 0, sizeof(r));
    r.accounts = accounts;
    r.naccounts = 1;
    policyd_dblists_set(dl, policyd_dbsnap_build(&r, &warnings));
    v = eval(c, &req, "198.51.100.5", "a@b.example", "x@example.com");
    assert_null(v->check);
    assert_int_equal(policyd_dbsnap_entries(ref), 11);
    ref2 = policyd_dblists_acquire(dl);
    assert_ptr_not_equal(ref2, ref);
    policyd_dbsnap_release(&ref);
    policyd_dbsnap_release(&ref2);

    policy_request_close(&req);
    policyd_checks_free(&c);
    policyd_dblists_free(&dl);
    assert_null(dl);
    osp_config_free(&cfg);

    /* Disabled: not put in the pipeline unless named; named, no opinion. */
    cfg = policyd_test_config("policyd_checks = database_lists, client_block\n");
    dl = policyd_dblists_create(cfg, &errors);
    assert_false(policyd_dblists_enabled(dl));
    d.ctx = dl;
    policyd_checks_register(&d, 0);
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_non_null(c);
    assert_int_equal(policyd_checks_count(c), 2);
    policyd_checks_free(&c);
    policyd_dblists_free(&dl);
    osp_config_free(&cfg);
    cfg = policyd_test_config("policyd_checks = client_block\n");
    c = policyd_checks_create(cfg, &errors, &warnings);
    assert_int_equal(policyd_checks_count(c), 1);
    policyd_checks_free(&c);
    osp_config_free(&cfg);

    /* A bad action is a start-up error naming the parameter. */
    cfg = policyd_test_config("policyd_sender_block_action = FROB\n");
    assert_null(policyd_dblists_create(cfg, &errors));
    assert_non_null(strstr(osp_buf_cstr(&errors), "policyd_sender_block_action"));
    osp_config_free(&cfg);
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_cycle_and_empty),
        cmocka_unit_test(test_holder_and_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
