/*  test_ca.c - the mesh CA as an operator and the broker use it: create a
    CA, issue identities whose certificates carry the zcert's CURVE key,
    verify them, revoke them, and get clear reasons for expired, foreign,
    revoked and broken certificates. Real files in a temporary directory.
*/
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include "../../certs/ca.h"

static char s_dir [] = "/tmp/pigato-test-ca.XXXXXX";
static char s_err [512];

static int
setup (void **state)
{
    (void) state;
    assert_non_null (mkdtemp (s_dir));
    return 0;
}

static int
teardown (void **state)
{
    (void) state;
    char *command = zsys_sprintf ("rm -rf %s", s_dir);
    assert_int_equal (system (command), 0);
    free (command);
    return 0;
}

//  A path in the test directory; caller frees.
static char *
s_path (const char *name)
{
    return zsys_sprintf ("%s/%s", s_dir, name);
}

static mode_t
s_mode (const char *name)
{
    char *path = s_path (name);
    struct stat info;
    assert_int_equal (stat (path, &info), 0);
    free (path);
    return info.st_mode & 07777;
}

static void
s_write (const char *name, const char *data, size_t size)
{
    char *path = s_path (name);
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    assert_int_equal (fwrite (data, 1, size, file), size);
    fclose (file);
    free (path);
}

//  Issues NAME from the CA in ca_dir (relative to the test dir) into
//  certs/NAME.crt with a fresh key pair, whose public key goes to key.
static void
s_issue (const char *ca_dir, const char *name, int64_t valid, byte *key)
{
    char *ca = s_path (ca_dir);
    char *crt = zsys_sprintf ("%s/certs/%s.crt", s_dir, name);
    zcert_t *cert = zcert_new ();
    assert_non_null (cert);
    int rc = pigato__ca_issue (ca, name, zcert_public_key (cert), valid, crt,
                               false, s_err, sizeof s_err);
    assert_int_equal (rc, PIGATO_OK);
    if (key)
        memcpy (key, zcert_public_key (cert), 32);
    zcert_destroy (&cert);
    free (ca);
    free (crt);
}

//  Writes a self-signed certificate with an RSA or EC key, as OpenSSL
//  would make for a web server: a certificate, but not a CURVE identity.
static void
s_write_foreign_key_cert (const char *name, const char *type)
{
    EVP_PKEY *key = streq (type, "RSA")
                      ? EVP_PKEY_Q_keygen (NULL, NULL, "RSA", (size_t) 1024)
                      : EVP_PKEY_Q_keygen (NULL, NULL, "EC", "P-256");
    assert_non_null (key);
    X509 *cert = X509_new ();
    X509_set_version (cert, X509_VERSION_3);
    ASN1_INTEGER_set (X509_get_serialNumber (cert), 7);
    X509_NAME_add_entry_by_txt (X509_get_subject_name (cert), "CN",
                                MBSTRING_ASC, (const unsigned char *) name, -1,
                                -1, 0);
    X509_set_issuer_name (cert, X509_get_subject_name (cert));
    X509_gmtime_adj (X509_getm_notBefore (cert), 0);
    X509_gmtime_adj (X509_getm_notAfter (cert), 3600);
    X509_set_pubkey (cert, key);
    assert_true (X509_sign (cert, key, EVP_sha256 ()) > 0);
    char *file_name = zsys_sprintf ("certs/%s.crt", name);
    char *path = s_path (file_name);
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    assert_int_equal (PEM_write_X509 (file, cert), 1);
    fclose (file);
    X509_free (cert);
    EVP_PKEY_free (key);
    free (path);
    free (file_name);
}

//  Loads a trust for the CA in ca_dir, with its CRL when with_crl.
static pigato__trust_t *
s_trust (const char *ca_dir, bool with_crl)
{
    char *crt = zsys_sprintf ("%s/%s/ca.crt", s_dir, ca_dir);
    char *crl = zsys_sprintf ("%s/%s/ca.crl", s_dir, ca_dir);
    pigato__trust_t *trust = pigato__trust_load (crt, with_crl ? crl : NULL,
                                                 s_err, sizeof s_err);
    assert_non_null (trust);
    free (crt);
    free (crl);
    return trust;
}

//  Verifies certs/NAME.crt; returns the status, message in s_err.
static int
s_verify (pigato__trust_t *trust, const char *name, pigato__cert_info_t *info)
{
    char *crt = zsys_sprintf ("%s/certs/%s.crt", s_dir, name);
    s_err [0] = 0;
    int rc = pigato__trust_verify (trust, crt, info, s_err, sizeof s_err);
    free (crt);
    return rc;
}

static void
test_init_issue_read_verify (void **state)
{
    (void) state;
    char *ca = s_path ("ca");
    assert_int_equal (pigato__ca_init (ca, "unit", false, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (s_mode ("ca/ca.key"), 0600);
    assert_int_equal (s_mode ("ca/ca.crt"), 0644);
    assert_int_equal (s_mode ("ca/ca.crl"), 0644);
    //  No overwriting a CA by accident; with force, a new CA
    assert_int_equal (pigato__ca_init (ca, "unit", false, s_err, sizeof s_err),
                      PIGATO_E_INVALID);
    assert_non_null (strstr (s_err, "already exists"));
    assert_int_equal (pigato__ca_init (ca, "unit", true, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (pigato__ca_init (ca, "-bad", true, s_err, sizeof s_err),
                      PIGATO_E_INVALID);

    //  An identity as pigato-keygen issue makes it: zcert files + NAME.crt
    char *certs = s_path ("certs");
    assert_int_equal (mkdir (certs, 0755), 0);
    zcert_t *pair = zcert_new ();
    zcert_set_meta (pair, "name", "web");
    char *crt = s_path ("certs/web.crt");
    char *public_path = s_path ("certs/web.key");
    assert_int_equal (pigato__ca_issue (ca, "web", zcert_public_key (pair),
                                        90 * 86400, crt, false, s_err,
                                        sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (zcert_save (pair, public_path), 0);
    assert_int_equal (pigato__ca_issue (ca, "web", zcert_public_key (pair), 60,
                                        crt, false, s_err, sizeof s_err),
                      PIGATO_E_INVALID);
    assert_non_null (strstr (s_err, "already exists"));
    assert_int_equal (pigato__ca_issue (ca, "no/slash", zcert_public_key (pair),
                                        60, crt, true, s_err, sizeof s_err),
                      PIGATO_E_INVALID);

    //  The key in the certificate is the key czmq loads from the zcert
    zcert_t *loaded = zcert_load (public_path);
    assert_non_null (loaded);
    pigato__cert_info_t info;
    assert_int_equal (pigato__cert_read (crt, &info, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_memory_equal (info.public_key, zcert_public_key (loaded), 32);
    assert_string_equal (info.name, "web");
    assert_string_equal (info.mesh, "unit");
    assert_string_equal (info.issuer, "CN=pigato mesh CA unit");
    assert_int_equal (strlen (info.serial), 32);
    int64_t now = (int64_t) time (NULL);
    assert_true (info.not_before <= now - 59 && info.not_before >= now - 70);
    assert_true (info.not_after >= now + 90 * 86400 - 10
                 && info.not_after <= now + 90 * 86400 + 10);
    char z85 [41];
    assert_int_equal (pigato__cert_public_key (crt, z85, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_string_equal (z85, zcert_public_txt (loaded));

    pigato__trust_t *trust = s_trust ("ca", true);
    memset (&info, 0, sizeof info);
    assert_int_equal (s_verify (trust, "web", &info), PIGATO_OK);
    assert_string_equal (info.name, "web");
    assert_memory_equal (info.public_key, zcert_public_key (pair), 32);
    pigato__trust_destroy (&trust);
    assert_null (trust);
    pigato__trust_destroy (&trust);

    zcert_destroy (&loaded);
    zcert_destroy (&pair);
    free (public_path);
    free (crt);
    free (certs);
    free (ca);
}

static void
test_revoke (void **state)
{
    (void) state;
    s_issue ("ca", "doomed", 86400, NULL);
    char *ca = s_path ("ca");
    char *crt = s_path ("certs/doomed.crt");
    pigato__trust_t *trust = s_trust ("ca", true);
    assert_int_equal (s_verify (trust, "doomed", NULL), PIGATO_OK);
    pigato__trust_destroy (&trust);

    assert_int_equal (pigato__ca_revoke (ca, crt, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (s_mode ("ca/ca.crl"), 0644);
    //  Twice is a no-op that says so
    assert_int_equal (pigato__ca_revoke (ca, crt, s_err, sizeof s_err),
                      PIGATO__CA_UNCHANGED);
    assert_non_null (strstr (s_err, "revoked already"));

    trust = s_trust ("ca", true);
    assert_int_equal (s_verify (trust, "doomed", NULL), PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "revoked"));
    //  Others are untouched, and a second revocation keeps the first
    assert_int_equal (s_verify (trust, "web", NULL), PIGATO_OK);
    pigato__trust_destroy (&trust);
    s_issue ("ca", "doomed2", 86400, NULL);
    char *crt2 = s_path ("certs/doomed2.crt");
    assert_int_equal (pigato__ca_revoke (ca, crt2, s_err, sizeof s_err),
                      PIGATO_OK);
    trust = s_trust ("ca", true);
    assert_int_equal (s_verify (trust, "doomed", NULL), PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "revoked"));
    assert_int_equal (s_verify (trust, "doomed2", NULL), PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "revoked"));
    pigato__trust_destroy (&trust);
    //  Without the CRL the broker would not know
    trust = s_trust ("ca", false);
    assert_int_equal (s_verify (trust, "doomed", NULL), PIGATO_OK);
    pigato__trust_destroy (&trust);
    free (crt2);
    free (crt);
    free (ca);
}

static void
test_expired (void **state)
{
    (void) state;
    s_issue ("ca", "old", -3600, NULL);
    pigato__trust_t *trust = s_trust ("ca", true);
    pigato__cert_info_t info;
    assert_int_equal (s_verify (trust, "old", &info), PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "expired on "));
    assert_true (info.not_after < (int64_t) time (NULL));
    pigato__trust_destroy (&trust);
}

static void
test_foreign_ca (void **state)
{
    (void) state;
    char *other = s_path ("other");
    assert_int_equal (
        pigato__ca_init (other, "unit", false, s_err, sizeof s_err), PIGATO_OK);
    s_issue ("other", "intruder", 86400, NULL);
    pigato__trust_t *trust = s_trust ("ca", true);
    assert_int_equal (s_verify (trust, "intruder", NULL), PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "not signed by this CA"));
    pigato__trust_destroy (&trust);

    //  Nor can a CA revoke what it did not issue, or trust another's CRL
    char *ca = s_path ("ca");
    char *crt = s_path ("certs/intruder.crt");
    assert_int_equal (pigato__ca_revoke (ca, crt, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "not signed by the CA"));
    char *ca_crt = s_path ("ca/ca.crt");
    char *other_crl = s_path ("other/ca.crl");
    assert_null (pigato__trust_load (ca_crt, other_crl, s_err, sizeof s_err));
    assert_non_null (strstr (s_err, "not signed by the CA"));
    free (other_crl);
    free (ca_crt);
    free (crt);
    free (ca);
    free (other);
}

//  Renewal: same name and key, new serial and validity, the old file
//  replaced; the CA refuses what it did not issue, what it revoked, and a
//  certificate whose key is not the identity's key file's.
static void
test_renew (void **state)
{
    (void) state;
    byte key [32];
    s_issue ("ca", "soon", 2 * 86400, key);
    char *ca = s_path ("ca");
    char *crt = s_path ("certs/soon.crt");
    pigato__cert_info_t before, after;
    assert_int_equal (pigato__cert_read (crt, &before, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (pigato__ca_renew (ca, crt, key, 90 * 86400, NULL, &after,
                                        s_err, sizeof s_err),
                      PIGATO_OK);
    assert_string_equal (after.name, "soon");
    assert_memory_equal (after.public_key, key, 32);
    assert_string_not_equal (after.serial, before.serial);
    assert_true (after.not_after > before.not_after + 80 * 86400);
    //  The file in place is the new certificate, and it verifies
    pigato__cert_info_t read_back;
    assert_int_equal (pigato__cert_read (crt, &read_back, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_string_equal (read_back.serial, after.serial);
    pigato__trust_t *trust = s_trust ("ca", true);
    assert_int_equal (s_verify (trust, "soon", NULL), PIGATO_OK);
    pigato__trust_destroy (&trust);

    //  An expired certificate may be renewed: that is the fix
    s_issue ("ca", "lapsed", -3600, key);
    char *lapsed = s_path ("certs/lapsed.crt");
    char *fresh = s_path ("certs/lapsed-fresh.crt");
    assert_int_equal (pigato__ca_renew (ca, lapsed, NULL, 86400, fresh, &after,
                                        s_err, sizeof s_err),
                      PIGATO_OK);
    assert_memory_equal (after.public_key, key, 32);
    assert_true (after.not_after > (int64_t) time (NULL));

    //  A key file holding another key: refused, nothing written
    byte other [32];
    memset (other, 7, sizeof other);
    assert_int_equal (pigato__ca_renew (ca, crt, other, 86400, NULL, NULL,
                                        s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "does not hold the key"));
    pigato__cert_info_t unchanged;
    assert_int_equal (pigato__cert_read (crt, &unchanged, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_string_equal (unchanged.serial, read_back.serial);

    //  The destination holds another identity's certificate: kept
    s_issue ("ca", "bystander", 86400, NULL);
    char *bystander = s_path ("certs/bystander.crt");
    assert_int_equal (pigato__ca_renew (ca, crt, NULL, 86400, bystander, NULL,
                                        s_err, sizeof s_err),
                      PIGATO_E_INVALID);
    assert_non_null (strstr (s_err, "not overwriting"));

    //  Revoked: not renewed
    s_issue ("ca", "revoked", 86400, NULL);
    char *revoked = s_path ("certs/revoked.crt");
    assert_int_equal (pigato__ca_revoke (ca, revoked, s_err, sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (pigato__ca_renew (ca, revoked, NULL, 86400, NULL, NULL,
                                        s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "is revoked"));

    //  Another CA's certificate: not ours to renew
    char *other_ca = s_path ("renew-other");
    assert_int_equal (pigato__ca_init (other_ca, "default", false, s_err,
                                       sizeof s_err),
                      PIGATO_OK);
    s_issue ("renew-other", "stranger", 86400, NULL);
    char *stranger = s_path ("certs/stranger.crt");
    assert_int_equal (pigato__ca_renew (ca, stranger, NULL, 86400, NULL, NULL,
                                        s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "is not signed by the CA"));
    free (stranger);
    free (other_ca);
    free (revoked);
    free (bystander);
    free (fresh);
    free (lapsed);
    free (crt);
    free (ca);
}

static void
test_bad_files (void **state)
{
    (void) state;
    pigato__cert_info_t info;
    //  Truncated PEM: the first half of a good certificate
    char *good = s_path ("certs/web.crt");
    FILE *file = fopen (good, "r");
    assert_non_null (file);
    char text [4096];
    size_t size = fread (text, 1, sizeof text, file);
    fclose (file);
    s_write ("certs/truncated.crt", text, size / 2);
    char *path = s_path ("certs/truncated.crt");
    assert_int_equal (pigato__cert_read (path, &info, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "cannot parse the certificate"));
    free (path);

    s_write ("certs/garbage.crt", "\x01\x02\x03 not a certificate\n", 22);
    path = s_path ("certs/garbage.crt");
    assert_int_equal (pigato__cert_read (path, &info, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "is not a PEM certificate"));
    free (path);

    s_write_foreign_key_cert ("rsa", "RSA");
    path = s_path ("certs/rsa.crt");
    assert_int_equal (pigato__cert_read (path, &info, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "the certificate's key is RSA, not an "
                                    "X25519 CURVE key"));
    char z85 [41];
    assert_int_equal (pigato__cert_public_key (path, z85, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    free (path);
    s_write_foreign_key_cert ("ec", "EC");
    path = s_path ("certs/ec.crt");
    assert_int_equal (pigato__cert_read (path, &info, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "key is EC, not an X25519"));
    free (path);

    path = s_path ("certs/missing.crt");
    assert_int_equal (pigato__cert_read (path, &info, s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "No such file"));
    free (path);

    //  A CA whose key others can read is refused, with the fix
    char *key = s_path ("ca/ca.key");
    assert_int_equal (chmod (key, 0644), 0);
    char *ca = s_path ("ca");
    char *crt = s_path ("certs/never.crt");
    byte curve [32] = { 9 };
    assert_int_equal (pigato__ca_issue (ca, "never", curve, 60, crt, false,
                                        s_err, sizeof s_err),
                      PIGATO_E_KEYPERM);
    assert_non_null (strstr (s_err, "chmod 600"));
    assert_int_equal (access (crt, F_OK), -1);
    assert_int_equal (chmod (key, 0600), 0);
    //  No CA at all
    char *nowhere = s_path ("nowhere");
    assert_int_equal (pigato__ca_issue (nowhere, "never", curve, 60, crt, false,
                                        s_err, sizeof s_err),
                      PIGATO_E_KEY);
    assert_non_null (strstr (s_err, "no CA in"));
    //  A broken CRL or CA certificate fails the trust, saying which file
    char *ca_crt = s_path ("ca/ca.crt");
    char *garbage = s_path ("certs/garbage.crt");
    assert_null (pigato__trust_load (ca_crt, garbage, s_err, sizeof s_err));
    assert_non_null (strstr (s_err, "garbage.crt"));
    assert_null (pigato__trust_load (garbage, NULL, s_err, sizeof s_err));
    assert_non_null (strstr (s_err, "garbage.crt"));
    free (garbage);
    free (ca_crt);
    free (nowhere);
    free (crt);
    free (ca);
    free (key);
    free (good);
}

//  Collects what trust_scan reports: "NAME ok" or "FILE: problem" lines.
static void
s_collect (const pigato__cert_info_t *info, const char *path,
           const char *problem, void *arg)
{
    zlist_t *lines = (zlist_t *) arg;
    const char *file = strrchr (path, '/') + 1;
    char *line = problem ? zsys_sprintf ("%s: %s", file, problem)
                         : zsys_sprintf ("%s ok", info->name);
    zlist_append (lines, line);  //  autofree: the list keeps a copy
    free (line);
}

static bool
s_has_line (zlist_t *lines, const char *start, const char *part)
{
    for (char *line = (char *) zlist_first (lines); line;
         line = (char *) zlist_next (lines))
        if (strncmp (line, start, strlen (start)) == 0 && strstr (line, part))
            return true;
    return false;
}

static void
test_scan (void **state)
{
    (void) state;
    //  certs/ now holds: web (good), doomed + doomed2 (revoked), old
    //  (expired), intruder (foreign CA), truncated, garbage, rsa, ec; add
    //  the CA itself and a file that is not a .crt
    char *ca_crt = s_path ("ca/ca.crt");
    char *certs = s_path ("certs");
    char *command = zsys_sprintf ("cp %s %s/ca.crt && cp %s %s/our-ca.crt"
                                  " && echo hi > %s/notes.txt",
                                  ca_crt, certs, ca_crt, certs, certs);
    assert_int_equal (system (command), 0);
    pigato__trust_t *trust = s_trust ("ca", true);
    zlist_t *lines = zlist_new ();
    zlist_autofree (lines);
    assert_int_equal (pigato__trust_scan (trust, certs, s_collect, lines, s_err,
                                          sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (zlist_size (lines), 9);
    assert_true (s_has_line (lines, "web ok", ""));
    assert_true (s_has_line (lines, "doomed.crt:", "revoked"));
    assert_true (s_has_line (lines, "doomed2.crt:", "revoked"));
    assert_true (s_has_line (lines, "old.crt:", "expired on"));
    assert_true (s_has_line (lines, "intruder.crt:", "not signed by this CA"));
    assert_true (s_has_line (lines, "truncated.crt:", "cannot parse"));
    assert_true (s_has_line (lines, "garbage.crt:", "not a PEM certificate"));
    assert_true (s_has_line (lines, "rsa.crt:", "key is RSA"));
    assert_true (s_has_line (lines, "ec.crt:", "key is EC"));
    zlist_destroy (&lines);

    char *missing = s_path ("no-such-dir");
    assert_int_equal (pigato__trust_scan (trust, missing, s_collect, NULL,
                                          s_err, sizeof s_err),
                      PIGATO_E_SYSTEM);
    assert_non_null (strstr (s_err, "no-such-dir"));
    pigato__trust_destroy (&trust);
    free (missing);
    free (command);
    free (certs);
    free (ca_crt);
}

//  A CRL is refused once it is past its nextUpdate, and so is one older
//  (a lower CRL number) than a CRL of the same CA this process loaded:
//  putting an old CRL back does not un-revoke anything.
static void
test_crl_rollback_and_expiry (void **state)
{
    (void) state;
    char *ca = s_path ("crlca");
    char *crt = s_path ("crlca/ca.crt");
    char *crl = s_path ("crlca/ca.crl");
    char *old = s_path ("crlca/old.crl");
    assert_int_equal (pigato__ca_init (ca, "unit", false, s_err, sizeof s_err),
                      PIGATO_OK);
    char *copy = zsys_sprintf ("cp %s %s", crl, old);
    assert_int_equal (system (copy), 0);
    int64_t number = 0, next_update = 0;
    assert_int_equal (pigato__ca_crl_sign (ca, NULL, 0, &number, s_err,
                                           sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (number, 2);

    pigato__trust_t *trust = pigato__trust_load (crt, crl, s_err, sizeof s_err);
    assert_non_null (trust);
    assert_true (pigato__trust_crl (trust, &number, &next_update));
    assert_int_equal (number, 2);
    //  Seven days by default
    assert_true (next_update > (int64_t) time (NULL) + 7 * 86400 - 60);
    assert_true (next_update <= (int64_t) time (NULL) + 7 * 86400);
    pigato__trust_destroy (&trust);
    assert_null (pigato__trust_load (crt, old, s_err, sizeof s_err));
    assert_non_null (strstr (s_err, "CRL number 1, lower than 2"));

    //  Expired (signed an hour in the past): refused, says how to renew
    assert_int_equal (pigato__ca_crl_sign (ca, NULL, -3600, &number, s_err,
                                           sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (number, 3);
    assert_null (pigato__trust_load (crt, crl, s_err, sizeof s_err));
    assert_non_null (strstr (s_err, "expired on"));
    assert_non_null (strstr (s_err, "pigato-keygen crl"));
    //  Renewed (an expired CRL of our own CA can be): accepted again
    assert_int_equal (pigato__ca_crl_sign (ca, NULL, 2 * 86400, &number, s_err,
                                           sizeof s_err),
                      PIGATO_OK);
    assert_int_equal (number, 4);
    trust = pigato__trust_load (crt, crl, s_err, sizeof s_err);
    assert_non_null (trust);
    pigato__trust_destroy (&trust);
    assert_null (pigato__trust_load (crt, old, s_err, sizeof s_err));
    //  Out of range validity
    assert_int_equal (pigato__ca_crl_sign (ca, NULL, (int64_t) 4000 * 86400,
                                           NULL, s_err, sizeof s_err),
                      PIGATO_E_INVALID);
    free (copy);
    free (old);
    free (crl);
    free (crt);
    free (ca);
}

int
main (void)
{
    //  In order: each test builds on the files of the ones before
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_init_issue_read_verify),
        cmocka_unit_test (test_revoke),
        cmocka_unit_test (test_expired),
        cmocka_unit_test (test_foreign_ca),
        cmocka_unit_test (test_crl_rollback_and_expiry),
        cmocka_unit_test (test_bad_files),
        cmocka_unit_test (test_scan),
        cmocka_unit_test (test_renew),
    };
    return cmocka_run_group_tests (tests, setup, teardown);
}
