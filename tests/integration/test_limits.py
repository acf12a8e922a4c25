#!/usr/bin/python3
"""A hostile tenant harms no one (issue "A hostile tenant learns nothing
and harms no one", item 15): `pigato serve -- CMD` never lets a command
keep its slot (SIGTERM, then SIGKILL after 2 s, reaped), and no libpigato
peer sends a body the broker refuses (the broker would drop the whole
connection and every request in flight on it). Real broker, real CLI;
CURVE matters here, since it makes every frame 33 bytes longer."""

import os
import re
import signal
import time
import unittest

import harness
from harness import CLI_BIN, MeshTestCase, secs

BODY_MAX = 16 * 1024 * 1024 - 64          # PIGATO_BODY_MAX in pigato.h
TOO_LARGE = 17 * 1024 * 1024


def group_alive(pgid):
    """Pids of live (not zombie) processes in a process group."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


class LimitTests:

    def serve(self, service, *tail, extra=()):
        mark = self.broker.mark()
        args = ([CLI_BIN, "serve", service] + self.broker.cli_args() + ["-v"]
                + list(extra) + list(tail))
        p = self.start(args, name="serve-" + service)
        m = self.broker.wait_for_log(r"event=worker_ready\b.*\bservice=%s\b" % re.escape(service),
                                     timeout=10, since=mark)
        if m is None:
            self.fail("pigato serve %s never registered\n%s\n%s"
                      % (service, p.tail(), self.broker.tail(20)))
        return p

    def request_proc(self, service, *rest, stdin=None):
        return self.start([CLI_BIN, "request", service] + list(rest) + self.broker.cli_args(),
                          name="request-" + service, stdin=stdin)

    def wait_file(self, path, timeout):
        deadline = time.monotonic() + secs(timeout)
        while not os.path.exists(path) and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        return os.path.exists(path)

    # -- a command that ignores SIGTERM ----------------------------------------

    def test_command_ignoring_sigterm_gives_its_slot_back(self):
        pidfile = os.path.join(self.tmp, "hang.pid")
        script = ('x=$(cat); if [ "$x" = hang ]; then trap "" TERM; echo $$ > %s.tmp; '
                  'mv %s.tmp %s; sleep 60; fi; echo "ok:$x"' % (pidfile, pidfile, pidfile))
        serve = self.serve("stubborn", "--", "sh", "-c", script, extra=["--concurrency", "1"])
        hang = self.request_proc("stubborn", "hang", "--timeout", "1000")
        self.assertTrue(self.wait_file(pidfile, 10), "the command never started\n" + serve.tail())
        with open(pidfile) as f:
            pid = int(f.read())
        self.assertEqual(hang.wait(10), 2, "the timed-out request must exit 2\n" + hang.tail())
        # The only slot is taken by a command that ignores SIGTERM: without
        # SIGKILL this request would wait 60 s.
        started = time.monotonic()
        rc, out, err = self.cli("request", "stubborn", "next", "--timeout", "15000",
                                *self.broker.cli_args(), timeout=20)
        self.assertEqual((rc, out), (0, "ok:next"), err + "\n" + serve.tail())
        self.assertLess(time.monotonic() - started, secs(10))
        self.assertIsNotNone(serve.wait_for_line(r"event=request\b.*\bresult=abandoned\b", 5),
                             serve.tail())
        # Reaped by serve, and nothing of its process group is left running
        deadline = time.monotonic() + secs(5)
        while group_alive(pid) and time.monotonic() < deadline:
            self.mesh.pump(0.05)
        self.assertEqual(group_alive(pid), [], "processes of the command survived")
        if os.path.exists("/proc/%d/stat" % pid):
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            self.assertNotEqual(stat[stat.rindex(")") + 2], "Z", "the command is a zombie")

    def test_killed_command_is_reaped_while_an_escaped_child_holds_its_output(self):
        # A process that left the command's process group keeps its stdout
        # open: no EOF ever comes, yet the killed command is reaped and the
        # slot serves the next request.
        escaped = os.path.join(self.tmp, "escaped.pid")
        script = ('x=$(cat); if [ "$x" = esc ]; then '
                  'setsid sh -c "echo \\$\\$ > %s.tmp; mv %s.tmp %s; exec sleep 60" & '
                  'trap "" TERM; sleep 60; fi; echo "ok:$x"' % (escaped, escaped, escaped))
        serve = self.serve("escape", "--", "sh", "-c", script, extra=["--concurrency", "1"])
        esc = self.request_proc("escape", "esc", "--timeout", "1000")
        self.assertTrue(self.wait_file(escaped, 10), "the command never started\n" + serve.tail())
        with open(escaped) as f:
            pid = int(f.read())
        self.addCleanup(lambda: os.kill(pid, signal.SIGKILL) if group_alive(pid) else None)
        self.assertEqual(esc.wait(10), 2, esc.tail())
        rc, out, err = self.cli("request", "escape", "next", "--timeout", "15000",
                                *self.broker.cli_args(), timeout=20)
        self.assertEqual((rc, out), (0, "ok:next"), err + "\n" + serve.tail())
        self.assertEqual(group_alive(pid), [pid], "the escaped process is not ours to kill")

    def test_command_output_over_the_limit_fails_only_its_request(self):
        started = os.path.join(self.tmp, "slow.started")
        go = os.path.join(self.tmp, "go")
        script = ('x=$(cat); if [ "$x" = big ]; then head -c %d /dev/zero; exit 0; fi; '
                  'touch %s; while [ ! -e %s ]; do sleep 0.05; done; echo "ok:$x"'
                  % (TOO_LARGE, started, go))
        serve = self.serve("bulky", "--", "sh", "-c", script, extra=["--concurrency", "2"])
        mark = self.broker.mark()
        slow = self.request_proc("bulky", "slow", "--timeout", "30000")
        self.assertTrue(self.wait_file(started, 10), "slow request never started\n" + serve.tail())
        rc, out, err = self.cli("request", "bulky", "big", "--timeout", "20000",
                                *self.broker.cli_args(), timeout=30)
        self.assertEqual(rc, 1, "output over the limit must be an error reply\n" + err)
        self.assertIn("E_TOO_LARGE", err)
        self.assertIn("limit of %d bytes" % BODY_MAX, err)
        # The request in flight beside it was not lost with the connection
        open(go, "w").close()
        self.assertEqual(slow.wait(15), 0, slow.tail() + "\n" + serve.tail())
        self.assertEqual(slow.text("stdout"), "ok:slow")
        self.assertEqual(self.broker.count(r"event=worker_gone\b", since=mark), 0,
                         "the broker lost the worker\n" + self.broker.tail(20))
        self.assertIsNotNone(serve.wait_for_line(r"event=request\b.*\bresult=too_large\b", 5),
                             serve.tail())

    # -- request bodies ------------------------------------------------------

    def test_request_over_the_limit_is_refused_before_sending(self):
        serve = self.serve("echo", "--echo")
        p = self.request_proc("echo", "--timeout", "10000", stdin=b"x" * (BODY_MAX + 1))
        self.assertEqual(p.wait(15), 64, p.tail())
        self.assertIn("E_TOO_LARGE", p.text("stderr"))
        self.assertIn("limit of %d bytes" % BODY_MAX, p.text("stderr"))
        self.assertIn("nothing was sent", p.text("stderr"))
        # The worker is still there and got nothing but the next request
        rc, out, err = self.cli("request", "echo", "after", "--timeout", "10000",
                                *self.broker.cli_args())
        self.assertEqual((rc, out), (0, "after"), err)
        self.assertEqual(serve.count(r"event=request\b"), 1, serve.tail())

    def test_body_at_the_limit_goes_through(self):
        # The largest body a peer may send reaches the worker and comes
        # back: the limit is what the broker accepts (CURVE included)
        self.serve("echo", "--echo")
        rc, out, err = self.cli("request", "echo", "--timeout", "20000",
                                *self.broker.cli_args(), stdin=b"y" * BODY_MAX, timeout=30)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(out), BODY_MAX)
        self.assertEqual(out.strip("y"), "")


class InsecureLimitTest(LimitTests, MeshTestCase):
    CURVE = False


class CurveLimitTest(LimitTests, MeshTestCase):
    CURVE = True


if __name__ == "__main__":
    harness.main()
