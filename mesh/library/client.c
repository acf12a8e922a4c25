/*  =========================================================================
    client.c - pigato_client: requests to services through one or more
    brokers, pigato 0.0.46 or native framing (docs/protocol.md,
    docs/native-framing.md).

    Single-threaded. Each broker link is a DEALER socket (link.c); requests
    are spread round-robin over links that answer. A request belongs to
    the link (and connection) it was last sent on: replies from any other
    are dropped. When a broker is lost (silent for `liveness` intervals, or
    its connection ended) its requests with a retry left move to another
    live link at once; the others fail. Timers (heartbeat tick,
    request inactivity deadlines) live in one heap. Callbacks may make or
    cancel requests and connect links, but must not destroy the client.
    What callbacks and timers send during one round leaves as one native
    batch per link when the round ends; what the application sends from
    its own code leaves at once.
    =========================================================================
*/
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include "../base/internal.h"
#include "../base/heap.h"
#include "link.h"
#include "settings.h"
#include "peer.h"
#include "../base/table.h"

#define CLIENT_LOOP_TICK_MS 100  //  deadline check period under zloop

typedef struct {
    char rid [PIGATO_RID_MAX + 1];  //  request id, hex text
    size_t hash;                    //  pigato__hash_text (rid)
    char *service;                  //  service name, in storage
    byte *data;                 //  request body (kept for retries), in storage
    size_t size;                //  body size
    char *opts;                 //  JSON opts as sent
    int64_t timeout;            //  ms of silence before failing, -1 never
    int retry;                  //  re-sends left on broker loss
    pigato_reply_fn *on_reply;  //  callback, may be NULL
    void *arg;                  //  callback argument
    pigato__link_t *link;       //  link it was last sent on, NULL if parked
    unsigned generation;        //  that link's connection then
    void *parked;               //  handle in client->parked, or NULL
    int64_t sent_at;            //  when it was (re)sent
    int64_t last_activity;      //  when sent or last replied to
    pigato__timer_t deadline;   //  inactivity deadline
    char storage [];            //  service, then data: one allocation
} s_request_t;

struct _pigato_client_t {
    pigato__settings_t settings;    //  keys, heartbeat, framing (setters)
    int64_t timeout_ms;             //  default request timeout
    pigato__links_t *links;         //  broker links
    size_t next_link;               //  round-robin cursor
    pigato__table_t *requests;      //  rid -> s_request_t, in flight
    pigato__heap_t *timers;         //  heartbeat + request deadlines
    pigato__timer_t heartbeat;      //  next heartbeat tick
    pigato__timer_t connect_check;  //  next link handshake deadline
    zlistx_t *parked;               //  requests waiting for a link to come up
    bool ever_up;                   //  some link completed a handshake once
    char rid_prefix [17];           //  16 random hex digits per client
    uint32_t rid_counter;           //  per request
    bool progress;                  //  a message or final happened this round
    zloop_t *loop;                  //  attached zloop, or NULL
    int loop_timer;                 //  its timer id
    char err [256];                 //  last error message
};

static void s_timers_run (pigato_client_t *self);
static void s_request_finish (pigato_client_t *self, s_request_t *req,
                              int status, const void *data, size_t size);

//  --------------------------------------------------------------------------
//  Frees a request record (already out of the table and the heap).

static void
s_request_destroy (s_request_t **req_p)
{
    s_request_t *req = *req_p;
    if (!req)
        return;
    free (req->opts);
    free (req);
    *req_p = NULL;
}

//  --------------------------------------------------------------------------
//  Picks a link round-robin, other than avoid (a broker just lost), among
//  those whose handshake completed: first links whose broker answered
//  (or completed the handshake) within two intervals, then any other,
//  then avoid itself (reopened and up again; the only one left). Never
//  one whose broker drains. NULL if no link is up: the request waits for
//  one (parked), as a request sent into a connection that never completes
//  would wait for its timeout.

static pigato__link_t *
s_link_choose (pigato_client_t *self, pigato__link_t *avoid)
{
    size_t size = pigato__links_size (self->links);
    if (size == 1) {
        //  What the passes below come to with one link, without the clock
        //  (except that a lone link still connecting takes the request:
        //  it leaves when the handshake completes, as it would parked)
        pigato__link_t *link = pigato__links_get (self->links, 0);
        return link->sock && !pigato__link_refused (link) && !link->draining
                 ? link
                 : NULL;
    }
    int64_t now = pigato__now_ms ();
    int64_t window = 2 * (int64_t) self->settings.interval_ms;
    for (int pass = 0; pass < 2; pass++)
        for (size_t step = 0; step < size; step++) {
            size_t index = (self->next_link + step) % size;
            pigato__link_t *link = pigato__links_get (self->links, index);
            if (!link->sock || link == avoid || link->state != PIGATO__LINK_UP
                || link->draining
                || (pass == 0 && !pigato__link_alive (link, now, window)))
                continue;
            self->next_link = index + 1;
            return link;
        }
    return avoid && avoid->sock && avoid->state == PIGATO__LINK_UP
                && !avoid->draining
             ? avoid
             : NULL;
}

//  --------------------------------------------------------------------------
//  Why no request can go anywhere now, or 0: every link failed, each for
//  a reason that waiting will not cure (the broker refused the key, no
//  server key passed the handshake, a bad local key), or because no
//  broker could be reached while none ever was (a client started against
//  a broker that is not there; once one was up, a broker that restarts
//  is waited for). The status of the most telling link, its text in
//  *text.

static int
s_links_failure (pigato_client_t *self, const char **text)
{
    int status = 0;
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (link->state == PIGATO__LINK_UP || !link->failure)
            return 0;
        if (!pigato__link_refused (link) && self->ever_up)
            return 0;
        //  A refusal says more than "unreachable"
        if (!status || pigato__link_refused (link)) {
            status = link->failure;
            *text = link->failure_text;
        }
    }
    return status;
}

//  --------------------------------------------------------------------------
//  Arms the check of links' handshake deadlines (once).

static void
s_connect_check_arm (pigato_client_t *self)
{
    if (!pigato__timer_scheduled (&self->connect_check)
        && pigato__heap_set (self->timers, &self->connect_check,
                             pigato__now_ms () + PIGATO_CONNECT_TIMEOUT_MS))
        pigato__log (PIGATO_LOG_ERROR, "event=connect_check_lost "
                                       "reason=nomem");
}

static void
s_unpark (pigato_client_t *self, s_request_t *req)
{
    if (req->parked)
        zlistx_delete (self->parked, req->parked);
    req->parked = NULL;
}

//  --------------------------------------------------------------------------
//  Writes a rid: the client's 16-digit random prefix, then 8 hex digits
//  of the counter (by hand: this runs for every request).

static void
s_rid_format (char *rid, const char *prefix, uint32_t counter)
{
    static const char digits [] = "0123456789abcdef";
    memcpy (rid, prefix, 16);
    for (int index = 23; index >= 16; index--, counter >>= 4)
        rid [index] = digits [counter & 15];
    rid [24] = 0;
}

//  --------------------------------------------------------------------------
//  A link up with room under its outbound budget, other than avoid, or
//  NULL: where a request goes when the chosen link's broker is not
//  reading.

static pigato__link_t *
s_link_with_room (pigato_client_t *self, pigato__link_t *avoid)
{
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (link->sock && link != avoid && link->state == PIGATO__LINK_UP
            && pigato__link_room (link))
            return link;
    }
    return NULL;
}

//  A link whose broker is not reading, if no other link with a socket
//  has room either; NULL if some link has. Checked before a request's
//  body is copied once a link was found over its budget (the first
//  request past it is refused by s_request_send).
static pigato__link_t *
s_links_full (pigato_client_t *self)
{
    pigato__link_t *full = NULL;
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (!link->sock)
            continue;
        if (pigato__link_room (link))
            return NULL;
        full = link;
    }
    return full;
}

//  No link has room for a request: it fails at once, nothing sent.
static int
s_queue_full (pigato_client_t *self, pigato__link_t *link)
{
    pigato__errorf (self->err, sizeof self->err,
                    "E_QUEUE_FULL %" PRIu64 " bytes sent to %s wait for "
                    "the broker to read them (budget %" PRId64 " bytes): "
                    "it is stuck or overloaded; try again later",
                    pigato__link_budget_estimate (&link->budget),
                    link->endpoint, self->settings.max_outbound);
    return PIGATO_E_QUEUE_FULL;
}

//  --------------------------------------------------------------------------
//  Sends (or re-sends) a request on a chosen link, avoiding `avoid` while
//  another link is there: C, 2, service, rid, data, opts. A link whose
//  broker is not reading takes no request (PIGATO_E_QUEUE_FULL when no
//  other link has room).

static int
s_request_send (pigato_client_t *self, s_request_t *req, pigato__link_t *avoid)
{
    pigato__link_t *link = s_link_choose (self, avoid);
    if (link && !pigato__link_room (link)) {
        pigato__link_t *full = link;
        if (!(link = s_link_with_room (self, avoid)))
            return s_queue_full (self, full);
    }
    if (!link) {
        const char *text = NULL;
        int failure = s_links_failure (self, &text);
        if (failure) {
            pigato__errorf (self->err, sizeof self->err, "%s", text);
            return failure;
        }
        //  Parked until a link completes its handshake (or fails)
        req->link = NULL;
        if (!req->parked && !(req->parked = zlistx_add_end (self->parked, req)))
            return PIGATO_E_NOMEM;
        s_connect_check_arm (self);
        return PIGATO_OK;
    }
    s_unpark (self, req);
    pigato__msg_t message = { .role = 'C',
                              .type = PIGATO__REQUEST,
                              .service = S_TEXT (req->service),
                              .rid = S_TEXT (req->rid),
                              .data = { req->data, req->size },
                              .opts = { (const byte *) req->opts,
                                        req->opts ? strlen (req->opts) : 0 } };
    if (pigato__link_send (link, &message) != 0) {
        if (zmq_errno () == EAGAIN)  //  an ipc:// link's message limit
            return s_queue_full (self, link);
        pigato__errorf (self->err, sizeof self->err, "cannot send to '%s': %s",
                        link->endpoint, zmq_strerror (zmq_errno ()));
        return PIGATO_E_NOTCONNECTED;
    }
    req->link = link;
    req->generation = link->generation;
    req->sent_at = pigato__now_ms ();
    char service_text [80];
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=client_request rid=%s service=%s endpoint=%s size=%zu",
                 req->rid,
                 pigato__printable (req->service, strlen (req->service),
                                    service_text, sizeof service_text),
                 link->endpoint, req->size);
    return PIGATO_OK;
}

//  A request sent again because its broker was lost may have run on a
//  worker already: it carries the next "attempt" in its opts (the rid
//  stays), so that worker's successor can tell (docs/protocol.md). Opts
//  that cannot grow go as they were.
static void
s_request_next_attempt (s_request_t *req)
{
    size_t size = 0;
    char *opts = pigato__opts_next_attempt (
        req->opts, req->opts ? strlen (req->opts) : 0, &size);
    if (!opts || size > PIGATO_OPTS_MAX) {
        free (opts);
        return;
    }
    free (req->opts);
    req->opts = opts;
}

//  A request's key in the table is its rid.
static bool
s_request_match (const void *item, const void *key)
{
    return streq (((const s_request_t *) item)->rid, (const char *) key);
}

//  --------------------------------------------------------------------------
//  Ends a request: takes it out of the table and heap, makes the final
//  callback, frees it.

static void
s_request_finish (pigato_client_t *self, s_request_t *req, int status,
                  const void *data, size_t size)
{
    pigato__table_delete (self->requests, req->hash, req->rid);
    pigato__heap_remove (self->timers, &req->deadline);
    s_unpark (self, req);
    self->progress = true;
    pigato__log (PIGATO_LOG_DEBUG, "event=client_final rid=%s status=%d",
                 req->rid, status);
    if (req->on_reply)
        req->on_reply (self, req->rid, status, true, data ? data : "", size,
                       req->arg);
    s_request_destroy (&req);
}

//  --------------------------------------------------------------------------
//  Greets a broker on a fresh connection: a heartbeat, carrying the native
//  offer in auto mode (native mode: a native heartbeat).

static void
s_link_greet (pigato__link_t *link)
{
    pigato__msg_t hello = { .role = 'C',
                            .type = PIGATO__HEARTBEAT,
                            .native_offer = pigato__link_offers (link) };
    pigato__link_send_repeated (link, &hello);
}

//  --------------------------------------------------------------------------
//  A broker is lost (silent for `liveness` intervals, or its connection
//  ended): reconnect with a new socket, then move its requests that have
//  a retry left to another live link (this one only if it is the only
//  link), counting one retry, and fail the others with E_NOTCONNECTED
//  "E_BROKER_LOST". The broker forgot them with the connection.

static void
s_link_lost (pigato_client_t *self, pigato__link_t *link, const char *reason)
{
    int64_t silent_ms = pigato__now_ms () - link->last_seen;
    bool was_heard = link->heard;
    if (pigato__link_open (link, self->err, sizeof self->err) == PIGATO_OK) {
        s_link_greet (link);
        s_connect_check_arm (self);
    }
    else
        pigato__log (PIGATO_LOG_WARNING,
                     "event=client_reconnect_failed endpoint=%s",
                     link->endpoint);

    //  Collect rids first: callbacks below may change the table
    size_t resent = 0, failed = 0;
    zlistx_t *rids = zlistx_new ();
    if (!rids)
        return;
    zlistx_set_destructor (rids, (zlistx_destructor_fn *) zstr_free);
    size_t cursor = 0;
    s_request_t *req;
    while ((req = (s_request_t *) pigato__table_next (self->requests, &cursor)))
        if (req->link == link)
            zlistx_add_end (rids, strdup (req->rid));

    for (char *rid = (char *) zlistx_first (rids); rid;
         rid = (char *) zlistx_next (rids)) {
        req = (s_request_t *) pigato__table_lookup (
            self->requests, pigato__hash_text (rid), rid);
        if (!req)
            continue;  //  cancelled or ended by an earlier callback
        if (req->retry > 0) {
            req->retry--;
            s_request_next_attempt (req);
            if (s_request_send (self, req, link) == PIGATO_OK) {
                resent++;
                continue;
            }
        }
        failed++;
        s_request_finish (self, req, PIGATO_E_NOTCONNECTED, "E_BROKER_LOST",
                          strlen ("E_BROKER_LOST"));
    }
    zlistx_destroy (&rids);
    //  A broker still away is retried every liveness period: quietly
    pigato__log (was_heard || resent || failed ? PIGATO_LOG_WARNING
                                               : PIGATO_LOG_DEBUG,
                 "event=client_broker_lost endpoint=%s reason=%s "
                 "silent_ms=%" PRId64 " resent=%zu failed=%zu",
                 link->endpoint, reason, silent_ms, resent, failed);
}

//  Its connection to a broker that had answered ended, or its handshake
//  failed with another server key to try (link.c monitor).
static void
s_link_disconnected (void *owner, pigato__link_t *link)
{
    s_link_lost ((pigato_client_t *) owner, link,
                 link->lost_reason                ? link->lost_reason
                 : link->state == PIGATO__LINK_UP ? "disconnected"
                                                  : "next_server_key");
}

//  --------------------------------------------------------------------------
//  A link came up: parked requests go (spread over the links up). A link
//  failed: a refusal closes it until its backoff ends; when no link is
//  left to wait for (s_links_failure), parked requests fail with the
//  reason, at once rather than at their timeout.

static void
s_link_change (void *owner, pigato__link_t *link)
{
    pigato_client_t *self = (pigato_client_t *) owner;
    bool up = link->state == PIGATO__LINK_UP;
    bool refused = !up && pigato__link_refused (link);
    if (up)
        self->ever_up = true;
    else if (refused)
        pigato__link_refuse (link, link->failure, link->failure_text);
    const char *text = NULL;
    int failure = up ? 0 : s_links_failure (self, &text);
    if (!up && !failure && !refused)
        return;  //  other links to wait for; this one's queue may still go
    //  What moves: parked requests; on a failure, those sent on links
    //  that never came up too (the broker never had them). Callbacks
    //  below may park, cancel or end requests: rids first
    zlistx_t *rids = zlistx_new ();
    if (!rids)
        return;
    zlistx_set_destructor (rids, (zlistx_destructor_fn *) zstr_free);
    size_t cursor = 0;
    s_request_t *req;
    while ((req = (s_request_t *) pigato__table_next (self->requests, &cursor)))
        if (req->parked
            || (!up && req->link
                && (req->link == link
                    || (failure && req->link->state != PIGATO__LINK_UP))))
            zlistx_add_end (rids, strdup (req->rid));
    char copy [256];
    snprintf (copy, sizeof copy, "%s", text ? text : "");
    for (char *rid = (char *) zlistx_first (rids); rid;
         rid = (char *) zlistx_next (rids)) {
        req = (s_request_t *) pigato__table_lookup (
            self->requests, pigato__hash_text (rid), rid);
        if (!req)
            continue;  //  cancelled or ended meanwhile
        int rc = failure ? failure
                         : s_request_send (self, req, up ? NULL : link);
        if (rc == PIGATO_OK)
            continue;
        if (!failure)
            snprintf (copy, sizeof copy, "%s", self->err);
        s_request_finish (self, req, rc, copy, strlen (copy));
    }
    zlistx_destroy (&rids);
}

//  --------------------------------------------------------------------------
//  A broker's drain (docs/protocol.md, "Drain"). Its notice (a heartbeat
//  with one more frame) marks the link: no new request goes there; its
//  plain heartbeat, after, clears the mark (and what waited goes).

static void
s_link_draining (pigato_client_t *self, pigato__link_t *link, bool draining)
{
    link->draining = draining;
    pigato__log (PIGATO_LOG_INFO, "event=client_broker_%s endpoint=%s",
                 draining ? "draining" : "serving", link->endpoint);
    if (!draining)
        s_link_change (self, link);
}

//  True if an error reply ends nothing: a draining broker (its notice came
//  first on the link: a worker cannot pass for it) gave the request back.
//  E_DRAINING: no worker saw it, so it goes to another broker (or waits
//  for one) and uses up no retry. E_DRAIN_TIMEOUT: the broker stopped
//  with it at a worker: as for a broker lost, it goes elsewhere if it has
//  a retry left, with the next attempt. data is the JSON string.

static bool
s_drain_reply (pigato_client_t *self, pigato__link_t *link, s_request_t *req,
               const pigato__bytes_t *data)
{
    static const char draining [] = "\"E_DRAINING ";
    static const char timeout [] = "\"E_DRAIN_TIMEOUT ";
    if (!link->draining)
        return false;
    bool moved = data->size > sizeof draining - 1
              && memcmp (data->data, draining, sizeof draining - 1) == 0;
    bool abandoned = !moved && data->size > sizeof timeout - 1
                  && memcmp (data->data, timeout, sizeof timeout - 1) == 0;
    if (!moved && !(abandoned && req->retry > 0))
        return false;
    if (abandoned) {
        req->retry--;
        s_request_next_attempt (req);
    }
    int rc = s_request_send (self, req, link);
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=client_drain_resend rid=%s endpoint=%s reason=%s "
                 "parked=%s",
                 req->rid, link->endpoint, moved ? "moved" : "abandoned",
                 rc == PIGATO_OK && !req->link ? "yes" : "no");
    if (rc != PIGATO_OK) {
        char text [256];
        snprintf (text, sizeof text, "%s", self->err);
        s_request_finish (self, req, rc, text, strlen (text));
    }
    return true;
}

//  --------------------------------------------------------------------------
//  Heartbeat tick: lost links reconnect; live links get C,4; requests in
//  flight for more than one interval get C,4,request,rid so the worker
//  knows the client still cares.

static void
s_heartbeat_tick (pigato_client_t *self, int64_t now)
{
    int64_t dead_after = (int64_t) self->settings.interval_ms
                       * self->settings.liveness;
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (!link->sock && now < link->retry_at)
            continue;  //  refused: backing off
        if (!link->sock || now - link->last_seen >= dead_after)
            s_link_lost (self, link, link->sock ? "silent" : "retry");
        else {
            pigato__msg_t heartbeat = { .role = 'C',
                                        .type = PIGATO__HEARTBEAT };
            pigato__link_send_repeated (link, &heartbeat);
        }
    }
    size_t cursor = 0;
    s_request_t *req;
    while (
        (req = (s_request_t *) pigato__table_next (self->requests, &cursor))) {
        if (now - req->sent_at < self->settings.interval_ms || !req->link)
            continue;
        pigato__msg_t heartbeat = { .role = 'C',
                                    .type = PIGATO__HEARTBEAT,
                                    .rid = S_TEXT (req->rid),
                                    .request_heartbeat = true };
        pigato__link_send_repeated (req->link, &heartbeat);
    }
}

//  --------------------------------------------------------------------------
//  Runs due timers: the heartbeat tick and request inactivity deadlines.

static void
s_timers_run (pigato_client_t *self)
{
    int64_t now = pigato__now_ms ();
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (self->timers, now))) {
        if (timer == &self->connect_check) {
            int64_t next = pigato__links_expire (self->links, now,
                                                 PIGATO_CONNECT_TIMEOUT_MS);
            if (next >= 0
                && pigato__heap_set (self->timers, &self->connect_check, next))
                pigato__log (PIGATO_LOG_ERROR, "event=connect_check_lost "
                                               "reason=nomem");
            continue;
        }
        if (timer == &self->heartbeat) {
            //  Cannot fail: the pop just made room
            if (pigato__heap_set (self->timers, &self->heartbeat,
                                  now + self->settings.interval_ms))
                pigato__log (PIGATO_LOG_ERROR, "event=heartbeat_stopped "
                                               "reason=nomem");
            s_heartbeat_tick (self, now);
            continue;
        }
        s_request_t *req = pigato__container_of (timer, s_request_t, deadline);
        if (now - req->last_activity >= req->timeout) {
            pigato__log (PIGATO_LOG_DEBUG,
                         "event=client_timeout rid=%s "
                         "timeout_ms=%" PRId64,
                         req->rid, req->timeout);
            s_request_finish (self, req, PIGATO_E_TIMEOUT, "C_TIMEOUT",
                              strlen ("C_TIMEOUT"));
        }
        else if (pigato__heap_set (self->timers, &req->deadline,
                                   req->last_activity + req->timeout))
            //  Cannot happen (the pop made room); were it to, the request
            //  ends now rather than never
            s_request_finish (self, req, PIGATO_E_NOMEM, "C_NOMEM",
                              strlen ("C_NOMEM"));
    }
}

//  --------------------------------------------------------------------------
//  Handles one message (or native entry) from a broker, decoded and
//  checked by link.c: partials and finals go to their request.

static int
s_link_handle (void *owner, pigato__link_t *link, const pigato__msg_t *entry)
{
    pigato_client_t *self = (pigato_client_t *) owner;
    const pigato__msg_t message = *entry;
    self->progress = true;
    if (message.type == PIGATO__HEARTBEAT) {
        bool draining = message.data.size == strlen (PIGATO__DRAIN_NOTICE)
                     && memcmp (message.data.data, PIGATO__DRAIN_NOTICE,
                                message.data.size)
                            == 0;
        if (draining != link->draining)
            s_link_draining (self, link, draining);
        return 0;
    }

    char rid [PIGATO_RID_MAX + 1];
    if (message.rid.size)
        memcpy (rid, message.rid.data, message.rid.size);
    rid [message.rid.size] = 0;
    s_request_t *req = (s_request_t *) pigato__table_lookup (
        self->requests, pigato__hash_text (rid), rid);
    //  Only the connection the request is on may answer it: after a
    //  failover the old broker's late reply is not the request's
    const char *unknown = !req || strlen (rid) != message.rid.size
                            ? "unknown_rid"
                        : req->link != link
                                  || req->generation != link->generation
                            ? "wrong_link"
                            : NULL;
    if (unknown) {
        char printable [80];
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=client_drop endpoint=%s "
                     "reason=%s rid=%s",
                     link->endpoint, unknown,
                     pigato__printable (message.rid.data, message.rid.size,
                                        printable, sizeof printable));
        return 0;
    }
    const void *data = message.data.data ? message.data.data
                                         : (const void *) "";
    size_t size = message.data.size;
    int status = PIGATO_OK;
    char *error_text = NULL;
    if (message.status == -1 && message.type == PIGATO__REPLY
        && s_drain_reply (self, link, req, &message.data))
        return 0;
    if (message.status == -1) {
        status = PIGATO_E_REPLY;
        size_t length;
        error_text = pigato__json_string_decode_sized (data, size, &length);
        if (error_text) {
            data = error_text;
            size = length;  //  the text may hold NUL bytes
        }
    }
    if (message.type == PIGATO__PARTIAL) {
        //  Inactivity timeout: any reply restarts the clock
        req->last_activity = pigato__now_ms ();
        //  The deadline is scheduled already: moving it cannot fail
        if (req->timeout >= 0
            && pigato__heap_set (self->timers, &req->deadline,
                                 req->last_activity + req->timeout))
            pigato__log (PIGATO_LOG_ERROR, "event=deadline_kept "
                                           "reason=nomem");
        if (req->on_reply)
            req->on_reply (self, rid, status, false, data, size, req->arg);
    }
    else if (message.type == PIGATO__REPLY)
        s_request_finish (self, req, status, data, size);
    else
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=client_drop endpoint=%s "
                     "reason=type type=%d",
                     link->endpoint, message.type);
    free (error_text);
    return 0;
}

//  --------------------------------------------------------------------------
//  After a zloop reader drained a link: due timers, in the same round.

static void
s_loop_tick (void *owner)
{
    s_timers_run ((pigato_client_t *) owner);
}

//  --------------------------------------------------------------------------
//  Builds the opts frame: {"timeout":T} for NULL; otherwise the caller's
//  object (must parse) with the default timeout added when it has none.
//  Reads timeout and retry for local use.

static int
s_opts_prepare (pigato_client_t *self, const char *opts_json, char **opts_p,
                int64_t *timeout_p, int *retry_p)
{
    *timeout_p = self->timeout_ms;
    *retry_p = 0;
    if (!opts_json) {
        //  Brokers default to PIGATO_TIMEOUT_MS: then no opts at all, and
        //  nothing for them to parse
        *opts_p = NULL;
        if (self->timeout_ms == PIGATO_TIMEOUT_MS)
            return PIGATO_OK;
        *opts_p = zsys_sprintf ("{\"timeout\":%" PRId64 "}", self->timeout_ms);
        return *opts_p ? PIGATO_OK : PIGATO_E_NOMEM;
    }
    //  The compact form clients usually send is read without a parser
    //  and sent as it is when it names a timeout or the default applies
    if (pigato__opts_fast (opts_json, strlen (opts_json), self->timeout_ms,
                           timeout_p, retry_p)
        && (strstr (opts_json, "\"timeout\":")
            || self->timeout_ms == PIGATO_TIMEOUT_MS)) {
        *opts_p = strdup (opts_json);
        return *opts_p ? PIGATO_OK : PIGATO_E_NOMEM;
    }
    int rc = PIGATO_OK;
    json_error_t error;
    json_t *root = json_loads (opts_json, 0, &error);
    if (!root || !json_is_object (root)) {
        pigato__errorf (self->err, sizeof self->err,
                        "opts must be a JSON object%s%s", root ? "" : ": ",
                        root ? "" : error.text);
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    json_t *timeout = json_object_get (root, "timeout");
    if (!timeout)
        json_object_set_new (root, "timeout", json_integer (self->timeout_ms));
    else if (!json_is_number (timeout)) {
        pigato__errorf (self->err, sizeof self->err,
                        "opts \"timeout\" must be a number of ms (-1 = never)");
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    //  Read as the broker reads it (one parser: never diverge)
    *timeout_p = pigato__opts_timeout (root, self->timeout_ms);
    *retry_p = pigato__opts_retry (root);
    *opts_p = json_dumps (root, JSON_COMPACT);
    if (!*opts_p)
        rc = PIGATO_E_NOMEM;

cleanup:
    json_decref (root);
    return rc;
}

//  --------------------------------------------------------------------------
//  Constructor: defaults from pigato.h, a random rid prefix.

PIGATO_EXPORT pigato_client_t *
pigato_client_new (void)
{
    pigato__signals_leave ();
    if (sodium_init () < 0)
        return NULL;
    pigato_client_t *self = (pigato_client_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    pigato__settings_init (&self->settings, self->err, sizeof self->err);
    self->timeout_ms = PIGATO_TIMEOUT_MS;
    self->requests = pigato__table_new (s_request_match);
    self->timers = pigato__heap_new ();
    self->links = pigato__links_new ('C', &self->settings.security,
                                     s_link_handle, s_loop_tick,
                                     s_link_disconnected, s_link_change, self);
    self->parked = zlistx_new ();
    byte prefix [8];
    randombytes_buf (prefix, sizeof prefix);
    sodium_bin2hex (self->rid_prefix, sizeof self->rid_prefix, prefix,
                    sizeof prefix);
    pigato__timer_init (&self->heartbeat);
    pigato__timer_init (&self->connect_check);
    if (!self->requests || !self->timers || !self->links || !self->parked)
        pigato_client_destroy (&self);
    return self;
}

//  --------------------------------------------------------------------------
//  Destructor: pending requests are dropped without callbacks. Call it
//  before destroying an attached zloop.

PIGATO_EXPORT void
pigato_client_destroy (pigato_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato_client_t *self = *self_p;
    if (self->loop && self->loop_timer >= 0)
        zloop_timer_end (self->loop, self->loop_timer);
    pigato__links_destroy (&self->links);
    //  The heap marks its timers idle: destroy it before the requests
    pigato__heap_destroy (&self->timers);
    if (self->requests) {
        size_t cursor = 0;
        s_request_t *req;
        while ((
            req = (s_request_t *) pigato__table_next (self->requests, &cursor)))
            s_request_destroy (&req);
        pigato__table_destroy (&self->requests);
    }
    zlistx_destroy (&self->parked);
    pigato__settings_reset (&self->settings);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Setters: one implementation for clients and workers (settings.c).

static pigato__settings_t *
s_settings (pigato_client_t *self)
{
    return self ? &self->settings : NULL;
}

PIGATO_EXPORT int
pigato_client_set_server_key (pigato_client_t *self, const char *key)
{
    return pigato__settings_set_server_key (s_settings (self), key);
}

PIGATO_EXPORT int
pigato_client_set_server_ca (pigato_client_t *self, const char *ca_crt)
{
    return pigato__settings_set_server_ca (s_settings (self), ca_crt);
}

PIGATO_EXPORT int
pigato_client_set_key_file (pigato_client_t *self, const char *path)
{
    return pigato__settings_set_key_file (s_settings (self), path);
}

PIGATO_EXPORT void
pigato_client_set_insecure (pigato_client_t *self, bool insecure)
{
    pigato__settings_set_insecure (s_settings (self), insecure);
}

//  Heartbeat interval and liveness; non-positive values are ignored.
PIGATO_EXPORT void
pigato_client_set_heartbeat (pigato_client_t *self, int interval_ms,
                             int liveness)
{
    pigato__settings_set_heartbeat (s_settings (self), interval_ms, liveness);
}

PIGATO_EXPORT void
pigato_client_set_timeout (pigato_client_t *self, int64_t timeout_ms)
{
    if (self)
        self->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
}

//  Framing for links connected from now on: "auto", "native" or "0.0.46".
PIGATO_EXPORT int
pigato_client_set_framing (pigato_client_t *self, const char *framing)
{
    return pigato__settings_set_framing (s_settings (self), framing);
}

PIGATO_EXPORT int
pigato_client_set_max_outbound (pigato_client_t *self, int64_t bytes)
{
    int rc = pigato__settings_set_max_outbound (s_settings (self), bytes);
    if (rc == PIGATO_OK)
        pigato__links_set_max_outbound (self->links, bytes);
    return rc;
}

//  --------------------------------------------------------------------------
//  Adds a broker link with its own DEALER socket and starts heartbeats.

PIGATO_EXPORT int
pigato_client_connect (pigato_client_t *self, const char *endpoint)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (!endpoint || !*endpoint) {
        pigato__errorf (self->err, sizeof self->err, "no endpoint given");
        return PIGATO_E_INVALID;
    }
    //  Heartbeats first: a link that could not heartbeat would look dead
    if (!pigato__timer_scheduled (&self->heartbeat)
        && pigato__heap_set (self->timers, &self->heartbeat,
                             pigato__now_ms () + self->settings.interval_ms)) {
        pigato__errorf (self->err, sizeof self->err, "out of memory");
        return PIGATO_E_NOMEM;
    }
    pigato__link_t *link;
    int rc = pigato__links_add (self->links, endpoint, self->settings.framing,
                                &link, self->err, sizeof self->err);
    if (rc != PIGATO_OK)
        return rc;
    s_link_greet (link);
    s_connect_check_arm (self);
    pigato__log (PIGATO_LOG_INFO, "event=client_connect endpoint=%s mode=%s",
                 endpoint,
                 self->settings.security.insecure ? "insecure" : "curve");
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Sends a request; see pigato.h. rid, when not NULL, receives the id.

PIGATO_EXPORT int
pigato_client_request (pigato_client_t *self, const char *service,
                       const void *data, size_t size, const char *opts_json,
                       pigato_reply_fn *on_reply, void *arg, char *rid)
{
    if (!self)
        return PIGATO_E_INVALID;
    size_t service_size = service ? strlen (service) : 0;
    if (service_size == 0 || service_size > PIGATO_SERVICE_MAX) {
        pigato__errorf (self->err, sizeof self->err,
                        "service name must be 1 to %d bytes",
                        PIGATO_SERVICE_MAX);
        return PIGATO_E_INVALID;
    }
    if (!data && size > 0) {
        pigato__errorf (self->err, sizeof self->err, "data is NULL");
        return PIGATO_E_INVALID;
    }
    //  Refused here, not by the broker: it would drop the connection and
    //  every other request in flight on it
    if (size > PIGATO_BODY_MAX) {
        pigato__errorf (self->err, sizeof self->err,
                        "E_TOO_LARGE request of %zu bytes exceeds the "
                        "broker's limit of %d bytes",
                        size, PIGATO_BODY_MAX);
        return PIGATO_E_TOO_LARGE;
    }
    if (pigato__links_size (self->links) == 0) {
        pigato__errorf (self->err, sizeof self->err,
                        "not connected: call pigato_client_connect first");
        return PIGATO_E_NOTCONNECTED;
    }
    if (size > SIZE_MAX - sizeof (s_request_t) - service_size - 1) {
        pigato__errorf (self->err, sizeof self->err, "data is too large");
        return PIGATO_E_INVALID;
    }
    pigato__link_t *full = pigato__links_over (self->links)
                             ? s_links_full (self)
                             : NULL;
    if (full)
        return s_queue_full (self, full);
    //  One allocation (malloc, not calloc: glibc's calloc skips its
    //  per-thread cache); the body is kept for retries
    s_request_t *req = (s_request_t *) malloc (sizeof *req + service_size + 1
                                               + size);
    if (!req)
        return PIGATO_E_NOMEM;
    memset (req, 0, sizeof *req);
    int rc = s_opts_prepare (self, opts_json, &req->opts, &req->timeout,
                             &req->retry);
    if (rc != PIGATO_OK)
        goto failed;
    if (req->opts && strlen (req->opts) > PIGATO_OPTS_MAX) {
        pigato__errorf (self->err, sizeof self->err,
                        "E_TOO_LARGE opts of %zu bytes exceed the broker's "
                        "limit of %d bytes",
                        strlen (req->opts), PIGATO_OPTS_MAX);
        rc = PIGATO_E_TOO_LARGE;
        goto failed;
    }
    req->service = req->storage;
    memcpy (req->service, service, service_size + 1);
    req->data = (byte *) req->storage + service_size + 1;
    if (size)
        memcpy (req->data, data, size);
    req->size = size;
    req->on_reply = on_reply;
    req->arg = arg;
    s_rid_format (req->rid, self->rid_prefix, ++self->rid_counter);
    pigato__timer_init (&req->deadline);
    req->hash = pigato__hash_text (req->rid);
    if (pigato__table_insert (self->requests, req->hash, req->rid, req)) {
        rc = PIGATO_E_NOMEM;
        goto failed;
    }
    rc = s_request_send (self, req, NULL);
    if (rc != PIGATO_OK) {
        s_unpark (self, req);
        pigato__table_delete (self->requests, req->hash, req->rid);
        goto failed;
    }
    req->last_activity = req->sent_at = pigato__now_ms ();
    if (req->timeout >= 0
        && pigato__heap_set (self->timers, &req->deadline,
                             req->last_activity + req->timeout)) {
        //  A request without its deadline would wait forever: refused
        s_unpark (self, req);
        pigato__table_delete (self->requests, req->hash, req->rid);
        rc = PIGATO_E_NOMEM;
        goto failed;
    }
    if (rid)
        strcpy (rid, req->rid);
    return PIGATO_OK;

failed:
    s_request_destroy (&req);
    return rc;
}

//  --------------------------------------------------------------------------
//  Gives up a request: forgotten at once; late replies are ignored.

PIGATO_EXPORT int
pigato_client_cancel (pigato_client_t *self, const char *rid)
{
    if (!self || !rid)
        return PIGATO_E_INVALID;
    s_request_t *req = (s_request_t *) pigato__table_delete (
        self->requests, pigato__hash_text (rid), rid);
    if (!req) {
        pigato__errorf (self->err, sizeof self->err, "unknown rid '%.64s'",
                        rid);
        return PIGATO_E_INVALID;
    }
    pigato__heap_remove (self->timers, &req->deadline);
    s_unpark (self, req);
    pigato__log (PIGATO_LOG_DEBUG, "event=client_cancel rid=%s", req->rid);
    s_request_destroy (&req);
    return PIGATO_OK;
}

//  State of one blocking call.
typedef struct {
    pigato_reply_fn *on_partial;  //  caller's partial callback
    void *arg;                    //  its argument
    bool done;                    //  final arrived
    int status;                   //  final status
    char *reply;                  //  final data, NUL-terminated
    size_t size;                  //  its size
} s_call_t;

static void
s_call_reply (pigato_client_t *client, const char *rid, int status, bool final,
              const void *data, size_t size, void *arg)
{
    s_call_t *call = (s_call_t *) arg;
    if (!final) {
        if (call->on_partial)
            call->on_partial (client, rid, status, false, data, size,
                              call->arg);
        return;
    }
    call->done = true;
    call->status = status;
    call->reply = (char *) malloc (size + 1);
    if (call->reply) {
        memcpy (call->reply, data, size);
        call->reply [size] = 0;
        call->size = size;
    }
    else
        call->status = PIGATO_E_NOMEM;
}

//  --------------------------------------------------------------------------
//  Blocking call; see pigato.h. Local failures (bad opts, interrupted)
//  return their status with the error text in *reply.

PIGATO_EXPORT int
pigato_client_call (pigato_client_t *self, const char *service,
                    const void *data, size_t size, const char *opts_json,
                    pigato_reply_fn *on_partial, void *arg, char **reply,
                    size_t *reply_size)
{
    s_call_t call = { on_partial, arg, false, PIGATO_OK, NULL, 0 };
    char rid [PIGATO_RID_MAX + 1];
    int rc = pigato_client_request (self, service, data, size, opts_json,
                                    s_call_reply, &call, rid);
    bool sent = rc == PIGATO_OK;
    while (rc == PIGATO_OK && !call.done) {
        rc = pigato_client_wait (self, -1);
        if (rc != PIGATO_OK && !call.done)
            pigato_client_cancel (self, rid);
    }
    if (rc == PIGATO_OK)
        rc = call.status;
    else {
        free (call.reply);
        call.reply = strdup (self && !sent ? self->err : pigato_strerror (rc));
        call.size = call.reply ? strlen (call.reply) : 0;
    }
    if (reply)
        *reply = call.reply;
    else
        free (call.reply);
    if (reply_size)
        *reply_size = call.size;
    return rc;
}

PIGATO_EXPORT size_t
pigato_client_pending (pigato_client_t *self)
{
    return self ? pigato__table_size (self->requests) : 0;
}

//  --------------------------------------------------------------------------
//  Polls the links and runs timers until a message or final reply was
//  handled, or timeout_ms passed (-1 = no limit). Heartbeat ticks alone do
//  not end the wait.

PIGATO_EXPORT int
pigato_client_wait (pigato_client_t *self, int timeout_ms)
{
    if (!self)
        return PIGATO_E_INVALID;
    int rc = PIGATO_OK;
    int64_t deadline = timeout_ms < 0 ? -1 : pigato__now_ms () + timeout_ms;
    self->progress = false;
    while (true) {
        if (zsys_interrupted) {
            rc = PIGATO_E_INTERRUPTED;
            break;
        }
        int64_t now = pigato__now_ms ();
        int64_t wait_ms = deadline < 0   ? -1
                        : deadline > now ? deadline - now
                                         : 0;
        pigato__timer_t *timer = pigato__heap_peek (self->timers);
        if (timer) {
            int64_t until = timer->when > now ? timer->when - now : 0;
            if (wait_ms < 0 || until < wait_ms)
                wait_ms = until;
        }
        //  One round: what the callbacks and timers send is coalesced
        size_t received = 0;
        pigato__links_hold (self->links);
        int polled = pigato__links_poll (self->links, wait_ms, &received);
        if (polled == PIGATO_OK)
            s_timers_run (self);
        pigato__links_release (self->links);
        if (polled == 1)
            break;  //  nothing could ever happen
        if (polled != PIGATO_OK) {
            rc = polled;
            break;
        }
        if (received)
            self->progress = true;
        if (self->progress || (deadline >= 0 && pigato__now_ms () >= deadline))
            break;
    }
    return rc;
}

//  --------------------------------------------------------------------------
//  Runs until no request is pending, or a signal.

PIGATO_EXPORT int
pigato_client_run (pigato_client_t *self)
{
    if (!self)
        return PIGATO_E_INVALID;
    while (pigato_client_pending (self) > 0) {
        int rc = pigato_client_wait (self, -1);
        if (rc != PIGATO_OK)
            return rc;
    }
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  zloop timer: runs due timers (deadline checks at this granularity).

static int
s_loop_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    pigato_client_t *self = (pigato_client_t *) arg;
    pigato__links_hold (self->links);
    s_timers_run (self);
    pigato__links_release (self->links);
    return zsys_interrupted ? -1 : 0;
}

//  --------------------------------------------------------------------------
//  Registers with an application's zloop; once only.

PIGATO_EXPORT int
pigato_client_attach (pigato_client_t *self, void *zloop)
{
    if (!self || !zloop || self->loop) {
        if (self)
            pigato__errorf (self->err, sizeof self->err,
                            "attach needs a zloop, and only one");
        return PIGATO_E_INVALID;
    }
    self->loop = (zloop_t *) zloop;
    int period = self->settings.interval_ms < CLIENT_LOOP_TICK_MS
                   ? self->settings.interval_ms
                   : CLIENT_LOOP_TICK_MS;
    self->loop_timer = zloop_timer (self->loop, (size_t) period, 0,
                                    s_loop_timer, self);
    pigato__links_attach (self->links, self->loop);
    return self->loop_timer >= 0 ? PIGATO_OK : PIGATO_E_SYSTEM;
}

PIGATO_EXPORT const char *
pigato_client_error (pigato_client_t *self)
{
    return self ? self->err : "no client";
}
