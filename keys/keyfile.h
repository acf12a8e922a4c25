/*  =========================================================================
    keyfile.h - zcert key files: load with permission checks, wipe secrets.
    =========================================================================
*/
#ifndef PIGATO_KEYFILE_H_INCLUDED
#define PIGATO_KEYFILE_H_INCLUDED

#include <czmq.h>
#include "../mesh/base/internal.h"

//  Loads a key pair from a zcert secret file (PATH, or PATH_secret when PATH
//  is the public file). Refuses a file that group or others can read, with
//  a message saying how to fix it. The caller applies the cert and then
//  destroys it with pigato__keyfile_cert_destroy (which wipes the secret).
int pigato__keyfile_load_secret (const char *path, zcert_t **cert_p, char *err,
                                 size_t err_size) PIGATO__MUST_CHECK;

//  Wipes the secret key held by a zcert, then destroys it.
void pigato__keyfile_cert_destroy (zcert_t **cert_p);

#endif
