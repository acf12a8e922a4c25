/*  =========================================================================
    worker.c - pigato_worker and pigato_reply: one service offered through
    one or more brokers, pigato 0.0.46 or native framing
    (docs/protocol.md, docs/native-framing.md).

    Single-threaded. Each broker link (link.c) is a DEALER with a fresh
    random routing id at every (re)connect; a link's generation counts its
    connections, and a reply belongs to one generation: once the link
    reconnects, the broker has forgotten the request and the reply goes
    inactive. Replies not yet ended are tracked in a table (key: link,
    generation, client, rid) so request heartbeats find them and so the
    worker can detach them when it is destroyed first. The request handler
    may end, write and destroy replies and stop the worker, but must not
    destroy the worker. Replies written in the handler for the requests
    that arrived together leave as one native batch when it returns;
    replies written from the application's own code leave at once.
    =========================================================================
*/
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include "../base/internal.h"
#include "../wire/mdp.h"
#include "link.h"
#include "settings.h"
#include "peer.h"
#include "../base/table.h"

#define WORKER_LOOP_TICK_MS 100  //  timer check period under zloop
#define WORKER_FORGOTTEN_MS                                                    \
    100  //  how long a count of forgotten requests holds
//  Reply key: link index, generation, client id size and bytes, rid
#define WORKER_KEY_MAX                                                         \
    (sizeof (size_t) + sizeof (unsigned) + 1 + 255 + PIGATO_RID_MAX)

struct _pigato_reply_t {
    pigato_worker_t *worker;        //  NULL once detached
    pigato__link_t *link;           //  NULL once detached
    unsigned generation;            //  link generation the request came on
    byte *client;                   //  client alias (the broker's), in storage
    size_t client_size;             //  its size
    byte rid [PIGATO_RID_MAX + 1];  //  request id: bytes (may hold NUL), NUL
    size_t rid_size;                //  its size (MDP clients' rids start 0x00)
    char *service;                  //  requested service, in storage
    char *opts;                     //  request opts, JSON object text
    byte *key;                      //  key in worker->replies, in storage
    size_t key_size;                //  its size
    size_t hash;                    //  its pigato__hash_bytes
    bool tracked;                   //  in worker->replies
    int64_t started;                //  when the request arrived
    int64_t last_heartbeat;         //  last client request heartbeat
    int64_t last_activity;          //  arrival or last partial sent
    int64_t timeout;                //  request timeout, -1 never
    bool ended;                     //  end, error or reject called
    bool counted;                   //  in worker->in_flight
    pigato__link_t *held_by;        //  the link whose held counts it, or NULL
    char storage [];                //  client, service and key: one allocation
};

//  A request that waits in the worker for a slot (see s_request_handle):
//  its reply is made and tracked, its data kept, the handler has not
//  seen it.
typedef struct _s_parked_t s_parked_t;
struct _s_parked_t {
    pigato_reply_t *reply;  //  owned until handed
    s_parked_t *next;       //  the next newer one
    size_t size;            //  bytes of request data
    byte data [];           //  request data
};

struct _pigato_worker_t {
    char *service;                 //  service offered
    pigato_request_fn *handler;    //  request handler
    void *arg;                     //  its argument
    pigato__settings_t settings;   //  keys, heartbeat, framing (setters)
    int concurrency;               //  announced in heartbeats, enforced
    size_t in_flight;              //  handed to the handler, not yet ended
    uint64_t over_concurrency;     //  requests refused: in_flight was full
    pigato__ratelimit_t over_log;  //  their log lines
    s_parked_t *parked;            //  waiting for a slot, oldest first
    s_parked_t *parked_last;       //  the newest, or NULL
    size_t parked_count;           //  entries in parked
    size_t forgotten;              //  held, forgotten by their brokers
    int64_t forgotten_at;          //  when that was counted, 0 never
    int park_timer;                //  zloop: a pending s_parked_run, or 0
    pigato__links_t *links;        //  broker links
    pigato__table_t *replies;      //  key -> pigato_reply_t, not yet ended
    int64_t next_heartbeat;        //  next tick, 0 before the first connect
    bool stopped;                  //  stop () or destroy () called
    bool draining;                 //  drain () called: no room, rejects
    int64_t drain_started;         //  when
    int64_t drain_deadline;        //  then stop at the latest, 0 = never
    int refusal;                   //  last refusal since READY was taken, or 0
    bool refusal_new;              //  wait () is to report it
    bool progress;                 //  a message was handled this round
    zloop_t *loop;                 //  attached zloop, or NULL
    int loop_timer;                //  its timer id
    char err [256];                //  last error message
};

//  --------------------------------------------------------------------------
//  Sends a heartbeat announcing the concurrency: W, 4, "", {"concurrency":N}.
//  The broker answers each one, in order, after what it sent before: a
//  drain counts them (s_drain_acknowledged).

static void
s_link_heartbeat (pigato_worker_t *self, pigato__link_t *link)
{
    char opts [48];
    snprintf (opts, sizeof opts, "{\"concurrency\":%d}",
              self->draining ? 0 : self->concurrency);
    pigato__msg_t heartbeat = { .role = 'W',
                                .type = PIGATO__HEARTBEAT,
                                .opts = S_TEXT (opts) };
    if (pigato__link_send (link, &heartbeat) == 0)
        link->heartbeats_sent++;
    else
        pigato__log (PIGATO_LOG_DEBUG, "event=send_skipped endpoint=%s type=%d",
                     link->endpoint, PIGATO__HEARTBEAT);
}

//  --------------------------------------------------------------------------
//  The tracking key of a request: link, generation, client id, rid, as
//  bytes (copies only: this runs for every request).

typedef struct {
    byte data [WORKER_KEY_MAX];
    size_t size;
    size_t hash;
} s_key_t;

static void
s_reply_key (s_key_t *key, pigato__link_t *link, unsigned generation,
             const byte *client, size_t client_size, const byte *rid,
             size_t rid_size)
{
    byte *at = key->data;
    memcpy (at, &link->index, sizeof link->index);
    at += sizeof link->index;
    memcpy (at, &generation, sizeof generation);
    at += sizeof generation;
    *at++ = (byte) client_size;
    if (client_size)
        memcpy (at, client, client_size);
    at += client_size;
    if (rid_size)
        memcpy (at, rid, rid_size);
    at += rid_size;
    key->size = (size_t) (at - key->data);
    key->hash = pigato__hash_bytes (key->data, key->size);
}

//  Table keys are pigato__bytes_t views of key bytes.
static bool
s_reply_match (const void *item, const void *key)
{
    const pigato_reply_t *reply = (const pigato_reply_t *) item;
    const pigato__bytes_t *wanted = (const pigato__bytes_t *) key;
    return reply->key_size == wanted->size
        && memcmp (reply->key, wanted->data, wanted->size) == 0;
}

//  --------------------------------------------------------------------------
//  Takes a reply out of the worker's table (no-op if untracked).

static void
s_reply_untrack (pigato_reply_t *reply)
{
    if (reply->tracked && reply->worker) {
        pigato__bytes_t key = { reply->key, reply->key_size };
        pigato__table_delete (reply->worker->replies, reply->hash, &key);
    }
    reply->tracked = false;
}

//  --------------------------------------------------------------------------
//  A reply ended, or left its worker: its slot of the worker's
//  concurrency is free (no-op if it held none).

static int s_park_timer (zloop_t *loop, int timer_id, void *arg);

//  Under a zloop a waiting request gets a freed slot next turn (wait ()
//  looks before it polls). Rare: out of the release's way.
static void __attribute__ ((noinline)) s_park_wake (pigato_worker_t *worker)
{
    if (worker->loop && !worker->park_timer && !worker->stopped) {
        int timer = zloop_timer (worker->loop, 0, 1, s_park_timer, worker);
        worker->park_timer = timer > 0 ? timer : 0;
    }
}

static inline void
s_reply_release (pigato_reply_t *reply)
{
    pigato_worker_t *worker = reply->worker;
    if (reply->held_by) {
        reply->held_by->held--;
        reply->held_by = NULL;
    }
    if (reply->counted && worker) {
        worker->in_flight--;
        if (worker->parked)
            s_park_wake (worker);
    }
    reply->counted = false;
}

//  --------------------------------------------------------------------------
//  Cuts a reply off its worker: it goes inactive and writes fail.

static void
s_reply_detach (pigato_reply_t *reply)
{
    s_reply_untrack (reply);
    s_reply_release (reply);
    reply->worker = NULL;
    reply->link = NULL;
}

//  --------------------------------------------------------------------------
//  Greets a broker on a fresh connection: READY (with the native offer in
//  auto mode), then a heartbeat right away; in native mode both leave as
//  one batch.

static void
s_link_greet (pigato_worker_t *self, pigato__link_t *link)
{
    pigato__msg_t ready = { .role = 'W',
                            .type = PIGATO__READY,
                            .service = S_TEXT (self->service),
                            .native_offer = pigato__link_offers (link) };
    pigato__links_hold (self->links);
    pigato__link_send_repeated (link, &ready);
    s_link_heartbeat (self, link);
    pigato__links_release (self->links);
    pigato__log (PIGATO_LOG_INFO,
                 "event=worker_connect endpoint=%s service=%s id=%s mode=%s",
                 link->endpoint, self->service, link->routing_id,
                 self->settings.security.insecure ? "insecure" : "curve");
}

//  --------------------------------------------------------------------------
//  Closes a link's socket, optionally saying DISCONNECT first (flushed
//  within the socket's linger, after anything still batched).

static void
s_link_close (pigato__link_t *link, bool disconnect)
{
    if (!link->sock)
        return;
    if (disconnect) {
        pigato__msg_t bye = { .role = 'W', .type = PIGATO__DISCONNECT };
        pigato__link_send_repeated (link, &bye);
    }
    pigato__link_close (link);
}

//  --------------------------------------------------------------------------
//  Reconnects a link (broker silent, or it sent DISCONNECT): replies of
//  the old connection go inactive through the generation change.

static void
s_link_reconnect (pigato_worker_t *self, pigato__link_t *link, bool lost)
{
    if (self->draining) {
        //  A greeting would offer room (READY before the heartbeat that
        //  says none): what the broker held for us there is gone anyway
        pigato__log (PIGATO_LOG_INFO,
                     "event=worker_link_closed endpoint=%s reason=draining",
                     link->endpoint);
        s_link_close (link, false);
        return;
    }
    pigato__log (PIGATO_LOG_WARNING,
                 "event=worker_reconnect endpoint=%s "
                 "reason=%s old_id=%s",
                 link->endpoint,
                 !lost               ? "broker_disconnect"
                 : link->lost_reason ? link->lost_reason
                                     : "broker_lost",
                 link->routing_id);
    s_link_close (link, lost);
    if (pigato__link_open (link, self->err, sizeof self->err) == PIGATO_OK)
        s_link_greet (self, link);
    else
        pigato__log (PIGATO_LOG_WARNING,
                     "event=worker_reconnect_failed "
                     "endpoint=%s",
                     link->endpoint);
}

//  --------------------------------------------------------------------------
//  A broker refused the worker (its key, the handshake, or READY): the
//  link closes and is reopened after a backoff (exponential, capped,
//  jittered: link.c) rather than at once, and wait () reports it while
//  no other broker has the worker.

static void
s_link_refused (pigato_worker_t *self, pigato__link_t *link, int status,
                const char *text)
{
    pigato__link_refuse (link, status, text);
    pigato__errorf (self->err, sizeof self->err, "%s: %s", link->endpoint,
                    link->failure_text);
    self->refusal = status;
    self->refusal_new = true;
    pigato__log (PIGATO_LOG_WARNING,
                 "event=worker_refused endpoint=%s service=%s status=%s "
                 "retry_ms=%lld reason=\"%s\"",
                 link->endpoint, self->service, pigato_strerror (status),
                 (long long) (link->retry_at - pigato__now_ms ()),
                 link->failure_text);
}

//  A link came up or failed (link.c monitor): a refusal backs off.
static void
s_link_change (void *owner, pigato__link_t *link)
{
    pigato_worker_t *self = (pigato_worker_t *) owner;
    if (!self->stopped && link->state != PIGATO__LINK_UP
        && pigato__link_refused (link))
        s_link_refused (self, link, link->failure, link->failure_text);
}

//  DISCONNECT from a broker. Before it acknowledged READY it is a
//  refusal: the reason it gives (pigato-broker: E_ACCESS_DENIED serve
//  NAME, E_RESERVED_SERVICE NAME), or none (other brokers); but
//  E_NOT_READY only says the broker does not know us. After, the broker
//  dropped a registered worker (expired, policy reloaded): greet again at
//  once.
static void
s_link_disconnect (pigato_worker_t *self, pigato__link_t *link,
                   const pigato__msg_t *message)
{
    //  E_NOT_READY: the broker does not know this worker (it restarted,
    //  or something of ours came before READY): greet again, as after
    //  an acknowledged READY
    bool not_ready = message->data.size >= 11
                  && memcmp (message->data.data, "E_NOT_READY", 11) == 0;
    if (link->acknowledged || not_ready) {
        s_link_reconnect (self, link, false);
        return;
    }
    char reason [100], text [300];
    //  Shown to people, quoted in logs: spaces stay
    char raw [100];
    size_t size = message->data.size < sizeof raw - 1 ? message->data.size
                                                      : sizeof raw - 1;
    if (size)
        memcpy (raw, message->data.data, size);
    raw [size] = 0;
    pigato__printable_quoted (raw, reason, sizeof reason);
    snprintf (text, sizeof text,
              "the broker refused to register this worker for '%.40s': "
              "%.100s (may this identity serve it? see the broker's ACL)",
              self->service,
              message->data.size ? reason : "DISCONNECT with no reason");
    s_link_refused (self, link, PIGATO_E_DENIED, text);
}

//  Its connection to a broker that had answered ended (link.c monitor):
//  reconnect now, so the broker (or its restart) has the worker back as
//  soon as it listens. The other links are not touched.
static void
s_link_disconnected (void *owner, pigato__link_t *link)
{
    pigato_worker_t *self = (pigato_worker_t *) owner;
    if (!self->stopped)
        s_link_reconnect (self, link, true);
}

static size_t s_parked_run (pigato_worker_t *self);

//  --------------------------------------------------------------------------
//  A drain's heartbeat (no room) was answered on every open link: what the
//  broker sent before it heard has arrived (and was rejected), and it
//  sends no more. A broker that does not answer heartbeats (not
//  pigato-broker) is waited for one liveness period.

static bool
s_drain_acknowledged (pigato_worker_t *self, int64_t now)
{
    if (now - self->drain_started
        >= (int64_t) self->settings.interval_ms * self->settings.liveness)
        return true;
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (link->sock && link->drain_heartbeat
            && (int) (link->heartbeats_answered - link->drain_heartbeat) < 0)
            return false;
    }
    return true;
}

//  --------------------------------------------------------------------------
//  A draining worker stops once the handler holds no request and every
//  broker heard it has no room, or at its drain deadline.

static void __attribute__ ((noinline))  //  off every reply's path
s_drain_check (pigato_worker_t *self)
{
    if (!self->draining || self->stopped)
        return;
    size_t pending = pigato__table_size (self->replies);
    int64_t now = pigato__now_ms ();
    bool late = self->drain_deadline && now >= self->drain_deadline;
    if ((pending || !s_drain_acknowledged (self, now)) && !late)
        return;
    pigato__log (late && pending ? PIGATO_LOG_WARNING : PIGATO_LOG_INFO,
                 "event=worker_drained service=%s pending=%zu reason=%s",
                 self->service, pending, pending ? "timeout" : "done");
    pigato_worker_stop (self);
}

//  --------------------------------------------------------------------------
//  Heartbeat tick: waiting requests that have a slot now go to the
//  handler (those their broker forgot meanwhile are dropped); silent links
//  reconnect, the others get a heartbeat.

static void
s_timers_run (pigato_worker_t *self)
{
    if (self->parked && !self->stopped)
        s_parked_run (self);
    int64_t now = pigato__now_ms ();
    s_drain_check (self);
    if (self->stopped || !self->next_heartbeat || now < self->next_heartbeat)
        return;
    self->next_heartbeat = now + self->settings.interval_ms;
    pigato__ratelimit_flush (&self->over_log, "worker_over_concurrency",
                             PIGATO_LOG_WARNING);
    int64_t dead_after = (int64_t) self->settings.interval_ms
                       * self->settings.liveness;
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (!link->sock && now < link->retry_at)
            continue;  //  refused: backing off
        if (!link->sock || now - link->last_seen >= dead_after)
            s_link_reconnect (self, link, true);
        else
            s_link_heartbeat (self, link);
    }
}

//  --------------------------------------------------------------------------
//  A request through a broker that is not reading what the worker sends
//  it (no room under the link's outbound budget) is not taken: rejected
//  back, so that the broker hands it to another worker, until
//  WORKER_BUSY_SLACK more went to that link since it went over the
//  budget; then dropped (the broker reads neither). Logged: at warning
//  level rate-limited, the others at debug level.
#define WORKER_BUSY_SLACK (1024 * 1024)

static void
s_request_busy (pigato_worker_t *self, pigato__link_t *link,
                const pigato__msg_t *message)
{
    uint64_t queued = pigato__link_budget_estimate (&link->budget);
    bool reject = pigato__link_budget_past (&link->budget) <= WORKER_BUSY_SLACK;
    if (reject) {
        pigato__msg_t refusal = { .role = 'W',
                                  .type = PIGATO__REJECT,
                                  .client = message->client,
                                  .rid = message->rid,
                                  .data = S_TEXT (
                                      "\"E_WORKER_REFUSED send_queue_full\"") };
        reject = pigato__link_send (link, &refusal) == 0;
    }
    int level = pigato__links_busy_level (self->links, "worker_busy");
    char rid_text [80];
    if (level <= pigato__log_level)
        pigato__log (level,
                     "event=worker_busy endpoint=%s rid=%s action=%s "
                     "queued_bytes=%" PRIu64 " max_outbound=%" PRId64
                     " reason=\"the broker is not reading what the worker "
                     "sends\"",
                     link->endpoint,
                     pigato__printable (message->rid.data, message->rid.size,
                                        rid_text, sizeof rid_text),
                     reject ? "reject" : "drop", queued,
                     self->settings.max_outbound);
}

//  A link went over its outbound budget or back under it (link.c): the
//  worker announces no room there (concurrency 0), or its concurrency
//  again, at once. The one message sent past the budget for it.
static void
s_link_room (void *owner, pigato__link_t *link)
{
    pigato_worker_t *self = (pigato_worker_t *) owner;
    if (self->stopped || !link->sock)
        return;
    char opts [48];
    snprintf (opts, sizeof opts, "{\"concurrency\":%d}",
              link->budget.over || self->draining ? 0 : self->concurrency);
    pigato__msg_t heartbeat = { .role = 'W',
                                .type = PIGATO__HEARTBEAT,
                                .opts = S_TEXT (opts) };
    if (pigato__link_send (link, &heartbeat))
        pigato__log (PIGATO_LOG_DEBUG, "event=send_skipped endpoint=%s type=%d",
                     link->endpoint, heartbeat.type);
}

//  --------------------------------------------------------------------------
//  Reads a request's timeout from its opts; keeps the opts text when it is
//  a JSON object, else uses "{}".

static char s_no_opts [] = "{}";  //  shared, never freed

static char *
s_request_opts (const pigato__msg_t *message, int64_t *timeout_p)
{
    *timeout_p = PIGATO_TIMEOUT_MS;
    if (!message->has_opts)
        return s_no_opts;
    int retry;
    if (pigato__opts_fast (message->opts.data, message->opts.size,
                           PIGATO_TIMEOUT_MS, timeout_p, &retry)) {
        char *opts = (char *) malloc (message->opts.size + 1);
        if (opts) {
            memcpy (opts, message->opts.data, message->opts.size);
            opts [message->opts.size] = 0;
        }
        return opts;
    }
    json_error_t error;
    json_t *root = json_loadb ((const char *) message->opts.data,
                               message->opts.size, 0, &error);
    char *opts = NULL;
    if (root && json_is_object (root)) {
        *timeout_p = pigato__opts_timeout (root, PIGATO_TIMEOUT_MS);
        opts = (char *) malloc (message->opts.size + 1);
        if (opts) {
            memcpy (opts, message->opts.data, message->opts.size);
            opts [message->opts.size] = 0;
        }
    }
    else
        opts = s_no_opts;
    json_decref (root);
    return opts;
}

//  --------------------------------------------------------------------------
//  A request this worker cannot take (no memory, a service name with a
//  NUL byte) goes back to the broker as a reject, never silently dropped:
//  the broker frees the slot it holds here and tries another worker.
static int
s_request_reject (pigato__link_t *link, const pigato__msg_t *message,
                  const char *reason)
{
    char json [96];
    snprintf (json, sizeof json, "\"E_WORKER_REFUSED %s\"", reason);
    pigato__msg_t reject = { .role = 'W',
                             .type = PIGATO__REJECT,
                             .client = message->client,
                             .rid = message->rid,
                             .data = S_TEXT (json) };
    return pigato__link_send (link, &reject);
}

static void
s_request_refuse (pigato__link_t *link, const pigato__msg_t *message,
                  const char *reason)
{
    int rc = s_request_reject (link, message, reason);
    pigato__log (PIGATO_LOG_WARNING,
                 "event=worker_refuse endpoint=%s reason=%s sent=%s",
                 link->endpoint, reason, rc == 0 ? "yes" : "no");
}

//  A request that reaches a draining worker (the broker sent it before
//  it heard of the drain) goes back as a reject: the broker gives it to
//  another worker. The handler never sees it.
static void
s_request_drain_reject (pigato__link_t *link, const pigato__msg_t *message)
{
    static const char reason [] = "\"E_DRAINING the worker is draining\"";
    pigato__msg_t reject = { .role = 'W',
                             .type = PIGATO__REJECT,
                             .client = message->client,
                             .rid = message->rid,
                             .data = S_TEXT (reason) };
    int rc = pigato__link_send (link, &reject);
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=worker_drain_reject endpoint=%s sent=%s",
                 link->endpoint, rc == 0 ? "yes" : "no");
}

//  A request beyond the announced concurrency (a broker that ignores it,
//  or several brokers each giving their share) never reaches the
//  handler: the concurrency is the worker's promise to its application.
//  It goes back as a reject, so the broker gives it to another worker;
//  counted, and logged at most 20 lines a second (then a count).
static void
s_request_over_limit (pigato_worker_t *self, pigato__link_t *link,
                      const pigato__msg_t *message)
{
    self->over_concurrency++;
    int rc = s_request_reject (link, message, "over_concurrency");
    if (pigato__ratelimit_allow_at (&self->over_log, "worker_over_concurrency",
                                    PIGATO_LOG_WARNING)) {
        char rid_text [80];
        pigato__log (PIGATO_LOG_WARNING,
                     "event=worker_over_concurrency endpoint=%s service=%s "
                     "rid=%s in_flight=%zu concurrency=%d refused=%" PRIu64
                     " sent=%s",
                     link->endpoint, self->service,
                     pigato__printable (message->rid.data, message->rid.size,
                                        rid_text, sizeof rid_text),
                     self->in_flight, self->concurrency, self->over_concurrency,
                     rc == 0 ? "yes" : "no");
    }
}

//  True if the handler may take one more request now.
static bool
s_room (pigato_worker_t *self)
{
    return self->concurrency < 0
        || self->in_flight < (size_t) self->concurrency;
}

//  Requests the handler holds that their brokers have forgotten (the
//  connection they came on is gone, they timed out, their client went:
//  pigato_reply_active () is false), so a broker has given their slots to
//  others. Counted over the table, at most every WORKER_FORGOTTEN_MS: a
//  flood over the limit does not scan for each request.
static size_t
s_forgotten (pigato_worker_t *self)
{
    int64_t now = pigato__now_ms ();
    if (self->forgotten_at && now - self->forgotten_at < WORKER_FORGOTTEN_MS)
        return self->forgotten;
    size_t forgotten = 0, cursor = 0;
    pigato_reply_t *reply;
    while ((
        reply = (pigato_reply_t *) pigato__table_next (self->replies, &cursor)))
        if (reply->counted && !pigato_reply_active (reply))
            forgotten++;
    self->forgotten = forgotten;
    self->forgotten_at = now;
    return forgotten;
}

//  Hands a reply to the handler: from now on it holds a slot.
static inline void
s_request_hand (pigato_worker_t *self, pigato_reply_t *reply, const void *data,
                size_t size)
{
    reply->counted = true;
    self->in_flight++;
    char rid_text [80], service_text [80];
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=worker_request endpoint=%s "
                 "rid=%s service=%s size=%zu",
                 reply->link->endpoint,
                 pigato__printable (reply->rid, reply->rid_size, rid_text,
                                    sizeof rid_text),
                 pigato__printable (reply->service, strlen (reply->service),
                                    service_text, sizeof service_text),
                 size);
    self->handler (self, reply, data ? data : (const byte *) "", size,
                   self->arg);
}

//  Keeps a request until a slot frees (s_parked_run). -1 if no memory.
static int
s_request_park (pigato_worker_t *self, pigato_reply_t *reply,
                const pigato__msg_t *message)
{
    s_parked_t *entry = (s_parked_t *) malloc (sizeof *entry
                                               + message->data.size);
    if (!entry)
        return -1;
    entry->reply = reply;
    entry->next = NULL;
    entry->size = message->data.size;
    if (message->data.size)
        memcpy (entry->data, message->data.data, message->data.size);
    if (self->parked_last)
        self->parked_last->next = entry;
    else
        self->parked = entry;
    self->parked_last = entry;
    self->parked_count++;
    char rid_text [80];
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=worker_request_waits rid=%s in_flight=%zu "
                 "forgotten=%zu waiting=%zu",
                 pigato__printable (reply->rid, reply->rid_size, rid_text,
                                    sizeof rid_text),
                 self->in_flight, self->forgotten, self->parked_count);
    return 0;
}

//  Gives waiting requests the free slots, oldest first, and drops those
//  their broker forgot meanwhile (silently: it expects no answer). The
//  list is read again from its head after each handler call, which may
//  end replies, or wait. Returns how many went to the handler.
static size_t
s_parked_run (pigato_worker_t *self)
{
    size_t handed = 0;
    s_parked_t *previous = NULL, *entry = self->parked;
    while (entry && !self->stopped) {
        pigato_reply_t *reply = entry->reply;
        bool gone = !reply->worker || !pigato_reply_active (reply);
        if (!gone && !s_room (self)) {
            previous = entry;
            entry = entry->next;
            continue;
        }
        if (previous)
            previous->next = entry->next;
        else
            self->parked = entry->next;
        if (self->parked_last == entry)
            self->parked_last = previous;
        self->parked_count--;
        if (gone) {
            char rid_text [80];
            pigato__log (PIGATO_LOG_DEBUG,
                         "event=worker_request_forgotten rid=%s",
                         pigato__printable (reply->rid, reply->rid_size,
                                            rid_text, sizeof rid_text));
            s_reply_detach (reply);
            pigato_reply_destroy (&reply);
            free (entry);
            entry = previous ? previous->next : self->parked;
            continue;
        }
        s_request_hand (self, reply, entry->data, entry->size);
        free (entry);
        handed++;
        self->progress = true;
        previous = NULL;
        entry = self->parked;
    }
    return handed;
}

//  A drain: requests waiting for a slot go back to their brokers as the
//  drain's rejects (another worker takes them); the handler never sees
//  them.
static void
s_parked_drain (pigato_worker_t *self)
{
    while (self->parked) {
        s_parked_t *entry = self->parked;
        self->parked = entry->next;
        self->parked_count--;
        pigato_reply_t *reply = entry->reply;
        if (reply->worker && pigato_reply_active (reply)) {
            pigato__msg_t message = { .client = { reply->client,
                                                  reply->client_size },
                                      .rid = { reply->rid, reply->rid_size } };
            s_request_drain_reject (reply->link, &message);
        }
        s_reply_detach (reply);
        pigato_reply_destroy (&reply);
        free (entry);
    }
    self->parked_last = NULL;
}

//  zloop: a slot freed while requests wait.
static int
s_park_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    pigato_worker_t *self = (pigato_worker_t *) arg;
    self->park_timer = 0;
    pigato__links_hold (self->links);
    s_parked_run (self);
    pigato__links_release (self->links);
    return zsys_interrupted ? -1 : 0;
}

//  A request from a broker: make a tracked reply (one allocation with its
//  client id, service and key) and hand it to the handler, which owns it
//  from then on.
//  Beyond the concurrency it never reaches the handler. It waits here for
//  the first free slot when its broker kept within the concurrency it was
//  told (with several brokers, each gives its share: a reject would make
//  a busy mesh's requests starve, pigato's rejects excluding the worker),
//  or while the handler still holds requests their brokers have
//  forgotten (a broker that timed one out, or lost its client, gave its
//  slot to this request in good faith; one waits for each at most). So
//  at most brokers x concurrency wait. Beyond that (a broker that ignores
//  the concurrency) it is rejected (s_request_over_limit).
static void
s_request_handle (pigato_worker_t *self, pigato__link_t *link,
                  const pigato__msg_t *message)
{
    if (self->draining) {
        s_request_drain_reject (link, message);
        return;
    }
    bool park = false;
    if (!s_room (self)) {
        //  Within what its own broker was told (several brokers, each
        //  giving its share), or in a slot a broker freed early: it waits
        //  for a slot; beyond it (a broker that ignores the concurrency)
        //  it is rejected
        park = link->held < (size_t) self->concurrency
            || self->parked_count < s_forgotten (self);
        if (!park) {
            s_request_over_limit (self, link, message);
            return;
        }
    }
    //  The rid is bytes (a broker makes MDP clients' rids, starting with
    //  0x00); the service is a name, shown as text to the handler
    if (memchr (message->service.data, 0, message->service.size)) {
        s_request_refuse (link, message, "nul_in_service");
        return;
    }
    s_key_t key;
    s_reply_key (&key, link, link->generation, message->client.data,
                 message->client.size, message->rid.data, message->rid.size);
    pigato_reply_t *reply = (pigato_reply_t *) malloc (
        sizeof *reply + message->client.size + message->service.size + 1
        + key.size);
    if (!reply) {
        s_request_refuse (link, message, "out_of_memory");
        return;
    }
    memset (reply, 0, sizeof *reply);  //  storage is written below
    reply->worker = self;
    reply->link = link;
    reply->generation = link->generation;
    if (message->rid.size)
        memcpy (reply->rid, message->rid.data, message->rid.size);
    reply->rid_size = message->rid.size;
    reply->rid [reply->rid_size] = 0;
    reply->client_size = message->client.size;
    reply->client = (byte *) reply->storage;
    if (message->client.size)
        memcpy (reply->client, message->client.data, message->client.size);
    reply->service = reply->storage + message->client.size;
    if (message->service.size)
        memcpy (reply->service, message->service.data, message->service.size);
    reply->service [message->service.size] = 0;
    reply->key = (byte *) reply->service + message->service.size + 1;
    memcpy (reply->key, key.data, key.size);
    reply->key_size = key.size;
    reply->hash = key.hash;
    reply->opts = s_request_opts (message, &reply->timeout);
    if (!reply->opts) {
        reply->worker = NULL;
        pigato_reply_destroy (&reply);
        s_request_refuse (link, message, "out_of_memory");
        return;
    }
    reply->started = reply->last_heartbeat = reply->last_activity =
        pigato__now_ms ();

    //  The same request twice on one connection: the older handle is cut off
    pigato__bytes_t view = { key.data, key.size };
    int rc = pigato__table_insert (self->replies, key.hash, &view, reply);
    if (rc == 1) {
        pigato_reply_t *older = (pigato_reply_t *) pigato__table_lookup (
            self->replies, key.hash, &view);
        s_reply_detach (older);
        rc = pigato__table_insert (self->replies, key.hash, &view, reply);
    }
    if (rc != 0) {
        //  Untracked, it could not be detached when the worker goes
        reply->worker = NULL;
        pigato_reply_destroy (&reply);
        s_request_refuse (link, message, "out_of_memory");
        return;
    }
    reply->tracked = true;
    reply->held_by = link;
    link->held++;
    if (!park) {
        s_request_hand (self, reply, message->data.data, message->data.size);
        return;
    }
    if (s_request_park (self, reply, message) != 0) {
        s_reply_detach (reply);
        pigato_reply_destroy (&reply);
        s_request_over_limit (self, link, message);
    }
}

//  --------------------------------------------------------------------------
//  Handles one message (or native entry) from a broker, decoded and
//  checked by link.c. Returns -1 once the worker is stopped.

static int
s_link_handle (void *owner, pigato__link_t *link, const pigato__msg_t *message)
{
    pigato_worker_t *self = (pigato_worker_t *) owner;
    self->progress = true;
    if (message->type == PIGATO__REQUEST && !pigato__link_room (link))
        s_request_busy (self, link, message);
    else if (message->type == PIGATO__REQUEST)
        s_request_handle (self, link, message);
    else if (message->type == PIGATO__HEARTBEAT && message->request_heartbeat) {
        s_key_t key;
        s_reply_key (&key, link, link->generation, message->client.data,
                     message->client.size, message->rid.data,
                     message->rid.size);
        pigato__bytes_t view = { key.data, key.size };
        pigato_reply_t *reply = (pigato_reply_t *) pigato__table_lookup (
            self->replies, key.hash, &view);
        if (reply)
            reply->last_heartbeat = pigato__now_ms ();
    }
    else if (message->type == PIGATO__HEARTBEAT) {
        link->heartbeats_answered++;
        s_drain_check (self);
    }
    else if (message->type == PIGATO__DISCONNECT)
        s_link_disconnect (self, link, message);
    else if (message->type == PIGATO__READY) {
        link->acknowledged = true;
        self->refusal = 0;
    }
    //  READY and plain HEARTBEAT answers prove the broker alive
    return self->stopped ? -1 : 0;
}

//  After a zloop reader drained a link: the heartbeat tick, same round.
static void
s_loop_tick (void *owner)
{
    s_timers_run ((pigato_worker_t *) owner);
}

static int
s_loop_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    pigato_worker_t *self = (pigato_worker_t *) arg;
    pigato__links_hold (self->links);
    s_timers_run (self);
    pigato__links_release (self->links);
    return zsys_interrupted ? -1 : 0;
}

//  --------------------------------------------------------------------------
//  True if some broker has the worker: it took READY on a live link.

static bool
s_serving (pigato_worker_t *self)
{
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (link->sock && link->acknowledged)
            return true;
    }
    return false;
}

//  --------------------------------------------------------------------------
//  True for a name every broker refuses to register: empty, too long,
//  reserved ($..., mmi.*), or holding spaces or control characters.

static bool
s_service_refused (const char *service)
{
    size_t size = service ? strlen (service) : 0;
    if (size == 0 || size > PIGATO_SERVICE_MAX || service [0] == '$')
        return true;
    pigato__bytes_t name = { (const byte *) service, size };
    if (pigato__mmi_is (&name))
        return true;
    for (size_t index = 0; index < size; index++)
        if ((byte) service [index] <= ' ' || (byte) service [index] == 0x7f)
            return true;
    return false;
}

//  --------------------------------------------------------------------------
//  Constructor: NULL on a bad service name, no handler or no memory.

PIGATO_EXPORT pigato_worker_t *
pigato_worker_new (const char *service, pigato_request_fn *handler, void *arg)
{
    pigato__signals_leave ();
    if (s_service_refused (service) || !handler || sodium_init () < 0)
        return NULL;
    pigato_worker_t *self = (pigato_worker_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->service = strdup (service);
    self->handler = handler;
    self->arg = arg;
    pigato__settings_init (&self->settings, self->err, sizeof self->err);
    self->concurrency = PIGATO_CONCURRENCY;
    self->replies = pigato__table_new (s_reply_match);
    self->links = pigato__links_new ('W', &self->settings.security,
                                     s_link_handle, s_loop_tick,
                                     s_link_disconnected, s_link_change, self);
    self->loop_timer = -1;
    if (self->links)
        pigato__links_on_room (self->links, s_link_room);
    if (!self->service || !self->replies || !self->links)
        pigato_worker_destroy (&self);
    return self;
}

//  --------------------------------------------------------------------------
//  Stops (DISCONNECT to every broker, sockets closed) and frees; replies
//  the application still holds are detached. Call it before destroying an
//  attached zloop.

PIGATO_EXPORT void
pigato_worker_destroy (pigato_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato_worker_t *self = *self_p;
    pigato_worker_stop (self);
    if (self->replies) {
        //  Detached in place: the table goes with them
        size_t cursor = 0;
        pigato_reply_t *reply;
        while ((reply = (pigato_reply_t *) pigato__table_next (self->replies,
                                                               &cursor))) {
            reply->tracked = false;
            s_reply_detach (reply);
        }
        pigato__table_destroy (&self->replies);
    }
    //  Never handed: ours to free (detached above)
    while (self->parked) {
        s_parked_t *entry = self->parked;
        self->parked = entry->next;
        pigato_reply_destroy (&entry->reply);
        free (entry);
    }
    pigato__links_destroy (&self->links);
    pigato__settings_reset (&self->settings);
    free (self->service);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Setters: one implementation for clients and workers (settings.c).

static pigato__settings_t *
s_settings (pigato_worker_t *self)
{
    return self ? &self->settings : NULL;
}

PIGATO_EXPORT int
pigato_worker_set_server_key (pigato_worker_t *self, const char *key)
{
    return pigato__settings_set_server_key (s_settings (self), key);
}

PIGATO_EXPORT int
pigato_worker_set_server_ca (pigato_worker_t *self, const char *ca_crt)
{
    return pigato__settings_set_server_ca (s_settings (self), ca_crt);
}

PIGATO_EXPORT int
pigato_worker_set_key_file (pigato_worker_t *self, const char *path)
{
    return pigato__settings_set_key_file (s_settings (self), path);
}

PIGATO_EXPORT void
pigato_worker_set_insecure (pigato_worker_t *self, bool insecure)
{
    pigato__settings_set_insecure (s_settings (self), insecure);
}

//  Heartbeat interval and liveness; non-positive values are ignored.
PIGATO_EXPORT void
pigato_worker_set_heartbeat (pigato_worker_t *self, int interval_ms,
                             int liveness)
{
    pigato__settings_set_heartbeat (s_settings (self), interval_ms, liveness);
}

PIGATO_EXPORT int
pigato_worker_set_max_outbound (pigato_worker_t *self, int64_t bytes)
{
    int rc = pigato__settings_set_max_outbound (s_settings (self), bytes);
    if (rc == PIGATO_OK)
        pigato__links_set_max_outbound (self->links, bytes);
    return rc;
}

//  Framing for links connected from now on: "auto", "native" or "0.0.46".
PIGATO_EXPORT int
pigato_worker_set_framing (pigato_worker_t *self, const char *framing)
{
    return pigato__settings_set_framing (s_settings (self), framing);
}

//  Concurrency announced in heartbeats and enforced (s_request_handle);
//  any negative value means -1, unlimited.
PIGATO_EXPORT void
pigato_worker_set_concurrency (pigato_worker_t *self, int concurrency)
{
    if (self)
        self->concurrency = concurrency < 0 ? -1 : concurrency;
}

PIGATO_EXPORT size_t
pigato_worker_in_flight (pigato_worker_t *self)
{
    return self ? self->in_flight : 0;
}

PIGATO_EXPORT uint64_t
pigato_worker_over_concurrency (pigato_worker_t *self)
{
    return self ? self->over_concurrency : 0;
}

//  --------------------------------------------------------------------------
//  Adds a broker link and announces the service on it.

PIGATO_EXPORT int
pigato_worker_connect (pigato_worker_t *self, const char *endpoint)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (self->stopped) {
        pigato__errorf (self->err, sizeof self->err, "worker is stopped");
        return PIGATO_E_CLOSED;
    }
    if (!endpoint || !*endpoint) {
        pigato__errorf (self->err, sizeof self->err, "no endpoint given");
        return PIGATO_E_INVALID;
    }
    pigato__link_t *link;
    int rc = pigato__links_add (self->links, endpoint, self->settings.framing,
                                &link, self->err, sizeof self->err);
    if (rc != PIGATO_OK)
        return rc;
    s_link_greet (self, link);
    if (!self->next_heartbeat)
        self->next_heartbeat = pigato__now_ms () + self->settings.interval_ms;
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Polls the links until a message was handled or timeout_ms passed (-1 =
//  no limit); heartbeats are sent on time meanwhile.

PIGATO_EXPORT int
pigato_worker_wait (pigato_worker_t *self, int timeout_ms)
{
    if (!self)
        return PIGATO_E_INVALID;
    int rc = PIGATO_OK;
    int64_t deadline = timeout_ms < 0 ? -1 : pigato__now_ms () + timeout_ms;
    self->progress = false;
    while (true) {
        if (self->stopped) {
            rc = PIGATO_E_CLOSED;
            break;
        }
        if (zsys_interrupted) {
            rc = PIGATO_E_INTERRUPTED;
            break;
        }
        int64_t now = pigato__now_ms ();
        int64_t wait_ms = deadline < 0   ? -1
                        : deadline > now ? deadline - now
                                         : 0;
        if (self->next_heartbeat) {
            int64_t until = self->next_heartbeat > now
                              ? self->next_heartbeat - now
                              : 0;
            if (wait_ms < 0 || until < wait_ms)
                wait_ms = until;
        }
        if (self->draining) {
            //  The wait for the drain's acknowledgement, then its deadline
            int64_t ack = self->drain_started
                        + (int64_t) self->settings.interval_ms
                              * self->settings.liveness;
            int64_t when = ack > now ? ack : self->drain_deadline;
            if (self->drain_deadline && self->drain_deadline < when)
                when = self->drain_deadline;
            int64_t until = when > now ? when - now : 0;
            if (when && (wait_ms < 0 || until < wait_ms))
                wait_ms = until;
        }
        //  A slot freed by the application since: the waiting request
        //  goes to the handler this round (s_timers_run)
        if (self->parked && s_room (self))
            wait_ms = 0;
        //  One round: replies written by the handler are coalesced
        size_t received = 0;
        pigato__links_hold (self->links);
        int polled = pigato__links_poll (self->links, wait_ms, &received);
        if (polled == PIGATO_OK)
            s_timers_run (self);
        pigato__links_release (self->links);
        if (polled == 1)
            break;  //  nothing could ever happen
        if (polled != PIGATO_OK) {
            rc = polled;
            break;
        }
        if (received)
            self->progress = true;
        if (self->stopped)
            rc = PIGATO_E_CLOSED;
        else if (self->refusal_new && !s_serving (self)) {
            rc = self->refusal;
            self->refusal_new = false;
            break;
        }
        if (self->stopped || self->progress
            || (deadline >= 0 && pigato__now_ms () >= deadline))
            break;
    }
    return rc;
}

//  --------------------------------------------------------------------------
//  Runs until stop () (returns 0) or a signal (E_INTERRUPTED).

PIGATO_EXPORT int
pigato_worker_run (pigato_worker_t *self)
{
    if (!self)
        return PIGATO_E_INVALID;
    int rc;
    while ((rc = pigato_worker_wait (self, -1)) == PIGATO_OK)
        ;
    return rc == PIGATO_E_CLOSED ? PIGATO_OK : rc;
}

//  --------------------------------------------------------------------------
//  Sends DISCONNECT on every link and closes the sockets; replies go
//  inactive. Idempotent.

PIGATO_EXPORT void
pigato_worker_stop (pigato_worker_t *self)
{
    if (!self || self->stopped)
        return;
    self->stopped = true;
    for (size_t index = 0; index < pigato__links_size (self->links); index++)
        s_link_close (pigato__links_get (self->links, index), true);
    if (self->loop && self->loop_timer >= 0)
        zloop_timer_end (self->loop, self->loop_timer);
    self->loop_timer = -1;
    if (self->loop && self->park_timer)
        zloop_timer_end (self->loop, self->park_timer);
    self->park_timer = 0;
    pigato__log (PIGATO_LOG_INFO, "event=worker_stop service=%s",
                 self->service);
}

//  --------------------------------------------------------------------------
//  Drain: no room from now on (a heartbeat with concurrency 0 to every
//  broker), late requests rejected, stop once the handler holds none.

PIGATO_EXPORT int
pigato_worker_drain (pigato_worker_t *self, int timeout_ms)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (self->stopped)
        return PIGATO_E_CLOSED;
    if (self->draining)
        return PIGATO_OK;
    self->draining = true;
    self->drain_started = pigato__now_ms ();
    if (timeout_ms >= 0)
        self->drain_deadline = self->drain_started + timeout_ms;
    pigato__log (PIGATO_LOG_INFO,
                 "event=worker_drain service=%s pending=%zu timeout_ms=%d",
                 self->service, pigato__table_size (self->replies), timeout_ms);
    pigato__links_hold (self->links);
    s_parked_drain (self);
    for (size_t index = 0; index < pigato__links_size (self->links); index++) {
        pigato__link_t *link = pigato__links_get (self->links, index);
        if (link->sock) {
            s_link_heartbeat (self, link);
            link->drain_heartbeat = link->heartbeats_sent;
        }
    }
    pigato__links_release (self->links);
    s_drain_check (self);
    return PIGATO_OK;
}

PIGATO_EXPORT size_t
pigato_worker_pending (pigato_worker_t *self)
{
    return self ? pigato__table_size (self->replies) : 0;
}

//  --------------------------------------------------------------------------
//  Registers with an application's zloop; once only.

PIGATO_EXPORT int
pigato_worker_attach (pigato_worker_t *self, void *zloop)
{
    if (!self || !zloop || self->loop || self->stopped) {
        if (self)
            pigato__errorf (self->err, sizeof self->err,
                            "attach needs a running worker, a zloop, and "
                            "only one");
        return PIGATO_E_INVALID;
    }
    self->loop = (zloop_t *) zloop;
    int period = self->settings.interval_ms < WORKER_LOOP_TICK_MS
                   ? self->settings.interval_ms
                   : WORKER_LOOP_TICK_MS;
    self->loop_timer = zloop_timer (self->loop, (size_t) period, 0,
                                    s_loop_timer, self);
    pigato__links_attach (self->links, self->loop);
    return self->loop_timer >= 0 ? PIGATO_OK : PIGATO_E_SYSTEM;
}

PIGATO_EXPORT int
pigato_worker_refusal (pigato_worker_t *self)
{
    return !self || s_serving (self) ? PIGATO_OK : self->refusal;
}

PIGATO_EXPORT const char *
pigato_worker_service (pigato_worker_t *self)
{
    return self ? self->service : NULL;
}

PIGATO_EXPORT const char *
pigato_worker_error (pigato_worker_t *self)
{
    return self ? self->err : "no worker";
}

//  --------------------------------------------------------------------------
//  A reply can send while its worker runs and its connection is the one
//  the request came on.

static bool
s_reply_connected (pigato_reply_t *self)
{
    return self->worker && !self->worker->stopped && self->link
        && self->link->sock && self->link->generation == self->generation;
}

//  --------------------------------------------------------------------------
//  Sends W, type, client, "", rid, status, data, opts.

static int
s_reply_send (pigato_reply_t *self, int type, int status, const void *data,
              size_t size)
{
    if (!s_reply_connected (self))
        return PIGATO_E_CLOSED;
    pigato__msg_t message = { .role = 'W',
                              .type = type,
                              .status = status,
                              .client = { self->client, self->client_size },
                              .rid = { self->rid, self->rid_size },
                              .data = { (const byte *) data, size } };
    if (pigato__link_send (self->link, &message) != 0)
        return PIGATO_E_CLOSED;
    char rid_text [80];
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=worker_reply rid=%s type=%d "
                 "status=%d size=%zu",
                 pigato__printable (self->rid, self->rid_size, rid_text,
                                    sizeof rid_text),
                 type, status, size);
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Marks a reply ended and untracks it (done before sending, so a failed
//  send still ends it). Inlined: it is on every reply's path.

static inline __attribute__ ((always_inline)) int
s_reply_finish (pigato_reply_t *self, int type, int status, const void *data,
                size_t size)
{
    self->ended = true;
    s_reply_untrack (self);
    pigato_worker_t *worker = self->worker;
    s_reply_release (self);
    int rc = s_reply_send (self, type, status, data, size);
    if (worker && worker->draining)
        s_drain_check (worker);  //  perhaps the last one
    return rc;
}

//  --------------------------------------------------------------------------
//  A body over PIGATO_BODY_MAX would make the broker drop our connection,
//  and with it every other request this worker holds there. So it is
//  never sent: the request ends with an E_TOO_LARGE error reply (a reject
//  keeps being a reject, with that text as its reason) and the caller
//  gets PIGATO_E_TOO_LARGE. what names the body for people ("reply").

static int
s_reply_too_large (pigato_reply_t *self, int type, const char *what,
                   size_t size)
{
    //  The text needs no escaping, so it is its own JSON string
    char json [160], rid_text [80];
    snprintf (json, sizeof json,
              "\"E_TOO_LARGE %s of %zu bytes exceeds the broker's limit of "
              "%d bytes\"",
              what, size, PIGATO_BODY_MAX);
    pigato__log (PIGATO_LOG_WARNING,
                 "event=worker_reply_too_large rid=%s what=\"%s\" size=%zu "
                 "limit=%d",
                 pigato__printable (self->rid, self->rid_size, rid_text,
                                    sizeof rid_text),
                 what, size, PIGATO_BODY_MAX);
    if (self->worker)
        pigato__errorf (self->worker->err, sizeof self->worker->err, "%.*s",
                        (int) strlen (json) - 2, json + 1);
    bool reject = type == PIGATO__REJECT;
    if (s_reply_finish (self, reject ? PIGATO__REJECT : PIGATO__REPLY,
                        reject ? 0 : -1, json, strlen (json))
        != PIGATO_OK)
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=worker_reply_too_large_unsent rid=%s", rid_text);
    return PIGATO_E_TOO_LARGE;
}

PIGATO_EXPORT int
pigato_reply_write (pigato_reply_t *self, const void *data, size_t size)
{
    if (!self || (!data && size))
        return PIGATO_E_INVALID;
    if (self->ended)
        return PIGATO_E_ENDED;
    if (size > PIGATO_BODY_MAX)
        return s_reply_too_large (self, PIGATO__PARTIAL, "partial reply", size);
    int rc = s_reply_send (self, PIGATO__PARTIAL, 0, data, size);
    if (rc == PIGATO_OK)
        self->last_activity = pigato__now_ms ();
    return rc;
}

PIGATO_EXPORT int
pigato_reply_end (pigato_reply_t *self, const void *data, size_t size)
{
    if (!self || (!data && size))
        return PIGATO_E_INVALID;
    if (self->ended)
        return PIGATO_E_ENDED;
    if (size > PIGATO_BODY_MAX)
        return s_reply_too_large (self, PIGATO__REPLY, "reply", size);
    return s_reply_finish (self, PIGATO__REPLY, 0, data, size);
}

PIGATO_EXPORT int
pigato_reply_error (pigato_reply_t *self, const char *message)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (self->ended)
        return PIGATO_E_ENDED;
    char *json = pigato__json_string (message ? message : "error");
    if (!json)
        return PIGATO_E_NOMEM;
    size_t json_size = strlen (json);
    int rc = json_size > PIGATO_BODY_MAX
               ? s_reply_too_large (self, PIGATO__REPLY, "error message",
                                    json_size)
               : s_reply_finish (self, PIGATO__REPLY, -1, json, json_size);
    free (json);
    return rc;
}

PIGATO_EXPORT int
pigato_reply_reject (pigato_reply_t *self, const char *reason)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (self->ended)
        return PIGATO_E_ENDED;
    char *json = pigato__json_string (reason ? reason : "");
    if (!json)
        return PIGATO_E_NOMEM;
    size_t json_size = strlen (json);
    int rc = json_size > PIGATO_BODY_MAX
               ? s_reply_too_large (self, PIGATO__REJECT, "reject reason",
                                    json_size)
               : s_reply_finish (self, PIGATO__REJECT, 0, json, json_size);
    free (json);
    return rc;
}

PIGATO_EXPORT int
pigato_reply_heartbeat (pigato_reply_t *self)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (self->ended)
        return PIGATO_E_ENDED;
    if (!s_reply_connected (self))
        return PIGATO_E_CLOSED;
    s_link_heartbeat (self->worker, self->link);
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Active while not ended, connected, heartbeated by the client within the
//  liveness window (or younger than it), and not past its timeout.

PIGATO_EXPORT bool
pigato_reply_active (pigato_reply_t *self)
{
    if (!self || self->ended || !s_reply_connected (self))
        return false;
    int64_t now = pigato__now_ms ();
    int64_t window = (int64_t) self->worker->settings.interval_ms
                   * self->worker->settings.liveness;
    int64_t alive_since = self->last_heartbeat > self->started
                            ? self->last_heartbeat
                            : self->started;
    if (now - alive_since >= window)
        return false;
    return self->timeout < 0 || now - self->last_activity < self->timeout;
}

PIGATO_EXPORT bool
pigato_reply_ended (pigato_reply_t *self)
{
    return self && self->ended;
}

PIGATO_EXPORT const char *
pigato_reply_service (pigato_reply_t *self)
{
    return self ? self->service : NULL;
}

PIGATO_EXPORT const char *
pigato_reply_opts (pigato_reply_t *self)
{
    return self ? self->opts : NULL;
}

PIGATO_EXPORT const char *
pigato_reply_rid (pigato_reply_t *self)
{
    return self ? (const char *) self->rid : NULL;
}

PIGATO_EXPORT const void *
pigato_reply_rid_bytes (pigato_reply_t *self, size_t *size)
{
    if (size)
        *size = self ? self->rid_size : 0;
    return self ? self->rid : NULL;
}

//  The broker's "attempt" opt (docs/protocol.md), read when asked: most
//  handlers never ask, and most requests have none (= 1).
PIGATO_EXPORT int
pigato_reply_attempt (pigato_reply_t *self)
{
    return self ? pigato__opts_attempt (self->opts, strlen (self->opts)) : 0;
}

//  --------------------------------------------------------------------------
//  Destroys a reply; one never ended gets an "E_DROPPED" error reply so
//  the client does not wait for its timeout.

PIGATO_EXPORT void
pigato_reply_destroy (pigato_reply_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato_reply_t *self = *self_p;
    if (!self->ended && self->worker) {
        char rid_text [80];
        pigato__log (PIGATO_LOG_DEBUG, "event=worker_reply_dropped rid=%s",
                     pigato__printable (self->rid, self->rid_size, rid_text,
                                        sizeof rid_text));
        pigato_reply_error (self, "E_DROPPED");
    }
    s_reply_detach (self);
    if (self->opts != s_no_opts)
        free (self->opts);
    free (self);
    *self_p = NULL;
}
