/*  =========================================================================
    link_budget.h - what libzmq and the kernel hold for one broker link
    (link_budget.c): bytes given to libzmq that the broker has not
    acknowledged (outbound), and bytes the broker sent that the link has
    not read yet (inbound), from the link's own counts and the kernel's
    (mesh/base/tcp.h). link.c keeps one per link and decides what to do
    over a budget.

    Only tcp:// links are counted: Unix sockets (ipc://) have no such
    kernel counts (libzmq's send high-water mark bounds those, peer.c).
    Counting a send or a read is a few additions; the kernel is asked
    (one getsockopt) only when the counts alone no longer prove the link
    under its budget, and on a periodic check (link.c).
    =========================================================================
*/
#ifndef PIGATO_LINK_BUDGET_H_INCLUDED
#define PIGATO_LINK_BUDGET_H_INCLUDED

#include "../base/internal.h"
#include "../base/tcp.h"

typedef struct {
    bool tcp;               //  a tcp:// link: counted (else never over)
    bool curve;             //  frames carry CURVE's 33 bytes
    uint64_t max_out;       //  the outbound budget, bytes
    int fd;                 //  the TCP connection's socket (the monitor's
                            //  CONNECTED), -1 while there is none
    uint64_t bytes_out;     //  wire bytes given to libzmq, socket's life
    uint64_t frames_out;    //  in so many frames
    uint64_t cost_out;      //  the same with PIGATO__FRAME_MEMORY per frame
    uint64_t acked_before;  //  acknowledged on the socket's earlier
                            //  connections (as last read)
    uint64_t acked;         //  acknowledged on this one, at the last reading
    uint64_t held_out;      //  outbound held at the last reading
    uint64_t cost_read;     //  cost_out at the last reading
    int64_t read_at;        //  when that was (ms), 0 never
    uint64_t bytes_in;      //  wire bytes read on this connection
    bool over;              //  over the outbound budget (last decision)
    uint64_t cost_over;     //  cost_out when it went over
    bool announced;         //  `over` as the owner was last told
} pigato__link_budget_t;

//  A fresh socket: nothing counted, no connection yet; max_out bytes of
//  outbound budget.
void pigato__link_budget_reset (pigato__link_budget_t *self, bool tcp,
                                bool curve, uint64_t max_out);

//  The monitor reported a TCP connection (its socket fd), or its end.
void pigato__link_budget_connected (pigato__link_budget_t *self, int fd);
void pigato__link_budget_disconnected (pigato__link_budget_t *self);

//  A message given to libzmq: bytes on the wire, in frames.
static inline void
pigato__link_budget_sent (pigato__link_budget_t *self, uint64_t bytes,
                          uint64_t frames)
{
    self->bytes_out += bytes;
    self->frames_out += frames;
    self->cost_out += bytes + frames * PIGATO__FRAME_MEMORY;
}

//  A message read from libzmq (its wire bytes are counted).
void pigato__link_budget_read (pigato__link_budget_t *self, zmsg_t *msg);

//  Outbound held at most, without asking the kernel: what it held at the
//  last reading and everything sent since (acknowledgements only lower
//  it).
static inline uint64_t
pigato__link_budget_estimate (const pigato__link_budget_t *self)
{
    return self->held_out + self->cost_out - self->cost_read;
}

//  What was given to libzmq since the link went over its budget (0 while
//  under it).
static inline uint64_t
pigato__link_budget_past (const pigato__link_budget_t *self)
{
    return self->over ? self->cost_out - self->cost_over : 0;
}

//  True if the counts alone prove the link under its outbound budget (or
//  it has none): the check on every send of new work, a few instructions.
static inline bool
pigato__link_budget_clear (const pigato__link_budget_t *self)
{
    return !self->tcp
        || (!self->over
            && pigato__link_budget_estimate (self) <= self->max_out);
}

//  Asks the kernel (one getsockopt) and sets held_out exactly; *inbound
//  gets what the broker sent that libzmq holds unread (received, less
//  what was read and, when that is over `inbound_over`, less what still
//  waits in the kernel's receive queue: one more call). Without a
//  connection the estimate stands (nothing is acknowledged) and *inbound
//  is 0. False if the kernel gave no counts (then nothing changes).
bool pigato__link_budget_measure (pigato__link_budget_t *self, int64_t now,
                                  uint64_t inbound_over, uint64_t *inbound);

#endif
