"""A misbehaving pigato broker for tests of libpigato's own bounds.

It holds the right key (a CURVE server, keys from harness.KeyPair), so
clients and workers accept it, and then does what a real broker never
does: sends a worker more requests than it announced it takes, stops
reading while it keeps heartbeating, sends arbitrary frames (a message of
many huge frames, an error string starting with a NUL byte), drops every
connection at once (close) and listens again (rebind). It speaks pigato
0.0.46 framing only (docs/protocol.md), as Node pigato's broker does: a
libpigato peer's native offer is ignored, so it stays on 0.0.46.

What pigato-broker answers, it answers too, so libpigato counts the link
as acknowledged: W,1 to a worker's READY, W,4 to a worker heartbeat, C,4
to a client heartbeat. It also heartbeats every peer it knows on its own
(every `heartbeat_ms`), even while it does not read, so a peer never
finds it silent.

The broker runs in its own thread (zmq sockets stay in that thread); a
test calls its methods from any thread. Methods that act on the socket
are queued and executed by that thread; they return once done (with the
result). What the broker received is recorded in order and can be
awaited with wait_for().

    rogue = RogueBroker(tmpdir)                # binds tcp://127.0.0.1:PORT
    ... start a libpigato worker on rogue.endpoint with rogue.key ...
    w = rogue.wait_worker("echo")              # its routing id, once READY
    rogue.send_requests(w, 200)                # regardless of concurrency
    rogue.wait_for(lambda r: len(r.rejects()) + len(r.replies()) == 200)
    rogue.pause_reading()                      # heartbeats go on
    t = rogue.close()                          # every connection drops
    rogue.rebind()                             # same port, same key
    rogue.stop()

Client side: a client's requests are recorded (requests()); they are
answered with answer() or, with auto_answer set (a function of a
ClientRequest returning (status, data) or None), at once. By default
they are withheld.
"""

import json
import queue
import threading
import time

import zmq

from harness import KeyPair, b, free_port, secs

ALIAS = "0123456789abcdef0123456789abcdef"   # a client alias: 32 hex chars


class WorkerSeen:
    """A worker that sent READY: routing id, service, what it announced."""

    def __init__(self, routing_id, service, native_offer):
        self.id = routing_id
        self.service = service
        self.native_offer = native_offer
        self.concurrency = None        # from its last heartbeat's opts
        self.ready_at = time.monotonic()

    def __repr__(self):
        return "WorkerSeen(%r, %r, concurrency=%r)" % (self.id, self.service,
                                                       self.concurrency)


class WorkerMessage:
    """A reply, partial or reject from a worker:
    W, 3|6|7, client, "", rid, status, data[, opts]."""

    def __init__(self, routing_id, frames, at):
        self.worker = routing_id
        self.frames = frames
        self.at = at
        self.type = frames[1]
        self.client = frames[2] if len(frames) > 2 else None
        self.rid = frames[4] if len(frames) > 4 else None
        self.status = frames[5] if len(frames) > 5 else None
        self.data = frames[6] if len(frames) > 6 else None
        self.opts = frames[7] if len(frames) > 7 else None

    def __repr__(self):
        return "WorkerMessage(type=%r rid=%r status=%r data=%r)" % (
            self.type, self.rid, self.status, (self.data or b"")[:80])


class ClientRequest:
    """A client's request: C, 2, service, rid, data, opts."""

    def __init__(self, routing_id, frames, at):
        self.client = routing_id
        self.frames = frames
        self.at = at
        self.service = frames[2] if len(frames) > 2 else None
        self.rid = frames[3] if len(frames) > 3 else None
        self.data = frames[4] if len(frames) > 4 else None
        self.opts = frames[5] if len(frames) > 5 else None

    def __repr__(self):
        return "ClientRequest(service=%r rid=%r data=%r)" % (
            self.service, self.rid, (self.data or b"")[:80])


def json_error(text):
    """An error string as a broker sends it: the JSON text of a string.
    A NUL byte (or any control character) is written as \\u00XX."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out).encode("utf-8")


class RogueBroker:
    """A CURVE ROUTER on tcp://127.0.0.1 that a test drives (see the module
    docstring). rcvhwm: the socket's receive high-water mark, small to make
    a peer that sends while the broker does not read fill its own queue
    (ZMQ_RCVHWM applies per connection). heartbeat_ms: how often it
    heartbeats every peer it knows on its own; 0 never."""

    def __init__(self, tmpdir, name="rogue", key=None, port=None, rcvhwm=1000,
                 sndhwm=0, heartbeat_ms=250, answer_heartbeats=True, ack_ready=True):
        self.key = key or KeyPair(tmpdir, name)
        self.port = port or free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.rcvhwm = rcvhwm
        self.sndhwm = sndhwm
        self.heartbeat_ms = heartbeat_ms
        self.answer_heartbeats = answer_heartbeats
        self.ack_ready = ack_ready
        self.auto_answer = None        # ClientRequest -> (status, data) | None
        self.cond = threading.Condition()
        self.received = []             # (time, routing id, frames), every message
        self.counts = {}               # (header, type) -> messages received
        self.workers = {}              # routing id -> WorkerSeen
        self.clients = set()           # routing ids of clients seen
        self.send_errors = []          # (routing id, errno) of failed sends
        self.closed_at = None          # monotonic time of the last close()
        self.reading = True
        self.ctx = zmq.Context()
        self.sock = None
        self.commands = queue.Queue()
        self.running = True
        self._open()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="rogue-" + name)
        self.thread.start()

    # -- socket (broker thread only, except in __init__) ------------------

    def _open(self):
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.rcvhwm = self.rcvhwm
        sock.sndhwm = self.sndhwm
        sock.router_mandatory = 1      # a send to a gone peer fails, recorded
        sock.curve_server = True
        sock.curve_secretkey = b(self.key.secret)
        sock.curve_publickey = b(self.key.public)
        deadline = time.monotonic() + secs(5)
        while True:
            try:
                sock.bind(self.endpoint)
                break
            except zmq.ZMQError as e:   # the old listener may linger a moment
                if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    sock.close(0)
                    raise
                time.sleep(0.01)
        self.sock = sock

    def _send(self, routing_id, frames, copy=True):
        if self.sock is None:
            self.send_errors.append((routing_id, "closed"))
            return False
        try:
            self.sock.send_multipart([b(routing_id)] + [b(f) for f in frames],
                                     copy=copy, flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError as e:
            with self.cond:
                self.send_errors.append((routing_id, e.errno))
            return False

    def _handle(self, msg):
        now = time.monotonic()
        if len(msg) < 3:
            with self.cond:
                self.received.append((now, msg[0], msg[1:]))
                self.cond.notify_all()
            return
        peer, frames = msg[0], msg[1:]
        header, kind = frames[0], frames[1]
        answer = None
        with self.cond:
            self.received.append((now, peer, frames))
            self.counts[(header, kind)] = self.counts.get((header, kind), 0) + 1
            if header == b"W":
                if kind == b"1" and len(frames) >= 3:
                    self.workers[peer] = WorkerSeen(
                        peer, frames[2], len(frames) > 3 and frames[3] == b"pigato-native/1")
                    if self.ack_ready:
                        answer = ["W", "1"]
                elif kind == b"4":
                    seen = self.workers.get(peer)
                    if seen is not None and len(frames) >= 4:
                        try:
                            opts = json.loads(frames[3] or b"{}")
                            if isinstance(opts, dict) and "concurrency" in opts:
                                seen.concurrency = opts["concurrency"]
                        except ValueError:
                            pass
                    if self.answer_heartbeats and len(frames) <= 4:
                        answer = ["W", "4"]
                elif kind == b"5":
                    self.workers.pop(peer, None)
            elif header == b"C":
                self.clients.add(peer)
                if kind == b"4" and len(frames) <= 3 and self.answer_heartbeats:
                    answer = ["C", "4"]
                elif kind == b"2" and self.auto_answer is not None:
                    req = ClientRequest(peer, frames, now)
                    got = self.auto_answer(req)
                    if got is not None:
                        status, data = got
                        answer = ["C", "3", "", req.rid, status, data, "{}"]
            self.cond.notify_all()
        if answer is not None:
            self._send(peer, answer)

    def _heartbeat_all(self):
        with self.cond:
            workers = list(self.workers)
            clients = list(self.clients)
        for w in workers:
            self._send(w, ["W", "4"])
        for c in clients:
            self._send(c, ["C", "4"])

    def _run(self):
        next_beat = time.monotonic()
        while self.running:
            # Commands first: a test's action is never starved by traffic
            while True:
                try:
                    fn, args, done = self.commands.get_nowait()
                except queue.Empty:
                    break
                try:
                    done.put((True, fn(*args)))
                except Exception as e:      # handed back to the caller
                    done.put((False, e))
            now = time.monotonic()
            if self.heartbeat_ms and self.sock is not None and now >= next_beat:
                next_beat = now + self.heartbeat_ms / 1000.0
                self._heartbeat_all()
            if self.sock is None or not self.reading:
                time.sleep(0.005)
                continue
            if self.sock.poll(5, zmq.POLLIN):
                for _ in range(1000):
                    try:
                        msg = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(msg)

    def _call(self, fn, *args):
        """Runs fn(*args) in the broker thread; returns its result."""
        if threading.current_thread() is self.thread:
            return fn(*args)
        done = queue.Queue()
        self.commands.put((fn, args, done))
        ok, value = done.get(timeout=secs(30))
        if not ok:
            raise value
        return value

    # -- what the test drives ----------------------------------------------

    def stop(self):
        """Ends the thread and closes everything. Idempotent."""
        if not self.running:
            return
        try:
            self._call(self._close_now)
        finally:
            self.running = False
            self.thread.join(secs(5))
            self.ctx.term()

    def _close_now(self):
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.closed_at = time.monotonic()
        with self.cond:
            self.workers.clear()
            self.clients.clear()
        return self.closed_at

    def close(self):
        """Closes the socket: every connection drops at once (peers see a
        disconnect, not silence). Returns the monotonic time it happened."""
        return self._call(self._close_now)

    def rebind(self):
        """Listens again on the same port with the same key (after close)."""
        return self._call(self._open)

    def pause_reading(self):
        """Stops reading: what peers send piles up (up to rcvhwm per
        connection, then in the peers' own send queues). Heartbeats to
        the peers go on, so they still see a live broker."""
        self._call(lambda: setattr(self, "reading", False))

    def resume_reading(self):
        self._call(lambda: setattr(self, "reading", True))

    def send(self, routing_id, *frames, copy=True):
        """Sends arbitrary frames (after the routing id) to a peer. True if
        libzmq took it. copy=False hands big buffers over without a copy
        (the same bytes object may be given many times)."""
        return self._call(self._send, routing_id, list(frames), copy)

    def send_requests(self, worker, count, service=None, client=ALIAS, data='"x"',
                      opts="{}", rid_prefix="r"):
        """Sends count requests to a worker: W,2,client,service,"",rid,data,
        opts, regardless of its concurrency. Rids are rid_prefix + index.
        Returns the list of rids (bytes)."""
        service = service or self.workers_service(worker)

        def run():
            rids = []
            for index in range(count):
                rid = "%s%d" % (rid_prefix, index)
                self._send(worker, ["W", "2", client, service, "", rid, data, opts])
                rids.append(b(rid))
            return rids
        return self._call(run)

    def request_heartbeat(self, worker, rid, client=ALIAS):
        return self.send(worker, "W", "4", client, "", rid)

    def disconnect(self, routing_id, role="W", reason=None):
        frames = [role, "5"] + ([reason] if reason is not None else [])
        return self.send(routing_id, *frames)

    def answer(self, request, data, status=0, final=True, opts="{}"):
        """Answers a client's request (a ClientRequest): C,3|6,"",rid,status,
        data,opts. data is sent as given (bytes or text)."""
        return self.send(request.client, "C", "3" if final else "6", "", request.rid,
                         status, data, opts)

    def answer_error(self, request, text):
        """A final error reply: status -1 and text as a JSON string (a NUL
        byte goes as \\u0000)."""
        return self.answer(request, json_error(text), status=-1)

    # -- what it received ----------------------------------------------------

    def workers_service(self, worker):
        with self.cond:
            seen = self.workers.get(b(worker))
            return seen.service if seen else b"unknown"

    def count(self, header, kind):
        """Messages received of a header and type, e.g. count("W", "7") for
        rejects: cheap, for wait_for predicates over many messages."""
        with self.cond:
            return self.counts.get((b(header), b(kind)), 0)

    def mark(self):
        """Position to pass as since=: only messages received later."""
        with self.cond:
            return len(self.received)

    def messages(self, header=None, kind=None, peer=None, since=0):
        """(time, routing id, frames) received, filtered, in order."""
        with self.cond:
            return [(t, p, f) for t, p, f in self.received[since:]
                    if (header is None or (f and f[0] == b(header)))
                    and (kind is None or (len(f) > 1 and f[1] == b(kind)))
                    and (peer is None or p == b(peer))]

    def _worker_messages(self, kind):
        return [WorkerMessage(p, f, t) for t, p, f in self.messages("W", kind)]

    def rejects(self):
        return self._worker_messages("7")

    def replies(self):
        """Final replies from workers."""
        return self._worker_messages("3")

    def partials(self):
        return self._worker_messages("6")

    def requests(self, since=0):
        """Client requests, in order."""
        return [ClientRequest(p, f, t) for t, p, f in self.messages("C", "2", since=since)]

    def wait_for(self, predicate, timeout=5.0):
        """Waits until predicate(self) is true (re-checked when messages
        arrive, at most every 10 ms, and every 50 ms); returns its last
        value."""
        deadline = time.monotonic() + secs(timeout)
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return value
            with self.cond:
                self.cond.wait(min(remaining, 0.05))
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def wait_worker(self, service=None, timeout=10.0, exclude=()):
        """Routing id of a worker that sent READY (for service, if given),
        not one of exclude; None on timeout."""
        def find(r):
            with r.cond:
                for wid, seen in r.workers.items():
                    if wid in exclude:
                        continue
                    if service is None or seen.service == b(service):
                        return wid
            return None
        return self.wait_for(find, timeout)

    def wait_client(self, timeout=10.0):
        """Routing id of a client that spoke; None on timeout."""
        def find(r):
            with r.cond:
                return next(iter(r.clients), None)
        return self.wait_for(find, timeout)

    def wait_request(self, rid=None, timeout=10.0, since=0):
        """The first client request (with rid, if given; received after
        mark() gave since); None on timeout."""
        def find(r):
            for req in r.requests(since):
                if rid is None or req.rid == b(rid):
                    return req
            return None
        return self.wait_for(find, timeout)

    # harness-like helpers, so a test can pass a RogueBroker where it
    # passes a Broker to the CLI
    @property
    def server_key(self):
        return self.key.public

    def cli_args(self, heartbeat=500):
        return ["--broker", self.endpoint, "--heartbeat", str(heartbeat),
                "--server-key", self.key.public_file]
