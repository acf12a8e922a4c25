#!/usr/bin/python3
"""libpigato keeps its own promises whatever its broker sends (issue 18),
asserted from outside against a misbehaving broker (rogue_broker.py, a
CURVE server holding the right key) and real pigato-broker processes:

* a worker never has more requests in flight in its handler than the
  concurrency it announced, with one broker sending 200 at once or two
  real brokers each giving their share; the excess goes back as rejects
  (to another worker), counted and logged;
* `pigato serve -- CMD` takes no work beyond its concurrency, so 100,000
  requests thrown at it leave its memory where it was;
* under a zloop (`pigato serve`, a client attached with
  pigato_client_attach) a broker that goes away is noticed at once, not
  after heartbeat x liveness;
* an error string that starts with a NUL byte reaches the application
  (and `pigato request`'s output) whole.

The peers are the pigato CLI and bounds_peer.c (a holder worker that
counts what its handler holds, and a zloop client)."""

import os
import re
import subprocess
import time

import harness
from harness import BUILD, CLI_BIN, HERE, MeshTestCase, secs
from rogue_broker import RogueBroker

BOUNDS_PEER = os.path.join(BUILD, "tests", "bounds_peer")
HEARTBEAT_DEFAULT = 2500      # PIGATO_HEARTBEAT_MS: loss by silence takes 7.5 s+
OVER_LIMIT = b'"E_WORKER_REFUSED over_concurrency"'


def vm_hwm(pid):
    """Peak resident memory of a process (VmHWM), bytes."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024


def last_stat(proc):
    """The holder's last stat line as a dict of ints, or None."""
    stats = [l for l in proc.text("stdout").splitlines() if l.startswith("stat ")]
    if not stats:
        return None
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", stats[-1])}


class BoundsTestCase(MeshTestCase):
    START_BROKER = False

    @classmethod
    def setUpClass(cls):
        harness.build_c_program(os.path.join(HERE, "bounds_peer.c"), BOUNDS_PEER)

    def rogue(self, **kw):
        r = RogueBroker(self.tmp, **kw)
        self.addCleanup(r.stop)
        return r

    def holder(self, brokers, concurrency, hold_ms, server_key=None, name="holder"):
        args = [BOUNDS_PEER, "holder", "--concurrency", concurrency, "--hold-ms", hold_ms]
        for endpoint in brokers:
            args += ["--broker", endpoint]
        args += ["--server-key", server_key] if server_key else ["--insecure"]
        p = self.start(args, name=name)
        if p.wait_for_line(r"^ready$", 10, stream="stdout") is None:
            self.fail("holder did not start\n" + p.tail())
        return p

    def wait_stat(self, proc, predicate, timeout=10):
        """Waits until the holder's last stat line satisfies predicate."""
        deadline = time.monotonic() + secs(timeout)
        while time.monotonic() < deadline:
            stat = last_stat(proc)
            if stat is not None and predicate(stat):
                return stat
            proc.wait_for_line(r"^stat ", 0.1, proc.mark("stdout"), "stdout")
        self.fail("holder never reached the expected state; last: %r\n%s"
                  % (last_stat(proc), proc.tail()))


class WorkerConcurrencyTest(BoundsTestCase):

    def test_a_broker_sending_200_gets_all_beyond_5_rejected(self):
        rogue = self.rogue()
        holder = self.holder([rogue.endpoint], 5, 300, rogue.key.public)
        worker = rogue.wait_worker("held")
        self.assertIsNotNone(worker, "the holder never sent READY\n" + holder.tail())
        self.assertEqual(rogue.wait_for(lambda r: r.workers[worker].concurrency), 5)

        rogue.send_requests(worker, 200)
        done = rogue.wait_for(lambda r: r.count("W", "7") + r.count("W", "3") >= 200, 30)
        self.assertTrue(done, "not every request was answered or rejected: %d + %d\n%s"
                        % (len(rogue.rejects()), len(rogue.replies()), holder.tail()))
        rejects, replies = rogue.rejects(), rogue.replies()
        self.assertEqual(len(rejects) + len(replies), 200)
        # The first five were taken, everything after them went back
        self.assertEqual(sorted(r.rid for r in replies),
                         sorted(b"r%d" % i for i in range(5)))
        self.assertTrue(all(r.data == OVER_LIMIT for r in rejects), rejects[:3])
        stat = self.wait_stat(holder, lambda s: s["holding"] == 0)
        self.assertEqual(stat["max"], 5, "the handler held more than announced")
        self.assertEqual(stat["handled"], 5)
        self.assertEqual(stat["over"], 195)
        self.assertEqual(stat["in_flight"], 0)

        # Logged, rate-limited: at most a burst of lines, then a count
        self.assertIsNotNone(holder.wait_for_log(
            r"event=worker_over_concurrency_suppressed count=\d+", 6),
            "no summary of suppressed lines\n" + holder.tail())
        lines = holder.count(r"event=worker_over_concurrency ")
        self.assertGreater(lines, 0)
        self.assertLessEqual(lines, 40)
        self.assertIn("concurrency=5", holder.text())

        # Slots came back: the next five are taken again
        rogue.send_requests(worker, 5, rid_prefix="again")
        self.assertTrue(rogue.wait_for(lambda r: len(r.replies()) == 10, 10),
                        holder.tail())
        self.assertEqual(len(rogue.rejects()), 195)

    def test_two_brokers_never_give_a_worker_of_2_more_than_2(self):
        first = self.start_broker(name="first")
        second = self.start_broker(name="second")
        marks = [first.mark(), second.mark()]
        endpoints = [first.endpoint, second.endpoint]
        holder = self.holder(endpoints, 2, 200)
        # An unlimited worker takes what the holder sends back
        spare = self.holder(endpoints, -1, 200, name="spare")
        for broker, mark in zip((first, second), marks):
            deadline = time.monotonic() + secs(10)
            while (broker.count(r"event=worker_ready\b.*\bservice=held\b", mark) < 2
                   and time.monotonic() < deadline):
                broker.wait_for_log(r"event=worker_ready", 0.2, broker.mark())
            self.assertEqual(broker.count(r"event=worker_ready\b.*\bservice=held\b", mark),
                             2, broker.tail())

        clients = [self.client(first), self.client(second)]
        rids = []
        for index in range(30):
            for number, client in enumerate(clients):
                rid = "c%d-%d" % (number, index)
                client.request("held", rid, '"x"', '{"timeout":30000}')
                rids.append((client, rid))
        for client, rid in rids:
            _, final = client.final(rid, 30)
            self.assertIsNotNone(final, "no reply for %s\n%s\n%s"
                                 % (rid, holder.tail(), spare.tail()))
            self.assertEqual((final.status, final.data), (b"0", b'"done"'))
        stat = self.wait_stat(holder, lambda s: s["holding"] == 0)
        self.assertLessEqual(stat["max"], 2, "the worker held more than its 2")
        self.assertGreater(stat["handled"], 0)
        # Both brokers filled it at once: what each sent within the 2 it was
        # told waited in the worker for a slot (a reject would exclude the
        # worker from the request; with every worker busy it would starve)
        self.assertEqual(stat["max"], 2, holder.tail())
        self.assertEqual(stat["over"], 0, holder.tail())
        self.assertEqual(last_stat(spare)["handled"] + stat["handled"], 60)


class ServeBoundsTest(BoundsTestCase):

    def test_100000_requests_beyond_its_concurrency_cost_serve_nothing(self):
        rogue = self.rogue()
        # A sanitized build holds freed memory back (ASan's quarantine):
        # serve starts without one, so its RSS tells what it holds
        asan = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                      "quarantine_size_mb=0",
                                      "allocator_release_to_os_interval_ms=10"]))
        serve = self.start([CLI_BIN, "serve", "held"] + rogue.cli_args()
                           + ["--concurrency", "4", "--", "sleep", "120"], name="serve",
                           env={"ASAN_OPTIONS": asan})
        worker = rogue.wait_worker("held")
        self.assertIsNotNone(worker, "serve never sent READY\n" + serve.tail())
        self.assertEqual(rogue.wait_for(lambda r: r.workers[worker].concurrency), 4)
        before = vm_hwm(serve.pid)

        # In batches the rogue broker reads back as fast as they come:
        # what serve holds is measured, not its queue of rejects to send
        # (the library's send budget, another bound)
        total, batch = 100000, 2000
        # Four run at a time; one whose client stops heartbeating it (this
        # broker sends no request heartbeats) is stopped after the
        # liveness window and answered with an error, freeing its slot
        answered = lambda r: r.count("W", "7") + r.count("W", "3")
        for sent in range(batch, total + 1, batch):
            rogue.send_requests(worker, batch, data='"tiny"', rid_prefix="r%d-" % sent)
            done = rogue.wait_for(lambda r: answered(r) >= sent - 4, 30)
            self.assertTrue(done, "only %d answered of %d\n%s"
                            % (answered(rogue), sent, serve.tail()))
        grown = vm_hwm(serve.pid) - before
        rejects, replies = rogue.rejects(), rogue.replies()
        self.assertTrue(all(r.data == OVER_LIMIT for r in rejects))
        self.assertTrue(all(r.status == b"-1" for r in replies), replies[:3])
        # Taken: at most four at a time, so few in all in these seconds
        self.assertLess(total - len(rejects), 100, serve.tail())
        self.assertTrue(serve.alive(), serve.tail())
        # Before issue 18: +449 MB (a job of 4.4 KB per request, all queued)
        self.assertLess(grown, 16 * 1024 * 1024,
                        "serve grew by %d KiB" % (grown // 1024))


    def test_request_data_the_pipe_does_not_take_at_once_and_long_stderr(self):
        # serve writes what the child's stdin takes at once and keeps only
        # the rest; stderr grows on demand up to 4096 bytes
        broker = self.start_broker()
        mark = broker.mark()
        self.start([CLI_BIN, "serve", "cmd"] + broker.cli_args() + [
            "--", "sh", "-c",
            'if [ "$(head -c 3)" = err ]; then head -c 10000 /dev/zero | tr "\\0" e >&2;'
            ' exit 3; fi; cat'], name="serve")
        self.assertIsNotNone(broker.wait_for_log(r"event=worker_ready\b.*service=cmd", 10,
                                                 mark), broker.tail())
        data = os.urandom(3 * 1024 * 1024 + 17)
        path = os.path.join(self.tmp, "out.bin")
        with open(path, "wb") as f:
            run = subprocess.run(
                [CLI_BIN, "request", "cmd", "-", "--timeout", "20000"] + broker.cli_args(),
                input=b"out" + data, stdout=f, stderr=subprocess.PIPE,
                timeout=secs(30))
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        rc, out, err = self.cli("request", "cmd", "err", *broker.cli_args(), timeout=30)
        self.assertEqual(rc, 1, err)
        m = re.search(r"pigato: error from cmd: (e*)$", err, re.M)
        self.assertIsNotNone(m, err[-300:])
        self.assertEqual(len(m.group(1)), 4096)     # STDERR_MAX


class DisconnectUnderZloopTest(BoundsTestCase):
    """Heartbeats every 2.5 s (the default) with liveness 3: noticing the
    loss by silence would take 7.5 s or more. The rogue broker keeps
    heartbeating until it closes, so only the disconnect can tell."""

    def test_serve_notices_a_closed_broker_at_once(self):
        rogue = self.rogue()
        serve = self.start([CLI_BIN, "serve", "echo", "--echo"]
                           + rogue.cli_args(HEARTBEAT_DEFAULT), name="serve")
        first = rogue.wait_worker("echo")
        self.assertIsNotNone(first, serve.tail())
        mark = serve.mark()
        closed = rogue.close()
        m = serve.wait_for_log(r"event=worker_reconnect\b.*reason=broker_lost", 10, mark)
        elapsed = time.monotonic() - closed
        self.assertIsNotNone(m, "serve never noticed\n" + serve.tail())
        self.assertLess(elapsed, secs(2), "noticed after %.1f s" % elapsed)
        # And it is back as soon as the broker listens again
        rogue.rebind()
        self.assertIsNotNone(rogue.wait_worker("echo", 10), serve.tail())

    def test_an_attached_client_gets_broker_lost_at_once(self):
        rogue = self.rogue()
        client = self.start([BOUNDS_PEER, "loopclient", "--broker", rogue.endpoint,
                             "--server-key", rogue.key.public,
                             "--heartbeat", HEARTBEAT_DEFAULT], name="loopclient")
        request = rogue.wait_request()           # withheld
        self.assertIsNotNone(request, client.tail())
        closed = rogue.close()
        m = client.wait_for_line(r"^final status=.* hex=(\w*)$", 10, stream="stdout")
        elapsed = time.monotonic() - closed
        self.assertIsNotNone(m, "the request never failed\n" + client.tail())
        self.assertEqual(bytes.fromhex(m.group(1)), b"E_BROKER_LOST")
        self.assertLess(elapsed, secs(2), "noticed after %.1f s" % elapsed)


class NulErrorTextTest(BoundsTestCase):

    def test_library_hands_the_whole_text_to_the_application(self):
        rogue = self.rogue()
        client = self.start([BOUNDS_PEER, "loopclient", "--broker", rogue.endpoint,
                             "--server-key", rogue.key.public], name="loopclient")
        request = rogue.wait_request()
        self.assertIsNotNone(request, client.tail())
        rogue.answer_error(request, "\x00abc\x00d")
        m = client.wait_for_line(r"^final status=(.*) size=(\d+) hex=(\w*)$", 10,
                                 stream="stdout")
        self.assertIsNotNone(m, client.tail())
        self.assertEqual(m.group(1), "service replied with an error")
        self.assertEqual(bytes.fromhex(m.group(3)), b"\x00abc\x00d")

    def test_pigato_request_prints_the_whole_text(self):
        rogue = self.rogue()
        mark = rogue.mark()
        req = self.start([CLI_BIN, "request", "svc", '"hi"'] + rogue.cli_args(),
                         name="request")
        request = rogue.wait_request(since=mark)
        self.assertIsNotNone(request, req.tail())
        rogue.answer_error(request, "\x00abc\x1b[2Jd")
        self.assertEqual(req.wait(10), 1, req.tail())
        self.assertIn("pigato: error from svc: \\x00abc\\x1b[2Jd", req.text())


if __name__ == "__main__":
    harness.main()
