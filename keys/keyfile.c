/*  =========================================================================
    keyfile.c - zcert key files: load with permission checks, wipe secrets.

    Files use czmq's zcert (ZPL) format. We read them ourselves instead of
    through zcert_load () or zconfig_load (): zcert_load ("x.key_secret")
    first tries "x.key_secret_secret", so the file whose mode we checked
    would not be the file it reads; and both leave copies of the secret
    text in freed heap memory. Here the file is opened once, its mode is
    checked on that descriptor, and its bytes live in sodium_malloc memory
    that is wiped and freed.
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include "keyfile.h"
#include "../mesh/base/internal.h"

#define KEYFILE_MAX 65536  //  a zcert file is a few hundred bytes

//  A key file's bytes in guarded memory (NUL-terminated).
typedef struct {
    char *text;  //  sodium_malloc, NULL if not read
    size_t size;
    mode_t mode;  //  st_mode of the file read
    uid_t uid;    //  its owner
    gid_t gid;    //  its group
} keytext_t;

static void
s_keytext_free (keytext_t *keytext)
{
    if (keytext->text) {
        sodium_memzero (keytext->text, keytext->size + 1);
        sodium_free (keytext->text);
        keytext->text = NULL;
    }
}

//  Opens, checks and reads a key file through one descriptor.
static int
s_keytext_read (const char *path, keytext_t *keytext, char *err,
                size_t err_size)
{
    memset (keytext, 0, sizeof *keytext);
    if (sodium_init () < 0) {  //  sodium_malloc needs it; idempotent
        pigato__errorf (err, err_size, "libsodium cannot initialize");
        return PIGATO_E_SYSTEM;
    }
    //  O_NONBLOCK: opening a FIFO planted as a key file would otherwise
    //  wait for a writer forever (no effect on a regular file's reads)
    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        pigato__errorf (err, err_size, "cannot read key file '%s': %s", path,
                        strerror (errno));
        return PIGATO_E_KEY;
    }
    int rc = PIGATO_OK;
    struct stat info;
    if (fstat (fd, &info) != 0 || !S_ISREG (info.st_mode)) {
        pigato__errorf (err, err_size, "key file '%s' is not a regular file",
                        path);
        rc = PIGATO_E_KEY;
    }
    else if (info.st_size > KEYFILE_MAX) {
        pigato__errorf (err, err_size,
                        "key file '%s' is too large to be a "
                        "key file",
                        path);
        rc = PIGATO_E_KEY;
    }
    if (rc == PIGATO_OK) {
        keytext->mode = info.st_mode;
        keytext->uid = info.st_uid;
        keytext->gid = info.st_gid;
        keytext->text = (char *) sodium_malloc ((size_t) info.st_size + 1);
        if (!keytext->text)
            rc = PIGATO_E_NOMEM;
    }
    while (rc == PIGATO_OK && keytext->size < (size_t) info.st_size) {
        ssize_t got = read (fd, keytext->text + keytext->size,
                            (size_t) info.st_size - keytext->size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;  //  shorter than stat said: use it
        keytext->size += (size_t) got;
    }
    if (keytext->text)
        keytext->text [keytext->size] = 0;
    close (fd);
    if (rc != PIGATO_OK)
        s_keytext_free (keytext);
    return rc;
}

//  Finds `NAME = "Z85"` on a line of its own (ZPL, any indentation) and
//  decodes the 32-byte key. 0 on success.
static int
s_keytext_key (const keytext_t *keytext, const char *name, byte *key)
{
    size_t name_size = strlen (name);
    const char *line = keytext->text;
    while (line && *line) {
        const char *cursor = line;
        while (*cursor == ' ' || *cursor == '\t')
            cursor++;
        if (strncmp (cursor, name, name_size) == 0) {
            cursor += name_size;
            while (*cursor == ' ' || *cursor == '\t')
                cursor++;
            if (*cursor == '=') {
                cursor++;
                while (*cursor == ' ' || *cursor == '\t')
                    cursor++;
                bool quoted = *cursor == '"';
                if (quoted)
                    cursor++;
                char z85 [PIGATO_Z85_KEY_SIZE + 1];
                if (strlen (cursor) >= PIGATO_Z85_KEY_SIZE) {
                    memcpy (z85, cursor, PIGATO_Z85_KEY_SIZE);
                    z85 [PIGATO_Z85_KEY_SIZE] = 0;
                    char after = cursor [PIGATO_Z85_KEY_SIZE];
                    bool ends = quoted ? after == '"'
                                       : after == 0 || after == '\n'
                                             || after == ' ' || after == '\r';
                    int rc = ends && zmq_z85_decode (key, z85) ? 0 : -1;
                    sodium_memzero (z85, sizeof z85);
                    return rc;
                }
                return -1;
            }
        }
        line = strchr (line, '\n');
        if (line)
            line++;
    }
    return -1;
}

//  Copies the value of `NAME = "VALUE"` (ZPL, a line of its own) into out,
//  escaped for printing; "" when there is none.
static void
s_keytext_value (const keytext_t *keytext, const char *name, char *out,
                 size_t out_size)
{
    size_t name_size = strlen (name);
    out [0] = 0;
    for (const char *line = keytext->text; line && *line;) {
        const char *cursor = line + strspn (line, " \t");
        if (strncmp (cursor, name, name_size) == 0) {
            cursor += name_size;
            cursor += strspn (cursor, " \t");
            if (*cursor == '=') {
                cursor++;
                cursor += strspn (cursor, " \t");
                if (*cursor == '"')
                    cursor++;
                size_t length = strcspn (cursor, "\"\r\n");
                pigato__printable (cursor, length, out, out_size);
                return;
            }
        }
        line = strchr (line, '\n');
        if (line)
            line++;
    }
}

int
pigato__keyfile_inspect (const char *path, pigato__keyfile_info_t *info,
                         char *err, size_t err_size)
{
    keytext_t keytext;
    byte key [32];
    memset (info, 0, sizeof *info);
    int rc = s_keytext_read (path, &keytext, err, err_size);
    if (rc != PIGATO_OK)
        return rc;
    info->mode = keytext.mode;
    info->pem = memmem (keytext.text, keytext.size, "-----BEGIN ", 11) != NULL;
    if (!info->pem) {
        if (s_keytext_key (&keytext, "public-key", key) == 0)
            zmq_z85_encode (info->public_z85, key, 32);
        //  Only whether the secret is there; its bytes stay in keytext
        info->has_secret = s_keytext_key (&keytext, "secret-key", key) == 0;
        sodium_memzero (key, sizeof key);
        s_keytext_value (&keytext, "name", info->name, sizeof info->name);
    }
    s_keytext_free (&keytext);
    return PIGATO_OK;
}

//  True if this process is in group gid (its own or a supplementary one).
static bool
s_in_group (gid_t gid)
{
    if (gid == getegid ())
        return true;
    gid_t groups [256];
    int count = getgroups (256, groups);
    for (int index = 0; index < count; index++)
        if (groups [index] == gid)
            return true;
    return false;
}

//  Refuses a secret file that others may read or write, or that its group
//  may. One layout is taken for services (docs/security.md): owned by
//  root, readable by its group and by nobody else (0640 or 0440), the
//  group being one this process is in (the service's: systemd's Group=).
//  Root keeps the file, and the service reads it without owning it (it
//  cannot change or replace it).
static int
s_check_mode (const char *path, const keytext_t *keytext, char *err,
              size_t err_size)
{
    mode_t mode = keytext->mode;
    if ((mode & 077) == 0)
        return PIGATO_OK;
    if ((mode & 077) == 040 && keytext->uid == 0 && s_in_group (keytext->gid))
        return PIGATO_OK;
    pigato__errorf (err, err_size,
                    "secret key file '%s' is readable by group or others "
                    "(mode %04o); fix with: chmod 600 %s or, for a service, "
                    "root:GROUP 0640",
                    path, (unsigned) (mode & 07777), path);
    return PIGATO_E_KEYPERM;
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
    keytext_t keytext = { 0 };
    byte public_key [32];
    byte secret_key [32];
    byte derived [32];

    if (!path || !*path || !cert_p) {
        pigato__errorf (err, err_size, "no key file given");
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    *cert_p = NULL;
    rc = s_keytext_read (path, &keytext, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    if (s_keytext_key (&keytext, "secret-key", secret_key) != 0) {
        //  A public file: its secret half is PATH_secret
        s_keytext_free (&keytext);
        secret_path = zsys_sprintf ("%s_secret", path);
        if (!secret_path) {
            rc = PIGATO_E_NOMEM;
            goto cleanup;
        }
        if (access (secret_path, F_OK) != 0) {
            pigato__errorf (err, err_size, "'%s' holds no secret key", path);
            rc = PIGATO_E_KEY;
            goto cleanup;
        }
        rc = s_keytext_read (secret_path, &keytext, err, err_size);
        if (rc != PIGATO_OK)
            goto cleanup;
        if (s_keytext_key (&keytext, "secret-key", secret_key) != 0) {
            pigato__errorf (err, err_size, "'%s' holds no secret key",
                            secret_path);
            rc = PIGATO_E_KEY;
            goto cleanup;
        }
    }
    const char *read_path = secret_path ? secret_path : path;
    rc = s_check_mode (read_path, &keytext, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    if (s_keytext_key (&keytext, "public-key", public_key) != 0) {
        pigato__errorf (err, err_size, "'%s' holds no valid public key",
                        read_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    //  A pair that does not belong together fails every handshake later,
    //  with no hint why; say it now
    if (crypto_scalarmult_base (derived, secret_key) != 0
        || sodium_memcmp (derived, public_key, 32) != 0) {
        pigato__errorf (err, err_size,
                        "'%s': public key does not match secret key",
                        read_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    *cert_p = zcert_new_from (public_key, secret_key);
    if (!*cert_p)
        rc = PIGATO_E_NOMEM;

cleanup:
    sodium_memzero (secret_key, sizeof secret_key);
    sodium_memzero (derived, sizeof derived);
    s_keytext_free (&keytext);
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
