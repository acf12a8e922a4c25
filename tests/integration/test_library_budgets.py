#!/usr/bin/python3
"""libpigato holds bounded memory whatever its broker does (issue 18,
items 4 and 5). A misbehaving broker holding the right key
(rogue_broker.py) stops reading while it keeps heartbeating, or sends one
message of hundreds of MiB; the real peers are `pigato serve --echo`, a
libpigato client (budget_client.c) and `pigato request`. Asserted from
outside: the peers' resident memory (/proc/PID/status), their log lines
and what the rogue broker receives.

* Outbound (PIGATO_LINK_MAX_OUTBOUND, 64 MiB by default): a worker whose
  broker does not read stops taking work there (rejects, announces
  concurrency 0) and takes it again once the broker reads; a client's new
  requests fail at once with PIGATO_E_QUEUE_FULL.
* Inbound (PIGATO_LINK_MAX_INBOUND, 36 MiB): a message larger than any a
  broker may send gets its link cut (and logged) before libzmq holds all
  of it; the peer reconnects and goes on.
* ipc:// links (no byte counts from the kernel): about
  PIGATO_LINK_IPC_SNDHWM messages wait, then requests fail the same way."""

import json
import os
import re
import signal
import sys
import unittest

import harness
from harness import BUILD, CLI_BIN, HERE, MeshTestCase, memory, sanitized
from rogue_broker import RogueBroker

MIB = 1024 * 1024
MAX_OUTBOUND = 64 * MIB          # PIGATO_LINK_MAX_OUTBOUND
MAX_INBOUND = 36 * MIB           # PIGATO_LINK_MAX_INBOUND
IPC_SNDHWM = 1000                # PIGATO_LINK_IPC_SNDHWM
BUDGET_CLIENT = os.path.join(BUILD, "tests", "budget_client")
# Beyond a budget a peer may hold what arrives in one 20 ms check (CURVE
# on loopback: tens of MiB), a frame being decrypted twice over (15 MiB),
# the requests in transit and what malloc keeps. Without budgets the same
# attacks cost +290 MiB (replies never read) and +600 MiB (one message).
SLACK = 48 * MIB


class LibraryBudgetTest(MeshTestCase):
    START_BROKER = False

    @classmethod
    def setUpClass(cls):
        harness.build_c_program(os.path.join(HERE, "budget_client.c"), BUDGET_CLIENT)

    def setUp(self):
        MeshTestCase.setUp(self)
        self.rogues = []
        # A sanitized build holds freed memory back (ASan's quarantine):
        # the peers start without one, so their RSS tells what they hold
        self.env = {"ASAN_OPTIONS": ":".join(filter(None, [
            os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=0",
            "allocator_release_to_os_interval_ms=10"]))}

    def tearDown(self):
        for rogue in self.rogues:
            rogue.stop()
        MeshTestCase.tearDown(self)

    def rogue(self, **options):
        rogue = RogueBroker(self.tmp, **options)
        self.rogues.append(rogue)
        return rogue

    def serve_echo(self, rogue, heartbeat=500, log_level="info"):
        """`pigato serve echo --echo` on the rogue broker, registered."""
        serve = self.start([CLI_BIN, "serve", "echo", "--echo", "--log-level", log_level]
                           + rogue.cli_args(heartbeat), name="serve", env=self.env)
        worker = rogue.wait_worker("echo")
        self.assertIsNotNone(worker, "the worker never sent READY\n" + serve.tail())
        return serve, worker

    def assert_grew_less(self, proc, start, bound, what):
        peak = memory(proc.pid)[1]
        bound *= 2 if sanitized() else 1
        sys.stderr.write("%s: %s's peak RSS grew by %.1f MiB (bound %d MiB)\n"
                         % (what, proc.name, (peak - start) / MIB, bound // MIB))
        self.assertLess(peak - start, bound, "%s: %s's peak RSS grew by %d MiB (bound %d)"
                        % (what, proc.name, (peak - start) // MIB, bound // MIB))

    def heartbeat_concurrency(self, rogue, since=0):
        """Concurrency announced in each worker heartbeat, in order."""
        found = []
        for _, _, frames in rogue.messages("W", "4", since=since):
            if len(frames) >= 4 and frames[3]:
                found.append(json.loads(frames[3]).get("concurrency"))
        return found

    # -- outbound: a broker that stops reading --------------------------------

    def test_worker_stops_taking_work_while_its_broker_does_not_read(self):
        rogue = self.rogue(rcvhwm=2)          # holds little for the peers
        # debug: every request refused is logged (warnings are rate-limited)
        serve, worker = self.serve_echo(rogue, log_level="debug")
        start = memory(serve.pid)[0]
        rogue.pause_reading()
        # Requests of 1 MiB, each echoed: 8 at a time while the worker
        # takes them, so that what is in transit stays small
        big, sent, mark = "x" * MIB, 0, serve.mark()
        while True:
            rogue.send_requests(worker, 8, data=big, rid_prefix="a%d-" % sent)
            sent += 8
            full = serve.wait_for_log(r"event=worker_send_queue_full", 0, mark)
            if full:
                break
            self.assertLess(sent, 200, "the worker took every request\n" + serve.tail())
            # The chunk's last one handled, or refused
            self.assertIsNotNone(serve.wait_for_log(
                r"rid=a%d-7 |event=worker_busy |event=worker_send_queue_full" % (sent - 8),
                10, mark), "the worker handled no request\n" + serve.tail())
        # Full: it takes no more work. 40 more requests come
        handled = serve.count(r"event=request service=echo")
        self.assertLessEqual(handled * MIB, MAX_OUTBOUND + 16 * MIB)
        rogue.send_requests(worker, 40, data=big, rid_prefix="b")
        self.assertIsNotNone(serve.wait_for_log(r"event=worker_busy .*rid=b39 action=reject",
                                                20, mark), serve.tail())
        self.assert_grew_less(serve, start, MAX_OUTBOUND + SLACK,
                              "1 MiB replies the broker does not read")
        # The broker reads again: everything arrives, the rejects with
        # their reason, and the worker announces its room again
        since = rogue.mark()
        rogue.resume_reading()
        self.assertIsNotNone(serve.wait_for_log(r"event=worker_send_queue_drained", 20, mark),
                             serve.tail())
        rejected = lambda r: {m.rid for m in r.rejects()}
        self.assertTrue(rogue.wait_for(
            lambda r: len(r.replies()) == handled
            and {b"b%d" % i for i in range(40)} <= rejected(r), 30),
            "replies %d of %d, rejects %d" % (len(rogue.replies()), handled,
                                              len(rogue.rejects())))
        self.assertEqual(serve.count(r"event=request service=echo rid=b"), 0,
                         "the worker took work past its budget\n" + serve.tail())
        for reject in rogue.rejects():
            self.assertEqual(reject.data, b'"E_WORKER_REFUSED send_queue_full"')
        # No room while full (concurrency 0), then its room again (100)
        announced = lambda r: self.heartbeat_concurrency(r, since)
        self.assertTrue(rogue.wait_for(
            lambda r: 0 in announced(r) and announced(r)[-1] == 100, 10), announced(rogue))
        # And takes work again
        rogue.send_requests(worker, 5, rid_prefix="after")
        self.assertTrue(rogue.wait_for(lambda r: len(r.replies()) == handled + 5, 10),
                        serve.tail())
        self.assertTrue(serve.alive())

    def test_client_requests_fail_at_once_past_the_budget(self):
        rogue = self.rogue(rcvhwm=2)
        client = self.start([BUDGET_CLIENT, "--broker", rogue.endpoint, "--server-key",
                             rogue.key.public_file, "--size", str(MIB)],
                            name="budget_client", env=self.env)
        self.assertIsNotNone(client.wait_for_line(r"^started", 10, stream="stdout"),
                             client.tail())
        # The broker knows the client (and heartbeats it from now on), then
        # stops reading; the client starts sending
        self.assertIsNotNone(rogue.wait_client(), client.tail())
        rogue.pause_reading()
        start = memory(client.pid)[0]
        client.send_signal(signal.SIGUSR1)
        full = client.wait_for_line(r"^full sent=(\d+) status=(\S+) us=(\d+) "
                                    r"strerror=\"([^\"]*)\" error=(.*)", 60, stream="stdout")
        self.assertIsNotNone(full, client.tail())
        sent, status, took, text, error = full.groups()
        self.assertEqual(status, "E_QUEUE_FULL")
        self.assertEqual(text, "the broker is not reading: send queue to it full")
        self.assertRegex(error, r"^E_QUEUE_FULL \d+ bytes sent to %s wait for the broker "
                         % re.escape(rogue.endpoint))
        # Up to the budget, and what the kernel's buffers took (acknowledged)
        self.assertGreaterEqual(int(sent) * MIB, MAX_OUTBOUND)
        self.assertLessEqual(int(sent) * MIB, MAX_OUTBOUND + 16 * MIB)
        refused = client.wait_for_line(r"^refused count=(\d+) max_us=(\d+) mean_us=(\d+)",
                                       10, stream="stdout")
        self.assertIsNotNone(refused, client.tail())
        self.assertEqual(int(refused.group(1)), 100)
        # At once: no body copied, no wait (mean over 100 tries)
        self.assertLess(int(refused.group(3)), 2000)
        self.assertIsNotNone(client.wait_for_log(r"event=client_send_queue_full "
                                                 r"endpoint=%s" % re.escape(rogue.endpoint), 5))
        # The client holds its requests' bodies (for retries) and libzmq
        # the budget: no more
        self.assert_grew_less(client, start, 2 * MAX_OUTBOUND + SLACK,
                              "1 MiB requests the broker does not read")
        rogue.resume_reading()
        room = client.wait_for_line(r"^room sent=(\d+)", 30, stream="stdout")
        self.assertIsNotNone(room, client.tail())
        self.assertEqual(client.count(r"event=client_broker_lost"), 0, client.tail())
        # Nothing was lost: every request taken reached the broker
        self.assertTrue(rogue.wait_for(lambda r: len(r.requests()) == int(room.group(1)),
                                       30), "%d requests of %s arrived"
                        % (len(rogue.requests()), room.group(1)))

    def test_ipc_link_holds_a_bounded_number_of_messages(self):
        # ipc:// has no kernel byte counts: PIGATO_LINK_IPC_SNDHWM messages
        # wait at most (1000), then requests fail the same way
        path = os.path.join(self.tmp, "rogue.sock")

        class IpcRogue(RogueBroker):
            def _open(self):
                self.endpoint = "ipc://" + path
                RogueBroker._open(self)

        rogue = IpcRogue(self.tmp, rcvhwm=2)
        self.rogues.append(rogue)
        client = self.start([BUDGET_CLIENT, "--broker", rogue.endpoint, "--server-key",
                             rogue.key.public_file, "--size", "4096"],
                            name="budget_client", env=self.env)
        self.assertIsNotNone(client.wait_for_line(r"^started", 10, stream="stdout"),
                             client.tail())
        self.assertIsNotNone(rogue.wait_client(), client.tail())
        rogue.pause_reading()
        client.send_signal(signal.SIGUSR1)
        full = client.wait_for_line(r"^full sent=(\d+) status=(\S+) ", 60, stream="stdout")
        self.assertIsNotNone(full, client.tail())
        self.assertEqual(full.group(2), "E_QUEUE_FULL")
        # About 1000 in libzmq's queue (it learns what its I/O thread took
        # in batches; the greeting counts too), with what the kernel's
        # socket buffers took
        self.assertGreater(int(full.group(1)), IPC_SNDHWM - 100)
        self.assertLess(int(full.group(1)), IPC_SNDHWM + 500)
        rogue.resume_reading()
        self.assertIsNotNone(client.wait_for_line(r"^room sent=", 30, stream="stdout"),
                             client.tail())

    # -- inbound: a message larger than any a broker may send -----------------

    # The rogue broker's heartbeats wait behind the huge message: the
    # peers' heartbeat is long enough (2 s, lost after 6 s) that a busy
    # machine decrypting slowly still cuts for the budget first
    def worker_gets_huge_message(self, frames, size):
        rogue = self.rogue()
        serve, worker = self.serve_echo(rogue, heartbeat=2000)
        start = memory(serve.pid)[0]
        mark = serve.mark()
        rogue.send(worker, *([b"x" * size] * frames), copy=False)
        cut = serve.wait_for_log(r"event=worker_inbound_over_budget endpoint=\S+ "
                                 r"unread_bytes=(\d+) max_inbound=(\d+)", 60, mark)
        self.assertIsNotNone(cut, serve.tail())
        self.assertGreater(int(cut.group(1)), MAX_INBOUND)
        self.assertEqual(int(cut.group(2)), MAX_INBOUND)
        self.assert_grew_less(serve, start, MAX_INBOUND + SLACK,
                              "%d frames of %d bytes" % (frames, size))
        self.assertIsNotNone(serve.wait_for_log(r"event=worker_reconnect .*"
                                                r"reason=inbound_over_budget", 5, mark))
        # It came back (a new connection, READY again) and serves
        again = rogue.wait_worker("echo", exclude=(worker,))
        self.assertIsNotNone(again, serve.tail())
        rogue.send_requests(again, 3, rid_prefix="after")
        self.assertTrue(rogue.wait_for(lambda r: len(r.replies()) == 3, 10), serve.tail())

    def test_worker_cuts_a_message_of_40_frames_of_15_mib(self):
        self.worker_gets_huge_message(40, 15 * MIB)

    def test_worker_cuts_a_message_of_600_frames_of_1_mib(self):
        self.worker_gets_huge_message(600, MIB)

    def client_gets_huge_message(self, frames, size):
        rogue = self.rogue()
        request = self.start([CLI_BIN, "request", "echo", '"hi"', "--opts", '{"retry":1}']
                             + rogue.cli_args(2000), name="request", env=self.env)
        first = rogue.wait_request()
        self.assertIsNotNone(first, request.tail())
        start = memory(request.pid)[0]
        since = rogue.mark()
        rogue.send(first.client, *([b"x" * size] * frames), copy=False)
        cut = request.wait_for_log(r"event=client_inbound_over_budget endpoint=\S+ "
                                   r"unread_bytes=(\d+) max_inbound=(\d+)", 60)
        self.assertIsNotNone(cut, request.tail())
        self.assertGreater(int(cut.group(1)), MAX_INBOUND)
        self.assertIsNotNone(request.wait_for_log(
            r"event=client_broker_lost .*reason=inbound_over_budget .*resent=1", 5))
        # The request went again on a new connection: answered, it ends well
        again = rogue.wait_request(since=since)
        self.assertIsNotNone(again, request.tail())
        self.assertNotEqual(again.client, first.client)
        self.assert_grew_less(request, start, MAX_INBOUND + SLACK,
                              "%d frames of %d bytes" % (frames, size))
        rogue.answer(again, '"ok"')
        self.assertEqual(request.wait(10), 0, request.tail())
        self.assertEqual(request.text("stdout"), '"ok"')

    def test_client_cuts_a_message_of_40_frames_of_15_mib(self):
        self.client_gets_huge_message(40, 15 * MIB)

    def test_client_cuts_a_message_of_600_frames_of_1_mib(self):
        self.client_gets_huge_message(600, MIB)


if __name__ == "__main__":
    unittest.main(verbosity=2)
