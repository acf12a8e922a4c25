/*  =========================================================================
    internal.h - shared by libpigato's own files; not installed.
    Internal-but-shared names are pigato__name and hidden from the ABI
    (-fvisibility=hidden; only PIGATO_EXPORT symbols are public).
    =========================================================================
*/
#ifndef PIGATO_INTERNAL_H_INCLUDED
#define PIGATO_INTERNAL_H_INCLUDED

#include <czmq.h>
#include <stdarg.h>
#include <sys/types.h>
#include "pigato.h"

//  Internal functions that can fail return 0 or a negative PIGATO_E_*
//  (or say so in their contract) and are marked: a caller that drops the
//  status is a compile error (-Werror), not a request that silently never
//  times out.
#define PIGATO__MUST_CHECK __attribute__ ((warn_unused_result))

//  Logging: pigato__log checks the level before formatting, so a disabled
//  level costs one comparison. Lines are key=value fields.
extern int pigato__log_level;
void pigato__log_emit (int level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
#define pigato__log(level, ...)                                                \
    do {                                                                       \
        if ((level) <= pigato__log_level)                                      \
            pigato__log_emit ((level), __VA_ARGS__);                           \
    } while (0)

//  Writes a printable, bounded rendering of peer bytes (routing ids, rids,
//  service names) for logs: printable ASCII as is, others as \xNN, cut at
//  out_size - 1. Returns out.
char *pigato__printable (const void *data, size_t size, char *out,
                         size_t out_size);

//  The same for text inside a quoted value (reason="..."): spaces and '='
//  stay, '"', '\\' and control bytes (a newline that would forge a line)
//  are escaped. text may be NULL ("").
char *pigato__printable_quoted (const char *text, char *out, size_t out_size);

//  Log rate limit: a burst of lines per second, then a count of the rest,
//  so a hostile peer cannot flood the log.
typedef struct {
    int64_t second;      //  current window
    int burst;           //  lines let through this second
    int64_t suppressed;  //  lines held back since last report
    int limit;           //  lines a second; 0 = the default, 20
} pigato__ratelimit_t;

//  True if a line may be logged now. Reports (at INFO) how many lines of
//  `what` were held back when a new second starts.
bool pigato__ratelimit_allow (pigato__ratelimit_t *self, const char *what);

//  The same, for lines logged at `level`: the report of held-back lines
//  (`event=WHAT_suppressed count=N`) goes out at that level too, so an
//  operator who sees the first lines of a flood also sees its size.
bool pigato__ratelimit_allow_at (pigato__ratelimit_t *self, const char *what,
                                 int level);

//  Reports held-back lines once their second is over, even when no new
//  line comes to trigger it: called from a timer, so a flood that stops
//  still ends with its count in the log.
void pigato__ratelimit_flush (pigato__ratelimit_t *self, const char *what,
                              int level);

//  Monotonic clock in milliseconds.
int64_t pigato__now_ms (void);

//  Checks an endpoint before libzmq sees it, so a mistake gets a reason
//  rather than "Invalid argument" or "No such device": a transport
//  ("localhost:5570" gets "did you mean tcp://localhost:5570?"), and for
//  tcp a host and a port from 1 to 65535 ("*" or 0 too when binding).
//  Sets *ipv6 when the host is a bracketed IPv6 address ("tcp://[::1]:
//  5555"): its socket needs ZMQ_IPV6. Returns 0 or PIGATO_E_INVALID with
//  the reason in err.
int pigato__endpoint_check (const char *endpoint, bool bind, bool *ipv6,
                            char *err, size_t err_size) PIGATO__MUST_CHECK;

//  Leaves SIGINT and SIGTERM to the application: called first by every
//  constructor (client, worker, broker), before libpigato's first czmq
//  call, it stops czmq from installing its handlers at its initialisation
//  (zsys_handler_set (NULL)) and keeps whatever handlers are installed now,
//  the application's or none. Once per process; thread-safe.
void pigato__signals_leave (void);

//  Writes "YYYY-MM-DD HH:MM:SS UTC" for seconds since the epoch ("@N" if
//  the time cannot be shown).
void pigato__time_text (int64_t seconds, char *out, size_t out_size);

//  Seeded hash of NUL-terminated text, for zhashx_set_key_hasher and
//  table.h on hot paths (czmq's default hashes a byte at a time), and the
//  same hash of `size` bytes.
size_t pigato__hash_text (const void *key);
size_t pigato__hash_bytes (const void *data, size_t size);

//  Identity, group and mesh names end up in file names, ACLs and logs:
//  they stay plain. The longest, in bytes.
#define PIGATO__NAME_MAX 64

//  True if name is 1 to PIGATO__NAME_MAX of ASCII letters, digits, '-',
//  '_' and '.' (whatever the locale), not starting with '.' or '-'. NULL
//  is not a name. The one rule for certificates (ca.c), ACLs (acl.c) and
//  pigato-keygen.
bool pigato__name_valid (const char *name);

//  Formats an error message into a caller's buffer (NULL buffer = no-op).
void pigato__errorf (char *err, size_t err_size, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Largest inbound frame (ZMQ_MAXMSGSIZE) the broker takes from a peer; a
//  peer sending a bigger one is disconnected. Clients and workers allow
//  4 KiB more (peer.c): the broker forwards nothing bigger than this.
#define PIGATO__MAX_MESSAGE_SIZE (16 * 1024 * 1024)

//  What a frame carries beyond its body on the way to the broker's check:
//  libzmq applies ZMQ_MAXMSGSIZE to the frame as it travels, and CURVE
//  wraps each one in a MESSAGE command 33 bytes longer. pigato.h's
//  PIGATO_BODY_MAX is the message size less this; the two stay in step.
#define PIGATO__FRAME_OVERHEAD 64

//  Largest message (every part together) the broker takes from a peer: a
//  0.0.46 request or reply may carry a body and opts of the largest size,
//  a native batch stops growing past PIGATO__NATIVE_MESSAGE_BYTES (1 MiB,
//  native.h) and then takes one more entry. A bigger message is dropped
//  whole.
#define PIGATO__MESSAGE_BYTES_MAX                                              \
    (2 * PIGATO__MAX_MESSAGE_SIZE + 2 * 1024 * 1024)
_Static_assert(PIGATO_BODY_MAX
                   == PIGATO__MAX_MESSAGE_SIZE - PIGATO__FRAME_OVERHEAD,
               "PIGATO_BODY_MAX must follow PIGATO__MAX_MESSAGE_SIZE");

//  Request opts, read the same way by client, worker and broker (pigato):
//  timeout: negative = never (-1), below 1 = the default, else capped at
//  PIGATO__TIMEOUT_CAP ms; retry: true = 1, numbers capped at
//  PIGATO__RETRY_MAX, anything else 0. opts is a jansson json_t object.
#define PIGATO__TIMEOUT_CAP ((int64_t) 1000000000000)  //  ~31 years
#define PIGATO__RETRY_MAX   5
int64_t pigato__opts_timeout (const void *opts, int64_t default_timeout);
int pigato__opts_retry (const void *opts);

//  A flat JSON object in the compact form clients send, read without a
//  parser: {"key":value,...}, keys of letters, digits and '_', no spaces;
//  values integers of at most 15 digits (no leading zeros), true, false,
//  or strings of printable ASCII without escapes (so valid UTF-8, and
//  written back the same by any compact JSON writer). pigato__flat_next
//  reads the member at *cursor (0 at first) and moves past it: 1 and the
//  member (borrowed from text), 0 at the end, -1 if the text is not in
//  that form (then a JSON parser decides; it may still be valid JSON).
typedef enum {
    PIGATO__FLAT_INTEGER = 0,
    PIGATO__FLAT_TRUE,
    PIGATO__FLAT_FALSE,
    PIGATO__FLAT_STRING
} pigato__flat_kind_t;
typedef struct {
    const char *text;  //  the whole member, "key":value
    size_t text_size;
    const char *key;  //  without its quotes
    size_t key_size;
    int kind;           //  pigato__flat_kind_t
    const char *value;  //  as written (a string without its quotes)
    size_t value_size;
    int64_t integer;  //  an integer's value, else 0
} pigato__flat_t;
int pigato__flat_next (const void *text, size_t size, size_t *cursor,
                       pigato__flat_t *member);

//  The same two readings without a JSON parser, for opts in that compact
//  form (pigato__flat_next) whose timeout and retry are not strings and
//  that name no workerId. Returns true (and sets *timeout, *retry exactly
//  as the two functions above would) if the text is in that form; false
//  when it needs the full parser.
bool pigato__opts_fast (const void *text, size_t size, int64_t default_timeout,
                        int64_t *timeout, int *retry);

//  Request opts' "attempt" (docs/protocol.md, retries and duplicates):
//  which time a worker is handed the request, from 1. Absent, or not a
//  positive integer, is 1 (capped at PIGATO__ATTEMPT_MAX).
#define PIGATO__ATTEMPT_MAX 1000000
int pigato__opts_attempt (const void *text, size_t size);

//  The opts text with "attempt" set to the next one (the other members
//  kept, in order): a new compact JSON text, malloc'd (the caller frees),
//  its size in *size_p; NULL if text is not a JSON object (or empty: then
//  {"attempt":2}) or out of memory.
char *pigato__opts_next_attempt (const void *text, size_t size, size_t *size_p);

//  Writes path atomically: a temporary file created 0600 with O_EXCL (never
//  readable by others, never someone else's file), set to mode, then linked
//  into place (refuses an existing path) or, with replace, renamed over it.
//  Returns 0, PIGATO_E_INVALID (exists) or PIGATO_E_SYSTEM, message in err.
int pigato__file_write (const char *path, const void *data, size_t size,
                        mode_t mode, bool replace, char *err,
                        size_t err_size) PIGATO__MUST_CHECK;

//  Encodes text as a JSON string (with quotes). Caller frees.
char *pigato__json_string (const char *text);

//  If data holds a JSON string, returns its decoded text (caller frees);
//  otherwise returns NULL.
char *pigato__json_string_decode (const void *data, size_t size);

//  The same, writing the decoded length to *length: the text may hold
//  NUL bytes ("\u0000..."), so strlen () would cut it.
char *pigato__json_string_decode_sized (const void *data, size_t size,
                                        size_t *length);

#endif
