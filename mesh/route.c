/*  =========================================================================
    route.c - what the broker does with each message: decode (0.0.46
    framing, or a native batch entry by entry), check the sender against
    the current policy (auth/guard), then route: service queues, worker
    choice, request lifecycle, replies. Also the sweeps that follow a closed
    connection, a policy reload, expiry and lost workers.

    Messages are zmq_msg_t parts (broker.c reads them); bodies are shared
    with the part they came in, never copied on the way through. Replies
    go out in the framing their request came in; native entries for one
    peer collect in the outbox until the loop flushes it.
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "broker_internal.h"
#include "mdp.h"

#define MAX_PENDING 1000000     //  requests held at once, then E_OVERLOADED

//  One message or batch entry being routed.
typedef struct {
    pigato__msg_t m;            //  decoded fields (borrow the parts)
    zmq_msg_t *body_part;       //  the part m.data lies in, or NULL
    zmq_msg_t *meta;            //  a part the peer sent (its metadata)
    size_t frames;              //  frames of the whole message (logs)
    bool mdp;                   //  an MDP/0.2 message (READY: MDP worker)
} s_in_t;

#define FRAMING_046     0
#define FRAMING_NATIVE  1
#define FRAMING_MDP     2
#define WORKER_FRAMING(worker) ((worker)->mdp ? FRAMING_MDP                 \
                                : (worker)->native ? FRAMING_NATIVE        \
                                : FRAMING_046)

#define BYTES(text) ((pigato__bytes_t) { (const byte *) (text), strlen (text) })

//  --------------------------------------------------------------------------
//  Logging of bad input: rate-limited (pigato__ratelimit_t).

static void
s_bad (pigato_broker_t *self, const s_in_t *in, const char *reason)
{
    self->counters.bad_messages++;
    if (pigato__log_level < PIGATO_LOG_INFO
    ||  !pigato__ratelimit_allow (&self->bad_log, "bad_message"))
        return;
    char peer [80] = "?";
    const char *address = NULL;
    if (in->m.sender.size)
        pigato__printable (in->m.sender.data, in->m.sender.size, peer,
                           sizeof peer);
    if (in->meta)
        address = zmq_msg_gets (in->meta, "Peer-Address");
    pigato__log (PIGATO_LOG_INFO,
                 "event=bad_message peer=%s address=%s reason=%s frames=%zu",
                 peer, address ? address : "?", reason, in->frames);
}

static void
s_denied (pigato_broker_t *self, const s_in_t *in, const pigato__peer_t *peer,
          int verb, const char *service, const char *reason)
{
    pigato__guard_denied (self->guard, in->m.sender.data, in->m.sender.size,
                          in->meta, peer, verb, service, reason);
}

//  Service names come from peers: log them escaped, never raw.
#define SERVICE_TEXT (PIGATO_SERVICE_MAX * 4 + 4)
static const char *
s_service_text (const pigato__service_t *service, char *text)
{
    if (!service)
        return "-";
    return pigato__printable (service->name, strlen (service->name), text,
                              SERVICE_TEXT);
}

//  Copies a string into a fixed field, cut to fit ("" for NULL): for
//  every request, so no snprintf.
static void
s_copy_text (char *field, size_t field_size, const char *text)
{
    size_t size = text ? strnlen (text, field_size - 1) : 0;
    if (size)
        memcpy (field, text, size);
    field [size] = 0;
}

//  --------------------------------------------------------------------------
//  Sending

//  Sends a 0.0.46 message: routing id, then frames. Frame body_index (if
//  body_part holds exactly its bytes) shares that part instead of being
//  copied. The peer's pending native batch goes first, to keep order.
static void
s_send_frames (pigato_broker_t *self, const pigato__bytes_t *to,
               const pigato__bytes_t *frames, size_t count,
               zmq_msg_t *body_part, size_t body_index)
{
    pigato__outbox_flush_peer (self->outbox, to);
    void *router = self->router_handle;
    if (zmq_send (router, to->data, to->size, ZMQ_SNDMORE | ZMQ_DONTWAIT)
        == -1)
        return;
    for (size_t index = 0; index < count; index++) {
        int flags = index + 1 < count ? ZMQ_SNDMORE : 0;
        const pigato__bytes_t *frame = &frames [index];
        if (index == body_index && body_part && frame->size
        &&  zmq_msg_data (body_part) == frame->data
        &&  zmq_msg_size (body_part) == frame->size) {
            zmq_msg_t shared;
            zmq_msg_init (&shared);
            if (zmq_msg_copy (&shared, body_part) == 0
            &&  zmq_msg_send (&shared, router, flags) != -1)
                continue;
            zmq_msg_close (&shared);
        }
        zmq_send (router, frame->data, frame->size, flags);
    }
}

//  A message with no fields (READY ack, heartbeat, DISCONNECT) to a
//  client ('C') or worker ('W'), in either framing.
static void
s_send_control (pigato_broker_t *self, const pigato__bytes_t *to, char role,
                int type, int framing)
{
    if (framing == FRAMING_MDP) {
        //  RFC 18: READY is not acknowledged
        int command = type == PIGATO__HEARTBEAT ? PIGATO__MDPW_HEARTBEAT
                    : type == PIGATO__DISCONNECT ? PIGATO__MDPW_DISCONNECT : 0;
        pigato__bytes_t frames [2];
        if (role == 'W' && command
        &&  pigato__mdp_encode_worker_control (frames, 2, command) == 2)
            s_send_frames (self, to, frames, 2, NULL, 0);
        return;
    }
    bool native = framing == FRAMING_NATIVE;
    if (native) {
        pigato__msg_t entry = { .role = role, .type = type };
        if (pigato__outbox_add (self->outbox, to, role, &entry, NULL) == 0)
            return;
    }
    char type_text [2] = { (char) ('0' + type), 0 };
    char role_text [2] = { role, 0 };
    pigato__bytes_t frames [] = { BYTES (role_text), BYTES (type_text) };
    s_send_frames (self, to, frames, 2, NULL, 0);
}

//  A partial or final reply to a client, in the framing of its request.
static void
s_send_reply (pigato_broker_t *self, bool native, const pigato__bytes_t *client,
              int type, const pigato__bytes_t *rid, int status,
              const pigato__bytes_t *data, const pigato__bytes_t *opts,
              zmq_msg_t *body_part)
{
    pigato__bytes_t none = { NULL, 0 };
    if (native) {
        pigato__msg_t entry = { .role = 'C', .type = type, .rid = *rid,
                                .status = status, .data = data ? *data : none,
                                .opts = opts ? *opts : none };
        if (pigato__outbox_add (self->outbox, client, 'C', &entry, body_part)
            == 0)
            return;
    }
    char type_text [2] = { (char) ('0' + type), 0 };
    pigato__bytes_t frames [] = {
        BYTES ("C"), BYTES (type_text), none, *rid,
        BYTES (status ? "-1" : "0"), data ? *data : none,
        opts && opts->size ? *opts : BYTES ("{}") };
    s_send_frames (self, client, frames, 7, body_part, 5);
}

//  The body frames of a request: an MDP client's packed frames, else its
//  one body. Returns how many (at most max).
static size_t
s_request_frames (pigato__request_t *request, pigato__bytes_t *frames,
                  size_t max)
{
    pigato__bytes_t body = pigato__request_body (request);
    if (!request->mdp_client) {
        frames [0] = body;
        return 1;
    }
    size_t count = 0;
    const byte *at = body.data, *end = body.data + body.size;
    while (end - at >= 4 && count < max) {
        size_t size = ((size_t) at [0] << 24) | ((size_t) at [1] << 16)
                    | ((size_t) at [2] << 8) | at [3];
        at += 4;
        if (size > (size_t) (end - at))
            break;
        frames [count].data = at;
        frames [count++].size = size;
        at += size;
    }
    return count;
}

//  A partial or final reply to an MDP client: MDPC02, command, the
//  service it asked for, body frames.
static void
s_send_mdp_reply (pigato_broker_t *self, pigato__request_t *request, int type,
                  const pigato__bytes_t *body, size_t body_count)
{
    pigato__bytes_t client = pigato__request_client (request);
    pigato__bytes_t service = BYTES (request->service->name);
    pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
    size_t count = pigato__mdp_encode_client_reply (
        frames, PIGATO__MDP_ENCODE_MAX,
        type == PIGATO__PARTIAL ? PIGATO__MDPC_PARTIAL : PIGATO__MDPC_FINAL,
        &service, body, body_count);
    if (count)
        s_send_frames (self, &client, frames, count, NULL, 0);
}

static void
s_send_request (pigato_broker_t *self, pigato__worker_t *worker,
                pigato__request_t *request)
{
    pigato__bytes_t to = pigato__worker_routing_id (worker);
    pigato__bytes_t client = pigato__request_client (request);
    pigato__bytes_t rid = pigato__request_rid (request);
    pigato__bytes_t body_frames [PIGATO__MDP_BODY_MAX];
    size_t body_count = s_request_frames (request, body_frames,
                                          PIGATO__MDP_BODY_MAX);
    if (worker->mdp) {
        pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
        size_t count = pigato__mdp_encode_worker_request (
            frames, PIGATO__MDP_ENCODE_MAX, &client, body_frames, body_count);
        if (count)
            s_send_frames (self, &to, frames, count, NULL, 0);
        return;
    }
    //  One MDP body frame is one pigato data frame
    pigato__bytes_t body = body_count ? body_frames [0]
                                      : (pigato__bytes_t) { NULL, 0 };
    pigato__bytes_t service = BYTES (request->service->name);
    pigato__bytes_t opts = { request->opts, request->opts_size };
    if (worker->native) {
        pigato__msg_t entry = { .role = 'W', .type = PIGATO__REQUEST,
                                .client = client, .service = service,
                                .rid = rid, .data = body, .opts = opts };
        if (pigato__outbox_add (self->outbox, &to, 'W', &entry,
                                &request->body_part) == 0)
            return;
    }
    pigato__bytes_t frames [] = {
        BYTES ("W"), BYTES ("2"), client, service, { NULL, 0 }, rid, body,
        opts.size ? opts : BYTES ("{}") };
    s_send_frames (self, &to, frames, 8, &request->body_part, 6);
}

//  --------------------------------------------------------------------------
//  Request lifecycle

//  Removes a request from every structure and frees it. Its service is
//  released if that left it empty.
static void
s_request_finish (pigato_broker_t *self, pigato__request_t *request)
{
    pigato__service_t *service = request->service;
    pigato__heap_remove (self->timers, &request->expiry);
    pigato__conns_unfile (self->conns, &request->conn_link);
    if (request->worker && request->worker->mdp && !request->answered) {
        //  An MDP worker cannot be told to stop: it stays busy until its
        //  FINAL for this request comes (and is dropped)
        request->worker->mdp_stale = true;
        request->worker->concurrency = 0;
    }
    if (request->worker)
        pigato__worker_release (request->worker, request);
    else
        pigato__service_dequeue (service, request);
    zhashx_delete (self->requests, &request->key);
    pigato__request_destroy (&request);
    service->requests--;
    pigato__services_release (self->services, &service);
}

//  Sends a final error reply (status -1, data a JSON string) to a client.
static void
s_send_error (pigato_broker_t *self, bool native,
              const pigato__bytes_t *client, const pigato__bytes_t *rid,
              const char *text)
{
    char *json = pigato__json_string (text);
    pigato__bytes_t data = { (const byte *) json, json ? strlen (json) : 0 };
    s_send_reply (self, native, client, PIGATO__REPLY, rid, -1, &data, NULL,
                  NULL);
    free (json);
    self->counters.failed++;
    char rid_text [80];
    pigato__log (PIGATO_LOG_DEBUG, "event=request_failed rid=%s code=%.*s",
                 pigato__printable (rid->data, rid->size, rid_text,
                                    sizeof rid_text),
                 (int) strcspn (text, " "), text);
}

//  Fails a request with a final error reply and finishes it. text starts
//  with an E_ code, then a sentence for people.
static void
s_request_fail (pigato_broker_t *self, pigato__request_t *request,
                const char *text)
{
    pigato__bytes_t client = pigato__request_client (request);
    pigato__bytes_t rid = pigato__request_rid (request);
    if (request->mdp_client) {
        //  MDP has no status: the error text is the FINAL's body
        char *json = pigato__json_string (text);
        pigato__bytes_t body = { (const byte *) json, json ? strlen (json) : 0 };
        s_send_mdp_reply (self, request, PIGATO__REPLY, &body, 1);
        free (json);
        self->counters.failed++;
    }
    else
        s_send_error (self, request->native, &client, &rid, text);
    s_request_finish (self, request);
}

static void
s_request_touch (pigato_broker_t *self, pigato__request_t *request)
{
    if (request->timeout >= 0)
        pigato__heap_set (self->timers, &request->expiry,
                          pigato__now_ms () + request->timeout);
}

#define TARGETS_MAX 16           //  versions tried per request, best first

static pigato__worker_t *s_worker_of (pigato_broker_t *self,
                                      const pigato__bytes_t *routing_id);

//  A request that names a worker (opts workerId): sent if that worker
//  serves the name and has room, failed if it does not exist or serves
//  something else, else left waiting. True if it left the queue.
static bool
s_dispatch_targeted (pigato_broker_t *self, pigato__service_t *service,
                     pigato__request_t *request)
{
    pigato__bytes_t id = { request->target, request->target_size };
    pigato__worker_t *worker = s_worker_of (self, &id);
    if (!worker || !worker->service
    ||  !pigato__service_matches (worker->service, service)) {
        char text [PIGATO_SERVICE_MAX + 600], printable [4 * 64 + 4];
        snprintf (text, sizeof text, "E_WORKER_NOT_FOUND no worker %s serves %s",
                  pigato__printable (request->target, request->target_size,
                                     printable, sizeof printable),
                  service->name);
        s_request_fail (self, request, text);
        return true;
    }
    if (!pigato__worker_has_room (worker)
    ||  pigato__request_rejected_by (request, worker->serial))
        return false;
    pigato__service_dequeue (service, request);
    pigato__worker_take (worker, request);
    s_send_request (self, worker, request);
    return true;
}

//  True if the targets have workers and every one rejected the request.
static bool
s_all_rejected (pigato__service_t **targets, size_t count,
                const pigato__request_t *request)
{
    if (request->rejected_count == 0)
        return false;
    for (size_t index = 0; index < count; index++)
        if (!pigato__service_all_rejected (targets [index], request))
            return false;
    return true;
}

//  Hands queued requests of a service (the name clients asked for) to
//  workers with room, oldest first. The workers are those of the service
//  itself, else of the satisfying versions (highest first), else of the
//  longest wildcard (pigato__services_resolve). A request every worker
//  rejected fails; one that only rejecting workers could take now waits
//  and lets younger requests pass. The service is released on return
//  (freed if nothing holds it any more).
static void
s_dispatch (pigato_broker_t *self, pigato__service_t *service)
{
    pigato__service_t *targets [TARGETS_MAX];
    size_t count = service->queue_head
                 ? pigato__services_resolve (self->services, service, targets,
                                             TARGETS_MAX)
                 : 0;
    service->pins++;                    //  failing requests must not free it
    pigato__request_t *request = count || service->targeted
                               ? service->queue_head : NULL;
    while (request) {
        pigato__request_t *next = request->next;
        if (request->target)
            s_dispatch_targeted (self, service, request);
        else
        if (count == 0)
            ;                           //  waits for a worker to appear
        else
        if (s_all_rejected (targets, count, request)) {
            char text [PIGATO_SERVICE_MAX + 64];
            snprintf (text, sizeof text, "E_REJECTED every worker of %s "
                      "rejected the request", service->name);
            s_request_fail (self, request, text);   //  may free service
        }
        else {
            pigato__worker_t *worker = NULL;
            for (size_t index = 0; index < count && !worker; index++)
                worker = pigato__service_pick (targets [index], request,
                                               self->dmode);
            if (worker) {
                pigato__service_dequeue (service, request);
                pigato__worker_take (worker, request);
                s_send_request (self, worker, request);
            }
            else {
                bool room = false;
                for (size_t index = 0; index < count && !room; index++)
                    for (pigato__worker_t *any = targets [index]->workers;
                         any && !room; any = any->next)
                        room = pigato__worker_has_room (any);
                if (!room && !service->targeted)
                    break;
            }
        }
        request = next;
    }
    service->pins--;
    pigato__services_release (self->services, &service);
}

//  A service's workers have room (a reply, a new worker, a departure that
//  requeued requests): its own queue first, then, for a wildcard or a
//  version, every queue that may resolve to it.
static void
s_dispatch_room (pigato_broker_t *self, pigato__service_t *service)
{
    bool others = pigato__service_serves_others (service);
    s_dispatch (self, service);
    if (!others)
        return;
    pigato__service_t *next;
    for (pigato__service_t *pending = pigato__services_pending (self->services);
         pending; pending = next) {
        next = pending->pending_next;
        s_dispatch (self, pending);
    }
}

//  --------------------------------------------------------------------------
//  Workers

static void
s_worker_remove (pigato_broker_t *self, pigato__worker_t *worker,
                 const char *reason, bool send_disconnect)
{
    if (send_disconnect) {
        pigato__bytes_t to = pigato__worker_routing_id (worker);
        s_send_control (self, &to, 'W', PIGATO__DISCONNECT,
                        WORKER_FRAMING (worker));
    }
    pigato__service_t *service = worker->service;
    int requeued = 0, failed = 0;
    while (worker->requests) {
        pigato__request_t *request = worker->requests;
        if (request->retries_left > 0) {
            request->retries_left--;
            pigato__worker_release (worker, request);
            pigato__service_enqueue (request->service, request, true);
            self->counters.retries++;
            requeued++;
        }
        else {
            s_request_fail (self, request,
                            "E_WORKER_LOST the worker handling the request "
                            "went away");
            failed++;
        }
    }
    char service_text [SERVICE_TEXT];
    pigato__log (PIGATO_LOG_INFO, "event=worker_gone worker=%s service=%s "
                 "reason=%s requeued=%d failed=%d", worker->name,
                 s_service_text (service, service_text), reason, requeued,
                 failed);
    self->counters.workers_gone++;
    if (service)
        pigato__service_remove_worker (service, worker);
    pigato__conns_unfile (self->conns, &worker->conn_link);
    zhashx_delete (self->workers, &worker->key);
    if (service)
        s_dispatch_room (self, service);    //  releases it
}

static void
s_worker_ready (pigato_broker_t *self, s_in_t *in, const pigato__peer_t *peer,
                pigato__worker_t *worker)
{
    bool native = in->m.native || in->m.native_offer;
    int framing = in->mdp ? FRAMING_MDP : native ? FRAMING_NATIVE
                                                 : FRAMING_046;
    if (worker) {
        //  READY twice: harmless for the same service, a protocol error
        //  for another one (one worker, one service), and for MDP (RFC 18)
        if (!in->mdp && !worker->mdp
        &&  in->m.service.size == strlen (worker->service->name)
        &&  memcmp (in->m.service.data, worker->service->name,
                    in->m.service.size) == 0) {
            worker->native = worker->native || native;
            s_send_control (self, &in->m.sender, 'W', PIGATO__READY,
                            worker->native);
            return;
        }
        s_bad (self, in, "ready_twice");
        s_worker_remove (self, worker, "ready_other_service", true);
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    size_t size = in->m.service.size;
    memcpy (name, in->m.service.data, size);
    name [size] = 0;
    if (memchr (in->m.service.data, 0, size)
    ||  strncmp (name, "mmi.", 4) == 0 || name [0] == '$') {
        s_bad (self, in, "reserved_service");
        s_send_control (self, &in->m.sender, 'W', PIGATO__DISCONNECT, framing);
        return;
    }
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_SERVE,
                               name)) {
        s_denied (self, in, peer, PIGATO__VERB_SERVE, name, "not_allowed");
        s_send_control (self, &in->m.sender, 'W', PIGATO__DISCONNECT, framing);
        return;
    }
    pigato__service_t *service =
        pigato__services_require (self->services, in->m.service.data, size);
    worker = (pigato__worker_t *) calloc (1, sizeof *worker);
    if (!service || !worker) {
        free (worker);
        pigato__services_release (self->services, &service);
        return;
    }
    pigato__bkey_set (&worker->key, in->m.sender.data, in->m.sender.size,
                      NULL, 0);
    worker->native = native;
    pigato__printable (in->m.sender.data, in->m.sender.size, worker->name,
                       sizeof worker->name);
    worker->conn = in->m.conn;
    pigato__conn_link_init (&worker->conn_link);
    pigato__conns_file (self->conns, &worker->conn, PIGATO__CONN_WORKERS,
                        &worker->conn_link);
    snprintf (worker->identity, sizeof worker->identity, "%s", peer->name);
    snprintf (worker->curve_key, sizeof worker->curve_key, "%s",
              peer->key ? peer->key : "");
    worker->serial = ++self->next_serial;
    worker->mdp = in->mdp;
    worker->concurrency = in->mdp ? 1 : PIGATO_CONCURRENCY;
    worker->expires = pigato__now_ms ()
                    + (int64_t) self->heartbeat_ms * self->liveness;
    zhashx_insert (self->workers, &worker->key, worker);
    pigato__service_add_worker (service, worker);
    s_send_control (self, &in->m.sender, 'W', PIGATO__READY, framing);
    char service_text [SERVICE_TEXT];
    pigato__log (PIGATO_LOG_INFO, "event=worker_ready service=%s worker=%s "
                 "framing=%s", s_service_text (service, service_text),
                 worker->name, in->mdp ? "mdp/0.2" : native ? "native"
                                                            : "0.0.46");
    s_dispatch_room (self, service);
}

static void
s_worker_heartbeat (pigato_broker_t *self, s_in_t *in,
                    pigato__worker_t *worker)
{
    s_send_control (self, &in->m.sender, 'W', PIGATO__HEARTBEAT,
                    worker->native);
    if (!in->m.has_opts)
        return;
    json_error_t error;
    json_t *opts = json_loadb ((const char *) in->m.opts.data,
                               in->m.opts.size, 0, &error);
    json_t *concurrency = json_object_get (opts, "concurrency");
    if (!opts || !json_is_object (opts))
        s_bad (self, in, "json");
    else
    if (json_is_number (concurrency)) {
        double value = json_number_value (concurrency);
        int previous = worker->concurrency;
        worker->concurrency = value < 0 ? -1
                            : value > 1e6 ? 1000000 : (int) value;
        pigato__worker_update (worker);
        if (worker->concurrency != previous)
            s_dispatch_room (self, worker->service);
    }
    json_decref (opts);
}

//  Replies, partial replies and rejects: accepted only for a rid that was
//  dispatched to this very worker.
static void
s_worker_reply (pigato_broker_t *self, s_in_t *in, pigato__worker_t *worker)
{
    pigato__bkey_t key;
    pigato__request_t *request = NULL;
    if (pigato__bkey_set (&key, in->m.client.data, in->m.client.size,
                          in->m.rid.data, in->m.rid.size) == 0)
        request = (pigato__request_t *) zhashx_lookup (self->requests, &key);
    if (!request || request->worker != worker) {
        //  Late (expired, client gone) or foreign: drop, keep the worker
        self->counters.late_replies++;
        char rid [80];
        pigato__log (PIGATO_LOG_DEBUG, "event=reply_dropped worker=%s rid=%s "
                     "reason=unknown_rid", worker->name,
                     pigato__printable (in->m.rid.data, in->m.rid.size, rid,
                                        sizeof rid));
        return;
    }
    if (in->m.type == PIGATO__REJECT) {
        //  Back to the head of its queue; dispatch skips workers that
        //  rejected it and fails it once every worker has
        self->counters.rejects++;
        pigato__service_t *service = request->service;
        pigato__worker_release (worker, request);
        pigato__service_enqueue (service, request, true);
        if (pigato__request_add_reject (request, worker->serial))
            s_request_fail (self, request, "E_NOMEM broker out of memory");
        s_dispatch (self, service);
        if (worker->service != service)
            s_dispatch_room (self, worker->service);
        return;
    }
    if (in->m.type == PIGATO__REPLY && in->m.status == 0
    &&  !request->mdp_client) {
        int64_t ttl = pigato__cache_ttl (&in->m.opts);
        pigato__bytes_t body = pigato__request_body (request);
        if (ttl > 0)
            pigato__cache_put (self->cache, request->service->name, &body,
                               &in->m.data, &in->m.opts,
                               pigato__now_ms () + ttl);
    }
    if (request->mdp_client)
        s_send_mdp_reply (self, request, in->m.type, &in->m.data, 1);
    else
        s_send_reply (self, request->native, &in->m.client, in->m.type,
                      &in->m.rid, in->m.status, &in->m.data, &in->m.opts,
                      in->body_part);
    if (in->m.type == PIGATO__PARTIAL) {
        self->counters.partials++;
        s_request_touch (self, request);
    }
    else {
        self->counters.replies++;
        s_request_finish (self, request);
        s_dispatch_room (self, worker->service);
    }
}

//  The worker registered under a routing id, or NULL.
static pigato__worker_t *
s_worker_of (pigato_broker_t *self, const pigato__bytes_t *routing_id)
{
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, routing_id->data, routing_id->size, NULL, 0))
        return NULL;
    return (pigato__worker_t *) zhashx_lookup (self->workers, &key);
}

//  True if a message from this worker's routing id carries the identity
//  that registered it. Routing ids are chosen by peers: a different
//  identity means another peer took the id over.
static bool
s_worker_bound (const pigato__worker_t *worker, const pigato__peer_t *peer,
                const pigato__conn_t *conn)
{
    return streq (worker->identity, peer->name)
        && streq (worker->curve_key, peer->key ? peer->key : "")
        && pigato__conn_same (&worker->conn, conn);
}

static void
s_on_worker (pigato_broker_t *self, s_in_t *in, const pigato__peer_t *peer)
{
    pigato__worker_t *worker = s_worker_of (self, &in->m.sender);
    if (worker && !s_worker_bound (worker, peer, &in->m.conn)) {
        s_bad (self, in, "identity_mismatch");
        s_worker_remove (self, worker, "identity_mismatch", true);
        return;
    }
    if (worker && !pigato__guard_allows (self->guard, peer->name,
                                         PIGATO__VERB_SERVE,
                                         worker->service->name)) {
        s_denied (self, in, peer, PIGATO__VERB_SERVE, worker->service->name,
                  "not_allowed");
        s_worker_remove (self, worker, "access_denied", true);
        return;
    }
    if (worker) {
        worker->expires = pigato__now_ms ()
                        + (int64_t) self->heartbeat_ms * self->liveness;
        if (in->m.native)
            worker->native = true;
    }
    if (in->m.type == PIGATO__READY) {
        s_worker_ready (self, in, peer, worker);
        return;
    }
    if (!worker) {
        //  Not registered (never, or expired): tell it to start over
        if (in->m.type != PIGATO__DISCONNECT) {
            s_bad (self, in, "not_ready");
            s_send_control (self, &in->m.sender, 'W', PIGATO__DISCONNECT,
                            in->m.native);
        }
        return;
    }
    switch (in->m.type) {
        case PIGATO__HEARTBEAT:
            s_worker_heartbeat (self, in, worker);
            break;
        case PIGATO__REPLY:
        case PIGATO__PARTIAL:
        case PIGATO__REJECT:
            s_worker_reply (self, in, worker);
            break;
        case PIGATO__DISCONNECT:
            s_worker_remove (self, worker, "disconnect", false);
            break;
    }
}

//  --------------------------------------------------------------------------
//  Clients

//  The text a request body names: the content of a JSON string, else the
//  bytes themselves (MDP peers send plain text). Empty, "null" and "\"\""
//  name nothing.
static bool
s_body_name (const pigato__bytes_t *data, char *name, size_t name_size)
{
    name [0] = 0;
    if (data->size == 0 || (data->size == 4 && memcmp (data->data, "null", 4) == 0))
        return false;
    char *text = pigato__json_string_decode (data->data, data->size);
    const char *source = text ? text : NULL;
    size_t size = text ? strlen (text) : data->size;
    if (size >= name_size || (!text && memchr (data->data, 0, data->size))) {
        free (text);
        return false;
    }
    memcpy (name, source ? source : (const char *) data->data, size);
    name [size] = 0;
    free (text);
    return size > 0;
}

//  $dir: the worker ids of one service (the body names it), or of every
//  service, as JSON. Ids are routing ids as text (escaped if binary).
static char *
s_directory (pigato_broker_t *self, const char *only)
{
    json_t *map = json_object ();
    for (pigato__service_t *service = pigato__services_first (self->services);
         service; service = pigato__services_next (self->services)) {
        if (!service->workers || (only && !streq (only, service->name)))
            continue;
        json_t *ids = json_array ();
        for (pigato__worker_t *worker = service->workers; worker;
             worker = worker->next)
            json_array_append_new (ids, json_string (worker->name));
        json_object_set_new (map, service->name, ids);
    }
    char *text;
    if (only) {
        json_t *ids = json_object_get (map, only);
        text = ids ? json_dumps (ids, JSON_COMPACT | JSON_ENCODE_ANY)
                   : strdup ("[]");
    }
    else
        text = json_dumps (map, JSON_COMPACT);
    json_decref (map);
    return text;
}

//  Requests the broker answers itself: $dir, and MMI (RFC 8):
//  mmi.service -> 200 if the named service has a worker, 404 if not;
//  other mmi.* -> 501. Other $ names are reserved.
static void
s_internal_service (pigato_broker_t *self, s_in_t *in, const char *name)
{
    pigato__msg_t *m = &in->m;
    char target [PIGATO_SERVICE_MAX + 1];
    bool named = s_body_name (&m->data, target, sizeof target);
    char *answer = NULL;
    if (streq (name, "$dir"))
        answer = s_directory (self, named ? target : NULL);
    else
    if (streq (name, "mmi.service")) {
        bool found = false;
        pigato__service_t *service = named
            ? pigato__services_lookup (self->services, target, strlen (target))
            : NULL;
        if (!service && named) {
            //  Resolution (wildcards, versions) needs a record to read
            service = pigato__services_require (self->services, target,
                                                strlen (target));
            if (service) {
                pigato__service_t *targets [1];
                found = pigato__services_resolve (self->services, service,
                                                  targets, 1) > 0;
                pigato__services_release (self->services, &service);
            }
        }
        else
        if (service) {
            pigato__service_t *targets [1];
            found = pigato__services_resolve (self->services, service,
                                              targets, 1) > 0;
        }
        answer = strdup (found ? "200" : "404");
    }
    else
    if (strncmp (name, "mmi.", 4) == 0)
        answer = strdup ("501");
    else {
        char text [PIGATO_SERVICE_MAX + 64];
        snprintf (text, sizeof text, "E_RESERVED_SERVICE %s is reserved for "
                  "the broker", name);
        s_send_error (self, m->native, &m->sender, &m->rid, text);
        return;
    }
    pigato__bytes_t data = { (const byte *) answer, answer ? strlen (answer) : 0 };
    s_send_reply (self, m->native, &m->sender, PIGATO__REPLY, &m->rid, 0,
                  &data, NULL, NULL);
    free (answer);
    self->counters.requests++;
    self->counters.replies++;
}

static void
s_client_request (pigato_broker_t *self, s_in_t *in, const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, m->sender.data, m->sender.size, m->rid.data,
                          m->rid.size)) {
        s_bad (self, in, "field");
        return;
    }
    if (zhashx_lookup (self->requests, &key)) {
        s_bad (self, in, "duplicate_rid");
        return;
    }
    if (zhashx_size (self->requests) >= MAX_PENDING) {
        s_send_error (self, m->native, &m->sender, &m->rid,
                      "E_OVERLOADED the broker holds too many requests; "
                      "try again later");
        return;
    }
    if (memchr (m->service.data, 0, m->service.size)) {
        s_bad (self, in, "field");
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    memcpy (name, m->service.data, m->service.size);
    name [m->service.size] = 0;
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_CALL,
                               name)) {
        s_denied (self, in, peer, PIGATO__VERB_CALL, name, "not_allowed");
        char text [PIGATO_SERVICE_MAX + 32];
        snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
        s_send_error (self, m->native, &m->sender, &m->rid, text);
        return;
    }
    if (name [0] == '$' || strncmp (name, "mmi.", 4) == 0) {
        s_internal_service (self, in, name);
        return;
    }
    //  The ACL allowed this caller: a cached reply may answer it (not a
    //  request that names its worker)
    pigato__cached_t cached;
    if (!(m->has_opts && memmem (m->opts.data, m->opts.size, "workerId", 8))
    &&  pigato__cache_get (self->cache, name, &m->data, pigato__now_ms (),
                           &cached)) {
        s_send_reply (self, m->native, &m->sender, PIGATO__REPLY, &m->rid, 0,
                      &cached.data, &cached.opts, NULL);
        self->counters.requests++;
        self->counters.replies++;
        return;
    }
    pigato__service_t *service = pigato__services_require (
        self->services, m->service.data, m->service.size);
    if (!service)
        return;
    pigato__request_t *request = pigato__request_new (
        &m->sender, &m->rid, in->body_part, &m->data,
        m->has_opts ? &m->opts : NULL);
    if (!request) {
        pigato__services_release (self->services, &service);
        return;
    }
    request->native = m->native;
    if (pigato__request_parse_opts (request, PIGATO_TIMEOUT_MS)) {
        //  Opts we cannot read could hold a timeout or a target we would
        //  ignore: refuse the request rather than guess
        s_bad (self, in, "json");
        s_send_error (self, m->native, &m->sender, &m->rid,
                      "E_INVALID_OPTS request opts must be a JSON object");
        pigato__request_destroy (&request);
        pigato__services_release (self->services, &service);
        return;
    }
    request->service = service;
    if (request->target) {
        pigato__bytes_t id = { request->target, request->target_size };
        if (!s_worker_of (self, &id)) {
            char text [PIGATO_SERVICE_MAX + 600], printable [4 * 64 + 4];
            snprintf (text, sizeof text, "E_WORKER_NOT_FOUND no worker %s "
                      "serves %s", pigato__printable (id.data, id.size,
                                                      printable,
                                                      sizeof printable),
                      service->name);
            s_send_error (self, m->native, &m->sender, &m->rid, text);
            pigato__request_destroy (&request);
            pigato__services_release (self->services, &service);
            return;
        }
    }
    request->conn = m->conn;
    pigato__conns_file (self->conns, &request->conn, PIGATO__CONN_REQUESTS,
                        &request->conn_link);
    s_copy_text (request->identity, sizeof request->identity, peer->name);
    s_copy_text (request->curve_key, sizeof request->curve_key, peer->key);
    zhashx_insert (self->requests, &request->key, request);
    service->requests++;
    pigato__service_enqueue (service, request, false);
    s_request_touch (self, request);
    self->counters.requests++;
    s_dispatch (self, service);
}

static void
s_on_client (pigato_broker_t *self, s_in_t *in, const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    if (m->type == PIGATO__REQUEST)
        s_client_request (self, in, peer);
    else
    if (m->type == PIGATO__HEARTBEAT && !m->request_heartbeat)
        s_send_control (self, &m->sender, 'C', PIGATO__HEARTBEAT,
                        m->native || m->native_offer);
    else
    if (m->type == PIGATO__HEARTBEAT) {
        //  Forward to the worker holding the request, if any; the key
        //  includes the sender, so a client can only heartbeat its own
        pigato__bkey_t key;
        if (pigato__bkey_set (&key, m->sender.data, m->sender.size,
                              m->rid.data, m->rid.size))
            return;
        pigato__request_t *request =
            (pigato__request_t *) zhashx_lookup (self->requests, &key);
        if (request && (!streq (request->identity, peer->name)
                        || !pigato__conn_same (&request->conn, &m->conn))) {
            s_bad (self, in, "identity_mismatch");
            return;
        }
        if (request && !pigato__guard_allows (self->guard, peer->name,
                                              PIGATO__VERB_CALL,
                                              request->service->name)) {
            s_denied (self, in, peer, PIGATO__VERB_CALL,
                      request->service->name, "not_allowed");
            return;
        }
        if (request && request->worker) {
            pigato__bytes_t to = pigato__worker_routing_id (request->worker);
            if (request->worker->native) {
                pigato__msg_t entry = { .role = 'W',
                                        .type = PIGATO__HEARTBEAT,
                                        .client = m->sender, .rid = m->rid,
                                        .request_heartbeat = true };
                if (pigato__outbox_add (self->outbox, &to, 'W', &entry, NULL)
                    == 0)
                    return;
            }
            pigato__bytes_t frames [] = { BYTES ("W"), BYTES ("4"),
                                          m->sender, { NULL, 0 }, m->rid };
            s_send_frames (self, &to, frames, 5, NULL, 0);
        }
    }
}

//  Routes one decoded message (or batch entry) from a peer whose identity
//  check came out `current`.
static void
s_route_one (pigato_broker_t *self, s_in_t *in, bool current,
             const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    if (!current) {
        //  Not (or no longer) in the policy: refused on this very message
        char name [PIGATO_SERVICE_MAX + 1] = "";
        if (m->service.size && !memchr (m->service.data, 0, m->service.size)) {
            memcpy (name, m->service.data, m->service.size);
            name [m->service.size] = 0;
        }
        s_denied (self, in, peer,
                  m->role == 'W' ? PIGATO__VERB_SERVE : PIGATO__VERB_CALL,
                  name [0] ? name : NULL, "identity_revoked");
        if (m->role == 'C' && m->type == PIGATO__REQUEST) {
            char text [PIGATO_SERVICE_MAX + 32];
            snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
            s_send_error (self, m->native, &m->sender, &m->rid, text);
        }
        else
        if (m->role == 'W') {
            bool disconnect = m->type != PIGATO__DISCONNECT;
            pigato__worker_t *worker = s_worker_of (self, &m->sender);
            if (worker)
                s_worker_remove (self, worker, "identity_revoked", disconnect);
            else
            if (disconnect)
                s_send_control (self, &m->sender, 'W', PIGATO__DISCONNECT,
                                m->native || m->native_offer);
        }
        return;
    }
    if (m->role == 'C')
        s_on_client (self, in, peer);
    else
        s_on_worker (self, in, peer);
}

//  A native batch: checked whole first (a malformed entry anywhere drops
//  the message), then routed entry by entry.
static void
s_route_native (pigato_broker_t *self, s_in_t *in, bool current,
                const pigato__peer_t *peer)
{
    pigato__input_t *input = &self->input;
    zmq_msg_t *batch = &input->parts [1];
    pigato__native_reader_t reader;
    int rc = pigato__native_reader_init (&reader, zmq_msg_data (batch),
                                         zmq_msg_size (batch), true);
    if (rc) {
        s_bad (self, in, pigato__decode_reason (rc));
        return;
    }
    size_t externals = 0;
    bool external;
    while ((rc = pigato__native_next (&reader, &in->m, &external)) == 1)
        if (external)
            externals++;
    if (rc < 0 || externals != input->count - 2) {
        s_bad (self, in, rc < 0 ? pigato__decode_reason (reader.error)
                                : "frames");
        return;
    }
    pigato__native_reader_init (&reader, zmq_msg_data (batch),
                                zmq_msg_size (batch), true);
    size_t next_part = 2;
    while (pigato__native_next (&reader, &in->m, &external) == 1) {
        in->m.native = true;
        in->body_part = batch;
        if (external) {
            in->body_part = &input->parts [next_part++];
            in->m.data.data = (const byte *) zmq_msg_data (in->body_part);
            in->m.data.size = zmq_msg_size (in->body_part);
        }
        s_route_one (self, in, current, peer);
    }
}

//  --------------------------------------------------------------------------
//  MDP/0.2 peers (RFC 18), decoded by mdp.c

//  An MDP client's REQUEST: MMI and $dir are answered here; the rest joins
//  the service's queue with a broker-made rid (MDP has none) and the body
//  frames packed into one part.
static void
s_mdp_client_request (pigato_broker_t *self, s_in_t *in,
                      const pigato__peer_t *peer,
                      const pigato__mdp_msg_t *mdp,
                      const pigato__bytes_t *parts)
{
    char name [PIGATO_SERVICE_MAX + 1];
    memcpy (name, mdp->service.data, mdp->service.size);
    name [mdp->service.size] = 0;
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_CALL,
                               name)) {
        s_denied (self, in, peer, PIGATO__VERB_CALL, name, "not_allowed");
        return;                         //  RFC 18 has no error reply
    }
    const pigato__bytes_t *body = parts + mdp->body_first;
    if (pigato__mmi_is (&mdp->service) || name [0] == '$') {
        const char *code = PIGATO__MMI_NOT_IMPLEMENTED;
        char *answer = NULL;
        pigato__bytes_t asked;
        if (streq (name, PIGATO__MMI_SERVICE)) {
            code = PIGATO__MMI_NOT_FOUND;
            if (mdp->body_count
            &&  pigato__mmi_service_name (&body [0], &asked)) {
                pigato__service_t *service = pigato__services_require (
                    self->services, asked.data, asked.size);
                pigato__service_t *targets [1];
                if (service && pigato__services_resolve (self->services,
                                                         service, targets, 1))
                    code = PIGATO__MMI_FOUND;
                pigato__services_release (self->services, &service);
            }
        }
        else
        if (streq (name, "$dir")) {
            char only [PIGATO_SERVICE_MAX + 1];
            bool named = mdp->body_count
                      && s_body_name (&body [0], only, sizeof only);
            answer = s_directory (self, named ? only : NULL);
            code = answer;
        }
        pigato__bytes_t service = BYTES (name), reply = BYTES (code ? code : "");
        pigato__bytes_t frames [4];
        size_t count = pigato__mdp_encode_client_reply (
            frames, 4, PIGATO__MDPC_FINAL, &service, &reply, 1);
        if (count)
            s_send_frames (self, &mdp->sender, frames, count, NULL, 0);
        free (answer);
        return;
    }
    if (zhashx_size (self->requests) >= MAX_PENDING)
        return;
    //  Pack the body: [u32 size][bytes] per frame
    size_t packed_size = 0;
    for (size_t index = 0; index < mdp->body_count; index++)
        packed_size += 4 + body [index].size;
    zmq_msg_t packed;
    if (zmq_msg_init_size (&packed, packed_size))
        return;
    byte *at = (byte *) zmq_msg_data (&packed);
    for (size_t index = 0; index < mdp->body_count; index++) {
        size_t size = body [index].size;
        at [0] = (byte) (size >> 24);
        at [1] = (byte) (size >> 16);
        at [2] = (byte) (size >> 8);
        at [3] = (byte) size;
        if (size)
            memcpy (at + 4, body [index].data, size);
        at += 4 + size;
    }
    byte rid_bytes [9] = { 0 };             //  0, then a 64-bit counter
    uint64_t serial = ++self->next_mdp_rid;
    for (int index = 0; index < 8; index++)
        rid_bytes [8 - index] = (byte) (serial >> (8 * index));
    pigato__bytes_t rid = { rid_bytes, sizeof rid_bytes };
    pigato__bytes_t data = { (const byte *) zmq_msg_data (&packed),
                             packed_size };
    pigato__service_t *service = pigato__services_require (
        self->services, mdp->service.data, mdp->service.size);
    pigato__request_t *request = service
        ? pigato__request_new (&mdp->sender, &rid, &packed, &data, NULL)
        : NULL;
    zmq_msg_close (&packed);
    if (!request) {
        pigato__services_release (self->services, &service);
        return;
    }
    request->mdp_client = true;
    request->service = service;
    request->conn = in->m.conn;
    pigato__conns_file (self->conns, &request->conn, PIGATO__CONN_REQUESTS,
                        &request->conn_link);
    s_copy_text (request->identity, sizeof request->identity, peer->name);
    s_copy_text (request->curve_key, sizeof request->curve_key, peer->key);
    zhashx_insert (self->requests, &request->key, request);
    service->requests++;
    pigato__service_enqueue (service, request, false);
    s_request_touch (self, request);
    self->counters.requests++;
    s_dispatch (self, service);
}

//  An MDP worker's PARTIAL or FINAL: for the one request it holds, from
//  the client it names. A FINAL for a request that is gone (expired) frees
//  the worker quietly; anything else unexpected gets DISCONNECT (RFC 18).
static void
s_mdp_worker_reply (pigato_broker_t *self, s_in_t *in,
                    pigato__worker_t *worker, const pigato__mdp_msg_t *mdp,
                    const pigato__bytes_t *parts)
{
    pigato__request_t *request = worker->requests;
    if (!request) {
        if (worker->mdp_stale) {
            if (mdp->type == PIGATO__REPLY) {
                worker->mdp_stale = false;
                worker->concurrency = 1;
                pigato__worker_update (worker);
                s_dispatch_room (self, worker->service);
            }
            self->counters.late_replies++;
            return;
        }
        s_bad (self, in, "unexpected_reply");
        s_worker_remove (self, worker, "unexpected_reply", true);
        return;
    }
    pigato__bytes_t client = pigato__request_client (request);
    if (client.size != mdp->client.size
    ||  memcmp (client.data, mdp->client.data, client.size) != 0) {
        s_bad (self, in, "foreign_client");
        s_worker_remove (self, worker, "foreign_client", true);
        return;
    }
    const pigato__bytes_t *body = parts + mdp->body_first;
    if (request->mdp_client)
        s_send_mdp_reply (self, request, mdp->type, body, mdp->body_count);
    else {
        pigato__bytes_t rid = pigato__request_rid (request);
        pigato__bytes_t data = mdp->body_count ? body [0]
                                               : (pigato__bytes_t) { NULL, 0 };
        s_send_reply (self, request->native, &client, mdp->type, &rid, 0,
                      &data, NULL, NULL);
    }
    if (mdp->type == PIGATO__PARTIAL) {
        self->counters.partials++;
        s_request_touch (self, request);
    }
    else {
        self->counters.replies++;
        request->answered = true;
        s_request_finish (self, request);
        s_dispatch_room (self, worker->service);
    }
}

static void
s_route_mdp (pigato_broker_t *self, s_in_t *in, const pigato__bytes_t *parts,
             size_t count)
{
    pigato__mdp_msg_t mdp;
    int rc = pigato__mdp_decode (parts, count, &mdp);
    if (rc) {
        s_bad (self, in, pigato__decode_reason (rc));
        return;
    }
    in->mdp = true;
    in->m.role = mdp.role;
    in->m.type = mdp.type;
    in->m.service = mdp.service;
    pigato__peer_t peer;
    bool current = pigato__guard_peer (self->guard, in->meta, &peer);
    pigato__worker_t *worker = mdp.role == 'W'
                             ? s_worker_of (self, &in->m.sender) : NULL;
    if (current && worker && !s_worker_bound (worker, &peer, &in->m.conn)) {
        s_bad (self, in, "identity_mismatch");
        s_worker_remove (self, worker, "identity_mismatch", true);
        return;
    }
    if (!current) {
        char name [PIGATO_SERVICE_MAX + 1] = "";
        memcpy (name, mdp.service.data, mdp.service.size);
        name [mdp.service.size] = 0;
        s_denied (self, in, &peer, mdp.role == 'W' ? PIGATO__VERB_SERVE
                                                   : PIGATO__VERB_CALL,
                  name [0] ? name : NULL, "identity_revoked");
        if (worker)
            s_worker_remove (self, worker, "identity_revoked",
                             mdp.type != PIGATO__DISCONNECT);
        else
        if (mdp.role == 'W' && mdp.type != PIGATO__DISCONNECT)
            s_send_control (self, &in->m.sender, 'W', PIGATO__DISCONNECT,
                            FRAMING_MDP);
        return;
    }
    if (mdp.role == 'C') {
        s_mdp_client_request (self, in, &peer, &mdp, parts);
        return;
    }
    if (mdp.type == PIGATO__READY) {
        if (worker) {
            s_bad (self, in, "ready_twice");
            s_worker_remove (self, worker, "ready_twice", true);
        }
        else
        if (pigato__mmi_is (&mdp.service)) {
            s_bad (self, in, "reserved_service");
            s_send_control (self, &in->m.sender, 'W', PIGATO__DISCONNECT,
                            FRAMING_MDP);
        }
        else
            s_worker_ready (self, in, &peer, NULL);
        return;
    }
    if (!worker || !worker->mdp) {
        //  Not registered: DISCONNECT unless it is saying goodbye
        if (mdp.type != PIGATO__DISCONNECT) {
            s_bad (self, in, "not_ready");
            s_send_control (self, &in->m.sender, 'W', PIGATO__DISCONNECT,
                            FRAMING_MDP);
        }
        return;
    }
    if (!pigato__guard_allows (self->guard, peer.name, PIGATO__VERB_SERVE,
                               worker->service->name)) {
        s_denied (self, in, &peer, PIGATO__VERB_SERVE, worker->service->name,
                  "not_allowed");
        s_worker_remove (self, worker, "access_denied", true);
        return;
    }
    worker->expires = pigato__now_ms ()
                    + (int64_t) self->heartbeat_ms * self->liveness;
    if (mdp.type == PIGATO__DISCONNECT)
        s_worker_remove (self, worker, "disconnect", false);
    else
    if (mdp.type == PIGATO__REPLY || mdp.type == PIGATO__PARTIAL)
        s_mdp_worker_reply (self, in, worker, &mdp, parts);
}

void
pigato__route_input (pigato_broker_t *self, const pigato__conn_t *conn)
{
    pigato__input_t *input = &self->input;
    s_in_t in;
    memset (&in, 0, sizeof in);
    in.frames = input->total;
    if (input->count > 0) {
        in.m.sender.data = (const byte *) zmq_msg_data (&input->parts [0]);
        in.m.sender.size = zmq_msg_size (&input->parts [0]);
    }
    if (input->count > 1)
        in.meta = &input->parts [input->count - 1];
    if (input->total > input->count) {
        s_bad (self, &in, "frames");
        return;
    }
    if (input->count < 2) {
        s_bad (self, &in, "short");
        return;
    }
    pigato__peer_t peer;
    bool native = pigato__native_is (zmq_msg_data (&input->parts [1]),
                                     zmq_msg_size (&input->parts [1]));
    if (native) {
        in.m.conn = *conn;
        bool current = pigato__guard_peer (self->guard, in.meta, &peer);
        s_route_native (self, &in, current, &peer);
        return;
    }
    pigato__bytes_t parts [PIGATO__PARTS_MAX];
    for (size_t index = 0; index < input->count; index++) {
        parts [index].data = (const byte *) zmq_msg_data (&input->parts [index]);
        parts [index].size = zmq_msg_size (&input->parts [index]);
    }
    if (pigato__mdp_header (&parts [1])) {
        in.m.conn = *conn;
        s_route_mdp (self, &in, parts, input->count);
        return;
    }
    int rc = pigato__decode_046 (parts, input->count, &in.m);
    if (rc) {
        s_bad (self, &in, pigato__decode_reason (rc));
        return;
    }
    in.m.conn = *conn;
    if (in.m.data.size)
        for (size_t index = 2; index < input->count && !in.body_part; index++)
            if (parts [index].data == in.m.data.data)
                in.body_part = &input->parts [index];
    bool current = pigato__guard_peer (self->guard, in.meta, &peer);
    s_route_one (self, &in, current, &peer);
}

//  --------------------------------------------------------------------------
//  Connections: a worker whose connection closed is gone now (its requests
//  retry or fail at once); requests of a closed client connection are
//  dropped, so no reply can reach a later owner of its routing id.

void
pigato__route_connection_lost (pigato_broker_t *self,
                               const pigato__conn_t *dead)
{
    pigato__conn_link_t *link;
    while ((link = pigato__conns_filed (self->conns, dead->fd,
                                        PIGATO__CONN_WORKERS))) {
        pigato__worker_t *worker =
            pigato__container_of (link, pigato__worker_t, conn_link);
        if (pigato__conn_same (&worker->conn, dead))
            s_worker_remove (self, worker, "disconnected", false);
        else
            pigato__conns_unfile (self->conns, link);   //  stale filing
    }
    size_t dropped = 0;
    while ((link = pigato__conns_filed (self->conns, dead->fd,
                                        PIGATO__CONN_REQUESTS))) {
        pigato__request_t *request =
            pigato__container_of (link, pigato__request_t, conn_link);
        if (!pigato__conn_same (&request->conn, dead)) {
            pigato__conns_unfile (self->conns, link);
            continue;
        }
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        s_request_finish (self, request);
        if (service)
            s_dispatch_room (self, service);
        dropped++;
    }
    if (dropped)
        pigato__log (PIGATO_LOG_DEBUG, "event=client_gone requests_dropped=%zu",
                     dropped);
}

//  --------------------------------------------------------------------------
//  Policy reload (SIGHUP): swap the policy, then hold every live worker and
//  request to it. Workers that lost `serve` are disconnected; requests of
//  identities that left the policy are dropped; requests whose caller lost
//  `call` fail with E_ACCESS_DENIED.


void
pigato__route_reload (pigato_broker_t *self)
{
    char err [512];
    if (!pigato__guard_has_policy_file (self->guard)) {
        pigato__log (PIGATO_LOG_WARNING, "event=acl_reload_skipped "
                     "reason=no_acl_file");
        return;
    }
    if (pigato__guard_reload (self->guard, err, sizeof err)) {
        pigato__log (PIGATO_LOG_ERROR, "event=acl_reload_failed "
                     "policy=unchanged error=\"%s\"", err);
        return;
    }
    zlistx_t *workers = zlistx_new ();
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->workers);
         worker; worker = (pigato__worker_t *) zhashx_next (self->workers))
        if (!pigato__guard_current (self->guard, worker->identity,
                                    worker->curve_key [0] ? worker->curve_key
                                                          : NULL)
        ||  !pigato__guard_allows (self->guard, worker->identity,
                                   PIGATO__VERB_SERVE, worker->service->name))
            zlistx_add_end (workers, worker);
    size_t workers_removed = zlistx_size (workers);
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (workers);
         worker; worker = (pigato__worker_t *) zlistx_next (workers))
        s_worker_remove (self, worker, "acl_reload", true);
    zlistx_destroy (&workers);

    zlistx_t *dropped = zlistx_new ();
    zlistx_t *denied = zlistx_new ();
    for (pigato__request_t *request =
             (pigato__request_t *) zhashx_first (self->requests);
         request; request = (pigato__request_t *) zhashx_next (self->requests))
        if (!pigato__guard_current (self->guard, request->identity,
                                    request->curve_key [0] ? request->curve_key
                                                           : NULL))
            zlistx_add_end (dropped, request);
        else
        if (!pigato__guard_allows (self->guard, request->identity,
                                   PIGATO__VERB_CALL, request->service->name))
            zlistx_add_end (denied, request);
    size_t requests_dropped = zlistx_size (dropped);
    size_t requests_denied = zlistx_size (denied);
    for (pigato__request_t *request = (pigato__request_t *) zlistx_first (dropped);
         request; request = (pigato__request_t *) zlistx_next (dropped)) {
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        s_request_finish (self, request);
        if (service)
            s_dispatch_room (self, service);
    }
    for (pigato__request_t *request = (pigato__request_t *) zlistx_first (denied);
         request; request = (pigato__request_t *) zlistx_next (denied)) {
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        char text [PIGATO_SERVICE_MAX + 32];
        snprintf (text, sizeof text, "E_ACCESS_DENIED %s",
                  request->service->name);
        s_request_fail (self, request, text);
        if (service)
            s_dispatch_room (self, service);
    }
    zlistx_destroy (&dropped);
    zlistx_destroy (&denied);
    pigato__log (PIGATO_LOG_INFO, "event=acl_reloaded identities=%zu rules=%zu "
                 "workers_removed=%zu requests_dropped=%zu "
                 "requests_denied=%zu",
                 pigato__guard_identity_count (self->guard),
                 pigato__guard_rule_count (self->guard), workers_removed,
                 requests_dropped, requests_denied);
}

//  --------------------------------------------------------------------------
//  Timers

void
pigato__route_expire_requests (pigato_broker_t *self, int64_t now)
{
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (self->timers, now))) {
        pigato__request_t *request =
            pigato__container_of (timer, pigato__request_t, expiry);
        pigato__worker_t *worker = request->worker;
        pigato__service_t *service = worker ? worker->service : NULL;
        char rid [80], service_text [SERVICE_TEXT];
        pigato__log (PIGATO_LOG_DEBUG, "event=request_expired service=%s "
                     "rid=%s worker=%s",
                     s_service_text (request->service, service_text),
                     pigato__printable (
                         pigato__request_rid (request).data,
                         pigato__request_rid (request).size, rid, sizeof rid),
                     worker ? worker->name : "-");
        self->counters.timeouts++;
        s_request_finish (self, request);
        if (service)
            s_dispatch_room (self, service);     //  its slot is free again
    }
}

void
pigato__route_check_workers (pigato_broker_t *self, int64_t now)
{
    zlistx_t *dead = NULL;
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->workers);
         worker; worker = (pigato__worker_t *) zhashx_next (self->workers))
        if (worker->expires <= now) {
            if (!dead)
                dead = zlistx_new ();
            zlistx_add_end (dead, worker);
        }
        else
        if (worker->mdp) {
            //  RFC 18: the broker heartbeats its workers
            pigato__bytes_t to = pigato__worker_routing_id (worker);
            s_send_control (self, &to, 'W', PIGATO__HEARTBEAT, FRAMING_MDP);
        }
    if (!dead)
        return;
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (dead);
         worker; worker = (pigato__worker_t *) zlistx_next (dead))
        s_worker_remove (self, worker, "expired", true);
    zlistx_destroy (&dead);
}

