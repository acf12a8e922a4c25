/*  =========================================================================
    send.c - how the broker sends: 0.0.46 frames (bodies shared with the
    part they came in), native entries through the outbox, and MDP/0.2
    frames, each peer in its own framing. Implements the core's send
    interface (pigato__broker_emit) and what the front-ends send before a
    message reaches the core (front.h).
    =========================================================================
*/
#include <string.h>
#include "front.h"
#include "../wire/mdp.h"

//  True if a message may go to this connection now: not one that closed
//  (or is closing), whose routing id another peer may take over next.
static bool
s_live (pigato_broker_t *self, const pigato__conn_t *conn)
{
    if (pigato__conns_live (self->core->conns, conn))
        return true;
    self->core->counters.unsent++;
    return false;
}

//  Sends a 0.0.46 or MDP message to a peer (routing id to, on conn):
//  routing id, then frames, counted against the connection's outbound
//  budget. Frame body_index (if body_part holds exactly its bytes) shares
//  that part instead of being copied. The peer's pending native batch
//  goes first, to keep order.
static void
s_send_frames (pigato_broker_t *self, const pigato__bytes_t *to,
               const pigato__conn_t *conn, const pigato__bytes_t *frames,
               size_t count, zmq_msg_t *body_part, size_t body_index)
{
    pigato__outbox_flush_peer (self->outbox, to);
    void *router = self->router_handle;
    if (zmq_send (router, to->data, to->size, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1)
        return;
    bool curve = self->budget.curve;
    uint64_t bytes = 0;
    for (size_t index = 0; index < count; index++) {
        int flags = index + 1 < count ? ZMQ_SNDMORE : 0;
        const pigato__bytes_t *frame = &frames [index];
        bytes += pigato__wire_bytes (frame->size, curve);
        if (index == body_index && body_part && frame->size
            && zmq_msg_data (body_part) == frame->data
            && zmq_msg_size (body_part) == frame->size) {
            zmq_msg_t shared;
            zmq_msg_init (&shared);
            if (zmq_msg_copy (&shared, body_part) == 0
                && zmq_msg_send (&shared, router, flags) != -1)
                continue;
            zmq_msg_close (&shared);
        }
        zmq_send (router, frame->data, frame->size, flags);
    }
    pigato__budget_sent (self, conn, bytes, count);
}

void
pigato__broker_send_control (pigato_broker_t *self, const pigato__bytes_t *to,
                             const pigato__conn_t *conn, char role, int type,
                             pigato__framing_t framing)
{
    if (!s_live (self, conn))
        return;
    if (framing == PIGATO__FRAMING_MDP) {
        //  RFC 18: READY is not acknowledged
        int command = type == PIGATO__HEARTBEAT  ? PIGATO__MDPW_HEARTBEAT
                    : type == PIGATO__DISCONNECT ? PIGATO__MDPW_DISCONNECT
                                                 : 0;
        pigato__bytes_t frames [2];
        if (role == 'W' && command
            && pigato__mdp_encode_worker_control (frames, 2, command) == 2)
            s_send_frames (self, to, conn, frames, 2, NULL, 0);
        return;
    }
    if (framing == PIGATO__FRAMING_NATIVE) {
        pigato__msg_t entry = { .role = role, .type = type };
        if (pigato__outbox_add (self->outbox, to, conn, role, &entry, NULL)
            == 0)
            return;
    }
    char type_text [2] = { (char) ('0' + type), 0 };
    char role_text [2] = { role, 0 };
    pigato__bytes_t frames [] = { BYTES (role_text), BYTES (type_text) };
    s_send_frames (self, to, conn, frames, 2, NULL, 0);
}

void
pigato__broker_send_disconnect (pigato_broker_t *self,
                                const pigato__bytes_t *to,
                                const pigato__conn_t *conn,
                                pigato__framing_t framing, const char *reason)
{
    //  MDP's DISCONNECT has no room for a reason; native's has no field
    //  old readers accept: 0.0.46 framing, which every pigato peer reads
    if (framing == PIGATO__FRAMING_MDP || !reason || !s_live (self, conn)) {
        pigato__broker_send_control (self, to, conn, 'W', PIGATO__DISCONNECT,
                                     framing);
        return;
    }
    pigato__bytes_t frames [] = { BYTES ("W"), BYTES ("5"), BYTES (reason) };
    s_send_frames (self, to, conn, frames, 3, NULL, 0);
}

void
pigato__broker_send_notice (pigato_broker_t *self, const pigato__bytes_t *to,
                            const pigato__conn_t *conn)
{
    //  In 0.0.46 framing to every pigato client: older peers (and Node
    //  pigato) take it for a heartbeat, where a native entry with a field
    //  would make an older reader drop the whole batch
    if (!s_live (self, conn))
        return;
    pigato__bytes_t frames [] = { BYTES ("C"), BYTES ("4"),
                                  BYTES (PIGATO__DRAIN_NOTICE) };
    s_send_frames (self, to, conn, frames, 3, NULL, 0);
}

void
pigato__broker_send_reply (pigato_broker_t *self, const pigato__caller_t *to,
                           int type, int status, const pigato__bytes_t *body,
                           size_t body_count, const pigato__bytes_t *opts,
                           zmq_msg_t *body_part)
{
    if (!s_live (self, &to->conn))
        return;
    if (to->framing == PIGATO__FRAMING_MDP) {
        //  MDPC02, command, the service it asked for, body frames; MDP
        //  has no status
        pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
        size_t count = pigato__mdp_encode_client_reply (
            frames, PIGATO__MDP_ENCODE_MAX,
            type == PIGATO__PARTIAL ? PIGATO__MDPC_PARTIAL : PIGATO__MDPC_FINAL,
            &to->service, body, body_count);
        if (count)
            s_send_frames (self, &to->client, &to->conn, frames, count, NULL,
                           0);
        return;
    }
    //  One MDP body frame is one pigato data frame
    pigato__bytes_t none = { NULL, 0 };
    pigato__bytes_t data = body_count ? body [0] : none;
    if (to->framing == PIGATO__FRAMING_NATIVE) {
        pigato__msg_t entry = { .role = 'C',
                                .type = type,
                                .rid = to->rid,
                                .status = status,
                                .data = data,
                                .opts = opts ? *opts : none };
        if (pigato__outbox_add (self->outbox, &to->client, &to->conn, 'C',
                                &entry, body_part)
            == 0)
            return;
    }
    char type_text [2] = { (char) ('0' + type), 0 };
    pigato__bytes_t frames [] = { BYTES ("C"),
                                  BYTES (type_text),
                                  none,
                                  to->rid,
                                  BYTES (status ? "-1" : "0"),
                                  data,
                                  opts && opts->size ? *opts : BYTES ("{}") };
    s_send_frames (self, &to->client, &to->conn, frames, 7, body_part, 5);
}

void
pigato__broker_send_error (pigato_broker_t *self, const pigato__caller_t *to,
                           const char *text)
{
    //  A JSON string: the error body for pigato peers, and an MDP
    //  client's FINAL body
    char *json = pigato__json_string (text);
    pigato__bytes_t data = { (const byte *) json, json ? strlen (json) : 0 };
    pigato__broker_send_reply (self, to, PIGATO__REPLY, -1, &data, 1, NULL,
                               NULL);
    free (json);
    char rid_text [80];
    pigato__log (PIGATO_LOG_DEBUG, "event=request_failed rid=%s code=%.*s",
                 pigato__printable (to->rid.data, to->rid.size, rid_text,
                                    sizeof rid_text),
                 (int) strcspn (text, " "), text);
}

//  --------------------------------------------------------------------------
//  The core's send interface

static void
s_emit_request (void *arg, pigato__worker_t *worker, pigato__request_t *request)
{
    if (!s_live ((pigato_broker_t *) arg, &worker->conn))
        return;
    pigato_broker_t *self = (pigato_broker_t *) arg;
    pigato__bytes_t to = pigato__worker_routing_id (worker);
    //  Workers see the client's alias, never its routing id
    pigato__bytes_t client = pigato__request_alias (request);
    pigato__bytes_t rid = pigato__request_rid (request);
    pigato__bytes_t body = pigato__request_body (request);
    pigato__bytes_t body_frames [PIGATO__MDP_BODY_MAX];
    size_t body_count = 1;
    body_frames [0] = body;
    if (request->framing == PIGATO__FRAMING_MDP)
        body_count = pigato__mdp_unpack (&body, body_frames,
                                         PIGATO__MDP_BODY_MAX);
    if (worker->framing == PIGATO__FRAMING_MDP) {
        pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
        size_t count = pigato__mdp_encode_worker_request (
            frames, PIGATO__MDP_ENCODE_MAX, &client, body_frames, body_count);
        if (count)
            s_send_frames (self, &to, &worker->conn, frames, count, NULL, 0);
        return;
    }
    //  One MDP body frame is one pigato data frame
    if (body_count == 0)
        body = (pigato__bytes_t) { NULL, 0 };
    else
        body = body_frames [0];
    pigato__bytes_t service = BYTES (request->service->name);
    pigato__bytes_t opts = { request->opts, request->opts_size };
    if (worker->framing == PIGATO__FRAMING_NATIVE) {
        pigato__msg_t entry = { .role = 'W',
                                .type = PIGATO__REQUEST,
                                .client = client,
                                .service = service,
                                .rid = rid,
                                .data = body,
                                .opts = opts };
        if (pigato__outbox_add (self->outbox, &to, &worker->conn, 'W', &entry,
                                &request->body_part)
            == 0)
            return;
    }
    pigato__bytes_t frames [] = {
        BYTES ("W"), BYTES ("2"), client, service,
        { NULL, 0 }, rid,         body,   opts.size ? opts : BYTES ("{}")
    };
    s_send_frames (self, &to, &worker->conn, frames, 8, &request->body_part, 6);
}

static void
s_emit_request_heartbeat (void *arg, pigato__worker_t *worker,
                          pigato__request_t *request)
{
    if (!s_live ((pigato_broker_t *) arg, &worker->conn))
        return;
    pigato_broker_t *self = (pigato_broker_t *) arg;
    pigato__bytes_t to = pigato__worker_routing_id (worker);
    //  Workers see the client's alias, never its routing id
    pigato__bytes_t client = pigato__request_alias (request);
    pigato__bytes_t rid = pigato__request_rid (request);
    if (worker->framing == PIGATO__FRAMING_NATIVE) {
        pigato__msg_t entry = { .role = 'W',
                                .type = PIGATO__HEARTBEAT,
                                .client = client,
                                .rid = rid,
                                .request_heartbeat = true };
        if (pigato__outbox_add (self->outbox, &to, &worker->conn, 'W', &entry,
                                NULL)
            == 0)
            return;
    }
    pigato__bytes_t frames [] = {
        BYTES ("W"), BYTES ("4"), client, { NULL, 0 }, rid
    };
    s_send_frames (self, &to, &worker->conn, frames, 5, NULL, 0);
}

static void
s_emit_reply (void *arg, const pigato__caller_t *to, int type, int status,
              const pigato__bytes_t *body, size_t body_count,
              const pigato__bytes_t *opts, zmq_msg_t *body_part)
{
    if (to->conn.fd == PIGATO__CONN_TITANIC) {
        //  A durable request's: titanic.c stores it
        pigato__titanic_reply (((pigato_broker_t *) arg)->titanic, to, type,
                               status, body, body_count);
        return;
    }
    pigato__broker_send_reply ((pigato_broker_t *) arg, to, type, status, body,
                               body_count, opts, body_part);
}

static void
s_emit_error (void *arg, const pigato__caller_t *to, const char *text)
{
    if (to->conn.fd == PIGATO__CONN_TITANIC) {
        pigato__titanic_error (((pigato_broker_t *) arg)->titanic, to, text);
        return;
    }
    pigato__broker_send_error ((pigato_broker_t *) arg, to, text);
}

static void
s_emit_control (void *arg, const pigato__bytes_t *worker,
                const pigato__conn_t *conn, int type, pigato__framing_t framing)
{
    pigato__broker_send_control ((pigato_broker_t *) arg, worker, conn, 'W',
                                 type, framing);
}

static void
s_emit_notice (void *arg, const pigato__caller_t *to)
{
    if (to->conn.fd == PIGATO__CONN_TITANIC)
        return;  //  durable requests' own caller: stays, stored
    pigato__broker_send_notice ((pigato_broker_t *) arg, &to->client,
                                &to->conn);
}

const pigato__emit_t pigato__broker_emit = {
    .request = s_emit_request,
    .request_heartbeat = s_emit_request_heartbeat,
    .reply = s_emit_reply,
    .error = s_emit_error,
    .control = s_emit_control,
    .notice = s_emit_notice
};
