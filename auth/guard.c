/*  =========================================================================
    guard.c - per-message authentication and authorization (see guard.h)
    =========================================================================
*/
#include <string.h>
#include "guard.h"

struct _pigato__guard_t {
    int mode;                 //  pigato__zap_mode_t
    char *acl_path;           //  policy file, NULL = allow everything
    pigato__acl_t *policy;    //  current policy
    pigato__zap_t *zap;       //  handshake gate
    int64_t denials;          //  messages refused
    pigato__ratelimit_t log;  //  denial log limiter
};

int
pigato__guard_new (int mode, const char *acl_path, pigato__acl_t **policy_p,
                   pigato__guard_t **self_p, char *err, size_t err_size)
{
    *self_p = NULL;
    pigato__guard_t *self = (pigato__guard_t *) calloc (1, sizeof *self);
    if (!self) {
        pigato__errorf (err, err_size, "out of memory");
        return PIGATO_E_NOMEM;
    }
    self->mode = mode;
    self->acl_path = acl_path ? strdup (acl_path) : NULL;
    if (policy_p && *policy_p) {
        self->policy = *policy_p;
        *policy_p = NULL;
    }
    else
        self->policy = pigato__acl_new_allow_all ();
    if (!self->policy) {
        pigato__guard_destroy (&self);
        return PIGATO_E_NOMEM;
    }
    //  The handler binds before any ROUTER does (fail closed)
    self->zap = pigato__zap_new (mode, err, err_size);
    if (!self->zap) {
        pigato__guard_destroy (&self);
        return PIGATO_E_BIND;
    }
    pigato__zap_set_policy (self->zap, self->policy);
    *self_p = self;
    return 0;
}

void
pigato__guard_destroy (pigato__guard_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__guard_t *self = *self_p;
    pigato__zap_destroy (&self->zap);
    pigato__acl_destroy (&self->policy);
    free (self->acl_path);
    free (self);
    *self_p = NULL;
}

zsock_t *
pigato__guard_zap_socket (pigato__guard_t *self)
{
    return pigato__zap_socket (self->zap);
}

void
pigato__guard_zap_handle (pigato__guard_t *self)
{
    pigato__zap_handle (self->zap);
}

void
pigato__guard_tick (pigato__guard_t *self)
{
    pigato__zap_tick (self->zap);
    pigato__ratelimit_flush (&self->log, "access_denied", PIGATO_LOG_WARNING);
}

bool
pigato__guard_peer (pigato__guard_t *self, zmq_msg_t *part,
                    pigato__peer_t *peer)
{
    //  Metadata rides on every part the peer sent (not on the routing id
    //  part the ROUTER makes up)
    peer->name = part ? zmq_msg_gets (part, "User-Id") : NULL;
    peer->key = part ? zmq_msg_gets (part, PIGATO__KEY_PROPERTY) : NULL;
    if (!peer->name || !*peer->name)
        return false;
    return pigato__acl_identity_current (self->policy, peer->name, peer->key);
}

bool
pigato__guard_allows (pigato__guard_t *self, const char *identity, int verb,
                      const char *service)
{
    return pigato__acl_allows (self->policy, identity, verb, service);
}

void
pigato__guard_limits (pigato__guard_t *self, const char *identity,
                      pigato__limits_t *limits)
{
    pigato__acl_limits (self->policy, identity, limits);
}

bool
pigato__guard_current (pigato__guard_t *self, const char *identity,
                       const char *key)
{
    return pigato__acl_identity_current (self->policy, identity, key);
}

void
pigato__guard_denied (pigato__guard_t *self, const void *routing_id,
                      size_t routing_size, zmq_msg_t *part,
                      const pigato__peer_t *peer, int verb, const char *service,
                      const char *reason)
{
    self->denials++;
    if (pigato__log_level < PIGATO_LOG_WARNING
        || !pigato__ratelimit_allow_at (&self->log, "access_denied",
                                        PIGATO_LOG_WARNING))
        return;
    char routing [80] = "?", fingerprint [PIGATO_FINGERPRINT_SIZE] = "-";
    char service_text [PIGATO_SERVICE_MAX * 4 + 4] = "-";
    char identity [PIGATO__NAME_MAX * 4 + 4] = "-";
    const char *address = NULL;
    if (routing_id)
        pigato__printable (routing_id, routing_size, routing, sizeof routing);
    if (part)
        address = zmq_msg_gets (part, "Peer-Address");
    if (peer && peer->key)
        pigato_key_fingerprint (peer->key, fingerprint);
    if (peer && peer->name)
        pigato__printable (peer->name, strlen (peer->name), identity,
                           sizeof identity);
    if (service)
        pigato__printable (service, strlen (service), service_text,
                           sizeof service_text);
    pigato__log (PIGATO_LOG_WARNING,
                 "event=access_denied address=%s peer=%s "
                 "key=%s identity=%s verb=%s service=%s reason=%s",
                 address ? address : "?", routing, fingerprint, identity,
                 verb == PIGATO__VERB_SERVE ? "serve" : "call", service_text,
                 reason);
}

int
pigato__guard_reload (pigato__guard_t *self, char *err, size_t err_size)
{
    if (!self->acl_path) {
        pigato__errorf (err, err_size, "no ACL file to reload");
        return PIGATO_E_INVALID;
    }
    pigato__acl_t *policy = pigato__acl_load (self->acl_path, err, err_size);
    if (!policy)
        return PIGATO_E_ACL;
    pigato__acl_destroy (&self->policy);
    self->policy = policy;
    pigato__zap_set_policy (self->zap, policy);
    return 0;
}

bool
pigato__guard_has_policy_file (pigato__guard_t *self)
{
    return self->acl_path != NULL;
}

int64_t
pigato__guard_denials (pigato__guard_t *self)
{
    return self->denials;
}

int64_t
pigato__guard_zap_denials (pigato__guard_t *self)
{
    return pigato__zap_denied (self->zap);
}

void
pigato__guard_expiry_check (pigato__guard_t *self, int64_t now,
                            int64_t warn_seconds)
{
    pigato__acl_expiry_check (self->policy, now, warn_seconds);
}

void
pigato__guard_expiry (pigato__guard_t *self, int64_t *ca, int64_t *identity)
{
    pigato__acl_expiry (self->policy, ca, identity);
}

pigato__zap_t *
pigato__guard_zap (pigato__guard_t *self)
{
    return self->zap;
}

size_t
pigato__guard_identity_count (pigato__guard_t *self)
{
    return pigato__acl_identity_count (self->policy);
}

size_t
pigato__guard_rule_count (pigato__guard_t *self)
{
    return pigato__acl_rule_count (self->policy);
}
