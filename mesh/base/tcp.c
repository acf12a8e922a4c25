/*  =========================================================================
    tcp.c - the kernel's byte counts of a TCP connection (tcp.h).
    =========================================================================
*/
#include <linux/tcp.h>  //  struct tcp_info with the byte counts (glibc's
                        //  netinet/tcp.h lacks them)
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include "tcp.h"

bool
pigato__tcp_counts (int fd, uint64_t *received, uint64_t *acked)
{
    struct tcp_info info;
    socklen_t size = sizeof info;
    memset (&info, 0, sizeof info);
    if (fd < 0 || getsockopt (fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0
        || size < offsetof (struct tcp_info, tcpi_bytes_received)
                      + sizeof info.tcpi_bytes_received)
        return false;
    *received = info.tcpi_bytes_received;
    *acked = info.tcpi_bytes_acked;
    return true;
}

uint64_t
pigato__tcp_queued (int fd)
{
    int queued = 0;
    return fd >= 0 && ioctl (fd, FIONREAD, &queued) == 0 && queued > 0
             ? (uint64_t) queued
             : 0;
}

uint64_t
pigato__tcp_outbound (uint64_t unacked, uint64_t bytes_out, uint64_t frames_out)
{
    if (unacked == 0 || bytes_out == 0)
        return unacked;
    return unacked
         + (uint64_t) ((double) unacked * (double) frames_out
                       / (double) bytes_out * PIGATO__FRAME_MEMORY);
}
