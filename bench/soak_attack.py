#!/usr/bin/python3
"""bench/soak_attack.py ROLE --endpoint EP --server-key Z85 [--key SECRETFILE]
[--stats FILE] [ROLE OPTIONS]: one attacker of make soak-hostile
(bench/soak_hostile.py starts each in a process of its own and ends it
with SIGTERM). Raw pyzmq DEALER peers speaking the pigato 0.0.46 framing
(docs/protocol.md) with the identity whose secret key file --key names.
On SIGTERM writes one line of key=value counters to FILE and exits:
sent (messages), replies (messages received), leaked (received frames
holding a victim's body, "VICTIM-": must stay 0), errors by code
(err_E_ACCESS_DENIED=...) and the role's own counters.

Roles:
  denied        requests for --service (one the identity may not call), as
                fast as the broker answers them
  takeover      connections that each take a routing id of a pool that
                other takeover processes (other identities) use and leave
                (or one of --ids, worker ids of others), send what
                --mode says (call: requests held with timeout -1; serve:
                READY and forged replies; none: denied requests) and close
  large         one message of a request's four frames and --frames more
                of --frame-mib MiB each, again and again (the broker must take it all in before it
                can drop it: 12 frames at most)
  pending       requests for --service (no worker) with timeout -1, 1 MiB
                and tiny ones in turn, never answered; at most --max-mib
                MiB of large bodies, tiny ones after that
  slowworker    a worker of --service answering every request at once
                with --reply-mib MiB
  slowclient    requests for --service at --rate per second whose replies
                it never reads (receive high-water mark 1)
  busyworker    a worker of --service (routing id --id, concurrency 1)
                that never answers
  targeted      requests for --service with opts workerId = --target
                (and, in turn, each of --ids), timeout -1
  wildworker    a worker of --service (a wildcard, attack.*) answering at
                once with a tiny body
  spread        requests over --names distinct names PREFIX0.. (--service
                is the prefix), at most --inflight in flight
  dir           $dir requests, with no body and naming a service, in turn
  handshake     connections with keys the broker never heard of, --count
                at a time, each closed and replaced after 250 ms
  idle          --count TCP connections that never say a word, each
                reopened when the broker closes it
"""
import argparse
import collections
import os
import random
import resource
import selectors
import signal
import socket
import time

import zmq

MARK = b"VICTIM-"
HEARTBEAT_S = 2.0
stats = collections.Counter()
args = None


def write_stats(*_):
    if args and args.stats:
        with open(args.stats + ".tmp", "w") as f:
            f.write(" ".join("%s=%d" % kv for kv in sorted(stats.items())) + "\n")
        os.replace(args.stats + ".tmp", args.stats)
    os._exit(0)


def read_key(path):
    """(public, secret) Z85 bytes of a zcert secret key file."""
    public = secret = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("public-key"):
                public = line.split('"')[1].encode()
            elif line.startswith("secret-key"):
                secret = line.split('"')[1].encode()
    return public, secret


CTX = None


def dealer(routing_id=None, key=None, rcvhwm=None, sndhwm=None):
    """A DEALER connected to the broker with our key (or a new unknown one)."""
    s = CTX.socket(zmq.DEALER)
    s.linger = 0
    if routing_id is not None:
        s.routing_id = routing_id
    if rcvhwm is not None:
        s.rcvhwm = rcvhwm
    if sndhwm is not None:
        s.sndhwm = sndhwm
    public, secret = key or KEY
    s.curve_serverkey = args.server_key.encode()
    s.curve_publickey = public
    s.curve_secretkey = secret
    s.connect(args.endpoint)
    stats["connections"] += 1
    return s


def note(frames):
    """Counts a message we received: errors by code, victims' bodies."""
    stats["replies"] += 1
    for f in frames:
        if MARK in f:
            stats["leaked"] += 1
    # C,3,"",rid,-1,data: an error reply; its code is the first word
    if len(frames) >= 6 and frames[1] in (b"3", b"6") and frames[4] == b"-1":
        code = frames[5].strip(b'"').split(b" ", 1)[0][:32].decode("ascii", "replace")
        stats["err_" + "".join(c if c.isalnum() or c == "_" else "_" for c in code)] += 1


def drain(s, timeout_ms=0):
    """Reads what has arrived (waiting at most timeout_ms for the first)."""
    got = []
    if timeout_ms and not s.poll(timeout_ms):
        return got
    while True:
        try:
            frames = s.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return got
        note(frames)
        got.append(frames)


def send(s, frames, block=False):
    try:
        s.send_multipart(frames, 0 if block else zmq.NOBLOCK,
                         copy=all(len(f) < 65536 for f in frames))
        stats["sent"] += 1
        return True
    except zmq.Again:
        return False


class Heartbeat:
    """A client's or worker's link heartbeat every 2 s."""

    def __init__(self, s, worker_opts=None):
        self.s, self.opts, self.next = s, worker_opts, 0

    def __call__(self):
        now = time.monotonic()
        if now >= self.next:
            self.next = now + HEARTBEAT_S
            frames = [b"W", b"4", b"", self.opts] if self.opts else [b"C", b"4"]
            send(self.s, frames)


def request(service, rid, data=b"x", opts=b""):
    return [b"C", b"2", service.encode(), rid.encode(), data, opts]


def flood(s, make, window=2000, heartbeat=None):
    """Sends make(n) messages as fast as the socket takes them, reading
    replies in between, until SIGTERM."""
    n = 0
    while True:
        for _ in range(window):
            if not send(s, make(n)):
                break
            n += 1
        drain(s, 1)
        if heartbeat:
            heartbeat()


# -- roles -------------------------------------------------------------------

def role_denied():
    s = dealer()
    flood(s, lambda n: request(args.service, "d%d" % n, b'"denied"'), heartbeat=Heartbeat(s))


def role_takeover():
    # Every takeover process (one per identity) draws from the same pool of
    # routing ids, so each connection takes an id that one of them, under
    # another identity, held a moment ago; and now and then a worker id of
    # the victims (--ids), which the broker must refuse while it is in use
    pool = [b"tk-%d" % i for i in range(32)]
    victims = [i.encode() for i in args.ids.split(",") if i]
    while True:
        if victims and random.random() < 0.3:
            rid = random.choice(victims)
            stats["victim_ids_tried"] += 1
        else:
            rid = random.choice(pool)
        s = dealer(routing_id=rid)
        if args.mode == "call":
            for i in range(50):
                send(s, request("attack.void", "t%d" % i, b"x" * 64, b'{"timeout":-1}'))
            send(s, [b"C", b"4"])
        elif args.mode == "serve":
            send(s, [b"W", b"1", b"attack.takeover"])
            send(s, [b"W", b"1", b"victim.echo"])
            # Forged replies for the requests other ids of the pool left
            for i in range(20):
                send(s, [b"W", b"3", random.choice(pool), b"", b"t%d" % i, b"0",
                         b"forged", b"{}"])
        else:
            for i in range(50):
                send(s, request("victim.echo", "t%d" % i, b"x" * 64))
        drain(s, 30)
        drain(s, 0)
        s.close(0)
        stats["takeovers"] += 1


def role_large():
    s = dealer(sndhwm=2)
    big = b"L" * (args.frame_mib << 20)
    frames = [b"C", b"2", b"victim.echo", b"rid"] + [big] * args.frames
    while True:
        s.send_multipart(frames, copy=False)
        stats["sent"] += 1
        stats["mib_sent"] += args.frame_mib * args.frames
        drain(s, 0)


def role_pending():
    s = dealer()
    big = b'"' + b"P" * ((1 << 20) - 2) + b'"'
    budget = [args.max_mib]

    def make(n):
        if n % 2 == 0 and budget[0] > 0:
            budget[0] -= 1
            stats["mib_queued"] += 1
            return request(args.service, "p%d" % n, big, b'{"timeout":-1}')
        return request(args.service, "p%d" % n, b'"tiny"', b'{"timeout":-1}')
    flood(s, make, window=200, heartbeat=Heartbeat(s))


def worker_loop(s, service, answer, concurrency):
    opts = b'{"concurrency":%d}' % concurrency
    send(s, [b"W", b"1", service.encode()], block=True)
    send(s, [b"W", b"4", b"", opts], block=True)
    beat = Heartbeat(s, opts)
    while True:
        beat()
        for frames in drain(s, 100):
            # W,2,client,service,"",rid,data,opts
            if len(frames) >= 6 and frames[1] == b"2":
                stats["requests"] += 1
                if answer is not None:
                    reply = [b"W", b"3", frames[2], b"", frames[5], b"0", answer, b""]
                    while not send(s, reply):
                        drain(s, 10)


def role_slowworker():
    worker_loop(dealer(), args.service, b"S" * (args.reply_mib << 20), 100000)


def role_slowclient():
    s = dealer(rcvhwm=1)
    s.setsockopt(zmq.RCVBUF, 4096)
    beat, n = Heartbeat(s), 0
    start = time.monotonic()
    while True:
        due = int((time.monotonic() - start) * args.rate)
        while n < due:
            send(s, request(args.service, "s%d" % n, b'"big"', b'{"timeout":-1}'), block=True)
            n += 1
        beat()
        time.sleep(0.005)                   # never reads a reply


def role_busyworker():
    worker_loop(dealer(routing_id=args.id.encode()), args.service, None, 1)


def role_targeted():
    s = dealer()
    targets = [args.target] + [i for i in args.ids.split(",") if i]

    def make(n):
        target = targets[n % len(targets)]
        opts = b'{"workerId":"%s","timeout":-1}' % target.encode()
        service = args.service if n % 4 else "victim.echo"
        return request(service, "w%d" % n, b'"target"', opts)
    flood(s, make, heartbeat=Heartbeat(s))


def role_wildworker():
    worker_loop(dealer(), args.service, b'"w"', 100000)


def role_spread():
    s = dealer()
    beat, n = Heartbeat(s), 0
    prefix = args.service
    while True:
        while n - stats["replies"] < args.inflight:
            if not send(s, request("%s%d" % (prefix, n % args.names), "n%d" % n,
                                   b'"x"', b'{"timeout":10000}')):
                break
            n += 1
        drain(s, 1)
        beat()


def role_dir():
    s = dealer()
    flood(s, lambda n: [b"C", b"2", b"$dir", b"r%d" % n]
          + ([] if n % 2 else [b'"victim.echo"']), heartbeat=Heartbeat(s))


def role_handshake():
    live = collections.deque()
    while True:
        while len(live) < args.count:
            live.append((dealer(key=zmq.curve_keypair()), time.monotonic()))
            send(live[-1][0], [b"C", b"4"])
        s, born = live[0]
        wait = born + 0.25 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        drain(s, 0)
        s.close(0)
        live.popleft()


def role_idle():
    host, port = args.endpoint.rsplit("/", 1)[-1].rsplit(":", 1)
    open_ = {}

    sel = selectors.DefaultSelector()
    while True:
        while len(open_) < args.count:
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((host, int(port)))
            open_[c.fileno()] = c
            sel.register(c, selectors.EVENT_READ)
            stats["connections"] += 1
        for key, _ in sel.select(0.1):
            c = key.fileobj
            try:
                data = c.recv(4096)            # the broker's greeting, or its close
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(c)
                del open_[c.fileno()]
                c.close()
                stats["closed_by_broker"] += 1


def main():
    global args, CTX, KEY
    p = argparse.ArgumentParser()
    p.add_argument("role")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--server-key", required=True)
    p.add_argument("--key")
    p.add_argument("--stats")
    p.add_argument("--service", default="attack.void")
    p.add_argument("--mode", default="call")
    p.add_argument("--ids", default="")
    p.add_argument("--id", default="atk-busy")
    p.add_argument("--target", default="atk-busy")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--frame-mib", type=int, default=15)
    p.add_argument("--max-mib", type=int, default=2048)
    p.add_argument("--reply-mib", type=int, default=4)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--names", type=int, default=30000)
    p.add_argument("--inflight", type=int, default=5000)
    p.add_argument("--count", type=int, default=100)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, write_stats)
    signal.signal(signal.SIGINT, write_stats)
    CTX = zmq.Context()
    CTX.max_sockets = 100000
    KEY = read_key(args.key) if args.key else zmq.curve_keypair()
    globals()["role_" + args.role]()


if __name__ == "__main__":
    main()
