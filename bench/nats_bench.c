/*  =========================================================================
    nats_bench.c - the NATS baseline for make bench: a minimal NATS client
    (plain POSIX sockets, OpenSSL for TLS 1.3, no NATS client library) with
    two modes.

    Echo responder (--echo): SUB the subject, optionally in a queue group,
    and PUB every payload back to its reply subject.
    Load generator: SUB _INBOX.<random>.*, keep K requests in flight, each a
    PUB to the subject with reply _INBOX.<random>.<n>; prints the same
    key=value line as pigato-bench.

    nats-bench --server HOST:PORT [--tls --ca CA_FILE] --echo
               [--subject echo] [--queue GROUP]
    nats-bench --server HOST:PORT [--tls --ca CA_FILE] [--subject echo]
               [--inflight 100] [--requests 100000] [--size 64]
               [--sequential] [--label nats] [--server-pid PID]

    --server-pid adds nats-server's CPU seconds per 100,000 requests and
    its peak and current RSS to the result line (see bench/proc.h).

    Writes are buffered: what one read's messages produce goes out in one
    write (TLS: one SSL_write), as the NATS C client flushes its buffer.
    Reads are parsed incrementally; a MSG split across reads waits in the
    input buffer for its remainder.
    =========================================================================
*/
#include <getopt.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "nats_conn.h"
#include "proc.h"

typedef struct {
    const char *subject;  //  service subject
    char inbox [64];      //  "_INBOX.<random>."
    size_t inbox_size;    //  strlen (inbox)
    char *payload;        //  request body
    size_t size;          //  request body size
    long target;          //  requests to complete
    long sent;            //  requests published
    long done;            //  replies received
    long errors;          //  wrong, duplicate or unknown replies
    bool warm;            //  a warm-up reply arrived
    int64_t *started;     //  publish time per request, by index (us)
    int64_t *latency;     //  latency per completed request (us)
    bool *answered;       //  reply seen, by index
} bench_t;

//  --------------------------------------------------------------------------
//  Echo responder: every request's payload goes back to its reply subject.

static void
s_on_request (conn_t *conn, const char *subject, const char *reply,
              const char *payload, size_t size, void *arg)
{
    (void) subject, (void) arg;
    if (reply)
        s_conn_publish (conn, reply, "", 0, payload, size);
}

static int
s_echo (conn_t *conn, const char *subject, const char *queue)
{
    char line [CONTROL_LINE_MAX];
    snprintf (line, sizeof line, "SUB %s %s%s1\r\nPING\r\n", subject,
              queue ? queue : "", queue ? " " : "");
    s_conn_append (conn, line, strlen (line));
    if (s_conn_flush (conn) || s_conn_sync (conn, 2, s_on_request, NULL)) {
        fprintf (stderr, "nats-bench: %s\n", conn->error);
        return 2;
    }
    fprintf (stderr, "event=ready subject=%s tls=%s\n", subject,
             conn->ssl ? SSL_get_version (conn->ssl) : "none");
    while (true) {
        if (s_conn_fill (conn, -1) < 0
            || s_conn_parse (conn, s_on_request, NULL) || s_conn_flush (conn)) {
            fprintf (stderr, "nats-bench: %s\n", conn->error);
            return 2;
        }
    }
}

//  --------------------------------------------------------------------------
//  Load generator.

static void
s_send (conn_t *conn, bench_t *self)
{
    long index = self->sent++;
    char reply [96];
    int used = snprintf (reply, sizeof reply, "%s%ld", self->inbox, index);
    self->started [index] = s_usecs ();
    s_conn_publish (conn, self->subject, reply, (size_t) used, self->payload,
                    self->size);
}

static void
s_on_reply (conn_t *conn, const char *subject, const char *reply,
            const char *payload, size_t size, void *arg)
{
    (void) reply;
    bench_t *self = arg;
    if (strncmp (subject, self->inbox, self->inbox_size)) {
        self->errors++;
        return;
    }
    const char *suffix = subject + self->inbox_size;
    if (strcmp (suffix, "warm") == 0) {
        self->warm = true;
        return;
    }
    char *end;
    long index = strtol (suffix, &end, 10);
    if (*end || end == suffix || index < 0 || index >= self->sent
        || self->answered [index]) {
        self->errors++;
        return;
    }
    self->answered [index] = true;
    self->latency [self->done++] = s_usecs () - self->started [index];
    if (size != self->size || memcmp (payload, self->payload, size))
        self->errors++;
    if (self->sent < self->target)
        s_send (conn, self);
}

static int
s_compare (const void *first, const void *second)
{
    int64_t a = *(const int64_t *) first, b = *(const int64_t *) second;
    return a < b ? -1 : a > b;
}

static int
s_load (conn_t *conn, bench_t *self, long inflight, const char *label,
        long server_pid)
{
    unsigned char random [8];
    if (RAND_bytes (random, sizeof random) != 1) {
        fputs ("nats-bench: no random bytes\n", stderr);
        return 2;
    }
    self->inbox_size = (size_t) snprintf (self->inbox, sizeof self->inbox,
                                          "_INBOX.");
    for (size_t index = 0; index < sizeof random; index++)
        self->inbox_size += (size_t) snprintf (self->inbox + self->inbox_size,
                                               3, "%02x", random [index]);
    self->inbox [self->inbox_size++] = '.';
    self->inbox [self->inbox_size] = 0;
    char line [CONTROL_LINE_MAX];
    snprintf (line, sizeof line, "SUB %s* 1\r\nPING\r\n", self->inbox);
    s_conn_append (conn, line, strlen (line));
    if (s_conn_flush (conn) || s_conn_sync (conn, 2, s_on_reply, self))
        goto failed;

    //  Warm up: one request end to end; retried, since NATS drops a request
    //  that reaches no responder
    char warm [96];
    snprintf (warm, sizeof warm, "%swarm", self->inbox);
    for (int attempt = 0; attempt < 50 && !self->warm; attempt++) {
        s_conn_publish (conn, self->subject, warm, strlen (warm), "warm", 4);
        if (s_conn_flush (conn))
            goto failed;
        int64_t deadline = s_usecs () + 200000;
        while (!self->warm && s_usecs () < deadline)
            if (s_conn_fill (conn, 50) < 0
                || s_conn_parse (conn, s_on_reply, self) || s_conn_flush (conn))
                goto failed;
    }
    if (!self->warm) {
        fprintf (stderr, "nats-bench: no reply on '%s' within 10 seconds\n",
                 self->subject);
        return 2;
    }

    double cpu_before = server_pid ? bench_process_cpu_seconds (server_pid)
                                   : -1;
    int64_t start = s_usecs ();
    for (long index = 0; index < inflight && self->sent < self->target; index++)
        s_send (conn, self);
    if (s_conn_flush (conn))
        goto failed;
    while (self->done < self->target) {
        int rc = s_conn_fill (conn, 30000);
        if (rc == 0) {
            fprintf (stderr,
                     "nats-bench: no reply within 30 seconds "
                     "(%ld of %ld done)\n",
                     self->done, self->target);
            return 2;
        }
        //  Replies in one read release their successors in one write
        if (rc < 0 || s_conn_parse (conn, s_on_reply, self)
            || s_conn_flush (conn))
            goto failed;
    }
    double seconds = (double) (s_usecs () - start) / 1e6;
    double cpu_after = server_pid ? bench_process_cpu_seconds (server_pid) : -1;
    qsort (self->latency, (size_t) self->done, sizeof (int64_t), s_compare);
    long done = self->done;
    printf ("label=%s requests=%ld errors=%ld inflight=%ld size=%zu "
            "seconds=%.3f rps=%.0f p50_us=%" PRId64 " p99_us=%" PRId64
            " p999_us=%" PRId64,
            label, self->done, self->errors, inflight, self->size, seconds,
            (double) self->done / seconds, self->latency [done / 2],
            self->latency [done * 99 / 100], self->latency [done * 999 / 1000]);
    bench_print_server (server_pid, cpu_before, cpu_after, done);
    printf ("\n");
    fflush (stdout);
    return self->errors ? 1 : 0;
failed:
    fprintf (stderr, "nats-bench: %s\n", conn->error);
    return 2;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "server", required_argument, NULL, 'S' },
        { "tls", no_argument, NULL, 't' },
        { "ca", required_argument, NULL, 'c' },
        { "echo", no_argument, NULL, 'e' },
        { "queue", required_argument, NULL, 'g' },
        { "subject", required_argument, NULL, 's' },
        { "inflight", required_argument, NULL, 'f' },
        { "requests", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'p' },
        { "sequential", no_argument, NULL, 'q' },
        { "label", required_argument, NULL, 'l' },
        { "server-pid", required_argument, NULL, 'P' },
        { NULL, 0, NULL, 0 }
    };
    const char *server = "127.0.0.1:4222", *ca_file = NULL, *queue = NULL;
    const char *label = "nats";
    bool tls = false, echo = false;
    long inflight = 100, server_pid = 0;
    bench_t bench = { .subject = "echo", .size = 64, .target = 100000 };
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'S': server = optarg; break;
            case 't': tls = true; break;
            case 'c': ca_file = optarg; break;
            case 'e': echo = true; break;
            case 'g': queue = optarg; break;
            case 's': bench.subject = optarg; break;
            case 'f': inflight = atol (optarg); break;
            case 'n': bench.target = atol (optarg); break;
            case 'p': bench.size = (size_t) atol (optarg); break;
            case 'q': inflight = 1; break;
            case 'l': label = optarg; break;
            case 'P': server_pid = atol (optarg); break;
            default:
                fputs ("usage: see the comment at the top of "
                       "bench/nats_bench.c\n",
                       stderr);
                return 64;
        }
    }
    if (inflight < 1 || bench.target < 1) {
        fputs ("nats-bench: --inflight and --requests must be >= 1\n", stderr);
        return 64;
    }
    if (tls && !ca_file) {
        fputs ("nats-bench: --tls needs --ca CA_FILE to verify the server\n",
               stderr);
        return 64;
    }
    signal (SIGPIPE, SIG_IGN);  //  SSL_write to a closed peer
    char error [256];
    conn_t *conn = s_conn_new (server, tls, ca_file, error, sizeof error);
    if (!conn) {
        fprintf (stderr, "nats-bench: %s\n", error);
        return 2;
    }
    int rc;
    if (echo)
        rc = s_echo (conn, bench.subject, queue);
    else {
        bench.payload = malloc (bench.size + 1);
        for (size_t index = 0; index < bench.size; index++)
            bench.payload [index] = (char) ('a' + index % 26);
        bench.started = calloc ((size_t) bench.target, sizeof (int64_t));
        bench.latency = calloc ((size_t) bench.target, sizeof (int64_t));
        bench.answered = calloc ((size_t) bench.target, sizeof (bool));
        rc = s_load (conn, &bench, inflight, label, server_pid);
        free (bench.payload);
        free (bench.started);
        free (bench.latency);
        free (bench.answered);
    }
    s_conn_destroy (&conn);
    return rc;
}
