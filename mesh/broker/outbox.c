/*  =========================================================================
    outbox.c - per-peer native batches of the broker (see outbox.h)
    =========================================================================
*/
#include <string.h>
#include "outbox.h"

#define OUTBOX_MAX 64  //  peers with a batch open at once

typedef struct {
    byte to [255];  //  routing id
    size_t to_size;
    pigato__conn_t conn;             //  the connection it goes to
    pigato__native_writer_t writer;  //  batch frame (buffer kept)
    zmq_msg_t *externals;            //  external bodies, allocated once
    size_t external_count;
    bool in_use;  //  in the open list
} s_box_t;

struct _pigato__outbox_t {
    void *router;                  //  socket to send on
    bool curve;                    //  frames carry CURVE's overhead
    pigato__outbox_sent_fn *sent;  //  told what each batch took
    void *sent_arg;
    s_box_t boxes [OUTBOX_MAX];  //  storage
    s_box_t *open [OUTBOX_MAX];  //  boxes holding a batch
    size_t open_count;
    int64_t batches;  //  batches sent
    int64_t entries;  //  entries sent
};

pigato__outbox_t *
pigato__outbox_new (void *router, bool curve, pigato__outbox_sent_fn *sent,
                    void *arg)
{
    pigato__outbox_t *self = (pigato__outbox_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->router = router;
    self->curve = curve;
    self->sent = sent;
    self->sent_arg = arg;
    for (size_t index = 0; index < OUTBOX_MAX; index++)
        pigato__native_writer_init (&self->boxes [index].writer, 'C');
    return self;
}

void
pigato__outbox_destroy (pigato__outbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__outbox_t *self = *self_p;
    for (size_t index = 0; index < OUTBOX_MAX; index++) {
        s_box_t *box = &self->boxes [index];
        for (size_t ext = 0; ext < box->external_count; ext++)
            zmq_msg_close (&box->externals [ext]);
        free (box->externals);
        pigato__native_writer_free (&box->writer);
    }
    free (self);
    *self_p = NULL;
}

//  Sends a box's batch and closes it (position `slot` in the open list).
static void
s_send (pigato__outbox_t *self, size_t slot)
{
    s_box_t *box = self->open [slot];
    size_t externals = box->external_count;
    uint64_t bytes = 0;  //  on the wire
    bool sent = box->writer.size > 0
             && zmq_send (self->router, box->to, box->to_size,
                          ZMQ_SNDMORE | ZMQ_DONTWAIT)
                    != -1;
    if (sent) {
        sent = zmq_send (self->router, box->writer.data, box->writer.size,
                         externals ? ZMQ_SNDMORE : 0)
            != -1;
        bytes += pigato__wire_bytes (box->writer.size, self->curve);
    }
    for (size_t ext = 0; ext < externals; ext++) {
        if (sent) {
            size_t size = zmq_msg_size (&box->externals [ext]);
            sent = zmq_msg_send (&box->externals [ext], self->router,
                                 ext + 1 < externals ? ZMQ_SNDMORE : 0)
                != -1;
            bytes += pigato__wire_bytes (size, self->curve);
        }
        zmq_msg_close (&box->externals [ext]);
    }
    if (sent) {
        self->batches++;
        self->entries += (int64_t) box->writer.entries;
        if (self->sent)
            self->sent (self->sent_arg, &box->conn, bytes, 1 + externals);
    }
    box->external_count = 0;
    box->in_use = false;
    pigato__native_writer_reset (&box->writer);
    self->open [slot] = self->open [--self->open_count];
}

static size_t
s_find (pigato__outbox_t *self, const pigato__bytes_t *to, char role)
{
    for (size_t slot = 0; slot < self->open_count; slot++) {
        s_box_t *box = self->open [slot];
        if (box->to_size == to->size && box->writer.role == role
            && memcmp (box->to, to->data, to->size) == 0)
            return slot;
    }
    return OUTBOX_MAX;
}

static s_box_t *
s_free_box (pigato__outbox_t *self)
{
    for (size_t index = 0; index < OUTBOX_MAX; index++)
        if (!self->boxes [index].in_use)
            return &self->boxes [index];
    return NULL;
}

int
pigato__outbox_add (pigato__outbox_t *self, const pigato__bytes_t *to,
                    const pigato__conn_t *conn, char role,
                    const pigato__msg_t *entry, zmq_msg_t *body_part)
{
    if (to->size == 0 || to->size > sizeof self->boxes [0].to)
        return -1;
    size_t slot = s_find (self, to, role);
    if (slot < OUTBOX_MAX
        && pigato__native_writer_full (&self->open [slot]->writer)) {
        s_send (self, slot);
        slot = OUTBOX_MAX;
    }
    if (slot == OUTBOX_MAX) {
        if (self->open_count == OUTBOX_MAX)
            s_send (self, 0);  //  oldest batch goes first
        s_box_t *box = s_free_box (self);
        if (!box)
            return -1;
        memcpy (box->to, to->data, to->size);
        box->to_size = to->size;
        box->conn = *conn;
        box->writer.role = role;
        box->in_use = true;
        slot = self->open_count++;
        self->open [slot] = box;
    }
    s_box_t *box = self->open [slot];
    bool external = pigato__native_body_external (entry->data.size);
    if (external) {
        if (!box->externals) {
            box->externals = (zmq_msg_t *) malloc (PIGATO__NATIVE_EXTERNAL_MAX
                                                   * sizeof (zmq_msg_t));
            if (!box->externals)
                return -1;
        }
        zmq_msg_t *part = &box->externals [box->external_count];
        if (body_part && zmq_msg_data (body_part) == entry->data.data
            && zmq_msg_size (body_part) == entry->data.size) {
            zmq_msg_init (part);
            if (zmq_msg_copy (part, body_part))
                return -1;
        }
        else {
            if (zmq_msg_init_size (part, entry->data.size))
                return -1;
            memcpy (zmq_msg_data (part), entry->data.data, entry->data.size);
        }
        if (pigato__native_writer_add (&box->writer, entry, true)) {
            zmq_msg_close (part);
            return -1;
        }
        box->external_count++;
    }
    else if (pigato__native_writer_add (&box->writer, entry, false))
        return -1;
    return 0;
}

void
pigato__outbox_flush_peer (pigato__outbox_t *self, const pigato__bytes_t *to)
{
    for (size_t slot = 0; slot < self->open_count;) {
        s_box_t *box = self->open [slot];
        if (box->to_size == to->size
            && memcmp (box->to, to->data, to->size) == 0)
            s_send (self, slot);  //  moves the last box into slot
        else
            slot++;
    }
}

void
pigato__outbox_flush (pigato__outbox_t *self)
{
    while (self->open_count)
        s_send (self, self->open_count - 1);
}

int64_t
pigato__outbox_batches (pigato__outbox_t *self)
{
    return self->batches;
}

int64_t
pigato__outbox_entries (pigato__outbox_t *self)
{
    return self->entries;
}
