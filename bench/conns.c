/*  =========================================================================
    conns.c - connection scale for make bench: opens N CURVE (or
    plaintext) DEALER connections to a broker, each with its own key pair
    (made before the clock starts) or one given, sends one pigato 0.0.46 client
    heartbeat (C, 4) on each and waits until every connection has its
    answer (C, 4). Prints one key=value line: connections, answered,
    seconds from the first connect to the last answer, handshakes/s.

    pigato-conns --broker EP [--server-key Z85|FILE | --insecure]
                 [--key SECRET_FILE] [--connections 1000] [--batch N]
                 [--timeout 120] [--hold] [--label conns]

    --key gives every connection the key pair of a zcert secret file (for
    a broker with an ACL); without it each has its own, made at start.
    --batch N connects N at a time, each batch once the previous one is
    answered (default: all at once). A storm larger than the server's
    listen backlog (libzmq's ZMQ_BACKLOG, 100 by default) loses SYNs, and
    the kernel retries them after 1, 3, 7, 15 s: the time then measures
    the backlog, not the handshakes.

    --hold keeps every connection open after the line is printed, until
    SIGTERM or SIGINT: the caller then reads the
    broker's memory with N idle clients. Plain libzmq (one context, one I/O
    thread) so the load generator's own cost stays small.
    =========================================================================
*/
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "proc.h"

static int64_t
s_now_usecs (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

//  One key of a zcert file ("public-key" or "secret-key"), Z85. Returns 0
//  and fills key (41 bytes), or -1.
static int
s_key_from_file (const char *path, const char *name, char *key)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    char line [256], prefix [32];
    snprintf (prefix, sizeof prefix, "%s = \"", name);
    size_t prefix_size = strlen (prefix);
    int rc = -1;
    while (rc && fgets (line, sizeof line, file)) {
        char *start = strstr (line, prefix);
        if (start && strlen (start + prefix_size) >= 41
            && start [prefix_size + 40] == '"') {
            memcpy (key, start + prefix_size, 40);
            key [40] = 0;
            rc = 0;
        }
    }
    fclose (file);
    return rc;
}

//  The broker's public key: 40 characters of Z85, or the public-key line
//  of a zcert file. Returns 0 and fills key (41 bytes), or -1.
static int
s_server_key (const char *text, char *key)
{
    if (strlen (text) == 40 && access (text, R_OK) != 0) {
        memcpy (key, text, 41);
        return 0;
    }
    return s_key_from_file (text, "public-key", key);
}

//  Reads what one socket has; true when it was the heartbeat answer
static bool
s_answered (void *socket)
{
    char frames [2][16];
    int sizes [2] = { -1, -1 }, count = 0, more = 0;
    size_t more_size = sizeof more;
    do {
        char buffer [16];
        int size = zmq_recv (socket, buffer, sizeof buffer, ZMQ_DONTWAIT);
        if (size < 0)
            return false;
        if (count < 2) {
            memcpy (frames [count], buffer, size < 16 ? (size_t) size : 16);
            sizes [count] = size;
        }
        count++;
        zmq_getsockopt (socket, ZMQ_RCVMORE, &more, &more_size);
    } while (more);
    return count == 2 && sizes [0] == 1 && frames [0][0] == 'C'
        && sizes [1] == 1 && frames [1][0] == '4';
}

static volatile sig_atomic_t s_stop;

static void
s_on_signal (int signal_number)
{
    (void) signal_number;
    s_stop = 1;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "broker", required_argument, NULL, 'b' },
        { "server-key", required_argument, NULL, 'k' },
        { "insecure", no_argument, NULL, 'i' },
        { "connections", required_argument, NULL, 'n' },
        { "timeout", required_argument, NULL, 't' },
        { "hold", no_argument, NULL, 'h' },
        { "batch", required_argument, NULL, 'B' },
        { "key", required_argument, NULL, 'K' },
        { "label", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 }
    };
    const char *broker = "tcp://127.0.0.1:5555", *server_key = NULL;
    const char *label = "conns", *key_file = NULL;
    bool insecure = false, hold = false;
    long count = 1000, timeout_s = 120, batch = 0;
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'b': broker = optarg; break;
            case 'k': server_key = optarg; break;
            case 'i': insecure = true; break;
            case 'n': count = atol (optarg); break;
            case 't': timeout_s = atol (optarg); break;
            case 'h': hold = true; break;
            case 'B': batch = atol (optarg); break;
            case 'K': key_file = optarg; break;
            case 'l': label = optarg; break;
            default:
                fputs ("usage: see the comment at the top of bench/conns.c\n",
                       stderr);
                return 64;
        }
    }
    char server_z85 [41];
    if (batch <= 0 || batch > count)
        batch = count;
    if (count < 1 || (!insecure && !server_key)) {
        fputs ("pigato-conns: --connections >= 1 and --server-key or "
               "--insecure are required\n",
               stderr);
        return 64;
    }
    if (!insecure && s_server_key (server_key, server_z85)) {
        fprintf (stderr, "pigato-conns: no public key in %s\n", server_key);
        return 64;
    }
    char own_key [2][41];
    if (key_file
        && (s_key_from_file (key_file, "public-key", own_key [0])
            || s_key_from_file (key_file, "secret-key", own_key [1]))) {
        fprintf (stderr, "pigato-conns: no key pair in %s\n", key_file);
        return 64;
    }
    bench_raise_nofile ();
    signal (SIGTERM, s_on_signal);
    signal (SIGINT, s_on_signal);

    void *context = zmq_ctx_new ();
    zmq_ctx_set (context, ZMQ_MAX_SOCKETS, (int) count + 16);
    void **sockets = calloc ((size_t) count, sizeof (void *));
    char (*keys) [2][41] = calloc ((size_t) count, sizeof *keys);
    int rc = 0;
    long made = 0;
    for (; made < count; made++) {
        void *socket = zmq_socket (context, ZMQ_DEALER);
        if (!socket) {
            fprintf (stderr, "pigato-conns: socket %ld: %s\n", made,
                     zmq_strerror (zmq_errno ()));
            rc = 2;
            break;
        }
        sockets [made] = socket;
        int linger = 0;
        zmq_setsockopt (socket, ZMQ_LINGER, &linger, sizeof linger);
        if (!insecure) {
            if (key_file)
                memcpy (keys [made], own_key, sizeof own_key);
            else
                zmq_curve_keypair (keys [made][0], keys [made][1]);
            zmq_setsockopt (socket, ZMQ_CURVE_SERVERKEY, server_z85, 40);
            zmq_setsockopt (socket, ZMQ_CURVE_PUBLICKEY, keys [made][0], 40);
            zmq_setsockopt (socket, ZMQ_CURVE_SECRETKEY, keys [made][1], 40);
        }
    }
    memset (keys, 0, (size_t) count * sizeof *keys);
    memset (own_key, 0, sizeof own_key);
    free (keys);
    long answered = 0;
    double seconds = 0;
    if (rc == 0) {
        //  The clock runs from the first connect to the last answer; the
        //  heartbeat waits in each socket's pipe until its handshake is done
        int64_t start = s_now_usecs ();
        int64_t deadline = start + (int64_t) timeout_s * 1000000;
        for (long first = 0; first < count && rc == 0; first += batch) {
            long last = first + batch < count ? first + batch : count;
            for (long index = first; index < last && rc == 0; index++)
                if (zmq_connect (sockets [index], broker)
                    || zmq_send (sockets [index], "C", 1, ZMQ_SNDMORE) != 1
                    || zmq_send (sockets [index], "4", 1, 0) != 1) {
                    fprintf (stderr, "pigato-conns: connection %ld: %s\n",
                             index, zmq_strerror (zmq_errno ()));
                    rc = 2;
                }
            //  Sockets of this batch still waiting are kept at its front
            long pending = rc ? first : last;
            while (pending > first && !s_stop && s_now_usecs () < deadline) {
                long before = pending;
                for (long index = first; index < pending;) {
                    if (s_answered (sockets [index])) {
                        void *socket = sockets [index];
                        sockets [index] = sockets [--pending];
                        sockets [pending] = socket;
                    }
                    else
                        index++;
                }
                if (pending == before)
                    usleep (1000);
            }
            if (rc == 0)
                answered += last - pending;
            if (rc == 0 && pending > first) {
                fprintf (stderr,
                         "pigato-conns: %ld of connections %ld..%ld "
                         "unanswered after %.1f s%s\n",
                         pending - first, first, last - 1,
                         (double) (s_now_usecs () - start) / 1e6,
                         s_stop ? " (interrupted)" : "");
                rc = 1;
            }
        }
        seconds = (double) (s_now_usecs () - start) / 1e6;
    }
    printf ("label=%s connections=%ld answered=%ld seconds=%.3f "
            "handshakes_per_s=%.0f\n",
            label, count, answered, seconds,
            (double) answered / (seconds > 0 ? seconds : 1));
    fflush (stdout);
    if (hold && rc == 0) {
        while (!s_stop)
            pause ();
    }
    for (long index = 0; index < made; index++)
        zmq_close (sockets [index]);
    free (sockets);
    zmq_ctx_term (context);
    return rc;
}
