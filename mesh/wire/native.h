/*  =========================================================================
    native.h - the native framing (docs/native-framing.md): one batch frame
    of packed entries, then the bodies too big to travel inline.

    The reader borrows the frame it reads (entries point into it); the
    writer owns a growable buffer that is kept across batches, so a steady
    stream of batches allocates nothing.
    =========================================================================
*/
#ifndef PIGATO_NATIVE_H_INCLUDED
#define PIGATO_NATIVE_H_INCLUDED

#include "codec.h"

#define PIGATO__NATIVE_MAGIC        0xD7
#define PIGATO__NATIVE_VERSION      1
#define PIGATO__NATIVE_OFFER        "pigato-native/1"
#define PIGATO__NATIVE_HEAD         4      //  magic, version, role, flags
#define PIGATO__NATIVE_ENTRY_HEAD   12     //  per entry, before its fields
#define PIGATO__NATIVE_ENTRIES_MAX  1024   //  entries per batch
#define PIGATO__NATIVE_EXTERNAL_MAX 256    //  external body frames per message
#define PIGATO__NATIVE_INLINE_MAX   4096   //  larger bodies go external
#define PIGATO__NATIVE_BATCH_BYTES  65536  //  a writer is full past this
//  A writer is full too once its batch frame and external bodies hold this
//  much: a batch then stays under PIGATO__MESSAGE_BYTES_MAX (internal.h)
//  with one more entry of the largest size
#define PIGATO__NATIVE_MESSAGE_BYTES (1024 * 1024)
#define PIGATO__NATIVE_OPTS_MAX      PIGATO__OPTS_MAX

//  Entry flags
#define PIGATO__NATIVE_ERROR    0x01  //  status -1
#define PIGATO__NATIVE_EXTERNAL 0x02  //  body is the next unread frame

//  Parses "auto", "native", "0.0.46" (also "046"). -1 if unknown.
int pigato__framing_parse (const char *text);

//  True if a frame is a native batch frame (starts with the magic byte).
bool pigato__native_is (const void *data, size_t size);

typedef struct {
    const byte *frame;  //  the batch frame, borrowed
    size_t size;        //  its size
    size_t offset;      //  next entry
    size_t entries;     //  entries read so far
    char role;          //  'C' or 'W'
    bool from_peer;     //  read by the broker (peer -> broker rules)
    bool checked;       //  every entry passed: next () only reads
    int error;          //  pigato__decode_t after next () == -1
} pigato__native_reader_t;

//  Opens a batch frame. from_peer: true in the broker (client/worker ->
//  broker entries are valid), false in clients and workers. Returns a
//  pigato__decode_t (0 = ok).
int pigato__native_reader_init (pigato__native_reader_t *self,
                                const void *frame, size_t size,
                                bool from_peer) PIGATO__MUST_CHECK;

//  Reads the next entry into out (fields borrow the frame; role from the
//  batch; conn and sender untouched). *external is set when the entry's
//  body is the next external frame, which the caller then puts in
//  out->data (and checks has_opts etc. need nothing more). Returns 1 for an
//  entry, 0 at the end of the batch, -1 if malformed (self->error says
//  why; the whole message is then to be dropped).
int pigato__native_next (pigato__native_reader_t *self, pigato__msg_t *out,
                         bool *external);

//  After next () returned 0 (every entry valid): starts the batch again,
//  and the second reading skips the checks the first one passed. The
//  frame must not have changed. Returns 0, or -1 if the first reading had
//  not ended cleanly (the reader is then unchanged).
int
pigato__native_reader_rewind (pigato__native_reader_t *self) PIGATO__MUST_CHECK;

typedef struct {
    byte *data;             //  the batch frame being built
    size_t size;            //  bytes used (0 = empty, no head yet)
    size_t capacity;        //  bytes allocated
    size_t entries;         //  entries in it
    size_t externals;       //  external bodies announced
    size_t external_bytes;  //  and their bytes
    char role;              //  'C' or 'W'
} pigato__native_writer_t;

//  Initialises an empty writer for a role. Allocates nothing.
void pigato__native_writer_init (pigato__native_writer_t *self, char role);

//  Empties the writer (keeps its buffer for the next batch).
void pigato__native_writer_reset (pigato__native_writer_t *self);

//  Frees the buffer.
void pigato__native_writer_free (pigato__native_writer_t *self);

//  Appends one entry from a message: type, status (-1 sets ERROR),
//  client, service, rid, opts and, unless external, data inline. With
//  external the caller sends entry->data as the next external frame.
//  Returns 0, or -1 if a field is over its limit or memory ran out (the
//  writer is then unchanged).
int pigato__native_writer_add (pigato__native_writer_t *self,
                               const pigato__msg_t *entry,
                               bool external) PIGATO__MUST_CHECK;

//  True once a batch should be sent before anything else is added.
bool pigato__native_writer_full (const pigato__native_writer_t *self);

//  True if a body of this size should travel as an external frame.
bool pigato__native_body_external (size_t size);

//  Checks a decoded message's fields against the rules of its direction
//  (shared by both framings). Returns a pigato__decode_t.
int pigato__msg_validate (pigato__msg_t *msg,
                          bool from_peer) PIGATO__MUST_CHECK;

#endif
