#!/usr/bin/python3
"""pigato-keygen end to end (issue 4): the mesh CA, issued identities that
the openssl CLI verifies and pyzmq's zcert reader loads, revocation in a CRL
openssl reads, `show` with and without --ca, and the refusals an operator
relies on: no overwriting without --force, no group/world readable secrets,
bad durations, a missing CA, garbage files."""

import base64
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import unittest

import zmq.auth
from zmq.utils import z85

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("PIGATO_BUILD") or os.path.join(ROOT, "build"))
KEYGEN = os.path.join(BUILD, "pigato-keygen")
BROKER = os.path.join(BUILD, "pigato-broker")
EXIT_USAGE = 64


def read(path):
    with open(path) as f:
        return f.read()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class KeygenTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pigato-keygen-")
        self.ca = os.path.join(self.tmp, "ca")
        self.certs = os.path.join(self.tmp, "certs")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def keygen(self, *args, expect=None):
        """Runs pigato-keygen ARGS in the temporary directory; returns
        (rc, stdout, stderr) and checks rc when expect is given."""
        p = subprocess.run([KEYGEN] + [str(a) for a in args], cwd=self.tmp,
                           capture_output=True, text=True, timeout=30)
        if expect is not None:
            self.assertEqual(p.returncode, expect,
                             "pigato-keygen %s\nstdout: %s\nstderr: %s"
                             % (" ".join(map(str, args)), p.stdout, p.stderr))
        return p.returncode, p.stdout, p.stderr

    def openssl(self, *args, check=True):
        p = subprocess.run(["openssl"] + list(args), cwd=self.tmp,
                           capture_output=True, text=True, timeout=30)
        if check:
            self.assertEqual(p.returncode, 0, "openssl %s\n%s%s"
                             % (" ".join(args), p.stdout, p.stderr))
        return p

    def init_ca(self, mesh="prod", where=None):
        self.keygen("ca", "init", "--mesh", mesh, "-o", where or self.ca, expect=0)

    def issue(self, name, *extra, ca=None):
        _, out, _ = self.keygen("issue", name, "--ca", ca or self.ca, "-o", self.certs,
                                *extra, expect=0)
        return dict(re.findall(r"^([a-z ]+):\s+(.*)$", out, re.M))

    def crt(self, name):
        return os.path.join(self.certs, name + ".crt")

    def cert_key_z85(self, path):
        """The subject public key of a certificate, via openssl, as Z85."""
        pem = self.openssl("x509", "-in", path, "-noout", "-pubkey").stdout
        der = base64.b64decode("".join(l for l in pem.splitlines() if "-----" not in l))
        self.assertEqual(len(der), 44, "not a 32-byte X25519 SubjectPublicKeyInfo")
        return z85.encode(der[-32:]).decode()

    # -- the CA ------------------------------------------------------------

    def test_ca_init_files_modes_and_openssl_view(self):
        _, out, _ = self.keygen("ca", "init", "--mesh", "prod", "-o", self.ca, expect=0)
        self.assertIn("mesh:        prod", out)
        self.assertEqual(mode(os.path.join(self.ca, "ca.key")), 0o600)
        self.assertEqual(mode(os.path.join(self.ca, "ca.crt")), 0o644)
        self.assertEqual(mode(os.path.join(self.ca, "ca.crl")), 0o644)
        self.assertEqual([f for f in os.listdir(self.ca) if ".tmp" in f], [])
        text = self.openssl("x509", "-in", "ca/ca.crt", "-noout", "-text").stdout
        self.assertIn("Subject: CN = pigato mesh CA prod", text)
        self.assertIn("ED25519", text)
        self.assertRegex(text, r"Basic Constraints: critical\s+CA:TRUE")
        self.assertIn("Certificate Sign, CRL Sign", text)
        self.assertIn("Subject Key Identifier", text)
        key = self.openssl("pkey", "-in", "ca/ca.key", "-noout", "-text").stdout
        self.assertIn("ED25519 Private-Key", key)
        crl = self.openssl("crl", "-in", "ca/ca.crl", "-noout", "-text").stdout
        self.assertIn("No Revoked Certificates", crl)
        self.openssl("crl", "-in", "ca/ca.crl", "-noout", "-CAfile", "ca/ca.crt")

    def test_ca_init_default_mesh_and_no_overwrite(self):
        self.keygen("ca", "init", "-o", self.ca, expect=0)
        text = self.openssl("x509", "-in", "ca/ca.crt", "-noout", "-subject").stdout
        self.assertIn("pigato mesh CA default", text)
        before = read(os.path.join(self.ca, "ca.key"))
        rc, _, err = self.keygen("ca", "init", "-o", self.ca)
        self.assertEqual(rc, 1)
        self.assertIn("already exists", err)
        self.assertIn("--force", err)
        self.assertEqual(read(os.path.join(self.ca, "ca.key")), before)
        self.keygen("ca", "init", "-o", self.ca, "--force", expect=0)
        self.assertNotEqual(read(os.path.join(self.ca, "ca.key")), before)
        self.assertEqual(mode(os.path.join(self.ca, "ca.key")), 0o600)
        rc, _, err = self.keygen("ca", "init", "--mesh", "no/slash", "-o", self.ca,
                                 "--force")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("invalid mesh name", err)

    # -- issued identities -------------------------------------------------

    def test_issue_verifies_with_openssl_and_loads_as_zcert(self):
        self.init_ca()
        fields = self.issue("web", "--valid", "30d")
        crt = self.crt("web")
        self.assertEqual(mode(crt), 0o644)
        self.assertEqual(mode(os.path.join(self.certs, "web.key")), 0o644)
        self.assertEqual(mode(os.path.join(self.certs, "web.key_secret")), 0o600)
        self.assertEqual(self.openssl("verify", "-CAfile", "ca/ca.crt", crt).stdout.strip(),
                         crt + ": OK")
        self.openssl("verify", "-crl_check", "-CAfile", "ca/ca.crt", "-CRLfile",
                     "ca/ca.crl", crt)
        text = self.openssl("x509", "-in", crt, "-noout", "-text").stdout
        self.assertIn("Subject: CN = web", text)
        self.assertIn("Issuer: CN = pigato mesh CA prod", text)
        self.assertIn("URI:pigato://prod/web", text)
        self.assertIn("Public Key Algorithm: X25519", text)
        self.assertRegex(text, r"Basic Constraints: critical\s+CA:FALSE")
        self.assertIn("Key Agreement", text)
        self.assertIn("Authority Key Identifier", text)
        # The key in the certificate is the zcert's key, as czmq-format
        # readers (pyzmq's zmq.auth) load it, and what keygen printed
        public, secret = zmq.auth.load_certificate(os.path.join(self.certs, "web.key_secret"))
        self.assertIsNotNone(secret)
        self.assertEqual(self.cert_key_z85(crt), public.decode())
        self.assertEqual(fields["public key"], public.decode())
        self.assertRegex(fields["fingerprint"], r"^[0-9a-f]{16}$")
        self.assertEqual(fields["identity"], "web")
        self.assertEqual(fields["mesh"], "prod")
        # --valid 30d: notAfter 30 days out
        end = self.openssl("x509", "-in", crt, "-noout", "-checkend", str(29 * 86400)).returncode
        self.assertEqual(end, 0)
        end = self.openssl("x509", "-in", crt, "-noout", "-checkend", str(31 * 86400),
                           check=False).returncode
        self.assertEqual(end, 1)
        serial = self.openssl("x509", "-in", crt, "-noout", "-serial").stdout.strip()
        self.assertEqual(serial, "serial=" + fields["serial"])
        self.assertEqual(len(fields["serial"]), 32)   # 128 random bits

    def test_secret_dir_keeps_secrets_out_of_the_trusted_folder(self):
        # issue ... -o certs used to put NAME.key_secret in the folder the
        # broker trusts: -s puts it elsewhere, and the broker warns about
        # a secret key it finds in a trusted folder (issue 15).
        self.init_ca()
        secrets = os.path.join(self.tmp, "secrets")
        fields = self.issue("web", "-s", secrets)
        self.assertEqual(sorted(os.listdir(self.certs)), ["web.crt", "web.key"])
        self.assertEqual(os.listdir(secrets), ["web.key_secret"])
        self.assertEqual(mode(secrets), 0o700)
        self.assertEqual(mode(os.path.join(secrets, "web.key_secret")), 0o600)
        self.assertEqual(fields["secret file"], os.path.join(secrets, "web.key_secret")
                         + " (mode 0600)")
        self.keygen("new", "ops", "-o", "pub", "--secret-dir", "private", expect=0)
        self.assertEqual(os.listdir(os.path.join(self.tmp, "pub")), ["ops.key"])
        self.assertEqual(os.listdir(os.path.join(self.tmp, "private")), ["ops.key_secret"])
        _, _, err = self.keygen("crl", "--ca", self.ca, "-s", secrets, expect=64)
        self.assertIn("--secret-dir does not apply", err)
        acl = os.path.join(self.tmp, "mesh.acl")
        with open(acl, "w") as f:
            f.write("trust ca/ca.crt certs\nallow web call echo\n")
        check = subprocess.run([BROKER, "--check-acl", acl], cwd=self.tmp,
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertNotIn("secret_in_trust_dir", check.stderr)
        self.issue("api")               # no -s: the secret lands in certs/
        check = subprocess.run([BROKER, "--check-acl", acl], cwd=self.tmp,
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertRegex(check.stderr, r"event=secret_in_trust_dir .*file=api\.key_secret")

    def test_issue_default_validity_is_90_days(self):
        self.init_ca()
        self.issue("api")
        self.assertEqual(self.openssl("x509", "-in", self.crt("api"), "-noout", "-checkend",
                                      str(89 * 86400)).returncode, 0)
        self.assertEqual(self.openssl("x509", "-in", self.crt("api"), "-noout", "-checkend",
                                      str(91 * 86400), check=False).returncode, 1)

    def test_issue_never_overwrites_without_force(self):
        self.init_ca()
        first = self.issue("web")
        rc, _, err = self.keygen("issue", "web", "--ca", self.ca, "-o", self.certs)
        self.assertEqual(rc, 1)
        self.assertIn("already exists", err)
        self.assertEqual(self.cert_key_z85(self.crt("web")), first["public key"])
        second = self.issue("web", "--force")
        self.assertNotEqual(second["public key"], first["public key"])
        self.assertEqual(self.cert_key_z85(self.crt("web")), second["public key"])
        self.assertEqual(mode(os.path.join(self.certs, "web.key_secret")), 0o600)
        # `new` too
        self.keygen("new", "solo", "-o", self.certs, expect=0)
        rc, _, err = self.keygen("new", "solo", "-o", self.certs)
        self.assertEqual(rc, 1)
        self.assertIn("already exists", err)

    # -- show ----------------------------------------------------------------

    def test_show_certificate_with_and_without_ca(self):
        self.init_ca()
        fields = self.issue("web")
        _, out, _ = self.keygen("show", self.crt("web"), expect=0)
        for line in ("identity:    web", "mesh:        prod",
                     "public key:  " + fields["public key"],
                     "fingerprint: " + fields["fingerprint"],
                     "issuer:      CN=pigato mesh CA prod",
                     "serial:      " + fields["serial"]):
            self.assertIn(line, out)
        self.assertRegex(out, r"valid until: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
        self.assertNotIn("verifies", out)
        _, out, _ = self.keygen("show", self.crt("web"), "--ca", self.ca, expect=0)
        self.assertIn("verifies:    yes", out)
        # A CA of the same mesh name, but another key
        other = os.path.join(self.tmp, "other")
        self.init_ca(where=other)
        rc, out, _ = self.keygen("show", self.crt("web"), "--ca", other)
        self.assertEqual(rc, 1)
        self.assertRegex(out, r"verifies:    no \(.*not signed by this CA")

    def test_show_key_files_never_prints_the_secret(self):
        self.keygen("new", "worker", "-o", self.certs, expect=0)
        public, secret = zmq.auth.load_certificate(os.path.join(self.certs, "worker.key_secret"))
        for name in ("worker.key", "worker.key_secret"):
            _, out, err = self.keygen("show", os.path.join(self.certs, name), expect=0)
            self.assertIn("identity:    worker", out)
            self.assertIn("public key:  " + public.decode(), out)
            self.assertNotIn(secret.decode(), out + err)
        self.assertIn("secret is not shown", out)

    def test_expired_certificate_does_not_verify(self):
        self.init_ca()
        self.issue("brief", "--valid", "1s")
        crt = self.crt("brief")
        deadline = time.time() + 10
        while self.openssl("x509", "-in", crt, "-noout", "-checkend", "0",
                           check=False).returncode == 0:
            self.assertLess(time.time(), deadline, "certificate never expired")
            time.sleep(0.25)
        rc, out, _ = self.keygen("show", crt, "--ca", self.ca)
        self.assertEqual(rc, 1)
        self.assertIn("(expired)", out)
        self.assertRegex(out, r"verifies:    no \(.*expired on \d{4}-")
        p = self.openssl("verify", "-CAfile", "ca/ca.crt", crt, check=False)
        self.assertNotEqual(p.returncode, 0)

    # -- revocation ----------------------------------------------------------

    def test_revoke_lists_serial_in_crl(self):
        self.init_ca()
        web = self.issue("web")
        api = self.issue("api")
        # By name (NAME.crt in -o DIR)
        _, out, _ = self.keygen("revoke", "web", "--ca", self.ca, "-o", self.certs, expect=0)
        self.assertIn(web["serial"], out)
        crl = self.openssl("crl", "-in", "ca/ca.crl", "-noout", "-text").stdout
        self.assertIn("Serial Number: " + web["serial"], crl)
        self.assertNotIn(api["serial"], crl)
        self.assertRegex(crl, r"CRL Number: \s*2\b")
        self.openssl("crl", "-in", "ca/ca.crl", "-noout", "-CAfile", "ca/ca.crt")
        self.assertEqual(mode(os.path.join(self.ca, "ca.crl")), 0o644)
        p = self.openssl("verify", "-crl_check", "-CAfile", "ca/ca.crt", "-CRLfile",
                         "ca/ca.crl", self.crt("web"), check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("revoked", p.stdout + p.stderr)
        rc, out, _ = self.keygen("show", self.crt("web"), "--ca", self.ca)
        self.assertEqual(rc, 1)
        self.assertRegex(out, r"verifies:    no \(.*revoked")
        self.keygen("show", self.crt("api"), "--ca", self.ca, expect=0)
        # Twice: nothing to do, said so, CRL unchanged
        before = read(os.path.join(self.ca, "ca.crl"))
        _, out, _ = self.keygen("revoke", self.crt("web"), "--ca", self.ca, expect=0)
        self.assertIn("revoked already", out)
        self.assertEqual(read(os.path.join(self.ca, "ca.crl")), before)
        # By path; both stay listed
        self.keygen("revoke", self.crt("api"), "--ca", self.ca, expect=0)
        crl = self.openssl("crl", "-in", "ca/ca.crl", "-noout", "-text").stdout
        self.assertIn(web["serial"], crl)
        self.assertIn(api["serial"], crl)
        self.assertRegex(crl, r"CRL Number: \s*3\b")

    def test_revoke_refuses_foreign_and_missing_certificates(self):
        self.init_ca()
        other = os.path.join(self.tmp, "other")
        self.init_ca(where=other)
        self.issue("stranger", ca=other)
        rc, _, err = self.keygen("revoke", self.crt("stranger"), "--ca", self.ca)
        self.assertEqual(rc, 1)
        self.assertIn("not signed by the CA", err)
        rc, _, err = self.keygen("revoke", "ghost", "--ca", self.ca)
        self.assertEqual(rc, 1)
        self.assertIn("no certificate", err)

    # -- refusals --------------------------------------------------------------

    def test_group_readable_secrets_are_refused_with_chmod_hint(self):
        self.init_ca()
        self.issue("web")
        secret = os.path.join(self.certs, "web.key_secret")
        os.chmod(secret, 0o644)
        rc, out, err = self.keygen("show", secret)
        self.assertEqual(rc, 1)
        self.assertIn("chmod 600 " + secret, err)
        self.assertEqual(out, "")
        ca_key = os.path.join(self.ca, "ca.key")
        os.chmod(ca_key, 0o640)
        rc, _, err = self.keygen("issue", "api", "--ca", self.ca, "-o", self.certs)
        self.assertEqual(rc, 1)
        self.assertIn("chmod 600 " + ca_key, err)
        self.assertFalse(os.path.exists(self.crt("api")))
        self.assertFalse(os.path.exists(os.path.join(self.certs, "api.key_secret")))
        rc, _, err = self.keygen("revoke", "web", "--ca", self.ca, "-o", self.certs)
        self.assertEqual(rc, 1)
        self.assertIn("chmod 600", err)

    def test_bad_durations(self):
        self.init_ca()
        for bad in ("10x", "90", "d", "0d", "-5d", "1.5h", "999999y", "12hh"):
            rc, _, err = self.keygen("issue", "web", "--ca", self.ca, "-o", self.certs,
                                     "--valid", bad)
            self.assertEqual(rc, EXIT_USAGE, bad)
            self.assertIn("invalid --valid '%s'" % bad, err)
            self.assertIn("s m h d w or y", err)
        self.assertFalse(os.path.exists(self.certs) and os.listdir(self.certs))
        for good, seconds in (("12h", 12 * 3600), ("2w", 14 * 86400), ("1y", 365 * 86400),
                              ("90m", 5400)):
            self.issue("ok", "--valid", good, "--force")
            self.assertEqual(self.openssl("x509", "-in", self.crt("ok"), "-noout", "-checkend",
                                          str(seconds - 120)).returncode, 0, good)
            self.assertEqual(self.openssl("x509", "-in", self.crt("ok"), "-noout", "-checkend",
                                          str(seconds + 120), check=False).returncode, 1, good)

    def test_missing_ca(self):
        rc, _, err = self.keygen("issue", "web", "--ca", os.path.join(self.tmp, "nope"),
                                 "-o", self.certs)
        self.assertEqual(rc, 1)
        self.assertIn("no CA in", err)
        self.assertIn("pigato-keygen ca init", err)
        self.assertFalse(any(os.scandir(self.certs)) if os.path.isdir(self.certs) else False)
        rc, _, err = self.keygen("issue", "web", "-o", self.certs)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("--ca", err)
        rc, _, err = self.keygen("show", os.path.join(self.tmp, "missing.crt"))
        self.assertEqual(rc, 1)
        self.assertIn("No such file", err)

    def test_show_garbage_and_broken_files(self):
        self.init_ca()
        self.issue("web")
        garbage = os.path.join(self.tmp, "garbage.crt")
        with open(garbage, "wb") as f:
            f.write(os.urandom(512))
        rc, out, err = self.keygen("show", garbage)
        self.assertEqual(rc, 1)
        self.assertIn("neither a PEM certificate nor a zcert key file", err)
        self.assertEqual(out, "")
        truncated = os.path.join(self.tmp, "truncated.crt")
        with open(self.crt("web")) as f, open(truncated, "w") as g:
            g.write(f.read()[:300])
        rc, _, err = self.keygen("show", truncated, "--ca", self.ca)
        self.assertEqual(rc, 1)
        self.assertIn("cannot parse the certificate", err)
        # A certificate with an RSA key is not a CURVE identity
        rsa = os.path.join(self.tmp, "rsa.crt")
        self.openssl("req", "-x509", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=web",
                     "-keyout", os.path.join(self.tmp, "rsa.pem"), "-out", rsa, "-days", "1")
        rc, _, err = self.keygen("show", rsa)
        self.assertEqual(rc, 1)
        self.assertIn("the certificate's key is RSA, not an X25519 CURVE key", err)
        # A garbage CA directory
        with open(os.path.join(self.ca, "ca.crt"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n")
        rc, _, err = self.keygen("issue", "api", "--ca", self.ca, "-o", self.certs)
        self.assertEqual(rc, 1)
        self.assertIn("ca.crt", err)

    def test_help_for_every_command(self):
        rc, out, _ = self.keygen("--help")
        self.assertEqual(rc, 0)
        for command in ("new", "ca init", "issue", "revoke", "show"):
            self.assertIn(command, out)
        for command, usage in ((["new"], "pigato-keygen new NAME"),
                               (["ca", "init"], "pigato-keygen ca init"),
                               (["issue"], "pigato-keygen issue NAME --ca DIR"),
                               (["revoke"], "pigato-keygen revoke NAME|CERT"),
                               (["show"], "pigato-keygen show FILE")):
            rc, out, _ = self.keygen(*command, "--help")
            self.assertEqual(rc, 0, command)
            self.assertIn("Usage: " + usage, out)
        rc, _, err = self.keygen("frobnicate")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("unknown command", err)
        rc, _, err = self.keygen("show", "x.crt", "--mesh", "m")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("--mesh does not apply", err)


if __name__ == "__main__":
    if not os.access(KEYGEN, os.X_OK):
        raise SystemExit("error: not built: %s (run make all)" % KEYGEN)
    unittest.main(verbosity=2)
