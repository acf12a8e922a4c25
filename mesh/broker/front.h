/*  =========================================================================
    route.h - what the files of the broker's routing share (not installed):
    route.c (decode, guard, dispatch, workers, clients), route_send.c
    (framings out), route_mdp.c (MDP/0.2 peers), route_internal.c ($dir,
    MMI) and route_sweep.c (closed connections, reload, expiry).
    =========================================================================
*/
#ifndef PIGATO_ROUTE_H_INCLUDED
#define PIGATO_ROUTE_H_INCLUDED

#include "broker_internal.h"

#define MAX_PENDING 1000000     //  requests held at once, then E_OVERLOADED

//  One message or batch entry being routed.
typedef struct {
    pigato__msg_t m;            //  decoded fields (borrow the parts)
    zmq_msg_t *body_part;       //  the part m.data lies in, or NULL
    zmq_msg_t *meta;            //  a part the peer sent (its metadata)
    size_t frames;              //  frames of the whole message (logs)
    bool mdp;                   //  an MDP/0.2 message (READY: MDP worker)
} pigato__route_in_t;

#define FRAMING_046     0
#define FRAMING_NATIVE  1
#define FRAMING_MDP     2
#define WORKER_FRAMING(worker) ((worker)->mdp ? FRAMING_MDP                 \
                                : (worker)->native ? FRAMING_NATIVE        \
                                : FRAMING_046)

#define SERVICE_TEXT (PIGATO_SERVICE_MAX * 4 + 4)


//  ---- route.c

void pigato__route_bad (pigato_broker_t *self, const pigato__route_in_t *in,
                        const char *reason);

void pigato__route_denied (pigato_broker_t *self,
                           const pigato__route_in_t *in,
                           const pigato__peer_t *peer, int verb,
                           const char *service, const char *reason);

//  Service names come from peers: log them escaped, never raw.
const char *pigato__route_service_text (const pigato__service_t *service,
                                        char *text);

//  Copies a string into a fixed field, cut to fit ("" for NULL): for
//  every request, so no snprintf.
void pigato__route_copy_text (char *field, size_t field_size,
                              const char *text);


//  ---- route_send.c

//  Sends a 0.0.46 message: routing id, then frames. Frame body_index (if
//  body_part holds exactly its bytes) shares that part instead of being
//  copied. The peer's pending native batch goes first, to keep order.
void pigato__route_send_frames (pigato_broker_t *self,
                                const pigato__bytes_t *to,
                                const pigato__bytes_t *frames, size_t count,
                                zmq_msg_t *body_part, size_t body_index);

//  A message with no fields (READY ack, heartbeat, DISCONNECT) to a
//  client ('C') or worker ('W'), in either framing.
void pigato__route_send_control (pigato_broker_t *self,
                                 const pigato__bytes_t *to, char role,
                                 int type, int framing);

//  A partial or final reply to a client, in the framing of its request.
void pigato__route_send_reply (pigato_broker_t *self, bool native,
                               const pigato__bytes_t *client, int type,
                               const pigato__bytes_t *rid, int status,
                               const pigato__bytes_t *data,
                               const pigato__bytes_t *opts,
                               zmq_msg_t *body_part);

//  The body frames of a request: an MDP client's packed frames, else its
//  one body. Returns how many (at most max).
size_t pigato__route_request_frames (pigato__request_t *request,
                                     pigato__bytes_t *frames, size_t max);

//  A partial or final reply to an MDP client: MDPC02, command, the
//  service it asked for, body frames.
void pigato__route_send_mdp_reply (pigato_broker_t *self,
                                   pigato__request_t *request, int type,
                                   const pigato__bytes_t *body,
                                   size_t body_count);

void pigato__route_send_request (pigato_broker_t *self,
                                 pigato__worker_t *worker,
                                 pigato__request_t *request);

//  Sends a final error reply (status -1, data a JSON string) to a client.
void pigato__route_send_error (pigato_broker_t *self, bool native,
                               const pigato__bytes_t *client,
                               const pigato__bytes_t *rid, const char *text);


//  ---- route.c

//  Removes a request from every structure and frees it. Its service is
//  released if that left it empty.
void pigato__route_request_finish (pigato_broker_t *self,
                                   pigato__request_t *request);

//  Fails a request with a final error reply and finishes it. text starts
//  with an E_ code, then a sentence for people.
void pigato__route_request_fail (pigato_broker_t *self,
                                 pigato__request_t *request,
                                 const char *text);

//  Files, indexes, queues and dispatches a new request (see route.c).
//  Returns 0, or -1 if memory ran out: the request is then destroyed and
//  the service released, and the caller tells the client if it can.
int pigato__route_admit (pigato_broker_t *self, pigato__request_t *request,
                          pigato__service_t *service,
                          const pigato__conn_t *conn,
                          const pigato__peer_t *peer);
void pigato__route_request_touch (pigato_broker_t *self,
                                  pigato__request_t *request);

//  Hands queued requests of a service (the name clients asked for) to
//  workers with room, oldest first. The workers are those of the service
//  itself, else of the satisfying versions (highest first), else of the
//  longest wildcard (pigato__services_resolve). A request every worker
//  rejected fails; one that only rejecting workers could take now waits
//  and lets younger requests pass. The service is released on return
//  (freed if nothing holds it any more).
void pigato__route_dispatch (pigato_broker_t *self,
                             pigato__service_t *service);

//  A service's workers have room (a reply, a new worker, a departure that
//  requeued requests): its own queue first, then, for a wildcard or a
//  version, every queue that may resolve to it.
void pigato__route_dispatch_room (pigato_broker_t *self,
                                  pigato__service_t *service);

void pigato__route_worker_remove (pigato_broker_t *self,
                                  pigato__worker_t *worker,
                                  const char *reason, bool send_disconnect);

void pigato__route_worker_ready (pigato_broker_t *self,
                                 pigato__route_in_t *in,
                                 const pigato__peer_t *peer,
                                 pigato__worker_t *worker);

//  The worker registered under a routing id, or NULL.
pigato__worker_t * pigato__route_worker_of (pigato_broker_t *self,
                                            const pigato__bytes_t *routing_id);

//  True if a message from this worker's routing id carries the identity
//  that registered it. Routing ids are chosen by peers: a different
//  identity means another peer took the id over.
bool pigato__route_worker_bound (const pigato__worker_t *worker,
                                 const pigato__peer_t *peer,
                                 const pigato__conn_t *conn);


//  ---- route_internal.c

//  True if requests for this name would find a worker now (its own, a
//  satisfying version or a wildcard): what mmi.service answers.
bool pigato__route_has_worker (pigato_broker_t *self, const void *name,
                               size_t size);

//  The text a request body names: the content of a JSON string, else the
//  bytes themselves (MDP peers send plain text). Empty, "null" and "\"\""
//  name nothing.
bool pigato__route_body_name (const pigato__bytes_t *data, char *name,
                              size_t name_size);

//  $dir: the worker ids of one service (the body names it), or of every
//  service, as JSON. Ids are routing ids as text (escaped if binary).
char *pigato__route_directory (pigato_broker_t *self, const char *only);

//  Requests the broker answers itself: $dir, and MMI (RFC 8):
//  mmi.service -> 200 if the named service has a worker, 404 if not;
//  other mmi.* -> 501. Other $ names are reserved.
void pigato__route_internal_service (pigato_broker_t *self,
                                     pigato__route_in_t *in,
                                     const char *name);


//  ---- route_mdp.c

void pigato__route_route_mdp (pigato_broker_t *self, pigato__route_in_t *in,
                              const pigato__bytes_t *parts, size_t count);

#endif
