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

//  Why a handshake was refused; each reason is counted.
typedef enum {
    PIGATO__ZAP_MALFORMED_REQUEST = 0,  //  not a ZAP 1.0 request
    PIGATO__ZAP_WRONG_DOMAIN,           //  not the broker's ZAP domain
    PIGATO__ZAP_NULL_MECHANISM,         //  NULL on a CURVE broker
    PIGATO__ZAP_UNKNOWN_KEY,            //  a key the policy does not hold
    PIGATO__ZAP_CERTIFICATE_EXPIRED,    //  its certificate has ended
    PIGATO__ZAP_CURVE_NOT_ENABLED,      //  CURVE on an insecure broker
    PIGATO__ZAP_UNSUPPORTED_MECHANISM,  //  PLAIN, GSSAPI, ...
    PIGATO__ZAP_REASONS
} pigato__zap_reason_t;

//  A reason's name as logged ("unknown_key"...).
const char *pigato__zap_reason_name (int reason);

//  Handshakes accepted so far, and refused for one reason.
int64_t pigato__zap_accepted (pigato__zap_t *self);
int64_t pigato__zap_refused (pigato__zap_t *self, int reason);

//  Called from the broker's timer: reports refusals whose log lines were
//  held back (event=zap_deny_suppressed count=N) once their second is over.
void pigato__zap_tick (pigato__zap_t *self);

#endif
