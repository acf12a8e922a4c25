/*  =========================================================================
    native.c - the native framing: batch frame reader and writer
    (docs/native-framing.md). Every length a peer sends is checked against
    what is left of the frame before it is used.
    =========================================================================
*/
#include <string.h>
#include "native.h"

//  Fields an entry may carry, by direction and type
#define F_CLIENT  0x01
#define F_SERVICE 0x02
#define F_RID     0x04
#define F_OPTS    0x08
#define F_BODY    0x10
#define F_ERROR   0x20

//  Allowed fields per type (index = type), or -1 if the type is not
//  allowed in that direction. Rows: client->broker, worker->broker,
//  broker->client, broker->worker.
static const int s_allowed [4][8] = {
    //  -, READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT, PARTIAL, REJECT
    { -1, -1, F_SERVICE | F_RID | F_OPTS | F_BODY, -1, F_RID, 0, -1, -1 },
    { -1, F_SERVICE, -1, F_CLIENT | F_RID | F_OPTS | F_BODY | F_ERROR, F_OPTS,
      0, F_CLIENT | F_RID | F_OPTS | F_BODY | F_ERROR,
      F_CLIENT | F_RID | F_BODY },
    { -1, -1, -1, F_RID | F_OPTS | F_BODY | F_ERROR, 0, -1,
      F_RID | F_OPTS | F_BODY | F_ERROR, -1 },
    { -1, 0, F_CLIENT | F_SERVICE | F_RID | F_OPTS | F_BODY, -1,
      F_CLIENT | F_RID, 0, -1, -1 }
};

int
pigato__framing_parse (const char *text)
{
    if (!text)
        return -1;
    if (streq (text, "auto"))
        return PIGATO__FRAMING_AUTO;
    if (streq (text, "native"))
        return PIGATO__FRAMING_NATIVE;
    if (streq (text, "0.0.46") || streq (text, "046"))
        return PIGATO__FRAMING_046;
    return -1;
}

bool
pigato__native_is (const void *data, size_t size)
{
    return size > 0 && ((const byte *) data) [0] == PIGATO__NATIVE_MAGIC;
}

int
pigato__msg_validate (pigato__msg_t *msg, bool from_peer)
{
    if (msg->rid.size > PIGATO_RID_MAX || msg->client.size > 255
        || msg->service.size > PIGATO_SERVICE_MAX)
        return PIGATO__DECODE_FIELD;
    if ((msg->type == PIGATO__REQUEST || msg->type == PIGATO__READY)
        && msg->service.size == 0
        && (from_peer || msg->type == PIGATO__REQUEST))
        return PIGATO__DECODE_FIELD;
    bool worker_reply = msg->role == 'W' && from_peer
                     && (msg->type == PIGATO__REPLY
                         || msg->type == PIGATO__PARTIAL
                         || msg->type == PIGATO__REJECT);
    if ((msg->type == PIGATO__REQUEST || msg->request_heartbeat || worker_reply)
        && msg->rid.size == 0)
        return PIGATO__DECODE_FIELD;
    return PIGATO__DECODE_OK;
}

int
pigato__native_reader_init (pigato__native_reader_t *self, const void *frame,
                            size_t size, bool from_peer)
{
    memset (self, 0, sizeof *self);
    const byte *bytes = (const byte *) frame;
    if (size < PIGATO__NATIVE_HEAD || bytes [0] != PIGATO__NATIVE_MAGIC)
        return PIGATO__DECODE_HEADER;
    if (bytes [1] != PIGATO__NATIVE_VERSION || bytes [3] != 0
        || (bytes [2] != 'C' && bytes [2] != 'W'))
        return PIGATO__DECODE_HEADER;
    self->frame = bytes;
    self->size = size;
    self->offset = PIGATO__NATIVE_HEAD;
    self->role = (char) bytes [2];
    self->from_peer = from_peer;
    if (size == PIGATO__NATIVE_HEAD)
        return PIGATO__DECODE_SHORT;  //  a batch holds 1+ entries
    return PIGATO__DECODE_OK;
}

//  An entry's 12-byte head (docs/native-framing.md), decoded.
typedef struct {
    int type;
    int flags;
    size_t client, rid, service, opts, body;  //  field lengths
} s_head_t;

static inline s_head_t
s_head (const byte *head)
{
    return (s_head_t) { .type = head [0],
                        .flags = head [1],
                        .client = head [2],
                        .rid = head [3],
                        .service = ((size_t) head [4] << 8) | head [5],
                        .opts = ((size_t) head [6] << 8) | head [7],
                        .body = ((size_t) head [8] << 24)
                              | ((size_t) head [9] << 16)
                              | ((size_t) head [10] << 8) | head [11] };
}

//  Points a field at size bytes from at (NULL when empty); returns what
//  follows it.
static inline const byte *
s_field (pigato__bytes_t *to, const byte *at, size_t size)
{
    to->data = size ? at : NULL;
    to->size = size;
    return at + size;
}

//  Fills out from an entry's head and its fields (which follow the head
//  in the order client, service, rid, opts, body); sender and conn are
//  kept. Returns the entry's total size.

static inline size_t
s_fill (pigato__msg_t *out, char role, const s_head_t *h, const byte *field)
{
    const byte *start = field;
    pigato__bytes_t sender = out->sender;
    pigato__conn_t conn = out->conn;
    memset (out, 0, sizeof *out);
    out->sender = sender;
    out->conn = conn;
    out->role = role;
    out->type = h->type;
    out->status = (h->flags & PIGATO__NATIVE_ERROR) ? -1 : 0;
    field = s_field (&out->client, field, h->client);
    field = s_field (&out->service, field, h->service);
    field = s_field (&out->rid, field, h->rid);
    field = s_field (&out->opts, field, h->opts);
    field = s_field (&out->data, field, h->body);
    out->request_heartbeat = h->type == PIGATO__HEARTBEAT && h->rid > 0;
    out->has_opts = h->opts > 0
                 && !(h->opts == 2 && memcmp (out->opts.data, "{}", 2) == 0);
    return PIGATO__NATIVE_ENTRY_HEAD + (size_t) (field - start);
}

static int
s_fail (pigato__native_reader_t *self, int code)
{
    self->error = code;
    self->offset = self->size;
    return -1;
}

//  The second reading of a batch whose every entry passed next (): the
//  same fields, without the checks.

static int
s_next_checked (pigato__native_reader_t *self, pigato__msg_t *out,
                bool *external)
{
    const byte *head = self->frame + self->offset;
    s_head_t h = s_head (head);
    self->offset += s_fill (out, self->role, &h,
                            head + PIGATO__NATIVE_ENTRY_HEAD);
    self->entries++;
    *external = (h.flags & PIGATO__NATIVE_EXTERNAL) != 0;
    return 1;
}

int
pigato__native_reader_rewind (pigato__native_reader_t *self)
{
    if (self->error || self->offset != self->size || self->entries == 0)
        return -1;
    self->offset = PIGATO__NATIVE_HEAD;
    self->entries = 0;
    self->checked = true;
    return 0;
}

int
pigato__native_next (pigato__native_reader_t *self, pigato__msg_t *out,
                     bool *external)
{
    if (self->offset >= self->size)
        return 0;
    if (self->checked)
        return s_next_checked (self, out, external);
    if (self->entries >= PIGATO__NATIVE_ENTRIES_MAX)
        return s_fail (self, PIGATO__DECODE_FRAMES);
    size_t left = self->size - self->offset;
    if (left < PIGATO__NATIVE_ENTRY_HEAD)
        return s_fail (self, PIGATO__DECODE_SHORT);
    const byte *head = self->frame + self->offset;
    s_head_t h = s_head (head);
    if (h.type < PIGATO__READY || h.type > PIGATO__REJECT)
        return s_fail (self, PIGATO__DECODE_TYPE);
    if (h.flags & ~(PIGATO__NATIVE_ERROR | PIGATO__NATIVE_EXTERNAL))
        return s_fail (self, PIGATO__DECODE_FIELD);
    int row = (self->role == 'C' ? 0 : 1) + (self->from_peer ? 0 : 2);
    int allowed = s_allowed [row][h.type];
    if (allowed < 0)
        return s_fail (self, PIGATO__DECODE_TYPE);
    bool is_external = (h.flags & PIGATO__NATIVE_EXTERNAL) != 0;
    if ((h.client && !(allowed & F_CLIENT))
        || (h.service && !(allowed & F_SERVICE))
        || (h.rid && !(allowed & F_RID)) || (h.opts && !(allowed & F_OPTS))
        || ((h.body || is_external) && !(allowed & F_BODY))
        || ((h.flags & PIGATO__NATIVE_ERROR) && !(allowed & F_ERROR))
        || (is_external && h.body))
        return s_fail (self, PIGATO__DECODE_FIELD);
    left -= PIGATO__NATIVE_ENTRY_HEAD;
    //  Sum in size_t: each part is at most 2^32, no overflow on 64 bits,
    //  and compared part by part on 32 bits
    if (h.client > left || h.service > left - h.client
        || h.rid > left - h.client - h.service
        || h.opts > left - h.client - h.service - h.rid
        || h.body > left - h.client - h.service - h.rid - h.opts)
        return s_fail (self, PIGATO__DECODE_SHORT);

    size_t entry_size = s_fill (out, self->role, &h,
                                head + PIGATO__NATIVE_ENTRY_HEAD);
    if (out->request_heartbeat && !self->from_peer && self->role == 'W'
        && h.client == 0)
        return s_fail (self, PIGATO__DECODE_FIELD);
    if (self->role == 'W' && !self->from_peer && h.type == PIGATO__REQUEST
        && h.client == 0)
        return s_fail (self, PIGATO__DECODE_FIELD);
    if (self->role == 'W' && self->from_peer
        && (h.type == PIGATO__REPLY || h.type == PIGATO__PARTIAL
            || h.type == PIGATO__REJECT)
        && h.client == 0)
        return s_fail (self, PIGATO__DECODE_FIELD);
    int rc = pigato__msg_validate (out, self->from_peer);
    if (rc)
        return s_fail (self, rc);
    self->offset += entry_size;
    self->entries++;
    *external = is_external;
    return 1;
}

void
pigato__native_writer_init (pigato__native_writer_t *self, char role)
{
    memset (self, 0, sizeof *self);
    self->role = role;
}

void
pigato__native_writer_reset (pigato__native_writer_t *self)
{
    self->size = 0;
    self->entries = 0;
    self->externals = 0;
    self->external_bytes = 0;
}

void
pigato__native_writer_free (pigato__native_writer_t *self)
{
    free (self->data);
    self->data = NULL;
    self->capacity = 0;
    pigato__native_writer_reset (self);
}

bool
pigato__native_writer_full (const pigato__native_writer_t *self)
{
    return self->entries >= PIGATO__NATIVE_ENTRIES_MAX
        || self->externals >= PIGATO__NATIVE_EXTERNAL_MAX
        || self->size + self->external_bytes >= PIGATO__NATIVE_MESSAGE_BYTES
        || self->size >= PIGATO__NATIVE_BATCH_BYTES;
}

bool
pigato__native_body_external (size_t size)
{
    return size > PIGATO__NATIVE_INLINE_MAX;
}

static byte *
s_put (byte *at, const pigato__bytes_t *bytes)
{
    if (bytes->size)
        memcpy (at, bytes->data, bytes->size);
    return at + bytes->size;
}

int
pigato__native_writer_add (pigato__native_writer_t *self,
                           const pigato__msg_t *entry, bool external)
{
    if (entry->client.size > 255 || entry->rid.size > PIGATO_RID_MAX
        || entry->service.size > PIGATO_SERVICE_MAX
        || entry->opts.size > PIGATO__NATIVE_OPTS_MAX
        || (!external && entry->data.size > UINT32_MAX)
        || entry->type < PIGATO__READY || entry->type > PIGATO__REJECT)
        return -1;
    size_t body = external ? 0 : entry->data.size;
    size_t need = (self->size ? 0 : PIGATO__NATIVE_HEAD)
                + PIGATO__NATIVE_ENTRY_HEAD + entry->client.size
                + entry->service.size + entry->rid.size + entry->opts.size
                + body;
    if (self->size + need > self->capacity) {
        size_t capacity = self->capacity ? self->capacity : 1024;
        while (capacity < self->size + need)
            capacity *= 2;
        byte *data = (byte *) realloc (self->data, capacity);
        if (!data)
            return -1;
        self->data = data;
        self->capacity = capacity;
    }
    byte *at = self->data + self->size;
    if (self->size == 0) {
        at [0] = PIGATO__NATIVE_MAGIC;
        at [1] = PIGATO__NATIVE_VERSION;
        at [2] = (byte) self->role;
        at [3] = 0;
        at += PIGATO__NATIVE_HEAD;
    }
    at [0] = (byte) entry->type;
    at [1] = (byte) ((entry->status ? PIGATO__NATIVE_ERROR : 0)
                     | (external ? PIGATO__NATIVE_EXTERNAL : 0));
    at [2] = (byte) entry->client.size;
    at [3] = (byte) entry->rid.size;
    at [4] = (byte) (entry->service.size >> 8);
    at [5] = (byte) entry->service.size;
    at [6] = (byte) (entry->opts.size >> 8);
    at [7] = (byte) entry->opts.size;
    at [8] = (byte) (body >> 24);
    at [9] = (byte) (body >> 16);
    at [10] = (byte) (body >> 8);
    at [11] = (byte) body;
    at += PIGATO__NATIVE_ENTRY_HEAD;
    at = s_put (at, &entry->client);
    at = s_put (at, &entry->service);
    at = s_put (at, &entry->rid);
    at = s_put (at, &entry->opts);
    if (!external)
        at = s_put (at, &entry->data);
    self->size = (size_t) (at - self->data);
    self->entries++;
    if (external) {
        self->externals++;
        self->external_bytes += entry->data.size;
    }
    return 0;
}
