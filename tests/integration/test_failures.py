#!/usr/bin/python3
"""Failures that say why (issue 15): a refused key, a plaintext client
against CURVE, a wrong server key, an unreachable broker and a host that
does not resolve each end `pigato request` at once (well within the
request timeout) with its own exit code and a hint; a worker whose READY
is denied backs off and `pigato serve` exits saying why; with the first
of two brokers down a request goes to the second at once; a broker key
rotation that running peers survive; an ACL identity with two keys."""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

import harness
from harness import CLI_BIN, HERE, KeyPair, MeshTestCase, Proc, free_port, secs, write_acl

LIB_PEER = os.path.join(HERE, "lib_peer.py")


def lib_peer_env():
    """The environment for lib_peer.py: ctypes can load a sanitized
    libpigato.so (SANITIZE builds) only with the ASan runtime preloaded,
    and Python's own allocations are not ours to report."""
    env = dict(os.environ, PIGATO_BUILD=harness.BUILD)
    out = subprocess.run(["ldd", os.path.join(harness.BUILD, "libpigato.so")],
                         capture_output=True, text=True).stdout
    m = re.search(r"libasan\.so\S* => (\S+)", out)
    if m:
        env["LD_PRELOAD"] = m.group(1)
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env

POLICY = """identity alice {alice}
allow alice call *
allow alice serve echo
"""


class RefusalsTest(MeshTestCase):
    CURVE = True
    START_BROKER = False

    def setUp(self):
        MeshTestCase.setUp(self)
        self.alice = KeyPair(self.tmp, "alice")
        self.mallory = KeyPair(self.tmp, "mallory")
        self.acl = write_acl(os.path.join(self.tmp, "mesh.acl"),
                             POLICY.format(alice=self.alice.public_file))
        self.broker = self.start_broker(acl=self.acl)

    def timed_request(self, *args):
        """`pigato request echo` with a long timeout: (rc, stderr, seconds)."""
        start = time.monotonic()
        rc, out, err = self.cli("request", "echo", '"x"', "--timeout", "30000", *args)
        return rc, err, time.monotonic() - start

    def assert_fails(self, args, code, hint):
        rc, err, took = self.timed_request(*args)
        self.assertEqual(rc, code, err)
        self.assertIn(hint, err)
        self.assertLess(took, secs(2.5), "took %.2f s: %s" % (took, err))

    def test_unknown_key_exits_3_at_once(self):
        self.assert_fails(["--broker", self.broker.endpoint,
                           "--server-key", self.broker.key.public_file,
                           "--key", self.mallory.secret_file],
                          3, "the broker refused this key")

    def test_plaintext_client_against_curve_exits_4(self):
        self.assert_fails(["--broker", self.broker.endpoint, "--insecure"],
                          4, "no handshake with the broker")

    def test_wrong_server_key_exits_4(self):
        other = KeyPair(self.tmp, "other")
        self.assert_fails(["--broker", self.broker.endpoint,
                           "--server-key", other.public_file,
                           "--key", self.alice.secret_file],
                          4, "wrong server key")

    def test_unreachable_broker_exits_5(self):
        self.assert_fails(["--broker", "tcp://127.0.0.1:%d" % free_port(),
                           "--server-key", self.broker.key.public_file],
                          5, "cannot reach the broker")

    def test_unresolvable_host_exits_6(self):
        self.assert_fails(["--broker", "tcp://no-such-host.invalid:5555",
                           "--server-key", self.broker.key.public_file],
                          6, "cannot resolve host 'no-such-host.invalid'")

    def test_denied_ready_serve_exits_7(self):
        start = time.monotonic()
        p = self.start([CLI_BIN, "serve", "forbidden", "--echo",
                        "--broker", self.broker.endpoint,
                        "--server-key", self.broker.key.public_file,
                        "--key", self.alice.secret_file], name="serve-forbidden")
        rc = p.wait(secs(5))
        self.assertEqual(rc, 7, p.tail())
        self.assertLess(time.monotonic() - start, secs(2.5))
        self.assertIn("E_ACCESS_DENIED serve forbidden", p.text())

    def test_reserved_name_refused_by_the_library(self):
        rc, out, err = self.cli("serve", "mmi.service", "--echo",
                                "--broker", self.broker.endpoint,
                                "--server-key", self.broker.key.public_file)
        self.assertEqual(rc, 64, err)
        self.assertIn("bad service name", err)

    def test_denied_worker_backs_off(self):
        mark = self.broker.mark()
        p = self.start([sys.executable, LIB_PEER, "worker", "forbidden",
                        self.broker.endpoint, self.broker.key.public, self.alice.secret_file],
                       name="lib-worker", env=lib_peer_env())
        self.assertIsNotNone(p.wait_for_line(r"^refused -20 .*E_ACCESS_DENIED serve forbidden",
                                             secs(5), stream="stdout"), p.tail())
        first = self.broker.count(r"event=access_denied .*verb=serve", mark)
        time.sleep(3)  # counting what happens in 3 s is the point here
        refused = self.broker.count(r"event=access_denied .*verb=serve", mark) - first
        self.assertLessEqual(refused, 6, "READY denied %d times in 3 s" % refused)
        self.assertTrue(p.alive())

    def test_acl_identity_with_two_keys(self):
        new = KeyPair(self.tmp, "alice-new")
        write_acl(self.acl, POLICY.format(alice=self.alice.public_file + " "
                                          + new.public_file))
        mark = self.broker.mark()
        self.broker.send_signal(signal.SIGHUP)
        self.assertIsNotNone(self.broker.wait_for_log(r"event=(acl_)?reload", 5, mark),
                             self.broker.tail())
        self.start([CLI_BIN, "serve", "echo", "--echo", "--key", new.secret_file]
                   + self.broker.cli_args())
        self.assertIsNotNone(self.broker.wait_for_log(r"event=worker_ready\b.*service=echo\b",
                                                      10, mark), self.broker.tail())
        for keypair in (self.alice, new):
            rc, out, err = self.cli("request", "echo", '"k"', "--timeout", "5000",
                                    "--broker", self.broker.endpoint,
                                    "--server-key", self.broker.key.public_file,
                                    "--key", keypair.secret_file)
            self.assertEqual((rc, out.strip()), (0, '"k"'), err)


class MultiBrokerFirstDownTest(MeshTestCase):
    CURVE = True
    START_BROKER = False

    def test_first_broker_down_answers_at_once(self):
        key = KeyPair(self.tmp, "mesh-broker")
        up = self.start_broker(key=key)
        down = "tcp://127.0.0.1:%d" % free_port()
        self.start([CLI_BIN, "serve", "echo", "--echo", "--broker", up.endpoint,
                    "--server-key", key.public_file])
        self.assertIsNotNone(up.wait_for_log(r"event=worker_ready\b", 10))
        for brokers in ("%s,%s" % (down, up.endpoint), "%s,%s" % (up.endpoint, down)):
            start = time.monotonic()
            rc, out, err = self.cli("request", "echo", '"m"', "--timeout", "20000",
                                    "--broker", brokers, "--server-key", key.public_file)
            took = time.monotonic() - start
            self.assertEqual((rc, out.strip()), (0, '"m"'), err)
            self.assertLess(took, secs(1.0), "%s: %.2f s" % (brokers, took))


class KeyRotationTest(MeshTestCase):
    CURVE = True
    START_BROKER = False

    def test_running_peers_follow_a_broker_restarted_with_a_new_key(self):
        old, new = KeyPair(self.tmp, "broker-old"), KeyPair(self.tmp, "broker-new")
        broker = self.start_broker(key=old)
        keys = "%s,%s" % (old.public, new.public)
        env = lib_peer_env()
        worker = self.start([sys.executable, LIB_PEER, "worker", "echo", broker.endpoint,
                             keys], name="lib-worker", env=env)
        self.assertIsNotNone(broker.wait_for_log(r"event=worker_ready\b", 10))
        client = self.start([sys.executable, LIB_PEER, "client", "echo", broker.endpoint,
                             keys], name="lib-client", env=env)
        self.assertIsNotNone(client.wait_for_line(r"^reply 0 ", secs(5), stream="stdout"),
                             client.tail())
        port = broker.port
        broker.stop(signal.SIGTERM, 5)
        restarted = self.start_broker(key=new, port=port)
        mark = client.mark("stdout")
        self.assertIsNotNone(restarted.wait_for_log(r"event=worker_ready\b", 10),
                             worker.tail() + restarted.tail())
        self.assertIsNotNone(client.wait_for_line(r"^reply 0 ", secs(10), mark, "stdout"),
                             client.tail())
        self.assertIsNone(worker.wait_for_line(r"^refused", 0.1, stream="stdout"),
                          worker.tail())
        # Once through, every call succeeds
        mark = client.mark("stdout")
        self.assertIsNotNone(client.wait_for_line(r"^reply 0 ", secs(5), mark, "stdout"))
        later = client.mark("stdout")
        client.wait_for_line(r"^reply 0 ", secs(5), later, "stdout")
        self.assertEqual(client.count(r"^reply -", later, "stdout"), 0, client.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
