/*  =========================================================================
    keygen_main.c - pigato-keygen: issues CURVE identities and runs the
    mesh CA.

    pigato-keygen new NAME [-o DIR] [--force]
        NAME.key (public, 0644) and NAME.key_secret (secret, 0600), czmq
        zcert format with `name` metadata.
    pigato-keygen ca init [--mesh MESH] [-o DIR] [--force]
        DIR/ca.key (Ed25519, 0600), DIR/ca.crt, an empty DIR/ca.crl.
    pigato-keygen issue NAME --ca DIR [--valid 90d] [-o DIR] [--force]
        a new key pair as `new` plus NAME.crt signed by the CA.
    pigato-keygen renew NAME|CERT --ca DIR [--valid 90d] [-o DIR]
        a new certificate for the same name and key (the secret key file
        is neither needed nor touched).
    pigato-keygen revoke NAME|CERT --ca DIR [-o DIR] [--crl-days N]
        adds the certificate to DIR/ca.crl.
    pigato-keygen crl --ca DIR [--crl-days N]
        renews DIR/ca.crl: same entries, a higher number, a new nextUpdate.
    pigato-keygen show FILE [--ca DIR]
        what a certificate or key file holds (never a secret), and whether
        a certificate verifies against the CA.
    =========================================================================
*/
#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "pigato.h"
#include "../../certs/ca.h"
#include "../../keys/keyfile.h"
#include "../base/internal.h"

#define EXIT_USAGE 64

static const char *s_usage_new =
    "Usage: pigato-keygen new NAME [-o DIR] [-s DIR] [--force]\n"
    "\n"
    "Creates a CURVE key pair for the identity NAME, in czmq's zcert format:\n"
    "  DIR/NAME.key          public key, mode 0644 - give it to the broker/ACL\n"
    "  DIR/NAME.key_secret   secret key, mode 0600 - keep it with the program\n"
    "and prints the public key (Z85) and its fingerprint.\n"
    "\n"
    "Options:\n"
    "  -o, --output DIR   where to write (default: current directory)\n"
    "  -s, --secret-dir DIR  where to write NAME.key_secret instead (created\n"
    "                     mode 0700; default: the -o DIR)\n"
    "  -f, --force        overwrite existing files\n"
    "  -h, --help         this text\n";

static const char *s_usage_ca =
    "Usage: pigato-keygen ca init [--mesh MESH] [-o DIR] [--force]\n"
    "\n"
    "Creates the mesh certificate authority:\n"
    "  DIR/ca.key   Ed25519 private key, PEM, mode 0600 - keep it offline\n"
    "  DIR/ca.crt   self-signed CA certificate (10 years) - the broker's ACL\n"
    "               trusts it: trust DIR/ca.crt CERTDIR\n"
    "  DIR/ca.crl   revocation list, empty for now: revoked DIR/ca.crl;\n"
    "               valid 7 days: renew it with pigato-keygen crl --ca DIR\n"
    "\n"
    "Options:\n"
    "  -m, --mesh MESH    name of the mesh (default: default)\n"
    "  -o, --output DIR   where to write (default: current directory)\n"
    "  -f, --force        overwrite an existing CA\n"
    "  -h, --help         this text\n";

static const char *s_usage_issue =
    "Usage: pigato-keygen issue NAME --ca DIR [--valid TIME] [-o DIR] [-s DIR]\n"
    "                           [--force]\n"
    "\n"
    "Creates a CURVE key pair for NAME (NAME.key, NAME.key_secret, as 'new')\n"
    "and NAME.crt: an X.509 certificate whose public key is the CURVE key,\n"
    "CN=NAME, subjectAltName URI pigato://MESH/NAME, signed by the CA in DIR.\n"
    "A folder a broker trusts (ACL: trust ca.crt CERTDIR) should hold no\n"
    "secret key: give -s so that NAME.key_secret goes elsewhere, e.g.\n"
    "  pigato-keygen issue web --ca ca -o certs -s secrets\n"
    "\n"
    "Options:\n"
    "  -c, --ca DIR       the CA directory (ca.key, ca.crt)\n"
    "  -v, --valid TIME   validity: a number and a unit, s m h d w or y\n"
    "                     (e.g. 30s, 12h, 90d, 1y; default 90d)\n"
    "  -o, --output DIR   where to write (default: current directory)\n"
    "  -s, --secret-dir DIR  where to write NAME.key_secret instead (created\n"
    "                     mode 0700; default: the -o DIR)\n"
    "  -f, --force        overwrite existing files\n"
    "  -h, --help         this text\n";

static const char *s_usage_renew =
    "Usage: pigato-keygen renew NAME|CERT --ca DIR [--valid TIME] [-o DIR]\n"
    "\n"
    "Re-issues a certificate before (or after) it expires: the same name and\n"
    "CURVE key, a new serial and validity, signed by the CA in DIR. The key\n"
    "does not change, so the secret key file is neither needed nor touched,\n"
    "and peers that check the certificate with the CA (PIGATO_CA) accept the\n"
    "new one: copy it where the old one was and reload the broker (SIGHUP).\n"
    "NAME means NAME.crt in the current directory, or in -o DIR; CERT is a\n"
    "path to a .crt file. The new certificate replaces the old one, or goes\n"
    "to -o DIR/NAME.crt. Refused: a certificate of another CA, a revoked one,\n"
    "and one whose key file beside it (NAME.key or NAME.key_secret) holds\n"
    "another key.\n"
    "\n"
    "Options:\n"
    "  -c, --ca DIR       the CA directory (ca.key, ca.crt, ca.crl)\n"
    "  -v, --valid TIME   validity: a number and a unit, s m h d w or y\n"
    "                     (e.g. 30s, 12h, 90d, 1y; default 90d)\n"
    "  -o, --output DIR   where NAME.crt is, and where the new one goes\n"
    "                     (default: where the certificate is)\n"
    "  -h, --help         this text\n";

static const char *s_usage_revoke =
    "Usage: pigato-keygen revoke NAME|CERT --ca DIR [-o DIR] [--crl-days N]\n"
    "\n"
    "Adds a certificate issued by the CA in DIR to DIR/ca.crl (re-signed,\n"
    "with a higher CRL number). NAME means NAME.crt in the current directory,\n"
    "or in -o DIR; CERT is a path to a .crt file. A broker reading the CRL\n"
    "refuses the identity after its next reload (SIGHUP).\n"
    "\n"
    "Options:\n"
    "  -c, --ca DIR       the CA directory (ca.key, ca.crt, ca.crl)\n"
    "  -o, --output DIR   where NAME.crt is (default: current directory)\n"
    "  -d, --crl-days N   the new CRL is valid N days (default 7)\n"
    "  -h, --help         this text\n";

static const char *s_usage_crl =
    "Usage: pigato-keygen crl --ca DIR [--crl-days N]\n"
    "\n"
    "Renews DIR/ca.crl: the same revoked certificates, signed again with a\n"
    "higher CRL number and a nextUpdate N days ahead. Brokers refuse a CRL\n"
    "past its nextUpdate, so renew it before then (from cron, say), and\n"
    "reload the brokers (SIGHUP). An expired CRL can be renewed.\n"
    "\n"
    "Options:\n"
    "  -c, --ca DIR       the CA directory (ca.key, ca.crt, ca.crl)\n"
    "  -d, --crl-days N   the new CRL is valid N days (default 7, at most "
    "3650)\n"
    "  -h, --help         this text\n";

static const char *s_usage_show =
    "Usage: pigato-keygen show FILE [--ca DIR]\n"
    "\n"
    "Shows what a certificate (.crt) or zcert key file (.key, .key_secret)\n"
    "holds: identity name, mesh, Z85 public key, fingerprint, and for a\n"
    "certificate its validity, issuer and serial. Never shows a secret key.\n"
    "With --ca, says whether the certificate verifies against the CA in DIR\n"
    "(signature, validity, DIR/ca.crl) and exits 1 if it does not.\n"
    "\n"
    "Options:\n"
    "  -c, --ca DIR       the CA directory (ca.crt, ca.crl)\n"
    "  -h, --help         this text\n";

static const char *s_usage =
    "Usage: pigato-keygen COMMAND ...\n"
    "\n"
    "Commands:\n"
    "  new NAME [-o DIR] [--force]                 a CURVE key pair\n"
    "  ca init [--mesh MESH] [-o DIR] [--force]    the mesh CA\n"
    "  issue NAME --ca DIR [--valid 90d] [-o DIR] [--force]\n"
    "                                              a key pair and its certificate\n"
    "  renew NAME|CERT --ca DIR [--valid 90d] [-o DIR]\n"
    "                                              the same name and key, a new\n"
    "                                              certificate\n"
    "  revoke NAME|CERT --ca DIR [-o DIR]          revoke a certificate\n"
    "  crl --ca DIR [--crl-days N]                 renew the CRL\n"
    "  show FILE [--ca DIR]                        inspect a .crt or key file\n"
    "\n"
    "'pigato-keygen COMMAND --help' describes each command.\n"
    "\n"
    "Options:\n"
    "  -h, --help         this text\n"
    "  -V, --version      print the version\n";

//  Command line, once parsed
typedef struct {
    const char *dir;         //  -o, output directory (NULL = unset)
    const char *secret_dir;  //  -s, the secret key's directory (NULL = dir)
    const char *mesh;        //  --mesh
    const char *ca;          //  --ca
    const char *valid;       //  --valid
    const char *crl_days;    //  --crl-days
    bool force;              //  --force
} s_options_t;

//  --------------------------------------------------------------------------
//  The CRL validity from --crl-days (1 to 3650), in seconds; 0 = default.
//  -1 (and a message) for anything else.

static int64_t
s_crl_seconds (const s_options_t *options)
{
    if (!options->crl_days)
        return 0;
    char *end = NULL;
    errno = 0;
    long days = strtol (options->crl_days, &end, 10);
    if (errno || end == options->crl_days || *end || days < 1 || days > 3650) {
        fprintf (stderr,
                 "pigato-keygen: --crl-days '%s' is not a number of days "
                 "from 1 to 3650\n",
                 options->crl_days);
        return -1;
    }
    return (int64_t) days * 86400;
}

//  --------------------------------------------------------------------------
//  Parses a duration: digits and one unit (s m h d w y). 0 on success.

static int
s_duration_parse (const char *text, int64_t *seconds)
{
    static const char units [] = "smhdwy";
    static const int64_t unit_seconds [] = { 1,     60,        3600,
                                             86400, 7 * 86400, 365 * 86400 };
    const char *cursor = text;
    int64_t count = 0;
    while (*cursor >= '0' && *cursor <= '9') {
        count = count * 10 + (*cursor - '0');
        if (count > 100000000)
            return -1;
        cursor++;
    }
    const char *unit = *cursor ? strchr (units, *cursor) : NULL;
    if (cursor == text || !unit || cursor [1] || count == 0)
        return -1;
    *seconds = count * unit_seconds [unit - units];
    //  A century is plenty; longer would not fit an X.509 time anyway
    return *seconds <= (int64_t) 100 * 365 * 86400 ? 0 : -1;
}

//  --------------------------------------------------------------------------
//  Writes the secret zcert file (czmq's format) from guarded memory,
//  through pigato__file_write: created 0600 with O_EXCL, never readable by
//  others and never someone else's file, then moved into place. Returns 0,
//  or -1 with errno set.

static int
s_save_secret (zcert_t *cert, const char *path, bool force)
{
    const char *name = zcert_meta (cert, "name");
    size_t size = 512 + (name ? strlen (name) : 0);
    char *text = (char *) sodium_malloc (size);
    if (!text) {
        errno = ENOMEM;
        return -1;
    }
    time_t now = time (NULL);
    struct tm tm;
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S",
              localtime_r (&now, &tm));
    int length = snprintf (
        text, size,
        "#   ****  Generated on %s by pigato-keygen  ****\n"
        "#   ZeroMQ CURVE **Secret** Certificate\n"
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its "
        "permissions.\n\n"
        "metadata\n"
        "    name = \"%s\"\n"
        "curve\n"
        "    public-key = \"%s\"\n"
        "    secret-key = \"%s\"\n",
        stamp, name ? name : "", zcert_public_txt (cert),
        zcert_secret_txt (cert));
    char err [256];
    int rc = length > 0 && (size_t) length < size
               ? pigato__file_write (path, text, (size_t) length, 0600, force,
                                     err, sizeof err)
               : PIGATO_E_INVALID;
    sodium_memzero (text, size);
    sodium_free (text);
    if (rc == PIGATO_E_INVALID)
        errno = EEXIST;
    else if (rc)
        errno = EIO;
    return rc ? -1 : 0;
}

//  --------------------------------------------------------------------------
//  Writes a key pair as DIR/NAME.key_secret and DIR/NAME.key. Prints why
//  and returns 1 on error.

static int
s_pair_save (zcert_t *cert, const char *public_path, const char *secret_path,
             bool force)
{
    if (s_save_secret (cert, secret_path, force) != 0) {
        fprintf (stderr, "pigato-keygen: cannot write '%s': %s\n", secret_path,
                 strerror (errno));
        return 1;
    }
    mode_t saved = umask (022);
    int rc = zcert_save_public (cert, public_path);
    umask (saved);
    if (rc != 0) {
        fprintf (stderr, "pigato-keygen: cannot write '%s': %s\n", public_path,
                 strerror (errno));
        unlink (secret_path);
        return 1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Checks a name and creates dir; prints why not and returns an exit code.

static int
s_prepare (const char *name, const char *dir)
{
    if (!pigato__name_valid (name)) {
        fprintf (stderr,
                 "pigato-keygen: invalid name '%s' (use letters, "
                 "digits, '-', '_' and '.', at most 64, not starting with "
                 "'.' or '-')\n",
                 name);
        return EXIT_USAGE;
    }
    if (mkdir (dir, 0755) != 0 && errno != EEXIST) {
        fprintf (stderr, "pigato-keygen: cannot create directory '%s': %s\n",
                 dir, strerror (errno));
        return 1;
    }
    return 0;
}

//  The folder for NAME.key_secret: --secret-dir, created mode 0700 (only
//  its owner may list it), or dir. NULL after printing why not.
static const char *
s_secret_dir (const s_options_t *options, const char *dir)
{
    if (!options->secret_dir)
        return dir;
    if (mkdir (options->secret_dir, 0700) != 0 && errno != EEXIST) {
        fprintf (stderr, "pigato-keygen: cannot create directory '%s': %s\n",
                 options->secret_dir, strerror (errno));
        return NULL;
    }
    return options->secret_dir;
}

//  Prints the error when a path exists and we may not overwrite it.
static bool
s_exists (const char *path, bool force)
{
    if (force || access (path, F_OK) != 0)
        return false;
    fprintf (stderr,
             "pigato-keygen: '%s' already exists; not overwriting "
             "it without --force\n",
             path);
    return true;
}

//  --------------------------------------------------------------------------
//  pigato-keygen new NAME: a key pair.

static int
s_new (const char *name, const s_options_t *options)
{
    const char *dir = options->dir ? options->dir : ".";
    int rc = s_prepare (name, dir);
    if (rc != 0)
        return rc;
    const char *secret_dir = s_secret_dir (options, dir);
    if (!secret_dir)
        return 1;
    char *public_path = zsys_sprintf ("%s/%s.key", dir, name);
    char *secret_path = zsys_sprintf ("%s/%s.key_secret", secret_dir, name);
    zcert_t *cert = NULL;
    if (s_exists (secret_path, options->force)
        || s_exists (public_path, options->force)) {
        rc = 1;
        goto cleanup;
    }
    cert = zcert_new ();
    if (!cert) {
        fputs ("pigato-keygen: cannot generate a key pair\n", stderr);
        rc = 1;
        goto cleanup;
    }
    zcert_set_meta (cert, "name", "%s", name);
    rc = s_pair_save (cert, public_path, secret_path, options->force);
    if (rc != 0)
        goto cleanup;
    char fingerprint [PIGATO_FINGERPRINT_SIZE];
    pigato_key_fingerprint (zcert_public_txt (cert), fingerprint);
    printf ("identity:    %s\npublic key:  %s\nfingerprint: %s\n"
            "public file: %s\nsecret file: %s (mode 0600)\n",
            name, zcert_public_txt (cert), fingerprint, public_path,
            secret_path);
cleanup:
    pigato__keyfile_cert_destroy (&cert);
    zstr_free (&public_path);
    zstr_free (&secret_path);
    return rc;
}

//  --------------------------------------------------------------------------
//  pigato-keygen ca init: the mesh CA.

static int
s_ca_init (const s_options_t *options)
{
    const char *dir = options->dir ? options->dir : ".";
    const char *mesh = options->mesh ? options->mesh : "default";
    char err [512];
    int rc = pigato__ca_init (dir, mesh, options->force, err, sizeof err);
    if (rc != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        return rc == PIGATO_E_INVALID && !pigato__name_valid (mesh) ? EXIT_USAGE
                                                                    : 1;
    }
    printf ("mesh:        %s\nCA key:      %s/ca.key (mode 0600; keep it "
            "offline)\nCA cert:     %s/ca.crt\nCRL:         %s/ca.crl\n",
            mesh, dir, dir, dir);
    return 0;
}

//  --------------------------------------------------------------------------
//  pigato-keygen issue NAME: a key pair and its certificate.

//  The certificate validity --valid gives (90 days without it) into
//  *valid, in seconds; -1, with a message, if it is not a duration.
static int
s_valid_option (const s_options_t *options, int64_t *valid)
{
    *valid = 90 * 86400;
    if (options->valid && s_duration_parse (options->valid, valid) != 0) {
        fprintf (stderr,
                 "pigato-keygen: invalid --valid '%s' (a number and "
                 "a unit, s m h d w or y, e.g. 30s, 12h, 90d; at most "
                 "100y)\n",
                 options->valid);
        return -1;
    }
    return 0;
}

static int
s_issue (const char *name, const s_options_t *options)
{
    const char *dir = options->dir ? options->dir : ".";
    int64_t valid;
    if (!options->ca) {
        fputs ("pigato-keygen: issue needs --ca DIR (the CA directory; "
               "create one with: pigato-keygen ca init -o DIR)\n",
               stderr);
        return EXIT_USAGE;
    }
    if (s_valid_option (options, &valid))
        return EXIT_USAGE;
    int rc = s_prepare (name, dir);
    if (rc != 0)
        return rc;
    const char *secret_dir = s_secret_dir (options, dir);
    if (!secret_dir)
        return 1;
    char *public_path = zsys_sprintf ("%s/%s.key", dir, name);
    char *secret_path = zsys_sprintf ("%s/%s.key_secret", secret_dir, name);
    char *crt_path = zsys_sprintf ("%s/%s.crt", dir, name);
    zcert_t *cert = NULL;
    char err [512];
    if (s_exists (secret_path, options->force)
        || s_exists (public_path, options->force)
        || s_exists (crt_path, options->force)) {
        rc = 1;
        goto cleanup;
    }
    cert = zcert_new ();
    if (!cert) {
        fputs ("pigato-keygen: cannot generate a key pair\n", stderr);
        rc = 1;
        goto cleanup;
    }
    zcert_set_meta (cert, "name", "%s", name);
    //  The certificate first: no CA (or a bad one) leaves no files behind
    if (pigato__ca_issue (options->ca, name, zcert_public_key (cert), valid,
                          crt_path, options->force, err, sizeof err)
        != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        rc = 1;
        goto cleanup;
    }
    rc = s_pair_save (cert, public_path, secret_path, options->force);
    if (rc != 0) {
        unlink (crt_path);
        goto cleanup;
    }
    pigato__cert_info_t info;
    if (pigato__cert_read (crt_path, &info, err, sizeof err) != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        rc = 1;
        goto cleanup;
    }
    char fingerprint [PIGATO_FINGERPRINT_SIZE];
    char from [64], until [64];
    pigato_key_fingerprint (zcert_public_txt (cert), fingerprint);
    pigato__time_text (info.not_before, from, sizeof from);
    pigato__time_text (info.not_after, until, sizeof until);
    printf ("identity:    %s\nmesh:        %s\npublic key:  %s\n"
            "fingerprint: %s\nvalid from:  %s\nvalid until: %s\n"
            "serial:      %s\ncertificate: %s\npublic file: %s\n"
            "secret file: %s (mode 0600)\n",
            name, info.mesh, zcert_public_txt (cert), fingerprint, from, until,
            info.serial, crt_path, public_path, secret_path);
cleanup:
    pigato__keyfile_cert_destroy (&cert);
    zstr_free (&public_path);
    zstr_free (&secret_path);
    zstr_free (&crt_path);
    return rc;
}

//  --------------------------------------------------------------------------
//  The certificate a NAME|CERT argument means: a path names a file; a plain
//  name means NAME.crt in -o DIR or here. Returns a new string, or NULL
//  after printing why (*rc_p: the exit code).

static char *
s_target_path (const char *target, const s_options_t *options, int *rc_p)
{
    size_t length = strlen (target);
    bool is_path = strchr (target, '/')
                || (length > 4 && streq (target + length - 4, ".crt"));
    if (!is_path && !pigato__name_valid (target)) {
        fprintf (stderr,
                 "pigato-keygen: '%s' is neither a certificate file "
                 "nor an identity name\n",
                 target);
        *rc_p = EXIT_USAGE;
        return NULL;
    }
    char *path = is_path
                   ? strdup (target)
                   : zsys_sprintf ("%s/%s.crt",
                                   options->dir ? options->dir : ".", target);
    if (path && access (path, F_OK) != 0) {
        fprintf (stderr, "pigato-keygen: no certificate '%s': %s%s\n", path,
                 strerror (errno),
                 is_path ? "" : " (give the certificate's path, or -o DIR)");
        free (path);
        path = NULL;
    }
    *rc_p = 1;
    return path;
}

//  --------------------------------------------------------------------------
//  The public key of the identity's key file beside a certificate
//  (X.crt: X.key, else X.key_secret, read without its secret) into key,
//  its path into *key_path (the caller frees it). Returns 0 and *key_path
//  NULL when there is none, 0 and a path, or 1 after printing why the
//  file cannot be used.

static int
s_key_beside (const char *crt_path, byte *key, char **key_path)
{
    bool found = false;
    *key_path = NULL;
    size_t length = strlen (crt_path);
    if (length <= 4 || !streq (crt_path + length - 4, ".crt"))
        return 0;
    int rc = 0;
    const char *suffixes [] = { ".key", ".key_secret" };
    for (size_t index = 0; index < 2 && !found && rc == 0; index++) {
        char *path = zsys_sprintf ("%.*s%s", (int) (length - 4), crt_path,
                                   suffixes [index]);
        if (path && access (path, F_OK) == 0) {
            pigato__keyfile_info_t info;
            char err [512];
            if (pigato__keyfile_inspect (path, &info, err, sizeof err)
                != PIGATO_OK) {
                fprintf (stderr, "pigato-keygen: %s\n", err);
                rc = 1;
            }
            else if (!info.public_z85 [0]
                     || !zmq_z85_decode (key, info.public_z85)) {
                fprintf (stderr,
                         "pigato-keygen: '%s' holds no public key; "
                         "move it away or fix it\n",
                         path);
                rc = 1;
            }
            else {
                found = true;
                *key_path = path;
                path = NULL;
            }
        }
        zstr_free (&path);
    }
    return rc;
}

//  --------------------------------------------------------------------------
//  pigato-keygen renew NAME|CERT: the same name and key, a new certificate.

static int
s_renew (const char *target, const s_options_t *options)
{
    int64_t valid;
    if (!options->ca) {
        fputs ("pigato-keygen: renew needs --ca DIR (the CA directory)\n",
               stderr);
        return EXIT_USAGE;
    }
    if (s_valid_option (options, &valid))
        return EXIT_USAGE;
    int rc = 0;
    char *out_path = NULL;
    char *path = s_target_path (target, options, &rc);
    if (!path)
        return rc;
    rc = 0;
    char err [512];
    pigato__cert_info_t info;
    byte key [32];
    char *key_path = NULL;
    if (s_key_beside (path, key, &key_path) != 0) {
        rc = 1;
        goto cleanup;
    }
    bool readable = pigato__cert_read (path, &info, NULL, 0) == PIGATO_OK;
    if (readable && key_path && memcmp (key, info.public_key, 32) != 0) {
        fprintf (stderr,
                 "pigato-keygen: '%s' (%s) holds another key than its key "
                 "file '%s': renewing it would certify a key the program "
                 "does not use; not renewed\n",
                 path, info.name, key_path);
        rc = 1;
        goto cleanup;
    }
    //  A path given with -o DIR: the new certificate is DIR/NAME.crt
    if (options->dir && readable) {
        rc = s_prepare (info.name, options->dir);
        if (rc != 0)
            goto cleanup;
        out_path = zsys_sprintf ("%s/%s.crt", options->dir, info.name);
    }
    if (pigato__ca_renew (options->ca, path, key_path ? key : NULL, valid,
                          out_path, &info, err, sizeof err)
        != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        rc = 1;
        goto cleanup;
    }
    char z85 [PIGATO_Z85_KEY_SIZE + 1];
    char fingerprint [PIGATO_FINGERPRINT_SIZE];
    char from [64], until [64];
    zmq_z85_encode (z85, info.public_key, 32);
    pigato_key_fingerprint (z85, fingerprint);
    pigato__time_text (info.not_before, from, sizeof from);
    pigato__time_text (info.not_after, until, sizeof until);
    printf ("renewed:     %s\nmesh:        %s\npublic key:  %s (unchanged)\n"
            "fingerprint: %s\nvalid from:  %s\nvalid until: %s\n"
            "serial:      %s\ncertificate: %s\n",
            info.name, info.mesh, z85, fingerprint, from, until, info.serial,
            out_path ? out_path : path);
cleanup:
    zstr_free (&key_path);
    zstr_free (&out_path);
    free (path);
    return rc;
}

//  --------------------------------------------------------------------------
//  pigato-keygen revoke NAME|CERT: adds a certificate to the CRL.

static int
s_revoke (const char *target, const s_options_t *options)
{
    if (!options->ca) {
        fputs ("pigato-keygen: revoke needs --ca DIR (the CA directory)\n",
               stderr);
        return EXIT_USAGE;
    }
    int rc = 0;
    char *path = s_target_path (target, options, &rc);
    if (!path)
        return rc;
    rc = 0;
    char err [512];
    int64_t valid = s_crl_seconds (options);
    if (valid < 0) {
        rc = EXIT_USAGE;
        goto cleanup;
    }
    pigato__cert_info_t info;
    bool readable = pigato__cert_read (path, &info, NULL, 0) == PIGATO_OK;
    int status = pigato__ca_crl_sign (options->ca, path, valid, NULL, err,
                                      sizeof err);
    if (status == PIGATO__CA_UNCHANGED)
        printf ("%s\n", err);
    else if (status != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        rc = 1;
    }
    else
        printf ("revoked:     %s\nserial:      %s\nCRL:         %s/ca.crl "
                "(reload the broker to apply it)\n",
                readable ? info.name : path, readable ? info.serial : "?",
                options->ca);
cleanup:
    free (path);
    return rc;
}

//  --------------------------------------------------------------------------
//  pigato-keygen crl: re-signs the CRL with a higher number and a new
//  nextUpdate.

static int
s_crl (const s_options_t *options)
{
    if (!options->ca) {
        fputs ("pigato-keygen: crl needs --ca DIR (the CA directory)\n",
               stderr);
        return EXIT_USAGE;
    }
    int64_t valid = s_crl_seconds (options);
    if (valid < 0)
        return EXIT_USAGE;
    char err [512];
    int64_t number = 0;
    if (pigato__ca_crl_sign (options->ca, NULL, valid, &number, err, sizeof err)
        != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        return 1;
    }
    char until [64];
    pigato__time_text (
        (int64_t) time (NULL)
            + (valid ? valid : (int64_t) PIGATO__CRL_DAYS_DEFAULT * 86400),
        until, sizeof until);
    printf ("CRL:         %s/ca.crl (reload the brokers to apply it)\n"
            "number:      %" PRId64 "\nnext update: %s\n",
            options->ca, number, until);
    return 0;
}

//  --------------------------------------------------------------------------
//  Shows a certificate, and whether it verifies against --ca.

static int
s_show_cert (const char *path, const s_options_t *options)
{
    char err [512];
    pigato__cert_info_t info;
    if (pigato__cert_read (path, &info, err, sizeof err) != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        return 1;
    }
    char z85 [PIGATO_Z85_KEY_SIZE + 1];
    char fingerprint [PIGATO_FINGERPRINT_SIZE];
    char from [64], until [64];
    zmq_z85_encode (z85, info.public_key, 32);
    pigato_key_fingerprint (z85, fingerprint);
    pigato__time_text (info.not_before, from, sizeof from);
    pigato__time_text (info.not_after, until, sizeof until);
    int64_t now = (int64_t) time (NULL);
    printf ("file:        %s\ntype:        X.509 identity certificate\n"
            "identity:    %s\nmesh:        %s\npublic key:  %s\n"
            "fingerprint: %s\nvalid from:  %s%s\nvalid until: %s%s\n"
            "issuer:      %s\nserial:      %s\n",
            path, info.name, info.mesh, z85, fingerprint, from,
            now < info.not_before ? " (not yet valid)" : "", until,
            now >= info.not_after ? " (expired)" : "", info.issuer,
            info.serial);
    if (!options->ca)
        return 0;

    int rc = 0;
    char *ca_crt = zsys_sprintf ("%s/ca.crt", options->ca);
    char *ca_crl = zsys_sprintf ("%s/ca.crl", options->ca);
    pigato__trust_t *trust = pigato__trust_load (
        ca_crt, access (ca_crl, F_OK) == 0 ? ca_crl : NULL, err, sizeof err);
    if (!trust) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        rc = 1;
    }
    else if (pigato__trust_verify (trust, path, NULL, err, sizeof err)
             == PIGATO_OK)
        printf ("verifies:    yes (CA %s)\n", ca_crt);
    else {
        printf ("verifies:    no (%s)\n", err);
        rc = 1;
    }
    pigato__trust_destroy (&trust);
    zstr_free (&ca_crt);
    zstr_free (&ca_crl);
    return rc;
}

//  --------------------------------------------------------------------------
//  Shows a zcert key file: name, public key, fingerprint; checks the mode
//  of a secret file and never prints the secret. info comes from the key
//  file reader (guarded memory, wiped; never zconfig_load, which leaves a
//  secret's text in freed heap).

static int
s_show_key (const char *path, const pigato__keyfile_info_t *info)
{
    int rc = 0;
    zcert_t *pair = NULL;
    if (!info->public_z85 [0]) {
        fprintf (stderr,
                 "pigato-keygen: '%s' is neither a PEM certificate "
                 "nor a zcert key file\n",
                 path);
        rc = 1;
        goto cleanup;
    }
    if (info->has_secret) {
        //  Same checks as any program loading it: mode 0600, matching pair
        char err [512];
        if (pigato__keyfile_load_secret (path, &pair, err, sizeof err)
            != PIGATO_OK) {
            fprintf (stderr, "pigato-keygen: %s\n", err);
            rc = 1;
            goto cleanup;
        }
    }
    char fingerprint [PIGATO_FINGERPRINT_SIZE];
    pigato_key_fingerprint (info->public_z85, fingerprint);
    printf ("file:        %s\ntype:        zcert %s\nidentity:    %s\n"
            "public key:  %s\nfingerprint: %s\n",
            path,
            info->has_secret ? "secret key file (mode 0600; the secret is not "
                               "shown)"
                             : "public key file",
            info->name [0] ? info->name : "(no name)", info->public_z85,
            fingerprint);
cleanup:
    pigato__keyfile_cert_destroy (&pair);
    return rc;
}

//  --------------------------------------------------------------------------
//  pigato-keygen show FILE: a certificate or a key file. Read by the key
//  file reader: regular files only, so a FIFO does not hang it.

static int
s_show (const char *path, const s_options_t *options)
{
    pigato__keyfile_info_t info;
    char err [512];
    if (pigato__keyfile_inspect (path, &info, err, sizeof err) != PIGATO_OK) {
        fprintf (stderr, "pigato-keygen: %s\n", err);
        return 1;
    }
    if (info.pem)
        return s_show_cert (path, options);
    if (options->ca) {
        fprintf (stderr,
                 "pigato-keygen: --ca checks certificates; '%s' is "
                 "not one\n",
                 path);
        return EXIT_USAGE;
    }
    return s_show_key (path, &info);
}

//  --------------------------------------------------------------------------
//  Rejects options that mean nothing to a command, so a typo is not lost.

static bool
s_options_fit (const char *command, const s_options_t *options, bool output,
               bool force, bool mesh, bool ca, bool valid, bool crl_days)
{
    //  --secret-dir goes with the commands that make a key pair
    bool pair = streq (command, "new") || streq (command, "issue");
    const char *stray = (options->secret_dir && !pair)   ? "-s/--secret-dir"
                      : (options->dir && !output)        ? "-o/--output"
                      : (options->force && !force)       ? "--force"
                      : (options->mesh && !mesh)         ? "--mesh"
                      : (options->ca && !ca)             ? "--ca"
                      : (options->valid && !valid)       ? "--valid"
                      : (options->crl_days && !crl_days) ? "--crl-days"
                                                         : NULL;
    if (stray)
        fprintf (stderr,
                 "pigato-keygen: %s does not apply to '%s'\nTry "
                 "'pigato-keygen %s --help'.\n",
                 stray, command, command);
    return stray == NULL;
}

int
main (int argc, char *argv [])
{
    static const struct option long_options [] = {
        { "output", required_argument, NULL, 'o' },
        { "secret-dir", required_argument, NULL, 's' },
        { "force", no_argument, NULL, 'f' },
        { "mesh", required_argument, NULL, 'm' },
        { "ca", required_argument, NULL, 'c' },
        { "valid", required_argument, NULL, 'v' },
        { "crl-days", required_argument, NULL, 'd' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    s_options_t options = { NULL, NULL, NULL, NULL, NULL, NULL, false };
    bool help = false;
    int option;
    while ((option = getopt_long (argc, argv, "o:s:fm:c:v:d:hV", long_options,
                                  NULL))
           != -1) {
        switch (option) {
            case 'o': options.dir = optarg; break;
            case 's': options.secret_dir = optarg; break;
            case 'f': options.force = true; break;
            case 'm': options.mesh = optarg; break;
            case 'c': options.ca = optarg; break;
            case 'v': options.valid = optarg; break;
            case 'd': options.crl_days = optarg; break;
            case 'h': help = true; break;
            case 'V':
                printf ("pigato-keygen %s\n", pigato_version ());
                return 0;
            default:
                fputs ("Try 'pigato-keygen --help'.\n", stderr);
                return EXIT_USAGE;
        }
    }
    int count = argc - optind;
    const char *command = count > 0 ? argv [optind] : NULL;
    const char *argument = count > 1 ? argv [optind + 1] : NULL;
    if (!command) {
        fputs (s_usage, help ? stdout : stderr);
        return help ? 0 : EXIT_USAGE;
    }
    if (streq (command, "new")) {
        if (help)
            return fputs (s_usage_new, stdout), 0;
        if (count != 2
            || !s_options_fit (command, &options, true, true, false, false,
                               false, false))
            return fputs (s_usage_new, stderr), EXIT_USAGE;
        return s_new (argument, &options);
    }
    if (streq (command, "ca")) {
        if (help)
            return fputs (s_usage_ca, stdout), 0;
        if (count != 2 || !streq (argument, "init")
            || !s_options_fit ("ca", &options, true, true, true, false, false,
                               false))
            return fputs (s_usage_ca, stderr), EXIT_USAGE;
        return s_ca_init (&options);
    }
    if (streq (command, "issue")) {
        if (help)
            return fputs (s_usage_issue, stdout), 0;
        if (count != 2
            || !s_options_fit (command, &options, true, true, false, true, true,
                               false))
            return fputs (s_usage_issue, stderr), EXIT_USAGE;
        return s_issue (argument, &options);
    }
    if (streq (command, "renew")) {
        if (help)
            return fputs (s_usage_renew, stdout), 0;
        if (count != 2
            || !s_options_fit (command, &options, true, false, false, true,
                               true, false))
            return fputs (s_usage_renew, stderr), EXIT_USAGE;
        return s_renew (argument, &options);
    }
    if (streq (command, "revoke")) {
        if (help)
            return fputs (s_usage_revoke, stdout), 0;
        if (count != 2
            || !s_options_fit (command, &options, true, false, false, true,
                               false, true))
            return fputs (s_usage_revoke, stderr), EXIT_USAGE;
        return s_revoke (argument, &options);
    }
    if (streq (command, "crl")) {
        if (help)
            return fputs (s_usage_crl, stdout), 0;
        if (count != 1
            || !s_options_fit (command, &options, false, false, false, true,
                               false, true))
            return fputs (s_usage_crl, stderr), EXIT_USAGE;
        return s_crl (&options);
    }
    if (streq (command, "show")) {
        if (help)
            return fputs (s_usage_show, stdout), 0;
        if (count != 2
            || !s_options_fit (command, &options, false, false, false, true,
                               false, false))
            return fputs (s_usage_show, stderr), EXIT_USAGE;
        return s_show (argument, &options);
    }
    if (help)
        return fputs (s_usage, stdout), 0;
    fprintf (stderr,
             "pigato-keygen: unknown command '%s'\nTry "
             "'pigato-keygen --help'.\n",
             command);
    return EXIT_USAGE;
}
