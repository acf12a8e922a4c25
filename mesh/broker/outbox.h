/*  =========================================================================
    outbox.h - the broker's outgoing native batches, one per peer and role
    (docs/native-framing.md, "Coalescing"). Entries for a peer collect while
    the broker works through the messages that are readable now; the loop
    flushes every batch before it waits for input again, so nothing waits
    for anything that has not arrived.
    =========================================================================
*/
#ifndef PIGATO_OUTBOX_H_INCLUDED
#define PIGATO_OUTBOX_H_INCLUDED

#include "../wire/native.h"
#include "../base/conns.h"
#include "../base/tcp.h"  //  pigato__wire_bytes

typedef struct _pigato__outbox_t pigato__outbox_t;

//  Told, after each batch sent, how many bytes it took on the wire for
//  the connection it went to, in how many frames.
typedef void (pigato__outbox_sent_fn) (void *arg, const pigato__conn_t *conn,
                                       uint64_t bytes, uint64_t frames);

//  An outbox that sends on a ROUTER socket (a libzmq socket handle) and
//  reports what it sent to sent (with arg); curve: frames carry CURVE's
//  overhead.
pigato__outbox_t *pigato__outbox_new (void *router, bool curve,
                                      pigato__outbox_sent_fn *sent, void *arg);
void pigato__outbox_destroy (pigato__outbox_t **self_p);

//  Adds an entry for a peer (routing id `to` on connection conn, role 'C'
//  or 'W'). A body
//  over the inline limit travels as its own frame: when body_part is not
//  NULL and holds exactly entry->data, that part is shared (no copy),
//  else the bytes are copied. Returns 0 or -1 (out of memory; nothing
//  queued).
int pigato__outbox_add (pigato__outbox_t *self, const pigato__bytes_t *to,
                        const pigato__conn_t *conn, char role,
                        const pigato__msg_t *entry,
                        zmq_msg_t *body_part) PIGATO__MUST_CHECK;

//  Sends a peer's pending batches now (before a 0.0.46 message to it).
void pigato__outbox_flush_peer (pigato__outbox_t *self,
                                const pigato__bytes_t *to);

//  Sends every pending batch.
void pigato__outbox_flush (pigato__outbox_t *self);

//  Batches and entries sent so far.
int64_t pigato__outbox_batches (pigato__outbox_t *self);
int64_t pigato__outbox_entries (pigato__outbox_t *self);

#endif
