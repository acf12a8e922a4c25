/*  =========================================================================
    conns.h - which connection a message came from, and when it died.

    ROUTER routing ids are chosen by peers, and a peer may take over the id
    of one that left. libzmq tells us, per message, the fd it came from
    (ZMQ_SRCFD) and, through a socket monitor, when an fd was accepted or
    disconnected. A connection is (fd, generation): the generation goes up
    on every accept of that fd, so a reused fd is a new connection.

    If monitor events were lost, an fd is "unknown": its messages are taken
    as before (never refused for our bookkeeping's sake).
    =========================================================================
*/
#ifndef PIGATO_CONNS_H_INCLUDED
#define PIGATO_CONNS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _pigato__conns_t pigato__conns_t;

//  A connection as recorded by workers and requests. fd -1 = unknown.
typedef struct {
    int fd;
    uint32_t generation;
} pigato__conn_t;

pigato__conns_t *pigato__conns_new (void);
void pigato__conns_destroy (pigato__conns_t **self_p);

//  Monitor events.
void pigato__conns_accepted (pigato__conns_t *self, int fd);

//  Marks the fd closed; returns the connection that died (fd -1 if the fd
//  was not known open).
pigato__conn_t pigato__conns_disconnected (pigato__conns_t *self, int fd);

//  The fd's connection closed but what it sent before may still wait to
//  be read: it stays open for what comes from it (its last words), and
//  nothing may be sent to it any more (pigato__conns_live). True if it
//  was open and not dying yet. pigato__conns_disconnected ends it.
bool pigato__conns_dying (pigato__conns_t *self, int fd);

//  True if conn is its fd's current connection, open, and nothing came
//  from it yet: it has not finished its handshake, or it did and has not
//  said a word (every pigato peer speaks at once: READY, a heartbeat, a
//  request). The broker's byte count tells (bytes_in).
bool pigato__conns_in_handshake (pigato__conns_t *self,
                                 const pigato__conn_t *conn);


typedef enum {
    PIGATO__CONN_UNKNOWN = 0,  //  no events seen for this fd
    PIGATO__CONN_OPEN,         //  accepted, not (yet) disconnected
    PIGATO__CONN_CLOSED        //  disconnected, not accepted again (yet)
} pigato__conn_state_t;

//  The connection a message from fd belongs to, as far as the events seen
//  so far tell: returns its state and fills conn (fd -1 when unknown).
int pigato__conns_lookup (pigato__conns_t *self, int fd, pigato__conn_t *conn);

//  Workers and requests are filed under the connection they came on, so
//  that a closed connection's items are found without a scan. A link is
//  embedded in the item; fd -1 = not filed.
typedef struct _pigato__conn_link_t {
    struct _pigato__conn_link_t *prev, *next;
    int fd;    //  filed under this fd, -1 = not filed
    int list;  //  PIGATO__CONN_WORKERS or _REQUESTS
} pigato__conn_link_t;

#define PIGATO__CONN_WORKERS  0
#define PIGATO__CONN_REQUESTS 1

//  Marks a link as not filed (call once when the item is made).
void pigato__conn_link_init (pigato__conn_link_t *link);

//  Files an item under its connection's fd; items of unknown connections
//  (fd -1) are not filed.
void pigato__conns_file (pigato__conns_t *self, const pigato__conn_t *conn,
                         int list, pigato__conn_link_t *link);

//  Takes an item out of its list (no-op if not filed).
void pigato__conns_unfile (pigato__conns_t *self, pigato__conn_link_t *link);

//  The first item filed under fd in a list, or NULL.
pigato__conn_link_t *pigato__conns_filed (pigato__conns_t *self, int fd,
                                          int list);

//  True if two records name the same connection. Unknown records (fd -1)
//  all match each other: without events there is nothing to bind to, and
//  the binding falls back to the identity alone.
bool pigato__conn_same (const pigato__conn_t *a, const pigato__conn_t *b);

//  The table's layout is here only so that pigato__conns_live, asked on
//  every send, can be inline; everything else goes through the functions.
typedef struct {
    uint32_t generation;             //  bumped on each accept
    uint8_t state;                   //  pigato__conn_state_t
    bool dying;                      //  disconnected, last words unread
    bool out_check;                  //  queued for an outbound check
    pigato__conn_link_t *heads [2];  //  filed workers, requests
    //  Byte budgets (the broker's budget.c): what the broker read from
    //  this connection and sent to it, as bytes on the wire (framing
    //  included), since its accept; compared with the kernel's counts
    uint64_t bytes_in;     //  read by the broker
    uint64_t bytes_out;    //  given to libzmq for it
    uint64_t frames_out;   //  in so many frames
    uint64_t out_checked;  //  bytes_out + frames_out * 64 at the last
                           //  outbound check
    char *identity;        //  User-Id of its first message, or NULL
    void *log_note;        //  what its event=connection_closed repeats
                           //  (the broker's connlog.c; freed here), or NULL
    uint8_t *client;       //  routing id of the pigato client that
    uint8_t client_size;   //  heartbeated on it, or NULL: whom a drain
                           //  tells (the broker's drain.c)
} pigato__conn_slot_t;

struct _pigato__conns_t {
    pigato__conn_slot_t *slots;  //  indexed by fd
    size_t size;                 //  slots allocated
    size_t dying;                //  connections dying now
};

//  True if some connection is dying: while none is, every open one is
//  live (pickers skip the question).
static inline bool
pigato__conns_any_dying (const pigato__conns_t *self)
{
    return self->dying > 0;
}

//  True if a message may be sent to this connection: it is the fd's
//  current one, open and not dying. libzmq frees a routing id only after
//  it reported the disconnect, so a peer that takes a departed peer's
//  routing id over never gets what was meant for it. Unknown records
//  (fd -1) are live.
static inline bool
pigato__conns_live (const pigato__conns_t *self, const pigato__conn_t *conn)
{
    if (conn->fd < 0)
        return true;  //  unknown: nothing to hold it to
    if ((size_t) conn->fd >= self->size)
        return false;
    const pigato__conn_slot_t *slot = &self->slots [conn->fd];
    return slot->state == PIGATO__CONN_OPEN && !slot->dying
        && slot->generation == conn->generation;
}

//  The slot of an open connection (dying or not), if conn is the fd's
//  current one; NULL for unknown records and closed connections. For the
//  byte counts, on every message: inline.
static inline pigato__conn_slot_t *
pigato__conns_slot (pigato__conns_t *self, const pigato__conn_t *conn)
{
    if (conn->fd < 0 || (size_t) conn->fd >= self->size)
        return NULL;
    pigato__conn_slot_t *slot = &self->slots [conn->fd];
    return slot->state == PIGATO__CONN_OPEN
                && slot->generation == conn->generation
             ? slot
             : NULL;
}

//  Records the identity of a connection (the User-Id of its first
//  message); a no-op once one is recorded or if identity is NULL.
void pigato__conns_set_identity (pigato__conns_t *self, int fd,
                                 const char *identity);

//  Records the routing id of the pigato client on a connection (its
//  first heartbeat); a no-op once one is recorded, for an id over 255
//  bytes, or if out of memory.
void pigato__conns_set_client (pigato__conns_t *self, int fd, const void *id,
                               size_t size);

#endif
