/*  =========================================================================
    budget.c - the broker's byte budgets: per connection, what it sent that
    the broker has not read yet (inbound) and what the broker sent it that
    it has not acknowledged yet (outbound), and the process's resident
    memory against a ceiling.

    libzmq holds what a peer sends until a whole message is there, and what
    the broker sends until the peer takes it; it says nothing about either.
    The kernel counts the bytes of each TCP connection (TCP_INFO:
    tcpi_bytes_received, tcpi_bytes_acked) and the broker counts the bytes
    it reads and sends on each one, as they travel (ZMTP and CURVE framing
    included, the handshake not): the difference is what libzmq and the
    kernel's socket buffers hold for that connection.

    Nothing here runs per message but an add (broker_internal.h):
    * outbound: a connection is checked each time the broker has given it
      outbound_step more bytes;
    * inbound: libzmq delivers nothing of a message before its last part,
      so the broker cannot see a large one coming; it reads its own
      resident size every BUDGET_TICK_MS and looks at every connection
      only when that grew by scan_step since the last look, or is over the
      ceiling.
    The kernel's counts and the arithmetic are in mesh/base/tcp.h,
    shared with libpigato's links.
    A connection over a budget is cut: shut down (libzmq's engine fails,
    drops the message it was building and reports the disconnect), dying
    at once (nothing more is sent to it; its workers and requests go as
    for any closed connection), logged and counted.
    =========================================================================
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "broker_internal.h"

#define BUDGET_TICK_MS 20  //  resident size read this often
#define MIB            (1024 * 1024)
//  Over the ceiling, a connection holding less is not cut (it would not
//  help)
#define CUT_MIN        MIB
#define TRIM_AFTER_MS  200  //  a cut connection's memory is mostly freed by then
#define TRIM_AFTER_CUT 5    //  trims after a cut: the last frees may be late
#define TRIM_EVERY_MS  1000  //  over the ceiling, freed memory goes back

void
pigato__budget_init (pigato__budget_t *self)
{
    memset (self, 0, sizeof *self);
    self->statm = -1;
    self->max_inbound = PIGATO_MAX_INBOUND;
    self->max_outbound = PIGATO_MAX_OUTBOUND;
}

void
pigato__budget_close (pigato__budget_t *self)
{
    if (self->statm >= 0)
        close (self->statm);
    self->statm = -1;
    free (self->checks);
    self->checks = NULL;
    self->check_count = self->check_max = 0;
}

int64_t
pigato__budget_default_memory (void)
{
    long pages = sysconf (_SC_PHYS_PAGES);
    long page = sysconf (_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return (int64_t) 1 << 32;  //  cannot tell: 4 GiB
    return (int64_t) pages * page / 2;
}

//  The process's resident size in bytes, -1 if it cannot be read. One
//  pread () of /proc/self/statm, kept open.
static int64_t
s_rss (pigato__budget_t *self)
{
    char text [128];
    ssize_t size = self->statm >= 0
                     ? pread (self->statm, text, sizeof text - 1, 0)
                     : -1;
    if (size <= 0)
        return -1;
    text [size] = 0;
    //  size resident shared text lib data dt, in pages
    char *at = strchr (text, ' ');
    if (!at)
        return -1;
    return strtoll (at + 1, NULL, 10) * self->page;
}

void
pigato__budget_start (pigato_broker_t *self)
{
    pigato__budget_t *budget = &self->budget;
    if (budget->max_memory == 0)
        budget->max_memory = pigato__budget_default_memory ();
    budget->page = sysconf (_SC_PAGESIZE);
    if (budget->page <= 0)
        budget->page = 4096;
    int64_t smaller = budget->max_inbound < budget->max_outbound
                        ? budget->max_inbound
                        : budget->max_outbound;
    budget->outbound_step = (uint64_t) budget->max_outbound / 8;
    budget->scan_step = smaller / 8;
    if (budget->scan_step < MIB)
        budget->scan_step = MIB;
    if (budget->statm < 0)
        budget->statm = open ("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    budget->rss = budget->rss_floor = s_rss (budget);
    budget->next_tick = self->core->now_ms + BUDGET_TICK_MS;
    if (budget->rss < 0)
        pigato__log (PIGATO_LOG_WARNING,
                     "event=memory_unknown reason=\"cannot read "
                     "/proc/self/statm: %s\"",
                     strerror (errno));
}

int64_t
pigato__budget_next (pigato_broker_t *self)
{
    return self->budget.next_tick;
}

void
pigato__fd_peer (int fd, char *text, size_t size)
{
    struct sockaddr_storage peer;
    socklen_t length = sizeof peer;
    char address [INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getpeername (fd, (struct sockaddr *) &peer, &length) == 0) {
        if (peer.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *) &peer;
            inet_ntop (AF_INET, &in->sin_addr, address, sizeof address);
            port = ntohs (in->sin_port);
        }
        else if (peer.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &peer;
            inet_ntop (AF_INET6, &in6->sin6_addr, address, sizeof address);
            port = ntohs (in6->sin6_port);
        }
    }
    snprintf (text, size, "%s:%d", address, port);
}

void
pigato__budget_queue (pigato_broker_t *self, const pigato__conn_t *conn,
                      pigato__conn_slot_t *slot)
{
    pigato__budget_t *budget = &self->budget;
    slot->out_checked = slot->bytes_out
                      + slot->frames_out * PIGATO__FRAME_MEMORY;
    if (slot->out_check)
        return;
    if (budget->check_count == budget->check_max) {
        size_t max = budget->check_max ? budget->check_max * 2 : 16;
        pigato__conn_t *checks = (pigato__conn_t *) realloc (
            budget->checks, max * sizeof *checks);
        if (!checks)
            return;  //  checked at the next step, or by a scan
        budget->checks = checks;
        budget->check_max = max;
    }
    slot->out_check = true;
    budget->checks [budget->check_count++] = *conn;
}

//  What libzmq and the kernel hold for an open connection, inbound (sent
//  by the peer, not read by the broker yet: bytes on the wire) and
//  outbound (given to libzmq, not acknowledged by the peer yet: bytes on
//  the wire, and PIGATO__FRAME_MEMORY for each frame they are:
//  pigato__tcp_outbound). False if the fd is no TCP socket.
static bool
s_held (const pigato__conn_slot_t *slot, int fd, uint64_t *inbound,
        uint64_t *outbound)
{
    uint64_t received, acked;
    if (!pigato__tcp_counts (fd, &received, &acked))
        return false;
    *inbound = received > slot->bytes_in ? received - slot->bytes_in : 0;
    uint64_t unacked = slot->bytes_out > acked ? slot->bytes_out - acked : 0;
    *outbound = pigato__tcp_outbound (unacked, slot->bytes_out,
                                      slot->frames_out);
    return true;
}

typedef enum {
    CUT_INBOUND,   //  over max_inbound
    CUT_OUTBOUND,  //  over max_outbound: a slow consumer
    CUT_MEMORY     //  the largest holder while over the ceiling
} cut_reason_t;

//  Cuts a connection: shut down under libzmq (which owns the fd: its
//  engine fails, drops the message it was building, closes the fd and
//  reports the disconnect), dying from now on. Only after the monitor's
//  events are read, and only if the connection is still the fd's: libzmq
//  reports a disconnect before it closes the fd, so a connection still
//  open after that read was open when its counts were read.
static void
s_cut (pigato_broker_t *self, const pigato__conn_t *conn, cut_reason_t reason,
       uint64_t inbound, uint64_t outbound)
{
    pigato__broker_monitor_drain (self);
    pigato__conn_slot_t *slot = pigato__conns_slot (self->core->conns, conn);
    if (!slot || slot->dying)
        return;
    pigato__budget_t *budget = &self->budget;
    static const char *events [] = { "inbound_over_budget", "slow_consumer",
                                     "memory_cut" };
    pigato__ratelimit_t *limits [] = { &budget->inbound_log, &budget->slow_log,
                                       &budget->memory_log };
    int64_t *counters [] = { &budget->inbound_cut, &budget->slow_consumers,
                             &budget->memory_cut };
    (*counters [reason])++;
    if (pigato__log_level >= PIGATO_LOG_WARNING
        && pigato__ratelimit_allow_at (limits [reason], events [reason],
                                       PIGATO_LOG_WARNING)) {
        char address [INET6_ADDRSTRLEN + 8];
        char identity [4 * 64 + 4];
        pigato__fd_peer (conn->fd, address, sizeof address);
        const char *name = slot->identity ? slot->identity : "-";
        pigato__log (
            PIGATO_LOG_WARNING,
            "event=%s address=%s identity=%s unread_bytes=%" PRIu64
            " unsent_bytes=%" PRIu64 " max_inbound=%" PRId64
            " max_outbound=%" PRId64 " rss=%" PRId64 " max_memory=%" PRId64,
            events [reason], address,
            pigato__printable (name, strlen (name), identity, sizeof identity),
            inbound, outbound, budget->max_inbound, budget->max_outbound,
            budget->rss, budget->max_memory);
    }
    shutdown (conn->fd, SHUT_RDWR);
    pigato__broker_dying (self, conn->fd);
    //  libzmq's I/O thread frees what the connection held once its engine
    //  ends; much of it is small blocks that malloc keeps unless trimmed.
    //  A long queue takes the I/O thread a while on a slow machine: the
    //  first trim is followed by more, a second apart
    if (budget->trim_at == 0)
        budget->trim_at = self->core->now_ms + TRIM_AFTER_MS;
    budget->trims_left = TRIM_AFTER_CUT;
}

//  The connections queued when they passed an outbound step.
static void
s_check_outbound (pigato_broker_t *self)
{
    pigato__budget_t *budget = &self->budget;
    //  s_cut reads monitor events: a closed connection's requests may go
    //  elsewhere and queue more checks (the list may move)
    for (size_t index = 0; index < budget->check_count; index++) {
        pigato__conn_t conn = budget->checks [index];
        pigato__conn_slot_t *slot = pigato__conns_slot (self->core->conns,
                                                        &conn);
        if (!slot)
            continue;
        slot->out_check = false;
        uint64_t inbound, outbound;
        if (!slot->dying && s_held (slot, conn.fd, &inbound, &outbound)
            && outbound > (uint64_t) budget->max_outbound)
            s_cut (self, &conn, CUT_OUTBOUND, inbound, outbound);
    }
    budget->check_count = 0;
}

//  Every open connection: cuts those over a budget, and while the process
//  is over its ceiling the one holding most (at least CUT_MIN).
static void
s_scan (pigato_broker_t *self, bool over)
{
    pigato__budget_t *budget = &self->budget;
    pigato__conns_t *conns = self->core->conns;
    pigato__conn_t largest = { -1, 0 };
    uint64_t largest_held = CUT_MIN, largest_in = 0, largest_out = 0;
    budget->scans++;
    for (size_t fd = 0; fd < conns->size; fd++) {
        pigato__conn_slot_t *slot = &conns->slots [fd];
        uint64_t inbound, outbound;
        if (slot->state != PIGATO__CONN_OPEN || slot->dying
            || !s_held (slot, (int) fd, &inbound, &outbound))
            continue;
        pigato__conn_t conn = { (int) fd, slot->generation };
        if (inbound > (uint64_t) budget->max_inbound)
            s_cut (self, &conn, CUT_INBOUND, inbound, outbound);
        else if (outbound > (uint64_t) budget->max_outbound)
            s_cut (self, &conn, CUT_OUTBOUND, inbound, outbound);
        else if (over && inbound + outbound > largest_held) {
            largest = conn;
            largest_held = inbound + outbound;
            largest_in = inbound;
            largest_out = outbound;
        }
    }
    if (largest.fd >= 0)
        s_cut (self, &largest, CUT_MEMORY, largest_in, largest_out);
}

void
pigato__budget_tick (pigato_broker_t *self, int64_t now)
{
    pigato__budget_t *budget = &self->budget;
    if (budget->check_count)
        s_check_outbound (self);
    if (now < budget->next_tick)
        return;
    budget->next_tick = now + BUDGET_TICK_MS;
    if (budget->trim_at && now >= budget->trim_at) {
        malloc_trim (0);
        budget->trim_at = 0;
        if (budget->trims_left > 0) {
            budget->trims_left--;
            budget->trim_at = now + TRIM_EVERY_MS;
        }
    }
    int64_t rss = s_rss (budget);
    if (rss < 0)
        return;
    budget->rss = rss;
    if (rss < budget->rss_floor)
        budget->rss_floor = rss;
    bool over = rss > budget->max_memory;
    if (over != self->core->over_memory) {
        self->core->over_memory = over;
        pigato__log (over ? PIGATO_LOG_WARNING : PIGATO_LOG_INFO,
                     "event=%s rss=%" PRId64 " max_memory=%" PRId64
                     " refused=%" PRId64,
                     over ? "memory_over_ceiling" : "memory_under_ceiling", rss,
                     budget->max_memory, self->core->counters.over_memory);
    }
    if (over && budget->trim_at == 0)
        budget->trim_at = now + TRIM_EVERY_MS;
    if (over || rss >= budget->rss_floor + budget->scan_step) {
        s_scan (self, over);
        budget->rss_floor = rss;
    }
}

void
pigato__budget_flush_logs (pigato_broker_t *self)
{
    pigato__budget_t *budget = &self->budget;
    pigato__ratelimit_flush (&budget->inbound_log, "inbound_over_budget",
                             PIGATO_LOG_WARNING);
    pigato__ratelimit_flush (&budget->slow_log, "slow_consumer",
                             PIGATO_LOG_WARNING);
    pigato__ratelimit_flush (&budget->memory_log, "memory_cut",
                             PIGATO_LOG_WARNING);
    pigato__ratelimit_flush (&budget->large_log, "message_too_large",
                             PIGATO_LOG_WARNING);
}
