/*  bounds_peer.c - libpigato peers for test_library_bounds.py, which
    asserts the library's own bounds from outside.

      bounds_peer holder --broker EP [--broker EP...] (--server-key KEY |
                         --insecure) --concurrency N --hold-ms MS
          A worker ("held" service unless --service) whose handler keeps
          each request MS ms, then ends it with its data. It counts what
          its handler holds itself, so the count does not trust the
          library. stdout: "ready" once connected, then a line whenever
          something changed:
            stat handled=N max=N holding=N in_flight=N over=N
          (max: most held at once; in_flight and over: the library's
          pigato_worker_in_flight () and pigato_worker_over_concurrency ()).

      bounds_peer loopclient --broker EP --server-key KEY [--heartbeat MS]
                             [--service S]
          A client attached to a zloop (pigato_client_attach) that sends
          one request (timeout 60 s) and prints its final reply:
            sent rid=RID
            final status=NAME size=N hex=HEX
          then goes on running (heartbeats) until SIGTERM.

    stderr: the library's log lines (info and up). Stops on SIGTERM.
*/
#include <czmq.h>
#include <pigato.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BROKERS_MAX 4
#define HELD_MAX    4096

typedef struct {
    pigato_reply_t *reply;
    int64_t until;
} held_t;

static const char *s_brokers [BROKERS_MAX];
static int s_broker_count;
static const char *s_server_key, *s_service = "held";
static bool s_insecure;
static int s_concurrency = PIGATO_CONCURRENCY, s_hold_ms = 100;
static int s_heartbeat_ms;
static held_t s_held [HELD_MAX];
static int s_holding, s_max, s_handled, s_refused;

static void
s_log (int level, const char *line, void *arg)
{
    (void) arg;
    if (level <= PIGATO_LOG_INFO)
        pigato_log_stderr (level, line, NULL);
}

static void
s_stat (pigato_worker_t *worker)
{
    printf ("stat handled=%d max=%d holding=%d in_flight=%zu over=%llu\n",
            s_handled, s_max, s_holding, pigato_worker_in_flight (worker),
            (unsigned long long) pigato_worker_over_concurrency (worker));
    fflush (stdout);
}

static void
s_on_request (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
              size_t size, void *arg)
{
    (void) worker, (void) data, (void) size, (void) arg;
    s_handled++;
    if (s_holding == HELD_MAX) {
        //  Cannot happen below HELD_MAX concurrency; say it if it does
        s_refused++;
        pigato_reply_error (reply, "holder full");
        pigato_reply_destroy (&reply);
        return;
    }
    s_held [s_holding].reply = reply;
    s_held [s_holding].until = zclock_mono () + s_hold_ms;
    if (++s_holding > s_max)
        s_max = s_holding;
}

static int
s_holder (void)
{
    pigato_worker_t *worker = pigato_worker_new (s_service, s_on_request, NULL);
    if (!worker)
        return 1;
    if (s_insecure)
        pigato_worker_set_insecure (worker, true);
    else if (pigato_worker_set_server_key (worker, s_server_key)) {
        fprintf (stderr, "bounds_peer: %s\n", pigato_worker_error (worker));
        return 1;
    }
    if (s_heartbeat_ms)
        pigato_worker_set_heartbeat (worker, s_heartbeat_ms, PIGATO_LIVENESS);
    pigato_worker_set_concurrency (worker, s_concurrency);
    for (int index = 0; index < s_broker_count; index++)
        if (pigato_worker_connect (worker, s_brokers [index])) {
            fprintf (stderr, "bounds_peer: %s\n", pigato_worker_error (worker));
            return 1;
        }
    printf ("ready\n");
    fflush (stdout);
    int last_handled = -1, last_holding = -1;
    uint64_t last_over = 0;
    while (!zsys_interrupted) {
        int rc = pigato_worker_wait (worker, 5);
        if (rc == PIGATO_E_INTERRUPTED || rc == PIGATO_E_CLOSED)
            break;
        int64_t now = zclock_mono ();
        for (int index = 0; index < s_holding;)
            if (now >= s_held [index].until) {
                pigato_reply_t *reply = s_held [index].reply;
                pigato_reply_end (reply, "\"done\"", 6);
                pigato_reply_destroy (&reply);
                s_held [index] = s_held [--s_holding];
            }
            else
                index++;
        uint64_t over = pigato_worker_over_concurrency (worker);
        if (s_handled != last_handled || s_holding != last_holding
            || over != last_over) {
            last_handled = s_handled;
            last_holding = s_holding;
            last_over = over;
            s_stat (worker);
        }
    }
    while (s_holding > 0)
        pigato_reply_destroy (&s_held [--s_holding].reply);
    pigato_worker_destroy (&worker);
    return s_refused ? 1 : 0;
}

//  --------------------------------------------------------------------------
//  loopclient

static void
s_on_reply (pigato_client_t *client, const char *rid, int status, bool final,
            const void *data, size_t size, void *arg)
{
    (void) client, (void) rid, (void) arg;
    if (!final)
        return;
    printf ("final status=%s size=%zu hex=", pigato_strerror (status), size);
    for (size_t index = 0; index < size; index++)
        printf ("%02x", ((const unsigned char *) data) [index]);
    printf ("\n");
    fflush (stdout);
}

//  Ends the loop on SIGTERM (zsys_interrupted is set by our handler).
static int
s_on_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id, (void) arg;
    return zsys_interrupted ? -1 : 0;
}

static int
s_loopclient (void)
{
    pigato_client_t *client = pigato_client_new ();
    zloop_t *loop = zloop_new ();
    if (!client || !loop)
        return 1;
    if (pigato_client_set_server_key (client, s_server_key)) {
        fprintf (stderr, "bounds_peer: %s\n", pigato_client_error (client));
        return 1;
    }
    if (s_heartbeat_ms)
        pigato_client_set_heartbeat (client, s_heartbeat_ms, PIGATO_LIVENESS);
    for (int index = 0; index < s_broker_count; index++)
        if (pigato_client_connect (client, s_brokers [index])) {
            fprintf (stderr, "bounds_peer: %s\n", pigato_client_error (client));
            return 1;
        }
    if (pigato_client_attach (client, loop)) {
        fprintf (stderr, "bounds_peer: %s\n", pigato_client_error (client));
        return 1;
    }
    char rid [PIGATO_RID_MAX + 1];
    if (pigato_client_request (client, s_service, "\"hi\"", 4,
                               "{\"timeout\":60000}", s_on_reply, NULL, rid)) {
        fprintf (stderr, "bounds_peer: %s\n", pigato_client_error (client));
        return 1;
    }
    printf ("sent rid=%s\n", rid);
    fflush (stdout);
    zloop_timer (loop, 50, 0, s_on_tick, NULL);
    zloop_start (loop);
    pigato_client_destroy (&client);
    zloop_destroy (&loop);
    return 0;
}

static void
s_on_signal (int signal_number)
{
    (void) signal_number;
    zsys_interrupted = 1;
}

int
main (int argc, char **argv)
{
    if (argc < 2)
        return 64;
    for (int index = 2; index < argc; index++) {
        const char *option = argv [index];
        const char *value = index + 1 < argc ? argv [index + 1] : NULL;
        if (streq (option, "--insecure")) {
            s_insecure = true;
            continue;
        }
        if (!value)
            return 64;
        index++;
        if (streq (option, "--broker") && s_broker_count < BROKERS_MAX)
            s_brokers [s_broker_count++] = value;
        else if (streq (option, "--server-key"))
            s_server_key = value;
        else if (streq (option, "--service"))
            s_service = value;
        else if (streq (option, "--concurrency"))
            s_concurrency = atoi (value);
        else if (streq (option, "--hold-ms"))
            s_hold_ms = atoi (value);
        else if (streq (option, "--heartbeat"))
            s_heartbeat_ms = atoi (value);
        else
            return 64;
    }
    pigato_log_set (PIGATO_LOG_INFO, s_log, NULL);
    //  Before the first pigato object, which keeps the handlers it finds
    struct sigaction action = { .sa_handler = s_on_signal };
    sigaction (SIGTERM, &action, NULL);
    sigaction (SIGINT, &action, NULL);
    if (streq (argv [1], "holder"))
        return s_holder ();
    if (streq (argv [1], "loopclient"))
        return s_loopclient ();
    return 64;
}
