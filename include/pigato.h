/*  =========================================================================
    pigato.h - public API of libpigato: a secured request/reply service mesh
    on ZeroMQ (client, worker, broker, keys, status codes).

    Threading: every object is single-threaded; use one object per thread.
    Ownership: a function that takes `**` takes ownership and nulls the
    caller's pointer; a returned `char *` is the caller's to free; a returned
    `const char *` is borrowed and valid until the object changes.
    Signals: libpigato installs no signal handler and leaves SIGINT and
    SIGTERM to the application. czmq installs its own at its first use
    unless told not to; the first pigato_client_new, pigato_worker_new or
    pigato_broker_new tells it not to (zsys_handler_set (NULL)) and keeps
    whatever handlers are installed at that moment. A signal that arrives
    during a blocking call (*_wait, *_run, pigato_client_call) ends it with
    PIGATO_E_INTERRUPTED, as does czmq's zsys_interrupted once set: a
    handler that sets zsys_interrupted = 1 (or calls pigato_broker_stop)
    stops every loop. An application that wants czmq's own handler
    installs it with zsys_handler_set () after its first pigato object.
    =========================================================================
*/
#ifndef PIGATO_H_INCLUDED
#define PIGATO_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PIGATO_EXPORT __attribute__ ((visibility ("default")))
#else
#define PIGATO_EXPORT
#endif

#define PIGATO_VERSION_MAJOR  0
#define PIGATO_VERSION_MINOR  1
#define PIGATO_VERSION_PATCH  0
#define PIGATO_VERSION_STRING "0.1.0"

//  Protocol defaults (docs/protocol.md)
#define PIGATO_HEARTBEAT_MS 2500   //  heartbeat interval
#define PIGATO_LIVENESS     3      //  missed heartbeats before a peer is dead
#define PIGATO_TIMEOUT_MS   60000  //  default request timeout
#define PIGATO_CONCURRENCY  100    //  default worker concurrency
#define PIGATO_RID_MAX      64     //  longest rid we accept, bytes
#define PIGATO_SERVICE_MAX  255    //  longest service name, bytes
#define PIGATO_Z85_KEY_SIZE 40     //  Z85 text of a 32-byte CURVE key

//  Client and worker default: how long a link may go without a TCP
//  connection before it counts as failed (PIGATO_E_UNREACHABLE or
//  PIGATO_E_RESOLVE, see pigato_client_connect). Once connected, its
//  handshake has 10 s (a busy broker in a storm of handshakes is slow; a
//  failing handshake says so at once) before PIGATO_E_HANDSHAKE
#define PIGATO_CONNECT_TIMEOUT_MS 1500

//  Broker default: how long a new connection may take to finish its
//  handshake (pigato_broker_set_handshake_timeout)
#define PIGATO_HANDSHAKE_TIMEOUT_MS 5000

//  Broker default: how long a drain waits for the requests in flight
//  before it fails them and stops (pigato_broker_set_drain_timeout)
#define PIGATO_DRAIN_TIMEOUT_MS 30000

//  Broker defaults: per connection, the bytes it may have sent that the
//  broker has not read yet, and the bytes the broker may have sent it that
//  it has not acknowledged yet (pigato_broker_set_max_inbound, _outbound)
#define PIGATO_MAX_INBOUND  (64LL * 1024 * 1024)
#define PIGATO_MAX_OUTBOUND (64LL * 1024 * 1024)

//  Client and worker byte budgets, per broker link (a tcp:// connection;
//  see pigato_client_set_max_outbound and pigato_worker_set_max_outbound).
//  Outbound (settable): the bytes given to a broker link that the broker
//  has not acknowledged yet, libzmq's queue and the kernel's send buffer;
//  past it a client's new requests fail at once (PIGATO_E_QUEUE_FULL) and
//  a worker takes no new request through that broker until it drains.
#define PIGATO_LINK_MAX_OUTBOUND (64LL * 1024 * 1024)
//  Inbound (fixed): the bytes a broker sent that libzmq holds unread.
//  libzmq hands a message over only once all its parts are in, so this
//  bounds the message being received: the largest a broker sends is 34
//  MiB (a body and reply opts of PIGATO_BODY_MAX each, and 2 MiB of a
//  native batch), and 2 MiB more for framing. A link over it is closed
//  and reconnected at once, as if the broker had gone (its requests are
//  handled as for a lost broker), logged as event=client_inbound_over_budget
//  or event=worker_inbound_over_budget. Whole messages waiting to be read
//  are not counted: libzmq stops reading a link that holds
//  PIGATO_LINK_RCVHWM of them until the application reads. Checked every
//  20 ms while the application polls (*_wait, *_run, an attached zloop),
//  so up to what a broker sends in 20 ms more is held before the cut.
#define PIGATO_LINK_MAX_INBOUND (36LL * 1024 * 1024)
#define PIGATO_LINK_RCVHWM      1000
//  ipc:// links: the kernel keeps no byte counts of Unix sockets, so the
//  bound there is libzmq's send high-water mark instead: at most this many
//  messages wait to be sent (a client's request past it:
//  PIGATO_E_QUEUE_FULL; a worker's reply: PIGATO_E_CLOSED), and nothing
//  bounds inbound but PIGATO_LINK_RCVHWM.
#define PIGATO_LINK_IPC_SNDHWM 1000

//  The largest body (request data, reply data, error text, reject reason)
//  and the largest reply opts a peer may send: 16 MiB less 64 bytes. Brokers
//  take no frame over 16 MiB and drop the connection of a peer that
//  sends one, with every request in flight on it; CURVE adds 33 bytes to
//  each frame before that check. So libpigato never sends more: a client
//  request over it is refused at once (PIGATO_E_TOO_LARGE, nothing sent),
//  a worker reply over it becomes an E_TOO_LARGE error reply.
#define PIGATO_BODY_MAX (16 * 1024 * 1024 - 64)

//  The largest request opts (and worker heartbeat opts): 64 KiB less one
//  byte. The broker reads opts; larger ones are refused with
//  E_INVALID_OPTS, and libpigato refuses them before sending
//  (PIGATO_E_TOO_LARGE).
#define PIGATO_OPTS_MAX 65535

//  -------------------------------------------------------------------------
//  Status codes: 0 is success, negative is an error. One list generates the
//  enum and pigato_strerror () (libuv's UV_ERRNO_MAP pattern).

#define PIGATO_STATUS_MAP(X)                                                   \
    X (OK, 0, "success")                                                       \
    X (E_INVALID, -1, "invalid argument")                                      \
    X (E_NOMEM, -2, "out of memory")                                           \
    X (E_KEY, -3, "key missing, unreadable or invalid")                        \
    X (E_KEYPERM, -4, "secret key file is readable by group or others")        \
    X (E_BIND, -5, "cannot bind endpoint")                                     \
    X (E_CONNECT, -6, "cannot connect endpoint")                               \
    X (E_TIMEOUT, -7, "request timed out")                                     \
    X (E_REPLY, -8, "service replied with an error")                           \
    X (E_CLOSED, -9, "object closed or stopped")                               \
    X (E_INTERRUPTED, -10, "interrupted by a signal")                          \
    X (E_ENDED, -11, "reply already ended")                                    \
    X (E_NOTCONNECTED, -12, "not connected to any broker")                     \
    X (E_SYSTEM, -13, "system error")                                          \
    X (E_ACL, -14, "access control list is invalid")                           \
    X (E_TOO_LARGE, -15, "message larger than the broker accepts")             \
    X (E_AUTH, -16, "the broker refused this peer's key")                      \
    X (E_HANDSHAKE, -17, "no security handshake with the broker")              \
    X (E_UNREACHABLE, -18, "broker unreachable")                               \
    X (E_RESOLVE, -19, "cannot resolve the broker's host name")                \
    X (E_DENIED, -20, "the broker refused to register this worker")            \
    X (E_PENDING, -21, "the durable request has no reply yet")                 \
    X (E_UNKNOWN, -22, "no such durable request")                              \
    X (E_STORE, -23, "the durable store failed")                               \
    X (E_QUEUE_FULL, -24, "the broker is not reading: send queue to it full")

typedef enum {
#define PIGATO_STATUS_ENUM(name, value, text) PIGATO_##name = value,
    PIGATO_STATUS_MAP (PIGATO_STATUS_ENUM)
#undef PIGATO_STATUS_ENUM
} pigato_status_t;

//  Returns a static English description of a status code.
PIGATO_EXPORT const char *
    pigato_strerror (int status);

//  Returns the library version as "MAJOR.MINOR.PATCH".
PIGATO_EXPORT const char *
    pigato_version (void);

//  -------------------------------------------------------------------------
//  Logging. The library never prints; it hands one line per event, made of
//  key=value fields, to the callback set here (process-wide). Secrets are
//  never logged.

typedef enum {
    PIGATO_LOG_ERROR = 0,
    PIGATO_LOG_WARNING = 1,
    PIGATO_LOG_INFO = 2,
    PIGATO_LOG_DEBUG = 3
} pigato_log_level_t;

typedef void (pigato_log_fn) (int level, const char *line, void *arg);

//  Sets the process-wide log callback and the most verbose level passed to
//  it. NULL callback = no logging (the default).
PIGATO_EXPORT void
    pigato_log_set (int level, pigato_log_fn *callback, void *arg);

//  Parses "error", "warning", "info" or "debug"; returns the level or -1.
PIGATO_EXPORT int
    pigato_log_level_parse (const char *name);

//  A ready-made callback: writes "TIMESTAMP LEVEL line" to stderr, or in
//  the JSON format (pigato_log_set_format) one JSON object per line.
PIGATO_EXPORT void
    pigato_log_stderr (int level, const char *line, void *arg);

//  How pigato_log_stderr writes a line. TEXT (the default):
//  "2024-05-01T12:00:00.000Z info event=ready key=value ...". JSON: one
//  object per line, {"ts":"2024-05-01T12:00:00.000Z","level":"info",
//  "event":"ready","key":"value",...}: the line's fields in their order,
//  every value a JSON string (a quoted value without its quotes, \xNN of
//  a printable character as that character; other bytes stay written
//  \xNN, as in the text format); words that are not key=value go to
//  "msg"; a field named like an earlier one (or ts, level, msg) gets _2,
//  _3... appended.
typedef enum { PIGATO_LOG_TEXT = 0, PIGATO_LOG_JSON = 1 } pigato_log_format_t;

//  Sets the format, process-wide (call before threads log). Returns 0, or
//  PIGATO_E_INVALID for an unknown format (the format stays).
PIGATO_EXPORT int
    pigato_log_set_format (int format);

//  Parses "text" or "json"; returns the format or -1.
PIGATO_EXPORT int
    pigato_log_format_parse (const char *name);

//  -------------------------------------------------------------------------
//  Keys. CURVE keys are 32 bytes, shown as 40 characters of Z85. Key files
//  use czmq's zcert format: NAME.key (public) and NAME.key_secret (secret,
//  mode 0600; refused if group or others can read it, except in a
//  service's layout: owned by root, mode 0640 or 0440, its group one the
//  process is in, e.g. root:pigato for a broker run as User=pigato).

//  Resolves a public key given as Z85 text or as a zcert file (public or
//  secret file; only the public key is read). Writes 41 bytes (Z85 + NUL)
//  to z85. On error returns a status and writes a message to err.
//  Also accepts a mesh identity certificate (PEM, from `pigato-keygen
//  issue`; a file ending in .crt or .pem, or holding a PEM header): its
//  subject key is the X25519 CURVE key. Its signature is not checked here;
//  a certificate with another key type, or a damaged file, is E_KEY with
//  a message naming the file and the reason.
PIGATO_EXPORT int
    pigato_key_public (const char *key_or_file, char *z85, char *err,
                       size_t err_size);

//  Writes a short fingerprint of a Z85 public key for logs and people: the
//  first 8 bytes of BLAKE2b-256 (key) in hex, 16 characters + NUL (so
//  fingerprint needs PIGATO_FINGERPRINT_SIZE bytes).
#define PIGATO_FINGERPRINT_SIZE 17
PIGATO_EXPORT void
    pigato_key_fingerprint (const char *public_z85, char *fingerprint);

//  -------------------------------------------------------------------------
//  Client: sends requests to services through one or more brokers; many
//  requests in flight; partial and final replies via callbacks.

typedef struct _pigato_client_t pigato_client_t;

//  Called for each reply to a request. For partial replies status is 0 and
//  final is false. For the final call status is:
//    PIGATO_OK            data = the reply;
//    PIGATO_E_REPLY       an error reply, from the service or from the broker
//                         (the wire does not tell them apart); data = the
//                         error text, JSON-decoded when it is a JSON string
//                         (size is its decoded length: it may hold NUL
//                         bytes, "\u0000", even as its first byte).
//                         Broker errors start with a code: E_ACCESS_DENIED,
//                         E_REJECTED, E_WORKER_LOST, E_INVALID_OPTS,
//                         E_OVERLOADED, E_QUOTA, E_DRAIN_TIMEOUT (the
//                         broker stopped before the worker answered, and
//                         the request had no retry left); libpigato
//                         workers send E_TOO_LARGE for a reply over
//                         PIGATO_BODY_MAX;
//    PIGATO_E_TIMEOUT     no reply for `timeout` ms; data = "C_TIMEOUT";
//    PIGATO_E_NOTCONNECTED the broker holding the request went away (its
//                         connection dropped: seen at once, under a zloop
//                         too; or it was silent for heartbeat x liveness)
//                         and the request had no retry left; data =
//                         "E_BROKER_LOST".
//  data is borrowed and valid only during the call. A callback must not
//  destroy its client.
typedef void (pigato_reply_fn) (pigato_client_t *client, const char *rid,
                                int status, bool final, const void *data,
                                size_t size, void *arg);

//  Creates a client; NULL if out of memory. Call setters, then connect.
PIGATO_EXPORT pigato_client_t *
    pigato_client_new (void);

//  Destroys a client; pending requests are dropped without callbacks.
PIGATO_EXPORT void
    pigato_client_destroy (pigato_client_t **self_p);

//  The broker's public key: Z85 text or a zcert file. Required unless
//  insecure. Key rotation: a comma-separated list of keys (at most 4),
//  each tried in turn when a handshake fails, so a client and a worker
//  given the old and the new key follow a broker that restarts with the
//  new one (docs/security.md, "Rotating the broker's key").
//  Also the broker's certificate (PEM, e.g. broker.crt from `pigato-keygen
//  issue broker`): its X25519 subject key is the server key, and
//  pigato_client_set_server_ca () can check it against the mesh CA.
PIGATO_EXPORT int
    pigato_client_set_server_key (pigato_client_t *self, const char *key);

//  The mesh CA certificate (ca.crt) that the broker's certificate must
//  verify against: signed by this CA, within its validity period, issued
//  for the CA's mesh (no CRL is read). NULL or "" removes the check. The
//  check runs as soon as both the CA and the server key are set (whichever
//  comes last), and again at every connect and reconnect, so a broker
//  certificate that expires is refused at the next connect. A failure is
//  PIGATO_E_KEY and pigato_client_error () says why, e.g. "server
//  certificate 'b.crt' (broker): not signed by this CA (issuer ...)"; the
//  CA stays set, so connect fails too. A CA with a server key given as
//  Z85 text or a zcert file is PIGATO_E_KEY at connect: only a
//  certificate can be checked.
PIGATO_EXPORT int
    pigato_client_set_server_ca (pigato_client_t *self, const char *ca_crt);

//  This client's own key pair, from a zcert secret key file. Without one
//  an ephemeral key pair is made at connect.
PIGATO_EXPORT int
    pigato_client_set_key_file (pigato_client_t *self, const char *path);

//  No encryption (NULL mechanism). Must match the broker.
PIGATO_EXPORT void
    pigato_client_set_insecure (pigato_client_t *self, bool insecure);

//  Heartbeat interval and liveness (defaults 2500 ms, 3).
PIGATO_EXPORT void
    pigato_client_set_heartbeat (pigato_client_t *self, int interval_ms,
                                 int liveness);

//  Default request timeout in ms when a request's opts carry none
//  (default 60000; -1 = never).
PIGATO_EXPORT void
    pigato_client_set_timeout (pigato_client_t *self, int64_t timeout_ms);

//  Framing spoken to brokers (docs/native-framing.md): "auto" (default:
//  pigato 0.0.46 framing plus an offer, native once the broker answers
//  in native framing), "native" (native from the first message; only for
//  pigato-broker) or "0.0.46" (never offer). Applies to links connected
//  afterwards. Returns 0 or PIGATO_E_INVALID for an unknown name.
PIGATO_EXPORT int
    pigato_client_set_framing (pigato_client_t *self, const char *framing);

//  The most bytes the client lets wait for one broker: sent on its link
//  and not yet acknowledged by the broker's host (libzmq's queue and the
//  kernel's send buffer). Default PIGATO_LINK_MAX_OUTBOUND (64 MiB); from
//  1 MiB to 1 TiB, else PIGATO_E_INVALID (the reason in
//  pigato_client_error ()). Applies at once to every link. A broker that
//  stops reading (stuck, overloaded, hostile) would otherwise make the
//  client hold every request and request heartbeat sent to it. Past the
//  budget a new request goes to another broker that has room, else fails
//  at once with PIGATO_E_QUEUE_FULL: nothing sent or queued, no callback,
//  the requests in flight untouched, pigato_client_error () saying
//  "E_QUEUE_FULL N bytes sent to ENDPOINT wait for the broker to read
//  them (budget M bytes) ...". Heartbeats to that broker are skipped
//  meanwhile. A request is checked against what waits before it, so up
//  to one request more than the budget may wait. The check is a
//  comparison while the count of bytes sent since the kernel was last
//  asked (TCP_INFO) keeps the link under budget; otherwise the kernel is
//  asked, at most once a millisecond. Only tcp:// links are counted
//  (ipc://: PIGATO_LINK_IPC_SNDHWM).
PIGATO_EXPORT int
    pigato_client_set_max_outbound (pigato_client_t *self, int64_t bytes);

//  Connects to a broker at endpoint: tcp://HOST:PORT (an IPv6 address in
//  brackets: tcp://[::1]:5555), ipc://PATH. An endpoint without a
//  transport or with a port outside 1 to 65535 returns PIGATO_E_INVALID
//  at once, with the reason ("did you mean tcp://...?") in
//  pigato_client_error (). pigato_worker_connect takes the same.
//  May be called for several brokers: each gets its
//  own connection, and new requests go round-robin to the brokers that
//  answered within two heartbeat intervals (to any, when none has). A
//  request belongs to the broker it was sent to; a reply for it through
//  another broker is dropped. When a broker is lost (its connection
//  drops, or no word from it for heartbeat x liveness), the client
//  reconnects to it, and each of its requests with "retry" left is sent
//  again at once to another live broker (to the same one only when it
//  is the only broker), using up one retry and with the next "attempt"
//  in its opts (docs/protocol.md); the others end with
//  PIGATO_E_NOTCONNECTED "E_BROKER_LOST". Once the broker answers again
//  (e.g. restarted on its endpoint) it gets new requests again.
//  Requests go only to brokers whose handshake completed: with several
//  brokers and none up yet, a request waits for the first (one broker
//  down does not hold it up). Failures end requests at once instead of at
//  their timeout, with the reason as data (and in pigato_client_error ()):
//    PIGATO_E_AUTH        the broker refused this client's key (not in
//                         the ACL, or revoked): at once;
//    PIGATO_E_HANDSHAKE   no server key passed the handshake (wrong key),
//                         or one side is insecure and the other not;
//    PIGATO_E_UNREACHABLE nothing answered the endpoint for
//                         PIGATO_CONNECT_TIMEOUT_MS (only while no broker
//                         was ever reached: a broker that restarts is
//                         waited for, up to the requests' timeout);
//    PIGATO_E_RESOLVE     as unreachable, and the host name does not
//                         resolve.
//  Each only when no other broker is up or still connecting; a request
//  made then fails with the same status at once. The links keep trying
//  (a refused key after a backoff): once a broker takes the client,
//  requests go again.
//  A broker that drains (pigato_broker_request_drain: pigato-broker on
//  SIGTERM or SIGUSR2) says so (docs/protocol.md, "Drain"): it gets no
//  new requests from then on; those it did not hand to a worker yet, and
//  any sent before the client knew, come back (E_DRAINING) and are sent
//  to another broker at once, using up no retry, or, with no other broker
//  up, wait (up to their timeout) for one: the drained broker restarted,
//  for instance. Its requests in flight finish there; those it abandons
//  at its drain timeout are sent elsewhere if they have a retry left
//  (with the next "attempt"), else end with PIGATO_E_REPLY
//  "E_DRAIN_TIMEOUT ...". The application sees none of this otherwise.
PIGATO_EXPORT int
    pigato_client_connect (pigato_client_t *self, const char *endpoint);

//  Sends a request. data/size are copied. opts_json is NULL or a JSON
//  object: "timeout" (ms of silence before the request fails; -1 never),
//  "retry" (attempts if the worker dies, for the broker; if the broker
//  dies, for the client: see pigato_client_connect ()), "workerId",
//  others passed on.
//  on_reply gets every partial reply and then exactly one final call
//  (unless the client is destroyed first). If rid is not NULL, the request
//  id (NUL-terminated, at most PIGATO_RID_MAX bytes) is written there.
//  Data over PIGATO_BODY_MAX, or opts over PIGATO_OPTS_MAX:
//  PIGATO_E_TOO_LARGE at once,
//  nothing sent, no callback, the requests in flight untouched, and
//  pigato_client_error () says "E_TOO_LARGE request of N bytes exceeds
//  the broker's limit of M bytes". No broker link with room under its
//  outbound budget (its broker is not reading what it is sent):
//  PIGATO_E_QUEUE_FULL at once, the same way (see
//  pigato_client_set_max_outbound ()).
PIGATO_EXPORT int
    pigato_client_request (pigato_client_t *self, const char *service,
                           const void *data, size_t size, const char *opts_json,
                           pigato_reply_fn *on_reply, void *arg, char *rid);

//  Gives up a request: no more callbacks, no more request heartbeats (so
//  the worker's pigato_reply_active () turns false). Returns E_INVALID for
//  an unknown rid.
PIGATO_EXPORT int
    pigato_client_cancel (pigato_client_t *self, const char *rid);

//  Blocking call: sends a request and waits for its final reply. Partial
//  replies go to on_partial if not NULL. On return *reply (malloc'd,
//  NUL-terminated for convenience, caller frees) holds the final data or
//  the error text; the return value is the final status.
PIGATO_EXPORT int
    pigato_client_call (pigato_client_t *self, const char *service,
                        const void *data, size_t size, const char *opts_json,
                        pigato_reply_fn *on_partial, void *arg, char **reply,
                        size_t *reply_size);

//  Number of requests still waiting for their final reply.
PIGATO_EXPORT size_t
    pigato_client_pending (pigato_client_t *self);

//  Processes whatever is ready (replies, heartbeats, timeouts), waiting at
//  most timeout_ms for something to happen (0 = do not wait, -1 = until
//  something happens). Returns 0 or E_INTERRUPTED.
PIGATO_EXPORT int
    pigato_client_wait (pigato_client_t *self, int timeout_ms);

//  Runs until no request is pending, or a signal. Returns 0 or
//  E_INTERRUPTED.
PIGATO_EXPORT int
    pigato_client_run (pigato_client_t *self);

//  Registers the client's sockets and timers with an application's zloop
//  (the type is czmq's zloop_t). The client keeps its registrations up to
//  date across reconnects and removes them when destroyed; destroy it
//  before the zloop, and never from inside one of that zloop's handlers
//  (czmq may still call the client's handlers later in the same pass).
//  The sockets are polled as file descriptors (their ZMQ_FDs), so a zloop
//  shared by many clients and workers polls them all in one call.
PIGATO_EXPORT int
    pigato_client_attach (pigato_client_t *self, void *zloop);

//  Last error message for a failed call (borrowed).
PIGATO_EXPORT const char *
    pigato_client_error (pigato_client_t *self);

//  -------------------------------------------------------------------------
//  Durable requests (ZeroMQ RFC 9, Titanic), through a broker that has a
//  store (pigato_broker_set_store; docs/protocol.md, "Durable requests").
//  The broker acknowledges a request only once it is on disk, sends it to
//  its service (again, after a backoff, when a worker is lost, until a
//  final reply or its time to live), and keeps the final reply until it
//  is closed. Only the identity that submitted a request may fetch or
//  close it. Each call below is a blocking call on the client, like
//  pigato_client_call (the client's timeout applies); the client may be
//  connected to several brokers, but a request lives in the store of the
//  broker that took it.

//  An id: 32 lowercase hex digits and a NUL.
#define PIGATO_TITANIC_ID_SIZE 33

//  Stores a request for service (data/size, copied) and writes its id to
//  id (PIGATO_TITANIC_ID_SIZE bytes). opts_json is NULL or a JSON object:
//  "ttl" (ms to get a final reply; default one day, at most 30 days),
//  "keep" (ms the reply is kept once it came; default one day),
//  "timeout" (ms an attempt may take; default 60000), others passed to
//  the worker, which also finds "titanic" (the id) and "attempt" in its
//  opts. key (NULL: one is made) is the idempotency key, 1 to 64
//  printable bytes: submitting again with the key of a request still
//  stored returns that request's id instead of storing another, so a
//  submission whose acknowledgement was lost may simply be sent again
//  (the client does so itself when its broker is lost). Returns 0, or
//  PIGATO_E_REPLY (refused: a bad request, access denied; "400 ..."),
//  PIGATO_E_STORE (the broker could not store it now: its store failed,
//  a quota, an overload; "500 ..."; try again later) or a status of
//  pigato_client_call, with the broker's reason in *reason if reason is
//  not NULL (malloc'd, caller frees; NULL on success).
PIGATO_EXPORT int
    pigato_titanic_submit (pigato_client_t *client, const char *service,
                           const void *data, size_t size, const char *opts_json,
                           const char *key, char *id, char **reason);

//  The reply to a stored request. Returns PIGATO_OK (*reply holds it),
//  PIGATO_E_REPLY (the service's error reply, or the broker's: E_EXPIRED
//  when the time to live ended, E_ACCESS_DENIED when the identity lost
//  `call` on the service; *reply holds the text), PIGATO_E_PENDING (no
//  reply yet), PIGATO_E_UNKNOWN (no such request for this identity:
//  never stored, closed, or another identity's), PIGATO_E_STORE, or a
//  status of pigato_client_call. *reply (may be NULL) is malloc'd and
//  NUL-terminated for convenience; the caller frees it.
PIGATO_EXPORT int
    pigato_titanic_fetch (pigato_client_t *client, const char *id, char **reply,
                          size_t *reply_size);

//  Deletes a stored request and its reply; it is not sent to a worker
//  after this returns (an attempt in flight ends first). Closing an
//  unknown id succeeds (RFC 9). Returns 0, PIGATO_E_STORE (not closed:
//  try again; the reason in *reason if not NULL) or a status of
//  pigato_client_call.
PIGATO_EXPORT int
    pigato_titanic_close (pigato_client_t *client, const char *id,
                          char **reason);

//  -------------------------------------------------------------------------
//  Worker: offers one service through one or more brokers.

typedef struct _pigato_worker_t pigato_worker_t;
typedef struct _pigato_reply_t pigato_reply_t;

//  Called for each request. The handler owns reply: it must end it (end,
//  error or reject) and destroy it, now or later. data is borrowed, valid
//  during the call. A handler must not destroy its worker.
typedef void (pigato_request_fn) (pigato_worker_t *worker,
                                  pigato_reply_t *reply, const void *data,
                                  size_t size, void *arg);

//  Creates a worker for a service; NULL on bad arguments or no memory.
//  Names every broker refuses are bad arguments: empty, over
//  PIGATO_SERVICE_MAX, reserved ("$..." and "mmi.*"), or holding a space
//  or a control character.
PIGATO_EXPORT pigato_worker_t *
    pigato_worker_new (const char *service, pigato_request_fn *handler,
                       void *arg);

//  Destroys a worker; sends DISCONNECT to its brokers. Replies still held
//  by the application become inactive; ending them does nothing.
PIGATO_EXPORT void
    pigato_worker_destroy (pigato_worker_t **self_p);

//  The broker's public key (Z85, zcert file or the broker's certificate)
//  and the CA to check a certificate with: as for the client, see
//  pigato_client_set_server_key () and pigato_client_set_server_ca ().
PIGATO_EXPORT int
    pigato_worker_set_server_key (pigato_worker_t *self, const char *key);
PIGATO_EXPORT int
    pigato_worker_set_server_ca (pigato_worker_t *self, const char *ca_crt);
PIGATO_EXPORT int
    pigato_worker_set_key_file (pigato_worker_t *self, const char *path);
PIGATO_EXPORT void
    pigato_worker_set_insecure (pigato_worker_t *self, bool insecure);
PIGATO_EXPORT void
    pigato_worker_set_heartbeat (pigato_worker_t *self, int interval_ms,
                                 int liveness);
//  The most bytes the worker lets wait for one broker, as for the client
//  (pigato_client_set_max_outbound; default PIGATO_LINK_MAX_OUTBOUND).
//  Past it on a broker's link, the worker takes no new request from that
//  broker: each is rejected back at once ("E_WORKER_REFUSED
//  send_queue_full", so the broker hands it to another worker; once 1 MiB
//  more has gone to that broker since the budget was passed, even that
//  is dropped: the broker is not reading), logged (event=worker_busy:
//  warnings, at most 20 a second, the others at debug level), and the
//  worker announces concurrency 0 there; heartbeats are skipped. Once the
//  queue drains under the budget (checked every 20 ms) it announces its
//  concurrency again (event=worker_send_queue_drained). Replies to
//  requests already taken are still sent: they add at most the
//  concurrency's worth of replies. Returns 0 or PIGATO_E_INVALID.
PIGATO_EXPORT int
    pigato_worker_set_max_outbound (pigato_worker_t *self, int64_t bytes);
//  As pigato_client_set_framing ().
PIGATO_EXPORT int
    pigato_worker_set_framing (pigato_worker_t *self, const char *framing);

//  Most requests in flight at once (default PIGATO_CONCURRENCY, 100; any
//  negative value = unlimited), announced to brokers in heartbeats and
//  enforced by the worker itself, for all its brokers together: a request
//  is in flight from the handler's call until it is ended (end, error,
//  reject) or its reply destroyed. The handler never holds more. A
//  request that arrives while it has that many waits in the worker for
//  the first free slot when its broker sent it within the concurrency it
//  was told (several brokers, each giving its share: at most brokers x
//  concurrency wait), or when the handler holds requests their brokers
//  have forgotten (pigato_reply_active () false: timed out, their client
//  or connection gone: a broker gave their slots away in good faith; one
//  waits for each such request). A waiting request its own broker forgets
//  is dropped; a drain rejects them all. Beyond that (a broker that
//  ignores the announcement, or a limit lowered below what is in flight)
//  it never reaches the handler: it is rejected back to its broker
//  (reason "E_WORKER_REFUSED over_concurrency"), which gives it to
//  another worker, counted (pigato_worker_over_concurrency ()) and logged
//  (event=worker_over_concurrency, at most 20 lines a second, then
//  event=worker_over_concurrency_suppressed count=N).
PIGATO_EXPORT void
    pigato_worker_set_concurrency (pigato_worker_t *self, int concurrency);

//  Requests in flight now: handed to the handler and not yet ended or
//  destroyed, over all brokers (replies of a lost connection, or timed
//  out, included until the application ends them).
PIGATO_EXPORT size_t
    pigato_worker_in_flight (pigato_worker_t *self);

//  Requests refused since the worker was created because the handler had
//  its concurrency in flight already (see pigato_worker_set_concurrency).
PIGATO_EXPORT uint64_t
    pigato_worker_over_concurrency (pigato_worker_t *self);

//  Connects to a broker and announces the service (READY). May be called
//  for several brokers: the worker serves through all of them at once,
//  each on its own connection. A broker that is lost (connection dropped,
//  or silent for heartbeat x liveness) is reconnected to, with READY
//  again once it listens; the other brokers are not disturbed. Replies
//  to requests that came through the lost connection go inactive.
PIGATO_EXPORT int
    pigato_worker_connect (pigato_worker_t *self, const char *endpoint);

//  Processes what is ready, waiting at most timeout_ms (-1 = until
//  something happens). Returns 0, E_INTERRUPTED, E_CLOSED (stopped), or
//  once per refusal, while no broker has the worker, the refusal:
//  PIGATO_E_AUTH (a broker refused the worker's key), PIGATO_E_HANDSHAKE
//  (no server key passed the handshake, or one side is insecure) or
//  PIGATO_E_DENIED (the broker refused READY: the identity may not serve
//  this name; pigato-broker says why in its DISCONNECT), with
//  pigato_worker_error () saying why. The worker keeps trying, backing
//  off (exponential from 0.5 s to 30 s, jittered; never sooner than the
//  next heartbeat tick) while the refusals go on: wait again to go on.
PIGATO_EXPORT int
    pigato_worker_wait (pigato_worker_t *self, int timeout_ms);

//  Runs until pigato_worker_stop (), a signal, or a refusal as above
//  (returned; run again to keep trying).
PIGATO_EXPORT int
    pigato_worker_run (pigato_worker_t *self);

//  The last refusal (as for pigato_worker_wait ()) while no broker has
//  the worker, else PIGATO_OK: how an application on a zloop learns it.
PIGATO_EXPORT int
    pigato_worker_refusal (pigato_worker_t *self);

//  Sends DISCONNECT to the brokers and makes run () return.
PIGATO_EXPORT void
    pigato_worker_stop (pigato_worker_t *self);

//  Drains the worker, for a stop that fails nothing (pigato serve does it
//  on SIGTERM): the worker announces no room (a heartbeat with
//  concurrency 0, at once, to every broker), so no broker hands it a new
//  request; a request that still arrives (sent before the broker heard)
//  goes back at once as a reject ("E_DRAINING ..."), and the broker gives
//  it to another worker, the handler never sees it. The requests the
//  handler has (pigato_worker_pending ()) are left to finish; once the
//  last one has ended and each broker has answered the heartbeat that
//  said no room (what it sent before has then arrived; a broker that does
//  not answer is waited for heartbeat x liveness), the worker stops as
//  pigato_worker_stop () does (DISCONNECT: run () returns 0, wait ()
//  E_CLOSED). After timeout_ms
//  (-1: no limit) it stops anyway: what it still holds goes inactive and
//  the broker sends it to another worker if it has a retry left, else
//  fails it (E_WORKER_LOST). A broker that is lost meanwhile is not
//  reconnected to. Not async-signal-safe: call it from the thread that
//  runs the worker (after wait () or run () returned PIGATO_E_INTERRUPTED
//  for a signal, or from a zloop timer). Returns 0, or E_CLOSED if the
//  worker was stopped; draining twice is harmless (the first timeout
//  stays).
PIGATO_EXPORT int
    pigato_worker_drain (pigato_worker_t *self, int timeout_ms);

//  Requests the handler was given and has not ended yet (end, error,
//  reject or destroy).
PIGATO_EXPORT size_t
    pigato_worker_pending (pigato_worker_t *self);

//  Registers with an application's zloop (czmq zloop_t), as the client
//  does (sockets polled through their ZMQ_FDs). Destroy the worker before
//  the zloop, and never from inside one of its handlers.
PIGATO_EXPORT int
    pigato_worker_attach (pigato_worker_t *self, void *zloop);

//  The service this worker offers (borrowed).
PIGATO_EXPORT const char *
    pigato_worker_service (pigato_worker_t *self);

//  Last error message (borrowed).
PIGATO_EXPORT const char *
    pigato_worker_error (pigato_worker_t *self);

//  Replies are never bigger than the broker accepts (the broker would drop
//  the worker's connection, failing every request it holds there). A
//  body over PIGATO_BODY_MAX (data, or message / reason as a JSON string)
//  is not sent: the request ends at once with the error reply
//  "E_TOO_LARGE reply of N bytes exceeds the broker's limit of M bytes"
//  ("partial reply", "error message" or "reject reason" in place of
//  "reply"; a reject stays a reject, with that reason), the call returns
//  PIGATO_E_TOO_LARGE and pigato_worker_error () holds the text. The
//  worker's other requests are not affected.

//  Sends a partial reply. Returns 0, E_ENDED, E_CLOSED (connection gone)
//  or E_TOO_LARGE (the request is then ended, see above).
PIGATO_EXPORT int
    pigato_reply_write (pigato_reply_t *self, const void *data, size_t size);

//  Sends the final reply. Returns 0, E_ENDED, E_CLOSED or E_TOO_LARGE.
PIGATO_EXPORT int
    pigato_reply_end (pigato_reply_t *self, const void *data, size_t size);

//  Sends a final error reply; message is sent as a JSON string.
PIGATO_EXPORT int
    pigato_reply_error (pigato_reply_t *self, const char *message);

//  Rejects the request: the broker hands it to another worker that has
//  not rejected it, one that joins later included, until its timeout.
PIGATO_EXPORT int
    pigato_reply_reject (pigato_reply_t *self, const char *reason);

//  Sends a heartbeat to the broker now.
PIGATO_EXPORT int
    pigato_reply_heartbeat (pigato_reply_t *self);

//  True while the client still cares: not ended, connection alive, the
//  client heartbeats the request (or it is younger than the liveness
//  window), and it has not timed out.
PIGATO_EXPORT bool
    pigato_reply_active (pigato_reply_t *self);

//  True once end, error or reject was called.
PIGATO_EXPORT bool
    pigato_reply_ended (pigato_reply_t *self);

//  The requested service name, the request opts as JSON text, and the rid
//  (all borrowed).
PIGATO_EXPORT const char *
    pigato_reply_service (pigato_reply_t *self);
PIGATO_EXPORT const char *
    pigato_reply_opts (pigato_reply_t *self);
//  The rid is bytes chosen by the client (or, for an MDP client, by the
//  broker: 9 bytes starting with 0x00), followed by a NUL for
//  convenience. A text rid (libpigato and Node pigato clients) reads
//  fine as a C string; pigato_reply_rid_bytes () gives every rid whole,
//  writing its size (at most PIGATO_RID_MAX) to *size.
PIGATO_EXPORT const char *
    pigato_reply_rid (pigato_reply_t *self);
PIGATO_EXPORT const void *
    pigato_reply_rid_bytes (pigato_reply_t *self, size_t *size);

//  Which attempt this is at the request, from 1: the broker's "attempt"
//  opt (docs/protocol.md, "Retries and duplicates"). Above 1, the request
//  may already have run on a worker that was lost (or reached a worker
//  through a broker that was lost): with the rid, what a handler needs
//  to recognise a request it has already done.
PIGATO_EXPORT int
    pigato_reply_attempt (pigato_reply_t *self);

//  Destroys a reply handle. If it was not ended, an error reply
//  "E_DROPPED" is sent so the client does not wait for its timeout.
PIGATO_EXPORT void
    pigato_reply_destroy (pigato_reply_t **self_p);

//  -------------------------------------------------------------------------
//  Broker: one ROUTER socket, routes requests from clients to workers.

typedef struct _pigato_broker_t pigato_broker_t;

//  Creates a broker; NULL if out of memory.
PIGATO_EXPORT pigato_broker_t *
    pigato_broker_new (void);

PIGATO_EXPORT void
    pigato_broker_destroy (pigato_broker_t **self_p);

//  The broker's own key pair, from a zcert secret key file (CURVE server).
//  Or the broker's certificate NAME.crt (pigato-keygen issue), whose
//  secret is NAME.key_secret beside it and must hold the certificate's
//  key: the broker then warns ahead of the certificate's expiry (see
//  pigato_broker_set_cert_warn_days).
PIGATO_EXPORT int
    pigato_broker_set_key_file (pigato_broker_t *self, const char *path);

//  How many days ahead of a certificate's expiry the broker logs
//  event=certificate_expiring (a warning; default 14, at most 3650; 0 =
//  only once expired): its own certificate (given as its key file), each
//  trusted CA and each identity certificate of the ACL's trust lines.
//  Checked when the broker starts running, after each reload and once a
//  day. PIGATO_E_INVALID out of range.
PIGATO_EXPORT int
    pigato_broker_set_cert_warn_days (pigato_broker_t *self, int days);

//  No encryption; every peer is the identity "anonymous".
PIGATO_EXPORT void
    pigato_broker_set_insecure (pigato_broker_t *self, bool insecure);

//  CURVE, any client key, everything permitted (excludes an ACL).
PIGATO_EXPORT void
    pigato_broker_set_allow_any (pigato_broker_t *self, bool allow_any);

PIGATO_EXPORT void
    pigato_broker_set_heartbeat (pigato_broker_t *self, int interval_ms,
                                 int liveness);

//  Dispatch mode: "load" (least requests in flight) or "rand".
PIGATO_EXPORT int
    pigato_broker_set_dmode (pigato_broker_t *self, const char *mode);

//  Busy polling: after routing messages, keep polling without sleeping
//  for up to usecs microseconds (default 0 = off; at most 100000). Cuts
//  the latency of request/reply conversations (the next message is read
//  without waking a sleeping thread) at the cost of CPU while traffic
//  flows: a core spins up to usecs after every burst.
PIGATO_EXPORT void
    pigato_broker_set_busy_poll (pigato_broker_t *self, int usecs);

//  Reply cache budget in bytes (default 64 MiB; 0 turns caching off). A
//  worker's final reply with opts {"cache": MS} answers identical requests
//  (same service name, same body) for MS milliseconds, oldest entries
//  dropped first beyond the budget; callers still need `call` on the
//  service, and requests naming a workerId are never served from it.
PIGATO_EXPORT void
    pigato_broker_set_cache_max (pigato_broker_t *self, size_t max_bytes);

//  The most connections the broker keeps open at once (0, the default:
//  the process's file limit, RLIMIT_NOFILE, less a reserve for the
//  broker's own files). A connection accepted beyond it is shut at once,
//  before its handshake, and counted ("connections_refused"), so libzmq
//  never runs out of file descriptors (at EMFILE its accept loop spins).
//  Set before the first bind; PIGATO_E_INVALID if negative or after it.
PIGATO_EXPORT int
    pigato_broker_set_max_connections (pigato_broker_t *self, int max);

//  The maximum in force: what was set, or once bound the one derived
//  from the file limit (0 before the first bind if none was set).
PIGATO_EXPORT int
    pigato_broker_max_connections (pigato_broker_t *self);

//  How long a new connection may take to finish its handshake (ZMTP
//  greeting, CURVE, our ZAP check) before the broker closes it: default
//  PIGATO_HANDSHAKE_TIMEOUT_MS; 0 = no limit (libzmq's default is 30 s).
//  Set before the first bind; PIGATO_E_INVALID if negative or after it.
PIGATO_EXPORT int
    pigato_broker_set_handshake_timeout (pigato_broker_t *self, int msecs);

//  Byte budgets. Per connection: at most max_inbound bytes received that
//  the broker has not read yet (libzmq gives the broker a message only
//  once all its parts are in), at most max_outbound bytes sent that the
//  peer has not acknowledged (a slow consumer); a connection over either
//  is cut, logged (event=inbound_over_budget, event=slow_consumer) and
//  counted ("inbound_cut", "slow_consumers"). max_memory is the ceiling
//  on the process's resident size: over it new requests get E_OVERLOADED
//  ("over_memory") and the connection holding the most unread or unsent
//  bytes is cut ("memory_cut"). Defaults: PIGATO_MAX_INBOUND,
//  PIGATO_MAX_OUTBOUND, half of physical memory (0). max_inbound must be
//  above the largest message the broker takes (about 34 MiB: a body and
//  opts of PIGATO_BODY_MAX each). Set before the first bind;
//  PIGATO_E_INVALID if out of range or after it.
PIGATO_EXPORT int
    pigato_broker_set_max_memory (pigato_broker_t *self, int64_t bytes);
PIGATO_EXPORT int
    pigato_broker_set_max_inbound (pigato_broker_t *self, int64_t bytes);
PIGATO_EXPORT int
    pigato_broker_set_max_outbound (pigato_broker_t *self, int64_t bytes);

//  The memory ceiling in force: what was set, or once bound half of
//  physical memory (0 before the first bind if none was set).
PIGATO_EXPORT int64_t
    pigato_broker_max_memory (pigato_broker_t *self);

//  The mesh policy file (docs/security.md): identities, groups,
//  allow/deny rules. Validated now; on error returns PIGATO_E_ACL and
//  pigato_broker_error () says "FILE:LINE: what is wrong". With CURVE this
//  is the production mode; with insecure it applies to "anonymous".
PIGATO_EXPORT int
    pigato_broker_set_acl (pigato_broker_t *self, const char *path);

//  Durable requests (ZeroMQ RFC 9, Titanic; docs/protocol.md): the
//  broker answers titanic.request, titanic.reply and titanic.close
//  itself and keeps requests and replies in a SQLite database (WAL, every
//  commit fsync'd) in folder dir, made 0700 if missing (an existing one
//  must be 0700 too), file titanic.db (0600). Opens the store and reads
//  what it holds now (logged as event=titanic_recovered); the broker
//  writes from a thread of its own. max_bytes > 0 caps the database
//  file: past it, new requests are refused as on a full disk (0: no
//  cap). Returns 0, PIGATO_E_INVALID (no folder, a store set already) or
//  PIGATO_E_STORE with the reason in pigato_broker_error () (a folder or
//  file others may read, a file that is not a pigato store, a store that
//  cannot be written, ...). Without a store those names are ordinary
//  services.
PIGATO_EXPORT int
    pigato_broker_set_store (pigato_broker_t *self, const char *dir,
                             int64_t max_bytes);

//  Before pigato_broker_set_store: when a durable request is acknowledged.
//  interval_ms 0 (the default): once its commit is fsync'd, so that
//  neither a crash nor a power cut loses an acknowledged request.
//  interval_ms > 0: once its commit is written to the operating system,
//  the store file fsync'd every interval_ms at most (and at a clean
//  stop): a crash of the broker loses nothing acknowledged, a power cut
//  or an operating system crash may lose what was acknowledged in the
//  last interval_ms (the durability of NATS JetStream's sync_interval).
//  Returns 0, or PIGATO_E_INVALID (negative, or a store set already).
PIGATO_EXPORT int
    pigato_broker_set_store_sync (pigato_broker_t *self, int64_t interval_ms);

//  Asks the running broker to re-read its policy file, atomically: a bad
//  file keeps the old policy (and is logged). Async-signal-safe: call it
//  from a SIGHUP handler.
PIGATO_EXPORT void
    pigato_broker_request_reload (pigato_broker_t *self);

//  What the broker tells the program that runs it, for a service manager
//  (pigato-broker sends systemd's RELOADING=1, READY=1 and STOPPING=1 on
//  them): a reload begins (SIGHUP) and ends, whatever came of it (a bad
//  file keeps the old policy: the broker serves on), and the broker begins
//  to stop (once). Called on the thread in pigato_broker_run (), never
//  from a signal handler.
typedef enum {
    PIGATO_BROKER_RELOADING = 1,
    PIGATO_BROKER_RELOADED = 2,
    PIGATO_BROKER_STOPPING = 3
} pigato_broker_state_t;

typedef void (pigato_broker_state_fn) (pigato_broker_t *broker, int state,
                                       void *arg);

//  Sets the function told of those states (NULL: none, the default).
PIGATO_EXPORT void
    pigato_broker_set_state_hook (pigato_broker_t *self,
                                  pigato_broker_state_fn *hook, void *arg);

//  Binds an endpoint: tcp://HOST:PORT (HOST may be *, an interface, or an
//  IPv6 address in brackets, tcp://[::1]:5555; PORT may be * for any),
//  ipc://PATH. The first bind applies the security settings; settings
//  cannot change afterwards. Returns 0, PIGATO_E_INVALID for an endpoint
//  without a transport or with a port outside 0 to 65535 (the reason in
//  pigato_broker_error ()), or PIGATO_E_BIND.
PIGATO_EXPORT int
    pigato_broker_bind (pigato_broker_t *self, const char *endpoint);

//  The endpoint of the last bind, resolved (tcp://127.0.0.1:* becomes the
//  port actually bound). Borrowed; NULL before any bind.
PIGATO_EXPORT const char *
    pigato_broker_endpoint (pigato_broker_t *self);

//  Runs the event loop until pigato_broker_stop () (from a signal
//  handler is fine) or zsys_interrupted is set (E_INTERRUPTED). The
//  library catches no signal itself (see the top of this file).
PIGATO_EXPORT int
    pigato_broker_run (pigato_broker_t *self);

//  Makes run () return soon, whatever it holds: requests in flight are
//  lost (their clients see the broker go). Async-signal-safe.
PIGATO_EXPORT void
    pigato_broker_stop (pigato_broker_t *self);

//  Drains the broker (docs/protocol.md, "Drain"; pigato-broker does it on
//  SIGTERM, stop true, and SIGUSR2, stop false): from its next turn it
//  refuses new requests with E_DRAINING (libpigato clients send them to
//  another broker; others get the error), tells its pigato clients (a
//  notice, at once to those it holds requests of, to the others in its
//  answer to their next heartbeat), hands back to libpigato clients the
//  requests no worker has seen yet, and lets the requests in flight
//  finish. stop: once none is held, run () returns 0; at the drain
//  timeout the requests left are failed (E_DRAIN_TIMEOUT) and run ()
//  returns 0. Not stop (lame duck): the broker stays up and keeps
//  refusing, with no timeout, until stopped (a later call with stop true
//  turns it into a drain that stops, its timeout counted from then).
//  Logs event=drain_started and event=drained (what became of the
//  requests held: finished, moved, abandoned, other). Async-signal-safe.
PIGATO_EXPORT void
    pigato_broker_request_drain (pigato_broker_t *self, bool stop);

//  How long a drain that stops waits for the requests in flight, in ms
//  (default PIGATO_DRAIN_TIMEOUT_MS; 0: fail them at once). Any time
//  before the drain begins; PIGATO_E_INVALID if negative.
PIGATO_EXPORT int
    pigato_broker_set_drain_timeout (pigato_broker_t *self, int msecs);

//  A counter by name ("requests", "replies", "bad_messages", "denied",
//  "workers", "timeouts", "unsent": messages dropped because their
//  connection had closed, "connections": open now, "connections_refused":
//  shut for being over the maximum, "over_quota": $dir and mmi.* requests
//  refused with E_QUOTA, "over_memory": requests refused with E_OVERLOADED
//  over the memory ceiling, "inbound_cut", "slow_consumers", "memory_cut":
//  connections cut for their byte budgets, ...; with a store,
//  "titanic_submitted", "titanic_duplicates", "titanic_refused",
//  "titanic_attempts", "titanic_retries", "titanic_replied",
//  "titanic_expired", "titanic_denied", "titanic_closed",
//  "titanic_deleted", "titanic_write_failures", "titanic_commits"
//  (transactions), "titanic_operations" (the writes they held),
//  "titanic_syncs" (the fdatasyncs that made them durable),
//  "titanic_broken" (1 once the store takes nothing more: a failed
//  fdatasync) and "titanic_stored", "titanic_in_flight", "titanic_parked" (waiting for
//  a worker of their service) now); "draining": 0 serving, 1 lame duck,
//  2 draining to stop, "drain_refused", "drain_moved",
//  "drain_abandoned": requests refused, handed back and failed by a
//  drain; -1 for an unknown name.
PIGATO_EXPORT int64_t
    pigato_broker_counter (pigato_broker_t *self, const char *name);

//  Serves the broker's metrics over HTTP at address "HOST:PORT" (HOST:
//  an IPv4 address, an IPv6 address in brackets, a host name, or * for
//  every interface; PORT 0: any free one): GET /metrics answers in the
//  Prometheus text format 0.0.4 (docs/cli.md lists the metrics), from
//  libmicrohttpd's thread, with a text the broker's loop renders on its
//  own thread (at most one every 500 ms; a scrape waits for it at most
//  2 s, then gets the last one, or 503 while the loop does not run).
//  Other paths get 404, other methods 405; at most 4 connections at
//  once. Off unless called; binds at once; call before run (). Returns 0,
//  PIGATO_E_INVALID (not HOST:PORT, an unknown host, or called twice),
//  PIGATO_E_BIND (cannot listen there), with the reason in
//  pigato_broker_error ().
PIGATO_EXPORT int
    pigato_broker_set_metrics_listen (pigato_broker_t *self,
                                      const char *address);

//  The address the metrics are served on, "HOST:PORT" with the port
//  bound (borrowed); NULL if they are not served.
PIGATO_EXPORT const char *
    pigato_broker_metrics_address (pigato_broker_t *self);

//  Last error message (borrowed).
PIGATO_EXPORT const char *
    pigato_broker_error (pigato_broker_t *self);

#ifdef __cplusplus
}
#endif

#endif
