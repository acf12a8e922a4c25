/*  =========================================================================
    broker_internal.h - the broker object, shared by broker.c (object,
    socket, event loop), the front-ends (front_pigato.c, front_mdp.c),
    send.c and reload.c. The routing state is the core's (core.h). Not
    installed.
    =========================================================================
*/
#ifndef PIGATO_BROKER_INTERNAL_H_INCLUDED
#define PIGATO_BROKER_INTERNAL_H_INCLUDED

#include <signal.h>
#include "core.h"
#include "outbox.h"
#include "../../auth/guard.h"

//  One message read from the ROUTER as zmq_msg_t parts: [0] is the
//  routing id. Parts are reused from message to message.
#define PIGATO__PARTS_MAX (2 + PIGATO__NATIVE_EXTERNAL_MAX)
typedef struct {
    zmq_msg_t parts [PIGATO__PARTS_MAX];
    size_t count;  //  parts held
    size_t total;  //  parts the message had (> count:
                   //  the rest were read and dropped)
} pigato__input_t;

struct _pigato_broker_t {
    zsock_t *router;                 //  the one socket, NULL until bind
    void *router_handle;             //  its libzmq handle
    pigato__core_t *core;            //  the routing core (core.h)
    pigato__outbox_t *outbox;        //  native batches being collected
    pigato__input_t input;           //  the message being routed
    char *key_file;                  //  CURVE secret key file
    bool insecure;                   //  NULL mechanism
    bool allow_any;                  //  CURVE, every key, every action
    int busy_poll_us;                //  poll without sleeping after work
    int64_t next_tick;               //  next liveness check
    volatile sig_atomic_t stopping;  //  set by pigato_broker_stop
    pigato__ratelimit_t bad_log;     //  bad-input log limiter
    char *acl_path;                  //  policy file (--acl)
    pigato__acl_t *policy;           //  loaded by set_acl, until bind
    pigato__guard_t *guard;          //  ZAP + per-message authorization
    zsock_t *monitor;                //  accept/disconnect events of router
    volatile sig_atomic_t reload;    //  set by pigato_broker_request_reload
    int *dying;                      //  fds of connections that closed,
    size_t dying_count;              //  their last words still readable
    size_t dying_max;                //  (s_dying in broker.c)
    int64_t dying_since;             //  when the oldest of them closed
    int max_connections;             //  beyond it a new one is shut at
                                     //  once; 0 = from RLIMIT_NOFILE
    int handshake_timeout_ms;        //  ZMQ_HANDSHAKE_IVL; 0 = none
    int64_t connections;             //  open: accepted, not disconnected
    int64_t connections_refused;     //  shut for being over the maximum
    int *refusing;                   //  fds to shut at the end of this
    size_t refusing_count;           //  monitor drain (s_refuse in
    size_t refusing_max;             //  broker.c)
    pigato__ratelimit_t refuse_log;  //  connection_refused log limiter
    char error [256];                //  last error message
};


//  front_pigato.c: one message from the ROUTER (self->input), from that
//  connection: 0.0.46 and native here, MDP/0.2 in front_mdp.c.
void pigato__front_input (pigato_broker_t *self, const pigato__conn_t *conn);

//  reload.c: re-reads the policy and holds live workers and requests to it.
void pigato__broker_reload (pigato_broker_t *self);

//  send.c: the send interface the core emits through (core.h), on the
//  broker's ROUTER and outbox; its argument is the broker.
extern const pigato__emit_t pigato__broker_emit;

#endif
