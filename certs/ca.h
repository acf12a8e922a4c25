/*  =========================================================================
    ca.h - the mesh CA (OpenSSL): an Ed25519 CA key and self-signed
    certificate, X.509 identity certificates whose subject public key is
    the X25519 CURVE key, a CRL for revocation, and path validation for the
    broker's `trust CA.crt CERTDIR` and `revoked CA.crl` ACL lines.

    Files in a CA directory: ca.key (Ed25519 private key, PEM, mode 0600),
    ca.crt (self-signed, CN "pigato mesh CA MESH"), ca.crl (signed by the
    CA; empty at first). An identity certificate has CN = NAME and the SAN
    URI pigato://MESH/NAME.

    Every function that can fail returns a pigato status (0 = ok, negative
    = error) and writes a human message to err (NULL err = no message).
    =========================================================================
*/
#ifndef PIGATO_CA_H_INCLUDED
#define PIGATO_CA_H_INCLUDED

#include "../mesh/base/internal.h"  //  PIGATO__NAME_MAX, pigato__name_valid

//  How long a CRL we sign is valid (its nextUpdate), unless told: a CRL
//  that is not renewed in time is refused by brokers, which bounds how
//  old a CRL an attacker can put back in place.
#define PIGATO__CRL_DAYS_DEFAULT 7

//  How many days before a certificate expires the broker starts to warn
//  (event=certificate_expiring), unless told (--cert-warn-days).
#define PIGATO__CERT_WARN_DAYS_DEFAULT 14

//  pigato__ca_revoke's "nothing to do" result: the certificate was revoked
//  already; err says so. Positive, so `rc < 0` still means failure.
#define PIGATO__CA_UNCHANGED 1

//  What a certificate says about an identity.
typedef struct {
    char name [PIGATO__NAME_MAX + 1];  //  subject CN
    char mesh [PIGATO__NAME_MAX + 1];  //  from the SAN URI pigato://MESH/NAME
    byte public_key [32];              //  the X25519 CURVE public key
    int64_t not_before, not_after;     //  validity, seconds since the epoch
    char issuer [256];                 //  issuer DN, RFC 2253 text
    char serial [80];                  //  serial number, upper-case hex
} pigato__cert_info_t;

//  Trusted CA (and optional CRL) to validate identity certificates with.
typedef struct _pigato__trust_t pigato__trust_t;

//  Called by pigato__trust_scan for every certificate file: problem is NULL
//  when the certificate is valid, else why it is not (info is then filled
//  as far as the file could be read, zeroed otherwise).
typedef void (pigato__trust_fn) (const pigato__cert_info_t *info,
                                 const char *path, const char *problem,
                                 void *arg);

//  Creates a CA in dir (created if missing): ca.key (0600 from its first
//  byte), ca.crt (10 years) and an empty ca.crl. mesh NULL = "default".
//  Refuses to overwrite any of the three unless force.
int pigato__ca_init (const char *dir, const char *mesh, bool force, char *err,
                     size_t err_size) PIGATO__MUST_CHECK;

//  Issues crt_path: an identity certificate for name and the 32-byte CURVE
//  public key, valid from now - 60 s to now + valid_seconds (negative is
//  allowed, for tests of expiry), signed by the CA in ca_dir. Refuses to
//  overwrite crt_path unless force, and a ca.key that others can read.
int pigato__ca_issue (const char *ca_dir, const char *name,
                      const byte *curve_public_key, int64_t valid_seconds,
                      const char *crt_path, bool force, char *err,
                      size_t err_size) PIGATO__MUST_CHECK;

//  Renews the identity certificate at cert_path: a new certificate for the
//  same name and CURVE key (so the secret key file is not needed), with a
//  new serial, valid from now - 60 s to now + valid_seconds, signed by the
//  CA in ca_dir, written to out_path (NULL = cert_path, replaced). Refuses
//  a certificate this CA did not sign or of another mesh, one in
//  ca_dir/ca.crl, one whose key is not expected_key (the identity's key
//  file; NULL = not checked), and an out_path that holds anything but a
//  certificate of the same name and key. An expired certificate may be
//  renewed. info_out (NULL = not wanted) describes the new certificate.
int pigato__ca_renew (const char *ca_dir, const char *cert_path,
                      const byte *expected_key, int64_t valid_seconds,
                      const char *out_path, pigato__cert_info_t *info_out,
                      char *err, size_t err_size) PIGATO__MUST_CHECK;

//  Adds the serial of the certificate at cert_path to ca_dir/ca.crl and
//  re-signs it (lastUpdate now, CRL number + 1, nextUpdate in
//  PIGATO__CRL_DAYS_DEFAULT days). The certificate must be issued by this
//  CA. Returns PIGATO__CA_UNCHANGED (and a message) when it was revoked
//  already.
int pigato__ca_revoke (const char *ca_dir, const char *cert_path, char *err,
                       size_t err_size) PIGATO__MUST_CHECK;

//  Re-signs ca_dir/ca.crl with its entries, plus cert_path's serial when
//  cert_path is not NULL (as pigato__ca_revoke): CRL number + 1 (written
//  to *number_out when not NULL), lastUpdate now, nextUpdate now +
//  valid_seconds (0 = the default; negative, for tests, makes a CRL that
//  has expired; at most 3650 days). An expired CRL of this CA may be
//  renewed. Returns 0, PIGATO__CA_UNCHANGED or a negative status.
int pigato__ca_crl_sign (const char *ca_dir, const char *cert_path,
                         int64_t valid_seconds, int64_t *number_out, char *err,
                         size_t err_size) PIGATO__MUST_CHECK;

//  Reads a PEM identity certificate: X25519 key, CN, SAN mesh, validity,
//  issuer, serial. Does not check the signature (see pigato__trust_verify).
int pigato__cert_read (const char *path, pigato__cert_info_t *info, char *err,
                       size_t err_size) PIGATO__MUST_CHECK;

//  Writes the CURVE key of the certificate at path as Z85 to z85_out
//  (41 bytes with the NUL).
int pigato__cert_public_key (const char *path, char *z85_out, char *err,
                             size_t err_size) PIGATO__MUST_CHECK;

//  Loads a trusted CA certificate and, if crl is not NULL, its CRL. The
//  CRL must be signed by that CA, not past its nextUpdate, and its CRL
//  number not lower than the highest this process has loaded for that CA
//  (a rollback to an older CRL); loading it raises that mark. Returns NULL
//  and a message on error.
pigato__trust_t *pigato__trust_load (const char *ca_crt, const char *crl,
                                     char *err, size_t err_size);

//  The loaded CRL's number and nextUpdate (epoch seconds); false when the
//  trust has no CRL.
bool pigato__trust_crl (pigato__trust_t *self, int64_t *number,
                        int64_t *next_update);

//  The trusted CA certificate's notAfter (epoch seconds).
int64_t pigato__trust_ca_not_after (pigato__trust_t *self);

//  Logs one certificate's coming end, when there is one:
//  event=certificate_expiring (a warning) with days=N (whole days left)
//  when it ends within warn_seconds of now, event=certificate_expired (at
//  expired_level) once it has ended; both with kind (what it is to the
//  broker: "broker", "ca", "identity"), name (may be NULL), path and
//  not_after (ISO 8601, UTC). Returns true when it logged a line.
bool pigato__cert_expiry_log (const char *kind, const char *name,
                              const char *path, int64_t not_after, int64_t now,
                              int64_t warn_seconds, int expired_level);

//  Destroys a trust and nulls the caller's pointer; accepts NULL.
void pigato__trust_destroy (pigato__trust_t **self_p);

//  Validates the certificate at cert_path against the trusted CA now:
//  signature chain, validity period, revocation (when a CRL was loaded),
//  mesh. Fills info (when not NULL) as far as the file could be read. On
//  failure err says why: "expired on ...", "not yet valid ...", "revoked",
//  "not signed by this CA", or why the file cannot be read.
int pigato__trust_verify (pigato__trust_t *self, const char *cert_path,
                          pigato__cert_info_t *info, char *err,
                          size_t err_size) PIGATO__MUST_CHECK;

//  Calls callback for every *.crt file in dir, in name order, with the
//  result of pigato__trust_verify; skips the CA certificate itself. Fails
//  only when dir cannot be read.
int pigato__trust_scan (pigato__trust_t *self, const char *dir,
                        pigato__trust_fn *callback, void *arg, char *err,
                        size_t err_size) PIGATO__MUST_CHECK;

#endif
