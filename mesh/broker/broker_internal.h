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
#include "metrics.h"
#include "titanic.h"
#include "../../auth/guard.h"

//  One message read from the ROUTER as zmq_msg_t parts: [0] is the
//  routing id. Parts are reused from message to message.
#define PIGATO__PARTS_MAX (2 + PIGATO__NATIVE_EXTERNAL_MAX)
typedef struct {
    zmq_msg_t parts [PIGATO__PARTS_MAX];
    size_t count;    //  parts held
    size_t total;    //  parts the message had (> count:
                     //  the rest were read and dropped)
    uint64_t bytes;  //  its bytes on the wire (pigato__wire_bytes)
    size_t size;     //  its parts' bytes, routing id not counted
} pigato__input_t;

//  The byte budgets (budget.c): per connection inbound and outbound, and
//  the process's resident size against a ceiling.
typedef struct {
    int64_t max_memory;      //  RSS ceiling in bytes (0 until bound: half
                             //  of physical memory)
    int64_t max_inbound;     //  per connection: received, not yet read
    int64_t max_outbound;    //  per connection: sent, not acknowledged
    uint64_t outbound_step;  //  bytes sent to a connection between checks
    int64_t scan_step;       //  RSS growth that makes a scan
    bool curve;              //  frames carry CURVE's 33 bytes
    int statm;               //  /proc/self/statm, -1 if not open
    long page;               //  page size
    int64_t next_tick;       //  when the RSS is read next
    int64_t rss;             //  resident bytes at the last read
    int64_t rss_floor;       //  lowest RSS since the last scan
    int64_t trim_at;         //  when to give freed memory back, 0: no
    int trims_left;          //  more trims after a cut, a second apart
    pigato__conn_t *checks;  //  connections to check outbound
    size_t check_count;
    size_t check_max;
    int64_t scans;           //  scans of every connection
    int64_t inbound_cut;     //  connections cut over max_inbound
    int64_t slow_consumers;  //  connections cut over max_outbound
    int64_t memory_cut;      //  connections cut over the ceiling
    int64_t too_large;       //  messages over PIGATO__MESSAGE_BYTES_MAX
    pigato__ratelimit_t inbound_log;  //  their log limiters
    pigato__ratelimit_t slow_log;
    pigato__ratelimit_t memory_log;
    pigato__ratelimit_t large_log;
} pigato__budget_t;

//  A drain (drain.c): the broker takes no new requests, lets those it
//  holds finish, and (STOP) has run () return once none is left or at the
//  timeout. A drain only goes forward: NONE, then STAY and/or STOP.
typedef enum {
    PIGATO__DRAIN_NONE = 0,  //  serving
    PIGATO__DRAIN_STAY = 1,  //  lame duck: refuses new requests, stays up
    PIGATO__DRAIN_STOP = 2   //  refuses them and stops once drained
} pigato__drain_state_t;

typedef struct {
    int state;                        //  pigato__drain_state_t
    volatile sig_atomic_t requested;  //  the state asked for (a signal
                                      //  handler may set it; never lower)
    int timeout_ms;                   //  STOP: longest wait for requests
    int64_t started;                  //  when it began (ms)
    int64_t deadline;                 //  STOP: what is left is abandoned
    int64_t linger_until;             //  STOP: not done before (clients
                                      //  told may have sent requests)
    int64_t held;                     //  requests held when it began
    int64_t moved;                    //  of those, handed back
    int64_t told;                     //  client connections told at once
    int64_t abandoned;                //  failed at the deadline
    int64_t replies_before;           //  core counters when it began
    int64_t requests_before;
    int64_t refused_before;
    bool drained;  //  event=drained was logged
} pigato__drain_t;

struct _pigato_broker_t {
    zsock_t *router;                 //  the one socket, NULL until bind
    void *router_handle;             //  its libzmq handle
    pigato__core_t *core;            //  the routing core (core.h)
    pigato__outbox_t *outbox;        //  native batches being collected
    pigato__input_t input;           //  the message being routed
    char *key_file;                  //  CURVE secret key file
    char *cert_file;                 //  its certificate (--key NAME.crt),
                                     //  NULL if none: checked for expiry
    int64_t cert_warn_seconds;       //  warn this long before an expiry
    int64_t cert_check_at;           //  next expiry check (ms), daily
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
    int64_t connections_evicted;     //  shut in their handshake to let a
                                     //  newer one in
    struct pigato__shaking_t {
        pigato__conn_t conn;
        int64_t since;                   //  accepted then (ms)
    } * shaking;                         //  connections in accept order that
    size_t shaking_head;                 //  may still be in their handshake
    size_t shaking_count;                //  (entries that finished it or
    size_t shaking_max;                  //  closed are skipped or compacted)
    pigato__ratelimit_t refuse_log;      //  connection_refused log limiter
    pigato__budget_t budget;             //  byte budgets (budget.c)
    pigato__ratelimit_t conn_log;        //  connection_open log limiter
    pigato_broker_state_fn *state_hook;  //  told of reloads and the stop
    void *state_arg;                     //  (pigato_broker_set_state_hook)
    bool told_stopping;                  //  STOPPING is told once
    pigato__metrics_t metrics;           //  for operators (metrics.c)
    pigato__titanic_t *titanic;          //  durable requests (--store), or NULL
    int64_t store_sync;                  //  ms between syncs; 0: each commit
    pigato__drain_t drain;               //  lame duck and drain (drain.c)
    char error [256];                    //  last error message
};


//  front_pigato.c: one message from the ROUTER (self->input), from that
//  connection: 0.0.46 and native here, MDP/0.2 in front_mdp.c.
void pigato__front_input (pigato_broker_t *self, const pigato__conn_t *conn);

//  reload.c: re-reads the policy and holds live workers and requests to it.
void pigato__broker_reload (pigato_broker_t *self);

//  reload.c: tells the state hook a state (pigato_broker_state_t);
//  PIGATO_BROKER_STOPPING only the first time. Call it where the broker
//  begins to stop (or to drain).
void pigato__broker_tell (pigato_broker_t *self, int state);

//  expiry.c: logs the certificates that end soon or have ended (its own,
//  the policy's CAs and identities) and sets the next check a day ahead.
void pigato__broker_expiry_check (pigato_broker_t *self);

//  drain.c. begin: a drain asked for (requested above the state) starts,
//  or a lame duck turns into a drain that stops; each turn of the loop.
//  tick: while draining, each turn: true when run () is to return
//  (STOP, and no request is held or the deadline passed: what is left
//  was abandoned, E_DRAIN_TIMEOUT). next: the deadline, or INT64_MAX.
void pigato__broker_drain_begin (pigato_broker_t *self);
bool pigato__broker_drain_tick (pigato_broker_t *self, int64_t now);
int64_t pigato__broker_drain_next (pigato_broker_t *self);

//  broker.c: reads the monitor's connection events now; marks a
//  connection dying (nothing more is sent to it; it ends once its last
//  words are read).
void pigato__broker_monitor_drain (pigato_broker_t *self);
void pigato__broker_dying (pigato_broker_t *self, int fd);

//  budget.c (see there). init: defaults; start: at run, opens what it
//  reads; close: frees. tick: each turn of the loop, before the outbox is
//  flushed; next: when it wants the next turn at the latest. queue: a
//  connection passed an outbound step. flush_logs: from the heartbeat.
void pigato__budget_init (pigato__budget_t *self);
void pigato__budget_start (pigato_broker_t *self);
void pigato__budget_close (pigato__budget_t *self);
void pigato__budget_tick (pigato_broker_t *self, int64_t now);
int64_t pigato__budget_next (pigato_broker_t *self);
void pigato__budget_queue (pigato_broker_t *self, const pigato__conn_t *conn,
                           pigato__conn_slot_t *slot);
void pigato__budget_flush_logs (pigato_broker_t *self);
int64_t pigato__budget_default_memory (void);

//  connlog.c: event=connection_open at a connection's first message
//  (self->input), event=connection_closed before the conns table forgets
//  it, and the count of held-back opening lines (from the heartbeat).
void pigato__connlog_open (pigato_broker_t *self, int fd,
                           pigato__conn_slot_t *slot);
void pigato__connlog_closed (pigato_broker_t *self, int fd);
void pigato__connlog_tick (pigato_broker_t *self);

//  "address:port" of a socket's peer ("?:0" if unknown).
void pigato__fd_peer (int fd, char *text, size_t size);

//  Counts a message given to libzmq for a connection (bytes on the wire,
//  frames); past a step, the connection is queued for a check against
//  the kernel's count.
static inline void
pigato__budget_sent (pigato_broker_t *self, const pigato__conn_t *conn,
                     uint64_t bytes, uint64_t frames)
{
    pigato__conn_slot_t *slot = pigato__conns_slot (self->core->conns, conn);
    if (slot) {
        slot->bytes_out += bytes;
        slot->frames_out += frames;
        if (slot->bytes_out + slot->frames_out * PIGATO__FRAME_MEMORY
                - slot->out_checked
            >= self->budget.outbound_step)
            pigato__budget_queue (self, conn, slot);
    }
}

//  send.c: the send interface the core emits through (core.h), on the
//  broker's ROUTER and outbox; its argument is the broker.
extern const pigato__emit_t pigato__broker_emit;

#endif
