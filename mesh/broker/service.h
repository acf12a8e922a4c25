/*  =========================================================================
    service.h - the broker's routing state: services, their FIFO queues and
    workers, and request records. Pure bookkeeping, no sockets; the
    decisions made with it are core.c's.

    A request is in one of three lists, linked through prev/next: queued
    on its service (worker and waiting_on NULL), waiting for the one
    worker it names (opts workerId; waiting_on), or held by a worker
    (worker).
    =========================================================================
*/
#ifndef PIGATO_SERVICE_H_INCLUDED
#define PIGATO_SERVICE_H_INCLUDED

#include "../base/bkey.h"
#include "../wire/codec.h"
#include "../base/heap.h"
#include "../base/conns.h"
#include "semver.h"

typedef struct _pigato__worker_t pigato__worker_t;
typedef struct _pigato__request_t pigato__request_t;
typedef struct _pigato__service_t pigato__service_t;
typedef struct _pigato__services_t pigato__services_t;
typedef struct _pigato__lane_t pigato__lane_t;

typedef enum {
    PIGATO__DMODE_LOAD = 0,  //  least requests in flight
    PIGATO__DMODE_RAND = 1   //  random among those with room
} pigato__dmode_t;

struct _pigato__worker_t {
    pigato__bkey_t key;             //  routing id, table key
    pigato__framing_t framing;      //  046, NATIVE (once it sent native)
                                    //  or MDP (one request at a time)
    bool mdp_stale;                 //  still busy with a request that is
                                    //  gone (expired): waits for its FINAL
    char name [2 * 64 + 1];         //  printable id for logs
    pigato__conn_t conn;            //  the connection it registered on
    pigato__conn_link_t conn_link;  //  filed under that connection
    char identity [65];             //  who registered it (User-Id)
    char curve_key [PIGATO_Z85_KEY_SIZE + 1];  //  its CURVE key, "" if none
    uint64_t serial;                  //  unique per registration (reject lists)
    pigato__service_t *service;       //  the service it offers
    int concurrency;                  //  max in flight, -1 = unlimited
    size_t in_flight;                 //  requests it holds
    uint64_t dispatched;              //  total dispatched (load tie-break)
    int64_t expires;                  //  liveness deadline
    pigato__timer_t ready_node;       //  in service's heap while it has room
    pigato__worker_t *prev, *next;    //  in service's worker list
    pigato__request_t *requests;      //  requests it holds (list head)
    pigato__request_t *waiting_head;  //  requests that name it and wait
    pigato__request_t *waiting_tail;  //  for room, oldest first
};

struct _pigato__request_t {
    pigato__bkey_t key;   //  client alias (alias.h) + rid, table key
    uint8_t client_size;  //  the client's routing id, which only
    byte client [255];    //  replies use (never shown to a worker)
    zmq_msg_t body_part;  //  holds the body (shares the part it
                          //  came in: no copy)
    size_t body_offset;   //  body within body_part
    size_t body_size;
    byte *opts;  //  opts as sent (copy), NULL if none
    size_t opts_size;
    pigato__framing_t framing;       //  its client's (so are the replies);
                                     //  MDP: the body is packed frames
                                     //  (pigato__mdp_pack)
    bool answered;                   //  its worker sent the final reply
    pigato__service_t *service;      //  requested service
    pigato__worker_t *worker;        //  holder, NULL while queued
    pigato__worker_t *waiting_on;    //  the worker it names and waits for
    pigato__request_t *prev, *next;  //  in service queue or worker list
    pigato__timer_t expiry;          //  inactivity deadline
    pigato__conn_t conn;             //  the client's connection
    pigato__conn_link_t conn_link;   //  filed under that connection
    char identity [65];              //  the calling identity (User-Id)
    char curve_key [PIGATO_Z85_KEY_SIZE + 1];  //  its CURVE key, "" if none
    int64_t timeout;                           //  ms, -1 = never
    int retries_left;       //  re-dispatches allowed on worker loss
    unsigned dispatches;    //  times it was handed to a worker
    uint64_t *rejected;     //  serials of workers that rejected it
    size_t rejected_count;  //  entries in rejected
    byte *target;           //  opts workerId: that worker only
    size_t target_size;     //  (its routing id), NULL if none
    uint64_t round;         //  its turn in the service's fair queue
    pigato__lane_t *lane;   //  its caller's lane there, NULL if none
    void *tenant;           //  the core's record of its caller
    int64_t admitted_us;    //  when it was taken (the core's clock)
    struct _pigato__service_stats_t *stats;  //  counted there (stats.h),
                                             //  NULL: not known yet
};

//  One caller's requests in one service's queue (a fair queue's lane),
//  while it has any there.
struct _pigato__lane_t {
    pigato__service_t *service;  //  the key: this service
    const void *caller;          //  and this caller
    pigato__request_t *last;     //  its youngest there, NULL if it left
    uint64_t last_round;         //  that one's round
    size_t count;                //  its requests queued there
};

struct _pigato__service_t {
    char *name;                     //  service name (table key)
    pigato__request_t *queue_head;  //  waiting requests, fair order:
                                    //  rounds never go down from head
    pigato__request_t *queue_tail;
    size_t queued;              //  requests waiting
    pigato__worker_t *workers;  //  workers offering it
    size_t worker_count;
    pigato__heap_t *ready;      //  workers with room, least loaded
                                //  first (in flight, then dispatched)
    bool ready_broken;          //  heap ran out of memory: scan instead
    pigato__services_t *table;  //  the table it is in
    bool wildcard;              //  name ends in '*': serves a prefix
    bool versioned;             //  name is base@MAJOR.MINOR.PATCH
    pigato__version_t version;  //  its version, if versioned
    bool ranged;                //  name is base@RANGE (requests)
    pigato__range_t range;      //  that range, if ranged
    size_t base_size;           //  length of base (versioned, ranged)
    pigato__service_t *pending_prev, *pending_next;  //  in table's list of
    bool pending;         //  services with queued requests
    bool parked;          //  (or its parked list, see below)
    uint64_t park_epoch;  //  table epoch of its last park check
    int pins;             //  > 0: not to be freed (in use)
    size_t requests;      //  requests naming it, queued or held
    struct _pigato__service_stats_t *stats;  //  its counters (stats.h),
    bool stats_checked;                      //  once looked up or made
};

//  Service table, keyed by name.
pigato__services_t *pigato__services_new (void);
void pigato__services_destroy (pigato__services_t **self_p);

//  Looks a service up by name bytes; NULL if absent.
pigato__service_t *pigato__services_lookup (pigato__services_t *self,
                                            const void *name, size_t size);

//  Looks up or creates. NULL if out of memory.
pigato__service_t *pigato__services_require (pigato__services_t *self,
                                             const void *name, size_t size);

//  Where requests for a service can go, best first, into out (at most
//  max): the service itself if it has workers; else, for base@RANGE, the
//  services base@VERSION with workers whose version satisfies the range,
//  highest first; else the service of the longest prefix P such that a
//  worker offers "P*". Returns how many.
size_t pigato__services_resolve (pigato__services_t *self,
                                 pigato__service_t *requested,
                                 pigato__service_t **out, size_t max);

//  Iterates over every service.
pigato__service_t *pigato__services_first (pigato__services_t *self);
pigato__service_t *pigato__services_next (pigato__services_t *self);

//  True if requests for `requested` may go to workers of `service` by any
//  rule (same name, a satisfying version, a wildcard prefix), whatever
//  the precedence: a request that names a worker may use it.
bool pigato__service_matches (const pigato__service_t *service,
                              const pigato__service_t *requested);

//  Services with queued requests (a list; next with ->pending_next),
//  except parked ones; those that have waited longest first.
pigato__service_t *pigato__services_pending (pigato__services_t *self);

//  The last of that list (the one that joined or moved there last).
pigato__service_t *pigato__services_pending_last (pigato__services_t *self);

//  Moves a pending service to the end of that list: a walk that gave it
//  a worker tries the others first next time.
void pigato__services_pending_rotate (pigato__services_t *self,
                                      pigato__service_t *service);

//  True if a worker of the service has room (not whether it may take a
//  given request).
bool pigato__service_has_room (const pigato__service_t *self);

//  Parks a service with queued requests if nothing can serve it now: not
//  its own workers, no version, no wildcard (the resolution finds none).
//  A wildcard or versioned service that gains its first worker returns
//  every parked service to the pending list, so walks of the pending list
//  (after a wildcard or version gains room) skip names nobody serves,
//  however many a client queues. Each service is checked at most once
//  between two such returns. True if it was parked.
bool pigato__services_park_unservable (pigato__services_t *self,
                                       pigato__service_t *service);

//  How many services are parked (tests, stats).
size_t pigato__services_parked (pigato__services_t *self);

//  True if requests for other names may resolve to this service (a
//  wildcard or a versioned service): after it gains room, pending queues
//  of other services are worth a look.
bool pigato__service_serves_others (const pigato__service_t *self);

//  Deletes the service if it has no workers, no requests name it
//  (->requests, kept by the broker) and it is not pinned.
void pigato__services_release (pigato__services_t *self,
                               pigato__service_t **service_p);

size_t pigato__services_size (pigato__services_t *self);

//  Queue operations (request->worker must be NULL). enqueue puts the
//  request first (front: a retry) or last, outside any lane.
void pigato__service_enqueue (pigato__service_t *self,
                              pigato__request_t *request, bool front);
void pigato__service_dequeue (pigato__service_t *self,
                              pigato__request_t *request);

//  A fair queue: callers take turns. A request of a caller that has k
//  requests queued here goes in round k (counted from the head's), after
//  every request of that round or an earlier one, so a flood from one
//  caller delays another caller's request by at most one request per
//  other caller with requests queued. Costs O(1) for the caller with the
//  most queued (it goes last), O(callers queued here) for the others.
//  Out of memory: the request goes last, outside any lane.
void pigato__service_enqueue_fair (pigato__service_t *self,
                                   pigato__request_t *request,
                                   const void *caller);

//  A request that is alone in the queue (enqueued last, outside any
//  lane) joins its caller's lane, as if enqueue_fair had put it there:
//  the cheap way for a request that will most likely be dispatched at
//  once (nothing is looked up unless it stays).
void pigato__service_lane_join (pigato__service_t *self,
                                pigato__request_t *request, const void *caller);

//  Lanes held at once (tests).
size_t pigato__services_lanes (pigato__services_t *self);

//  Worker membership.
void pigato__service_add_worker (pigato__service_t *self,
                                 pigato__worker_t *worker);
void pigato__service_remove_worker (pigato__service_t *self,
                                    pigato__worker_t *worker);

//  True if the worker can take one more request.
bool pigato__worker_has_room (const pigato__worker_t *worker);

//  Call after a worker's concurrency changed: keeps its service's choice
//  of workers (least loaded first) in order.
void pigato__worker_update (pigato__worker_t *worker);

//  A worker the caller would accept (pigato__service_pick's filter): arg
//  is the caller's.
typedef bool (pigato__worker_filter_t) (void *arg,
                                        const pigato__worker_t *worker);

//  Picks a worker of the service for the request: has room, has not
//  rejected it, passes filter (NULL: every worker does); least in flight
//  (ties: fewest dispatched; O(1) from a heap unless the request was
//  rejected before or the least loaded does not pass) or random (a scan).
//  NULL if none.
pigato__worker_t *pigato__service_pick (pigato__service_t *self,
                                        const pigato__request_t *request,
                                        int dmode,
                                        pigato__worker_filter_t *filter,
                                        void *filter_arg);

//  True if the service has workers and every one rejected the request.
bool pigato__service_all_rejected (pigato__service_t *self,
                                   const pigato__request_t *request);

//  A request that names a worker (opts workerId) waits for room on it,
//  not in its service's queue, so that dispatch never walks past it;
//  unwait takes it off that list again.
void pigato__worker_wait (pigato__worker_t *worker, pigato__request_t *request);
void pigato__worker_unwait (pigato__worker_t *worker,
                            pigato__request_t *request);

//  Moves a queued request to a worker / a held request off its worker.
void pigato__worker_take (pigato__worker_t *worker, pigato__request_t *request);
void pigato__worker_release (pigato__worker_t *worker,
                             pigato__request_t *request);

//  Spare request records, so that a steady stream of requests allocates
//  nothing (glibc's per-thread cache holds 7 blocks of a size; a broker
//  has hundreds in flight). Zero-initialise; one per broker, one thread.
#define PIGATO__REQUEST_POOL_MAX 256

typedef struct {
    pigato__request_t *spare;  //  list through ->next
    size_t count;
} pigato__request_pool_t;

//  Frees the spare records.
void pigato__request_pool_drain (pigato__request_pool_t *pool);

//  Request records. client is the caller's routing id, alias what its
//  worker sees instead (alias.h). The body is data; when body_part is not
//  NULL, data lies inside it and the record shares that part instead of
//  copying. opts (may be empty) is copied. key: the table key of alias +
//  rid when the caller has built it already (saves hashing it again),
//  else NULL.
//  The record comes from pool and goes back to it on destroy (pool may
//  be NULL: malloc and free). NULL if out of memory or an id is too long.
pigato__request_t *
pigato__request_new (pigato__request_pool_t *pool,
                     const pigato__bytes_t *client,
                     const pigato__bytes_t *alias, const pigato__bytes_t *rid,
                     const pigato__bkey_t *key, zmq_msg_t *body_part,
                     const pigato__bytes_t *data, const pigato__bytes_t *opts);
void pigato__request_destroy (pigato__request_pool_t *pool,
                              pigato__request_t **self_p);

//  The request's client routing id (for replies only), the alias its
//  worker sees instead, rid and body (borrowed).
pigato__bytes_t pigato__request_client (const pigato__request_t *self);
pigato__bytes_t pigato__request_alias (const pigato__request_t *self);
pigato__bytes_t pigato__request_rid (const pigato__request_t *self);
pigato__bytes_t pigato__request_body (pigato__request_t *self);

//  The worker's routing id (borrowed).
pigato__bytes_t pigato__worker_routing_id (const pigato__worker_t *worker);

//  Reads timeout, retry and workerId from the opts (JSON object).
//  Invalid JSON leaves the defaults and returns -1.
int pigato__request_parse_opts (pigato__request_t *self,
                                int64_t default_timeout) PIGATO__MUST_CHECK;

//  Records that a worker rejected the request. 0 or E_NOMEM.
int pigato__request_add_reject (pigato__request_t *self,
                                uint64_t serial) PIGATO__MUST_CHECK;
bool pigato__request_rejected_by (const pigato__request_t *self,
                                  uint64_t serial);


#endif
