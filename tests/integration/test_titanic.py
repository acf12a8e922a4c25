#!/usr/bin/python3
"""Durable requests: ZeroMQ RFC 9 (Titanic) answered by pigato-broker itself
when it has a store (--store DIR), with real processes (docs/protocol.md,
"Durable requests").

What the broker is expected to do (these tests define it):

* titanic.request, titanic.reply and titanic.close are answered by the
  broker, in every framing. An MDP/0.2 client speaks RFC 9 as written:
  the request's body frames are the service name and the body frames; the
  answer's frames are a status ("200", "300", "400", "500", optionally
  with text) and the content (the id; the reply's frames). A pigato
  client (0.0.46, native, Node) names the service in the opts
  ({"service": NAME}, also "key", "ttl", "keep"; the rest goes to the
  worker) and gets one data frame: for 200 status 0 and the content (the
  id as a JSON string, the stored reply, "200"), else status -1 and the
  status text as a JSON string ("300 E_PENDING ...", "400 E_UNKNOWN ...",
  "500 E_STORE ..."), with {"titanic": CODE} in the reply opts.
* An id is 32 lowercase hex digits, returned only once the request is
  committed to the store. The same idempotency key from the same identity
  returns the same id.
* Stored requests go to their service like a client's, with the id as
  rid and in the opts ("titanic") and the attempt number ("attempt"),
  again after a backoff when their worker is lost, until a final reply
  (stored, then fetchable) or their time to live (E_EXPIRED). A close
  waits for an attempt in flight; after its answer the request is never
  sent to a worker again.
* SIGKILL at any moment loses no acknowledged request: a restarted broker
  recovers the store (event=titanic_recovered pending=N ...).
* A store that cannot be used at start (corrupt, another application's,
  read-only, open to others) makes the broker exit with the reason; one
  that fails later (full) refuses new durable requests with 500 and a
  reason, logged, while everything else keeps flowing.
* Security: titanic.* need `call` like any name; `call` on the target
  service is checked at submission and at each attempt (a revoked
  identity's requests end with E_ACCESS_DENIED); only the submitting
  identity sees its requests (anyone else gets the answer for an unknown
  id); bodies are never logged; `limit ... stored=N stored-bytes=SIZE`.

Run: PIGATO_BUILD=$PWD/build /usr/bin/python3 tests/integration/test_titanic.py
"""

import collections
import heapq
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
import time
import unittest

import zmq

import harness
from harness import (BUILD, CLI_BIN, HERE, KeyPair, MeshTestCase, b, secs,
                     write_acl)
from test_mdp import MdpClient, MdpWorker

WORKER_BIN = os.path.join(BUILD, "tests", "titanic_worker")
ID = re.compile(rb"^[0-9a-f]{32}$")
_built = []


def titanic_worker():
    """tests/integration/titanic_worker.c, compiled once per run."""
    if not _built:
        harness.build_c_program(os.path.join(HERE, "titanic_worker.c"), WORKER_BIN)
        _built.append(True)
    return WORKER_BIN


def unquote(data):
    """The text of a JSON string reply (bytes)."""
    return json.loads(data.decode())


class TitanicCase(MeshTestCase):
    START_BROKER = False

    def setUp(self):
        MeshTestCase.setUp(self)
        self.store = os.path.join(self.tmp, "store")
        self.rid_seq = 0

    def store_broker(self, extra=(), store=None, **kw):
        self.broker = self.start_broker(
            extra=["--store", store or self.store] + list(extra), **kw)
        return self.broker

    def rid(self):
        self.rid_seq += 1
        return "t-%d" % self.rid_seq

    # -- pigato 0.0.46 by hand --------------------------------------------

    def call(self, client, service, data, opts=None, timeout=5.0):
        rid = self.rid()
        client.request(service, rid, data, opts)
        _, final = client.final(rid, timeout)
        self.assertIsNotNone(final, "no answer to %s\n%s" % (service, self.broker.tail(15)))
        return final

    def submit(self, client, service, data='"hello"', **opts):
        opts["service"] = service
        return self.call(client, "titanic.request", data, json.dumps(opts))

    def submit_ok(self, client, service, data='"hello"', **opts):
        r = self.submit(client, service, data, **opts)
        self.assertEqual((r.status, json.loads(r.opts)), (b"0", {"titanic": 200}),
                         "submission refused: %r" % (r,))
        self.assertRegex(r.data, rb'^"[0-9a-f]{32}"$')
        return unquote(r.data)

    def fetch(self, client, ident, quoted=False):
        return self.call(client, "titanic.reply", json.dumps(ident) if quoted else ident)

    def close_id(self, client, ident):
        return self.call(client, "titanic.close", ident)

    def assert_status(self, reply, code, what=""):
        """A titanic answer other than 200 to a pigato client."""
        self.assertEqual(reply.status, b"-1", "%s: %r" % (what, reply))
        self.assertEqual(json.loads(reply.opts), {"titanic": code}, "%s: %r" % (what, reply))
        self.assertTrue(unquote(reply.data).startswith("%d E_" % code),
                        "%s: %r" % (what, reply))

    def wait_reply(self, client, ident, timeout=10.0):
        """Fetches until the answer is not 300; returns it."""
        deadline = time.monotonic() + secs(timeout)
        while True:
            r = self.fetch(client, ident)
            if json.loads(r.opts) != {"titanic": 300}:
                return r
            self.assertLess(time.monotonic(), deadline,
                            "%s still pending\n%s" % (ident, self.broker.tail(15)))
            self.mesh.settle(0.05)

    def cli_args(self):
        return self.broker.cli_args()


# --------------------------------------------------------------------------
# RFC 9 in every framing

class ProtocolTest(TitanicCase):

    def test_pigato_046_client_full_cycle(self):
        self.store_broker()
        w = self.ready_worker("echo")
        c = self.client()
        ident = self.submit_ok(c, "echo", '"body-1"', timeout=30000, color="red")
        req = w.next_request(5)
        self.assertIsNotNone(req, "stored request never dispatched\n" + self.broker.tail())
        # The id is the rid and is in the opts, with the attempt and the
        # client's own opts; titanic's own opts are not the worker's
        self.assertEqual((req.service, req.rid, req.data), (b"echo", b(ident), b'"body-1"'))
        opts = json.loads(req.opts)
        self.assertEqual((opts["titanic"], opts["attempt"], opts["color"], opts["timeout"]),
                         (ident, 1, "red", 30000))
        self.assertNotIn("service", opts)
        self.assert_status(self.fetch(c, ident), 300, "before the reply")
        w.reply(req, '"re:body-1"')
        r = self.wait_reply(c, ident)
        self.assertEqual((r.status, r.data, json.loads(r.opts)),
                         (b"0", b'"re:body-1"', {"titanic": 200}))
        # titanic.reply is idempotent; the id may come as a JSON string
        r = self.fetch(c, ident, quoted=True)
        self.assertEqual((r.status, r.data), (b"0", b'"re:body-1"'))
        r = self.close_id(c, ident)
        self.assertEqual((r.status, r.data, json.loads(r.opts)), (b"0", b"200", {"titanic": 200}))
        self.assert_status(self.fetch(c, ident), 400, "after close")
        # Closing again, or an id never seen, is fine (RFC 9)
        self.assertEqual(self.close_id(c, ident).status, b"0")
        self.assertEqual(self.close_id(c, "f" * 32).status, b"0")
        for bad in ("nope", "0" * 31, "g" * 32, ""):
            self.assert_status(self.fetch(c, bad), 400, "fetch %r" % bad)

    def test_submission_refusals(self):
        self.store_broker()
        c = self.client()
        cases = [(None, "no opts"), ("{}", "no service"), ('{"service":""}', "empty"),
                 ('{"service":"echo","key":""}', "empty key"),
                 ('{"service":"echo","ttl":0}', "ttl 0"),
                 ('{"service":"echo","workerId":"w"}', "workerId"),
                 ('{"service":"$dir"}', "reserved"),
                 ('{"service":"titanic.reply"}', "titanic itself"), ("[1]", "not an object")]
        for opts, what in cases:
            r = self.call(c, "titanic.request", '"x"', opts)
            self.assert_status(r, 400, what)
        self.assertEqual(self.broker.count(r"event=titanic"), 1)  # recovered only

    def test_mdp_client_speaks_rfc9(self):
        self.store_broker()
        mw = MdpWorker(self.mesh, self.broker.endpoint)
        mark = self.broker.mark()
        mw.ready("mdp.echo")
        self.assertIsNotNone(self.wait_log(r"event=worker_ready service=mdp.echo", 5, mark))
        mc = MdpClient(self.mesh, self.broker.endpoint)
        mc.request("titanic.request", "mdp.echo", "frame-1", "frame-2")
        _, final = mc.final(5)
        self.assertIsNotNone(final, self.broker.tail())
        service, body = final
        self.assertEqual(service, b"titanic.request")
        self.assertEqual(len(body), 2, body)
        self.assertEqual(body[0], b"200")
        self.assertRegex(body[1], ID)
        ident = body[1]
        req = mw.next_request(5)
        self.assertIsNotNone(req, "not dispatched to the MDP worker\n" + self.broker.tail())
        self.assertEqual(req.body, [b"frame-1", b"frame-2"])   # frame for frame
        mc.request("titanic.reply", ident)
        _, (service, body) = mc.final(5)
        self.assertEqual((service, body[0][:3]), (b"titanic.reply", b"300"))
        mw.final(req.client, b"out-1", b"out-2")
        deadline = time.monotonic() + secs(5)
        while True:
            mc.request("titanic.reply", ident)
            _, (service, body) = mc.final(5)
            if body[0] != b"300" and not body[0].startswith(b"300 "):
                break
            self.assertLess(time.monotonic(), deadline)
            self.mesh.settle(0.05)
        self.assertEqual(body, [b"200", b"out-1", b"out-2"])
        mc.request("titanic.reply", "0" * 32)
        _, (_, body) = mc.final(5)
        self.assertEqual(len(body), 1)
        self.assertTrue(body[0].startswith(b"400"), body)
        mc.request("titanic.close", ident)
        _, (service, body) = mc.final(5)
        self.assertEqual((service, body), (b"titanic.close", [b"200"]))
        mc.request("titanic.reply", ident)
        _, (_, body) = mc.final(5)
        self.assertTrue(body[0].startswith(b"400"), body)
        # An MDP client's durable request reaches a pigato worker too: its
        # first body frame is the data
        w = self.ready_worker("p.echo")
        mc.request("titanic.request", "p.echo", "only")
        _, (_, body) = mc.final(5)
        self.assertEqual(body[0], b"200")
        req = w.next_request(5)
        self.assertEqual((req.data, json.loads(req.opts)["titanic"]), (b"only", body[1].decode()))

    def test_cli_in_both_framings(self):
        self.store_broker()
        self.start([CLI_BIN, "serve", "echo", "--echo"] + self.cli_args(), name="serve")
        for framing in ("native", "0.0.46"):
            args = self.cli_args() + ["--framing", framing]
            rc, out, err = self.cli("submit", "echo", "data-" + framing, *args)
            self.assertEqual(rc, 0, err)
            ident = out.strip()
            self.assertRegex(ident.encode(), ID)
            rc, out, err = self.cli("fetch", ident, "--wait", "--timeout", "10000", *args)
            self.assertEqual((rc, out), (0, "data-" + framing), err)
            rc, out, err = self.cli("close", ident, *args)
            self.assertEqual(rc, 0, err)
            rc, out, err = self.cli("fetch", ident, *args)
            self.assertEqual(rc, 9, "fetch after close: %s" % err)
        # Pending: exit 8; --wait gives up at --timeout
        rc, out, err = self.cli("submit", "nobody", "x", *self.cli_args())
        ident = out.strip()
        rc, _, err = self.cli("fetch", ident, *self.cli_args())
        self.assertEqual(rc, 8, err)
        rc, _, err = self.cli("fetch", ident, "--wait", "--timeout", "300", *self.cli_args())
        self.assertEqual(rc, 8, err)
        rc, _, err = self.cli("fetch", "not-an-id", *self.cli_args())
        self.assertEqual(rc, 64, err)

    def test_idempotency_key_and_a_lost_acknowledgement(self):
        self.store_broker()
        log = os.path.join(self.tmp, "exec.log")
        self.start([titanic_worker(), self.broker.endpoint, "idem", log], name="worker")
        # The first submission's answer is lost: its client goes away
        # before reading it
        lost = self.client()
        lost.request("titanic.request", "lost-1", '"once"',
                     json.dumps({"service": "idem", "key": "order-42"}))
        self.assertIsNotNone(self.wait_log(r"event=worker_ready service=idem", 5))
        self.mesh.settle(0.2)
        lost.close()
        c = self.client()
        ident = self.submit_ok(c, "idem", '"once"', key="order-42")
        self.assertEqual(self.submit_ok(c, "idem", '"once"', key="order-42"), ident)
        other = self.submit_ok(c, "idem", '"once"', key="order-43")
        self.assertNotEqual(other, ident)
        self.assertEqual(self.wait_reply(c, ident).data, b'done:"once"')
        self.wait_reply(c, other)
        with open(log) as f:
            execs = [l.split()[1] for l in f if l.startswith("exec ")]
        self.assertEqual(sorted(execs), sorted([ident, other]))
        # The CLI's --idempotency-key
        rc1, out1, _ = self.cli("submit", "idem", "x", "--idempotency-key", "k1",
                                *self.cli_args())
        rc2, out2, _ = self.cli("submit", "idem", "x", "--idempotency-key", "k1",
                                *self.cli_args())
        self.assertEqual((rc1, rc2), (0, 0))
        self.assertEqual(out1, out2)

    def test_worker_lost_means_another_attempt(self):
        self.store_broker()
        w1 = self.ready_worker("flaky")
        c = self.client()
        ident = self.submit_ok(c, "flaky", '"job"')
        req = w1.next_request(5)
        self.assertEqual(json.loads(req.opts)["attempt"], 1)
        w1.disconnect()       # gone without a reply
        w2 = self.ready_worker("flaky")
        req = w2.next_request(10)
        self.assertIsNotNone(req, "no second attempt\n" + self.broker.tail())
        opts = json.loads(req.opts)
        self.assertEqual((req.rid, opts["titanic"], opts["attempt"]), (b(ident), ident, 2))
        w2.reply(req, '"finally"')
        self.assertEqual(self.wait_reply(c, ident).data, b'"finally"')

    def test_close_of_a_pending_request_means_it_never_runs(self):
        self.store_broker()
        c = self.client()
        ident = self.submit_ok(c, "later")
        self.assertEqual(self.close_id(c, ident).status, b"0")
        w = self.ready_worker("later")
        self.mesh.settle(secs(1))
        self.assertEqual(w.pending(lambda m: m[:2] == [b"W", b"2"]), [])

    def test_close_waits_for_the_attempt_in_flight(self):
        self.store_broker()
        w = self.ready_worker("slow")
        c = self.client()
        ident = self.submit_ok(c, "slow")
        req = w.next_request(5)
        rid = self.rid()
        c.request("titanic.close", rid, ident)
        self.mesh.settle(secs(0.5))
        self.assertIsNone(c.reply(rid, 0), "close answered while the attempt runs")
        w.reply(req, '"late"')
        _, final = c.final(rid, 5)
        self.assertEqual((final.status, final.data), (b"0", b"200"))
        self.assert_status(self.fetch(c, ident), 400, "closed")
        self.mesh.settle(secs(0.5))
        self.assertEqual(w.pending(lambda m: m[:2] == [b"W", b"2"]), [])

    def test_time_to_live_ends_with_e_expired(self):
        self.store_broker()
        c = self.client()
        ident = self.submit_ok(c, "nobody.serves", ttl=300)
        r = self.wait_reply(c, ident, 10)
        self.assertEqual((r.status, json.loads(r.opts)), (b"-1", {"titanic": 200}))
        self.assertTrue(unquote(r.data).startswith("E_EXPIRED"), r)

    def test_requests_nobody_serves_wait_outside_the_core(self):
        # No worker for its service: a durable request is parked, with no
        # attempt (none that times out and is tried again) until a worker
        # that can take it registers, here a wildcard one
        self.store_broker()
        c = self.client()
        attempt_ms = int(1000 * secs(0.5))
        idents = [self.submit_ok(c, "absent.job", '"j%d"' % i, timeout=attempt_ms)
                  for i in range(20)]
        self.mesh.settle(secs(2))     # attempts would have timed out by now
        w = self.ready_worker("absent.*")
        for _ in idents:
            req = w.next_request(5)
            self.assertIsNotNone(req, "no attempt once a worker came\n" + self.broker.tail())
            self.assertEqual(json.loads(req.opts)["attempt"], 1, req.opts)
            w.reply(req, '"done"')
        for ident in idents:
            self.assertEqual(self.wait_reply(c, ident).data, b'"done"')
        mark = self.broker.mark()
        self.assertEqual(self.broker.stop(signal.SIGTERM, 5), (0, True))
        m = self.broker.wait_for_log(
            r"event=titanic_stopped .*\battempts=(\d+) retries=(\d+)", 2, mark)
        self.assertIsNotNone(m, self.broker.tail(3))
        self.assertEqual((int(m.group(1)), int(m.group(2))), (20, 0))

    def test_restart_recovers_requests_and_replies(self):
        self.store_broker()
        c = self.client()
        pending = [self.submit_ok(c, "after", '"p%d"' % i) for i in range(5)]
        w = self.ready_worker("now")
        done = self.submit_ok(c, "now", '"d"')
        w.reply(w.next_request(5), '"kept"')
        self.wait_reply(c, done)
        w.close()
        c.close()
        port = self.broker.port
        self.broker.stop()
        self.store_broker(port=port)
        m = self.wait_log(r"event=titanic_recovered .*pending=(\d+) replied=(\d+)", 5)
        self.assertEqual((m.group(1), m.group(2)), ("5", "1"))
        c = self.client()
        self.assertEqual(self.fetch(c, done).data, b'"kept"')
        w = self.ready_worker("after")
        got = set()
        for _ in range(5):
            req = w.next_request(5)
            self.assertIsNotNone(req, self.broker.tail())
            got.add(req.rid.decode())
            w.reply(req, '"ok"')
        self.assertEqual(got, set(pending))

    def test_a_drain_keeps_stored_requests_for_the_next_start(self):
        # SIGTERM drains: a stored request a worker holds finishes and its
        # reply is stored; those queued for a service nobody serves stay
        # in the store (not ended with E_DRAINING) for the next start
        self.store_broker()
        port = self.broker.port
        c = self.client()
        queued = [self.submit_ok(c, "later", '"q%d"' % i) for i in range(3)]
        w = self.ready_worker("now")
        held = self.submit_ok(c, "now", '"h"')
        req = w.next_request(5)
        self.assertIsNotNone(req, self.broker.tail())
        mark = self.broker.mark()
        self.broker.send_signal(signal.SIGTERM)
        self.assertIsNotNone(self.wait_log(r"event=drain_started", 5, since=mark),
                             self.broker.tail())
        w.reply(req, '"finished"')
        self.assertEqual(self.broker.wait(secs(15)), 0, self.broker.tail())
        self.assertIsNone(re.search(r"titanic_\w+ .*E_DRAINING",
                                    self.broker.text()), self.broker.tail())
        w.close()
        c.close()
        self.store_broker(port=port)
        m = self.wait_log(r"event=titanic_recovered .*pending=(\d+) replied=(\d+)", 5)
        self.assertEqual((m.group(1), m.group(2)), ("3", "1"), self.broker.tail())
        c = self.client()
        self.assertEqual(self.fetch(c, held).data, b'"finished"')
        w = self.ready_worker("later")
        for _ in range(3):
            req = w.next_request(5)
            self.assertIsNotNone(req, self.broker.tail())
            w.reply(req, '"ok"')
        for ident in queued:
            self.assertEqual(self.wait_reply(c, ident).data, b'"ok"')

    def test_titanic_names_are_the_brokers_only_with_a_store(self):
        self.store_broker()
        w = self.worker()
        w.send("W", "1", "titanic.request")
        m = w.recv(lambda m: m[:2] == [b"W", b"5"], 3, skip_noise=False)
        self.assertEqual(m, [b"W", b"5", b"E_RESERVED_SERVICE titanic.request"])
        # Without a store they are names like any other
        plain = self.start_broker()
        w2 = self.worker(plain)
        self.assertIsNotNone(w2.ready("titanic.request"))

    def test_store_sync_is_said_and_bad_values_are_usage_errors(self):
        # By default every commit is fsync'd before its acknowledgement
        self.store_broker()
        self.assertIsNotNone(self.wait_log(r"event=titanic_recovered .* sync=commit$", 5))
        c = self.client()
        self.submit_ok(c, "later")
        c.close()
        port = self.broker.port
        self.broker.stop()
        # An interval: said at start, acknowledgements still come, and
        # the store keeps what was acknowledged across a restart
        self.store_broker(["--store-sync", "250"], port=port)
        self.assertIsNotNone(self.wait_log(
            r"event=titanic_recovered .*pending=1 .* sync=250ms$", 5))
        c = self.client()
        ident = self.submit_ok(c, "later")
        self.assertEqual(json.loads(self.fetch(c, ident).opts), {"titanic": 300})
        for bad in (["--store", self.store, "--store-sync", "0"],
                    ["--store", self.store, "--store-sync", "-5"],
                    ["--store", self.store, "--store-sync", "soon"],
                    ["--store", self.store, "--store-sync", "3600001"],
                    ["--store-sync", "100"]):
            r = subprocess.run([harness.BROKER_BIN, "--insecure"] + bad,
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 64, "%s: %r" % (bad, r.stderr))
            self.assertIn("--store-sync", r.stderr)


# --------------------------------------------------------------------------
# A store that cannot be used

def can_mount():
    """True if we may mount a tmpfs (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = "/tmp/pigato-mount-probe-%d" % os.getpid()
    os.makedirs(probe, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", probe], capture_output=True)
    os.rmdir(probe)
    return ok


class FailureTest(TitanicCase):
    """Full, read-only, corrupt and foreign stores."""

    BODY = '"%s"' % ("x" * 8000)

    def start_failing(self, *extra):
        """Starts a broker that must exit; returns (exit code, stderr)."""
        br = harness.Broker(self.tmp, curve=False, wait_ready=False,
                            extra=["--store", self.store] + list(extra))
        self.procs.append(br)
        rc = br.wait(10)
        self.assertIsNotNone(rc, "broker with a bad store did not exit\n" + br.tail())
        return rc, br.text()

    def mount_tmpfs(self, path, size):
        os.makedirs(path, mode=0o700, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size,
                            "tmpfs", path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(self.unmount, path)

    def unmount(self, path):
        for br in self.brokers:
            br.stop()
        subprocess.run(["umount", path], capture_output=True)

    def fill(self, client, service="nobody"):
        """Submits 8 KB bodies until one is refused; returns (stored ids,
        the refusal)."""
        ids = []
        for _ in range(400):
            r = self.submit(client, service, self.BODY)
            if r.status != b"0":
                return ids, r
            ids.append(unquote(r.data))
        self.fail("the store never filled up\n" + self.broker.tail())

    def assert_full_then_serving(self, client, ids, refusal, free_space):
        self.assertGreater(len(ids), 3)
        self.assert_status(refusal, 500, "a full store")
        self.assertIn("E_STORE", unquote(refusal.data))
        self.assertIn("full", unquote(refusal.data))
        self.assertIsNotNone(self.wait_log(r"event=titanic_write_failed .*full", 5))
        # What is stored stays; everything else keeps flowing
        self.assert_status(self.fetch(client, ids[0]), 300, "stored before")
        self.assert_serves()
        # Space freed: durable requests are taken again
        free_space()
        deadline = time.monotonic() + secs(5)
        while self.submit(client, "nobody", self.BODY).status != b"0":
            self.assertLess(time.monotonic(), deadline, "still refused once space "
                            "was freed\n" + self.broker.tail())
            self.mesh.settle(0.2)

    def test_a_full_store_refuses_with_500_and_the_broker_keeps_serving(self):
        self.store_broker(["--store-max-bytes", "160K"])
        c = self.client()
        ids, refusal = self.fill(c)

        def close_half():
            for ident in ids[: len(ids) // 2]:
                self.assertEqual(self.close_id(c, ident).status, b"0")
        self.assert_full_then_serving(c, ids, refusal, close_half)

    @unittest.skipUnless(can_mount(), "needs root and mount (a tiny tmpfs)")
    def test_a_full_disk_refuses_with_500_and_the_broker_keeps_serving(self):
        disk = os.path.join(self.tmp, "disk")
        self.mount_tmpfs(disk, "2m")
        # Someone else's file takes most of the disk
        ballast = os.path.join(disk, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\0" * (1700 * 1024))
        self.store = os.path.join(disk, "store")
        self.store_broker()
        c = self.client()
        ids, refusal = self.fill(c)
        self.assert_full_then_serving(c, ids, refusal, lambda: os.unlink(ballast))

    def test_a_read_only_folder_is_refused_at_start(self):
        if os.geteuid() != 0:
            os.makedirs(self.store, mode=0o700)
            os.chmod(self.store, 0o500)
            self.addCleanup(os.chmod, self.store, 0o700)
        elif can_mount():
            self.mount_tmpfs(self.store, "1m")
            self.store_broker()          # a store that works, then read-only
            self.broker.stop()
            r = subprocess.run(["mount", "-o", "remount,ro", self.store],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
        else:
            self.skipTest("root without mount: a read-only folder cannot be made")
        rc, err = self.start_failing()
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"pigato-broker: --store: store folder '.*' cannot be "
                              r"written: (Read-only file system|Permission denied)")

    def test_a_corrupt_file_is_refused_at_start(self):
        os.makedirs(self.store, mode=0o700)
        path = os.path.join(self.store, "titanic.db")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, os.urandom(16384))
        os.close(fd)
        rc, err = self.start_failing()
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"store file '.*titanic.db': file is not a database")
        self.assertNotIn("event=ready", err)

    def test_a_store_in_use_by_another_broker_is_refused(self):
        # Two brokers on one store would both run every request
        self.store_broker()
        c = self.client()
        ident = self.submit_ok(c, "later")
        rc, err = self.start_failing()
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"store file '.*titanic.db' is in use by another process")
        # The first one goes on
        self.assertEqual(self.fetch(c, ident).status, b"-1")
        self.assert_status(self.fetch(c, ident), 300, "pending")

    def test_another_applications_database_is_refused_at_start(self):
        os.makedirs(self.store, mode=0o700)
        path = os.path.join(self.store, "titanic.db")
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
        db.close()
        os.chmod(path, 0o600)
        rc, err = self.start_failing()
        self.assertEqual(rc, 1)
        self.assertIn("is a SQLite database of another application", err)

    def test_modes_of_folder_and_file(self):
        self.store_broker()
        c = self.client()
        self.submit_ok(c, "nobody")
        self.assertEqual(stat.S_IMODE(os.stat(self.store).st_mode), 0o700)
        for name in os.listdir(self.store):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.store, name)).st_mode),
                             0o600, name)
        self.broker.stop()
        os.chmod(self.store, 0o755)
        rc, err = self.start_failing()
        self.assertEqual(rc, 1)
        self.assertIn("is open to group or others (mode 0755)", err)
        os.chmod(self.store, 0o700)
        os.chmod(os.path.join(self.store, "titanic.db"), 0o644)
        rc, err = self.start_failing()
        self.assertEqual(rc, 1)
        self.assertIn("is readable by group or others (mode 0644)", err)


# --------------------------------------------------------------------------
# Identities

POLICY = """\
identity alice  {alice}
identity bob    {bob}
identity carol  {carol}
identity dave   {dave}
identity wk     {wk}
allow alice  call  titanic.* echo slow
allow bob    call  titanic.* slow
allow dave   call  titanic.* slow
allow wk     serve *
limit bob    stored=2 stored-bytes=1M
"""


class SecurityTest(TitanicCase):
    CURVE = True
    NAMES = ("alice", "bob", "carol", "dave", "wk")

    def setUp(self):
        TitanicCase.setUp(self)
        self.keydir = os.path.join(self.tmp, "ids")
        os.mkdir(self.keydir)
        self.keys = {n: KeyPair(self.keydir, n) for n in self.NAMES}
        self.acl_path = os.path.join(self.tmp, "mesh.acl")
        self.policy(POLICY)
        self.store_broker(acl=self.acl_path)

    def policy(self, text):
        write_acl(self.acl_path, text.format(**{n: k.public for n, k in self.keys.items()}))

    def reload(self):
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assertIsNotNone(self.wait_log(r"event=acl_reloaded", 5, mark))
        return mark

    def as_client(self, name):
        return self.client(keypair=self.keys[name])

    def test_titanic_names_need_call_and_the_service_is_checked(self):
        alice, bob, carol = (self.as_client(n) for n in ("alice", "bob", "carol"))
        self.submit_ok(alice, "echo")
        r = self.submit(bob, "echo")
        self.assert_status(r, 400, "bob may not call echo")
        self.assertEqual(unquote(r.data), "400 E_ACCESS_DENIED echo")
        r = self.submit(carol, "echo")
        self.assertEqual((r.status, r.data), (b"-1", b'"E_ACCESS_DENIED titanic.request"'))

    def test_another_identity_learns_nothing(self):
        alice, bob = self.as_client("alice"), self.as_client("bob")
        ident = self.submit_ok(alice, "slow", '"mine"')
        theirs = self.fetch(bob, ident)
        unknown = self.fetch(bob, "%032x" % random.getrandbits(128))
        self.assertEqual(theirs.frames[4:], unknown.frames[4:])
        self.assert_status(theirs, 400, "another identity's id")
        self.assertEqual(self.close_id(bob, ident).frames[4:],
                         self.close_id(bob, "f" * 32).frames[4:])
        self.assert_status(self.fetch(alice, ident), 300, "still alice's")
        # Idempotency keys are per identity too
        a = self.submit_ok(alice, "slow", key="same")
        b_ = self.submit_ok(bob, "slow", key="same")
        self.assertNotEqual(a, b_)

    def test_lost_call_or_removed_identity_ends_with_access_denied(self):
        alice, dave = self.as_client("alice"), self.as_client("dave")
        mine = [self.submit_ok(alice, "slow", '"a%d"' % i) for i in range(3)]
        daves = self.submit_ok(dave, "slow", '"d"')
        # alice loses call on slow; dave leaves the policy
        self.policy(POLICY.replace("allow alice  call  titanic.* echo slow",
                                   "allow alice  call  titanic.* echo")
                          .replace("identity dave   {dave}\n", "")
                          .replace("allow dave   call  titanic.* slow\n", ""))
        mark = self.reload()
        for ident in mine:
            r = self.wait_reply(alice, ident)
            self.assertEqual((r.status, unquote(r.data), json.loads(r.opts)),
                             (b"-1", "E_ACCESS_DENIED slow", {"titanic": 200}))
        self.assertIsNotNone(self.wait_log(r"event=titanic_denied id=%s identity=dave "
                                           r"service=slow" % daves, 5, mark))
        # Nothing reached a worker that came later
        w = self.worker(keypair=self.keys["wk"])
        self.assertIsNotNone(w.ready("slow"))
        self.mesh.settle(secs(0.5))
        self.assertEqual(w.pending(lambda m: m[:2] == [b"W", b"2"]), [])
        # dave back: the stored outcome is his
        self.policy(POLICY)
        self.reload()
        dave = self.as_client("dave")
        r = self.fetch(dave, daves)
        self.assertEqual((r.status, unquote(r.data)), (b"-1", "E_ACCESS_DENIED slow"))

    def test_stored_quota(self):
        bob = self.as_client("bob")
        first = self.submit_ok(bob, "slow")
        self.submit_ok(bob, "slow")
        r = self.submit(bob, "slow")
        self.assert_status(r, 500, "over stored=2")
        self.assertIn("(stored)", unquote(r.data))
        self.assertIsNotNone(self.wait_log(r"event=quota_exceeded identity=bob "
                                           r"service=slow limit=stored", 5))
        self.close_id(bob, first)
        self.submit_ok(bob, "slow")
        # alice has the defaults
        alice = self.as_client("alice")
        for _ in range(4):
            self.submit_ok(alice, "slow")

    def test_a_reply_counts_against_the_submitters_stored_bytes(self):
        """A worker's reply is kept for the submitter: past the submitter's
        stored-bytes, an E_QUOTA error is stored instead (the disk holds
        no more for one identity than it may hold); a reply that fits is
        stored whole."""
        bob = self.as_client("bob")
        big, small = self.submit_ok(bob, "slow"), self.submit_ok(bob, "slow")
        w = self.worker(keypair=self.keys["wk"])
        w.ready("slow")
        for _ in range(2):
            req = w.next_request(5)
            ident = json.loads(req.opts)["titanic"]
            w.reply(req, '"%s"' % ("x" * (2 << 20) if ident == big else "fits"))
        mark = self.broker.mark()
        r = self.wait_reply(bob, big)
        self.assertEqual(r.status, b"-1")
        self.assertRegex(unquote(r.data), r"^E_QUOTA the reply \(209\d{4} bytes\) would "
                         r"pass identity bob's stored-bytes limit \(1048576\); it was "
                         r"not stored$")
        self.assertIsNotNone(self.wait_log(r"event=quota_exceeded identity=bob "
                                           r"service=slow limit=stored-bytes", 5))
        r = self.wait_reply(bob, small)
        self.assertEqual((r.status, unquote(r.data)), (b"0", "fits"))
        # bob holds two small records: nothing of the 2 MB stayed counted;
        # a worker's error reply counts as well
        self.close_id(bob, big)
        failed = self.submit_ok(bob, "slow")
        req = w.next_request(5)
        self.assertEqual(json.loads(req.opts)["titanic"], failed)
        w.reply(req, '"%s"' % ("e" * (2 << 20)), status=-1)
        r = self.wait_reply(bob, failed)
        self.assertEqual(r.status, b"-1")
        self.assertTrue(unquote(r.data).startswith("E_QUOTA the reply ("), r.data[:80])

    def test_bodies_are_never_logged(self):
        alice = self.as_client("alice")
        secret = "SECRET-%x" % random.getrandbits(64)
        ident = self.submit_ok(alice, "echo", '"%s"' % secret, note=secret)
        w = self.worker(keypair=self.keys["wk"])
        w.ready("echo")
        req = w.next_request(5)
        w.reply(req, '"reply-%s"' % secret)
        self.wait_reply(alice, ident)
        self.fetch(alice, ident)
        self.close_id(alice, ident)
        self.broker.stop()
        self.assertNotIn(secret, self.broker.text())


# --------------------------------------------------------------------------
# Node pigato 0.0.46

NODE_DIR = os.path.join(harness.REPO, "tests", "node")


class NodeTest(TitanicCase):
    """Node pigato clients and workers (tests/node, as test_node_interop.py
    runs them): a Node client reaches titanic.* like any service; its
    data and reply are JSON."""

    CURVE = True

    @classmethod
    def setUpClass(cls):
        reason = None
        if not shutil.which("node") or not shutil.which("npm"):
            reason = "node or npm not found on PATH"
        else:
            r = subprocess.run([os.path.join(NODE_DIR, "setup.sh"), BUILD],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                reason = "tests/node/setup.sh failed:\n" + r.stderr[-2000:]
        if reason and os.environ.get("PIGATO_REQUIRE_NODE") == "1":
            raise RuntimeError("Node interop required but unavailable: " + reason)
        if reason:
            raise unittest.SkipTest("Node interop NOT tested: " + reason)

    def node_env(self):
        return {"NODE_PATH": os.path.join(BUILD, "node", "node_modules"),
                "NODE_NO_WARNINGS": "1", "PIGATO_NODE_SERVER_KEY": self.broker.key.public}

    def node_request(self, service, data, opts=None):
        extra = ["--opts", json.dumps(opts)] if opts else []
        p = self.start(["node", os.path.join(NODE_DIR, "node_client.js"),
                        "--broker", self.broker.endpoint, "--service", service,
                        "--data", json.dumps(data), "--timeout", "10000",
                        "--heartbeat", "500"] + extra, name="node-client",
                       env=self.node_env())
        self.assertEqual(p.wait(30), 0, "node client failed\n" + p.tail())
        events = [json.loads(l) for l in p.text("stdout").splitlines() if l.strip()]
        return [e for e in events if e["type"] == "final"][0]

    def test_node_client_and_node_worker(self):
        self.store_broker()
        mark = self.broker.mark()
        self.start(["node", os.path.join(NODE_DIR, "node_worker.js"), "--broker",
                    self.broker.endpoint, "--service", "node.echo", "--heartbeat", "500"],
                   name="node-worker", env=self.node_env())
        self.assertIsNotNone(self.wait_log(r"event=worker_ready service=node.echo", 10, mark))
        payload = {"n": 42, "text": "h\u00e9llo"}
        final = self.node_request("titanic.request", payload, {"service": "node.echo"})
        self.assertEqual(final["err"], 0, final)
        ident = final["data"]
        self.assertRegex(ident.encode(), ID)
        deadline = time.monotonic() + secs(10)
        while True:
            final = self.node_request("titanic.reply", ident)
            if not (isinstance(final["err"], str) and final["err"].startswith("300 ")):
                break
            self.assertLess(time.monotonic(), deadline, final)
        self.assertEqual((final["err"], final["data"]), (0, payload))
        final = self.node_request("titanic.close", ident)
        self.assertEqual((final["err"], final["data"]), (0, 200))
        final = self.node_request("titanic.reply", ident)
        self.assertTrue(final["err"].startswith("400 E_UNKNOWN"), final)
        # A libpigato client's durable request, served by the Node worker
        rc, out, err = self.cli("submit", "node.echo", '{"from":"c"}', *self.cli_args())
        self.assertEqual(rc, 0, err)
        rc, out, err = self.cli("fetch", out.strip(), "--wait", *self.cli_args())
        self.assertEqual((rc, json.loads(out)), (0, {"from": "c"}), err)


# --------------------------------------------------------------------------
# SIGKILL under load

class CrashTest(TitanicCase):
    """20,000 durable submissions while the broker is SIGKILLed at random
    moments (10 times) and restarted on the same store."""

    CHECK_BROKER_EXIT = False
    SUBMISSIONS = int(os.environ.get("TITANIC_CRASH_SUBMISSIONS", "20000"))
    KILLS = int(os.environ.get("TITANIC_CRASH_KILLS", "10"))
    INFLIGHT = 100
    RESEND = 2.0        # seconds without an answer: send again (same key)
    STORE_EXTRA = ()

    def test_sigkill_under_load_loses_no_acknowledged_request(self):
        t0 = time.monotonic()
        self.store_broker(self.STORE_EXTRA, heartbeat=500)
        port = self.broker.port
        endpoint = self.broker.endpoint
        log = os.path.join(self.tmp, "exec.log")
        worker = self.start([titanic_worker(), endpoint, "crash", log, "-", "200"],
                            name="worker")
        self.assertIsNotNone(worker.wait_for_line(r"^ready$", 10, stream="stdout"))
        state = Load(endpoint, self.SUBMISSIONS, self.INFLIGHT, self.RESEND)
        brokers = [self.broker]
        kills = []

        def killer():
            step = self.SUBMISSIONS // (self.KILLS + 1)
            for k in range(1, self.KILLS + 1):
                while state.acked_count() < step * k and not state.failed:
                    time.sleep(0.01)
                if state.failed:
                    return
                time.sleep(random.uniform(0, 0.15))
                victim = brokers[-1]
                os.kill(victim.pid, signal.SIGKILL)
                victim.signalled = True
                victim.wait(5)
                kills.append((time.monotonic(), state.acked_count()))
                brokers.append(self.store_broker(self.STORE_EXTRA, port=port,
                                                 heartbeat=500))

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        state.run(deadline=time.monotonic() + secs(150), done=lambda: not thread.is_alive())
        thread.join(secs(10))
        self.assertFalse(state.failed, state.failed)
        elapsed = time.monotonic() - t0
        # Every submission acknowledged, one id per key, one reply per id
        self.assertEqual(len(state.acked), self.SUBMISSIONS)
        self.assertEqual(state.conflicts, [], "a key got two ids")
        ids = set(state.acked.values())
        self.assertEqual(len(ids), self.SUBMISSIONS)
        self.assertEqual(set(state.replies), ids)
        for key, ident in state.acked.items():
            self.assertEqual(state.replies[ident], b'done:"' + key.encode() + b'"')
        # Nothing ran after its close was answered
        execs = collections.defaultdict(list)
        with open(log) as f:
            for line in f:
                kind, ident, attempt, at = line.split()
                if kind == "exec":
                    execs[ident].append(int(at) / 1e6)
        late = [(i, max(execs[i]) - t) for i, t in state.closed.items()
                if execs[i] and max(execs[i]) > t]
        self.assertEqual(late, [], "executed after its close was answered")
        self.assertGreater(len(state.closed), self.SUBMISSIONS // 3, "too few closes")
        self.assertEqual(set(execs), ids, "every request ran")
        # The brokers said what they recovered
        recovered = []
        for br in brokers[1:]:
            m = br.wait_for_log(r"event=titanic_recovered .*pending=(\d+) replied=(\d+)", 5)
            self.assertIsNotNone(m, br.tail())
            recovered.append((int(m.group(1)), int(m.group(2))))
        self.assertGreaterEqual(len(kills), self.KILLS)
        print("\ncrash test%s: %d submissions, %d kills, %.1f s; recovered (pending, "
              "replied) per restart: %s; %d closed; %d resends; %d executions "
              "for %d ids" % (" " + " ".join(self.STORE_EXTRA) if self.STORE_EXTRA else "",
                              self.SUBMISSIONS, len(kills), elapsed, recovered,
                              len(state.closed), state.resends,
                              sum(len(v) for v in execs.values()), len(ids)))


class IntervalCrashTest(CrashTest):
    """The same with --store-sync: an acknowledgement follows the commit's
    write, not its fsync. A killed broker (not a lost machine) still loses
    nothing acknowledged: what was written is the kernel's."""

    SUBMISSIONS = int(os.environ.get("TITANIC_CRASH_SUBMISSIONS", "6000"))
    KILLS = int(os.environ.get("TITANIC_CRASH_KILLS", "4"))
    STORE_EXTRA = ("--store-sync", "1000")


class Load:
    """A client of durable requests over one DEALER (pigato 0.0.46, raw):
    submits key k<n> with body "k<n>", keeps INFLIGHT requests out, sends
    again (same key) what got no answer within RESEND seconds, fetches
    every acknowledged id until its reply, and closes every other one."""

    def __init__(self, endpoint, total, inflight, resend):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.total, self.inflight, self.resend_after = total, inflight, resend
        self.next_key = 0
        self.out = {}            # rid -> (kind, key or id, sent at)
        self.acked = {}          # key -> id
        self.conflicts = []
        self.replies = {}        # id -> reply data
        self.closed = {}         # id -> when its close was answered
        self.todo = []           # heap of (due, seq, kind, id): fetch / close
        self.busy = set()        # ids with a fetch or close out
        self.resends = 0
        self.seq = 0
        self.failed = None
        self.lock = threading.Lock()

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def send(self, kind, subject):
        self.seq += 1
        rid = "r%d" % self.seq
        if kind == "submit":
            frames = ["C", "2", "titanic.request", rid, '"%s"' % subject,
                      json.dumps({"service": "crash", "key": subject})]
        else:
            frames = ["C", "2", "titanic.reply" if kind == "fetch" else "titanic.close",
                      rid, subject]
            self.busy.add(subject)
        self.out[rid] = (kind, subject, time.monotonic())
        self.sock.send_multipart([x.encode() for x in frames])

    def later(self, due, kind, ident):
        self.seq += 1
        heapq.heappush(self.todo, (due, self.seq, kind, ident))

    def handle(self, msg):
        if len(msg) < 7 or msg[:2] != [b"C", b"3"]:
            return
        entry = self.out.pop(msg[3].decode(), None)
        if entry is None:
            return              # answered already (a resend's twin)
        kind, subject, _ = entry
        status, data = msg[4], msg[5]
        code = json.loads(msg[6]).get("titanic")
        now = time.monotonic()
        if kind == "submit":
            if code != 200:
                self.send("submit", subject)   # 500: again
                return
            ident = json.loads(data)
            with self.lock:
                if subject in self.acked and self.acked[subject] != ident:
                    self.conflicts.append((subject, self.acked[subject], ident))
                if subject not in self.acked:
                    self.acked[subject] = ident
                    self.later(now, "fetch", ident)
            return
        self.busy.discard(subject)
        if kind == "fetch":
            if code == 200:
                self.replies[subject] = data
                if int(subject[-8:], 16) % 2 == 0:   # the id's random half
                    self.later(now, "close", subject)
            elif code == 300 or code == 500:
                self.later(now + 0.2, "fetch", subject)
            else:
                self.failed = "fetch of acknowledged %s: %r" % (subject, msg)
        elif code == 200:
            self.closed[subject] = now
        else:
            self.later(now + 0.2, "close", subject)

    def run(self, deadline, done):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.failed:
            now = time.monotonic()
            if now > deadline:
                self.failed = ("out of time: %d acked, %d replies, %d out"
                               % (len(self.acked), len(self.replies), len(self.out)))
                break
            submits = sum(1 for v in self.out.values() if v[0] == "submit")
            while self.next_key < self.total and submits < self.inflight:
                self.send("submit", "k%d" % self.next_key)
                self.next_key += 1
                submits += 1
            others = len(self.out) - submits
            while self.todo and self.todo[0][0] <= now and others < self.inflight:
                _, _, kind, ident = heapq.heappop(self.todo)
                if ident not in self.busy:
                    self.send(kind, ident)
                    others += 1
            for rid, (kind, subject, sent) in list(self.out.items()):
                if now - sent > self.resend_after:
                    del self.out[rid]
                    self.busy.discard(subject)
                    self.resends += 1
                    self.send(kind, subject)
            if (len(self.acked) == self.total and len(self.replies) == self.total
                    and not self.out and not self.todo and done()):
                break
            if dict(poller.poll(20)):
                while True:
                    try:
                        self.handle(self.sock.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
        self.sock.close(0)
        self.ctx.term()


if __name__ == "__main__":
    harness.main()
