/*  =========================================================================
    front_pigato.c - the front-end for pigato peers: decodes a message in
    0.0.46 framing or a native batch entry by entry (MDP/0.2 goes to
    front_mdp.c), checks the sender against the current policy
    (auth/guard), answers what never reaches the core (refusals, client
    heartbeats, $dir and MMI) and hands the rest to the core (core.h).

    Messages are zmq_msg_t parts (broker.c reads them); bodies are shared
    with the part they came in, never copied on the way through.
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include <sys/socket.h>
#include "front.h"
#include "../wire/mdp.h"

//  --------------------------------------------------------------------------
//  Logging of bad input: rate-limited (pigato__ratelimit_t).

void
pigato__front_bad (pigato_broker_t *self, const pigato__front_in_t *in,
                   const char *reason)
{
    self->core->counters.bad_messages++;
    if (pigato__log_level < PIGATO_LOG_INFO
        || !pigato__ratelimit_allow (&self->bad_log, "bad_message"))
        return;
    char peer [80] = "?";
    const char *address = NULL;
    if (in->m.sender.size)
        pigato__printable (in->m.sender.data, in->m.sender.size, peer,
                           sizeof peer);
    if (in->meta)
        address = zmq_msg_gets (in->meta, "Peer-Address");
    pigato__log (PIGATO_LOG_INFO,
                 "event=bad_message peer=%s address=%s reason=%s frames=%zu",
                 peer, address ? address : "?", reason, in->frames);
}

//  Rare: kept out of the callers' way (pigato__front_allows is on every
//  message's path)
__attribute__ ((cold, noinline)) void
pigato__front_denied (pigato_broker_t *self, const pigato__front_in_t *in,
                      const pigato__peer_t *peer, int verb, const char *service,
                      const char *reason)
{
    pigato__guard_denied (self->guard, in->m.sender.data, in->m.sender.size,
                          in->meta, peer, verb, service, reason);
    pigato__stats_denied (self->core->stats, peer ? peer->name : NULL,
                          verb == PIGATO__VERB_CALL ? service : NULL);
}

bool
pigato__front_allows (pigato_broker_t *self, const pigato__front_in_t *in,
                      const pigato__peer_t *peer, int verb, const char *name)
{
    if (pigato__guard_allows (self->guard, peer->name, verb, name))
        return true;
    pigato__front_denied (self, in, peer, verb, name, "not_allowed");
    return false;
}

bool
pigato__front_name (const pigato__bytes_t *service, char *name)
{
    name [0] = 0;
    if (service->size > PIGATO_SERVICE_MAX
        || (service->size && memchr (service->data, 0, service->size)))
        return false;
    if (service->size)
        memcpy (name, service->data, service->size);
    name [service->size] = 0;
    return true;
}

//  The caller of a client message: who replies go to, in its framing.
static pigato__caller_t
s_caller (const pigato__msg_t *m)
{
    pigato__caller_t caller = { .framing = m->native ? PIGATO__FRAMING_NATIVE
                                                     : PIGATO__FRAMING_046,
                                .client = m->sender,
                                .conn = m->conn,
                                .rid = m->rid,
                                .service = m->service };
    return caller;
}

//  A refusal before the core: an error reply, counted as failed.
static void
s_refuse (pigato_broker_t *self, const pigato__msg_t *m, const char *text)
{
    pigato__caller_t caller = s_caller (m);
    pigato__broker_send_error (self, &caller, text);
    self->core->counters.failed++;
}

//  The framing a control message goes back in: native once the peer spoke
//  or offered it.
static pigato__framing_t
s_framing (const pigato__msg_t *m)
{
    return m->native || m->native_offer ? PIGATO__FRAMING_NATIVE
                                        : PIGATO__FRAMING_046;
}

//  --------------------------------------------------------------------------
//  Workers

//  READY: a reserved name or one the identity may not serve is refused
//  with DISCONNECT; else the core registers the worker. READY twice is
//  harmless for the same service, a protocol error for another one (one
//  worker, one service).
static void
s_worker_ready (pigato_broker_t *self, pigato__front_in_t *in,
                const pigato__peer_t *peer, pigato__worker_t *worker)
{
    pigato__framing_t framing = s_framing (&in->m);
    if (worker) {
        if (worker->framing != PIGATO__FRAMING_MDP
            && in->m.service.size == strlen (worker->service->name)
            && memcmp (in->m.service.data, worker->service->name,
                       in->m.service.size)
                   == 0) {
            if (framing == PIGATO__FRAMING_NATIVE)
                worker->framing = PIGATO__FRAMING_NATIVE;
            pigato__broker_send_control (self, &in->m.sender, &in->m.conn, 'W',
                                         PIGATO__READY, worker->framing);
            return;
        }
        pigato__front_bad (self, in, "ready_twice");
        pigato__core_worker_remove (self->core, worker, "ready_other_service",
                                    true);
        return;
    }
    char name [PIGATO_SERVICE_MAX + 1];
    char reason [PIGATO_SERVICE_MAX + 64];
    if (!pigato__front_name (&in->m.service, name)
        || pigato__core_reserved (&in->m.service)
        || (self->titanic && pigato__titanic_name (&in->m.service))) {
        pigato__front_bad (self, in, "reserved_service");
        snprintf (reason, sizeof reason, "E_RESERVED_SERVICE %s", name);
        pigato__broker_send_disconnect (self, &in->m.sender, &in->m.conn,
                                        framing, reason);
        return;
    }
    if (!pigato__front_allows (self, in, peer, PIGATO__VERB_SERVE, name)) {
        snprintf (reason, sizeof reason, "E_ACCESS_DENIED serve %s", name);
        pigato__broker_send_disconnect (self, &in->m.sender, &in->m.conn,
                                        framing, reason);
        return;
    }
    if (pigato__core_worker_add (self->core, &in->m.sender, &in->m.service,
                                 framing, &in->m.conn, peer->name, peer->key))
        pigato__log (PIGATO_LOG_WARNING, "event=worker_refused reason=nomem");
}

static void
s_worker_heartbeat (pigato_broker_t *self, pigato__front_in_t *in,
                    pigato__worker_t *worker)
{
    pigato__broker_send_control (self, &in->m.sender, &in->m.conn, 'W',
                                 PIGATO__HEARTBEAT, worker->framing);
    if (!in->m.has_opts)
        return;
    if (in->m.opts.size > PIGATO__OPTS_MAX) {
        pigato__front_bad (self, in, "opts_size");
        return;
    }
    json_error_t error;
    json_t *opts = json_loadb ((const char *) in->m.opts.data, in->m.opts.size,
                               0, &error);
    json_t *concurrency = json_object_get (opts, "concurrency");
    if (!opts || !json_is_object (opts))
        pigato__front_bad (self, in, "json");
    else if (json_is_number (concurrency))
        pigato__core_worker_concurrency (self->core, worker,
                                         json_number_value (concurrency));
    json_decref (opts);
}

static void
s_on_worker (pigato_broker_t *self, pigato__front_in_t *in,
             const pigato__peer_t *peer)
{
    pigato__worker_t *worker = pigato__core_worker_of (self->core,
                                                       &in->m.sender);
    if (worker
        && !pigato__core_worker_bound (worker, peer->name, peer->key,
                                       &in->m.conn)) {
        pigato__front_bad (self, in, "identity_mismatch");
        pigato__core_worker_remove (self->core, worker, "identity_mismatch",
                                    true);
        return;
    }
    if (worker
        && !pigato__front_allows (self, in, peer, PIGATO__VERB_SERVE,
                                  worker->service->name)) {
        pigato__core_worker_remove (self->core, worker, "access_denied", true);
        return;
    }
    if (worker) {
        pigato__core_worker_alive (self->core, worker);
        if (in->m.native && worker->framing == PIGATO__FRAMING_046)
            worker->framing = PIGATO__FRAMING_NATIVE;
    }
    if (in->m.type == PIGATO__READY) {
        s_worker_ready (self, in, peer, worker);
        return;
    }
    if (!worker) {
        //  Not registered (never, or expired): tell it to start over
        if (in->m.type != PIGATO__DISCONNECT) {
            pigato__front_bad (self, in, "not_ready");
            pigato__broker_send_disconnect (self, &in->m.sender, &in->m.conn,
                                            s_framing (&in->m), "E_NOT_READY");
        }
        return;
    }
    switch (in->m.type) {
        case PIGATO__HEARTBEAT: s_worker_heartbeat (self, in, worker); break;
        case PIGATO__REPLY:
        case PIGATO__PARTIAL:
        case PIGATO__REJECT:
            //  Replies, partial replies and rejects: accepted only for a
            //  rid that was dispatched to this very worker
            pigato__core_worker_reply (self->core, worker, &in->m.client,
                                       &in->m.rid, in->m.type, in->m.status,
                                       &in->m.data, 1, &in->m.opts,
                                       in->body_part);
            break;
        case PIGATO__DISCONNECT:
            pigato__core_worker_remove (self->core, worker, "disconnect",
                                        false);
            break;
    }
}

//  --------------------------------------------------------------------------
//  Clients

//  $dir and MMI: the core's answer for this identity, in the caller's
//  framing. A $dir answer cut to its bound says so in the reply opts.
static void
s_internal (pigato_broker_t *self, const pigato__msg_t *m,
            const pigato__peer_t *peer)
{
    int status;
    bool truncated;
    char *answer = pigato__core_internal (self->core, peer->name, &m->service,
                                          &m->data, &status, &truncated);
    if (!answer)
        return;
    if (status) {
        s_refuse (self, m, answer);
        free (answer);
        return;
    }
    pigato__caller_t caller = s_caller (m);
    pigato__bytes_t data = BYTES (answer);
    pigato__bytes_t opts = BYTES (PIGATO__TRUNCATED_OPTS);
    pigato__broker_send_reply (self, &caller, PIGATO__REPLY, 0, &data, 1,
                               truncated ? &opts : NULL, NULL);
    free (answer);
    self->core->counters.requests++;
    self->core->counters.replies++;
}

static void
s_client_request (pigato_broker_t *self, pigato__front_in_t *in,
                  const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    char name [PIGATO_SERVICE_MAX + 1];
    if (!pigato__front_name (&m->service, name)) {
        pigato__front_bad (self, in, "field");
        return;
    }
    if (!pigato__front_allows (self, in, peer, PIGATO__VERB_CALL, name)) {
        char text [PIGATO_SERVICE_MAX + 32];
        snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
        s_refuse (self, m, text);
        return;
    }
    if (pigato__core_reserved (&m->service)) {
        s_internal (self, m, peer);
        return;
    }
    if (self->titanic && pigato__titanic_name (&m->service)) {
        pigato__titanic_in_t request = { .caller = s_caller (m),
                                         .identity = peer->name,
                                         .body = &m->data,
                                         .body_count = 1,
                                         .opts = m->has_opts ? &m->opts
                                                             : NULL };
        pigato__titanic_request (self->titanic, &request);
        return;
    }
    pigato__submit_t submit = { .caller = s_caller (m),
                                .name = name,
                                .body = m->data,
                                .body_part = in->body_part,
                                .opts = m->has_opts ? &m->opts : NULL,
                                .identity = peer->name,
                                .curve_key = peer->key };
    char error [PIGATO_SERVICE_MAX + 600];
    int rc = pigato__core_submit (self->core, &submit, error, sizeof error);
    if (rc == PIGATO_E_INVALID)
        pigato__front_bad (self, in, error [0] ? "json" : "field");
    if (rc == PIGATO_E_CLOSED) {
        //  E_DRAINING: not a failure, the client sends it elsewhere. The
        //  notice goes first: a client honours the error only after it
        //  (so a worker cannot pass for a draining broker)
        pigato__broker_send_notice (self, &m->sender, &m->conn);
        pigato__broker_send_error (self, &submit.caller, error);
    }
    else if (rc && error [0])
        s_refuse (self, m, error);
}

static void
s_on_client (pigato_broker_t *self, pigato__front_in_t *in,
             const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    if (m->type == PIGATO__REQUEST)
        s_client_request (self, in, peer);
    else if (m->type == PIGATO__HEARTBEAT && !m->request_heartbeat) {
        //  Whom a drain tells at once (drain.c); a draining broker
        //  answers with its notice
        pigato__conns_set_client (self->core->conns, m->conn.fd, m->sender.data,
                                  m->sender.size);
        if (self->core->draining)
            pigato__broker_send_notice (self, &m->sender, &m->conn);
        else
            pigato__broker_send_control (self, &m->sender, &m->conn, 'C',
                                         PIGATO__HEARTBEAT, s_framing (m));
    }
    else if (m->type == PIGATO__HEARTBEAT) {
        //  Forward to the worker holding the request, if any; the key
        //  is the alias of the sender on its connection, so a client can
        //  only heartbeat its own
        pigato__request_t *request = pigato__core_request_of (
            self->core, &m->sender, &m->conn, &m->rid);
        if (!request)
            return;
        if (!streq (request->identity, peer->name)
            || !pigato__conn_same (&request->conn, &m->conn)) {
            pigato__front_bad (self, in, "identity_mismatch");
            return;
        }
        if (!pigato__front_allows (self, in, peer, PIGATO__VERB_CALL,
                                   request->service->name))
            return;
        pigato__core_request_heartbeat (self->core, request);
    }
}

void
pigato__front_revoked (pigato_broker_t *self, const pigato__front_in_t *in,
                       const pigato__peer_t *peer, pigato__framing_t framing)
{
    const pigato__msg_t *m = &in->m;
    char name [PIGATO_SERVICE_MAX + 1];
    if (!pigato__front_name (&m->service, name))
        name [0] = 0;
    pigato__front_denied (
        self, in, peer, m->role == 'W' ? PIGATO__VERB_SERVE : PIGATO__VERB_CALL,
        name [0] ? name : NULL, "identity_revoked");
    if (m->role == 'C') {
        //  MDP has no error reply
        if (m->type == PIGATO__REQUEST && framing != PIGATO__FRAMING_MDP) {
            char text [PIGATO_SERVICE_MAX + 32];
            snprintf (text, sizeof text, "E_ACCESS_DENIED %s", name);
            s_refuse (self, m, text);
        }
        return;
    }
    bool disconnect = m->type != PIGATO__DISCONNECT;
    pigato__worker_t *worker = pigato__core_worker_of (self->core, &m->sender);
    if (worker)
        pigato__core_worker_remove (self->core, worker, "identity_revoked",
                                    disconnect);
    else if (disconnect)
        pigato__broker_send_control (self, &m->sender, &m->conn, 'W',
                                     PIGATO__DISCONNECT, framing);
}

//  Routes one decoded message (or batch entry) from a peer whose identity
//  check came out `current`.
static void
s_route_one (pigato_broker_t *self, pigato__front_in_t *in, bool current,
             const pigato__peer_t *peer)
{
    pigato__msg_t *m = &in->m;
    if (!current) {
        pigato__front_revoked (self, in, peer, s_framing (m));
        return;
    }
    if (m->role == 'C')
        s_on_client (self, in, peer);
    else
        s_on_worker (self, in, peer);
}

//  A native batch: checked whole first (a malformed entry anywhere drops
//  the message), then routed entry by entry.
static void
s_route_native (pigato_broker_t *self, pigato__front_in_t *in, bool current,
                const pigato__peer_t *peer)
{
    pigato__input_t *input = &self->input;
    zmq_msg_t *batch = &input->parts [1];
    pigato__native_reader_t reader;
    int rc = pigato__native_reader_init (&reader, zmq_msg_data (batch),
                                         zmq_msg_size (batch), true);
    if (rc) {
        pigato__front_bad (self, in, pigato__decode_reason (rc));
        return;
    }
    size_t externals = 0;
    bool external;
    while ((rc = pigato__native_next (&reader, &in->m, &external)) == 1)
        if (external)
            externals++;
    if (rc < 0 || externals != input->count - 2) {
        pigato__front_bad (
            self, in, rc < 0 ? pigato__decode_reason (reader.error) : "frames");
        return;
    }
    if (pigato__native_reader_rewind (&reader) != 0)
        return;  //  cannot happen: every entry was read
    size_t next_part = 2;
    while (pigato__native_next (&reader, &in->m, &external) == 1) {
        in->m.native = true;
        in->body_part = batch;
        if (external) {
            in->body_part = &input->parts [next_part++];
            in->m.data.data = (const byte *) zmq_msg_data (in->body_part);
            in->m.data.size = zmq_msg_size (in->body_part);
        }
        s_route_one (self, in, current, peer);
    }
}

void
pigato__front_input (pigato_broker_t *self, const pigato__conn_t *conn)
{
    pigato__input_t *input = &self->input;
    pigato__front_in_t in;
    memset (&in, 0, sizeof in);
    in.frames = input->total;
    if (input->count > 0) {
        in.m.sender.data = (const byte *) zmq_msg_data (&input->parts [0]);
        in.m.sender.size = zmq_msg_size (&input->parts [0]);
    }
    if (input->count > 1)
        in.meta = &input->parts [input->count - 1];
    if (input->total > input->count) {
        pigato__front_bad (self, &in, "frames");
        return;
    }
    if (input->count < 2) {
        pigato__front_bad (self, &in, "short");
        return;
    }
    pigato__peer_t peer;
    bool current = pigato__guard_peer (self->guard, in.meta, &peer);
    int owner = current
                  ? pigato__core_connection_owner (self->core, conn, peer.name)
                  : PIGATO__CONN_OWNED;
    if (owner != PIGATO__CONN_OWNED) {
        //  One connection too many for its identity (`limit ...
        //  connections=N`; the core logged it): shut, as a connection
        //  over --max-connections, and nothing it sends is read. libzmq
        //  reports its close like any other
        if (owner == PIGATO__CONN_REFUSED) {
            shutdown (conn->fd, SHUT_RDWR);
            self->connections_refused++;
        }
        return;
    }
    bool native = pigato__native_is (zmq_msg_data (&input->parts [1]),
                                     zmq_msg_size (&input->parts [1]));
    if (native) {
        in.m.conn = *conn;
        s_route_native (self, &in, current, &peer);
        return;
    }
    pigato__bytes_t parts [PIGATO__PARTS_MAX];
    for (size_t index = 0; index < input->count; index++) {
        zmq_msg_t *part = &input->parts [index];
        parts [index].data = (const byte *) zmq_msg_data (part);
        parts [index].size = zmq_msg_size (part);
    }
    if (pigato__mdp_header (&parts [1])) {
        in.m.conn = *conn;
        pigato__front_mdp (self, &in, parts, input->count, &peer, current);
        return;
    }
    int rc = pigato__decode_046 (parts, input->count, &in.m);
    if (rc) {
        pigato__front_bad (self, &in, pigato__decode_reason (rc));
        return;
    }
    in.m.conn = *conn;
    if (in.m.data.size)
        for (size_t index = 2; index < input->count && !in.body_part; index++)
            if (parts [index].data == in.m.data.data)
                in.body_part = &input->parts [index];
    s_route_one (self, &in, current, &peer);
}
