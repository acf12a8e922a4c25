/*  =========================================================================
    fake_broker.h - a real ROUTER socket on tcp://127.0.0.1 that plays the
    broker in client and worker unit tests: the test reads exactly what the
    peer sent and answers frame by frame. Header-only (static inline) so
    each test program takes what it uses.

    Peers are single-threaded and need their wait () called to do anything,
    so receiving takes a "pump" that drives the peer meanwhile. The
    fake_native_* helpers speak the native framing (docs/native-framing.md)
    with mesh/wire/native.c's writer and reader.
    =========================================================================
*/
#ifndef FAKE_BROKER_H_INCLUDED
#define FAKE_BROKER_H_INCLUDED

#include <czmq.h>
#include <stdarg.h>
#include <stdbool.h>
#include "../../mesh/wire/native.h"

typedef struct {
    zsock_t *router;       //  ROUTER bound on an ephemeral port
    char endpoint [256];   //  where peers connect
    zcert_t *cert;         //  CURVE server cert, NULL when plain
    char public_key [41];  //  its public key, Z85
} fake_broker_t;

//  Drives the peer under test for a few ms.
typedef void (fake_pump_fn) (void *peer);

//  Binds a ROUTER on endpoint (tcp://127.0.0.1:* for any free port, or
//  the endpoint of a broker that is gone, to play its restart); curve =
//  CURVE server (libzmq lets any client key in when no ZAP handler runs).
static inline fake_broker_t *
fake_broker_new_at (bool curve, const char *endpoint)
{
    fake_broker_t *self = (fake_broker_t *) calloc (1, sizeof *self);
    self->router = zsock_new (ZMQ_ROUTER);
    zsock_set_linger (self->router, 0);
    zsock_set_rcvtimeo (self->router, 0);
    if (curve) {
        self->cert = zcert_new ();
        zsock_set_curve_server (self->router, 1);
        zcert_apply (self->cert, self->router);
        memcpy (self->public_key, zcert_public_txt (self->cert), 41);
    }
    if (zsock_bind (self->router, "%s", endpoint) < 0) {
        zsock_destroy (&self->router);
        zcert_destroy (&self->cert);
        free (self);
        return NULL;
    }
    snprintf (self->endpoint, sizeof self->endpoint, "%s",
              zsock_endpoint (self->router));
    return self;
}

static inline fake_broker_t *
fake_broker_new (bool curve)
{
    return fake_broker_new_at (curve, "tcp://127.0.0.1:*");
}

static inline void
fake_broker_destroy (fake_broker_t **self_p)
{
    if (!*self_p)
        return;
    zsock_destroy (&(*self_p)->router);
    zcert_destroy (&(*self_p)->cert);
    free (*self_p);
    *self_p = NULL;
}

//  True if frame `index` of msg holds exactly text.
static inline bool
fake_frame_is (zmsg_t *msg, size_t index, const char *text)
{
    zframe_t *frame = zmsg_first (msg);
    for (size_t at = 0; frame && at < index; at++)
        frame = zmsg_next (msg);
    return frame && zframe_size (frame) == strlen (text)
        && memcmp (zframe_data (frame), text, strlen (text)) == 0;
}

//  Frame `index` as a new string (caller frees), NULL if missing.
static inline char *
fake_frame_str (zmsg_t *msg, size_t index)
{
    zframe_t *frame = zmsg_first (msg);
    for (size_t at = 0; frame && at < index; at++)
        frame = zmsg_next (msg);
    return frame ? zframe_strdup (frame) : NULL;
}

//  True if msg is [routing id] + exactly the given texts (NULL-terminated).
static inline bool
fake_msg_is (zmsg_t *msg, ...)
{
    va_list args;
    va_start (args, msg);
    size_t index = 1;
    bool same = true;
    const char *text;
    while ((text = va_arg (args, const char *))) {
        if (!fake_frame_is (msg, index, text))
            same = false;
        index++;
    }
    va_end (args);
    return same && zmsg_size (msg) == index;
}

//  Receives the next message whose header and type frames match (NULL =
//  any), skipping others, pumping the peer meanwhile. NULL on timeout.
static inline zmsg_t *
fake_recv (fake_broker_t *self, fake_pump_fn *pump, void *peer,
           const char *header, const char *type, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        zmsg_t *msg;
        while ((msg = zmsg_recv (self->router))) {
            if ((!header || fake_frame_is (msg, 1, header))
                && (!type || fake_frame_is (msg, 2, type)))
                return msg;
            zmsg_destroy (&msg);
        }
        if (pump)
            pump (peer);
        else {
            zmq_pollitem_t item = { zsock_resolve (self->router), 0, ZMQ_POLLIN,
                                    0 };
            zmq_poll (&item, 1, 5);
        }
    }
    return NULL;
}

//  zloop timer that ends the loop: a test's deadline.
static inline int
fake_loop_give_up (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    (void) arg;
    return -1;
}

//  Sends [to] + texts (NULL-terminated) from the ROUTER.
static inline void
fake_send (fake_broker_t *self, zframe_t *to, ...)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, zframe_data (to), zframe_size (to));
    va_list args;
    va_start (args, to);
    const char *text;
    while ((text = va_arg (args, const char *)))
        zmsg_addstr (msg, text);
    va_end (args);
    zmsg_send (&msg, self->router);
}

//  Copy of the routing id frame of a received message (caller destroys).
static inline zframe_t *
fake_sender (zmsg_t *msg)
{
    return zframe_dup (zmsg_first (msg));
}

//  Sends entries as one native message from the ROUTER: [to, batch,
//  external bodies]; bodies over 4 KiB go external. role: 'C' or 'W'.
static inline void
fake_native_send (fake_broker_t *self, zframe_t *to, char role,
                  const pigato__msg_t *entries, size_t count)
{
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, role);
    zmsg_t *bodies = zmsg_new ();
    for (size_t index = 0; index < count; index++) {
        bool external = pigato__native_body_external (
            entries [index].data.size);
        if (pigato__native_writer_add (&writer, &entries [index], external)
            != 0)
            abort ();
        if (external)
            zmsg_addmem (bodies, entries [index].data.data,
                         entries [index].data.size);
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, zframe_data (to), zframe_size (to));
    zmsg_addmem (msg, writer.data, writer.size);
    zframe_t *body;
    while ((body = zmsg_pop (bodies)))
        zmsg_append (msg, &body);
    zmsg_destroy (&bodies);
    pigato__native_writer_free (&writer);
    zmsg_send (&msg, self->router);
}

//  Sends raw frames [to, frames...] (a hand-made native message).
static inline void
fake_send_raw (fake_broker_t *self, zframe_t *to, const void *frame,
               size_t size, size_t externals, size_t external_size)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, zframe_data (to), zframe_size (to));
    zmsg_addmem (msg, frame, size);
    for (size_t index = 0; index < externals; index++) {
        void *body = calloc (1, external_size + 1);
        zmsg_addmem (msg, body, external_size);
        free (body);
    }
    zmsg_send (&msg, self->router);
}

//  True if msg (from the ROUTER) is a native message.
static inline bool
fake_is_native (zmsg_t *msg)
{
    zframe_t *frame = zmsg_first (msg);
    frame = frame ? zmsg_next (msg) : NULL;
    return frame
        && pigato__native_is (zframe_data (frame), zframe_size (frame));
}

//  Reads a native message a peer sent, as a broker would: up to max
//  entries into out (fields borrow msg; external bodies in out->data).
//  Returns the entry count, -1 if malformed or an external frame is
//  missing or unused.
static inline int
fake_native_read (zmsg_t *msg, pigato__msg_t *out, size_t max)
{
    if (!fake_is_native (msg))
        return -1;
    zmsg_first (msg);
    zframe_t *batch = zmsg_next (msg);
    pigato__native_reader_t reader;
    if (pigato__native_reader_init (&reader, zframe_data (batch),
                                    zframe_size (batch), true)
        != 0)
        return -1;
    int count = 0;
    int more;
    pigato__msg_t entry;
    memset (&entry, 0, sizeof entry);
    bool external;
    while ((more = pigato__native_next (&reader, &entry, &external)) == 1) {
        if (external) {
            zframe_t *body = zmsg_next (msg);
            if (!body)
                return -1;
            entry.data.data = zframe_data (body);
            entry.data.size = zframe_size (body);
        }
        if ((size_t) count < max)
            out [count] = entry;
        count++;
    }
    if (more < 0 || zmsg_next (msg))
        return -1;
    return count;
}

//  Receives the next native message, skipping others, pumping the peer.
static inline zmsg_t *
fake_recv_native (fake_broker_t *self, fake_pump_fn *pump, void *peer,
                  int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        zmsg_t *msg = fake_recv (self, pump, peer, NULL, NULL,
                                 (int) (deadline - zclock_mono ()));
        if (!msg || fake_is_native (msg))
            return msg;
        zmsg_destroy (&msg);
    }
    return NULL;
}

//  Counts the entries of a type in entries read by fake_native_read.
static inline int
fake_count_type (const pigato__msg_t *entries, int count, int type)
{
    int found = 0;
    for (int index = 0; index < count; index++)
        if (entries [index].type == type)
            found++;
    return found;
}

#endif
