/*  =========================================================================
    jetstream_bench.c - the NATS JetStream baseline of bench/titanic.sh,
    over the benchmarks' own NATS client (nats_conn.h): file storage,
    work-queue retention, publish with ack, pull consumers with explicit
    ack. Three roles:

    Acks (--mode acks): make stream BENCHA (bench.acks), publish N
    messages keeping K unacknowledged (PUB with a reply inbox; the
    server's PubAck is the acknowledgement); prints acknowledged publishes
    per second and the publish -> ack latency.

    Worker (--worker): make streams BENCH (bench.jobs) and BENCHR
    (bench.replies) with pull consumers WORKER and CLIENT, then for each
    job: publish its reply to bench.replies, wait for that PubAck, then
    ack the job. "event=ready" on stderr once the streams exist.

    Round trip (--mode roundtrip): one job at a time: publish it, wait for
    its PubAck, pull the reply from BENCHR (ack it); prints the latency
    from publish to the reply in hand (the durable round trip).

        jetstream-bench --server HOST:PORT --worker
        jetstream-bench --server HOST:PORT --mode acks|roundtrip
                        [--requests N] [--inflight K] [--size B]
                        [--label L] [--server-pid PID]

    nats-server 2.9 fsyncs its file store on a timer (every 2 minutes),
    not per message, and has no setting for it (sync_interval came in
    2.10): an acknowledged publish may be in the page cache only.
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

#define EXPIRES_NS "60000000000"  //  a pull request waits 60 s at most

typedef struct {
    char inbox [64];  //  "_INBOX.<random>."
    size_t inbox_size;
    char *payload;
    size_t size;
    long target;  //  messages to publish
    long sent;
    long done;  //  acknowledged (acks) or answered (roundtrip)
    long errors;
    int64_t *started;  //  per message, us
    int64_t *latency;
    bool *answered;
    //  JetStream API answers, worker and round trip state
    char api [4096];  //  the last API answer
    bool api_answered;
    bool acked;          //  round trip / worker: the PubAck came
    bool replied;        //  round trip: the reply came
    char job_ack [256];  //  worker: the job being answered, its ack subject
    bool busy;           //  worker: a job is being answered
    long jobs;
} js_t;

static void
s_random_inbox (js_t *self)
{
    unsigned char random [8];
    if (RAND_bytes (random, sizeof random) != 1)
        exit (2);
    self->inbox_size = (size_t) snprintf (self->inbox, sizeof self->inbox,
                                          "_INBOX.");
    for (size_t index = 0; index < sizeof random; index++)
        self->inbox_size += (size_t) snprintf (self->inbox + self->inbox_size,
                                               3, "%02x", random [index]);
    self->inbox [self->inbox_size++] = '.';
    self->inbox [self->inbox_size] = 0;
}

//  Every MSG of the benchmark: API answers (inbox.api), PubAcks
//  (inbox.N or inbox.ack), pulled messages (their own subject, a reply
//  subject $JS.ACK...).
static void s_on_msg (conn_t *conn, const char *subject, const char *reply,
                      const char *payload, size_t size, void *arg);

//  Runs the loop until done () or 30 s of silence.
static int
s_run (conn_t *conn, js_t *self, bool (*done) (js_t *))
{
    while (!done (self)) {
        int rc = s_conn_fill (conn, 30000);
        if (rc == 0)
            return s_fail (conn, "nothing from the server within 30 s");
        if (rc < 0 || s_conn_parse (conn, s_on_msg, self)
            || s_conn_flush (conn))
            return -1;
    }
    return 0;
}

static bool
s_api_done (js_t *self)
{
    return self->api_answered;
}

//  A JetStream API request; 0 if the answer holds no "error" (or the
//  error is one of the allowed ones, e.g. a stream not found on delete).
static int
s_api (conn_t *conn, js_t *self, const char *subject, const char *body,
       const char *allowed)
{
    char reply [96];
    snprintf (reply, sizeof reply, "%sapi", self->inbox);
    self->api_answered = false;
    s_conn_publish (conn, subject, reply, strlen (reply), body, strlen (body));
    if (s_conn_flush (conn) || s_run (conn, self, s_api_done))
        return -1;
    if (strstr (self->api, "\"error\"")
        && !(allowed && strstr (self->api, allowed)))
        return s_fail (conn, "%s: %s", subject, self->api);
    return 0;
}

static int
s_subscribe (conn_t *conn, js_t *self)
{
    char line [256];
    snprintf (line, sizeof line, "SUB %s* 1\r\nPING\r\n", self->inbox);
    s_conn_append (conn, line, strlen (line));
    return s_conn_flush (conn) || s_conn_sync (conn, 2, s_on_msg, self) ? -1
                                                                        : 0;
}

//  A work-queue stream on file storage, made anew.
static int
s_stream (conn_t *conn, js_t *self, const char *name, const char *subject)
{
    char api [256], body [512];
    snprintf (api, sizeof api, "$JS.API.STREAM.DELETE.%s", name);
    if (s_api (conn, self, api, "", "not found"))
        return -1;
    snprintf (api, sizeof api, "$JS.API.STREAM.CREATE.%s", name);
    snprintf (body, sizeof body,
              "{\"name\":\"%s\",\"subjects\":[\"%s\"],\"retention\":"
              "\"workqueue\",\"storage\":\"file\",\"num_replicas\":1}",
              name, subject);
    return s_api (conn, self, api, body, NULL);
}

static int
s_consumer (conn_t *conn, js_t *self, const char *stream, const char *name)
{
    char api [256], body [512];
    snprintf (api, sizeof api, "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s", stream,
              name);
    snprintf (body, sizeof body,
              "{\"stream_name\":\"%s\",\"config\":{\"durable_name\":\"%s\","
              "\"ack_policy\":\"explicit\",\"deliver_policy\":\"all\"}}",
              stream, name);
    return s_api (conn, self, api, body, NULL);
}

//  Asks a pull consumer for its next message (to inbox.pull).
static void
s_pull (conn_t *conn, js_t *self, const char *stream, const char *consumer)
{
    char api [256], reply [96];
    snprintf (api, sizeof api, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream,
              consumer);
    snprintf (reply, sizeof reply, "%spull", self->inbox);
    const char *body = "{\"batch\":1,\"expires\":" EXPIRES_NS "}";
    s_conn_publish (conn, api, reply, strlen (reply), body, strlen (body));
}

static bool s_worker_mode;

static void
s_on_msg (conn_t *conn, const char *subject, const char *reply,
          const char *payload, size_t size, void *arg)
{
    js_t *self = (js_t *) arg;
    //  A pulled message keeps its own subject; its reply subject acks it
    bool pulled = reply && strncmp (reply, "$JS.ACK.", 8) == 0;
    if (!pulled && strncmp (subject, self->inbox, self->inbox_size)) {
        self->errors++;
        return;
    }
    const char *suffix = pulled ? "pull" : subject + self->inbox_size;
    bool error = memmem (payload, size, "\"error\"", 7) != NULL;
    if (strcmp (suffix, "api") == 0) {
        snprintf (self->api, sizeof self->api, "%.*s", (int) size, payload);
        self->api_answered = true;
    }
    else if (strcmp (suffix, "ack") == 0) {
        self->acked = true;
        self->errors += error;
        if (s_worker_mode && self->busy) {
            //  The reply is stored: the job is done
            s_conn_publish (conn, self->job_ack, "", 0, "+ACK", 4);
            self->busy = false;
            self->jobs++;
            s_pull (conn, self, "BENCH", "WORKER");
        }
    }
    else if (strcmp (suffix, "pull") == 0) {
        if (!reply || size == 0)
            return;  //  a status without a message
        if (s_worker_mode) {
            snprintf (self->job_ack, sizeof self->job_ack, "%s", reply);
            self->busy = true;
            char ack [96];
            snprintf (ack, sizeof ack, "%sack", self->inbox);
            s_conn_publish (conn, "bench.replies", ack, strlen (ack), payload,
                            size);
        }
        else {
            s_conn_publish (conn, reply, "", 0, "+ACK", 4);
            self->replied = true;
            if (size != self->size || memcmp (payload, self->payload, size))
                self->errors++;
        }
    }
    else {
        //  A PubAck of the acks mode: inbox.N
        char *end;
        long index = strtol (suffix, &end, 10);
        if (*end || index < 0 || index >= self->sent || self->answered [index]
            || error) {
            self->errors++;
            return;
        }
        self->answered [index] = true;
        self->latency [self->done++] = s_usecs () - self->started [index];
        if (self->sent < self->target) {
            long next = self->sent++;
            char ack [96];
            int used = snprintf (ack, sizeof ack, "%s%ld", self->inbox, next);
            self->started [next] = s_usecs ();
            s_conn_publish (conn, "bench.acks", ack, (size_t) used,
                            self->payload, self->size);
        }
    }
}

static int
s_compare (const void *first, const void *second)
{
    int64_t a = *(const int64_t *) first, b = *(const int64_t *) second;
    return a < b ? -1 : a > b;
}

static void
s_report (js_t *self, const char *label, long inflight, double seconds,
          long server_pid, double cpu_before)
{
    double cpu_after = server_pid ? bench_process_cpu_seconds (server_pid) : -1;
    long done = self->done;
    qsort (self->latency, (size_t) done, sizeof (int64_t), s_compare);
    printf ("label=%s requests=%ld errors=%ld inflight=%ld size=%zu "
            "seconds=%.3f rps=%.0f p50_us=%" PRId64 " p99_us=%" PRId64
            " p999_us=%" PRId64,
            label, done, self->errors, inflight, self->size, seconds,
            (double) done / seconds, self->latency [done / 2],
            self->latency [done * 99 / 100], self->latency [done * 999 / 1000]);
    bench_print_server (server_pid, cpu_before, cpu_after, done);
    printf ("\n");
    fflush (stdout);
}

static bool
s_all_acked (js_t *self)
{
    return self->done >= self->target;
}

static int
s_acks (conn_t *conn, js_t *self, long inflight, const char *label,
        long server_pid)
{
    if (s_stream (conn, self, "BENCHA", "bench.acks"))
        return -1;
    double cpu_before = server_pid ? bench_process_cpu_seconds (server_pid)
                                   : -1;
    int64_t start = s_usecs ();
    while (self->sent < inflight && self->sent < self->target) {
        long next = self->sent++;
        char ack [96];
        int used = snprintf (ack, sizeof ack, "%s%ld", self->inbox, next);
        self->started [next] = s_usecs ();
        s_conn_publish (conn, "bench.acks", ack, (size_t) used, self->payload,
                        self->size);
    }
    if (s_conn_flush (conn) || s_run (conn, self, s_all_acked))
        return -1;
    s_report (self, label, inflight, (double) (s_usecs () - start) / 1e6,
              server_pid, cpu_before);
    return 0;
}

static bool
s_acked (js_t *self)
{
    return self->acked;
}

static bool
s_replied (js_t *self)
{
    return self->replied;
}

static int
s_roundtrip (conn_t *conn, js_t *self, const char *label, long server_pid)
{
    double cpu_before = server_pid ? bench_process_cpu_seconds (server_pid)
                                   : -1;
    char ack [96];
    snprintf (ack, sizeof ack, "%sack", self->inbox);
    int64_t start = s_usecs ();
    while (self->done < self->target) {
        int64_t began = s_usecs ();
        self->acked = self->replied = false;
        s_conn_publish (conn, "bench.jobs", ack, strlen (ack), self->payload,
                        self->size);
        if (s_conn_flush (conn) || s_run (conn, self, s_acked))
            return -1;
        s_pull (conn, self, "BENCHR", "CLIENT");
        if (s_conn_flush (conn) || s_run (conn, self, s_replied))
            return -1;
        self->latency [self->done++] = s_usecs () - began;
    }
    s_report (self, label, 1, (double) (s_usecs () - start) / 1e6, server_pid,
              cpu_before);
    return 0;
}

static bool
s_never (js_t *self)
{
    (void) self;
    return false;
}

static int
s_worker (conn_t *conn, js_t *self)
{
    if (s_stream (conn, self, "BENCH", "bench.jobs")
        || s_stream (conn, self, "BENCHR", "bench.replies")
        || s_consumer (conn, self, "BENCH", "WORKER")
        || s_consumer (conn, self, "BENCHR", "CLIENT"))
        return -1;
    s_worker_mode = true;
    s_pull (conn, self, "BENCH", "WORKER");
    if (s_conn_flush (conn))
        return -1;
    fprintf (stderr, "event=ready streams=BENCH,BENCHR\n");
    while (true) {
        //  Idle for a while is fine: a pull request waits 60 s, then again
        int rc = s_conn_fill (conn, 50000);
        if (rc == 0) {
            s_pull (conn, self, "BENCH", "WORKER");
            continue;
        }
        if (rc < 0 || s_conn_parse (conn, s_on_msg, self)
            || s_conn_flush (conn))
            return -1;
    }
    return s_run (conn, self, s_never);
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "server", required_argument, NULL, 'S' },
        { "worker", no_argument, NULL, 'w' },
        { "mode", required_argument, NULL, 'm' },
        { "inflight", required_argument, NULL, 'f' },
        { "requests", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'p' },
        { "label", required_argument, NULL, 'l' },
        { "server-pid", required_argument, NULL, 'P' },
        { NULL, 0, NULL, 0 }
    };
    const char *server = "127.0.0.1:4222", *mode = "acks", *label = NULL;
    bool worker = false;
    long inflight = 100, server_pid = 0;
    js_t self = { .size = 64, .target = 20000 };
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case 'S': server = optarg; break;
            case 'w': worker = true; break;
            case 'm': mode = optarg; break;
            case 'f': inflight = atol (optarg); break;
            case 'n': self.target = atol (optarg); break;
            case 'p': self.size = (size_t) atol (optarg); break;
            case 'l': label = optarg; break;
            case 'P': server_pid = atol (optarg); break;
            default:
                fputs ("usage: see the comment at the top of "
                       "bench/jetstream_bench.c\n",
                       stderr);
                return 64;
        }
    }
    bool acks = strcmp (mode, "acks") == 0;
    if ((!acks && strcmp (mode, "roundtrip")) || inflight < 1
        || self.target < 1) {
        fputs ("jetstream-bench: --mode acks|roundtrip, --inflight and "
               "--requests >= 1\n",
               stderr);
        return 64;
    }
    signal (SIGPIPE, SIG_IGN);
    char error [256];
    conn_t *conn = s_conn_new (server, false, NULL, error, sizeof error);
    if (!conn) {
        fprintf (stderr, "jetstream-bench: %s\n", error);
        return 2;
    }
    s_random_inbox (&self);
    self.payload = malloc (self.size + 1);
    for (size_t index = 0; index < self.size; index++)
        self.payload [index] = (char) ('a' + index % 26);
    self.started = calloc ((size_t) self.target, sizeof (int64_t));
    self.latency = calloc ((size_t) self.target, sizeof (int64_t));
    self.answered = calloc ((size_t) self.target, sizeof (bool));
    int rc = s_subscribe (conn, &self);
    if (rc == 0 && worker)
        rc = s_worker (conn, &self);
    else if (rc == 0 && acks)
        rc = s_acks (conn, &self, inflight, label ? label : "jetstream-acks",
                     server_pid);
    else if (rc == 0)
        rc = s_roundtrip (conn, &self, label ? label : "jetstream-roundtrip",
                          server_pid);
    if (rc)
        fprintf (stderr, "jetstream-bench: %s\n", conn->error);
    free (self.payload);
    free (self.started);
    free (self.latency);
    free (self.answered);
    s_conn_destroy (&conn);
    return rc ? 2 : self.errors ? 1 : 0;
}
