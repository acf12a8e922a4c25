/*  =========================================================================
    peer.h - DEALER sockets for clients and workers (peer.c): the CURVE
    settings they share, socket setup, and sending frames.
    =========================================================================
*/
#ifndef PIGATO_PEER_H_INCLUDED
#define PIGATO_PEER_H_INCLUDED

#include "../base/internal.h"
#include "../wire/codec.h"

//  Most server keys a peer accepts for its brokers (key rotation: the
//  old and the new key, and one spare).
#define PIGATO__SERVER_KEYS_MAX 4

//  Security settings shared by clients and workers (both are DEALERs).
typedef struct {
    //  Acceptable broker public keys, tried in turn on handshake failure
    char server_keys [PIGATO__SERVER_KEYS_MAX][PIGATO_Z85_KEY_SIZE + 1];
    size_t server_key_count;  //  0 if unset
    char *key_file;           //  own zcert secret file, NULL = ephemeral
    bool insecure;            //  NULL mechanism
    char *server_cert;        //  certificate server_key came from, or NULL
    char *server_ca;          //  CA to verify server_cert with, or NULL
} pigato__peer_security_t;

//  Creates a DEALER socket for endpoint with the given routing id (NULL =
//  libzmq's default) and applies the security settings (server key number
//  key_index, modulo their count); pigato__peer_connect connects it, once
//  the caller's monitor watches it (libzmq reports no connection made
//  before). Secrets are wiped before returning. On error returns a status
//  and a message in err.
int pigato__peer_socket (const pigato__peer_security_t *security,
                         size_t key_index, const char *endpoint,
                         const void *routing_id, size_t routing_id_size,
                         zsock_t **sock_p, char *err,
                         size_t err_size) PIGATO__MUST_CHECK;

//  Connects a socket made by pigato__peer_socket: PIGATO_OK, or
//  PIGATO_E_CONNECT with the reason in err.
int pigato__peer_connect (zsock_t *sock, const char *endpoint, char *err,
                          size_t err_size) PIGATO__MUST_CHECK;

//  Frees the key_file, server_cert and server_ca strings. Does not free
//  the struct.
void pigato__peer_security_reset (pigato__peer_security_t *security);

//  Sets the server keys from Z85 text, a zcert file or an X.509
//  certificate, or a comma-separated list of them (key rotation: each is
//  tried in turn when a handshake fails); a single certificate also sets
//  server_cert, checked against server_ca when one is set;
//  sets key_file after checking the secret file loads and has safe
//  permissions.
int pigato__peer_security_set_server_key (pigato__peer_security_t *security,
                                          const char *key, char *err,
                                          size_t err_size) PIGATO__MUST_CHECK;
int pigato__peer_security_set_key_file (pigato__peer_security_t *security,
                                        const char *path, char *err,
                                        size_t err_size) PIGATO__MUST_CHECK;

//  Sets the CA that a server key given as a certificate must verify
//  against (signature, validity, mesh); NULL or "" = no check. Checks
//  the CA loads, and checks the server certificate now if one is set; the
//  CA is kept even when a check fails, so connects fail closed. A CA with
//  a server key given as Z85 or zcert fails at connect.
int pigato__peer_security_set_server_ca (pigato__peer_security_t *security,
                                         const char *ca_crt, char *err,
                                         size_t err_size) PIGATO__MUST_CHECK;

//  Sends a multipart message made of byte ranges (no frame objects, no
//  copies): how clients and workers send. 0 or -1.
int pigato__send_frames (zsock_t *sock, const pigato__bytes_t *frames,
                         size_t count) PIGATO__MUST_CHECK;

#endif
