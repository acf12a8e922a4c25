/*  =========================================================================
    route_mdp.c - MDP/0.2 clients and workers (ZeroMQ RFC 18) on the
    broker's socket, decoded by mdp.c and routed through the same queues,
    ACL and request lifecycle as pigato peers (route.h).
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "front.h"
#include "../wire/mdp.h"

//  --------------------------------------------------------------------------
//  MDP/0.2 peers (RFC 18), decoded by mdp.c

//  An MDP client's REQUEST: MMI and $dir are answered here; the rest joins
//  the service's queue with a broker-made rid (MDP has none) and the body
//  frames packed into one part.
static void
s_mdp_client_request (pigato_broker_t *self, pigato__route_in_t *in,
                      const pigato__peer_t *peer, const pigato__mdp_msg_t *mdp,
                      const pigato__bytes_t *parts)
{
    char name [PIGATO_SERVICE_MAX + 1];
    memcpy (name, mdp->service.data, mdp->service.size);
    name [mdp->service.size] = 0;
    if (!pigato__guard_allows (self->guard, peer->name, PIGATO__VERB_CALL,
                               name)) {
        pigato__route_denied (self, in, peer, PIGATO__VERB_CALL, name,
                              "not_allowed");
        return;                         //  RFC 18 has no error reply
    }
    const pigato__bytes_t *body = parts + mdp->body_first;
    if (pigato__mmi_is (&mdp->service) || name [0] == '$') {
        const char *code = PIGATO__MMI_NOT_IMPLEMENTED;
        char *answer = NULL;
        pigato__bytes_t asked;
        if (streq (name, PIGATO__MMI_SERVICE)) {
            code = PIGATO__MMI_NOT_FOUND;
            if (mdp->body_count
            &&  pigato__mmi_service_name (&body [0], &asked)
            &&  pigato__route_has_worker (self, asked.data, asked.size))
                code = PIGATO__MMI_FOUND;
        }
        else
        if (streq (name, "$dir")) {
            char only [PIGATO_SERVICE_MAX + 1];
            bool named = mdp->body_count
                      && pigato__route_body_name (&body [0], only, sizeof only);
            answer = pigato__route_directory (self, named ? only : NULL);
            code = answer;
        }
        pigato__bytes_t service = BYTES (name);
        pigato__bytes_t reply = BYTES (code ? code : "");
        pigato__bytes_t frames [4];
        size_t count = pigato__mdp_encode_client_reply (
            frames, 4, PIGATO__MDPC_FINAL, &service, &reply, 1);
        if (count)
            pigato__route_send_frames (self, &mdp->sender, frames, count,
                                       NULL, 0);
        free (answer);
        return;
    }
    if (pigato__table_size (self->requests) >= MAX_PENDING) {
        //  MDP has no error reply: counted and logged, the client times out
        pigato__route_bad (self, in, "overloaded");
        return;
    }
    //  Pack the body: [u32 size][bytes] per frame
    size_t packed_size = 0;
    for (size_t index = 0; index < mdp->body_count; index++)
        packed_size += 4 + body [index].size;
    zmq_msg_t packed;
    if (zmq_msg_init_size (&packed, packed_size))
        return;
    byte *at = (byte *) zmq_msg_data (&packed);
    for (size_t index = 0; index < mdp->body_count; index++) {
        size_t size = body [index].size;
        at [0] = (byte) (size >> 24);
        at [1] = (byte) (size >> 16);
        at [2] = (byte) (size >> 8);
        at [3] = (byte) size;
        if (size)
            memcpy (at + 4, body [index].data, size);
        at += 4 + size;
    }
    byte rid_bytes [9] = { 0 };             //  0, then a 64-bit counter
    uint64_t serial = ++self->next_mdp_rid;
    for (int index = 0; index < 8; index++)
        rid_bytes [8 - index] = (byte) (serial >> (8 * index));
    pigato__bytes_t rid = { rid_bytes, sizeof rid_bytes };
    pigato__bytes_t data = { (const byte *) zmq_msg_data (&packed),
                             packed_size };
    pigato__service_t *service = pigato__services_require (
        self->services, mdp->service.data, mdp->service.size);
    pigato__request_t *request = service
        ? pigato__request_new (&self->request_pool, &mdp->sender, &rid, NULL,
                               &packed, &data, NULL)
        : NULL;
    zmq_msg_close (&packed);
    if (!request) {
        pigato__services_release (self->services, &service);
        return;
    }
    request->mdp_client = true;
    request->service = service;
    //  Out of memory it is dropped, as when it could not be made: MDP has
    //  no error reply
    pigato__route_admit (self, request, service, &in->m.conn, peer);
}

//  An MDP worker's PARTIAL or FINAL: for the one request it holds, from
//  the client it names. A FINAL for a request that is gone (expired) frees
//  the worker quietly; anything else unexpected gets DISCONNECT (RFC 18).
static void
s_mdp_worker_reply (pigato_broker_t *self, pigato__route_in_t *in,
                    pigato__worker_t *worker, const pigato__mdp_msg_t *mdp,
                    const pigato__bytes_t *parts)
{
    pigato__request_t *request = worker->requests;
    if (!request) {
        if (worker->mdp_stale) {
            if (mdp->type == PIGATO__REPLY) {
                worker->mdp_stale = false;
                worker->concurrency = 1;
                pigato__worker_update (worker);
                pigato__route_dispatch_room (self, worker->service);
            }
            self->counters.late_replies++;
            return;
        }
        pigato__route_bad (self, in, "unexpected_reply");
        pigato__route_worker_remove (self, worker, "unexpected_reply", true);
        return;
    }
    pigato__bytes_t client = pigato__request_client (request);
    if (client.size != mdp->client.size
    ||  memcmp (client.data, mdp->client.data, client.size) != 0) {
        pigato__route_bad (self, in, "foreign_client");
        pigato__route_worker_remove (self, worker, "foreign_client", true);
        return;
    }
    const pigato__bytes_t *body = parts + mdp->body_first;
    if (request->mdp_client)
        pigato__route_send_mdp_reply (self, request, mdp->type, body,
                                      mdp->body_count);
    else {
        pigato__bytes_t rid = pigato__request_rid (request);
        pigato__bytes_t data = mdp->body_count ? body [0]
                                               : (pigato__bytes_t) { NULL, 0 };
        pigato__route_send_reply (self, request->native, &client, mdp->type,
                                  &rid, 0, &data, NULL, NULL);
    }
    if (mdp->type == PIGATO__PARTIAL) {
        self->counters.partials++;
        pigato__route_request_touch (self, request);
    }
    else {
        self->counters.replies++;
        request->answered = true;
        pigato__route_request_finish (self, request);
        pigato__route_dispatch_room (self, worker->service);
    }
}

void
pigato__route_route_mdp (pigato_broker_t *self, pigato__route_in_t *in,
                         const pigato__bytes_t *parts, size_t count)
{
    pigato__mdp_msg_t mdp;
    int rc = pigato__mdp_decode (parts, count, &mdp);
    if (rc) {
        pigato__route_bad (self, in, pigato__decode_reason (rc));
        return;
    }
    in->mdp = true;
    in->m.role = mdp.role;
    in->m.type = mdp.type;
    in->m.service = mdp.service;
    pigato__peer_t peer;
    bool current = pigato__guard_peer (self->guard, in->meta, &peer);
    pigato__worker_t *worker =
        mdp.role == 'W' ? pigato__route_worker_of (self, &in->m.sender) : NULL;
    if (current && worker
    &&  !pigato__route_worker_bound (worker, &peer, &in->m.conn)) {
        pigato__route_bad (self, in, "identity_mismatch");
        pigato__route_worker_remove (self, worker, "identity_mismatch", true);
        return;
    }
    if (!current) {
        char name [PIGATO_SERVICE_MAX + 1] = "";
        memcpy (name, mdp.service.data, mdp.service.size);
        name [mdp.service.size] = 0;
        pigato__route_denied (self, in, &peer,
                              mdp.role == 'W' ? PIGATO__VERB_SERVE
                                              : PIGATO__VERB_CALL,
                              name [0] ? name : NULL, "identity_revoked");
        if (worker)
            pigato__route_worker_remove (self, worker, "identity_revoked",
                                         mdp.type != PIGATO__DISCONNECT);
        else
        if (mdp.role == 'W' && mdp.type != PIGATO__DISCONNECT)
            pigato__route_send_control (self, &in->m.sender, 'W',
                                        PIGATO__DISCONNECT, FRAMING_MDP);
        return;
    }
    if (mdp.role == 'C') {
        s_mdp_client_request (self, in, &peer, &mdp, parts);
        return;
    }
    if (mdp.type == PIGATO__READY) {
        if (worker) {
            pigato__route_bad (self, in, "ready_twice");
            pigato__route_worker_remove (self, worker, "ready_twice", true);
        }
        else
        if (pigato__mmi_is (&mdp.service)) {
            pigato__route_bad (self, in, "reserved_service");
            pigato__route_send_control (self, &in->m.sender, 'W',
                                        PIGATO__DISCONNECT, FRAMING_MDP);
        }
        else
            pigato__route_worker_ready (self, in, &peer, NULL);
        return;
    }
    if (!worker || !worker->mdp) {
        //  Not registered: DISCONNECT unless it is saying goodbye
        if (mdp.type != PIGATO__DISCONNECT) {
            pigato__route_bad (self, in, "not_ready");
            pigato__route_send_control (self, &in->m.sender, 'W',
                                        PIGATO__DISCONNECT, FRAMING_MDP);
        }
        return;
    }
    if (!pigato__guard_allows (self->guard, peer.name, PIGATO__VERB_SERVE,
                               worker->service->name)) {
        pigato__route_denied (self, in, &peer, PIGATO__VERB_SERVE,
                              worker->service->name, "not_allowed");
        pigato__route_worker_remove (self, worker, "access_denied", true);
        return;
    }
    worker->expires = self->now_ms
                    + (int64_t) self->heartbeat_ms * self->liveness;
    if (mdp.type == PIGATO__DISCONNECT)
        pigato__route_worker_remove (self, worker, "disconnect", false);
    else
    if (mdp.type == PIGATO__REPLY || mdp.type == PIGATO__PARTIAL)
        s_mdp_worker_reply (self, in, worker, &mdp, parts);
}
