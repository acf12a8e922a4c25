/*  =========================================================================
    link.c - broker links of a client or worker (link.h): sockets, the
    framing each link speaks, coalesced native sends, the poll/drain loop.

    A link offers the native framing in auto mode and switches to it after
    the first valid native message from its broker; it reads both framings
    always. A native message is checked whole (every entry, every external
    frame used) before any of its entries is handed to the owner, so a
    malformed batch is dropped without side effects.

    Every socket has a libzmq monitor (an inproc PAIR). DISCONNECTED: a
    broker that had spoken and whose connection ends is gone, with what
    it held for this connection (a broker forgets the requests of a closed
    connection), so the owner hears of it at once. The handshake events
    give the link's state: UP when the security handshake completed, and
    at once why it failed (the broker's ZAP handler refused the key, the
    mechanisms differ, or the handshake broke: wrong server key), so the
    owner can fail what waits instead of letting it time out.
    =========================================================================
*/
#include <inttypes.h>
#include <netdb.h>
#include <sodium.h>
#include "link.h"

#define LINK_DRAIN_MAX       1000  //  messages per link per round
#define LINK_DISPATCH_ROUNDS 4     //  zloop: rounds in one turn, then next turn
#define LINK_BACKOFF_MS      500   //  first wait after a refusal
#define LINK_BACKOFF_MAX_MS  30000  //  longest wait after refusals in a row
#define LINK_HANDSHAKE_DROPS 3      //  closes during handshakes that fail it
#define LINK_BUDGET_TICK_MS  20     //  byte budgets checked this often
//  What the monitor reports
#define LINK_EVENTS                                                            \
    (ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECTED                              \
     | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH         \
     | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL                                     \
     | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

//  One entry of a poll: a link's socket or its monitor.
typedef struct {
    pigato__link_t *link;  //  the link
    unsigned generation;   //  its generation when polled
    bool monitor;          //  the monitor, not the socket
} s_polled_t;

struct _pigato__links_t {
    char role;                                //  'C' client or 'W' worker
    const char *name;                         //  "client" / "worker", for logs
    const pigato__peer_security_t *security;  //  owner's, borrowed
    pigato__link_handler_fn *handler;         //  per message from a broker
    pigato__link_tick_fn *tick;               //  after a zloop drain
    pigato__link_lost_fn *lost;               //  connection to a broker ended
    pigato__link_change_fn *change;           //  state changed (up, failed)
    void *owner;                              //  their argument
    pigato__link_t **items;                   //  the links
    size_t size;                              //  links in use
    int hold;                    //  dispatch depth: > 0 coalesces sends
    zloop_t *loop;               //  attached zloop, or NULL
    int settle_timer;            //  zloop timer of a pending dispatch, or 0
    bool dispatching;            //  zloop: inside s_dispatch
    zmq_pollitem_t *poll_items;  //  reused by every poll
    s_polled_t *polled;          //  what each poll item is
    size_t poll_capacity;        //  slots in the two arrays

    //  Byte budgets (link_budget.h)
    int64_t max_outbound;            //  per link, bytes
    pigato__link_room_fn *room;      //  owner: a link went over or under it
    size_t over;                     //  links over theirs now
    int64_t budget_due;              //  next check (ms)
    int budget_timer;                //  its zloop timer, or 0
    pigato__ratelimit_t budget_log;  //  send_queue_full log limiter
    pigato__ratelimit_t busy_log;    //  the owner's refusals' limiter
};

static void s_settle_outside (pigato__links_t *self);
static void s_budget_tick (pigato__links_t *self, int64_t now);
static void s_budget_over (pigato__link_t *link, bool over);
static int64_t s_budget_next (pigato__links_t *self);

pigato__links_t *
pigato__links_new (char role, const pigato__peer_security_t *security,
                   pigato__link_handler_fn *handler, pigato__link_tick_fn *tick,
                   pigato__link_lost_fn *lost, pigato__link_change_fn *change,
                   void *owner)
{
    pigato__links_t *self = (pigato__links_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->role = role;
    self->name = role == 'C' ? "client" : "worker";
    self->security = security;
    self->handler = handler;
    self->tick = tick;
    self->lost = lost;
    self->change = change;
    self->owner = owner;
    self->max_outbound = PIGATO_LINK_MAX_OUTBOUND;
    return self;
}

//  --------------------------------------------------------------------------
//  Drops a link's pending batch unsent.

static void
s_link_discard (pigato__link_t *self)
{
    for (size_t index = 0; index < self->writer.externals; index++)
        zmq_msg_close (&self->externals [index]);
    pigato__native_writer_reset (&self->writer);
}

void
pigato__links_destroy (pigato__links_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__links_t *self = *self_p;
    if (self->loop && self->settle_timer)
        zloop_timer_end (self->loop, self->settle_timer);
    if (self->loop && self->budget_timer)
        zloop_timer_end (self->loop, self->budget_timer);
    for (size_t index = 0; index < self->size; index++) {
        pigato__link_t *link = self->items [index];
        pigato__link_close (link);
        s_link_discard (link);
        pigato__native_writer_free (&link->writer);
        free (link->externals);
        free (link->endpoint);
        free (link);
    }
    free (self->items);
    free (self->poll_items);
    free (self->polled);
    free (self);
    *self_p = NULL;
}

size_t
pigato__links_size (pigato__links_t *self)
{
    return self->size;
}

pigato__link_t *
pigato__links_get (pigato__links_t *self, size_t index)
{
    return index < self->size ? self->items [index] : NULL;
}

//  --------------------------------------------------------------------------
//  Sends a pending native batch: the batch frame, then its external
//  bodies in order, as one message. Empties the writer either way. 0 or -1.

static int
s_link_flush (pigato__link_t *self)
{
    if (self->writer.entries == 0)
        return 0;
    if (!self->sock) {
        s_link_discard (self);
        return -1;
    }
    void *handle = zsock_resolve (self->sock);
    size_t externals = self->writer.externals;
    bool curve = self->budget.curve;
    uint64_t bytes = pigato__wire_bytes (self->writer.size, curve);
    for (size_t index = 0; index < externals; index++)
        bytes += pigato__wire_bytes (zmq_msg_size (&self->externals [index]),
                                     curve);
    self->dirty = true;
    int rc = zmq_send (handle, self->writer.data, self->writer.size,
                       externals ? ZMQ_SNDMORE : 0)
                   < 0
               ? -1
               : 0;
    for (size_t index = 0; index < externals; index++) {
        zmq_msg_t *body = &self->externals [index];
        if (rc == 0
            && zmq_msg_send (body, handle,
                             index + 1 < externals ? ZMQ_SNDMORE : 0)
                   >= 0)
            continue;
        zmq_msg_close (body);
        rc = -1;
    }
    pigato__native_writer_reset (&self->writer);
    if (rc == 0)
        pigato__link_budget_sent (&self->budget, bytes, 1 + externals);
    return rc;
}

//  --------------------------------------------------------------------------
//  Appends a message to the link's batch; a large body is copied into
//  its own frame. -1 if a field does not fit the native framing (the
//  caller sends it in 0.0.46 framing) or memory ran out.

static int
s_native_add (pigato__link_t *self, const pigato__msg_t *message)
{
    bool external = pigato__native_body_external (message->data.size);
    if (!external)
        return pigato__native_writer_add (&self->writer, message, false);
    if (!self->externals) {
        self->externals = (zmq_msg_t *) calloc (PIGATO__NATIVE_EXTERNAL_MAX,
                                                sizeof (zmq_msg_t));
        if (!self->externals)
            return -1;
    }
    //  writer_full () keeps externals below the limit between adds
    zmq_msg_t *body = &self->externals [self->writer.externals];
    if (zmq_msg_init_size (body, message->data.size) != 0)
        return -1;
    memcpy (zmq_msg_data (body), message->data.data, message->data.size);
    if (pigato__native_writer_add (&self->writer, message, true) != 0) {
        zmq_msg_close (body);
        return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Sends a message in pigato 0.0.46 framing (docs/protocol.md).

static int
s_send_046 (pigato__link_t *self, const pigato__msg_t *message)
{
    char type [2] = { (char) ('0' + message->type), 0 };
    const char *status = message->status ? "-1" : "0";
    pigato__bytes_t frames [8] = {
        { (const byte *) (self->links->role == 'C' ? "C" : "W"), 1 },
        { (const byte *) type, 1 }
    };
    size_t count = 2;
    pigato__bytes_t empty = S_TEXT ("");
    pigato__bytes_t offer = S_TEXT (PIGATO__NATIVE_OFFER);
    if (self->links->role == 'C') {
        if (message->type == PIGATO__REQUEST) {
            frames [count++] = message->service;
            frames [count++] = message->rid;
            frames [count++] = message->data;
            frames [count++] = message->opts.size
                                 ? message->opts
                                 : (pigato__bytes_t) S_TEXT ("{}");
        }
        else if (message->type == PIGATO__HEARTBEAT && message->rid.size) {
            frames [count++] = (pigato__bytes_t) S_TEXT ("request");
            frames [count++] = message->rid;
        }
        else if (message->type == PIGATO__HEARTBEAT && message->native_offer)
            frames [count++] = offer;
    }
    else if (message->type == PIGATO__READY) {
        frames [count++] = message->service;
        if (message->native_offer)
            frames [count++] = offer;
    }
    else if (message->type == PIGATO__HEARTBEAT) {
        frames [count++] = empty;
        frames [count++] = message->opts;
    }
    else if (message->type == PIGATO__REPLY || message->type == PIGATO__PARTIAL
             || message->type == PIGATO__REJECT) {
        frames [count++] = message->client;
        frames [count++] = empty;
        frames [count++] = message->rid;
        frames [count++] = (pigato__bytes_t) S_TEXT (status);
        frames [count++] = message->data;
        if (message->type != PIGATO__REJECT)
            frames [count++] = message->opts.size
                                 ? message->opts
                                 : (pigato__bytes_t) S_TEXT ("{}");
    }
    if (pigato__send_frames (self->sock, frames, count) != 0)
        return -1;
    uint64_t bytes = 0;
    for (size_t index = 0; index < count; index++)
        bytes += pigato__wire_bytes (frames [index].size, self->budget.curve);
    pigato__link_budget_sent (&self->budget, bytes, count);
    return 0;
}

void
pigato__link_send_repeated (pigato__link_t *self, const pigato__msg_t *message)
{
    if (!pigato__link_room (self))
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=send_skipped endpoint=%s type=%d reason=queue_full",
                     self->endpoint, message->type);
    else if (pigato__link_send (self, message))
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=send_skipped endpoint=%s "
                     "type=%d",
                     self->endpoint, message->type);
}

int
pigato__link_send (pigato__link_t *self, const pigato__msg_t *message)
{
    if (!self->sock)
        return -1;
    //  The broker drops the connection of a peer that sends a frame it
    //  refuses, and every request on it: such a message never leaves
    if (message->data.size > PIGATO_BODY_MAX
        || message->opts.size > PIGATO_BODY_MAX)
        return PIGATO_E_TOO_LARGE;
    int rc;
    if (self->native && s_native_add (self, message) == 0) {
        if (self->links->hold > 0
            && !pigato__native_writer_full (&self->writer))
            return 0;
        rc = s_link_flush (self);
    }
    else {
        //  Whatever is batched goes first: order per request is kept
        rc = s_link_flush (self);
        if (rc == 0) {
            rc = s_send_046 (self, message);
            self->dirty = true;
        }
    }
    if (self->links->hold == 0)
        s_settle_outside (self->links);
    return rc;
}

bool
pigato__link_alive (pigato__link_t *self, int64_t now, int64_t window_ms)
{
    //  A completed handshake is the broker answering too: a link just up
    //  takes its share of requests before its broker has sent anything
    return self->sock && (self->heard || self->state == PIGATO__LINK_UP)
        && now - self->last_seen <= window_ms;
}

bool
pigato__link_offers (pigato__link_t *self)
{
    return self->framing == PIGATO__FRAMING_AUTO && !self->native;
}

//  --------------------------------------------------------------------------
//  Hands a native message's entries to the owner, after checking all of
//  it. Returns -1 if draining must stop.

static int
s_native_handle (pigato__link_t *self, unsigned generation, zmsg_t *msg)
{
    pigato__links_t *links = self->links;
    zframe_t *batch = zmsg_first (msg);
    size_t frames_after = zmsg_size (msg) - 1;
    pigato__native_reader_t reader;
    pigato__msg_t entry;
    bool external = false;
    int rc = pigato__native_reader_init (&reader, zframe_data (batch),
                                         zframe_size (batch), false);
    if (rc == PIGATO__DECODE_OK && reader.role != links->role)
        rc = PIGATO__DECODE_HEADER;
    if (rc == PIGATO__DECODE_OK && frames_after > PIGATO__NATIVE_EXTERNAL_MAX)
        rc = PIGATO__DECODE_FRAMES;
    size_t used = 0;
    int more = 0;
    memset (&entry, 0, sizeof entry);
    while (rc == PIGATO__DECODE_OK
           && (more = pigato__native_next (&reader, &entry, &external)) == 1)
        used += external ? 1 : 0;
    if (rc == PIGATO__DECODE_OK && more < 0)
        rc = reader.error;
    if (rc == PIGATO__DECODE_OK && used != frames_after)
        rc = PIGATO__DECODE_FRAMES;
    if (rc != PIGATO__DECODE_OK) {
        pigato__log (PIGATO_LOG_DEBUG,
                     "event=%s_drop endpoint=%s "
                     "framing=native reason=%s",
                     links->name, self->endpoint, pigato__decode_reason (rc));
        return 0;
    }
    if (self->framing == PIGATO__FRAMING_AUTO && !self->native) {
        self->native = true;
        pigato__log (PIGATO_LOG_DEBUG, "event=%s_native endpoint=%s",
                     links->name, self->endpoint);
    }
    if (pigato__native_reader_rewind (&reader) != 0)
        return 0;  //  cannot happen: every entry was read
    zframe_t *frame = batch;
    while (pigato__native_next (&reader, &entry, &external) == 1) {
        if (external) {
            frame = zmsg_next (msg);
            entry.data.data = zframe_data (frame);
            entry.data.size = zframe_size (frame);
        }
        entry.native = true;
        if (links->handler (links->owner, self, &entry) != 0 || !self->sock
            || self->generation != generation)
            return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Handles one message from a broker. Any message proves the broker
//  alive; malformed ones are dropped with a debug line.

static int
s_link_handle (pigato__link_t *self, unsigned generation, zmsg_t *msg)
{
    self->last_seen = pigato__now_ms ();
    self->heard = true;
    if (self->state == PIGATO__LINK_CONNECTING) {
        //  A peer that reports no handshake events (ZMTP 2) still speaks
        self->state = PIGATO__LINK_UP;
        self->failure = 0;
        self->keys_failed = self->refusals = 0;
        if (self->links->change)
            self->links->change (self->links->owner, self);
        if (!self->sock || self->generation != generation)
            return -1;
    }
    zframe_t *first = zmsg_first (msg);
    if (first && pigato__native_is (zframe_data (first), zframe_size (first)))
        return s_native_handle (self, generation, msg);
    pigato__links_t *links = self->links;
    pigato__msg_t message;
    int rc = pigato__decode_from_broker (msg, &message);
    if (rc != PIGATO__DECODE_OK || message.role != links->role) {
        pigato__log (PIGATO_LOG_DEBUG, "event=%s_drop endpoint=%s reason=%s",
                     links->name, self->endpoint,
                     rc ? pigato__decode_reason (rc) : "role");
        return 0;
    }
    return links->handler (links->owner, self, &message);
}

//  --------------------------------------------------------------------------
//  Reads what is queued on a link (bounded), while the link still has the
//  socket it had when polled.

static void
s_link_drain (pigato__link_t *self, unsigned generation, size_t *received)
{
    self->dirty = true;  //  ZMQ_EVENTS is to be read after this
    for (int count = 0; count < LINK_DRAIN_MAX; count++) {
        if (!self->sock || self->generation != generation)
            break;
        zmsg_t *msg = zmsg_recv (self->sock);
        if (!msg)
            break;
        (*received)++;
        pigato__link_budget_read (&self->budget, msg);
        int rc = s_link_handle (self, generation, msg);
        zmsg_destroy (&msg);
        if (rc != 0)
            break;
    }
}

//  --------------------------------------------------------------------------
//  The endpoint's host, or "" (not tcp://, or a numeric address).

static void
s_endpoint_host (const char *endpoint, char *host, size_t host_size)
{
    host [0] = 0;
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return;
    const char *start = endpoint + 6;
    const char *at = strchr (start, ';');  //  tcp://source;host:port
    if (at)
        start = at + 1;
    const char *end = strrchr (start, ':');
    if (*start == '[' || !end || end == start
        || (size_t) (end - start) >= host_size)
        return;
    memcpy (host, start, (size_t) (end - start));
    host [end - start] = 0;
    if (streq (host, "*"))
        host [0] = 0;
}

//  Records why a link failed and tells the owner.
static void
s_link_fail (pigato__link_t *self, int status, const char *text)
{
    self->failure = status;
    snprintf (self->failure_text, sizeof self->failure_text, "%s", text);
    pigato__log (PIGATO_LOG_WARNING,
                 "event=%s_link_failed endpoint=%s status=%s reason=\"%s\"",
                 self->links->name, self->endpoint, pigato_strerror (status),
                 text);
    if (self->links->change)
        self->links->change (self->links->owner, self);
}

//  --------------------------------------------------------------------------
//  Reads a link's monitor events (as of the generation polled). The
//  handshake's outcome sets the state (and tells the owner); a
//  handshake that broke with another server key to try moves to that key
//  and has the owner reopen; a disconnect from a broker that spoke since
//  the link opened: what it sent before is handled, then the owner's
//  lost handler runs.

static void
s_monitor_drain (pigato__link_t *self, unsigned generation, size_t *received)
{
    bool disconnected = false, up = false, broke = false;
    uint32_t auth_status = 0, protocol_error = 0;
    while (self->monitor && self->generation == generation) {
        zmsg_t *msg = zmsg_recv (self->monitor);
        if (!msg)
            break;
        zframe_t *event = zmsg_first (msg);
        uint16_t number = 0;
        uint32_t value = 0;
        if (event && zframe_size (event) >= sizeof number + sizeof value) {
            memcpy (&number, zframe_data (event), sizeof number);
            memcpy (&value, zframe_data (event) + sizeof number, sizeof value);
        }
        switch (number) {
            case ZMQ_EVENT_DISCONNECTED:
                disconnected = true;
                pigato__link_budget_disconnected (&self->budget);
                if (!up && self->state == PIGATO__LINK_CONNECTING
                    && self->connected)
                    self->handshake_drops++;
                up = false;
                if (self->state == PIGATO__LINK_UP && !self->heard) {
                    //  libzmq reconnects: a new handshake to wait for
                    self->state = PIGATO__LINK_CONNECTING;
                    self->opened_at = pigato__now_ms ();
                    self->connected = false;
                }
                break;
            case ZMQ_EVENT_CONNECTED:
                self->connected = true;
                pigato__link_budget_connected (&self->budget, (int) value);
                break;
            case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
                up = true;
                self->handshake_drops = 0;
                auth_status = protocol_error = 0;
                broke = false;
                break;
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                auth_status = value ? value : 400;
                break;
            case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
                protocol_error = value;
                break;
            case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: broke = true; break;
            default: break;
        }
        zmsg_destroy (&msg);
    }
    if (self->generation != generation || !self->sock)
        return;
    pigato__links_t *links = self->links;
    if (up && self->state != PIGATO__LINK_UP) {
        self->state = PIGATO__LINK_UP;
        self->last_seen = pigato__now_ms ();
        self->failure = 0;
        self->keys_failed = self->refusals = 0;
        pigato__log (PIGATO_LOG_DEBUG, "event=%s_handshake endpoint=%s",
                     links->name, self->endpoint);
        if (links->change)
            links->change (links->owner, self);
        if (self->generation != generation)
            return;
    }
    //  The broker closed the connection during the handshake, again and
    //  again, with no reason given. Which side saw a mechanism mismatch
    //  first is a race: the peer that loses it sees only the close.
    if (self->state != PIGATO__LINK_UP && !auth_status && !protocol_error
        && self->handshake_drops >= LINK_HANDSHAKE_DROPS) {
        self->handshake_drops = 0;
        if (links->security->insecure) {
            s_link_fail (self, PIGATO_E_HANDSHAKE,
                         "no handshake with the broker: it closed the "
                         "connection during the handshake; does it use "
                         "CURVE? this peer is insecure (give --server-key)");
            return;
        }
        broke = true;
    }
    char text [200];
    if (auth_status) {
        snprintf (text, sizeof text,
                  "the broker refused this key (ZAP status %u): is it in "
                  "the ACL, and not revoked?",
                  (unsigned) auth_status);
        s_link_fail (self, PIGATO_E_AUTH, text);
        return;
    }
    if (protocol_error == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        s_link_fail (self, PIGATO_E_HANDSHAKE,
                     links->security->insecure
                         ? "no handshake with the broker: it uses CURVE, "
                           "this peer is insecure (give --server-key)"
                         : "no handshake with the broker: this peer uses "
                           "CURVE, the broker is insecure (a plaintext "
                           "broker?)");
        return;
    }
    if ((protocol_error || broke) && self->state != PIGATO__LINK_UP
        && !links->security->insecure) {
        size_t keys = links->security->server_key_count;
        if (++self->keys_failed < keys && links->lost) {
            //  Key rotation: the next acceptable server key
            self->key_index = (self->key_index + 1) % keys;
            //  key= is a fingerprint, as in every log line
            char fingerprint [PIGATO_FINGERPRINT_SIZE];
            pigato_key_fingerprint (
                links->security->server_keys [self->key_index], fingerprint);
            pigato__log (PIGATO_LOG_INFO,
                         "event=%s_next_server_key endpoint=%s key=%s "
                         "key_index=%zu",
                         links->name, self->endpoint, fingerprint,
                         self->key_index);
            links->lost (links->owner, self);
            return;
        }
        self->keys_failed = 0;
        self->key_index = (self->key_index + 1) % (keys ? keys : 1);
        s_link_fail (self, PIGATO_E_HANDSHAKE,
                     "no handshake with the broker: wrong server key, "
                     "a plaintext broker, or one with no room for more "
                     "connections?");
        return;
    }
    if (!disconnected || !self->heard)
        return;
    pigato__log (PIGATO_LOG_INFO, "event=%s_disconnected endpoint=%s",
                 links->name, self->endpoint);
    while (self->sock && self->generation == generation) {
        size_t before = *received;
        s_link_drain (self, generation, received);
        if (*received - before < LINK_DRAIN_MAX)
            break;
    }
    if (links->lost && self->generation == generation)
        links->lost (links->owner, self);
}

//  How long a link whose TCP connection is up waits for its handshake
//  before it counts as failed (E_HANDSHAKE): more than a broker's own
//  handshake timeout (5 s by default), which closes what takes longer.
#define LINK_HANDSHAKE_WAIT_MS 10000

int64_t
pigato__links_expire (pigato__links_t *self, int64_t now, int64_t timeout_ms)
{
    int64_t next = -1;
    for (size_t index = 0; index < self->size; index++) {
        pigato__link_t *link = self->items [index];
        if (link->state != PIGATO__LINK_CONNECTING || link->failure)
            continue;
        //  Connected, and the handshake under way: a busy broker (a storm
        //  of peers connecting at once, hundreds of CURVE handshakes a
        //  second) may take longer than a broker that is not there; a
        //  handshake that fails says so at once (a monitor event)
        int64_t due = link->opened_at
                    + (link->connected ? LINK_HANDSHAKE_WAIT_MS : timeout_ms);
        if (due > now) {
            if (next < 0 || due < next)
                next = due;
            continue;
        }
        char text [256], host [256];
        s_endpoint_host (link->endpoint, host, sizeof host);
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
        struct addrinfo *found = NULL;
        int gai = 0;
        if (link->connected)
            s_link_fail (link, PIGATO_E_HANDSHAKE,
                         "no handshake with the broker: wrong server key, "
                         "or a plaintext broker?");
        else if (host [0] && (gai = getaddrinfo (host, NULL, &hints, &found))
                 && gai != EAI_AGAIN) {
            snprintf (text, sizeof text, "cannot resolve host '%.120s': %s",
                      host, gai_strerror (gai));
            s_link_fail (link, PIGATO_E_RESOLVE, text);
        }
        else {
            snprintf (text, sizeof text,
                      "cannot reach the broker at %.120s: is it running, "
                      "and listening there?",
                      link->endpoint);
            s_link_fail (link, PIGATO_E_UNREACHABLE, text);
        }
        if (found)
            freeaddrinfo (found);
    }
    return next;
}

void
pigato__link_refuse (pigato__link_t *self, int status, const char *text)
{
    pigato__link_close (self);
    if (self->refusals < 16)
        self->refusals++;
    int64_t wait = LINK_BACKOFF_MS;
    for (unsigned step = 1; step < self->refusals && wait < LINK_BACKOFF_MAX_MS;
         step++)
        wait *= 2;
    if (wait > LINK_BACKOFF_MAX_MS)
        wait = LINK_BACKOFF_MAX_MS;
    //  Jitter: 75% to 125%, so refused peers do not return in step
    wait = wait * 3 / 4
         + (int64_t) randombytes_uniform ((uint32_t) (wait / 2 + 1));
    self->retry_at = pigato__now_ms () + wait;
    self->failure = status;
    if (text != self->failure_text)
        snprintf (self->failure_text, sizeof self->failure_text, "%s", text);
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=%s_backoff endpoint=%s refusals=%u wait_ms=%lld",
                 self->links->name, self->endpoint, self->refusals,
                 (long long) wait);
}

bool
pigato__link_refused (const pigato__link_t *self)
{
    return self->state != PIGATO__LINK_UP
        && (self->failure == PIGATO_E_AUTH
            || self->failure == PIGATO_E_HANDSHAKE
            || self->failure == PIGATO_E_DENIED
            || self->failure == PIGATO_E_KEY);
}

//  --------------------------------------------------------------------------
//  Under a zloop, links are polled through their ZMQ_FDs. Such a
//  descriptor signals only news (libzmq's commands), and any receive or
//  send may take in news without the descriptor signalling again, so
//  after using a socket we read ZMQ_EVENTS before the loop waits on it
//  (zmq_getsockopt(3), ZMQ_FD). A link used since that reading is dirty.

//  True if the socket holds a message (reading ZMQ_EVENTS also takes in
//  libzmq's pending commands).
static bool
s_sock_readable (zsock_t *sock)
{
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt (zsock_resolve (sock), ZMQ_EVENTS, &events, &size)
            == 0
        && (events & ZMQ_POLLIN);
}

//  Reads ZMQ_EVENTS of the dirty links and monitors: one with a message
//  stays dirty (it is to be drained), the others are clean. True if any
//  is readable. A monitor's descriptor is edge-triggered like a socket's:
//  events queued before the loop watched it, or taken in by a read,
//  signal nothing, so it is settled the same way.
static bool
s_settle (pigato__links_t *self)
{
    bool readable = false;
    for (size_t index = 0; index < self->size; index++) {
        pigato__link_t *link = self->items [index];
        if (link->monitor_dirty) {
            if (link->monitor && s_sock_readable (link->monitor))
                readable = true;
            else
                link->monitor_dirty = false;
        }
        if (!link->dirty)
            continue;
        if (link->sock && s_sock_readable (link->sock))
            readable = true;
        else
            link->dirty = false;
    }
    return readable;
}

static void s_dispatch (pigato__links_t *self);

static int
s_settle_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    pigato__links_t *self = (pigato__links_t *) arg;
    self->settle_timer = 0;
    s_dispatch (self);
    return zsys_interrupted ? -1 : 0;
}

//  After a send or a poll outside s_dispatch: a link left readable is
//  drained at the loop's next turn (not here: the application is
//  running). Inside s_dispatch, s_dispatch does it.
static void
s_settle_outside (pigato__links_t *self)
{
    if (!self->loop || self->dispatching || self->settle_timer
        || !s_settle (self))
        return;
    int timer = zloop_timer (self->loop, 0, 1, s_settle_timer, self);
    self->settle_timer = timer > 0 ? timer : 0;
}

//  One zloop dispatch: drains the dirty links, runs the owner's timers
//  and sends what that produced, in rounds while sending left a link
//  readable; after LINK_DISPATCH_ROUNDS, the rest waits for the next turn
//  of the loop so that other sockets get theirs.
static void
s_dispatch (pigato__links_t *self)
{
    bool nested = self->dispatching;
    self->dispatching = true;
    bool readable = s_settle (self);
    for (int round = 0; round < LINK_DISPATCH_ROUNDS; round++) {
        size_t received = 0;
        pigato__links_hold (self);
        for (size_t index = 0; readable && index < self->size; index++) {
            pigato__link_t *link = self->items [index];
            if (link->dirty && link->sock)
                s_link_drain (link, link->generation, &received);
        }
        //  Messages first: what a broker sent before it went is handled
        for (size_t index = 0; readable && index < self->size; index++) {
            pigato__link_t *link = self->items [index];
            if (link->monitor_dirty && link->monitor) {
                link->monitor_dirty = true;  //  read: settle again after
                s_monitor_drain (link, link->generation, &received);
            }
        }
        if (round == 0 && self->tick)
            self->tick (self->owner);
        pigato__links_release (self);
        readable = s_settle (self);
        if (!readable)
            break;
    }
    self->dispatching = nested;
    if (!nested)
        s_settle_outside (self);
}

//  zloop poller of a link's ZMQ_FD.
static int
s_loop_fd (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    (void) item;
    pigato__link_t *link = (pigato__link_t *) arg;
    link->dirty = true;
    s_dispatch (link->links);
    return zsys_interrupted ? -1 : 0;
}

//  zloop poller of a link's monitor's ZMQ_FD: the monitor is drained
//  until empty (nothing else reads or writes it), as one dispatch with
//  the timers.
static int
s_loop_monitor_fd (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    (void) item;
    pigato__link_t *link = (pigato__link_t *) arg;
    link->monitor_dirty = true;
    s_dispatch (link->links);
    return zsys_interrupted ? -1 : 0;
}

//  A socket's ZMQ_FD as a zloop poller; -1 if that failed.
static int
s_poller_add (zloop_t *loop, zsock_t *sock, zloop_fn *handler, void *arg)
{
    int fd = -1;
    size_t size = sizeof fd;
    if (zmq_getsockopt (zsock_resolve (sock), ZMQ_FD, &fd, &size) != 0)
        return -1;
    zmq_pollitem_t item = { NULL, fd, ZMQ_POLLIN, 0 };
    return zloop_poller (loop, &item, handler, arg) == 0 ? fd : -1;
}

static void
s_poller_end (zloop_t *loop, int *fd)
{
    if (*fd < 0)
        return;
    zmq_pollitem_t item = { NULL, *fd, ZMQ_POLLIN, 0 };
    zloop_poller_end (loop, &item);
    *fd = -1;
}

static void
s_link_register (pigato__link_t *self)
{
    zloop_t *loop = self->links->loop;
    if (!loop)
        return;
    if (self->sock && self->fd < 0
        && (self->fd = s_poller_add (loop, self->sock, s_loop_fd, self)) < 0)
        pigato__log (PIGATO_LOG_ERROR,
                     "event=%s_zloop_failed endpoint=%s "
                     "reason=\"%s\"",
                     self->links->name, self->endpoint,
                     zmq_strerror (zmq_errno ()));
    if (self->monitor && self->monitor_fd < 0)
        self->monitor_fd = s_poller_add (loop, self->monitor, s_loop_monitor_fd,
                                         self);
    //  What came before the loop watched the descriptors is not signalled
    //  (events of a fresh socket's connect are queued on the monitor by
    //  now): ZMQ_EVENTS is read, and what is there drained next turn
    if (self->sock) {
        self->dirty = true;
        self->monitor_dirty = self->monitor != NULL;
        s_settle_outside (self->links);
    }
}

//  --------------------------------------------------------------------------
//  Watches a fresh socket for disconnects. Without a monitor the link
//  still works: heartbeats find a dead broker.

static void
s_monitor_open (pigato__link_t *self)
{
    static unsigned sequence = 0;
    char endpoint [96];
    snprintf (endpoint, sizeof endpoint, "inproc://pigato-link-%p-%u",
              (void *) self, ++sequence);
    if (zmq_socket_monitor (zsock_resolve (self->sock), endpoint, LINK_EVENTS)
        != 0)
        return;
    self->monitor = zsock_new (ZMQ_PAIR);
    if (self->monitor) {
        zsock_set_rcvtimeo (self->monitor, 0);
        zsock_set_linger (self->monitor, 0);
        if (zsock_connect (self->monitor, "%s", endpoint) != 0)
            zsock_destroy (&self->monitor);
    }
    if (!self->monitor)
        zmq_socket_monitor (zsock_resolve (self->sock), NULL, 0);
}

static int s_budget_timer (zloop_t *loop, int timer_id, void *arg);

void
pigato__links_attach (pigato__links_t *self, zloop_t *loop)
{
    self->loop = loop;
    int timer = zloop_timer (loop, LINK_BUDGET_TICK_MS, 0, s_budget_timer,
                             self);
    self->budget_timer = timer > 0 ? timer : 0;
    for (size_t index = 0; index < self->size; index++)
        s_link_register (self->items [index]);
}

int
pigato__link_open (pigato__link_t *self, char *err, size_t err_size)
{
    pigato__link_close (self);
    byte id [PIGATO__LINK_ID_BYTES];
    randombytes_buf (id, sizeof id);
    sodium_bin2hex (self->routing_id, sizeof self->routing_id, id, sizeof id);
    int rc = pigato__peer_socket (self->links->security, self->key_index,
                                  self->endpoint, self->routing_id,
                                  PIGATO__LINK_ID_BYTES * 2, &self->sock, err,
                                  err_size);
    if (rc != PIGATO_OK) {
        self->failure = rc;
        snprintf (self->failure_text, sizeof self->failure_text, "%s", err);
        return rc;
    }
    self->generation++;
    self->last_seen = self->opened_at = pigato__now_ms ();
    self->heard = self->connected = false;
    self->handshake_drops = 0;
    self->native = self->framing == PIGATO__FRAMING_NATIVE;
    self->retry_at = 0;
    self->acknowledged = self->draining = false;
    self->heartbeats_sent = self->heartbeats_answered = 0;
    self->drain_heartbeat = 0;
    self->lost_reason = NULL;
    s_budget_over (self, false);
    pigato__link_budget_reset (&self->budget,
                               strncmp (self->endpoint, "tcp://", 6) == 0,
                               !self->links->security->insecure,
                               (uint64_t) self->links->max_outbound);
    s_monitor_open (self);
    rc = pigato__peer_connect (self->sock, self->endpoint, err, err_size);
    if (rc != PIGATO_OK) {
        pigato__link_close (self);
        self->failure = rc;
        snprintf (self->failure_text, sizeof self->failure_text, "%s", err);
        return rc;
    }
    //  Without a monitor nothing reports the handshake: assume it
    self->state = self->monitor ? PIGATO__LINK_CONNECTING : PIGATO__LINK_UP;
    s_link_register (self);
    return PIGATO_OK;
}

void
pigato__link_close (pigato__link_t *self)
{
    if (!self->sock)
        return;
    s_link_flush (self);
    if (self->links->loop) {
        s_poller_end (self->links->loop, &self->fd);
        s_poller_end (self->links->loop, &self->monitor_fd);
    }
    self->dirty = self->monitor_dirty = false;
    self->state = PIGATO__LINK_CLOSED;
    if (self->monitor) {
        zmq_socket_monitor (zsock_resolve (self->sock), NULL, 0);
        zsock_destroy (&self->monitor);
    }
    zsock_destroy (&self->sock);
}

int
pigato__links_add (pigato__links_t *self, const char *endpoint,
                   pigato__framing_t framing, pigato__link_t **link_p,
                   char *err, size_t err_size)
{
    bool ipv6;
    int rc = pigato__endpoint_check (endpoint, false, &ipv6, err, err_size);
    if (rc != PIGATO_OK)
        return rc;
    pigato__link_t **items = (pigato__link_t **) realloc (
        self->items, (self->size + 1) * sizeof (pigato__link_t *));
    if (!items)
        return PIGATO_E_NOMEM;
    self->items = items;
    pigato__link_t *link = (pigato__link_t *) calloc (1, sizeof *link);
    if (!link || !(link->endpoint = strdup (endpoint))) {
        free (link);
        return PIGATO_E_NOMEM;
    }
    link->links = self;
    link->index = self->size;
    link->fd = link->monitor_fd = -1;
    link->framing = framing;
    pigato__native_writer_init (&link->writer, self->role);
    rc = pigato__link_open (link, err, err_size);
    if (rc != PIGATO_OK) {
        free (link->endpoint);
        free (link);
        return rc;
    }
    self->items [self->size++] = link;
    if (link_p)
        *link_p = link;
    return PIGATO_OK;
}

void
pigato__links_hold (pigato__links_t *self)
{
    self->hold++;
}

void
pigato__links_release (pigato__links_t *self)
{
    if (self->hold > 0 && --self->hold > 0)
        return;
    for (size_t index = 0; index < self->size; index++)
        s_link_flush (self->items [index]);
    s_settle_outside (self);
}

int
pigato__links_poll (pigato__links_t *self, int64_t wait_ms, size_t *received)
{
    *received = 0;
    //  A callback that waits (a blocking call in a reply callback) must
    //  not leave what it sent behind
    for (size_t index = 0; index < self->size; index++)
        s_link_flush (self->items [index]);
    //  Two items per link: its socket and its monitor
    if (self->poll_capacity < 2 * self->size) {
        size_t capacity = 2 * self->size + 8;
        zmq_pollitem_t *items = (zmq_pollitem_t *) realloc (
            self->poll_items, capacity * sizeof *items);
        if (items)
            self->poll_items = items;
        s_polled_t *polled = (s_polled_t *) realloc (self->polled,
                                                     capacity * sizeof *polled);
        if (polled)
            self->polled = polled;
        if (!items || !polled)
            return PIGATO_E_NOMEM;
        self->poll_capacity = capacity;
    }
    size_t used = 0;
    for (size_t index = 0; index < self->size; index++) {
        pigato__link_t *link = self->items [index];
        if (!link->sock)
            continue;
        self->poll_items [used] = (zmq_pollitem_t) { zsock_resolve (link->sock),
                                                     0, ZMQ_POLLIN, 0 };
        self->polled [used++] = (s_polled_t) { link, link->generation, false };
        if (!link->monitor)
            continue;
        self->poll_items [used] = (zmq_pollitem_t) {
            zsock_resolve (link->monitor), 0, ZMQ_POLLIN, 0
        };
        self->polled [used++] = (s_polled_t) { link, link->generation, true };
    }
    if (used == 0 && wait_ms < 0)
        return 1;  //  nothing could ever happen
    int64_t budget_next = s_budget_next (self);
    if (budget_next >= 0) {
        int64_t until = budget_next - pigato__now_ms ();
        until = until > 0 ? until : 0;
        if (wait_ms < 0 || until < wait_ms)
            wait_ms = until;
    }
    if (zmq_poll (self->poll_items, (int) used, (long) wait_ms) < 0)
        return zmq_errno () == EINTR ? PIGATO_E_INTERRUPTED : PIGATO_E_CLOSED;
    //  Messages first: what a broker sent before it went is handled
    for (int monitors = 0; monitors < 2; monitors++)
        for (size_t index = 0; index < used; index++) {
            s_polled_t *polled = &self->polled [index];
            if (polled->monitor != (monitors == 1)
                || !(self->poll_items [index].revents & ZMQ_POLLIN))
                continue;
            if (polled->monitor)
                s_monitor_drain (polled->link, polled->generation, received);
            else
                s_link_drain (polled->link, polled->generation, received);
        }
    if (budget_next >= 0 && pigato__now_ms () >= budget_next)
        s_budget_tick (self, pigato__now_ms ());
    //  Under a zloop too (a blocking call in a callback): the sockets were
    //  used behind their descriptors' back
    for (size_t index = 0; self->loop && index < self->size; index++)
        self->items [index]->dirty = true;
    s_settle_outside (self);
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Byte budgets (link_budget.h). Outbound, a link's own count of what it
//  sent proves it under budget without a system call until that count
//  passes the budget; then the kernel is asked. Inbound, only the kernel
//  can tell a message is coming (libzmq shows nothing before its last
//  part), so every connected link is measured every LINK_BUDGET_TICK_MS
//  while the owner polls: one getsockopt per link.

void
pigato__links_set_max_outbound (pigato__links_t *self, int64_t bytes)
{
    self->max_outbound = bytes;
    for (size_t index = 0; index < self->size; index++)
        self->items [index]->budget.max_out = (uint64_t) bytes;
}

void
pigato__links_on_room (pigato__links_t *self, pigato__link_room_fn *room)
{
    self->room = room;
}

size_t
pigato__links_over (pigato__links_t *self)
{
    return self->over;
}

int
pigato__links_busy_level (pigato__links_t *self, const char *what)
{
    return pigato__log_level >= PIGATO_LOG_WARNING
                && pigato__ratelimit_allow_at (&self->busy_log, what,
                                               PIGATO_LOG_WARNING)
             ? PIGATO_LOG_WARNING
             : PIGATO_LOG_DEBUG;
}

//  Sets whether a link is over its outbound budget, counted in the set.
static void
s_budget_over (pigato__link_t *link, bool over)
{
    if (over != link->budget.over) {
        link->budget.over = over;
        link->budget.cost_over = link->budget.cost_out;
        if (over)
            link->links->over++;
        else
            link->links->over--;
    }
}

//  The count alone no longer proves the link under budget
//  (pigato__link_room).
bool
pigato__link_room_check (pigato__link_t *self)
{
    pigato__link_budget_t *budget = &self->budget;
    uint64_t max = budget->max_out;
    if (pigato__link_budget_clear (budget))
        return true;
    int64_t now = pigato__now_ms ();
    uint64_t inbound;
    if (now != budget->read_at
        && !pigato__link_budget_measure (budget, now, UINT64_MAX, &inbound))
        return true;  //  no counts from the kernel: not bounded by bytes
    s_budget_over (self, pigato__link_budget_estimate (budget) > max);
    return !budget->over;
}

//  When the next check is due, or -1 if no link needs one (none has a
//  tcp:// socket).
static int64_t
s_budget_next (pigato__links_t *self)
{
    for (size_t index = 0; index < self->size; index++) {
        pigato__link_t *link = self->items [index];
        if (link->sock && link->budget.tcp)
            return self->budget_due;
    }
    return -1;
}

//  A link went over its outbound budget or back under it: logged, and
//  the owner told.
static void
s_budget_announce (pigato__link_t *link)
{
    pigato__links_t *links = link->links;
    pigato__link_budget_t *budget = &link->budget;
    budget->announced = budget->over;
    if (!budget->over)
        pigato__log (PIGATO_LOG_INFO,
                     "event=%s_send_queue_drained endpoint=%s "
                     "queued_bytes=%" PRIu64 " max_outbound=%" PRId64,
                     links->name, link->endpoint, budget->held_out,
                     links->max_outbound);
    else if (pigato__log_level >= PIGATO_LOG_WARNING
             && pigato__ratelimit_allow_at (
                 &links->budget_log, "send_queue_full", PIGATO_LOG_WARNING))
        pigato__log (PIGATO_LOG_WARNING,
                     "event=%s_send_queue_full endpoint=%s "
                     "queued_bytes=%" PRIu64 " max_outbound=%" PRId64
                     " reason=\"the broker is not reading what it is sent\"",
                     links->name, link->endpoint, budget->held_out,
                     links->max_outbound);
    if (links->room)
        links->room (links->owner, link);
}

//  libzmq holds more than PIGATO_LINK_MAX_INBOUND of what the broker sent:
//  the link is closed and reopened through the owner's lost handler
//  (libzmq drops what it held). Not while whole messages wait to be read
//  (the owner is behind: the next round reads them), and not if the
//  connection ended meanwhile (its fd may be another socket's by now: the
//  monitor's events are read first). True if the link was cut or has
//  changed.
static bool
s_budget_cut (pigato__link_t *link, uint64_t inbound)
{
    pigato__links_t *links = link->links;
    unsigned generation = link->generation;
    int fd = link->budget.fd;
    link->dirty = true;  //  ZMQ_EVENTS is read: settle again after
    if (s_sock_readable (link->sock))
        return false;
    if (link->monitor) {
        size_t received = 0;
        link->monitor_dirty = true;
        s_monitor_drain (link, generation, &received);
    }
    if (!link->sock || link->generation != generation || link->budget.fd != fd)
        return true;
    pigato__log (PIGATO_LOG_WARNING,
                 "event=%s_inbound_over_budget endpoint=%s "
                 "unread_bytes=%" PRIu64 " max_inbound=%lld reason=\"the "
                 "broker sent a message larger than any it may send; "
                 "reconnecting\"",
                 links->name, link->endpoint, inbound,
                 (long long) PIGATO_LINK_MAX_INBOUND);
    link->lost_reason = "inbound_over_budget";
    if (links->lost)
        links->lost (links->owner, link);
    else
        pigato__link_close (link);
    return true;
}

//  Measures every link with a TCP connection: outbound state changes go
//  to the owner, a link holding too much inbound is cut.
static void
s_budget_tick (pigato__links_t *self, int64_t now)
{
    self->budget_due = now + LINK_BUDGET_TICK_MS;
    //  Handlers may add links (self->items moves) or reopen this one
    for (size_t index = 0; index < self->size; index++) {
        pigato__link_t *link = self->items [index];
        pigato__link_budget_t *budget = &link->budget;
        if (!link->sock || !budget->tcp)
            continue;
        uint64_t inbound = 0;
        bool measured = budget->fd >= 0
                     && pigato__link_budget_measure (
                            budget, now, PIGATO_LINK_MAX_INBOUND, &inbound);
        if (!measured && link->monitor) {
            //  The TCP connection is known from the monitor's events (a
            //  new one, or the end of the one measured): read them now,
            //  whatever woke the owner
            size_t received = 0;
            link->monitor_dirty = true;
            s_monitor_drain (link, link->generation, &received);
            if (!link->sock)
                continue;
        }
        if (measured
            || pigato__link_budget_measure (budget, now,
                                            PIGATO_LINK_MAX_INBOUND, &inbound))
            s_budget_over (link, pigato__link_budget_estimate (budget)
                                     > budget->max_out);
        if (inbound > PIGATO_LINK_MAX_INBOUND && s_budget_cut (link, inbound))
            continue;
        if (link->sock && budget->over != budget->announced)
            s_budget_announce (link);
    }
}

//  zloop: the checks go on while no socket stirs.
static int
s_budget_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    pigato__links_t *self = (pigato__links_t *) arg;
    int64_t now = pigato__now_ms ();
    if (!self->dispatching && s_budget_next (self) >= 0
        && now >= self->budget_due - LINK_BUDGET_TICK_MS / 2) {
        pigato__links_hold (self);
        s_budget_tick (self, now);
        pigato__links_release (self);
    }
    return zsys_interrupted ? -1 : 0;
}
