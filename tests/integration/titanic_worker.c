/*  =========================================================================
    titanic_worker.c - a libpigato worker for test_titanic.py that records
    what it executes. Each request's opts carry the durable id
    ("titanic") and the attempt; the worker runs a request once per id
    (it keeps the ids it has done) and answers a repeat from what it
    kept. One line per request, appended with one write (a line is whole
    even if the process dies):

        exec ID ATTEMPT MONOTONIC_US     the first time it ran ID
        dup ID ATTEMPT MONOTONIC_US      ID again: answered, not run

    and the reply is "done:" and the request's data.

        titanic_worker ENDPOINT SERVICE LOG [SERVER_KEY|-] [CONCURRENCY]
    =========================================================================
*/
#include <czmq.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "pigato.h"

static int s_log = -1;    //  the execution log
static zhashx_t *s_done;  //  id -> its reply (what we ran)
static pigato_worker_t *s_worker;

static void
s_on_signal (int signal_number)
{
    (void) signal_number;
    zsys_interrupted = 1;
}

static long long
s_now_us (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (long long) now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

static void
s_handle (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
          size_t size, void *arg)
{
    (void) worker, (void) arg;
    json_t *opts = json_loads (pigato_reply_opts (reply), 0, NULL);
    const char *id = json_string_value (json_object_get (opts, "titanic"));
    char line [256];
    char *answer = NULL;
    if (!id) {
        //  Not a durable request: just answer
        pigato_reply_end (reply, data, size);
        pigato_reply_destroy (&reply);
        json_decref (opts);
        return;
    }
    const char *kept = (const char *) zhashx_lookup (s_done, id);
    int length = snprintf (line, sizeof line, "%s %s %d %lld\n",
                           kept ? "dup" : "exec", id,
                           pigato_reply_attempt (reply), s_now_us ());
    if (write (s_log, line, (size_t) length) != length)
        fprintf (stderr, "titanic_worker: cannot write the log\n");
    if (!kept) {
        answer = (char *) malloc (size + 6);
        memcpy (answer, "done:", 5);
        memcpy (answer + 5, data, size);
        answer [size + 5] = 0;
        zhashx_insert (s_done, id, answer);
        kept = answer;
    }
    pigato_reply_end (reply, kept, strlen (kept));
    pigato_reply_destroy (&reply);
    json_decref (opts);
}

int
main (int argc, char *argv [])
{
    if (argc < 4) {
        fprintf (stderr, "usage: titanic_worker ENDPOINT SERVICE LOG "
                         "[SERVER_KEY|-] [CONCURRENCY]\n");
        return 64;
    }
    s_log = open (argv [3], O_WRONLY | O_CREAT | O_APPEND, 0600);
    s_done = zhashx_new ();
    zhashx_set_destructor (s_done, (zhashx_destructor_fn *) zstr_free);
    s_worker = pigato_worker_new (argv [2], s_handle, NULL);
    if (s_log < 0 || !s_done || !s_worker)
        return 1;
    if (argc > 4 && strcmp (argv [4], "-"))
        pigato_worker_set_server_key (s_worker, argv [4]);
    else
        pigato_worker_set_insecure (s_worker, true);
    pigato_worker_set_heartbeat (s_worker, 500, 3);
    if (argc > 5)
        pigato_worker_set_concurrency (s_worker, atoi (argv [5]));
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    if (pigato_worker_connect (s_worker, argv [1])) {
        fprintf (stderr, "titanic_worker: %s\n",
                 pigato_worker_error (s_worker));
        return 1;
    }
    printf ("ready\n");
    fflush (stdout);
    while (!zsys_interrupted) {
        int rc = pigato_worker_wait (s_worker, 250);
        if (rc == PIGATO_E_INTERRUPTED || rc == PIGATO_E_CLOSED)
            break;
    }
    pigato_worker_destroy (&s_worker);
    zhashx_destroy (&s_done);
    close (s_log);
    return 0;
}
