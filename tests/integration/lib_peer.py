#!/usr/bin/python3
"""A long-running libpigato peer driven through ctypes (libpigato.so, no
pyzmq in this process), for tests that need a worker or a client that
keeps going across refusals and broker restarts:

  lib_peer.py worker SERVICE ENDPOINT SERVER_KEY|insecure [KEY_FILE|-]
      echoes; prints "refused STATUS TEXT" for each refusal wait () reports
  lib_peer.py client SERVICE ENDPOINT SERVER_KEY [KEY_FILE|-]
      one blocking call every 100 ms (timeout 2000 ms); prints
      "reply STATUS TEXT" for each

Stops on SIGTERM."""

import ctypes
import os
import sys
import time

lib = ctypes.CDLL(os.path.join(os.environ.get("PIGATO_BUILD", ""), "libpigato.so"))
lib.pigato_worker_new.restype = ctypes.c_void_p
lib.pigato_client_new.restype = ctypes.c_void_p
lib.pigato_worker_error.restype = ctypes.c_char_p
lib.pigato_worker_error.argtypes = [ctypes.c_void_p]
for name in ("pigato_worker_set_server_key", "pigato_worker_set_key_file",
             "pigato_worker_connect", "pigato_client_set_server_key",
             "pigato_client_set_key_file", "pigato_client_connect"):
    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.pigato_worker_set_insecure.argtypes = [ctypes.c_void_p, ctypes.c_bool]
lib.pigato_worker_set_heartbeat.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
lib.pigato_client_set_heartbeat.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
lib.pigato_worker_wait.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.pigato_reply_end.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
lib.pigato_reply_destroy.argtypes = [ctypes.c_void_p]
lib.pigato_client_call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                   ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                   ctypes.POINTER(ctypes.c_size_t)]

HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p)


@HANDLER
def on_request(worker, reply, data, size, arg):
    holder = ctypes.c_void_p(reply)
    lib.pigato_reply_end(reply, data, size)
    lib.pigato_reply_destroy(ctypes.byref(holder))


def main():
    role, service, endpoint, server_key = sys.argv[1:5]
    key_file = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
    if role == "worker":
        peer = lib.pigato_worker_new(service.encode(), on_request, None)
        lib.pigato_worker_set_heartbeat(peer, 300, 3)
        if server_key == "insecure":
            lib.pigato_worker_set_insecure(peer, True)
        else:
            assert lib.pigato_worker_set_server_key(peer, server_key.encode()) == 0
        if key_file:
            assert lib.pigato_worker_set_key_file(peer, key_file.encode()) == 0
        assert lib.pigato_worker_connect(peer, endpoint.encode()) == 0
        print("started", flush=True)
        while True:
            rc = lib.pigato_worker_wait(peer, 1000)
            if rc not in (0,):
                print("refused %d %s" % (rc, lib.pigato_worker_error(peer).decode()),
                      flush=True)
    peer = lib.pigato_client_new()
    lib.pigato_client_set_heartbeat(peer, 300, 3)
    assert lib.pigato_client_set_server_key(peer, server_key.encode()) == 0
    if key_file:
        assert lib.pigato_client_set_key_file(peer, key_file.encode()) == 0
    assert lib.pigato_client_connect(peer, endpoint.encode()) == 0
    print("started", flush=True)
    while True:
        reply = ctypes.c_char_p()
        size = ctypes.c_size_t()
        rc = lib.pigato_client_call(peer, service.encode(), b'"ping"', 6,
                                    b'{"timeout":2000}', None, None,
                                    ctypes.byref(reply), ctypes.byref(size))
        print("reply %d %s" % (rc, reply.value.decode(errors="replace")), flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
