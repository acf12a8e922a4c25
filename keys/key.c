/*  =========================================================================
    key.c - public keys as users give them: Z85 text, a zcert file or an
    X.509 identity certificate; the public key helpers (pigato_key_*).
    =========================================================================
*/
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>
#include "key.h"
#include "keyfile.h"
#include "../certs/ca.h"
#include "../mesh/base/internal.h"

//  --------------------------------------------------------------------------
//  True if text is exactly 40 characters of Z85 that decode to 32 bytes.

static bool
s_z85_key_valid (const char *text)
{
    if (!text || strlen (text) != PIGATO_Z85_KEY_SIZE)
        return false;
    byte key [32];
    return zmq_z85_decode (key, text) != NULL;
}

//  --------------------------------------------------------------------------
//  True if path names a PEM file by its name: such files go to the
//  certificate reader, which says precisely what is wrong with them.

static bool
s_has_pem_name (const char *path)
{
    size_t length = strlen (path);
    return length > 4
        && (streq (path + length - 4, ".crt")
            || streq (path + length - 4, ".pem"));
}

//  --------------------------------------------------------------------------
//  Resolves a public key from Z85 text, a zcert file (public or secret
//  file; only the public key is read, a secret in the file is wiped from
//  memory) or an X.509 certificate whose subject key is the X25519 CURVE
//  key (*from_cert is then true). `what` names the key in error messages
//  ("key", "server key").

int
pigato__key_resolve (const char *what, const char *key_or_file, char *z85,
                     bool *from_cert, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    *from_cert = false;

    if (!key_or_file || !*key_or_file || !z85) {
        pigato__errorf (err, err_size, "no %s given", what);
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    //  A file first: a 40-character path can be valid Z85 too
    struct stat info;
    bool exists = stat (key_or_file, &info) == 0;
    int stat_errno = errno;
    //  A name that ends like a key file is a missing file, even when its
    //  40 characters happen to be valid Z85
    size_t length = strlen (key_or_file);
    bool file_like = (length > 4
                      && (streq (key_or_file + length - 4, ".key")
                          || streq (key_or_file + length - 4, ".crt")
                          || streq (key_or_file + length - 4, ".pem")))
                  || (length > 11
                      && streq (key_or_file + length - 11, ".key_secret"));
    if (!exists && !file_like && s_z85_key_valid (key_or_file)) {
        memcpy (z85, key_or_file, PIGATO_Z85_KEY_SIZE + 1);
        goto cleanup;
    }
    if (!exists) {
        //  Something that looks like a path gets the file error; anything
        //  else is most likely a mistyped key
        if (strchr (key_or_file, '/') || strstr (key_or_file, ".key")
            || strstr (key_or_file, ".crt") || strstr (key_or_file, ".pem"))
            pigato__errorf (
                err, err_size, "cannot read %s '%s': %s", what, key_or_file,
                stat_errno == ENOENT ? "no such file" : strerror (stat_errno));
        else
            pigato__errorf (err, err_size,
                            "%s '%s' is neither a 40-character Z85 key nor "
                            "a readable key file",
                            what, key_or_file);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    //  Read through the key file reader, never zconfig_load: the file may
    //  be a secret file (the broker's own --key), and zconfig leaves its
    //  text in freed heap. The reader refuses FIFOs and devices.
    pigato__keyfile_info_t keyfile = { 0 };
    if (!s_has_pem_name (key_or_file)) {
        char reason [256];
        rc = pigato__keyfile_inspect (key_or_file, &keyfile, reason,
                                      sizeof reason);
        if (rc != PIGATO_OK) {
            pigato__errorf (err, err_size, "%s: %s", what, reason);
            rc = rc == PIGATO_E_NOMEM ? rc : PIGATO_E_KEY;
            goto cleanup;
        }
    }
    if (s_has_pem_name (key_or_file) || keyfile.pem) {
        char reason [256];
        rc = pigato__cert_public_key (key_or_file, z85, reason, sizeof reason);
        if (rc == PIGATO_OK)
            *from_cert = true;
        else {
            pigato__errorf (err, err_size, "%s: %s", what, reason);
            rc = rc == PIGATO_E_NOMEM ? rc : PIGATO_E_KEY;
        }
        goto cleanup;
    }
    if (!keyfile.public_z85 [0]) {
        pigato__errorf (err, err_size,
                        "%s file '%s' holds no valid curve/public-key", what,
                        key_or_file);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    memcpy (z85, keyfile.public_z85, PIGATO_Z85_KEY_SIZE + 1);

cleanup:
    return rc;
}

//  --------------------------------------------------------------------------
//  Public: resolves a public key given as Z85 text, a zcert file or an
//  identity certificate (its signature is not checked here).

PIGATO_EXPORT int
pigato_key_public (const char *key_or_file, char *z85, char *err,
                   size_t err_size)
{
    bool from_cert;
    return pigato__key_resolve ("key", key_or_file, z85, &from_cert, err,
                                err_size);
}

//  --------------------------------------------------------------------------
//  Public: fingerprint = the first 8 bytes of BLAKE2b-256
//  (crypto_generichash) over the 32-byte key, as 16 hex characters.
//  Writes sixteen '?' for a key that is not valid Z85.

PIGATO_EXPORT void
pigato_key_fingerprint (const char *public_z85, char *fingerprint)
{
    if (!fingerprint)
        return;
    byte key [32];
    byte hash [32];
    if (!s_z85_key_valid (public_z85)) {
        snprintf (fingerprint, 17, "????????????????");
        return;
    }
    zmq_z85_decode (key, public_z85);
    crypto_generichash (hash, sizeof hash, key, sizeof key, NULL, 0);
    sodium_bin2hex (fingerprint, 17, hash, 8);
}
