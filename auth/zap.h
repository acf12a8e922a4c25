/*  =========================================================================
    zap.h - our ZAP handler (RFC 27), run inside the broker's own loop so
    the handshake check and the per-message check read one policy.

    Replies 200 with User-Id = identity name and metadata X-Pigato-Key =
    the peer's Z85 public key (so a reload that changes a key revokes the
    old connection), or 400 (never 300: it stalls clients until their
    handshake timeout). Every denial is logged and counted.
    =========================================================================
*/
#ifndef PIGATO_ZAP_H_INCLUDED
#define PIGATO_ZAP_H_INCLUDED

#include "acl.h"

#define PIGATO__ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define PIGATO__ZAP_DOMAIN   "pigato"
#define PIGATO__KEY_PROPERTY "X-Pigato-Key"

typedef struct _pigato__zap_t pigato__zap_t;

typedef enum {
    PIGATO__ZAP_NULL,     //  --insecure: NULL mechanism, "anonymous"
    PIGATO__ZAP_ANY_KEY,  //  --allow-any: any CURVE key, "anonymous"
    PIGATO__ZAP_POLICY    //  --acl: keys listed in the policy only
} pigato__zap_mode_t;

//  Binds the handler. Fails (NULL, message in err) if another handler
//  holds the endpoint: the broker must then refuse to start.
pigato__zap_t *pigato__zap_new (int mode, char *err, size_t err_size);
void pigato__zap_destroy (pigato__zap_t **self_p);

//  The policy used in PIGATO__ZAP_POLICY mode (borrowed; the broker swaps
//  it on reload).
void pigato__zap_set_policy (pigato__zap_t *self, pigato__acl_t *policy);

//  The socket to poll; call pigato__zap_handle when it is readable.
zsock_t *pigato__zap_socket (pigato__zap_t *self);

//  Answers every pending ZAP request.
void pigato__zap_handle (pigato__zap_t *self);

//  Handshakes refused so far.
int64_t pigato__zap_denied (pigato__zap_t *self);

//  Called from the broker's timer: reports refusals whose log lines were
//  held back (event=zap_deny_suppressed count=N) once their second is over.
void pigato__zap_tick (pigato__zap_t *self);

#endif
