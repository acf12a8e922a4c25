#!/usr/bin/python3
"""Broker behaviour over real sockets (docs/protocol.md), with raw pyzmq
DEALER peers speaking the pigato 0.0.46 framing by hand. Every test runs
twice: against an --insecure broker and a CURVE (--allow-any) broker."""

import json
import time
import unittest

import harness
from harness import MeshTestCase, secs

# Far longer than any "at once" window below: a reply that comes inside the
# window cannot be the client's own timeout.
LONG = '{"timeout":30000}'


class BrokerBehaviour:

    # -- the basic exchange ------------------------------------------------

    def test_request_reaches_worker_and_final_reply_returns(self):
        w = self.ready_worker("echo")
        c = self.client()
        c.request("echo", "rid-1", '"hello"', '{"timeout":5000}')
        req = w.next_request()
        self.assertIsNotNone(req, "worker got no request")
        # W,2, client-id, service, "", rid, data, opts
        self.assertEqual(req.frames[:2], [b"W", b"2"])
        self.assertTrue(len(req.client) > 0, "empty client id frame")
        self.assertEqual(req.service, b"echo")
        self.assertEqual(req.empty, b"")
        self.assertEqual(req.rid, b"rid-1")
        self.assertEqual(req.data, b'"hello"')
        self.assertIsNotNone(req.opts, "opts frame missing in W,2")
        w.reply(req, '"world"')
        partials, final = c.final("rid-1")
        self.assertEqual(partials, [])
        self.assertIsNotNone(final, "client got no final reply")
        # C,3, "", rid, status, data, opts
        self.assertEqual(final.frames[:4], [b"C", b"3", b"", b"rid-1"])
        self.assertEqual(final.status, b"0")
        self.assertEqual(final.data, b'"world"')

    def test_partial_replies_arrive_in_order_then_final(self):
        w = self.ready_worker("stream")
        c = self.client()
        c.request("stream", "s1", '"go"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req)
        for i in range(20):
            w.reply(req, '"part %d"' % i, partial=True)
        w.reply(req, '"done"')
        partials, final = c.final("s1", 5)
        self.assertEqual([p.data for p in partials],
                         [b'"part %d"' % i for i in range(20)])
        self.assertTrue(all(p.frames[1] == b"6" and p.status == b"0" for p in partials))
        self.assertIsNotNone(final)
        self.assertEqual((final.status, final.data), (b"0", b'"done"'))

    def test_error_reply_is_forwarded_with_status_minus_one(self):
        w = self.ready_worker("err")
        c = self.client()
        c.request("err", "e1", '"x"', LONG)
        req = w.next_request()
        w.reply(req, '"it broke"', status=-1)
        _, final = c.final("e1")
        self.assertIsNotNone(final)
        self.assertEqual((final.status, final.data), (b"-1", b'"it broke"'))

    # -- queues ------------------------------------------------------------

    def test_requests_wait_for_a_worker_then_dispatch_in_fifo_order(self):
        c = self.client()
        rids = ["q%d" % i for i in range(5)]
        for i, rid in enumerate(rids):
            c.request("late", rid, '"%d"' % i, LONG)
        self.mesh.settle(secs(0.5))
        self.assertEqual(c.pending(lambda m: m[:2] in ([b"C", b"3"], [b"C", b"6"])), [],
                         "requests for a service with no worker must wait, not fail")
        w = self.ready_worker("late")
        got = []
        for _ in rids:
            req = w.next_request()
            self.assertIsNotNone(req, "queued request not dispatched; got %r" % got)
            got.append(req)
        self.assertEqual([r.rid.decode() for r in got], rids, "FIFO order broken")
        for req in got:
            w.reply(req, req.data)
        for i, rid in enumerate(rids):
            _, final = c.final(rid)
            self.assertIsNotNone(final, rid)
            self.assertEqual(final.data, b'"%d"' % i)

    def test_request_that_expires_in_the_queue_is_never_dispatched(self):
        c = self.client()
        c.request("nobody", "gone", '"x"', '{"timeout":300}')
        c.request("nobody", "kept", '"y"', LONG)
        self.mesh.settle(secs(1.2))
        # If the broker tells the client about the expiry, it is an error.
        for r in c.pending(lambda m: len(m) > 3 and m[3] == b"gone"):
            self.assertEqual((r[1], r[4]), (b"3", b"-1"), "bad expiry reply %r" % r)
        w = self.ready_worker("nobody")
        req = w.next_request()
        self.assertIsNotNone(req)
        self.assertEqual(req.rid, b"kept", "expired request was dispatched")
        self.assertEqual(w.requests_now(0.3), [], "expired request was dispatched")
        w.reply(req, '"ok"')
        _, final = c.final("kept")
        self.assertEqual(final.data, b'"ok"')

    # -- concurrency and dispatch ---------------------------------------------

    def test_worker_concurrency_is_never_exceeded(self):
        w = self.ready_worker("conc", concurrency=2)
        # Let the concurrency heartbeat land before any request exists.
        self.assertIsNotNone(w.recv(lambda m: m[:2] == [b"W", b"4"], 3, skip_noise=False),
                             "broker did not answer the worker heartbeat")
        c = self.client()
        rids = ["c%d" % i for i in range(6)]
        for rid in rids:
            c.request("conc", rid, '"%s"' % rid, LONG)
        held = w.requests_now(0.6)
        self.assertEqual(len(held), 2, "concurrency 2 but %d in flight" % len(held))
        order = [r.rid for r in held]
        while held:
            done = held.pop(0)
            w.reply(done, done.data)
            more = w.requests_now(0.3)
            self.assertLessEqual(len(held) + len(more), 2,
                                 "more than 2 requests in flight")
            held += more
            order += [r.rid for r in more]
        self.assertEqual([r.decode() for r in order], rids, "not dispatched in FIFO order")
        for rid in rids:
            _, final = c.final(rid)
            self.assertIsNotNone(final, rid)
            self.assertEqual(final.data, ('"%s"' % rid).encode())

    def test_load_dispatch_prefers_least_loaded_worker(self):
        a = self.ready_worker("load", identity="worker-A")
        c = self.client()
        for i in range(3):
            c.request("load", "a%d" % i, '"x"', LONG)
        held_a = [a.next_request() for _ in range(3)]
        self.assertNotIn(None, held_a, "worker A did not get its 3 requests")
        b_ = self.ready_worker("load", identity="worker-B")
        self.mesh.settle(secs(0.2))
        for i in range(3):
            c.request("load", "b%d" % i, '"x"', LONG)
        held_b = b_.requests_now(0.8)
        extra_a = a.requests_now(0.1)
        self.assertEqual(([r.rid for r in held_b], extra_a),
                         ([b"b0", b"b1", b"b2"], []),
                         "with A holding 3 and B none, the next 3 must all go to B")
        for r in held_a:
            a.reply(r, '"A"')
        for r in held_b:
            b_.reply(r, '"B"')
        for i in range(3):
            self.assertEqual(c.final("b%d" % i)[1].data, b'"B"')

    # -- reject --------------------------------------------------------------

    def test_reject_redispatches_to_a_different_worker(self):
        a = self.ready_worker("rej", identity="rej-A")
        b_ = self.ready_worker("rej", identity="rej-B")
        c = self.client()
        c.request("rej", "r1", '"x"', LONG)
        first, req = self._first_request([a, b_])
        self.assertIsNotNone(req, "nobody got the request")
        other = b_ if first is a else a
        first.reject(req, '"not me"')
        req2 = other.next_request()
        self.assertIsNotNone(req2, "rejected request not re-dispatched to the other worker")
        self.assertEqual((req2.rid, req2.data), (b"r1", b'"x"'))
        self.assertEqual(first.requests_now(0.2), [],
                         "rejected request sent back to the worker that rejected it")
        other.reply(req2, '"served by other"')
        _, final = c.final("r1")
        self.assertIsNotNone(final)
        self.assertEqual((final.status, final.data), (b"0", b'"served by other"'))

    def test_every_worker_rejected_waits_for_a_new_worker(self):
        # pigato: a request every worker rejected goes back to the queue
        # and waits for another worker, until its timeout
        a = self.ready_worker("rej2")
        b_ = self.ready_worker("rej2")
        c = self.client()
        c.request("rej2", "r2", '"x"', LONG)
        first, req = self._first_request([a, b_])
        self.assertIsNotNone(req)
        first.reject(req, '"no"')
        other = b_ if first is a else a
        req2 = other.next_request()
        self.assertIsNotNone(req2, "not re-dispatched after first reject")
        other.reject(req2, '"no"')
        self.assertIsNone(c.reply("r2", 0.5), "all workers rejected: the request must wait")
        self.assertEqual(a.requests_now(0.2) + b_.requests_now(0), [],
                         "request re-dispatched to a worker that rejected it")
        late = self.ready_worker("rej2")
        req3 = late.next_request()
        self.assertIsNotNone(req3, "a worker that joined later did not get the request")
        self.assertEqual(req3.rid, b"r2")
        late.reply(req3, '"late"')
        _, final = c.final("r2", 3)
        self.assertEqual((final.status, final.data), (b"0", b'"late"'))

    def test_single_worker_reject_then_second_worker_serves(self):
        # pigato's own test "Worker reject": the only worker rejects, then
        # a second worker starts, and it gets the request
        w = self.ready_worker("rej1")
        c = self.client()
        c.request("rej1", "r3", '"x"', '{"timeout":3000}')
        req = w.next_request()
        self.assertIsNotNone(req)
        # Node pigato sends a reject with an `undefined` opts frame.
        w.reject(req, '"busy"', opts="undefined")
        self.assertEqual(w.requests_now(0.3), [], "hot loop: re-sent to the rejecting worker")
        self.assertIsNone(c.reply("r3", 0), "the sole worker rejected: no error, it waits")
        self.assertFalse(w.got_disconnect(), "worker disconnected for rejecting")
        second = self.ready_worker("rej1")
        req2 = second.next_request()
        self.assertIsNotNone(req2, "the second worker did not get the rejected request")
        second.reply(req2, '"second"')
        _, final = c.final("r3", 3)
        self.assertEqual((final.status, final.data), (b"0", b'"second"'))
        # A request nobody else takes ends with its timeout: the broker
        # frees it and sends nothing (the client keeps its own timer)
        mark = self.broker.mark()
        c.request("rej1", "r4", '"x"', '{"timeout":600}')
        for worker in (w, second):
            got = worker.next_request(2)
            if got is None:
                continue
            worker.reject(got, '"no"')
        self.assertIsNotNone(self.wait_log(r"event=request_expired service=rej1 rid=r4", 5, mark),
                             self.broker.tail())
        self.assertIsNone(c.reply("r4", 0.2))

    def _first_request(self, workers, timeout=3.0):
        deadline = time.monotonic() + secs(timeout)
        while time.monotonic() < deadline:
            for w in workers:
                r = w.next_request(0)
                if r is not None:
                    return w, r
            self.mesh.pump(0.05)
        return None, None

    # -- request heartbeats -------------------------------------------------

    def test_request_heartbeat_is_forwarded_to_the_worker(self):
        w = self.ready_worker("hb")
        c = self.client()
        c.request("hb", "h1", '"x"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req)
        for word in ("request", "req"):
            c.request_heartbeat("h1", word)
            m = w.recv(lambda m: m[:2] == [b"W", b"4"] and len(m) == 5, 3)
            self.assertIsNotNone(m, "request heartbeat (%s) not forwarded to the worker" % word)
            self.assertEqual(m, [b"W", b"4", req.client, b"", b"h1"])
        # A heartbeat for a rid nobody holds goes nowhere and breaks nothing.
        c.request_heartbeat("no-such-rid")
        self.assertEqual(w.recv(lambda m: len(m) == 5 and m[4] == b"no-such-rid", 0.3), None)
        w.reply(req, '"ok"')
        self.assertEqual(c.final("h1")[1].data, b'"ok"')

    # -- worker death --------------------------------------------------------

    def _death_setup(self, service):
        a = self.ready_worker(service, identity="dying-" + service)
        c = self.client()
        c.request(service, "retry-me", '"r"', '{"timeout":30000,"retry":3}')
        c.request(service, "plain", '"p"', LONG)
        got = [a.next_request(), a.next_request()]
        self.assertNotIn(None, got, "first worker did not get both requests")
        self.first_try = [r for r in got if r.rid == b"retry-me"][0]
        self.assertEqual(self.first_try.opts, b'{"timeout":30000,"retry":3}',
                         "a first attempt goes with the client's opts, as sent")
        b_ = self.ready_worker(service, identity="survivor-" + service)
        return a, b_, c

    def _death_outcome(self, b_, c, window):
        _, final = c.final("plain", window)
        self.assertIsNotNone(final, "request without retry must fail at once when its worker dies")
        self.assertEqual(final.status, b"-1")
        req = b_.next_request(window)
        self.assertIsNotNone(req, "request with retry not re-dispatched to the other worker")
        self.assertEqual((req.rid, req.data), (b"retry-me", b'"r"'))
        # What a worker needs to deduplicate: the same (alias, rid), and
        # the attempt number in the opts (docs/protocol.md)
        self.assertEqual(req.client, self.first_try.client)
        self.assertEqual(json.loads(req.opts), {"timeout": 30000, "retry": 3, "attempt": 2})
        b_.reply(req, '"second try"')
        _, final = c.final("retry-me")
        self.assertIsNotNone(final)
        self.assertEqual((final.status, final.data), (b"0", b'"second try"'))

    def test_worker_disconnect_retries_or_fails_its_requests(self):
        a, b_, c = self._death_setup("die1")
        a.disconnect()
        self._death_outcome(b_, c, 3)

    def test_worker_that_stops_heartbeating_is_declared_dead(self):
        a, b_, c = self._death_setup("die2")
        a.auto_heartbeat = False
        # heartbeat 500 ms x liveness 3 = 1.5 s; allow plenty.
        self._death_outcome(b_, c, 6)

    def test_retries_are_bounded(self):
        # retry 2: the first dispatch plus at most 2 re-dispatches, then an
        # error at once (not the client's 30 s timeout).
        workers = [self.ready_worker("flaky", identity="flaky-%d" % i) for i in range(5)]
        c = self.client()
        c.request("flaky", "doomed", '"x"', '{"timeout":30000,"retry":2}')
        dispatches = 0
        final = None
        deadline = time.monotonic() + secs(10)
        while final is None and time.monotonic() < deadline:
            for w in workers:
                req = w.next_request(0)
                if req is not None:
                    dispatches += 1
                    w.disconnect()
                    w.close()
            self.mesh.pump(0.05)
            final = c.reply("doomed", 0, final=True)
        self.assertIsNotNone(final, "request never failed after %d worker deaths" % dispatches)
        self.assertEqual(final.status, b"-1")
        self.assertEqual(dispatches, 3, "retry 2 means 3 dispatches in all")

    # -- timeouts ----------------------------------------------------------

    def test_expired_request_frees_the_slot_and_late_reply_is_dropped(self):
        w = self.ready_worker("slow", concurrency=1)
        self.assertIsNotNone(w.recv(lambda m: m[:2] == [b"W", b"4"], 3, skip_noise=False))
        c = self.client()
        c.request("slow", "expires", '"1"', '{"timeout":400}')
        first = w.next_request()
        self.assertIsNotNone(first)
        c.request("slow", "next", '"2"', LONG)
        second = w.next_request(5)
        self.assertIsNotNone(second, "expired request still holds the worker's only slot")
        self.assertEqual(second.rid, b"next")
        w.reply(first, '"too late"')                 # late reply: dropped quietly
        w.reply(second, '"on time"')
        _, final = c.final("next")
        self.assertIsNotNone(final, "worker punished for a late reply?")
        self.assertEqual(final.data, b'"on time"')
        self.mesh.settle(secs(0.3))
        late = [m for m in c.received if len(m) > 5 and m[3] == b"expires" and m[4] == b"0"]
        self.assertEqual(late, [], "late reply reached the client")
        self.assertFalse(w.got_disconnect(), "late reply got the worker disconnected")
        # Still registered: it gets the next request.
        c.request("slow", "after", '"3"', LONG)
        req = w.next_request()
        self.assertIsNotNone(req, "worker no longer served after a late reply")
        w.reply(req, '"fine"')
        self.assertEqual(c.final("after")[1].data, b'"fine"')

    # -- rid scope -----------------------------------------------------------

    def test_two_clients_may_use_the_same_rid(self):
        w = self.ready_worker("dup")
        c1 = self.client(identity="client-one")
        c2 = self.client(identity="client-two")
        c1.request("dup", "same", '"from one"', LONG)
        c2.request("dup", "same", '"from two"', LONG)
        reqs = [w.next_request(), w.next_request()]
        self.assertNotIn(None, reqs, "second request with the same rid was lost")
        self.assertNotEqual(reqs[0].client, reqs[1].client)
        for r in reversed(reqs):
            w.reply(r, r.data)
        self.assertEqual(c1.final("same")[1].data, b'"from one"')
        self.assertEqual(c2.final("same")[1].data, b'"from two"')
        self.mesh.settle(secs(0.2))
        self.assertEqual(c1.pending(), [])
        self.assertEqual(c2.pending(), [])

    # -- what a worker sees of its clients -------------------------------------

    def test_worker_sees_an_alias_never_the_clients_routing_id(self):
        # The client field is an opaque alias, 32 lowercase hex characters,
        # the same for every request of one client connection, another for
        # another connection with the same routing id; replies that echo it
        # reach the client.
        w = self.ready_worker("alias")
        c = self.client(identity="client-routing-id")
        c.request("alias", "a1", '"one"', LONG)
        c.request("alias", "a2", '"two"', LONG)
        reqs = [w.next_request(), w.next_request()]
        self.assertNotIn(None, reqs)
        alias = reqs[0].client
        self.assertRegex(alias, rb"^[0-9a-f]{32}$")
        self.assertNotIn(b"client-routing-id", b"".join(reqs[0].frames))
        self.assertEqual(reqs[1].client, alias, "one connection, one alias")
        c.request_heartbeat("a1")
        m = w.recv(lambda m: m[:2] == [b"W", b"4"] and len(m) == 5, 3)
        self.assertEqual(m, [b"W", b"4", alias, b"", b"a1"])
        for r in reqs:
            w.reply(r, r.data)
        self.assertEqual(c.final("a1")[1].data, b'"one"')
        self.assertEqual(c.final("a2")[1].data, b'"two"')
        # The same routing id on a new connection is another alias
        c.close()
        c2 = None
        for _ in range(20):     # libzmq frees the routing id asynchronously
            c2 = self.client(identity="client-routing-id")
            c2.request("alias", "a3", '"three"', LONG)
            req = w.next_request(1.0)
            if req is not None:
                break
            c2.close()
        self.assertIsNotNone(req, "the routing id never became free again")
        self.assertRegex(req.client, rb"^[0-9a-f]{32}$")
        self.assertNotEqual(req.client, alias)
        w.reply(req, req.data)
        self.assertEqual(c2.final("a3")[1].data, b'"three"')

    # -- broker heartbeats -----------------------------------------------------

    def test_broker_answers_heartbeats_and_ready(self):
        w = self.worker()
        ack = w.ready("beat")
        self.assertEqual(ack, [b"W", b"1"], "READY not answered with W,1")
        w.heartbeat()
        self.assertIsNotNone(
            w.recv(lambda m: m == [b"W", b"4"], 3, skip_noise=False),
            "worker heartbeat not answered with W,4")
        c = self.client(auto_heartbeat=False)
        c.send("C", "4")
        self.assertIsNotNone(
            c.recv(lambda m: m == [b"C", b"4"], 3, skip_noise=False),
            "client heartbeat not answered with C,4")


class InsecureBrokerTest(BrokerBehaviour, MeshTestCase):
    CURVE = False


class CurveBrokerTest(BrokerBehaviour, MeshTestCase):
    CURVE = True


class TunedBrokerTest(BrokerBehaviour, MeshTestCase):
    """Every behaviour again with the tuning options on: busy polling, two
    I/O threads, no reply cache."""
    CURVE = True
    BROKER_EXTRA = ("--busy-poll", "200", "--io-threads", "2", "--cache-max-bytes", "0")

    def test_bad_tuning_values_are_usage_errors(self):
        import subprocess
        for option, value in (("--busy-poll", "-1"), ("--busy-poll", "100001"),
                              ("--busy-poll", "x"), ("--io-threads", "0"),
                              ("--io-threads", "65"), ("--cache-max-bytes", "-5"),
                              ("--cache-max-bytes", "lots")):
            r = subprocess.run([harness.BROKER_BIN, "--insecure", option, value],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 64, "%s %s: %r" % (option, value, r.stderr))
            self.assertIn(option, r.stderr)


if __name__ == "__main__":
    harness.main()
