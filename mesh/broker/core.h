/*  =========================================================================
    core.h - the broker's routing core: services and their queues, workers,
    requests and their lifecycle (admit, dispatch, reject, retry, expiry,
    worker loss), $dir and MMI answers. It touches no socket: the
    front-ends (front_pigato.c for 0.0.46 and native, front_mdp.c for
    MDP/0.2) decode, check the sender against the policy, and call it; it
    decides and emits through one send interface (pigato__emit_t), which
    send.c implements on the ROUTER and tests implement with a recorder.
    Not installed.
    =========================================================================
*/
#ifndef PIGATO_CORE_H_INCLUDED
#define PIGATO_CORE_H_INCLUDED

#include "service.h"
#include "alias.h"
#include "cache.h"
#include "stats.h"
#include "../base/table.h"
#include "../../auth/acl.h"

#define PIGATO__PENDING_MAX     1000000  //  requests held at once
#define PIGATO__REJECTS_MAX     64   //  workers a request may be rejected by
#define PIGATO__WORKER_LOG_RATE 200  //  worker_ready/_gone lines a second

//  Requests for the broker's own services ($dir, mmi.*), per identity: a
//  token bucket of PIGATO__INTERNAL_BURST requests, refilled at
//  PIGATO__INTERNAL_RATE a second. Over it: E_QUOTA at once.
#define PIGATO__INTERNAL_RATE  20
#define PIGATO__INTERNAL_BURST 50
//  Buckets (and idle tenants, below) kept before full ones go.
#define PIGATO__QUOTAS_MAX 4096

//  A $dir answer is at most PIGATO__DIR_ANSWER_MAX bytes and lists at
//  most PIGATO__DIR_WORKERS_MAX worker ids per service; what does not
//  fit is left out (whole entries) and the answer says it is truncated.
#define PIGATO__DIR_ANSWER_MAX  65536
#define PIGATO__DIR_WORKERS_MAX 256
//  How a cut answer says so: the reply opts (pigato framings), a second
//  body frame (MDP, which has no opts).
#define PIGATO__TRUNCATED_OPTS "{\"truncated\":true}"

#define CORE_COUNTERS(X)                                                       \
    X (requests)     /* requests accepted */                                   \
    X (replies)      /* final replies forwarded */                             \
    X (partials)     /* partial replies forwarded */                           \
    X (rejects)      /* rejects received */                                    \
    X (timeouts)     /* requests expired in the broker */                      \
    X (failed)       /* requests failed by the broker (error reply) */         \
    X (retries)      /* re-dispatches after worker loss */                     \
    X (bad_messages) /* malformed or out-of-protocol messages */               \
    X (late_replies) /* replies for unknown or foreign rids, dropped */        \
    X (workers_gone) /* workers removed (disconnect or expiry) */              \
    X (unsent)       /* messages for a closing connection, dropped */          \
    X (over_quota)   /* requests refused with E_QUOTA: an identity's   \
                        limits, or the rate of $dir and mmi.* */       \
    X (over_memory)  /* requests refused with E_OVERLOADED: memory */

typedef struct {
#define COUNTER_FIELD(name) int64_t name;
    CORE_COUNTERS (COUNTER_FIELD)
#undef COUNTER_FIELD
} pigato__counters_t;

//  Who a reply goes to: a client's routing id on its connection, its rid,
//  its framing, and (MDP replies carry it) the service it asked for.
//  Borrowed.
typedef struct {
    pigato__framing_t framing;
    pigato__bytes_t client;
    pigato__conn_t conn;
    pigato__bytes_t rid;
    pigato__bytes_t service;
} pigato__caller_t;

//  The one way out of the core. Every call is a message to one peer, in
//  that peer's framing; arg is the emitter's (pigato__core_new).
typedef struct {
    //  A request to the worker it was dispatched to.
    void (*request) (void *arg, pigato__worker_t *worker,
                     pigato__request_t *request);
    //  A client's request heartbeat, to the worker holding the request.
    void (*request_heartbeat) (void *arg, pigato__worker_t *worker,
                               pigato__request_t *request);
    //  A partial or final reply (status 0 or -1) to a caller: body is
    //  body_count frames (MDP workers send several; others one), opts may
    //  be NULL; body_part, if not NULL, holds body [0]'s bytes (shared,
    //  not copied).
    void (*reply) (void *arg, const pigato__caller_t *to, int type, int status,
                   const pigato__bytes_t *body, size_t body_count,
                   const pigato__bytes_t *opts, zmq_msg_t *body_part);
    //  A final error reply to a caller; text starts with an E_ code.
    void (*error) (void *arg, const pigato__caller_t *to, const char *text);
    //  A READY acknowledgement, HEARTBEAT or DISCONNECT to a worker.
    void (*control) (void *arg, const pigato__bytes_t *worker,
                     const pigato__conn_t *conn, int type,
                     pigato__framing_t framing);
    //  The drain notice to a client (core_drain.c): the broker takes no
    //  new requests. Not for MDP clients (RFC 18 has no such message).
    void (*notice) (void *arg, const pigato__caller_t *to);
} pigato__emit_t;

//  The policy, as the core asks it about names that resolution adds
//  (auth/acl.h's verbs): true if identity may do verb on name.
typedef bool (pigato__allows_fn) (void *arg, const char *identity, int verb,
                                  const char *name);

//  The policy's quotas for an identity (auth/acl.h, `limit` lines).
typedef void (pigato__limits_fn) (void *arg, const char *identity,
                                  pigato__limits_t *limits);

//  The answer to $stats for identity (metrics.c: the broker's figures,
//  only what identity may see; only: the one service the request body
//  named, or NULL); *truncated if cut to its bound. A JSON text the
//  caller frees, NULL if out of memory.
typedef char *(pigato__stats_answer_fn) (void *arg, const char *identity,
                                         const char *only, bool *truncated);

//  An identity's share of the broker (core_quota.c): what its requests
//  hold, its request-rate bucket, its limits. Its requests point at it,
//  and it is the caller their service's fair queue takes in turn.
typedef struct {
    char identity [PIGATO__NAME_MAX + 1];
    pigato__limits_t limits;
    uint64_t epoch;         //  the policy the limits come from
    int64_t pending;        //  requests held, queued or at a worker
    int64_t pending_bytes;  //  their bodies and opts
    double tokens;          //  the rate bucket: tokens left
    int64_t at_ms;          //  when it was last filled
    int64_t connections;    //  connections it sent a message on, open
    //  Its counters (stats.h)
    pigato__identity_stats_t *stats;
    int64_t stored;        //  durable requests it has stored (titanic.c)
    int64_t stored_bytes;  //  their bodies, opts and replies
} pigato__tenant_t;

//  Whose a connection is (its first message's identity), by fd.
typedef struct {
    uint32_t generation;
    pigato__tenant_t *tenant;  //  NULL: nobody's yet
    bool refused;              //  this generation was one too many
} pigato__conn_owner_t;

//  What pigato__core_connection_owner says of a connection.
typedef enum {
    PIGATO__CONN_OWNED = 0,      //  counted: its messages go on
    PIGATO__CONN_REFUSED,        //  one too many, now: shut it
    PIGATO__CONN_REFUSED_BEFORE  //  a message of one refused already
} pigato__conn_owner_status_t;

typedef struct {
    pigato__services_t *services;         //  name -> service
    zhashx_t *workers;                    //  routing id -> worker
    pigato__worker_t *last_worker;        //  the last one looked up (a cache;
                                          //  cleared when that worker goes)
    pigato__table_t *requests;            //  client alias + rid -> request
    pigato__aliases_t *aliases;           //  what workers see of clients
    pigato__request_pool_t request_pool;  //  spare request records
    pigato__heap_t *timers;               //  request inactivity deadlines
    pigato__conns_t *conns;       //  connection -> its workers, requests
    pigato__cache_t *cache;       //  cached replies (opts cache: MS)
    int dmode;                    //  pigato__dmode_t
    int heartbeat_ms;             //  heartbeat interval
    int liveness;                 //  intervals before a worker is dead
    uint64_t next_serial;         //  worker registration serials
    uint64_t next_mdp_rid;        //  rids made for MDP client requests
                                  //  (not 0: MDP clients came)
    uint64_t workers_added;       //  worker registrations so far
    int heartbeat_conn;           //  a pseudo connection (fd < 0) whose
                                  //  held requests the broker heartbeats:
                                  //  durable requests' (0: none)
    int64_t now_ms;               //  the clock at the start of this turn
    int64_t now_us;               //  the same in microseconds (latency)
    pigato__counters_t counters;  //  see CORE_COUNTERS
    const pigato__emit_t *emit;   //  the way out
    void *emit_arg;               //  its argument
    pigato__allows_fn *allows;    //  the policy, NULL: allows all
    void *allows_arg;             //  its argument
    bool over_memory;             //  the broker is over its memory
                                  //  ceiling: new requests are refused
    bool draining;                //  the broker drains: new requests get
                                  //  E_DRAINING (core_drain.c)
    int64_t drain_refused;        //  requests refused so

    //  $dir and mmi.* quotas (core_internal.c): identity -> its bucket,
    //  and the rate limit of event=quota_exceeded lines
    zhashx_t *quotas;
    pigato__ratelimit_t quota_log;
    //  worker_ready and worker_gone lines: a worker may register and
    //  leave in a loop (PIGATO__WORKER_LOG_RATE lines a second)
    pigato__ratelimit_t worker_log;

    //  Identities' limits (core_quota.c): identity -> tenant, the last
    //  one looked up (a batch comes from one caller), the policy's
    //  limits and its epoch (+1 when it changes)
    zhashx_t *tenants;
    pigato__tenant_t *last_tenant;
    pigato__limits_fn *limits;
    void *limits_arg;
    uint64_t limits_epoch;
    pigato__conn_owner_t *owners;  //  by fd: connections' identities
    size_t owners_size;

    //  What operators see (stats.h), and who answers $stats
    pigato__stats_t *stats;
    pigato__stats_answer_fn *stats_answer;
    void *stats_answer_arg;
} pigato__core_t;

//  A new core that emits through emit (borrowed; lives longer than the
//  core). NULL if out of memory.
pigato__core_t *pigato__core_new (const pigato__emit_t *emit, void *emit_arg);

//  Frees requests (without a reply), workers and services.
void pigato__core_destroy (pigato__core_t **self_p);

//  The policy the core asks when resolution gives a request to a worker
//  of another name than the one its caller wrote (and the front-end
//  checked): the caller must be allowed to `call` the version a range
//  resolved to, and a wildcard's worker to `serve` the name asked for.
//  Without one (NULL), everything is allowed.
void pigato__core_set_policy (pigato__core_t *self, pigato__allows_fn *allows,
                              void *arg);

//  The quotas of identities (a `limit` line's keys, auth/acl.h): asked
//  once per identity, and again after every call (a policy reload).
//  Without one (NULL), every identity has the defaults.
void pigato__core_set_limits (pigato__core_t *self, pigato__limits_fn *limits,
                              void *arg);

//  Reads the clock into now_ms and now_us: once a turn of the loop.
static inline void
pigato__core_clock (pigato__core_t *self)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    self->now_us = (int64_t) now.tv_sec * 1000000 + now.tv_nsec / 1000;
    self->now_ms = self->now_us / 1000;
}

//  Who answers $stats (without one, $stats is E_RESERVED_SERVICE).
void pigato__core_set_stats_answer (pigato__core_t *self,
                                    pigato__stats_answer_fn *answer, void *arg);

//  --------------------------------------------------------------------------
//  Requests

//  A request as a front-end decoded it. Everything is borrowed; the core
//  keeps what it needs (the body by sharing body_part when it holds it).
typedef struct {
    pigato__caller_t caller;      //  framing, client on its connection,
                                  //  rid (empty for MDP: the core makes
                                  //  one), service asked
    const char *name;             //  that service name as text (the
                                  //  front-end's checked copy)
    pigato__bytes_t body;         //  one body (MDP: frames packed, mdp.h)
    zmq_msg_t *body_part;         //  the part body lies in, or NULL
    const pigato__bytes_t *opts;  //  opts (JSON object) or NULL
    const char *identity;         //  the caller (already allowed `call`)
    const char *curve_key;        //  its CURVE key, NULL if none
} pigato__submit_t;

//  A request from a caller the policy allowed. Answered from the cache
//  if it may be, else filed, queued and dispatched. Returns 0 when the
//  request was taken (or answered), else a negative PIGATO_E_*, with a
//  reply text in error (E_ code, then a sentence) that the front-end
//  sends the caller in its framing when there is one:
//   * PIGATO_E_INVALID: a malformed request (a field too long, a rid
//     already in flight: no text) or opts that are not a JSON object
//     (E_INVALID_OPTS); the front-end counts it as a bad message;
//   * PIGATO_E_NOMEM: E_OVERLOADED (too many requests held, the broker
//     over its memory ceiling (over_memory), or out of memory), or
//     E_QUOTA (the caller's identity is over one of its limits: requests
//     or bytes held, or its request rate; counted in over_quota and
//     logged, rate-limited, as event=quota_exceeded);
//   * PIGATO_E_REPLY: E_WORKER_NOT_FOUND (opts workerId names no worker);
//   * PIGATO_E_CLOSED: E_DRAINING (the broker drains, pigato__core_drain;
//     counted in drain_refused): not a failure, the client sends the
//     request to another broker.
int pigato__core_submit (pigato__core_t *self, const pigato__submit_t *in,
                         char *error, size_t error_size) PIGATO__MUST_CHECK;

//  The request a client (routing id on its connection) has in flight
//  under rid, or NULL.
pigato__request_t *pigato__core_request_of (pigato__core_t *self,
                                            const pigato__bytes_t *client,
                                            const pigato__conn_t *conn,
                                            const pigato__bytes_t *rid);

//  True if a worker could take a request for the service name now (its
//  own, a version, a wildcard), busy or not.
bool pigato__core_servable (pigato__core_t *self, const char *name);

//  Forwards a client's request heartbeat to the worker holding it (none
//  while it is queued).
void pigato__core_request_heartbeat (pigato__core_t *self,
                                     pigato__request_t *request);

//  Fails a request with a final error reply and finishes it. text starts
//  with an E_ code, then a sentence for people. A worker that held it
//  gets its slot back (and its service a dispatch).
void pigato__core_request_fail (pigato__core_t *self,
                                pigato__request_t *request, const char *text);

//  Drops a request without a reply (its client is gone or no longer in
//  the policy). A worker that held it gets its slot back.
void pigato__core_request_drop (pigato__core_t *self,
                                pigato__request_t *request);

//  The caller a request's replies go to.
pigato__caller_t pigato__core_caller (pigato__request_t *request);

//  Ends a request with an error reply (text: an E_ code, then a sentence;
//  NULL: no reply), counted nowhere and with no dispatch after it: a
//  worker that held it gets its slot back but nothing in its place yet.
//  What a drain hands back or abandons (core_drain.c): the caller may
//  hold other requests it has yet to end, which a dispatch could move.
void pigato__core_request_end (pigato__core_t *self, pigato__request_t *request,
                               const char *text);

//  Requests whose inactivity deadline passed end (no reply: clients keep
//  their own timers); their workers get the slot back.
void pigato__core_expire (pigato__core_t *self, int64_t now);

//  --------------------------------------------------------------------------
//  Workers

//  The worker registered under a routing id, or NULL.
pigato__worker_t *pigato__core_worker_of (pigato__core_t *self,
                                          const pigato__bytes_t *routing_id);

//  True if a message from this worker's routing id comes from the
//  identity and key that registered it, on the same connection. Routing
//  ids are chosen by peers: anything else is another peer taking it over.
bool pigato__core_worker_bound (const pigato__worker_t *worker,
                                const char *identity, const char *curve_key,
                                const pigato__conn_t *conn);

//  Registers a worker for a service (the caller checked the name is not
//  reserved and that the identity may serve it), acknowledges (not MDP:
//  RFC 18 has none) and dispatches waiting requests. 0, or
//  PIGATO_E_NOMEM (the worker is then told to DISCONNECT).
int pigato__core_worker_add (pigato__core_t *self,
                             const pigato__bytes_t *routing_id,
                             const pigato__bytes_t *service,
                             pigato__framing_t framing,
                             const pigato__conn_t *conn, const char *identity,
                             const char *curve_key) PIGATO__MUST_CHECK;

//  Removes a worker: its requests retry (if they may) or fail with
//  E_WORKER_LOST; optionally tells it DISCONNECT.
void pigato__core_worker_remove (pigato__core_t *self, pigato__worker_t *worker,
                                 const char *reason, bool send_disconnect);

//  A message came from the worker: it is alive for another liveness.
void pigato__core_worker_alive (pigato__core_t *self, pigato__worker_t *worker);

//  The worker announced its concurrency (-1 unlimited).
void pigato__core_worker_concurrency (pigato__core_t *self,
                                      pigato__worker_t *worker,
                                      double concurrency);

//  A worker's partial or final reply (body_count frames), or reject, for
//  the request of alias + rid (the client field the worker was sent: an
//  alias, alias.h). Accepted only if that request was dispatched to this
//  very worker; anything else is counted as late. An MDP worker names no
//  rid: its one request is meant (alias must match; false if not, and
//  the caller removes the worker).
bool pigato__core_worker_reply (pigato__core_t *self, pigato__worker_t *worker,
                                const pigato__bytes_t *alias,
                                const pigato__bytes_t *rid, int type,
                                int status, const pigato__bytes_t *body,
                                size_t body_count, const pigato__bytes_t *opts,
                                zmq_msg_t *body_part);

//  Workers that stopped heartbeating are removed; MDP workers are
//  heartbeated (RFC 18: the broker heartbeats its workers).
void pigato__core_check_workers (pigato__core_t *self, int64_t now);

//  A connection closed: its workers are gone at once (their requests
//  retry or fail), its clients' requests are dropped, so no reply can
//  reach a later owner of its routing id.
void pigato__core_connection_lost (pigato__core_t *self,
                                   const pigato__conn_t *dead);

//  --------------------------------------------------------------------------
//  Internal services: $dir and MMI (RFC 8)

//  True if the name is the broker's own: "$..." or "mmi.*". Such names
//  are never served by workers.
bool pigato__core_reserved (const pigato__bytes_t *name);

//  The answer to a request for a reserved name from identity, the same
//  for every framing (each front-end encodes it). Only what identity may
//  `call` is shown: a service it may not call is answered as one that
//  does not exist, so the answer is no oracle for the policy.
//   * $dir -> JSON of worker ids per service, every service identity may
//     call that has workers; a body naming one service: the array of its
//     ids ("[]" if it has none or identity may not call it). At most
//     PIGATO__DIR_ANSWER_MAX bytes and PIGATO__DIR_WORKERS_MAX ids per
//     service: what does not fit is left out, whole, and *truncated is
//     set (else cleared);
//   * $stats -> the stats_answer's JSON (pigato__core_set_stats_answer);
//   * mmi.service -> "200" if identity may call the name the body gives
//     and a request for it would find a worker now that the policy lets
//     it reach, else "404"; other mmi.* -> "501";
//   * other $ names -> an E_RESERVED_SERVICE error;
//   * more than identity's quota (PIGATO__INTERNAL_RATE a second, bursts
//     of PIGATO__INTERNAL_BURST) -> an E_QUOTA error, counted
//     (over_quota) and logged (event=quota_exceeded), rate-limited.
//  Returns the answer text (the caller frees it) with *status 0, or the
//  error text with *status -1; NULL if out of memory.
char *pigato__core_internal (pigato__core_t *self, const char *identity,
                             const pigato__bytes_t *name,
                             const pigato__bytes_t *body, int *status,
                             bool *truncated);

//  Reports quota_exceeded, worker_ready and worker_gone lines held back
//  by their rate limits (a timer).
void pigato__core_internal_tick (pigato__core_t *self);

//  --------------------------------------------------------------------------
//  Quotas of identities (core_quota.c), for core.c

//  The tenant record of an identity (NULL or "" is one too), made if
//  there is none; its limits brought up to the policy. NULL if out of
//  memory.
pigato__tenant_t *pigato__core_tenant (pigato__core_t *self,
                                       const char *identity);

//  The same for a message on conn from identity: the connection's owner
//  when it has one (pigato__core_connection_owner; no lookup by name).
pigato__tenant_t *pigato__core_tenant_of (pigato__core_t *self,
                                          const pigato__conn_t *conn,
                                          const char *identity);

//  Checks a new request of bytes against the tenant's limits and, if it
//  passes, takes its rate token. 0, or a refusal: counted, logged, and
//  an E_QUOTA text written to error; returns PIGATO_E_NOMEM.
int pigato__core_quota_admit (pigato__core_t *self, pigato__tenant_t *tenant,
                              const pigato__bytes_t *service, size_t bytes,
                              char *error, size_t error_size);

//  A connection's identity is its first message's: from then until it
//  closes (pigato__core_connection_lost) it counts against that
//  identity's `connections` limit. OWNED if the message may go on;
//  REFUSED if the identity already has as many connections open as its
//  limit allows (counted in over_quota, logged as event=quota_exceeded
//  limit=connections): the caller shuts this one and drops what it sent;
//  REFUSED_BEFORE for what such a connection sends until it is gone
//  (dropped, not counted again). Connections of unknown fd (-1) are not
//  counted.
int pigato__core_connection_owner (pigato__core_t *self,
                                   const pigato__conn_t *conn,
                                   const char *identity);

//  A connection closed: its identity has one less open.
void pigato__core_connection_disown (pigato__core_t *self,
                                     const pigato__conn_t *dead);

//  Checks a new durable request of bytes (titanic.c) against the tenant's
//  `stored` and `stored-bytes` limits and its rate, and takes a rate
//  token: 0, or a refusal (counted, logged, an E_QUOTA text in error)
//  returning PIGATO_E_NOMEM. The caller counts what it stores in the
//  tenant's stored and stored_bytes.
int pigato__core_quota_store (pigato__core_t *self, pigato__tenant_t *tenant,
                              const pigato__bytes_t *service, size_t bytes,
                              char *error, size_t error_size);

//  A request the tenant holds now / no longer.
void pigato__core_tenant_hold (pigato__tenant_t *tenant,
                               pigato__request_t *request);
void pigato__core_tenant_release (pigato__tenant_t *tenant,
                                  pigato__request_t *request);

//  Logs one E_QUOTA refusal of identity for a service (limit: which),
//  rate-limited, and counts it.
void pigato__core_quota_log (pigato__core_t *self, const char *identity,
                             const pigato__bytes_t *service, const char *limit);

//  --------------------------------------------------------------------------
//  Drain (core_drain.c; the broker's side is drain.c)

//  What a draining broker answers a new request with: the request never
//  reached a worker here, and a libpigato client sends it to another
//  broker (docs/protocol.md, "Drain").
#define PIGATO__E_DRAINING                                                     \
    "E_DRAINING the broker is draining and takes no new requests; send it "    \
    "to another broker"

//  Starts a drain: from now on pigato__core_submit refuses new requests
//  (E_DRAINING). Every client whose requests the broker holds is told at
//  once (emit->notice, once per client connection; not MDP clients).
//  Requests no worker has seen (queued, never dispatched) of clients
//  that can send them elsewhere are handed back with E_DRAINING: native
//  framing (libpigato), not naming a worker (a workerId is this broker's
//  only). The others (0.0.46 and MDP peers, for which an error would be a
//  failure) stay and are served. Returns how many were handed back.
size_t pigato__core_drain (pigato__core_t *self);

//  Ends every request the broker still holds with the error text (at a
//  drain's timeout); returns how many.
size_t pigato__core_drain_abandon (pigato__core_t *self, const char *text);

//  Room for a service name from a peer, escaped for a log line.
#define PIGATO__SERVICE_TEXT (PIGATO_SERVICE_MAX * 4 + 4)

#endif
