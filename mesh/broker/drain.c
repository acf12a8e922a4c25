/*  =========================================================================
    drain.c - the broker's lame duck and drain (docs/protocol.md, "Drain";
    pigato-broker(1)): it stops taking new requests, tells its clients,
    lets the requests it holds finish and, for a drain that stops, has
    pigato_broker_run () return once none is left or at the drain timeout,
    failing what is left then. The core's part (what is refused, told,
    handed back, abandoned) is core_drain.c. Asked for from a signal
    handler (SIGTERM, SIGUSR2 in pigato-broker), done in the loop.
    =========================================================================
*/
#include <inttypes.h>
#include "front.h"

//  How long the replies of the last turn may take to leave once run ()
//  returned after a drain (the socket's linger; libzmq's default would
//  drop them at close)
#define DRAIN_LINGER_MS 2000

void
pigato_broker_request_drain (pigato_broker_t *self, bool stop)
{
    sig_atomic_t state = stop ? PIGATO__DRAIN_STOP : PIGATO__DRAIN_STAY;
    if (self && self->drain.requested < state)
        self->drain.requested = state;
}

int
pigato_broker_set_drain_timeout (pigato_broker_t *self, int msecs)
{
    if (msecs < 0) {
        pigato__errorf (self->error, sizeof self->error,
                        "the drain timeout must be >= 0 ms");
        return PIGATO_E_INVALID;
    }
    self->drain.timeout_ms = msecs;
    return 0;
}

static const char *
s_mode (const pigato__drain_t *drain)
{
    return drain->state == PIGATO__DRAIN_STOP ? "stop" : "stay";
}

//  The drain has begun, once, in the loop's thread: the place for what a
//  service manager is to hear (systemd: sd_notify STOPPING=1).
static void
s_drain_started (pigato_broker_t *self)
{
    pigato__drain_t *drain = &self->drain;
    pigato__log (PIGATO_LOG_INFO,
                 "event=drain_started mode=%s held=%" PRId64 " moved=%" PRId64
                 " clients=%" PRId64 " timeout_ms=%d",
                 s_mode (drain), drain->held, drain->moved, drain->told,
                 drain->state == PIGATO__DRAIN_STOP ? drain->timeout_ms : -1);
    //  systemd's STOPPING=1 (Type=notify): the broker is on its way out,
    //  or a lame duck that serves no more
    pigato__broker_tell (self, PIGATO_BROKER_STOPPING);
}

//  Tells every pigato client connected (those that heartbeated: libpigato
//  and Node pigato clients do at once) that no new request may come;
//  returns how many. The core told those it holds requests of already.
static size_t
s_tell_clients (pigato_broker_t *self)
{
    pigato__conns_t *conns = self->core->conns;
    size_t told = 0;
    for (size_t fd = 0; fd < conns->size; fd++) {
        pigato__conn_slot_t *slot = &conns->slots [fd];
        if (!slot->client || slot->state != PIGATO__CONN_OPEN || slot->dying)
            continue;
        pigato__bytes_t to = { slot->client, slot->client_size };
        pigato__conn_t conn = { (int) fd, slot->generation };
        pigato__broker_send_notice (self, &to, &conn);
        told++;
    }
    return told;
}

void
pigato__broker_drain_begin (pigato_broker_t *self)
{
    pigato__drain_t *drain = &self->drain;
    int asked = drain->requested;
    if (asked <= drain->state)
        return;
    int64_t now = self->core->now_ms;
    if (drain->state == PIGATO__DRAIN_NONE) {
        pigato__counters_t *counters = &self->core->counters;
        drain->state = asked;
        drain->started = now;
        drain->held = (int64_t) pigato__table_size (self->core->requests);
        drain->replies_before = counters->replies;
        drain->requests_before = counters->requests;
        drain->refused_before = self->core->drain_refused;
        drain->moved = (int64_t) pigato__core_drain (self->core);
        drain->told = (int64_t) s_tell_clients (self);
        s_drain_started (self);
    }
    else {
        //  A lame duck told to stop: the timeout counts from now
        drain->state = asked;
        pigato__log (PIGATO_LOG_INFO, "event=drain_stop held=%zu timeout_ms=%d",
                     pigato__table_size (self->core->requests),
                     drain->timeout_ms);
    }
    if (drain->state == PIGATO__DRAIN_STOP) {
        drain->deadline = now + drain->timeout_ms;
        //  A request a client sent before the notice reached it is still
        //  to come: with clients connected, the broker stays for one
        //  heartbeat (they learn within one anyway), to answer E_DRAINING
        //  rather than vanish under it
        int64_t linger = self->core->heartbeat_ms < drain->timeout_ms
                           ? self->core->heartbeat_ms
                           : drain->timeout_ms;
        drain->linger_until = drain->told ? now + linger : now;
    }
}

//  event=drained: what became of the requests held when the drain began.
//  finished: final replies forwarded since (the broker's own answers,
//  $dir and mmi.*, counted out: they are requests and replies at once);
//  other: ended otherwise (expired, client gone, worker lost).
static void
s_summary (pigato_broker_t *self, int64_t now)
{
    pigato__drain_t *drain = &self->drain;
    pigato__counters_t *counters = &self->core->counters;
    int64_t finished = (counters->replies - drain->replies_before)
                     - (counters->requests - drain->requests_before);
    if (finished < 0)
        finished = 0;
    int64_t other = drain->held - drain->moved - finished - drain->abandoned;
    pigato__log (PIGATO_LOG_INFO,
                 "event=drained mode=%s held=%" PRId64 " finished=%" PRId64
                 " moved=%" PRId64 " abandoned=%" PRId64 " other=%" PRId64
                 " refused=%" PRId64 " ms=%" PRId64,
                 s_mode (drain), drain->held, finished, drain->moved,
                 drain->abandoned, other < 0 ? 0 : other,
                 self->core->drain_refused - drain->refused_before,
                 now - drain->started);
}

bool
pigato__broker_drain_tick (pigato_broker_t *self, int64_t now)
{
    pigato__drain_t *drain = &self->drain;
    if (drain->state == PIGATO__DRAIN_NONE)
        return false;
    bool stop = drain->state == PIGATO__DRAIN_STOP;
    if (pigato__table_size (self->core->requests)) {
        if (!stop || now < drain->deadline)
            return false;
        char text [160];
        snprintf (text, sizeof text,
                  "E_DRAIN_TIMEOUT the broker stopped before the request "
                  "was answered (drain timeout of %d ms)",
                  drain->timeout_ms);
        drain->abandoned += (int64_t) pigato__core_drain_abandon (self->core,
                                                                  text);
        pigato__log (PIGATO_LOG_WARNING,
                     "event=drain_timeout abandoned=%" PRId64 " timeout_ms=%d",
                     drain->abandoned, drain->timeout_ms);
    }
    if (stop && now < drain->linger_until)
        return false;
    if (!drain->drained || stop)
        s_summary (self, now);
    drain->drained = true;
    if (!stop)
        return false;
    zsock_set_linger (self->router, DRAIN_LINGER_MS);
    return true;
}

int64_t
pigato__broker_drain_next (pigato_broker_t *self)
{
    pigato__drain_t *drain = &self->drain;
    if (drain->state != PIGATO__DRAIN_STOP)
        return INT64_MAX;
    return drain->linger_until > self->core->now_ms ? drain->linger_until
                                                    : drain->deadline;
}
