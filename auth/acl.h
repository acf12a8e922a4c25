/*  =========================================================================
    acl.h - the mesh policy: identities (name <-> CURVE public key), groups,
    allow/deny rules with serve/call verbs, and a decision cache.

    A policy is immutable once loaded; a reload builds a new one and swaps
    it in, so the decision cache is dropped with the old policy.

    File format (docs/security.md):
        identity NAME Z85KEY|KEYFILE
        group    NAME MEMBER...          (members: identities or @groups)
        allow    SUBJECT VERB PATTERN... (SUBJECT: NAME, @GROUP or *)
        deny     SUBJECT VERB PATTERN... (VERB: serve or call)
        trust    CA.crt CERTDIR          (every cert in CERTDIR that the CA
                                          signed, valid and not revoked, is an
                                          identity named by its CN)
        revoked  CA.crl                  (the CRL of a trusted CA)
        limit    SUBJECT KEY=VALUE...    (quotas: pending=N,
                                          pending-bytes=SIZE, rate=N,
                                          connections=N, stored=N,
                                          stored-bytes=SIZE;
                                          a value may be 'unlimited')
    PATTERN: exact name, prefix*, or *. A word starting with '#' starts a
    comment. A deny rule for a name also denies its versions (name@1.2.0,
    name@^1): they are that name.
    =========================================================================
*/
#ifndef PIGATO_ACL_H_INCLUDED
#define PIGATO_ACL_H_INCLUDED

#include "../mesh/base/internal.h"

typedef struct _pigato__acl_t pigato__acl_t;

typedef enum {
    PIGATO__VERB_SERVE = 0,  //  READY, replies, worker heartbeats
    PIGATO__VERB_CALL = 1    //  requests, request heartbeats
} pigato__verb_t;

#define PIGATO__ANONYMOUS "anonymous"

//  One identity's quotas (`limit` lines). PIGATO__UNLIMITED: no limit.
typedef struct {
    int64_t pending;        //  requests held at once, queued or at a worker
    int64_t pending_bytes;  //  the bytes of their bodies and opts
    int64_t rate;           //  requests a second, in bursts of as many
    int64_t connections;    //  connections open at once
    int64_t stored;         //  durable requests stored (titanic.c)
    int64_t stored_bytes;   //  their bodies, opts and replies
} pigato__limits_t;

#define PIGATO__UNLIMITED                   (-1)
#define PIGATO__LIMIT_PENDING_DEFAULT       100000
#define PIGATO__LIMIT_PENDING_BYTES_DEFAULT (256 * 1024 * 1024)
#define PIGATO__LIMIT_RATE_DEFAULT          PIGATO__UNLIMITED
#define PIGATO__LIMIT_CONNECTIONS_DEFAULT   PIGATO__UNLIMITED
#define PIGATO__LIMIT_STORED_DEFAULT        100000
#define PIGATO__LIMIT_STORED_BYTES_DEFAULT  (256 * 1024 * 1024)
//  Every limit at its default
#define PIGATO__LIMITS_DEFAULT                                                 \
    ((pigato__limits_t) {                                                      \
        PIGATO__LIMIT_PENDING_DEFAULT, PIGATO__LIMIT_PENDING_BYTES_DEFAULT,    \
        PIGATO__LIMIT_RATE_DEFAULT, PIGATO__LIMIT_CONNECTIONS_DEFAULT,         \
        PIGATO__LIMIT_STORED_DEFAULT, PIGATO__LIMIT_STORED_BYTES_DEFAULT })

//  Loads and validates a policy file. On error returns NULL and writes
//  "FILE:LINE: what is wrong" to err.
pigato__acl_t *pigato__acl_load (const char *path, char *err, size_t err_size);

//  A policy that allows everything to everyone (--allow-any, --insecure
//  without --acl).
pigato__acl_t *pigato__acl_new_allow_all (void);

void pigato__acl_destroy (pigato__acl_t **self_p);

//  The identity name for a 32-byte CURVE public key, or NULL if the key is
//  not in the policy or its certificate has expired (reason, if not NULL,
//  says which: "unknown_key" or "certificate_expired"). Borrowed; valid
//  while the policy lives.
const char *pigato__acl_identity_of_key (pigato__acl_t *self,
                                         const byte *public_key,
                                         const char **reason);

//  True if the identity exists in this policy with this key (Z85) and, for
//  an identity from a certificate, the certificate has not expired — a
//  live connection's credentials re-checked against the current policy.
//  With key NULL only the name is checked (the NULL mechanism).
bool pigato__acl_identity_current (pigato__acl_t *self, const char *name,
                                   const char *key_z85);

//  True if the policy lets the identity do verb on the service.
//  Decisions are cached per identity x verb x service.
bool pigato__acl_allows (pigato__acl_t *self, const char *identity, int verb,
                         const char *service);

//  The quotas of an identity. For each key, a `limit` line naming the
//  identity wins over one naming a group it is in, which wins over `*`;
//  among lines of one kind the last wins; no line: the default
//  (PIGATO__LIMIT_*_DEFAULT). Not cached: asked once per identity and
//  policy, not per request.
void pigato__acl_limits (pigato__acl_t *self, const char *identity,
                         pigato__limits_t *limits);

//  True if this policy allows everything (no rules to check).
bool pigato__acl_allow_all (pigato__acl_t *self);

//  Logs every trusted CA certificate (`trust` lines) and identity
//  certificate (from trust folders) that ends within warn_seconds of now
//  (event=certificate_expiring, a warning) or has ended
//  (event=certificate_expired: an error for a CA, a warning for an
//  identity, which the guard refuses already). Reads no file: the dates
//  were read when the policy was loaded. At most 100 identity lines, then
//  event=certificate_expiring_suppressed count=N.
void pigato__acl_expiry_check (pigato__acl_t *self, int64_t now,
                               int64_t warn_seconds);

//  The earliest notAfter (epoch seconds; 0: there is none) of the trusted
//  CA certificates and of the identity certificates, as loaded.
void pigato__acl_expiry (pigato__acl_t *self, int64_t *ca, int64_t *identity);

size_t pigato__acl_identity_count (pigato__acl_t *self);
size_t pigato__acl_rule_count (pigato__acl_t *self);

#endif
