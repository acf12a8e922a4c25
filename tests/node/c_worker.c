/*  c_worker.c - a libpigato worker for the Node interop tests: lets a Node
    pigato client receive partial replies, errors and rejects from C.

        c_worker ENDPOINT SERVER_KEY|- SERVICE HEARTBEAT_MS

    SERVER_KEY "-" = insecure. The request data (JSON text, as Node pigato
    sends it) picks the behaviour:
        "partial:N"   N partial replies "part I", then the final "done"
        "error:MSG"   an error reply with MSG
        "reject"      reject (the broker hands it to another worker)
        anything else echoed back as the final reply
    Built by tests/integration/test_node_interop.py against BUILD/libpigato.a.
*/
#include <pigato.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
s_on_request (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
              size_t size, void *arg)
{
    (void) worker;
    (void) arg;
    char text [256] = "";
    if (size >= 2 && size < sizeof text + 2
        && ((const char *) data) [0] == '"') {
        memcpy (text, (const char *) data + 1, size - 2);
        text [size - 2] = 0;
    }
    if (strncmp (text, "partial:", 8) == 0) {
        int count = atoi (text + 8);
        for (int i = 0; i < count; i++) {
            char part [32];
            int n = snprintf (part, sizeof part, "\"part %d\"", i);
            pigato_reply_write (reply, part, (size_t) n);
        }
        pigato_reply_end (reply, "\"done\"", 6);
    }
    else if (strncmp (text, "error:", 6) == 0)
        pigato_reply_error (reply, text + 6);
    else if (strcmp (text, "reject") == 0)
        pigato_reply_reject (reply, "c worker rejects");
    else
        pigato_reply_end (reply, data, size);
    pigato_reply_destroy (&reply);
}

int
main (int argc, char *argv [])
{
    if (argc != 5) {
        fprintf (
            stderr,
            "usage: c_worker ENDPOINT SERVER_KEY|- SERVICE HEARTBEAT_MS\n");
        return 64;
    }
    pigato_log_set (PIGATO_LOG_INFO, pigato_log_stderr, NULL);
    pigato_worker_t *worker = pigato_worker_new (argv [3], s_on_request, NULL);
    if (!worker)
        return 1;
    int rc = 0;
    if (strcmp (argv [2], "-") == 0)
        pigato_worker_set_insecure (worker, true);
    else
        rc = pigato_worker_set_server_key (worker, argv [2]);
    pigato_worker_set_heartbeat (worker, atoi (argv [4]), 3);
    if (rc == 0)
        rc = pigato_worker_connect (worker, argv [1]);
    if (rc == 0) {
        printf ("connected\n");
        fflush (stdout);
        rc = pigato_worker_run (worker);
        if (rc == PIGATO_E_INTERRUPTED || rc == PIGATO_E_CLOSED)
            rc = 0;
    }
    if (rc)
        fprintf (stderr, "c_worker: %s: %s\n", pigato_strerror (rc),
                 pigato_worker_error (worker));
    pigato_worker_destroy (&worker);
    return rc ? 1 : 0;
}
