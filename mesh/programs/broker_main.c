/*  =========================================================================
    broker_main.c - pigato-broker, the daemon.
    =========================================================================
*/
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <czmq.h>
#include "pigato.h"
#include "config.h"
#include "notify.h"

#define EXIT_USAGE 64

static const char *s_usage =
    "Usage: pigato-broker [OPTIONS]\n"
    "\n"
    "Routes requests from pigato clients to workers, over CURVE by default.\n"
    "\n"
    "Security (one of these is required):\n"
    "  --acl FILE           CURVE; only keys listed in FILE get in, and they may\n"
    "                       do only what FILE's rules allow (production mode)\n"
    "  --allow-any          CURVE encryption, any client key, everything allowed\n"
    "  --insecure           no encryption at all (NULL mechanism; logged loudly);\n"
    "                       with --acl, the rules apply to the identity anonymous\n"
    "  --key FILE           the broker's CURVE secret key file (zcert format,\n"
    "                       mode 0600), or its certificate NAME.crt with\n"
    "                       NAME.key_secret beside it; required unless\n"
    "                       --insecure\n"
    "  --cert-warn-days N   log event=certificate_expiring when the broker's\n"
    "                       certificate, a trusted CA or an identity\n"
    "                       certificate ends within N days (default 14);\n"
    "                       checked at start, on SIGHUP and once a day\n"
    "  --check-acl FILE     validate an ACL file, print what is wrong, and exit\n"
    "\n"
    "Configuration:\n"
    "  --config FILE        read options from FILE: the long options' names,\n"
    "                       one 'name value' per line, # comments; options\n"
    "                       on the command line override the file's (--bind\n"
    "                       given here replaces the file's binds)\n"
    "  --check-config       check the options (FILE's and the command line's),\n"
    "                       load the ACL and the key, print what is wrong as\n"
    "                       FILE:LINE: message, and exit 0 (OK) or 1; binds\n"
    "                       nothing\n"
    "\n"
    "Options:\n"
    "  --bind ENDPOINT      endpoint to bind, repeatable\n"
    "                       (default tcp://127.0.0.1:5555)\n"
    "  --heartbeat MS       heartbeat interval (default 2500)\n"
    "  --liveness N         heartbeats a worker may miss (default 3)\n"
    "  --dmode load|rand    dispatch: least loaded worker, or random (load)\n"
    "  --cache-max-bytes N  reply cache budget (default 67108864; 0 = off)\n"
    "  --busy-poll US       after work, poll without sleeping for US microseconds\n"
    "                       (default 0): lower latency, more CPU\n"
    "  --io-threads N       libzmq I/O threads (default 1); CURVE encryption\n"
    "                       runs there, so a second one helps with many peers\n"
    "  --max-connections N  connections open at once; more are closed at once\n"
    "                       (default: the file limit less a reserve; the soft\n"
    "                       limit is raised to the hard one at start)\n"
    "  --handshake-timeout MS  close a connection whose handshake is not done\n"
    "                       within MS (default 5000; 0 = never)\n"
    "  --max-memory SIZE    ceiling on the broker's resident memory: over it,\n"
    "                       new requests get E_OVERLOADED and the connections\n"
    "                       holding most unread or unsent bytes are cut\n"
    "                       (default: half of physical memory)\n"
    "  --max-inbound SIZE   per connection, bytes received that the broker has\n"
    "                       not read yet; over it the connection is cut\n"
    "                       (default 64M; at least 34M, the largest message)\n"
    "  --max-outbound SIZE  per connection, bytes sent that the peer has not\n"
    "                       acknowledged yet; over it the connection is cut as\n"
    "                       a slow consumer (default 64M; at least 34M)\n"
    "                       SIZE: bytes, or with a suffix K, M or G (1024s)\n"
    "  --metrics-listen HOST:PORT  serve Prometheus metrics over HTTP at\n"
    "                       http://HOST:PORT/metrics (off by default; e.g.\n"
    "                       127.0.0.1:9464; the port it got is in event=ready)\n"
    "  --store DIR          durable requests (ZeroMQ RFC 9, Titanic): answer\n"
    "                       titanic.request, titanic.reply and titanic.close,\n"
    "                       keeping requests and replies in DIR/titanic.db\n"
    "                       (SQLite; DIR made 0700, the file 0600; off unless\n"
    "                       given); what it holds is recovered at start\n"
    "  --store-max-bytes SIZE  cap on the store file; past it new durable\n"
    "                       requests are refused (500) as on a full disk\n"
    "                       (default: no cap)\n"
    "  --store-sync commit|MS  when a durable request is acknowledged:\n"
    "                       commit (the default) once its commit is fsync'd,\n"
    "                       so neither a crash nor a power cut loses it; MS\n"
    "                       once its commit is written to the operating\n"
    "                       system, the store fsync'd every MS at most: a\n"
    "                       broker crash loses nothing acknowledged, a power\n"
    "                       cut may lose the last MS (JetStream's\n"
    "                       sync_interval); faster on a disk slow to flush\n"
    "  --drain-timeout MS   on SIGTERM, how long requests in flight may take to\n"
    "                       finish before they are failed and the broker exits\n"
    "                       (default 30000; 0 = fail them at once)\n"
    "  --pid-file PATH      write the broker's pid to PATH once it is bound\n"
    "                       (removed at exit); refuse to start when PATH holds\n"
    "                       the pid of a running pigato-broker\n"
    "  --log-level LEVEL    error, warning, info or debug (default info)\n"
    "  --log-format FORMAT  text (key=value, the default) or json (one object\n"
    "                       per line)\n"
    "  -h, --help           this text\n"
    "  -V, --version        print the version\n"
    "\n"
    "Example:\n"
    "  pigato-broker --key broker.key_secret --acl mesh.acl --bind tcp://*:5555 \\\n"
    "      --pid-file broker.pid\n"
    "  kill -HUP $(cat broker.pid)    # reload the ACL of this broker only\n"
    "\n"
    "Logs go to stderr, one key=value line per event. SIGHUP re-reads the ACL\n"
    "(a bad file keeps the old policy). SIGTERM drains: no new requests (clients\n"
    "are told and go to other brokers), those in flight finish (up to\n"
    "--drain-timeout), then the broker exits 0; a second SIGTERM stops it at\n"
    "once. SIGUSR2 drains and stays up refusing requests (lame duck) until\n"
    "SIGTERM. SIGINT stops at once.\n"
    "Under systemd (Type=notify) it reports READY=1 once bound, RELOADING=1\n"
    "and READY=1 around a reload, STOPPING=1 when it drains or stops.\n";

static pigato_broker_t *s_broker;  //  for the SIGHUP handler

//  Where the option being read came from, for its error messages:
//  "pigato-broker: " (the command line) or "FILE:LINE: " (--config)
static char s_origin [4200] = "pigato-broker: ";
static bool s_checking;  //  --check-config: report every problem, go on
static int s_problems;   //  problems --check-config found

//  A bad option or value: says so (prefixed with where it came from) and
//  exits with a usage error; with --check-config, counts it and goes on.
static void __attribute__ ((format (printf, 1, 2)))
s_bad (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    fputs (s_origin, stderr);
    vfprintf (stderr, format, args);
    fputc ('\n', stderr);
    va_end (args);
    s_problems++;
    if (!s_checking)
        exit (EXIT_USAGE);
}

//  The state hook (pigato.h): systemd hears of reloads and of the stop.
static void
s_on_state (pigato_broker_t *broker, int state, void *arg)
{
    (void) broker;
    if (state == PIGATO_BROKER_RELOADING)
        pigato__notify_reloading ();
    else if (state == PIGATO_BROKER_RELOADED)
        pigato__notify_ready ((const char *) arg);
    else if (state == PIGATO_BROKER_STOPPING)
        pigato__notify_stopping ();
}

static void
s_on_sighup (int signal_number)
{
    (void) signal_number;
    if (s_broker)
        pigato_broker_request_reload (s_broker);
}

//  SIGINT stops the broker at once, and so does a second SIGTERM; the
//  first SIGTERM drains it (then it stops), SIGUSR2 makes it a lame duck
//  (drained, up, refusing). libpigato installs no handler of its own
//  (pigato.h), so the daemon does. zsys_interrupted also ends the loop.
static void
s_on_stop_signal (int signal_number)
{
    static volatile sig_atomic_t terms = 0;
    if (signal_number == SIGTERM && terms++ == 0) {
        if (s_broker)
            pigato_broker_request_drain (s_broker, true);
        return;
    }
    zsys_interrupted = 1;
    if (s_broker)
        pigato_broker_stop (s_broker);
}

static void
s_on_sigusr2 (int signal_number)
{
    (void) signal_number;
    if (s_broker)
        pigato_broker_request_drain (s_broker, false);
}

//  --------------------------------------------------------------------------
//  --pid-file: lets an operator signal this broker (kill -HUP $(cat PATH))
//  rather than every broker on the host (pidof). The pid in PATH, or 0
//  when PATH is absent or holds no pid.

static pid_t
s_pid_file_read (const char *path)
{
    FILE *file = fopen (path, "r");
    long pid = 0;
    if (file) {
        if (fscanf (file, "%ld", &pid) != 1 || pid <= 0 || pid > INT32_MAX)
            pid = 0;
        fclose (file);
    }
    return (pid_t) pid;
}

//  True if pid is a running pigato-broker (not a process that took over
//  the pid of one that died without removing its file).
static bool
s_pid_is_broker (pid_t pid)
{
    if (pid <= 0 || pid == getpid () || (kill (pid, 0) && errno != EPERM))
        return false;
    char path [64], name [64] = "";
    snprintf (path, sizeof path, "/proc/%ld/comm", (long) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return true;  //  no /proc: alive is all we can tell
    if (!fgets (name, sizeof name, file))
        name [0] = 0;
    fclose (file);
    name [strcspn (name, "\n")] = 0;
    return streq (name, "pigato-broker");
}

//  Writes our pid to path through a temporary file and a rename, so a
//  reader never sees half a pid. Returns 0 or -1 with errno set.
static int
s_pid_file_write (const char *path)
{
    char temporary [4096];
    if (snprintf (temporary, sizeof temporary, "%s.%ld.tmp", path,
                  (long) getpid ())
        >= (int) sizeof temporary) {
        errno = ENAMETOOLONG;
        return -1;
    }
    FILE *file = fopen (temporary, "w");
    if (!file)
        return -1;
    int rc = fprintf (file, "%ld\n", (long) getpid ()) < 0 ? -1 : 0;
    if (fclose (file) || rc || rename (temporary, path)) {
        int saved = errno;
        unlink (temporary);
        errno = saved;
        return -1;
    }
    return 0;
}

//  --check-acl: loads the file with a throw-away broker, says what is
//  wrong or what it holds.
static int
s_check_acl (const char *path)
{
    //  What a start would warn about (skipped certificates, secret keys in
    //  a trusted folder) shows here too
    pigato_log_set (PIGATO_LOG_WARNING, pigato_log_stderr, NULL);
    pigato_broker_t *broker = pigato_broker_new ();
    if (!broker) {
        fputs ("pigato-broker: out of memory\n", stderr);
        return 1;
    }
    int rc = 0;
    if (pigato_broker_set_acl (broker, path)) {
        fprintf (stderr, "%s\n", pigato_broker_error (broker));
        rc = 1;
    }
    else
        printf ("%s: OK\n", path);
    pigato_broker_destroy (&broker);
    return rc;
}

//  Raises the soft limit on open files to the hard one: each connection
//  is a file, and the maximum of connections is derived from this limit.
//  Logs what it found and did.
static void
s_raise_file_limit (void)
{
    struct rlimit limit;
    char line [256];
    if (getrlimit (RLIMIT_NOFILE, &limit) != 0) {
        snprintf (line, sizeof line, "event=file_limit error=%s",
                  strerror (errno));
        pigato_log_stderr (PIGATO_LOG_WARNING, line, NULL);
        return;
    }
    rlim_t was = limit.rlim_cur;
    const char *error = NULL;
    if (limit.rlim_cur != limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit (RLIMIT_NOFILE, &limit) != 0) {
            error = strerror (errno);
            limit.rlim_cur = was;
        }
    }
    //  RLIM_INFINITY prints as -1
    snprintf (line, sizeof line,
              "event=file_limit soft=%lld hard=%lld was=%lld%s%s",
              (long long) limit.rlim_cur, (long long) limit.rlim_max,
              (long long) was, error ? " error=" : "", error ? error : "");
    pigato_log_stderr (error ? PIGATO_LOG_WARNING : PIGATO_LOG_INFO, line,
                       NULL);
}

//  A size in bytes: digits, then optionally K, M or G (powers of 1024).
//  Exits with a usage error otherwise.
static int64_t
s_size (const char *text, const char *option)
{
    char *end;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    int shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (*text < '0' || *text > '9' || *end != 0 || errno || value < 0
        || value > (INT64_MAX >> shift)) {
        s_bad ("%s needs a size (bytes, or a number with K, M or G), not "
               "'%s'",
               option, text);
        return 0;
    }
    return (int64_t) value << shift;
}

static int
s_number (const char *text, const char *option, int minimum)
{
    char *end;
    long value = strtol (text, &end, 10);
    if (*text == 0 || *end != 0 || value < minimum || value > 3600000) {
        s_bad ("%s needs a number >= %d, not '%s'", option, minimum, text);
        return minimum;
    }
    return (int) value;
}

//  Finds --config FILE and --check-config on the command line, read by
//  getopt_long as the main loop reads them (so "--conf" is --config
//  there too), on a copy of argv (getopt_long permutes what it reads).
//  Sets s_checking. Returns the copy (the caller frees the array, not the
//  strings) or NULL if out of memory.
static char **
s_config_prescan (int argc, char **argv, const struct option *options,
                  const char **config_path)
{
    char **copy = (char **) calloc ((size_t) argc + 1, sizeof (char *));
    if (!copy)
        return NULL;
    memcpy (copy, argv, (size_t) argc * sizeof (char *));
    int saved = opterr, option, index = -1;
    opterr = 0;  //  the main loop reports what is wrong
    while ((option = getopt_long (argc, copy, "hV", options, &index)) != -1) {
        if (option > 255 && index >= 0
            && streq (options [index].name, "config"))
            *config_path = optarg;
        else if (option > 255 && index >= 0
                 && streq (options [index].name, "check-config"))
            s_checking = true;
        index = -1;
    }
    opterr = saved;
    memcpy (copy, argv, (size_t) argc * sizeof (char *));
    return copy;
}

//  Sets s_origin to where an option was: FILE:LINE (line > 0) or the
//  command line.
static void
s_origin_at (const char *config_path, int line)
{
    if (config_path && line > 0)
        snprintf (s_origin, sizeof s_origin, "%s:%d: ", config_path, line);
    else
        snprintf (s_origin, sizeof s_origin, "pigato-broker: ");
}

int
main (int argc, char *argv [])
{
    enum {
        OPT_BIND = 256,
        OPT_KEY,
        OPT_ALLOW_ANY,
        OPT_INSECURE,
        OPT_HEARTBEAT,
        OPT_LIVENESS,
        OPT_DMODE,
        OPT_LOG_LEVEL,
        OPT_ACL,
        OPT_CHECK_ACL,
        OPT_IO_THREADS,
        OPT_CACHE_MAX,
        OPT_BUSY_POLL,
        OPT_MAX_CONNECTIONS,
        OPT_HANDSHAKE_TIMEOUT,
        OPT_MAX_MEMORY,
        OPT_MAX_INBOUND,
        OPT_MAX_OUTBOUND,
        OPT_PID_FILE,
        OPT_CERT_WARN_DAYS,
        OPT_METRICS_LISTEN,
        OPT_STORE,
        OPT_STORE_MAX_BYTES,
        OPT_STORE_SYNC,
        OPT_DRAIN_TIMEOUT,
        OPT_CONFIG,
        OPT_CHECK_CONFIG,
        OPT_LOG_FORMAT,
        OPT_COUNT  //  (keep last)
    };
    static const struct option options [] = {
        { "bind", required_argument, NULL, OPT_BIND },
        { "key", required_argument, NULL, OPT_KEY },
        { "allow-any", no_argument, NULL, OPT_ALLOW_ANY },
        { "insecure", no_argument, NULL, OPT_INSECURE },
        { "acl", required_argument, NULL, OPT_ACL },
        { "check-acl", required_argument, NULL, OPT_CHECK_ACL },
        { "heartbeat", required_argument, NULL, OPT_HEARTBEAT },
        { "liveness", required_argument, NULL, OPT_LIVENESS },
        { "dmode", required_argument, NULL, OPT_DMODE },
        { "io-threads", required_argument, NULL, OPT_IO_THREADS },
        { "cache-max-bytes", required_argument, NULL, OPT_CACHE_MAX },
        { "busy-poll", required_argument, NULL, OPT_BUSY_POLL },
        { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
        { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
        { "max-memory", required_argument, NULL, OPT_MAX_MEMORY },
        { "max-inbound", required_argument, NULL, OPT_MAX_INBOUND },
        { "max-outbound", required_argument, NULL, OPT_MAX_OUTBOUND },
        { "cert-warn-days", required_argument, NULL, OPT_CERT_WARN_DAYS },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "pid-file", required_argument, NULL, OPT_PID_FILE },
        { "metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN },
        { "config", required_argument, NULL, OPT_CONFIG },
        { "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
        { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
        { "store", required_argument, NULL, OPT_STORE },
        { "store-max-bytes", required_argument, NULL, OPT_STORE_MAX_BYTES },
        { "store-sync", required_argument, NULL, OPT_STORE_SYNC },
        { "drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    const char *binds [32];
    int bind_lines [32];  //  the --config line of each, 0: command line
    int bind_count = 0;
    const char *key_file = NULL, *dmode = "load", *acl = NULL;
    const char *pid_file = NULL, *metrics_listen = NULL;
    const char *store = NULL;
    int64_t store_max_bytes = 0;  //  0 = no cap
    int64_t store_sync = -1;      //  -1 = not given (each commit)
    bool allow_any = false, insecure = false;
    int heartbeat = PIGATO_HEARTBEAT_MS, liveness = PIGATO_LIVENESS;
    int log_level = PIGATO_LOG_INFO;
    int io_threads = 1;
    long long cache_max = -1;
    int busy_poll = 0;
    int max_connections = 0;  //  0 = from the file limit
    int handshake_timeout = PIGATO_HANDSHAKE_TIMEOUT_MS;
    int64_t max_memory = 0;  //  0 = half of physical memory
    int64_t max_inbound = PIGATO_MAX_INBOUND;
    int64_t max_outbound = PIGATO_MAX_OUTBOUND;
    int cert_warn_days = -1;  //  -1 = the library's default
    int log_format = PIGATO_LOG_TEXT;
    int rc = 0;
    pigato_broker_t *broker = NULL;
    int drain_timeout = PIGATO_DRAIN_TIMEOUT_MS;

    //  --config and --check-config first, read the way the loop below
    //  reads them (abbreviations too); the file's options then go before
    //  the command line's, which override them
    const char *config_path = NULL;
    pigato__config_t config = { 0 };
    char **args = s_config_prescan (argc, argv, options, &config_path);
    if (!args) {
        fputs ("pigato-broker: out of memory\n", stderr);
        return 1;
    }
    //  From here on, every way out goes through cleanup (args, config)
    if (config_path) {
        static const char *const not_here [] = { "config",    "check-config",
                                                 "check-acl", "help",
                                                 "version",   NULL };
        static const char *const repeatable [] = { "bind", NULL };
        int problems = pigato__config_read (&config, config_path, options,
                                            not_here, repeatable, stderr);
        if (problems && !s_checking) {
            rc = EXIT_USAGE;
            goto cleanup;
        }
        s_problems += problems;
        free (args);
        args = pigato__config_argv (&config, argc, argv, &argc);
        if (!args) {
            fputs ("pigato-broker: out of memory\n", stderr);
            rc = 1;
            goto cleanup;
        }
    }
    bool binds_from_file = false;  //  a --bind on the command line drops them
    int option_lines [OPT_COUNT - OPT_BIND] = { 0 };  //  file lines
    int option;
    optind = 0;  //  getopt_long starts over (the prescan read argv)
    while ((option = getopt_long (argc, args, "hV", options, NULL)) != -1) {
        //  Options of the file are "--name=value", one argument each
        int from_line = optind - 1 >= 1 && optind - 1 <= config.count
                          ? config.lines [optind - 2]
                          : 0;
        s_origin_at (config_path, from_line);
        if (option >= OPT_BIND && option < OPT_COUNT)
            option_lines [option - OPT_BIND] = from_line;
        switch (option) {
            case OPT_BIND:
                if (!from_line && binds_from_file) {
                    bind_count = 0;
                    binds_from_file = false;
                }
                binds_from_file = binds_from_file || from_line;
                if (bind_count == 32) {
                    s_bad ("at most 32 --bind");
                    break;
                }
                bind_lines [bind_count] = from_line;
                binds [bind_count++] = optarg;
                break;
            case OPT_CONFIG:
            case OPT_CHECK_CONFIG: break;  //  read by the prescan
            case OPT_LOG_FORMAT:
                log_format = pigato_log_format_parse (optarg);
                if (log_format < 0) {
                    s_bad ("unknown log format '%s' (expected text or json)",
                           optarg);
                    log_format = PIGATO_LOG_TEXT;
                }
                break;
            case OPT_KEY: key_file = optarg; break;
            case OPT_PID_FILE: pid_file = optarg; break;
            case OPT_METRICS_LISTEN: metrics_listen = optarg; break;
            case OPT_STORE: store = optarg; break;
            case OPT_STORE_MAX_BYTES:
                store_max_bytes = s_size (optarg, "--store-max-bytes");
                break;
            case OPT_STORE_SYNC:
                if (streq (optarg, "commit"))
                    store_sync = 0;
                else {
                    char *end;
                    long value = strtol (optarg, &end, 10);
                    if (*optarg < '0' || *optarg > '9' || *end || value < 1
                        || value > 3600000)
                        s_bad ("--store-sync needs 'commit' or milliseconds "
                               "between syncs (1 to 3600000), not '%s'",
                               optarg);
                    else
                        store_sync = value;
                }
                break;
            case OPT_ALLOW_ANY: allow_any = true; break;
            case OPT_INSECURE: insecure = true; break;
            case OPT_ACL: acl = optarg; break;
            case OPT_CHECK_ACL:
                rc = s_check_acl (optarg);
                s_checking = false;  //  its own exit status
                goto cleanup;
            case OPT_HEARTBEAT:
                heartbeat = s_number (optarg, "--heartbeat", 10);
                break;
            case OPT_LIVENESS:
                liveness = s_number (optarg, "--liveness", 1);
                break;
            case OPT_DMODE: dmode = optarg; break;
            case OPT_BUSY_POLL:
                busy_poll = s_number (optarg, "--busy-poll", 0);
                if (busy_poll > 100000)
                    s_bad ("--busy-poll is at most 100000 (microseconds)");
                break;
            case OPT_MAX_CONNECTIONS:
                max_connections = s_number (optarg, "--max-connections", 1);
                break;
            case OPT_HANDSHAKE_TIMEOUT:
                handshake_timeout = s_number (optarg, "--handshake-timeout", 0);
                break;
            case OPT_MAX_MEMORY:
                max_memory = s_size (optarg, "--max-memory");
                break;
            case OPT_MAX_INBOUND:
                max_inbound = s_size (optarg, "--max-inbound");
                break;
            case OPT_MAX_OUTBOUND:
                max_outbound = s_size (optarg, "--max-outbound");
                break;
            case OPT_DRAIN_TIMEOUT:
                drain_timeout = s_number (optarg, "--drain-timeout", 0);
                break;
            case OPT_CERT_WARN_DAYS:
                cert_warn_days = s_number (optarg, "--cert-warn-days", 0);
                break;
            case OPT_CACHE_MAX: {
                char *end;
                cache_max = strtoll (optarg, &end, 10);
                if (*optarg == 0 || *end != 0 || cache_max < 0) {
                    s_bad ("--cache-max-bytes needs a number >= 0, not '%s'",
                           optarg);
                    cache_max = -1;
                }
                break;
            }
            case OPT_IO_THREADS:
                io_threads = s_number (optarg, "--io-threads", 1);
                if (io_threads > 64)
                    s_bad ("--io-threads is at most 64");
                break;
            case OPT_LOG_LEVEL:
                log_level = pigato_log_level_parse (optarg);
                if (log_level < 0) {
                    s_bad ("unknown log level '%s' (expected error, warning, "
                           "info or debug)",
                           optarg);
                    log_level = PIGATO_LOG_INFO;
                }
                break;
            case 'h':
                fputs (s_usage, stdout);
                s_checking = false;  //  exit 0
                goto cleanup;
            case 'V':
                printf ("pigato-broker %s\n", pigato_version ());
                s_checking = false;
                goto cleanup;
            default:
                if (!s_checking)
                    fputs ("Try 'pigato-broker --help'.\n", stderr);
                s_problems++;
                if (!s_checking) {
                    rc = EXIT_USAGE;
                    goto cleanup;
                }
        }
    }
    //  What follows concerns the options together: said of the file, if
    //  there is one
    snprintf (s_origin, sizeof s_origin,
              "%s: ", config_path ? config_path : "pigato-broker");
    if (optind < argc)
        s_bad ("unexpected argument '%s' (try 'pigato-broker --help')",
               args [optind]);
    if (insecure && allow_any)
        s_bad ("--insecure and --allow-any exclude each other");
    if (acl && allow_any)
        s_bad ("--acl and --allow-any exclude each other");
    if (!insecure && !allow_any && !acl)
        s_bad ("no security mode: give --acl FILE (CURVE, keys and rules from "
               "FILE), --allow-any (CURVE, any client key) or --insecure (no "
               "encryption)");
    if (!insecure && !key_file)
        s_bad ("no broker key: give --key FILE (a zcert secret key file, mode "
               "0600, or 0640 owned by root and the broker's group; or the "
               "broker's NAME.crt)");
    if (bind_count == 0)
        binds [bind_count++] = "tcp://127.0.0.1:5555";
    //  --check-config binds nothing, so it looks at the endpoints instead:
    //  the slip a start would refuse (the bind says the rest)
    for (int index = 0; s_checking && index < bind_count; index++)
        if (!strstr (binds [index], "://")) {
            s_origin_at (config_path, bind_lines [index]);
            s_bad ("endpoint '%s' has no transport (did you mean tcp://%s?)",
                   binds [index], binds [index]);
        }
    if (s_checking && s_problems) {
        //  The rest loads the ACL and the key: pointless with options
        //  already wrong
        rc = 1;
        goto cleanup;
    }
    pigato_log_set_format (log_format);
    if (!s_checking && pid_file
        && s_pid_is_broker (s_pid_file_read (pid_file))) {
        fprintf (stderr,
                 "pigato-broker: --pid-file %s belongs to a running broker "
                 "(pid %ld): give each broker its own pid file\n",
                 pid_file, (long) s_pid_file_read (pid_file));
        pid_file = NULL;  //  not ours to remove
        rc = 1;
        goto cleanup;
    }

    //  The memory ceiling reads the resident size: freed large buffers
    //  (message bodies) must go back to the system. glibc's mmap threshold
    //  otherwise rises to the largest buffer freed (up to 32 MiB), and
    //  bodies below it stay in the heap after they are freed
    mallopt (M_MMAP_THRESHOLD, 1024 * 1024);
    if (s_checking)
        //  What a start would warn about (skipped certificates, secret
        //  keys in a trusted folder) shows here too
        pigato_log_set (PIGATO_LOG_WARNING, pigato_log_stderr, NULL);
    else {
        pigato_log_set (log_level, pigato_log_stderr, NULL);
        s_raise_file_limit ();
    }
    zsys_set_io_threads ((size_t) io_threads);  //  before any socket
    broker = pigato_broker_new ();
    if (!broker) {
        fputs ("pigato-broker: out of memory\n", stderr);
        rc = 1;
        goto cleanup;
    }
    pigato_broker_set_insecure (broker, insecure);
    pigato_broker_set_allow_any (broker, allow_any);
    pigato_broker_set_heartbeat (broker, heartbeat, liveness);
    if (cache_max >= 0)
        pigato_broker_set_cache_max (broker, (size_t) cache_max);
    pigato_broker_set_busy_poll (broker, busy_poll);
    if (pigato_broker_set_max_connections (broker, max_connections)
        || pigato_broker_set_handshake_timeout (broker, handshake_timeout)
        || (max_memory && pigato_broker_set_max_memory (broker, max_memory))
        || pigato_broker_set_max_inbound (broker, max_inbound)
        || pigato_broker_set_max_outbound (broker, max_outbound)
        || pigato_broker_set_drain_timeout (broker, drain_timeout)
        || (cert_warn_days >= 0
            && pigato_broker_set_cert_warn_days (broker, cert_warn_days))) {
        s_origin_at (config_path, 0);
        fprintf (stderr, "%s%s\n", s_origin, pigato_broker_error (broker));
        rc = EXIT_USAGE;
        goto cleanup;
    }
    if (pigato_broker_set_dmode (broker, dmode)) {
        s_origin_at (config_path, option_lines [OPT_DMODE - OPT_BIND]);
        fprintf (stderr, "%s%s\n", s_origin, pigato_broker_error (broker));
        rc = EXIT_USAGE;
        goto cleanup;
    }
    //  The ACL and the key are each checked, so that --check-config
    //  reports both
    if (acl && pigato_broker_set_acl (broker, acl)) {
        s_origin_at (config_path, option_lines [OPT_ACL - OPT_BIND]);
        fprintf (stderr, "%s%s\n", s_origin, pigato_broker_error (broker));
        s_problems++;
        rc = 1;
    }
    if ((store_max_bytes || store_sync >= 0) && !store) {
        fprintf (stderr, "pigato-broker: %s needs --store\n",
                 store_max_bytes ? "--store-max-bytes" : "--store-sync");
        rc = EXIT_USAGE;
        goto cleanup;
    }
    if (store_sync > 0)
        pigato_broker_set_store_sync (broker, store_sync);
    //  Opened (and recovered) before anything binds: a store that cannot
    //  be used is the reason to exit
    if (store && pigato_broker_set_store (broker, store, store_max_bytes)) {
        fprintf (stderr, "pigato-broker: --store: %s\n",
                 pigato_broker_error (broker));
        rc = 1;
        goto cleanup;
    }
    char public_key [PIGATO_Z85_KEY_SIZE + 1] = "-";
    if (key_file && !insecure && (s_checking || rc == 0)) {
        char err [256];
        if (pigato_broker_set_key_file (broker, key_file)) {
            s_origin_at (config_path, option_lines [OPT_KEY - OPT_BIND]);
            fprintf (stderr, "%s%s\n", s_origin, pigato_broker_error (broker));
            s_problems++;
            rc = 1;
        }
        else if (pigato_key_public (key_file, public_key, err, sizeof err))
            snprintf (public_key, sizeof public_key, "-");
    }
    if (rc)
        goto cleanup;
    if (s_checking) {
        //  Nothing is bound: a running broker may hold the endpoints
        printf ("%s: OK\n", config_path ? config_path : "pigato-broker");
        goto cleanup;
    }
    for (int index = 0; index < bind_count; index++)
        if ((rc = pigato_broker_bind (broker, binds [index]))) {
            fprintf (stderr, "pigato-broker: %s\n",
                     pigato_broker_error (broker));
            rc = rc == PIGATO_E_INVALID ? EXIT_USAGE : 1;
            goto cleanup;
        }
    if (metrics_listen
        && (rc = pigato_broker_set_metrics_listen (broker, metrics_listen))) {
        fprintf (stderr, "pigato-broker: --metrics-listen: %s\n",
                 pigato_broker_error (broker));
        rc = rc == PIGATO_E_INVALID ? EXIT_USAGE : 1;
        goto cleanup;
    }
    //  Written once bound, before event=ready: whoever waits for that line
    //  finds the file
    if (pid_file && s_pid_file_write (pid_file)) {
        fprintf (stderr, "pigato-broker: cannot write --pid-file %s: %s\n",
                 pid_file, strerror (errno));
        pid_file = NULL;
        rc = 1;
        goto cleanup;
    }
    if (insecure && log_format == PIGATO_LOG_JSON)
        pigato_log_stderr (PIGATO_LOG_WARNING,
                           "event=insecure reason=\"traffic is NOT encrypted "
                           "and peers are NOT authenticated\"",
                           NULL);
    else if (insecure)
        fputs ("pigato-broker: WARNING: --insecure: traffic is NOT encrypted "
               "and peers are NOT authenticated\n",
               stderr);
    char fingerprint [PIGATO_FINGERPRINT_SIZE] = "-";
    if (public_key [0] != '-')
        pigato_key_fingerprint (public_key, fingerprint);
    char line [1024];
    size_t used = (size_t) snprintf (
        line, sizeof line,
        "event=ready version=%s mode=%s%s key=%s fingerprint=%s "
        "max_connections=%d "
        "handshake_timeout_ms=%d "
        "max_memory=%" PRId64 " max_inbound=%" PRId64 " max_outbound=%" PRId64
        " store=%s endpoints=",
        pigato_version (),
        insecure    ? "insecure"
        : allow_any ? "allow-any"
                    : "acl",
        insecure && acl ? "+acl" : "", public_key, fingerprint,
        pigato_broker_max_connections (broker), handshake_timeout,
        pigato_broker_max_memory (broker), max_inbound, max_outbound,
        store ? "on" : "off");
    for (int index = 0; index < bind_count && used < sizeof line; index++)
        used += (size_t) snprintf (line + used, sizeof line - used, "%s%s",
                                   index ? "," : "", binds [index]);
    if (metrics_listen && used < sizeof line)
        used += (size_t) snprintf (line + used, sizeof line - used,
                                   " metrics=http://%s/metrics",
                                   pigato_broker_metrics_address (broker));
    //  SIGHUP is handled before event=ready is logged: whoever waits for
    //  that line may reload at once, and the default action would kill us
    s_broker = broker;
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_sighup;
    sigemptyset (&action.sa_mask);
    sigaction (SIGHUP, &action, NULL);  //  no SA_RESTART: wake the poll
    action.sa_handler = s_on_stop_signal;
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    action.sa_handler = s_on_sigusr2;
    sigaction (SIGUSR2, &action, NULL);
    pigato_log_stderr (PIGATO_LOG_INFO, line, NULL);
    //  systemd (Type=notify): bound and serving; told again after each
    //  reload, and of the stop, through the state hook
    static char status [512];
    used = (size_t) snprintf (status, sizeof status, "serving on ");
    for (int index = 0; index < bind_count && used < sizeof status; index++)
        used += (size_t) snprintf (status + used, sizeof status - used, "%s%s",
                                   index ? " " : "", binds [index]);
    pigato_broker_set_state_hook (broker, s_on_state, status);
    pigato__notify_ready (status);
    rc = pigato_broker_run (broker);
    signal (SIGHUP, SIG_IGN);
    signal (SIGUSR2, SIG_IGN);
    s_broker = NULL;
    if (log_level >= PIGATO_LOG_INFO) {
        //  What the run did, for operators and benchmarks
        char line [1024];
        snprintf (line, sizeof line,
                  "event=stopped requests=%" PRId64 " replies=%" PRId64
                  " failed=%" PRId64 " timeouts=%" PRId64
                  " bad_messages=%" PRId64 " denied=%" PRId64
                  " native_batches_out=%" PRId64 " native_entries_out=%" PRId64
                  " cache_hits=%" PRId64 " zap_denied=%" PRId64
                  " unsent=%" PRId64 " connections_refused=%" PRId64
                  " connections_evicted=%" PRId64 " over_quota=%" PRId64
                  " over_memory=%" PRId64 " inbound_cut=%" PRId64
                  " slow_consumers=%" PRId64 " memory_cut=%" PRId64
                  " messages_too_large=%" PRId64,
                  pigato_broker_counter (broker, "requests"),
                  pigato_broker_counter (broker, "replies"),
                  pigato_broker_counter (broker, "failed"),
                  pigato_broker_counter (broker, "timeouts"),
                  pigato_broker_counter (broker, "bad_messages"),
                  pigato_broker_counter (broker, "denied"),
                  pigato_broker_counter (broker, "batches_out"),
                  pigato_broker_counter (broker, "entries_out"),
                  pigato_broker_counter (broker, "cache_hits"),
                  pigato_broker_counter (broker, "zap_denied"),
                  pigato_broker_counter (broker, "unsent"),
                  pigato_broker_counter (broker, "connections_refused"),
                  pigato_broker_counter (broker, "connections_evicted"),
                  pigato_broker_counter (broker, "over_quota"),
                  pigato_broker_counter (broker, "over_memory"),
                  pigato_broker_counter (broker, "inbound_cut"),
                  pigato_broker_counter (broker, "slow_consumers"),
                  pigato_broker_counter (broker, "memory_cut"),
                  pigato_broker_counter (broker, "messages_too_large"));
        pigato_log_stderr (PIGATO_LOG_INFO, line, NULL);
        //  Durable requests: submissions per commit (group commit at work)
        if (pigato_broker_counter (broker, "titanic_commits") >= 0) {
            snprintf (line, sizeof line,
                      "event=titanic_stopped submitted=%" PRId64
                      " commits=%" PRId64 " operations=%" PRId64
                      " syncs=%" PRId64 " attempts=%" PRId64 " retries=%" PRId64
                      " parked=%" PRId64 " replied=%" PRId64 " deleted=%" PRId64
                      " write_failures=%" PRId64,
                      pigato_broker_counter (broker, "titanic_submitted"),
                      pigato_broker_counter (broker, "titanic_commits"),
                      pigato_broker_counter (broker, "titanic_operations"),
                      pigato_broker_counter (broker, "titanic_syncs"),
                      pigato_broker_counter (broker, "titanic_attempts"),
                      pigato_broker_counter (broker, "titanic_retries"),
                      pigato_broker_counter (broker, "titanic_parked"),
                      pigato_broker_counter (broker, "titanic_replied"),
                      pigato_broker_counter (broker, "titanic_deleted"),
                      pigato_broker_counter (broker, "titanic_write_failures"));
            pigato_log_stderr (PIGATO_LOG_INFO, line, NULL);
        }
    }
    rc = rc == PIGATO_E_INTERRUPTED ? 0 : rc ? 1 : 0;
cleanup:
    pigato_broker_destroy (&broker);
    if (pid_file && s_pid_file_read (pid_file) == getpid ())
        unlink (pid_file);
    pigato__config_free (&config);
    free (args);
    return s_checking ? (rc || s_problems ? 1 : 0) : rc;
}
