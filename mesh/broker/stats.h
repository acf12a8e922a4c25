/*  =========================================================================
    stats.h - what the routing core counts for operators: per service,
    requests by outcome, a latency histogram (admission to final reply)
    and body bytes; per identity, requests, denials and quota refusals.
    metrics.c shows them (Prometheus text, the $stats service).

    The core counts on its own thread, once per request, O(1), with no
    allocation: a service's record is made when a worker registers the
    name (READY), an identity's when it first speaks; a request finds its
    record through its service (or the worker that took it) and its
    caller's tenant. Both tables are bounded (peers choose the names):
    what does not fit, and services no worker ever registered, are
    counted together under PIGATO__STATS_OTHER. Records stay until the
    broker stops, so counters never go back. Not installed.
    =========================================================================
*/
#ifndef PIGATO_STATS_H_INCLUDED
#define PIGATO_STATS_H_INCLUDED

#include "../base/internal.h"

#define PIGATO__STATS_SERVICES_MAX   1024  //  service records
#define PIGATO__STATS_IDENTITIES_MAX 1024  //  identity records
//  The record of everything else: no worker may serve a $ name, and no
//  identity can be called so, so it never meets a real one.
#define PIGATO__STATS_OTHER "$other"

//  How a request ended, each counted once. Refusals before a request is
//  taken (denied, quota, overloaded, failed) count too.
typedef enum {
    PIGATO__OUTCOME_OK = 0,       //  final reply, status 0 (cache hits too)
    PIGATO__OUTCOME_ERROR,        //  final reply with an error, from a worker
    PIGATO__OUTCOME_TIMEOUT,      //  expired in the broker
    PIGATO__OUTCOME_REJECTED,     //  E_REJECTED: rejected by every worker
                                  //  it may go to (or the one it names)
    PIGATO__OUTCOME_DENIED,       //  E_ACCESS_DENIED (ACL, or on reload)
    PIGATO__OUTCOME_WORKER_LOST,  //  E_WORKER_LOST, no retry left
    PIGATO__OUTCOME_QUOTA,        //  E_QUOTA: its identity's limits
    PIGATO__OUTCOME_OVERLOADED,   //  E_OVERLOADED: broker memory, or full
    PIGATO__OUTCOME_FAILED,       //  another broker error (bad opts,
                                  //  E_WORKER_NOT_FOUND, out of memory)
    PIGATO__OUTCOME_DROPPED,      //  ended without a reply: its client
                                  //  went away or left the policy
    PIGATO__OUTCOME_COUNT
} pigato__outcome_t;

//  Latency buckets, upper bounds in microseconds (100 us to 60 s); one
//  more bucket counts what is above the last.
#define PIGATO__LATENCY_BUCKETS 18
extern const int64_t pigato__latency_bounds_us [PIGATO__LATENCY_BUCKETS];

typedef struct _pigato__service_stats_t pigato__service_stats_t;
struct _pigato__service_stats_t {
    int64_t outcomes [PIGATO__OUTCOME_COUNT];       //  requests by outcome
    int64_t latency [PIGATO__LATENCY_BUCKETS + 1];  //  per bucket (not
                                                    //  cumulative)
    int64_t latency_sum_us;  //  of every request in latency
    int64_t request_bytes;   //  bodies and opts of requests that ended
    int64_t reply_bytes;     //  bodies of replies sent, partial ones too
    char name [];            //  the service name (table key)
};

typedef struct {
    int64_t requests;  //  requests that reached admission (not $ names)
    int64_t denials;   //  messages the ACL refused (call or serve)
    int64_t quota;     //  refusals over its limits (E_QUOTA, connections)
    char name [PIGATO__NAME_MAX + 1];
} pigato__identity_stats_t;

typedef struct {
    zhashx_t *services;                      //  name -> record (owned)
    zhashx_t *identities;                    //  name -> record (owned)
    pigato__service_stats_t *other_service;  //  PIGATO__STATS_OTHER
    pigato__identity_stats_t other_identity;
    //  Latency bucket lookup: the first bucket whose bound is at least
    //  2^k, by k. Bounds grow by a factor 2 or more, so a latency in
    //  [2^k, 2^(k+1)) is in that bucket or the next: one comparison
    uint8_t bucket_from [64];
} pigato__stats_t;

//  New, empty; NULL if out of memory.
pigato__stats_t *pigato__stats_new (void);
void pigato__stats_destroy (pigato__stats_t **self_p);

//  The record of a service name, or NULL if it has none.
pigato__service_stats_t *pigato__stats_service (pigato__stats_t *self,
                                                const char *name);

//  The same, made if there is none and the table has room; NULL if not
//  (what it would count goes to the other record).
pigato__service_stats_t *pigato__stats_service_make (pigato__stats_t *self,
                                                     const char *name);

//  The record of an identity, made if need be: never NULL (a full
//  table, out of memory, a name that is no name: the other record).
pigato__identity_stats_t *pigato__stats_identity (pigato__stats_t *self,
                                                  const char *name);

//  The outcome an error text stands for (its E_ code).
pigato__outcome_t pigato__stats_outcome_of (const char *text);

//  An outcome's name ("ok", "worker_lost", ...).
const char *pigato__stats_outcome_name (pigato__outcome_t outcome);

//  A refusal by the ACL: the identity's denials, and for a call the
//  service's (name NULL: a serve).
void pigato__stats_denied (pigato__stats_t *self, const char *identity,
                           const char *name);

//  Records sorted by name (caller frees the array; records borrowed),
//  the other one not included; *count is their number. NULL (count 0)
//  when there are none or out of memory.
pigato__service_stats_t **pigato__stats_services_sorted (pigato__stats_t *self,
                                                         size_t *count);
pigato__identity_stats_t **
pigato__stats_identities_sorted (pigato__stats_t *self, size_t *count);

//  A request ended with outcome: counted in record (NULL: the other
//  one), with its request bytes and, for a final reply (ok or error),
//  its latency.
static inline void
pigato__stats_finish (pigato__stats_t *self, pigato__service_stats_t *record,
                      pigato__outcome_t outcome, size_t bytes,
                      int64_t latency_us)
{
    if (!record)
        record = self->other_service;
    record->outcomes [outcome]++;
    record->request_bytes += (int64_t) bytes;
    if (outcome <= PIGATO__OUTCOME_ERROR) {
        if (latency_us < 0)
            latency_us = 0;
        size_t bucket =
            self->bucket_from [63
                               - __builtin_clzll ((uint64_t) latency_us | 1)];
        while (bucket < PIGATO__LATENCY_BUCKETS
               && latency_us > pigato__latency_bounds_us [bucket])
            bucket++;
        record->latency [bucket]++;
        record->latency_sum_us += latency_us;
    }
}

//  Reply bytes sent for a request of record (NULL: the other one).
static inline void
pigato__stats_reply (pigato__stats_t *self, pigato__service_stats_t *record,
                     size_t bytes)
{
    (record ? record : self->other_service)->reply_bytes += (int64_t) bytes;
}

#endif
