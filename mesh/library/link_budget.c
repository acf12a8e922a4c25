/*  =========================================================================
    link_budget.c - a broker link's byte counts against the kernel's
    (link_budget.h).

    Outbound, the link counts every byte it gives libzmq for its socket;
    the kernel counts the bytes the broker acknowledged on each TCP
    connection the socket made. A socket that libzmq reconnects by itself
    (a broker that never spoke) keeps its queue across connections, so
    what earlier connections had acknowledged when last read is carried
    over: acknowledgements after that reading are not seen, and the link
    may look fuller than it is until it is reopened (link.c reopens a
    silent link within heartbeat x liveness), never emptier.

    Inbound, libzmq hands over nothing of a message before its last part
    is in: what the kernel received on the connection less what the link
    read (and less what still waits in the kernel's receive queue, which
    is the kernel's memory, not ours) is what libzmq holds.
    =========================================================================
*/
#include "link_budget.h"

void
pigato__link_budget_reset (pigato__link_budget_t *self, bool tcp, bool curve,
                           uint64_t max_out)
{
    *self = (pigato__link_budget_t) {
        .tcp = tcp, .curve = curve, .max_out = max_out, .fd = -1
    };
}

void
pigato__link_budget_connected (pigato__link_budget_t *self, int fd)
{
    if (self->fd >= 0)
        pigato__link_budget_disconnected (self);
    self->fd = fd;
    self->acked = 0;
    self->bytes_in = 0;
}

void
pigato__link_budget_disconnected (pigato__link_budget_t *self)
{
    self->acked_before += self->acked;
    self->acked = 0;
    self->fd = -1;
}

void
pigato__link_budget_read (pigato__link_budget_t *self, zmsg_t *msg)
{
    if (!self->tcp)
        return;
    uint64_t bytes = 0;
    for (zframe_t *frame = zmsg_first (msg); frame; frame = zmsg_next (msg))
        bytes += pigato__wire_bytes (zframe_size (frame), self->curve);
    self->bytes_in += bytes;
}

bool
pigato__link_budget_measure (pigato__link_budget_t *self, int64_t now,
                             uint64_t inbound_over, uint64_t *inbound)
{
    *inbound = 0;
    if (self->fd < 0) {
        //  Nothing is acknowledged without a connection: all sent since
        //  the last reading is still held
        self->held_out = pigato__link_budget_estimate (self);
        self->cost_read = self->cost_out;
        self->read_at = now;
        return true;
    }
    uint64_t received, acked;
    if (!pigato__tcp_counts (self->fd, &received, &acked))
        return false;
    self->acked = acked;
    uint64_t acked_all = self->acked_before + acked;
    uint64_t unacked = self->bytes_out > acked_all ? self->bytes_out - acked_all
                                                   : 0;
    self->held_out = pigato__tcp_outbound (unacked, self->bytes_out,
                                           self->frames_out);
    self->cost_read = self->cost_out;
    self->read_at = now;
    uint64_t unread = received > self->bytes_in ? received - self->bytes_in : 0;
    if (unread > inbound_over) {
        uint64_t queued = pigato__tcp_queued (self->fd);
        unread = unread > queued ? unread - queued : 0;
    }
    *inbound = unread;
    return true;
}
