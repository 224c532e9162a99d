/* Helpers shared by the osprey-policyd unit tests. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "osp_buf.h"
#include "osp_prog.h"
#include "../../policyd/policyd.h"
#include "policyd_test.h"

osp_config_t *policyd_test_config(const char *text)
{
    static const osp_param_def_t *const tables[] = { osp_common_params, policyd_params, NULL };
    osp_config_t *cfg = osp_config_create("policyd", tables);
    osp_buf_t errors, warnings;

    osp_buf_init(&errors, 65536);
    osp_buf_init(&warnings, 65536);
    osp_config_read_string(cfg, "test", text, &errors);
    if (osp_config_finish(cfg, &errors, &warnings) != 0)
        fail_msg("config: %s", osp_buf_cstr(&errors));
    osp_buf_close(&errors);
    osp_buf_close(&warnings);
    return cfg;
}

void policyd_test_request(policy_request_t *req, const char *state, const char *client,
                          const char *sender, const char *rcpt)
{
    policy_request_reset(req);
    policy_request_set(req, POLICY_A_REQUEST, "smtpd_access_policy");
    policy_request_set(req, POLICY_A_PROTOCOL_STATE, state);
    if (client)
        policy_request_set(req, POLICY_A_CLIENT_ADDRESS, client);
    if (sender)
        policy_request_set(req, POLICY_A_SENDER, sender);
    if (rcpt)
        policy_request_set(req, POLICY_A_RECIPIENT, rcpt);
}

static void policyd_test_done_cb(policyd_eval_t *ev, void *data)
{
    (void)ev;
    (*(int *)data)++;
}

const policyd_verdict_t *policyd_test_decide(const policyd_checks_t *c, policy_request_t *req,
                                             uint64_t now_ms)
{
    static policyd_eval_t ev;
    int calls = 0;

    memset(&ev, 0, sizeof(ev));
    policyd_eval_start(&ev, c, req, now_ms, policyd_test_done_cb, &calls);
    assert_int_equal(calls, 1);
    return &ev.verdict;
}
