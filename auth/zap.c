/*  =========================================================================
    zap.c - ZAP handler (see zap.h)
    =========================================================================
*/
#include <string.h>
#include "zap.h"

struct _pigato__zap_t {
    zsock_t *socket;        //  REP on inproc://zeromq.zap.01
    int mode;               //  pigato__zap_mode_t
    pigato__acl_t *policy;  //  borrowed, PIGATO__ZAP_POLICY mode
    int64_t denied;         //  handshakes refused, every one
    int64_t accepted;       //  handshakes accepted
    int64_t refused [PIGATO__ZAP_REASONS];  //  denied, by reason
    pigato__ratelimit_t log;                //  refusal log limiter
    bool bound;                             //  we hold the endpoint
};

pigato__zap_t *
pigato__zap_new (int mode, char *err, size_t err_size)
{
    pigato__zap_t *self = (pigato__zap_t *) calloc (1, sizeof *self);
    if (!self) {
        pigato__errorf (err, err_size, "out of memory");
        return NULL;
    }
    self->mode = mode;
    self->socket = zsock_new (ZMQ_REP);
    if (!self->socket
        || zsock_bind (self->socket, "%s", PIGATO__ZAP_ENDPOINT) != 0) {
        pigato__errorf (err, err_size,
                        "cannot bind the ZAP handler at %s: %s"
                        " (another handler in this process?); refusing to "
                        "run without authentication",
                        PIGATO__ZAP_ENDPOINT, zmq_strerror (zmq_errno ()));
        pigato__zap_destroy (&self);
        return NULL;
    }
    self->bound = true;
    zsock_set_linger (self->socket, 0);
    zsock_set_rcvtimeo (self->socket, 0);
    return self;
}

void
pigato__zap_destroy (pigato__zap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    //  Unbind first: closing is asynchronous in libzmq, and the next
    //  handler in this process must be able to bind the endpoint at once
    if ((*self_p)->bound)
        zsock_unbind ((*self_p)->socket, "%s", PIGATO__ZAP_ENDPOINT);
    zsock_destroy (&(*self_p)->socket);
    free (*self_p);
    *self_p = NULL;
}

void
pigato__zap_set_policy (pigato__zap_t *self, pigato__acl_t *policy)
{
    self->policy = policy;
}

zsock_t *
pigato__zap_socket (pigato__zap_t *self)
{
    return self->socket;
}

int64_t
pigato__zap_denied (pigato__zap_t *self)
{
    return self->denied;
}

static const char *s_reason_names [PIGATO__ZAP_REASONS] = {
    "malformed_request",    "wrong_domain",        "null_mechanism",
    "unknown_key",          "certificate_expired", "curve_not_enabled",
    "unsupported_mechanism"
};

const char *
pigato__zap_reason_name (int reason)
{
    return reason >= 0 && reason < PIGATO__ZAP_REASONS ? s_reason_names [reason]
                                                       : "?";
}

int64_t
pigato__zap_accepted (pigato__zap_t *self)
{
    return self->accepted;
}

int64_t
pigato__zap_refused (pigato__zap_t *self, int reason)
{
    return reason >= 0 && reason < PIGATO__ZAP_REASONS ? self->refused [reason]
                                                       : 0;
}

//  Counts a refusal under its reason (the one text the log line shows).
static void
s_count_refusal (pigato__zap_t *self, const char *reason)
{
    self->denied++;
    for (int index = 0; index < PIGATO__ZAP_REASONS; index++)
        if (reason && streq (reason, s_reason_names [index])) {
            self->refused [index]++;
            return;
        }
    self->refused [PIGATO__ZAP_MALFORMED_REQUEST]++;  //  cannot happen
}

void
pigato__zap_tick (pigato__zap_t *self)
{
    pigato__ratelimit_flush (&self->log, "zap_deny", PIGATO_LOG_WARNING);
}

//  ZMTP metadata: name length (1 byte), name, value length (4 bytes, big
//  endian), value.
static size_t
s_metadata (byte *buffer, const char *name, const char *value)
{
    size_t name_size = strlen (name), value_size = strlen (value);
    size_t used = 0;
    buffer [used++] = (byte) name_size;
    memcpy (buffer + used, name, name_size);
    used += name_size;
    buffer [used++] = (byte) (value_size >> 24);
    buffer [used++] = (byte) (value_size >> 16);
    buffer [used++] = (byte) (value_size >> 8);
    buffer [used++] = (byte) value_size;
    memcpy (buffer + used, value, value_size);
    return used + value_size;
}

static void
s_reply (pigato__zap_t *self, zframe_t *request_id, const char *status,
         const char *text, const char *user_id, const char *key_z85)
{
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, "1.0");
    zmsg_append (reply, &request_id);
    zmsg_addstr (reply, status);
    zmsg_addstr (reply, text);
    zmsg_addstr (reply, user_id ? user_id : "");
    if (key_z85) {
        byte metadata [64];
        size_t size = s_metadata (metadata, PIGATO__KEY_PROPERTY, key_z85);
        zmsg_addmem (reply, metadata, size);
    }
    else
        zmsg_addmem (reply, NULL, 0);
    zmsg_send (&reply, self->socket);
}

//  Decides one request: version, request id, domain, address, identity,
//  mechanism, credentials...
static void
s_handle_one (pigato__zap_t *self, zmsg_t *request)
{
    char *version = zmsg_popstr (request);
    zframe_t *request_id = zmsg_pop (request);
    char *domain = zmsg_popstr (request);
    char *address = zmsg_popstr (request);
    zframe_t *identity = zmsg_pop (request);
    char *mechanism = zmsg_popstr (request);
    zframe_t *credentials = zmsg_pop (request);
    const char *reason = NULL;
    const char *user = NULL;
    char key_z85 [PIGATO_Z85_KEY_SIZE + 1] = "";
    char fingerprint [PIGATO_FINGERPRINT_SIZE] = "-";

    if (!version || !streq (version, "1.0") || !request_id || !mechanism) {
        //  Not a ZAP request we can answer by the book; answer what we can
        reason = "malformed_request";
        if (!request_id) {
            //  A REP socket must still reply to stay usable
            zmsg_t *reply = zmsg_new ();
            zmsg_addstr (reply, "1.0");
            zmsg_addmem (reply, NULL, 0);
            zmsg_addstr (reply, "400");
            zmsg_addstr (reply, "malformed");
            zmsg_addstr (reply, "");
            zmsg_addmem (reply, NULL, 0);
            zmsg_send (&reply, self->socket);
            s_count_refusal (self, reason);
            goto cleanup;
        }
    }
    else if (!domain || !streq (domain, PIGATO__ZAP_DOMAIN))
        reason = "wrong_domain";
    else if (streq (mechanism, "NULL")) {
        if (self->mode == PIGATO__ZAP_NULL)
            user = PIGATO__ANONYMOUS;
        else
            reason = "null_mechanism";
    }
    else if (streq (mechanism, "CURVE") && credentials
             && zframe_size (credentials) == 32) {
        zmq_z85_encode (key_z85, zframe_data (credentials), 32);
        pigato_key_fingerprint (key_z85, fingerprint);
        if (self->mode == PIGATO__ZAP_ANY_KEY)
            user = PIGATO__ANONYMOUS;
        else if (self->mode == PIGATO__ZAP_POLICY && self->policy) {
            user = pigato__acl_identity_of_key (
                self->policy, zframe_data (credentials), &reason);
        }
        else
            reason = "curve_not_enabled";
    }
    else
        reason = "unsupported_mechanism";

    if (user) {
        self->accepted++;
        s_reply (self, request_id, "200", "OK", user,
                 key_z85 [0] ? key_z85 : NULL);
    }
    else {
        //  Counted always, logged rate-limited: one peer reconnecting in
        //  a loop must not flood the log (and bury other lines)
        s_count_refusal (self, reason);
        if (pigato__log_level >= PIGATO_LOG_WARNING
            && pigato__ratelimit_allow_at (&self->log, "zap_deny",
                                           PIGATO_LOG_WARNING)) {
            char address_text [80] = "?", mechanism_text [40] = "?";
            if (address)
                pigato__printable (address, strlen (address), address_text,
                                   sizeof address_text);
            if (mechanism)
                pigato__printable (mechanism, strlen (mechanism),
                                   mechanism_text, sizeof mechanism_text);
            pigato__log (PIGATO_LOG_WARNING,
                         "event=zap_deny address=%s key=%s "
                         "mechanism=%s reason=%s",
                         address_text, fingerprint, mechanism_text, reason);
        }
        s_reply (self, request_id, "400", reason, NULL, NULL);
    }
    request_id = NULL;  //  s_reply took it
cleanup:
    zstr_free (&version);
    zframe_destroy (&request_id);
    zstr_free (&domain);
    zstr_free (&address);
    zframe_destroy (&identity);
    zstr_free (&mechanism);
    zframe_destroy (&credentials);
}

void
pigato__zap_handle (pigato__zap_t *self)
{
    zmsg_t *request;
    while ((request = zmsg_recv (self->socket))) {
        s_handle_one (self, request);
        zmsg_destroy (&request);
    }
}
