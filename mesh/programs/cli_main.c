/*  =========================================================================
    cli_main.c - `pigato`, the mesh from a shell (like `nats req/reply`):
    parsing and `pigato request`; `pigato serve` is in cli_serve.c,
    `pigato stats` and `pigato check` in cli_stats.c, what they share in
    cli.c.

        pigato request SERVICE [DATA|-] [--timeout MS] [--opts JSON] [--raw]
        pigato serve SERVICE (--echo | -- CMD ARGS...) [--concurrency N]
        pigato stats [SERVICE] [--json]
        pigato check [--service NAME [--min-workers N]]
        pigato submit SERVICE [DATA|-], fetch ID [--wait], close ID
          (durable requests: cli_titanic.c)

    Built only on the public API (pigato.h) plus czmq's zloop, which the
    worker attaches to so that command children's pipes share its loop.
    Exit codes: 0 ok, 1 error reply, 2 timeout or connection failure,
    64 usage error or a key that cannot be used (unreadable, or a server
    certificate that --ca refuses), 130 interrupted.
    =========================================================================
*/
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>
#include "pigato.h"
#include "cli.h"


//  --------------------------------------------------------------------------
//  Help texts

static void
s_usage (FILE *out, const char *command)
{
    if (command && streq (command, "request"))
        fprintf (
            out,
            "Usage: pigato request SERVICE [DATA|-] [--timeout MS] [--opts JSON] [--raw]\n"
            "                      [OPTIONS]\n"
            "\n"
            "Sends DATA (or stdin, all of it, when DATA is '-' or absent) to SERVICE and\n"
            "prints each partial reply and then the final reply, one per line on a\n"
            "terminal. Into a file or a pipe the final reply is written byte for byte\n"
            "(partial replies still end with a newline).\n"
            "\n"
            "  --timeout MS     give up after MS ms without a reply (-1 = never;\n"
            "                   overrides \"timeout\" in --opts; default 60000)\n"
            "  --opts JSON      request options as a JSON object, e.g. '{\"retry\":2}'\n"
            "  --raw            write every reply byte for byte, adding no newline\n"
            "                   (also on a terminal)\n"
            "\n"
            "Exit status: 0 success, 1 error reply, 2 timeout or connection failure,\n"
            "64 usage error or a key that cannot be used (unreadable, or a server\n"
            "certificate that --ca refuses).\n");
    else if (command && streq (command, "serve"))
        fprintf (
            out,
            "Usage: pigato serve SERVICE (--echo | -- CMD [ARGS...]) [--concurrency N]\n"
            "                    [--drain-timeout MS]\n"
            "\n"
            "Offers SERVICE until SIGINT or SIGTERM. With --echo every request is\n"
            "answered with its own data. Otherwise CMD runs once per request with the\n"
            "request data on its stdin; its stdout is the reply. A non-zero exit sends\n"
            "an error reply with its stderr (or \"exit status N\") as the message.\n"
            "SIGTERM drains: no new requests (those waiting for a slot go back to\n"
            "the broker for another worker), the running ones finish, then exit 0;\n"
            "SIGINT, or a second SIGTERM, stops at once.\n"
            "\n"
            "  --echo            answer with the request data\n"
            "  --concurrency N   requests handled at once (default 4 with CMD,\n"
            "                    100 with --echo; -1 = unlimited with --echo)\n"
            "  --drain-timeout MS  on SIGTERM, how long running requests may take\n"
            "                    before serve stops anyway (default 30000)\n"
            "  -v, --verbose     log one line per request to stderr\n");
    else if (command && streq (command, "stats"))
        fprintf (
            out,
            "Usage: pigato stats [SERVICE] [--json] [OPTIONS]\n"
            "\n"
            "Asks the broker's $stats service and prints a table: per service its\n"
            "workers, their summed concurrency, requests queued and in flight,\n"
            "requests by outcome and the latency (median and 99th percentile, to\n"
            "the upper bound of their histogram bucket); then this identity's\n"
            "counts and, for an identity that may call $stats.broker, the\n"
            "broker's. Only services this identity may call are shown.\n"
            "\n"
            "  --json            print the answer as it came (one JSON object)\n"
            "  --timeout MS      give up after MS ms (default 60000)\n"
            "\n"
            "Exit status: 0 success, 1 error reply (E_ACCESS_DENIED: the identity\n"
            "may not call $stats), 2 timeout or connection failure.\n");
    else if (command && streq (command, "check"))
        fprintf (
            out,
            "Usage: pigato check [--service NAME [--min-workers N]] [OPTIONS]\n"
            "\n"
            "A monitoring check (Nagios plugin conventions): asks the broker's\n"
            "$stats and prints one line, OK, WARNING, CRITICAL or UNKNOWN, then\n"
            "performance data after '|'.\n"
            "\n"
            "  --service NAME    the service must have workers\n"
            "  --min-workers N   fewer than N workers is a warning (default 1)\n"
            "  --timeout MS      no answer within MS ms is critical (default 5000)\n"
            "\n"
            "Exit status: 0 OK (the broker answered; the service has enough\n"
            "workers), 1 WARNING (fewer than --min-workers), 2 CRITICAL (broker\n"
            "unreachable, handshake refused, no answer in time, the service has\n"
            "no worker or is not visible to this identity), 3 UNKNOWN (the\n"
            "identity may not call $stats, or the answer was refused), 64 usage.\n");
    else if (command && pigato__cli_titanic_command (command))
        pigato__cli_titanic_usage (out, command);
    else
        fprintf (
            out,
            "Usage: pigato COMMAND [ARGS] [OPTIONS]\n"
            "\n"
            "Commands:\n"
            "  request SERVICE [DATA|-]         call a service, print its replies\n"
            "  serve SERVICE --echo             answer requests with their data\n"
            "  serve SERVICE -- CMD [ARGS...]   answer requests by running CMD\n"
            "  stats [SERVICE] [--json]         the broker's figures per service\n"
            "  check [--service NAME]           a monitoring check (exit 0/1/2/3)\n"
            "  submit SERVICE [DATA|-]          store a durable request, print its id\n"
            "  fetch ID [--wait]                print a durable request's reply\n"
            "  close ID                         delete a durable request\n"
            "  help [COMMAND]                   show help\n");
    fprintf (
        out,
        "\n"
        "Options (anywhere on the line):\n"
        "  --broker ENDPOINT     broker to use, repeatable or comma-separated\n"
        "                        (env PIGATO_BROKER, default " DEFAULT_BROKER
        ")\n"
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
        "  --log-format FORMAT   text (key=value, the default) or json (one\n"
        "                        object per line)\n"
        "  -v, --verbose         same as --log-level info\n"
        "  -h, --help            show help (also: pigato COMMAND --help)\n"
        "  --version             show the version\n");
    if (!command)
        fprintf (
            out,
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
        || *value == 0)
        return s_usage_error ("%s wants a number from %lld to %lld (not 0), "
                              "not '%s'",
                              option, (long long) min, (long long) max, text);
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
    enum {
        OPT_BROKER = 256,
        OPT_SERVER_KEY,
        OPT_KEY,
        OPT_INSECURE,
        OPT_HEARTBEAT,
        OPT_LOG_LEVEL,
        OPT_VERSION,
        OPT_TIMEOUT,
        OPT_OPTS,
        OPT_ECHO,
        OPT_CONCURRENCY,
        OPT_CA,
        OPT_FRAMING,
        OPT_RAW,
        OPT_JSON,
        OPT_SERVICE,
        OPT_MIN_WORKERS,
        OPT_LOG_FORMAT,
        OPT_WAIT,
        OPT_IDEMPOTENCY_KEY,
        OPT_DRAIN_TIMEOUT
    };
    static const struct option options [] = {
        { "broker", required_argument, NULL, OPT_BROKER },
        { "server-key", required_argument, NULL, OPT_SERVER_KEY },
        { "ca", required_argument, NULL, OPT_CA },
        { "key", required_argument, NULL, OPT_KEY },
        { "insecure", no_argument, NULL, OPT_INSECURE },
        { "heartbeat", required_argument, NULL, OPT_HEARTBEAT },
        { "framing", required_argument, NULL, OPT_FRAMING },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "opts", required_argument, NULL, OPT_OPTS },
        { "raw", no_argument, NULL, OPT_RAW },
        { "echo", no_argument, NULL, OPT_ECHO },
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { "json", no_argument, NULL, OPT_JSON },
        { "service", required_argument, NULL, OPT_SERVICE },
        { "min-workers", required_argument, NULL, OPT_MIN_WORKERS },
        { "wait", no_argument, NULL, OPT_WAIT },
        { "idempotency-key", required_argument, NULL, OPT_IDEMPOTENCY_KEY },
        { "drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT },
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
                                        "info or debug, not '%s'",
                                        optarg);
                break;
            case OPT_LOG_FORMAT:
                cli->log_format = pigato_log_format_parse (optarg);
                if (cli->log_format < 0)
                    rc = s_usage_error ("--log-format wants text or json, not "
                                        "'%s'",
                                        optarg);
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
            case OPT_RAW: cli->raw = true; break;
            case OPT_WAIT: cli->wait = true; break;
            case OPT_IDEMPOTENCY_KEY: cli->idempotency_key = optarg; break;
            case OPT_ECHO: cli->echo = true; break;
            case OPT_CONCURRENCY:
                rc = s_number ("--concurrency", optarg, -1, 1000000, &number);
                cli->concurrency = (int) number;
                break;
            case OPT_JSON: cli->json = true; break;
            case OPT_SERVICE: cli->check_service = optarg; break;
            case OPT_MIN_WORKERS:
                rc = s_number ("--min-workers", optarg, 1, 1000000, &number);
                cli->min_workers = (int) number;
                break;
            case OPT_DRAIN_TIMEOUT:
                rc = s_number ("--drain-timeout", optarg, 0, INT32_MAX,
                               &number);
                cli->drain_timeout_ms = (int) number;
                cli->drain_timeout_set = true;
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
    bool stats = streq (cli->command, "stats");
    bool check = streq (cli->command, "check");
    //  submit takes what request takes; fetch and close an ID
    bool submit = streq (cli->command, "submit");
    bool request = submit || streq (cli->command, "request");
    bool by_id = !submit && pigato__cli_titanic_command (cli->command);
    if (!request && !by_id && !stats && !check
        && strneq (cli->command, "serve"))
        return s_usage_error ("unknown command '%s' (expected request, "
                              "serve, stats, check, submit, fetch or close)",
                              cli->command);
    if ((cli->json && !stats)
        || ((cli->check_service || cli->min_workers) && !check))
        return s_usage_error ("--json is for stats, --service and "
                              "--min-workers for check");
    if (cli->wait && !streq (cli->command, "fetch"))
        return s_usage_error ("--wait is for fetch");
    if (cli->idempotency_key && !submit)
        return s_usage_error ("--idempotency-key is for submit");
    if (stats || check) {
        if (arg_count > (stats ? 2 : 1) || tail_count)
            return s_usage_error (
                "%s: unexpected argument '%s'%s", cli->command,
                tail_count ? tail [0] : args [stats ? 2 : 1],
                check ? " (name a service with --service)" : "");
        if (cli->echo || cli->concurrency || cli->opts || cli->raw)
            return s_usage_error ("--echo, --concurrency, --opts and --raw "
                                  "are for request and serve");
        if (check && cli->min_workers && !cli->check_service)
            return s_usage_error ("check: --min-workers needs --service");
        cli->service = stats && arg_count == 2 ? args [1] : cli->check_service;
        if (cli->service
            && (strlen (cli->service) == 0
                || strlen (cli->service) > PIGATO_SERVICE_MAX))
            return s_usage_error ("SERVICE must be 1 to %d bytes",
                                  PIGATO_SERVICE_MAX);
        if (check && !cli->min_workers)
            cli->min_workers = 1;
    }
    else if (arg_count < 2)
        return s_usage_error ("%s: missing %s", cli->command,
                              by_id ? "ID" : "SERVICE");
    else {
        if (by_id) {
            if (arg_count + tail_count > 2)
                return s_usage_error ("%s: unexpected argument '%s'",
                                      cli->command,
                                      arg_count > 2 ? args [2] : tail [0]);
            if (cli->echo || cli->concurrency || cli->opts)
                return s_usage_error ("--echo and --concurrency are for "
                                      "serve, --opts for request and submit");
            cli->id = args [1];
        }
        cli->service = args [1];
        if (strlen (cli->service) == 0
            || strlen (cli->service) > PIGATO_SERVICE_MAX)
            return s_usage_error ("SERVICE must be 1 to %d bytes",
                                  PIGATO_SERVICE_MAX);
    }
    if (by_id)
        ;  //  checked above
    else if (request) {
        if (arg_count + tail_count > 3)
            return s_usage_error ("request: unexpected argument '%s' (quote "
                                  "DATA as one argument)",
                                  arg_count > 3 ? args [3]
                                                : tail [tail_count - 1]);
        cli->data = arg_count == 3 ? args [2] : tail_count ? tail [0] : NULL;
        if (cli->data && streq (cli->data, "-"))
            cli->data = NULL;
        if (cli->echo || cli->concurrency || cli->drain_timeout_set)
            return s_usage_error ("--echo, --concurrency and --drain-timeout "
                                  "are for serve");
    }
    else if (!stats && !check) {
        if (arg_count > 2)
            return s_usage_error ("serve: unexpected argument '%s' (put the "
                                  "command after --)",
                                  args [2]);
        if (cli->echo == (tail_count > 0))
            return s_usage_error ("serve: give either --echo or -- CMD "
                                  "[ARGS...]");
        if (cli->timeout_set || cli->opts || cli->raw)
            return s_usage_error ("--timeout, --opts and --raw are for "
                                  "request");
        cli->cmd_argv = tail_count ? tail : NULL;
        if (cli->concurrency == 0)
            cli->concurrency = cli->echo ? PIGATO_CONCURRENCY : CMD_CONCURRENCY;
        if (!cli->echo && cli->concurrency < 0)
            return s_usage_error ("serve -- CMD needs a --concurrency limit "
                                  "(> 0)");
    }
    //  Environment fills what the command line left out
    if (cli->broker_count == 0)
        cli->brokers [cli->broker_count++] = s_env ("PIGATO_BROKER",
                                                    DEFAULT_BROKER);
    //  The common slip, caught before stdin is read: the library refuses
    //  the rest (a port out of range) at connect, also as a usage error
    for (size_t index = 0; index < cli->broker_count; index++) {
        char endpoints [4096];
        snprintf (endpoints, sizeof endpoints, "%s", cli->brokers [index]);
        char *state = NULL;
        for (char *endpoint = strtok_r (endpoints, ",", &state); endpoint;
             endpoint = strtok_r (NULL, ",", &state))
            if (!strstr (endpoint, "://"))
                return s_usage_error ("broker endpoint '%s' has no transport "
                                      "(did you mean tcp://%s?)",
                                      endpoint, endpoint);
    }
    cli->server_key = cli->server_key ? cli->server_key
                                      : s_env ("PIGATO_SERVER_KEY", NULL);
    cli->key_file = cli->key_file ? cli->key_file : s_env ("PIGATO_KEY", NULL);
    if (cli->insecure && cli->server_ca)
        return s_usage_error ("--ca checks the broker's certificate: it "
                              "cannot be used with --insecure");
    cli->server_ca = cli->server_ca ? cli->server_ca
                                    : s_env ("PIGATO_CA", NULL);
    cli->framing = cli->framing ? cli->framing : s_env ("PIGATO_FRAMING", NULL);
    if (cli->framing && !streq (cli->framing, "auto")
        && !streq (cli->framing, "native") && !streq (cli->framing, "0.0.46"))
        return s_usage_error ("--framing wants auto, native or 0.0.46, not "
                              "'%s'",
                              cli->framing);
    if (!cli->insecure && !cli->server_key) {
        fputs ("pigato: no server key: give --server-key FILE|Z85 or "
               "PIGATO_SERVER_KEY, or --insecure for a broker started with "
               "--insecure\n",
               stderr);
        return EX_USAGE;
    }
    if (!cli->log_level_set)
        cli->log_level = cli->verbose ? PIGATO_LOG_INFO : PIGATO_LOG_WARNING;
    return 0;
}

//  --------------------------------------------------------------------------
//  pigato__cli_connect_all's connect for a client.

static int
s_client_connect (void *peer, const char *endpoint)
{
    return pigato_client_connect ((pigato_client_t *) peer, endpoint);
}

//  --------------------------------------------------------------------------
//  Reads a whole stream (binary-safe), but no more than limit + 1 bytes:
//  that is enough to know it is too large, and a stream without end does
//  not take all our memory. Returns 0, or -1 with errno set.

static int
s_read_all (FILE *file, size_t limit, char **data_p, size_t *size_p)
{
    size_t size = 0, max = 65536;
    char *data = malloc (max);
    while (data) {
        size += fread (data + size, 1, max - size, file);
        if (size < max || size > limit)
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
            fprintf (stderr,
                     "pigato: --opts is not valid JSON: %s (at "
                     "character %d)\n",
                     error.text, error.position);
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
    else if (json_is_integer (json_object_get (opts, "timeout")))
        *timeout_p = json_integer_value (json_object_get (opts, "timeout"));
    *opts_p = json_dumps (opts, JSON_COMPACT);
    json_decref (opts);
    return *opts_p ? 0 : EX_SOFTWARE;
}

//  How replies are written: on a terminal each on its own line; into a
//  file or a pipe the final reply byte for byte (`pigato request cat <
//  in.bin > out.bin` copies the file), partial replies still ended by a
//  newline so that they stay apart; with --raw every reply byte for byte.
typedef enum {
    OUTPUT_LINES,  //  a newline after every reply (a terminal)
    OUTPUT_EXACT,  //  a newline after partial replies only (not a terminal)
    OUTPUT_RAW     //  no newline at all (--raw)
} output_t;

//  Writes one reply: its bytes, then a newline unless the mode says not to
//  or the reply already ends with one (a command's output usually does).
static void
s_print_reply (output_t output, bool final, const void *data, size_t size)
{
    fwrite (data, 1, size, stdout);
    bool newline = output == OUTPUT_LINES || (output == OUTPUT_EXACT && !final);
    if (newline && (size == 0 || ((const char *) data) [size - 1] != '\n'))
        fputc ('\n', stdout);
}

//  Writes an error reply's text to stderr whole: it is bytes (it may
//  start with a NUL), and it comes from a worker, so control bytes other
//  than tab and newline are shown as \xNN rather than sent to a terminal.
static void
s_print_error (const char *text, size_t size)
{
    for (size_t index = 0; text && index < size; index++) {
        unsigned char byte = (unsigned char) text [index];
        if ((byte < ' ' && byte != '\t' && byte != '\n') || byte == 0x7f)
            fprintf (stderr, "\\x%02x", byte);
        else
            fputc (byte, stderr);
    }
}

//  Prints a partial reply as soon as it arrives.
static void
s_on_partial (pigato_client_t *client, const char *rid, int status, bool final,
              const void *data, size_t size, void *arg)
{
    (void) client, (void) rid, (void) status, (void) final;
    s_print_reply (*(output_t *) arg, false, data, size);
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
        if (s_read_all (stdin, PIGATO_BODY_MAX, &input, &input_size)) {
            fprintf (stderr, "pigato: cannot read stdin: %s\n",
                     strerror (errno));
            goto cleanup;
        }
    }
    //  The broker would refuse it (and drop the connection): say so now
    if (input_size > PIGATO_BODY_MAX) {
        fprintf (stderr,
                 "pigato: E_TOO_LARGE the request data is larger than the "
                 "broker's limit of %d bytes; nothing was sent\n",
                 PIGATO_BODY_MAX);
        exit_code = EX_USAGE;
        goto cleanup;
    }
    client = pigato_client_new ();
    if (!client || !input) {
        fprintf (stderr, "pigato: out of memory\n");
        goto cleanup;
    }
    pigato__cli_catch_signals (NULL);  //  Ctrl-C: exit 130
    if (cli->insecure)
        pigato_client_set_insecure (client, true);
    else {
        if (pigato_client_set_server_key (client, cli->server_key)
            || (cli->server_ca
                && pigato_client_set_server_ca (client, cli->server_ca))
            || (cli->key_file
                && pigato_client_set_key_file (client, cli->key_file))) {
            fprintf (stderr, "pigato: %s\n", pigato_client_error (client));
            exit_code = EX_USAGE;
            goto cleanup;
        }
    }
    if (cli->heartbeat_ms)
        pigato_client_set_heartbeat (client, cli->heartbeat_ms,
                                     PIGATO_LIVENESS);
    if (cli->framing)
        pigato_client_set_framing (client, cli->framing);
    if (cli->timeout_set)
        pigato_client_set_timeout (client, cli->timeout_ms);
    rc = pigato__cli_connect_all (cli, client, s_client_connect);
    if (rc) {
        //  A key problem (e.g. a server certificate --ca refuses) will not
        //  go away by trying again: it is the caller's to fix
        fprintf (stderr, "pigato: %s\n", pigato_client_error (client));
        exit_code = rc == PIGATO_E_KEY || rc == PIGATO_E_INVALID
                      ? EX_USAGE
                      : EXIT_FAILURE_NET;
        goto cleanup;
    }
    output_t output = cli->raw               ? OUTPUT_RAW
                    : isatty (STDOUT_FILENO) ? OUTPUT_LINES
                                             : OUTPUT_EXACT;
    rc = pigato_client_call (client, cli->service, input, input_size, opts,
                             s_on_partial, &output, &reply, &reply_size);
    if (rc == PIGATO_OK) {
        s_print_reply (output, true, reply, reply_size);
        exit_code = fflush (stdout) ? EXIT_FAILURE_NET : EXIT_SUCCESS;
    }
    else if (rc == PIGATO_E_REPLY) {
        fprintf (stderr, "pigato: error from %s: ", cli->service);
        s_print_error (reply, reply_size);
        fputc ('\n', stderr);
        exit_code = EXIT_ERROR_REPLY;
    }
    else if (rc == PIGATO_E_TIMEOUT)
        fprintf (stderr,
                 "pigato: request to %s timed out (no reply within "
                 "%lld ms)\n",
                 cli->service, (long long) timeout_ms);
    else if (rc == PIGATO_E_INTERRUPTED) {
        fprintf (stderr, "pigato: interrupted\n");
        exit_code = EXIT_INTERRUPTED;
    }
    else if (pigato__cli_failure_exit (rc, 0)) {
        //  No broker would take the request: the reason and a hint
        fprintf (stderr, "pigato: request to %s failed: %s\n", cli->service,
                 reply && *reply ? reply : pigato_client_error (client));
        exit_code = pigato__cli_failure_exit (rc, EXIT_FAILURE_NET);
    }
    else {
        //  Not connected, broker errors such as E_WORKER_LOST, ...
        const char *detail = reply && *reply ? reply
                                             : pigato_client_error (client);
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
    pigato_log_set_format (cli.log_format);
    if (streq (cli.command, "request"))
        return s_request (&cli);
    if (streq (cli.command, "stats"))
        return pigato__cli_stats (&cli);
    if (streq (cli.command, "check"))
        return pigato__cli_check (&cli);
    if (pigato__cli_titanic_command (cli.command))
        return pigato__cli_titanic (&cli);
    return pigato__cli_serve (&cli);
}
