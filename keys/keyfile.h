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
//  a message saying how to fix it; but takes the layout of a service's key
//  (docs/security.md): owned by root, mode 0640 or 0440, its group one
//  this process is in. The caller applies the cert and then
//  destroys it with pigato__keyfile_cert_destroy (which wipes the secret).
int pigato__keyfile_load_secret (const char *path, zcert_t **cert_p, char *err,
                                 size_t err_size) PIGATO__MUST_CHECK;

//  What a key file shows without its secret, read the same guarded way
//  (regular files only, at most 64 KiB, bytes in sodium_malloc memory
//  that is wiped): never through zconfig_load, which leaves the text of a
//  secret file in freed heap.
typedef struct {
    bool pem;                                   //  holds a PEM header
    bool has_secret;                            //  a valid secret-key line
    char public_z85 [PIGATO_Z85_KEY_SIZE + 1];  //  "" when none
    char name [4 * PIGATO__NAME_MAX + 1];       //  metadata name, escaped
    mode_t mode;                                //  st_mode of the file
} pigato__keyfile_info_t;

//  Fills info from the file at path. Returns 0, or PIGATO_E_KEY (cannot
//  be read, not a regular file, too large) or PIGATO_E_NOMEM with a
//  message in err. A file that holds no key is not an error here: look
//  at public_z85 and pem.
int pigato__keyfile_inspect (const char *path, pigato__keyfile_info_t *info,
                             char *err, size_t err_size) PIGATO__MUST_CHECK;

//  Wipes the secret key held by a zcert, then destroys it.
void pigato__keyfile_cert_destroy (zcert_t **cert_p);

#endif
