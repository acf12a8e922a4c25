/*  =========================================================================
    broker.c - pigato_broker: the object, its one ROUTER socket (with the
    ZAP handler bound first and a monitor for connection events) and the
    event loop. What happens to each message: the front-ends decode it
    (front_pigato.c, front_mdp.c), the core routes it (core.c).
    =========================================================================
*/
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include "broker_internal.h"
#include "../../certs/ca.h"
#include "../../keys/keyfile.h"

#define MAX_MESSAGE_SIZE PIGATO__MAX_MESSAGE_SIZE
#define SOCKET_HWM       100000
#define BATCH            256  //  messages handled per poll wake-up
//  ZMQ_ZAP_ENFORCE_DOMAIN is a draft option in libzmq 4.3 headers, but the
//  library accepts it by number
#define ZMQ_ZAP_ENFORCE_DOMAIN_OPTION 93
//  The file descriptors kept for the broker's own use when the maximum of
//  connections comes from the file limit: libzmq's (an epoll and a
//  mailbox per I/O thread, a mailbox per socket, the listeners), stdio,
//  key, ACL and certificate files, and connections accepted in a burst
//  before the loop shuts them. A sixteenth of the limit on top.
#define FD_RESERVE 64
#define FD_CAP     (1 << 20)  //  an unlimited or huge limit counts as this

//  The core's policy (core.h): the guard's current one.
static bool
s_allows (void *arg, const char *identity, int verb, const char *name)
{
    pigato_broker_t *self = (pigato_broker_t *) arg;
    return pigato__guard_allows (self->guard, identity, verb, name);
}

//  The core's quotas (core.h): the guard's current policy's.
static void
s_limits (void *arg, const char *identity, pigato__limits_t *limits)
{
    pigato_broker_t *self = (pigato_broker_t *) arg;
    pigato__guard_limits (self->guard, identity, limits);
}

pigato_broker_t *
pigato_broker_new (void)
{
    pigato__signals_leave ();
    pigato_broker_t *self = (pigato_broker_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->core = pigato__core_new (&pigato__broker_emit, self);
    self->handshake_timeout_ms = PIGATO_HANDSHAKE_TIMEOUT_MS;
    self->cert_warn_seconds = (int64_t) PIGATO__CERT_WARN_DAYS_DEFAULT * 86400;
    self->drain.timeout_ms = PIGATO_DRAIN_TIMEOUT_MS;
    pigato__budget_init (&self->budget);
    for (size_t index = 0; index < PIGATO__PARTS_MAX; index++)
        zmq_msg_init (&self->input.parts [index]);
    if (!self->core) {
        pigato_broker_destroy (&self);
        return NULL;
    }
    self->metrics.started_at = (int64_t) time (NULL);
    pigato__core_set_stats_answer (self->core, pigato__metrics_stats_answer,
                                   self);
    return self;
}

void
pigato_broker_destroy (pigato_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato_broker_t *self = *self_p;
    //  The scrape server's thread ends before anything goes
    pigato__metrics_http_destroy (&self->metrics.http);
    //  Durable requests first (their store thread ends), then the core:
    //  destroying requests closes their shared body parts
    pigato__titanic_destroy (&self->titanic);
    pigato__core_destroy (&self->core);
    pigato__outbox_destroy (&self->outbox);
    for (size_t index = 0; index < PIGATO__PARTS_MAX; index++)
        zmq_msg_close (&self->input.parts [index]);
    zsock_destroy (&self->monitor);
    zsock_destroy (&self->router);
    pigato__guard_destroy (&self->guard);
    pigato__acl_destroy (&self->policy);
    pigato__budget_close (&self->budget);
    free (self->dying);
    free (self->refusing);
    free (self->shaking);
    free (self->acl_path);
    free (self->key_file);
    free (self->cert_file);
    free (self);
    *self_p = NULL;
}

//  The key files set_key_file takes: a zcert secret (or public) file, or
//  the broker's certificate NAME.crt with NAME.key_secret beside it. For a
//  certificate, *secret_p is that secret file's path (the caller frees
//  it) and the certificate must hold the secret's public key.
static int
s_key_files (pigato_broker_t *self, const char *path, char **secret_p)
{
    *secret_p = NULL;
    pigato__keyfile_info_t file;
    int rc = pigato__keyfile_inspect (path, &file, self->error,
                                      sizeof self->error);
    if (rc || !file.pem)
        return rc;
    size_t length = strlen (path);
    pigato__cert_info_t info;
    rc = pigato__cert_read (path, &info, self->error, sizeof self->error);
    if (rc)
        return rc;
    if (length <= 4 || !streq (path + length - 4, ".crt")) {
        pigato__errorf (self->error, sizeof self->error,
                        "'%s' is a certificate: give it as NAME.crt, with "
                        "its secret key NAME.key_secret beside it",
                        path);
        return PIGATO_E_KEY;
    }
    char *secret = zsys_sprintf ("%.*s.key_secret", (int) (length - 4), path);
    zcert_t *cert = NULL;
    if (!secret)
        return PIGATO_E_NOMEM;
    rc = pigato__keyfile_load_secret (secret, &cert, self->error,
                                      sizeof self->error);
    if (rc == 0 && memcmp (zcert_public_key (cert), info.public_key, 32)) {
        pigato__errorf (self->error, sizeof self->error,
                        "'%s' (%s) holds another key than '%s': the broker "
                        "would show clients a certificate it cannot prove",
                        path, info.name, secret);
        rc = PIGATO_E_KEY;
    }
    pigato__keyfile_cert_destroy (&cert);
    if (rc)
        zstr_free (&secret);
    *secret_p = secret;
    return rc;
}

int
pigato_broker_set_key_file (pigato_broker_t *self, const char *path)
{
    if (!path)
        return PIGATO_E_INVALID;
    char *secret = NULL;
    int rc = s_key_files (self, path, &secret);
    zcert_t *cert = NULL;
    if (rc == 0 && !secret)
        rc = pigato__keyfile_load_secret (path, &cert, self->error,
                                          sizeof self->error);
    pigato__keyfile_cert_destroy (&cert);
    if (rc)
        return rc;
    char *key_file = secret ? secret : strdup (path);
    char *cert_file = secret ? strdup (path) : NULL;
    if (!key_file || (secret && !cert_file)) {
        free (key_file);
        free (cert_file);
        return PIGATO_E_NOMEM;
    }
    free (self->key_file);
    free (self->cert_file);
    self->key_file = key_file;
    self->cert_file = cert_file;
    return 0;
}

int
pigato_broker_set_cert_warn_days (pigato_broker_t *self, int days)
{
    if (days < 0 || days > 3650) {
        pigato__errorf (self->error, sizeof self->error,
                        "certificate warning of %d days is out of range "
                        "(0 to 3650)",
                        days);
        return PIGATO_E_INVALID;
    }
    self->cert_warn_seconds = (int64_t) days * 86400;
    return 0;
}

void
pigato_broker_set_insecure (pigato_broker_t *self, bool insecure)
{
    self->insecure = insecure;
}

void
pigato_broker_set_allow_any (pigato_broker_t *self, bool allow_any)
{
    self->allow_any = allow_any;
}

void
pigato_broker_set_heartbeat (pigato_broker_t *self, int interval_ms,
                             int liveness)
{
    if (interval_ms > 0)
        self->core->heartbeat_ms = interval_ms;
    if (liveness > 0)
        self->core->liveness = liveness;
}

int
pigato_broker_set_dmode (pigato_broker_t *self, const char *mode)
{
    if (mode && streq (mode, "load"))
        self->core->dmode = PIGATO__DMODE_LOAD;
    else if (mode && streq (mode, "rand"))
        self->core->dmode = PIGATO__DMODE_RAND;
    else {
        pigato__errorf (self->error, sizeof self->error,
                        "unknown dispatch mode '%s' (expected load or rand)",
                        mode ? mode : "");
        return PIGATO_E_INVALID;
    }
    return 0;
}

void
pigato_broker_set_busy_poll (pigato_broker_t *self, int usecs)
{
    self->busy_poll_us = usecs < 0 ? 0 : usecs > 100000 ? 100000 : usecs;
}

void
pigato_broker_set_cache_max (pigato_broker_t *self, size_t max_bytes)
{
    pigato__cache_set_max (self->core->cache, max_bytes);
}

int
pigato_broker_set_max_connections (pigato_broker_t *self, int max)
{
    if (max < 0 || self->router) {
        pigato__errorf (self->error, sizeof self->error,
                        max < 0 ? "the maximum of connections must be >= 0"
                                : "set the maximum of connections before the "
                                  "first bind");
        return PIGATO_E_INVALID;
    }
    self->max_connections = max;
    return 0;
}

int
pigato_broker_max_connections (pigato_broker_t *self)
{
    return self->max_connections;
}

int
pigato_broker_set_handshake_timeout (pigato_broker_t *self, int msecs)
{
    if (msecs < 0 || self->router) {
        pigato__errorf (self->error, sizeof self->error,
                        msecs < 0 ? "the handshake timeout must be >= 0"
                                  : "set the handshake timeout before the "
                                    "first bind");
        return PIGATO_E_INVALID;
    }
    self->handshake_timeout_ms = msecs;
    return 0;
}

//  A byte budget's setter: before the first bind, within bounds.
static int
s_set_budget (pigato_broker_t *self, int64_t *field, int64_t bytes,
              int64_t minimum, const char *what)
{
    if (bytes < minimum || self->router) {
        pigato__errorf (self->error, sizeof self->error,
                        bytes < minimum ? "%s must be at least %" PRId64
                                          " bytes"
                                        : "set %s before the first bind",
                        what, minimum);
        return PIGATO_E_INVALID;
    }
    *field = bytes;
    return 0;
}

int
pigato_broker_set_max_memory (pigato_broker_t *self, int64_t bytes)
{
    return s_set_budget (self, &self->budget.max_memory, bytes, 1024 * 1024,
                         "the memory ceiling");
}

int
pigato_broker_set_max_inbound (pigato_broker_t *self, int64_t bytes)
{
    //  A connection must be able to send the largest message
    return s_set_budget (self, &self->budget.max_inbound, bytes,
                         PIGATO__MESSAGE_BYTES_MAX, "the inbound budget");
}

int
pigato_broker_set_max_outbound (pigato_broker_t *self, int64_t bytes)
{
    return s_set_budget (self, &self->budget.max_outbound, bytes,
                         PIGATO__MESSAGE_BYTES_MAX, "the outbound budget");
}

int64_t
pigato_broker_max_memory (pigato_broker_t *self)
{
    return self->budget.max_memory;
}

const char *
pigato_broker_error (pigato_broker_t *self)
{
    return self->error;
}

int64_t
pigato_broker_counter (pigato_broker_t *self, const char *name)
{
#define COUNTER_LOOKUP(field)                                                  \
    if (streq (name, #field))                                                  \
        return self->core->counters.field;
    CORE_COUNTERS (COUNTER_LOOKUP)
#undef COUNTER_LOOKUP
    if (streq (name, "workers"))
        return (int64_t) zhashx_size (self->core->workers);
    if (streq (name, "denied"))
        return self->guard ? pigato__guard_denials (self->guard) : 0;
    if (streq (name, "zap_denied"))
        return self->guard ? pigato__guard_zap_denials (self->guard) : 0;
    if (streq (name, "identities"))
        return self->guard
                 ? (int64_t) pigato__guard_identity_count (self->guard)
                 : 0;
    if (streq (name, "rules"))
        return self->guard ? (int64_t) pigato__guard_rule_count (self->guard)
                           : 0;
    if (streq (name, "connections"))
        return self->connections;
    if (streq (name, "connections_refused"))
        return self->connections_refused;
    if (streq (name, "connections_evicted"))
        return self->connections_evicted;
    if (streq (name, "inbound_cut"))
        return self->budget.inbound_cut;
    if (streq (name, "slow_consumers"))
        return self->budget.slow_consumers;
    if (streq (name, "memory_cut"))
        return self->budget.memory_cut;
    if (streq (name, "messages_too_large"))
        return self->budget.too_large;
    if (streq (name, "memory_scans"))
        return self->budget.scans;
    if (streq (name, "requests_pending"))
        return (int64_t) pigato__table_size (self->core->requests);
    if (streq (name, "services"))
        return (int64_t) pigato__services_size (self->core->services);
    if (streq (name, "cache_hits"))
        return pigato__cache_hits (self->core->cache);
    if (streq (name, "cache_entries"))
        return (int64_t) pigato__cache_entries (self->core->cache);
    if (streq (name, "draining"))
        return self->drain.state;
    if (streq (name, "drain_refused"))
        return self->core->drain_refused;
    if (streq (name, "drain_moved"))
        return self->drain.moved;
    if (streq (name, "drain_abandoned"))
        return self->drain.abandoned;
    if (streq (name, "batches_out"))
        return self->outbox ? pigato__outbox_batches (self->outbox) : 0;
    if (streq (name, "entries_out"))
        return self->outbox ? pigato__outbox_entries (self->outbox) : 0;
    if (strncmp (name, "titanic_", 8) == 0)
        return self->titanic ? pigato__titanic_counter (self->titanic, name + 8)
                             : -1;
    return -1;
}

int
pigato_broker_set_store_sync (pigato_broker_t *self, int64_t interval_ms)
{
    if (interval_ms < 0 || self->titanic) {
        pigato__errorf (self->error, sizeof self->error,
                        self->titanic ? "the store is open already: set its "
                                        "sync before it"
                                      : "the sync interval must be >= 0");
        return PIGATO_E_INVALID;
    }
    self->store_sync = interval_ms;
    return 0;
}

int
pigato_broker_set_store (pigato_broker_t *self, const char *dir,
                         int64_t max_bytes)
{
    if (!dir || !*dir || max_bytes < 0 || self->titanic) {
        pigato__errorf (self->error, sizeof self->error,
                        self->titanic ? "the broker has a store already"
                                      : "the store needs a folder and a "
                                        "size limit >= 0");
        return PIGATO_E_INVALID;
    }
    char error [sizeof self->error];
    self->titanic = pigato__titanic_new (self, dir, max_bytes, error,
                                         sizeof error);
    if (!self->titanic) {
        pigato__errorf (self->error, sizeof self->error, "%s", error);
        return PIGATO_E_STORE;
    }
    return 0;
}

int
pigato_broker_set_acl (pigato_broker_t *self, const char *path)
{
    if (!path)
        return PIGATO_E_INVALID;
    if (self->router) {
        pigato__errorf (self->error, sizeof self->error,
                        "set the ACL before the first bind");
        return PIGATO_E_INVALID;
    }
    //  Load now, so a bad file is reported before anything binds; the
    //  first bind hands it to the guard
    pigato__acl_t *policy = pigato__acl_load (path, self->error,
                                              sizeof self->error);
    if (!policy)
        return PIGATO_E_ACL;
    pigato__acl_destroy (&self->policy);
    self->policy = policy;
    free (self->acl_path);
    self->acl_path = strdup (path);
    return self->acl_path ? 0 : PIGATO_E_NOMEM;
}

//  The maximum of connections when none was set: the file limit less a
//  reserve, so that libzmq never meets EMFILE (its accept loop would
//  retry at once, for ever: a spinning I/O thread and nobody let in).
//  Logs what it found.
static void
s_derive_max_connections (pigato_broker_t *self)
{
    struct rlimit limit;
    int64_t files = 1024;  //  the usual soft limit, if we cannot tell
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0)
        files = limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > FD_CAP
                  ? FD_CAP
                  : (int64_t) limit.rlim_cur;
    if (self->max_connections == 0) {
        int64_t max = files - FD_RESERVE - files / 16;
        if (max < files / 2)
            max = files / 2;
        self->max_connections = max < 1 ? 1 : (int) max;
    }
    else if (self->max_connections > files - FD_RESERVE)
        pigato__log (PIGATO_LOG_WARNING,
                     "event=max_connections_high max_connections=%d "
                     "file_limit=%" PRId64 " reason=near_file_limit",
                     self->max_connections, files);
    pigato__log (
        PIGATO_LOG_INFO,
        "event=connection_limits max_connections=%d file_limit=%" PRId64
        " handshake_timeout_ms=%d",
        self->max_connections, files, self->handshake_timeout_ms);
}

//  The outbox sent a batch on a connection: counted against its budget.
static void
s_sent (void *arg, const pigato__conn_t *conn, uint64_t bytes, uint64_t frames)
{
    pigato__budget_sent ((pigato_broker_t *) arg, conn, bytes, frames);
}

//  Creates the gate (ZAP handler first: fail closed) and the ROUTER with
//  the security settings; called by the first bind.
static int
s_create_router (pigato_broker_t *self)
{
    int mode;
    if (self->insecure)
        mode = PIGATO__ZAP_NULL;
    else if (self->acl_path && !self->allow_any)
        mode = PIGATO__ZAP_POLICY;
    else if (self->allow_any && !self->acl_path)
        mode = PIGATO__ZAP_ANY_KEY;
    else {
        pigato__errorf (
            self->error, sizeof self->error,
            self->allow_any
                ? "--allow-any and --acl exclude each other"
                : "no security mode: give --acl FILE (CURVE, keys "
                  "and rules from the file), --allow-any (CURVE, any "
                  "client key) or --insecure (no encryption)");
        return PIGATO_E_INVALID;
    }
    if (!self->insecure && !self->key_file) {
        pigato__errorf (self->error, sizeof self->error,
                        "no broker key: give --key FILE (a zcert secret key "
                        "file), or --insecure");
        return PIGATO_E_KEY;
    }
    int rc = pigato__guard_new (mode, self->acl_path, &self->policy,
                                &self->guard, self->error, sizeof self->error);
    if (rc)
        return rc;
    pigato__core_set_policy (self->core, s_allows, self);
    pigato__core_set_limits (self->core, s_limits, self);
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    if (!router) {
        pigato__errorf (self->error, sizeof self->error,
                        "cannot create socket: %s",
                        zmq_strerror (zmq_errno ()));
        pigato__guard_destroy (&self->guard);
        return PIGATO_E_SYSTEM;
    }
    zsock_set_linger (router, 0);
    zsock_set_maxmsgsize (router, MAX_MESSAGE_SIZE);
    zsock_set_sndhwm (router, SOCKET_HWM);
    zsock_set_rcvhwm (router, SOCKET_HWM);
    zsock_set_rcvtimeo (router, 0);
    zsock_set_backlog (router, 1024);  //  reconnect storms: no dropped SYNs
    //  A connection that does not finish its handshake in time is closed:
    //  idle unauthenticated connections must not hold their fds long
    zsock_set_handshake_ivl (router, self->handshake_timeout_ms);
    s_derive_max_connections (self);
    if (self->budget.max_memory == 0)
        self->budget.max_memory = pigato__budget_default_memory ();
    //  Accept and disconnect events tell which connection a routing id
    //  belongs to (conns.h)
    char monitor_endpoint [64];
    snprintf (monitor_endpoint, sizeof monitor_endpoint,
              "inproc://pigato-monitor-%p", (void *) self);
    self->monitor = zsock_new (ZMQ_PAIR);
    if (self->monitor) {
        zsock_set_rcvhwm (self->monitor, 0);
        zsock_set_rcvtimeo (self->monitor, 0);
    }
    if (!self->monitor
        || zmq_socket_monitor (zsock_resolve (router), monitor_endpoint,
                               ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED)
        || zsock_connect (self->monitor, "%s", monitor_endpoint)) {
        pigato__errorf (self->error, sizeof self->error,
                        "cannot monitor the broker socket: %s",
                        zmq_strerror (zmq_errno ()));
        zsock_destroy (&self->monitor);
        zsock_destroy (&router);
        pigato__guard_destroy (&self->guard);
        return PIGATO_E_SYSTEM;
    }
    //  Every handshake goes through our handler, NULL mechanism included;
    //  with ZAP_ENFORCE_DOMAIN no handler means nobody gets in
    zsock_set_zap_domain (router, PIGATO__ZAP_DOMAIN);
    int enforce = 1;
    if (zmq_setsockopt (zsock_resolve (router), ZMQ_ZAP_ENFORCE_DOMAIN_OPTION,
                        &enforce, sizeof enforce)) {
        pigato__errorf (self->error, sizeof self->error,
                        "this libzmq does not enforce ZAP domains (%s); "
                        "refusing to run without authentication",
                        zmq_strerror (zmq_errno ()));
        zsock_destroy (&self->monitor);
        zsock_destroy (&router);
        pigato__guard_destroy (&self->guard);
        return PIGATO_E_SYSTEM;
    }
    if (!self->insecure) {
        zcert_t *cert = NULL;
        rc = pigato__keyfile_load_secret (self->key_file, &cert, self->error,
                                          sizeof self->error);
        if (rc) {
            zsock_destroy (&self->monitor);
            zsock_destroy (&router);
            pigato__guard_destroy (&self->guard);
            return rc;
        }
        zcert_apply (cert, router);
        zsock_set_curve_server (router, 1);
        pigato__keyfile_cert_destroy (&cert);
    }
    self->budget.curve = !self->insecure;
    self->outbox = pigato__outbox_new (zsock_resolve (router),
                                       self->budget.curve, s_sent, self);
    if (!self->outbox) {
        zsock_destroy (&self->monitor);
        zsock_destroy (&router);
        pigato__guard_destroy (&self->guard);
        return PIGATO_E_NOMEM;
    }
    self->router = router;
    self->router_handle = zsock_resolve (router);
    return 0;
}

int
pigato_broker_bind (pigato_broker_t *self, const char *endpoint)
{
    bool ipv6;
    if (pigato__endpoint_check (endpoint, true, &ipv6, self->error,
                                sizeof self->error))
        return PIGATO_E_INVALID;
    if (!self->router) {
        int rc = s_create_router (self);
        if (rc)
            return rc;
    }
    //  Per bind: libzmq binds IPv4 only unless told (tcp://[::1]:5555
    //  failed with "No such device"); tcp://*:N stays IPv4 as before
    zsock_set_ipv6 (self->router, ipv6);
    if (zsock_bind (self->router, "%s", endpoint) == -1) {
        pigato__errorf (self->error, sizeof self->error, "cannot bind '%s': %s",
                        endpoint, zmq_strerror (zmq_errno ()));
        return PIGATO_E_BIND;
    }
    return 0;
}

const char *
pigato_broker_endpoint (pigato_broker_t *self)
{
    return self->router ? zsock_endpoint (self->router) : NULL;
}

void
pigato_broker_stop (pigato_broker_t *self)
{
    self->stopping = 1;
}

void
pigato_broker_request_reload (pigato_broker_t *self)
{
    self->reload = 1;
}

//  Ends the connections that are dying: their workers go (requests
//  retry or fail), their clients' requests are dropped.
static void
s_dying_end (pigato_broker_t *self)
{
    for (size_t index = 0; index < self->dying_count; index++) {
        pigato__connlog_closed (self, self->dying [index]);
        pigato__conn_t dead = pigato__conns_disconnected (self->core->conns,
                                                          self->dying [index]);
        if (dead.fd >= 0)
            pigato__core_connection_lost (self->core, &dead);
    }
    self->dying_count = 0;
}

//  A connection closed: from now on nothing is sent to it, while what it
//  sent before is still read and routed (its last words: a final reply,
//  a DISCONNECT). It ends when the ROUTER holds nothing more, or after a
//  heartbeat interval on a broker that never runs dry.
static void
s_dying (pigato_broker_t *self, int fd)
{
    if (!pigato__conns_dying (self->core->conns, fd))
        return;
    if (self->dying_count == self->dying_max) {
        size_t max = self->dying_max ? self->dying_max * 2 : 64;
        int *dying = (int *) realloc (self->dying, max * sizeof (int));
        if (!dying) {
            //  Out of memory: it ends now, last words or not
            pigato__connlog_closed (self, fd);
            pigato__conn_t dead = pigato__conns_disconnected (self->core->conns,
                                                              fd);
            if (dead.fd >= 0)
                pigato__core_connection_lost (self->core, &dead);
            return;
        }
        self->dying = dying;
        self->dying_max = max;
    }
    if (self->dying_count == 0)
        self->dying_since = self->core->now_ms;
    self->dying [self->dying_count++] = fd;
}

void
pigato__broker_dying (pigato_broker_t *self, int fd)
{
    s_dying (self, fd);
}

//  A connection accepted over the maximum: its fd is shut once the
//  events that have arrived are all read (a later event in them may say
//  the fd closed, or even holds a newer connection). Out of memory, it
//  stays: the handshake timeout ends it.
static void
s_refuse (pigato_broker_t *self, int fd)
{
    if (self->refusing_count == self->refusing_max) {
        size_t max = self->refusing_max ? self->refusing_max * 2 : 64;
        int *refusing = (int *) realloc (self->refusing, max * sizeof (int));
        if (!refusing)
            return;
        self->refusing = refusing;
        self->refusing_max = max;
    }
    self->refusing [self->refusing_count++] = fd;
}

//  A refusing entry for a connection shut to let a newer one in (it was
//  still in its handshake when the limit was reached), not the newer one
#define EVICTED (1 << 30)

//  An fd closed: it is no longer one to shut.
static void
s_refuse_cancel (pigato_broker_t *self, int fd)
{
    for (size_t index = 0; index < self->refusing_count; index++)
        if ((self->refusing [index] & ~EVICTED) == fd) {
            self->refusing [index] = self->refusing [--self->refusing_count];
            return;
        }
}

//  Connections are remembered in accept order until their first message
//  (conns.h: in_handshake): when the maximum is reached, the oldest of
//  those that has been silent for EVICT_AFTER_MS goes. A handshake and a
//  pigato peer's first word take milliseconds, so only connections that
//  sit idle are evicted, never a burst of peers (reconnecting after a
//  restart) evicting one another. (libzmq's HANDSHAKE_SUCCEEDED event
//  would tell the handshake apart, but every monitor event is one more
//  for libzmq's I/O thread to queue, and it blocks when the monitor's
//  queue is full.) Entries that spoke or closed are dropped when met,
//  and compacted away when the list is full.
#define EVICT_AFTER_MS 1000

static void
s_shaking_add (pigato_broker_t *self, int fd)
{
    pigato__conn_t conn;
    if (pigato__conns_lookup (self->core->conns, fd, &conn)
        != PIGATO__CONN_OPEN)
        return;
    if (self->shaking_head + self->shaking_count == self->shaking_max) {
        size_t kept = 0;
        for (size_t index = 0; index < self->shaking_count; index++) {
            struct pigato__shaking_t *entry =
                &self->shaking [self->shaking_head + index];
            if (pigato__conns_in_handshake (self->core->conns, &entry->conn))
                self->shaking [kept++] = *entry;
        }
        self->shaking_head = 0;
        self->shaking_count = kept;
        if (kept * 2 > self->shaking_max || self->shaking_max == 0) {
            size_t max = self->shaking_max ? self->shaking_max * 2 : 256;
            struct pigato__shaking_t *shaking = (struct pigato__shaking_t *)
                realloc (self->shaking, max * sizeof *shaking);
            if (!shaking)
                return;  //  not remembered: never evicted
            self->shaking = shaking;
            self->shaking_max = max;
        }
    }
    self->shaking [self->shaking_head + self->shaking_count++] =
        (struct pigato__shaking_t) { conn, pigato__now_ms () };
}

//  The oldest connection in its handshake for EVICT_AFTER_MS (taken off
//  the list), or -1.
static int
s_shaking_oldest (pigato_broker_t *self)
{
    int64_t before = pigato__now_ms () - EVICT_AFTER_MS;
    while (self->shaking_count) {
        struct pigato__shaking_t *entry = &self->shaking [self->shaking_head];
        if (!pigato__conns_in_handshake (self->core->conns, &entry->conn)) {
            self->shaking_head++;
            self->shaking_count--;
            continue;
        }
        if (entry->since > before)
            return -1;  //  the oldest is still young: so are the others
        self->shaking_head++;
        self->shaking_count--;
        return entry->conn.fd;
    }
    self->shaking_head = 0;
    return -1;
}

//  Shuts the connections over the maximum. shutdown () leaves the fd to
//  libzmq, which owns it: its engine reads the end of the stream, closes
//  the fd and reports DISCONNECTED like for any peer that left. A new
//  connection never gets to its handshake (no CURVE work, no ZAP); an
//  evicted one had not finished its own.
static void
s_refuse_now (pigato_broker_t *self)
{
    for (size_t index = 0; index < self->refusing_count; index++) {
        int fd = self->refusing [index] & ~EVICTED;
        bool evicted = (self->refusing [index] & EVICTED) != 0;
        if (evicted)
            self->connections_evicted++;
        else
            self->connections_refused++;
        if (pigato__log_level >= PIGATO_LOG_WARNING
            && pigato__ratelimit_allow_at (
                &self->refuse_log, "connection_refused", PIGATO_LOG_WARNING)) {
            char address [INET6_ADDRSTRLEN + 8];
            pigato__fd_peer (fd, address, sizeof address);
            pigato__log (PIGATO_LOG_WARNING,
                         "event=connection_refused address=%s "
                         "connections=%" PRId64 " max_connections=%d "
                         "reason=%s",
                         address, self->connections, self->max_connections,
                         evicted ? "evicted_in_handshake" : "max_connections");
        }
        shutdown (fd, SHUT_RDWR);
    }
    self->refusing_count = 0;
}

//  Reads the monitor's connection events. A new connection on the fd of
//  a dying one ends the dying one first (what comes from that fd now is
//  the new one's). Connections over the maximum are shut at the end.
void
pigato__broker_monitor_drain (pigato_broker_t *self)
{
    zmsg_t *event;
    while ((event = zmsg_recv (self->monitor))) {
        zframe_t *frame = zmsg_first (event);
        if (frame && zframe_size (frame) == 6) {
            uint16_t type;
            uint32_t value;
            memcpy (&type, zframe_data (frame), 2);
            memcpy (&value, zframe_data (frame) + 2, 4);
            if (type == ZMQ_EVENT_ACCEPTED) {
                for (size_t index = 0; index < self->dying_count; index++)
                    if (self->dying [index] == (int) value) {
                        s_dying_end (self);
                        break;
                    }
                pigato__conns_accepted (self->core->conns, (int) value);
                self->metrics.connections_accepted++;
                if (++self->connections <= self->max_connections)
                    s_shaking_add (self, (int) value);
                else {
                    //  Full: the oldest connection still in its handshake
                    //  goes, so that idle connections that never finish
                    //  one cannot keep everyone out; with none, this one
                    int oldest = s_shaking_oldest (self);
                    if (oldest >= 0) {
                        s_refuse (self, oldest | EVICTED);
                        s_shaking_add (self, (int) value);
                    }
                    else
                        s_refuse (self, (int) value);
                }
            }

            else if (type == ZMQ_EVENT_DISCONNECTED) {
                if (self->connections > 0)
                    self->connections--;
                s_refuse_cancel (self, (int) value);
                s_dying (self, (int) value);
            }
        }
        zmsg_destroy (&event);
    }
    if (self->refusing_count)
        s_refuse_now (self);
}

//  Receives one message from the ROUTER into self->input and the fd it
//  came from (ZMQ_SRCFD, which rides on the parts the peer sent, not
//  always on the routing id part), with its bytes as sent (input.size)
//  and on the wire (input.bytes). Parts beyond what a valid message can
//  have, or past PIGATO__MESSAGE_BYTES_MAX bytes, are read and dropped,
//  and counted in input.total. False if nothing was waiting.
static bool
s_recv (pigato_broker_t *self, int *fd)
{
    pigato__input_t *input = &self->input;
    void *router = self->router_handle;
    bool curve = self->budget.curve;
    for (size_t index = 0; index < input->count; index++) {
        zmq_msg_close (&input->parts [index]);
        zmq_msg_init (&input->parts [index]);
    }
    input->count = 0;
    input->total = 0;
    input->size = 0;
    input->bytes = 0;
    if (zmq_msg_recv (&input->parts [0], router, ZMQ_DONTWAIT) == -1)
        return false;
    input->count = input->total = 1;
    *fd = -1;
    bool more = zmq_msg_more (&input->parts [0]);
    while (more) {
        zmq_msg_t *part = &input->parts [input->count];
        if (input->count == PIGATO__PARTS_MAX
            || input->size > PIGATO__MESSAGE_BYTES_MAX) {
            zmq_msg_t spare;  //  read past the limit, dropped
            zmq_msg_init (&spare);
            if (zmq_msg_recv (&spare, router, 0) == -1)
                more = false;
            else {
                input->total++;
                input->size += zmq_msg_size (&spare);
                input->bytes += pigato__wire_bytes (zmq_msg_size (&spare),
                                                    curve);
                more = zmq_msg_more (&spare);
            }
            zmq_msg_close (&spare);
            continue;
        }
        if (zmq_msg_recv (part, router, 0) == -1)
            break;
        input->count++;
        input->total++;
        input->size += zmq_msg_size (part);
        input->bytes += pigato__wire_bytes (zmq_msg_size (part), curve);
        more = zmq_msg_more (part);
    }
    for (size_t index = 0; index < input->count && index < 2 && *fd < 0;
         index++)
        *fd = zmq_msg_get (&input->parts [index], ZMQ_SRCFD);
    return true;
}

//  A message over PIGATO__MESSAGE_BYTES_MAX: dropped whole, counted and
//  logged (rate-limited) with who sent it.
static void
s_too_large (pigato_broker_t *self)
{
    pigato__input_t *input = &self->input;
    self->core->counters.bad_messages++;
    self->budget.too_large++;
    if (pigato__log_level < PIGATO_LOG_WARNING
        || !pigato__ratelimit_allow_at (
            &self->budget.large_log, "message_too_large", PIGATO_LOG_WARNING))
        return;
    const char *identity = NULL, *address = NULL;
    if (input->count > 1) {
        identity = zmq_msg_gets (&input->parts [1], "User-Id");
        address = zmq_msg_gets (&input->parts [1], "Peer-Address");
    }
    char identity_text [4 * 64 + 4], address_text [4 * 64 + 4];
    identity = identity ? identity : "-";
    address = address ? address : "?";
    pigato__log (PIGATO_LOG_WARNING,
                 "event=message_too_large address=%s identity=%s parts=%zu "
                 "bytes=%zu max_bytes=%d",
                 pigato__printable (address, strlen (address), address_text,
                                    sizeof address_text),
                 pigato__printable (identity, strlen (identity), identity_text,
                                    sizeof identity_text),
                 input->total - 1, input->size, PIGATO__MESSAGE_BYTES_MAX);
}

//  Finds the connection a message came from, counts its bytes there,
//  then routes it. A message from an fd not known open belongs to a
//  connection whose accept event is still queued (a new connection,
//  perhaps on a reused fd): apply pending events first. A message whose
//  connection is known closed has nobody to answer and no state left:
//  dropped.
static void
s_route (pigato_broker_t *self, int fd)
{
    pigato__conn_t conn;
    if (pigato__conns_lookup (self->core->conns, fd, &conn)
        != PIGATO__CONN_OPEN) {
        pigato__broker_monitor_drain (self);
        if (pigato__conns_lookup (self->core->conns, fd, &conn)
            == PIGATO__CONN_CLOSED) {
            self->core->counters.bad_messages++;
            pigato__log (PIGATO_LOG_DEBUG,
                         "event=message_dropped "
                         "reason=connection_closed fd=%d",
                         fd);
            return;
        }
    }
    pigato__conn_slot_t *slot = pigato__conns_slot (self->core->conns, &conn);
    if (slot) {
        bool first = slot->bytes_in == 0;
        slot->bytes_in += self->input.bytes;
        if (!slot->identity && self->input.count > 1)
            pigato__conns_set_identity (self->core->conns, fd,
                                        zmq_msg_gets (&self->input.parts [1],
                                                      "User-Id"));
        if (first)
            pigato__connlog_open (self, fd, slot);
    }
    if (self->input.size > PIGATO__MESSAGE_BYTES_MAX)
        s_too_large (self);
    else
        pigato__front_input (self, &conn);
}

//  --------------------------------------------------------------------------
//  True if a socket has a message to read. Reading ZMQ_EVENTS also takes
//  the socket's pending commands, which re-arms its ZMQ_FD.

static bool
s_readable (void *socket)
{
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt (socket, ZMQ_EVENTS, &events, &size) == 0
        && (events & ZMQ_POLLIN);
}

//  --------------------------------------------------------------------------
//  The loop waits on the sockets' ZMQ_FDs with poll (), not zmq_poll (),
//  which asks every socket for ZMQ_EVENTS before and after it sleeps (two
//  system calls per socket each time). A ZMQ_FD only signals a change, so
//  a socket is waited on through it only once ZMQ_EVENTS, read after the
//  last receive or send on that socket, showed nothing to read; that is
//  the rule zmq_getsockopt(3) gives for ZMQ_FD. Sockets the turn did not
//  touch keep their last reading.

int
pigato_broker_run (pigato_broker_t *self)
{
    if (!self->router) {
        pigato__errorf (self->error, sizeof self->error,
                        "broker is not bound to any endpoint");
        return PIGATO_E_INVALID;
    }
    enum { ZAP, ROUTER, MONITOR, SOCKETS };
    void *sockets [SOCKETS] = {
        zsock_resolve (pigato__guard_zap_socket (self->guard)),
        zsock_resolve (self->router), zsock_resolve (self->monitor)
    };
    //  plain poll (): zmq_poll polls twice before it sleeps. After the
    //  sockets, two descriptors (-1, which poll skips, when absent): the
    //  metrics server's eventfd (a scrape waits for a text) and the
    //  store's (durable requests written)
    enum { METRICS_FD = SOCKETS, STORE_FD, ITEMS };
    struct pollfd items [ITEMS];
    items [METRICS_FD] = (struct pollfd) {
        self->metrics.http ? pigato__metrics_http_fd (self->metrics.http) : -1,
        POLLIN, 0
    };
    items [STORE_FD] = (struct pollfd) {
        self->titanic ? pigato__titanic_fd (self->titanic) : -1, POLLIN, 0
    };
    bool touched [SOCKETS], ready [SOCKETS];
    for (int index = 0; index < SOCKETS; index++) {
        size_t size = sizeof items [index].fd;
        items [index] = (struct pollfd) { -1, POLLIN, 0 };
        if (zmq_getsockopt (sockets [index], ZMQ_FD, &items [index].fd,
                            &size)) {
            pigato__errorf (self->error, sizeof self->error,
                            "cannot read a socket's ZMQ_FD: %s",
                            zmq_strerror (zmq_errno ()));
            return PIGATO_E_INVALID;
        }
        touched [index] = true;
        ready [index] = false;
    }
    pigato__core_clock (self->core);
    self->next_tick = self->core->now_ms + self->core->heartbeat_ms;
    pigato__budget_start (self);
    pigato__broker_expiry_check (self);
    bool busy = false;  //  the last turn routed something
    while (!self->stopping && !zsys_interrupted) {
        int64_t now = pigato__now_ms ();
        int64_t wait = self->next_tick - now;
        pigato__timer_t *next = pigato__heap_peek (self->core->timers);
        if (next && next->when - now < wait)
            wait = next->when - now;
        if (pigato__budget_next (self) - now < wait)
            wait = pigato__budget_next (self) - now;
        if (self->titanic && pigato__titanic_wait (self->titanic) < wait)
            wait = pigato__titanic_wait (self->titanic);
        if (pigato__broker_drain_next (self) - now < wait)
            wait = pigato__broker_drain_next (self) - now;
        if (wait > 250)
            wait = 250;  //  notice stop () promptly
        if (wait < 0)
            wait = 0;
        bool any = false;
        for (int index = 0; index < SOCKETS; index++) {
            if (touched [index])
                ready [index] = s_readable (sockets [index]);
            touched [index] = false;
            any = any || ready [index];
        }
        //  Every turn looks at every fd, without waiting when a socket is
        //  known to be ready: a busy ROUTER must not keep the ZAP handler
        //  (new connections) or the monitor (disconnects) waiting
        int rc = 0;
        if (!any && self->busy_poll_us > 0 && busy) {
            //  Right after work, poll without sleeping for a while: the next
            //  message of a conversation often comes within it, and is then
            //  read without the wake-up of a sleeping thread
            int64_t until = zclock_usecs () + self->busy_poll_us;
            while ((rc = poll (items, ITEMS, 0)) == 0
                   && zclock_usecs () < until)
                ;
        }
        if (rc == 0)
            rc = poll (items, ITEMS, any ? 0 : (int) wait);
        if (rc == -1 && errno != EINTR)
            break;
        for (int index = 0; rc > 0 && index < SOCKETS; index++)
            if (items [index].revents & (POLLIN | POLLERR | POLLHUP))
                ready [index] = s_readable (sockets [index]);
        busy = false;
        pigato__core_clock (self->core);
        if (rc > 0 && (items [METRICS_FD].revents & POLLIN))
            pigato__metrics_serve (self);
        if (self->reload) {
            self->reload = 0;
            pigato__broker_tell (self, PIGATO_BROKER_RELOADING);
            pigato__broker_reload (self);
            pigato__broker_expiry_check (self);
            pigato__broker_tell (self, PIGATO_BROKER_RELOADED);
        }
        if (self->drain.requested > self->drain.state)
            pigato__broker_drain_begin (self);
        if (ready [ZAP]) {
            pigato__guard_zap_handle (self->guard);
            touched [ZAP] = true;
        }
        //  Closed connections are known before this turn sends anything
        if (ready [MONITOR]) {
            pigato__broker_monitor_drain (self);
            touched [MONITOR] = true;
            ready [MONITOR] = s_readable (sockets [MONITOR]);
        }
        bool drained = !ready [ROUTER];  //  the ROUTER has nothing more
        if (ready [ROUTER]) {
            for (int count = 0; count < BATCH; count++) {
                int fd = -1;
                if (!s_recv (self, &fd)) {
                    drained = true;
                    break;
                }
                s_route (self, fd);
                busy = true;
            }
        }
        //  The view of connections is current before anything is sent
        //  (the outbox goes below); dying connections end once the ROUTER
        //  holds nothing more: their last words come first
        if (ready [MONITOR]) {
            pigato__broker_monitor_drain (self);
            touched [MONITOR] = true;
        }
        if (self->dying_count
            && (drained
                || self->core->now_ms - self->dying_since
                       >= self->core->heartbeat_ms))
            s_dying_end (self);
        now = pigato__now_ms ();
        pigato__core_expire (self->core, now);
        if (now >= self->next_tick) {
            pigato__core_check_workers (self->core, now);
            pigato__guard_tick (self->guard);
            pigato__ratelimit_flush (&self->refuse_log, "connection_refused",
                                     PIGATO_LOG_WARNING);
            pigato__budget_flush_logs (self);
            pigato__connlog_tick (self);
            pigato__core_internal_tick (self->core);
            if (now >= self->cert_check_at)
                pigato__broker_expiry_check (self);
            self->next_tick = now + self->core->heartbeat_ms;
        }
        //  Durable requests: what the store wrote is answered, due
        //  attempts go to the core, this turn's changes to the store
        if (self->titanic)
            pigato__titanic_turn (
                self->titanic, rc > 0 && (items [STORE_FD].revents & POLLIN));
        //  Byte budgets: connections over theirs are cut (what that
        //  produces goes out below)
        pigato__budget_tick (self, now);
        //  A drain that is done (or out of time) ends the loop, once what
        //  this turn produced is out
        bool done = self->drain.state && pigato__broker_drain_tick (self, now);
        //  What this turn produced goes out before we wait for more
        pigato__outbox_flush (self->outbox);
        touched [ROUTER] = true;
        if (done)
            break;
    }
    pigato__broker_tell (self, PIGATO_BROKER_STOPPING);
    return zsys_interrupted ? PIGATO_E_INTERRUPTED : 0;
}
