/*  budget_client.c - a libpigato client for test_library_budgets.py: once
    connected it prints "started" and waits for SIGUSR1 (the test reads
    its resident size meanwhile), then sends requests of --size bytes
    (timeout -1, so none ends by itself) to the echo service as fast as
    the client takes them, until one fails; then tries a small one every
    50 ms until one is taken again.

      budget_client --broker EP --server-key FILE --size BYTES
                    [--max-outbound BYTES] [--count N]

    stdout (flushed line by line):
      started                                connected, waiting for SIGUSR1
      full sent=N status=E_QUEUE_FULL|other us=T strerror="TEXT" error=TEXT
                                             the first refused request (T:
                                             microseconds the call took)
      refused count=N max_us=T mean_us=M     N more tries right after it,
                                             each refused (slowest took T,
                                             M on average)
      room sent=N                            a request was taken again
      done sent=N                            --count requests taken
    stderr: the library's log (info).
    Runs until SIGTERM.
*/
#include <pigato.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t s_stop = 0;
static volatile sig_atomic_t s_go = 0;

static void
s_on_signal (int signal_number)
{
    if (signal_number == SIGUSR1)
        s_go = 1;
    else
        s_stop = 1;
}

static int64_t
s_now_us (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

int
main (int argc, char *argv [])
{
    const char *endpoint = NULL, *server_key = NULL;
    size_t size = 1024 * 1024;
    long long max_outbound = 0;
    long count = -1;
    for (int index = 1; index + 1 < argc; index += 2) {
        if (strcmp (argv [index], "--broker") == 0)
            endpoint = argv [index + 1];
        else if (strcmp (argv [index], "--server-key") == 0)
            server_key = argv [index + 1];
        else if (strcmp (argv [index], "--size") == 0)
            size = strtoul (argv [index + 1], NULL, 10);
        else if (strcmp (argv [index], "--max-outbound") == 0)
            max_outbound = strtoll (argv [index + 1], NULL, 10);
        else if (strcmp (argv [index], "--count") == 0)
            count = strtol (argv [index + 1], NULL, 10);
    }
    if (!endpoint || !server_key) {
        fprintf (stderr, "usage: budget_client --broker EP --server-key FILE "
                         "[--size BYTES] [--max-outbound BYTES] [--count N]\n");
        return 2;
    }
    signal (SIGTERM, s_on_signal);
    signal (SIGUSR1, s_on_signal);
    pigato_log_set (PIGATO_LOG_INFO, pigato_log_stderr, NULL);
    pigato_client_t *client = pigato_client_new ();
    char *body = (char *) malloc (size);
    if (!client || !body)
        return 1;
    memset (body, 'x', size);
    pigato_client_set_heartbeat (client, 500, 3);
    if (pigato_client_set_server_key (client, server_key)
        || (max_outbound
            && pigato_client_set_max_outbound (client, max_outbound))
        || pigato_client_connect (client, endpoint)) {
        fprintf (stderr, "budget_client: %s\n", pigato_client_error (client));
        return 1;
    }
    printf ("started\n");
    fflush (stdout);
    while (!s_go && !s_stop)
        pigato_client_wait (client, 20);
    long sent = 0;
    bool full = false;
    int64_t next_try = 0;
    while (!s_stop) {
        if (!full && (count < 0 || sent < count)) {
            int64_t start = s_now_us ();
            int rc = pigato_client_request (client, "echo", body, size,
                                            "{\"timeout\":-1}", NULL, NULL,
                                            NULL);
            int64_t took = s_now_us () - start;
            if (rc == PIGATO_OK) {
                if (++sent == count) {
                    printf ("done sent=%ld\n", sent);
                    fflush (stdout);
                }
                pigato_client_wait (client, 0);
                continue;
            }
            printf ("full sent=%ld status=%s us=%lld strerror=\"%s\" "
                    "error=%s\n",
                    sent, rc == PIGATO_E_QUEUE_FULL ? "E_QUEUE_FULL" : "other",
                    (long long) took, pigato_strerror (rc),
                    pigato_client_error (client));
            int refused = 0;
            int64_t slowest = 0, total = 0;
            for (int again = 0; again < 100; again++) {
                start = s_now_us ();
                if (pigato_client_request (client, "echo", body, size,
                                           "{\"timeout\":-1}", NULL, NULL, NULL)
                    != rc)
                    break;
                took = s_now_us () - start;
                slowest = took > slowest ? took : slowest;
                total += took;
                refused++;
            }
            printf ("refused count=%d max_us=%lld mean_us=%lld\n", refused,
                    (long long) slowest,
                    (long long) (refused ? total / refused : 0));
            fflush (stdout);
            full = true;
            next_try = s_now_us () + 50000;
        }
        if (pigato_client_wait (client, 50) == PIGATO_E_INTERRUPTED)
            break;
        if (full && s_now_us () >= next_try) {
            next_try = s_now_us () + 50000;
            if (pigato_client_request (client, "echo", "\"x\"", 3, NULL, NULL,
                                       NULL, NULL)
                == PIGATO_OK) {
                printf ("room sent=%ld\n", ++sent);
                fflush (stdout);
                full = false;
                count = sent;  //  no more large ones
            }
        }
    }
    pigato_client_destroy (&client);
    free (body);
    return 0;
}
