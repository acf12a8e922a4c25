/*  =========================================================================
    peer.c - DEALER sockets for clients and workers: CURVE client setup
    and the server key (resolved by keys/key.c from Z85 text, a zcert file
    or the broker's X.509 certificate, optionally verified against the
    mesh CA).
    =========================================================================
*/
#include <inttypes.h>
#include <string.h>
#include "peer.h"
#include "../../certs/ca.h"
#include "../../keys/key.h"
#include "../../keys/keyfile.h"

//  Largest inbound frame: the broker's limit and a 4 KiB margin.
#define PEER_MAX_MESSAGE_SIZE (PIGATO__MAX_MESSAGE_SIZE + 4096)
//  Linger for peer sockets: long enough to flush a DISCONNECT to a live
//  broker when a peer closes, short enough not to hold up process exit
//  when the broker is gone.
#define PEER_LINGER_MS 100

//  --------------------------------------------------------------------------
//  Frees the key_file, server_cert and server_ca strings. Does not free the
//  struct.

void
pigato__peer_security_reset (pigato__peer_security_t *security)
{
    if (!security)
        return;
    free (security->key_file);
    security->key_file = NULL;
    free (security->server_cert);
    security->server_cert = NULL;
    free (security->server_ca);
    security->server_ca = NULL;
}

//  --------------------------------------------------------------------------
//  When a server CA is set, proves the server key with it: the server key
//  must come from a certificate that verifies against the CA now (path,
//  validity, mesh) and still holds that key. Reads both files each time,
//  so an expired, replaced or re-issued certificate is noticed at the
//  next connect.

static int
s_server_cert_check (const pigato__peer_security_t *security, char *err,
                     size_t err_size)
{
    int rc = PIGATO_OK;
    pigato__trust_t *trust = NULL;
    char reason [512];
    pigato__cert_info_t info;

    if (!security->server_ca)
        goto cleanup;
    if (!security->server_cert) {
        pigato__errorf (err, err_size,
                        "the server CA '%s' needs the server "
                        "key as a certificate (the broker's .crt), not as "
                        "Z85 text or a zcert file",
                        security->server_ca);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    trust = pigato__trust_load (security->server_ca, NULL, reason,
                                sizeof reason);
    if (!trust) {
        pigato__errorf (err, err_size, "server CA: %s", reason);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    rc = pigato__trust_verify (trust, security->server_cert, &info, reason,
                               sizeof reason);
    if (rc != PIGATO_OK) {
        pigato__errorf (err, err_size, "server certificate%s%s",
                        reason [0] == '\'' ? " " : ": ", reason);
        rc = rc == PIGATO_E_NOMEM ? rc : PIGATO_E_KEY;
        goto cleanup;
    }
    char z85 [PIGATO_Z85_KEY_SIZE + 1];
    if (!zmq_z85_encode (z85, info.public_key, sizeof info.public_key)
        || security->server_key_count != 1
        || strneq (z85, security->server_keys [0])) {
        pigato__errorf (err, err_size,
                        "server certificate '%s' (%s) no "
                        "longer holds the server key it was set with; set "
                        "it again",
                        security->server_cert, info.name);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    char cert_text [512];
    pigato__log (PIGATO_LOG_DEBUG,
                 "event=server_cert_verified cert=%s "
                 "name=%s mesh=%s not_after=%" PRId64,
                 pigato__printable (security->server_cert,
                                    strlen (security->server_cert), cert_text,
                                    sizeof cert_text),
                 info.name, info.mesh, info.not_after);
cleanup:
    pigato__trust_destroy (&trust);
    return rc;
}

//  --------------------------------------------------------------------------
//  Sets the broker's public key from Z85 text, a zcert file or the
//  broker's certificate. A certificate is checked against the server CA
//  at once when one is set; a certificate that fails the check stays set
//  (with an error returned), so a caller that ignores the error still
//  cannot connect.

int
pigato__peer_security_set_server_key (pigato__peer_security_t *security,
                                      const char *key, char *err,
                                      size_t err_size)
{
    char keys [PIGATO__SERVER_KEYS_MAX][PIGATO_Z85_KEY_SIZE + 1];
    size_t count = 0;
    bool from_cert = false;
    int rc = PIGATO_OK;
    char *list = key ? strdup (key) : NULL;
    if (key && !list)
        return PIGATO_E_NOMEM;
    //  One key, or a comma-separated list of them (key rotation)
    char *rest = list, *item;
    while (rc == PIGATO_OK && list && (item = strsep (&rest, ",")) != NULL) {
        while (*item == ' ')
            item++;
        if (!*item && rest)
            continue;
        if (count == PIGATO__SERVER_KEYS_MAX) {
            pigato__errorf (err, err_size,
                            "server key: at most %d keys in a list",
                            PIGATO__SERVER_KEYS_MAX);
            rc = PIGATO_E_KEY;
            break;
        }
        bool cert = false;
        rc = pigato__key_resolve ("server key", item, keys [count], &cert, err,
                                  err_size);
        from_cert = from_cert || cert;
        count++;
    }
    if (rc == PIGATO_OK && !list)
        rc = pigato__key_resolve ("server key", key, keys [0], &from_cert, err,
                                  err_size);
    char *cert_copy = NULL;
    if (rc == PIGATO_OK && from_cert && count == 1
        && !(cert_copy = strdup (key)))
        rc = PIGATO_E_NOMEM;
    free (list);
    if (rc != PIGATO_OK)
        return rc;
    memcpy (security->server_keys, keys, sizeof keys);
    security->server_key_count = count;
    free (security->server_cert);
    security->server_cert = cert_copy;
    return security->server_cert ? s_server_cert_check (security, err, err_size)
                                 : PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Sets (or with NULL or "" clears) the CA the server certificate must
//  verify against. The CA is kept even if it or the certificate fails the
//  check, so connects fail closed.

int
pigato__peer_security_set_server_ca (pigato__peer_security_t *security,
                                     const char *ca_crt, char *err,
                                     size_t err_size)
{
    char *copy = NULL;
    if (ca_crt && *ca_crt && !(copy = strdup (ca_crt)))
        return PIGATO_E_NOMEM;
    free (security->server_ca);
    security->server_ca = copy;
    if (!copy)
        return PIGATO_OK;
    char reason [512];
    pigato__trust_t *trust = pigato__trust_load (copy, NULL, reason,
                                                 sizeof reason);
    if (!trust) {
        pigato__errorf (err, err_size, "server CA: %s", reason);
        return PIGATO_E_KEY;
    }
    pigato__trust_destroy (&trust);
    //  With a Z85 or zcert server key the error waits for connect: the
    //  server key may still be set (as a certificate) before then
    return security->server_cert ? s_server_cert_check (security, err, err_size)
                                 : PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Sets our own key file after proving it loads with safe permissions; the
//  key is loaded again (and wiped again) at each connect, so no secret
//  stays in memory between connects.

int
pigato__peer_security_set_key_file (pigato__peer_security_t *security,
                                    const char *path, char *err,
                                    size_t err_size)
{
    zcert_t *cert = NULL;
    int rc = pigato__keyfile_load_secret (path, &cert, err, err_size);
    pigato__keyfile_cert_destroy (&cert);
    if (rc != PIGATO_OK)
        return rc;
    char *copy = strdup (path);
    if (!copy)
        return PIGATO_E_NOMEM;
    free (security->key_file);
    security->key_file = copy;
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Creates a DEALER for endpoint, not connected yet (the caller attaches
//  its monitor first: a connection made before would not be reported),
//  with no send blocking (send timeout 0), receive
//  timeout 0 (callers poll first), short linger, IMMEDIATE off so
//  messages queue before the handshake completes. The send queue of a
//  tcp:// socket has no message limit: its owner bounds it in bytes
//  (link_budget.h); an ipc:// one has PIGATO_LINK_IPC_SNDHWM messages,
//  beyond which a send fails at once (EAGAIN).

int
pigato__peer_socket (const pigato__peer_security_t *security, size_t key_index,
                     const char *endpoint, const void *routing_id,
                     size_t routing_id_size, zsock_t **sock_p, char *err,
                     size_t err_size)
{
    int rc = PIGATO_OK;
    zcert_t *cert = NULL;
    zsock_t *sock = NULL;

    if (!security || !endpoint || !*endpoint || !sock_p) {
        pigato__errorf (err, err_size, "no endpoint given");
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    if (!security->insecure && security->server_key_count == 0) {
        pigato__errorf (err, err_size,
                        "no server key set: give the broker's public key, "
                        "or choose insecure mode");
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (!security->insecure
        && (rc = s_server_cert_check (security, err, err_size)) != PIGATO_OK)
        goto cleanup;
    sock = zsock_new (ZMQ_DEALER);
    if (!sock) {
        pigato__errorf (err, err_size, "cannot create socket: %s",
                        zmq_strerror (zmq_errno ()));
        rc = PIGATO_E_SYSTEM;
        goto cleanup;
    }
    zsock_set_linger (sock, PEER_LINGER_MS);
    zsock_set_immediate (sock, 0);
    zsock_set_sndhwm (sock, strncmp (endpoint, "tcp://", 6) == 0
                                ? 0
                                : PIGATO_LINK_IPC_SNDHWM);
    zsock_set_rcvhwm (sock, PIGATO_LINK_RCVHWM);
    zsock_set_sndtimeo (sock, 0);
    zsock_set_rcvtimeo (sock, 0);
    //  The broker forwards nothing bigger; a frame beyond this is not ours
    zsock_set_maxmsgsize (sock, PEER_MAX_MESSAGE_SIZE);
    if (routing_id && routing_id_size > 0
        && zmq_setsockopt (zsock_resolve (sock), ZMQ_ROUTING_ID, routing_id,
                           routing_id_size)
               != 0) {
        pigato__errorf (err, err_size, "invalid routing id: %s",
                        zmq_strerror (zmq_errno ()));
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    if (!security->insecure) {
        if (security->key_file) {
            rc = pigato__keyfile_load_secret (security->key_file, &cert, err,
                                              err_size);
            if (rc != PIGATO_OK)
                goto cleanup;
        }
        else if (!(cert = zcert_new ())) {
            pigato__errorf (err, err_size, "cannot make a key pair");
            rc = PIGATO_E_NOMEM;
            goto cleanup;
        }
        zcert_apply (cert, sock);
        zsock_set_curve_serverkey (
            sock,
            security->server_keys [key_index % security->server_key_count]);
    }
    //  libzmq resolves IPv4 only unless told: tcp://[::1]:5555 would fail
    bool ipv6 = false;
    if (pigato__endpoint_check (endpoint, false, &ipv6, err, err_size)) {
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    zsock_set_ipv6 (sock, ipv6);
    *sock_p = sock;
    sock = NULL;

cleanup:
    pigato__keyfile_cert_destroy (&cert);
    zsock_destroy (&sock);
    return rc;
}

int
pigato__peer_connect (zsock_t *sock, const char *endpoint, char *err,
                      size_t err_size)
{
    if (zsock_connect (sock, "%s", endpoint) == 0)
        return PIGATO_OK;
    pigato__errorf (err, err_size, "cannot connect to '%s': %s", endpoint,
                    zmq_strerror (zmq_errno ()));
    return PIGATO_E_CONNECT;
}

//  --------------------------------------------------------------------------
//  Sends a multipart message made of byte ranges without copying them into
//  frames first. All or nothing (libzmq multipart atomicity).

int
pigato__send_frames (zsock_t *sock, const pigato__bytes_t *frames, size_t count)
{
    if (!sock)
        return -1;
    void *handle = zsock_resolve (sock);
    for (size_t index = 0; index < count; index++)
        if (zmq_send (handle, frames [index].data, frames [index].size,
                      index + 1 < count ? ZMQ_SNDMORE : 0)
            < 0)
            return -1;
    return 0;
}
