/*  matrix_peer.c - the libpigato client and worker of test_matrix.py, in
    either framing, insecure.

      matrix_peer worker ENDPOINT SERVICE FRAMING [hold-all]
      matrix_peer client ENDPOINT FRAMING SPEC_FILE

    worker: the request data is JSON; its "op" picks the behaviour:
        "partial"  {"part":0} .. {"part":n-1} as partials, final {"done":n}
        "error"    an error reply with "message"
        "reject"   reject
        "hold"     never answer (so does every request with hold-all)
        other      the data, echoed as the final reply
      One line per request on stdout: {"event":"request","attempt":N}.
    client: SPEC_FILE has one request a line, ID TAB SERVICE TAB DATA TAB
      OPTS (OPTS "-" = none); all are sent at once. One line per reply on
      stdout: {"id":ID,"type":"partial"|"final","status":S,"data":TEXT};
      exits 0 once every request had its final reply.
    Built by tests/integration/test_matrix.py against BUILD/libpigato.a.
*/
#include <jansson.h>
#include <pigato.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HELD_MAX 256

static pigato_reply_t *s_held [HELD_MAX];
static int s_held_count;
static bool s_hold_all;

static void
s_hold (pigato_reply_t *reply)
{
    if (s_held_count < HELD_MAX)
        s_held [s_held_count++] = reply;
    else
        pigato_reply_destroy (&reply);
}

static void
s_on_request (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
              size_t size, void *arg)
{
    (void) worker;
    (void) arg;
    printf ("{\"event\":\"request\",\"attempt\":%d}\n",
            pigato_reply_attempt (reply));
    fflush (stdout);
    json_t *request = json_loadb ((const char *) data, size, 0, NULL);
    const char *op = json_string_value (json_object_get (request, "op"));
    op = op ? op : "";
    if (s_hold_all || strcmp (op, "hold") == 0) {
        s_hold (reply);
        json_decref (request);
        return;
    }
    if (strcmp (op, "partial") == 0) {
        int count = (int) json_integer_value (json_object_get (request, "n"));
        char text [64];
        for (int index = 0; index < count; index++) {
            int length = snprintf (text, sizeof text, "{\"part\":%d}", index);
            pigato_reply_write (reply, text, (size_t) length);
        }
        int length = snprintf (text, sizeof text, "{\"done\":%d}", count);
        pigato_reply_end (reply, text, (size_t) length);
    }
    else if (strcmp (op, "error") == 0) {
        const char *message = json_string_value (
            json_object_get (request, "message"));
        pigato_reply_error (reply, message ? message : "error");
    }
    else if (strcmp (op, "reject") == 0)
        pigato_reply_reject (reply, "matrix worker rejects");
    else
        pigato_reply_end (reply, data, size);
    json_decref (request);
    pigato_reply_destroy (&reply);
}

static int
s_worker (const char *endpoint, const char *service, const char *framing)
{
    pigato_worker_t *worker = pigato_worker_new (service, s_on_request, NULL);
    if (!worker)
        return 1;
    pigato_worker_set_insecure (worker, true);
    pigato_worker_set_heartbeat (worker, 500, 3);
    int rc = pigato_worker_set_framing (worker, framing);
    if (rc == 0)
        rc = pigato_worker_connect (worker, endpoint);
    if (rc == 0)
        rc = pigato_worker_run (worker);
    if (rc && rc != PIGATO_E_INTERRUPTED)
        fprintf (stderr, "matrix_peer: %s: %s\n", pigato_strerror (rc),
                 pigato_worker_error (worker));
    for (int index = 0; index < s_held_count; index++)
        pigato_reply_destroy (&s_held [index]);
    pigato_worker_destroy (&worker);
    return rc && rc != PIGATO_E_INTERRUPTED ? 1 : 0;
}

static void
s_on_reply (pigato_client_t *client, const char *rid, int status, bool final,
            const void *data, size_t size, void *arg)
{
    (void) client;
    (void) rid;
    json_t *line = json_pack ("{s:s, s:s, s:i, s:s%}", "id", (const char *) arg,
                              "type", final ? "final" : "partial", "status",
                              status, "data", (const char *) data, size);
    char *text = line ? json_dumps (line, JSON_COMPACT) : NULL;
    printf ("%s\n", text ? text : "{\"error\":\"unprintable reply\"}");
    fflush (stdout);
    free (text);
    json_decref (line);
}

static int
s_client (const char *endpoint, const char *framing, const char *spec)
{
    FILE *file = fopen (spec, "r");
    pigato_client_t *client = pigato_client_new ();
    if (!file || !client)
        return 1;
    pigato_client_set_insecure (client, true);
    pigato_client_set_heartbeat (client, 500, 3);
    int rc = pigato_client_set_framing (client, framing);
    if (rc == 0)
        rc = pigato_client_connect (client, endpoint);
    //  Requests go to a broker that answered: wait for it
    for (int round = 0; rc == 0 && round < 5; round++)
        pigato_client_wait (client, 100);
    char line [8192];
    char *kept [256];
    int count = 0;
    while (rc == 0 && count < 256 && fgets (line, sizeof line, file)) {
        line [strcspn (line, "\n")] = 0;
        char *fields [4] = { NULL };
        char *cursor = line;
        for (int index = 0; index < 4; index++)
            fields [index] = strsep (&cursor, "\t");
        if (!fields [3])
            continue;
        kept [count] = strdup (fields [0]);
        const char *opts = strcmp (fields [3], "-") == 0 ? NULL : fields [3];
        rc = pigato_client_request (client, fields [1], fields [2],
                                    strlen (fields [2]), opts, s_on_reply,
                                    kept [count], NULL);
        count++;
    }
    fclose (file);
    if (rc == 0)
        rc = pigato_client_run (client);
    if (rc)
        fprintf (stderr, "matrix_peer: %s: %s\n", pigato_strerror (rc),
                 pigato_client_error (client));
    pigato_client_destroy (&client);
    for (int index = 0; index < count; index++)
        free (kept [index]);
    return rc ? 1 : 0;
}

int
main (int argc, char *argv [])
{
    if (argc >= 5 && strcmp (argv [1], "worker") == 0) {
        s_hold_all = argc > 5 && strcmp (argv [5], "hold-all") == 0;
        return s_worker (argv [2], argv [3], argv [4]);
    }
    if (argc == 5 && strcmp (argv [1], "client") == 0)
        return s_client (argv [2], argv [3], argv [4]);
    fprintf (stderr, "usage: matrix_peer worker ENDPOINT SERVICE FRAMING "
                     "[hold-all] | client ENDPOINT FRAMING SPEC_FILE\n");
    return 64;
}
