#!/usr/bin/python3
"""A libpigato worker driven through ctypes (libpigato.so) that drains on
SIGTERM, for test_drain.py:

  drain_worker.py SERVICE ENDPOINT[,ENDPOINT...] SERVER_KEY DELAY_MS
                  [HEARTBEAT_MS] [DRAIN_TIMEOUT_MS] [CONCURRENCY]

Echoes each request DELAY_MS after it came (the replies are held meanwhile,
so several are in flight at once). SIGTERM: pigato_worker_drain (), then
it goes on until the worker stopped (what it held answered), and exits 0.
stdout: "started", "request DATA" (each), "drain pending=N", "drained"."""

import ctypes
import os
import signal
import sys
import time

lib = ctypes.CDLL(os.path.join(os.environ.get("PIGATO_BUILD", ""), "libpigato.so"))
lib.pigato_worker_new.restype = ctypes.c_void_p
lib.pigato_worker_error.restype = ctypes.c_char_p
lib.pigato_worker_error.argtypes = [ctypes.c_void_p]
for name in ("pigato_worker_set_server_key", "pigato_worker_connect"):
    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.pigato_worker_set_heartbeat.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
lib.pigato_worker_set_concurrency.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.pigato_worker_wait.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.pigato_worker_drain.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.pigato_worker_pending.argtypes = [ctypes.c_void_p]
lib.pigato_worker_pending.restype = ctypes.c_size_t
lib.pigato_worker_destroy.argtypes = [ctypes.c_void_p]
lib.pigato_reply_end.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
lib.pigato_reply_destroy.argtypes = [ctypes.c_void_p]

E_CLOSED = -9
HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p)
held = []               # (due, reply handle, data)
delay = 0.0
term = False
verbose = os.environ.get("DRAIN_WORKER_VERBOSE") == "1"


@HANDLER
def on_request(worker, reply, data, size, arg):
    body = ctypes.string_at(data, size)
    held.append((time.monotonic() + delay, reply, body))
    if verbose:
        print("request %s" % body.decode(errors="replace"), flush=True)


def on_term(signum, frame):
    global term
    term = True


def main():
    global delay
    service, endpoints, server_key, delay_ms = sys.argv[1:5]
    heartbeat = int(sys.argv[5]) if len(sys.argv) > 5 else 300
    drain_timeout = int(sys.argv[6]) if len(sys.argv) > 6 else 30000
    concurrency = int(sys.argv[7]) if len(sys.argv) > 7 else 100
    delay = int(delay_ms) / 1000.0
    signal.signal(signal.SIGTERM, on_term)
    worker = lib.pigato_worker_new(service.encode(), on_request, None)
    lib.pigato_worker_set_heartbeat(worker, heartbeat, 3)
    lib.pigato_worker_set_concurrency(worker, concurrency)
    assert lib.pigato_worker_set_server_key(worker, server_key.encode()) == 0
    for endpoint in endpoints.split(","):
        assert lib.pigato_worker_connect(worker, endpoint.encode()) == 0
    print("started", flush=True)
    draining = False
    while True:
        rc = lib.pigato_worker_wait(worker, 5)
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, reply, data = held.pop(0)
            lib.pigato_reply_end(reply, data, len(data))
            holder = ctypes.c_void_p(reply)
            lib.pigato_reply_destroy(ctypes.byref(holder))
        if term and not draining:
            draining = True
            print("drain pending=%d" % lib.pigato_worker_pending(worker), flush=True)
            lib.pigato_worker_drain(worker, drain_timeout)
        if rc == E_CLOSED:
            break
    print("drained", flush=True)
    holder = ctypes.c_void_p(worker)
    lib.pigato_worker_destroy(ctypes.byref(holder))


if __name__ == "__main__":
    main()
