/*  =========================================================================
    front_mdp.c - the front-end for MDP/0.2 clients and workers (ZeroMQ
    RFC 18) on the broker's socket: decoded by the MDP codec (mdp.h),
    checked against the same policy, routed by the same core (core.h) as
    pigato peers.
    =========================================================================
*/
#include <string.h>
#include "front.h"
#include "../wire/mdp.h"

//  An MDP client's REQUEST: MMI and $dir are answered here; the rest goes
//  to the core with the body frames packed into one part (the core makes
//  the rid: MDP has none). RFC 18 has no error reply: a refusal before
//  the core is counted and logged, and the client times out.
static void
s_client_request (pigato_broker_t *self, pigato__front_in_t *in,
                  const pigato__peer_t *peer, const pigato__mdp_msg_t *mdp,
                  const pigato__bytes_t *parts)
{
    char name [PIGATO_SERVICE_MAX + 1];
    if (!pigato__front_name (&mdp->service, name)) {
        pigato__front_bad (self, in, "field");
        return;
    }
    if (!pigato__front_allows (self, in, peer, PIGATO__VERB_CALL, name))
        return;  //  RFC 18 has no error reply
    const pigato__bytes_t *body = parts + mdp->body_first;
    pigato__caller_t caller = { .framing = PIGATO__FRAMING_MDP,
                                .client = mdp->sender,
                                .conn = in->m.conn,
                                .service = mdp->service };
    if (pigato__core_reserved (&mdp->service)) {
        pigato__bytes_t none = { NULL, 0 };
        int status;
        bool truncated;
        char *answer = pigato__core_internal (
            self->core, peer->name, &mdp->service,
            mdp->body_count ? &body [0] : &none, &status, &truncated);
        if (answer && status)
            pigato__broker_send_error (self, &caller, answer);
        else if (answer) {
            //  MDP has no opts: a cut $dir answer has a second body frame
            pigato__bytes_t reply [2] = { BYTES (answer),
                                          BYTES (PIGATO__TRUNCATED_OPTS) };
            pigato__broker_send_reply (self, &caller, PIGATO__REPLY, 0, reply,
                                       truncated ? 2 : 1, NULL, NULL);
        }
        free (answer);
        return;
    }
    if (self->titanic && pigato__titanic_name (&mdp->service)) {
        pigato__titanic_in_t request = { .caller = caller,
                                         .identity = peer->name,
                                         .body = body,
                                         .body_count = mdp->body_count };
        pigato__titanic_request (self->titanic, &request);
        return;
    }
    zmq_msg_t packed;
    size_t packed_size = pigato__mdp_packed_size (body, mdp->body_count);
    if (packed_size == PIGATO__MDP_PACK_INVALID) {
        pigato__front_bad (self, in, "field");
        return;
    }
    if (zmq_msg_init_size (&packed, packed_size))
        return;
    if (pigato__mdp_pack ((byte *) zmq_msg_data (&packed), packed_size, body,
                          mdp->body_count)
        != packed_size) {
        zmq_msg_close (&packed);
        return;  //  cannot happen: the size was taken
    }
    pigato__submit_t submit = { .caller = caller,
                                .body_part = &packed,
                                .name = name,
                                .body = { (const byte *) zmq_msg_data (&packed),
                                          packed_size },
                                .identity = peer->name,
                                .curve_key = peer->key };
    char error [PIGATO_SERVICE_MAX + 600];
    int rc = pigato__core_submit (self->core, &submit, error, sizeof error);
    if (rc == PIGATO_E_CLOSED)
        //  E_DRAINING: a FINAL with the error, as for later failures,
        //  rather than silence until the client's own timeout
        pigato__broker_send_error (self, &caller, error);
    else if (rc)
        pigato__front_bad (self, in, error [0] ? "overloaded" : "field");
    zmq_msg_close (&packed);
}

void
pigato__front_mdp (pigato_broker_t *self, pigato__front_in_t *in,
                   const pigato__bytes_t *parts, size_t count,
                   const pigato__peer_t *sender, bool current)
{
    pigato__mdp_msg_t mdp;
    int rc = pigato__mdp_decode (parts, count, &mdp);
    if (rc) {
        pigato__front_bad (self, in, pigato__decode_reason (rc));
        return;
    }
    in->m.role = mdp.role;
    in->m.type = mdp.type;
    in->m.service = mdp.service;
    pigato__peer_t peer = *sender;
    pigato__worker_t *worker = mdp.role == 'W'
                                 ? pigato__core_worker_of (self->core,
                                                           &in->m.sender)
                                 : NULL;
    if (current && worker
        && !pigato__core_worker_bound (worker, peer.name, peer.key,
                                       &in->m.conn)) {
        pigato__front_bad (self, in, "identity_mismatch");
        pigato__core_worker_remove (self->core, worker, "identity_mismatch",
                                    true);
        return;
    }
    if (!current) {
        pigato__front_revoked (self, in, &peer, PIGATO__FRAMING_MDP);
        return;
    }
    if (mdp.role == 'C') {
        s_client_request (self, in, &peer, &mdp, parts);
        return;
    }
    if (mdp.type == PIGATO__READY) {
        char name [PIGATO_SERVICE_MAX + 1];
        if (worker) {
            //  RFC 18: READY twice is a protocol error
            pigato__front_bad (self, in, "ready_twice");
            pigato__core_worker_remove (self->core, worker, "ready_twice",
                                        true);
        }
        else if (!pigato__front_name (&mdp.service, name)
                 || pigato__core_reserved (&mdp.service)
                 || (self->titanic && pigato__titanic_name (&mdp.service))) {
            pigato__front_bad (self, in, "reserved_service");
            pigato__broker_send_control (self, &in->m.sender, &in->m.conn, 'W',
                                         PIGATO__DISCONNECT,
                                         PIGATO__FRAMING_MDP);
        }
        else if (!pigato__front_allows (self, in, &peer, PIGATO__VERB_SERVE,
                                        name))
            pigato__broker_send_control (self, &in->m.sender, &in->m.conn, 'W',
                                         PIGATO__DISCONNECT,
                                         PIGATO__FRAMING_MDP);
        else if (pigato__core_worker_add (self->core, &in->m.sender,
                                          &mdp.service, PIGATO__FRAMING_MDP,
                                          &in->m.conn, peer.name, peer.key))
            pigato__log (PIGATO_LOG_WARNING,
                         "event=worker_refused reason=nomem");
        return;
    }
    if (!worker || worker->framing != PIGATO__FRAMING_MDP) {
        //  Not registered: DISCONNECT unless it is saying goodbye
        if (mdp.type != PIGATO__DISCONNECT) {
            pigato__front_bad (self, in, "not_ready");
            pigato__broker_send_control (self, &in->m.sender, &in->m.conn, 'W',
                                         PIGATO__DISCONNECT,
                                         PIGATO__FRAMING_MDP);
        }
        return;
    }
    if (!pigato__front_allows (self, in, &peer, PIGATO__VERB_SERVE,
                               worker->service->name)) {
        pigato__core_worker_remove (self->core, worker, "access_denied", true);
        return;
    }
    pigato__core_worker_alive (self->core, worker);
    if (mdp.type == PIGATO__DISCONNECT)
        pigato__core_worker_remove (self->core, worker, "disconnect", false);
    else if (mdp.type == PIGATO__REPLY || mdp.type == PIGATO__PARTIAL) {
        //  For the one request it holds, from the client it names; a
        //  FINAL for a request that is gone (expired) frees the worker
        //  quietly; anything else unexpected gets DISCONNECT (RFC 18)
        pigato__bytes_t none = { NULL, 0 };
        if (!pigato__core_worker_reply (self->core, worker, &mdp.client, &none,
                                        mdp.type, 0, parts + mdp.body_first,
                                        mdp.body_count, NULL, NULL)) {
            pigato__front_bad (self, in, "unexpected_reply");
            pigato__core_worker_remove (self->core, worker, "unexpected_reply",
                                        true);
        }
    }
}
