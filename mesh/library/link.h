/*  =========================================================================
    link.h - broker links of a client or worker: DEALER sockets with a
    fresh random routing id at every (re)connect, the framing each link
    speaks (pigato 0.0.46, or native once the broker answered an offer;
    docs/native-framing.md), sending, and the poll/drain loop.

    Sends made while the owner is dispatching (between hold and release:
    handling the messages that arrived, running timers) are coalesced per
    native link and leave as one batch at release; other sends leave at
    once. Nothing waits across a blocking poll: poll flushes first.

    Each socket has a monitor: when the connection to a broker that had
    spoken ends (broker killed or restarted, network cut), the owner's
    lost handler runs at once, without waiting for heartbeats to stop.
    Under an application's zloop, links are polled through their sockets'
    ZMQ_FDs: the loop's poll is then one system call whatever the number
    of links, where polling the sockets themselves costs two calls per
    socket, before and after every sleep.

    Byte budgets (link_budget.h): a link whose broker does not take what
    it is sent stops growing its queue (pigato__link_room: the owner sends
    no new work there, heartbeats are skipped), and a link whose broker
    sends more than PIGATO_LINK_MAX_INBOUND that libzmq holds unread is
    cut: the owner's lost handler runs (lost_reason says why), as for a
    disconnect. Checked every LINK_BUDGET_TICK_MS while the owner polls.
    =========================================================================
*/
#ifndef PIGATO_LINK_H_INCLUDED
#define PIGATO_LINK_H_INCLUDED

#include "../wire/native.h"
#include "link_budget.h"
#include "peer.h"

#define PIGATO__LINK_ID_BYTES 16  //  random routing id, hex encoded

typedef struct _pigato__links_t pigato__links_t;

//  Where a link's connection stands (its monitor tells): CLOSED has no
//  socket (not opened yet, open failed, or closed after a refusal until
//  retry_at); CONNECTING has one whose security handshake has not
//  completed; UP completed it (or the broker spoke).
typedef enum {
    PIGATO__LINK_CLOSED,
    PIGATO__LINK_CONNECTING,
    PIGATO__LINK_UP
} pigato__link_state_t;

typedef struct {
    pigato__links_t *links;  //  the set it belongs to
    zsock_t *sock;           //  DEALER, NULL when closed or reopen failed
    zsock_t *monitor;        //  PAIR reading sock's disconnect events
    char *endpoint;          //  broker endpoint
    size_t index;            //  position in the set
    unsigned generation;     //  bumped at each (re)connect
    char routing_id [PIGATO__LINK_ID_BYTES * 2 + 1];  //  current id, hex
    int64_t last_seen;          //  last message from the broker (or connect)
    bool heard;                 //  broker spoke since this (re)connect
    pigato__framing_t framing;  //  chosen when the link was added
    bool native;                //  sends native on this connection
    pigato__native_writer_t writer;  //  batch being coalesced
    zmq_msg_t *externals;            //  its external bodies, in order
    int fd;                      //  sock's ZMQ_FD polled by the zloop, or -1
    int monitor_fd;              //  monitor's ZMQ_FD polled by it, or -1
    bool dirty;                  //  zloop: used since ZMQ_EVENTS was read
    bool monitor_dirty;          //  zloop: monitor read since ZMQ_EVENTS
    pigato__link_state_t state;  //  see pigato__link_state_t
    int64_t opened_at;           //  when the socket was (re)opened
    bool connected;              //  a TCP connection was made since then
    int failure;                 //  why the last attempt failed, or 0
    char failure_text [256];     //  that, for people: what and a hint
    size_t key_index;            //  server key in use (rotation)
    size_t keys_failed;          //  keys refused in a row, since last UP
    unsigned refusals;           //  refusals in a row (backoff), since UP
    unsigned handshake_drops;    //  closed during the handshake, in a row
    int64_t retry_at;            //  CLOSED after a refusal: reopen from then
    bool acknowledged;         //  the broker took the greeting (worker: READY)
    size_t held;               //  worker: its requests the worker holds
                               //  (handed to the handler, or waiting)
    bool draining;             //  client: the broker drains, takes no new
                               //  requests (its notice; until it reconnects)
    unsigned heartbeats_sent;  //  worker: plain heartbeats sent and
    unsigned heartbeats_answered;  //  answered on this connection, and
    unsigned drain_heartbeat;      //  the one that said no room (0: none)
    pigato__link_budget_t budget;  //  bytes held for it (link_budget.h)
    const char *lost_reason;       //  why link.c cut it, for the owner's
                                   //  lost handler; NULL for a disconnect
} pigato__link_t;

//  One message (or native entry) from a broker, already decoded and
//  checked for the link's role. Returns 0 to go on, -1 to stop draining
//  the link (owner stopped).
typedef int (pigato__link_handler_fn) (void *owner, pigato__link_t *link,
                                       const pigato__msg_t *message);

//  Called after a zloop reader drained a link (the owner's timers).
typedef void (pigato__link_tick_fn) (void *owner);

//  Called when a link's connection to a broker that had spoken since the
//  link (re)opened ended; what the broker sent before is handled first.
//  The owner usually reopens the link. NULL = left to heartbeats.
typedef void (pigato__link_lost_fn) (void *owner, pigato__link_t *link);

//  Called when a link's state changes: it came UP, or an attempt failed
//  (link->failure and failure_text say why: PIGATO_E_AUTH at once when
//  the broker refused the key, PIGATO_E_HANDSHAKE at once when every
//  server key failed the handshake; PIGATO_E_UNREACHABLE,
//  PIGATO_E_RESOLVE or PIGATO_E_HANDSHAKE from pigato__links_expire).
//  On a handshake failure with another server key to try, the set calls
//  `lost` instead, after moving to the next key: the owner reopens.
typedef void (pigato__link_change_fn) (void *owner, pigato__link_t *link);

//  Called when a link goes over its outbound budget (link->budget.over)
//  or back under it: a worker announces its room. NULL = nothing to do.
typedef void (pigato__link_room_fn) (void *owner, pigato__link_t *link);

//  Creates an empty set for role 'C' or 'W'. security is borrowed and
//  must outlive the set. NULL if out of memory.
pigato__links_t *
pigato__links_new (char role, const pigato__peer_security_t *security,
                   pigato__link_handler_fn *handler, pigato__link_tick_fn *tick,
                   pigato__link_lost_fn *lost, pigato__link_change_fn *change,
                   void *owner);

//  Links still CONNECTING timeout_ms after they opened fail now
//  (PIGATO_E_HANDSHAKE if a TCP connection was made, else
//  PIGATO_E_RESOLVE if the host name does not resolve, else
//  PIGATO_E_UNREACHABLE), through the change handler; libzmq goes on
//  trying. Returns when the next one is due, or -1 if none is.
int64_t pigato__links_expire (pigato__links_t *self, int64_t now,
                              int64_t timeout_ms);

//  A broker refused this link (status, text for people): closes the
//  socket and sets retry_at with exponential, capped, jittered backoff
//  (refusals in a row). The owner reopens it from retry_at.
void pigato__link_refuse (pigato__link_t *self, int status, const char *text);

//  True if the link failed for a reason trying again will not cure by
//  itself (the broker refused the key, or no key passed the handshake).
bool pigato__link_refused (const pigato__link_t *self);

//  The outbound budget of every link (bytes; default
//  PIGATO_LINK_MAX_OUTBOUND), and the owner's room handler.
void pigato__links_set_max_outbound (pigato__links_t *self, int64_t bytes);
void pigato__links_on_room (pigato__links_t *self, pigato__link_room_fn *room);

//  True if the link is under its outbound budget: what it gave libzmq
//  that the broker has not acknowledged (its count, then the kernel's
//  when the count alone is over: at most one system call a millisecond)
//  is within the budget. Always true for links without byte counts
//  (ipc://). No new work goes to a link without room.
bool pigato__link_room_check (pigato__link_t *self);

//  How many links were found over their outbound budget (and have not
//  been found under it since): 0 is the common case, checked first.
size_t pigato__links_over (pigato__links_t *self);

//  The level to log work refused for want of room at (event=WHAT):
//  warning, at most 20 lines a second, the others debug.
int pigato__links_busy_level (pigato__links_t *self, const char *what);
static inline bool
pigato__link_room (pigato__link_t *self)
{
    return pigato__link_budget_clear (&self->budget)
        || pigato__link_room_check (self);
}

//  Closes every link (pending batches flushed within the linger) and
//  frees the set.
void pigato__links_destroy (pigato__links_t **self_p);

//  Links in the set, and one by index.
size_t pigato__links_size (pigato__links_t *self);
pigato__link_t *pigato__links_get (pigato__links_t *self, size_t index);

//  Adds a link that speaks framing and opens it (registered with the
//  zloop if attached). The caller sends its greeting. Returns a status,
//  message in err.
int pigato__links_add (pigato__links_t *self, const char *endpoint,
                       pigato__framing_t framing, pigato__link_t **link_p,
                       char *err, size_t err_size) PIGATO__MUST_CHECK;

//  Registers every link with an application's zloop.
void pigato__links_attach (pigato__links_t *self, zloop_t *loop);

//  Dispatch brackets: sends between them are coalesced; the outermost
//  release flushes every link.
void pigato__links_hold (pigato__links_t *self);
void pigato__links_release (pigato__links_t *self);

//  Flushes, polls the links for up to wait_ms (-1 = no limit) and drains
//  those readable, within a hold. *received counts messages read.
//  Returns 0, 1 if there is nothing to poll and wait_ms is -1, or
//  PIGATO_E_INTERRUPTED / PIGATO_E_CLOSED.
int pigato__links_poll (pigato__links_t *self, int64_t wait_ms,
                        size_t *received) PIGATO__MUST_CHECK;

//  Opens (or reopens) a link's socket with a fresh routing id and its
//  monitor; the link starts in 0.0.46 framing, or native in native mode.
int pigato__link_open (pigato__link_t *self, char *err,
                       size_t err_size) PIGATO__MUST_CHECK;

//  Flushes what is pending and closes the socket and its monitor (and
//  their zloop readers).
void pigato__link_close (pigato__link_t *self);

//  True if the link has a socket and its broker spoke (or completed the
//  handshake) within window_ms.
bool pigato__link_alive (pigato__link_t *self, int64_t now, int64_t window_ms);

//  True if the greeting should carry the native offer (auto mode).
bool pigato__link_offers (pigato__link_t *self);

//  Sends one message (type, status and fields as the role's direction
//  uses them; native_offer adds the offer to a 0.0.46 greeting). Native
//  links coalesce while held. 0, -1 if the link is closed or the send
//  failed, or PIGATO_E_TOO_LARGE (nothing sent) if the data or the opts
//  are over PIGATO_BODY_MAX: callers check first, this is the backstop.
int pigato__link_send (pigato__link_t *self,
                       const pigato__msg_t *message) PIGATO__MUST_CHECK;

//  Sends a message the protocol does without when it is lost: heartbeats
//  and greetings (the next tick sends another, and a link that stays
//  silent is reconnected and greets again), and a goodbye on a link that
//  is being closed anyway. Skipped on a link without room (its broker is
//  not reading them); a failed send is logged at debug level.
void pigato__link_send_repeated (pigato__link_t *self,
                                 const pigato__msg_t *message);

#endif
