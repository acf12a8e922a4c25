/*  =========================================================================
    route.c - what the broker does with each message: decode (0.0.46
    framing, a native batch entry by entry, or MDP/0.2 in route_mdp.c),
    check the sender against the current policy (auth/guard), then route:
    service queues and name resolution, worker choice, request lifecycle,
    replies. Sending is in route_send.c, $dir and MMI in route_internal.c,
    the sweeps after closed connections, reloads and expiry in
    route_sweep.c; route.h is what they share.

    Messages are zmq_msg_t parts (broker.c reads them); bodies are shared
    with the part they came in, never copied on the way through. Replies
    go out in the framing their request came in; native entries for one
    peer collect in the outbox until the loop flushes it.
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "front.h"
#include "../wire/mdp.h"

//  --------------------------------------------------------------------------
//  Logging of bad input: rate-limited (pigato__ratelimit_t).

void
pigato__route_bad (pigato_broker_t *self, const pigato__route_in_t *in,
                   const char *reason)
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

void
pigato__route_denied (pigato_broker_t *self, const pigato__route_in_t *in,
                      const pigato__peer_t *peer, int verb,
                      const char *service, const char *reason)
{
    pigato__guard_denied (self->guard, in->m.sender.data, in->m.sender.size,
                          in->meta, peer, verb, service, reason);
}

//  Service names come from peers: log them escaped, never raw.
const char *
pigato__route_service_text (const pigato__service_t *service, char *text)
{
    if (!service)
        return "-";
    return pigato__printable (service->name, strlen (service->name), text,
                              SERVICE_TEXT);
}

//  Copies a string into a fixed field, cut to fit ("" for NULL): for
//  every request, so no snprintf.
void
pigato__route_copy_text (char *field, size_t field_size, const char *text)
{
    size_t size = text ? strnlen (text, field_size - 1) : 0;
    if (size)
        memcpy (field, text, size);
    field [size] = 0;
}

//  --------------------------------------------------------------------------
//  Request lifecycle

//  Removes a request from every structure and frees it. Its service is
//  released if that left it empty.
void
pigato__route_request_finish (pigato_broker_t *self, pigato__request_t *request)
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
    pigato__table_delete (self->requests, request->key.hash, &request->key);
    pigato__request_destroy (&self->request_pool, &request);
    service->requests--;
    pigato__services_release (self->services, &service);
}


//  Fails a request with a final error reply and finishes it. text starts
//  with an E_ code, then a sentence for people.
void
pigato__route_request_fail (pigato_broker_t *self, pigato__request_t *request,
                            const char *text)
{
    pigato__bytes_t client = pigato__request_client (request);
    pigato__bytes_t rid = pigato__request_rid (request);
    if (request->mdp_client) {
        //  MDP has no status: the error text is the FINAL's body
        char *json = pigato__json_string (text);
        pigato__bytes_t body = { (const byte *) json,
                                 json ? strlen (json) : 0 };
        pigato__route_send_mdp_reply (self, request, PIGATO__REPLY, &body, 1);
        free (json);
        self->counters.failed++;
    }
    else
        pigato__route_send_error (self, request->native, &client, &rid, text);
    pigato__route_request_finish (self, request);
}

void
pigato__route_request_touch (pigato_broker_t *self, pigato__request_t *request)
{
    if (request->timeout >= 0)
        pigato__heap_set (self->timers, &request->expiry,
                          self->now_ms + request->timeout);
}

#define TARGETS_MAX 16           //  versions tried per request, best first

//  A request that names a worker (opts workerId): sent if that worker
//  serves the name and has room, failed if it does not exist or serves
//  something else, else left waiting. True if it left the queue.
static bool
s_dispatch_targeted (pigato_broker_t *self, pigato__service_t *service,
                     pigato__request_t *request)
{
    pigato__bytes_t id = { request->target, request->target_size };
    pigato__worker_t *worker = pigato__route_worker_of (self, &id);
    if (!worker || !worker->service
    ||  !pigato__service_matches (worker->service, service)) {
        char text [PIGATO_SERVICE_MAX + 600], printable [4 * 64 + 4];
        snprintf (text, sizeof text,
                  "E_WORKER_NOT_FOUND no worker %s serves %s",
                  pigato__printable (request->target, request->target_size,
                                     printable, sizeof printable),
                  service->name);
        pigato__route_request_fail (self, request, text);
        return true;
    }
    if (!pigato__worker_has_room (worker)
    ||  pigato__request_rejected_by (request, worker->serial))
        return false;
    pigato__service_dequeue (service, request);
    pigato__worker_take (worker, request);
    pigato__route_send_request (self, worker, request);
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
void
pigato__route_dispatch (pigato_broker_t *self, pigato__service_t *service)
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
            //  may free service
            pigato__route_request_fail (self, request, text);
        }
        else {
            pigato__worker_t *worker = NULL;
            for (size_t index = 0; index < count && !worker; index++)
                worker = pigato__service_pick (targets [index], request,
                                               self->dmode);
            if (worker) {
                pigato__service_dequeue (service, request);
                pigato__worker_take (worker, request);
                pigato__route_send_request (self, worker, request);
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
void
pigato__route_dispatch_room (pigato_broker_t *self, pigato__service_t *service)
{
    bool others = pigato__service_serves_others (service);
    //  Only names that start like this service can resolve to it: the
    //  wildcard's prefix, or a version's "base@"
    char prefix [PIGATO_SERVICE_MAX + 1];
    size_t prefix_size = 0;
    if (others) {
        prefix_size = service->wildcard ? strlen (service->name) - 1
                                        : service->base_size + 1;
        memcpy (prefix, service->name, prefix_size);
    }
    pigato__route_dispatch (self, service);     //  may free service
    if (!others)
        return;
    pigato__service_t *next;
    for (pigato__service_t *pending = pigato__services_pending (self->services);
         pending; pending = next) {
        next = pending->pending_next;
        if (strncmp (pending->name, prefix, prefix_size) == 0)
            pigato__route_dispatch (self, pending);
        else
            //  A name nothing serves leaves the walk until a wildcard or
            //  a version gains its first worker
            pigato__services_park_unservable (self->services, pending);
    }
}

//  --------------------------------------------------------------------------
//  Workers

void
pigato__route_worker_remove (pigato_broker_t *self, pigato__worker_t *worker,
                             const char *reason, bool send_disconnect)
{
    if (send_disconnect) {
        pigato__bytes_t to = pigato__worker_routing_id (worker);
        pigato__route_send_control (self, &to, 'W', PIGATO__DISCONNECT,
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
            pigato__route_request_fail (
                self, request,
                "E_WORKER_LOST the worker handling the request went away");
            failed++;
        }
    }
    char service_text [SERVICE_TEXT];
    pigato__log (PIGATO_LOG_INFO, "event=worker_gone worker=%s service=%s "
                 "reason=%s requeued=%d failed=%d", worker->name,
                 pigato__route_service_text (service, service_text), reason,
                 requeued, failed);
    self->counters.workers_gone++;
    if (service)
        pigato__service_remove_worker (service, worker);
    pigato__conns_unfile (self->conns, &worker->conn_link);
    if (self->last_worker == worker)
        self->last_worker = NULL;
    zhashx_delete (self->workers, &worker->key);
    if (service)
        pigato__route_dispatch_room (self, service);    //  releases it
}

void
pigato__route_worker_ready (pigato_broker_t *self, pigato__route_in_t *in,
                            const pigato__peer_t *peer,
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
            pigato__route_send_control (self, &in->m.sender, 'W', PIGATO__READY,
                                        worker->native);
            return;
        }
        pigato__route_bad (self, in, "ready_twice");
        pigato__route_worker_remove (self, worker, "ready_other_service", true);
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    size_t size = in->m.service.size;
    memcpy (name, in->m.service.data, size);
    name [size] = 0;
    if (memchr (in->m.service.data, 0, size)
    ||  strncmp (name, "mmi.", 4) == 0 || name [0] == '$') {
        pigato__route_bad (self, in, "reserved_service");
        pigato__route_send_control (self, &in->m.sender, 'W',
                                    PIGATO__DISCONNECT, framing);
        return;
    }
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_SERVE,
                               name)) {
        pigato__route_denied (self, in, peer, PIGATO__VERB_SERVE, name,
                              "not_allowed");
        pigato__route_send_control (self, &in->m.sender, 'W',
                                    PIGATO__DISCONNECT, framing);
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
    worker->expires = self->now_ms
                    + (int64_t) self->heartbeat_ms * self->liveness;
    zhashx_insert (self->workers, &worker->key, worker);
    pigato__service_add_worker (service, worker);
    pigato__route_send_control (self, &in->m.sender, 'W', PIGATO__READY,
                                framing);
    char service_text [SERVICE_TEXT];
    pigato__log (PIGATO_LOG_INFO, "event=worker_ready service=%s worker=%s "
                 "framing=%s",
                 pigato__route_service_text (service, service_text),
                 worker->name, in->mdp ? "mdp/0.2" : native ? "native"
                                                            : "0.0.46");
    pigato__route_dispatch_room (self, service);
}

static void
s_worker_heartbeat (pigato_broker_t *self, pigato__route_in_t *in,
                    pigato__worker_t *worker)
{
    pigato__route_send_control (self, &in->m.sender, 'W', PIGATO__HEARTBEAT,
                                worker->native);
    if (!in->m.has_opts)
        return;
    json_error_t error;
    json_t *opts = json_loadb ((const char *) in->m.opts.data,
                               in->m.opts.size, 0, &error);
    json_t *concurrency = json_object_get (opts, "concurrency");
    if (!opts || !json_is_object (opts))
        pigato__route_bad (self, in, "json");
    else
    if (json_is_number (concurrency)) {
        double value = json_number_value (concurrency);
        int previous = worker->concurrency;
        worker->concurrency = value < 0 ? -1
                            : value > 1e6 ? 1000000 : (int) value;
        pigato__worker_update (worker);
        if (worker->concurrency != previous)
            pigato__route_dispatch_room (self, worker->service);
    }
    json_decref (opts);
}

//  Replies, partial replies and rejects: accepted only for a rid that was
//  dispatched to this very worker.
static void
s_worker_reply (pigato_broker_t *self, pigato__route_in_t *in,
                pigato__worker_t *worker)
{
    pigato__bkey_t key;
    pigato__request_t *request = NULL;
    if (pigato__bkey_set (&key, in->m.client.data, in->m.client.size,
                          in->m.rid.data, in->m.rid.size) == 0)
        request = (pigato__request_t *) pigato__table_lookup (
            self->requests, key.hash, &key);
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
            pigato__route_request_fail (self, request,
                                        "E_NOMEM broker out of memory");
        pigato__route_dispatch (self, service);
        if (worker->service != service)
            pigato__route_dispatch_room (self, worker->service);
        return;
    }
    if (in->m.type == PIGATO__REPLY && in->m.status == 0
    &&  !request->mdp_client) {
        int64_t ttl = pigato__cache_ttl (&in->m.opts);
        pigato__bytes_t body = pigato__request_body (request);
        if (ttl > 0)
            pigato__cache_put (self->cache, request->service->name, &body,
                               &in->m.data, &in->m.opts, self->now_ms + ttl);
    }
    if (request->mdp_client)
        pigato__route_send_mdp_reply (self, request, in->m.type,
                                      &in->m.data, 1);
    else
        pigato__route_send_reply (self, request->native, &in->m.client,
                                  in->m.type, &in->m.rid, in->m.status,
                                  &in->m.data, &in->m.opts, in->body_part);
    if (in->m.type == PIGATO__PARTIAL) {
        self->counters.partials++;
        pigato__route_request_touch (self, request);
    }
    else {
        self->counters.replies++;
        pigato__route_request_finish (self, request);
        pigato__route_dispatch_room (self, worker->service);
    }
}

//  The worker registered under a routing id, or NULL. The last one found
//  is remembered: the entries of a worker's batch all name it.
pigato__worker_t *
pigato__route_worker_of (pigato_broker_t *self,
                         const pigato__bytes_t *routing_id)
{
    if (self->last_worker) {
        pigato__bytes_t id = pigato__worker_routing_id (self->last_worker);
        if (id.size == routing_id->size
        &&  memcmp (id.data, routing_id->data, id.size) == 0)
            return self->last_worker;
    }
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, routing_id->data, routing_id->size, NULL, 0))
        return NULL;
    pigato__worker_t *worker =
        (pigato__worker_t *) zhashx_lookup (self->workers, &key);
    if (worker)
        self->last_worker = worker;
    return worker;
}

//  True if a message from this worker's routing id carries the identity
//  that registered it. Routing ids are chosen by peers: a different
//  identity means another peer took the id over.
bool
pigato__route_worker_bound (const pigato__worker_t *worker,
                            const pigato__peer_t *peer,
                            const pigato__conn_t *conn)
{
    return streq (worker->identity, peer->name)
        && streq (worker->curve_key, peer->key ? peer->key : "")
        && pigato__conn_same (&worker->conn, conn);
}

static void
s_on_worker (pigato_broker_t *self, pigato__route_in_t *in,
             const pigato__peer_t *peer)
{
    pigato__worker_t *worker = pigato__route_worker_of (self, &in->m.sender);
    if (worker && !pigato__route_worker_bound (worker, peer, &in->m.conn)) {
        pigato__route_bad (self, in, "identity_mismatch");
        pigato__route_worker_remove (self, worker, "identity_mismatch", true);
        return;
    }
    if (worker && !pigato__guard_allows (self->guard, peer->name,
                                         PIGATO__VERB_SERVE,
                                         worker->service->name)) {
        pigato__route_denied (self, in, peer, PIGATO__VERB_SERVE,
                              worker->service->name, "not_allowed");
        pigato__route_worker_remove (self, worker, "access_denied", true);
        return;
    }
    if (worker) {
        worker->expires = self->now_ms
                        + (int64_t) self->heartbeat_ms * self->liveness;
        if (in->m.native)
            worker->native = true;
    }
    if (in->m.type == PIGATO__READY) {
        pigato__route_worker_ready (self, in, peer, worker);
        return;
    }
    if (!worker) {
        //  Not registered (never, or expired): tell it to start over
        if (in->m.type != PIGATO__DISCONNECT) {
            pigato__route_bad (self, in, "not_ready");
            pigato__route_send_control (self, &in->m.sender, 'W',
                                        PIGATO__DISCONNECT, in->m.native);
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
            pigato__route_worker_remove (self, worker, "disconnect", false);
            break;
    }
}

//  --------------------------------------------------------------------------
//  Clients


static void
s_client_request (pigato_broker_t *self, pigato__route_in_t *in,
                  const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, m->sender.data, m->sender.size, m->rid.data,
                          m->rid.size)) {
        pigato__route_bad (self, in, "field");
        return;
    }
    if (pigato__table_lookup (self->requests, key.hash, &key)) {
        pigato__route_bad (self, in, "duplicate_rid");
        return;
    }
    if (pigato__table_size (self->requests) >= MAX_PENDING) {
        pigato__route_send_error (self, m->native, &m->sender, &m->rid,
                                  "E_OVERLOADED the broker holds too many "
                                  "requests; try again later");
        return;
    }
    if (memchr (m->service.data, 0, m->service.size)) {
        pigato__route_bad (self, in, "field");
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    memcpy (name, m->service.data, m->service.size);
    name [m->service.size] = 0;
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_CALL,
                               name)) {
        pigato__route_denied (self, in, peer, PIGATO__VERB_CALL, name,
                              "not_allowed");
        char text [PIGATO_SERVICE_MAX + 32];
        snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
        pigato__route_send_error (self, m->native, &m->sender, &m->rid, text);
        return;
    }
    if (name [0] == '$' || strncmp (name, "mmi.", 4) == 0) {
        pigato__route_internal_service (self, in, name);
        return;
    }
    //  The ACL allowed this caller: a cached reply may answer it (not a
    //  request that names its worker)
    pigato__cached_t cached;
    if (!(m->has_opts && memmem (m->opts.data, m->opts.size, "workerId", 8))
    &&  pigato__cache_get (self->cache, name, &m->data, self->now_ms,
                           &cached)) {
        pigato__route_send_reply (self, m->native, &m->sender, PIGATO__REPLY,
                                  &m->rid, 0, &cached.data, &cached.opts, NULL);
        self->counters.requests++;
        self->counters.replies++;
        return;
    }
    pigato__service_t *service = pigato__services_require (
        self->services, m->service.data, m->service.size);
    if (!service)
        return;
    pigato__request_t *request = pigato__request_new (
        &self->request_pool, &m->sender, &m->rid, &key, in->body_part,
        &m->data, m->has_opts ? &m->opts : NULL);
    if (!request) {
        pigato__services_release (self->services, &service);
        return;
    }
    request->native = m->native;
    if (pigato__request_parse_opts (request, PIGATO_TIMEOUT_MS)) {
        //  Opts we cannot read could hold a timeout or a target we would
        //  ignore: refuse the request rather than guess
        pigato__route_bad (self, in, "json");
        pigato__route_send_error (self, m->native, &m->sender, &m->rid,
                                  "E_INVALID_OPTS request opts must be a "
                                  "JSON object");
        pigato__request_destroy (&self->request_pool, &request);
        pigato__services_release (self->services, &service);
        return;
    }
    request->service = service;
    if (request->target) {
        pigato__bytes_t id = { request->target, request->target_size };
        if (!pigato__route_worker_of (self, &id)) {
            char text [PIGATO_SERVICE_MAX + 600], printable [4 * 64 + 4];
            snprintf (text, sizeof text, "E_WORKER_NOT_FOUND no worker %s "
                      "serves %s", pigato__printable (id.data, id.size,
                                                      printable,
                                                      sizeof printable),
                      service->name);
            pigato__route_send_error (self, m->native, &m->sender, &m->rid,
                                      text);
            pigato__request_destroy (&self->request_pool, &request);
            pigato__services_release (self->services, &service);
            return;
        }
    }
    if (pigato__route_admit (self, request, service, &m->conn, peer))
        pigato__route_send_error (self, m->native, &m->sender, &m->rid,
                                  "E_OVERLOADED the broker ran out of memory; "
                                  "try again later");
}

//  A new request, checked and made, joins the broker: filed under the
//  client's connection, stamped with the caller, indexed, queued on its
//  service, given its inactivity deadline, and dispatched if a worker has
//  room. For pigato and MDP clients alike.
int
pigato__route_admit (pigato_broker_t *self, pigato__request_t *request,
                     pigato__service_t *service, const pigato__conn_t *conn,
                     const pigato__peer_t *peer)
{
    if (pigato__table_insert (self->requests, request->key.hash,
                              &request->key, request)) {
        pigato__request_destroy (&self->request_pool, &request);
        pigato__services_release (self->services, &service);
        return -1;
    }
    request->conn = *conn;
    pigato__conns_file (self->conns, &request->conn, PIGATO__CONN_REQUESTS,
                        &request->conn_link);
    pigato__route_copy_text (request->identity, sizeof request->identity,
                             peer->name);
    pigato__route_copy_text (request->curve_key, sizeof request->curve_key,
                             peer->key);
    service->requests++;
    pigato__service_enqueue (service, request, false);
    pigato__route_request_touch (self, request);
    self->counters.requests++;
    pigato__route_dispatch (self, service);
    return 0;
}

static void
s_on_client (pigato_broker_t *self, pigato__route_in_t *in,
             const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    if (m->type == PIGATO__REQUEST)
        s_client_request (self, in, peer);
    else
    if (m->type == PIGATO__HEARTBEAT && !m->request_heartbeat)
        pigato__route_send_control (self, &m->sender, 'C', PIGATO__HEARTBEAT,
                                    m->native || m->native_offer);
    else
    if (m->type == PIGATO__HEARTBEAT) {
        //  Forward to the worker holding the request, if any; the key
        //  includes the sender, so a client can only heartbeat its own
        pigato__bkey_t key;
        if (pigato__bkey_set (&key, m->sender.data, m->sender.size,
                              m->rid.data, m->rid.size))
            return;
        pigato__request_t *request = (pigato__request_t *)
            pigato__table_lookup (self->requests, key.hash, &key);
        if (request && (!streq (request->identity, peer->name)
                        || !pigato__conn_same (&request->conn, &m->conn))) {
            pigato__route_bad (self, in, "identity_mismatch");
            return;
        }
        if (request && !pigato__guard_allows (self->guard, peer->name,
                                              PIGATO__VERB_CALL,
                                              request->service->name)) {
            pigato__route_denied (self, in, peer, PIGATO__VERB_CALL,
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
            pigato__route_send_frames (self, &to, frames, 5, NULL, 0);
        }
    }
}

//  Routes one decoded message (or batch entry) from a peer whose identity
//  check came out `current`.
static void
s_route_one (pigato_broker_t *self, pigato__route_in_t *in, bool current,
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
        pigato__route_denied (self, in, peer,
                              m->role == 'W' ? PIGATO__VERB_SERVE
                                             : PIGATO__VERB_CALL,
                              name [0] ? name : NULL, "identity_revoked");
        if (m->role == 'C' && m->type == PIGATO__REQUEST) {
            char text [PIGATO_SERVICE_MAX + 32];
            snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
            pigato__route_send_error (self, m->native, &m->sender, &m->rid,
                                      text);
        }
        else
        if (m->role == 'W') {
            bool disconnect = m->type != PIGATO__DISCONNECT;
            pigato__worker_t *worker =
                pigato__route_worker_of (self, &m->sender);
            if (worker)
                pigato__route_worker_remove (self, worker, "identity_revoked",
                                             disconnect);
            else
            if (disconnect)
                pigato__route_send_control (self, &m->sender, 'W',
                                            PIGATO__DISCONNECT,
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
s_route_native (pigato_broker_t *self, pigato__route_in_t *in, bool current,
                const pigato__peer_t *peer)
{
    pigato__input_t *input = &self->input;
    zmq_msg_t *batch = &input->parts [1];
    pigato__native_reader_t reader;
    int rc = pigato__native_reader_init (&reader, zmq_msg_data (batch),
                                         zmq_msg_size (batch), true);
    if (rc) {
        pigato__route_bad (self, in, pigato__decode_reason (rc));
        return;
    }
    size_t externals = 0;
    bool external;
    while ((rc = pigato__native_next (&reader, &in->m, &external)) == 1)
        if (external)
            externals++;
    if (rc < 0 || externals != input->count - 2) {
        pigato__route_bad (self, in,
                           rc < 0 ? pigato__decode_reason (reader.error)
                                : "frames");
        return;
    }
    if (pigato__native_reader_rewind (&reader) != 0)
        return;                 //  cannot happen: every entry was read
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

void
pigato__route_input (pigato_broker_t *self, const pigato__conn_t *conn)
{
    pigato__input_t *input = &self->input;
    pigato__route_in_t in;
    memset (&in, 0, sizeof in);
    in.frames = input->total;
    if (input->count > 0) {
        in.m.sender.data = (const byte *) zmq_msg_data (&input->parts [0]);
        in.m.sender.size = zmq_msg_size (&input->parts [0]);
    }
    if (input->count > 1)
        in.meta = &input->parts [input->count - 1];
    if (input->total > input->count) {
        pigato__route_bad (self, &in, "frames");
        return;
    }
    if (input->count < 2) {
        pigato__route_bad (self, &in, "short");
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
        zmq_msg_t *part = &input->parts [index];
        parts [index].data = (const byte *) zmq_msg_data (part);
        parts [index].size = zmq_msg_size (part);
    }
    if (pigato__mdp_header (&parts [1])) {
        in.m.conn = *conn;
        pigato__route_route_mdp (self, &in, parts, input->count);
        return;
    }
    int rc = pigato__decode_046 (parts, input->count, &in.m);
    if (rc) {
        pigato__route_bad (self, &in, pigato__decode_reason (rc));
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
