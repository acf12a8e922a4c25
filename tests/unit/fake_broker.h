/*  =========================================================================
    fake_broker.h - a real ROUTER socket on tcp://127.0.0.1 that plays the
    broker in client and worker unit tests: the test reads exactly what the
    peer sent and answers frame by frame. Header-only (static inline) so
    each test program takes what it uses.

    Peers are single-threaded and need their wait () called to do anything,
    so receiving takes a "pump" that drives the peer meanwhile.
    =========================================================================
*/
#ifndef FAKE_BROKER_H_INCLUDED
#define FAKE_BROKER_H_INCLUDED

#include <czmq.h>
#include <stdarg.h>
#include <stdbool.h>

typedef struct {
    zsock_t *router;            //  ROUTER bound on an ephemeral port
    char endpoint [256];        //  where peers connect
    zcert_t *cert;              //  CURVE server cert, NULL when plain
    char public_key [41];       //  its public key, Z85
} fake_broker_t;

//  Drives the peer under test for a few ms.
typedef void (fake_pump_fn) (void *peer);

//  Binds a ROUTER on tcp://127.0.0.1:*; curve = CURVE server (libzmq lets
//  any client key in when no ZAP handler runs).
static inline fake_broker_t *
fake_broker_new (bool curve)
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
    if (zsock_bind (self->router, "tcp://127.0.0.1:*") < 0) {
        zsock_destroy (&self->router);
        zcert_destroy (&self->cert);
        free (self);
        return NULL;
    }
    snprintf (self->endpoint, sizeof self->endpoint, "%s",
              zsock_endpoint (self->router));
    return self;
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
            &&  (!type || fake_frame_is (msg, 2, type)))
                return msg;
            zmsg_destroy (&msg);
        }
        if (pump)
            pump (peer);
        else {
            zmq_pollitem_t item = { zsock_resolve (self->router), 0,
                                    ZMQ_POLLIN, 0 };
            zmq_poll (&item, 1, 5);
        }
    }
    return NULL;
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

#endif
