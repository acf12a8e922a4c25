/*  =========================================================================
    keyfile.c - zcert key files: load with permission checks, wipe secrets.

    Files use czmq's zcert (ZPL) format. We read the secret file through
    zconfig ourselves rather than through zcert_load () for two reasons:
    zcert_load ("x.key_secret") first tries "x.key_secret_secret", so the
    file we checked the permissions of would not be the file it reads; and
    zcert_load leaves the secret's Z85 text in freed heap memory, where we
    wipe it.
    =========================================================================
*/
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include "keyfile.h"
#include "../mesh/internal.h"

//  --------------------------------------------------------------------------
//  Reads a Z85 key of 32 bytes from a loaded zcert config; 0 on success.

static int
s_config_key (zconfig_t *config, const char *path, byte *key)
{
    char *text = zconfig_get (config, path, NULL);
    if (!text || strlen (text) != PIGATO_Z85_KEY_SIZE)
        return -1;
    return zmq_z85_decode (key, text) ? 0 : -1;
}

//  --------------------------------------------------------------------------
//  Wipes the secret key text held by a loaded zcert config, then frees it.

static void
s_config_destroy (zconfig_t **config_p)
{
    if (!*config_p)
        return;
    char *secret_text = zconfig_get (*config_p, "curve/secret-key", NULL);
    if (secret_text)
        sodium_memzero (secret_text, strlen (secret_text));
    zconfig_destroy (config_p);
}

//  --------------------------------------------------------------------------
//  True if the zcert file at path holds a secret key (without keeping it).

static bool
s_holds_secret (const char *path)
{
    zconfig_t *config = zconfig_load (path);
    if (!config)
        return false;
    byte secret [32];
    bool holds = s_config_key (config, "curve/secret-key", secret) == 0;
    sodium_memzero (secret, sizeof secret);
    s_config_destroy (&config);
    return holds;
}

//  --------------------------------------------------------------------------
//  Refuses a secret file that group or others may read or write.

static int
s_check_mode (const char *path, char *err, size_t err_size)
{
    struct stat info;
    if (stat (path, &info) != 0) {
        pigato__errorf (err, err_size, "cannot read key file '%s': %s",
                        path, strerror (errno));
        return PIGATO_E_KEY;
    }
    if (!S_ISREG (info.st_mode)) {
        pigato__errorf (err, err_size, "key file '%s' is not a regular file",
                        path);
        return PIGATO_E_KEY;
    }
    if (info.st_mode & 077) {
        pigato__errorf (err, err_size,
                        "secret key file '%s' is readable by group or others "
                        "(mode %04o); fix with: chmod 600 %s",
                        path, (unsigned) (info.st_mode & 07777), path);
        return PIGATO_E_KEYPERM;
    }
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Loads a key pair from a zcert secret file (PATH, or PATH_secret when PATH
//  is the public file). Refuses group/world readable secret files. The
//  public and secret keys must belong together.

int
pigato__keyfile_load_secret (const char *path, zcert_t **cert_p, char *err,
                             size_t err_size)
{
    int rc = PIGATO_OK;
    char *secret_path = NULL;
    zconfig_t *config = NULL;
    byte public_key [32];
    byte secret_key [32];
    byte derived [32];

    if (!path || !*path || !cert_p) {
        pigato__errorf (err, err_size, "no key file given");
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    *cert_p = NULL;
    struct stat info;
    if (stat (path, &info) != 0) {
        pigato__errorf (err, err_size, "cannot read key file '%s': %s", path,
                        strerror (errno));
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    //  A public file may be 0644; a secret one others can read is refused
    bool holds_secret = s_holds_secret (path);
    rc = s_check_mode (path, err, err_size);
    if (rc == PIGATO_E_KEYPERM && !holds_secret)
        rc = PIGATO_OK;
    if (rc != PIGATO_OK)
        goto cleanup;

    if (holds_secret)
        secret_path = strdup (path);
    else {
        secret_path = zsys_sprintf ("%s_secret", path);
        if (secret_path && access (secret_path, F_OK) != 0) {
            pigato__errorf (err, err_size, "'%s' holds no secret key", path);
            rc = PIGATO_E_KEY;
            goto cleanup;
        }
    }
    if (!secret_path) {
        rc = PIGATO_E_NOMEM;
        goto cleanup;
    }
    rc = s_check_mode (secret_path, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;

    config = zconfig_load (secret_path);
    if (!config) {
        pigato__errorf (err, err_size, "cannot parse key file '%s'",
                        secret_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (s_config_key (config, "curve/secret-key", secret_key) != 0) {
        pigato__errorf (err, err_size, "'%s' holds no secret key",
                        secret_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (s_config_key (config, "curve/public-key", public_key) != 0) {
        pigato__errorf (err, err_size, "'%s' holds no valid public key",
                        secret_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    //  A pair that does not belong together fails every handshake later,
    //  with no hint why; say it now
    if (crypto_scalarmult_base (derived, secret_key) != 0
    ||  sodium_memcmp (derived, public_key, 32) != 0) {
        pigato__errorf (err, err_size,
                        "'%s': public key does not match secret key",
                        secret_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    *cert_p = zcert_new_from (public_key, secret_key);
    if (!*cert_p)
        rc = PIGATO_E_NOMEM;

cleanup:
    sodium_memzero (secret_key, sizeof secret_key);
    sodium_memzero (derived, sizeof derived);
    s_config_destroy (&config);
    free (secret_path);
    return rc;
}

//  --------------------------------------------------------------------------
//  Wipes the secret key held by a zcert (binary and Z85 text; both point
//  into the cert's own buffers), then destroys it.

void
pigato__keyfile_cert_destroy (zcert_t **cert_p)
{
    if (!cert_p || !*cert_p)
        return;
    //  The getters return const pointers into the cert's own writable buffers
    byte *secret_key = (byte *) zcert_secret_key (*cert_p);
    if (secret_key)
        sodium_memzero (secret_key, 32);
    char *secret_text = (char *) zcert_secret_txt (*cert_p);
    if (secret_text)
        sodium_memzero (secret_text, strlen (secret_text));
    zcert_destroy (cert_p);
}
