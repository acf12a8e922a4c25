/*  mb_client.c - load client for test_multibroker.py: one libpigato client
    on several brokers keeps --inflight requests with {"retry":3} to the
    echo service in flight until SIGUSR1, then waits for the last replies
    and reports. After 50 replies, once every broker took 10 requests, it
    also sends --held requests without retry to a service no worker offers (they stay queued in a broker, so
    they are in flight when a broker dies).

      mb_client --broker EP [--broker EP...] --server-key FILE
                [--heartbeat MS] [--inflight 32] [--held 20]

    stdout (flushed line by line):
      held_sent count=N
      progress replies=N sent[EP]=N ...         every 100 replies
      held rid=RID status=S data=TEXT           a held request ended
      echo_failed index=I status=S data=TEXT    must never appear
      summary sent=N ok=N failed=N duplicates=N mismatched=N unanswered=N
              held_pending=N
    stderr: the library's log lines (warning and info; request lines are
    only counted, per endpoint, for the progress lines).
*/
#include <pigato.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ENDPOINTS_MAX 8

typedef struct {
    int index;   //  request number, also its data
    int finals;  //  final replies seen (must end at 1)
} echo_t;

typedef struct {
    char rid [PIGATO_RID_MAX + 1];
    bool ended;
} held_t;

static volatile sig_atomic_t s_stop = 0;
static const char *s_endpoints [ENDPOINTS_MAX];
static int s_sent_to [ENDPOINTS_MAX];
static int s_endpoint_count = 0;
static int s_ok, s_failed, s_duplicates, s_mismatched, s_in_flight;
static int s_held_pending;

static void
s_on_usr1 (int signal_number)
{
    (void) signal_number;
    s_stop = 1;
}

static int64_t
s_now_ms (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

//  Counts event=client_request lines per endpoint; prints the rest.
static void
s_log (int level, const char *line, void *arg)
{
    (void) arg;
    if (strncmp (line, "event=client_request ", 21) == 0) {
        const char *at = strstr (line, " endpoint=");
        if (!at)
            return;
        at += 10;
        for (int index = 0; index < s_endpoint_count; index++) {
            size_t size = strlen (s_endpoints [index]);
            if (strncmp (at, s_endpoints [index], size) == 0
                && (at [size] == ' ' || at [size] == 0))
                s_sent_to [index]++;
        }
        return;
    }
    if (level <= PIGATO_LOG_INFO
        || (getenv ("MB_DEBUG")
            && strncmp (line, "event=client_final ", 19) != 0))
        pigato_log_stderr (level, line, NULL);
}

static void
s_progress (void)
{
    printf ("progress replies=%d", s_ok);
    for (int index = 0; index < s_endpoint_count; index++)
        printf (" sent[%s]=%d", s_endpoints [index], s_sent_to [index]);
    printf ("\n");
    fflush (stdout);
}

static void
s_on_echo (pigato_client_t *client, const char *rid, int status, bool final,
           const void *data, size_t size, void *arg)
{
    (void) client;
    (void) rid;
    echo_t *echo = (echo_t *) arg;
    if (!final)
        return;
    if (++echo->finals > 1) {
        s_duplicates++;
        return;
    }
    s_in_flight--;
    if (status != PIGATO_OK) {
        s_failed++;
        printf ("echo_failed index=%d status=%d data=%.*s\n", echo->index,
                status, (int) size, (const char *) data);
        fflush (stdout);
        return;
    }
    char expected [16];
    int expected_size = snprintf (expected, sizeof expected, "%d", echo->index);
    if (size != (size_t) expected_size || memcmp (data, expected, size) != 0)
        s_mismatched++;
    else if (++s_ok % 100 == 0)
        s_progress ();
}

static void
s_on_held (pigato_client_t *client, const char *rid, int status, bool final,
           const void *data, size_t size, void *arg)
{
    (void) client;
    held_t *held = (held_t *) arg;
    if (!final)
        return;
    held->ended = true;
    s_held_pending--;
    printf ("held rid=%s status=%d data=%.*s\n", rid, status, (int) size,
            (const char *) data);
    fflush (stdout);
}

int
main (int argc, char *argv [])
{
    const char *server_key = NULL;
    int heartbeat = 0, inflight = 32, held_count = 20;
    for (int index = 1; index + 1 < argc; index += 2) {
        const char *name = argv [index], *value = argv [index + 1];
        if (strcmp (name, "--broker") == 0 && s_endpoint_count < ENDPOINTS_MAX)
            s_endpoints [s_endpoint_count++] = value;
        else if (strcmp (name, "--server-key") == 0)
            server_key = value;
        else if (strcmp (name, "--heartbeat") == 0)
            heartbeat = atoi (value);
        else if (strcmp (name, "--inflight") == 0)
            inflight = atoi (value);
        else if (strcmp (name, "--held") == 0)
            held_count = atoi (value);
        else {
            fprintf (stderr, "mb_client: unknown option %s\n", name);
            return 64;
        }
    }
    if (!s_endpoint_count || !server_key || inflight < 1 || held_count < 0
        || held_count > 1000) {
        fprintf (stderr, "mb_client: see the comment at the top of "
                         "tests/integration/mb_client.c\n");
        return 64;
    }
    signal (SIGUSR1, s_on_usr1);
    pigato_log_set (PIGATO_LOG_DEBUG, s_log, NULL);
    pigato_client_t *client = pigato_client_new ();
    if (!client || pigato_client_set_server_key (client, server_key) != 0) {
        fprintf (stderr, "mb_client: %s\n",
                 client ? pigato_client_error (client) : "no memory");
        return 1;
    }
    pigato_client_set_heartbeat (client, heartbeat, 0);
    for (int index = 0; index < s_endpoint_count; index++)
        if (pigato_client_connect (client, s_endpoints [index]) != 0) {
            fprintf (stderr, "mb_client: %s\n", pigato_client_error (client));
            return 1;
        }

    size_t capacity = 1024, sent = 0;
    echo_t **echoes = (echo_t **) malloc (capacity * sizeof *echoes);
    held_t *held = (held_t *) calloc ((size_t) held_count + 1, sizeof *held);
    bool held_sent = held_count == 0;
    int rc = 0;
    while (!s_stop && rc == 0) {
        while (s_in_flight < inflight) {
            if (sent == capacity) {
                capacity *= 2;
                echoes = (echo_t **) realloc (echoes,
                                              capacity * sizeof *echoes);
            }
            echo_t *echo = (echo_t *) calloc (1, sizeof *echo);
            echo->index = (int) sent;
            echoes [sent++] = echo;
            char data [16];
            int size = snprintf (data, sizeof data, "%d", echo->index);
            if (pigato_client_request (client, "echo", data, (size_t) size,
                                       "{\"retry\":3,\"timeout\":20000}",
                                       s_on_echo, echo, NULL)
                != 0) {
                fprintf (stderr, "mb_client: request: %s\n",
                         pigato_client_error (client));
                rc = 1;
                break;
            }
            s_in_flight++;
        }
        //  Once every broker takes requests (a link gets them from its
        //  handshake on: the first broker up may take all of the start)
        bool all_used = true;
        for (int index = 0; index < s_endpoint_count; index++)
            if (s_sent_to [index] < 10)
                all_used = false;
        if (!held_sent && s_ok >= 50 && all_used) {
            for (int index = 0; index < held_count; index++)
                if (pigato_client_request (client, "nobody", "h", 1,
                                           "{\"timeout\":60000}", s_on_held,
                                           &held [index], held [index].rid)
                    == 0)
                    s_held_pending++;
            held_sent = true;
            printf ("held_sent count=%d\n", s_held_pending);
            fflush (stdout);
        }
        //  SIGUSR1 interrupts the wait: that is the stop, not a failure
        if (pigato_client_wait (client, 10) != 0 && !s_stop)
            rc = 1;
    }
    //  Stopped: the last echo replies, then the held ones are given up
    int64_t deadline = s_now_ms () + 30000;
    while (s_in_flight > 0 && s_now_ms () < deadline)
        pigato_client_wait (client, 50);
    for (int index = 0; index < held_count; index++)
        if (!held [index].ended && held [index].rid [0])
            pigato_client_cancel (client, held [index].rid);
    s_progress ();
    printf ("summary sent=%zu ok=%d failed=%d duplicates=%d mismatched=%d "
            "unanswered=%d held_pending=%d\n",
            sent, s_ok, s_failed, s_duplicates, s_mismatched, s_in_flight,
            s_held_pending);
    fflush (stdout);
    pigato_client_destroy (&client);
    for (size_t index = 0; index < sent; index++)
        free (echoes [index]);
    free (echoes);
    free (held);
    return rc;
}
