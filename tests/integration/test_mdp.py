#!/usr/bin/python3
"""MDP/0.2 (ZeroMQ RFC 18) and MMI (RFC 8) on pigato-broker, spoken by hand
from pyzmq DEALERs written from the RFC text (docs/protocol.md).

What the broker is expected to do (these tests define it):

* MDP peers share the ROUTER with pigato peers and are recognised by the
  header frame: client "MDPC02", worker "MDPW02"; command byte next.
* An MDP client REQUEST (MDPC02, 0x01, service, body...) joins the same
  per-service queue as pigato requests. The client gets zero or more
  PARTIAL (MDPC02, 0x02, service, body...) and one FINAL (MDPC02, 0x03,
  service, body...), service being the name it asked for; an MDP client
  receives nothing else (no heartbeats, no pigato frames).
* An MDP worker registers with READY (MDPW02, 0x01, service); the broker
  does not answer READY (RFC 18) but logs event=worker_ready service=S
  worker=ID as for pigato workers. It sends the worker REQUEST (MDPW02,
  0x02, client address, "", body...) where the client address is an
  alias of the requesting client (MDP or pigato client): 32 lowercase hex
  characters, never its routing id. The worker answers PARTIAL 0x03 /
  FINAL 0x04 (client address, "", body...). Bodies
  are forwarded frame for frame between MDP peers.
* An MDP worker holds ONE request at a time: the next is sent only after
  the FINAL of the previous one. Requests are dispatched oldest first.
* Between framings one MDP body frame is one pigato data frame: an MDP
  client's single-frame body is the pigato worker's data frame; a pigato
  worker's reply data is the single body frame of the MDP PARTIAL/FINAL;
  an error final (status -1) from a pigato worker reaches the MDP client
  as a FINAL whose body is the error data (MDP has no status). A pigato
  client's data is the MDP worker's single body frame; MDP PARTIAL/FINAL
  body frames reach a pigato client as C,6/C,3 with status 0 and the body
  as data. (Multi-frame bodies across framings are not defined here.)
* Heartbeats: the broker sends MDPW02, 0x05 to every registered MDP worker
  at its heartbeat interval; a worker silent for liveness x interval is
  expired (event=worker_gone ... reason=expired) and gets no more
  requests. Its request then follows pigato rules: without retry it fails
  at once (a pigato client gets C,3 status -1, data "E_WORKER_LOST ...");
  with {"retry":N} it goes to another worker.
* A request that expires in the broker (pigato timeout) while an MDP
  worker holds it leaves that worker busy until its FINAL for it arrives;
  that late FINAL is dropped quietly (no DISCONNECT, nothing to the
  client) and frees the worker for the next request.
* DISCONNECT from a worker (MDPW02, 0x06) removes it (event=worker_gone ...
  reason=disconnect; a request it held fails as above) and the broker
  sends it nothing more. A valid but unexpected command (a second READY,
  HEARTBEAT or PARTIAL/FINAL before READY, PARTIAL/FINAL from a worker
  that holds no request, live or expired, or naming another client than
  the one whose request it holds; that request then fails as above) gets
  DISCONNECT (RFC 18 says MUST),
  and then nothing more. DISCONNECT before READY is allowed and answered
  with nothing. READY for an mmi.* service gets DISCONNECT (RFC 8).
* MMI: "mmi.service" with a body naming a service answers a FINAL with
  body "200" if that service has a worker (MDP or pigato) and "404" if
  not; any other "mmi.*" answers "501". For an MDP client the FINAL is
  (MDPC02, 0x03, <the mmi.* name it asked>, code). For a pigato client
  (C,2,mmi.service,rid,data) the data is the service name, raw ("echo") or
  as a JSON string ('"echo"', what Node pigato sends); the answer is a
  final reply with status 0 and data the three ASCII digits 200, 404 or
  501 (which is also valid JSON, a number) — 501 is an answer, not an
  error.
* Malformed MDP messages (truncated, bad command byte, a command only the
  broker sends, missing delimiter, over-long or empty fields, extra
  frames) are dropped and logged as event=bad_message; nothing in them is
  routed and the broker keeps serving.
* ACL: an MDP client REQUEST needs `call` on the service (MMI names too);
  denied, it gets NOTHING (RFC 18 has no error reply), the broker logs
  event=access_denied ... identity=I verb=call service=S reason=not_allowed
  and the worker gets nothing. An MDP worker's READY needs `serve`;
  denied, it gets DISCONNECT and access_denied verb=serve is logged.

Run: PIGATO_BUILD=$PWD/build /usr/bin/python3 tests/integration/test_mdp.py
"""

import os
import re
import time

import harness
from harness import KeyPair, MeshTestCase, Peer, b, secs, write_acl

MDPC = b"MDPC02"
MDPW = b"MDPW02"
C_REQUEST, C_PARTIAL, C_FINAL = b"\x01", b"\x02", b"\x03"
W_READY, W_REQUEST, W_PARTIAL, W_FINAL, W_HEARTBEAT, W_DISCONNECT = (
    b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06")

BAD = r"event=bad_message\b"
LONG = '{"timeout":30000}'


# --------------------------------------------------------------------------
# MDP/0.2 peers, from RFC 18

class MdpClient(Peer):
    """An MDP/Client over a DEALER. The broker sends it only PARTIAL and
    FINAL; anything else it receives fails the test."""

    def __init__(self, mesh, endpoint, server_key=None, **kw):
        Peer.__init__(self, mesh, "MDPC", endpoint, server_key, auto_heartbeat=False, **kw)

    def request(self, service, *body):
        self.send(MDPC, C_REQUEST, service, *body)

    def reply(self, timeout=3.0):
        """Next message as (command, service, [body frames]) or None. The
        message must be a well-formed PARTIAL or FINAL."""
        m = self.recv(None, timeout, skip_noise=False)
        if m is None:
            return None
        if len(m) < 4 or m[0] != MDPC or m[1] not in (C_PARTIAL, C_FINAL):
            raise AssertionError("MDP client got a message that is not an RFC 18 "
                                 "PARTIAL/FINAL (4+ frames): %r" % (m,))
        return m[1], m[2], m[3:]

    def final(self, timeout=3.0):
        """([partials as (service, body)], (service, body) of the FINAL or None)."""
        partials = []
        deadline = time.monotonic() + secs(timeout)
        while True:
            r = self.reply(max(0.0, deadline - time.monotonic()) / harness.SLOW)
            if r is None:
                return partials, None
            command, service, body = r
            if command == C_FINAL:
                return partials, (service, body)
            partials.append((service, body))


class MdpRequest:
    """A REQUEST as the worker sees it: MDPW02, 0x02, client, "", body..."""

    def __init__(self, msg):
        self.frames = msg
        self.client = msg[2]
        self.empty = msg[3]
        self.body = msg[4:]

    def __repr__(self):
        return "MdpRequest(client=%r, body=%r)" % (self.client, self.body)


def is_mdp_request(m):
    return len(m) >= 2 and m[0] == MDPW and m[1] == W_REQUEST


class MdpWorker(Peer):
    """An MDP/Worker over a DEALER; heartbeats (MDPW02, 0x05) at the mesh's
    interval after READY unless auto_heartbeat=False."""

    def __init__(self, mesh, endpoint, server_key=None, auto_heartbeat=True, **kw):
        Peer.__init__(self, mesh, "MDPW", endpoint, server_key, auto_heartbeat=auto_heartbeat,
                      **kw)
        self.is_ready = False

    def _heartbeat_frames(self):
        return [MDPW, W_HEARTBEAT] if self.is_ready else None

    def ready(self, service):
        self.send(MDPW, W_READY, service)
        self.is_ready = True
        self.last_heartbeat = time.monotonic()

    def heartbeat(self):
        self.send(MDPW, W_HEARTBEAT)

    def next_request(self, timeout=3.0):
        m = self.recv(is_mdp_request, timeout, skip_noise=False)
        if m is None:
            return None
        if len(m) < 5 or m[3] != b"":
            raise AssertionError("REQUEST to an MDP worker is not RFC 18's MDPW02, 0x02, "
                                 "client, \"\", body (5+ frames): %r" % (m,))
        return MdpRequest(m)

    def requests_now(self, settle=0.3):
        self.mesh.settle(secs(settle))
        out = []
        while True:
            r = self.next_request(timeout=0)
            if r is None:
                return out
            out.append(r)

    def partial(self, client, *body):
        self.send(MDPW, W_PARTIAL, client, b"", *body)

    def final(self, client, *body):
        self.send(MDPW, W_FINAL, client, b"", *body)

    def disconnect(self):
        self.send(MDPW, W_DISCONNECT)
        self.is_ready = False

    def disconnects(self):
        return [m for m in self.received if m == [MDPW, W_DISCONNECT]]

    def wait_disconnect(self, timeout=3.0):
        """Waits for the broker's DISCONNECT (exactly MDPW02, 0x06); stops
        heartbeating once it arrived, as RFC 18 tells the worker."""
        m = self.recv(lambda m: m[:2] == [MDPW, W_DISCONNECT], timeout, skip_noise=False)
        if m is not None:
            self.is_ready = False
            if m != [MDPW, W_DISCONNECT]:
                raise AssertionError("DISCONNECT is 2 frames in RFC 18: %r" % (m,))
        return m

    def assert_only_rfc18(self):
        """Every message the broker sent is a well-formed MDP/Worker command."""
        for m in self.received:
            ok = (m in ([MDPW, W_HEARTBEAT], [MDPW, W_DISCONNECT])
                  or (len(m) >= 5 and m[:2] == [MDPW, W_REQUEST] and m[3] == b""))
            if not ok:
                raise AssertionError("MDP worker got a message that is not RFC 18: %r" % (m,))


# --------------------------------------------------------------------------
# Cases shared by the insecure and CURVE brokers

class MdpMixin:
    """Helpers; self.broker and self.mesh come from MeshTestCase."""

    def mdp_client(self, broker=None, **kw):
        broker = broker or self.broker
        return MdpClient(self.mesh, broker.endpoint, broker.server_key, **kw)

    def mdp_worker(self, service=None, broker=None, wait=True, **kw):
        """An MDP worker; with a service, READY and (wait) the broker's
        event=worker_ready log line for it."""
        broker = broker or self.broker
        w = MdpWorker(self.mesh, broker.endpoint, broker.server_key, **kw)
        if service is not None:
            mark = broker.mark()
            w.ready(service)
            if wait:
                m = self.wait_log(r"event=worker_ready service=%s worker=%s\b"
                                  % (re.escape(service), re.escape(w.identity.decode())),
                                  5, mark, broker)
                self.assertIsNotNone(m, "MDP READY %s not registered (no event=worker_ready)\n%s"
                                     % (service, broker.tail(15)))
        return w

    def assert_alias(self, address, client):
        """A client address as workers see it: an alias (32 lowercase hex
        characters), not the client's routing id."""
        self.assertRegex(address, rb"^[0-9a-f]{32}$")
        self.assertNotEqual(address, client.identity)

    def mdp_call(self, client, service, *body, timeout=3.0):
        client.request(service, *body)
        partials, final = client.final(timeout)
        self.assertIsNotNone(final, "no FINAL for MDP request to %r\n%s"
                             % (service, self.broker.tail(15)))
        return partials, final

    def assert_worker_lost(self, final, what):
        self.assertIsNotNone(final, "%s: no final reply\n%s" % (what, self.broker.tail(15)))
        self.assertEqual(final.status, b"-1", "%s: %r" % (what, final))
        self.assertTrue(final.data.startswith(b'"E_WORKER_LOST'),
                        "%s: expected an E_WORKER_LOST error, got %r" % (what, final.data))


class MdpCases(MdpMixin):

    # ---- MDP client <-> MDP worker ---------------------------------------

    def test_mdp_client_to_mdp_worker_partials_and_final(self):
        w = self.mdp_worker("echo")
        c = self.mdp_client()
        c.request("echo", "one", b"", b"\x00\xfftwo")
        req = w.next_request()
        self.assertIsNotNone(req, "REQUEST not dispatched to the MDP worker\n" + self.broker.tail())
        self.assertEqual(req.frames, [MDPW, W_REQUEST, req.client, b"", b"one", b"", b"\x00\xfftwo"],
                         "REQUEST frames: client address, body frame for frame")
        self.assert_alias(req.client, c)
        w.partial(req.client, "p1")
        w.partial(req.client, "p2", "p2b")
        w.final(req.client, "f1", b"", "f3")
        got = [c.reply() for _ in range(3)]
        self.assertEqual(got, [(C_PARTIAL, b"echo", [b"p1"]),
                               (C_PARTIAL, b"echo", [b"p2", b"p2b"]),
                               (C_FINAL, b"echo", [b"f1", b"", b"f3"])], self.broker.tail())
        # The worker is free again: a second request goes through
        c.request("echo", "again")
        req = w.next_request()
        self.assertIsNotNone(req, "worker not given a second request after its FINAL")
        self.assertEqual(req.body, [b"again"])
        w.final(req.client, "done")
        self.assertEqual(c.reply(), (C_FINAL, b"echo", [b"done"]))
        # After FINAL the broker sends the client nothing more
        self.mesh.settle(secs(1.2))
        self.assertEqual(c.inbox, [], "MDP client got something after its FINAL")
        w.assert_only_rfc18()

    def test_single_empty_body_frame_stays_one_empty_frame(self):
        w = self.mdp_worker("empty")
        c = self.mdp_client()
        c.request("empty", b"")
        req = w.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        self.assertEqual(req.body, [b""])
        w.final(req.client, b"")
        self.assertEqual(c.reply(), (C_FINAL, b"empty", [b""]))

    def test_request_waits_for_a_worker(self):
        c = self.mdp_client()
        c.request("later", "queued")
        self.mesh.settle(secs(0.5))
        self.assertEqual(c.inbox, [], "a request with no worker must wait, not be answered")
        w = self.mdp_worker("later")
        req = w.next_request()
        self.assertIsNotNone(req, "queued request not dispatched when the worker came\n"
                             + self.broker.tail())
        self.assertEqual(req.body, [b"queued"])
        w.final(req.client, "served")
        self.assertEqual(c.reply(), (C_FINAL, b"later", [b"served"]))

    # ---- across framings -------------------------------------------------

    def test_mdp_client_to_pigato_worker(self):
        w = self.ready_worker("calc")
        c = self.mdp_client()
        c.request("calc", '"2+2"')
        req = w.next_request()
        self.assertIsNotNone(req, "MDP request not dispatched to a pigato worker\n"
                             + self.broker.tail())
        self.assertEqual((req.service, req.empty, req.data),
                         (b"calc", b"", b'"2+2"'))
        self.assert_alias(req.client, c)
        self.assertTrue(0 < len(req.rid) <= 64, "broker-made rid %r" % req.rid)
        w.reply(req, '"thinking"', partial=True)
        w.reply(req, "4")
        self.assertEqual(c.reply(), (C_PARTIAL, b"calc", [b'"thinking"']))
        self.assertEqual(c.reply(), (C_FINAL, b"calc", [b"4"]))
        # Binary bodies intact, both ways
        blob = os.urandom(3000) + b"\x00"
        c.request("calc", blob)
        req = w.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        self.assertEqual(req.data, blob)
        w.reply(req, blob[::-1])
        self.assertEqual(c.reply(), (C_FINAL, b"calc", [blob[::-1]]))
        # An error final: the data is the FINAL's body
        c.request("calc", '"1/0"')
        req = w.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        w.reply(req, '"E_DIVISION"', status=-1)
        self.assertEqual(c.reply(), (C_FINAL, b"calc", [b'"E_DIVISION"']))

    def test_mdp_client_to_libpigato_worker_in_either_framing(self):
        # The broker's rid for an MDP request starts with a 0x00 byte: a
        # libpigato worker takes it like any rid (it once dropped it and
        # kept the slot). With --concurrency 1, a pigato request after it
        # must still be served.
        for framing in ("native", "0.0.46"):
            service = "lib.echo." + framing
            mark = self.broker.mark()
            serve = self.start([harness.CLI_BIN, "serve", service, "--echo",
                                "--concurrency", "1", "--framing", framing]
                               + self.broker.cli_args(), name="serve-" + framing)
            self.assertIsNotNone(self.wait_log(r"event=worker_ready service=%s\b"
                                               % re.escape(service), 10, mark),
                                 serve.tail())
            c = self.mdp_client()
            _, final = self.mdp_call(c, service, b"\x00mdp body", timeout=5)
            self.assertEqual(final, (b(service), [b"\x00mdp body"]), serve.tail())
            p = self.client()
            p.request(service, "after-" + framing, '"next"')
            _, reply = p.final("after-" + framing, 5)
            self.assertIsNotNone(reply, "the MDP request kept the worker's only slot\n"
                                 + serve.tail())
            self.assertEqual(reply.data, b'"next"')
            serve.stop()

    def test_pigato_client_to_mdp_worker(self):
        w = self.mdp_worker("svc")
        c = self.client()
        blob = b"\x00\x01binary\xff" * 100
        c.request("svc", "r1", blob, LONG)
        req = w.next_request()
        self.assertIsNotNone(req, "pigato request not dispatched to an MDP worker\n"
                             + self.broker.tail())
        self.assertEqual(req.frames, [MDPW, W_REQUEST, req.client, b"", blob])
        self.assert_alias(req.client, c)
        first_alias = req.client
        w.partial(req.client, "part")
        w.final(req.client, blob[::-1])
        partials, final = c.final("r1")
        self.assertEqual([(p.status, p.data) for p in partials], [(b"0", b"part")])
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual(final.frames[:6], [b"C", b"3", b"", b"r1", b"0", blob[::-1]])
        # Two pigato clients with the same rid, one after the other
        c2 = self.client()
        c2.request("svc", "r1", '"second"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        self.assertEqual(req.body, [b'"second"'])
        self.assert_alias(req.client, c2)
        self.assertNotEqual(req.client, first_alias)
        w.final(req.client, '"ok2"')
        _, final = c2.final("r1")
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual((final.status, final.data), (b"0", b'"ok2"'))
        self.assertEqual(c.pending(lambda m: m[:2] == [b"C", b"3"]), [],
                         "the other client with the same rid got the reply")

    # ---- one request at a time -------------------------------------------

    def test_mdp_worker_takes_one_request_at_a_time(self):
        w = self.mdp_worker("one")
        c = self.client()
        c.request("one", "r1", '"a"', LONG)
        c.request("one", "r2", '"b"', LONG)
        first = w.next_request()
        self.assertIsNotNone(first, self.broker.tail())
        self.assertEqual(first.body, [b'"a"'], "oldest request first")
        self.assertEqual(w.requests_now(0.6), [],
                         "a second REQUEST reached an MDP worker holding one")
        w.partial(first.client, "working")
        self.assertEqual(w.requests_now(0.4), [], "a PARTIAL does not free an MDP worker")
        w.final(first.client, '"A"')
        _, final = c.final("r1")
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual(final.data, b'"A"')
        second = w.next_request()
        self.assertIsNotNone(second, "queued request not sent after the FINAL\n"
                             + self.broker.tail())
        self.assertEqual(second.body, [b'"b"'])
        w.final(second.client, '"B"')
        _, final = c.final("r2")
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual(final.data, b'"B"')

    def test_one_request_per_worker_not_per_service(self):
        w1 = self.mdp_worker("pair")
        w2 = self.mdp_worker("pair")
        c = self.client()
        for rid in ("r1", "r2", "r3"):
            c.request("pair", rid, '"%s"' % rid, LONG)
        self.mesh.settle(secs(0.6))
        got1, got2 = w1.requests_now(0), w2.requests_now(0)
        self.assertEqual((len(got1), len(got2)), (1, 1),
                         "two idle MDP workers must hold one request each: %r %r"
                         % (got1, got2))
        self.assertEqual(sorted(r.body[0] for r in got1 + got2), [b'"r1"', b'"r2"'])
        w1.final(got1[0].client, "x")
        third = w1.next_request()
        self.assertIsNotNone(third, "the worker that answered gets the third request")
        self.assertEqual(third.body, [b'"r3"'])

    # ---- heartbeats, expiry, disconnect ----------------------------------

    def test_broker_heartbeats_mdp_workers(self):
        w = self.mdp_worker("beat")
        mark = len(w.received)
        self.mesh.settle(secs(self.HEARTBEAT / 1000.0 * 4))
        beats = [m for m in w.received[mark:] if m == [MDPW, W_HEARTBEAT]]
        self.assertGreaterEqual(len(beats), 2, "broker sent %d MDP heartbeats in 4 intervals"
                                % len(beats))
        self.assertEqual(w.disconnects(), [], "a heartbeating worker was disconnected")
        w.assert_only_rfc18()

    def test_silent_mdp_worker_expires_and_its_request_fails(self):
        w = self.mdp_worker("quiet", auto_heartbeat=False)
        c = self.client()
        mark = self.broker.mark()
        c.request("quiet", "r1", '"x"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        # No heartbeat, no reply: gone after liveness x heartbeat (1.5 s)
        t0 = time.monotonic()
        _, final = c.final("r1", 5)
        self.assert_worker_lost(final, "request held by an expired MDP worker")
        self.assertLess(time.monotonic() - t0, secs(4), "expiry took far longer than liveness")
        self.assertIsNotNone(self.wait_log(r"event=worker_gone worker=%s service=quiet "
                                           r"reason=expired\b" % re.escape(w.identity.decode()),
                                           2, mark), self.broker.tail())
        # Expired means gone: a new request waits for another worker
        c.request("quiet", "r2", '"y"', LONG)
        self.assertEqual(w.requests_now(0.6), [], "request sent to an expired MDP worker")
        fresh = self.mdp_worker("quiet")
        req = fresh.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        self.assertEqual(req.body, [b'"y"'])
        fresh.final(req.client, '"ok"')
        _, final = c.final("r2")
        self.assertEqual((final.status, final.data), (b"0", b'"ok"'))

    def test_request_with_retry_moves_to_another_mdp_worker(self):
        silent = self.mdp_worker("flaky", auto_heartbeat=False)
        c = self.client()
        c.request("flaky", "r1", '"x"', '{"timeout":30000,"retry":1}')
        req = silent.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        good = self.mdp_worker("flaky")
        req = good.next_request(6)
        self.assertIsNotNone(req, "request with retry not re-dispatched after its MDP worker "
                             "expired\n" + self.broker.tail())
        self.assertEqual(req.body, [b'"x"'])
        good.final(req.client, '"second try"')
        _, final = c.final("r1")
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual((final.status, final.data), (b"0", b'"second try"'))

    def test_mdp_worker_disconnect(self):
        w = self.mdp_worker("bye")
        c = self.client()
        c.request("bye", "r1", '"x"', LONG)
        self.assertIsNotNone(w.next_request(), self.broker.tail())
        mark = self.broker.mark()
        w.disconnect()
        t0 = time.monotonic()
        _, final = c.final("r1", 3)
        self.assert_worker_lost(final, "request held by a worker that sent DISCONNECT")
        self.assertLess(time.monotonic() - t0, secs(1.0), "the failure must come at once")
        self.assertIsNotNone(self.wait_log(r"event=worker_gone worker=%s service=bye "
                                           r"reason=disconnect\b"
                                           % re.escape(w.identity.decode()), 2, mark),
                             self.broker.tail())
        # RFC 18: after DISCONNECT the broker sends the worker nothing (what
        # it sent before handling the DISCONNECT may still be on the way)
        self.mesh.settle(0.1)
        seen = len(w.received)
        c.request("bye", "r2", '"y"', LONG)
        self.mesh.settle(secs(self.HEARTBEAT / 1000.0 * 3))
        self.assertEqual(w.received[seen:], [],
                         "broker sent a worker that had disconnected: %r" % w.received[seen:])
        # The request waits for a worker that is still there
        fresh = self.mdp_worker("bye")
        req = fresh.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        self.assertEqual(req.body, [b'"y"'])

    def test_timed_out_request_keeps_its_mdp_worker_busy_until_its_final(self):
        # The worker does not know the broker gave up: until its FINAL it is
        # still working on the old request and must not get another one.
        # That FINAL is a late reply: dropped quietly, no DISCONNECT.
        w = self.mdp_worker("slowpoke")
        c = self.client()
        mark = self.broker.mark()
        c.request("slowpoke", "t1", '"1"', '{"timeout":400}')
        first = w.next_request()
        self.assertIsNotNone(first, self.broker.tail())
        self.assertIsNotNone(self.wait_log(r"event=request_expired service=slowpoke rid=t1\b",
                                           3, mark), self.broker.tail())
        c.request("slowpoke", "t2", '"2"', LONG)
        self.assertEqual(w.requests_now(0.6), [],
                         "an MDP worker still working on an expired request got another")
        w.final(first.client, '"late"')
        second = w.next_request()
        self.assertIsNotNone(second, "the late FINAL did not free the MDP worker\n"
                             + self.broker.tail())
        self.assertEqual(second.body, [b'"2"'])
        self.assertEqual(w.disconnects(), [], "a late FINAL got the worker disconnected")
        w.final(second.client, '"two"')
        _, final = c.final("t2")
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual((final.status, final.data), (b"0", b'"two"'))
        self.assertEqual([m for m in c.received if len(m) > 5 and m[5] == b'"late"'], [],
                         "the late FINAL of an expired request reached the client")

    def test_disconnect_before_ready_is_answered_with_nothing(self):
        w = self.mdp_worker()
        mark = self.broker.mark()
        w.disconnect()
        self.mesh.settle(secs(0.8))
        self.assertEqual(w.received, [], "DISCONNECT before READY is allowed (RFC 18)")
        self.assertEqual(self.broker.count(BAD, mark), 0,
                         "DISCONNECT before READY logged as bad_message")

    def test_unexpected_commands_get_disconnect(self):
        cases = {
            "PARTIAL before READY": lambda w: w.partial(b"nobody", "x"),
            "FINAL before READY": lambda w: w.final(b"nobody", "x"),
            "HEARTBEAT before READY": lambda w: w.heartbeat(),
        }
        for what, act in cases.items():
            w = self.mdp_worker(auto_heartbeat=False)
            act(w)
            self.assertIsNotNone(w.wait_disconnect(), "%s: no DISCONNECT\n%s"
                                 % (what, self.broker.tail()))
            w.close()
        for what, second in (("READY again, same service", "twice"),
                             ("READY again, another service", "other")):
            w = self.mdp_worker("twice")
            w.ready(second)
            self.assertIsNotNone(w.wait_disconnect(), "%s: no DISCONNECT (RFC 18: the worker "
                                 "MUST NOT send a further READY)\n%s" % (what, self.broker.tail()))
            w.close()
        w = self.mdp_worker("idle")
        w.final(b"nobody", "x")
        self.assertIsNotNone(w.wait_disconnect(), "FINAL with no request: no DISCONNECT")
        # After DISCONNECT: nothing more, not even heartbeats
        seen = len(w.received)
        self.mesh.settle(secs(self.HEARTBEAT / 1000.0 * 3))
        self.assertEqual(w.received[seen:], [], "messages after DISCONNECT")
        self.assert_serves()

    def test_final_for_another_client_gets_disconnect_and_fails_the_request(self):
        w = self.mdp_worker("strict")
        c = self.client()
        other = self.client()
        c.request("strict", "r1", '"x"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        w.final(other.identity, '"stolen"')
        self.assertIsNotNone(w.wait_disconnect(), "FINAL for a client whose request the worker "
                             "does not hold: no DISCONNECT\n" + self.broker.tail())
        _, final = c.final("r1", 3)
        self.assert_worker_lost(final, "request of a worker disconnected for a bad FINAL")
        self.mesh.settle(secs(0.3))
        self.assertEqual(other.pending(lambda m: m[:2] == [b"C", b"3"]), [],
                         "the reply reached a client that asked nothing")

    # ---- MMI -------------------------------------------------------------

    def test_worker_may_not_register_mmi(self):
        for service in ("mmi.service", "mmi.custom"):
            mark = self.broker.mark()
            w = self.mdp_worker(service, wait=False)
            self.assertIsNotNone(w.wait_disconnect(), "READY %s: no DISCONNECT\n%s"
                                 % (service, self.broker.tail()))
            self.assertIsNone(self.broker.wait_for_log(r"event=worker_ready service=%s\b"
                                                       % re.escape(service), 0.2, mark))
            seen = len(w.received)
            self.mesh.settle(secs(self.HEARTBEAT / 1000.0 * 2))
            self.assertEqual(w.received[seen:], [], "messages after DISCONNECT")
            w.close()
        # The broker still answers mmi.service itself
        c = self.mdp_client()
        _, final = self.mdp_call(c, "mmi.service", "mmi.service")
        self.assertEqual(final, (b"mmi.service", [b"404"]))

    def test_mmi_for_mdp_clients(self):
        w = self.mdp_worker("present")
        self.ready_worker("pig")
        c = self.mdp_client()
        for name, code in (("present", b"200"), ("pig", b"200"), ("absent", b"404")):
            partials, final = self.mdp_call(c, "mmi.service", name)
            self.assertEqual(partials, [], "MMI answers with one FINAL")
            self.assertEqual(final, (b"mmi.service", [code]), "mmi.service %s" % name)
        for name in ("mmi.nothing", "mmi.", "mmi.service.x"):
            _, final = self.mdp_call(c, name, "x")
            self.assertEqual(final, (name.encode(), [b"501"]), name)
        # A worker that left is no longer found
        mark = self.broker.mark()
        w.disconnect()
        self.assertIsNotNone(self.wait_log(r"event=worker_gone worker=%s\b"
                                           % re.escape(w.identity.decode()), 3, mark))
        _, final = self.mdp_call(c, "mmi.service", "present")
        self.assertEqual(final, (b"mmi.service", [b"404"]))
        # The MMI request never reached a worker
        self.assertEqual(w.requests_now(0), [])

    def test_mmi_for_pigato_clients(self):
        self.mdp_worker("present")
        c = self.client()
        cases = [("m1", "mmi.service", "present", b"200"),
                 ("m2", "mmi.service", '"present"', b"200"),     # JSON string (Node pigato)
                 ("m3", "mmi.service", "absent", b"404"),
                 ("m4", "mmi.service", '"absent"', b"404"),
                 ("m5", "mmi.other", '"x"', b"501")]
        for rid, service, data, code in cases:
            c.request(service, rid, data, LONG)
            partials, final = c.final(rid, 3)
            self.assertIsNotNone(final, "%s %s: no reply\n%s" % (service, data, self.broker.tail()))
            self.assertEqual(partials, [])
            self.assertEqual(final.frames[:6], [b"C", b"3", b"", b(rid), b"0", code],
                             "%s %s" % (service, data))

    # ---- bad input -------------------------------------------------------

    def test_malformed_mdp_messages_are_dropped_and_logged(self):
        victim = self.mdp_worker("victim")
        cases = {
            "client header only": [MDPC],
            "empty command": [MDPC, b"", b"victim", b"x"],
            "two-byte command": [MDPC, b"\x01\x01", b"victim", b"x"],
            "command 0x00": [MDPC, b"\x00", b"victim", b"x"],
            "command 0x07": [MDPC, b"\x07", b"victim", b"x"],
            "ASCII command": [MDPC, b"1", b"victim", b"x"],
            "client sends PARTIAL": [MDPC, C_PARTIAL, b"victim", b"x"],
            "client sends FINAL": [MDPC, C_FINAL, b"victim", b"x"],
            "REQUEST without service": [MDPC, C_REQUEST],
            "empty service": [MDPC, C_REQUEST, b"", b"x"],
            "service of 256 bytes": [MDPC, C_REQUEST, b"s" * 256, b"x"],
            "service with NUL": [MDPC, C_REQUEST, b"vic\x00tim", b"x"],
            "service with newline": [MDPC, C_REQUEST, b"vic\ntim", b"x"],
            "MDP/0.1 header": [b"MDPC01", C_REQUEST, b"victim", b"x"],
            "worker header only": [MDPW],
            "READY without service": [MDPW, W_READY],
            "READY with extra frame": [MDPW, W_READY, b"victim", b"extra"],
            "READY service of 256 bytes": [MDPW, W_READY, b"s" * 256],
            "worker sends REQUEST": [MDPW, W_REQUEST, b"client", b"", b"x"],
            "HEARTBEAT with extra frame": [MDPW, W_HEARTBEAT, b""],
            "DISCONNECT with extra frame": [MDPW, W_DISCONNECT, b"bye"],
            "FINAL without delimiter": [MDPW, W_FINAL, b"client", b"body"],
            "FINAL with filled delimiter": [MDPW, W_FINAL, b"client", b"x", b"body"],
            "FINAL with empty client": [MDPW, W_FINAL, b"", b"", b"body"],
            "FINAL client of 256 bytes": [MDPW, W_FINAL, b"c" * 256, b"", b"body"],
            "PARTIAL client only": [MDPW, W_PARTIAL, b"client"],
            "worker command 0x07": [MDPW, b"\x07"],
            "body of 300 frames": [MDPC, C_REQUEST, b"victim"] + [b"x"] * 300,
        }
        for i, (what, frames) in enumerate(cases.items()):
            peer = Peer(self.mesh, "X", self.broker.endpoint, self.broker.server_key,
                        identity="bad-mdp-%d" % i, auto_heartbeat=False)
            if i and i % 10 == 0:
                self.mesh.settle(1.1)                   # bad_message log rate limit
            mark = self.broker.mark()
            peer.sock.send_multipart(frames)
            self.assertIsNotNone(self.wait_log(BAD + r".*peer=bad-mdp-%d\b" % i, 3, mark),
                                 "%s: no event=bad_message\n%s" % (what, self.broker.tail()))
            peer.close()
        self.assertEqual(victim.requests_now(0.3), [],
                         "a malformed message was routed to the worker")
        self.assertTrue(self.broker.alive())
        # Still serving both protocols
        self.assert_serves()
        c = self.mdp_client()
        c.request("victim", "fine")
        req = victim.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        victim.final(req.client, "still here")
        self.assertEqual(c.reply(), (C_FINAL, b"victim", [b"still here"]))


class MdpInsecure(MdpCases, MeshTestCase):
    CURVE = False


class MdpCurve(MdpCases, MeshTestCase):
    CURVE = True


# --------------------------------------------------------------------------
# ACL

class MdpAcl(MdpMixin, MeshTestCase):
    """MDP peers under an ACL: call/serve decide as for pigato peers, but a
    denied MDP request gets no reply at all (RFC 18 has none)."""
    CURVE = True
    START_BROKER = False

    def setUp(self):
        MeshTestCase.setUp(self)
        keydir = os.path.join(self.tmp, "ids")
        os.mkdir(keydir)
        self.keys = {n: KeyPair(keydir, n) for n in ("alice", "wk", "mdpw", "carol")}
        acl = os.path.join(self.tmp, "mesh.acl")
        write_acl(acl, "\n".join([
            "identity alice %s" % self.keys["alice"].public,
            "identity wk    %s" % self.keys["wk"].public,
            "identity mdpw  %s" % self.keys["mdpw"].public,
            "identity carol %s" % self.keys["carol"].public,
            "allow wk    serve *",
            "allow mdpw  serve open.*",
            "allow alice call  open.*",
            "allow carol call  open.* mmi.*",
            ""]))
        self.broker = self.start_broker(acl=acl)

    def denied_re(self, name, verb, service):
        return (r"event=access_denied\b.*identity=%s verb=%s service=%s reason=not_allowed\b"
                % (re.escape(name), verb, re.escape(service)))

    def test_mdp_client_without_call_gets_nothing(self):
        open_w = self.mdp_worker("open.a", keypair=self.keys["wk"])
        shut_w = self.mdp_worker("shut", keypair=self.keys["wk"])
        alice = self.mdp_client(keypair=self.keys["alice"])
        # Allowed: routed (the positive control)
        alice.request("open.a", "hello")
        req = open_w.next_request()
        self.assertIsNotNone(req, "allowed MDP request not routed\n" + self.broker.tail())
        open_w.final(req.client, "hi")
        self.assertEqual(alice.reply(), (C_FINAL, b"open.a", [b"hi"]))
        # Denied: logged, nothing routed, nothing answered
        mark = self.broker.mark()
        alice.request("shut", "let me in")
        self.assertIsNotNone(self.wait_log(self.denied_re("alice", "call", "shut"), 3, mark),
                             "denied MDP request not logged\n" + self.broker.tail())
        self.assertEqual(shut_w.requests_now(0.6), [], "denied MDP request reached the worker")
        self.assertEqual(alice.inbox, [], "RFC 18 has no error reply: a denied MDP client "
                         "gets nothing")
        # MMI names need call too: alice has no call on mmi.*, carol has
        mark = self.broker.mark()
        alice.request("mmi.service", "open.a")
        self.assertIsNotNone(self.wait_log(self.denied_re("alice", "call", "mmi.service"), 3,
                                           mark), self.broker.tail())
        self.mesh.settle(secs(0.3))
        self.assertEqual(alice.inbox, [])
        carol = self.mdp_client(keypair=self.keys["carol"])
        _, final = self.mdp_call(carol, "mmi.service", "open.a")
        self.assertEqual(final, (b"mmi.service", [b"200"]))

    def test_mdp_worker_without_serve_gets_disconnect(self):
        ok = self.mdp_worker("open.b", keypair=self.keys["mdpw"])
        for name, service in (("mdpw", "shut"), ("alice", "open.b")):
            mark = self.broker.mark()
            w = self.mdp_worker(service, keypair=self.keys[name], wait=False)
            self.assertIsNotNone(w.wait_disconnect(), "READY %s by %s without serve: no "
                                 "DISCONNECT\n%s" % (service, name, self.broker.tail()))
            self.assertIsNotNone(self.wait_log(self.denied_re(name, "serve", service), 2, mark),
                                 self.broker.tail())
            w.close()
        # The allowed worker serves; the refused one got nothing
        c = self.client(keypair=self.keys["carol"])
        c.request("open.b", "r1", '"x"', LONG)
        req = ok.next_request()
        self.assertIsNotNone(req, self.broker.tail())
        ok.final(req.client, '"y"')
        _, final = c.final("r1")
        self.assertIsNotNone(final, self.broker.tail())
        self.assertEqual((final.status, final.data), (b"0", b'"y"'))


if __name__ == "__main__":
    harness.main()
