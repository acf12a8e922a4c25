/*  =========================================================================
    cli_stats.c - `pigato stats` and `pigato check`: the broker's $stats
    service (docs/cli.md) read from a shell. stats prints a table per
    service (like `nats server report`) or, with --json, the answer as it
    came; check is a monitoring plugin (Nagios conventions: one line,
    exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

    Built on the public API (pigato.h) and jansson.
    =========================================================================
*/
#include <czmq.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include "pigato.h"
#include "cli.h"

#define STATS_SERVICE "$stats"

//  Nagios plugin exit codes.
enum { CHECK_OK = 0, CHECK_WARNING = 1, CHECK_CRITICAL = 2, CHECK_UNKNOWN = 3 };

static int
s_client_connect (void *peer, const char *endpoint)
{
    return pigato_client_connect ((pigato_client_t *) peer, endpoint);
}

//  What one call of $stats gave.
typedef struct {
    int status;         //  pigato_client_call's: PIGATO_OK, E_REPLY, ...
    char *reply;        //  the answer or the error text (malloc'd)
    size_t size;        //  its bytes
    int64_t elapsed;    //  microseconds from the call to its answer
    bool usage;         //  status is the setup's: a key that cannot be used
    const char *error;  //  the client's message for status, if any
} s_answer_t;

//  Calls $stats (naming cli->service if set) through a client set up as
//  cli says, within timeout_ms. Fills answer; the client is returned for
//  its error text (caller destroys).
static pigato_client_t *
s_call (cli_t *cli, int64_t timeout_ms, s_answer_t *answer)
{
    memset (answer, 0, sizeof *answer);
    answer->status = PIGATO_E_NOMEM;
    pigato_client_t *client = pigato_client_new ();
    if (!client)
        return NULL;
    pigato__cli_catch_signals (NULL);
    int rc = 0;
    if (cli->insecure)
        pigato_client_set_insecure (client, true);
    else
        rc = pigato_client_set_server_key (client, cli->server_key);
    if (rc == 0 && cli->server_ca)
        rc = pigato_client_set_server_ca (client, cli->server_ca);
    if (rc == 0 && cli->key_file)
        rc = pigato_client_set_key_file (client, cli->key_file);
    if (rc) {
        answer->status = rc;
        answer->usage = true;
        answer->error = pigato_client_error (client);
        return client;
    }
    if (cli->heartbeat_ms)
        pigato_client_set_heartbeat (client, cli->heartbeat_ms,
                                     PIGATO_LIVENESS);
    if (cli->framing)
        pigato_client_set_framing (client, cli->framing);
    pigato_client_set_timeout (client, timeout_ms);
    rc = pigato__cli_connect_all (cli, client, s_client_connect);
    if (rc) {
        answer->status = rc;
        answer->usage = rc == PIGATO_E_KEY || rc == PIGATO_E_INVALID;
        answer->error = pigato_client_error (client);
        return client;
    }
    //  A JSON string naming the one service wanted
    json_t *name = cli->service ? json_string (cli->service) : NULL;
    char *body = name ? json_dumps (name, JSON_ENCODE_ANY) : NULL;
    json_decref (name);
    int64_t start = zclock_usecs ();
    answer->status = pigato_client_call (client, STATS_SERVICE, body,
                                         body ? strlen (body) : 0, NULL, NULL,
                                         NULL, &answer->reply, &answer->size);
    answer->elapsed = zclock_usecs () - start;
    answer->error = pigato_client_error (client);
    free (body);
    return client;
}

//  --------------------------------------------------------------------------
//  pigato stats

//  A duration for people: 250us, 2.5ms, 1s.
static void
s_duration (double seconds, char *text, size_t size)
{
    if (seconds < 0.001)
        snprintf (text, size, "%gus", seconds * 1e6);
    else if (seconds < 1)
        snprintf (text, size, "%gms", seconds * 1e3);
    else
        snprintf (text, size, "%gs", seconds);
}

//  The latency under which a share (0.5, 0.99) of a service's requests
//  fell: the upper bound of the bucket it reached ("-" with none, ">60s"
//  past the last bound).
static void
s_percentile (json_t *latency, json_t *bounds, double share, char *text,
              size_t size)
{
    json_t *buckets = json_object_get (latency, "buckets");
    int64_t count = json_integer_value (json_object_get (latency, "count"));
    snprintf (text, size, "-");
    if (count <= 0 || !json_is_array (buckets))
        return;
    for (size_t index = 0; index < json_array_size (buckets); index++)
        if ((double) json_integer_value (json_array_get (buckets, index))
            >= share * (double) count) {
            if (index < json_array_size (bounds))
                s_duration (json_number_value (json_array_get (bounds, index)),
                            text, size);
            else
                snprintf (text, size, ">%gs",
                          json_number_value (json_array_get (
                              bounds, json_array_size (bounds) - 1)));
            return;
        }
}

//  Writes an integer member as text ("-" if absent).
static void
s_int (json_t *object, const char *key, char *text, size_t size)
{
    json_t *value = json_object_get (object, key);
    if (json_is_integer (value))
        snprintf (text, size, "%" JSON_INTEGER_FORMAT,
                  json_integer_value (value));
    else
        snprintf (text, size, "-");
}

#define COLUMNS 11

//  The table of services: one row of COLUMNS cells each, widths to fit.
static void
s_print_services (json_t *services, json_t *bounds)
{
    static const char *headers [COLUMNS] = {
        "SERVICE", "WORKERS", "CONCURRENCY", "QUEUED", "IN FLIGHT", "OK",
        "ERROR",   "TIMEOUT", "OTHER",       "P50",    "P99"
    };
    size_t rows = json_object_size (services) + 1;
    char (*cells) [COLUMNS][64] = calloc (rows, sizeof *cells);
    const char **names = (const char **) calloc (rows, sizeof *names);
    size_t widths [COLUMNS];
    if (!cells || !names) {
        free (cells);
        free (names);
        return;
    }
    for (int column = 0; column < COLUMNS; column++)
        widths [column] = strlen (headers [column]);
    size_t row = 0;
    const char *name;
    json_t *service;
    json_object_foreach (services, name, service)
    {
        char (*cell) [64] = cells [row];
        names [row] = name;
        json_t *requests = json_object_get (service, "requests");
        int64_t other = 0;
        const char *key;
        json_t *value;
        json_object_foreach (requests, key,
                             value) if (!streq (key, "ok")
                                        && !streq (key, "error")
                                        && !streq (key, "timeout"))
            other += json_integer_value (value);
        json_t *concurrency = json_object_get (service, "concurrency");
        s_int (service, "workers", cell [1], 64);
        if (json_is_integer (concurrency)
            && json_integer_value (concurrency) < 0)
            snprintf (cell [2], 64, "unlimited");
        else
            s_int (service, "concurrency", cell [2], 64);
        s_int (service, "queued", cell [3], 64);
        s_int (service, "in_flight", cell [4], 64);
        s_int (requests, "ok", cell [5], 64);
        s_int (requests, "error", cell [6], 64);
        s_int (requests, "timeout", cell [7], 64);
        snprintf (cell [8], 64, "%" PRId64, other);
        json_t *latency = json_object_get (service, "latency");
        s_percentile (latency, bounds, 0.5, cell [9], 64);
        s_percentile (latency, bounds, 0.99, cell [10], 64);
        widths [0] = strlen (name) > widths [0] ? strlen (name) : widths [0];
        for (int column = 1; column < COLUMNS; column++)
            if (strlen (cell [column]) > widths [column])
                widths [column] = strlen (cell [column]);
        row++;
    }
    for (int column = 0; column < COLUMNS; column++)
        printf ("%s%-*s", column ? "  " : "",
                column + 1 < COLUMNS ? (int) widths [column] : 0,
                headers [column]);
    printf ("\n");
    for (size_t index = 0; index < row; index++) {
        printf ("%-*s", (int) widths [0], names [index]);
        for (int column = 1; column < COLUMNS; column++)
            printf ("  %*s", (int) widths [column], cells [index][column]);
        printf ("\n");
    }
    if (row == 0)
        printf ("(no service this identity may call has counters)\n");
    free (cells);
    free (names);
}

//  Bytes for people: 12.3 MiB.
static void
s_bytes (int64_t bytes, char *text, size_t size)
{
    const char *units [] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double value = (double) bytes;
    int unit = 0;
    while (value >= 1024 && unit < 4) {
        value /= 1024;
        unit++;
    }
    snprintf (text, size, unit ? "%.1f %s" : "%.0f %s", value, units [unit]);
}

static int64_t
s_get (json_t *object, const char *key)
{
    return json_integer_value (json_object_get (object, key));
}

//  The broker-wide part, a few lines.
static void
s_print_broker (json_t *broker)
{
    json_t *connections = json_object_get (broker, "connections");
    int64_t uptime = s_get (broker, "uptime_seconds");
    printf ("\nbroker: up %" PRId64 "d %02" PRId64 ":%02" PRId64 ":%02" PRId64
            ", %" PRId64 " connections open (%" PRId64 " accepted, %" PRId64
            " refused), %" PRId64 " workers, %" PRId64 " requests held\n",
            uptime / 86400, uptime / 3600 % 24, uptime / 60 % 60, uptime % 60,
            s_get (connections, "open"), s_get (connections, "accepted"),
            s_get (connections, "refused"), s_get (broker, "workers"),
            s_get (broker, "requests_pending"));
    json_t *handshakes = json_object_get (broker, "handshakes");
    json_t *refused = json_object_get (handshakes, "refused");
    int64_t refusals = 0;
    const char *key;
    json_t *value;
    json_object_foreach (refused, key, value)
        refusals += json_integer_value (value);
    printf ("handshakes: %" PRId64 " accepted, %" PRId64 " refused",
            s_get (handshakes, "accepted"), refusals);
    json_object_foreach (refused, key, value) if (json_integer_value (value))
        printf (" (%s %" JSON_INTEGER_FORMAT ")", key,
                json_integer_value (value));
    json_t *counters = json_object_get (broker, "counters");
    printf ("; %" PRId64 " denied, %" PRId64 " bad messages\n",
            s_get (counters, "denied"), s_get (counters, "bad_messages"));
    json_t *memory = json_object_get (broker, "memory");
    json_t *cache = json_object_get (broker, "cache");
    char resident [32], max [32], cached [32];
    s_bytes (s_get (memory, "resident_bytes"), resident, sizeof resident);
    s_bytes (s_get (memory, "max_bytes"), max, sizeof max);
    s_bytes (s_get (cache, "bytes"), cached, sizeof cached);
    printf ("memory: %s resident of %s; cache: %" PRId64
            " replies (%s), %" PRId64 " hits\n",
            resident, max, s_get (cache, "entries"), cached,
            s_get (cache, "hits"));
    json_t *store = json_object_get (broker, "store");
    char synced [64] = "each fsync'd";
    if (store && s_get (store, "sync_interval_ms") > 0)
        snprintf (synced, sizeof synced, "fsync'd every %" PRId64 " ms",
                  s_get (store, "sync_interval_ms"));
    if (store)
        printf ("store: %" PRId64 " durable requests held (%" PRId64
                " at a worker, %" PRId64 " waiting for one), %" PRId64
                " stored, %" PRId64 " replied, %" PRId64 " expired; %" PRId64
                " commits (%s), %" PRId64 " syncs, %" PRId64
                " write failures%s\n",
                s_get (store, "stored"), s_get (store, "in_flight"),
                s_get (store, "parked"), s_get (store, "submitted"),
                s_get (store, "replied"), s_get (store, "expired"),
                s_get (store, "commits"), synced, s_get (store, "syncs"),
                s_get (store, "write_failures"),
                s_get (store, "broken")
                    ? "; BROKEN: takes nothing more until the broker restarts"
                    : "");
    json_t *acl = json_object_get (broker, "acl");
    if (acl) {
        time_t loaded = (time_t) s_get (acl, "loaded_at");
        char when [64] = "?";
        struct tm tm;
        if (gmtime_r (&loaded, &tm))
            strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        printf ("acl: loaded %s, %" PRId64 " reloads, %" PRId64 " failed\n",
                when, s_get (acl, "reloads"), s_get (acl, "reload_failures"));
    }
    json_t *certificates = json_object_get (broker,
                                            "certificate_expiry_seconds");
    if (json_object_size (certificates)) {
        printf ("certificates:");
        const char *separator = " ";
        json_object_foreach (certificates, key, value)
        {
            int64_t seconds = json_integer_value (value);
            if (seconds < 0)
                printf ("%s%s expired %" PRId64 " days ago", separator, key,
                        -seconds / 86400);
            else
                printf ("%s%s ends in %" PRId64 " days", separator, key,
                        seconds / 86400);
            separator = ", ";
        }
        printf ("\n");
    }
}

//  The end of a call that gave no answer: the message and the exit code,
//  as `pigato request` gives them.
static int
s_failed (cli_t *cli, const s_answer_t *answer)
{
    const char *detail = answer->reply && *answer->reply ? answer->reply
                       : answer->error                   ? answer->error
                                                         : "";
    if (answer->usage) {
        fprintf (stderr, "pigato: %s\n", detail);
        return EX_USAGE;
    }
    if (answer->status == PIGATO_E_REPLY) {
        fprintf (stderr, "pigato: error from %s: %s\n", STATS_SERVICE, detail);
        return EXIT_ERROR_REPLY;
    }
    if (answer->status == PIGATO_E_INTERRUPTED) {
        fprintf (stderr, "pigato: interrupted\n");
        return EXIT_INTERRUPTED;
    }
    if (answer->status == PIGATO_E_TIMEOUT)
        fprintf (stderr, "pigato: %s timed out (no answer within %lld ms)\n",
                 STATS_SERVICE, (long long) cli->timeout_ms);
    else
        fprintf (stderr, "pigato: %s failed: %s (%s)\n", STATS_SERVICE,
                 pigato_strerror (answer->status), detail);
    return pigato__cli_failure_exit (answer->status, EXIT_FAILURE_NET);
}

int
pigato__cli_stats (cli_t *cli)
{
    if (!cli->timeout_set)
        cli->timeout_ms = PIGATO_TIMEOUT_MS;
    s_answer_t answer;
    pigato_client_t *client = s_call (cli, cli->timeout_ms, &answer);
    int exit_code = EXIT_SUCCESS;
    if (answer.status != PIGATO_OK)
        exit_code = s_failed (cli, &answer);
    else if (cli->json)
        printf ("%s\n", answer.reply);
    else {
        json_error_t error;
        json_t *root = json_loadb (answer.reply, answer.size, 0, &error);
        if (!json_is_object (root)) {
            fprintf (stderr, "pigato: %s answered what is not JSON: %s\n",
                     STATS_SERVICE, error.text);
            exit_code = EXIT_FAILURE_NET;
        }
        else {
            json_t *bounds = json_object_get (root, "latency_bounds_seconds");
            s_print_services (json_object_get (root, "services"), bounds);
            if (json_is_true (json_object_get (root, "truncated")))
                printf ("(more services than one answer holds: name one, "
                        "pigato stats SERVICE)\n");
            json_t *identity = json_object_get (root, "identity");
            const char *name = json_string_value (
                json_object_get (identity, "name"));
            printf ("\nidentity %s: %" PRId64 " requests, %" PRId64
                    " denied, %" PRId64 " over quota\n",
                    name ? name : "?", s_get (identity, "requests"),
                    s_get (identity, "denials"), s_get (identity, "quota"));
            json_t *broker = json_object_get (root, "broker");
            if (broker)
                s_print_broker (broker);
        }
        json_decref (root);
    }
    if (fflush (stdout) && exit_code == EXIT_SUCCESS)
        exit_code = EXIT_FAILURE_NET;
    free (answer.reply);
    pigato_client_destroy (&client);
    return exit_code;
}

//  --------------------------------------------------------------------------
//  pigato check

//  The broker endpoints as given (for the line).
static void
s_brokers (cli_t *cli, char *text, size_t size)
{
    size_t used = 0;
    text [0] = 0;
    for (size_t index = 0; index < cli->broker_count && used < size; index++)
        used += (size_t) snprintf (text + used, size - used, "%s%s",
                                   index ? "," : "", cli->brokers [index]);
}

int
pigato__cli_check (cli_t *cli)
{
    if (!cli->timeout_set)
        cli->timeout_ms = CHECK_TIMEOUT_MS;
    if (!cli->log_level_set)
        //  The one line on stdout says it all: no link warnings on stderr
        pigato_log_set (PIGATO_LOG_ERROR, pigato_log_stderr, NULL);
    char brokers [512];
    s_brokers (cli, brokers, sizeof brokers);
    s_answer_t answer;
    pigato_client_t *client = s_call (cli, cli->timeout_ms, &answer);
    const char *detail = answer.reply && *answer.reply ? answer.reply
                       : answer.error                  ? answer.error
                                                       : "";
    double seconds = (double) answer.elapsed / 1e6;
    int code = CHECK_CRITICAL;
    if (answer.usage) {
        printf ("UNKNOWN: %s\n", detail);
        code = CHECK_UNKNOWN;
    }
    else if (answer.status == PIGATO_E_AUTH
             || answer.status == PIGATO_E_HANDSHAKE)
        printf ("CRITICAL: broker %s refused the handshake: %s\n", brokers,
                detail);
    else if (answer.status == PIGATO_E_TIMEOUT)
        printf ("CRITICAL: broker %s did not answer within %lld ms\n", brokers,
                (long long) cli->timeout_ms);
    else if (answer.status == PIGATO_E_INTERRUPTED) {
        printf ("UNKNOWN: interrupted\n");
        code = CHECK_UNKNOWN;
    }
    else if (answer.status == PIGATO_E_REPLY) {
        //  The broker answered (the handshake passed): enough, unless
        //  workers must be counted
        bool denied = strncmp (detail, "E_ACCESS_DENIED", 15) == 0;
        if (denied && !cli->service) {
            printf ("OK: broker %s answered in %.0f ms (this identity may not "
                    "call $stats) | time=%.6fs\n",
                    brokers, seconds * 1e3, seconds);
            code = CHECK_OK;
        }
        else {
            printf ("UNKNOWN: broker %s answered in %.0f ms but refused "
                    "$stats: %s\n",
                    brokers, seconds * 1e3, detail);
            code = CHECK_UNKNOWN;
        }
    }
    else if (answer.status != PIGATO_OK)
        printf ("CRITICAL: broker %s: %s (%s)\n", brokers,
                pigato_strerror (answer.status), detail);
    else {
        json_t *root = json_loadb (answer.reply, answer.size, 0, NULL);
        json_t *service = cli->service ? json_object_get (
                              json_object_get (root, "services"), cli->service)
                                       : NULL;
        int64_t workers = json_integer_value (
            json_object_get (service, "workers"));
        if (!json_is_object (root)) {
            printf ("UNKNOWN: broker %s answered what is not JSON\n", brokers);
            code = CHECK_UNKNOWN;
        }
        else if (!cli->service) {
            printf ("OK: broker %s answered in %.0f ms | time=%.6fs\n", brokers,
                    seconds * 1e3, seconds);
            code = CHECK_OK;
        }
        else if (workers <= 0)
            printf ("CRITICAL: broker %s answered in %.0f ms; %s has no "
                    "worker%s | time=%.6fs workers=0\n",
                    brokers, seconds * 1e3, cli->service,
                    service ? ""
                            : " (never registered, or not visible to "
                              "this identity)",
                    seconds);
        else {
            code = workers < cli->min_workers ? CHECK_WARNING : CHECK_OK;
            printf ("%s: broker %s answered in %.0f ms; %s has %" PRId64
                    " worker%s%s | time=%.6fs workers=%" PRId64 "\n",
                    code == CHECK_OK ? "OK" : "WARNING", brokers, seconds * 1e3,
                    cli->service, workers, workers == 1 ? "" : "s",
                    code == CHECK_OK ? "" : " (fewer than --min-workers)",
                    seconds, workers);
        }
        json_decref (root);
    }
    fflush (stdout);
    free (answer.reply);
    pigato_client_destroy (&client);
    return code;
}
