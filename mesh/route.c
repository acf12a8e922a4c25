/*  =========================================================================
    route.c - what the broker does with each message: decode, check the
    sender against the current policy (auth/guard), then route: service
    queues, worker choice, request lifecycle, replies. Also the sweeps that
    follow a closed connection, a policy reload, expiry and lost workers.
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "broker_internal.h"

#define MAX_PENDING 1000000     //  requests held at once, then E_OVERLOADED

//  --------------------------------------------------------------------------
//  Logging of bad input: rate-limited (pigato__ratelimit_t).

static void
s_bad (pigato_broker_t *self, zmsg_t *msg, const char *reason)
{
    self->counters.bad_messages++;
    if (pigato__log_level < PIGATO_LOG_INFO
    ||  !pigato__ratelimit_allow (&self->bad_log, "bad_message"))
        return;
    zframe_t *sender = msg ? zmsg_first (msg) : NULL;
    char peer [80] = "?";
    const char *address = NULL;
    if (sender) {
        pigato__printable (zframe_data (sender), zframe_size (sender), peer,
                           sizeof peer);
        //  libzmq attaches metadata to received parts, not to the routing
        //  id part the ROUTER prepends
        address = zframe_meta (zmsg_last (msg), "Peer-Address");
    }
    pigato__log (PIGATO_LOG_INFO,
                 "event=bad_message peer=%s address=%s reason=%s frames=%zu",
                 peer, address ? address : "?", reason,
                 msg ? zmsg_size (msg) : 0);
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

//  --------------------------------------------------------------------------
//  Sending

static void
s_send_to (pigato_broker_t *self, zframe_t *to, const char *header,
           const char *type)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &(zframe_t *) { zframe_dup (to) });
    zmsg_addstr (msg, header);
    zmsg_addstr (msg, type);
    zmsg_send (&msg, self->router);
}

static void
s_send_request (pigato_broker_t *self, pigato__worker_t *worker,
                pigato__request_t *request)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &(zframe_t *) { zframe_dup (worker->routing_id) });
    zmsg_addstr (msg, "W");
    zmsg_addstr (msg, "2");
    zmsg_append (msg, &(zframe_t *) { zframe_dup (request->client) });
    zmsg_addstr (msg, request->service->name);
    zmsg_addmem (msg, NULL, 0);
    zmsg_append (msg, &(zframe_t *) { zframe_dup (request->rid) });
    zmsg_append (msg, &(zframe_t *) { zframe_dup (request->data) });
    if (request->opts)
        zmsg_append (msg, &(zframe_t *) { zframe_dup (request->opts) });
    else
        zmsg_addstr (msg, "{}");
    zmsg_send (&msg, self->router);
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
    if (request->worker)
        pigato__worker_release (request->worker, request);
    else
        pigato__service_dequeue (service, request);
    zhashx_delete (self->requests, &request->key);
    pigato__request_destroy (&request);
    pigato__services_release (self->services, &service);
}

//  Sends a final error reply (status -1, data a JSON string) to a client.
static void
s_send_error (pigato_broker_t *self, const pigato__bytes_t *client,
              const pigato__bytes_t *rid, const char *text)
{
    char *json = pigato__json_string (text);
    pigato__bytes_t data = { (const byte *) json, json ? strlen (json) : 0 };
    zmsg_t *msg = pigato__encode_client_reply (client, PIGATO__REPLY, rid, -1,
                                               &data, NULL);
    zmsg_send (&msg, self->router);
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
    pigato__bytes_t client = { zframe_data (request->client),
                               zframe_size (request->client) };
    pigato__bytes_t rid = { zframe_data (request->rid),
                            zframe_size (request->rid) };
    s_send_error (self, &client, &rid, text);
    s_request_finish (self, request);
}

static void
s_request_touch (pigato_broker_t *self, pigato__request_t *request)
{
    if (request->timeout >= 0)
        pigato__heap_set (self->timers, &request->expiry,
                          pigato__now_ms () + request->timeout);
}

//  Hands queued requests of a service to workers with room, oldest first.
//  A request every worker rejected fails; one that only rejecting workers
//  could take now waits and lets younger requests pass.
static void
s_dispatch (pigato_broker_t *self, pigato__service_t *service)
{
    pigato__request_t *request = service->queue_head;
    while (request && service->workers) {
        pigato__request_t *next = request->next;
        if (pigato__service_all_rejected (service, request)) {
            char text [PIGATO_SERVICE_MAX + 64];
            snprintf (text, sizeof text, "E_REJECTED every worker of %s "
                      "rejected the request", service->name);
            s_request_fail (self, request, text);
        }
        else {
            pigato__worker_t *worker =
                pigato__service_pick (service, request, self->dmode);
            if (worker) {
                pigato__service_dequeue (service, request);
                pigato__worker_take (worker, request);
                s_send_request (self, worker, request);
            }
            else {
                bool room = false;
                for (pigato__worker_t *any = service->workers; any && !room;
                     any = any->next)
                    room = pigato__worker_has_room (any);
                if (!room)
                    break;
            }
        }
        request = next;
    }
}

//  --------------------------------------------------------------------------
//  Workers

static void
s_worker_remove (pigato_broker_t *self, pigato__worker_t *worker,
                 const char *reason, bool send_disconnect)
{
    if (send_disconnect)
        s_send_to (self, worker->routing_id, "W", "5");
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
    zhashx_delete (self->workers, &worker->key);
    if (service) {
        s_dispatch (self, service);
        pigato__services_release (self->services, &service);
    }
}

static void
s_worker_ready (pigato_broker_t *self, zmsg_t *msg, pigato__msg_t *in,
                const pigato__peer_t *peer, pigato__worker_t *worker)
{
    if (worker) {
        //  READY twice: harmless for the same service, a protocol error
        //  for another one (one worker, one service)
        if (in->service.size == strlen (worker->service->name)
        &&  memcmp (in->service.data, worker->service->name,
                    in->service.size) == 0) {
            s_send_to (self, worker->routing_id, "W", "1");
            return;
        }
        s_bad (self, msg, "ready_twice");
        s_worker_remove (self, worker, "ready_other_service", true);
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    size_t size = in->service.size;
    memcpy (name, in->service.data, size);
    name [size] = 0;
    if (memchr (in->service.data, 0, size)
    ||  strncmp (name, "mmi.", 4) == 0 || name [0] == '$') {
        s_bad (self, msg, "reserved_service");
        s_send_to (self, zmsg_first (msg), "W", "5");
        return;
    }
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_SERVE,
                               name)) {
        pigato__guard_denied (self->guard, msg, peer, PIGATO__VERB_SERVE, name,
                              "not_allowed");
        s_send_to (self, zmsg_first (msg), "W", "5");
        return;
    }
    pigato__service_t *service =
        pigato__services_require (self->services, in->service.data, size);
    worker = (pigato__worker_t *) calloc (1, sizeof *worker);
    if (!service || !worker) {
        free (worker);
        pigato__services_release (self->services, &service);
        return;
    }
    pigato__bkey_set (&worker->key, in->sender.data, in->sender.size, NULL, 0);
    worker->routing_id = zframe_new (in->sender.data, in->sender.size);
    pigato__printable (in->sender.data, in->sender.size, worker->name,
                       sizeof worker->name);
    worker->conn = in->conn;
    snprintf (worker->identity, sizeof worker->identity, "%s", peer->name);
    snprintf (worker->curve_key, sizeof worker->curve_key, "%s",
              peer->key ? peer->key : "");
    worker->serial = ++self->next_serial;
    worker->concurrency = PIGATO_CONCURRENCY;
    worker->expires = pigato__now_ms ()
                    + (int64_t) self->heartbeat_ms * self->liveness;
    zhashx_insert (self->workers, &worker->key, worker);
    pigato__service_add_worker (service, worker);
    s_send_to (self, worker->routing_id, "W", "1");
    char service_text [SERVICE_TEXT];
    pigato__log (PIGATO_LOG_INFO, "event=worker_ready service=%s worker=%s",
                 s_service_text (service, service_text), worker->name);
    s_dispatch (self, service);
}

static void
s_worker_heartbeat (pigato_broker_t *self, zmsg_t *msg, pigato__msg_t *in,
                    pigato__worker_t *worker)
{
    s_send_to (self, worker->routing_id, "W", "4");
    if (!in->has_opts)
        return;
    json_error_t error;
    json_t *opts = json_loadb ((const char *) in->opts.data, in->opts.size, 0,
                               &error);
    json_t *concurrency = json_object_get (opts, "concurrency");
    if (!opts || !json_is_object (opts))
        s_bad (self, msg, "json");
    else
    if (json_is_number (concurrency)) {
        double value = json_number_value (concurrency);
        int previous = worker->concurrency;
        worker->concurrency = value < 0 ? -1
                            : value > 1e6 ? 1000000 : (int) value;
        if (worker->concurrency != previous)
            s_dispatch (self, worker->service);
    }
    json_decref (opts);
}

//  Replies, partial replies and rejects: accepted only for a rid that was
//  dispatched to this very worker.
static void
s_worker_reply (pigato_broker_t *self, zmsg_t **msg_p, pigato__msg_t *in,
                pigato__worker_t *worker)
{
    pigato__bkey_t key;
    pigato__request_t *request = NULL;
    if (pigato__bkey_set (&key, in->client.data, in->client.size,
                          in->rid.data, in->rid.size) == 0)
        request = (pigato__request_t *) zhashx_lookup (self->requests, &key);
    if (!request || request->worker != worker) {
        //  Late (expired, client gone) or foreign: drop, keep the worker
        self->counters.late_replies++;
        char rid [80];
        pigato__log (PIGATO_LOG_DEBUG, "event=reply_dropped worker=%s rid=%s "
                     "reason=unknown_rid", worker->name,
                     pigato__printable (in->rid.data, in->rid.size, rid,
                                        sizeof rid));
        return;
    }
    if (in->type == PIGATO__REJECT) {
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
            s_dispatch (self, worker->service);
        return;
    }
    //  Forward: [worker][W][type][client][""][rid][status][data][opts]
    //  becomes [client][C][type][""][rid][status][data][opts], frames moved
    zmsg_t *msg = *msg_p;
    zframe_t *frame = zmsg_pop (msg);           //  worker routing id
    zframe_destroy (&frame);
    frame = zmsg_pop (msg);                     //  "W"
    zframe_reset (frame, "C", 1);
    zframe_t *type = zmsg_pop (msg);
    zframe_t *client = zmsg_pop (msg);
    zmsg_prepend (msg, &type);
    zmsg_prepend (msg, &frame);
    zmsg_prepend (msg, &client);
    zmsg_send (msg_p, self->router);
    if (in->type == PIGATO__PARTIAL) {
        self->counters.partials++;
        s_request_touch (self, request);
    }
    else {
        self->counters.replies++;
        s_request_finish (self, request);
        s_dispatch (self, worker->service);
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
s_on_worker (pigato_broker_t *self, zmsg_t **msg_p, pigato__msg_t *in,
             const pigato__peer_t *peer)
{
    pigato__worker_t *worker = s_worker_of (self, &in->sender);
    if (worker && !s_worker_bound (worker, peer, &in->conn)) {
        s_bad (self, *msg_p, "identity_mismatch");
        s_worker_remove (self, worker, "identity_mismatch", true);
        return;
    }
    if (worker && !pigato__guard_allows (self->guard, peer->name,
                                         PIGATO__VERB_SERVE,
                                         worker->service->name)) {
        pigato__guard_denied (self->guard, *msg_p, peer, PIGATO__VERB_SERVE,
                              worker->service->name, "not_allowed");
        s_worker_remove (self, worker, "access_denied", true);
        return;
    }
    if (worker)
        worker->expires = pigato__now_ms ()
                        + (int64_t) self->heartbeat_ms * self->liveness;
    if (in->type == PIGATO__READY) {
        s_worker_ready (self, *msg_p, in, peer, worker);
        return;
    }
    if (!worker) {
        //  Not registered (never, or expired): tell it to start over
        if (in->type != PIGATO__DISCONNECT) {
            s_bad (self, *msg_p, "not_ready");
            s_send_to (self, zmsg_first (*msg_p), "W", "5");
        }
        return;
    }
    switch (in->type) {
        case PIGATO__HEARTBEAT:
            s_worker_heartbeat (self, *msg_p, in, worker);
            break;
        case PIGATO__REPLY:
        case PIGATO__PARTIAL:
        case PIGATO__REJECT:
            s_worker_reply (self, msg_p, in, worker);
            break;
        case PIGATO__DISCONNECT:
            s_worker_remove (self, worker, "disconnect", false);
            break;
    }
}

//  --------------------------------------------------------------------------
//  Clients

static void
s_client_request (pigato_broker_t *self, zmsg_t *msg, pigato__msg_t *in,
                  const pigato__peer_t *peer)
{
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, in->sender.data, in->sender.size,
                          in->rid.data, in->rid.size)) {
        s_bad (self, msg, "field");
        return;
    }
    if (zhashx_lookup (self->requests, &key)) {
        s_bad (self, msg, "duplicate_rid");
        return;
    }
    if (zhashx_size (self->requests) >= MAX_PENDING) {
        s_send_error (self, &in->sender, &in->rid,
                      "E_OVERLOADED the broker holds too many requests; "
                      "try again later");
        return;
    }
    if (memchr (in->service.data, 0, in->service.size)) {
        s_bad (self, msg, "field");
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    memcpy (name, in->service.data, in->service.size);
    name [in->service.size] = 0;
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_CALL,
                               name)) {
        pigato__guard_denied (self->guard, msg, peer, PIGATO__VERB_CALL, name,
                              "not_allowed");
        char text [PIGATO_SERVICE_MAX + 32];
        snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
        s_send_error (self, &in->sender, &in->rid, text);
        return;
    }
    pigato__service_t *service = pigato__services_require (
        self->services, in->service.data, in->service.size);
    if (!service)
        return;
    //  Take the frames: [client][C][2][service][rid][data][opts]
    zframe_t *client = zmsg_pop (msg);
    zframe_t *frame = zmsg_pop (msg);
    zframe_destroy (&frame);
    frame = zmsg_pop (msg);
    zframe_destroy (&frame);
    frame = zmsg_pop (msg);
    zframe_destroy (&frame);
    zframe_t *rid = zmsg_pop (msg);
    zframe_t *data = zmsg_pop (msg);
    zframe_t *opts = in->has_opts ? zmsg_pop (msg) : NULL;
    if (!data)
        data = zframe_new_empty ();
    pigato__request_t *request =
        pigato__request_new (&client, &rid, &data, &opts);
    if (!request) {
        zframe_destroy (&client);
        zframe_destroy (&rid);
        zframe_destroy (&data);
        zframe_destroy (&opts);
        pigato__services_release (self->services, &service);
        return;
    }
    if (pigato__request_parse_opts (request, PIGATO_TIMEOUT_MS)) {
        //  Opts we cannot read could hold a timeout or a target we would
        //  ignore: refuse the request rather than guess
        s_bad (self, msg, "json");
        s_send_error (self, &in->sender, &in->rid,
                      "E_INVALID_OPTS request opts must be a JSON object");
        pigato__request_destroy (&request);
        pigato__services_release (self->services, &service);
        return;
    }
    request->service = service;
    request->conn = in->conn;
    snprintf (request->identity, sizeof request->identity, "%s", peer->name);
    snprintf (request->curve_key, sizeof request->curve_key, "%s",
              peer->key ? peer->key : "");
    zhashx_insert (self->requests, &request->key, request);
    pigato__service_enqueue (service, request, false);
    s_request_touch (self, request);
    self->counters.requests++;
    s_dispatch (self, service);
}

static void
s_on_client (pigato_broker_t *self, zmsg_t *msg, pigato__msg_t *in,
             const pigato__peer_t *peer)
{
    if (in->type == PIGATO__REQUEST)
        s_client_request (self, msg, in, peer);
    else
    if (in->type == PIGATO__HEARTBEAT && !in->request_heartbeat)
        s_send_to (self, zmsg_first (msg), "C", "4");
    else
    if (in->type == PIGATO__HEARTBEAT) {
        //  Forward to the worker holding the request, if any; the key
        //  includes the sender, so a client can only heartbeat its own
        pigato__bkey_t key;
        if (pigato__bkey_set (&key, in->sender.data, in->sender.size,
                              in->rid.data, in->rid.size))
            return;
        pigato__request_t *request =
            (pigato__request_t *) zhashx_lookup (self->requests, &key);
        if (request && (!streq (request->identity, peer->name)
                        || !pigato__conn_same (&request->conn, &in->conn))) {
            s_bad (self, msg, "identity_mismatch");
            return;
        }
        if (request && !pigato__guard_allows (self->guard, peer->name,
                                              PIGATO__VERB_CALL,
                                              request->service->name)) {
            pigato__guard_denied (self->guard, msg, peer, PIGATO__VERB_CALL,
                                  request->service->name, "not_allowed");
            return;
        }
        if (request && request->worker) {
            zmsg_t *out = zmsg_new ();
            zmsg_append (out, &(zframe_t *) {
                zframe_dup (request->worker->routing_id) });
            zmsg_addstr (out, "W");
            zmsg_addstr (out, "4");
            zmsg_append (out, &(zframe_t *) { zframe_dup (request->client) });
            zmsg_addmem (out, NULL, 0);
            zmsg_append (out, &(zframe_t *) { zframe_dup (request->rid) });
            zmsg_send (&out, self->router);
        }
    }
}

void
pigato__route_message (pigato_broker_t *self, zmsg_t **msg_p,
                       const pigato__conn_t *conn)
{
    pigato__msg_t in;
    int rc = pigato__decode_from_peer (*msg_p, &in);
    if (rc) {
        s_bad (self, *msg_p, pigato__decode_reason (rc));
        return;
    }
    in.conn = *conn;
    pigato__peer_t peer;
    if (!pigato__guard_peer (self->guard, *msg_p, &peer)) {
        //  Not (or no longer) in the policy: refused on this very message
        char name [PIGATO_SERVICE_MAX + 1] = "";
        if (in.service.size && !memchr (in.service.data, 0, in.service.size)) {
            memcpy (name, in.service.data, in.service.size);
            name [in.service.size] = 0;
        }
        pigato__guard_denied (self->guard, *msg_p, &peer,
                              in.role == 'W' ? PIGATO__VERB_SERVE
                                             : PIGATO__VERB_CALL,
                              name [0] ? name : NULL, "identity_revoked");
        if (in.role == 'C' && in.type == PIGATO__REQUEST) {
            char text [PIGATO_SERVICE_MAX + 32];
            snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
            s_send_error (self, &in.sender, &in.rid, text);
        }
        else
        if (in.role == 'W') {
            bool disconnect = in.type != PIGATO__DISCONNECT;
            pigato__worker_t *worker = s_worker_of (self, &in.sender);
            if (worker)
                s_worker_remove (self, worker, "identity_revoked", disconnect);
            else
            if (disconnect)
                s_send_to (self, zmsg_first (*msg_p), "W", "5");
        }
        return;
    }
    if (in.role == 'C')
        s_on_client (self, *msg_p, &in, &peer);
    else
        s_on_worker (self, msg_p, &in, &peer);
}

//  --------------------------------------------------------------------------
//  Connections: a worker whose connection closed is gone now (its requests
//  retry or fail at once); requests of a closed client connection are
//  dropped, so no reply can reach a later owner of its routing id.

void
pigato__route_connection_lost (pigato_broker_t *self,
                               const pigato__conn_t *dead)
{
    zlistx_t *workers = zlistx_new ();
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->workers);
         worker; worker = (pigato__worker_t *) zhashx_next (self->workers))
        if (pigato__conn_same (&worker->conn, dead))
            zlistx_add_end (workers, worker);
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (workers);
         worker; worker = (pigato__worker_t *) zlistx_next (workers))
        s_worker_remove (self, worker, "disconnected", false);
    zlistx_destroy (&workers);

    zlistx_t *requests = zlistx_new ();
    for (pigato__request_t *request =
             (pigato__request_t *) zhashx_first (self->requests);
         request; request = (pigato__request_t *) zhashx_next (self->requests))
        if (pigato__conn_same (&request->conn, dead))
            zlistx_add_end (requests, request);
    for (pigato__request_t *request = (pigato__request_t *) zlistx_first (requests);
         request; request = (pigato__request_t *) zlistx_next (requests)) {
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        s_request_finish (self, request);
        if (service)
            s_dispatch (self, service);
    }
    if (zlistx_size (requests))
        pigato__log (PIGATO_LOG_DEBUG, "event=client_gone requests_dropped=%zu",
                     zlistx_size (requests));
    zlistx_destroy (&requests);
}

//  Applies every pending monitor event.
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
            s_dispatch (self, service);
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
            s_dispatch (self, service);
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
                     pigato__printable (zframe_data (request->rid),
                                        zframe_size (request->rid), rid,
                                        sizeof rid),
                     worker ? worker->name : "-");
        self->counters.timeouts++;
        s_request_finish (self, request);
        if (service)
            s_dispatch (self, service);     //  its slot is free again
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
    if (!dead)
        return;
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (dead);
         worker; worker = (pigato__worker_t *) zlistx_next (dead))
        s_worker_remove (self, worker, "expired", true);
    zlistx_destroy (&dead);
}

