/*  =========================================================================
    pigato_bench.c - load generator and echo worker for make bench.

    Load generator: C libpigato clients in one zloop, each keeping K
    requests in flight, for N requests in all; requests go round-robin over
    one service or over --services S of them (SERVICE0 .. SERVICE<S-1>).
    Prints one line of key=value results: requests/s, latency percentiles
    in microseconds and, with --broker-pid, the broker's CPU seconds per
    100,000 requests (utime + stime from /proc/PID/stat, after the warm-up
    and at the end) and its peak and current RSS (VmHWM, VmRSS) as
    server_cpu_s_per_100k, server_hwm_kb and server_rss_kb.

    pigato-bench --broker EP [--server-key K | --insecure] [--key SECRET]
                 [--framing auto|native|0.0.46] [--service echo]
                 [--services 1] [--clients 1] [--inflight 100]
                 [--requests 100000] [--size 64] [--sequential]
                 [--opts JSON] [--label pigato] [--broker-pid PID]

    --opts sends those request opts with every request; without it the
    requests carry none (the library's default timeout, 60 s), as most
    calls do.

    Echo worker (--worker): W libpigato workers per service in one zloop,
    each answering every request with its data, until SIGINT or SIGTERM.
    Prints event=ready on stderr once every worker is connected.

    pigato-bench --worker --broker EP [--server-key K | --insecure]
                 [--key SECRET] [--framing ...] [--service echo]
                 [--services 1] [--workers 1] [--concurrency 1000]

    pigato-bench --has-framing exits 0 when this libpigato can choose the
    framing (--framing other than auto), 69 when it cannot.
    =========================================================================
*/
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../include/pigato.h"
#include "proc.h"
#include "signals.h"

//  The framing setters may be missing from an older libpigato: referenced
//  weakly, so this program links either way and --framing says so when
//  they are absent
#pragma weak pigato_client_set_framing
#pragma weak pigato_worker_set_framing

typedef struct {
    const char *endpoint;    //  broker endpoint
    const char *server_key;  //  broker public key, NULL with --insecure
    const char *key_file;    //  our secret key file, or NULL (ephemeral)
    const char *framing;     //  auto, native or 0.0.46
    bool insecure;           //  NULL mechanism
} link_opts_t;

typedef struct {
    char **services;     //  service names, requests go round-robin
    long service_count;  //  entries in services
    char *payload;       //  request body
    size_t size;         //  request body size
    const char *opts;    //  request opts, NULL for none
    long target;         //  requests to complete
    long sent;           //  requests sent
    long done;           //  final replies received
    long errors;         //  failed or wrong replies
    int64_t *started;    //  send time per request, by index (us)
    int64_t *latency;    //  latency per completed request (us)
    int64_t finished;    //  time the last reply arrived (us)
} bench_t;

static bench_t *s_bench;  //  the one benchmark (callbacks reach it)

static void s_send (pigato_client_t *client);

static void
s_on_final (pigato_client_t *client, const char *rid, int status, bool final,
            const void *data, size_t size, void *arg)
{
    (void) rid;
    if (!final)
        return;
    bench_t *self = s_bench;
    long index = (long) (intptr_t) arg;
    self->latency [self->done++] = zclock_usecs () - self->started [index];
    if (status != 0 || size != self->size
        || (size && memcmp (data, self->payload, size)))
        self->errors++;
    if (self->done == self->target)
        self->finished = zclock_usecs ();
    if (self->sent < self->target)
        s_send (client);
}

static void
s_send (pigato_client_t *client)
{
    bench_t *self = s_bench;
    long index = self->sent++;
    self->started [index] = zclock_usecs ();
    int rc = pigato_client_request (
        client, self->services [index % self->service_count], self->payload,
        self->size, self->opts, s_on_final, (void *) (intptr_t) index, NULL);
    if (rc) {
        fprintf (stderr, "pigato-bench: request failed: %s\n",
                 pigato_client_error (client));
        exit (2);
    }
}

static int
s_compare (const void *first, const void *second)
{
    int64_t a = *(const int64_t *) first, b = *(const int64_t *) second;
    return a < b ? -1 : a > b;
}

//  Makes the list of service names: SERVICE alone, or SERVICE0..
static char **
s_service_names (const char *service, long count)
{
    char **names = calloc ((size_t) count, sizeof (char *));
    for (long index = 0; index < count; index++)
        names [index] = count == 1 ? strdup (service)
                                   : zsys_sprintf ("%s%ld", service, index);
    return names;
}

static void
s_service_names_destroy (char ***names_p, long count)
{
    for (long index = 0; index < count; index++)
        free ((*names_p) [index]);
    free (*names_p);
    *names_p = NULL;
}

//  --------------------------------------------------------------------------
//  Echo worker

static void
s_on_echo (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
           size_t size, void *arg)
{
    (void) worker, (void) arg;
    pigato_reply_end (reply, data, size);
    pigato_reply_destroy (&reply);
}

static int
s_run_workers (link_opts_t *opts, char **services, long service_count,
               long per_service, int concurrency)
{
    long count = service_count * per_service;
    pigato_worker_t **workers = calloc ((size_t) count, sizeof *workers);
    zloop_t *loop = zloop_new ();
    int rc = 0;
    for (long index = 0; index < count && rc == 0; index++) {
        pigato_worker_t *worker = pigato_worker_new (
            services [index % service_count], s_on_echo, NULL);
        workers [index] = worker;
        pigato_worker_set_insecure (worker, opts->insecure);
        pigato_worker_set_concurrency (worker, concurrency);
        if (opts->server_key)
            rc = pigato_worker_set_server_key (worker, opts->server_key);
        if (rc == 0 && opts->key_file)
            rc = pigato_worker_set_key_file (worker, opts->key_file);
        if (rc == 0 && pigato_worker_set_framing)
            rc = pigato_worker_set_framing (worker, opts->framing);
        if (rc == 0)
            rc = pigato_worker_connect (worker, opts->endpoint);
        if (rc == 0)
            rc = pigato_worker_attach (worker, loop);
        if (rc)
            fprintf (stderr, "pigato-bench: worker: %s\n",
                     pigato_worker_error (worker));
    }
    if (rc == 0) {
        fprintf (stderr, "event=ready workers=%ld services=%ld\n", count,
                 service_count);
        zloop_start (loop);
    }
    for (long index = 0; index < count; index++)
        pigato_worker_destroy (&workers [index]);
    zloop_destroy (&loop);
    free (workers);
    return rc ? 2 : 0;
}

//  --------------------------------------------------------------------------
//  Load generator

//  Ends the zloop once every reply is in
static int
s_on_check (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id, (void) arg;
    return s_bench->done >= s_bench->target || zsys_interrupted ? -1 : 0;
}

//  One request end to end per service (handshake, worker discovery). A
//  zero-logic relay drops requests until a worker has registered, and a
//  broker may not know a service yet, so retry briefly
static int
s_warm_up (pigato_client_t *client, bench_t *bench)
{
    int rc = 0;
    for (long service = 0; service < bench->service_count && rc == 0;
         service++) {
        rc = PIGATO_E_TIMEOUT;
        for (int attempt = 0; attempt < 50 && rc != 0 && !zsys_interrupted;
             attempt++) {
            char *reply = NULL;
            size_t reply_size = 0;
            rc = pigato_client_call (client, bench->services [service], "warm",
                                     4, "{\"timeout\":200}", NULL, NULL, &reply,
                                     &reply_size);
            free (reply);
        }
        if (rc)
            fprintf (stderr,
                     "pigato-bench: warm-up request to %s failed: "
                     "%s\n",
                     bench->services [service], pigato_strerror (rc));
    }
    return rc;
}

static int
s_run_clients (link_opts_t *opts, bench_t *bench, long client_count,
               long inflight, const char *label, long broker_pid)
{
    pigato_client_t **clients = calloc ((size_t) client_count, sizeof *clients);
    zloop_t *loop = zloop_new ();
    int rc = 0;
    for (long index = 0; index < client_count && rc == 0; index++) {
        pigato_client_t *client = pigato_client_new ();
        clients [index] = client;
        pigato_client_set_insecure (client, opts->insecure);
        if (opts->server_key)
            rc = pigato_client_set_server_key (client, opts->server_key);
        if (rc == 0 && opts->key_file)
            rc = pigato_client_set_key_file (client, opts->key_file);
        if (rc == 0 && pigato_client_set_framing)
            rc = pigato_client_set_framing (client, opts->framing);
        if (rc == 0)
            rc = pigato_client_connect (client, opts->endpoint);
        if (rc)
            fprintf (stderr, "pigato-bench: %s\n",
                     pigato_client_error (client));
        //  The first client warms every service up, the others the first
        if (rc == 0) {
            long service_count = bench->service_count;
            if (index > 0)
                bench->service_count = 1;
            rc = s_warm_up (client, bench);
            bench->service_count = service_count;
        }
        if (rc == 0)
            rc = pigato_client_attach (client, loop);
    }
    if (rc) {
        rc = 2;
        goto cleanup;
    }
    double cpu_before = broker_pid ? bench_process_cpu_seconds (broker_pid)
                                   : -1;
    zloop_timer (loop, 10, 0, s_on_check, NULL);
    int64_t start = zclock_usecs ();
    for (long index = 0; index < client_count; index++)
        for (long slot = 0; slot < inflight && bench->sent < bench->target;
             slot++)
            s_send (clients [index]);
    zloop_start (loop);
    if (bench->done < bench->target) {
        fprintf (stderr,
                 "pigato-bench: interrupted after %ld of %ld "
                 "requests\n",
                 bench->done, bench->target);
        rc = 1;
        goto cleanup;
    }
    double seconds = (double) (bench->finished - start) / 1e6;
    double cpu_after = broker_pid ? bench_process_cpu_seconds (broker_pid) : -1;
    qsort (bench->latency, (size_t) bench->done, sizeof (int64_t), s_compare);
    long done = bench->done;
    printf ("label=%s requests=%ld errors=%ld clients=%ld inflight=%ld "
            "services=%ld size=%zu seconds=%.3f rps=%.0f p50_us=%" PRId64
            " p99_us=%" PRId64 " p999_us=%" PRId64,
            label, bench->done, bench->errors, client_count, inflight,
            bench->service_count, bench->size, seconds,
            (double) bench->done / seconds, bench->latency [done / 2],
            bench->latency [done * 99 / 100],
            bench->latency [done * 999 / 1000]);
    bench_print_server (broker_pid, cpu_before, cpu_after, done);
    printf ("\n");
    rc = bench->errors ? 1 : 0;
cleanup:
    for (long index = 0; index < client_count; index++)
        pigato_client_destroy (&clients [index]);
    zloop_destroy (&loop);
    free (clients);
    return rc;
}

int
main (int argc, char *argv [])
{
    bench_catch_stop_signals ();
    static const struct option options [] = {
        { "broker", required_argument, NULL, 'b' },
        { "server-key", required_argument, NULL, 'k' },
        { "insecure", no_argument, NULL, 'i' },
        { "key", required_argument, NULL, 'K' },
        { "framing", required_argument, NULL, 'F' },
        { "service", required_argument, NULL, 's' },
        { "services", required_argument, NULL, 'S' },
        { "clients", required_argument, NULL, 'c' },
        { "inflight", required_argument, NULL, 'f' },
        { "requests", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'p' },
        { "sequential", no_argument, NULL, 'q' },
        { "opts", required_argument, NULL, 'o' },
        { "label", required_argument, NULL, 'l' },
        { "broker-pid", required_argument, NULL, 'P' },
        { "worker", no_argument, NULL, 'w' },
        { "workers", required_argument, NULL, 'W' },
        { "concurrency", required_argument, NULL, 'C' },
        { "has-framing", no_argument, NULL, 'H' },
        { NULL, 0, NULL, 0 }
    };
    link_opts_t opts = { .endpoint = "tcp://127.0.0.1:5555",
                         .framing = "auto" };
    const char *label = "pigato", *service = "echo";
    bool worker_mode = false;
    long inflight = 100, client_count = 1, service_count = 1, broker_pid = 0;
    long worker_count = 1, concurrency = 1000;
    bench_t bench = { .size = 64, .target = 100000 };
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'b': opts.endpoint = optarg; break;
            case 'k': opts.server_key = optarg; break;
            case 'i': opts.insecure = true; break;
            case 'K': opts.key_file = optarg; break;
            case 'F': opts.framing = optarg; break;
            case 's': service = optarg; break;
            case 'S': service_count = atol (optarg); break;
            case 'c': client_count = atol (optarg); break;
            case 'f': inflight = atol (optarg); break;
            case 'n': bench.target = atol (optarg); break;
            case 'p': bench.size = (size_t) atol (optarg); break;
            case 'q': inflight = 1; break;
            case 'o': bench.opts = optarg; break;
            case 'l': label = optarg; break;
            case 'P': broker_pid = atol (optarg); break;
            case 'w': worker_mode = true; break;
            case 'W': worker_count = atol (optarg); break;
            case 'C': concurrency = atol (optarg); break;
            case 'H':
                return pigato_client_set_framing && pigato_worker_set_framing
                         ? 0
                         : 69;
            default:
                fputs ("usage: see the comment at the top of "
                       "bench/pigato_bench.c\n",
                       stderr);
                return 64;
        }
    }
    if (inflight < 1 || bench.target < 1 || client_count < 1
        || service_count < 1 || worker_count < 1 || concurrency < 1) {
        fputs ("pigato-bench: --inflight, --requests, --clients, --services, "
               "--workers and --concurrency must be >= 1\n",
               stderr);
        return 64;
    }
    if (!streq (opts.framing, "auto") && !streq (opts.framing, "native")
        && !streq (opts.framing, "0.0.46")) {
        fprintf (stderr,
                 "pigato-bench: --framing %s: expected auto, native "
                 "or 0.0.46\n",
                 opts.framing);
        return 64;
    }
    if (!streq (opts.framing, "auto")
        && (!pigato_client_set_framing || !pigato_worker_set_framing)) {
        fprintf (stderr,
                 "pigato-bench: --framing %s: this libpigato has no "
                 "pigato_client_set_framing/pigato_worker_set_framing\n",
                 opts.framing);
        return 69;
    }
    //  Thousands of workers are thousands of sockets
    bench_raise_nofile ();
    zsys_set_max_sockets (0);
    char **services = s_service_names (service, service_count);
    int rc;
    if (worker_mode)
        rc = s_run_workers (&opts, services, service_count, worker_count,
                            (int) concurrency);
    else {
        s_bench = &bench;
        bench.services = services;
        bench.service_count = service_count;
        bench.payload = malloc (bench.size + 1);
        memset (bench.payload, 'x', bench.size);
        bench.started = calloc ((size_t) bench.target, sizeof (int64_t));
        bench.latency = calloc ((size_t) bench.target, sizeof (int64_t));
        rc = s_run_clients (&opts, &bench, client_count, inflight, label,
                            broker_pid);
        free (bench.payload);
        free (bench.started);
        free (bench.latency);
    }
    s_service_names_destroy (&services, service_count);
    return rc;
}
