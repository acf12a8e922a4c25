/*  =========================================================================
    cli.h - what the `pigato` command's files share: cli_main.c (parsing,
    `pigato request`, main) calls cli_serve.c (`pigato serve`); both call
    cli.c; cli.c calls neither.
    =========================================================================
*/
#ifndef PIGATO_CLI_H_INCLUDED
#define PIGATO_CLI_H_INCLUDED

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "pigato.h"

#define EXIT_ERROR_REPLY 1
#define EXIT_FAILURE_NET 2
#define EXIT_AUTH        3  //  the broker refused the key
#define EXIT_HANDSHAKE   4  //  no handshake: wrong server key, insecure
#define EXIT_UNREACHABLE 5  //  nothing answered the broker endpoint
#define EXIT_RESOLVE     6  //  the broker's host name does not resolve
#define EXIT_DENIED      7  //  serve: the identity may not serve the name
#define EXIT_PENDING     8  //  fetch: no reply yet
#define EXIT_UNKNOWN     9  //  fetch: no such durable request
#define EXIT_INTERRUPTED 130
#define DEFAULT_BROKER   "tcp://127.0.0.1:5555"
#define CMD_CONCURRENCY  4  //  default for `serve -- CMD`
#define BROKERS_MAX      16

//  Everything the command line says, after defaults and environment.
typedef struct {
    const char *command;  //  "request", "serve", "stats", "check", NULL
    const char *service;  //  SERVICE argument
    const char *data;     //  DATA argument, NULL = stdin
    const char *brokers [BROKERS_MAX];  //  --broker values (may hold commas)
    size_t broker_count;                //  entries in brokers
    const char *server_key;             //  --server-key or env, NULL if none
    const char *server_ca;              //  --ca or env, NULL = no check
    const char *key_file;               //  --key or env, NULL = ephemeral
    bool insecure;                      //  --insecure
    int heartbeat_ms;                   //  --heartbeat, 0 = library default
    const char *framing;                //  --framing or env, NULL = auto
    int log_level;                      //  effective log level
    bool log_level_set;                 //  --log-level was given
    int log_format;                     //  --log-format, PIGATO_LOG_TEXT
    bool verbose;                       //  --verbose
    bool help;                          //  -h / --help
    int64_t timeout_ms;                 //  --timeout
    bool timeout_set;                   //  --timeout was given
    const char *opts;                   //  --opts JSON text
    bool raw;                           //  --raw: replies byte for byte
    bool echo;                          //  serve --echo
    int concurrency;                    //  serve --concurrency, 0 = default
    int drain_timeout_ms;               //  serve --drain-timeout
    bool drain_timeout_set;             //  --drain-timeout was given
    char **cmd_argv;              //  serve -- CMD ARGS..., NULL-terminated
    bool json;                    //  stats --json: the answer as it came
    const char *check_service;    //  check --service NAME, NULL if none
    int min_workers;              //  check --min-workers (1 with --service)
    const char *id;               //  fetch, close: the durable request's id
    bool wait;                    //  fetch --wait
    const char *idempotency_key;  //  submit --idempotency-key
} cli_t;

//  Connects a client or worker to every --broker endpoint (commas split
//  one value) with connect (peer, endpoint), e.g. pigato_client_connect
//  through a cast. Stops at the first failure and returns 0 or that
//  pigato status (negative: PIGATO_E_KEY, PIGATO_E_CONNECT, ...), not an
//  exit code; prints nothing, so the caller prints the peer's error and
//  picks the exit code. (cli.c)
typedef int (connect_fn) (void *peer, const char *endpoint);
int pigato__cli_connect_all (cli_t *cli, void *peer, connect_fn *connect);

//  The exit code for a connection failure status (PIGATO_E_AUTH ...
//  PIGATO_E_DENIED), or fallback for any other status. (cli.c)
int pigato__cli_failure_exit (int status, int fallback);

//  Installs the command's SIGINT/SIGTERM handler: it sets zsys_interrupted.
//  With drain (pigato serve), the first SIGTERM sets *drain instead (a
//  second one, or SIGINT, sets zsys_interrupted). Called once the client
//  or worker exists. (cli.c)
void pigato__cli_catch_signals (volatile sig_atomic_t *drain);

//  pigato stats [SERVICE] and pigato check: the broker's $stats as a
//  table (or its JSON), and a monitoring check. Return the process exit
//  code (docs/pigato.1), having printed the outcome. (cli_stats.c)
#define CHECK_TIMEOUT_MS 5000  //  check's default --timeout
int pigato__cli_stats (cli_t *cli);
int pigato__cli_check (cli_t *cli);

//  pigato serve: runs a worker until SIGINT, or SIGTERM and its drain.
//  Returns the process exit code: EXIT_SUCCESS after a signal, EX_USAGE
//  for a command that is
//  not found or a key that cannot be used, EXIT_FAILURE_NET when the
//  worker cannot be created, connected or attached; having said why on
//  stderr. (cli_serve.c)
int pigato__cli_serve (cli_t *cli);

//  A client set up as the options say (keys, heartbeat, framing,
//  timeout) and connected to every --broker. NULL after saying why on
//  stderr, with the exit code in *exit_code. (cli.c)
pigato_client_t *pigato__cli_client (cli_t *cli, int *exit_code);

//  True for the commands of durable requests: submit, fetch, close.
//  (cli_titanic.c)
bool pigato__cli_titanic_command (const char *command);

//  Their help text (cli_titanic.c).
void pigato__cli_titanic_usage (FILE *out, const char *command);

//  pigato submit / fetch / close: returns the exit code, having printed
//  the id, the reply, or why not. (cli_titanic.c)
int pigato__cli_titanic (cli_t *cli);

#endif
