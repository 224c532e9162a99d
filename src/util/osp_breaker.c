/* osp_breaker: closed / open / half-open circuit breaker. */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "osp_breaker.h"
#include "osp_buf.h"
#include "osp_log.h"

void osp_breaker_init(osp_breaker_t *b, const osp_breaker_conf_t *conf,
                      const char *name)
{
    memset(b, 0, sizeof(*b));
    osp_strlcpy(b->name, name, sizeof(b->name));
    if (conf)
        b->conf = *conf;
    if (b->conf.failure_threshold == 0)
        b->conf.failure_threshold = OSP_BREAKER_DEFAULT_THRESHOLD;
    if (b->conf.cooldown_ms == 0)
        b->conf.cooldown_ms = OSP_BREAKER_DEFAULT_COOLDOWN_MS;
    if (b->conf.half_open_probes == 0)
        b->conf.half_open_probes = OSP_BREAKER_DEFAULT_PROBES;
    if (b->conf.half_open_successes == 0)
        b->conf.half_open_successes = OSP_BREAKER_DEFAULT_SUCCESSES;
    b->state = OSP_BREAKER_CLOSED;
}

/* Milliseconds from then to now; 0 if the clock seems to have gone back. */
static uint64_t osp_breaker_elapsed(uint64_t then, uint64_t now)
{
    return now >= then ? now - then : 0;
}

static void osp_breaker_open(osp_breaker_t *b, uint64_t now_ms)
{
    b->state = OSP_BREAKER_OPEN;
    b->opened_ms = now_ms;
    b->consecutive_failures = 0;
    b->probes_in_flight = 0;
    b->probe_successes = 0;
    b->stats.opens++;
}

bool osp_breaker_allow(osp_breaker_t *b, uint64_t now_ms)
{
    uint64_t waited;

    switch (b->state) {
    case OSP_BREAKER_CLOSED:
        return true;
    case OSP_BREAKER_OPEN:
        waited = osp_breaker_elapsed(b->opened_ms, now_ms);
        if (waited < b->conf.cooldown_ms) {
            b->stats.rejections++;
            return false;
        }
        b->state = OSP_BREAKER_HALF_OPEN;
        b->probes_in_flight = 0;
        b->probe_successes = 0;
        osp_info("breaker %s: state open -> half-open after %" PRIu64 " ms",
                 b->name, waited);
        break;
    case OSP_BREAKER_HALF_OPEN:
        break;
    default:
        osp_panic("breaker %s: bad state %d", b->name, (int)b->state);
    }

    if (b->probes_in_flight >= b->conf.half_open_probes
        && osp_breaker_elapsed(b->probe_ms, now_ms) >= b->conf.cooldown_ms) {
        /* The caller lost a probe's result: do not wait for it forever. */
        osp_warn("breaker %s: no result from %u probe(s) after %" PRIu64
                 " ms, allowing new probes",
                 b->name, b->probes_in_flight, b->conf.cooldown_ms);
        b->probes_in_flight = 0;
    }
    if (b->probes_in_flight >= b->conf.half_open_probes) {
        b->stats.rejections++;
        return false;
    }
    b->probes_in_flight++;
    b->probe_ms = now_ms;
    return true;
}

void osp_breaker_success(osp_breaker_t *b, uint64_t now_ms)
{
    (void)now_ms;
    b->stats.successes++;
    switch (b->state) {
    case OSP_BREAKER_CLOSED:
        b->consecutive_failures = 0;
        return;
    case OSP_BREAKER_OPEN:
        /* A call let through before the breaker opened: too late to count. */
        return;
    case OSP_BREAKER_HALF_OPEN:
        if (b->probes_in_flight > 0)
            b->probes_in_flight--;
        if (++b->probe_successes < b->conf.half_open_successes)
            return;
        osp_info("breaker %s: state half-open -> closed after %u successful probe(s)",
                 b->name, b->probe_successes);
        b->state = OSP_BREAKER_CLOSED;
        b->consecutive_failures = 0;
        b->probes_in_flight = 0;
        b->probe_successes = 0;
        return;
    default:
        osp_panic("breaker %s: bad state %d", b->name, (int)b->state);
    }
}

void osp_breaker_failure(osp_breaker_t *b, uint64_t now_ms)
{
    b->stats.failures++;
    switch (b->state) {
    case OSP_BREAKER_CLOSED:
        if (++b->consecutive_failures < b->conf.failure_threshold)
            return;
        osp_warn("breaker %s: state closed -> open after %u consecutive failures",
                 b->name, b->consecutive_failures);
        osp_breaker_open(b, now_ms);
        return;
    case OSP_BREAKER_OPEN:
        /* Late result; do not extend the cool-down. */
        return;
    case OSP_BREAKER_HALF_OPEN:
        osp_warn("breaker %s: state half-open -> open after a failed probe, "
                 "next probe in %" PRIu64 " ms", b->name, b->conf.cooldown_ms);
        osp_breaker_open(b, now_ms);
        return;
    default:
        osp_panic("breaker %s: bad state %d", b->name, (int)b->state);
    }
}

enum osp_breaker_state osp_breaker_state(const osp_breaker_t *b)
{
    return b->state;
}

const char *osp_breaker_state_name(enum osp_breaker_state state)
{
    switch (state) {
    case OSP_BREAKER_CLOSED:
        return "closed";
    case OSP_BREAKER_OPEN:
        return "open";
    case OSP_BREAKER_HALF_OPEN:
        return "half-open";
    }
    return "unknown";
}

const osp_breaker_stats_t *osp_breaker_stats(const osp_breaker_t *b)
{
    return &b->stats;
}
