/*  =========================================================================
    core.c - the broker's routing core (core.h): request lifecycle, service
    queues and name resolution, worker choice, workers' registration,
    replies and departures. No socket: what it decides goes out through
    self->emit. $dir and MMI are in core_internal.c.
    =========================================================================
*/
#include <jansson.h>
#include <stdarg.h>
#include <string.h>
#include "core.h"
#include "../wire/mdp.h"
#include "../../auth/acl.h"

#define TARGETS_MAX 16  //  versions tried per request, best first

static void
s_worker_destroy (void **item_p)
{
    pigato__worker_t *worker = (pigato__worker_t *) *item_p;
    if (worker) {
        free (worker);
        *item_p = NULL;
    }
}

//  The quotas and tenants tables' items: plain records (core_internal.c,
//  core_quota.c).
static void
s_quota_destroy (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

//  The requests table's items are requests, keyed by their bkey.
static bool
s_request_match (const void *item, const void *key)
{
    return pigato__bkey_equal (&((const pigato__request_t *) item)->key,
                               (const pigato__bkey_t *) key);
}

pigato__core_t *
pigato__core_new (const pigato__emit_t *emit, void *emit_arg)
{
    pigato__core_t *self = (pigato__core_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->emit = emit;
    self->emit_arg = emit_arg;
    self->heartbeat_ms = PIGATO_HEARTBEAT_MS;
    self->liveness = PIGATO_LIVENESS;
    self->worker_log.limit = PIGATO__WORKER_LOG_RATE;
    self->services = pigato__services_new ();
    self->workers = pigato__bkey_table_new ();
    self->requests = pigato__table_new (s_request_match);
    self->timers = pigato__heap_new ();
    self->conns = pigato__conns_new ();
    self->aliases = pigato__aliases_new ();
    self->cache = pigato__cache_new (PIGATO__CACHE_DEFAULT_BYTES);
    self->quotas = zhashx_new ();
    self->tenants = zhashx_new ();
    self->stats = pigato__stats_new ();
    if (!self->services || !self->workers || !self->requests || !self->timers
        || !self->conns || !self->aliases || !self->cache || !self->quotas
        || !self->tenants || !self->stats) {
        pigato__core_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->workers, s_worker_destroy);
    zhashx_set_destructor (self->quotas, s_quota_destroy);
    zhashx_set_destructor (self->tenants, s_quota_destroy);
    zhashx_set_key_hasher (self->tenants, pigato__hash_keyed_text);
    return self;
}

void
pigato__core_destroy (pigato__core_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__core_t *self = *self_p;
    //  Timers first (they live inside requests), then requests (they point
    //  at services and workers)
    pigato__heap_destroy (&self->timers);
    if (self->requests) {
        size_t cursor = 0;
        pigato__request_t *request;
        while ((request = (pigato__request_t *) pigato__table_next (
                    self->requests, &cursor)))
            pigato__request_destroy (&self->request_pool, &request);
        pigato__table_destroy (&self->requests);
    }
    pigato__request_pool_drain (&self->request_pool);
    //  Services before workers: their heaps of workers with room let go
    //  of the workers' nodes
    pigato__services_destroy (&self->services);
    zhashx_destroy (&self->workers);
    pigato__cache_destroy (&self->cache);
    pigato__conns_destroy (&self->conns);
    pigato__aliases_destroy (&self->aliases);
    zhashx_destroy (&self->quotas);
    zhashx_destroy (&self->tenants);
    pigato__stats_destroy (&self->stats);
    free (self->owners);
    free (self);
    *self_p = NULL;
}

void
pigato__core_set_policy (pigato__core_t *self, pigato__allows_fn *allows,
                         void *arg)
{
    self->allows = allows;
    self->allows_arg = arg;
}

void
pigato__core_set_stats_answer (pigato__core_t *self,
                               pigato__stats_answer_fn *answer, void *arg)
{
    self->stats_answer = answer;
    self->stats_answer_arg = arg;
}

//  Service names come from peers: logged escaped, never raw.
static const char *
s_service_text (const pigato__service_t *service, char *text)
{
    if (!service)
        return "-";
    return pigato__printable (service->name, strlen (service->name), text,
                              PIGATO__SERVICE_TEXT);
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

//  The caller a request's replies go to.
static pigato__caller_t
s_caller (pigato__request_t *request)
{
    pigato__caller_t caller = { .framing = request->framing,
                                .client = pigato__request_client (request),
                                .conn = request->conn,
                                .rid = pigato__request_rid (request) };
    if (request->framing == PIGATO__FRAMING_MDP)
        //  Only MDP replies name the service
        caller.service = (pigato__bytes_t) {
            (const byte *) request->service->name,
            strlen (request->service->name)
        };
    return caller;
}

//  --------------------------------------------------------------------------
//  Request lifecycle

//  Removes a request from every structure and frees it, counting how it
//  ended. Its service is released if that left it empty; a worker that
//  held it is NOT given a dispatch (the caller does that, once it is done
//  with the worker).
static void
s_request_finish (pigato__core_t *self, pigato__request_t *request,
                  pigato__outcome_t outcome)
{
    pigato__stats_finish (self->stats, request->stats, outcome,
                          request->body_size + request->opts_size,
                          self->now_us - request->admitted_us);
    pigato__service_t *service = request->service;
    pigato__heap_remove (self->timers, &request->expiry);
    pigato__conns_unfile (self->conns, &request->conn_link);
    pigato__worker_t *worker = request->worker;
    if (worker && worker->framing == PIGATO__FRAMING_MDP
        && !request->answered) {
        //  An MDP worker cannot be told to stop: it stays busy until its
        //  FINAL for this request comes (and is dropped)
        worker->mdp_stale = true;
        worker->concurrency = 0;
    }
    if (worker)
        pigato__worker_release (worker, request);
    else if (request->waiting_on)
        pigato__worker_unwait (request->waiting_on, request);
    else
        pigato__service_dequeue (service, request);
    pigato__table_delete (self->requests, request->key.hash, &request->key);
    if (request->tenant)
        pigato__core_tenant_release ((pigato__tenant_t *) request->tenant,
                                     request);
    pigato__request_destroy (&self->request_pool, &request);
    service->requests--;
    pigato__services_release (self->services, &service);
}

//  Fails a request (error reply) and finishes it; its worker's service is
//  NOT given a dispatch (see s_request_finish).
static void
s_request_fail (pigato__core_t *self, pigato__request_t *request,
                const char *text)
{
    pigato__caller_t caller = s_caller (request);
    self->emit->error (self->emit_arg, &caller, text);
    self->counters.failed++;
    s_request_finish (self, request, pigato__stats_outcome_of (text));
}

static void s_worker_room (pigato__core_t *self, pigato__worker_t *worker);

void
pigato__core_request_fail (pigato__core_t *self, pigato__request_t *request,
                           const char *text)
{
    pigato__worker_t *worker = request->worker;
    s_request_fail (self, request, text);
    if (worker)
        s_worker_room (self, worker);
}

//  Ends a request without a reply (outcome: why); its worker gets the
//  slot back.
static void
s_request_drop (pigato__core_t *self, pigato__request_t *request,
                pigato__outcome_t outcome)
{
    pigato__worker_t *worker = request->worker;
    s_request_finish (self, request, outcome);
    if (worker)
        s_worker_room (self, worker);
}

void
pigato__core_request_drop (pigato__core_t *self, pigato__request_t *request)
{
    s_request_drop (self, request, PIGATO__OUTCOME_DROPPED);
}

pigato__caller_t
pigato__core_caller (pigato__request_t *request)
{
    return s_caller (request);
}

void
pigato__core_request_end (pigato__core_t *self, pigato__request_t *request,
                          const char *text)
{
    if (text) {
        pigato__caller_t caller = s_caller (request);
        self->emit->error (self->emit_arg, &caller, text);
    }
    s_request_finish (self, request,
                      text ? pigato__stats_outcome_of (text)
                           : PIGATO__OUTCOME_DROPPED);
}

//  Sets the request's inactivity deadline (none for timeout -1). Fails
//  (out of memory) only for a request that had no deadline yet.
static int PIGATO__MUST_CHECK
s_request_touch (pigato__core_t *self, pigato__request_t *request)
{
    if (request->timeout < 0)
        return 0;
    return pigato__heap_set (self->timers, &request->expiry,
                             self->now_ms + request->timeout);
}

//  A sign of life for a request (a partial reply). A deadline that cannot
//  move stays where it was: the request may then expire early, never late.
static void
s_request_alive (pigato__core_t *self, pigato__request_t *request)
{
    if (s_request_touch (self, request))
        pigato__log (PIGATO_LOG_WARNING, "event=deadline_kept reason=nomem");
}

//  What a wildcard's worker must be allowed to serve: the name asked for.
typedef struct {
    pigato__core_t *core;
    const char *name;
} s_serve_check_t;

static bool
s_may_serve (void *arg, const pigato__worker_t *worker)
{
    s_serve_check_t *check = (s_serve_check_t *) arg;
    return check->core->allows (check->core->allows_arg, worker->identity,
                                PIGATO__VERB_SERVE, check->name);
}

//  A worker a request may go to now: its connection is live (not one
//  that closed, whose last words are still being read), and, when name is
//  set (a wildcard's worker), it may serve that name.
static bool
s_eligible (void *arg, const pigato__worker_t *worker)
{
    s_serve_check_t *check = (s_serve_check_t *) arg;
    return pigato__conns_live (check->core->conns, &worker->conn)
        && (!check->name || s_may_serve (check, worker));
}

//  True if the policy lets the request go to a worker of target (worker
//  NULL: any worker of it) although the caller asked for service: the
//  caller must be allowed to call the version a range resolved to, and a
//  wildcard's worker to serve the name asked for. A worker of the name
//  itself was checked at READY, the name asked for at admission.
static bool
s_resolution_allowed (pigato__core_t *self, pigato__service_t *service,
                      pigato__service_t *target, pigato__request_t *request,
                      const pigato__worker_t *worker)
{
    if (target == service || !self->allows)
        return true;
    if (target->versioned
        && !self->allows (self->allows_arg, request->identity,
                          PIGATO__VERB_CALL, target->name))
        return false;
    if (target->wildcard && worker) {
        s_serve_check_t check = { self, service->name };
        return s_may_serve (&check, worker);
    }
    return true;
}

//  A worker of target for a request of service, or NULL: the load or
//  random pick among those the policy lets the request reach.
static pigato__worker_t *
s_pick (pigato__core_t *self, pigato__service_t *service,
        pigato__service_t *target, pigato__request_t *request)
{
    if (!s_resolution_allowed (self, service, target, request, NULL))
        return NULL;
    bool serve_check = target != service && target->wildcard && self->allows;
    if (!serve_check && !pigato__conns_any_dying (self->conns))
        return pigato__service_pick (target, request, self->dmode, NULL,
                                     NULL);  //  every worker is eligible
    s_serve_check_t check = { self, serve_check ? service->name : NULL };
    return pigato__service_pick (target, request, self->dmode, s_eligible,
                                 &check);
}

//  Fails a request that names a worker which is not there (or may not
//  take it: the same answer, so the policy is not probed through it).
static void
s_target_not_found (pigato__core_t *self, pigato__request_t *request)
{
    char text [PIGATO_SERVICE_MAX + 600], printable [4 * 64 + 4];
    snprintf (text, sizeof text, "E_WORKER_NOT_FOUND no worker %s serves %s",
              pigato__printable (request->target, request->target_size,
                                 printable, sizeof printable),
              request->service->name);
    s_request_fail (self, request, text);
}

//  Hands a request to the worker that took it. One that went to a worker
//  before (it was rejected, or its worker was lost and it had a retry)
//  carries the next "attempt" in its opts, so a worker can tell that it
//  may have run already (docs/protocol.md). Opts that cannot grow (out of
//  memory, over the limit) go as they were.
static void
s_request_send (pigato__core_t *self, pigato__worker_t *worker,
                pigato__request_t *request)
{
    if (request->dispatches++ > 0) {
        size_t size = 0;
        byte *opts = (byte *) pigato__opts_next_attempt (
            request->opts, request->opts_size, &size);
        if (opts && size <= PIGATO__OPTS_MAX) {
            pigato__tenant_t *tenant = (pigato__tenant_t *) request->tenant;
            if (tenant)
                tenant->pending_bytes += (int64_t) size
                                       - (int64_t) request->opts_size;
            free (request->opts);
            request->opts = opts;
            request->opts_size = size;
        }
        else {
            free (opts);
            pigato__log (PIGATO_LOG_WARNING, "event=attempt_unmarked worker=%s",
                         worker->name);
        }
    }
    if (!request->stats)
        //  A name no worker registered (a range, a wildcard's): counted
        //  with the service that serves it
        request->stats = worker->service->stats;
    self->emit->request (self->emit_arg, worker, request);
}

//  The requests that name this worker and wait for it go to it while it
//  has room, oldest first. Each is checked like any request resolved to
//  another name (s_resolution_allowed).
static void
s_serve_waiting (pigato__core_t *self, pigato__worker_t *worker)
{
    while (worker->waiting_head && pigato__worker_has_room (worker)
           && pigato__conns_live (self->conns, &worker->conn)) {
        pigato__request_t *request = worker->waiting_head;
        if (!s_resolution_allowed (self, request->service, worker->service,
                                   request, worker)) {
            s_target_not_found (self, request);
            continue;
        }
        pigato__worker_unwait (worker, request);
        pigato__worker_take (worker, request);
        s_request_send (self, worker, request);
    }
}

//  Hands queued requests of a service (the name clients asked for) to
//  workers with room, oldest first. The workers are those of the service
//  itself, else of the satisfying versions (highest first), else of the
//  longest wildcard (pigato__services_resolve). A request that only
//  workers that rejected it could take now waits (for a worker that joins
//  later, or its timeout: pigato's reject) and lets younger requests
//  pass. The service is released on return (freed if nothing holds it any
//  more).
static void
s_dispatch (pigato__core_t *self, pigato__service_t *service)
{
    pigato__service_t *targets [TARGETS_MAX];
    size_t count = service->queue_head
                     ? pigato__services_resolve (self->services, service,
                                                 targets, TARGETS_MAX)
                     : 0;
    service->pins++;  //  held until the release below
    pigato__request_t *request = count ? service->queue_head : NULL;
    while (request) {
        pigato__request_t *next = request->next;
        pigato__worker_t *worker = NULL;
        for (size_t index = 0; index < count && !worker; index++)
            worker = s_pick (self, service, targets [index], request);
        if (worker) {
            pigato__service_dequeue (service, request);
            pigato__worker_take (worker, request);
            s_request_send (self, worker, request);
        }
        else {
            //  Younger requests may still go where this one could not
            //  (a worker it rejected, a version its caller may not
            //  call); if no worker could take any of them, stop here:
            //  room on a closing connection or on a wildcard worker
            //  that may not serve this name is no room, else one such
            //  worker would make every dispatch walk the whole queue
            bool room = false;
            for (size_t index = 0; index < count && !room; index++) {
                pigato__service_t *target = targets [index];
                bool serve_check = target != service && target->wildcard
                                && self->allows;
                s_serve_check_t check = { self,
                                          serve_check ? service->name : NULL };
                for (pigato__worker_t *any = target->workers; any && !room;
                     any = any->next)
                    room = pigato__worker_has_room (any)
                        && s_eligible (&check, any);
            }
            if (!room)
                break;
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
s_dispatch_room (pigato__core_t *self, pigato__service_t *service)
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
    if (!others) {
        s_dispatch (self, service);  //  may free service
        return;
    }
    service->pins++;  //  looked at until the walk is done
    s_dispatch (self, service);
    //  The walk stops when the service has no room left, and a name it
    //  gave a worker goes to the end of the list: one room costs a look
    //  at the names that could not use it, not at every waiting name,
    //  and every name gets its turn
    pigato__service_t *last = pigato__services_pending_last (self->services);
    pigato__service_t *next;
    for (pigato__service_t *pending = pigato__services_pending (self->services);
         pending && pigato__service_has_room (service); pending = next) {
        bool final = pending == last;
        next = pending->pending_next;
        if (strncmp (pending->name, prefix, prefix_size) == 0) {
            size_t queued = pending->queued;
            pending->pins++;
            s_dispatch (self, pending);
            if (pending->queued < queued)
                pigato__services_pending_rotate (self->services, pending);
            pending->pins--;
            pigato__services_release (self->services, &pending);
        }
        else
            //  A name nothing serves leaves the walk until a wildcard or
            //  a version gains its first worker
            pigato__services_park_unservable (self->services, pending);
        if (final)
            break;
    }
    service->pins--;
    pigato__services_release (self->services, &service);
}

//  A worker has room again (a reply, a departure, a higher concurrency):
//  the requests that name it first, then its service's.
static void
s_worker_room (pigato__core_t *self, pigato__worker_t *worker)
{
    s_serve_waiting (self, worker);
    s_dispatch_room (self, worker->service);
}

//  A new request, checked and made, joins the broker: filed under the
//  client's connection, stamped with the caller, indexed, queued on its
//  service, given its inactivity deadline, and dispatched if a worker has
//  room. On failure (out of memory) nothing of it is left: the request
//  is destroyed and the service released.
static int
s_admit (pigato__core_t *self, pigato__request_t *request,
         pigato__service_t *service, pigato__worker_t *target,
         pigato__tenant_t *tenant, const pigato__submit_t *in)
{
    request->service = service;
    request->framing = in->caller.framing;
    request->conn = in->caller.conn;
    if (pigato__table_insert (self->requests, request->key.hash, &request->key,
                              request)) {
        pigato__request_destroy (&self->request_pool, &request);
        pigato__services_release (self->services, &service);
        return PIGATO_E_NOMEM;
    }
    if (s_request_touch (self, request)) {
        //  A request that could never time out is refused, not kept
        pigato__table_delete (self->requests, request->key.hash, &request->key);
        pigato__request_destroy (&self->request_pool, &request);
        pigato__services_release (self->services, &service);
        return PIGATO_E_NOMEM;
    }
    service->requests++;
    pigato__conns_file (self->conns, &request->conn, PIGATO__CONN_REQUESTS,
                        &request->conn_link);
    s_copy_text (request->identity, sizeof request->identity, in->identity);
    s_copy_text (request->curve_key, sizeof request->curve_key, in->curve_key);
    pigato__core_tenant_hold (tenant, request);
    self->counters.requests++;
    request->admitted_us = self->now_us;
    request->stats = service->stats;
    if (target) {
        //  It waits on the worker it names, never in the service's queue:
        //  dispatch of the others does not walk past it
        pigato__worker_wait (target, request);
        s_serve_waiting (self, target);
        return 0;
    }
    if (service->queue_head) {
        //  Others wait: it takes its caller's turn in the queue
        pigato__service_enqueue_fair (service, request, tenant);
        s_dispatch (self, service);
        return 0;
    }
    //  Nobody waits: a worker with room takes it at once, without the
    //  queue; else it starts the queue, in its caller's lane
    pigato__service_t *targets [TARGETS_MAX];
    size_t count = pigato__services_resolve (self->services, service, targets,
                                             TARGETS_MAX);
    pigato__worker_t *worker = NULL;
    for (size_t index = 0; index < count && !worker; index++)
        worker = s_pick (self, service, targets [index], request);
    if (worker) {
        pigato__worker_take (worker, request);
        s_request_send (self, worker, request);
        return 0;
    }
    pigato__service_enqueue (service, request, false);
    pigato__service_lane_join (service, request, tenant);
    return 0;
}

//  A request refused before it was taken: counted as one that ended so
//  (the outcome its error text says), on the name it asked for.
static void
s_refused (pigato__core_t *self, const pigato__submit_t *in, const char *error)
{
    pigato__stats_finish (self->stats,
                          pigato__stats_service (self->stats, in->name),
                          pigato__stats_outcome_of (error),
                          in->body.size + (in->opts ? in->opts->size : 0), 0);
}

//  Writes a reply text for the front-end to send, counts the refusal;
//  returns status.
static int s_refuse (pigato__core_t *self, const pigato__submit_t *in,
                     char *error, size_t error_size, int status,
                     const char *format, ...)
    __attribute__ ((format (printf, 6, 7)));
static int
s_refuse (pigato__core_t *self, const pigato__submit_t *in, char *error,
          size_t error_size, int status, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (error, error_size, format, args);
    va_end (args);
    s_refused (self, in, error);
    return status;
}

int
pigato__core_submit (pigato__core_t *self, const pigato__submit_t *in,
                     char *error, size_t error_size)
{
    error [0] = 0;
    bool mdp = in->caller.framing == PIGATO__FRAMING_MDP;
    pigato__bkey_t key;
    byte mdp_rid [9] = { 0 };  //  0, then a 64-bit counter
    pigato__bytes_t rid = in->caller.rid;
    if (mdp && !rid.size) {
        //  MDP has no rid: one is made, unique per broker (a durable
        //  request of an MDP client comes with its id, titanic.c)
        uint64_t serial = ++self->next_mdp_rid;
        for (int index = 0; index < 8; index++)
            mdp_rid [8 - index] = (byte) (serial >> (8 * index));
        rid = (pigato__bytes_t) { mdp_rid, sizeof mdp_rid };
    }
    //  Keyed by the alias its worker will echo, not by the routing id
    pigato__bytes_t alias = { pigato__aliases_get (self->aliases,
                                                   &in->caller.client,
                                                   &in->caller.conn),
                              PIGATO__ALIAS_SIZE };
    if (in->caller.client.size > sizeof ((pigato__request_t *) NULL)->client
        || pigato__bkey_set (&key, alias.data, alias.size, rid.data, rid.size))
        return PIGATO_E_INVALID;  //  a field too long
    if (pigato__table_lookup (self->requests, key.hash, &key))
        return PIGATO_E_INVALID;  //  a rid already in flight
    if (self->draining) {
        self->drain_refused++;
        return s_refuse (self, in, error, error_size, PIGATO_E_CLOSED, "%s",
                         PIGATO__E_DRAINING);
    }
    if (pigato__table_size (self->requests) >= PIGATO__PENDING_MAX)
        return s_refuse (self, in, error, error_size, PIGATO_E_NOMEM,
                         "E_OVERLOADED the broker holds too many requests; "
                         "try again later");
    if (in->opts && in->opts->size > PIGATO__OPTS_MAX)
        return s_refuse (self, in, error, error_size, PIGATO_E_INVALID,
                         "E_INVALID_OPTS request opts over %d bytes",
                         PIGATO__OPTS_MAX);
    if (self->over_memory) {
        self->counters.over_memory++;
        return s_refuse (self, in, error, error_size, PIGATO_E_NOMEM,
                         "E_OVERLOADED the broker is over its memory "
                         "ceiling; try again later");
    }
    const pigato__bytes_t *name = &in->caller.service;
    pigato__tenant_t *tenant = pigato__core_tenant_of (self, &in->caller.conn,
                                                       in->identity);
    if (!tenant)
        return s_refuse (self, in, error, error_size, PIGATO_E_NOMEM,
                         "E_OVERLOADED the broker ran out of memory; try "
                         "again later");
    if (tenant->stats)
        tenant->stats->requests++;
    if (pigato__core_quota_admit (
            self, tenant, name, in->body.size + (in->opts ? in->opts->size : 0),
            error, error_size)) {
        s_refused (self, in, error);
        return PIGATO_E_NOMEM;
    }
    //  The ACL allowed this caller: a cached reply may answer it (not a
    //  request that names its worker)
    pigato__cached_t cached;
    if (!mdp
        && !(in->opts && memmem (in->opts->data, in->opts->size, "workerId", 8))
        && pigato__cache_get (self->cache, in->name, &in->body, self->now_ms,
                              &cached)) {
        self->emit->reply (self->emit_arg, &in->caller, PIGATO__REPLY, 0,
                           &cached.data, 1, &cached.opts, NULL);
        self->counters.requests++;
        self->counters.replies++;
        pigato__service_stats_t *record = pigato__stats_service (self->stats,
                                                                 in->name);
        pigato__stats_reply (self->stats, record, cached.data.size);
        pigato__stats_finish (self->stats, record, PIGATO__OUTCOME_OK,
                              in->body.size + (in->opts ? in->opts->size : 0),
                              0);
        return 0;
    }
    pigato__service_t *service = pigato__services_require (
        self->services, name->data, name->size);
    if (service && !service->stats_checked) {
        //  Once per service record: READY makes the counters of a name
        service->stats = pigato__stats_service (self->stats, service->name);
        service->stats_checked = true;
    }
    pigato__request_t *request = service ? pigato__request_new (
                                     &self->request_pool, &in->caller.client,
                                     &alias, &rid, &key, in->body_part,
                                     &in->body, in->opts)
                                         : NULL;
    if (!request) {
        pigato__services_release (self->services, &service);
        return s_refuse (self, in, error, error_size, PIGATO_E_NOMEM,
                         "E_OVERLOADED the broker ran out of memory; try "
                         "again later");
    }
    if (pigato__request_parse_opts (request, PIGATO_TIMEOUT_MS)) {
        //  Opts we cannot read could hold a timeout or a target we would
        //  ignore: refuse the request rather than guess
        pigato__request_destroy (&self->request_pool, &request);
        pigato__services_release (self->services, &service);
        return s_refuse (self, in, error, error_size, PIGATO_E_INVALID,
                         "E_INVALID_OPTS request opts must be a JSON object");
    }
    pigato__worker_t *target = NULL;
    if (request->target) {
        //  The worker it names must be there and serve the name (itself,
        //  a version, a wildcard): else it would wait for nothing
        pigato__bytes_t id = { request->target, request->target_size };
        target = pigato__core_worker_of (self, &id);
        if (!target || !target->service
            || !pigato__service_matches (target->service, service)) {
            char printable [4 * 64 + 4];
            int rc = s_refuse (self, in, error, error_size, PIGATO_E_REPLY,
                               "E_WORKER_NOT_FOUND no worker %s serves %s",
                               pigato__printable (id.data, id.size, printable,
                                                  sizeof printable),
                               service->name);
            pigato__request_destroy (&self->request_pool, &request);
            pigato__services_release (self->services, &service);
            return rc;
        }
    }
    if (s_admit (self, request, service, target, tenant, in))
        return s_refuse (self, in, error, error_size, PIGATO_E_NOMEM,
                         "E_OVERLOADED the broker ran out of memory; try "
                         "again later");
    return 0;
}


//  The request filed under alias + rid, or NULL.
static pigato__request_t *
s_request_of_alias (pigato__core_t *self, const pigato__bytes_t *alias,
                    const pigato__bytes_t *rid)
{
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, alias->data, alias->size, rid->data, rid->size))
        return NULL;
    return (pigato__request_t *) pigato__table_lookup (self->requests, key.hash,
                                                       &key);
}

pigato__request_t *
pigato__core_request_of (pigato__core_t *self, const pigato__bytes_t *client,
                         const pigato__conn_t *conn, const pigato__bytes_t *rid)
{
    pigato__bytes_t alias = { pigato__aliases_get (self->aliases, client, conn),
                              PIGATO__ALIAS_SIZE };
    return s_request_of_alias (self, &alias, rid);
}

bool
pigato__core_servable (pigato__core_t *self, const char *name)
{
    pigato__service_t *service = pigato__services_require (self->services, name,
                                                           strlen (name));
    if (!service)
        return true;  //  out of memory: a submission finds out
    pigato__service_t *target;
    bool servable = pigato__services_resolve (self->services, service, &target,
                                              1)
                  > 0;
    pigato__services_release (self->services, &service);
    return servable;
}

void
pigato__core_request_heartbeat (pigato__core_t *self,
                                pigato__request_t *request)
{
    if (request->worker && request->worker->framing != PIGATO__FRAMING_MDP)
        self->emit->request_heartbeat (self->emit_arg, request->worker,
                                       request);
}

void
pigato__core_expire (pigato__core_t *self, int64_t now)
{
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (self->timers, now))) {
        pigato__request_t *request = pigato__container_of (
            timer, pigato__request_t, expiry);
        pigato__worker_t *worker = request->worker;
        char rid [80], service_text [PIGATO__SERVICE_TEXT];
        pigato__bytes_t rid_bytes = pigato__request_rid (request);
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=request_expired service=%s "
                     "rid=%s worker=%s",
                     s_service_text (request->service, service_text),
                     pigato__printable (rid_bytes.data, rid_bytes.size, rid,
                                        sizeof rid),
                     worker ? worker->name : "-");
        self->counters.timeouts++;
        s_request_drop (self, request, PIGATO__OUTCOME_TIMEOUT);
    }
}

//  --------------------------------------------------------------------------
//  Workers

pigato__worker_t *
pigato__core_worker_of (pigato__core_t *self, const pigato__bytes_t *routing_id)
{
    //  The last one found is remembered: the entries of a worker's batch
    //  all name it
    if (self->last_worker) {
        pigato__bytes_t id = pigato__worker_routing_id (self->last_worker);
        if (id.size == routing_id->size
            && memcmp (id.data, routing_id->data, id.size) == 0)
            return self->last_worker;
    }
    pigato__bkey_t key;
    if (pigato__bkey_set (&key, routing_id->data, routing_id->size, NULL, 0))
        return NULL;
    pigato__worker_t *worker = (pigato__worker_t *) zhashx_lookup (
        self->workers, &key);
    if (worker)
        self->last_worker = worker;
    return worker;
}

bool
pigato__core_worker_bound (const pigato__worker_t *worker, const char *identity,
                           const char *curve_key, const pigato__conn_t *conn)
{
    return streq (worker->identity, identity)
        && streq (worker->curve_key, curve_key ? curve_key : "")
        && pigato__conn_same (&worker->conn, conn);
}

int
pigato__core_worker_add (pigato__core_t *self,
                         const pigato__bytes_t *routing_id,
                         const pigato__bytes_t *name, pigato__framing_t framing,
                         const pigato__conn_t *conn, const char *identity,
                         const char *curve_key)
{
    pigato__service_t *service = pigato__services_require (
        self->services, name->data, name->size);
    pigato__worker_t *worker = (pigato__worker_t *) calloc (1, sizeof *worker);
    if (!service || !worker
        || pigato__bkey_set (&worker->key, routing_id->data, routing_id->size,
                             NULL, 0)) {
        free (worker);
        pigato__services_release (self->services, &service);
        self->emit->control (self->emit_arg, routing_id, conn,
                             PIGATO__DISCONNECT, framing);
        return PIGATO_E_NOMEM;
    }
    worker->framing = framing;
    pigato__printable (routing_id->data, routing_id->size, worker->name,
                       sizeof worker->name);
    worker->conn = *conn;
    pigato__conn_link_init (&worker->conn_link);
    pigato__conns_file (self->conns, &worker->conn, PIGATO__CONN_WORKERS,
                        &worker->conn_link);
    s_copy_text (worker->identity, sizeof worker->identity, identity);
    s_copy_text (worker->curve_key, sizeof worker->curve_key, curve_key);
    worker->serial = ++self->next_serial;
    worker->concurrency = framing == PIGATO__FRAMING_MDP ? 1
                                                         : PIGATO_CONCURRENCY;
    if (!service->stats)
        service->stats = pigato__stats_service_make (self->stats,
                                                     service->name);
    service->stats_checked = true;
    pigato__core_worker_alive (self, worker);
    zhashx_insert (self->workers, &worker->key, worker);
    pigato__service_add_worker (service, worker);
    self->workers_added++;
    if (framing != PIGATO__FRAMING_MDP)  //  RFC 18: READY has no answer
        self->emit->control (self->emit_arg, routing_id, conn, PIGATO__READY,
                             framing);
    char service_text [PIGATO__SERVICE_TEXT];
    if (pigato__log_level >= PIGATO_LOG_INFO
        && pigato__ratelimit_allow_at (&self->worker_log, "worker_event",
                                       PIGATO_LOG_INFO))
        pigato__log (PIGATO_LOG_INFO,
                     "event=worker_ready service=%s worker=%s "
                     "framing=%s",
                     s_service_text (service, service_text), worker->name,
                     framing == PIGATO__FRAMING_MDP      ? "mdp/0.2"
                     : framing == PIGATO__FRAMING_NATIVE ? "native"
                                                         : "0.0.46");
    s_dispatch_room (self, service);
    return 0;
}

void
pigato__core_worker_remove (pigato__core_t *self, pigato__worker_t *worker,
                            const char *reason, bool send_disconnect)
{
    if (send_disconnect) {
        pigato__bytes_t to = pigato__worker_routing_id (worker);
        self->emit->control (self->emit_arg, &to, &worker->conn,
                             PIGATO__DISCONNECT, worker->framing);
    }
    pigato__service_t *service = worker->service;
    int requeued = 0, failed = 0;
    while (worker->waiting_head) {
        //  They named this worker: nobody else may take them
        s_target_not_found (self, worker->waiting_head);
        failed++;
    }
    while (worker->requests) {
        pigato__request_t *request = worker->requests;
        if (request->retries_left > 0 && !request->target) {
            request->retries_left--;
            pigato__worker_release (worker, request);
            pigato__service_enqueue (request->service, request, true);
            self->counters.retries++;
            requeued++;
        }
        else {
            s_request_fail (self, request,
                            "E_WORKER_LOST the worker "
                            "handling the request went away");
            failed++;
        }
    }
    char service_text [PIGATO__SERVICE_TEXT];
    if (pigato__log_level >= PIGATO_LOG_INFO
        && pigato__ratelimit_allow_at (&self->worker_log, "worker_event",
                                       PIGATO_LOG_INFO))
        pigato__log (PIGATO_LOG_INFO,
                     "event=worker_gone worker=%s service=%s "
                     "reason=%s requeued=%d failed=%d",
                     worker->name, s_service_text (service, service_text),
                     reason, requeued, failed);
    self->counters.workers_gone++;
    if (service)
        pigato__service_remove_worker (service, worker);
    pigato__conns_unfile (self->conns, &worker->conn_link);
    if (self->last_worker == worker)
        self->last_worker = NULL;
    zhashx_delete (self->workers, &worker->key);
    if (service)
        s_dispatch_room (self, service);  //  releases it
}

void
pigato__core_worker_alive (pigato__core_t *self, pigato__worker_t *worker)
{
    worker->expires = self->now_ms
                    + (int64_t) self->heartbeat_ms * self->liveness;
}

void
pigato__core_worker_concurrency (pigato__core_t *self, pigato__worker_t *worker,
                                 double value)
{
    int previous = worker->concurrency;
    worker->concurrency = value < 0 ? -1 : value > 1e6 ? 1000000 : (int) value;
    pigato__worker_update (worker);
    if (worker->concurrency != previous)
        s_worker_room (self, worker);
}

//  A reject: back to the head of its queue; dispatch skips workers that
//  rejected it, so it waits for another worker (one that joins later
//  too) until its timeout. It fails at once only when it names its worker,
//  or after PIGATO__REJECTS_MAX rejects.
static void
s_worker_reject (pigato__core_t *self, pigato__worker_t *worker,
                 pigato__request_t *request)
{
    self->counters.rejects++;
    pigato__service_t *service = request->service;
    if (pigato__log_level >= PIGATO_LOG_DEBUG) {
        char rid [80], service_text [PIGATO__SERVICE_TEXT];
        pigato__bytes_t rid_bytes = pigato__request_rid (request);
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=request_rejected service=%s rid=%s worker=%s "
                     "rejects=%zu",
                     s_service_text (service, service_text),
                     pigato__printable (rid_bytes.data, rid_bytes.size, rid,
                                        sizeof rid),
                     worker->name, request->rejected_count + 1);
    }
    if (request->rejected_count >= PIGATO__REJECTS_MAX) {
        //  A worker that comes back again and again (a new serial each
        //  time) must not grow the list, and every pick's scan, for ever
        char text [96];
        snprintf (text, sizeof text,
                  "E_REJECTED the request was rejected by %d workers",
                  PIGATO__REJECTS_MAX);
        s_request_fail (self, request, text);
        s_worker_room (self, worker);
        return;
    }
    if (pigato__request_add_reject (request, worker->serial)) {
        //  Out of memory: failed here, while the worker still holds it,
        //  so nothing below reads a service the failure may have freed
        s_request_fail (self, request, "E_NOMEM broker out of memory");
        s_worker_room (self, worker);
        return;
    }
    if (request->target) {
        //  Nobody else may take it
        s_request_fail (self, request,
                        "E_REJECTED the worker the request names rejected "
                        "it");
        s_worker_room (self, worker);
        return;
    }
    pigato__worker_release (worker, request);
    pigato__service_enqueue (service, request, true);
    s_dispatch (self, service);
    s_serve_waiting (self, worker);
    if (worker->service != service)
        s_dispatch_room (self, worker->service);
}

bool
pigato__core_worker_reply (pigato__core_t *self, pigato__worker_t *worker,
                           const pigato__bytes_t *alias,
                           const pigato__bytes_t *rid, int type, int status,
                           const pigato__bytes_t *body, size_t body_count,
                           const pigato__bytes_t *opts, zmq_msg_t *body_part)
{
    pigato__request_t *request;
    if (worker->framing == PIGATO__FRAMING_MDP) {
        request = worker->requests;
        if (!request) {
            if (!worker->mdp_stale)
                return false;  //  a reply nobody asked for
            if (type == PIGATO__REPLY) {
                //  The FINAL of a request that is gone: free again
                worker->mdp_stale = false;
                worker->concurrency = 1;
                pigato__worker_update (worker);
                s_worker_room (self, worker);
            }
            self->counters.late_replies++;
            return true;
        }
        pigato__bytes_t holder = pigato__request_alias (request);
        if (holder.size != alias->size
            || memcmp (holder.data, alias->data, holder.size) != 0)
            return false;
    }
    else {
        request = s_request_of_alias (self, alias, rid);
        if (!request || request->worker != worker) {
            //  Late (expired, client gone) or foreign: drop, keep the worker
            self->counters.late_replies++;
            char rid_text [80];
            pigato__log (PIGATO_LOG_DEBUG,
                         "event=reply_dropped worker=%s "
                         "rid=%s reason=unknown_rid",
                         worker->name,
                         pigato__printable (rid->data, rid->size, rid_text,
                                            sizeof rid_text));
            return true;
        }
    }
    if (type == PIGATO__REJECT) {
        s_worker_reject (self, worker, request);
        return true;
    }
    if (type == PIGATO__REPLY && status == 0
        && request->framing != PIGATO__FRAMING_MDP && opts) {
        int64_t ttl = pigato__cache_ttl (opts);
        pigato__bytes_t request_body = pigato__request_body (request);
        char service_text [PIGATO__SERVICE_TEXT];
        if (ttl > 0 && body_count == 1
            && pigato__cache_put (self->cache, request->service->name,
                                  &request_body, &body [0], opts,
                                  self->now_ms + ttl))
            //  Out of memory, or larger than the cache: the reply still
            //  goes out, uncached
            pigato__log (PIGATO_LOG_DEBUG, "event=cache_skipped service=%s",
                         s_service_text (request->service, service_text));
    }
    pigato__caller_t caller = s_caller (request);
    self->emit->reply (self->emit_arg, &caller, type, status, body, body_count,
                       opts, body_part);
    size_t bytes = body_count ? body [0].size : 0;
    for (size_t index = 1; index < body_count; index++)
        bytes += body [index].size;  //  MDP
    pigato__stats_reply (self->stats, request->stats, bytes);
    if (type == PIGATO__PARTIAL) {
        self->counters.partials++;
        s_request_alive (self, request);
    }
    else {
        self->counters.replies++;
        request->answered = true;
        s_request_finish (self, request,
                          status == 0 ? PIGATO__OUTCOME_OK
                                      : PIGATO__OUTCOME_ERROR);
        s_worker_room (self, worker);
    }
    return true;
}

void
pigato__core_check_workers (pigato__core_t *self, int64_t now)
{
    zlistx_t *dead = NULL;
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->workers);
         worker; worker = (pigato__worker_t *) zhashx_next (self->workers))
        if (worker->expires <= now) {
            if (!dead)
                dead = zlistx_new ();
            if (dead)
                zlistx_add_end (dead, worker);
        }
        else if (worker->framing == PIGATO__FRAMING_MDP) {
            //  RFC 18: the broker heartbeats its workers
            pigato__bytes_t to = pigato__worker_routing_id (worker);
            self->emit->control (self->emit_arg, &to, &worker->conn,
                                 PIGATO__HEARTBEAT, PIGATO__FRAMING_MDP);
        }
        else if (self->next_mdp_rid || self->heartbeat_conn < 0) {
            //  An MDP client never heartbeats its requests (RFC 18 has no
            //  such thing), nor does anyone a durable request: the broker
            //  does it for them while they are held, so that a pigato
            //  worker does not take them for abandoned
            //  (pigato_reply_active) and, for pigato serve --CMD, kill
            //  their commands. A walk of what workers hold, once a
            //  heartbeat, only on a broker that has seen MDP clients or
            //  has a store (never of what waits in queues)
            for (pigato__request_t *request = worker->requests; request;
                 request = request->next)
                if (request->framing == PIGATO__FRAMING_MDP
                    || (self->heartbeat_conn < 0
                        && request->conn.fd == self->heartbeat_conn))
                    self->emit->request_heartbeat (self->emit_arg, worker,
                                                   request);
        }
    if (!dead)
        return;
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (dead);
         worker; worker = (pigato__worker_t *) zlistx_next (dead))
        pigato__core_worker_remove (self, worker, "expired", true);
    zlistx_destroy (&dead);
}

void
pigato__core_connection_lost (pigato__core_t *self, const pigato__conn_t *dead)
{
    pigato__core_connection_disown (self, dead);
    pigato__conn_link_t *link;
    while ((link = pigato__conns_filed (self->conns, dead->fd,
                                        PIGATO__CONN_WORKERS))) {
        pigato__worker_t *worker = pigato__container_of (link, pigato__worker_t,
                                                         conn_link);
        if (pigato__conn_same (&worker->conn, dead))
            pigato__core_worker_remove (self, worker, "disconnected", false);
        else
            pigato__conns_unfile (self->conns, link);  //  stale filing
    }
    size_t dropped = 0;
    while ((link = pigato__conns_filed (self->conns, dead->fd,
                                        PIGATO__CONN_REQUESTS))) {
        pigato__request_t *request = pigato__container_of (
            link, pigato__request_t, conn_link);
        if (!pigato__conn_same (&request->conn, dead)) {
            pigato__conns_unfile (self->conns, link);
            continue;
        }
        pigato__core_request_drop (self, request);
        dropped++;
    }
    if (dropped)
        pigato__log (PIGATO_LOG_DEBUG, "event=client_gone requests_dropped=%zu",
                     dropped);
}
