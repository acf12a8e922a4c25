/*  =========================================================================
    key.h - public keys as users give them: Z85 text, a zcert file or an
    X.509 identity certificate. pigato_key_public and pigato_key_fingerprint
    (include/pigato.h) are defined in key.c too.
    =========================================================================
*/
#ifndef PIGATO_KEY_H_INCLUDED
#define PIGATO_KEY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Resolves a public key from Z85 text, a zcert file (public or secret
//  file; only the public key is read, a secret in the file is wiped from
//  memory) or an X.509 certificate whose subject key is the X25519 CURVE
//  key (*from_cert is then true; the certificate's signature is not
//  checked). Writes the key as 40 characters of Z85 plus NUL to z85.
//  `what` names the key in error messages ("key", "server key"). Returns
//  0, or PIGATO_E_INVALID, PIGATO_E_KEY or PIGATO_E_NOMEM with a message
//  in err.
int pigato__key_resolve (const char *what, const char *key_or_file, char *z85,
                         bool *from_cert, char *err, size_t err_size);

#endif
