/*  =========================================================================
    guard.h - the broker's gate: ZAP at the handshake, then on every message
    the identity (User-Id + key metadata) re-checked against the *current*
    policy and the ACL decision for the verb and service. Denials are
    logged (rate-limited, with peer, key fingerprint, identity, service,
    reason) and counted.
    =========================================================================
*/
#ifndef PIGATO_GUARD_H_INCLUDED
#define PIGATO_GUARD_H_INCLUDED

#include "zap.h"

typedef struct _pigato__guard_t pigato__guard_t;

//  Who sent a message, as the handshake established it.
typedef struct {
    const char *name;  //  User-Id (identity name); NULL if absent
    const char *key;   //  Z85 public key (CURVE), NULL otherwise
} pigato__peer_t;

//  Creates the gate in a ZAP mode and binds the ZAP handler. policy_p
//  holds the policy loaded from acl_path (taken over), or NULL for a
//  policy that allows everything; acl_path is kept for reloads. Returns 0
//  or PIGATO_E_BIND (the handler cannot bind), with a message in err.
int pigato__guard_new (int mode, const char *acl_path, pigato__acl_t **policy_p,
                       pigato__guard_t **self_p, char *err,
                       size_t err_size) PIGATO__MUST_CHECK;
void pigato__guard_destroy (pigato__guard_t **self_p);

zsock_t *pigato__guard_zap_socket (pigato__guard_t *self);
void pigato__guard_zap_handle (pigato__guard_t *self);

//  Called on the broker's heartbeat: reports denial log lines that the
//  rate limit held back, once their second is over.
void pigato__guard_tick (pigato__guard_t *self);

//  Reads the sender's identity from the metadata of a part it sent (not
//  the routing id part) and checks it against the current policy. False
//  = revoked or unknown. peer's strings live as long as the part.
bool pigato__guard_peer (pigato__guard_t *self, zmq_msg_t *part,
                         pigato__peer_t *peer);

//  The ACL decision (cached in the policy).
bool pigato__guard_allows (pigato__guard_t *self, const char *identity,
                           int verb, const char *service);

//  The identity's quotas in the current policy (pigato__acl_limits).
void pigato__guard_limits (pigato__guard_t *self, const char *identity,
                           pigato__limits_t *limits);

//  True if this identity + key is still valid under the current policy.
bool pigato__guard_current (pigato__guard_t *self, const char *identity,
                            const char *key);

//  Counts and logs a denial: routing id (may be NULL), a part the peer
//  sent (its address; may be NULL), who, what. service may be NULL.
void pigato__guard_denied (pigato__guard_t *self, const void *routing_id,
                           size_t routing_size, zmq_msg_t *part,
                           const pigato__peer_t *peer, int verb,
                           const char *service, const char *reason);

//  Re-reads the policy file and swaps it in atomically; on error keeps the
//  old one and returns a status with the message in err.
int pigato__guard_reload (pigato__guard_t *self, char *err,
                          size_t err_size) PIGATO__MUST_CHECK;

//  True if the policy file can be reloaded (a file was given).
bool pigato__guard_has_policy_file (pigato__guard_t *self);

//  The current policy's certificate expiry check (pigato__acl_expiry_check).
void pigato__guard_expiry_check (pigato__guard_t *self, int64_t now,
                                 int64_t warn_seconds);

//  The earliest notAfter (epoch s, 0: none) of the current policy's
//  trusted CAs and of its identity certificates (pigato__acl_expiry).
void pigato__guard_expiry (pigato__guard_t *self, int64_t *ca,
                           int64_t *identity);

//  The ZAP handler, for its counters (zap.h).
pigato__zap_t *pigato__guard_zap (pigato__guard_t *self);

//  Counters and sizes.
int64_t pigato__guard_denials (pigato__guard_t *self);
int64_t pigato__guard_zap_denials (pigato__guard_t *self);
size_t pigato__guard_identity_count (pigato__guard_t *self);
size_t pigato__guard_rule_count (pigato__guard_t *self);

#endif
