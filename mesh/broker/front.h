/*  =========================================================================
    front.h - what the broker's front-ends share (not installed):
    front_pigato.c (0.0.46 and native framing), front_mdp.c (MDP/0.2), and
    send.c, which sends for them and for the core. A front-end decodes a
    message, checks its sender against the current policy (auth/guard.h),
    answers what never reaches the core (refusals, client heartbeats,
    internal services) and calls the core (core.h) for the rest.
    =========================================================================
*/
#ifndef PIGATO_FRONT_H_INCLUDED
#define PIGATO_FRONT_H_INCLUDED

#include "broker_internal.h"

//  One message or batch entry being routed.
typedef struct {
    pigato__msg_t m;       //  decoded fields (borrow the parts)
    zmq_msg_t *body_part;  //  the part m.data lies in, or NULL
    zmq_msg_t *meta;       //  a part the peer sent (its metadata)
    size_t frames;         //  frames of the whole message (logs)
} pigato__front_in_t;

//  ---- front_pigato.c

//  Counts a malformed or out-of-protocol message; logs it, rate-limited.
void pigato__front_bad (pigato_broker_t *self, const pigato__front_in_t *in,
                        const char *reason);

//  Logs and counts a refusal by the policy (auth/guard.h).
void pigato__front_denied (pigato_broker_t *self, const pigato__front_in_t *in,
                           const pigato__peer_t *peer, int verb,
                           const char *service, const char *reason);

//  True if the policy lets the peer's identity do verb on the service
//  name; a refusal is logged and counted here (the caller answers it).
bool pigato__front_allows (pigato_broker_t *self, const pigato__front_in_t *in,
                           const pigato__peer_t *peer, int verb,
                           const char *name);

//  Copies a service name from a peer into name (PIGATO_SERVICE_MAX + 1
//  bytes). False if it holds a NUL (no name we could look up or log).
bool pigato__front_name (const pigato__bytes_t *service, char *name);

//  A message from an identity that is not (or no longer) in the policy:
//  refused on this very message. A pigato client's request gets
//  E_ACCESS_DENIED (MDP has no error reply); a worker of that routing id
//  is removed, or told DISCONNECT.
void pigato__front_revoked (pigato_broker_t *self, const pigato__front_in_t *in,
                            const pigato__peer_t *peer,
                            pigato__framing_t framing);

//  ---- front_mdp.c

//  An MDP/0.2 message; peer and current are the sender as the guard
//  read it (pigato__guard_peer).
void pigato__front_mdp (pigato_broker_t *self, pigato__front_in_t *in,
                        const pigato__bytes_t *parts, size_t count,
                        const pigato__peer_t *peer, bool current);

//  ---- send.c

//  A message with no fields (READY ack, heartbeat, DISCONNECT) to a
//  client ('C') or worker ('W') on conn, in its framing. Every send here
//  goes only to a live connection (pigato__conns_live): a message for one
//  that is closing is dropped and counted (unsent).
void pigato__broker_send_control (pigato_broker_t *self,
                                  const pigato__bytes_t *to,
                                  const pigato__conn_t *conn, char role,
                                  int type, pigato__framing_t framing);

//  DISCONNECT to a worker that says why (docs/protocol.md): `W`, `5`,
//  reason in 0.0.46 framing even to a native worker (old peers ignore
//  the extra frame); to an MDP worker, or with no reason, plain.
void pigato__broker_send_disconnect (pigato_broker_t *self,
                                     const pigato__bytes_t *to,
                                     const pigato__conn_t *conn,
                                     pigato__framing_t framing,
                                     const char *reason);

//  The drain notice to a client (docs/protocol.md, "Drain"): `C`, `4`,
//  PIGATO__DRAIN_NOTICE in 0.0.46 framing, whatever the client speaks.
void pigato__broker_send_notice (pigato_broker_t *self,
                                 const pigato__bytes_t *to,
                                 const pigato__conn_t *conn);

//  A partial or final reply to a caller, in its framing (see
//  pigato__emit_t.reply).
void pigato__broker_send_reply (pigato_broker_t *self,
                                const pigato__caller_t *to, int type,
                                int status, const pigato__bytes_t *body,
                                size_t body_count, const pigato__bytes_t *opts,
                                zmq_msg_t *body_part);

//  A final error reply (a JSON string; status -1 for pigato peers) to a
//  caller. text starts with an E_ code, then a sentence for people.
void pigato__broker_send_error (pigato_broker_t *self,
                                const pigato__caller_t *to, const char *text);

#endif
