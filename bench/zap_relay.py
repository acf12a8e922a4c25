#!/usr/bin/python3
"""The idle-connection baseline with ZAP: a bare libzmq CURVE ROUTER (pyzmq)
whose handshakes go through a trivial ZAP handler that accepts everyone,
answering pigato 0.0.46 client heartbeats (C, 4). pigato-broker requires
ZAP for every connection (fail closed), and libzmq keeps per-connection
state for it; this server shows that share, so the broker's own memory per
connection is broker - this, not broker - the plain relay.
    bench/zap_relay.py --bind EP --key SECRET_FILE
Prints event=ready on stderr once bound; stops on SIGTERM."""
import os
import signal
import sys

import zmq
import zmq.auth

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
public, secret = zmq.auth.load_certificate(args["--key"])
ctx = zmq.Context()
zap = ctx.socket(zmq.ROUTER)
zap.bind("inproc://zeromq.zap.01")
router = ctx.socket(zmq.ROUTER)
router.curve_server = 1
router.curve_secretkey = secret
router.zap_domain = b"pigato"
router.bind(args["--bind"])
# Exit at once: a clean exit would term the context, which waits forever
# for replies still queued to thousands of departed peers
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print("event=ready endpoint=%s" % args["--bind"], file=sys.stderr, flush=True)
poller = zmq.Poller()
poller.register(zap, zmq.POLLIN)
poller.register(router, zmq.POLLIN)
while True:
    for sock, _ in poller.poll():
        msg = sock.recv_multipart()
        if sock is zap:     # [id, "", version, request id, domain, address, identity, mechanism, key]
            zap.send_multipart([msg[0], b"", b"1.0", msg[3], b"200", b"OK", b"anyone", b""])
        elif msg[1:3] == [b"C", b"4"]:
            router.send_multipart([msg[0], b"C", b"4"])
