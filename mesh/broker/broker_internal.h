/*  =========================================================================
    broker_internal.h - the broker object, shared by broker.c (object,
    socket, event loop) and route.c (what happens to each message). Not
    installed.
    =========================================================================
*/
#ifndef PIGATO_BROKER_INTERNAL_H_INCLUDED
#define PIGATO_BROKER_INTERNAL_H_INCLUDED

#include <signal.h>
#include "../wire/codec.h"
#include "service.h"
#include "outbox.h"
#include "cache.h"
#include "../base/table.h"
#include "../../auth/guard.h"

#define BROKER_COUNTERS(X)                                                  \
    X (requests)        /* requests accepted */                             \
    X (replies)         /* final replies forwarded */                       \
    X (partials)        /* partial replies forwarded */                     \
    X (rejects)         /* rejects received */                              \
    X (timeouts)        /* requests expired in the broker */                \
    X (failed)          /* requests failed by the broker (error reply) */   \
    X (retries)         /* re-dispatches after worker loss */               \
    X (bad_messages)    /* malformed or out-of-protocol messages */         \
    X (late_replies)    /* replies for unknown or foreign rids, dropped */  \
    X (workers_gone)    /* workers removed (disconnect or expiry) */

//  One message read from the ROUTER as zmq_msg_t parts: [0] is the
//  routing id. Parts are reused from message to message.
#define PIGATO__PARTS_MAX (2 + PIGATO__NATIVE_EXTERNAL_MAX)
typedef struct {
    zmq_msg_t parts [PIGATO__PARTS_MAX];
    size_t count;                   //  parts held
    size_t total;                   //  parts the message had (> count:
                                    //  the rest were read and dropped)
} pigato__input_t;

typedef struct {
#define COUNTER_FIELD(name) int64_t name;
    BROKER_COUNTERS (COUNTER_FIELD)
#undef COUNTER_FIELD
} counters_t;

struct _pigato_broker_t {
    zsock_t *router;                //  the one socket, NULL until bind
    void *router_handle;            //  its libzmq handle
    pigato__outbox_t *outbox;       //  native batches being collected
    pigato__cache_t *cache;         //  cached replies (opts cache: MS)
    pigato__input_t input;          //  the message being routed
    char *key_file;                 //  CURVE secret key file
    bool insecure;                  //  NULL mechanism
    bool allow_any;                 //  CURVE, every key, every action
    int heartbeat_ms;               //  heartbeat interval
    int liveness;                   //  intervals before a worker is dead
    int dmode;                      //  pigato__dmode_t
    int busy_poll_us;               //  poll without sleeping after work
    pigato__services_t *services;   //  name -> service
    zhashx_t *workers;              //  routing id -> worker
    pigato__worker_t *last_worker;  //  the last one looked up (a cache;
                                    //  cleared when that worker goes)
    pigato__table_t *requests;      //  client id + rid -> request
    pigato__request_pool_t request_pool;    //  spare request records
    pigato__heap_t *timers;         //  request inactivity deadlines
    uint64_t next_serial;           //  worker registration serials
    uint64_t next_mdp_rid;          //  rids made for MDP client requests
    int64_t next_tick;              //  next liveness check
    int64_t now_ms;                 //  the clock at the start of this turn
                                    //  (one reading per turn, not per
                                    //  message)
    volatile sig_atomic_t stopping; //  set by pigato_broker_stop
    counters_t counters;            //  see BROKER_COUNTERS
    pigato__ratelimit_t bad_log;    //  bad-input log limiter
    char *acl_path;                 //  policy file (--acl)
    pigato__acl_t *policy;          //  loaded by set_acl, until bind
    pigato__guard_t *guard;         //  ZAP + per-message authorization
    zsock_t *monitor;               //  accept/disconnect events of router
    pigato__conns_t *conns;         //  fd -> connection generation
    volatile sig_atomic_t reload;   //  set by pigato_broker_request_reload
    char error [256];               //  last error message
};


//  route.c: one message from the ROUTER (self->input), from that
//  connection. Native batches are routed entry by entry.
void pigato__route_input (pigato_broker_t *self, const pigato__conn_t *conn);

//  route.c: a connection closed: its worker is gone, its requests dropped.
void pigato__route_connection_lost (pigato_broker_t *self,
                                    const pigato__conn_t *dead);

//  route.c: re-reads the policy and holds live workers and requests to it.
void pigato__route_reload (pigato_broker_t *self);

//  route.c: expires requests whose deadline passed, and workers that
//  stopped heartbeating.
void pigato__route_expire_requests (pigato_broker_t *self, int64_t now);
void pigato__route_check_workers (pigato_broker_t *self, int64_t now);

#endif
