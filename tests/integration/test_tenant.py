#!/usr/bin/python3
"""A hostile tenant learns nothing and harms no one (the review that
attacked the broker with its own keys): real brokers, keys and
certificates from pigato-keygen, raw pyzmq peers.

What is proven, one class per finding:
 * HandshakeFloodTest (8): a flood of refused handshakes is logged at
   most 20 lines a second, every refusal is counted (zap_denied in the
   broker's event=stopped line), and the lines held back are summed up
   in event=zap_deny_suppressed, even after the flood has stopped.
 * SpecialFilesTest (11): a FIFO named x.crt in the trust folder, or
   given as the ACL, CRL or key file, is refused and named; the broker
   neither hangs at start nor on SIGHUP, and exits on SIGTERM.
 * PinnedNameTest (12): a CA-issued certificate whose CN is the name an
   `identity` line pins does not authenticate.
 * CrlTest (13): an older CRL (lower number) is refused on SIGHUP, an
   expired one at start and on SIGHUP; `pigato-keygen crl` renews.
 * SecretTextTest (14): the broker's secret key text is not left in
   its heap after start (read from /proc/PID/mem).
 * LogInjectionTest (16): a certificate file name holding a newline
   gives one log line, with the newline escaped.
 * OptsBombTest (found later): request or heartbeat opts of 15 MiB of
   small JSON arrays made the broker parse them (4 s) into 700 MB of
   JSON values; opts over 64 KiB are refused unparsed.
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import time

import zmq

import harness
from harness import secs, write_acl
from test_certs import KEYGEN_BIN, CertCase

ALLOW_ALL = "allow * call *\nallow * serve *\n"


class HandshakeFloodTest(CertCase):

    FLOOD = 150

    def test_refusals_are_rate_limited_counted_and_summed_up(self):
        web = self.issue("web")
        self.cert_broker(ALLOW_ALL)
        mark = self.broker.mark()
        sockets = []
        try:
            # Keys the broker never heard of; one handshake each (no
            # reconnect within the test)
            for _ in range(self.FLOOD):
                s = self.mesh.ctx.socket(zmq.DEALER)
                s.linger = 0
                s.reconnect_ivl = 600000
                public, secret = zmq.curve_keypair()
                s.curve_serverkey = harness.b(self.broker_id.public)
                s.curve_publickey = public
                s.curve_secretkey = secret
                s.connect(self.broker.endpoint)
                sockets.append(s)

            def logged():
                lines = self.broker.count(r"event=zap_deny address=", mark)
                held = sum(int(n) for n in re.findall(
                    r"event=zap_deny_suppressed count=(\d+)",
                    "\n".join(self.broker.text().splitlines()[mark:])))
                return lines, held

            # Every refusal ends up in the log, as a line or in a count:
            # the last count comes from the broker's timer, with no new
            # refusal to trigger it
            deadline = time.monotonic() + secs(15)
            while sum(logged()) < self.FLOOD and time.monotonic() < deadline:
                self.mesh.settle(0.1)
            lines, held = logged()
            self.assertEqual(lines + held, self.FLOOD, self.broker.tail(10))
            self.assertGreater(held, 0)
            # At most 20 lines a second (the limiter's second and the
            # clock's second need not line up: at most 2 x 20 per stamp)
            stamps = collections.Counter(
                line[:19] for line in self.broker.text().splitlines()[mark:]
                if "event=zap_deny address=" in line)
            self.assertLessEqual(max(stamps.values()), 40, stamps)
        finally:
            for s in sockets:
                s.close(0)
        # The broker still works for its own identities
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.round_trip(self.client(keypair=web), w, "echo", "web-1")
        # ...and counted every refusal
        mark = self.broker.mark()
        rc, clean = self.broker.stop(signal.SIGTERM, 5)
        self.assertEqual((rc, clean), (0, True))
        m = self.broker.wait_for_log(r"event=stopped .*\bzap_denied=(\d+)", 1, mark)
        self.assertIsNotNone(m, self.broker.tail(5))
        self.assertEqual(int(m.group(1)), self.FLOOD)


class SpecialFilesTest(CertCase):
    """Only regular files are read: a FIFO (which would block open ()
    until a writer came) is refused and named, wherever it is planted."""

    def run_quick(self, args, timeout=10):
        """Runs a program that must finish by itself; a hang fails the test
        (subprocess.run kills it)."""
        try:
            return subprocess.run([str(a) for a in args], capture_output=True,
                                  text=True, timeout=secs(timeout))
        except subprocess.TimeoutExpired:
            self.fail("%s hung on a FIFO" % " ".join(map(str, args)))

    def test_fifo_in_the_trust_folder_is_skipped_at_start_and_on_sighup(self):
        web = self.issue("web")
        os.mkfifo(os.path.join(self.certdir, "x.crt"))
        self.cert_broker(ALLOW_ALL)             # waits for event=ready
        self.assert_skipped("x.crt", "not a regular file")
        self.assertEqual(self.trust_loaded(), (1, 1))
        mark = self.sighup()
        self.assert_skipped("x.crt", "not a regular file", mark)
        self.assertEqual(self.trust_loaded(mark), (1, 1))
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.round_trip(self.client(keypair=web), w, "echo", "web-1")
        # ...and it still stops on SIGTERM
        rc, clean = self.broker.stop(signal.SIGTERM, 5)
        self.assertEqual((rc, clean), (0, True), self.broker.tail(5))

    def test_fifo_as_acl_crl_ca_or_key_is_refused(self):
        self.issue("web")
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        broker = [harness.BROKER_BIN, "--bind", "tcp://127.0.0.1:%d" % harness.free_port()]
        good_acl = write_acl(os.path.join(self.tmp, "good.acl"),
                             "trust ca/ca.crt certs/\n" + ALLOW_ALL)
        cases = [
            ("ACL", broker + ["--acl", fifo, "--key", self.broker_id.secret_file]),
            ("--check-acl", [harness.BROKER_BIN, "--check-acl", fifo]),
            ("key", broker + ["--acl", good_acl, "--key", fifo]),
        ]
        for what, text in (("CRL", "trust ca/ca.crt certs/\nrevoked fifo\n"),
                           ("CA", "trust fifo certs/\n"),
                           ("identity key", "identity mallory fifo\n")):
            acl = write_acl(os.path.join(self.tmp, "%s.acl" % what.replace(" ", "-")),
                            text + ALLOW_ALL)
            cases.append((what, [harness.BROKER_BIN, "--check-acl", acl]))
            cases.append((what + " at start",
                          broker + ["--acl", acl, "--key", self.broker_id.secret_file]))
        for what, args in cases:
            r = self.run_quick(args)
            self.assertNotEqual(r.returncode, 0, "%s: %s" % (what, r.stdout))
            self.assertIn("not a regular file", r.stderr + r.stdout, what)
        r = self.run_quick([KEYGEN_BIN, "show", fifo])
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a regular file", r.stderr)
        r = self.run_quick([harness.CLI_BIN, "request", "echo", '"x"', "--broker",
                            "tcp://127.0.0.1:1", "--server-key", fifo])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a regular file", r.stderr)

    def test_acl_replaced_by_a_fifo_keeps_the_policy_on_sighup(self):
        web = self.issue("web")
        self.cert_broker(ALLOW_ALL)
        os.unlink(self.acl_path)
        os.mkfifo(self.acl_path)
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assert_logged(r"event=acl_reload_failed policy=unchanged "
                           r"error=.*not a regular file", mark)
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.round_trip(self.client(keypair=web), w, "echo", "web-1")
        rc, clean = self.broker.stop(signal.SIGTERM, 5)
        self.assertEqual((rc, clean), (0, True), self.broker.tail(5))


def process_memory_holds(pid, needle):
    """True if any readable, writable mapping of process pid (heap, stacks,
    anonymous memory: where freed buffers stay) holds needle."""
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            # Read in chunks (overlapping by the needle's length): under
            # AddressSanitizer some mappings are terabytes of shadow, and
            # most of what they hold is never touched
            chunk = 1 << 20
            at = start
            while at < end:
                try:
                    mem.seek(at)
                    data = mem.read(min(chunk + len(needle), end - at))
                except (OSError, ValueError, OverflowError, MemoryError):
                    break
                if needle in data:
                    return True
                at += chunk
                if at - start >= (1 << 30):
                    break       # a gigabyte is shadow or reserve, not heap
    return False


class SecretTextTest(harness.MeshTestCase):
    """The broker reads its secret key file (and, for its ready line, the
    public key out of the same file) only into sodium_malloc memory that
    is wiped: the secret's text is nowhere in its memory afterwards."""

    CURVE = True
    START_BROKER = False

    def test_secret_key_text_is_not_left_in_the_broker_memory(self):
        key = harness.KeyPair(self.tmp, "broker")
        # The broker also reads an ACL naming its own secret file as an
        # identity (public half only) and a client's secret file by mistake
        client = harness.KeyPair(self.tmp, "client")
        acl = write_acl(os.path.join(self.tmp, "mesh.acl"),
                        "identity broker broker.key_secret\n"
                        "identity client client.key_secret\n" + ALLOW_ALL)
        self.broker = self.start_broker(key=key, acl=acl)
        # Control: the probe finds text the broker holds (its public key)
        self.assertTrue(process_memory_holds(self.broker.pid, key.public.encode()))
        for secret in (key.secret, client.secret):
            self.assertFalse(process_memory_holds(self.broker.pid, secret.encode()),
                             "secret key text in the broker's memory")
        # A reload reads the files again
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assertIsNotNone(self.wait_log(r"event=acl_reloaded\b", 5, mark))
        for secret in (key.secret, client.secret):
            self.assertFalse(process_memory_holds(self.broker.pid, secret.encode()),
                             "secret key text in the broker's memory after SIGHUP")


def peak_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) // 1024


class OptsBombTest(harness.MeshTestCase):
    """Opts are parsed by the broker: 15 MiB of `[]`s is a parse of
    seconds and hundreds of MiB of JSON values. Opts over 64 KiB
    (PIGATO_OPTS_MAX) are refused before any parser sees them: a request
    gets E_INVALID_OPTS at once, a heartbeat is a bad message."""

    CURVE = True

    def test_huge_opts_are_refused_unparsed(self):
        worker = self.ready_worker("echo")
        client = self.client()
        bomb = '{"a":[' + ",".join(["[]"] * (5 * 1024 * 1024)) + ']}'
        before = peak_rss_mb(self.broker.pid)
        for index in range(3):
            client.request("echo", "bomb%d" % index, '"x"', bomb)
            worker.send("W", "4", "", bomb)  # a heartbeat's opts
        for index in range(3):
            _, final = client.final("bomb%d" % index, 10)
            self.assertIsNotNone(final, self.broker.tail(5))
            self.assertEqual(final.status, b"-1")
            self.assertIn(b"E_INVALID_OPTS request opts over 65535 bytes",
                          final.data)
        self.assertLess(peak_rss_mb(self.broker.pid) - before, 150,
                        "the broker's peak memory grew by the opts' JSON")
        self.assertIsNone(worker.next_request(0.2))
        # Opts at the limit are still read
        opts = '{"timeout":30000,"pad":"%s"}' % ("p" * (65535 - 26))
        self.assertEqual(len(opts), 65535)
        client.request("echo", "fits", '"y"', opts)
        req = worker.next_request(5)
        self.assertIsNotNone(req, self.broker.tail(5))
        self.assertEqual(req.rid, b"fits")
        worker.reply(req, '"ok"')
        self.assertEqual(client.final("fits", 5)[1].status, b"0")
        self.broker.stop()
        self.assertRegex(self.broker.text(), r"bad_messages=[1-9]")


class PinnedNameTest(CertCase):
    """An `identity NAME KEY` line pins NAME to KEY: a certificate the CA
    issued with CN = NAME (another key) does not authenticate."""

    def test_certificate_with_a_pinned_cn_does_not_authenticate(self):
        web = self.issue("web")
        pinned = harness.KeyPair(self.tmp, "ops")           # the real ops
        forged = self.issue("ops")                          # CN ops, CA-signed
        anonymous = self.issue("anonymous")
        self.cert_broker("identity ops ops.key\n"
                         "allow ops call admin\nallow web serve *\n"
                         "allow anonymous call open\n")
        self.assertEqual(self.trust_loaded(), (1, 2))
        self.assert_skipped("ops.crt", "pinned to another key by an 'identity' line")
        self.assert_skipped("anonymous.crt", "reserved name")
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("admin"))
        # The certificate's key gets nowhere; the pinned key keeps ops' rights
        self.assert_refused_at_handshake(forged, "unknown_key")
        self.assert_refused_at_handshake(anonymous, "unknown_key")
        self.round_trip(self.client(keypair=pinned), w, "admin", "ops-1")
        # The same on reload
        mark = self.sighup()
        self.assert_skipped("ops.crt", "pinned", mark)
        self.assert_refused_at_handshake(forged, "unknown_key")


class LogInjectionTest(CertCase):
    """File names and certificate text are escaped in the log: a newline
    in a file name cannot start a line of its own."""

    FORGED = "event=zap_deny address=10.0.0.1 key=0000 reason=forged"

    def test_newline_in_a_certificate_file_name_is_escaped(self):
        web = self.issue("web")
        api = self.issue("api", trusted=False)
        # Not a certificate, skipped and logged under its name...
        with open(os.path.join(self.certdir, "a\n%s\n.crt" % self.FORGED), "w") as f:
            f.write("not a certificate\n")
        # ...and a valid one under such a name: accepted, nothing to log
        shutil.copy(api.crt, os.path.join(self.certdir, "b\n%s.crt" % self.FORGED))
        self.cert_broker(ALLOW_ALL)
        self.assertEqual(self.trust_loaded(), (2, 1))
        lines = [l for l in self.broker.text().splitlines() if "forged" in l]
        self.assertEqual(len(lines), 1, "\n".join(lines))
        self.assertRegex(lines[0], r" warning event=cert_skipped path=\S*/a\\x0aevent\\x3dzap_deny"
                                   r"\\x20\S*\\x0a\.crt reason=\"'\S*/a\\x0aevent=zap_deny address=")
        self.assertEqual(self.broker.count(r"^event=|reason=forged$"), 0)
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.round_trip(self.client(keypair=api), w, "echo", "api-1")


def expired_crl(ca_dir, path, number):
    """A CRL the CA really signed (Ed25519, ca.key), numbered number, whose
    nextUpdate passed yesterday: what an attacker could put back."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(ca_dir, "ca.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    with open(os.path.join(ca_dir, "ca.crt"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(ca.subject)
           .last_update(now - datetime.timedelta(days=8))
           .next_update(now - datetime.timedelta(days=1))
           .add_extension(x509.CRLNumber(number), critical=False)
           .sign(key, None))
    with open(path, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))


class CrlTest(CertCase):
    """CRLs carry a number and a short nextUpdate: an older CRL put back
    is refused (across reloads), an expired one too, `pigato-keygen crl`
    renews."""

    def crl_path(self):
        return os.path.join(self.ca, "ca.crl")

    def assert_reload_refused(self, reason):
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assert_logged(r"event=acl_reload_failed policy=unchanged "
                           r"error=.*%s" % reason, mark)

    def test_older_crl_is_refused_on_reload(self):
        web, api = self.issue("web"), self.issue("api")
        old = os.path.join(self.tmp, "old.crl")
        shutil.copy(self.crl_path(), old)                    # number 1
        self.cert_broker(ALLOW_ALL)
        self.assert_logged(r"event=crl_loaded path=\S+ca\.crl number=1 next_update=\d+")
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.keygen("revoke", api.crt, "--ca", self.ca)      # number 2
        mark = self.sighup()
        self.assert_logged(r"event=crl_loaded path=\S+ number=2 ", mark)
        self.assert_skipped("api.crt", "revoked", mark)
        self.assert_refused_at_handshake(api, "unknown_key")

        # The old CRL put back (its signature is good): refused, api stays
        # revoked under the policy in force
        current = os.path.join(self.tmp, "current.crl")
        shutil.copy(self.crl_path(), current)
        shutil.copy(old, self.crl_path())
        self.assert_reload_refused("CRL number 1, lower than 2 seen before")
        self.assert_refused_at_handshake(api, "unknown_key")
        # The current CRL back, renewed: a higher number, api still revoked
        shutil.copy(current, self.crl_path())
        out = self.keygen("crl", "--ca", self.ca, "--crl-days", "2")
        self.assertRegex(out, r"number:\s+3\b")
        mark = self.sighup()
        self.assert_logged(r"event=crl_loaded path=\S+ number=3 ", mark)
        self.assert_skipped("api.crt", "revoked", mark)
        self.assert_refused_at_handshake(api, "unknown_key")
        self.round_trip(self.client(keypair=web), w, "echo", "web-1")

    def test_expired_crl_is_refused_at_start_and_on_reload(self):
        web = self.issue("web")
        good = os.path.join(self.tmp, "good.crl")
        shutil.copy(self.crl_path(), good)
        expired_crl(self.ca, self.crl_path(), 5)
        write_acl(self.acl_path, "trust ca/ca.crt certs/\nrevoked ca/ca.crl\n" + ALLOW_ALL)
        r = subprocess.run([harness.BROKER_BIN, "--bind", "tcp://127.0.0.1:%d" % harness.free_port(),
                            "--acl", self.acl_path, "--key", self.broker_id.secret_file],
                           capture_output=True, text=True, timeout=secs(10))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"ca\.crl' expired on \d{4}-\d\d-\d\d .*renew it "
                                   r"with pigato-keygen crl --ca DIR")
        # A broker running with a good CRL keeps its policy when the CRL
        # on disk has expired
        shutil.copy(good, self.crl_path())
        self.cert_broker(ALLOW_ALL)
        expired_crl(self.ca, self.crl_path(), 5)
        self.assert_reload_refused("expired on")
        # pigato-keygen crl renews even an expired CRL, with a higher number
        out = self.keygen("crl", "--ca", self.ca)
        self.assertRegex(out, r"number:\s+6\b")
        mark = self.sighup()
        self.assert_logged(r"event=crl_loaded path=\S+ number=6 ", mark)
        next_update = int(self.assert_logged(r"event=crl_loaded .*next_update=(\d+)",
                                             mark).group(1))
        self.assertAlmostEqual(next_update, time.time() + 7 * 86400, delta=120)
        w = self.worker(keypair=web)
        self.assertIsNotNone(w.ready("echo"))
        self.round_trip(self.client(keypair=web), w, "echo", "web-1")


if __name__ == "__main__":
    harness.main()
