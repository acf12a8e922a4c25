/*  =========================================================================
    steady.c - a victim for make soak-hostile: libpigato clients sending
    requests at a fixed rate (open loop, not as fast as possible) until
    SIGTERM, each with a body of its own, and checking that every reply
    is the body it sent.

    pigato-steady --broker EP (--server-key K | --insecure) [--key SECRET]
                  --out FILE [--service victim.echo] [--rate 2000]
                  [--size 64] [--timeout 5000] [--clients 1]
                  [--framing auto|native|0.0.46]

    Every --rate-th of a second a request goes out, round-robin over the
    clients, to SERVICE (an echo); its body is "VICTIM-PID-INDEX-" padded
    to --size bytes, so a reply carrying another request's body, or a body
    reaching anyone but the echo worker, is recognisable. FILE gets one
    line per finished request: "SENT_US LATENCY_US RESULT", SENT_US on
    CLOCK_MONOTONIC (what Python's time.monotonic () reads), RESULT one of
    ok, wrong (a success whose body is not the request's), timeout (no
    reply for --timeout ms), lost (the broker went away) or error:CODE (an
    error reply, CODE its first word). Prints event=ready on stderr once
    a first request came back; on SIGTERM or SIGINT stops sending, waits
    for the requests in flight to end (at most --timeout), prints one line
    of totals on stdout and exits 0.
    =========================================================================
*/
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../include/pigato.h"
#include "signals.h"

#pragma weak pigato_client_set_framing

typedef struct {
    pigato_client_t **clients;  //  the connected clients
    long client_count;          //  entries in clients
    const char *service;        //  service the requests go to
    size_t size;                //  body size
    double rate;                //  requests per second
    int64_t start_us;           //  monotonic time of the first request
    long sent;                  //  requests sent
    long done;                  //  requests finished (any result)
    int64_t *sent_us;           //  send time per request index
    long capacity;              //  entries allocated in sent_us
    long ok, wrong, timeouts, lost, errors;  //  results so far
    FILE *out;                               //  one line per request
} steady_t;

static steady_t s_steady;  //  the one run (callbacks reach it)

static int64_t
s_now_us (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

//  The body of request INDEX, written into body (size bytes, size >= 40)
static void
s_body (char *body, size_t size, long index)
{
    memset (body, 'v', size);
    int length = snprintf (body, size, "VICTIM-%ld-%ld-", (long) getpid (),
                           index);
    body [length] = 'v';  //  over snprintf's NUL
}

static void
s_on_reply (pigato_client_t *client, const char *rid, int status, bool final,
            const void *data, size_t size, void *arg)
{
    (void) client, (void) rid;
    if (!final)
        return;
    steady_t *self = &s_steady;
    long index = (long) (intptr_t) arg;
    int64_t latency = s_now_us () - self->sent_us [index];
    char result [48] = "ok";
    if (status == PIGATO_OK) {
        char expected [self->size];
        s_body (expected, self->size, index);
        if (size != self->size || memcmp (data, expected, size)) {
            strcpy (result, "wrong");
            self->wrong++;
        }
        else
            self->ok++;
    }
    else if (status == PIGATO_E_TIMEOUT) {
        strcpy (result, "timeout");
        self->timeouts++;
    }
    else if (status == PIGATO_E_NOTCONNECTED) {
        strcpy (result, "lost");
        self->lost++;
    }
    else {
        //  error:CODE, CODE the first word of the error text
        size_t length = 0;
        const char *text = data;
        while (length < size && length < 32 && text [length] > ' '
               && text [length] < 127)
            length++;
        snprintf (result, sizeof result, "error:%.*s", (int) length, text);
        self->errors++;
    }
    fprintf (self->out, "%" PRId64 " %" PRId64 " %s\n", self->sent_us [index],
             latency, result);
    self->done++;
}

static int
s_send (steady_t *self)
{
    if (self->sent == self->capacity) {
        long capacity = self->capacity ? self->capacity * 2 : 65536;
        int64_t *grown = realloc (self->sent_us,
                                  (size_t) capacity * sizeof (int64_t));
        if (!grown)
            return -1;
        self->sent_us = grown;
        self->capacity = capacity;
    }
    long index = self->sent++;
    char body [self->size];
    s_body (body, self->size, index);
    pigato_client_t *client = self->clients [index % self->client_count];
    self->sent_us [index] = s_now_us ();
    int rc = pigato_client_request (client, self->service, body, self->size,
                                    NULL, s_on_reply, (void *) (intptr_t) index,
                                    NULL);
    if (rc)
        fprintf (stderr, "pigato-steady: request failed: %s\n",
                 pigato_client_error (client));
    return rc;
}

//  Every millisecond: sends the requests that are due by now
static int
s_on_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id, (void) arg;
    steady_t *self = &s_steady;
    long due = (long) ((double) (s_now_us () - self->start_us) * self->rate
                       / 1e6);
    while (self->sent < due)
        if (s_send (self))
            return -1;
    return 0;
}

static int
s_on_flush (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id, (void) arg;
    fflush (s_steady.out);
    return 0;
}

//  After SIGTERM: ends the loop once every request has finished
static int
s_on_drained (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id, (void) arg;
    return s_steady.done >= s_steady.sent ? -1 : 0;
}

static int
s_connect (pigato_client_t *client, const char *endpoint,
           const char *server_key, const char *key_file, bool insecure,
           const char *framing, long timeout_ms)
{
    pigato_client_set_insecure (client, insecure);
    pigato_client_set_timeout (client, timeout_ms);
    int rc = 0;
    if (server_key)
        rc = pigato_client_set_server_key (client, server_key);
    if (rc == 0 && key_file)
        rc = pigato_client_set_key_file (client, key_file);
    if (rc == 0 && pigato_client_set_framing)
        rc = pigato_client_set_framing (client, framing);
    if (rc == 0)
        rc = pigato_client_connect (client, endpoint);
    if (rc)
        fprintf (stderr, "pigato-steady: %s\n", pigato_client_error (client));
    return rc;
}

//  One request end to end (handshake, the worker known to the broker),
//  retried for up to 10 s
static int
s_warm_up (pigato_client_t *client, const char *service)
{
    int rc = PIGATO_E_TIMEOUT;
    for (int attempt = 0; attempt < 50 && rc != 0 && !zsys_interrupted;
         attempt++) {
        char *reply = NULL;
        size_t reply_size = 0;
        rc = pigato_client_call (client, service, "warm", 4,
                                 "{\"timeout\":200}", NULL, NULL, &reply,
                                 &reply_size);
        free (reply);
    }
    if (rc)
        fprintf (stderr, "pigato-steady: warm-up request to %s failed: %s\n",
                 service, pigato_strerror (rc));
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
        { "out", required_argument, NULL, 'o' },
        { "service", required_argument, NULL, 's' },
        { "rate", required_argument, NULL, 'r' },
        { "size", required_argument, NULL, 'p' },
        { "timeout", required_argument, NULL, 't' },
        { "clients", required_argument, NULL, 'c' },
        { "framing", required_argument, NULL, 'F' },
        { NULL, 0, NULL, 0 }
    };
    const char *endpoint = "tcp://127.0.0.1:5555", *server_key = NULL;
    const char *key_file = NULL, *out_path = NULL, *framing = "auto";
    bool insecure = false;
    long timeout_ms = 5000;
    steady_t *self = &s_steady;
    self->service = "victim.echo";
    self->size = 64;
    self->rate = 2000;
    self->client_count = 1;
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'b': endpoint = optarg; break;
            case 'k': server_key = optarg; break;
            case 'i': insecure = true; break;
            case 'K': key_file = optarg; break;
            case 'o': out_path = optarg; break;
            case 's': self->service = optarg; break;
            case 'r': self->rate = atof (optarg); break;
            case 'p': self->size = (size_t) atol (optarg); break;
            case 't': timeout_ms = atol (optarg); break;
            case 'c': self->client_count = atol (optarg); break;
            case 'F': framing = optarg; break;
            default:
                fputs ("usage: see the comment at the top of bench/steady.c\n",
                       stderr);
                return 64;
        }
    }
    if (!out_path || self->rate <= 0 || self->size < 40 || self->size > 65536
        || timeout_ms < 1 || self->client_count < 1) {
        fputs ("pigato-steady: --out is required; --rate > 0, 40 <= --size "
               "<= 65536, --timeout >= 1, --clients >= 1\n",
               stderr);
        return 64;
    }
    self->out = fopen (out_path, "w");
    if (!self->out) {
        fprintf (stderr, "pigato-steady: %s: %s\n", out_path, strerror (errno));
        return 2;
    }
    self->clients = calloc ((size_t) self->client_count,
                            sizeof (pigato_client_t *));
    zloop_t *loop = zloop_new ();
    int rc = 0;
    for (long index = 0; index < self->client_count && rc == 0; index++) {
        self->clients [index] = pigato_client_new ();
        rc = s_connect (self->clients [index], endpoint, server_key, key_file,
                        insecure, framing, timeout_ms);
        if (rc == 0)
            rc = s_warm_up (self->clients [index], self->service);
        if (rc == 0)
            rc = pigato_client_attach (self->clients [index], loop);
    }
    if (rc == 0) {
        fprintf (stderr, "event=ready clients=%ld rate=%.0f\n",
                 self->client_count, self->rate);
        self->start_us = s_now_us ();
        int tick = zloop_timer (loop, 1, 0, s_on_tick, NULL);
        zloop_timer (loop, 100, 0, s_on_flush, NULL);
        zloop_start (loop);  //  until SIGTERM
        zloop_timer_end (loop, tick);
        zsys_interrupted = 0;
        zloop_timer (loop, 10, 0, s_on_drained, NULL);
        zloop_start (loop);  //  until the last request ends
        printf ("sent=%ld ok=%ld wrong=%ld timeout=%ld lost=%ld errors=%ld "
                "unfinished=%ld\n",
                self->sent, self->ok, self->wrong, self->timeouts, self->lost,
                self->errors, self->sent - self->done);
    }
    for (long index = 0; index < self->client_count; index++)
        pigato_client_destroy (&self->clients [index]);
    zloop_destroy (&loop);
    fclose (self->out);
    free (self->clients);
    free (self->sent_us);
    return rc ? 2 : 0;
}
