/* Helpers shared by the osprey-policyd unit tests (cmocka). */
#ifndef POLICYD_TEST_H
#define POLICYD_TEST_H

#include <stdint.h>

#include "osp_config.h"
#include "../../policyd/policyd_checks.h"
#include "../../policyd/policyd_proto.h"

/* A configuration from text (policyd's and the common parameters); fails the test on errors. */
osp_config_t *policyd_test_config(const char *text);

/*
 * Reset req to an smtpd_access_policy request at protocol state state,
 * with client address, sender and recipient (NULL: left out).
 */
void policyd_test_request(policy_request_t *req, const char *state, const char *client,
                          const char *sender, const char *rcpt);

/*
 * Evaluate req at now_ms with checks that finish at once (no DNS); fails
 * the test if the evaluation did not complete exactly once.  The verdict
 * is static: valid until the next call.
 */
const policyd_verdict_t *policyd_test_decide(const policyd_checks_t *c, policy_request_t *req,
                                             uint64_t now_ms);

#endif
