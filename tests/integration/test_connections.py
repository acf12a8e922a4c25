#!/usr/bin/python3
"""Connections cannot lock anyone out (issue "A hostile tenant learns
nothing and harms no one", item 9): idle TCP connections past the file
limit, CURVE connections past --max-connections and connections that never
finish their handshake. The broker keeps its open files below its limit
(libzmq's accept loop spins at EMFILE), shuts connections over the maximum
at once, closes idle unauthenticated ones at the handshake timeout, stays
idle meanwhile, and a legitimate peer still gets its call through.
Real broker processes on 127.0.0.1."""

import os
import select
import socket
import time
import unittest

import zmq

import harness
from harness import MeshTestCase, secs

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a process so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def open_files(pid):
    """(all open fds, TCP/Unix sockets among them) of a process."""
    total = sockets = 0
    for entry in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, entry))
        except OSError:
            continue
        total += 1
        sockets += target.startswith("socket:")
    return total, sockets


class IdleConnections:
    """Raw TCP connections that never send a byte. closed[i] is when
    connection i saw its end (seconds after open), None while open."""

    def __init__(self, port, count):
        self.socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            self.socks.append(s)
        self.opened = time.monotonic()
        self.closed = [None] * count
        self.poller = select.poll()
        self.index = {}
        for i, s in enumerate(self.socks):
            self.poller.register(s.fileno(), select.POLLIN)
            self.index[s.fileno()] = i

    def watch(self, seconds, until_all_closed=False):
        """Reads (and drops: a ZMTP greeting) for a while, noting ends."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (until_all_closed and self.open_count() == 0):
                return
            for fd, _ in self.poller.poll(min(remaining, 0.05) * 1000):
                i = self.index[fd]
                try:
                    data = self.socks[i].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed[i] = time.monotonic() - self.opened
                    self.poller.unregister(fd)

    def open_count(self):
        return sum(1 for c in self.closed if c is None)

    def closed_within(self, seconds):
        return sum(1 for c in self.closed if c is not None and c <= seconds)

    def close(self):
        for s in self.socks:
            s.close()


class ConnectionTests(MeshTestCase):
    CURVE = True
    START_BROKER = False

    def setUp(self):
        MeshTestCase.setUp(self)
        self.idle = []

    def tearDown(self):
        for idle in self.idle:
            idle.close()
        MeshTestCase.tearDown(self)

    def open_idle(self, broker, count):
        idle = IdleConnections(broker.port, count)
        self.idle.append(idle)
        return idle

    def max_connections(self, broker):
        m = broker.wait_for_log(r"event=ready .*\bmax_connections=(\d+)", timeout=0)
        return int(m.group(1)) if m else None

    def start_call(self, broker, service):
        """A worker and a client that start at once and keep trying (their
        libzmq sockets reconnect); the request waits in the DEALER."""
        w = self.worker(broker)
        w.ready(service, wait=False)
        c = self.client(broker)
        c.request(service, "rid-1", '"ping"', '{"timeout": 60000}')
        return w, c

    def finish_call(self, w, c, timeout):
        req = w.next_request(timeout)
        self.assertIsNotNone(req, "the worker never got the request")
        w.reply(req, '"pong"')
        _, final = c.final("rid-1", 5)
        self.assertIsNotNone(final, "the client never got the reply")
        self.assertEqual((final.status, final.data), (b"0", b'"pong"'))

    def test_idle_connections_past_the_file_limit_lock_nobody_out(self):
        # 300 idle connections against a broker whose file limit is 256.
        # Before connection limits libzmq hit EMFILE, its I/O thread spun
        # on accept (95% CPU) and nobody got in until the 30 s handshake
        # timeout of libzmq.
        broker = self.start_broker(file_limit=256)
        maximum = self.max_connections(broker)
        idle = self.open_idle(broker, 300)
        w, c = self.start_call(broker, "echo")
        idle.watch(secs(0.5))
        files, sockets = open_files(broker.pid)
        self.assertLess(files, 256 - 8,
                        "the broker holds %d files (%d sockets) of its 256: "
                        "it is at its file limit" % (files, sockets))
        if maximum is not None:
            self.assertLessEqual(maximum, 256 - 32)
            self.assertLessEqual(sockets, maximum + 4)
            self.assertGreaterEqual(idle.closed_within(secs(1.0)), 300 - maximum,
                                    "connections over the maximum were not "
                                    "closed at once\n" + broker.tail())
        # The legitimate peers, which reconnect, get in while the idle ones
        # still sit: once those have been in their handshake for a second,
        # the oldest is evicted for each new connection
        self.finish_call(w, c, timeout=4)
        self.assertTrue(broker.wait_for_log(r"event=connection_refused .*"
                                            r"reason=evicted_in_handshake",
                                            timeout=0), broker.tail())
        # No spin: the broker is all but idle while the connections sit
        before, started = cpu_seconds(broker.pid), time.monotonic()
        idle.watch(secs(2.0))
        used = cpu_seconds(broker.pid) - before
        elapsed = time.monotonic() - started
        self.assertLess(used / elapsed, 0.25,
                        "the broker used %.2f s of CPU in %.2f s with idle "
                        "connections open\n%s" % (used, elapsed, broker.tail()))
        # The idle ones end at the handshake timeout (5 s by default)
        idle.watch(secs(6.0), until_all_closed=True)
        self.assertEqual(idle.open_count(), 0,
                         "idle connections outlived the handshake timeout")
        self.assertLess(open_files(broker.pid)[1], 16)
        self.assertTrue(broker.wait_for_log(r"event=connection_refused .*"
                                            r"reason=max_connections", timeout=0),
                        "refusals are logged")

    def test_a_full_broker_evicts_the_oldest_connection_in_its_handshake(self):
        # The maximum is reached with connections that never finish a
        # handshake: a new one gets in at once (the oldest idle one goes),
        # not when the idle ones reach the handshake timeout (10 s here)
        broker = self.start_broker(extra=["--max-connections", "50",
                                          "--handshake-timeout", "10000"])
        idle = self.open_idle(broker, 50)
        # Connections are evicted once they have been at their handshake
        # for a second (a burst of peers in theirs is not)
        idle.watch(secs(1.2))
        self.assertEqual(idle.open_count(), 50, broker.tail())
        started = time.monotonic()
        w, c = self.start_call(broker, "echo")
        self.finish_call(w, c, timeout=3)
        self.assertLess(time.monotonic() - started, secs(3))
        idle.watch(secs(0.3))
        # The oldest idle ones made room (one per new connection), the
        # newest are still open
        self.assertGreaterEqual(50 - idle.open_count(), 2)
        self.assertIsNone(idle.closed[-1])
        self.assertIsNotNone(idle.closed[0])
        self.assertTrue(broker.wait_for_log(r"event=connection_refused .*"
                                            r"reason=evicted_in_handshake",
                                            timeout=0), broker.tail())
        broker.stop()
        self.assertRegex(broker.text(), r"connections_evicted=[1-9]")

    def test_curve_connections_past_the_maximum_are_shut(self):
        broker = self.start_broker(extra=["--max-connections", "20",
                                          "--handshake-timeout", "1000"])
        self.assertEqual(self.max_connections(broker), 20)
        # 30 CURVE peers that reconnect whenever they are shut (every 100
        # ms): 20 get in, the rest are refused over and over
        ctx = self.mesh.ctx
        hostile = []
        for _ in range(30):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            pub, sec = zmq.curve_keypair()
            s.curve_serverkey = broker.key.public.encode()
            s.curve_publickey, s.curve_secretkey = pub, sec
            s.connect(broker.endpoint)
            hostile.append(s)
        try:
            self.assertTrue(broker.wait_for_log(r"event=connection_refused .*"
                                                r"max_connections=20 "
                                                r"reason=max_connections",
                                                timeout=5), broker.tail())
            # The first burst of 30 is accepted before the broker sees it;
            # from then on the refused are shut as they come
            time.sleep(secs(0.5))
            before, started = cpu_seconds(broker.pid), time.monotonic()
            most = 0
            while time.monotonic() - started < secs(2.0):
                most = max(most, open_files(broker.pid)[1])
                time.sleep(0.05)
            used = cpu_seconds(broker.pid) - before
            elapsed = time.monotonic() - started
            # 20 connections, the listener, at most a few being shut
            self.assertLessEqual(most, 20 + 1 + 4,
                                 "the broker held %d sockets" % most)
            self.assertLess(used / elapsed, 0.5,
                            "the broker used %.2f s of CPU in %.2f s refusing "
                            "connections" % (used, elapsed))
        finally:
            for s in hostile:
                s.close(0)
        # Once the hostile peers leave, a worker and a client get through
        w, c = self.start_call(broker, "echo")
        self.finish_call(w, c, timeout=5)
        rc, _ = broker.stop()
        self.assertEqual(rc, 0)
        m = broker.wait_for_log(r"event=stopped .*\bconnections_refused=(\d+)", timeout=5)
        self.assertIsNotNone(m, broker.tail())
        self.assertGreaterEqual(int(m.group(1)), 10)

    def test_idle_connection_ends_at_the_handshake_timeout(self):
        broker = self.start_broker(extra=["--handshake-timeout", "1000"])
        idle = self.open_idle(broker, 5)
        idle.watch(secs(0.5))
        self.assertEqual(idle.open_count(), 5, "closed before the handshake timeout")
        idle.watch(secs(3.0), until_all_closed=True)
        self.assertEqual(idle.open_count(), 0,
                         "idle connections outlived the 1 s handshake timeout")
        self.assertLess(max(idle.closed), secs(3.0))
        # A peer that does its handshake is not affected
        w, c = self.start_call(broker, "echo")
        self.finish_call(w, c, timeout=5)

    def test_bad_values_are_usage_errors(self):
        for option, value in (("--max-connections", "0"),
                              ("--max-connections", "x"),
                              ("--handshake-timeout", "-1")):
            p = self.start([harness.BROKER_BIN, "--insecure", "--bind",
                            "tcp://127.0.0.1:%d" % harness.free_port(), option, value])
            self.assertEqual(p.wait(5), 64, p.tail())


if __name__ == "__main__":
    harness.main()
