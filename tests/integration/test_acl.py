#!/usr/bin/python3
"""Authentication and per-service ACLs over real sockets (issue 3,
docs/security.md): fail closed, unknown keys refused at the handshake, the ACL
decides every request, request heartbeat, READY and reply, routing ids
cannot be borrowed, SIGHUP reloads revoke live connections, --insecure
--acl, --check-acl, and Node pigato peers with ACL-listed keys.

Every broker here runs with --acl (or --insecure --acl); raw pyzmq peers
use the CURVE key pairs the ACL lists (harness KeyPair, keypair=)."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

import harness
import native
from harness import (BROKER_BIN, CLI_BIN, KeyPair, MeshTestCase, Proc, RawClient,
                     RawWorker, secs, write_acl)

# Far longer than any "at once" window below: an error that arrives inside
# the window cannot be the request's own timeout.
LONG = '{"timeout":30000}'
AT_ONCE = 1.5           # seconds: "immediately" for a denial
ZAP_ENFORCE_DOMAIN = 93  # draft option in libzmq 4.3, accepted by number


def fingerprint(public_z85):
    """The broker's key fingerprint: BLAKE2b-256 of the 32-byte key, first
    8 bytes in hex."""
    raw = z85.decode(harness.b(public_z85))
    assert len(raw) == 32
    return hashlib.blake2b(raw, digest_size=32).digest()[:8].hex()


def denied_json(service):
    return json.dumps("E_ACCESS_DENIED %s" % service).encode()


def access_denied_re(kp, identity, verb, service, reason):
    return (r"event=access_denied address=\S+ peer=\S+ key=%s identity=%s verb=%s "
            r"service=%s reason=%s\b" % (fingerprint(kp.public), re.escape(identity),
                                          verb, re.escape(service), reason))


# --------------------------------------------------------------------------
# 1. Fail closed: what ZAP_ENFORCE_DOMAIN buys, shown with libzmq alone

class FailClosedTest(unittest.TestCase):
    """A CURVE ROUTER with a ZAP domain but no ZAP handler: libzmq lets every
    client in unless ZAP_ENFORCE_DOMAIN (93) is set. The broker sets both
    and binds its handler first; this shows the setting is what closes the
    door if the handler is missing."""

    def attempt(self, enforce):
        """Returns (message the ROUTER received or None, monitor events)."""
        ctx = zmq.Context()
        socks = []
        try:
            server_pub, server_sec = zmq.curve_keypair()
            router = ctx.socket(zmq.ROUTER)
            socks.append(router)
            router.linger = 0
            router.curve_server = True
            router.curve_secretkey = server_sec
            router.zap_domain = b"pigato"
            if enforce:
                router.setsockopt(ZAP_ENFORCE_DOMAIN, 1)
                self.assertEqual(router.getsockopt(ZAP_ENFORCE_DOMAIN), 1)
            monitor = router.get_monitor_socket()
            socks.append(monitor)
            port = router.bind_to_random_port("tcp://127.0.0.1")
            dealer = ctx.socket(zmq.DEALER)
            socks.append(dealer)
            dealer.linger = 0
            pub, sec = zmq.curve_keypair()
            dealer.curve_serverkey = server_pub
            dealer.curve_publickey = pub
            dealer.curve_secretkey = sec
            dealer.connect("tcp://127.0.0.1:%d" % port)
            dealer.send_multipart([b"C", b"4"])
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            deadline = time.monotonic() + secs(1.0)
            got, events = None, []
            while got is None and time.monotonic() < deadline:
                ready = dict(poller.poll(50))
                if monitor in ready:
                    while True:
                        try:
                            events.append(recv_monitor_message(monitor, zmq.NOBLOCK)["event"])
                        except zmq.Again:
                            break
                if router in ready:
                    got = router.recv_multipart()
            return got, events
        finally:
            for s in socks:
                s.close(0)
            ctx.term()

    def test_no_zap_handler_with_enforce_domain_lets_nobody_in(self):
        got, events = self.attempt(enforce=True)
        self.assertIsNone(got, "a CURVE client got in with ZAP_ENFORCE_DOMAIN and no "
                               "ZAP handler: %r" % got)
        self.assertNotIn(zmq.EVENT_HANDSHAKE_SUCCEEDED, events,
                         "handshake succeeded without a ZAP handler")
        failed = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                  zmq.EVENT_HANDSHAKE_FAILED_AUTH}
        self.assertTrue(failed & set(events),
                        "monitor showed no failed handshake: %r" % events)

    def test_positive_control_without_enforce_domain_everyone_gets_in(self):
        # Same ROUTER without option 93: libzmq skips ZAP when nobody
        # answers, so an unauthenticated client is accepted. This is what
        # the broker's setting prevents.
        got, events = self.attempt(enforce=False)
        self.assertIsNotNone(got, "control: client not accepted without option 93 "
                                  "(events %r)" % events)
        self.assertEqual(got[1:], [b"C", b"4"])


# --------------------------------------------------------------------------
# Brokers with --acl

class AclCase(MeshTestCase):
    CURVE = True
    START_BROKER = False
    NAMES = ()

    def setUp(self):
        MeshTestCase.setUp(self)
        # "ids", not "keys": /tmp/pigato-test-XXXXXXXX/keys/alice.key is 40
        # characters of the Z85 alphabet, which the broker mistakes for a
        # key (see test_key_file_path_of_40_z85_characters).
        self.keydir = os.path.join(self.tmp, "ids")
        os.mkdir(self.keydir)
        self.keys = {n: KeyPair(self.keydir, n) for n in self.NAMES}
        self.acl_path = os.path.join(self.tmp, "mesh.acl")

    def acl_text(self, text):
        """{name} becomes the Z85 public key of KeyPair name."""
        return text.format(**{n: k.public for n, k in self.keys.items()})

    def acl_broker(self, text, curve=True):
        write_acl(self.acl_path, self.acl_text(text))
        self.broker = self.start_broker(curve=curve, acl=self.acl_path)
        return self.broker

    def as_client(self, name, **kw):
        return self.client(keypair=self.keys[name], **kw)

    def as_worker(self, name, service=None, **kw):
        w = self.worker(keypair=self.keys[name], **kw)
        if service is not None:
            self.assertIsNotNone(w.ready(service),
                                 "%s: READY %s not acknowledged\n%s"
                                 % (name, service, self.broker.tail(10)))
        return w

    def round_trip(self, client, worker, service, rid, data='"ping"'):
        client.request(service, rid, data, LONG)
        req = worker.next_request(5)
        self.assertIsNotNone(req, "allowed request %s to %s never reached the worker\n%s"
                             % (rid, service, self.broker.tail(10)))
        self.assertEqual((req.service, req.rid, req.data),
                         (harness.b(service), harness.b(rid), harness.b(data)))
        worker.reply(req, '"re:%s"' % rid)
        _, final = client.final(rid, 5)
        self.assertIsNotNone(final, "no reply for allowed request %s" % rid)
        self.assertEqual((final.status, final.data), (b"0", ('"re:%s"' % rid).encode()))

    def assert_denied_at_once(self, client, service, rid):
        """A request with a 30 s timeout gets the final E_ACCESS_DENIED
        error well within AT_ONCE seconds."""
        t0 = time.monotonic()
        client.request(service, rid, '"x"', LONG)
        _, final = client.final(rid, AT_ONCE)
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(final, "denied request %s to %r got no final error within %ss\n%s"
                             % (rid, service, AT_ONCE, self.broker.tail(10)))
        self.assertEqual(final.frames[:4], [b"C", b"3", b"", harness.b(rid)])
        self.assertEqual((final.status, final.data), (b"-1", denied_json(service)),
                         "denied request %s to %r" % (rid, service))
        self.assertLess(elapsed, secs(AT_ONCE))

    def claim(self, cls, name, routing_id, probe, answer, attempts=5,
              wait=1.0):
        """Connects a peer with key `name` and a routing id someone else
        used. libzmq's ROUTER refuses a routing id while its first owner is
        still connected, and notices a departure asynchronously, so retry
        (bounded) until `probe` gets `answer`. Returns the peer, or None
        if the id never became usable."""
        for _ in range(attempts):
            p = cls(self.mesh, self.broker.endpoint, self.broker.server_key,
                    identity=routing_id, keypair=self.keys[name], auto_heartbeat=False)
            p.send(*probe)
            if p.recv(lambda m: m[:2] == answer, wait, skip_noise=False) is not None:
                return p
            p.close()
        return None

    def sighup(self, expect, since=None):
        """Sends SIGHUP to the broker and waits for a log line matching
        expect; returns the match."""
        mark = self.broker.mark() if since is None else since
        os.kill(self.broker.pid, signal.SIGHUP)
        m = self.wait_log(expect, 5, mark)
        self.assertIsNotNone(m, "after SIGHUP, no log line %r\n%s"
                             % (expect, self.broker.tail(15)))
        return m


# --------------------------------------------------------------------------
# 2 + 3. Who gets in, and what they may do

POLICY = """\
# pigato-c test policy
identity alice  ids/alice.key        # a zcert public key file, relative to this file
identity bob    {bob}
identity carol  {carol}
identity dave   {dave}
identity wk     ids/wk.key
identity wb     {wb}

group inner  carol
group outer  @inner dave              # nested: carol is in @outer too

allow alice   call   echo billing.*
deny  alice   call   billing.secret   # deny beats allow
allow @outer  call   *
deny  *       call   admin.*
allow wk      serve  *
deny  wk      serve  forbidden
"""


class AdmissionTest(AclCase):
    NAMES = ("alice", "bob", "carol", "dave", "wk", "wb", "mallory")

    def test_unknown_key_cannot_connect(self):
        self.acl_broker(POLICY)
        mark = self.broker.mark()
        w = self.as_worker("wk", "unk.svc")
        # A valid key pair, not in the ACL. It sends once: a DEALER whose
        # handshake was refused has no pipe left and would block.
        stranger = self.as_client("mallory", auto_heartbeat=False)
        stranger.send("C", "4")
        stranger.request("unk.svc", "m1", '"let me in"', LONG)
        fp = fingerprint(self.keys["mallory"].public)
        m = self.wait_log(r"event=zap_deny address=\S+ key=%s mechanism=CURVE "
                          r"reason=unknown_key\b" % fp, 3, mark)
        self.assertIsNotNone(m, "no zap_deny for the unknown key (fingerprint %s)\n%s"
                             % (fp, self.broker.tail(10)))
        self.mesh.settle(secs(1.0))
        self.assertEqual(stranger.received, [],
                         "an unknown key got answers: %r" % stranger.received)
        self.assertEqual(w.requests_now(0), [], "an unknown key's request was dispatched")
        # The deny log names only that key, never a known one.
        for name in ("alice", "wk"):
            self.assertEqual(self.broker.count(r"event=zap_deny .*key=%s"
                                               % fingerprint(self.keys[name].public)), 0)
        # Positive control: a listed key, same broker, is answered at once.
        friend = self.as_client("carol")
        friend.send("C", "4")
        self.assertIsNotNone(friend.recv(lambda m: m == [b"C", b"4"], 3, skip_noise=False),
                             "a listed key got no heartbeat answer")
        self.round_trip(friend, w, "unk.svc", "c1")

    def test_calls_follow_the_acl(self):
        self.acl_broker(POLICY)
        workers = {s: self.as_worker("wk", s)
                   for s in ("echo", "billing.invoice", "billing.secret", "report",
                             "admin.panel")}
        alice, bob, carol, dave = (self.as_client(n) for n in ("alice", "bob", "carol", "dave"))
        mark = self.broker.mark()

        allowed = [(alice, "echo"),                 # exact
                   (alice, "billing.invoice"),      # prefix*
                   (carol, "report"),               # * via @inner nested in @outer
                   (dave, "echo"),                  # * via @outer
                   (carol, "billing.secret")]       # alice's deny is hers only
        for i, (c, service) in enumerate(allowed):
            self.round_trip(c, workers[service], service, "ok-%d" % i)

        denied = [(alice, "alice", "billing.secret"),   # deny beats allow
                  (alice, "alice", "billing"),          # billing.* needs the dot
                  (alice, "alice", "echo2"),            # exact is not a prefix
                  (alice, "alice", "report"),           # no rule: default deny
                  (carol, "carol", "admin.panel"),      # deny * beats allow @outer *
                  (dave, "dave", "admin.x"),
                  (bob, "bob", "echo")]                 # listed, but no rule at all
        for i, (c, name, service) in enumerate(denied):
            self.assert_denied_at_once(c, service, "no-%d" % i)
            m = self.wait_log(access_denied_re(self.keys[name], name, "call", service,
                                               "not_allowed"), 2, mark)
            self.assertIsNotNone(m, "no access_denied log line for %s calling %s\n%s"
                                 % (name, service, self.broker.tail(10)))
        # Counted: one log line per denial, no more.
        self.assertEqual(self.broker.count(r"event=access_denied\b", mark), len(denied),
                         self.broker.tail(20))
        # Nothing denied ever reached a worker.
        for service, w in workers.items():
            self.assertEqual(w.requests_now(0.1 if service == "echo" else 0), [],
                             "denied request reached the %s worker" % service)

    def test_ready_needs_serve(self):
        self.acl_broker(POLICY)
        mark = self.broker.mark()
        ok = self.as_worker("wk")
        self.assertIsNotNone(ok.ready("echo"), "wk may serve echo (allow wk serve *)")
        cases = [("wb", "echo"),            # identity with no serve rule
                 ("wk", "forbidden"),       # deny beats allow
                 ("alice", "echo")]         # call rights are not serve rights
        for name, service in cases:
            w = self.as_worker(name)
            w.send("W", "1", service)
            got = w.recv(lambda m: m[:2] in ([b"W", b"5"], [b"W", b"1"]), 3, skip_noise=False)
            # DISCONNECT says why (docs/protocol.md): W, 5, reason
            self.assertEqual(got, [b"W", b"5", b"E_ACCESS_DENIED serve " + service.encode()],
                             "READY %s by %s must get DISCONNECT (W,5,reason)" % (service, name))
            m = self.wait_log(access_denied_re(self.keys[name], name, "serve", service,
                                               "not_allowed"), 2, mark)
            self.assertIsNotNone(m, "denied READY (%s, %s) not logged\n%s"
                                 % (name, service, self.broker.tail(10)))
            w.close()
        self.assertEqual(self.broker.count(r"event=access_denied\b", mark), len(cases))
        # The denied worker was not registered: a request for its service
        # waits for a worker instead of reaching it.
        intruder = self.as_worker("wk")
        intruder.send("W", "1", "forbidden")
        intruder.send("W", "4", "", "{}")
        carol = self.as_client("carol")
        carol.request("forbidden", "f1", '"x"', LONG)
        self.mesh.settle(secs(0.5))
        self.assertEqual(intruder.requests_now(0), [], "request reached a denied worker")
        self.assertEqual(carol.pending(lambda m: m[:2] == [b"C", b"3"]), [],
                         "no worker for 'forbidden': the request must wait")
        # An allowed worker of the service gets it (positive control).
        self.assertEqual(self.broker.count(r"event=worker_ready\b.*service=forbidden\b"), 0)
        self.round_trip(self.as_client("dave"), ok, "echo", "e1")

    def test_cli_with_listed_key(self):
        self.acl_broker(POLICY)
        k = self.keys
        mark = self.broker.mark()
        serve = self.start([CLI_BIN, "serve", "cli.echo", "--echo", "--key", k["wk"].secret_file]
                           + self.broker.cli_args(), name="pigato-serve")
        self.assertIsNotNone(self.wait_log(r"event=worker_ready service=cli\.echo\b", 10, mark),
                             "pigato serve --key (wk) never registered\n" + serve.tail())
        rc, out, err = self.cli("request", "cli.echo", '"hi"', "--timeout", "5000",
                                "--key", k["carol"].secret_file, *self.broker.cli_args())
        self.assertEqual((rc, out.strip()), (0, '"hi"'), err)
        t0 = time.monotonic()
        rc, out, err = self.cli("request", "billing.secret", '"x"', "--timeout", "20000",
                                "--key", k["alice"].secret_file, *self.broker.cli_args())
        self.assertEqual(rc, 1, "denied call must exit 1: out=%r err=%r" % (out, err))
        self.assertIn("pigato: error from billing.secret: E_ACCESS_DENIED billing.secret", err)
        self.assertLess(time.monotonic() - t0, secs(10), "the CLI waited for its timeout")
        # Without --key the CLI uses an ephemeral key: not in the ACL.
        rc, out, err = self.cli("request", "cli.echo", '"x"', "--timeout", "1500",
                                *self.broker.cli_args())
        self.assertNotEqual(rc, 0, "an unlisted (ephemeral) key got a reply: %r" % out)
        self.assertIsNotNone(self.wait_log(r"event=zap_deny .*reason=unknown_key", 2, mark))


# --------------------------------------------------------------------------
# 4. Routing ids are chosen by peers

ROUTING_POLICY = """\
identity alice  {alice}
identity bob    {bob}
identity wk     {wk}
identity wk2    {wk2}
identity mallet {mallet}
group callers  alice bob mallet
group servers  wk wk2 mallet
allow @callers call  svc
allow @servers serve svc
"""


RESOLVED_POLICY = """\
identity alice  {alice}
identity wild   {wk}
identity real   {wk2}
allow alice call pub.* calc*
deny  alice call pub.hidden calc@2.1.0
allow wild  serve pub.* calc@*
deny  wild  serve pub.secret
allow real  serve pub.secret pub.hidden
"""


class ResolvedNameTest(AclCase):
    """The ACL holds for the names resolution adds, not only the name as
    written: a wildcard's worker gets only the names it may serve, and a
    version range reaches only versions its caller may call."""
    NAMES = ("alice", "wk", "wk2")

    def test_wildcard_worker_gets_only_names_it_may_serve(self):
        self.acl_broker(RESOLVED_POLICY)
        wild = self.as_worker("wk", "pub.*")
        alice = self.as_client("alice")
        # Allowed through the wildcard
        self.round_trip(alice, wild, "pub.news", "news")
        # Denied to the wildcard: waits for a worker that may serve it
        alice.request("pub.secret", "secret", '"x"', LONG)
        self.assertEqual(wild.requests_now(0.5), [],
                         "pub.secret reached the pub.* worker of an identity "
                         "denied serve pub.secret\n" + self.broker.tail(10))
        real = self.as_worker("wk2", "pub.secret")
        req = real.next_request(5)
        self.assertIsNotNone(req, "pub.secret never reached its own worker\n"
                             + self.broker.tail(10))
        self.assertEqual(req.rid, b"secret")
        real.reply(req, '"s"')
        _, final = alice.final("secret", 5)
        self.assertIsNotNone(final)
        self.assertEqual(final.status, b"0")

    def test_deny_on_a_name_covers_its_versions(self):
        self.acl_broker(RESOLVED_POLICY)
        self.as_worker("wk2", "pub.hidden")
        alice = self.as_client("alice")
        for i, service in enumerate(("pub.hidden", "pub.hidden@^1",
                                     "pub.hidden@1.0.0")):
            self.assert_denied_at_once(alice, service, "h%d" % i)

    def test_range_reaches_only_versions_the_caller_may_call(self):
        self.acl_broker(RESOLVED_POLICY)
        v1 = self.as_worker("wk", "calc@1.4.0")
        v2 = self.as_worker("wk", "calc@2.1.0")
        alice = self.as_client("alice")
        # >=1 would pick 2.1.0 first; alice may not call it
        for i in range(3):
            alice.request("calc@>=1", "c%d" % i, '"x"', LONG)
            req = v1.next_request(5)
            self.assertIsNotNone(req, "calc@>=1 did not reach 1.4.0\n"
                                 + self.broker.tail(10))
            v1.reply(req, '"one"')
            _, final = alice.final("c%d" % i, 5)
            self.assertEqual(final.data, b'"one"')
        self.assertEqual(v2.requests_now(0.3), [],
                         "a request reached calc@2.1.0, which alice may not "
                         "call")
        # Asked by its exact name: refused at once
        self.assert_denied_at_once(alice, "calc@2.1.0", "exact")


DIRECTORY_POLICY = """\
identity alice    {alice}
identity mallory  {mallory}
identity ops      {ops}
identity wk       {wk}
allow alice    call   a.* $dir mmi.*
allow mallory  call   a.* $dir mmi.*
allow ops      call   *
allow wk       serve  *
"""

# The broker's quota for $dir and mmi.* (mesh/broker/core.h): a bucket of
# BURST requests per identity, refilled at RATE a second.
INTERNAL_BURST = 50
INTERNAL_RATE = 20


class DirectoryTest(AclCase):
    """$dir and mmi.service tell a tenant only about services it may call,
    and a flood of them from one identity is refused (E_QUOTA) while other
    identities are answered as usual (issue 14, item 7)."""
    NAMES = ("alice", "mallory", "ops", "wk")

    def ask(self, client, service, rid, data):
        client.request(service, rid, data, LONG)
        _, final = client.final(rid, 5)
        self.assertIsNotNone(final, "no answer to %s %s\n%s"
                             % (service, data, self.broker.tail(10)))
        return final

    def test_a_tenant_learns_nothing_about_services_it_may_not_call(self):
        self.acl_broker(DIRECTORY_POLICY)
        self.as_worker("wk", "a.echo")
        secret = self.as_worker("wk", "b.secret", identity=b"secret-worker-id")
        alice, ops = self.as_client("alice"), self.as_client("ops")
        # Positive control: ops may call b.secret and sees it
        everything = json.loads(self.ask(ops, "$dir", "o1", "null").data)
        self.assertEqual(sorted(everything), ["a.echo", "b.secret"])
        self.assertEqual(everything["b.secret"], ["secret-worker-id"])
        self.assertEqual(self.ask(ops, "mmi.service", "o2", '"b.secret"').data, b"200")
        # alice sees a.echo only, and no trace of the other worker
        mine = self.ask(alice, "$dir", "d1", "null")
        self.assertEqual((mine.status, sorted(json.loads(mine.data))), (b"0", ["a.echo"]))
        self.assertNotIn(b"secret", mine.data)
        # Asked by name, b.secret is answered exactly as a name nobody serves
        for service, expect in (("$dir", b"[]"), ("mmi.service", b"404")):
            hidden = self.ask(alice, service, "h-" + service, '"b.secret"')
            absent = self.ask(alice, service, "n-" + service, '"b.nosuch"')
            self.assertEqual(hidden.frames[4:], absent.frames[4:],
                             "%s answers b.secret unlike a missing service" % service)
            self.assertEqual((hidden.status, hidden.data), (b"0", expect))
        self.assertEqual(self.ask(alice, "mmi.service", "m1", '"a.echo"').data, b"200")
        self.assertEqual(secret.requests_now(0), [])

    def test_a_flood_of_dir_gets_e_quota_and_others_keep_flowing(self):
        self.acl_broker(DIRECTORY_POLICY)
        echo = self.as_worker("wk", "a.echo")
        mallory, alice = self.as_client("mallory"), self.as_client("alice")
        mark = self.broker.mark()
        t0 = time.monotonic()
        flood = 1024
        for i in range(flood):
            mallory.request("$dir", "f%d" % i, "null", LONG)
        # alice is answered while mallory's flood is being refused
        mine = self.ask(alice, "$dir", "a1", "null")
        self.assertEqual((mine.status, sorted(json.loads(mine.data))), (b"0", ["a.echo"]))
        self.round_trip(alice, echo, "a.echo", "a2")
        answered, refused = 0, 0
        for i in range(flood):
            _, final = mallory.final("f%d" % i, 5)
            self.assertIsNotNone(final, "flood request %d got no answer\n%s"
                                 % (i, self.broker.tail(10)))
            if final.status == b"0":
                answered += 1
            else:
                self.assertEqual(final.status, b"-1")
                self.assertTrue(json.loads(final.data).startswith("E_QUOTA "), final.data)
                refused += 1
        elapsed = time.monotonic() - t0
        self.assertLessEqual(answered, INTERNAL_BURST + INTERNAL_RATE * elapsed + 1,
                             "%d of %d $dir requests answered in %.1fs"
                             % (answered, flood, elapsed))
        self.assertGreaterEqual(answered, INTERNAL_BURST)
        self.assertEqual(answered + refused, flood)
        # Logged, rate-limited: never a line per refusal
        m = self.wait_log(r"event=quota_exceeded identity=mallory service=\$dir\b", 3, mark)
        self.assertIsNotNone(m, self.broker.tail(10))
        self.assertLess(self.broker.count(r"event=quota_exceeded\b", mark), 100)
        # ...and counted, every one
        mark = self.broker.mark()
        rc, clean = self.broker.stop(signal.SIGTERM, 5)
        self.assertEqual((rc, clean), (0, True))
        m = self.broker.wait_for_log(r"event=stopped .*\bover_quota=(\d+)", 1, mark)
        self.assertIsNotNone(m, self.broker.tail(5))
        self.assertEqual(int(m.group(1)), refused)


class RoutingIdTest(AclCase):
    NAMES = ("alice", "bob", "wk", "wk2", "mallet")

    def test_impostor_with_live_workers_routing_id_gets_nothing(self):
        self.acl_broker(ROUTING_POLICY)
        victim = self.as_worker("wk", "svc", identity="victim-w")
        alice = self.as_client("alice")
        alice.request("svc", "r1", '"secret"', LONG)
        req = victim.next_request()
        self.assertIsNotNone(req)
        # mallet may serve svc too: only the routing-id binding stands in the way.
        imp = RawWorker(self.mesh, self.broker.endpoint, self.broker.server_key,
                        identity="victim-w", keypair=self.keys["mallet"])
        imp.send("W", "1", "svc")
        imp.send("W", "4", "", "{}")
        imp.reply_to(req.client, "r1", '"forged"')
        alice.request("svc", "r2", '"secret 2"', LONG)
        self.mesh.settle(secs(1.0))
        self.assertEqual([m for m in imp.received if m[:2] == [b"W", b"2"]], [],
                         "the impostor received requests meant for the worker")
        for m in alice.received:
            self.assertNotIn(b'"forged"', m, "the impostor's reply was forwarded: %r" % m)
        # Whatever the broker made of it, r1 and r2 never reached the impostor
        # and the client gets the real worker's answers (or an error).
        for r in [req] + victim.requests_now(0.2):
            victim.reply(r, '"real"')
        for rid in ("r1", "r2"):
            _, final = alice.final(rid, 3)
            if final is not None and final.status == b"0":
                self.assertEqual(final.data, b'"real"', "rid %s" % rid)
        self.assertEqual([m for m in imp.received if m[:2] == [b"W", b"2"]], [])

    def test_departed_workers_routing_id_gets_no_requests_and_cannot_reply(self):
        self.acl_broker(ROUTING_POLICY)
        victim = self.as_worker("wk", "svc", identity="gone-w")
        alice = self.as_client("alice")
        alice.request("svc", "lost", '"a"', LONG)                         # no retry
        alice.request("svc", "kept", '"b"', '{"timeout":30000,"retry":1}')
        got = {victim.next_request().rid, victim.next_request().rid}
        self.assertEqual(got, {b"lost", b"kept"})
        client_id = [m for m in victim.received if m[:2] == [b"W", b"2"]][0][2]
        mark = self.broker.mark()
        victim.disconnect()
        self.assertIsNotNone(self.wait_log(r"event=worker_gone worker=gone-w .*reason=disconnect",
                                           3, mark), self.broker.tail(10))
        victim.close()
        _, final = alice.final("lost", 3)
        self.assertIsNotNone(final, "request of a departed worker not failed")
        self.assertEqual(final.status, b"-1")
        self.assertIn(b"E_WORKER_LOST", final.data)
        # mallet takes the departed worker's routing id. An unregistered
        # worker's heartbeat is answered with W,5 (which also proves the
        # routing id is now mallet's).
        imp = self.claim(RawWorker, "mallet", "gone-w", ["W", "4", "", "{}"], [b"W", b"5"])
        self.assertIsNotNone(imp, "could not take over the departed routing id\n"
                             + self.broker.tail(10))
        imp.reply_to(client_id, "kept", '"forged"')
        imp.reply_to(client_id, "kept", '"forged partial"', partial=True)
        imp.reply_to(client_id, "lost", '"forged"')
        alice.request("svc", "new", '"c"', LONG)
        self.mesh.settle(secs(0.8))
        self.assertEqual([m for m in imp.received if m[:2] == [b"W", b"2"]], [],
                         "a departed worker's routing id received requests")
        self.assertEqual(alice.pending(lambda m: m[:1] == [b"C"] and m[1] in (b"3", b"6")), [],
                         "a reply for a departed worker's rid was forwarded")
        # A real worker picks up the requeued request and the new one.
        w2 = self.as_worker("wk2", "svc")
        reqs = [w2.next_request(), w2.next_request()]
        self.assertNotIn(None, reqs, "queued requests not dispatched to the new worker")
        self.assertEqual(sorted(r.rid for r in reqs), [b"kept", b"new"])
        for r in reqs:
            w2.reply(r, '"real"')
        for rid in ("kept", "new"):
            partials, final = alice.final(rid, 3)
            self.assertEqual(partials, [])
            self.assertIsNotNone(final)
            self.assertEqual(final.data, b'"real"')
        self.assertEqual([m for m in imp.received if m[:2] == [b"W", b"2"]], [])

    def test_crashed_workers_routing_id_gets_no_requests(self):
        # Like the test above, but the worker vanishes without W,5 (a crash,
        # a lost connection): the broker still holds its record until the
        # heartbeat expires, and must not send a claimant of the routing
        # id anything meant for that worker.
        self.acl_broker(ROUTING_POLICY)
        victim = self.as_worker("wk", "svc", identity="crashed-w")
        alice = self.as_client("alice")
        self.round_trip(alice, victim, "svc", "warm")
        victim.close()                          # no W,5
        for attempt in range(5):
            # A silent claimant: it says nothing before the request comes.
            imp = RawWorker(self.mesh, self.broker.endpoint, self.broker.server_key,
                            identity="crashed-w", keypair=self.keys["mallet"],
                            auto_heartbeat=False)
            mon = imp.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            ok = mon.poll(int(secs(2000))) and recv_monitor_message(mon)
            imp.sock.disable_monitor()
            mon.close(0)
            self.assertTrue(ok, "mallet's handshake did not succeed")
            rid = "after-crash-%d" % attempt
            alice.request("svc", rid, '"private"', LONG)
            self.mesh.settle(secs(0.5))
            leaked = [m for m in imp.received if m[:2] == [b"W", b"2"]]
            self.assertEqual(leaked, [],
                             "a silent peer that took a crashed worker's routing id (other "
                             "key, identity mallet) received a request meant for that "
                             "worker: %r" % leaked)
            # Conclusive only if mallet really holds the routing id now
            # (libzmq keeps a duplicate id waiting while the old connection
            # lingers): its heartbeat, never READY, gets W,5 back.
            imp.send("W", "4", "", "{}")
            if imp.recv(lambda m: m[:2] == [b"W", b"5"], 1.0, skip_noise=False) is not None:
                return
            imp.close()
        self.fail("mallet never got the crashed worker's routing id; inconclusive")

    def test_worker_can_reply_only_to_its_own_rids(self):
        self.acl_broker(ROUTING_POLICY)
        a = self.as_worker("wk", "svc", identity="w-a")
        alice = self.as_client("alice")
        alice.request("svc", "r1", '"x"', LONG)
        req = a.next_request()
        self.assertIsNotNone(req)
        # A second worker, other identity, registers only after r1 went to a.
        b_ = self.as_worker("wk2", "svc", identity="w-b")
        mark = self.broker.mark()
        b_.reply_to(req.client, "r1", '"forged partial"', partial=True)
        b_.reply_to(req.client, "r1", '"forged"')
        b_.send("W", "7", req.client, "", "r1", "0", '"forged reject"')
        # Same identity as the owner, other connection: still not its rid.
        c = self.as_worker("wk", "svc", identity="w-c")
        c.reply_to(req.client, "r1", '"forged by same identity"')
        self.assertIsNotNone(self.wait_log(r"event=(reply_dropped|bad_message)\b.*worker=w-c\b"
                                           r"|event=(reply_dropped|bad_message)\b.*peer=w-c\b",
                                           3, mark), self.broker.tail(10))
        self.mesh.settle(secs(0.3))
        self.assertEqual(alice.pending(lambda m: m[:1] == [b"C"] and m[1] in (b"3", b"6")), [],
                         "a reply from a worker the rid was not dispatched to was forwarded")
        self.assertEqual(a.requests_now(0) + b_.requests_now(0) + c.requests_now(0), [],
                         "a forged reject re-dispatched the request")
        a.reply(req, '"real"')
        partials, final = alice.final("r1", 3)
        self.assertEqual((partials, final.data if final else None), ([], b'"real"'))

    def test_client_can_heartbeat_only_its_own_rids(self):
        self.acl_broker(ROUTING_POLICY)
        w = self.as_worker("wk", "svc")
        alice = self.as_client("alice", identity="alice-c")
        alice.request("svc", "h1", '"x"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req)
        is_hb = lambda m: m[:2] == [b"W", b"4"] and len(m) == 5
        # Positive control: the owner's request heartbeat is forwarded,
        # naming alice by her alias, not her routing id.
        alice.request_heartbeat("h1")
        self.assertEqual(w.recv(is_hb, 3), [b"W", b"4", req.client, b"", b"h1"])
        self.assertNotEqual(req.client, b"alice-c")
        # Another client (other routing id, other identity) cannot.
        bob = self.as_client("bob")
        bob.request_heartbeat("h1")
        bob.request_heartbeat("h1", "req")
        self.assertIsNone(w.recv(is_hb, 0.5), "another client's heartbeat was forwarded")
        # alice leaves; bob re-uses her routing id and heartbeats her rid
        # (the broker may have dropped the request with her connection, or
        # refuse the other identity: either way the worker sees nothing).
        alice.close()
        bob2 = self.claim(RawClient, "bob", "alice-c", ["C", "4"], [b"C", b"4"])
        self.assertIsNotNone(bob2, "could not take over alice's routing id")
        bob2.request_heartbeat("h1")
        bob2.request_heartbeat("h1", "req")
        self.assertIsNone(w.recv(is_hb, 0.6),
                          "a heartbeat for alice's rid from bob (on alice's routing id) "
                          "was forwarded")
        # Neither does a reply to alice's rid reach bob.
        w.reply(req, '"for alice"')
        self.mesh.settle(secs(0.3))
        self.assertEqual(bob2.pending(lambda m: m[:2] in ([b"C", b"3"], [b"C", b"6"])), [],
                         "alice's reply was delivered to bob on her routing id")

    def test_reply_never_reaches_a_new_owner_of_a_clients_routing_id(self):
        # alice leaves with a request in flight; bob takes her routing id
        # and talks to the broker (so it can tell). The worker's reply for
        # alice's rid must not be delivered to bob.
        self.acl_broker(ROUTING_POLICY)
        w = self.as_worker("wk", "svc")
        alice = self.as_client("alice", identity="alice-c2")
        alice.request("svc", "private", '"alice only"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req)
        alice.close()
        bob = self.claim(RawClient, "bob", "alice-c2", ["C", "4"], [b"C", b"4"])
        self.assertIsNotNone(bob, "could not take over alice's routing id")
        bob.request_heartbeat("private")        # bob's identity is now visible
        w.reply(req, '"for alice only"')
        self.mesh.settle(secs(0.5))
        leaked = [m for m in bob.received if m[:1] == [b"C"] and m[1] in (b"3", b"6")]
        self.assertEqual(leaked, [],
                         "the reply to alice's request (rid 'private') was "
                         "delivered to bob, who connected later with alice's routing id "
                         "and another key: %r" % leaked)

    def test_the_client_field_a_worker_sees_is_no_way_to_a_client(self):
        # A worker (or whoever reads what it was sent) knows the client
        # field of alice's request. It is an alias, not alice's routing id:
        # mallet can connect with it as routing id while alice is still
        # connected (libzmq would refuse alice's own), and receives nothing
        # of hers, neither now nor after she left.
        self.acl_broker(ROUTING_POLICY)
        w = self.as_worker("wk", "svc")
        alice = self.as_client("alice", identity="alice-c3")
        alice.request("svc", "first", '"for alice"', LONG)
        alice.request("svc", "second", '"for alice"', LONG)
        reqs = [w.next_request(), w.next_request()]
        self.assertNotIn(None, reqs)
        seen = reqs[0].client
        self.assertRegex(seen, rb"^[0-9a-f]{32}$")
        self.assertNotEqual(seen, b"alice-c3")
        imp = self.claim(RawClient, "mallet", seen, ["C", "4"], [b"C", b"4"])
        self.assertIsNotNone(imp, "mallet could not connect with the client field "
                             "%r as routing id while alice is connected: it is her "
                             "routing id" % seen)
        # mallet heartbeats alice's rid: nothing reaches the worker
        imp.request_heartbeat("first")
        self.assertIsNone(w.recv(lambda m: m[:2] == [b"W", b"4"] and len(m) == 5, 0.5),
                          "mallet's heartbeat for alice's rid reached the worker")
        # The first reply reaches alice, not mallet
        w.reply(reqs[0], '"first answer"')
        self.assertEqual(alice.final("first")[1].data, b'"first answer"')
        # alice leaves; the second reply reaches nobody
        alice.close()
        self.mesh.settle(secs(0.3))
        w.reply(reqs[1], '"second answer"')
        self.mesh.settle(secs(0.5))
        leaked = [m for m in imp.received if m[:1] == [b"C"] and m[1] in (b"3", b"6")]
        self.assertEqual(leaked, [], "a reply meant for alice reached the peer "
                         "that connected with her alias as routing id: %r" % leaked)


# --------------------------------------------------------------------------
# 5. Revocation by reload, on live connections

RELOAD_V1 = """\
identity alice {alice}
identity bob   {bob}
identity carol {carol}
identity wk    {wk}
identity wk2   {wk2}
allow alice call svc svc2
allow bob   call svc svc2
allow carol call svc svc2
allow wk    serve svc
allow wk2   serve svc2
"""
# alice removed; carol may call only svc2
RELOAD_V2 = """\
identity bob   {bob}
identity carol {carol}
identity wk    {wk}
identity wk2   {wk2}
allow bob   call svc svc2
allow carol call svc2
allow wk    serve svc
allow wk2   serve svc2
"""
# wk loses serve svc (identity kept); wk2 removed altogether
RELOAD_V3 = """\
identity bob   {bob}
identity carol {carol}
identity wk    {wk}
allow bob   call svc svc2
allow carol call svc2
allow wk    serve other
"""


class Flood(threading.Thread):
    """Keeps the broker busy with denied requests from its own CURVE
    socket (mallet may not call `forbidden`), never reading the refusals,
    until stop(): a broker that never finds its ROUTER empty."""

    def __init__(self, endpoint, server_key, keypair):
        threading.Thread.__init__(self, daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.curve_serverkey = server_key.encode()
        self.sock.curve_publickey = keypair.public.encode()
        self.sock.curve_secretkey = keypair.secret.encode()
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.running = True
        self.sent = 0
        self.answered = 0

    def run(self):
        # Many small native batches: more messages in the broker's queue
        # than one turn reads (256), so the ROUTER never runs dry
        deadline = time.monotonic() + 60      # bounded, whatever happens
        batch = 0
        while self.running and time.monotonic() < deadline:
            entries = [native.Entry(native.REQUEST, service="forbidden",
                                    rid="f%d-%d" % (batch, i), body='"x"')
                       for i in range(8)]
            frames = native.encode("C", entries)
            self.sock.send_multipart(frames)
            self.sent += 8
            batch += 1
            # A few batches ahead of the broker: always busy, never so far
            # behind that the others' requests wait for seconds
            while self.running and self.sent - self.answered > 600 * 8:
                if self.sock.poll(100):
                    msg = self.sock.recv_multipart()
                    self.answered += (len(native.decode(msg)[1])
                                      if native.is_native(msg) else 1)

    def stop(self):
        self.running = False
        self.join(10)
        self.sock.close()
        self.ctx.term()


class TakeoverUnderLoadTest(AclCase):
    """Issue 14 item 1: with the broker saturated, a peer with a valid key
    connects with the routing id of a worker or a client that just went
    away. Nothing meant for the departed peer may reach it: the broker's
    view of connections is current before it sends."""
    NAMES = ("alice", "bob", "wk", "wk2", "mallet")
    ROUNDS = 3

    def test_departed_peers_routing_ids_get_nothing_while_the_broker_is_busy(self):
        self.acl_broker(ROUTING_POLICY)
        spare = self.as_worker("wk2", "svc", identity="spare-w")
        flood = Flood(self.broker.endpoint, self.broker.server_key,
                      self.keys["mallet"])
        flood.start()
        self.addCleanup(flood.stop)
        # The flood is under way before anyone leaves
        self.assertIsNotNone(self.wait_log(r"event=access_denied\b.*mallet", 10),
                             self.broker.tail(10))
        leaked = []
        taken = 0
        for round in range(self.ROUNDS):
            wid, cid = "victim-w%d" % round, "victim-c%d" % round
            victim = self.as_worker("wk", "svc", identity=wid)
            caller = self.as_client("alice", identity=cid)
            bob = self.as_client("bob")
            # alice's requests are held by the victim worker (or the spare)
            for i in range(20):
                caller.request("svc", "a%d" % i, '"for alice"', LONG)
            # Held by the victim worker or the spare, once the broker gets
            # to them (under this load it may take a while)
            held_by = victim
            held = victim.next_request(10)
            if held is None:
                held_by, held = spare, spare.next_request(1)
            # The client field the worker saw for alice: an alias, which
            # mallet may hold as routing id while alice is still there
            self.assertIsNotNone(held, "no request of alice's was dispatched")
            self.assertRegex(held.client, rb"^[0-9a-f]{32}$")
            imp_a = self.claim(RawClient, "mallet", held.client, ["C", "4"],
                               [b"C", b"4"], attempts=100, wait=0.1)
            self.assertIsNotNone(imp_a, "the client field a worker saw is in use "
                                 "as a routing id\n" + self.broker.tail(10))
            imp_a.request_heartbeat(held.rid)
            # Both leave at once, abruptly; bob keeps calling the service
            victim.close()
            caller.close()
            for i in range(20):
                bob.request("svc", "b%d-%d" % (round, i), '"for bob"', LONG)
            # mallet takes both routing ids over as soon as libzmq lets it
            imp_w = self.claim(RawWorker, "mallet", wid, ["W", "4", "", "{}"],
                               [b"W", b"5"], attempts=100, wait=0.1)
            imp_c = self.claim(RawClient, "mallet", cid, ["C", "4"],
                               [b"C", b"4"], attempts=100, wait=0.1)
            taken += (imp_w is not None) + (imp_c is not None)
            if held_by is spare:
                spare.reply(held, '"from spare"')
            for r in spare.requests_now(0.3):
                spare.reply(r, '"from spare"')
            self.mesh.settle(secs(0.5))
            for imp in (imp_w, imp_c, imp_a):
                if imp is None:
                    continue
                leaked += [m for m in imp.received
                           if m[:2] == [b"W", b"2"]
                           or (m[:2] == [b"W", b"4"] and len(m) > 4)
                           or m[:2] in ([b"C", b"3"], [b"C", b"6"])]
                imp.close()
            bob.close()
        self.assertGreater(taken, 0, "mallet never got a departed routing id; "
                           "inconclusive\n" + self.broker.tail(10))
        self.assertEqual(leaked, [], "messages meant for a departed peer reached "
                         "the peer that took its routing id over")
        self.assertGreater(flood.sent, 10000, "the broker was not kept busy")


class ReloadTest(AclCase):
    NAMES = ("alice", "bob", "carol", "wk", "wk2")

    def test_reload_revokes_live_connections(self):
        self.acl_broker(RELOAD_V1)
        wk = self.as_worker("wk", "svc")
        wk2 = self.as_worker("wk2", "svc2")
        alice, bob, carol = (self.as_client(n) for n in ("alice", "bob", "carol"))
        self.round_trip(alice, wk, "svc", "a0")
        self.round_trip(bob, wk2, "svc2", "b0")

        # A bad file on reload keeps the old policy (it would remove alice).
        bad = self.acl_text(RELOAD_V2) + "allow nobody call svc\n"
        bad_line = bad.count("\n")
        write_acl(self.acl_path, bad)
        m = self.sighup(r"event=acl_reload_failed policy=unchanged error=\"(.*)\"")
        self.assertTrue(m.group(1).startswith("%s:%d: " % (self.acl_path, bad_line)),
                        "reload error should name file:line: %r" % m.group(1))
        self.assertIn("nobody", m.group(1))
        self.round_trip(alice, wk, "svc", "a1-after-bad-reload")

        # In flight: alice's a2 and carol's c1, both held by wk.
        alice.request("svc", "a2", '"x"', LONG)
        carol.request("svc", "c1", '"y"', LONG)
        held = {}
        for _ in range(2):
            r = wk.next_request()
            self.assertIsNotNone(r)
            held[r.rid] = r
        self.assertEqual(set(held), {b"a2", b"c1"})

        write_acl(self.acl_path, self.acl_text(RELOAD_V2))
        t0 = time.monotonic()
        self.sighup(r"event=acl_reloaded identities=4 rules=4 workers_removed=0 "
                    r"requests_dropped=1 requests_denied=1\b")
        # carol lost `call svc`: her in-flight request fails at once.
        _, final = carol.final("c1", AT_ONCE)
        self.assertIsNotNone(final, "carol's in-flight request not failed on reload")
        self.assertEqual((final.status, final.data), (b"-1", denied_json("svc")))
        self.assertLess(time.monotonic() - t0, secs(AT_ONCE + 1))
        # alice left the policy: her in-flight request is dropped; the
        # worker's late reply is not delivered.
        wk.reply(held[b"a2"], '"late for alice"')
        wk.reply(held[b"c1"], '"late for carol"')
        self.mesh.settle(secs(0.5))
        self.assertEqual(alice.pending(lambda m: m[:2] in ([b"C", b"3"], [b"C", b"6"])), [],
                         "a removed client's in-flight request was answered")
        self.assertEqual(carol.pending(lambda m: m[:2] in ([b"C", b"3"], [b"C", b"6"])), [])

        # alice's very next request over the same open socket is refused.
        mark = self.broker.mark()
        self.assert_denied_at_once(alice, "svc", "a3")
        self.assertIsNotNone(self.wait_log(access_denied_re(self.keys["alice"], "alice", "call",
                                                            "svc", "identity_revoked"), 2, mark),
                             self.broker.tail(10))
        self.assertEqual(wk.requests_now(0.2), [], "a revoked client's request reached the worker")
        # carol keeps svc2; bob keeps everything (the reload broke nothing else).
        self.round_trip(carol, wk2, "svc2", "c2")
        self.assert_denied_at_once(carol, "svc", "c3")
        self.round_trip(bob, wk, "svc", "b1")

        # Workers: wk loses `serve svc`, wk2 leaves the policy.
        write_acl(self.acl_path, self.acl_text(RELOAD_V3))
        self.sighup(r"event=acl_reloaded identities=3 rules=3 workers_removed=2 "
                    r"requests_dropped=0 requests_denied=0\b")
        for w, name in ((wk, "wk"), (wk2, "wk2")):
            self.assertIsNotNone(w.recv(lambda m: m[:2] == [b"W", b"5"], 3, skip_noise=False),
                                 "%s got no DISCONNECT after losing serve" % name)
            w.is_ready = False
        # They are gone: bob's request waits for a worker.
        bob.request("svc", "b2", '"z"', LONG)
        self.mesh.settle(secs(0.4))
        self.assertEqual(wk.requests_now(0) + wk2.requests_now(0), [])
        self.assertEqual(bob.pending(lambda m: m[:2] == [b"C", b"3"]), [])
        # And they cannot come back: READY is denied (identity kept, or gone).
        mark = self.broker.mark()
        for w, name, reason in ((wk, "wk", "not_allowed"), (wk2, "wk2", "identity_revoked")):
            w.send("W", "1", "svc" if name == "wk" else "svc2")
            self.assertIsNotNone(w.recv(lambda m: m[:2] == [b"W", b"5"], 3, skip_noise=False),
                                 "%s re-READY after revocation not refused" % name)
            self.assertIsNotNone(self.wait_log(access_denied_re(
                self.keys[name], name, "serve", "svc" if name == "wk" else "svc2", reason),
                2, mark), self.broker.tail(10))
        self.assertEqual(self.broker.count(r"event=worker_ready\b", mark), 0)


# --------------------------------------------------------------------------
# 6. --insecure --acl: everyone is `anonymous`, and the rules apply

class InsecureAclTest(AclCase):
    CURVE = False

    def test_anonymous_is_subject_to_the_rules(self):
        self.acl_broker("allow anonymous call  open open.*\n"
                        "allow anonymous serve open\n"
                        "deny  anonymous call  open.closed\n", curve=False)
        self.assertIn("mode=insecure", self.broker.text())
        w = self.worker()
        self.assertIsNotNone(w.ready("open"))
        c = self.client()
        self.round_trip(c, w, "open", "i1")
        mark = self.broker.mark()
        self.assert_denied_at_once(c, "closed", "i2")
        self.assert_denied_at_once(c, "open.closed", "i3")
        self.assertIsNotNone(self.wait_log(r"event=access_denied .*identity=anonymous verb=call "
                                           r"service=closed reason=not_allowed", 2, mark))
        other = self.worker()
        other.send("W", "1", "closed")
        self.assertEqual(other.recv(lambda m: m[:2] in ([b"W", b"1"], [b"W", b"5"]), 3,
                                    skip_noise=False),
                         [b"W", b"5", b"E_ACCESS_DENIED serve closed"])
        self.assertIsNotNone(self.wait_log(r"event=access_denied .*identity=anonymous "
                                           r"verb=serve service=closed reason=not_allowed", 2, mark))
        self.assertEqual(w.requests_now(0.1), [])


# --------------------------------------------------------------------------
# 7. --check-acl and refusing to start

class CheckAclTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pigato-test-")
        os.mkdir(os.path.join(self.tmp, "ids"))
        self.alice = KeyPair(os.path.join(self.tmp, "ids"), "alice")
        self.bob = KeyPair(os.path.join(self.tmp, "ids"), "bob")
        self.broker_key = KeyPair(self.tmp, "broker")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.stop(signal.SIGKILL, 2)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_proc(self, args, timeout=10):
        # From another directory: key files are relative to the ACL file.
        p = Proc(args, cwd="/")
        self.procs.append(p)
        rc = p.wait(timeout)
        self.assertIsNotNone(rc, "%s did not exit\n%s" % (" ".join(args), p.tail()))
        return rc, p.text("stdout"), p.text("stderr")

    def acl(self, name, text):
        return write_acl(os.path.join(self.tmp, name), text.format(
            alice=self.alice.public, bob=self.bob.public))

    GOOD = """\
# comment line

identity alice ids/alice.key     # zcert public key file, relative to the ACL
identity bob   {bob}
group    team  alice
group    all   @team bob
allow    @all  call  echo billing.* *
deny     *     call  admin.*
allow    bob   serve echo
"""

    def test_good_file(self):
        path = self.acl("good.acl", self.GOOD)
        rc, out, err = self.run_proc([BROKER_BIN, "--check-acl", path])
        self.assertEqual((rc, out.strip()), (0, "%s: OK" % path), err)

    def test_broken_files_name_file_and_line(self):
        head = "# header\nidentity alice {alice}\n"     # lines 1-2
        cases = {
            "keyword.acl": (head + "permit alice call echo\n", 3, "unknown keyword"),
            "badkey.acl": (head + "identity bob notakey\n", 3, "bob"),
            "nokeyfile.acl": (head + "\n\nidentity bob ids/missing.key\n", 5, "missing.key"),
            "unknown_id.acl": (head + "allow nobody call echo\n", 3, "nobody"),
            "unknown_group.acl": (head + "allow @ghosts call echo\n", 3, "ghosts"),
            "verb.acl": (head + "allow alice publish echo\n", 3, "publish"),
            "pattern.acl": (head + "allow alice call ec*ho\n", 3, "ec*ho"),
            "short_rule.acl": (head + "allow alice call\n", 3, "allow"),
            "dup_id.acl": (head + "identity alice {bob}\n", 3, "alice"),
            "dup_key.acl": (head + "identity bob {alice}\n", 3, "same key"),
            "cycle.acl": (head + "group g1 @g2\ngroup g2 @g1\n", "[34]", "contains itself"),
            "trust.acl": (head + "trust certs/ca.crt certs/\n", 3, "trust"),
            "revoked.acl": (head + "revoked certs/ca.crl\n", 3, "revoked"),
        }
        for name, (text, line, word) in sorted(cases.items()):
            with self.subTest(file=name):
                path = self.acl(name, text)
                rc, out, err = self.run_proc([BROKER_BIN, "--check-acl", path])
                self.assertEqual(rc, 1, "%s: exit %r, out=%r err=%r" % (name, rc, out, err))
                self.assertRegex(err, r"(?m)^%s:%s: \S" % (re.escape(path), line))
                self.assertIn(word, err)
                self.assertNotIn("OK", out)
        rc, out, err = self.run_proc([BROKER_BIN, "--check-acl",
                                      os.path.join(self.tmp, "absent.acl")])
        self.assertEqual(rc, 1)
        self.assertIn("absent.acl", err)

    def test_key_file_path_of_40_z85_characters(self):
        # `identity NAME KEYFILE`: a key file is read as a file whatever its
        # path looks like. A path of exactly 40 characters, all from the
        # Z85 alphabet (letters, digits, '/', '-', '.' are), also decodes as
        # a Z85 key; a test tmp dir made .../keys/alice.key exactly that.
        d = "/tmp/pgk-" + os.urandom(6).hex()
        os.mkdir(d)
        self.addCleanup(shutil.rmtree, d, True)
        name = "alice" + "k" * (40 - len(d) - 1 - len("alice.key")) + ".key"
        kp = KeyPair(d, name[:-len(".key")])
        self.assertEqual(len(kp.public_file), 40)
        self.assertEqual(len(z85.decode(kp.public_file.encode())), 32)   # valid Z85
        for label, ref in (("absolute", kp.public_file), ("relative", name)):
            path = write_acl(os.path.join(d, "%s.acl" % label),
                             "identity alice %s\nidentity twin %s\n" % (ref, kp.public))
            rc, out, err = self.run_proc([BROKER_BIN, "--check-acl", path])
            self.assertEqual(rc, 1,
                             "BROKER BUG (%s path): the key file %s (40 Z85 characters) was "
                             "taken for a Z85 key instead of being read: identity 'alice' did "
                             "not get the file's key (check-acl: %r)"
                             % (label, kp.public_file, (out + err).strip()))
            self.assertIn("same key", err)

    def test_broker_refuses_to_start_with_a_bad_acl(self):
        path = self.acl("bad.acl", "identity alice {alice}\n\nallow alice call ec*ho\n")
        port = harness.free_port()
        rc, out, err = self.run_proc([BROKER_BIN, "--acl", path, "--key",
                                      self.broker_key.secret_file, "--bind",
                                      "tcp://127.0.0.1:%d" % port])
        self.assertNotEqual(rc, 0, "broker started with a bad ACL\n" + err)
        self.assertIn("%s:3: " % path, err)
        self.assertNotIn("event=ready", err)
        # --acl with --allow-any, and no security mode at all: usage errors.
        good = self.acl("good.acl", self.GOOD)
        for args in (["--acl", good, "--allow-any"], []):
            rc, out, err = self.run_proc([BROKER_BIN] + args + [
                "--key", self.broker_key.secret_file, "--bind", "tcp://127.0.0.1:%d" % port])
            self.assertEqual(rc, 64, "%r: exit %r\n%s" % (args, rc, err))
            self.assertNotIn("event=ready", err)


# --------------------------------------------------------------------------
# 8. Node pigato peers with ACL-listed keys

NODE_POLICY = """\
identity nclient  {nclient}
identity nworker  {nworker}
identity cworker  {cworker}
identity ccli     {ccli}
allow nclient  call  c.echo
allow ccli     call  n.svc
allow nworker  serve n.svc
allow cworker  serve c.echo
"""


class NodeAclTest(AclCase):
    NAMES = ("nclient", "nworker", "cworker", "ccli", "stranger")
    HEARTBEAT = 500

    @classmethod
    def setUpClass(cls):
        import test_node_interop as ni
        cls.ni = ni
        if not shutil.which("node") or not shutil.which("npm"):
            ni._unavailable("node or npm not found on PATH")
        r = subprocess.run([os.path.join(ni.NODE_DIR, "setup.sh"), harness.BUILD],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            ni._unavailable("tests/node/setup.sh failed (exit %d):\n%s"
                            % (r.returncode, r.stderr[-2000:]))

    def node_env(self, name):
        env = {"NODE_PATH": self.ni.NODE_MODULES, "NODE_NO_WARNINGS": "1",
               "PIGATO_NODE_SERVER_KEY": self.broker.key.public}
        if name is not None:
            env["PIGATO_NODE_PUBLIC_KEY"] = self.keys[name].public
            env["PIGATO_NODE_SECRET_KEY"] = self.keys[name].secret
        return env

    def wait_exit(self, p, timeout):
        deadline = time.monotonic() + secs(timeout)
        while p.alive() and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        rc = p.wait(1)
        self.assertIsNotNone(rc, "%s hung\n%s" % (p.name, p.tail()))
        return rc

    def node_request(self, name, service, data, timeout=5000):
        p = self.start(["node", os.path.join(self.ni.NODE_DIR, "node_client.js"),
                        "--broker", self.broker.endpoint, "--service", service,
                        "--data", json.dumps(data), "--timeout", timeout,
                        "--heartbeat", self.HEARTBEAT], name="node-client",
                       env=self.node_env(name))
        rc = self.wait_exit(p, timeout / 1000.0 + 10)
        events = [json.loads(l) for l in p.text("stdout").splitlines() if l.strip()]
        finals = [e for e in events if e["type"] == "final"]
        return rc, finals[0] if finals else None, p

    def test_node_client_calls_c_worker(self):
        self.acl_broker(NODE_POLICY)
        mark = self.broker.mark()
        serve = self.start([CLI_BIN, "serve", "c.echo", "--echo",
                            "--key", self.keys["cworker"].secret_file] + self.broker.cli_args(),
                           name="pigato-serve")
        self.assertIsNotNone(self.wait_log(r"event=worker_ready service=c\.echo\b", 10, mark),
                             serve.tail())
        rc, final, p = self.node_request("nclient", "c.echo", {"hi": "node"})
        self.assertEqual(rc, 0, p.tail())
        self.assertEqual((final["err"], final["data"]), (0, {"hi": "node"}), p.tail())
        # Listed, but not allowed to call c.other: Node pigato sees the
        # error at once, not its timeout.
        t0 = time.monotonic()
        rc, final, p = self.node_request("nclient", "c.other", "x", timeout=20000)
        self.assertEqual(rc, 0, p.tail())
        self.assertEqual(final["err"], "E_ACCESS_DENIED c.other", final)
        self.assertLess(time.monotonic() - t0, secs(10))

    def test_c_cli_calls_node_worker(self):
        self.acl_broker(NODE_POLICY)
        mark = self.broker.mark()
        nw = self.start(["node", os.path.join(self.ni.NODE_DIR, "node_worker.js"),
                         "--broker", self.broker.endpoint, "--service", "n.svc",
                         "--heartbeat", self.HEARTBEAT], name="node-worker",
                        env=self.node_env("nworker"))
        self.assertIsNotNone(self.wait_log(r"event=worker_ready service=n\.svc\b", 10, mark),
                             nw.tail() + "\n" + self.broker.tail(10))
        rc, out, err = self.cli("request", "n.svc", '{"op":"upper","text":"acl"}',
                                "--timeout", "5000", "--key", self.keys["ccli"].secret_file,
                                *self.broker.cli_args())
        self.assertEqual((rc, out.strip()), (0, '"ACL"'), err)
        # The Node worker's key may not serve anything else.
        nw2 = self.start(["node", os.path.join(self.ni.NODE_DIR, "node_worker.js"),
                          "--broker", self.broker.endpoint, "--service", "n.other",
                          "--heartbeat", self.HEARTBEAT], name="node-worker-2",
                         env=self.node_env("nworker"))
        self.assertIsNotNone(self.wait_log(access_denied_re(self.keys["nworker"], "nworker",
                                                            "serve", "n.other", "not_allowed"),
                                           10, mark), nw2.tail())

    def test_unlisted_node_client_cannot_call(self):
        self.acl_broker(NODE_POLICY)
        w = self.as_worker("cworker", "c.echo")
        mark = self.broker.mark()
        rc, final, p = self.node_request("stranger", "c.echo", "let me in", timeout=1500)
        self.assertTrue(final is None or final["err"] not in (0, None),
                        "an unlisted Node client got a reply: %r" % final)
        fp = fingerprint(self.keys["stranger"].public)
        self.assertIsNotNone(self.wait_log(r"event=zap_deny .*key=%s mechanism=CURVE "
                                           r"reason=unknown_key" % fp, 2, mark),
                             self.broker.tail(10))
        self.assertEqual(w.requests_now(0.1), [], "an unlisted client's request was dispatched")
        # An ephemeral key (the shim's default) is refused too.
        mark = self.broker.mark()
        rc, final, p = self.node_request(None, "c.echo", "let me in", timeout=1500)
        self.assertTrue(final is None or final["err"] not in (0, None), final)
        self.assertIsNotNone(self.wait_log(r"event=zap_deny .*reason=unknown_key", 2, mark))
        self.assertEqual(w.requests_now(0), [])


class QuotaTest(AclCase):
    """Per-identity limits (`limit` lines): what one identity holds in
    the broker is bounded, and within a service's queue callers take
    turns, so a flood from one identity neither locks others out nor
    delays their requests by more than a turn."""

    NAMES = ("alice", "mallory", "w")
    ACL = ("identity alice {alice}\n"
           "identity mallory {mallory}\n"
           "identity w {w}\n"
           "allow alice call echo\n"
           "allow mallory call echo nobody\n"
           "allow w serve echo\n"
           "limit mallory pending=50 pending-bytes=64K\n")

    def quota_errors(self, client, rids, expect):
        """The rids among these that got a final E_QUOTA error, once
        `expect` of them did (or AT_ONCE seconds passed, then a settle
        for late ones); fails on any other final."""
        rids = [harness.b(rid) for rid in rids]

        def finals():
            return [m for m in client.pending(
                lambda m: len(m) >= 4 and m[:2] == [b"C", b"3"])
                if m[3] in rids]
        deadline = time.monotonic() + secs(AT_ONCE)
        while len(finals()) < expect and time.monotonic() < deadline:
            self.mesh.pump(0.05)
        self.mesh.settle(0.2)
        refused = []
        for m in finals():
            self.assertEqual(m[4], b"-1", m)
            self.assertIn(b"E_QUOTA identity mallory may hold", m[5])
            refused.append(m[3].decode())
            client.inbox.remove(m)
        return sorted(refused, key=lambda rid: rids.index(harness.b(rid)))

    def test_pending_requests_and_bytes_are_limited_per_identity(self):
        self.acl_broker(self.ACL)
        mark = self.broker.mark()
        mallory = self.as_client("mallory")
        forever = '{"timeout":-1}'
        # 60 requests for a service nobody serves, held forever: 50 are
        # taken, 10 refused at once
        for index in range(60):
            mallory.request("nobody", "m%d" % index, '"x"', forever)
        refused = self.quota_errors(mallory, ["m%d" % i for i in range(60)],
                                    10)
        self.assertEqual(refused, ["m%d" % i for i in range(50, 60)],
                         self.broker.tail(10))
        self.assertIsNotNone(self.broker.wait_for_log(
            r"event=quota_exceeded identity=mallory service=nobody "
            r"limit=pending", timeout=5, since=mark))
        # alice is not held up by mallory's 50
        alice = self.as_client("alice")
        worker = self.as_worker("w", "echo")
        self.round_trip(alice, worker, "echo", "a1")
        # mallory's connection goes: what it held is given back, and a
        # new one may hold as much again; bytes count too (64 KiB)
        mallory.close()
        mallory = self.as_client("mallory")
        deadline = time.monotonic() + secs(5)
        taken = False
        while not taken and time.monotonic() < deadline:
            mallory.request("nobody", "again", '"x"', forever)
            taken = not self.quota_errors(mallory, ["again"], 1)
        self.assertTrue(taken, "mallory's old requests were never given back")
        big = '"%s"' % ("y" * 40000)
        mallory.request("nobody", "big1", big, forever)
        mallory.request("nobody", "big2", big, forever)
        self.assertEqual(self.quota_errors(mallory, ["big1", "big2"], 1),
                         ["big2"])
        # At once: SIGTERM would drain, and mallory's requests never end
        self.broker.stop(signal.SIGINT)
        self.assertRegex(self.broker.text(), r"over_quota=1[1-9]")

    def test_a_flood_delays_another_caller_by_one_turn(self):
        self.acl_broker(self.ACL)
        worker = self.as_worker("w", "echo", concurrency=1)
        worker.heartbeat()
        mallory = self.as_client("mallory")
        alice = self.as_client("alice")
        # mallory fills the queue (one at the worker, 39 waiting), then
        # alice asks once
        for index in range(40):
            mallory.request("echo", "m%d" % index, '"x"', LONG)
        first = worker.next_request(5)
        self.assertIsNotNone(first, self.broker.tail(10))
        self.assertEqual(first.rid, b"m0")
        # Every flood request reached the broker before alice's does: it
        # answers a connection's messages in order
        mallory.request("mmi.service", "ping", '"echo"', LONG)
        self.assertIsNotNone(mallory.final("ping", 5)[1])
        alice.request("echo", "a1", '"x"', LONG)
        order = [first.rid]
        req = first
        while req is not None and req.rid != b"a1":
            worker.reply(req, '"ok"')
            req = worker.next_request(5)
            if req is not None:
                order.append(req.rid)
        self.assertIsNotNone(req, "alice's request never came: %r\n%s"
                             % (order, self.broker.tail(10)))
        # m0 was at the worker, m1 was next in line; then alice's turn
        self.assertEqual(order, [b"m0", b"m1", b"a1"], order)
        worker.reply(req, '"ok"')
        _, final = alice.final("a1", 5)
        self.assertIsNotNone(final)
        self.assertEqual(final.status, b"0")


class ConnectionQuotaTest(AclCase):
    """`limit NAME connections=N`: an identity's connections count from
    their first message to their close; one more is shut (its messages
    dropped), and once one closes, a new one goes."""

    NAMES = ("dave", "w")

    def test_an_identity_has_at_most_its_connections(self):
        self.acl_broker("identity dave {dave}\nidentity w {w}\n"
                        "allow dave call echo\nallow w serve echo\n"
                        "limit dave connections=2\n")
        worker = self.as_worker("w", "echo")
        mark = self.broker.mark()
        first, second = self.as_client("dave"), self.as_client("dave")
        self.round_trip(first, worker, "echo", "one")
        self.round_trip(second, worker, "echo", "two")
        third = self.as_client("dave")
        third.request("echo", "three", '"x"', LONG)
        self.assertIsNotNone(self.broker.wait_for_log(
            r"event=quota_exceeded identity=dave service=- "
            r"limit=connections", timeout=5, since=mark), self.broker.tail(5))
        self.assertIsNone(worker.next_request(0.5))
        self.assertIsNone(third.final("three", 0.1)[1])
        # One closes: the third (libzmq reconnects it) now goes
        first.close()
        deadline = time.monotonic() + secs(10)
        served = False
        attempt = 0
        while not served and time.monotonic() < deadline:
            attempt += 1
            rid = "again%d" % attempt
            third.request("echo", rid, '"x"', LONG)
            req = worker.next_request(0.5)
            if req is not None:
                worker.reply(req, '"ok"')
                served = third.final(req.rid.decode(), 5)[1] is not None
        self.assertTrue(served, self.broker.tail(10))
        self.broker.stop()
        self.assertRegex(self.broker.text(), r"connections_refused=[1-9]")


class WorkerChurnLogTest(AclCase):
    """A worker that registers and leaves in a loop cannot flood the
    log: worker_ready and worker_gone lines are limited to 200 a second,
    and the rest are summed up (event=worker_event_suppressed)."""

    NAMES = ("w",)

    def test_registration_churn_is_rate_limited_in_the_log(self):
        self.acl_broker("identity w {w}\nallow w serve echo\n")
        mark = self.broker.mark()
        worker = self.as_worker("w")
        cycles = 1500
        t0 = time.monotonic()
        for _ in range(cycles):
            worker.send("W", "1", "echo")
            worker.send("W", "5")
        # The broker read them all when it answers a heartbeat sent after
        worker.send("W", "1", "echo")
        self.assertIsNotNone(worker.recv(lambda m: m[:2] == [b"W", b"1"], 10,
                                         skip_noise=False))
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(self.broker.wait_for_log(
            r"event=worker_event_suppressed count=\d+", timeout=5,
            since=mark), self.broker.tail(5))
        text = "\n".join(self.broker.text().splitlines()[mark:])
        lines = len(re.findall(r"event=worker_(?:ready|gone) ", text))
        held = sum(int(n) for n in re.findall(
            r"event=worker_event_suppressed count=(\d+)", text))
        self.assertLessEqual(lines, 200 * (int(elapsed) + 2))
        self.assertGreater(held, 0)


if __name__ == "__main__":
    harness.main()
