/*  =========================================================================
    cli_titanic.c - durable requests from a shell (cli.h), through a broker
    with a store (pigato-broker --store):

        pigato submit SERVICE [DATA|-] [--opts JSON] [--idempotency-key KEY]
        pigato fetch ID [--wait] [--timeout MS] [--raw]
        pigato close ID

    submit prints the id once the broker has the request on disk; fetch
    prints the reply (exit 8 while there is none yet; with --wait it asks
    again, backing off, until there is one or --timeout passes); close
    deletes the request and its reply. Built on the public API only.
    =========================================================================
*/
#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>
#include "pigato.h"
#include "cli.h"

bool
pigato__cli_titanic_command (const char *command)
{
    return command
        && (streq (command, "submit") || streq (command, "fetch")
            || streq (command, "close"));
}

void
pigato__cli_titanic_usage (FILE *out, const char *command)
{
    if (streq (command, "submit"))
        fprintf (
            out,
            "Usage: pigato submit SERVICE [DATA|-] [--opts JSON]\n"
            "                     [--idempotency-key KEY] [OPTIONS]\n"
            "\n"
            "Stores a durable request for SERVICE with DATA (or stdin, all of it,\n"
            "when DATA is '-' or absent) in the broker's store and prints its id\n"
            "once it is on disk. The broker sends it to SERVICE, again after a\n"
            "backoff if a worker is lost, until a final reply or its time to live;\n"
            "pigato fetch ID prints the reply. The broker needs --store.\n"
            "\n"
            "  --opts JSON              \"ttl\" (ms to a final reply, default one\n"
            "                           day), \"keep\" (ms the reply is kept, default\n"
            "                           one day), \"timeout\" (ms per attempt); the\n"
            "                           rest goes to the worker\n"
            "  --idempotency-key KEY    1 to 64 printable bytes: submitting again\n"
            "                           with the key of a stored request prints\n"
            "                           that request's id (a retry after a lost\n"
            "                           answer stores nothing twice)\n"
            "\n"
            "Exit status: 0 stored, 1 refused (400: bad request, access denied),\n"
            "2 not stored now (500: the store failed, a quota; try again) or a\n"
            "connection failure, 64 usage error.\n");
    else if (streq (command, "fetch"))
        fprintf (
            out,
            "Usage: pigato fetch ID [--wait] [--timeout MS] [--raw] [OPTIONS]\n"
            "\n"
            "Prints the reply to the durable request ID, as pigato request does.\n"
            "\n"
            "  --wait           no reply yet: ask again (backing off up to a second)\n"
            "                   until there is one or --timeout passes\n"
            "  --timeout MS     with --wait, give up after MS ms (default 60000;\n"
            "                   -1 = never)\n"
            "  --raw            write the reply byte for byte, adding no newline\n"
            "\n"
            "Exit status: 0 reply, 1 error reply (the service's, or E_EXPIRED,\n"
            "E_ACCESS_DENIED), 2 timeout or connection failure, 8 no reply yet,\n"
            "9 no such request for this identity, 64 usage error.\n");
    else
        fprintf (
            out,
            "Usage: pigato close ID [OPTIONS]\n"
            "\n"
            "Deletes the durable request ID and its reply. Once this returns it is\n"
            "not sent to a worker any more (an attempt under way ends first).\n"
            "Closing an unknown id succeeds.\n"
            "\n"
            "Exit status: 0 closed, 2 not closed (the store failed; try again) or\n"
            "a connection failure, 64 usage error.\n");
}

//  Reads stdin whole, at most PIGATO_BODY_MAX + 1 bytes (enough to tell
//  that it is too large). 0, or -1 with errno set.
static int
s_read_stdin (char **data_p, size_t *size_p)
{
    size_t size = 0, max = 65536;
    char *data = (char *) malloc (max);
    while (data) {
        size += fread (data + size, 1, max - size, stdin);
        if (size < max || size > PIGATO_BODY_MAX)
            break;
        char *bigger = (char *) realloc (data, max * 2);
        if (!bigger)
            free (data);
        data = bigger;
        max *= 2;
    }
    if (!data || ferror (stdin)) {
        free (data);
        return -1;
    }
    *data_p = data;
    *size_p = size;
    return 0;
}

//  The exit code for a failed call, having said why.
static int
s_failed (cli_t *cli, pigato_client_t *client, int rc, const char *reason)
{
    const char *detail = reason && *reason ? reason
                                           : pigato_client_error (client);
    fprintf (stderr, "pigato: %s %s: %s (%s)\n", cli->command,
             cli->id ? cli->id : cli->service, pigato_strerror (rc),
             detail ? detail : "");
    if (rc == PIGATO_E_INTERRUPTED)
        return EXIT_INTERRUPTED;
    return pigato__cli_failure_exit (rc, EXIT_FAILURE_NET);
}

static int
s_submit (cli_t *cli, pigato_client_t *client)
{
    char *input = NULL, *reason = NULL;
    size_t input_size = 0;
    if (cli->data)
        input = strdup (cli->data), input_size = strlen (cli->data);
    else {
        if (isatty (STDIN_FILENO))
            fprintf (stderr, "pigato: reading the request from stdin "
                             "(end with Ctrl-D)\n");
        if (s_read_stdin (&input, &input_size)) {
            fprintf (stderr, "pigato: cannot read stdin: %s\n",
                     strerror (errno));
            return EXIT_FAILURE_NET;
        }
    }
    if (!input || input_size > PIGATO_BODY_MAX) {
        fprintf (stderr, input ? "pigato: E_TOO_LARGE the request data is "
                                 "larger than the broker's limit\n"
                               : "pigato: out of memory\n");
        free (input);
        return input ? EX_USAGE : EXIT_FAILURE_NET;
    }
    char id [PIGATO_TITANIC_ID_SIZE];
    int rc = pigato_titanic_submit (client, cli->service, input, input_size,
                                    cli->opts, cli->idempotency_key, id,
                                    &reason);
    int exit_code = EXIT_SUCCESS;
    if (rc == PIGATO_OK)
        printf ("%s\n", id);
    else if (rc == PIGATO_E_REPLY) {
        fprintf (stderr, "pigato: submit %s refused: %s\n", cli->service,
                 reason ? reason : "");
        exit_code = EXIT_ERROR_REPLY;
    }
    else if (rc == PIGATO_E_INVALID) {
        fprintf (stderr, "pigato: --opts must be a JSON object and "
                         "--idempotency-key 1 to 64 bytes\n");
        exit_code = EX_USAGE;
    }
    else
        exit_code = s_failed (cli, client, rc, reason);
    free (reason);
    free (input);
    return exit_code;
}

//  Writes a reply as pigato request does: on a terminal with a newline,
//  else (or with --raw) byte for byte.
static void
s_print (cli_t *cli, const char *data, size_t size)
{
    fwrite (data, 1, size, stdout);
    if (!cli->raw && isatty (STDOUT_FILENO)
        && (size == 0 || data [size - 1] != '\n'))
        fputc ('\n', stdout);
}

static int
s_fetch (cli_t *cli, pigato_client_t *client)
{
    int64_t timeout = cli->timeout_set ? cli->timeout_ms : PIGATO_TIMEOUT_MS;
    int64_t until = zclock_mono () + timeout;
    int pause = 50;
    char *reply = NULL;
    size_t size = 0;
    int rc;
    while (true) {
        rc = pigato_titanic_fetch (client, cli->id, &reply, &size);
        if (rc != PIGATO_E_PENDING || !cli->wait
            || (timeout >= 0 && zclock_mono () + pause > until))
            break;
        free (reply);
        reply = NULL;
        //  Waiting in the client keeps its links alive meanwhile
        int64_t pause_until = zclock_mono () + pause;
        int waited = 0;
        while (waited == 0 && zclock_mono () < pause_until)
            waited = pigato_client_wait (client,
                                         (int) (pause_until - zclock_mono ()));
        if (waited == PIGATO_E_INTERRUPTED) {
            rc = waited;
            break;
        }
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
    int exit_code = EXIT_SUCCESS;
    if (rc == PIGATO_OK) {
        s_print (cli, reply, size);
        exit_code = fflush (stdout) ? EXIT_FAILURE_NET : EXIT_SUCCESS;
    }
    else if (rc == PIGATO_E_REPLY) {
        fprintf (stderr, "pigato: error reply to %s: %s\n", cli->id,
                 reply ? reply : "");
        exit_code = EXIT_ERROR_REPLY;
    }
    else if (rc == PIGATO_E_PENDING) {
        fprintf (stderr, "pigato: %s has no reply yet%s\n", cli->id,
                 cli->wait ? " (--timeout passed)" : "");
        exit_code = EXIT_PENDING;
    }
    else if (rc == PIGATO_E_UNKNOWN) {
        fprintf (stderr, "pigato: no request %s for this identity\n", cli->id);
        exit_code = EXIT_UNKNOWN;
    }
    else if (rc == PIGATO_E_INVALID) {
        fprintf (stderr, "pigato: '%s' is not an id (32 hex digits)\n",
                 cli->id);
        exit_code = EX_USAGE;
    }
    else
        exit_code = s_failed (cli, client, rc, reply);
    free (reply);
    return exit_code;
}

static int
s_close (cli_t *cli, pigato_client_t *client)
{
    char *reason = NULL;
    int rc = pigato_titanic_close (client, cli->id, &reason);
    int exit_code = EXIT_SUCCESS;
    if (rc == PIGATO_E_INVALID) {
        fprintf (stderr, "pigato: '%s' is not an id (32 hex digits)\n",
                 cli->id);
        exit_code = EX_USAGE;
    }
    else if (rc)
        exit_code = s_failed (cli, client, rc, reason);
    free (reason);
    return exit_code;
}

int
pigato__cli_titanic (cli_t *cli)
{
    int exit_code;
    pigato_client_t *client = pigato__cli_client (cli, &exit_code);
    if (!client)
        return exit_code;
    if (streq (cli->command, "submit"))
        exit_code = s_submit (cli, client);
    else if (streq (cli->command, "fetch"))
        exit_code = s_fetch (cli, client);
    else
        exit_code = s_close (cli, client);
    pigato_client_destroy (&client);
    return exit_code;
}
