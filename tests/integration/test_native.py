#!/usr/bin/python3
"""The native framing on the broker (docs/native-framing.md), spoken by
hand from pyzmq: offers answered in native, native and 0.0.46 peers on one
socket in both directions, batches coalesced per peer, external bodies,
per-entry ACL decisions, and malformed batches dropped whole."""

import os
import unittest

import harness
import native
from native import Entry
from harness import KeyPair, MeshTestCase, Peer, RawClient, RawWorker, write_acl

BAD = r"event=bad_message\b"


class NativePeer(Peer):
    """A DEALER that speaks the native framing (after its own offer)."""

    def send_native(self, entries, **kw):
        self.sock.send_multipart(native.encode(self.role, entries, **kw))

    def entries(self, timeout=3.0, count=1):
        """Decoded entries of native messages, until `count` entries arrived
        (or timeout). Returns (entries, messages they came in)."""
        got, msgs = [], []
        deadline = harness.time.monotonic() + harness.secs(timeout)
        while len(got) < count:
            m = self.recv(native.is_native, max(0.0, deadline - harness.time.monotonic()))
            if m is None:
                break
            role, entries = native.decode(m)
            if role != self.role:
                raise AssertionError("batch role %r sent to a %r peer" % (role, self.role))
            msgs.append(m)
            got += [e for e in entries if e.type != native.HEARTBEAT or e.rid]
        return got, msgs


class NativeCases:

    def native_client(self, **kw):
        c = NativePeer(self.mesh, "C", self.broker.endpoint, self.broker.server_key,
                       auto_heartbeat=False, **kw)
        c.send("C", "4", native.OFFER)
        m = c.recv(native.is_native, 3)
        self.assertIsNotNone(m, "offer not answered in native framing\n" + self.broker.tail())
        role, entries = native.decode(m)
        self.assertEqual((role, [e.type for e in entries]), ("C", [native.HEARTBEAT]))
        return c

    def native_worker(self, service, **kw):
        w = NativePeer(self.mesh, "W", self.broker.endpoint, self.broker.server_key,
                       auto_heartbeat=False, **kw)
        w.send("W", "1", service, native.OFFER)
        m = w.recv(native.is_native, 3)
        self.assertIsNotNone(m, "READY offer not answered in native\n" + self.broker.tail())
        self.assertEqual([e.type for e in native.decode(m)[1]], [native.READY])
        return w

    def test_plain_heartbeat_stays_046_and_offer_is_answered_native(self):
        c = self.client(auto_heartbeat=False)
        c.send("C", "4")
        m = c.recv(None, 3, skip_noise=False)
        self.assertEqual(m, [b"C", b"4"])
        self.native_client()

    def test_native_batch_to_046_worker_and_back(self):
        w = self.ready_worker("echo")
        c = self.native_client()
        c.send_native([Entry(native.REQUEST, service="echo", rid="r%d" % i,
                             body='"v%d"' % i) for i in range(3)])
        reqs = [w.next_request(3) for _ in range(3)]
        self.assertNotIn(None, reqs, self.broker.tail())
        self.assertEqual(sorted(r.rid for r in reqs), [b"r0", b"r1", b"r2"])
        for r in reqs:
            self.assertEqual(r.data, b'"v' + r.rid[1:] + b'"')
            w.reply(r, b"ok-" + r.rid)
        got, _ = c.entries(count=3)
        self.assertEqual(sorted((e.type, e.rid, e.body, e.error) for e in got),
                         [(native.REPLY, b"r%d" % i, b"ok-r%d" % i, False) for i in range(3)])

    def test_requests_of_one_batch_reach_a_native_worker_as_one_batch(self):
        w = self.native_worker("echo")
        c = self.native_client()
        c.send_native([Entry(native.REQUEST, service="echo", rid="r%02d" % i,
                             body="x" * i) for i in range(10)])
        got, msgs = w.entries(count=10)
        self.assertEqual(len(got), 10, self.broker.tail())
        self.assertEqual(len(msgs), 1, "10 requests for one worker from one batch "
                         "left the broker as %d messages" % len(msgs))
        self.assertEqual([e.rid for e in got], [b"r%02d" % i for i in range(10)])
        # One alias for the client (32 hex characters), never its routing id
        self.assertEqual(len({e.client for e in got}), 1)
        self.assertRegex(got[0].client, rb"^[0-9a-f]{32}$")
        self.assertNotEqual(got[0].client, c.identity)
        self.assertEqual([e.service for e in got], [b"echo"] * 10)
        # Replies: a partial and an error final for one, plain finals for the rest
        first = got[0]
        replies = [Entry(native.PARTIAL, client=first.client, rid=first.rid, body="p1"),
                   Entry(native.REPLY, client=first.client, rid=first.rid,
                         body='"boom"', error=True)]
        replies += [Entry(native.REPLY, client=e.client, rid=e.rid, body=e.body)
                    for e in got[1:]]
        w.send_native(replies)
        back, msgs = c.entries(count=11)
        self.assertEqual(len(msgs), 1, "replies of one batch for one client left "
                         "the broker as %d messages" % len(msgs))
        self.assertEqual([(e.type, e.rid) for e in back[:2]],
                         [(native.PARTIAL, b"r00"), (native.REPLY, b"r00")])
        self.assertTrue(back[1].error)
        self.assertEqual(back[1].body, b'"boom"')
        self.assertEqual([(e.rid, e.body) for e in back[2:]],
                         [(b"r%02d" % i, b"x" * i) for i in range(1, 10)])

    def test_046_client_and_native_worker_meet(self):
        w = self.native_worker("echo")
        c = self.client()
        c.request("echo", "plain-1", '"hi"', '{"timeout":5000}')
        got, _ = w.entries(count=1)
        self.assertEqual(len(got), 1, self.broker.tail())
        self.assertEqual((got[0].rid, got[0].body, got[0].opts),
                         (b"plain-1", b'"hi"', b'{"timeout":5000}'))
        w.send_native([Entry(native.PARTIAL, client=got[0].client, rid="plain-1", body="a"),
                       Entry(native.REPLY, client=got[0].client, rid="plain-1", body="b")])
        partials, final = c.final("plain-1")
        self.assertEqual([p.data for p in partials], [b"a"])
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual((final.status, final.data), (b"0", b"b"))

    def test_large_bodies_travel_as_external_frames_both_ways(self):
        w = self.native_worker("big")
        c = self.native_client()
        body = os.urandom(100 * 1024)
        c.send_native([Entry(native.REQUEST, service="big", rid="b1", body=body,
                             external=True),
                       Entry(native.REQUEST, service="big", rid="b2", body="small")])
        got, msgs = w.entries(count=2)
        self.assertEqual([(e.rid, e.body) for e in got], [(b"b1", body), (b"b2", b"small")])
        self.assertTrue(got[0].external, "a 100 KiB body was sent inline")
        self.assertEqual(len(msgs[0]), 2)
        w.send_native([Entry(native.REPLY, client=got[0].client, rid="b1", body=body[::-1],
                             external=True)])
        back, _ = c.entries(count=1)
        self.assertEqual((back[0].rid, back[0].body), (b"b1", body[::-1]))
        self.assertTrue(back[0].external)
        # And to a 0.0.46 client: one plain frame
        plain = self.client()
        plain.request("big", "p1", body)
        got, _ = w.entries(count=1)
        self.assertEqual(got[0].body, body)
        w.send_native([Entry(native.REPLY, client=got[0].client, rid="p1", body=body)])
        _, final = plain.final("p1")
        self.assertEqual(final.data, body)

    def test_request_heartbeats_reach_a_native_worker(self):
        w = self.native_worker("slow")
        c = self.native_client()
        c.send_native([Entry(native.REQUEST, service="slow", rid="h1", body="x")])
        sent, _ = w.entries(count=1)
        self.assertEqual(len(sent), 1)
        c.send_native([Entry(native.HEARTBEAT, rid="h1")])
        got, _ = w.entries(count=1)
        self.assertEqual([(e.type, e.client, e.rid) for e in got],
                         [(native.HEARTBEAT, sent[0].client, b"h1")])
        self.assertNotEqual(sent[0].client, c.identity)

    def test_reserved_names_and_unready_workers_get_a_reasoned_disconnect(self):
        w = NativePeer(self.mesh, "W", self.broker.endpoint, self.broker.server_key,
                       auto_heartbeat=False)
        # The DISCONNECT says why: in 0.0.46 framing (W, 5, reason), which
        # every pigato peer reads, since native's DISCONNECT has no field
        # for it (docs/native-framing.md)
        w.send("W", "1", "mmi.service", native.OFFER)
        m = w.recv(lambda m: m[:2] == [b"W", b"5"], 3, skip_noise=False)
        self.assertIsNotNone(m, self.broker.tail(5))
        self.assertEqual(m[2:], [b"E_RESERVED_SERVICE mmi.service"])
        stranger = NativePeer(self.mesh, "W", self.broker.endpoint, self.broker.server_key,
                              auto_heartbeat=False)
        stranger.send_native([Entry(native.REPLY, client="nobody", rid="r", body="x")])
        m = stranger.recv(lambda m: m[:2] == [b"W", b"5"], 3, skip_noise=False)
        self.assertIsNotNone(m, self.broker.tail(5))
        self.assertEqual(len(m), 3)
        self.assertTrue(m[2].startswith(b"E_NOT_READY"), m)

    def test_malformed_batches_are_dropped_whole(self):
        w = self.ready_worker("victim")
        good = Entry(native.REQUEST, service="victim", rid="g", body="x")
        valid = native.encode("C", [good])[0]
        cases = {
            "truncated entry": [valid + valid[4:-3]],
            "bad version": native.encode("C", [good], version=2),
            "reserved flags": native.encode("C", [good], flags=1),
            "unknown role": [valid[:2] + b"X" + valid[3:]],
            "unknown type": native.encode("C", [good, Entry(9, rid="z")]),
            "reply from a client": native.encode("C", [good, Entry(native.REPLY, rid="z")]),
            "rid too long": native.encode("C", [good, Entry(native.REQUEST, service="victim",
                                                            rid="r" * 65)]),
            "missing external": native.encode("C", [good, Entry(
                native.REQUEST, service="victim", rid="e", body="y", external=True)])[:1],
            "unused frame": native.encode("C", [good]) + [b"extra"],
            "empty batch": [valid[:4]],
            "too many entries": native.encode("C", [Entry(native.HEARTBEAT)] * 1025),
        }
        for i, (what, frames) in enumerate(cases.items()):
            peer = NativePeer(self.mesh, "C", self.broker.endpoint, self.broker.server_key,
                              identity="bad-%d" % i, auto_heartbeat=False)
            if i and i % 10 == 0:
                self.mesh.settle(1.1)                   # bad_message log rate limit
            mark = self.broker.mark()
            peer.sock.send_multipart(frames)
            self.assertIsNotNone(self.wait_log(BAD, 3, mark),
                                 "%s: no bad_message\n%s" % (what, self.broker.tail()))
        self.assertEqual(w.requests_now(0.3), [],
                         "a valid entry of a malformed batch was routed")
        self.assert_serves()

    def test_random_mutations_of_native_and_mdp_messages_never_hurt(self):
        """Thousands of valid messages with random bytes flipped, cut or
        grown, from clients and workers: the broker stays up, keeps its
        state consistent, and serves normally afterwards."""
        import random
        rng = random.Random(1234)
        self.native_worker("fz")
        seeds = [
            ("C", native.encode("C", [Entry(native.REQUEST, service="fz", rid="r%d" % i,
                                            body="b" * i, opts='{"timeout":200}')
                                      for i in range(3)])),
            ("C", native.encode("C", [Entry(native.HEARTBEAT, rid="r1"),
                                      Entry(native.REQUEST, service="fz", rid="x",
                                            body=b"\x00" * 5000, external=True)])),
            ("W", native.encode("W", [Entry(native.REPLY, client="c", rid="r", body="z"),
                                      Entry(native.PARTIAL, client="c", rid="r", body="p"),
                                      Entry(native.HEARTBEAT, opts='{"concurrency":2}')])),
            ("W", [b"\xd7\x01W\x00" + bytes([native.READY, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0])
                   + b"fz"]),
            ("C", [b"MDPC02", b"\x01", b"fz", b"body", b"more"]),
            ("W", [b"MDPW02", b"\x04", b"client", b"", b"body"]),
            ("W", [b"MDPW02", b"\x01", b"fz"]),
        ]
        peers = {role: [NativePeer(self.mesh, role, self.broker.endpoint,
                                   self.broker.server_key, auto_heartbeat=False)
                        for _ in range(4)] for role in "CW"}
        for n in range(3000):
            role, frames = rng.choice(seeds)
            frames = [bytearray(f) for f in frames]
            for _ in range(rng.randint(1, 4)):
                f = rng.choice(frames)
                action = rng.random()
                if action < 0.6 and f:
                    f[rng.randrange(len(f))] = rng.randrange(256)
                elif action < 0.8 and f:
                    del f[rng.randrange(len(f)):]
                else:
                    f.extend(rng.randbytes(rng.randint(1, 16)))
            if rng.random() < 0.1:
                frames = frames[:rng.randint(1, len(frames))]
            rng.choice(peers[role]).sock.send_multipart([bytes(f) for f in frames])
            if n % 500 == 499:
                self.mesh.settle(0.05)
        self.mesh.settle(0.5)
        self.assert_broker_alive()
        self.assert_serves()
        # and over the native framing, with a fresh worker and client
        fresh = self.native_worker("fz-after")
        c = self.native_client()
        c.send_native([Entry(native.REQUEST, service="fz-after", rid="after", body="ok")])
        got, _ = fresh.entries(timeout=5, count=1)
        self.assertEqual([e.rid for e in got], [b"after"], self.broker.tail())


class NativeInsecure(NativeCases, MeshTestCase):
    CURVE = False


class NativeCurve(NativeCases, MeshTestCase):
    CURVE = True


class NativeAcl(MeshTestCase):
    """Every entry of a batch is its own ACL decision."""
    CURVE = True
    START_BROKER = False

    def test_each_entry_is_checked(self):
        keydir = os.path.join(self.tmp, "ids")
        os.mkdir(keydir)
        alice, wk = KeyPair(keydir, "alice"), KeyPair(keydir, "wk")
        acl = os.path.join(self.tmp, "mesh.acl")
        write_acl(acl, "identity alice %s\nidentity wk %s\nallow wk serve *\n"
                       "allow alice call open.*\n" % (alice.public, wk.public))
        self.broker = self.start_broker(acl=acl)
        cases = NativeCases()
        cases.mesh, cases.broker = self.mesh, self.broker
        cases.assertIsNotNone, cases.assertEqual = self.assertIsNotNone, self.assertEqual
        open_w = cases.native_worker("open.a", keypair=wk)
        shut_w = cases.native_worker("shut", keypair=wk)
        c = cases.native_client(keypair=alice)
        mark = self.broker.mark()
        c.send_native([Entry(native.REQUEST, service="open.a", rid="ok", body="1"),
                       Entry(native.REQUEST, service="shut", rid="no", body="2"),
                       Entry(native.REQUEST, service="open.a", rid="ok2", body="3")])
        got, _ = open_w.entries(count=2)
        self.assertEqual([e.rid for e in got], [b"ok", b"ok2"])
        back, _ = c.entries(count=1)
        self.assertEqual([(e.rid, e.error) for e in back], [(b"no", True)])
        self.assertIn(b"E_ACCESS_DENIED shut", back[0].body)
        self.assertEqual(shut_w.entries(timeout=0.3)[0], [])
        self.assertIsNotNone(self.wait_log(r"event=access_denied\b.*identity=alice\b.*"
                                           r"service=shut\b", 2, mark))


if __name__ == "__main__":
    unittest.main(verbosity=2)
