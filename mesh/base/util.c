/*  =========================================================================
    util.c - small shared helpers: clock, error text, printable bytes, JSON
    strings.
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <jansson.h>
#include <stdio.h>
#include <ctype.h>
#include <string.h>
#include <time.h>
#include <sys/auxv.h>
#include <pthread.h>
#include <signal.h>
#include "internal.h"

int
pigato__endpoint_check (const char *endpoint, bool bind, bool *ipv6, char *err,
                        size_t err_size)
{
    *ipv6 = false;
    if (!endpoint || !*endpoint) {
        pigato__errorf (err, err_size, "no endpoint given");
        return PIGATO_E_INVALID;
    }
    const char *scheme_end = strstr (endpoint, "://");
    if (!scheme_end) {
        pigato__errorf (err, err_size,
                        "endpoint '%s' has no transport (did you mean "
                        "tcp://%s?)",
                        endpoint, endpoint);
        return PIGATO_E_INVALID;
    }
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return 0;  //  ipc://, inproc://, ...: libzmq's to judge
    //  A connect may name its source first: tcp://SOURCE;HOST:PORT
    const char *address = strrchr (endpoint, ';');
    address = address ? address + 1 : endpoint + 6;
    const char *port = NULL;
    if (*address == '[') {
        const char *close = strchr (address, ']');
        if (close && close [1] == ':')
            port = close + 2;
        *ipv6 = close != NULL;
    }
    else {
        port = strrchr (address, ':');
        port = port && port > address ? port + 1 : NULL;
    }
    if (!port) {
        pigato__errorf (err, err_size,
                        "endpoint '%s' wants a host and a port, like "
                        "tcp://127.0.0.1:5555 or tcp://[::1]:5555",
                        endpoint);
        return PIGATO_E_INVALID;
    }
    if (bind && streq (port, "*"))
        return 0;
    char *end;
    errno = 0;
    long number = strtol (port, &end, 10);
    if (end == port || *end || errno || !isdigit ((unsigned char) *port)
        || number > 65535 || number < (bind ? 0 : 1)) {
        pigato__errorf (err, err_size,
                        "endpoint '%s': port '%s' is not a number from %d to "
                        "65535%s",
                        endpoint, port, bind ? 0 : 1, bind ? " or *" : "");
        return PIGATO_E_INVALID;
    }
    return 0;
}

//  zsys_handler_set (NULL) also puts back the handlers czmq saved when it
//  installed its own, which may be older than the application's current
//  ones: what is installed now is kept and restored around it.
static void
s_signals_leave_once (void)
{
    struct sigaction interrupt_now, terminate_now;
    sigaction (SIGINT, NULL, &interrupt_now);
    sigaction (SIGTERM, NULL, &terminate_now);
    zsys_handler_set (NULL);
    sigaction (SIGINT, &interrupt_now, NULL);
    sigaction (SIGTERM, &terminate_now, NULL);
}

void
pigato__signals_leave (void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once (&once, s_signals_leave_once);
}

int64_t
pigato__now_ms (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void
pigato__time_text (int64_t seconds, char *out, size_t out_size)
{
    time_t when = (time_t) seconds;
    struct tm tm;
    if (!gmtime_r (&when, &tm)
        || !strftime (out, out_size, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf (out, out_size, "@%lld", (long long) seconds);
}

//  A seeded hash of bytes or NUL-terminated text for libpigato's own
//  tables on hot paths (a client's rids, a worker's replies): eight bytes
//  per step instead of czmq's default byte-at-a-time loop. The seed is the
//  kernel's per-process random bytes (AT_RANDOM). Not a keyed hash: every
//  broker table whose keys a peer chooses (requests, workers, service
//  names, the ACL's decision cache) uses SipHash-1-3 (bkey.c).

static uint64_t s_text_seed;

__attribute__ ((constructor)) static void
s_text_seed_init (void)
{
    const unsigned char *random = (const unsigned char *) getauxval (AT_RANDOM);
    if (random)
        memcpy (&s_text_seed, random, sizeof s_text_seed);
}

size_t
pigato__hash_text (const void *key)
{
    return pigato__hash_bytes (key, strlen ((const char *) key));
}

size_t
pigato__hash_bytes (const void *data, size_t size)
{
    static const uint64_t multiplier = 0x9e3779b97f4a7c15ULL;
    const char *text = (const char *) data;
    uint64_t hash = s_text_seed ^ (size * multiplier);
    for (; size >= 8; size -= 8, text += 8) {
        uint64_t word;
        memcpy (&word, text, sizeof word);
        hash = (hash ^ word) * multiplier;
        hash ^= hash >> 29;
    }
    uint64_t tail = 0;
    memcpy (&tail, text, size);
    hash = (hash ^ tail) * 0xd6e8feb86659fd93ULL;
    hash ^= hash >> 32;
    hash *= multiplier;
    return (size_t) (hash ^ (hash >> 29));
}

#define RATELIMIT_BURST 20

//  Says how many lines of `what` were held back, and starts counting anew.
static void
s_ratelimit_report (pigato__ratelimit_t *self, const char *what, int level)
{
    if (self->suppressed)
        pigato__log (level, "event=%s_suppressed count=%" PRId64, what,
                     self->suppressed);
    self->suppressed = 0;
}

bool
pigato__ratelimit_allow_at (pigato__ratelimit_t *self, const char *what,
                            int level)
{
    int64_t second = pigato__now_ms () / 1000;
    if (second != self->second) {
        s_ratelimit_report (self, what, level);
        self->second = second;
        self->burst = 0;
    }
    if (++self->burst > (self->limit > 0 ? self->limit : RATELIMIT_BURST)) {
        self->suppressed++;
        return false;
    }
    return true;
}

bool
pigato__ratelimit_allow (pigato__ratelimit_t *self, const char *what)
{
    return pigato__ratelimit_allow_at (self, what, PIGATO_LOG_INFO);
}

void
pigato__ratelimit_flush (pigato__ratelimit_t *self, const char *what, int level)
{
    //  Lines of the current second may still be let through or held back:
    //  their count is reported when that second is over
    if (self->suppressed && pigato__now_ms () / 1000 != self->second)
        s_ratelimit_report (self, what, level);
}

void
pigato__errorf (char *err, size_t err_size, const char *format, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (err, err_size, format, args);
    va_end (args);
}

//  --------------------------------------------------------------------------
//  Explicit ASCII ranges, not isalnum (): a name must not change meaning
//  with the locale.

bool
pigato__name_valid (const char *name)
{
    size_t length = name ? strlen (name) : 0;
    if (length == 0 || length > PIGATO__NAME_MAX || name [0] == '.'
        || name [0] == '-')
        return false;
    for (size_t index = 0; index < length; index++) {
        char c = name [index];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

//  Escapes bytes for a log line: printable ASCII as is, the rest as \xNN,
//  cut (marked "..") at out_size - 1. In a bare value (quoted false) a
//  space, '=' or '"' would start another field: escaped too.
static char *
s_escape (const void *data, size_t size, char *out, size_t out_size,
          bool quoted)
{
    static const char hex [] = "0123456789abcdef";
    const unsigned char *bytes = (const unsigned char *) data;
    size_t used = 0;
    if (out_size == 0)
        return out;
    for (size_t index = 0; index < size; index++) {
        unsigned char byte = bytes [index];
        bool plain = byte >= 0x20 && byte < 0x7f && byte != '\\' && byte != '"'
                  && (quoted || (byte != ' ' && byte != '='));
        size_t need = plain ? 1 : 4;
        if (used + need + 1 > out_size) {
            //  Mark the cut so a reader knows the value was longer
            if (used + 2 <= out_size - 1 && out_size > 3) {
                out [used++] = '.';
                out [used++] = '.';
            }
            break;
        }
        if (plain)
            out [used++] = (char) byte;
        else {
            out [used++] = '\\';
            out [used++] = 'x';
            out [used++] = hex [byte >> 4];
            out [used++] = hex [byte & 15];
        }
    }
    out [used] = 0;
    return out;
}

char *
pigato__printable (const void *data, size_t size, char *out, size_t out_size)
{
    return s_escape (data, size, out, out_size, false);
}

char *
pigato__printable_quoted (const char *text, char *out, size_t out_size)
{
    return s_escape (text, text ? strlen (text) : 0, out, out_size, true);
}

int64_t
pigato__opts_timeout (const void *opts, int64_t default_timeout)
{
    json_t *timeout = json_object_get ((const json_t *) opts, "timeout");
    if (!json_is_number (timeout))
        return default_timeout;
    double value = json_number_value (timeout);
    if (value < 0)
        return -1;
    if (value < 1)
        return default_timeout;  //  pigato: a falsy timeout = default
    return value >= (double) PIGATO__TIMEOUT_CAP ? PIGATO__TIMEOUT_CAP
                                                 : (int64_t) value;
}

int
pigato__opts_retry (const void *opts)
{
    json_t *retry = json_object_get ((const json_t *) opts, "retry");
    if (json_is_true (retry))
        return 1;
    if (!json_is_number (retry))
        return 0;
    double value = json_number_value (retry);
    return value < 1                  ? 0
         : value >= PIGATO__RETRY_MAX ? PIGATO__RETRY_MAX
                                      : (int) value;
}

//  "attempt" in a JSON object, as pigato__opts_attempt reads it.
static int
s_opts_attempt_of (const json_t *opts)
{
    json_t *attempt = json_object_get (opts, "attempt");
    if (!json_is_integer (attempt))
        return 1;
    json_int_t value = json_integer_value (attempt);
    return value < 1                    ? 1
         : value >= PIGATO__ATTEMPT_MAX ? PIGATO__ATTEMPT_MAX
                                        : (int) value;
}

int
pigato__opts_attempt (const void *text, size_t size)
{
    //  Most opts have none: no parser for them
    if (!text || !memmem (text, size, "\"attempt\"", 9))
        return 1;
    json_t *opts = json_loadb ((const char *) text, size, 0, NULL);
    int attempt = json_is_object (opts) ? s_opts_attempt_of (opts) : 1;
    json_decref (opts);
    return attempt;
}

char *
pigato__opts_next_attempt (const void *text, size_t size, size_t *size_p)
{
    json_t *opts = text && size
                     ? json_loadb ((const char *) text, size, 0, NULL)
                     : json_object ();
    char *next = NULL;
    if (json_is_object (opts)) {
        int attempt = s_opts_attempt_of (opts);
        if (attempt < PIGATO__ATTEMPT_MAX)
            attempt++;
        if (json_object_set_new (opts, "attempt", json_integer (attempt)) == 0)
            next = json_dumps (opts, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref (opts);
    if (next)
        *size_p = strlen (next);
    return next;
}

int
pigato__flat_next (const void *text, size_t size, size_t *cursor,
                   pigato__flat_t *member)
{
    const char *base = (const char *) text;
    if (size < 2 || base [0] != '{' || base [size - 1] != '}')
        return -1;
    const char *end = base + size - 1;  //  the closing brace
    const char *at = base + (*cursor ? *cursor : 1);
    if (at >= end)
        return at == end && (*cursor == 0 || at [-1] != ',') ? 0 : -1;
    //  "key":
    member->text = at;
    if (*at++ != '"')
        return -1;
    member->key = at;
    while (at < end && (isalnum ((unsigned char) *at) || *at == '_'))
        at++;
    member->key_size = (size_t) (at - member->key);
    if (member->key_size == 0 || end - at < 2 || at [0] != '"' || at [1] != ':')
        return -1;
    at += 2;
    //  integer | true | false | "string"
    member->integer = 0;
    member->value = at;
    if (end - at >= 4 && memcmp (at, "true", 4) == 0) {
        member->kind = PIGATO__FLAT_TRUE;
        at += 4;
    }
    else if (end - at >= 5 && memcmp (at, "false", 5) == 0) {
        member->kind = PIGATO__FLAT_FALSE;
        at += 5;
    }
    else if (at < end && *at == '"') {
        //  Printable ASCII only: no escapes, nothing to validate as UTF-8,
        //  and a compact JSON writer would write it back the same
        member->kind = PIGATO__FLAT_STRING;
        member->value = ++at;
        while (at < end && *at != '"') {
            if ((unsigned char) *at < 0x20 || (unsigned char) *at > 0x7e
                || *at == '\\')
                return -1;
            at++;
        }
        if (at == end)
            return -1;
        member->value_size = (size_t) (at - member->value);
        at++;
    }
    else {
        member->kind = PIGATO__FLAT_INTEGER;
        bool negative = at < end && *at == '-';
        if (negative)
            at++;
        const char *digits = at;
        int64_t value = 0;
        while (at < end && *at >= '0' && *at <= '9')
            value = value * 10 + (*at++ - '0');
        size_t count = (size_t) (at - digits);
        if (count == 0 || count > 15 || (count > 1 && digits [0] == '0'))
            return -1;  //  JSON has no leading zeros
        member->integer = negative ? -value : value;
    }
    if (member->kind != PIGATO__FLAT_STRING)
        member->value_size = (size_t) (at - member->value);
    member->text_size = (size_t) (at - member->text);
    if (at < end && *at++ != ',')
        return -1;
    *cursor = (size_t) (at - base);
    return 1;
}

bool
pigato__opts_fast (const void *text, size_t size, int64_t default_timeout,
                   int64_t *timeout_p, int *retry_p)
{
    int64_t timeout = default_timeout;
    int retry = 0;
    size_t cursor = 0;
    pigato__flat_t member;
    int rc;
    while ((rc = pigato__flat_next (text, size, &cursor, &member)) == 1) {
        bool is_timeout = member.key_size == 7
                       && memcmp (member.key, "timeout", 7) == 0;
        bool is_retry = member.key_size == 5
                     && memcmp (member.key, "retry", 5) == 0;
        //  A string there (or a worker named) is for the full parser
        if (member.kind == PIGATO__FLAT_STRING
            && (is_timeout || is_retry
                || (member.key_size == 8
                    && memcmp (member.key, "workerId", 8) == 0)))
            return false;
        int64_t value = member.integer;
        //  Later duplicates win, as in the full parser
        if (is_timeout)
            timeout = member.kind != PIGATO__FLAT_INTEGER ? default_timeout
                    : value < 0                           ? -1
                    : value < 1                           ? default_timeout
                    : value >= PIGATO__TIMEOUT_CAP        ? PIGATO__TIMEOUT_CAP
                                                          : value;
        else if (is_retry)
            retry = member.kind == PIGATO__FLAT_TRUE  ? 1
                  : member.kind == PIGATO__FLAT_FALSE ? 0
                  : value < 1                         ? 0
                  : value >= PIGATO__RETRY_MAX        ? PIGATO__RETRY_MAX
                                                      : (int) value;
    }
    if (rc < 0)
        return false;
    *timeout_p = timeout;
    *retry_p = retry;
    return true;
}

char *
pigato__json_string (const char *text)
{
    json_t *string = json_stringn (text ? text : "", text ? strlen (text) : 0);
    if (!string) {
        //  Not valid UTF-8: fall back to a generic, valid JSON string
        return strdup ("\"(binary error text)\"");
    }
    char *encoded = json_dumps (string, JSON_ENCODE_ANY);
    json_decref (string);
    return encoded;
}

char *
pigato__json_string_decode (const void *data, size_t size)
{
    size_t length;
    return pigato__json_string_decode_sized (data, size, &length);
}

char *
pigato__json_string_decode_sized (const void *data, size_t size,
                                  size_t *length_p)
{
    *length_p = 0;
    if (!data || size < 2 || ((const char *) data) [0] != '"')
        return NULL;
    json_error_t error;
    json_t *value = json_loadb ((const char *) data, size,
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (!value)
        return NULL;
    char *text = NULL;
    if (json_is_string (value)) {
        size_t length = json_string_length (value);
        text = (char *) malloc (length + 1);
        if (text) {
            memcpy (text, json_string_value (value), length);
            text [length] = 0;
            *length_p = length;
        }
    }
    json_decref (value);
    return text;
}

//  --------------------------------------------------------------------------
//  Writes path atomically: a temporary file created with mode 0600 (umask
//  077, so a secret is never readable by others, not even for a moment),
//  set to mode, then linked into place (refuses an existing path) or, with
//  replace, renamed over it.

int
pigato__file_write (const char *path, const void *data, size_t size,
                    mode_t mode, bool replace, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    char *temp = zsys_sprintf ("%s.tmp%d", path, (int) getpid ());
    if (!temp)
        return PIGATO_E_NOMEM;
    mode_t saved = umask (077);
    int fd = open (temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    umask (saved);
    if (fd < 0) {
        pigato__errorf (err, err_size, "cannot write '%s': %s", temp,
                        strerror (errno));
        rc = PIGATO_E_SYSTEM;
        goto cleanup;
    }
    size_t done = 0;
    while (done < size) {
        ssize_t wrote = write (fd, (const char *) data + done, size - done);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0)
            break;
        done += (size_t) wrote;
    }
    if (done < size || fchmod (fd, mode) != 0 || fsync (fd) != 0) {
        pigato__errorf (err, err_size, "cannot write '%s': %s", temp,
                        strerror (errno));
        rc = PIGATO_E_SYSTEM;
    }
    if (close (fd) != 0 && rc == PIGATO_OK) {
        pigato__errorf (err, err_size, "cannot write '%s': %s", temp,
                        strerror (errno));
        rc = PIGATO_E_SYSTEM;
    }
    if (rc == PIGATO_OK) {
        int linked = replace ? -1 : link (temp, path);
        //  A file system without hard links: check, then rename
        if (linked != 0 && !replace && errno != EEXIST
            && access (path, F_OK) != 0)
            replace = true;
        if (replace ? rename (temp, path) != 0 : linked != 0) {
            if (errno == EEXIST)
                pigato__errorf (err, err_size,
                                "'%s' already exists; not "
                                "overwriting it without --force",
                                path);
            else
                pigato__errorf (err, err_size, "cannot write '%s': %s", path,
                                strerror (errno));
            rc = errno == EEXIST ? PIGATO_E_INVALID : PIGATO_E_SYSTEM;
        }
    }
    unlink (temp);  //  after rename: ENOENT, harmless
cleanup:
    zstr_free (&temp);
    return rc;
}
