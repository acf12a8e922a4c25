#!/usr/bin/python3
"""The pigato CLI and pigato-broker command line, end to end (issue 2):
request/serve echo, stdin input, partial replies line by line, CMD mode,
exit codes 0 / 1 (error reply) / 2 (timeout, no broker), key handling."""

import os
import pty
import random
import re
import signal
import socket
import subprocess
import time
import unittest

import harness
from harness import BROKER_BIN, CLI_BIN, KeyPair, MeshTestCase, Proc, secs


class CliTests:

    def serve(self, service, *tail, extra=()):
        """Starts `pigato serve SERVICE ... TAIL` and waits until the broker
        has registered it."""
        mark = self.broker.mark()
        args = [CLI_BIN, "serve", service] + self.broker.cli_args() + list(extra) + list(tail)
        p = self.start(args, name="serve-" + service)
        m = self.broker.wait_for_log(r"event=worker_ready\b.*\bservice=%s\b" % re.escape(service),
                                     timeout=10, since=mark)
        if m is None:
            self.fail("pigato serve %s never registered\n%s\n%s"
                      % (service, p.tail(), self.broker.tail(20)))
        return p

    def request(self, service, *rest, timeout=15.0, stdin=None, env=None, common=True):
        args = ["request", service] + list(rest)
        if common:
            args += self.broker.cli_args()
        return self.cli(*args, timeout=timeout, stdin=stdin, env=env)

    # -- request / serve -------------------------------------------------------

    def test_request_to_echo_worker(self):
        self.serve("echo", "--echo")
        rc, out, err = self.request("echo", '"hi there"', "--timeout", "5000")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '"hi there"')

    def test_request_reads_stdin(self):
        self.serve("echo", "--echo")
        rc, out, err = self.request("echo", "-", "--timeout", "5000", stdin='{"from":"stdin"}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '{"from":"stdin"}')
        rc, out, err = self.request("echo", "--timeout", "5000", stdin='"no data argument"')
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '"no data argument"')

    def test_request_opts_reach_the_worker(self):
        w = self.ready_worker("opts")
        p = self.start([CLI_BIN, "request", "opts", '"x"', "--timeout", "5000",
                        "--opts", '{"custom":"value"}'] + self.broker.cli_args())
        req = w.next_request(5)
        self.assertIsNotNone(req, "request from the CLI never reached the worker\n" + p.tail())
        self.assertIn(b'"custom"', req.opts)
        w.reply(req, '"done"')
        deadline = time.monotonic() + secs(5)
        while p.alive() and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        self.assertEqual(p.wait(5), 0, p.tail())
        self.assertEqual(p.text("stdout").strip(), '"done"')

    def test_partial_replies_printed_line_by_line(self):
        w = self.ready_worker("parts")
        p = self.start([CLI_BIN, "request", "parts", '"go"', "--timeout", "5000"]
                       + self.broker.cli_args())
        req = w.next_request(5)
        self.assertIsNotNone(req, p.tail())
        for i in range(3):
            w.reply(req, '"p%d"' % i, partial=True)
            # each partial is printed (and flushed) before the next arrives
            self.assertIsNotNone(p.wait_for_line(r'^"p%d"$' % i, 5, stream="stdout"),
                                 "partial %d not printed on its own line\n%s" % (i, p.tail()))
        w.reply(req, '"end"')
        deadline = time.monotonic() + secs(5)
        while p.alive() and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        self.assertEqual(p.wait(5), 0, p.tail())
        self.assertEqual(p.text("stdout").splitlines(), ['"p0"', '"p1"', '"p2"', '"end"'])

    def test_error_reply_exits_1_with_message_on_stderr(self):
        w = self.ready_worker("fails")
        p = self.start([CLI_BIN, "request", "fails", '"x"', "--timeout", "5000"]
                       + self.broker.cli_args())
        req = w.next_request(5)
        self.assertIsNotNone(req, p.tail())
        w.reply(req, '"disk on fire"', status=-1)
        deadline = time.monotonic() + secs(5)
        while p.alive() and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        self.assertEqual(p.wait(5), 1, p.tail())
        self.assertIn("disk on fire", p.text("stderr"))

    def test_serve_cmd_mode(self):
        self.serve("upper", "--", "tr", "a-z", "A-Z")
        rc, out, err = self.request("upper", "hello world", "--timeout", "5000")
        self.assertEqual(rc, 0, err)
        # (output is compared as lines: a doubled newline is an empty line)
        self.assertEqual(out, "HELLO WORLD")
        # A reply that ends with a newline is printed as is, not doubled
        rc, out, err = self.request("upper", "two\nlines\n", "--timeout", "5000")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "TWO\nLINES")

    def test_serve_cmd_failure_is_an_error_reply(self):
        self.serve("boom", "--", "sh", "-c", "echo kaboom-message >&2; exit 3")
        rc, out, err = self.request("boom", '"x"', "--timeout", "5000")
        self.assertEqual(rc, 1, "failing CMD must give exit 1; stdout=%r stderr=%r" % (out, err))
        self.assertIn("kaboom-message", err)

    def test_serve_concurrency_option(self):
        self.serve("slowcat", "--", "sh", "-c", "sleep 0.3; cat", extra=["--concurrency", "2"])
        procs = [self.start([CLI_BIN, "request", "slowcat", '"%d"' % i, "--timeout", "10000"]
                            + self.broker.cli_args()) for i in range(4)]
        for i, p in enumerate(procs):
            self.assertEqual(p.wait(15), 0, p.tail())
            self.assertEqual(p.text("stdout").strip(), '"%d"' % i)

    def test_serve_sends_disconnect_on_sigterm(self):
        p = self.serve("bye", "--echo")
        mark = self.broker.mark()
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(5), 0, "serve did not exit 0 on SIGTERM\n" + p.tail())
        # DISCONNECT, not liveness expiry.
        self.assertIsNotNone(self.wait_log(r"event=worker_gone\b.*\breason=disconnect\b", 3, mark),
                             "broker did not see the worker leave at once\n" + self.broker.tail(10))

    def test_environment_variables(self):
        self.serve("envecho", "--echo")
        env = {"PIGATO_BROKER": self.broker.endpoint}
        args = ["request", "envecho", '"via env"', "--timeout", "5000",
                "--heartbeat", str(self.broker.heartbeat)]
        if self.broker.curve:
            env["PIGATO_SERVER_KEY"] = self.broker.key.public      # Z85 text this time
        else:
            args.append("--insecure")
        rc, out, err = self.cli(*args, env=env)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '"via env"')

    def test_serve_on_two_brokers(self):
        other = self.start_broker(key=self.broker.key, name="second")
        mark1, mark2 = self.broker.mark(), other.mark()
        p = self.start([CLI_BIN, "serve", "both", "--echo"] + self.broker.cli_args()
                       + ["--broker", other.endpoint], name="serve-both")
        for br, mark in ((self.broker, mark1), (other, mark2)):
            self.assertIsNotNone(self.wait_log(r"event=worker_ready\b.*\bservice=both\b",
                                               10, mark, broker=br),
                                 "worker with two --broker did not register on %s\n%s"
                                 % (br.endpoint, p.tail()))
        for br in (self.broker, other):
            rc, out, err = self.cli("request", "both", '"via %s"' % br.endpoint,
                                    "--timeout", "5000", *br.cli_args())
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.strip(), '"via %s"' % br.endpoint)

    def test_serve_reconnects_after_broker_restart(self):
        p = self.serve("phoenix", "--echo")
        port, key = self.broker.port, self.broker.key
        self.broker.stop()
        self.brokers.remove(self.broker)
        # The worker notices (liveness: 3 x 500 ms) and reconnects with a
        # fresh routing id; a new broker on the same endpoint gets a READY.
        self.broker = self.start_broker(key=key, port=port, name="reborn")
        self.assertIsNotNone(
            self.wait_log(r"event=worker_ready\b.*\bservice=phoenix\b", 15),
            "pigato serve did not come back after a broker restart\n" + p.tail())
        rc, out, err = self.request("phoenix", '"again"', "--timeout", "5000")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '"again"')

    def test_request_interrupted_exits_130(self):
        # libpigato leaves signals to the program (issue 15): the CLI
        # catches SIGINT and SIGTERM itself and says it was interrupted.
        for number in (signal.SIGINT, signal.SIGTERM):
            w = self.ready_worker("hold%d" % number)
            p = self.start([CLI_BIN, "request", "hold%d" % number, '"x"', "--timeout", "20000"]
                           + self.broker.cli_args())
            self.assertIsNotNone(w.next_request(5), "request never reached the worker\n" + p.tail())
            p.send_signal(number)
            self.assertEqual(p.wait(5), 130, "request not interrupted by %s\n%s" % (number, p.tail()))
            self.assertIn("interrupted", p.text("stderr"))

    def request_bytes(self, service, data, *extra, stdout=subprocess.PIPE):
        """Runs `pigato request SERVICE` with data on stdin; returns the exit
        code and stdout's exact bytes (no line splitting)."""
        run = subprocess.run([CLI_BIN, "request", service, "--timeout", "10000"]
                             + list(extra) + self.broker.cli_args(),
                             input=data, stdout=stdout, stderr=subprocess.PIPE,
                             timeout=secs(20))
        return run.returncode, run.stdout, run.stderr.decode(errors="replace")

    def test_output_is_byte_exact_when_not_a_terminal(self):
        # `pigato request cat < in.bin > out.bin` used to add a newline
        # (10,000 bytes became 10,001).
        self.serve("cat", "--", "cat")
        data = bytes(random.Random(15).randrange(256) for _ in range(10000))
        data = data.rstrip(b"\n") + b"x"
        rc, out, err = self.request_bytes("cat", data)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(out), len(data))
        self.assertEqual(out, data)
        # Into a file, as the issue did it
        path = os.path.join(self.tmp, "out.bin")
        with open(path, "wb") as f:
            rc, _, err = self.request_bytes("cat", data, stdout=f)
        self.assertEqual(rc, 0, err)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)

    def test_output_on_a_terminal_ends_each_reply_with_a_newline_unless_raw(self):
        self.serve("cat", "--", "cat")
        for extra, expected in (((), b"no newline\n"), (("--raw",), b"no newline")):
            controller, terminal = pty.openpty()
            try:
                rc, _, err = self.request_bytes("cat", b"no newline", *extra, stdout=terminal)
                os.close(terminal)
                terminal = -1
                self.assertEqual(rc, 0, err)
                out = b""
                while True:
                    try:
                        chunk = os.read(controller, 4096)
                    except OSError:     # EIO: the terminal's other end is closed
                        break
                    if not chunk:
                        break
                    out += chunk
            finally:
                os.close(controller)
                if terminal >= 0:
                    os.close(terminal)
            # The terminal turns "\n" into "\r\n"
            self.assertEqual(out.replace(b"\r\n", b"\n"), expected, extra)

    def test_raw_writes_partial_replies_without_separators(self):
        w = self.ready_worker("parts")
        p = self.start([CLI_BIN, "request", "parts", '"go"', "--timeout", "5000", "--raw"]
                       + self.broker.cli_args())
        req = w.next_request(5)
        self.assertIsNotNone(req, p.tail())
        for i in range(3):
            w.reply(req, "p%d" % i, partial=True)
        w.reply(req, "end")
        deadline = time.monotonic() + secs(5)
        while p.alive() and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        self.assertEqual(p.wait(5), 0, p.tail())
        self.assertEqual(p.text("stdout"), "p0p1p2end")

    def test_ipv6_endpoints(self):
        # tcp://[::1]:PORT used to fail to bind ("No such device") and to
        # connect: libzmq needs ZMQ_IPV6 on the socket (issue 15).
        if not has_ipv6_loopback():
            self.skipTest("this machine has no IPv6 loopback (::1): IPv6 endpoints not tested")
        v6 = "tcp://[::1]:%d" % harness.free_port()
        br = self.start_broker(extra=["--bind", v6])
        common = ["--heartbeat", str(br.heartbeat)]
        common += ["--server-key", br.key.public_file] if br.curve else ["--insecure"]
        mark = br.mark()
        self.start([CLI_BIN, "serve", "echo6", "--echo", "--broker", v6] + common)
        self.assertIsNotNone(br.wait_for_log(r"event=worker_ready\b.*\bservice=echo6\b", 10, mark),
                             "a worker over %s never registered\n%s" % (v6, br.tail()))
        rc, out, err = self.cli("request", "echo6", '"over v6"', "--timeout", "5000",
                                "--broker", v6, *common)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '"over v6"')

    def test_endpoint_mistakes_are_usage_errors(self):
        # No transport: a usage error with a hint, from --broker and from
        # PIGATO_BROKER alike, before anything is read or sent.
        for args, env in ((["--broker", "localhost:5570"], None),
                          ([], dict(os.environ, PIGATO_BROKER="localhost:5570"))):
            rc, out, err = self.cli("request", "echo", '"x"', "--insecure", *args, env=env)
            self.assertEqual(rc, 64, err)
            self.assertIn("did you mean tcp://localhost:5570?", err)
        for endpoint in ("tcp://127.0.0.1:70000", "tcp://127.0.0.1:0", "tcp://127.0.0.1"):
            rc, out, err = self.cli("request", "echo", '"x"', "--insecure", "--broker", endpoint)
            self.assertEqual(rc, 64, "%s: %s" % (endpoint, err))
            self.assertIn(endpoint, err)
        rc, out, err = self.cli("serve", "echo", "--echo", "--insecure", "--broker", "127.0.0.1:1")
        self.assertEqual(rc, 64, err)
        self.assertIn("did you mean tcp://127.0.0.1:1?", err)

    # -- failures ------------------------------------------------------------

    def test_timeout_exits_2(self):
        t0 = time.monotonic()
        rc, out, err = self.request("nobody-home", '"x"', "--timeout", "700")
        self.assertEqual(rc, 2, "timeout must exit 2; stderr=%r" % err)
        self.assertLess(time.monotonic() - t0, secs(8), "timeout of 700 ms took too long")
        self.assertNotEqual(err.strip(), "", "timeout should say so on stderr")

    def test_no_broker_exits_2(self):
        port = harness.free_port()
        args = ["request", "echo", '"x"', "--timeout", "1500",
                "--broker", "tcp://127.0.0.1:%d" % port, "--heartbeat", "300"]
        args += (["--server-key", self.broker.key.public] if self.broker.curve else ["--insecure"])
        t0 = time.monotonic()
        rc, out, err = self.cli(*args, timeout=20)
        self.assertEqual(rc, 2, "no broker must exit 2; stderr=%r" % err)
        self.assertLess(time.monotonic() - t0, secs(12))


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class InsecureCliTest(CliTests, MeshTestCase):
    CURVE = False


class CurveCliTest(CliTests, MeshTestCase):
    CURVE = True

    def test_client_key_file(self):
        self.serve("echo", "--echo")
        me = KeyPair(self.tmp, "me")
        rc, out, err = self.request("echo", '"keyed"', "--timeout", "5000",
                                    "--key", me.secret_file)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), '"keyed"')

    def test_missing_server_key_is_a_usage_error(self):
        t0 = time.monotonic()
        rc, out, err = self.cli("request", "echo", '"x"', "--broker", self.broker.endpoint,
                                "--timeout", "3000")
        self.assertNotIn(rc, (0, 1), "no --server-key and no --insecure must be refused")
        self.assertRegex(err, r"(?i)server.?key", "message should name the missing server key")
        self.assertLess(time.monotonic() - t0, secs(2.5), "must refuse before trying to connect")

    def test_server_key_file_missing(self):
        rc, out, err = self.cli("request", "echo", '"x"', "--broker", self.broker.endpoint,
                                "--server-key", os.path.join(self.tmp, "nope.key"),
                                "--timeout", "3000")
        self.assertNotIn(rc, (0, 1))
        self.assertIn("nope.key", err)

    def test_secret_key_with_open_permissions_is_refused(self):
        me = KeyPair(self.tmp, "loose")
        os.chmod(me.secret_file, 0o644)
        rc, out, err = self.request("echo", '"x"', "--timeout", "3000", "--key", me.secret_file)
        self.assertNotIn(rc, (0, 1), "group/world-readable secret key accepted")
        self.assertIn("loose.key_secret", err)
        self.assertRegex(err, r"(?i)(permission|readable|0600|mode|chmod)")
        self.assertNotIn(me.secret, out + err, "secret key printed")
        # serve refuses it too
        rc, out, err = self.cli("serve", "echo", "--echo", "--key", me.secret_file,
                                *self.broker.cli_args(), timeout=10)
        self.assertNotEqual(rc, 0)
        self.assertIn("loose.key_secret", err)


class BrokerCommandLineTest(MeshTestCase):
    START_BROKER = False

    def run_broker(self, *args, timeout=10):
        p = self.start([BROKER_BIN] + list(args), name="pigato-broker")
        rc = p.wait(timeout)
        if rc is None:
            p.stop(signal.SIGKILL)
            self.fail("pigato-broker %s kept running\n%s" % (" ".join(args), p.tail()))
        return rc, p.text("stdout"), p.text("stderr")

    def endpoint(self):
        return "tcp://127.0.0.1:%d" % harness.free_port()

    def test_missing_key_file(self):
        path = os.path.join(self.tmp, "absent.key_secret")
        rc, out, err = self.run_broker("--bind", self.endpoint(), "--allow-any", "--key", path)
        self.assertNotEqual(rc, 0)
        self.assertIn("absent.key_secret", out + err)

    def test_unreadable_key_file(self):
        garbage = os.path.join(self.tmp, "garbage.key_secret")
        with open(garbage, "w") as f:
            f.write("this is not a zcert\n")
        os.chmod(garbage, 0o600)
        rc, out, err = self.run_broker("--bind", self.endpoint(), "--allow-any", "--key", garbage)
        self.assertNotEqual(rc, 0, "broker started with a garbage key file")
        self.assertIn("garbage.key_secret", out + err)
        # a directory is not a key file either
        rc, out, err = self.run_broker("--bind", self.endpoint(), "--allow-any", "--key", self.tmp)
        self.assertNotEqual(rc, 0, "broker started with a directory as key file")

    def test_open_permissions_key_file(self):
        kp = KeyPair(self.tmp, "brokerloose")
        os.chmod(kp.secret_file, 0o644)
        rc, out, err = self.run_broker("--bind", self.endpoint(), "--allow-any",
                                       "--key", kp.secret_file)
        self.assertNotEqual(rc, 0, "broker accepted a world-readable secret key")
        self.assertIn("brokerloose.key_secret", out + err)
        self.assertNotIn(kp.secret, out + err, "secret key printed")

    def test_curve_without_key_is_refused(self):
        rc, out, err = self.run_broker("--bind", self.endpoint(), "--allow-any")
        self.assertNotEqual(rc, 0, "CURVE broker started without a key")
        self.assertRegex(out + err, r"(?i)key")

    def test_help_and_version(self):
        rc, out, err = self.run_broker("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--bind", out + err)
        rc, out, err = self.run_broker("--version")
        self.assertEqual(rc, 0)
        self.assertIn("0.1.0", out + err)
        p = self.start([CLI_BIN, "--help"])
        self.assertEqual(p.wait(10), 0, p.tail())
        self.assertIn("request", p.text("stdout") + p.text("stderr"))

    def test_broker_bind_mistakes_are_usage_errors(self):
        rc, out, err = self.run_broker("--insecure", "--bind", "127.0.0.1:5599")
        self.assertEqual(rc, 64, err)
        self.assertIn("did you mean tcp://127.0.0.1:5599?", err)
        rc, out, err = self.run_broker("--insecure", "--bind", "tcp://127.0.0.1:65536")
        self.assertEqual(rc, 64, err)
        self.assertIn("65536", err)

    def test_pid_file(self):
        # kill -HUP $(pidof pigato-broker) signals every broker on the host:
        # --pid-file names one (issue 15).
        path = os.path.join(self.tmp, "broker.pid")
        with open(path, "w") as f:
            f.write("%d\n" % os.getpid())  # stale: alive, but not a broker
        br = self.start_broker(curve=False, extra=["--pid-file", path])
        with open(path) as f:
            self.assertEqual(int(f.read()), br.pid, "pid file not written by event=ready")
        # A second broker with the same pid file refuses to start
        rc, out, err = self.run_broker("--insecure", "--bind", self.endpoint(),
                                       "--pid-file", path)
        self.assertEqual(rc, 1, err)
        self.assertIn("running broker (pid %d)" % br.pid, err)
        with open(path) as f:
            self.assertEqual(int(f.read()), br.pid, "the refused broker touched the pid file")
        # The file reaches the right broker, and goes at exit
        mark = br.mark()
        with open(path) as f:
            os.kill(int(f.read()), signal.SIGHUP)
        self.assertIsNotNone(br.wait_for_log(r"reload", 5, mark), br.tail())
        br.send_signal(signal.SIGTERM)
        self.assertEqual(br.wait(5), 0, br.tail())
        self.assertFalse(os.path.exists(path), "pid file left behind at exit")

    def test_sigint_shuts_down_cleanly(self):
        br = self.start_broker(curve=False)
        br.send_signal(signal.SIGINT)
        self.assertEqual(br.wait(5), 0, "broker did not exit 0 on SIGINT\n" + br.tail())
        br = self.start_broker(curve=False)
        br.send_signal(signal.SIGTERM)
        self.assertEqual(br.wait(5), 0, "broker did not exit 0 on SIGTERM\n" + br.tail())


if __name__ == "__main__":
    harness.main()
