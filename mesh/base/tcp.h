/*  =========================================================================
    tcp.h - what a TCP connection holds between a peer and us, from our own
    byte counts and the kernel's (TCP_INFO). Shared by the broker's budgets
    (mesh/broker/budget.c) and libpigato's links (mesh/library/
    link_budget.c).

    libzmq says nothing of what it holds: a message being received stays
    in it until its last part is in, and what was sent stays in it until
    the kernel takes it. The kernel counts the bytes of each connection it
    received and had acknowledged; whoever counts the bytes it reads and
    sends on that connection the same way (as they travel: ZMTP and CURVE
    framing included) gets what libzmq and the kernel hold for it as a
    difference.
    =========================================================================
*/
#ifndef PIGATO_TCP_H_INCLUDED
#define PIGATO_TCP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  What libzmq holds per frame beyond its bytes: a zmq_msg_t in the pipe.
#define PIGATO__FRAME_MEMORY 64

//  The bytes a frame of size bytes takes on the wire: the ZMTP frame
//  head (2 bytes, 9 past 255) and, with CURVE, the MESSAGE command's name,
//  nonce, flags and MAC (33 bytes). What the kernel counts for it.
static inline uint64_t
pigato__wire_bytes (size_t size, bool curve)
{
    if (curve)
        size += 33;
    return size + (size <= 255 ? 2 : 9);
}

//  The kernel's counts of a TCP connection: bytes received from the peer
//  and bytes the peer acknowledged (tcpi_bytes_received, tcpi_bytes_acked).
//  One getsockopt (). False if fd is no TCP socket or the kernel keeps no
//  such counts (before Linux 4.1).
bool pigato__tcp_counts (int fd, uint64_t *received, uint64_t *acked);

//  Bytes in the kernel's receive queue of a TCP socket, not yet taken by
//  libzmq (FIONREAD); 0 if that cannot be read. One ioctl ().
uint64_t pigato__tcp_queued (int fd);

//  What an outbound queue of `unacked` bytes (sent, not acknowledged)
//  costs: those bytes, and PIGATO__FRAME_MEMORY for each frame they are,
//  in the proportion of frames to bytes of all that was sent (bytes_out in
//  frames_out frames): small messages cost libzmq more than their bytes.
uint64_t pigato__tcp_outbound (uint64_t unacked, uint64_t bytes_out,
                               uint64_t frames_out);

#endif
