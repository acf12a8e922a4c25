#!/usr/bin/python3
"""Hostile frames over a real socket (issue 2, "Bad input"). After every
barrage the broker process is alive and still serves a normal request.
Malformed messages must be logged as event=bad_message with the peer.
Every case comes from a fresh connection so per-peer log limits do not
hide anything. Runs against an --insecure and a CURVE (--allow-any) broker."""

import random
import time
import unittest

import zmq
from zmq.utils.monitor import recv_monitor_message

import harness
from harness import MeshTestCase, Peer, secs

BAD = r"event=bad_message\b.*\bpeer="
# Replies the broker cannot match to a request it dispatched to that very
# worker: late replies and forgeries look alike, so a debug line will do.
DROPPED = r"event=(bad_message|reply_dropped)\b"
# The broker logs at most 20 bad messages per second of its monotonic
# clock, then a count; stay well under that so every case is visible.
LOG_BUDGET = 12
VALID_REQUEST = ["C", "2", "svc", "rid-x", '"data"', "{}"]


class HostileInput:

    _peer_seq = 0

    def hostile(self, *frames, expect_log=True, role="C", what=None):
        """Sends one message from a fresh peer; when expect_log, waits for
        a bad_message log line caused by it. Returns the peer."""
        HostileInput._peer_seq += 1
        peer = Peer(self.mesh, role, self.broker.endpoint, self.broker.server_key,
                    identity="hostile-%d" % HostileInput._peer_seq, auto_heartbeat=False)
        self.pace_bad_input()
        mark = self.broker.mark()
        peer.send(*frames)
        if expect_log:
            m = self.wait_log(BAD, timeout=3, since=mark)
            self.assertIsNotNone(
                m, "no bad_message log line for %s: %r\n%s"
                % (what or "message", [harness.b(f)[:40] for f in frames][:8],
                   self.broker.tail(15)))
        return peer

    def pace_bad_input(self):
        """Keeps bad input under the broker's log rate limit (per second of
        CLOCK_MONOTONIC, which time.monotonic() reads on Linux)."""
        window = int(time.monotonic())
        if getattr(self, "_bad_window", None) != window:
            self._bad_window, self._bad_sent = window, 0
        if self._bad_sent >= LOG_BUDGET:
            self.mesh.settle(window + 1.01 - time.monotonic())
            self._bad_window, self._bad_sent = int(time.monotonic()), 0
        self._bad_sent += 1

    def assert_no_reply_but_error(self, client, rid, window=0.5):
        """A dropped request gets nothing; an answered one gets a final
        error. Anything else is wrong."""
        self.mesh.settle(secs(window))
        for m in client.pending():
            self.assertEqual(m[:2], [b"C", b"3"], "unexpected answer %r" % m[:6])
            self.assertEqual(m[4:5], [b"-1"], "bad input answered with success: %r" % m[:6])

    # -- framing -------------------------------------------------------------

    def test_empty_and_single_frame_messages(self):
        self.hostile(b"", what="one empty frame")
        self.hostile(b"", b"", what="two empty frames")
        for f in ("C", "W", "X", "2", "MDPC02"):
            self.hostile(f, what="single frame %r" % f)
        self.assert_serves()

    def test_unknown_header(self):
        for header in ("X", "c", "w", "CC", "", "\x00", "MDPX01"):
            self.hostile(header, "2", "svc", "rid", '"d"', "{}", what="header %r" % header)
        self.assert_serves()

    def test_unknown_and_misplaced_types(self):
        for role in ("C", "W"):
            for t in ("0", "8", "9", "a", "22", "", "\xff", "-1", " 2"):
                self.hostile(role, t, "svc", "rid", '"d"', "{}",
                             what="type %r from %s" % (t, role))
        # Types the other side sends: a client sending READY or a reply, a
        # worker sending a request.
        self.hostile("C", "1", "svc", what="client READY")
        self.hostile("C", "3", "", "rid", "0", '"d"', "{}", what="client REPLY")
        self.hostile("C", "6", "", "rid", "0", '"d"', "{}", what="client PARTIAL")
        self.hostile("C", "7", "", "rid", "0", '"d"', what="client REJECT")
        self.assert_serves()

    def test_truncated_requests_are_dropped(self):
        w = self.ready_worker("svc")
        for n in range(1, 4):                   # no rid: nothing to answer
            self.hostile(*VALID_REQUEST[:n], what="request cut to %d frames" % n)
        # Without opts, or without data and opts: may be served (empty data,
        # default opts) or refused, but whatever reaches the worker is a
        # well-formed request.
        self.hostile("C", "2", "svc", "rid-4", expect_log=False)
        self.hostile("C", "2", "svc", "rid-5", '"data"', expect_log=False)
        got = w.requests_now(0.5)
        for r in got:
            self.assertEqual(len(r.frames), 8, "malformed W,2 sent to worker: %r" % r.frames)
            self.assertIn((r.rid, r.data), ((b"rid-4", b""), (b"rid-5", b'"data"')))
            w.reply(r, '"ok"')
        self.assert_serves()

    def test_truncated_worker_messages_are_dropped(self):
        w = self.ready_worker("trunc")
        c = self.client(identity="trunc-client")
        c.request("trunc", "t1", '"x"', '{"timeout":30000}')
        req = w.next_request()
        self.assertIsNotNone(req)
        full = ["W", "3", req.client, "", "t1", "0", '"x"', "{}"]
        for n in range(2, 5):                               # cut before the rid
            self.pace_bad_input()
            mark = self.broker.mark()
            w.send(*full[:n])
            self.assertIsNotNone(self.wait_log(BAD, 3, mark),
                                 "worker reply cut to %d frames not logged" % n)
        self.hostile("W", "4", role="W", expect_log=False)   # bare heartbeat, never READY
        self.mesh.settle(secs(0.3))
        for m in c.pending():
            self.assertEqual(m[:2], [b"C", b"3"], "truncated reply forwarded: %r" % m)
            self.assertEqual(m[4:5], [b"-1"], "truncated reply forwarded: %r" % m)
        if not w.got_disconnect():
            w.reply(req, '"whole"')
            _, final = c.final("t1")
            self.assertIsNotNone(final)
            self.assertEqual(final.data, b'"whole"')
        self.assert_serves()

    def test_too_many_frames(self):
        w = self.ready_worker("svc")
        self.hostile(*(VALID_REQUEST + ["extra"] * 100), what="request + 100 frames")
        self.hostile(*(["C", "4"] + ["x"] * 200), what="heartbeat + 200 frames")
        self.hostile(*(["W", "1", "svc"] + ["x"] * 150), role="W", what="READY + 150 frames")
        self.hostile(*(["C"] * 1000), what="1000 frames")
        self.assertEqual(w.requests_now(0.4), [], "over-framed request was dispatched")
        self.assert_serves()

    # -- fields --------------------------------------------------------------

    def test_service_name_length_limit(self):
        name255 = "s" * 255
        w = self.ready_worker(name255)
        c = self.client()
        c.request(name255, "len255", '"x"', '{"timeout":5000}')
        req = w.next_request()
        self.assertIsNotNone(req, "a 255-byte service name must work")
        w.reply(req, '"ok"')
        self.assertEqual(c.final("len255")[1].data, b'"ok"')
        # 256 and far more: refused.
        for n in (256, 4096, 100000):
            peer = self.hostile("C", "2", "s" * n, "long-%d" % n, '"x"', "{}",
                                what="service of %d bytes" % n)
            self.assert_no_reply_but_error(peer, "long-%d" % n, 0.2)
        self.hostile("W", "1", "s" * 300, role="W", what="READY with 300-byte service")
        self.assertEqual(w.requests_now(0.3), [])
        self.assert_serves()

    def test_rid_length_limit(self):
        w = self.ready_worker("rids")
        c = self.client()
        rid64 = "r" * 64
        c.request("rids", rid64, '"x"', '{"timeout":5000}')
        req = w.next_request()
        self.assertIsNotNone(req, "a 64-byte rid (PIGATO_RID_MAX) must work")
        w.reply(req, '"ok"')
        self.assertEqual(c.final(rid64)[1].data, b'"ok"')
        for n in (1000, 100000):
            self.hostile("C", "2", "rids", "r" * n, '"x"', "{}", what="rid of %d bytes" % n)
        self.hostile("C", "2", "rids", "", '"x"', "{}", expect_log=False)   # empty rid
        got = w.requests_now(0.4)
        self.assertTrue(all(len(r.rid) <= 64 for r in got), "over-long rid dispatched")
        for r in got:
            w.reply(r, '"x"')
        self.assert_serves()

    def test_invalid_json_opts(self):
        w = self.ready_worker("json")
        for i, opts in enumerate(("{bad", '{"timeout":', b"\xff\xfe{", "{}}", "nul")):
            peer = self.hostile("C", "2", "json", "j%d" % i, '"x"', opts,
                                what="opts %r" % opts)
            self.assert_no_reply_but_error(peer, "j%d" % i, 0.1)
        got = w.requests_now(0.4)
        self.assertEqual([(r.rid, r.opts) for r in got], [],
                         "request with invalid JSON opts dispatched (docs/security.md: dropped or "
                         "answered with an error)")
        self.assert_serves()

    def test_opts_undefined_and_empty_mean_no_opts(self):
        # Node pigato writes the text `undefined` for missing opts.
        w = self.ready_worker("undef")
        c = self.client()
        for rid, opts in (("u1", "undefined"), ("u2", ""), ("u3", "{}")):
            c.request("undef", rid, '"x"', opts)
            req = w.next_request()
            self.assertIsNotNone(req, "request with opts %r not served" % opts)
            w.reply(req, '"ok %s"' % rid, opts="undefined")
            _, final = c.final(rid)
            self.assertIsNotNone(final, "reply with opts `undefined` not forwarded")
            self.assertEqual((final.status, final.data), (b"0", b'"ok %s"' % rid.encode()))
        self.assertFalse(w.got_disconnect())

    def test_odd_but_valid_json_opts(self):
        w = self.ready_worker("odd")
        c = self.client()
        odd = ('{"timeout":"abc"}', '{"retry":"x"}', '{"timeout":1e999}', '{"workerId":5}',
               '[]', '42', '"str"', 'null', '{"timeout":-5}', '{"a":' * 500 + '1' + '}' * 500)
        for i, opts in enumerate(odd):
            c.request("odd", "o%d" % i, '"x"', opts)
        self.mesh.settle(secs(0.5))
        for r in w.requests_now(0.1):
            w.reply(r, '"ok"')
        self.mesh.settle(secs(0.3))
        for m in c.pending():
            self.assertIn(m[1], (b"3", b"6"), "garbage answer %r" % m[:6])
        self.assert_serves()

    # -- protocol state --------------------------------------------------------

    def test_replies_for_unknown_rids_are_dropped(self):
        w = self.ready_worker("unk")
        c = self.client(identity="victim")
        c.request("unk", "real", '"x"', '{"timeout":30000}')
        req = w.next_request()
        self.assertIsNotNone(req)
        for t in ("3", "6"):
            mark = self.broker.mark()
            w.reply_to(req.client, "not-a-rid", '"forged"', partial=(t == "6"))
            self.assertIsNotNone(self.wait_log(DROPPED, 3, mark),
                                 "reply (type %s) for unknown rid not logged" % t)
        mark = self.broker.mark()
        w.send("W", "7", req.client, "", "not-a-rid", "0", '"no"')
        self.assertIsNotNone(self.wait_log(DROPPED, 3, mark),
                             "reject for unknown rid not logged")
        self.mesh.settle(secs(0.2))
        self.assertEqual([m for m in c.pending() if m[3:4] == [b"not-a-rid"]], [],
                         "reply for unknown rid reached a client")
        if not w.got_disconnect():
            w.reply(req, '"real reply"')
            _, final = c.final("real")
            self.assertEqual(final.data, b'"real reply"')
        self.assert_serves()

    def test_reply_from_another_worker_is_refused(self):
        a = self.ready_worker("own", identity="owner")
        c = self.client(identity="asker")
        c.request("own", "mine", '"x"', '{"timeout":30000}')
        req = a.next_request()
        self.assertIsNotNone(req)
        thief = self.ready_worker("own", identity="thief")
        mark = self.broker.mark()
        thief.reply(req, '"stolen partial"', partial=True)
        thief.reply(req, '"stolen"')
        thief.reject(req, '"stolen reject"')
        self.assertIsNotNone(self.wait_log(DROPPED, 3, mark),
                             "reply from the wrong worker not logged")
        self.mesh.settle(secs(0.3))
        self.assertEqual(c.pending(), [], "another worker answered someone else's request")
        self.assertEqual(thief.requests_now(0.1), [],
                         "forged reject moved the request to the forger")
        a.reply(req, '"genuine"')
        _, final = c.final("mine")
        self.assertIsNotNone(final, "owner's reply lost after a forged one")
        self.assertEqual((final.status, final.data), (b"0", b'"genuine"'))

    def test_ready_twice_registers_once(self):
        w = self.worker(concurrency=1)
        self.assertIsNotNone(w.ready("twice"))
        w.send("W", "1", "twice")
        w.heartbeat()
        self.mesh.settle(secs(0.3))
        if w.got_disconnect():                # refusing the second READY is allowed
            w.received.clear()
            self.assertIsNotNone(w.ready("twice"))
        c = self.client()
        for i in range(3):
            c.request("twice", "t%d" % i, '"x"', '{"timeout":30000}')
        seen = []
        for _ in range(3):
            held = w.requests_now(0.4)
            self.assertLessEqual(len(held), 1, "READY twice doubled the worker's slots")
            self.assertEqual(len(held), 1, "request not dispatched after READY twice")
            seen += [r.rid for r in held]
            w.reply(held[0], '"ok"')
        self.assertEqual(seen, [b"t0", b"t1", b"t2"], "each request exactly once")
        for i in range(3):
            self.assertIsNotNone(c.final("t%d" % i)[1])

    def test_ready_without_service(self):
        self.hostile("W", "1", role="W", what="READY with no service frame")
        self.hostile("W", "1", "", role="W", what="READY with empty service")
        self.assert_serves()

    def test_worker_messages_before_ready(self):
        self.hostile("W", "4", "", '{"concurrency":5}', role="W", what="heartbeat before READY")
        self.hostile("W", "3", "someone", "", "rid", "0", '"x"', "{}", role="W",
                     what="reply before READY")
        self.hostile("W", "6", "someone", "", "rid", "0", '"x"', "{}", role="W",
                     what="partial before READY")
        self.hostile("W", "7", "someone", "", "rid", "0", '"x"', role="W",
                     what="reject before READY")
        self.hostile("W", "5", role="W", expect_log=False)   # DISCONNECT before READY: harmless
        self.assert_serves()

    def test_binary_garbage(self):
        rng = random.Random(20240602)
        for i in range(300):
            nframes = rng.randint(1, 12)
            frames = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
                      for _ in range(nframes)]
            if i % 3 == 0:
                frames[0] = rng.choice([b"C", b"W"])
                if nframes > 1:
                    frames[1] = rng.choice([b"1", b"2", b"3", b"4", b"5", b"6", b"7"])
            HostileInput._peer_seq += 1
            p = Peer(self.mesh, "C", self.broker.endpoint, self.broker.server_key,
                     identity="garbage-%d" % HostileInput._peer_seq, auto_heartbeat=False)
            p.send(*frames)
            if i % 50 == 49:
                self.mesh.settle(0.05)
                self.assert_broker_alive()
                for q in list(self.mesh.peers):
                    q.close()
        self.assert_serves()

    # -- size limits -----------------------------------------------------------

    def test_oversized_message_drops_the_peer(self):
        w = self.ready_worker("big")
        c = self.client()
        # A large but legal payload (1 MiB) still works.
        payload = '"' + "x" * (1 << 20) + '"'
        c.request("big", "one-mib", payload, '{"timeout":10000}')
        req = w.next_request(10)
        self.assertIsNotNone(req, "1 MiB request not delivered")
        self.assertEqual(len(req.data), len(payload))
        w.reply(req, req.data)
        _, final = c.final("one-mib", 10)
        self.assertIsNotNone(final)
        self.assertEqual(len(final.data), len(payload))
        # 17 MiB is over the broker's 16 MiB ZMQ_MAXMSGSIZE: the connection
        # is dropped and the message never reaches the worker.
        peer = Peer(self.mesh, "C", self.broker.endpoint, self.broker.server_key,
                    identity="giant", auto_heartbeat=False)
        monitor = peer.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED
                                               | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            peer.send("C", "2", "big", "giant", b"x" * (17 << 20), "{}")
            disconnected = False
            deadline = time.monotonic() + secs(15)
            while time.monotonic() < deadline and not disconnected:
                if monitor.poll(100):
                    ev = recv_monitor_message(monitor)
                    disconnected = ev["event"] == zmq.EVENT_DISCONNECTED
                self.mesh.pump(0)
            self.assertTrue(disconnected, "peer sending 17 MiB was not disconnected")
        finally:
            peer.sock.disable_monitor()
            monitor.close(0)
        self.assertEqual(w.requests_now(0.3), [], "oversized request was dispatched")
        self.assert_serves()


class InsecureHostileTest(HostileInput, MeshTestCase):
    CURVE = False

    def test_curve_client_against_insecure_broker(self):
        w = self.ready_worker("sec")
        pub = harness.KeyPair(self.tmp, "fake").public
        p = Peer(self.mesh, "C", self.broker.endpoint, server_key=pub)
        p.send("C", "2", "sec", "r", '"x"', "{}")
        self.assertEqual(w.requests_now(0.6), [])
        self.assert_serves()


class CurveHostileTest(HostileInput, MeshTestCase):
    CURVE = True

    def test_wrong_server_key_gets_nowhere(self):
        w = self.ready_worker("sec")
        wrong = harness.KeyPair(self.tmp, "wrong").public
        p = Peer(self.mesh, "C", self.broker.endpoint, server_key=wrong)
        p.send("C", "2", "sec", "r", '"x"', "{}")
        self.assertEqual(w.requests_now(0.8), [], "request with a wrong server key delivered")
        self.assertEqual(p.pending(), [])
        self.assert_serves()

    def test_plaintext_peer_gets_nowhere(self):
        w = self.ready_worker("sec")
        p = Peer(self.mesh, "C", self.broker.endpoint, server_key=None)
        p.send("C", "2", "sec", "r", '"x"', "{}")
        q = Peer(self.mesh, "W", self.broker.endpoint, server_key=None)
        q.send("W", "1", "sec")
        self.assertEqual(w.requests_now(0.8), [], "plaintext request delivered over CURVE broker")
        self.assertEqual(p.pending() + q.pending(), [])
        self.assert_serves()


if __name__ == "__main__":
    harness.main()
