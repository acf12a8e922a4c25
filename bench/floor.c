/*  =========================================================================
    floor.c - the transport floor for make bench: what libzmq itself costs
    to carry a native batch around the broker's ring, with no logic at all.

    One client keeps one batch frame in flight: the frame a native client
    sends for INFLIGHT requests of SIZE bytes (each entry with the entry
    head, a 5-byte client id, a 4-byte service name and a 24-byte rid, so
    the frame is a little larger than any real batch). The relay sends it
    to the worker, the worker sends it back, the relay returns it to the
    client, and the client sends it again: client -> relay -> worker ->
    relay -> client, the path every request takes through pigato-broker,
    in the same three processes, over the same sockets and CURVE.

    Each round trip carries INFLIGHT requests' worth of bytes, so
    rounds/s x INFLIGHT is the request rate a broker could at best reach
    with 100 in flight and perfect batching on this machine; its p50 is the
    round trip of one batch.

    pigato-floor --relay --bind EP [--key SECRET_FILE | --insecure]
    pigato-floor --worker --broker EP [--server-key PUBLIC_FILE | --insecure]
    pigato-floor --broker EP [--server-key PUBLIC_FILE | --insecure]
                 [--inflight 100] [--size 64] [--requests 100000]
                 [--label floor] [--broker-pid PID]

    The relay knows one worker (the peer whose first frame is "W") and
    one client (the last other peer); the worker echoes every frame. The
    client prints the same key=value line as pigato-bench.
    =========================================================================
*/
#include <czmq.h>
#include <getopt.h>
#include <inttypes.h>
#include "proc.h"
#include "../keys/keyfile.h"

//  Entry head, client id, service, rid: see docs/native-framing.md
#define ENTRY_OVERHEAD (12 + 5 + 4 + 24)
#define BATCH_HEAD     4

static int
s_compare (const void *first, const void *second)
{
    int64_t a = *(const int64_t *) first, b = *(const int64_t *) second;
    return a < b ? -1 : a > b;
}

static int
s_relay (const char *bind, const char *key, bool insecure)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    if (!router)
        return 1;
    zsock_set_sndhwm (router, 100000);
    zsock_set_rcvhwm (router, 100000);
    zsock_set_rcvtimeo (router, 200);  //  see the interrupted check
    if (!insecure) {
        char err [256];
        zcert_t *cert = NULL;
        if (!key || pigato__keyfile_load_secret (key, &cert, err, sizeof err)) {
            fprintf (stderr, "pigato-floor: %s\n",
                     key ? err : "--relay needs --key or --insecure");
            zsock_destroy (&router);
            return 1;
        }
        zcert_apply (cert, router);
        zsock_set_curve_server (router, 1);
        pigato__keyfile_cert_destroy (&cert);
    }
    if (zsock_bind (router, "%s", bind) == -1) {
        fprintf (stderr, "pigato-floor: cannot bind %s\n", bind);
        zsock_destroy (&router);
        return 1;
    }
    fprintf (stderr, "event=ready relay=%s\n", bind);
    void *handle = zsock_resolve (router);
    byte worker [256], client [256];
    size_t worker_size = 0, client_size = 0;
    zmq_msg_t id, body;
    zmq_msg_init (&id);
    zmq_msg_init (&body);
    while (!zsys_interrupted) {
        if (zmq_msg_recv (&id, handle, 0) == -1)
            continue;
        if (zmq_msg_recv (&body, handle, 0) == -1)
            break;
        size_t id_size = zmq_msg_size (&id);
        bool from_worker = worker_size && id_size == worker_size
                        && memcmp (zmq_msg_data (&id), worker, id_size) == 0;
        if (!from_worker && zmq_msg_size (&body) == 1
            && *(char *) zmq_msg_data (&body) == 'W' && id_size <= 255) {
            memcpy (worker, zmq_msg_data (&id), id_size);
            worker_size = id_size;
            continue;
        }
        if (!from_worker && id_size <= 255) {
            memcpy (client, zmq_msg_data (&id), id_size);
            client_size = id_size;
        }
        const byte *to = from_worker ? client : worker;
        size_t to_size = from_worker ? client_size : worker_size;
        if (to_size == 0)
            continue;  //  nobody to send it to yet
        if (zmq_send (handle, to, to_size, ZMQ_SNDMORE) == -1
            || zmq_msg_send (&body, handle, 0) == -1)
            continue;
    }
    zmq_msg_close (&id);
    zmq_msg_close (&body);
    zsock_destroy (&router);
    return 0;
}

//  A DEALER to the relay, with an ephemeral CURVE key unless insecure
static zsock_t *
s_dealer (const char *endpoint, const char *server_key, bool insecure)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    if (!dealer)
        return NULL;
    zsock_set_sndhwm (dealer, 100000);
    zsock_set_rcvhwm (dealer, 100000);
    if (!insecure) {
        zcert_t *server = server_key ? zcert_load (server_key) : NULL;
        if (!server) {
            fprintf (stderr, "pigato-floor: cannot read --server-key %s\n",
                     server_key ? server_key : "(none; or use --insecure)");
            zsock_destroy (&dealer);
            return NULL;
        }
        zcert_t *own = zcert_new ();
        zcert_apply (own, dealer);
        zsock_set_curve_serverkey (dealer, zcert_public_txt (server));
        zcert_destroy (&own);
        zcert_destroy (&server);
    }
    if (zsock_connect (dealer, "%s", endpoint) == -1) {
        fprintf (stderr, "pigato-floor: cannot connect to %s\n", endpoint);
        zsock_destroy (&dealer);
    }
    return dealer;
}

static int
s_worker (zsock_t *dealer)
{
    void *handle = zsock_resolve (dealer);
    zsock_set_rcvtimeo (dealer, 200);  //  see the interrupted check
    if (zmq_send (handle, "W", 1, 0) == -1)
        return 1;
    fprintf (stderr, "event=ready worker\n");
    zmq_msg_t frame;
    zmq_msg_init (&frame);
    while (!zsys_interrupted)
        if (zmq_msg_recv (&frame, handle, 0) != -1)
            zmq_msg_send (&frame, handle, 0);
    zmq_msg_close (&frame);
    return 0;
}

static int
s_client (zsock_t *dealer, long inflight, size_t size, long requests,
          const char *label, long broker_pid)
{
    void *handle = zsock_resolve (dealer);
    size_t batch = BATCH_HEAD + (size_t) inflight * (ENTRY_OVERHEAD + size);
    long rounds = (requests + inflight - 1) / inflight;
    byte *data = (byte *) calloc (1, batch);
    int64_t *latency = (int64_t *) calloc ((size_t) rounds, sizeof *latency);
    if (!data || !latency) {
        free (data);
        free (latency);
        return 1;
    }
    int rc = 0;
    //  One round first, resent until the worker is there; then any late
    //  echo of an earlier try is read, so exactly one batch is in flight
    zsock_set_rcvtimeo (dealer, 200);
    for (int attempt = 0;; attempt++) {
        zmq_send (handle, data, batch, 0);
        if (zmq_recv (handle, data, batch, 0) != -1)
            break;
        if (attempt == 50 || zsys_interrupted) {
            fprintf (stderr, "pigato-floor: no answer through the relay\n");
            rc = 1;
            goto cleanup;
        }
    }
    while (zmq_recv (handle, data, batch, 0) != -1)
        ;
    zsock_set_rcvtimeo (dealer, 10000);
    double cpu_before = broker_pid ? bench_process_cpu_seconds (broker_pid)
                                   : -1;
    int64_t start = zclock_usecs ();
    for (long round = 0; round < rounds; round++) {
        int64_t sent = zclock_usecs ();
        if (zmq_send (handle, data, batch, 0) == -1
            || zmq_recv (handle, data, batch, 0) == -1) {
            fprintf (stderr, "pigato-floor: round %ld failed: %s\n", round,
                     zmq_strerror (zmq_errno ()));
            rc = 1;
            goto cleanup;
        }
        latency [round] = zclock_usecs () - sent;
    }
    double seconds = (double) (zclock_usecs () - start) / 1e6;
    double cpu_after = broker_pid ? bench_process_cpu_seconds (broker_pid) : -1;
    qsort (latency, (size_t) rounds, sizeof *latency, s_compare);
    long done = rounds * inflight;
    printf ("label=%s requests=%ld errors=0 clients=1 inflight=%ld "
            "services=1 size=%zu batch_bytes=%zu seconds=%.3f rps=%.0f "
            "p50_us=%" PRId64 " p99_us=%" PRId64 " p999_us=%" PRId64,
            label, done, inflight, size, batch, seconds,
            (double) done / seconds, latency [rounds / 2],
            latency [rounds * 99 / 100], latency [rounds * 999 / 1000]);
    bench_print_server (broker_pid, cpu_before, cpu_after, done);
    printf ("\n");
cleanup:
    free (data);
    free (latency);
    return rc;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "relay", no_argument, NULL, 'r' },
        { "worker", no_argument, NULL, 'w' },
        { "bind", required_argument, NULL, 'B' },
        { "broker", required_argument, NULL, 'b' },
        { "key", required_argument, NULL, 'k' },
        { "server-key", required_argument, NULL, 's' },
        { "insecure", no_argument, NULL, 'i' },
        { "inflight", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'z' },
        { "requests", required_argument, NULL, 'q' },
        { "label", required_argument, NULL, 'l' },
        { "broker-pid", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 }
    };
    bool relay = false, worker = false, insecure = false;
    const char *bind = NULL, *endpoint = NULL, *key = NULL, *server_key = NULL;
    const char *label = "floor";
    long inflight = 100, requests = 100000, broker_pid = 0;
    size_t size = 64;
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1)
        switch (option) {
            case 'r': relay = true; break;
            case 'w': worker = true; break;
            case 'B': bind = optarg; break;
            case 'b': endpoint = optarg; break;
            case 'k': key = optarg; break;
            case 's': server_key = optarg; break;
            case 'i': insecure = true; break;
            case 'n': inflight = atol (optarg); break;
            case 'z': size = (size_t) atol (optarg); break;
            case 'q': requests = atol (optarg); break;
            case 'l': label = optarg; break;
            case 'p': broker_pid = atol (optarg); break;
            default:
                fprintf (stderr, "usage: see the comment at the top of "
                                 "bench/floor.c\n");
                return 64;
        }
    if (inflight < 1 || inflight > 100000 || requests < inflight
        || size > 1024 * 1024 || (relay && !bind) || (!relay && !endpoint)) {
        fprintf (stderr, "pigato-floor: need --relay --bind EP, or --broker "
                         "EP; --inflight 1..100000, --requests >= --inflight, "
                         "--size <= 1 MiB\n");
        return 64;
    }
    zsys_init ();
    if (relay)
        return s_relay (bind, key, insecure);
    zsock_t *dealer = s_dealer (endpoint, server_key, insecure);
    if (!dealer)
        return 1;
    int rc = worker
               ? s_worker (dealer)
               : s_client (dealer, inflight, size, requests, label, broker_pid);
    zsock_destroy (&dealer);
    return rc;
}
