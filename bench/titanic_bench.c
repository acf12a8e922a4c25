/*  =========================================================================
    titanic_bench.c - durable requests (pigato-broker --store) under load,
    for bench/titanic.sh, beside jetstream_bench.c:

    Acks (--mode acks): N titanic.request submissions, K unacknowledged at
    a time (libpigato's asynchronous client); prints acknowledged
    submissions per second (an acknowledgement means committed and
    fsync'd) and the submit -> id latency.

    Round trip (--mode roundtrip): one at a time, pigato_titanic_submit,
    then pigato_titanic_fetch again and again until the reply is there (a
    worker, e.g. pigato serve SERVICE --echo, answers it and the broker
    stores the reply), then pigato_titanic_close (not timed); prints the
    latency from submit to the reply in hand.

        titanic-bench --broker EP [--server-key K | --insecure]
                      --mode acks|roundtrip [--service bench]
                      [--requests N] [--inflight K] [--size B]
                      [--label L] [--broker-pid PID]
    =========================================================================
*/
#include <czmq.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../include/pigato.h"
#include "proc.h"

typedef struct _bench_t bench_t;

//  What an acknowledgement's callback needs: its benchmark, its index.
typedef struct {
    bench_t *bench;
    long index;
} slot_t;

struct _bench_t {
    pigato_client_t *client;
    const char *service;
    char *opts;  //  {"service":...}
    char *payload;
    size_t size;
    long target, sent, done, errors;
    int64_t *started;  //  by index (us)
    int64_t *latency;
    slot_t *slots;  //  by index
};

static int64_t
s_usecs (void)
{
    return zclock_usecs ();
}

static int
s_compare (const void *first, const void *second)
{
    int64_t a = *(const int64_t *) first, b = *(const int64_t *) second;
    return a < b ? -1 : a > b;
}

static void s_send (bench_t *self);

//  An acknowledgement (the id, as a JSON string): the next submission
//  goes out at once, keeping K unacknowledged.
static void
s_on_ack (pigato_client_t *client, const char *rid, int status, bool final,
          const void *data, size_t size, void *arg)
{
    (void) client, (void) rid, (void) data;
    slot_t *slot = (slot_t *) arg;
    bench_t *self = slot->bench;
    if (!final)
        return;
    self->latency [self->done++] = s_usecs () - self->started [slot->index];
    if (status != PIGATO_OK || size != PIGATO_TITANIC_ID_SIZE + 1)
        self->errors++;
    if (self->sent < self->target)
        s_send (self);
}

static void
s_send (bench_t *self)
{
    long index = self->sent++;
    self->slots [index] = (slot_t) { self, index };
    self->started [index] = s_usecs ();
    if (pigato_client_request (self->client, "titanic.request", self->payload,
                               self->size, self->opts, s_on_ack,
                               &self->slots [index], NULL))
        self->errors++;
}

static void
s_report (bench_t *self, const char *label, long inflight, double seconds,
          long broker_pid, double cpu_before)
{
    double cpu_after = broker_pid ? bench_process_cpu_seconds (broker_pid) : -1;
    long done = self->done;
    qsort (self->latency, (size_t) done, sizeof (int64_t), s_compare);
    printf ("label=%s requests=%ld errors=%ld inflight=%ld size=%zu "
            "seconds=%.3f rps=%.0f p50_us=%" PRId64 " p99_us=%" PRId64
            " p999_us=%" PRId64,
            label, done, self->errors, inflight, self->size, seconds,
            (double) done / seconds, self->latency [done / 2],
            self->latency [done * 99 / 100], self->latency [done * 999 / 1000]);
    bench_print_server (broker_pid, cpu_before, cpu_after, done);
    printf ("\n");
    fflush (stdout);
}

static int
s_acks (bench_t *self, long inflight, const char *label, long broker_pid)
{
    //  Warm up: one submission end to end
    char id [PIGATO_TITANIC_ID_SIZE];
    if (pigato_titanic_submit (self->client, self->service, "warm", 4, NULL,
                               NULL, id, NULL)) {
        fprintf (stderr, "titanic-bench: no acknowledgement (does the broker "
                         "have --store?)\n");
        return 2;
    }
    double cpu_before = broker_pid ? bench_process_cpu_seconds (broker_pid)
                                   : -1;
    int64_t start = s_usecs ();
    while (self->sent < inflight && self->sent < self->target)
        s_send (self);
    int64_t last = self->done, quiet_since = s_usecs ();
    while (self->done < self->target) {
        if (pigato_client_wait (self->client, 1000)) {
            fprintf (stderr, "titanic-bench: interrupted\n");
            return 2;
        }
        if (self->done != last)
            last = self->done, quiet_since = s_usecs ();
        else if (s_usecs () - quiet_since > 30000000) {
            fprintf (stderr,
                     "titanic-bench: no acknowledgement within 30 s "
                     "(%ld of %ld)\n",
                     self->done, self->target);
            return 2;
        }
    }
    s_report (self, label, inflight, (double) (s_usecs () - start) / 1e6,
              broker_pid, cpu_before);
    return self->errors ? 1 : 0;
}

static int
s_roundtrip (bench_t *self, const char *label, long broker_pid)
{
    double cpu_before = broker_pid ? bench_process_cpu_seconds (broker_pid)
                                   : -1;
    int64_t start = s_usecs ();
    long fetches = 0;
    while (self->done < self->target) {
        char id [PIGATO_TITANIC_ID_SIZE];
        char *reply = NULL;
        size_t size = 0;
        int64_t began = s_usecs ();
        int rc = pigato_titanic_submit (self->client, self->service,
                                        self->payload, self->size, NULL, NULL,
                                        id, NULL);
        if (rc == PIGATO_OK)
            while ((rc = pigato_titanic_fetch (self->client, id, &reply, &size))
                   == PIGATO_E_PENDING) {
                free (reply);
                reply = NULL;
                fetches++;
            }
        if (rc != PIGATO_OK || size != self->size
            || memcmp (reply, self->payload, size))
            self->errors++;
        self->latency [self->done++] = s_usecs () - began;
        free (reply);
        if (rc == PIGATO_OK && pigato_titanic_close (self->client, id, NULL))
            self->errors++;
        if (self->errors > 10) {
            fprintf (stderr,
                     "titanic-bench: round trips fail (%s): is a "
                     "worker serving the service?\n",
                     pigato_strerror (rc));
            return 2;
        }
    }
    s_report (self, label, 1, (double) (s_usecs () - start) / 1e6, broker_pid,
              cpu_before);
    fprintf (stderr, "titanic-bench: %.1f fetches per round trip\n",
             (double) (fetches + self->done) / (double) self->done);
    return self->errors ? 1 : 0;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "broker", required_argument, NULL, 'b' },
        { "server-key", required_argument, NULL, 'k' },
        { "insecure", no_argument, NULL, 'i' },
        { "mode", required_argument, NULL, 'm' },
        { "service", required_argument, NULL, 's' },
        { "inflight", required_argument, NULL, 'f' },
        { "requests", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'p' },
        { "label", required_argument, NULL, 'l' },
        { "broker-pid", required_argument, NULL, 'P' },
        { NULL, 0, NULL, 0 }
    };
    const char *endpoint = "tcp://127.0.0.1:5555", *server_key = NULL;
    const char *mode = "acks", *label = NULL;
    bool insecure = false;
    long inflight = 100, broker_pid = 0;
    bench_t self = { .service = "bench", .size = 64, .target = 20000 };
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'b': endpoint = optarg; break;
            case 'k': server_key = optarg; break;
            case 'i': insecure = true; break;
            case 'm': mode = optarg; break;
            case 's': self.service = optarg; break;
            case 'f': inflight = atol (optarg); break;
            case 'n': self.target = atol (optarg); break;
            case 'p': self.size = (size_t) atol (optarg); break;
            case 'l': label = optarg; break;
            case 'P': broker_pid = atol (optarg); break;
            default:
                fputs ("usage: see the comment at the top of "
                       "bench/titanic_bench.c\n",
                       stderr);
                return 64;
        }
    }
    bool acks = strcmp (mode, "acks") == 0;
    if ((!acks && strcmp (mode, "roundtrip")) || inflight < 1 || self.target < 1
        || (!insecure && !server_key)) {
        fputs ("titanic-bench: --mode acks|roundtrip, --server-key or "
               "--insecure, --inflight and --requests >= 1\n",
               stderr);
        return 64;
    }
    self.client = pigato_client_new ();
    if (insecure)
        pigato_client_set_insecure (self.client, true);
    else
        pigato_client_set_server_key (self.client, server_key);
    if (pigato_client_connect (self.client, endpoint)) {
        fprintf (stderr, "titanic-bench: %s\n",
                 pigato_client_error (self.client));
        return 2;
    }
    self.opts = zsys_sprintf ("{\"service\":\"%s\"}", self.service);
    self.payload = malloc (self.size + 1);
    for (size_t index = 0; index < self.size; index++)
        self.payload [index] = (char) ('a' + index % 26);
    self.started = calloc ((size_t) self.target, sizeof (int64_t));
    self.latency = calloc ((size_t) self.target, sizeof (int64_t));
    self.slots = calloc ((size_t) self.target, sizeof (slot_t));
    int rc = acks ? s_acks (&self, inflight, label ? label : "titanic-acks",
                            broker_pid)
                  : s_roundtrip (&self, label ? label : "titanic-roundtrip",
                                 broker_pid);
    pigato_client_destroy (&self.client);
    zstr_free (&self.opts);
    free (self.payload);
    free (self.started);
    free (self.latency);
    free (self.slots);
    return rc;
}
