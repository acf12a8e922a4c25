/*  =========================================================================
    ca.c - the mesh CA: Ed25519 CA key and certificate, X.509 identity
    certificates carrying X25519 CURVE keys, a CRL, and path validation.

    OpenSSL 3 EVP API only (no deprecated calls: this file is compiled with
    OPENSSL_NO_DEPRECATED). Ed25519 signs without a separate digest, hence
    the NULL md in X509_sign and X509_CRL_sign. OpenSSL keeps private keys
    in its own memory and wipes them in EVP_PKEY_free; the PEM text of
    ca.key passes through our buffers, which we OPENSSL_cleanse.
    =========================================================================
*/
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "ca.h"
#include "../mesh/base/internal.h"

#define CA_CN_PREFIX    "pigato mesh CA "
#define CA_VALID_DAYS   3650  //  CA certificate: 10 years
#define CRL_TRACKED_MAX 64    //  CAs whose highest CRL number we remember
#define FILE_SIZE_MAX   (256 * 1024)  //  certificates, keys and CRLs are small
#define URI_PREFIX      "pigato://"

struct _pigato__trust_t {
    X509_STORE *store;                 //  the CA, its CRL, the check flags
    X509 *ca;                          //  trusted CA certificate
    X509_CRL *crl;                     //  its CRL, NULL when none was given
    int64_t crl_number;                //  its CRL number (0 if none)
    int64_t crl_next_update;           //  its nextUpdate, epoch seconds
    char mesh [PIGATO__NAME_MAX + 1];  //  mesh of the CA ("" if unnamed)
};

//  The highest CRL number seen for each CA (by the SHA-256 of its
//  certificate) in this process. A policy is rebuilt on every SIGHUP, so
//  the mark lives here, beside the code that reads CRLs, not in a policy:
//  an older CRL put back in place cannot un-revoke a certificate for as
//  long as the process runs. Across restarts the CRL's short nextUpdate
//  bounds how old a CRL can be (docs/security.md).
static struct {
    unsigned char ca_digest [32];
    int64_t number;
} s_crl_seen [CRL_TRACKED_MAX];
static size_t s_crl_seen_count;
static pthread_mutex_t s_crl_seen_lock = PTHREAD_MUTEX_INITIALIZER;

//  --------------------------------------------------------------------------
//  Formats a message and appends OpenSSL's first queued reason, if any;
//  empties OpenSSL's error queue either way.

static void
s_errorf (char *err, size_t err_size, const char *format, ...)
{
    char text [512];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    unsigned long code = ERR_peek_error ();
    const char *reason = code ? ERR_reason_error_string (code) : NULL;
    if (reason)
        pigato__errorf (err, err_size, "%s (%s)", text, reason);
    else
        pigato__errorf (err, err_size, "%s", text);
    ERR_clear_error ();
}

//  Converts an ASN1 time to seconds since the epoch (0 if unreadable).
static int64_t
s_asn1_seconds (const ASN1_TIME *time_asn1)
{
    struct tm tm;
    memset (&tm, 0, sizeof tm);
    if (!time_asn1 || ASN1_TIME_to_tm (time_asn1, &tm) != 1)
        return 0;
    return (int64_t) timegm (&tm);
}

//  --------------------------------------------------------------------------
//  Reads a whole small regular file into a new NUL-terminated buffer. The
//  caller frees it (after OPENSSL_cleanse if it held a secret).

static int
s_file_read (const char *path, char **data_p, size_t *size_p, char *err,
             size_t err_size)
{
    int rc = PIGATO_OK;
    char *data = NULL;
    size_t size = 0;
    //  O_NONBLOCK: a FIFO named x.crt in a trust folder would block open
    //  () until a writer came, hanging the broker at start or on SIGHUP
    //  (and deaf to SIGTERM). The type is checked on the descriptor, so
    //  no rename between a check and the open can swap the file. Symbolic
    //  links are followed: mounted secrets and config maps are links.
    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat info;
    if (fd < 0 || fstat (fd, &info) != 0) {
        pigato__errorf (err, err_size, "cannot read '%s': %s", path,
                        strerror (errno));
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (!S_ISREG (info.st_mode) || info.st_size > FILE_SIZE_MAX) {
        pigato__errorf (err, err_size, "'%s' is %s", path,
                        S_ISREG (info.st_mode) ? "too large to be a "
                                                 "certificate or key"
                                               : "not a regular file");
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    data = malloc ((size_t) info.st_size + 1);
    if (!data) {
        rc = PIGATO_E_NOMEM;
        goto cleanup;
    }
    while (size < (size_t) info.st_size) {
        ssize_t got = read (fd, data + size, (size_t) info.st_size - size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        size += (size_t) got;
    }
    data [size] = 0;
    *data_p = data;
    *size_p = size;
    data = NULL;
cleanup:
    free (data);
    if (fd >= 0)
        close (fd);
    return rc;
}


//  --------------------------------------------------------------------------
//  Writes a PEM object (through write_fn into a memory BIO) to path.

static int
s_pem_write (const char *path, X509 *cert, X509_CRL *crl, EVP_PKEY *key,
             bool replace, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    //  Secure memory BIO: its buffer is cleansed when freed or grown
    BIO *bio = BIO_new (key ? BIO_s_secmem () : BIO_s_mem ());
    int written = bio ? 0 : -1;
    if (bio && cert)
        written = PEM_write_bio_X509 (bio, cert);
    else if (bio && crl)
        written = PEM_write_bio_X509_CRL (bio, crl);
    else if (bio && key)
        written = PEM_write_bio_PrivateKey (bio, key, NULL, NULL, 0, NULL,
                                            NULL);
    char *data = NULL;
    long size = bio ? BIO_get_mem_data (bio, &data) : 0;
    if (written != 1 || size <= 0) {
        s_errorf (err, err_size, "cannot encode '%s'", path);
        rc = PIGATO_E_SYSTEM;
    }
    else
        rc = pigato__file_write (path, data, (size_t) size, key ? 0600 : 0644,
                                 replace, err, err_size);
    BIO_free (bio);
    return rc;
}

//  --------------------------------------------------------------------------
//  Parses a PEM certificate file. Returns NULL with a message on error.

static X509 *
s_cert_load (const char *path, char *err, size_t err_size)
{
    char *data = NULL;
    size_t size = 0;
    X509 *cert = NULL;
    if (s_file_read (path, &data, &size, err, err_size) != PIGATO_OK)
        return NULL;
    BIO *bio = BIO_new_mem_buf (data, (int) size);
    if (bio)
        cert = PEM_read_bio_X509 (bio, NULL, NULL, NULL);
    if (!cert) {
        if (!strstr (data, "-----BEGIN CERTIFICATE-----"))
            pigato__errorf (err, err_size, "'%s' is not a PEM certificate",
                            path);
        else
            s_errorf (err, err_size,
                      "'%s': cannot parse the certificate "
                      "(truncated or damaged PEM?)",
                      path);
    }
    ERR_clear_error ();
    BIO_free (bio);
    free (data);
    return cert;
}

//  Parses a PEM CRL file. Returns NULL with a message on error.
static X509_CRL *
s_crl_load (const char *path, char *err, size_t err_size)
{
    char *data = NULL;
    size_t size = 0;
    X509_CRL *crl = NULL;
    if (s_file_read (path, &data, &size, err, err_size) != PIGATO_OK)
        return NULL;
    BIO *bio = BIO_new_mem_buf (data, (int) size);
    if (bio)
        crl = PEM_read_bio_X509_CRL (bio, NULL, NULL, NULL);
    if (!crl)
        s_errorf (err, err_size,
                  "'%s' is not a PEM certificate revocation "
                  "list",
                  path);
    ERR_clear_error ();
    BIO_free (bio);
    free (data);
    return crl;
}

//  --------------------------------------------------------------------------
//  Loads DIR/ca.key into *key_p, refusing a file group or others can read.

static int
s_ca_key_load (const char *dir, EVP_PKEY **key_p, char *err, size_t err_size)
{
    int rc = PIGATO_E_KEY;
    char *path = zsys_sprintf ("%s/ca.key", dir);
    char *data = NULL;
    size_t size = 0;
    EVP_PKEY *key = NULL;
    struct stat info;
    if (!path) {
        rc = PIGATO_E_NOMEM;
        goto cleanup;
    }
    if (stat (path, &info) != 0) {
        pigato__errorf (err, err_size, "cannot read the CA key '%s': %s", path,
                        strerror (errno));
        goto cleanup;
    }
    if (S_ISREG (info.st_mode) && (info.st_mode & 077)) {
        pigato__errorf (err, err_size,
                        "CA key file '%s' is readable by "
                        "group or others (mode %04o); fix with: chmod 600 %s",
                        path, (unsigned) (info.st_mode & 07777), path);
        rc = PIGATO_E_KEYPERM;
        goto cleanup;
    }
    if (s_file_read (path, &data, &size, err, err_size) != PIGATO_OK)
        goto cleanup;
    BIO *bio = BIO_new_mem_buf (data, (int) size);
    if (bio)
        key = PEM_read_bio_PrivateKey (bio, NULL, NULL, NULL);
    BIO_free (bio);
    if (!key)
        s_errorf (err, err_size, "'%s' is not a PEM private key", path);
    else if (!EVP_PKEY_is_a (key, "ED25519"))
        pigato__errorf (err, err_size,
                        "'%s' is a %s key, not the Ed25519 "
                        "key of a pigato CA",
                        path, EVP_PKEY_get0_type_name (key));
    else {
        *key_p = key;
        key = NULL;
        rc = PIGATO_OK;
    }
cleanup:
    EVP_PKEY_free (key);
    if (data)
        OPENSSL_cleanse (data, size);
    free (data);
    zstr_free (&path);
    return rc;
}

//  --------------------------------------------------------------------------
//  Reads the mesh name out of a CA certificate's CN into mesh (65 bytes;
//  "" when the CN is not ours).

static void
s_ca_mesh (X509 *ca, char *mesh)
{
    char cn [256] = "";
    mesh [0] = 0;
    X509_NAME_get_text_by_NID (X509_get_subject_name (ca), NID_commonName, cn,
                               sizeof cn);
    size_t prefix = strlen (CA_CN_PREFIX);
    if (strncmp (cn, CA_CN_PREFIX, prefix) == 0
        && pigato__name_valid (cn + prefix))
        memcpy (mesh, cn + prefix, strlen (cn + prefix) + 1);  //  <= 64
}

//  --------------------------------------------------------------------------
//  Loads the CA in dir: certificate, private key (when key_p is not NULL)
//  and mesh name; checks that key and certificate belong together.

static int
s_ca_load (const char *dir, X509 **cert_p, EVP_PKEY **key_p, char *mesh,
           char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    char *path = zsys_sprintf ("%s/ca.crt", dir);
    *cert_p = NULL;
    if (key_p)
        *key_p = NULL;
    if (access (path, F_OK) != 0) {
        pigato__errorf (err, err_size,
                        "no CA in '%s': cannot read '%s': %s "
                        "(create one with: pigato-keygen ca init -o %s)",
                        dir, path, strerror (errno), dir);
        *cert_p = NULL;
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    *cert_p = s_cert_load (path, err, err_size);
    if (!*cert_p) {
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    s_ca_mesh (*cert_p, mesh);
    if (X509_check_ca (*cert_p) == 0 || !mesh [0]) {
        pigato__errorf (err, err_size,
                        "'%s' is not a pigato mesh CA "
                        "certificate",
                        path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (key_p) {
        rc = s_ca_key_load (dir, key_p, err, err_size);
        if (rc != PIGATO_OK)
            goto cleanup;
        if (X509_check_private_key (*cert_p, *key_p) != 1) {
            s_errorf (err, err_size, "'%s/ca.key' does not belong to '%s'", dir,
                      path);
            rc = PIGATO_E_KEY;
            goto cleanup;
        }
    }
cleanup:
    if (rc != PIGATO_OK) {
        X509_free (*cert_p);
        *cert_p = NULL;
        if (key_p) {
            EVP_PKEY_free (*key_p);
            *key_p = NULL;
        }
    }
    zstr_free (&path);
    return rc;
}

//  --------------------------------------------------------------------------
//  Adds a v3 extension given in OpenSSL's config syntax.

static int
s_extension_add (X509 *cert, X509V3_CTX *context, int nid, const char *value)
{
    X509_EXTENSION *extension = X509V3_EXT_nconf_nid (NULL, context, nid,
                                                      value);
    int ok = extension && X509_add_ext (cert, extension, -1) == 1;
    X509_EXTENSION_free (extension);
    return ok ? 0 : -1;
}

//  Sets a random positive 128-bit serial number.
static int
s_serial_set (X509 *cert)
{
    unsigned char bytes [16];
    if (RAND_bytes (bytes, sizeof bytes) != 1)
        return -1;
    bytes [0] = (bytes [0] & 0x7F) | 0x40;  //  positive, full 16 bytes
    BIGNUM *number = BN_bin2bn (bytes, sizeof bytes, NULL);
    ASN1_INTEGER *serial = number ? BN_to_ASN1_INTEGER (number, NULL) : NULL;
    int ok = serial && X509_set_serialNumber (cert, serial) == 1;
    ASN1_INTEGER_free (serial);
    BN_free (number);
    return ok ? 0 : -1;
}

//  Creates a v3 certificate: serial, names, validity [now + from, now + to],
//  public key. The issuer is the subject when issuer is NULL.
static X509 *
s_cert_new (const char *cn, X509 *issuer, EVP_PKEY *public_key, int64_t from,
            int64_t to)
{
    X509 *cert = X509_new ();
    time_t now = time (NULL);
    X509_NAME *subject = X509_NAME_new ();
    bool ok = cert && subject && X509_set_version (cert, X509_VERSION_3) == 1
           && s_serial_set (cert) == 0
           && X509_NAME_add_entry_by_NID (subject, NID_commonName,
                                          MBSTRING_UTF8,
                                          (const unsigned char *) cn, -1, -1, 0)
           && X509_set_subject_name (cert, subject) == 1
           && X509_set_issuer_name (
                  cert, issuer ? X509_get_subject_name (issuer) : subject)
                  == 1
           && ASN1_TIME_adj (X509_getm_notBefore (cert), now,
                             (int) (from / 86400), (long) (from % 86400))
           && ASN1_TIME_adj (X509_getm_notAfter (cert), now, (int) (to / 86400),
                             (long) (to % 86400))
           && X509_set_pubkey (cert, public_key) == 1;
    X509_NAME_free (subject);
    if (!ok) {
        X509_free (cert);
        cert = NULL;
    }
    return cert;
}

//  --------------------------------------------------------------------------
//  Builds and signs a CRL for the CA: the entries of old (if any) plus
//  serial (if any), lastUpdate now, the given CRL number.

static X509_CRL *
s_crl_build (X509 *ca, EVP_PKEY *ca_key, X509_CRL *old,
             const ASN1_INTEGER *serial, int64_t number, int64_t valid_seconds)
{
    X509_CRL *crl = X509_CRL_new ();
    time_t issued = time (NULL);
    //  lastUpdate a minute back when the CRL is already past (tests)
    ASN1_TIME *now = ASN1_TIME_set (
        NULL, valid_seconds > 0 ? issued : issued + valid_seconds - 60);
    ASN1_TIME *next = ASN1_TIME_adj (NULL, issued,
                                     (int) (valid_seconds / 86400),
                                     (long) (valid_seconds % 86400));
    ASN1_INTEGER *crl_number = ASN1_INTEGER_new ();
    X509_REVOKED *entry = NULL;
    X509_EXTENSION *extension = NULL;
    bool ok = crl && now && next && crl_number
           && X509_CRL_set_version (crl, X509_CRL_VERSION_2) == 1
           && X509_CRL_set_issuer_name (crl, X509_get_subject_name (ca)) == 1
           && X509_CRL_set1_lastUpdate (crl, now) == 1
           && X509_CRL_set1_nextUpdate (crl, next) == 1
           && ASN1_INTEGER_set_int64 (crl_number, number) == 1
           && X509_CRL_add1_ext_i2d (crl, NID_crl_number, crl_number, 0, 0)
                  == 1;
    STACK_OF (X509_REVOKED) *entries = old ? X509_CRL_get_REVOKED (old) : NULL;
    for (int index = 0; ok && index < sk_X509_REVOKED_num (entries); index++) {
        entry = X509_REVOKED_dup (sk_X509_REVOKED_value (entries, index));
        ok = entry && X509_CRL_add0_revoked (crl, entry) == 1;
        entry = ok ? NULL : entry;
    }
    if (ok && serial) {
        entry = X509_REVOKED_new ();
        ok = entry
          && X509_REVOKED_set_serialNumber (entry, (ASN1_INTEGER *) serial)
          && X509_REVOKED_set_revocationDate (entry, now) == 1
          && X509_CRL_add0_revoked (crl, entry) == 1;
        entry = ok ? NULL : entry;
    }
    if (ok) {
        X509V3_CTX context;
        X509V3_set_ctx (&context, ca, NULL, NULL, crl, 0);
        extension = X509V3_EXT_nconf_nid (
            NULL, &context, NID_authority_key_identifier, "keyid:always");
        ok = extension && X509_CRL_add_ext (crl, extension, -1) == 1
          && X509_CRL_sort (crl) == 1 && X509_CRL_sign (crl, ca_key, NULL) > 0;
    }
    X509_EXTENSION_free (extension);
    X509_REVOKED_free (entry);
    ASN1_INTEGER_free (crl_number);
    ASN1_TIME_free (now);
    ASN1_TIME_free (next);
    if (!ok) {
        X509_CRL_free (crl);
        crl = NULL;
    }
    return crl;
}

//  --------------------------------------------------------------------------
//  Creates a CA in dir: ca.key, ca.crt and an empty ca.crl.

int
pigato__ca_init (const char *dir, const char *mesh, bool force, char *err,
                 size_t err_size)
{
    int rc = PIGATO_OK;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    X509_CRL *crl = NULL;
    char *cn = NULL;
    char *paths [3] = { NULL, NULL, NULL };
    static const char *files [3] = { "ca.key", "ca.crt", "ca.crl" };

    mesh = mesh ? mesh : "default";
    if (!dir || !*dir || !pigato__name_valid (mesh)) {
        pigato__errorf (err, err_size,
                        "invalid mesh name '%s' (use letters, "
                        "digits, '-', '_' and '.', at most %d, not starting "
                        "with '.' or '-')",
                        mesh, PIGATO__NAME_MAX);
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    if (mkdir (dir, 0755) != 0 && errno != EEXIST) {
        pigato__errorf (err, err_size, "cannot create directory '%s': %s", dir,
                        strerror (errno));
        rc = PIGATO_E_SYSTEM;
        goto cleanup;
    }
    for (int index = 0; index < 3; index++) {
        paths [index] = zsys_sprintf ("%s/%s", dir, files [index]);
        if (!force && access (paths [index], F_OK) == 0) {
            pigato__errorf (err, err_size,
                            "'%s' already exists; not "
                            "overwriting it without --force",
                            paths [index]);
            rc = PIGATO_E_INVALID;
            goto cleanup;
        }
    }
    cn = zsys_sprintf (CA_CN_PREFIX "%s", mesh);
    key = EVP_PKEY_Q_keygen (NULL, NULL, "ED25519");
    cert = key
             ? s_cert_new (cn, NULL, key, -60, (int64_t) CA_VALID_DAYS * 86400)
             : NULL;
    X509V3_CTX context;
    if (cert)
        X509V3_set_ctx (&context, cert, cert, NULL, NULL, 0);
    if (!cert
        || s_extension_add (cert, &context, NID_basic_constraints,
                            "critical,CA:TRUE")
               != 0
        || s_extension_add (cert, &context, NID_key_usage,
                            "critical,keyCertSign,cRLSign")
               != 0
        || s_extension_add (cert, &context, NID_subject_key_identifier, "hash")
               != 0
        || X509_sign (cert, key, NULL) <= 0
        || !(crl = s_crl_build (cert, key, NULL, NULL, 1,
                                (int64_t) PIGATO__CRL_DAYS_DEFAULT * 86400))) {
        s_errorf (err, err_size, "cannot create the CA");
        rc = PIGATO_E_SYSTEM;
        goto cleanup;
    }
    //  The key first: a ca.crt without its key would be useless
    rc = s_pem_write (paths [0], NULL, NULL, key, force, err, err_size);
    if (rc == PIGATO_OK)
        rc = s_pem_write (paths [1], cert, NULL, NULL, force, err, err_size);
    if (rc == PIGATO_OK)
        rc = s_pem_write (paths [2], NULL, crl, NULL, force, err, err_size);
cleanup:
    EVP_PKEY_free (key);
    X509_free (cert);
    X509_CRL_free (crl);
    zstr_free (&cn);
    for (int index = 0; index < 3; index++)
        zstr_free (&paths [index]);
    return rc;
}

//  --------------------------------------------------------------------------
//  Signs an identity certificate for name and a CURVE public key with the
//  loaded CA and writes it to crt_path (replacing a file there if replace).

static int
s_identity_sign (X509 *ca, EVP_PKEY *ca_key, const char *mesh, const char *name,
                 const byte *curve_public_key, int64_t valid_seconds,
                 const char *crt_path, bool replace, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    EVP_PKEY *public_key = EVP_PKEY_new_raw_public_key (EVP_PKEY_X25519, NULL,
                                                        curve_public_key, 32);
    char *uri = zsys_sprintf ("URI:" URI_PREFIX "%s/%s", mesh, name);
    //  notBefore a minute back, for clocks a little behind ours
    X509 *cert = public_key && uri
                   ? s_cert_new (name, ca, public_key, -60, valid_seconds)
                   : NULL;
    X509V3_CTX context;
    if (cert)
        X509V3_set_ctx (&context, ca, cert, NULL, NULL, 0);
    if (!cert
        || s_extension_add (cert, &context, NID_basic_constraints,
                            "critical,CA:FALSE")
               != 0
        || s_extension_add (cert, &context, NID_key_usage,
                            "critical,keyAgreement")
               != 0
        || s_extension_add (cert, &context, NID_subject_alt_name, uri) != 0
        || s_extension_add (cert, &context, NID_subject_key_identifier, "hash")
               != 0
        || s_extension_add (cert, &context, NID_authority_key_identifier,
                            "keyid:always")
               != 0
        || X509_sign (cert, ca_key, NULL) <= 0) {
        s_errorf (err, err_size, "cannot issue a certificate for '%s'", name);
        rc = PIGATO_E_SYSTEM;
    }
    else
        rc = s_pem_write (crt_path, cert, NULL, NULL, replace, err, err_size);
    EVP_PKEY_free (public_key);
    X509_free (cert);
    zstr_free (&uri);
    return rc;
}

//  Bounded so the day arithmetic of s_cert_new cannot overflow an int.
static int
s_validity_check (int64_t valid_seconds, char *err, size_t err_size)
{
    if (valid_seconds > (int64_t) 1000 * 365 * 86400
        || valid_seconds < -(int64_t) 1000 * 365 * 86400) {
        pigato__errorf (err, err_size,
                        "validity of %lld seconds is out of "
                        "range",
                        (long long) valid_seconds);
        return PIGATO_E_INVALID;
    }
    return PIGATO_OK;
}

//  --------------------------------------------------------------------------
//  Issues an identity certificate for a CURVE public key.

int
pigato__ca_issue (const char *ca_dir, const char *name,
                  const byte *curve_public_key, int64_t valid_seconds,
                  const char *crt_path, bool force, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;
    char mesh [PIGATO__NAME_MAX + 1];

    if (!ca_dir || !crt_path || !curve_public_key
        || !pigato__name_valid (name)) {
        pigato__errorf (err, err_size,
                        "invalid name '%s' (use letters, "
                        "digits, '-', '_' and '.', at most %d, not starting "
                        "with '.' or '-')",
                        name ? name : "", PIGATO__NAME_MAX);
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    rc = s_validity_check (valid_seconds, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    if (!force && access (crt_path, F_OK) == 0) {
        pigato__errorf (err, err_size,
                        "'%s' already exists; not "
                        "overwriting it without --force",
                        crt_path);
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    rc = s_ca_load (ca_dir, &ca, &ca_key, mesh, err, err_size);
    if (rc == PIGATO_OK)
        rc = s_identity_sign (ca, ca_key, mesh, name, curve_public_key,
                              valid_seconds, crt_path, force, err, err_size);
cleanup:
    X509_free (ca);
    EVP_PKEY_free (ca_key);
    return rc;
}

//  --------------------------------------------------------------------------
//  Signs a new ca_dir/ca.crl: the current entries, plus the certificate at
//  cert_path when given (revoke), a higher CRL number, a fresh nextUpdate.

int
pigato__ca_crl_sign (const char *ca_dir, const char *cert_path,
                     int64_t valid_seconds, int64_t *number_out, char *err,
                     size_t err_size)
{
    int rc = PIGATO_OK;
    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;
    EVP_PKEY *ca_public = NULL;
    X509 *cert = NULL;
    X509_CRL *crl = NULL;
    X509_CRL *updated = NULL;
    ASN1_INTEGER *number = NULL;
    char *crl_path = NULL;
    char mesh [PIGATO__NAME_MAX + 1];

    if (!ca_dir) {
        pigato__errorf (err, err_size, "no CA given");
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    if (valid_seconds == 0)
        valid_seconds = (int64_t) PIGATO__CRL_DAYS_DEFAULT * 86400;
    if (valid_seconds > (int64_t) 3650 * 86400
        || valid_seconds < -(int64_t) 3650 * 86400) {
        pigato__errorf (err, err_size,
                        "a CRL valid for %lld seconds is out of range (at "
                        "most 3650 days)",
                        (long long) valid_seconds);
        rc = PIGATO_E_INVALID;
        goto cleanup;
    }
    rc = s_ca_load (ca_dir, &ca, &ca_key, mesh, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    ca_public = X509_get0_pubkey (ca);
    if (cert_path) {
        cert = s_cert_load (cert_path, err, err_size);
        if (!cert) {
            rc = PIGATO_E_KEY;
            goto cleanup;
        }
        if (X509_verify (cert, ca_public) != 1) {
            ERR_clear_error ();
            pigato__errorf (err, err_size,
                            "'%s' is not signed by the CA in "
                            "'%s'",
                            cert_path, ca_dir);
            rc = PIGATO_E_KEY;
            goto cleanup;
        }
    }
    crl_path = zsys_sprintf ("%s/ca.crl", ca_dir);
    crl = s_crl_load (crl_path, err, err_size);
    if (!crl) {
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    //  The CA's own CRL, even past its nextUpdate: renewing it is the fix
    if (X509_CRL_verify (crl, ca_public) != 1) {
        ERR_clear_error ();
        pigato__errorf (err, err_size,
                        "'%s' is not signed by the CA in "
                        "'%s'",
                        crl_path, ca_dir);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    X509_REVOKED *entry = NULL;
    if (cert
        && X509_CRL_get0_by_serial (crl, &entry, X509_get0_serialNumber (cert))
               == 1) {
        pigato__errorf (err, err_size,
                        "'%s' is revoked already in '%s'; "
                        "nothing to do",
                        cert_path, crl_path);
        rc = PIGATO__CA_UNCHANGED;
        goto cleanup;
    }
    //  Every CRL we sign has a higher number than the last: brokers refuse
    //  a lower one than they have seen (an old CRL put back)
    number = X509_CRL_get_ext_d2i (crl, NID_crl_number, NULL, NULL);
    int64_t next = 0;
    if (number && ASN1_INTEGER_get_int64 (&next, number) != 1)
        next = INT64_MAX;
    if (next < 0 || next >= INT64_MAX - 1) {
        pigato__errorf (err, err_size, "'%s': CRL number out of range",
                        crl_path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    next++;
    updated = s_crl_build (ca, ca_key, crl,
                           cert ? X509_get0_serialNumber (cert) : NULL, next,
                           valid_seconds);
    if (!updated) {
        s_errorf (err, err_size, "cannot sign a new '%s'", crl_path);
        rc = PIGATO_E_SYSTEM;
        goto cleanup;
    }
    rc = s_pem_write (crl_path, NULL, updated, NULL, true, err, err_size);
    if (rc == PIGATO_OK && number_out)
        *number_out = next;
cleanup:
    X509_free (ca);
    EVP_PKEY_free (ca_key);
    X509_free (cert);
    X509_CRL_free (crl);
    X509_CRL_free (updated);
    ASN1_INTEGER_free (number);
    zstr_free (&crl_path);
    ERR_clear_error ();
    return rc;
}

//  --------------------------------------------------------------------------
//  Revokes a certificate: adds its serial to ca_dir/ca.crl.

int
pigato__ca_revoke (const char *ca_dir, const char *cert_path, char *err,
                   size_t err_size)
{
    if (!cert_path) {
        pigato__errorf (err, err_size, "no CA or certificate given");
        return PIGATO_E_INVALID;
    }
    return pigato__ca_crl_sign (ca_dir, cert_path, 0, NULL, err, err_size);
}

//  --------------------------------------------------------------------------
//  Fills info from a parsed certificate; checks it is a pigato identity.

static int
s_cert_info (X509 *cert, const char *path, pigato__cert_info_t *info, char *err,
             size_t err_size)
{
    int rc = PIGATO_OK;
    GENERAL_NAMES *alt_names = NULL;
    unsigned char *cn = NULL;
    BIO *bio = NULL;
    BIGNUM *serial = NULL;
    char *serial_hex = NULL;

    memset (info, 0, sizeof *info);
    //  What every reader wants to see first, even of a foreign certificate
    info->not_before = s_asn1_seconds (X509_get0_notBefore (cert));
    info->not_after = s_asn1_seconds (X509_get0_notAfter (cert));
    bio = BIO_new (BIO_s_mem ());
    char *text = NULL;
    if (bio
        && X509_NAME_print_ex (bio, X509_get_issuer_name (cert), 0,
                               XN_FLAG_RFC2253)
               >= 0) {
        long size = BIO_get_mem_data (bio, &text);
        snprintf (info->issuer, sizeof info->issuer, "%.*s",
                  (int) (size < 255 ? size : 255), text ? text : "");
    }
    serial = ASN1_INTEGER_to_BN (X509_get0_serialNumber (cert), NULL);
    serial_hex = serial ? BN_bn2hex (serial) : NULL;
    snprintf (info->serial, sizeof info->serial, "%s",
              serial_hex ? serial_hex : "?");

    EVP_PKEY *key = X509_get0_pubkey (cert);
    if (!key) {
        s_errorf (err, err_size,
                  "'%s': the certificate's key cannot be "
                  "read",
                  path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (!EVP_PKEY_is_a (key, "X25519")) {
        const char *type = EVP_PKEY_get0_type_name (key);
        pigato__errorf (err, err_size,
                        "'%s': the certificate's key is %s, "
                        "not an X25519 CURVE key",
                        path, type ? type : "?");
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    size_t key_size = sizeof info->public_key;
    if (EVP_PKEY_get_raw_public_key (key, info->public_key, &key_size) != 1
        || key_size != sizeof info->public_key) {
        s_errorf (err, err_size, "'%s': cannot read the X25519 key", path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    X509_NAME *subject = X509_get_subject_name (cert);
    int position = X509_NAME_get_index_by_NID (subject, NID_commonName, -1);
    X509_NAME_ENTRY *entry = X509_NAME_get_entry (subject, position);
    int length = entry
                   ? ASN1_STRING_to_UTF8 (&cn, X509_NAME_ENTRY_get_data (entry))
                   : -1;
    if (length < 0 || (size_t) length != strlen ((char *) cn)
        || !pigato__name_valid ((char *) cn)) {
        pigato__errorf (err, err_size,
                        "'%s': the certificate's subject CN "
                        "is missing or not a valid identity name",
                        path);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    snprintf (info->name, sizeof info->name, "%s", (char *) cn);

    //  The mesh comes from the SAN URI pigato://MESH/NAME, NAME = CN
    alt_names = X509_get_ext_d2i (cert, NID_subject_alt_name, NULL, NULL);
    for (int index = 0; index < sk_GENERAL_NAME_num (alt_names); index++) {
        GENERAL_NAME *alt_name = sk_GENERAL_NAME_value (alt_names, index);
        if (alt_name->type != GEN_URI)
            continue;
        const char *uri = (const char *) ASN1_STRING_get0_data (
            alt_name->d.uniformResourceIdentifier);
        int uri_length = ASN1_STRING_length (
            alt_name->d.uniformResourceIdentifier);
        if (!uri || uri_length < 0 || (size_t) uri_length != strlen (uri)
            || strncmp (uri, URI_PREFIX, strlen (URI_PREFIX)) != 0)
            continue;
        const char *mesh = uri + strlen (URI_PREFIX);
        const char *slash = strchr (mesh, '/');
        if (!slash || slash - mesh > PIGATO__NAME_MAX
            || strcmp (slash + 1, info->name) != 0)
            continue;
        snprintf (info->mesh, sizeof info->mesh, "%.*s", (int) (slash - mesh),
                  mesh);
        if (pigato__name_valid (info->mesh))
            break;
        info->mesh [0] = 0;
    }
    if (!info->mesh [0]) {
        pigato__errorf (err, err_size,
                        "'%s': the certificate has no "
                        "subjectAltName URI " URI_PREFIX "MESH/%s",
                        path, info->name);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
cleanup:
    GENERAL_NAMES_free (alt_names);
    OPENSSL_free (cn);
    OPENSSL_free (serial_hex);
    BN_free (serial);
    BIO_free (bio);
    ERR_clear_error ();
    return rc;
}

//  --------------------------------------------------------------------------
//  Reads a PEM identity certificate (no signature check).

int
pigato__cert_read (const char *path, pigato__cert_info_t *info, char *err,
                   size_t err_size)
{
    pigato__cert_info_t scratch;
    info = info ? info : &scratch;
    memset (info, 0, sizeof *info);
    if (!path || !*path) {
        pigato__errorf (err, err_size, "no certificate file given");
        return PIGATO_E_INVALID;
    }
    X509 *cert = s_cert_load (path, err, err_size);
    if (!cert)
        return PIGATO_E_KEY;
    int rc = s_cert_info (cert, path, info, err, err_size);
    X509_free (cert);
    return rc;
}

//  --------------------------------------------------------------------------
//  The CURVE key of a certificate as Z85.

int
pigato__cert_public_key (const char *path, char *z85_out, char *err,
                         size_t err_size)
{
    pigato__cert_info_t info;
    int rc = pigato__cert_read (path, &info, err, err_size);
    if (rc == PIGATO_OK && !zmq_z85_encode (z85_out, info.public_key, 32)) {
        pigato__errorf (err, err_size, "'%s': cannot encode the key", path);
        rc = PIGATO_E_KEY;
    }
    return rc;
}

//  --------------------------------------------------------------------------
//  True if ca_dir/ca.crl (when there is one, signed by the CA) lists the
//  certificate's serial. An unreadable or foreign CRL is an error: a
//  renewal must not bring back what was revoked.

static int
s_revoked_check (const char *ca_dir, X509 *ca, X509 *cert,
                 const char *cert_path, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    char *crl_path = zsys_sprintf ("%s/ca.crl", ca_dir);
    X509_CRL *crl = NULL;
    if (!crl_path)
        return PIGATO_E_NOMEM;
    if (access (crl_path, F_OK) != 0)
        goto cleanup;  //  no CRL: nothing was revoked
    crl = s_crl_load (crl_path, err, err_size);
    if (!crl) {
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (X509_CRL_verify (crl, X509_get0_pubkey (ca)) != 1) {
        pigato__errorf (err, err_size, "'%s' is not signed by the CA in '%s'",
                        crl_path, ca_dir);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    X509_REVOKED *entry = NULL;
    if (X509_CRL_get0_by_serial (crl, &entry, X509_get0_serialNumber (cert))
        == 1) {
        pigato__errorf (err, err_size,
                        "'%s' is revoked (its serial is in '%s'): a revoked "
                        "certificate is not renewed; issue a new identity",
                        cert_path, crl_path);
        rc = PIGATO_E_KEY;
    }
cleanup:
    X509_CRL_free (crl);
    zstr_free (&crl_path);
    ERR_clear_error ();
    return rc;
}

//  --------------------------------------------------------------------------
//  Renews an identity certificate: same name, same CURVE key, new serial
//  and validity, signed by the CA that signed the old one.

int
pigato__ca_renew (const char *ca_dir, const char *cert_path,
                  const byte *expected_key, int64_t valid_seconds,
                  const char *out_path, pigato__cert_info_t *info_out,
                  char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;
    X509 *cert = NULL;
    char mesh [PIGATO__NAME_MAX + 1];
    pigato__cert_info_t info, existing;

    if (!ca_dir || !cert_path) {
        pigato__errorf (err, err_size, "no CA or certificate given");
        return PIGATO_E_INVALID;
    }
    out_path = out_path ? out_path : cert_path;
    rc = s_validity_check (valid_seconds, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    rc = s_ca_load (ca_dir, &ca, &ca_key, mesh, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    cert = s_cert_load (cert_path, err, err_size);
    if (!cert) {
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    rc = s_cert_info (cert, cert_path, &info, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    //  An expired certificate may be renewed (that is the fix), one of
    //  another CA may not: the name and key are that CA's to vouch for
    if (X509_verify (cert, X509_get0_pubkey (ca)) != 1) {
        pigato__errorf (err, err_size,
                        "'%s' (%s) is not signed by the CA in '%s' (issuer "
                        "%s): renew it with the CA that issued it",
                        cert_path, info.name, ca_dir, info.issuer);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    if (strcmp (info.mesh, mesh) != 0) {
        pigato__errorf (err, err_size,
                        "'%s' (%s) is for mesh '%s', not the CA's '%s'",
                        cert_path, info.name, info.mesh, mesh);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    rc = s_revoked_check (ca_dir, ca, cert, cert_path, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;
    if (expected_key
        && memcmp (expected_key, info.public_key, sizeof info.public_key)) {
        pigato__errorf (err, err_size,
                        "'%s' (%s) does not hold the key of the identity's "
                        "key file: renewing it would certify a key the "
                        "program does not use",
                        cert_path, info.name);
        rc = PIGATO_E_KEY;
        goto cleanup;
    }
    //  The destination may hold an earlier certificate of this identity
    //  (same name and key), never anything else
    if (strcmp (out_path, cert_path) != 0 && access (out_path, F_OK) == 0) {
        char reason [512];
        if (pigato__cert_read (out_path, &existing, reason, sizeof reason)
                != PIGATO_OK
            || strcmp (existing.name, info.name) != 0
            || memcmp (existing.public_key, info.public_key,
                       sizeof info.public_key)) {
            pigato__errorf (err, err_size,
                            "'%s' already exists and is not a certificate "
                            "of '%s' with the same key; not overwriting it",
                            out_path, info.name);
            rc = PIGATO_E_INVALID;
            goto cleanup;
        }
    }
    rc = s_identity_sign (ca, ca_key, mesh, info.name, info.public_key,
                          valid_seconds, out_path, true, err, err_size);
    if (rc == PIGATO_OK && info_out)
        rc = pigato__cert_read (out_path, info_out, err, err_size);
cleanup:
    X509_free (ca);
    EVP_PKEY_free (ca_key);
    X509_free (cert);
    ERR_clear_error ();
    return rc;
}

//  --------------------------------------------------------------------------
//  Checks a CRL whose signature verified: not past its nextUpdate (a stale
//  CRL may miss revocations), and not older (a lower CRL number) than one
//  this process has already seen for the same CA; then raises that mark.

static int
s_crl_check (pigato__trust_t *self, const char *path, char *err,
             size_t err_size)
{
    char when [64];
    const ASN1_TIME *next_update = X509_CRL_get0_nextUpdate (self->crl);
    self->crl_next_update = s_asn1_seconds (next_update);
    if (!next_update || self->crl_next_update == 0) {
        pigato__errorf (err, err_size,
                        "'%s' has no nextUpdate: a CRL that never expires "
                        "is refused",
                        path);
        return PIGATO_E_KEY;
    }
    if (self->crl_next_update <= (int64_t) time (NULL)) {
        pigato__time_text (self->crl_next_update, when, sizeof when);
        pigato__errorf (err, err_size,
                        "'%s' expired on %s (its nextUpdate): a stale CRL "
                        "may miss revocations; renew it with pigato-keygen "
                        "crl --ca DIR",
                        path, when);
        return PIGATO_E_KEY;
    }
    ASN1_INTEGER *number = X509_CRL_get_ext_d2i (self->crl, NID_crl_number,
                                                 NULL, NULL);
    int64_t value = 0;
    if (number && ASN1_INTEGER_get_int64 (&value, number) != 1)
        value = -1;
    ASN1_INTEGER_free (number);
    ERR_clear_error ();
    if (value < 0) {
        pigato__errorf (err, err_size, "'%s': CRL number out of range", path);
        return PIGATO_E_KEY;
    }
    self->crl_number = value;

    unsigned char digest [32];
    unsigned int digest_size = 0;
    if (X509_digest (self->ca, EVP_sha256 (), digest, &digest_size) != 1
        || digest_size != sizeof digest) {
        s_errorf (err, err_size, "cannot hash the CA certificate");
        return PIGATO_E_SYSTEM;
    }
    int rc = PIGATO_OK;
    pthread_mutex_lock (&s_crl_seen_lock);
    size_t index = 0;
    while (index < s_crl_seen_count
           && memcmp (s_crl_seen [index].ca_digest, digest, sizeof digest))
        index++;
    if (index < s_crl_seen_count && value < s_crl_seen [index].number) {
        pigato__errorf (err, err_size,
                        "'%s' has CRL number %lld, lower than %lld seen "
                        "before for this CA: an older CRL (put back by "
                        "mistake or to un-revoke a certificate) is refused",
                        path, (long long) value,
                        (long long) s_crl_seen [index].number);
        rc = PIGATO_E_KEY;
    }
    else if (index < s_crl_seen_count)
        s_crl_seen [index].number = value;
    else if (index < CRL_TRACKED_MAX) {
        memcpy (s_crl_seen [index].ca_digest, digest, sizeof digest);
        s_crl_seen [index].number = value;
        s_crl_seen_count++;
    }
    pthread_mutex_unlock (&s_crl_seen_lock);
    return rc;
}

bool
pigato__trust_crl (pigato__trust_t *self, int64_t *number, int64_t *next_update)
{
    if (!self || !self->crl)
        return false;
    *number = self->crl_number;
    *next_update = self->crl_next_update;
    return true;
}

//  --------------------------------------------------------------------------
//  Loads a trusted CA certificate and optionally its CRL.

pigato__trust_t *
pigato__trust_load (const char *ca_crt, const char *crl, char *err,
                    size_t err_size)
{
    pigato__trust_t *self = (pigato__trust_t *) zmalloc (sizeof *self);
    if (!self || !ca_crt) {
        pigato__errorf (err, err_size, "no CA certificate given");
        goto failed;
    }
    self->ca = s_cert_load (ca_crt, err, err_size);
    if (!self->ca)
        goto failed;
    s_ca_mesh (self->ca, self->mesh);
    if (X509_check_ca (self->ca) == 0) {
        pigato__errorf (err, err_size, "'%s' is not a CA certificate", ca_crt);
        goto failed;
    }
    if (X509_verify (self->ca, X509_get0_pubkey (self->ca)) != 1) {
        pigato__errorf (err, err_size,
                        "'%s' is not a self-signed CA "
                        "certificate",
                        ca_crt);
        goto failed;
    }
    self->store = X509_STORE_new ();
    if (!self->store || X509_STORE_add_cert (self->store, self->ca) != 1) {
        s_errorf (err, err_size, "cannot load '%s'", ca_crt);
        goto failed;
    }
    if (crl) {
        self->crl = s_crl_load (crl, err, err_size);
        if (!self->crl)
            goto failed;
        if (X509_CRL_verify (self->crl, X509_get0_pubkey (self->ca)) != 1) {
            pigato__errorf (err, err_size,
                            "'%s' is not signed by the CA "
                            "'%s'",
                            crl, ca_crt);
            goto failed;
        }
        if (s_crl_check (self, crl, err, err_size) != PIGATO_OK)
            goto failed;
        if (X509_STORE_add_crl (self->store, self->crl) != 1) {
            s_errorf (err, err_size, "cannot load '%s'", crl);
            goto failed;
        }
        X509_STORE_set_flags (self->store, X509_V_FLAG_CRL_CHECK);
    }
    ERR_clear_error ();
    return self;
failed:
    ERR_clear_error ();
    pigato__trust_destroy (&self);
    return NULL;
}

int64_t
pigato__trust_ca_not_after (pigato__trust_t *self)
{
    return self ? s_asn1_seconds (X509_get0_notAfter (self->ca)) : 0;
}

//  --------------------------------------------------------------------------
//  Logs a certificate that ends soon or has ended (see ca.h).

bool
pigato__cert_expiry_log (const char *kind, const char *name, const char *path,
                         int64_t not_after, int64_t now, int64_t warn_seconds,
                         int expired_level)
{
    bool expired = not_after <= now;
    if (not_after <= 0 || (!expired && not_after - now >= warn_seconds))
        return false;
    int level = expired ? expired_level : PIGATO_LOG_WARNING;
    if (pigato__log_level < level)
        return true;
    char when [64], path_text [1024], name_text [4 * PIGATO__NAME_MAX + 8];
    time_t seconds = (time_t) not_after;
    struct tm tm;
    if (!gmtime_r (&seconds, &tm)
        || !strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf (when, sizeof when, "@%lld", (long long) not_after);
    //  Paths come from the ACL and folder listings: escaped
    pigato__printable (path ? path : "-", strlen (path ? path : "-"), path_text,
                       sizeof path_text);
    name_text [0] = 0;
    if (name) {
        memcpy (name_text, " name=", 7);
        pigato__printable (name, strlen (name), name_text + 6,
                           sizeof name_text - 6);
    }
    if (expired)
        pigato__log (level,
                     "event=certificate_expired kind=%s%s path=%s "
                     "not_after=%s",
                     kind, name_text, path_text, when);
    else
        pigato__log (level,
                     "event=certificate_expiring kind=%s%s path=%s "
                     "days=%lld not_after=%s",
                     kind, name_text, path_text,
                     (long long) ((not_after - now) / 86400), when);
    return true;
}

//  --------------------------------------------------------------------------
//  Destroys a trust; accepts NULL.

void
pigato__trust_destroy (pigato__trust_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__trust_t *self = *self_p;
    X509_STORE_free (self->store);
    X509_free (self->ca);
    X509_CRL_free (self->crl);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Validates a certificate against the trusted CA now, saying why not.

int
pigato__trust_verify (pigato__trust_t *self, const char *cert_path,
                      pigato__cert_info_t *info, char *err, size_t err_size)
{
    int rc = PIGATO_OK;
    pigato__cert_info_t scratch;
    X509_STORE_CTX *context = NULL;
    char when [64];

    info = info ? info : &scratch;
    memset (info, 0, sizeof *info);
    if (!self || !cert_path) {
        pigato__errorf (err, err_size, "no trust or certificate given");
        return PIGATO_E_INVALID;
    }
    X509 *cert = s_cert_load (cert_path, err, err_size);
    if (!cert)
        return PIGATO_E_KEY;
    rc = s_cert_info (cert, cert_path, info, err, err_size);
    if (rc != PIGATO_OK)
        goto cleanup;

    context = X509_STORE_CTX_new ();
    if (!context
        || X509_STORE_CTX_init (context, self->store, cert, NULL) != 1) {
        s_errorf (err, err_size, "cannot verify '%s'", cert_path);
        rc = PIGATO_E_NOMEM;
        goto cleanup;
    }
    //  Each call checks validity against the clock as it is now
    X509_STORE_CTX_set_time (context, 0, time (NULL));
    if (X509_verify_cert (context) != 1) {
        int code = X509_STORE_CTX_get_error (context);
        rc = PIGATO_E_KEY;
        switch (code) {
            case X509_V_ERR_CERT_HAS_EXPIRED:
                pigato__time_text (info->not_after, when, sizeof when);
                pigato__errorf (err, err_size, "'%s' (%s): expired on %s",
                                cert_path, info->name, when);
                break;
            case X509_V_ERR_CERT_NOT_YET_VALID:
                pigato__time_text (info->not_before, when, sizeof when);
                pigato__errorf (err, err_size,
                                "'%s' (%s): not yet valid "
                                "(valid from %s)",
                                cert_path, info->name, when);
                break;
            case X509_V_ERR_CERT_REVOKED:
                pigato__errorf (err, err_size,
                                "'%s' (%s): revoked (serial "
                                "%s is in the CA's CRL)",
                                cert_path, info->name, info->serial);
                break;
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
            case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
            case X509_V_ERR_CERT_SIGNATURE_FAILURE:
            case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
            case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
                pigato__errorf (err, err_size,
                                "'%s' (%s): not signed by "
                                "this CA (issuer %s)",
                                cert_path, info->name, info->issuer);
                break;
            default:
                pigato__errorf (err, err_size,
                                "'%s' (%s): does not verify: "
                                "%s",
                                cert_path, info->name,
                                X509_verify_cert_error_string (code));
        }
        goto cleanup;
    }
    //  A CA signs for one mesh; a certificate naming another is refused
    if (self->mesh [0] && strcmp (self->mesh, info->mesh) != 0) {
        pigato__errorf (err, err_size,
                        "'%s' (%s): issued for mesh '%s', "
                        "not '%s'",
                        cert_path, info->name, info->mesh, self->mesh);
        rc = PIGATO_E_KEY;
    }
cleanup:
    X509_STORE_CTX_free (context);
    X509_free (cert);
    ERR_clear_error ();
    return rc;
}

//  --------------------------------------------------------------------------
//  Only *.crt files, and not dot files (editors' and our temporaries).

static int
s_crt_filter (const struct dirent *entry)
{
    size_t length = strlen (entry->d_name);
    return entry->d_name [0] != '.' && length > 4
        && strcmp (entry->d_name + length - 4, ".crt") == 0;
}

//  --------------------------------------------------------------------------
//  Verifies every *.crt in dir and reports each through callback.

int
pigato__trust_scan (pigato__trust_t *self, const char *dir,
                    pigato__trust_fn *callback, void *arg, char *err,
                    size_t err_size)
{
    if (!self || !dir || !callback) {
        pigato__errorf (err, err_size, "no trust, directory or callback");
        return PIGATO_E_INVALID;
    }
    struct dirent **entries = NULL;
    int count = scandir (dir, &entries, s_crt_filter, alphasort);
    if (count < 0) {
        pigato__errorf (err, err_size,
                        "cannot read certificate directory "
                        "'%s': %s",
                        dir, strerror (errno));
        return PIGATO_E_SYSTEM;
    }
    for (int index = 0; index < count; index++) {
        char *path = zsys_sprintf ("%s/%s", dir, entries [index]->d_name);
        X509 *cert = path ? s_cert_load (path, NULL, 0) : NULL;
        //  The CA certificate may live in the same directory: not an identity
        bool is_ca = streq (entries [index]->d_name, "ca.crt")
                  || (cert && X509_cmp (cert, self->ca) == 0);
        X509_free (cert);
        if (path && !is_ca) {
            pigato__cert_info_t info;
            char problem [512];
            problem [0] = 0;
            int rc = pigato__trust_verify (self, path, &info, problem,
                                           sizeof problem);
            callback (&info, path, rc == PIGATO_OK ? NULL : problem, arg);
        }
        zstr_free (&path);
        free (entries [index]);
    }
    free (entries);
    ERR_clear_error ();
    return PIGATO_OK;
}
