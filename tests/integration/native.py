"""The native framing (docs/native-framing.md) in Python, written from the
spec, for tests that speak it by hand: batch frames of packed entries, then
external bodies."""

import struct

MAGIC = 0xD7
OFFER = b"pigato-native/1"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT, PARTIAL, REJECT = range(1, 8)
ERROR, EXTERNAL = 0x01, 0x02


def b(value):
    return value if isinstance(value, bytes) else str(value).encode()


class Entry:
    def __init__(self, type, client=b"", service=b"", rid=b"", opts=b"", body=b"",
                 error=False, external=False):
        self.type = type
        self.client, self.service, self.rid = b(client), b(service), b(rid)
        self.opts, self.body = b(opts), b(body)
        self.error, self.external = error, external

    def __repr__(self):
        return "Entry(type=%d rid=%r service=%r client=%r error=%r body=%r)" % (
            self.type, self.rid, self.service, self.client, self.error, self.body[:40])


def head(type, flags, client, rid, service, opts, body_len):
    return struct.pack(">BBBBHHI", type, flags, len(client), len(rid), len(service),
                       len(opts), body_len)


def encode(role, entries, version=1, flags=0):
    """Frames of one native message: the batch frame, then external bodies."""
    frame = bytearray([MAGIC, version, ord(role), flags])
    externals = []
    for e in entries:
        f = (ERROR if e.error else 0) | (EXTERNAL if e.external else 0)
        frame += head(e.type, f, e.client, e.rid, e.service, e.opts,
                      0 if e.external else len(e.body))
        frame += e.client + e.service + e.rid + e.opts
        if e.external:
            externals.append(e.body)
        else:
            frame += e.body
    return [bytes(frame)] + externals


def is_native(msg):
    return len(msg) >= 1 and len(msg[0]) >= 1 and msg[0][0] == MAGIC


def decode(msg):
    """(role, [Entry]) of a native message; raises ValueError if malformed."""
    frame = msg[0]
    if len(frame) < 4 or frame[0] != MAGIC or frame[1] != 1 or frame[3] != 0:
        raise ValueError("bad batch head %r" % frame[:4])
    role = chr(frame[2])
    at, entries, ext = 4, [], 1
    while at < len(frame):
        if len(frame) - at < 12:
            raise ValueError("short entry head")
        type, flags, cl, rl, sl, ol, bl = struct.unpack(">BBBBHHI", frame[at:at + 12])
        at += 12
        fields = []
        for n in (cl, sl, rl, ol, bl):
            if at + n > len(frame):
                raise ValueError("entry runs past the frame")
            fields.append(frame[at:at + n])
            at += n
        client, service, rid, opts, body = fields
        external = bool(flags & EXTERNAL)
        if external:
            body = msg[ext]
            ext += 1
        entries.append(Entry(type, client, service, rid, opts, body,
                             bool(flags & ERROR), external))
    if ext != len(msg):
        raise ValueError("unused frames")
    return role, entries
