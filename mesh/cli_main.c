/*  =========================================================================
    cli_main.c - `pigato`, the mesh from a shell (like `nats req/reply`).

        pigato request SERVICE [DATA|-] [--timeout MS] [--opts JSON]
        pigato serve SERVICE (--echo | -- CMD ARGS...) [--concurrency N]

    Built only on the public API (pigato.h) plus czmq's zloop, which the
    worker attaches to so that command children's pipes share its loop.
    Exit codes: 0 ok, 1 error reply, 2 timeout or connection failure,
    64 usage error or a key that cannot be used (unreadable, or a server
    certificate that --ca refuses), 130 interrupted.
    =========================================================================
*/
#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>
#include "pigato.h"

extern char **environ;

#define EXIT_ERROR_REPLY  1
#define EXIT_FAILURE_NET  2
#define EXIT_INTERRUPTED  130
#define DEFAULT_BROKER    "tcp://127.0.0.1:5555"
#define BROKERS_MAX       16
#define CMD_CONCURRENCY   4             //  default for `serve -- CMD`
#define OUTPUT_MAX        (64 * 1024 * 1024)    //  largest stdout we reply with
#define STDERR_MAX        4096          //  stderr kept for the error message
#define REAP_RETRY_MS     10            //  waitpid retry after pipes hit EOF
#define ACTIVE_CHECK_MS   1000          //  how often we look for abandoned jobs
#define KILL_GRACE_MS     2000          //  SIGTERM -> SIGKILL at shutdown

//  Everything the command line says, after defaults and environment.
typedef struct {
    const char *command;                //  "request", "serve", NULL
    const char *service;                //  SERVICE argument
    const char *data;                   //  DATA argument, NULL = stdin
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
    bool verbose;                       //  --verbose
    bool help;                          //  -h / --help
    int64_t timeout_ms;                 //  --timeout
    bool timeout_set;                   //  --timeout was given
    const char *opts;                   //  --opts JSON text
    bool echo;                          //  serve --echo
    int concurrency;                    //  serve --concurrency, 0 = default
    char **cmd_argv;                    //  serve -- CMD ARGS..., NULL-terminated
} cli_t;

//  One command run for one request (serve -- CMD).
typedef struct _serve_t serve_t;
typedef struct {
    serve_t *serve;             //  the serve loop we belong to
    pigato_reply_t *reply;      //  owned; ended when the child is reaped
    char *rid;                  //  printable rid, for logs
    byte *input;                //  request data, written to the child's stdin
    size_t input_size;          //  bytes in input
    size_t input_sent;          //  bytes written so far
    pid_t pid;                  //  child (and its process group), 0 = none
    int stdin_fd;               //  our end of the child's stdin, -1 closed
    int stdout_fd;              //  our end of the child's stdout, -1 closed
    int stderr_fd;              //  our end of the child's stderr, -1 closed
    byte *output;               //  stdout collected so far
    size_t output_size;         //  bytes in output
    size_t output_max;          //  bytes allocated for output
    char errors [STDERR_MAX];   //  first bytes of stderr
    size_t errors_size;         //  bytes in errors
    bool too_large;             //  stdout passed OUTPUT_MAX: child killed
    bool abandoned;             //  client gave up: child killed
    bool reaped;                //  waitpid collected the child
    int wait_status;            //  its status once reaped
    int64_t started;            //  zclock_mono () when the request came
} job_t;

struct _serve_t {
    pigato_worker_t *worker;    //  our worker
    zloop_t *loop;              //  the loop the worker and pipes share
    char **cmd_argv;            //  CMD ARGS..., NULL = echo mode
    int concurrency;            //  children at most at once
    bool log_requests;          //  one info line per request
    zlist_t *running;           //  job_t * with a child
    zlist_t *waiting;           //  job_t * waiting for a free slot
};

//  --------------------------------------------------------------------------
//  Help texts

static void
s_usage (FILE *out, const char *command)
{
    if (command && streq (command, "request"))
        fprintf (out,
"Usage: pigato request SERVICE [DATA|-] [--timeout MS] [--opts JSON] [OPTIONS]\n"
"\n"
"Sends DATA (or stdin, all of it, when DATA is '-' or absent) to SERVICE and\n"
"prints each partial reply and then the final reply, one per line.\n"
"\n"
"  --timeout MS     give up after MS ms without a reply (-1 = never;\n"
"                   overrides \"timeout\" in --opts; default 60000)\n"
"  --opts JSON      request options as a JSON object, e.g. '{\"retry\":2}'\n"
"\n"
"Exit status: 0 success, 1 error reply, 2 timeout or connection failure,\n"
"64 usage error or a key that cannot be used (unreadable, or a server\n"
"certificate that --ca refuses).\n");
    else
    if (command && streq (command, "serve"))
        fprintf (out,
"Usage: pigato serve SERVICE (--echo | -- CMD [ARGS...]) [--concurrency N]\n"
"\n"
"Offers SERVICE until SIGINT or SIGTERM. With --echo every request is\n"
"answered with its own data. Otherwise CMD runs once per request with the\n"
"request data on its stdin; its stdout is the reply. A non-zero exit sends\n"
"an error reply with its stderr (or \"exit status N\") as the message.\n"
"\n"
"  --echo            answer with the request data\n"
"  --concurrency N   requests handled at once (default 4 with CMD,\n"
"                    100 with --echo; -1 = unlimited with --echo)\n"
"  -v, --verbose     log one line per request to stderr\n");
    else
        fprintf (out,
"Usage: pigato COMMAND [ARGS] [OPTIONS]\n"
"\n"
"Commands:\n"
"  request SERVICE [DATA|-]         call a service, print its replies\n"
"  serve SERVICE --echo             answer requests with their data\n"
"  serve SERVICE -- CMD [ARGS...]   answer requests by running CMD\n"
"  help [COMMAND]                   show help\n");
    fprintf (out,
"\n"
"Options (anywhere on the line):\n"
"  --broker ENDPOINT     broker to use, repeatable or comma-separated\n"
"                        (env PIGATO_BROKER, default " DEFAULT_BROKER ")\n"
"  --server-key FILE|Z85 the broker's public key: Z85 text, a zcert file or\n"
"                        the broker's certificate (.crt) (env PIGATO_SERVER_KEY)\n"
"  --ca FILE             mesh CA certificate: refuse a --server-key\n"
"                        certificate that it did not sign, that expired or\n"
"                        that is for another mesh (env PIGATO_CA)\n"
"  --key FILE            own zcert secret key file, e.g. NAME.key_secret from\n"
"                        pigato-keygen new or issue (env PIGATO_KEY;\n"
"                        default: an ephemeral key pair)\n"
"  --insecure            no encryption, for a broker started with --insecure\n"
"  --heartbeat MS        heartbeat interval (default 2500)\n"
"  --framing MODE        auto (default: offer the native framing, use it\n"
"                        when the broker answers natively), native (only\n"
"                        for pigato-broker) or 0.0.46 (env PIGATO_FRAMING)\n"
"  --log-level LEVEL     error, warning, info or debug (default warning)\n"
"  -v, --verbose         same as --log-level info\n"
"  -h, --help            show help (also: pigato COMMAND --help)\n"
"  --version             show the version\n");
    if (!command)
        fprintf (out,
"\n"
"Examples:\n"
"  pigato-broker --insecure &\n"
"  pigato serve echo --echo --insecure &\n"
"  pigato request echo '\"hi\"' --insecure\n"
"  pigato serve upper --insecure -- tr a-z A-Z\n"
"  echo hello | pigato request upper --insecure\n"
"  pigato request echo '\"hi\"' --server-key broker.key --timeout 5000\n"
"  pigato request echo '\"hi\"' --server-key certs/broker.crt --ca ca/ca.crt \\\n"
"      --key certs/web.key_secret\n");
}

//  Prints "pigato: MESSAGE" and a hint; returns EX_USAGE.
static int __attribute__ ((format (printf, 1, 2)))
s_usage_error (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    fprintf (stderr, "pigato: ");
    vfprintf (stderr, format, args);
    fprintf (stderr, "\nTry 'pigato --help' for more information.\n");
    va_end (args);
    return EX_USAGE;
}

//  Parses the number of an option into *value; 0 or EX_USAGE (0 itself is
//  never accepted: every numeric option means a count or a duration).
static int
s_number (const char *option, const char *text, int64_t min, int64_t max,
          int64_t *value)
{
    char *end;
    errno = 0;
    *value = strtoll (text, &end, 10);
    if (errno || end == text || *end || *value < min || *value > max
    ||  *value == 0)
        return s_usage_error ("%s wants a number from %lld to %lld (not 0), "
                              "not '%s'", option, (long long) min,
                              (long long) max, text);
    return 0;
}

//  --------------------------------------------------------------------------
//  Parses argv into cli. Options may come before or after the command's
//  arguments (GNU getopt permutes); everything after "--" is CMD for serve
//  and DATA for request. Returns 0 to go on, S_DONE (help, version shown)
//  or an exit code to exit with.

#define S_DONE -1

//  An environment variable's value; fallback if it is unset or empty.
static const char *
s_env (const char *name, const char *fallback)
{
    const char *value = getenv (name);
    return value && *value ? value : fallback;
}

static int
s_cli_parse (cli_t *cli, int argc, char **argv)
{
    enum { OPT_BROKER = 256, OPT_SERVER_KEY, OPT_KEY, OPT_INSECURE,
           OPT_HEARTBEAT, OPT_LOG_LEVEL, OPT_VERSION, OPT_TIMEOUT, OPT_OPTS,
           OPT_ECHO, OPT_CONCURRENCY, OPT_CA, OPT_FRAMING };
    static const struct option options [] = {
        { "broker", required_argument, NULL, OPT_BROKER },
        { "server-key", required_argument, NULL, OPT_SERVER_KEY },
        { "ca", required_argument, NULL, OPT_CA },
        { "key", required_argument, NULL, OPT_KEY },
        { "insecure", no_argument, NULL, OPT_INSECURE },
        { "heartbeat", required_argument, NULL, OPT_HEARTBEAT },
        { "framing", required_argument, NULL, OPT_FRAMING },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "opts", required_argument, NULL, OPT_OPTS },
        { "echo", no_argument, NULL, OPT_ECHO },
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { NULL, 0, NULL, 0 }
    };
    //  getopt only sees what comes before "--"
    int split = 1;
    while (split < argc && strneq (argv [split], "--"))
        split++;
    int64_t number = 0;
    int option, rc = 0;
    while (rc == 0
       && (option = getopt_long (split, argv, "hv", options, NULL)) != -1) {
        switch (option) {
            case OPT_BROKER:
                if (cli->broker_count == BROKERS_MAX)
                    return s_usage_error ("at most %d --broker", BROKERS_MAX);
                cli->brokers [cli->broker_count++] = optarg;
                break;
            case OPT_SERVER_KEY: cli->server_key = optarg; break;
            case OPT_CA: cli->server_ca = optarg; break;
            case OPT_KEY: cli->key_file = optarg; break;
            case OPT_INSECURE: cli->insecure = true; break;
            case OPT_HEARTBEAT:
                rc = s_number ("--heartbeat", optarg, 1, 3600000, &number);
                cli->heartbeat_ms = (int) number;
                break;
            case OPT_FRAMING: cli->framing = optarg; break;
            case OPT_LOG_LEVEL:
                cli->log_level = pigato_log_level_parse (optarg);
                cli->log_level_set = true;
                if (cli->log_level < 0)
                    rc = s_usage_error ("--log-level wants error, warning, "
                                        "info or debug, not '%s'", optarg);
                break;
            case 'v': cli->verbose = true; break;
            case 'h': cli->help = true; break;
            case OPT_VERSION:
                printf ("pigato %s (libpigato %s)\n", PIGATO_VERSION_STRING,
                        pigato_version ());
                return S_DONE;
            case OPT_TIMEOUT:
                rc = s_number ("--timeout", optarg, -1, INT32_MAX, &number);
                cli->timeout_ms = number;
                cli->timeout_set = true;
                break;
            case OPT_OPTS: cli->opts = optarg; break;
            case OPT_ECHO: cli->echo = true; break;
            case OPT_CONCURRENCY:
                rc = s_number ("--concurrency", optarg, -1, 1000000, &number);
                cli->concurrency = (int) number;
                break;
            default:
                fprintf (stderr, "Try 'pigato --help' for more information.\n");
                return EX_USAGE;
        }
    }
    if (rc)
        return rc;
    //  Positional arguments: COMMAND SERVICE [DATA], then what follows "--"
    char **args = argv + optind;
    int arg_count = split - optind;
    char **tail = split < argc ? argv + split + 1 : argv + argc;
    int tail_count = split < argc ? argc - split - 1 : 0;
    cli->command = arg_count > 0 ? args [0] : NULL;
    if (cli->command && streq (cli->command, "help")) {
        s_usage (stdout, arg_count > 1 ? args [1] : NULL);
        return S_DONE;
    }
    if (cli->help) {
        s_usage (stdout, cli->command);
        return S_DONE;
    }
    if (!cli->command) {
        s_usage (stderr, NULL);
        return EX_USAGE;
    }
    bool request = streq (cli->command, "request");
    if (!request && strneq (cli->command, "serve"))
        return s_usage_error ("unknown command '%s' (expected request or "
                              "serve)", cli->command);
    if (arg_count < 2)
        return s_usage_error ("%s: missing SERVICE", cli->command);
    cli->service = args [1];
    if (strlen (cli->service) == 0 || strlen (cli->service) > PIGATO_SERVICE_MAX)
        return s_usage_error ("SERVICE must be 1 to %d bytes",
                              PIGATO_SERVICE_MAX);
    if (request) {
        if (arg_count + tail_count > 3)
            return s_usage_error ("request: unexpected argument '%s' (quote "
                                  "DATA as one argument)",
                                  arg_count > 3 ? args [3] : tail [tail_count - 1]);
        cli->data = arg_count == 3 ? args [2] : tail_count ? tail [0] : NULL;
        if (cli->data && streq (cli->data, "-"))
            cli->data = NULL;
        if (cli->echo || cli->concurrency)
            return s_usage_error ("--echo and --concurrency are for serve");
    }
    else {
        if (arg_count > 2)
            return s_usage_error ("serve: unexpected argument '%s' (put the "
                                  "command after --)", args [2]);
        if (cli->echo == (tail_count > 0))
            return s_usage_error ("serve: give either --echo or -- CMD "
                                  "[ARGS...]");
        if (cli->timeout_set || cli->opts)
            return s_usage_error ("--timeout and --opts are for request");
        cli->cmd_argv = tail_count ? tail : NULL;
        if (cli->concurrency == 0)
            cli->concurrency = cli->echo ? PIGATO_CONCURRENCY : CMD_CONCURRENCY;
        if (!cli->echo && cli->concurrency < 0)
            return s_usage_error ("serve -- CMD needs a --concurrency limit "
                                  "(> 0)");
    }
    //  Environment fills what the command line left out
    if (cli->broker_count == 0)
        cli->brokers [cli->broker_count++] = s_env ("PIGATO_BROKER", DEFAULT_BROKER);
    cli->server_key = cli->server_key ? cli->server_key
                                      : s_env ("PIGATO_SERVER_KEY", NULL);
    cli->key_file = cli->key_file ? cli->key_file : s_env ("PIGATO_KEY", NULL);
    if (cli->insecure && cli->server_ca)
        return s_usage_error ("--ca checks the broker's certificate: it "
                              "cannot be used with --insecure");
    cli->server_ca = cli->server_ca ? cli->server_ca : s_env ("PIGATO_CA", NULL);
    cli->framing = cli->framing ? cli->framing : s_env ("PIGATO_FRAMING", NULL);
    if (cli->framing && !streq (cli->framing, "auto")
    &&  !streq (cli->framing, "native") && !streq (cli->framing, "0.0.46"))
        return s_usage_error ("--framing wants auto, native or 0.0.46, not "
                              "'%s'", cli->framing);
    if (!cli->insecure && !cli->server_key) {
        fputs ("pigato: no server key: give --server-key FILE|Z85 or "
               "PIGATO_SERVER_KEY, or --insecure for a broker started with "
               "--insecure\n", stderr);
        return EX_USAGE;
    }
    if (!cli->log_level_set)
        cli->log_level = cli->verbose ? PIGATO_LOG_INFO : PIGATO_LOG_WARNING;
    return 0;
}

//  --------------------------------------------------------------------------
//  Calls connect (peer, endpoint) for every endpoint in cli's --broker
//  values (each may be a comma-separated list). Returns 0 or a status.

typedef int (connect_fn) (void *peer, const char *endpoint);
static int s_client_connect (void *peer, const char *endpoint)
{ return pigato_client_connect ((pigato_client_t *) peer, endpoint); }
static int s_worker_connect (void *peer, const char *endpoint)
{ return pigato_worker_connect ((pigato_worker_t *) peer, endpoint); }

static int
s_connect_all (cli_t *cli, void *peer, connect_fn *connect)
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
//  Reads a whole stream (binary-safe). Returns 0, or -1 with errno set.

static int
s_read_all (FILE *file, char **data_p, size_t *size_p)
{
    size_t size = 0, max = 65536;
    char *data = malloc (max);
    while (data) {
        size += fread (data + size, 1, max - size, file);
        if (size < max)
            break;
        char *bigger = realloc (data, max * 2);
        if (!bigger)
            free (data);
        data = bigger;
        max *= 2;
    }
    if (!data || ferror (file)) {
        free (data);
        return -1;
    }
    *data_p = data;
    *size_p = size;
    return 0;
}

//  --------------------------------------------------------------------------
//  Builds the request opts: --opts (must be a JSON object) with --timeout
//  merged in (--timeout wins). Sets *opts_p (caller frees; NULL = none)
//  and *timeout_p (the timeout in effect). Returns 0 or EX_USAGE.

static int
s_request_opts (cli_t *cli, char **opts_p, int64_t *timeout_p)
{
    *opts_p = NULL;
    *timeout_p = cli->timeout_set ? cli->timeout_ms : PIGATO_TIMEOUT_MS;
    if (!cli->opts && !cli->timeout_set)
        return 0;
    json_t *opts = json_object ();
    if (cli->opts) {
        json_decref (opts);
        json_error_t error;
        opts = json_loads (cli->opts, JSON_REJECT_DUPLICATES, &error);
        if (!opts) {
            fprintf (stderr, "pigato: --opts is not valid JSON: %s (at "
                     "character %d)\n", error.text, error.position);
            return EX_USAGE;
        }
        if (!json_is_object (opts)) {
            json_decref (opts);
            return s_usage_error ("--opts must be a JSON object, like "
                                  "'{\"retry\":2}'");
        }
    }
    if (cli->timeout_set)
        json_object_set_new (opts, "timeout", json_integer (cli->timeout_ms));
    else
    if (json_is_integer (json_object_get (opts, "timeout")))
        *timeout_p = json_integer_value (json_object_get (opts, "timeout"));
    *opts_p = json_dumps (opts, JSON_COMPACT);
    json_decref (opts);
    return *opts_p ? 0 : EX_SOFTWARE;
}

//  Writes one reply as a line: its bytes, then a newline unless the reply
//  already ends with one (a command's output usually does).
static void
s_print_line (const void *data, size_t size)
{
    fwrite (data, 1, size, stdout);
    if (size == 0 || ((const char *) data) [size - 1] != '\n')
        fputc ('\n', stdout);
}

//  Prints a partial reply on its own line as soon as it arrives.
static void
s_on_partial (pigato_client_t *client, const char *rid, int status,
              bool final, const void *data, size_t size, void *arg)
{
    (void) client, (void) rid, (void) status, (void) final, (void) arg;
    s_print_line (data, size);
    fflush (stdout);
}

//  --------------------------------------------------------------------------
//  pigato request: one blocking call; the exit code tells how it went.

static int
s_request (cli_t *cli)
{
    int exit_code = EXIT_FAILURE_NET;
    char *input = NULL, *opts = NULL, *reply = NULL;
    size_t input_size = 0, reply_size = 0;
    int64_t timeout_ms;
    pigato_client_t *client = NULL;

    int rc = s_request_opts (cli, &opts, &timeout_ms);
    if (rc) {
        exit_code = rc;
        goto cleanup;
    }
    if (cli->data) {
        input = strdup (cli->data);
        input_size = strlen (cli->data);
    }
    else {
        if (isatty (STDIN_FILENO))
            fprintf (stderr, "pigato: reading the request from stdin "
                     "(end with Ctrl-D)\n");
        if (s_read_all (stdin, &input, &input_size)) {
            fprintf (stderr, "pigato: cannot read stdin: %s\n", strerror (errno));
            goto cleanup;
        }
    }
    client = pigato_client_new ();
    if (!client || !input) {
        fprintf (stderr, "pigato: out of memory\n");
        goto cleanup;
    }
    if (cli->insecure)
        pigato_client_set_insecure (client, true);
    else {
        if (pigato_client_set_server_key (client, cli->server_key)
        ||  (cli->server_ca
             && pigato_client_set_server_ca (client, cli->server_ca))
        ||  (cli->key_file && pigato_client_set_key_file (client, cli->key_file))) {
            fprintf (stderr, "pigato: %s\n", pigato_client_error (client));
            exit_code = EX_USAGE;
            goto cleanup;
        }
    }
    if (cli->heartbeat_ms)
        pigato_client_set_heartbeat (client, cli->heartbeat_ms, PIGATO_LIVENESS);
    if (cli->framing)
        pigato_client_set_framing (client, cli->framing);
    if (cli->timeout_set)
        pigato_client_set_timeout (client, cli->timeout_ms);
    rc = s_connect_all (cli, client, s_client_connect);
    if (rc) {
        //  A key problem (e.g. a server certificate --ca refuses) will not
        //  go away by trying again: it is the caller's to fix
        fprintf (stderr, "pigato: %s\n", pigato_client_error (client));
        exit_code = rc == PIGATO_E_KEY ? EX_USAGE : EXIT_FAILURE_NET;
        goto cleanup;
    }
    rc = pigato_client_call (client, cli->service, input, input_size, opts,
                             s_on_partial, NULL, &reply, &reply_size);
    if (rc == PIGATO_OK) {
        s_print_line (reply, reply_size);
        exit_code = fflush (stdout) ? EXIT_FAILURE_NET : EXIT_SUCCESS;
    }
    else
    if (rc == PIGATO_E_REPLY) {
        fprintf (stderr, "pigato: error from %s: %s\n", cli->service,
                 reply ? reply : "");
        exit_code = EXIT_ERROR_REPLY;
    }
    else
    if (rc == PIGATO_E_TIMEOUT)
        fprintf (stderr, "pigato: request to %s timed out (no reply within "
                 "%lld ms)\n", cli->service, (long long) timeout_ms);
    else
    if (rc == PIGATO_E_INTERRUPTED) {
        fprintf (stderr, "pigato: interrupted\n");
        exit_code = EXIT_INTERRUPTED;
    }
    else {
        //  Not connected, broker errors such as E_WORKER_LOST, ...
        const char *detail = reply && *reply ? reply : pigato_client_error (client);
        fprintf (stderr, "pigato: request to %s failed: %s (%s)\n",
                 cli->service, pigato_strerror (rc), detail ? detail : "");
    }
cleanup:
    pigato_client_destroy (&client);
    free (reply);
    free (input);
    free (opts);
    return exit_code;
}

//  --------------------------------------------------------------------------
//  serve: logging and the echo handler

//  Copies text for a log line, replacing bytes a terminal could misread.
static void
s_printable (const char *text, char *out, size_t out_size)
{
    size_t index = 0;
    for (; text && text [index] && index + 1 < out_size; index++)
        out [index] = text [index] > ' ' && text [index] < 127 ? text [index] : '?';
    out [index] = 0;
}

static void
s_log_request (serve_t *self, pigato_reply_t *reply, size_t in_size,
               size_t out_size, const char *result, int64_t started)
{
    if (!self->log_requests)
        return;
    char service [64], rid [PIGATO_RID_MAX + 1], line [512];
    s_printable (pigato_reply_service (reply), service, sizeof service);
    s_printable (pigato_reply_rid (reply), rid, sizeof rid);
    snprintf (line, sizeof line, "event=request service=%s rid=%s in=%zu "
              "out=%zu result=%s ms=%lld", service, rid, in_size, out_size,
              result, (long long) (zclock_mono () - started));
    pigato_log_stderr (PIGATO_LOG_INFO, line, NULL);
}

static void
s_on_echo (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
           size_t size, void *arg)
{
    (void) worker;
    int rc = pigato_reply_end (reply, data, size);
    s_log_request ((serve_t *) arg, reply, size, size,
                   rc ? pigato_strerror (rc) : "ok", zclock_mono ());
    pigato_reply_destroy (&reply);
}

//  --------------------------------------------------------------------------
//  serve -- CMD: one child per request, its pipes in the worker's zloop

static void s_job_start (job_t *job);

static void
s_close_fd (job_t *job, int *fd_p)
{
    if (*fd_p < 0)
        return;
    zmq_pollitem_t item = { NULL, *fd_p, 0, 0 };
    zloop_poller_end (job->serve->loop, &item);
    close (*fd_p);
    *fd_p = -1;
}

static void
s_job_destroy (job_t **job_p)
{
    job_t *job = *job_p;
    if (!job)
        return;
    s_close_fd (job, &job->stdin_fd);
    s_close_fd (job, &job->stdout_fd);
    s_close_fd (job, &job->stderr_fd);
    pigato_reply_destroy (&job->reply);
    free (job->input);
    free (job->output);
    free (job);
    *job_p = NULL;
}

//  Sends the reply the reaped child earned (or, if failure is not NULL,
//  that error), frees the job and starts waiting ones if slots are free.
static void
s_job_finish (job_t *job, const char *failure)
{
    serve_t *self = job->serve;
    zlist_remove (self->running, job);
    int status = job->wait_status;
    char message [STDERR_MAX + 64];
    const char *result = "ok";
    size_t out_size = 0;
    if (failure) {
        snprintf (message, sizeof message, "%s", failure);
        result = "error";
    }
    else
    if (job->too_large) {
        snprintf (message, sizeof message, "output larger than %d bytes",
                  OUTPUT_MAX);
        result = "too_large";
    }
    else
    if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
        out_size = job->output_size;
    else {
        //  The message is stderr, trimmed; or how the child ended
        char *start = job->errors, *end = job->errors + job->errors_size;
        while (start < end && isspace ((byte) *start))
            start++;
        while (end > start && isspace ((byte) end [-1]))
            end--;
        if (end > start)
            snprintf (message, sizeof message, "%.*s", (int) (end - start), start);
        else
        if (WIFEXITED (status))
            snprintf (message, sizeof message, "exit status %d",
                      WEXITSTATUS (status));
        else
            snprintf (message, sizeof message, "killed by signal %d (%s)",
                      WTERMSIG (status), strsignal (WTERMSIG (status)));
        result = job->abandoned ? "abandoned" : "error";
    }
    if (streq (result, "ok"))
        pigato_reply_end (job->reply, job->output, job->output_size);
    else
        pigato_reply_error (job->reply, message);
    s_log_request (self, job->reply, job->input_size, out_size, result,
                   job->started);
    s_job_destroy (&job);
    while (zlist_size (self->running) < (size_t) self->concurrency
       &&  zlist_size (self->waiting))
        s_job_start ((job_t *) zlist_pop (self->waiting));
}

static int s_on_reap_timer (zloop_t *loop, int timer_id, void *arg);

//  Called when a pipe closes: once stdout and stderr are at EOF the child
//  is done talking; reap it now or retry shortly.
static void
s_job_try_finish (job_t *job)
{
    if (job->stdout_fd >= 0 || job->stderr_fd >= 0)
        return;
    //  A child that closed its output has nothing more to say; drop stdin
    //  too so that no poller of ours points at the job any longer
    s_close_fd (job, &job->stdin_fd);
    pid_t pid = waitpid (job->pid, &job->wait_status, WNOHANG);
    if (pid == 0)
        zloop_timer (job->serve->loop, REAP_RETRY_MS, 1, s_on_reap_timer, job);
    else {
        //  -1: its status is lost; never report that as success
        job->reaped = true;
        s_job_finish (job, pid < 0 ? "cannot collect the command's exit "
                                     "status" : NULL);
    }
}

static int
s_on_reap_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id;
    s_job_try_finish ((job_t *) arg);
    return 0;
}

//  Feeds the request data to the child's stdin as the pipe takes it.
static int
s_on_stdin_ready (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop, (void) item;
    job_t *job = (job_t *) arg;
    ssize_t written = write (job->stdin_fd, job->input + job->input_sent,
                             job->input_size - job->input_sent);
    if (written > 0)
        job->input_sent += written;
    if (job->input_sent == job->input_size
    ||  (written < 0 && errno != EAGAIN && errno != EINTR))
        s_close_fd (job, &job->stdin_fd);       //  done, or the child quit
    return 0;
}

//  Collects the child's stdout or stderr; EOF may finish the job.
static int
s_on_output_ready (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    job_t *job = (job_t *) arg;
    bool is_stdout = item->fd == job->stdout_fd;
    byte buffer [65536];
    ssize_t got = read (item->fd, buffer, sizeof buffer);
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (got <= 0) {
        s_close_fd (job, is_stdout ? &job->stdout_fd : &job->stderr_fd);
        s_job_try_finish (job);
        return 0;
    }
    if (!is_stdout) {
        size_t keep = STDERR_MAX - job->errors_size;
        keep = (size_t) got < keep ? (size_t) got : keep;
        memcpy (job->errors + job->errors_size, buffer, keep);
        job->errors_size += keep;
    }
    else
    if (!job->too_large) {
        if (job->output_size + got > OUTPUT_MAX) {
            job->too_large = true;
            kill (-job->pid, SIGKILL);
            return 0;
        }
        if (job->output_size + got > job->output_max) {
            size_t max = job->output_max ? job->output_max * 2 : 65536;
            while (max < job->output_size + got)
                max *= 2;
            byte *bigger = realloc (job->output, max);
            if (!bigger) {
                job->too_large = true;
                kill (-job->pid, SIGKILL);
                return 0;
            }
            job->output = bigger;
            job->output_max = max;
        }
        memcpy (job->output + job->output_size, buffer, got);
        job->output_size += got;
    }
    return 0;
}

//  Makes a pipe whose parent end (index parent_end) is nonblocking;
//  both ends close on exec (dup2 in the child clears that on 0/1/2).
static int
s_pipe (int fds [2], int parent_end)
{
    if (pipe2 (fds, O_CLOEXEC))
        return -1;
    return fcntl (fds [parent_end], F_SETFL, O_NONBLOCK);
}

static int
s_poll_fd (job_t *job, int fd, short events, zloop_fn handler)
{
    zmq_pollitem_t item = { NULL, fd, events, 0 };
    int rc = zloop_poller (job->serve->loop, &item, handler, job);
    if (rc == 0)
        zloop_poller_set_tolerant (job->serve->loop, &item);    //  HUP is normal
    return rc;
}

//  Spawns CMD for the job in its own process group, registers the pipes.
static void
s_job_start (job_t *job)
{
    serve_t *self = job->serve;
    if (!pigato_reply_active (job->reply)) {
        s_log_request (self, job->reply, job->input_size, 0, "abandoned",
                       job->started);
        s_job_destroy (&job);           //  client gave up while it waited
        return;
    }
    zlist_append (self->running, job);
    int in [2] = { -1, -1 }, out [2] = { -1, -1 }, err [2] = { -1, -1 };
    int rc = 0;
    if (s_pipe (in, 1) || s_pipe (out, 0) || s_pipe (err, 0))
        rc = errno;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init (&actions);
    posix_spawnattr_init (&attributes);
    sigset_t no_signals, default_signals;
    sigemptyset (&no_signals);
    sigemptyset (&default_signals);
    sigaddset (&default_signals, SIGPIPE);  //  we ignore it; CMD should not
    sigaddset (&default_signals, SIGINT);
    sigaddset (&default_signals, SIGTERM);
    sigaddset (&default_signals, SIGHUP);
    posix_spawnattr_setsigmask (&attributes, &no_signals);
    posix_spawnattr_setsigdefault (&attributes, &default_signals);
    posix_spawnattr_setpgroup (&attributes, 0);
    posix_spawnattr_setflags (&attributes, POSIX_SPAWN_SETPGROUP
                              | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) {
        posix_spawn_file_actions_adddup2 (&actions, in [0], STDIN_FILENO);
        posix_spawn_file_actions_adddup2 (&actions, out [1], STDOUT_FILENO);
        posix_spawn_file_actions_adddup2 (&actions, err [1], STDERR_FILENO);
        rc = posix_spawnp (&job->pid, self->cmd_argv [0], &actions,
                           &attributes, self->cmd_argv, environ);
    }
    posix_spawn_file_actions_destroy (&actions);
    posix_spawnattr_destroy (&attributes);
    int child_ends [] = { in [0], out [1], err [1] };
    for (int index = 0; index < 3; index++)
        if (child_ends [index] >= 0)
            close (child_ends [index]);
    job->stdin_fd = in [1];
    job->stdout_fd = out [0];
    job->stderr_fd = err [0];
    if (rc) {
        char message [256];
        snprintf (message, sizeof message, "cannot run %s: %s",
                  self->cmd_argv [0], strerror (rc));
        job->pid = 0;
        s_job_finish (job, message);
        return;
    }
    if (job->input_size == 0)
        s_close_fd (job, &job->stdin_fd);
    if ((job->stdin_fd >= 0
         && s_poll_fd (job, job->stdin_fd, ZMQ_POLLOUT, s_on_stdin_ready))
    ||  s_poll_fd (job, job->stdout_fd, ZMQ_POLLIN, s_on_output_ready)
    ||  s_poll_fd (job, job->stderr_fd, ZMQ_POLLIN, s_on_output_ready)) {
        //  Cannot watch the child: stop it, then report
        kill (-job->pid, SIGKILL);
        waitpid (job->pid, &job->wait_status, 0);
        job->reaped = true;
        s_job_finish (job, "worker cannot watch the command's pipes");
    }
}

//  Worker handler in CMD mode: run now if a slot is free, else queue.
static void
s_on_command_request (pigato_worker_t *worker, pigato_reply_t *reply,
                      const void *data, size_t size, void *arg)
{
    (void) worker;
    serve_t *self = (serve_t *) arg;
    job_t *job = (job_t *) calloc (1, sizeof (job_t));
    if (job)
        job->input = (byte *) malloc (size ? size : 1);
    if (!job || !job->input) {
        free (job);
        pigato_reply_error (reply, "worker out of memory");
        pigato_reply_destroy (&reply);
        return;
    }
    memcpy (job->input, data, size);
    job->input_size = size;
    job->serve = self;
    job->reply = reply;
    job->stdin_fd = job->stdout_fd = job->stderr_fd = -1;
    job->started = zclock_mono ();
    if (zlist_size (self->running) < (size_t) self->concurrency)
        s_job_start (job);
    else
        zlist_append (self->waiting, job);
}

//  Stops children whose client stopped caring (timeout, cancel, gone).
//  Only signals here: the pipes' EOF finishes the job.
static int
s_on_active_check (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id;
    serve_t *self = (serve_t *) arg;
    for (job_t *job = (job_t *) zlist_first (self->running); job;
         job = (job_t *) zlist_next (self->running))
        if (!job->abandoned && !pigato_reply_active (job->reply)) {
            job->abandoned = true;
            kill (-job->pid, SIGTERM);
        }
    return 0;
}

//  At shutdown: stop every child (TERM, then KILL after a grace period),
//  reap them, answer their requests; queued requests go back (reject).
static void
s_serve_stop_jobs (serve_t *self)
{
    job_t *job;
    for (job = (job_t *) zlist_first (self->running); job;
         job = (job_t *) zlist_next (self->running))
        if (job->pid > 0 && !job->reaped)
            kill (-job->pid, SIGTERM);
    int64_t deadline = zclock_mono () + KILL_GRACE_MS;
    while ((job = (job_t *) zlist_pop (self->running))) {
        while (job->pid > 0 && !job->reaped) {
            if (waitpid (job->pid, &job->wait_status, WNOHANG) != 0)
                job->reaped = true;
            else
            if (zclock_mono () >= deadline) {
                kill (-job->pid, SIGKILL);
                waitpid (job->pid, &job->wait_status, 0);
                job->reaped = true;
            }
            else
                zclock_sleep (REAP_RETRY_MS);
        }
        pigato_reply_error (job->reply, "worker stopped");
        s_job_destroy (&job);
    }
    while ((job = (job_t *) zlist_pop (self->waiting))) {
        pigato_reply_reject (job->reply, "worker stopped");
        s_job_destroy (&job);
    }
}

//  True if CMD names an executable (PATH search like posix_spawnp).
static bool
s_command_exists (const char *command)
{
    if (strchr (command, '/'))
        return access (command, X_OK) == 0;
    const char *path = getenv ("PATH");
    char candidate [4096];
    while (path && *path) {
        size_t length = strcspn (path, ":");
        snprintf (candidate, sizeof candidate, "%.*s/%s", (int) length, path,
                  command);
        struct stat info;
        if (stat (candidate, &info) == 0 && S_ISREG (info.st_mode)
        &&  access (candidate, X_OK) == 0)
            return true;
        path += length + (path [length] == ':');
    }
    return false;
}

//  --------------------------------------------------------------------------
//  pigato serve: a worker on a zloop until SIGINT/SIGTERM.

static int
s_serve (cli_t *cli)
{
    int exit_code = EXIT_FAILURE_NET;
    serve_t self = { 0 };
    self.cmd_argv = cli->cmd_argv;
    self.concurrency = cli->concurrency;
    self.log_requests = cli->log_level >= PIGATO_LOG_INFO;
    if (self.cmd_argv && !s_command_exists (self.cmd_argv [0])) {
        fprintf (stderr, "pigato: serve: command not found or not "
                 "executable: %s\n", self.cmd_argv [0]);
        return EX_USAGE;
    }
    //  czmq's handler sets zsys_interrupted on SIGINT/SIGTERM, which ends
    //  the loop; a child that closes its stdin early must not kill us
    zsys_init ();
    signal (SIGPIPE, SIG_IGN);
    self.running = zlist_new ();
    self.waiting = zlist_new ();
    self.loop = zloop_new ();
    self.worker = pigato_worker_new (cli->service,
                                     cli->echo ? s_on_echo : s_on_command_request,
                                     &self);
    if (!self.running || !self.waiting || !self.loop || !self.worker) {
        fprintf (stderr, "pigato: cannot create the worker (bad service name "
                 "or out of memory)\n");
        goto cleanup;
    }
    if (cli->insecure)
        pigato_worker_set_insecure (self.worker, true);
    else {
        if (pigato_worker_set_server_key (self.worker, cli->server_key)
        ||  (cli->server_ca
             && pigato_worker_set_server_ca (self.worker, cli->server_ca))
        ||  (cli->key_file
             && pigato_worker_set_key_file (self.worker, cli->key_file))) {
            fprintf (stderr, "pigato: %s\n", pigato_worker_error (self.worker));
            exit_code = EX_USAGE;
            goto cleanup;
        }
    }
    if (cli->heartbeat_ms)
        pigato_worker_set_heartbeat (self.worker, cli->heartbeat_ms,
                                     PIGATO_LIVENESS);
    if (cli->framing)
        pigato_worker_set_framing (self.worker, cli->framing);
    pigato_worker_set_concurrency (self.worker, cli->concurrency);
    int rc = s_connect_all (cli, self.worker, s_worker_connect);
    if (rc) {
        fprintf (stderr, "pigato: %s\n", pigato_worker_error (self.worker));
        exit_code = rc == PIGATO_E_KEY ? EX_USAGE : EXIT_FAILURE_NET;
        goto cleanup;
    }
    if (pigato_worker_attach (self.worker, self.loop)) {
        fprintf (stderr, "pigato: %s\n", pigato_worker_error (self.worker));
        goto cleanup;
    }
    if (self.cmd_argv)
        zloop_timer (self.loop, ACTIVE_CHECK_MS, 0, s_on_active_check, &self);
    zloop_start (self.loop);
    s_serve_stop_jobs (&self);
    exit_code = EXIT_SUCCESS;
cleanup:
    pigato_worker_destroy (&self.worker);       //  sends DISCONNECT
    zloop_destroy (&self.loop);
    zlist_destroy (&self.running);
    zlist_destroy (&self.waiting);
    return exit_code;
}

//  Makes sure fds 0-2 are open, so pipes never land on them.
static void
s_open_standard_fds (void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl (fd, F_GETFD) == -1 && open ("/dev/null", O_RDWR) != fd)
            exit (EX_OSERR);
}

int
main (int argc, char *argv [])
{
    s_open_standard_fds ();
    cli_t cli = { 0 };
    int exit_code = s_cli_parse (&cli, argc, argv);
    if (exit_code)
        return exit_code == S_DONE ? EXIT_SUCCESS : exit_code;
    pigato_log_set (cli.log_level, pigato_log_stderr, NULL);
    if (streq (cli.command, "request"))
        return s_request (&cli);
    return s_serve (&cli);
}
