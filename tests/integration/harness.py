"""Shared helpers for pigato-c integration tests.

Real processes (pigato-broker, the pigato CLI, Node pigato scripts) on
tcp://127.0.0.1 with free ports, and raw pyzmq DEALER peers that speak the
pigato 0.0.46 wire protocol by hand (docs/protocol.md). Nothing here
sleeps for a fixed time where an event can be awaited: peers poll their
sockets with deadlines, processes are watched through their log lines.

Every process a test starts is recorded and killed by pid in tearDown.
"""

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(os.environ.get("PIGATO_BUILD") or os.path.join(REPO, "build"))
BROKER_BIN = os.path.join(BUILD, "pigato-broker")
CLI_BIN = os.path.join(BUILD, "pigato")

# A slow machine or a sanitizer build stretches everything; one knob.
SLOW = float(os.environ.get("PIGATO_TEST_SLOW", "1"))



def build_c_program(source, output):
    """Compiles one C file (a test's own peer) against BUILD/libpigato.a,
    with the packages of the Makefile and the sanitizers the broker was
    built with, if any. Raises RuntimeError with the compiler's words."""
    pkgs = ["libzmq", "libczmq", "libsodium", "jansson", "libssl", "libcrypto",
            "libmicrohttpd", "sqlite3"]
    libs = subprocess.run(["pkg-config", "--libs"] + pkgs, capture_output=True,
                          text=True, check=True).stdout.split()
    cflags = subprocess.run(["pkg-config", "--cflags"] + pkgs, capture_output=True,
                            text=True, check=True).stdout.split()
    ldd = subprocess.run(["ldd", os.path.join(BUILD, "pigato-broker")],
                         capture_output=True, text=True).stdout
    sanitize = [s for s, lib in (("address", "libasan"), ("undefined", "libubsan"))
                if lib in ldd]
    san = ["-fsanitize=" + ",".join(sanitize)] if sanitize else []
    os.makedirs(os.path.dirname(output), exist_ok=True)
    cmd = (["cc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-g"]
           + san + cflags + ["-I", os.path.join(REPO, "include"), "-o", output, source,
                             os.path.join(BUILD, "libpigato.a")]
           + libs + ["-lpthread", "-lm"])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("cannot build %s:\n%s\n%s"
                           % (os.path.basename(output), " ".join(cmd), r.stderr))

def memory(pid):
    """(VmRSS, VmHWM) of a process in bytes: its resident size now and at
    its peak."""
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def sanitized():
    """True if the build under test uses AddressSanitizer: its allocations
    carry redzones and shadow memory (each of 100,000 small messages held
    costs about twice as much), so memory bounds are twice those of a
    normal build."""
    out = subprocess.run(["ldd", BROKER_BIN], capture_output=True, text=True).stdout
    return "libasan" in out


def secs(value):
    """A timeout in seconds, stretched by PIGATO_TEST_SLOW."""
    return value * SLOW


def b(value):
    """Frames as bytes: bytes stay, str is UTF-8, ints become ASCII."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return str(value).encode()
    return str(value).encode("utf-8")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# --------------------------------------------------------------------------
# CURVE key pairs as czmq zcert files

def _zcert_text(kind, name, public, secret=None):
    lines = ["#   ****  Generated on %s by pigato-c tests  ****"
             % time.strftime("%Y-%m-%d %H:%M:%S")]
    if secret is None:
        lines += ["#   ZeroMQ CURVE Public Certificate",
                  "#   Exchange securely, or use a secure mechanism to verify the contents",
                  "#   of this file after exchange. Store public certificates in your home",
                  "#   directory, in the .curve subdirectory."]
    else:
        lines += ["#   ZeroMQ CURVE **Secret** Certificate",
                  "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."]
    lines += ["", "metadata", '    name = "%s"' % name, "curve",
              '    public-key = "%s"' % public]
    if secret is not None:
        lines.append('    secret-key = "%s"' % secret)
    return "\n".join(lines) + "\n"


class KeyPair:
    """A CURVE key pair written as NAME.key (0644) and NAME.key_secret (0600)."""

    def __init__(self, directory, name):
        pub, sec = zmq.curve_keypair()
        self.name = name
        self.public = pub.decode()
        self.secret = sec.decode()
        self.public_file = os.path.join(directory, name + ".key")
        self.secret_file = os.path.join(directory, name + ".key_secret")
        with open(self.public_file, "w") as f:
            f.write(_zcert_text("public", name, self.public))
        os.chmod(self.public_file, 0o644)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_zcert_text("secret", name, self.public, self.secret))
        os.chmod(self.secret_file, 0o600)


def write_acl(path, text):
    """Writes an ACL file atomically (temporary file + rename in the same
    directory), so a broker reloading on SIGHUP never reads half a file.
    Returns path."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".acl-", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------
# Processes

def _file_limit(limit):
    """A preexec_fn that sets RLIMIT_NOFILE (soft and hard) in the child."""
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return apply


class Proc:
    """A child process whose stdout and stderr lines are collected by
    reader threads. wait_for_line() blocks on a condition, not a sleep."""

    def __init__(self, args, name=None, env=None, stdin=None, cwd=None,
                 file_limit=None):
        self.args = [str(a) for a in args]
        self.name = name or os.path.basename(self.args[0])
        self.lines = {"stdout": [], "stderr": []}
        self.cond = threading.Condition()
        full_env = dict(os.environ)
        for var in ("PIGATO_BROKER", "PIGATO_SERVER_KEY", "PIGATO_KEY"):
            full_env.pop(var, None)         # tests pass what they mean
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            self.args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
            start_new_session=True,
            preexec_fn=None if file_limit is None else _file_limit(file_limit))
        self.pid = self.popen.pid
        self.signalled = False
        self.threads = []
        for stream in ("stdout", "stderr"):
            t = threading.Thread(target=self._reader, args=(stream,), daemon=True)
            t.start()
            self.threads.append(t)
        if stdin is not None:
            try:
                self.popen.stdin.write(b(stdin))
                self.popen.stdin.close()
            except BrokenPipeError:
                pass

    def _reader(self, stream):
        pipe = getattr(self.popen, stream)
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines[stream].append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines[stream].append(None)   # end of stream marker
            self.cond.notify_all()

    def mark(self, stream="stderr"):
        """Position to pass as since= to wait_for_line: only later lines."""
        with self.cond:
            return len(self.lines[stream])

    def text(self, stream="stderr"):
        with self.cond:
            return "\n".join(l for l in self.lines[stream] if l is not None)

    def tail(self, n=40):
        out = self.text("stdout").splitlines()[-n:]
        err = self.text("stderr").splitlines()[-n:]
        return ("--- %s (pid %d) stdout tail:\n%s\n--- stderr tail:\n%s"
                % (self.name, self.pid, "\n".join(out), "\n".join(err)))

    def wait_for_line(self, regex, timeout=5.0, since=0, stream="stderr", idle=None):
        """Waits until a line (at index >= since) matches regex; returns the
        match object, or None on timeout or end of stream. With idle (a
        function taking seconds, e.g. Mesh.pump) the wait is spent in it,
        in short slices, so raw peers keep heartbeating meanwhile."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + secs(timeout)
        index = since
        while True:
            with self.cond:
                lines = self.lines[stream]
                while index < len(lines):
                    line = lines[index]
                    index += 1
                    if line is None:
                        return None
                    m = pattern.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if idle is None:
                    self.cond.wait(remaining)
                    continue
            idle(min(remaining, 0.02))

    def wait_for_log(self, regex, timeout=5.0, since=0, idle=None):
        return self.wait_for_line(regex, timeout, since, "stderr", idle)

    def count(self, regex, since=0, stream="stderr"):
        pattern = re.compile(regex)
        with self.cond:
            return sum(1 for l in self.lines[stream][since:]
                       if l is not None and pattern.search(l))

    def alive(self):
        return self.popen.poll() is None

    def wait(self, timeout=10.0):
        """Waits for exit; returns the exit code (None if still running)."""
        try:
            rc = self.popen.wait(secs(timeout))
        except subprocess.TimeoutExpired:
            return None
        for t in self.threads:
            t.join(secs(2))
        for pipe in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if pipe is not None and not any(t.is_alive() for t in self.threads):
                try:
                    pipe.close()
                except OSError:
                    pass
        return rc

    def send_signal(self, sig):
        self.signalled = True
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signals the process (only this pid) and waits; SIGKILL if it
        does not exit in time. Returns (exit code, clean) where clean is
        False when SIGKILL was needed."""
        if not self.alive():
            return self.wait(1), True
        self.send_signal(sig)
        rc = self.wait(timeout)
        if rc is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return self.wait(5), False
        return rc, True


class Broker(Proc):
    """pigato-broker on a free port: CURVE with --allow-any, CURVE with
    --acl FILE (acl=FILE), --insecure, or --insecure --acl FILE."""

    def __init__(self, tmpdir, curve=True, heartbeat=500, extra=(), name="broker",
                 key=None, wait_ready=True, port=None, acl=None, file_limit=None):
        self.port = port or free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.curve = curve
        self.heartbeat = heartbeat
        self.key = key
        self.acl = acl
        args = [BROKER_BIN, "--bind", self.endpoint]
        if curve:
            if self.key is None:
                self.key = KeyPair(tmpdir, name)
            args += ["--allow-any"] if acl is None else ["--acl", acl]
            args += ["--key", self.key.secret_file]
        else:
            args += ["--insecure"]
            if acl is not None:
                args += ["--acl", acl]
        args += ["--heartbeat", str(heartbeat), "--log-level", "debug"]
        args += list(extra)
        Proc.__init__(self, args, name=name, file_limit=file_limit)
        if wait_ready and not self.wait_for_log(r"event=ready", timeout=10):
            raise AssertionError("broker did not log event=ready\n" + self.tail())

    @property
    def server_key(self):
        return self.key.public if self.curve else None

    def cli_args(self):
        """Common pigato CLI options to reach this broker."""
        args = ["--broker", self.endpoint, "--heartbeat", str(self.heartbeat)]
        if self.curve:
            args += ["--server-key", self.key.public_file]
        else:
            args += ["--insecure"]
        return args


# --------------------------------------------------------------------------
# Raw DEALER peers speaking the pigato 0.0.46 framing

def is_noise(role, msg):
    """Plain heartbeats and READY acknowledgements: not what tests wait for."""
    if len(msg) == 2 and msg[0] == role.encode() and msg[1] in (b"4", b"1"):
        return True
    return False


class Mesh:
    """All raw peers of one test, pumped together from one thread so every
    peer keeps heartbeating while a test waits on any of them."""

    def __init__(self, heartbeat_ms=500):
        self.ctx = zmq.Context()
        self.peers = []
        self.heartbeat_ms = heartbeat_ms

    def close(self):
        for p in self.peers:
            p.sock.close(0)
        self.peers = []
        self.ctx.term()

    def pump(self, timeout_s):
        """Reads whatever arrives within timeout_s into the peers' inboxes
        and sends heartbeats that are due."""
        now = time.monotonic()
        for p in self.peers:
            p._heartbeat_if_due(now)
        poller = zmq.Poller()
        live = [p for p in self.peers if not p.sock.closed]
        for p in live:
            poller.register(p.sock, zmq.POLLIN)
        if not live:
            time.sleep(max(0.0, timeout_s))
            return
        events = dict(poller.poll(max(0, int(timeout_s * 1000))))
        for p in live:
            if p.sock in events:
                while True:
                    try:
                        msg = p.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    p.inbox.append(msg)
                    p.received.append(msg)

    def settle(self, seconds):
        """Pumps for a while (used to prove something does NOT happen)."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.pump(min(remaining, 0.05))


class Peer:
    _seq = 0

    def __init__(self, mesh, role, endpoint, server_key=None, identity=None,
                 auto_heartbeat=True, keypair=None):
        self.mesh = mesh
        self.role = role
        self.sock = mesh.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndtimeo = 5000
        if identity is None:
            # Printable ids like Node pigato's (which assumes text ids).
            Peer._seq += 1
            identity = "%s-%d-%s" % (role, Peer._seq, os.urandom(4).hex())
        self.identity = b(identity)
        self.sock.setsockopt(zmq.ROUTING_ID, self.identity)
        self.keypair = keypair
        if server_key:
            # An ephemeral key pair unless the test names one (a KeyPair,
            # e.g. an identity listed in the broker's ACL).
            if keypair is not None:
                pub, sec = b(keypair.public), b(keypair.secret)
            else:
                pub, sec = zmq.curve_keypair()
            self.sock.curve_serverkey = b(server_key)
            self.sock.curve_publickey = pub
            self.sock.curve_secretkey = sec
        self.sock.connect(endpoint)
        self.inbox = []
        self.received = []          # every message ever received, in order
        self.auto_heartbeat = auto_heartbeat
        self.last_heartbeat = 0.0
        mesh.peers.append(self)

    def send(self, *frames):
        self.sock.send_multipart([b(f) for f in frames])

    def close(self):
        if self in self.mesh.peers:
            self.mesh.peers.remove(self)
        self.sock.close(0)

    def _heartbeat_frames(self):
        return None

    def _heartbeat_if_due(self, now):
        if not self.auto_heartbeat:
            return
        frames = self._heartbeat_frames()
        if frames is None:
            return
        if (now - self.last_heartbeat) * 1000 >= self.mesh.heartbeat_ms:
            self.last_heartbeat = now
            try:
                # Never blocks: a peer whose handshake the broker refused
                # (a test's stranger) has nowhere to send it
                self.sock.send_multipart([b(f) for f in frames], zmq.NOBLOCK)
            except zmq.Again:
                pass

    def recv(self, match=None, timeout=3.0, skip_noise=True):
        """First message in arrival order that matches (noise skipped), or
        None after timeout. Messages that do not match stay in the inbox."""
        deadline = time.monotonic() + secs(timeout)
        while True:
            i = 0
            while i < len(self.inbox):
                m = self.inbox[i]
                if skip_noise and is_noise(self.role, m):
                    del self.inbox[i]
                    continue
                if match is None or match(m):
                    del self.inbox[i]
                    return m
                i += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.mesh.pump(min(remaining, 0.05))

    def pending(self, match=None, skip_noise=True):
        """Messages already in the inbox that match (not removed)."""
        return [m for m in self.inbox
                if not (skip_noise and is_noise(self.role, m))
                and (match is None or match(m))]


class Request:
    """A request as a worker sees it: W,2,client,service,"",rid,data,opts."""

    def __init__(self, msg):
        self.frames = msg
        self.client = msg[2]
        self.service = msg[3]
        self.empty = msg[4]
        self.rid = msg[5]
        self.data = msg[6] if len(msg) > 6 else None
        self.opts = msg[7] if len(msg) > 7 else None

    def __repr__(self):
        return "Request(rid=%r, data=%r)" % (self.rid, self.data)


class RawWorker(Peer):
    def __init__(self, mesh, endpoint, server_key=None, identity=None,
                 concurrency=None, auto_heartbeat=True, keypair=None):
        Peer.__init__(self, mesh, "W", endpoint, server_key, identity, auto_heartbeat,
                      keypair)
        self.concurrency = concurrency
        self.is_ready = False

    def _heartbeat_frames(self):
        if not self.is_ready:
            return None
        opts = "{}" if self.concurrency is None else '{"concurrency":%d}' % self.concurrency
        return ["W", "4", "", opts]

    def ready(self, service, wait=True, timeout=5.0):
        """Sends READY and a heartbeat with the concurrency; waits for the
        broker's W,1 answer (returns it, or None)."""
        self.send("W", "1", service)
        self.is_ready = True
        self.last_heartbeat = time.monotonic()
        self.send(*self._heartbeat_frames())
        if not wait:
            return None
        return self.recv(lambda m: m[:2] == [b"W", b"1"], timeout, skip_noise=False)

    def heartbeat(self):
        self.last_heartbeat = time.monotonic()
        self.send(*self._heartbeat_frames())

    def next_request(self, timeout=3.0):
        m = self.recv(lambda m: len(m) >= 6 and m[:2] == [b"W", b"2"], timeout)
        return Request(m) if m is not None else None

    def requests_now(self, settle=0.3):
        """Pumps for `settle` seconds and returns every request received."""
        self.mesh.settle(secs(settle))
        out = []
        while True:
            r = self.next_request(timeout=0)
            if r is None:
                return out
            out.append(r)

    def reply(self, req, data, status=0, opts="{}", partial=False):
        self.send("W", "6" if partial else "3", req.client, "", req.rid, status, data, opts)

    def reply_to(self, client, rid, data, status=0, opts="{}", partial=False):
        self.send("W", "6" if partial else "3", client, "", rid, status, data, opts)

    def reject(self, req, reason='"busy"', opts=None):
        frames = ["W", "7", req.client, "", req.rid, "0", reason]
        if opts is not None:
            frames.append(opts)
        self.send(*frames)

    def disconnect(self):
        self.send("W", "5")
        self.is_ready = False

    def got_disconnect(self):
        return any(m[:2] == [b"W", b"5"] for m in self.received)


class Reply:
    """A reply as a client sees it: C,3|6,"",rid,status,data,opts."""

    def __init__(self, msg):
        self.frames = msg
        self.final = msg[1] == b"3"
        self.rid = msg[3]
        self.status = msg[4] if len(msg) > 4 else None
        self.data = msg[5] if len(msg) > 5 else None
        self.opts = msg[6] if len(msg) > 6 else None

    def __repr__(self):
        return "Reply(%s rid=%r status=%r data=%r)" % (
            "final" if self.final else "partial", self.rid, self.status, self.data)


class RawClient(Peer):
    def __init__(self, mesh, endpoint, server_key=None, identity=None, auto_heartbeat=True,
                 keypair=None):
        Peer.__init__(self, mesh, "C", endpoint, server_key, identity, auto_heartbeat,
                      keypair)

    def _heartbeat_frames(self):
        return ["C", "4"]

    def request(self, service, rid, data='"hello"', opts="{}"):
        frames = ["C", "2", service, rid, data]
        if opts is not None:
            frames.append(opts)
        self.send(*frames)

    def reply(self, rid, timeout=3.0, final=None):
        """Next reply (partial or final) for rid."""
        rid = b(rid)

        def match(m):
            if len(m) < 4 or m[0] != b"C" or m[1] not in (b"3", b"6") or m[3] != rid:
                return False
            return final is None or (m[1] == b"3") == final
        m = self.recv(match, timeout)
        return Reply(m) if m is not None else None

    def final(self, rid, timeout=3.0):
        """(partials, final reply or None) for rid."""
        partials = []
        deadline = time.monotonic() + secs(timeout)
        while True:
            r = self.reply(rid, max(0.0, deadline - time.monotonic()) / SLOW)
            if r is None:
                return partials, None
            if r.final:
                return partials, r
            partials.append(r)

    def request_heartbeat(self, rid, word="request"):
        self.send("C", "4", word, rid)


# --------------------------------------------------------------------------
# Test case base

class MeshTestCase(unittest.TestCase):
    """One broker per test (CURVE class attribute picks the mode), a Mesh
    of raw peers, and bookkeeping so tearDown kills only what we started.
    With CHECK_BROKER_EXIT the broker must exit 0 on SIGTERM."""

    CURVE = False
    HEARTBEAT = 500
    BROKER_EXTRA = ()
    START_BROKER = True
    CHECK_BROKER_EXIT = True
    _sanity = 0

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pigato-test-")
        self.procs = []
        self.brokers = []
        self.mesh = Mesh(self.HEARTBEAT)
        self.broker = None
        if self.START_BROKER:
            self.broker = self.start_broker()

    def tearDown(self):
        problems = []
        try:
            self.mesh.close()
        except Exception as e:          # never leave processes behind
            problems.append("mesh close: %r" % e)
        for p in reversed(self.procs):
            if p in self.brokers:
                continue
            p.stop(signal.SIGTERM, 3)
        for br in self.brokers:
            alive = br.alive()
            rc, clean = br.stop(signal.SIGTERM, 5)
            if self.CHECK_BROKER_EXIT and alive and (rc != 0 or not clean):
                problems.append("broker did not exit cleanly on SIGTERM (rc=%r, %s)\n%s"
                                % (rc, "needed SIGKILL" if not clean else "exited", br.tail(25)))
            elif self.CHECK_BROKER_EXIT and not alive and not br.signalled:
                problems.append("broker died during the test (rc=%r)\n%s" % (rc, br.tail(40)))
        if self._outcome_failed():
            # Diagnostics for the failure report: what every process said.
            for p in self.procs:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        if problems and not self._outcome_failed():
            self.fail("\n".join(problems))

    def _outcome_failed(self):
        # Python 3.11: self._outcome.result holds errors/failures so far.
        try:
            result = self._outcome.result
            return any(t is self for t, _ in result.errors + result.failures)
        except AttributeError:
            return False

    def wait_log(self, regex, timeout=5.0, since=0, broker=None):
        """Waits for a broker log line while the raw peers keep pumping."""
        broker = broker or self.broker
        return broker.wait_for_log(regex, timeout, since, idle=self.mesh.pump)

    def start_broker(self, curve=None, heartbeat=None, extra=None, name=None, key=None,
                     port=None, acl=None, file_limit=None):
        br = Broker(self.tmp, curve=self.CURVE if curve is None else curve,
                    heartbeat=self.HEARTBEAT if heartbeat is None else heartbeat,
                    extra=self.BROKER_EXTRA if extra is None else extra,
                    name=name or "broker%d" % len(self.brokers), key=key, port=port,
                    acl=acl, file_limit=file_limit)
        self.procs.append(br)
        self.brokers.append(br)
        return br

    def start(self, args, name=None, env=None, stdin=None):
        p = Proc(args, name=name, env=env, stdin=stdin)
        self.procs.append(p)
        return p

    def worker(self, broker=None, **kw):
        broker = broker or self.broker
        return RawWorker(self.mesh, broker.endpoint, broker.server_key, **kw)

    def client(self, broker=None, **kw):
        broker = broker or self.broker
        return RawClient(self.mesh, broker.endpoint, broker.server_key, **kw)

    def ready_worker(self, service, broker=None, **kw):
        w = self.worker(broker, **kw)
        ack = w.ready(service)
        self.assertIsNotNone(ack, "broker did not answer READY with W,1 for %s" % service)
        return w

    def cli(self, *args, timeout=15.0, stdin=None, env=None):
        """Runs the pigato CLI to completion while pumping the raw peers.
        Returns (exit code, stdout, stderr)."""
        p = self.start([CLI_BIN] + [str(a) for a in args], name="pigato", env=env,
                       stdin=stdin)
        deadline = time.monotonic() + secs(timeout)
        while p.alive() and time.monotonic() < deadline:
            self.mesh.pump(0.02)
        if p.alive():
            p.stop(signal.SIGKILL, 2)
            self.fail("pigato %s did not finish within %ss\n%s"
                      % (" ".join(map(str, args)), timeout, p.tail()))
        rc = p.wait(5)
        return rc, p.text("stdout"), p.text("stderr")

    def assert_broker_alive(self, broker=None):
        broker = broker or self.broker
        self.assertTrue(broker.alive(), "broker died\n" + broker.tail(60))

    def assert_serves(self, broker=None, service="sanity"):
        """The broker still routes a normal request to a fresh worker and
        the reply back."""
        broker = broker or self.broker
        self.assert_broker_alive(broker)
        MeshTestCase._sanity += 1
        service = "%s-%d" % (service, MeshTestCase._sanity)
        w = self.ready_worker(service, broker)
        c = self.client(broker)
        rid = "sanity-%f" % time.monotonic()
        c.request(service, rid, '"ping"')
        req = w.next_request(5)
        self.assertIsNotNone(req, "request not dispatched after hostile input\n" + broker.tail())
        self.assertEqual(req.rid, b(rid))
        self.assertEqual(req.data, b'"ping"')
        w.reply(req, '"pong"')
        _, final = c.final(rid, 5)
        self.assertIsNotNone(final, "no reply after hostile input\n" + broker.tail())
        self.assertEqual((final.status, final.data), (b"0", b'"pong"'))
        w.disconnect()
        w.close()
        c.close()


def main():
    missing = [p for p in (BROKER_BIN, CLI_BIN) if not os.access(p, os.X_OK)]
    if missing:
        sys.stderr.write("error: not built: %s (run make all; PIGATO_BUILD=%s)\n"
                         % (", ".join(missing), BUILD))
        sys.exit(1)
    unittest.main(verbosity=2)
