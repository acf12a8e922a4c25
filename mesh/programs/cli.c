/*  =========================================================================
    cli.c - what both halves of the `pigato` command use (cli.h): cli_main.c
    (`pigato request`) and cli_serve.c (`pigato serve`) call in here, and
    this file calls neither.
    =========================================================================
*/
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include "cli.h"

//  --------------------------------------------------------------------------
//  Calls connect (peer, endpoint) for every endpoint in cli's --broker
//  values (each may be a comma-separated list). Returns 0 or the first
//  failing connect's status.

int
pigato__cli_connect_all (cli_t *cli, void *peer, connect_fn *connect)
{
    static char endpoints [4096];
    for (size_t index = 0; index < cli->broker_count; index++) {
        snprintf (endpoints, sizeof endpoints, "%s", cli->brokers [index]);
        char *state = NULL;
        for (char *endpoint = strtok_r (endpoints, ",", &state); endpoint;
             endpoint = strtok_r (NULL, ",", &state)) {
            int rc = connect (peer, endpoint);
            if (rc)
                return rc;
        }
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  One exit code per reason a broker could not be used (docs/pigato.1).

int
pigato__cli_failure_exit (int status, int fallback)
{
    switch (status) {
        case PIGATO_E_AUTH: return EXIT_AUTH;
        case PIGATO_E_HANDSHAKE: return EXIT_HANDSHAKE;
        case PIGATO_E_UNREACHABLE: return EXIT_UNREACHABLE;
        case PIGATO_E_RESOLVE: return EXIT_RESOLVE;
        case PIGATO_E_DENIED: return EXIT_DENIED;
        default: return fallback;
    }
}

//  --------------------------------------------------------------------------
//  SIGINT and SIGTERM set zsys_interrupted, which ends a blocking call
//  (PIGATO_E_INTERRUPTED) and the serve loop; for serve the first SIGTERM
//  asks for a drain instead. libpigato leaves signals to the application
//  (pigato.h), so the command installs this itself. No SA_RESTART: the
//  signal wakes a poll at once.

static volatile sig_atomic_t *s_drain;  //  serve's drain flag, or NULL

static void
s_on_stop_signal (int signal_number)
{
    if (signal_number == SIGTERM && s_drain && !*s_drain) {
        *s_drain = 1;
        return;
    }
    zsys_interrupted = 1;
}

void
pigato__cli_catch_signals (volatile sig_atomic_t *drain)
{
    s_drain = drain;
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_stop_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
}

//  --------------------------------------------------------------------------
//  A client as the options say, connected.

static int
s_client_connect (void *peer, const char *endpoint)
{
    return pigato_client_connect ((pigato_client_t *) peer, endpoint);
}

pigato_client_t *
pigato__cli_client (cli_t *cli, int *exit_code)
{
    *exit_code = EXIT_FAILURE_NET;
    pigato_client_t *client = pigato_client_new ();
    if (!client) {
        fprintf (stderr, "pigato: out of memory\n");
        return NULL;
    }
    pigato__cli_catch_signals (NULL);  //  Ctrl-C: exit 130
    int rc = 0;
    if (cli->insecure)
        pigato_client_set_insecure (client, true);
    else if (pigato_client_set_server_key (client, cli->server_key)
             || (cli->server_ca
                 && pigato_client_set_server_ca (client, cli->server_ca))
             || (cli->key_file
                 && pigato_client_set_key_file (client, cli->key_file)))
        rc = PIGATO_E_KEY;
    if (rc == 0) {
        if (cli->heartbeat_ms)
            pigato_client_set_heartbeat (client, cli->heartbeat_ms,
                                         PIGATO_LIVENESS);
        if (cli->framing)
            pigato_client_set_framing (client, cli->framing);
        if (cli->timeout_set)
            pigato_client_set_timeout (client, cli->timeout_ms);
        rc = pigato__cli_connect_all (cli, client, s_client_connect);
    }
    if (rc) {
        //  A key problem will not go away by trying again
        fprintf (stderr, "pigato: %s\n", pigato_client_error (client));
        *exit_code = rc == PIGATO_E_KEY || rc == PIGATO_E_INVALID
                       ? EX_USAGE
                       : EXIT_FAILURE_NET;
        pigato_client_destroy (&client);
    }
    return client;
}
