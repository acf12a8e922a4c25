/*  =========================================================================
    pigato_bench.c - load generator: one libpigato client keeping K
    requests in flight against a service, for N requests or S seconds.
    Prints one line of key=value results (requests/s and latency
    percentiles in microseconds).

    pigato-bench --broker EP [--server-key K | --insecure] [--key SECRET]
                 [--service echo]
                 [--inflight 100] [--requests 100000] [--size 64]
                 [--sequential]
    =========================================================================
*/
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../include/pigato.h"

typedef struct {
    pigato_client_t *client;
    const char *service;
    char *payload;
    size_t size;
    long target;                //  requests to complete
    long sent;
    long done;
    long errors;
    int64_t *started;           //  send time per request, by index (us)
    int64_t *latency;           //  latency per completed request (us)
} bench_t;

static void s_send (bench_t *self);

static bench_t *s_bench;        //  the one benchmark (callbacks reach it)

static void
s_on_final (pigato_client_t *client, const char *rid, int status, bool final,
            const void *data, size_t size, void *arg)
{
    (void) client, (void) rid, (void) data, (void) size;
    if (!final)
        return;
    bench_t *self = s_bench;
    long index = (long) (intptr_t) arg;
    self->latency [self->done++] = zclock_usecs () - self->started [index];
    if (status != 0)
        self->errors++;
    if (self->sent < self->target)
        s_send (self);
}

static void
s_send (bench_t *self)
{
    long index = self->sent++;
    self->started [index] = zclock_usecs ();
    int rc = pigato_client_request (self->client, self->service, self->payload,
                                    self->size, "{\"timeout\":30000}",
                                    s_on_final, (void *) (intptr_t) index,
                                    NULL);
    if (rc) {
        fprintf (stderr, "pigato-bench: request failed: %s\n",
                 pigato_client_error (self->client));
        exit (2);
    }
}

static int
s_compare (const void *first, const void *second)
{
    int64_t a = *(const int64_t *) first, b = *(const int64_t *) second;
    return a < b ? -1 : a > b;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "broker", required_argument, NULL, 'b' },
        { "server-key", required_argument, NULL, 'k' },
        { "insecure", no_argument, NULL, 'i' },
        { "service", required_argument, NULL, 's' },
        { "inflight", required_argument, NULL, 'f' },
        { "requests", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'p' },
        { "sequential", no_argument, NULL, 'q' },
        { "label", required_argument, NULL, 'l' },
        { "key", required_argument, NULL, 'K' },
        { NULL, 0, NULL, 0 }
    };
    const char *broker = "tcp://127.0.0.1:5555", *server_key = NULL;
    const char *label = "pigato", *key_file = NULL;
    bool insecure = false;
    long inflight = 100;
    bench_t bench = { .service = "echo", .size = 64, .target = 100000 };
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'b': broker = optarg; break;
            case 'k': server_key = optarg; break;
            case 'i': insecure = true; break;
            case 's': bench.service = optarg; break;
            case 'f': inflight = atol (optarg); break;
            case 'n': bench.target = atol (optarg); break;
            case 'p': bench.size = (size_t) atol (optarg); break;
            case 'q': inflight = 1; break;
            case 'l': label = optarg; break;
            case 'K': key_file = optarg; break;
            default:
                fputs ("usage: see the comment at the top of "
                       "bench/pigato_bench.c\n", stderr);
                return 64;
        }
    }
    if (inflight < 1 || bench.target < 1) {
        fputs ("pigato-bench: --inflight and --requests must be >= 1\n", stderr);
        return 64;
    }
    s_bench = &bench;
    bench.payload = malloc (bench.size + 1);
    memset (bench.payload, 'x', bench.size);
    bench.started = calloc ((size_t) bench.target, sizeof (int64_t));
    bench.latency = calloc ((size_t) bench.target, sizeof (int64_t));
    bench.client = pigato_client_new ();
    pigato_client_set_insecure (bench.client, insecure);
    if ((server_key && pigato_client_set_server_key (bench.client, server_key))
    ||  (key_file && pigato_client_set_key_file (bench.client, key_file))
    ||  pigato_client_connect (bench.client, broker)) {
        fprintf (stderr, "pigato-bench: %s\n", pigato_client_error (bench.client));
        return 2;
    }
    //  Warm up: one request end to end (handshake, worker discovery). A
    //  zero-logic relay drops requests until a worker has registered, so
    //  retry briefly
    int rc = PIGATO_E_TIMEOUT;
    for (int attempt = 0; attempt < 50 && rc != 0; attempt++) {
        char *reply = NULL;
        size_t reply_size = 0;
        rc = pigato_client_call (bench.client, bench.service, "warm", 4,
                                 "{\"timeout\":200}", NULL, NULL, &reply,
                                 &reply_size);
        free (reply);
    }
    if (rc) {
        fprintf (stderr, "pigato-bench: warm-up request failed: %s\n",
                 pigato_strerror (rc));
        pigato_client_destroy (&bench.client);
        return 2;
    }
    int64_t start = zclock_usecs ();
    for (long index = 0; index < inflight && bench.sent < bench.target; index++)
        s_send (&bench);
    while (bench.done < bench.target) {
        if (pigato_client_wait (bench.client, 1000) == PIGATO_E_INTERRUPTED)
            break;
    }
    double seconds = (double) (zclock_usecs () - start) / 1e6;
    qsort (bench.latency, (size_t) bench.done, sizeof (int64_t), s_compare);
    long done = bench.done ? bench.done : 1;
    printf ("label=%s requests=%ld errors=%ld inflight=%ld size=%zu "
            "seconds=%.3f rps=%.0f p50_us=%" PRId64 " p99_us=%" PRId64
            " p999_us=%" PRId64 "\n", label, bench.done, bench.errors, inflight,
            bench.size, seconds, (double) bench.done / seconds,
            bench.latency [done / 2], bench.latency [done * 99 / 100],
            bench.latency [done * 999 / 1000]);
    pigato_client_destroy (&bench.client);
    free (bench.payload);
    free (bench.started);
    free (bench.latency);
    return bench.errors ? 1 : 0;
}
