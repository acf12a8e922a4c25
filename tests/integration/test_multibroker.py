#!/usr/bin/python3
"""Multi-broker failover with real processes: two pigato-broker processes
(CURVE, one key pair), one `pigato serve echo --echo` worker serving
through both, and a libpigato load client (tests/integration/mb_client.c)
keeping requests with {"retry":3} in flight over both. One broker is
SIGKILLed mid-load: no request with retry is lost or answered twice, the
requests without retry that it held fail at once with E_BROKER_LOST, the
other broker keeps serving, and once the dead broker is restarted on its
port the worker and the client use it again."""

import os
import re
import signal
import time
import unittest

import harness
from harness import BUILD, CLI_BIN, HERE, KeyPair, MeshTestCase

MB_CLIENT = os.path.join(BUILD, "tests", "mb_client")
HEARTBEAT = 300
E_NOTCONNECTED = -12


def _build_mb_client():
    """Compiles mb_client.c (harness.build_c_program)."""
    harness.build_c_program(os.path.join(HERE, "mb_client.c"), MB_CLIENT)


def _sent(match_line, endpoint):
    """Requests the client had sent to endpoint, from a progress line."""
    m = re.search(r"sent\[%s\]=(\d+)" % re.escape(endpoint), match_line)
    return int(m.group(1))


class MultiBrokerTest(MeshTestCase):
    CURVE = True
    HEARTBEAT = HEARTBEAT
    START_BROKER = False

    @classmethod
    def setUpClass(cls):
        _build_mb_client()

    def progress(self, client, since, timeout=20):
        """The first progress line at index >= since, as (line, index)."""
        m = client.wait_for_line(r"^progress replies=\d+.*", timeout, since, "stdout")
        self.assertIsNotNone(m, "no progress from the client\n" + client.tail())
        with client.cond:
            index = client.lines["stdout"].index(m.group(0), since)
        return m.group(0), index + 1

    def worker_ready(self, broker, mark, worker):
        if broker.wait_for_log(r"event=worker_ready\b.*\bservice=echo\b", 15, mark) is None:
            self.fail("the worker did not register with %s\n%s\n%s"
                      % (broker.name, worker.tail(), broker.tail(20)))

    def test_broker_killed_mid_load_loses_no_request_with_retry(self):
        key = KeyPair(self.tmp, "mesh-broker")
        first = self.start_broker(key=key, name="first")
        second = self.start_broker(key=key, name="second")
        a, b = first.endpoint, second.endpoint

        worker = self.start([CLI_BIN, "serve", "echo", "--echo", "--broker", a,
                             "--broker", b, "--server-key", key.public_file,
                             "--heartbeat", HEARTBEAT, "--log-level", "info"],
                            name="pigato-serve")
        self.worker_ready(first, 0, worker)
        self.worker_ready(second, 0, worker)

        client = self.start([MB_CLIENT, "--broker", a, "--broker", b,
                             "--server-key", key.public_file, "--heartbeat",
                             HEARTBEAT, "--inflight", 200, "--held", 20],
                            name="mb_client", env={"MB_DEBUG": "1"})
        held = client.wait_for_line(r"^held_sent count=(\d+)", 20, 0, "stdout")
        self.assertIsNotNone(held, client.tail())
        self.assertEqual(int(held.group(1)), 20)

        # Load is spread over both brokers, and both take requests now (a
        # link gets requests once its broker has spoken: at first the one
        # that answered first takes them all)
        line, at = self.progress(client, 0)
        for _ in range(200):
            previous = line
            line, at = self.progress(client, at)
            if (int(re.search(r"replies=(\d+)", line).group(1)) >= 300
                    and _sent(line, a) > 50 and _sent(line, b) > 50
                    and _sent(line, a) > _sent(previous, a)
                    and _sent(line, b) > _sent(previous, b)):
                break
        self.assertGreater(_sent(line, a), 50, line)
        self.assertGreater(_sent(line, b), 50, line)

        # The first broker dies mid-load
        client_mark = client.mark()
        worker_mark = worker.mark()
        first.send_signal(signal.SIGKILL)
        self.assertIsNotNone(first.wait(5))
        lost = client.wait_for_line(
            r"event=client_broker_lost endpoint=%s reason=\w+ .*resent=(\d+) failed=(\d+)"
            % re.escape(a), 5, client_mark)
        self.assertIsNotNone(lost, "the client did not notice\n" + client.tail())
        resent, failed = int(lost.group(1)), int(lost.group(2))
        # The window was full: requests with retry were on the dead broker
        self.assertGreater(resent, 0, lost.group(0))
        # ... and so were some of the held requests without retry: they
        # failed at once (their timeout is 60 s), with E_BROKER_LOST
        self.assertGreater(failed, 0, lost.group(0))
        self.assertLess(failed, 20, "all held requests were on one broker")
        def held_lines():
            return [l for l in client.lines["stdout"] if l and l.startswith("held ")]
        with client.cond:
            client.cond.wait_for(lambda: len(held_lines()) >= failed, harness.secs(5))
            lines = held_lines()
            # Progress lines after these were all printed after the loss
            after_loss = max(i for i, l in enumerate(client.lines["stdout"])
                             if l and l.startswith("held ")) + 1
        self.assertEqual(len(lines), failed, "\n".join(lines))
        for l in lines:
            self.assertIn("status=%d data=E_BROKER_LOST" % E_NOTCONNECTED, l)

        # The worker noticed too, and the other broker is not disturbed:
        # replies keep coming, and nothing more goes to the dead broker
        self.assertIsNotNone(worker.wait_for_log(
            r"event=worker_reconnect endpoint=%s" % re.escape(a), 5, worker_mark),
            worker.tail())
        down_line, at = self.progress(client, after_loss)
        for _ in range(3):
            line, at = self.progress(client, at)
        self.assertEqual(_sent(line, a), _sent(down_line, a),
                         "requests went to the dead broker:\n%s\n%s" % (down_line, line))
        self.assertGreater(_sent(line, b), _sent(down_line, b))
        self.assertEqual(worker.count(r"event=worker_reconnect endpoint=%s" % re.escape(b)),
                         0, worker.tail())

        # The dead broker comes back on its port: the worker registers
        # again and the client sends to it again
        again = self.start_broker(key=key, name="first-again", port=first.port)
        self.worker_ready(again, 0, worker)
        back_line, at = self.progress(client, client.mark("stdout"))
        deadline = time.monotonic() + harness.secs(10)
        line = back_line
        while (_sent(line, a) <= _sent(back_line, a) + 50
               and time.monotonic() < deadline):
            line, at = self.progress(client, at)
        self.assertGreater(_sent(line, a), _sent(back_line, a) + 50,
                           "the client did not use the restarted broker\n" + line)

        # Stop: every request with retry got exactly one, right, reply
        client.send_signal(signal.SIGUSR1)
        rc = client.wait(40)
        self.assertEqual(rc, 0, client.tail())
        summary = client.wait_for_line(
            r"^summary sent=(\d+) ok=(\d+) failed=(\d+) duplicates=(\d+) "
            r"mismatched=(\d+) unanswered=(\d+) held_pending=(\d+)", 5, 0, "stdout")
        self.assertIsNotNone(summary, client.tail())
        sent, ok, failed_echo, duplicates, mismatched, unanswered, pending = \
            map(int, summary.groups())
        self.assertGreater(sent, 1000, summary.group(0))
        self.assertEqual((ok, failed_echo, duplicates, mismatched, unanswered),
                         (sent, 0, 0, 0, 0), summary.group(0) + "\n" + client.tail())
        self.assertEqual(client.count(r"^echo_failed", 0, "stdout"), 0)
        # The held requests on the surviving broker were still waiting
        self.assertEqual(pending, 20 - failed, summary.group(0))

        # The restarted broker served replies (its stop summary)
        mark = again.mark()
        rc, clean = again.stop(signal.SIGTERM, 5)
        self.assertTrue(clean and rc == 0, again.tail())
        stopped = again.wait_for_log(r"event=stopped requests=(\d+)", 1, mark)
        self.assertIsNotNone(stopped, again.tail())
        self.assertGreater(int(stopped.group(1)), 0, stopped.group(0))


if __name__ == "__main__":
    harness.main()
