/*  =========================================================================
    route_send.c - how the broker sends: 0.0.46 frames (bodies shared with
    the part they came in), native entries through the outbox, and MDP/0.2
    frames, each peer in its own framing (route.h).
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "front.h"
#include "../wire/mdp.h"

//  --------------------------------------------------------------------------
//  Sending

//  Sends a 0.0.46 message: routing id, then frames. Frame body_index (if
//  body_part holds exactly its bytes) shares that part instead of being
//  copied. The peer's pending native batch goes first, to keep order.
void
pigato__route_send_frames (pigato_broker_t *self, const pigato__bytes_t *to,
                           const pigato__bytes_t *frames, size_t count,
                           zmq_msg_t *body_part, size_t body_index)
{
    pigato__outbox_flush_peer (self->outbox, to);
    void *router = self->router_handle;
    if (zmq_send (router, to->data, to->size, ZMQ_SNDMORE | ZMQ_DONTWAIT)
        == -1)
        return;
    for (size_t index = 0; index < count; index++) {
        int flags = index + 1 < count ? ZMQ_SNDMORE : 0;
        const pigato__bytes_t *frame = &frames [index];
        if (index == body_index && body_part && frame->size
        &&  zmq_msg_data (body_part) == frame->data
        &&  zmq_msg_size (body_part) == frame->size) {
            zmq_msg_t shared;
            zmq_msg_init (&shared);
            if (zmq_msg_copy (&shared, body_part) == 0
            &&  zmq_msg_send (&shared, router, flags) != -1)
                continue;
            zmq_msg_close (&shared);
        }
        zmq_send (router, frame->data, frame->size, flags);
    }
}

//  A message with no fields (READY ack, heartbeat, DISCONNECT) to a
//  client ('C') or worker ('W'), in either framing.
void
pigato__route_send_control (pigato_broker_t *self, const pigato__bytes_t *to,
                            char role, int type, int framing)
{
    if (framing == FRAMING_MDP) {
        //  RFC 18: READY is not acknowledged
        int command = type == PIGATO__HEARTBEAT ? PIGATO__MDPW_HEARTBEAT
                    : type == PIGATO__DISCONNECT ? PIGATO__MDPW_DISCONNECT : 0;
        pigato__bytes_t frames [2];
        if (role == 'W' && command
        &&  pigato__mdp_encode_worker_control (frames, 2, command) == 2)
            pigato__route_send_frames (self, to, frames, 2, NULL, 0);
        return;
    }
    bool native = framing == FRAMING_NATIVE;
    if (native) {
        pigato__msg_t entry = { .role = role, .type = type };
        if (pigato__outbox_add (self->outbox, to, role, &entry, NULL) == 0)
            return;
    }
    char type_text [2] = { (char) ('0' + type), 0 };
    char role_text [2] = { role, 0 };
    pigato__bytes_t frames [] = { BYTES (role_text), BYTES (type_text) };
    pigato__route_send_frames (self, to, frames, 2, NULL, 0);
}

//  A partial or final reply to a client, in the framing of its request.
void
pigato__route_send_reply (pigato_broker_t *self, bool native,
                          const pigato__bytes_t *client, int type,
                          const pigato__bytes_t *rid, int status,
                          const pigato__bytes_t *data,
                          const pigato__bytes_t *opts, zmq_msg_t *body_part)
{
    pigato__bytes_t none = { NULL, 0 };
    if (native) {
        pigato__msg_t entry = { .role = 'C', .type = type, .rid = *rid,
                                .status = status, .data = data ? *data : none,
                                .opts = opts ? *opts : none };
        if (pigato__outbox_add (self->outbox, client, 'C', &entry, body_part)
            == 0)
            return;
    }
    char type_text [2] = { (char) ('0' + type), 0 };
    pigato__bytes_t frames [] = {
        BYTES ("C"), BYTES (type_text), none, *rid,
        BYTES (status ? "-1" : "0"), data ? *data : none,
        opts && opts->size ? *opts : BYTES ("{}") };
    pigato__route_send_frames (self, client, frames, 7, body_part, 5);
}

//  The body frames of a request: an MDP client's packed frames, else its
//  one body. Returns how many (at most max).
size_t
pigato__route_request_frames (pigato__request_t *request,
                              pigato__bytes_t *frames, size_t max)
{
    pigato__bytes_t body = pigato__request_body (request);
    if (!request->mdp_client) {
        frames [0] = body;
        return 1;
    }
    size_t count = 0;
    const byte *at = body.data, *end = body.data + body.size;
    while (end - at >= 4 && count < max) {
        size_t size = ((size_t) at [0] << 24) | ((size_t) at [1] << 16)
                    | ((size_t) at [2] << 8) | at [3];
        at += 4;
        if (size > (size_t) (end - at))
            break;
        frames [count].data = at;
        frames [count++].size = size;
        at += size;
    }
    return count;
}

//  A partial or final reply to an MDP client: MDPC02, command, the
//  service it asked for, body frames.
void
pigato__route_send_mdp_reply (pigato_broker_t *self,
                              pigato__request_t *request, int type,
                              const pigato__bytes_t *body, size_t body_count)
{
    pigato__bytes_t client = pigato__request_client (request);
    pigato__bytes_t service = BYTES (request->service->name);
    pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
    size_t count = pigato__mdp_encode_client_reply (
        frames, PIGATO__MDP_ENCODE_MAX,
        type == PIGATO__PARTIAL ? PIGATO__MDPC_PARTIAL : PIGATO__MDPC_FINAL,
        &service, body, body_count);
    if (count)
        pigato__route_send_frames (self, &client, frames, count, NULL, 0);
}

void
pigato__route_send_request (pigato_broker_t *self, pigato__worker_t *worker,
                            pigato__request_t *request)
{
    pigato__bytes_t to = pigato__worker_routing_id (worker);
    pigato__bytes_t client = pigato__request_client (request);
    pigato__bytes_t rid = pigato__request_rid (request);
    pigato__bytes_t body_frames [PIGATO__MDP_BODY_MAX];
    size_t body_count = pigato__route_request_frames (request, body_frames,
                                                      PIGATO__MDP_BODY_MAX);
    if (worker->mdp) {
        pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
        size_t count = pigato__mdp_encode_worker_request (
            frames, PIGATO__MDP_ENCODE_MAX, &client, body_frames, body_count);
        if (count)
            pigato__route_send_frames (self, &to, frames, count, NULL, 0);
        return;
    }
    //  One MDP body frame is one pigato data frame
    pigato__bytes_t body = body_count ? body_frames [0]
                                      : (pigato__bytes_t) { NULL, 0 };
    pigato__bytes_t service = BYTES (request->service->name);
    pigato__bytes_t opts = { request->opts, request->opts_size };
    if (worker->native) {
        pigato__msg_t entry = { .role = 'W', .type = PIGATO__REQUEST,
                                .client = client, .service = service,
                                .rid = rid, .data = body, .opts = opts };
        if (pigato__outbox_add (self->outbox, &to, 'W', &entry,
                                &request->body_part) == 0)
            return;
    }
    pigato__bytes_t frames [] = {
        BYTES ("W"), BYTES ("2"), client, service, { NULL, 0 }, rid, body,
        opts.size ? opts : BYTES ("{}") };
    pigato__route_send_frames (self, &to, frames, 8, &request->body_part, 6);
}


//  Sends a final error reply (status -1, data a JSON string) to a client.
void
pigato__route_send_error (pigato_broker_t *self, bool native,
                          const pigato__bytes_t *client,
                          const pigato__bytes_t *rid, const char *text)
{
    char *json = pigato__json_string (text);
    pigato__bytes_t data = { (const byte *) json, json ? strlen (json) : 0 };
    pigato__route_send_reply (self, native, client, PIGATO__REPLY, rid, -1,
                              &data, NULL, NULL);
    free (json);
    self->counters.failed++;
    char rid_text [80];
    pigato__log (PIGATO_LOG_DEBUG, "event=request_failed rid=%s code=%.*s",
                 pigato__printable (rid->data, rid->size, rid_text,
                                    sizeof rid_text),
                 (int) strcspn (text, " "), text);
}
