#!/usr/bin/python3
"""Mesh CA identities end to end (issue 4, docs/security.md): real
files from pigato-keygen (ca init, issue, revoke), a broker whose ACL says
`trust ca/ca.crt certs/` and `revoked ca/ca.crl`, raw pyzmq peers holding
issued key pairs, and the pigato CLI taking the broker's certificate as
--server-key and checking it against --ca.

What is proven: issued identities get in under their CN and follow the
allow/deny rules; a key that was never issued, a revoked certificate, an
expired one and one from a foreign CA are refused at the handshake, and a
revoked or expired one also on its live connection's next message; broken
files in the certificate folder are logged and skipped; the client refuses
a broker certificate the CA did not sign (exit 64) before connecting; and
through ctypes, the C API checks in either order of set_server_key and
set_server_ca and connect fails closed after a failed check.

The only waits on the clock are for certificates to expire (issued with
--valid 3s; we poll `openssl x509 -checkend 0` until it says expired)."""

import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

from zmq.utils import z85

import harness
from harness import CLI_BIN, KeyPair, MeshTestCase, secs, write_acl

KEYGEN_BIN = os.path.join(harness.BUILD, "pigato-keygen")
EX_USAGE = 64
LONG = '{"timeout":30000}'      # far longer than any "at once" below
AT_ONCE = 1.5                   # seconds: "immediately" for a denial

# Tests pass what they mean; an inherited PIGATO_CA would change the CLI's
# behaviour (the harness clears the other PIGATO_* variables itself).
os.environ.pop("PIGATO_CA", None)


def fingerprint(public_z85):
    """The broker's key fingerprint: BLAKE2b-256 of the 32-byte key, first
    8 bytes in hex."""
    raw = z85.decode(harness.b(public_z85))
    return hashlib.blake2b(raw, digest_size=32).digest()[:8].hex()


def denied_json(service):
    return json.dumps("E_ACCESS_DENIED %s" % service).encode()


class Issued:
    """An identity made by `pigato-keygen issue NAME --ca CA -o DIR`:
    DIR/NAME.key, DIR/NAME.key_secret (czmq zcert) and DIR/NAME.crt. The
    keys are read back from the zcert files for raw peers (harness
    keypair=) and for the harness Broker (key=)."""

    def __init__(self, directory, name):
        self.name = name
        self.public_file = os.path.join(directory, name + ".key")
        self.secret_file = os.path.join(directory, name + ".key_secret")
        self.crt = os.path.join(directory, name + ".crt")
        with open(self.public_file) as f:
            self.public = re.search(r'public-key = "(.{40})"', f.read()).group(1)
        with open(self.secret_file) as f:
            self.secret = re.search(r'secret-key = "(.{40})"', f.read()).group(1)


class CertCase(MeshTestCase):
    """A mesh CA in tmp/ca, identities issued into tmp/ids, certificates
    the broker trusts copied into tmp/certs, the broker's own identity in
    tmp/broker (its key_secret is the broker's --key)."""

    CURVE = True
    START_BROKER = False

    def setUp(self):
        MeshTestCase.setUp(self)
        self.ca = os.path.join(self.tmp, "ca")
        self.ca_crt = os.path.join(self.ca, "ca.crt")
        self.ids = os.path.join(self.tmp, "ids")
        self.certdir = os.path.join(self.tmp, "certs")
        self.acl_path = os.path.join(self.tmp, "mesh.acl")
        os.mkdir(self.ids)
        os.mkdir(self.certdir)
        self.keygen("ca", "init", "-o", self.ca)
        self.broker_id = self.issue("broker", out=os.path.join(self.tmp, "broker"),
                                    trusted=False)

    # -- files ---------------------------------------------------------------

    def keygen(self, *args):
        """Runs pigato-keygen; fails the test unless it exits 0."""
        r = subprocess.run([KEYGEN_BIN] + [str(a) for a in args], capture_output=True,
                           text=True, timeout=secs(30))
        self.assertEqual(r.returncode, 0, "pigato-keygen %s failed:\n%s%s"
                         % (" ".join(map(str, args)), r.stdout, r.stderr))
        return r.stdout

    def issue(self, name, ca=None, valid=None, out=None, trusted=True):
        """Issues NAME (into tmp/ids unless out), and copies NAME.crt into
        the trusted folder unless trusted is False. Returns an Issued."""
        out = out or self.ids
        args = ["issue", name, "--ca", ca or self.ca, "-o", out]
        if valid:
            args += ["--valid", valid]
        self.keygen(*args)
        issued = Issued(out, name)
        if trusted:
            shutil.copy(issued.crt, self.certdir)
        return issued

    def foreign_ca(self, name, mesh="default"):
        """Another CA (same mesh name unless told: only the signature tells
        them apart)."""
        path = os.path.join(self.tmp, name)
        self.keygen("ca", "init", "--mesh", mesh, "-o", path)
        return path

    # -- broker --------------------------------------------------------------

    def cert_broker(self, rules, heartbeat=None):
        """A broker with the broker identity's key and an ACL that trusts
        the CA's certificates in tmp/certs, minus its CRL, plus rules."""
        write_acl(self.acl_path, "trust  ca/ca.crt certs/\nrevoked ca/ca.crl\n" + rules)
        self.broker = self.start_broker(acl=self.acl_path, key=self.broker_id,
                                        heartbeat=heartbeat)
        return self.broker

    def sighup(self):
        """Reloads the broker's ACL; waits until it is in effect."""
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        m = self.wait_log(r"event=acl_reloaded\b", 5, mark)
        self.assertIsNotNone(m, "SIGHUP: no acl_reloaded\n" + self.broker.tail(15))
        return mark

    def assert_logged(self, regex, since=0, timeout=3, what=None):
        m = self.wait_log(regex, timeout, since)
        self.assertIsNotNone(m, "%s: no broker log line %r\n%s"
                             % (what or "log", regex, self.broker.tail(20)))
        return m

    def assert_skipped(self, path, reason, since=0):
        """The broker logged that it skipped the certificate file path."""
        return self.assert_logged(r'event=cert_skipped path=\S*%s reason=".*%s'
                                  % (re.escape(os.path.basename(path)), reason),
                                  since, what="skipped " + os.path.basename(path))

    def trust_loaded(self, since=0):
        m = self.assert_logged(r"event=trust_loaded ca=\S+ dir=\S+ identities=(\d+) "
                               r"skipped=(\d+)", since)
        return int(m.group(1)), int(m.group(2))

    # -- peers ---------------------------------------------------------------

    def round_trip(self, client, worker, service, rid):
        client.request(service, rid, '"ping"', LONG)
        req = worker.next_request(5)
        self.assertIsNotNone(req, "request %s to %s never reached the worker\n%s"
                             % (rid, service, self.broker.tail(10)))
        self.assertEqual(req.rid, harness.b(rid))
        worker.reply(req, '"re:%s"' % rid)
        _, final = client.final(rid, 5)
        self.assertIsNotNone(final, "no reply for request %s\n%s" % (rid, self.broker.tail(10)))
        self.assertEqual((final.status, final.data), (b"0", ('"re:%s"' % rid).encode()))

    def assert_denied_at_once(self, client, service, rid):
        t0 = time.monotonic()
        client.request(service, rid, '"x"', LONG)
        _, final = client.final(rid, AT_ONCE)
        self.assertIsNotNone(final, "request %s to %s got no final error within %ss\n%s"
                             % (rid, service, AT_ONCE, self.broker.tail(10)))
        self.assertEqual((final.status, final.data), (b"-1", denied_json(service)))
        self.assertLess(time.monotonic() - t0, secs(AT_ONCE))

    def assert_refused_at_handshake(self, keypair, reason):
        """A new connection with keypair's key: the ZAP handler says no
        (logged with the key's fingerprint and reason), nothing comes
        back. It sends once: a refused DEALER has no pipe and would
        block."""
        mark = self.broker.mark()
        c = self.client(keypair=keypair, auto_heartbeat=False)
        c.request("echo", "knock-%s" % keypair.name, '"let me in"', LONG)
        self.assert_logged(r"event=zap_deny address=\S+ key=%s mechanism=CURVE reason=%s\b"
                           % (fingerprint(keypair.public), reason), mark,
                           what="handshake of %s" % keypair.name)
        self.mesh.settle(secs(0.5))
        self.assertEqual(c.received, [], "%s got answers: %r" % (keypair.name, c.received))
        c.close()

    def wait_disconnect(self, worker, what):
        got = worker.recv(lambda m: m[:2] == [b"W", b"5"], 3, skip_noise=False)
        self.assertIsNotNone(got, "%s: worker got no DISCONNECT (W,5)\n%s"
                             % (what, self.broker.tail(15)))

    def wait_expired(self, *crts, timeout=10):
        """Waits (pumping the peers) until openssl says every certificate
        has expired: the one place these tests wait on the clock."""
        deadline = time.monotonic() + secs(timeout)
        for crt in crts:
            while subprocess.run(["openssl", "x509", "-checkend", "0", "-noout", "-in", crt],
                                 capture_output=True).returncode != 1:
                self.assertLess(time.monotonic(), deadline, "%s did not expire" % crt)
                self.mesh.settle(0.1)

    # -- CLI -----------------------------------------------------------------

    def cli_args(self, broker=None, ca=True, server_key=None):
        """pigato options for the broker: its certificate as --server-key,
        and the CA to check it with unless ca is False."""
        broker = broker or self.broker
        args = ["--broker", broker.endpoint, "--heartbeat", str(broker.heartbeat),
                "--server-key", server_key or self.broker_id.crt]
        if ca:
            args += ["--ca", self.ca_crt if ca is True else ca]
        return args

    def serve(self, service, *extra):
        """`pigato serve SERVICE --echo EXTRA`; waits until registered."""
        mark = self.broker.mark()
        p = self.start([CLI_BIN, "serve", service, "--echo"] + list(extra),
                       name="serve-" + service)
        m = self.broker.wait_for_log(r"event=worker_ready\b.*\bservice=%s\b" % re.escape(service),
                                     timeout=10, since=mark)
        self.assertIsNotNone(m, "pigato serve %s never registered\n%s\n%s"
                             % (service, p.tail(), self.broker.tail(20)))
        return p


# --------------------------------------------------------------------------

RULES = """\
allow web   serve *
allow api   call  echo
allow carol call  echo
allow ops   call  *
deny  ops   call  echo
"""


class IssuedIdentityTest(CertCase):

    def test_issued_identities_get_in_by_cn_and_follow_the_rules(self):
        web, api, ops = (self.issue(n) for n in ("web", "api", "ops"))
        # The identity is the certificate's CN, not its file name
        carol = self.issue("carol", trusted=False)
        shutil.copy(carol.crt, os.path.join(self.certdir, "zz-not-carol.crt"))
        self.cert_broker(RULES)
        self.assertEqual(self.trust_loaded(), (4, 0))

        # The CLI with issued key files (NAME.key_secret from issue), the
        # broker's certificate as --server-key, checked against the CA
        self.serve("echo", "--key", web.secret_file, *self.cli_args())
        rc, out, err = self.cli("request", "echo", '"from api"', "--timeout", "5000",
                                "--key", api.secret_file, *self.cli_args())
        self.assertEqual((rc, out), (0, '"from api"'), err)
        rc, out, err = self.cli("request", "echo", '"from carol"', "--timeout", "5000",
                                "--key", carol.secret_file, *self.cli_args())
        self.assertEqual((rc, out), (0, '"from carol"'), err)

        # Denials by CN: deny beats allow for ops; api may call echo only
        mark = self.broker.mark()
        for who, service in ((ops, "echo"), (api, "other")):
            rc, out, err = self.cli("request", service, '"x"', "--timeout", "30000",
                                    "--key", who.secret_file, *self.cli_args())
            self.assertEqual(rc, 1, "%s calling %s: %s" % (who.name, service, err))
            self.assertIn("E_ACCESS_DENIED %s" % service, err)
            self.assert_logged(r"event=access_denied .*key=%s identity=%s verb=call "
                               r"service=%s reason=not_allowed\b"
                               % (fingerprint(who.public), who.name, service), mark)
        # serve rights by CN too: api has none
        w = self.worker(keypair=api)
        w.send("W", "1", "echo")
        self.wait_disconnect(w, "READY by api (no serve rule)")
        # Raw peers with the same issued keys: allowed round trip
        ww = self.worker(keypair=web)
        self.assertIsNotNone(ww.ready("raw"))
        self.round_trip(self.client(keypair=ops), ww, "raw", "ops-1")

    def test_key_that_was_never_issued_is_refused_at_the_handshake(self):
        web, api = self.issue("web"), self.issue("api")
        # A valid CURVE key pair, named in the rules, never issued; its
        # public zcert file in the folder is not a certificate
        mallory = KeyPair(self.ids, "mallory")
        shutil.copy(mallory.public_file, self.certdir)
        self.cert_broker(RULES + "allow mallory call *\n")
        self.assertEqual(self.trust_loaded(), (2, 0))
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.assert_refused_at_handshake(mallory, "unknown_key")
        self.assertEqual(w.requests_now(0), [], "a refused key's request was dispatched")
        # The CLI with that key gets nowhere, and says why at once (exit 3)
        start = time.monotonic()
        rc, out, err = self.cli("request", "echo", '"x"', "--timeout", "30000",
                                "--key", mallory.secret_file, *self.cli_args())
        self.assertEqual((rc, out), (3, ""), err)
        self.assertIn("the broker refused this key", err)
        self.assertLess(time.monotonic() - start, secs(2.5), "not at once: " + err)
        self.assertEqual(w.requests_now(0), [])
        # Control: an issued identity on the same broker
        self.round_trip(self.client(keypair=api), w, "echo", "api-1")


class RevocationTest(CertCase):

    def test_revoked_certificate_refused_live_and_at_handshake(self):
        ids = {n: self.issue(n) for n in ("api", "api2", "web", "web2")}
        self.cert_broker("allow * call *\nallow * serve *\n")
        self.assertEqual(self.trust_loaded(), (4, 0))
        w_keep, w_gone = self.worker(keypair=ids["web"]), self.worker(keypair=ids["web2"])
        self.assertIsNotNone(w_keep.ready("echo"))
        self.assertIsNotNone(w_gone.ready("echo.b"))
        c_keep, c_gone = self.client(keypair=ids["api2"]), self.client(keypair=ids["api"])
        self.round_trip(c_gone, w_keep, "echo", "before-1")
        self.round_trip(c_keep, w_gone, "echo.b", "before-2")

        # Both forms of revoke: a certificate path, and NAME with -o DIR
        self.keygen("revoke", ids["api"].crt, "--ca", self.ca)
        self.keygen("revoke", "web2", "--ca", self.ca, "-o", self.ids)
        # The broker reads the CRL at (re)load only: still in until SIGHUP
        self.round_trip(c_gone, w_keep, "echo", "before-3")
        mark = self.sighup()
        self.assert_skipped("api.crt", "revoked", mark)
        self.assert_skipped("web2.crt", "revoked", mark)
        self.assertEqual(self.trust_loaded(mark), (2, 2))

        # Live connections: the revoked client's next request is refused
        # at once, the revoked worker is told to go (W,5)
        self.assert_denied_at_once(c_gone, "echo", "after-1")
        self.assert_logged(r"event=access_denied .*key=%s identity=api verb=call "
                           r"service=echo reason=identity_revoked\b"
                           % fingerprint(ids["api"].public), mark)
        self.wait_disconnect(w_gone, "revoked worker web2")
        self.assertEqual(w_keep.requests_now(0), [], "a revoked request was dispatched")
        # New handshakes with the revoked keys
        self.assert_refused_at_handshake(ids["api"], "unknown_key")
        self.assert_refused_at_handshake(ids["web2"], "unknown_key")
        # The others carry on
        self.round_trip(c_keep, w_keep, "echo", "after-2")
        # The CLI with a revoked certificate's key says why at once (exit 3)
        start = time.monotonic()
        rc, out, err = self.cli("request", "echo", '"x"', "--timeout", "30000",
                                "--key", ids["api"].secret_file, *self.cli_args())
        self.assertEqual((rc, out), (3, ""), err)
        self.assertIn("the broker refused this key", err)
        self.assertLess(time.monotonic() - start, secs(2.5), "not at once: " + err)


class ExpiryTest(CertCase):
    HEARTBEAT = 300

    def test_expired_certificate_refused_on_next_message_and_at_handshake(self):
        valid = "%ds" % max(3, round(3 * harness.SLOW))
        api, web = self.issue("api"), self.issue("web")
        brief, briefw = self.issue("brief", valid=valid), self.issue("briefw", valid=valid)
        self.cert_broker("allow * call *\nallow * serve *\n")
        self.assertEqual(self.trust_loaded(), (4, 0))
        w, w_brief = self.worker(keypair=web), self.worker(keypair=briefw)
        self.assertIsNotNone(w.ready("echo"))
        self.assertIsNotNone(w_brief.ready("echo.brief"))
        c, c_brief = self.client(keypair=api), self.client(keypair=brief)
        self.round_trip(c_brief, w, "echo", "fresh-1")
        self.round_trip(c, w_brief, "echo.brief", "fresh-2")

        self.wait_expired(brief.crt, briefw.crt)
        mark = self.broker.mark()
        # The worker's next heartbeat gets it disconnected; the client's
        # next request is refused at once. No reload needed.
        self.wait_disconnect(w_brief, "expired worker briefw")
        self.assert_logged(r"event=access_denied .*key=%s identity=briefw verb=serve "
                           r".*reason=identity_revoked\b" % fingerprint(briefw.public), mark)
        self.assert_denied_at_once(c_brief, "echo", "late-1")
        self.assert_logged(r"event=access_denied .*key=%s identity=brief verb=call "
                           r"service=echo reason=identity_revoked\b"
                           % fingerprint(brief.public), mark)
        self.assertEqual(w.requests_now(0), [], "an expired identity's request was dispatched")
        self.assert_refused_at_handshake(brief, "certificate_expired")
        # After a reload the expired certificates are not loaded at all
        mark = self.sighup()
        self.assert_skipped("brief.crt", "expired", mark)
        self.assert_skipped("briefw.crt", "expired", mark)
        self.assert_refused_at_handshake(brief, "unknown_key")
        self.round_trip(c, w, "echo", "still-1")

    def test_client_refuses_an_expired_broker_certificate_with_ca(self):
        valid = "%ds" % max(3, round(3 * harness.SLOW))
        short = self.issue("broker-short", valid=valid, out=os.path.join(self.tmp, "short"),
                           trusted=False)
        self.broker = self.start_broker(key=short)          # --allow-any
        self.serve("echo", *self.cli_args(server_key=short.crt))
        self.wait_expired(short.crt)
        # The certificate only carries the key: without --ca it still works
        rc, out, err = self.cli("request", "echo", '"old key"', "--timeout", "5000",
                                *self.cli_args(ca=False, server_key=short.crt))
        self.assertEqual((rc, out), (0, '"old key"'), err)
        # With --ca: refused before connecting, saying why
        rc, out, err = self.cli("request", "echo", '"x"', "--timeout", "5000",
                                *self.cli_args(server_key=short.crt))
        self.assertEqual((rc, out), (EX_USAGE, ""), err)
        self.assertRegex(err, r"server certificate '\S*broker-short\.crt' \(broker-short\): "
                              r"expired on ")


class RenewalTest(CertCase):
    """Issue 15: `pigato-keygen renew` keeps the key, so the broker's
    certificate is renewed without a restart and PIGATO_CA clients go on;
    the broker warns ahead of its own and its identities' expiry."""

    EXPIRING = (r"event=certificate_expiring kind=%s name=%s path=\S*%s\.crt days=(\d+) "
                r"not_after=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

    def start_cert_broker(self, issued, extra=(), acl=None):
        """A broker whose --key is its certificate (NAME.key_secret beside it)."""
        return self.start_broker(key=issued, acl=acl,
                                 extra=["--key", issued.crt] + list(extra))

    def ca_request(self, issued, text):
        """`pigato request echo` checking the broker's certificate with the
        CA through PIGATO_SERVER_KEY and PIGATO_CA."""
        return self.cli("request", "echo", json.dumps(text), "--timeout", "5000",
                        "--broker", self.broker.endpoint,
                        env={"PIGATO_SERVER_KEY": issued.crt, "PIGATO_CA": self.ca_crt})

    def serial(self, crt):
        return re.search(r"serial:\s+(\S+)", self.keygen("show", crt)).group(1)

    def test_broker_warns_ahead_of_its_certificate_and_renewal_ends_it(self):
        soon = self.issue("broker-soon", valid="2d", out=os.path.join(self.tmp, "soon"),
                          trusted=False)
        self.broker = self.start_cert_broker(soon)
        m = self.assert_logged(self.EXPIRING % ("broker", "broker-soon", "broker-soon"),
                               what="warning at start")
        self.assertIn(int(m.group(1)), (1, 2))
        self.assertEqual(self.broker.count(r"warning event=certificate_expiring\b"), 1)
        self.serve("echo", *self.cli_args(server_key=soon.crt))
        self.assertEqual(self.ca_request(soon, "before")[:2], (0, '"before"'))

        old_serial = self.serial(soon.crt)
        out = self.keygen("renew", soon.crt, "--ca", self.ca)
        self.assertRegex(out, r"public key:\s+%s \(unchanged\)" % re.escape(soon.public))
        self.assertNotEqual(self.serial(soon.crt), old_serial)
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assert_logged(r"event=acl_reload_skipped\b", mark)
        self.mesh.settle(secs(0.5))
        self.assertEqual(self.broker.count(r"event=certificate_expiring\b", mark), 0,
                         self.broker.tail(10))
        # Same key: the running worker and new PIGATO_CA clients go on
        self.assertEqual(self.ca_request(soon, "after")[:2], (0, '"after"'))
        self.assert_broker_alive()

        # A restart does not warn either; a wider window does
        self.broker.stop()
        self.broker = self.start_cert_broker(soon, extra=["--cert-warn-days", "100"])
        m = self.assert_logged(self.EXPIRING % ("broker", "broker-soon", "broker-soon"))
        self.assertIn(int(m.group(1)), (89, 90))
        self.broker.stop()
        self.broker = self.start_cert_broker(soon)
        self.mesh.settle(secs(0.5))
        self.assertEqual(self.broker.count(r"event=certificate_expiring\b"), 0)

    def test_expired_broker_certificate_renewed_without_a_restart(self):
        valid = "%ds" % max(3, round(3 * harness.SLOW))
        short = self.issue("broker-short", valid=valid, out=os.path.join(self.tmp, "short"),
                           trusted=False)
        self.broker = self.start_cert_broker(short)
        self.assert_logged(self.EXPIRING % ("broker", "broker-short", "broker-short"))
        self.serve("echo", *self.cli_args(server_key=short.crt, ca=False))
        self.wait_expired(short.crt)
        rc, out, err = self.ca_request(short, "x")
        self.assertEqual((rc, out), (EX_USAGE, ""), err)
        self.assertIn("expired on", err)
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assert_logged(r"error event=certificate_expired kind=broker name=broker-short "
                           r"path=\S*broker-short\.crt not_after=\S+Z", mark)
        # Renewed in place: the broker keeps running with the same key
        self.keygen("renew", "broker-short", "--ca", self.ca, "-o", os.path.dirname(short.crt))
        rc, out, err = self.ca_request(short, "renewed")
        self.assertEqual((rc, out), (0, '"renewed"'), err)

    def test_identity_certificates_warned_and_renewed_in_the_trust_folder(self):
        web = self.issue("web", valid="3d")
        api = self.issue("api")
        self.cert_broker("allow * call *\nallow * serve *\n")
        self.assert_logged(self.EXPIRING % ("identity", "web", "web"))
        self.assertEqual(self.broker.count(r"name=api\b"), 0)
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        # Renewed beside the old one (another file, same key): one identity,
        # valid to the later date, and no more warning
        self.keygen("renew", web.crt, "--ca", self.ca, "-o", os.path.join(self.tmp, "new"))
        shutil.copy(os.path.join(self.tmp, "new", "web.crt"),
                    os.path.join(self.certdir, "web-renewed.crt"))
        mark = self.sighup()
        self.assertEqual(self.trust_loaded(mark), (3, 0))
        self.assertEqual(self.broker.count(r"event=certificate_expiring\b", mark), 0,
                         self.broker.tail(10))
        self.round_trip(self.client(keypair=api), w, "echo", "api-1")

    def test_renew_refuses_what_it_must_not_certify(self):
        web = self.issue("web")
        def refused(*args):
            r = subprocess.run([KEYGEN_BIN, "renew"] + list(args), capture_output=True,
                               text=True, timeout=secs(30))
            self.assertEqual((r.returncode, r.stdout), (1, ""), r.stderr)
            return r.stderr
        rogue = self.foreign_ca("rogue-ca")
        self.assertRegex(refused(web.crt, "--ca", rogue),
                         r"web\.crt' \(web\) is not signed by the CA in '\S*rogue-ca'")
        # The key file beside it holds another key
        other = self.issue("other", trusted=False)
        shutil.copy(other.public_file, web.public_file)
        self.assertRegex(refused(web.crt, "--ca", self.ca),
                         r"holds another key than its key file '\S*web\.key'")
        api = self.issue("api")
        self.keygen("revoke", api.crt, "--ca", self.ca)
        self.assertRegex(refused("api", "-o", self.ids, "--ca", self.ca),
                         r"api\.crt' is revoked")
        # Renewal needs no secret and leaves it alone
        before = os.stat(other.secret_file)
        os.chmod(other.secret_file, 0)
        self.keygen("renew", other.crt, "--ca", self.ca)
        after = os.stat(other.secret_file)
        self.assertEqual((after.st_mtime_ns, after.st_size), (before.st_mtime_ns, before.st_size))


class ForeignAndBrokenFilesTest(CertCase):

    def test_certificate_from_a_foreign_ca_is_skipped_and_refused(self):
        web, api = self.issue("web"), self.issue("api")
        # Same mesh name, different CA key: only the signature differs
        rogue = self.foreign_ca("rogue-ca")
        intruder = self.issue("intruder", ca=rogue, out=os.path.join(self.tmp, "rogue"))
        self.cert_broker("allow * call *\nallow * serve *\n")
        self.assertEqual(self.trust_loaded(), (2, 1))
        self.assert_skipped("intruder.crt", "not signed by this CA")
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.assert_refused_at_handshake(intruder, "unknown_key")

        # At reload: one more from a CA of another mesh is skipped too, and
        # a new certificate of our CA is picked up
        other = self.foreign_ca("other-ca", mesh="other")
        outsider = self.issue("outsider", ca=other, out=os.path.join(self.tmp, "other"))
        late = self.issue("late")
        mark = self.sighup()
        self.assert_skipped("intruder.crt", "not signed by this CA", mark)
        self.assert_skipped("outsider.crt", "not signed by this CA", mark)
        self.assertEqual(self.trust_loaded(mark), (3, 2))
        self.assert_refused_at_handshake(outsider, "unknown_key")
        self.round_trip(self.client(keypair=late), w, "echo", "late-1")
        self.round_trip(self.client(keypair=api), w, "echo", "api-1")
        self.assertEqual(w.requests_now(0), [])

    def test_broken_files_in_the_folder_are_logged_and_skipped(self):
        web, api = self.issue("web"), self.issue("api")
        with open(api.crt) as f:
            pem = f.read()
        with open(os.path.join(self.certdir, "truncated.crt"), "w") as f:
            f.write(pem[:len(pem) * 2 // 3])
        with open(os.path.join(self.certdir, "garbage.crt"), "wb") as f:
            f.write(os.urandom(700))
        open(os.path.join(self.certdir, "empty.crt"), "w").close()
        # An Ed25519 certificate (another CA's own): not a CURVE identity
        shutil.copy(os.path.join(self.foreign_ca("rogue-ca"), "ca.crt"),
                    os.path.join(self.certdir, "notcurve.crt"))
        with open(os.path.join(self.certdir, "README.txt"), "w") as f:
            f.write("not a .crt: not even looked at\n")
        self.cert_broker("allow * call *\nallow * serve *\n")
        self.assertEqual(self.trust_loaded(), (2, 4))
        self.assert_skipped("truncated.crt", "truncated")
        self.assert_skipped("garbage.crt", "not a PEM certificate")
        self.assert_skipped("empty.crt", "not a PEM certificate")
        self.assert_skipped("notcurve.crt", "not an X25519 CURVE key")
        self.assertEqual(self.broker.count(r"README"), 0)
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.round_trip(self.client(keypair=api), w, "echo", "api-1")

        # A reload with one more broken file: logged, the policy goes on
        with open(os.path.join(self.certdir, "half.crt"), "w") as f:
            f.write(pem[:40])
        mark = self.sighup()
        self.assert_skipped("half.crt", "truncated", mark)
        self.assertEqual(self.trust_loaded(mark), (2, 5))
        self.assert_broker_alive()
        self.round_trip(self.client(keypair=api), w, "echo", "api-2")


class ClientServerCertTest(CertCase):
    """The client side: --server-key broker.crt, with and without --ca."""

    def setUp(self):
        CertCase.setUp(self)
        self.broker = self.start_broker(key=self.broker_id)     # --allow-any
        self.rogue = self.foreign_ca("rogue-ca")

    def request(self, *args, env=None):
        return self.cli("request", "echo", '"hi"', "--timeout", "5000", *args, env=env)

    def assert_refused(self, result, regex):
        rc, out, err = result
        self.assertEqual((rc, out), (EX_USAGE, ""), err)
        self.assertRegex(err, r"^pigato: " + regex)

    def test_broker_certificate_as_server_key(self):
        # A worker that checks the broker against the CA, too
        self.serve("echo", *self.cli_args())
        for args, env in ((self.cli_args(), None),                 # --ca ca.crt
                          (self.cli_args(ca=False), None),         # the .crt alone
                          (["--broker", self.broker.endpoint],
                           {"PIGATO_SERVER_KEY": self.broker_id.crt,
                            "PIGATO_CA": self.ca_crt})):
            rc, out, err = self.request(*args, env=env)
            self.assertEqual((rc, out), (0, '"hi"'), "%r %r: %s" % (args, env, err))
        # `openssl x509 -text` output (text before the PEM) works too
        text_crt = os.path.join(self.tmp, "broker-text.pem")
        with open(text_crt, "w") as f:
            subprocess.run(["openssl", "x509", "-in", self.broker_id.crt, "-text"],
                           stdout=f, check=True)
        rc, out, err = self.request(*self.cli_args(server_key=text_crt))
        self.assertEqual((rc, out), (0, '"hi"'), err)

    def test_foreign_ca_refuses_to_connect(self):
        self.serve("echo", *self.cli_args())
        mark = self.broker.mark()
        rogue_crt = os.path.join(self.rogue, "ca.crt")
        not_signed = (r"server certificate '\S*broker\.crt' \(broker\): not signed by "
                      r"this CA \(issuer CN=pigato mesh CA default\)")
        t0 = time.monotonic()
        self.assert_refused(self.request(*self.cli_args(ca=rogue_crt)), not_signed)
        self.assertLess(time.monotonic() - t0, secs(3), "refused, but not before connecting")
        self.assert_refused(self.request("--broker", self.broker.endpoint,
                                         env={"PIGATO_SERVER_KEY": self.broker_id.crt,
                                              "PIGATO_CA": rogue_crt}), not_signed)
        # A broker certificate from the wrong CA, checked against ours
        fake = self.issue("broker", ca=self.rogue, out=os.path.join(self.tmp, "fake"),
                          trusted=False)
        self.assert_refused(self.request(*self.cli_args(server_key=fake.crt)),
                            r"server certificate '\S*fake/broker\.crt' \(broker\): not "
                            r"signed by this CA")
        # A worker refuses to start the same way, and never registers
        p = self.start([CLI_BIN, "serve", "echo2", "--echo"] + self.cli_args(ca=rogue_crt))
        self.assertEqual(p.wait(10), EX_USAGE, p.tail())
        self.assertRegex(p.text(), r"^pigato: " + not_signed)
        self.assertEqual(self.broker.count(r"service=echo2\b", mark), 0)
        # No connection was ever attempted by the refused peers
        self.assertEqual(self.broker.count(r"event=(zap_deny|request)\b", mark), 0)

    def test_ca_needs_a_certificate_and_bad_files_are_named(self):
        needs_cert = (r"the server CA '\S*ca\.crt' needs the server key as a "
                      r"certificate")
        z85 = self.broker_id.public
        for key in (self.broker_id.public_file, z85):
            self.assert_refused(self.request(*self.cli_args(server_key=key)), needs_cert)
        self.assert_refused(self.request(*self.cli_args(ca=os.path.join(self.ca, "ca.key"))),
                            r"server CA: '\S*ca\.key' is not a PEM certificate")
        self.assert_refused(self.request(*self.cli_args(ca=self.broker_id.crt)),
                            r"server CA: '\S*broker\.crt' is not a CA certificate")
        broken = os.path.join(self.tmp, "broken.crt")
        with open(self.broker_id.crt) as f:
            pem = f.read()
        with open(broken, "w") as f:
            f.write(pem[:len(pem) // 2])
        self.assert_refused(self.request(*self.cli_args(server_key=broken, ca=False)),
                            r"server key: '\S*broken\.crt': cannot parse the certificate "
                            r"\(truncated or damaged PEM\?\)")
        self.assert_refused(self.request(*self.cli_args(server_key=self.ca_crt, ca=False)),
                            r"server key: '\S*ca\.crt': the certificate's key is ED25519, "
                            r"not an X25519 CURVE key")
        self.assert_refused(self.request(*self.cli_args(server_key=broken + ".missing",
                                                        ca=False)),
                            r"cannot read server key '\S*broken\.crt\.missing': no such file")
        rc, out, err = self.cli("request", "echo", "--insecure", "--ca", self.ca_crt)
        self.assertEqual(rc, EX_USAGE, err)
        self.assertIn("--ca", err)
        # A valid certificate of our CA, but not the broker's key: the CA
        # check passes, the CURVE handshake cannot (exit 4, at once)
        api = self.issue("api", trusted=False)
        start = time.monotonic()
        rc, out, err = self.cli("request", "echo", '"x"', "--timeout", "30000",
                                *self.cli_args(server_key=api.crt))
        self.assertEqual((rc, out), (4, ""), err)
        self.assertIn("no handshake with the broker", err)
        self.assertLess(time.monotonic() - start, secs(2.5), "not at once: " + err)


def asan_runtime():
    """The ASan runtime libpigato.so was linked with (SANITIZE builds), or
    None. ctypes can load such a library only if the runtime came first."""
    lib = os.path.join(harness.BUILD, "libpigato.so")
    out = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    m = re.search(r"(\S*libasan\.so\S*) => (\S+)", out)
    return m.group(2) if m else None


def preloaded_if_sanitized(method):
    """Runs the test in a child python with the ASan runtime preloaded when
    the library needs it (leak checks off: python's own would drown ours;
    valgrind and the C unit tests cover leaks)."""
    @functools.wraps(method)
    def wrapper(self):
        runtime = asan_runtime()
        if runtime and runtime not in os.environ.get("LD_PRELOAD", ""):
            env = dict(os.environ, LD_PRELOAD=runtime, ASAN_OPTIONS="detect_leaks=0")
            r = subprocess.run([sys.executable, os.path.abspath(__file__),
                                "LibraryApiTest." + method.__name__],
                               env=env, capture_output=True, text=True, timeout=secs(60))
            self.assertEqual(r.returncode, 0, "child with %s:\n%s" % (runtime, r.stderr))
            self.assertIn(" ... ok", r.stderr)
            return
        self.load_library()
        method(self)
    return wrapper


class LibraryApiTest(CertCase):
    """The C API through ctypes (libpigato.so): pigato_key_public reads a
    certificate; pigato_*_set_server_ca checks whenever the CA and the
    server key are both known, in either order, and connect fails closed
    after a failed check. No broker is needed: connect is asynchronous."""

    KEY_ERROR = -3      # PIGATO_E_KEY

    def setUp(self):
        CertCase.setUp(self)
        self.clients = []

    def load_library(self):
        lib = ctypes.CDLL(os.path.join(harness.BUILD, "libpigato.so"))
        lib.pigato_client_new.restype = ctypes.c_void_p
        lib.pigato_client_error.restype = ctypes.c_char_p
        lib.pigato_worker_new.restype = ctypes.c_void_p
        lib.pigato_worker_error.restype = ctypes.c_char_p
        for name in ("client", "worker"):
            for verb in ("set_server_key", "set_server_ca", "connect"):
                getattr(lib, "pigato_%s_%s" % (name, verb)).argtypes = [ctypes.c_void_p,
                                                                       ctypes.c_char_p]
            getattr(lib, "pigato_%s_error" % name).argtypes = [ctypes.c_void_p]
            getattr(lib, "pigato_%s_destroy" % name).argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.endpoint = ("tcp://127.0.0.1:%d" % harness.free_port()).encode()
        self.rogue_crt = os.path.join(self.foreign_ca("rogue-ca"), "ca.crt")

    def tearDown(self):
        for client in self.clients:
            self.lib.pigato_client_destroy(ctypes.byref(client))
        CertCase.tearDown(self)

    def client_new(self):
        client = ctypes.c_void_p(self.lib.pigato_client_new())
        self.clients.append(client)
        return client

    def call(self, verb, client, arg):
        rc = getattr(self.lib, "pigato_client_" + verb)(
            client, arg.encode() if isinstance(arg, str) else arg)
        return rc, self.lib.pigato_client_error(client).decode()

    @preloaded_if_sanitized
    def test_key_public_reads_a_certificate(self):
        z85 = ctypes.create_string_buffer(41)
        err = ctypes.create_string_buffer(256)
        rc = self.lib.pigato_key_public(self.broker_id.crt.encode(), z85, err, 256)
        self.assertEqual((rc, z85.value.decode()), (0, self.broker_id.public), err.value)
        rc = self.lib.pigato_key_public(self.ca_crt.encode(), z85, err, 256)
        self.assertEqual(rc, self.KEY_ERROR)
        self.assertRegex(err.value.decode(), r"^key: '\S*ca\.crt': the certificate's key is "
                                             r"ED25519, not an X25519 CURVE key$")

    @preloaded_if_sanitized
    def test_ca_check_in_either_order_and_connect_fails_closed(self):
        crt = self.broker_id.crt
        # CA first, then the certificate: checked at the second call
        ok = self.client_new()
        self.assertEqual(self.call("set_server_ca", ok, self.ca_crt)[0], 0)
        self.assertEqual(self.call("set_server_key", ok, crt)[0], 0)
        self.assertEqual(self.call("connect", ok, self.endpoint)[0], 0)

        not_signed = r"^server certificate '\S*broker\.crt' \(broker\): not signed by this CA"
        bad = self.client_new()
        self.assertEqual(self.call("set_server_ca", bad, self.rogue_crt)[0], 0)
        rc, err = self.call("set_server_key", bad, crt)
        self.assertEqual(rc, self.KEY_ERROR)
        self.assertRegex(err, not_signed)
        # An application that ignores the error still cannot connect
        rc, err = self.call("connect", bad, self.endpoint)
        self.assertEqual(rc, self.KEY_ERROR)
        self.assertRegex(err, not_signed)

        # Certificate first, then the CA; removing the CA removes the check
        later = self.client_new()
        self.assertEqual(self.call("set_server_key", later, crt)[0], 0)
        rc, err = self.call("set_server_ca", later, self.rogue_crt)
        self.assertEqual(rc, self.KEY_ERROR)
        self.assertRegex(err, not_signed)
        self.assertEqual(self.call("connect", later, self.endpoint)[0], self.KEY_ERROR)
        self.assertEqual(self.call("set_server_ca", later, None)[0], 0)
        self.assertEqual(self.call("connect", later, self.endpoint)[0], 0)

        # A Z85 server key with a CA: accepted when set, refused at connect;
        # giving the certificate afterwards fixes it
        z85 = self.client_new()
        self.assertEqual(self.call("set_server_key", z85, self.broker_id.public)[0], 0)
        self.assertEqual(self.call("set_server_ca", z85, self.ca_crt)[0], 0)
        rc, err = self.call("connect", z85, self.endpoint)
        self.assertEqual(rc, self.KEY_ERROR)
        self.assertRegex(err, r"needs the server key as a certificate")
        self.assertEqual(self.call("set_server_key", z85, crt)[0], 0)
        self.assertEqual(self.call("connect", z85, self.endpoint)[0], 0)

    @preloaded_if_sanitized
    def test_worker_checks_the_same_way(self):
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        handler = handler_type(lambda *args: None)
        self.lib.pigato_worker_new.argtypes = [ctypes.c_char_p, handler_type, ctypes.c_void_p]
        worker = ctypes.c_void_p(self.lib.pigato_worker_new(b"svc", handler, None))
        self.assertTrue(worker.value)
        try:
            self.assertEqual(self.lib.pigato_worker_set_server_key(
                worker, self.broker_id.crt.encode()), 0)
            self.assertEqual(self.lib.pigato_worker_set_server_ca(
                worker, self.rogue_crt.encode()), self.KEY_ERROR)
            self.assertRegex(self.lib.pigato_worker_error(worker).decode(),
                             r"not signed by this CA")
            self.assertEqual(self.lib.pigato_worker_connect(worker, self.endpoint),
                             self.KEY_ERROR)
            self.assertEqual(self.lib.pigato_worker_set_server_ca(
                worker, self.ca_crt.encode()), 0)
            self.assertEqual(self.lib.pigato_worker_connect(worker, self.endpoint), 0)
        finally:
            self.lib.pigato_worker_destroy(ctypes.byref(worker))


if __name__ == "__main__":
    harness.main()
