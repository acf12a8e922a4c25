/*  test_native.c - the native framing's batch reader and writer
    (mesh/wire/native.c, docs/native-framing.md): every entry type round-trips
    in both directions, every truncation and hostile length is refused
    without reading past the frame, limits and per-direction rules hold.
    Frames under test are copied into buffers of their exact size, so a
    sanitizer build catches any read past the end.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/wire/native.h"

#define B(text) ((pigato__bytes_t) { (const byte *) (text), strlen (text) })

static bool
s_eq (pigato__bytes_t bytes, const char *text)
{
    return bytes.size == strlen (text)
        && (bytes.size == 0 || memcmp (bytes.data, text, bytes.size) == 0);
}

//  An entry to write and what it should read back as.
typedef struct {
    int type;
    int status;
    const char *client, *service, *rid, *opts, *body;
} entry_t;

static pigato__msg_t
s_msg (char role, const entry_t *entry)
{
    pigato__msg_t msg;
    memset (&msg, 0, sizeof msg);
    msg.role = role;
    msg.type = entry->type;
    msg.status = entry->status;
    msg.client = B (entry->client ? entry->client : "");
    msg.service = B (entry->service ? entry->service : "");
    msg.rid = B (entry->rid ? entry->rid : "");
    msg.opts = B (entry->opts ? entry->opts : "");
    msg.data = B (entry->body ? entry->body : "");
    return msg;
}

//  Copy of a frame in a buffer of exactly its size (caller frees).
static byte *
s_exact (const byte *data, size_t size)
{
    byte *copy = (byte *) malloc (size ? size : 1);
    assert_non_null (copy);
    memcpy (copy, data, size);
    return copy;
}

//  Writes entries as one batch, reads it back as the other side would and
//  checks every field.
static void
s_round_trip (char role, bool from_peer, const entry_t *entries, size_t count)
{
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, role);
    for (size_t index = 0; index < count; index++) {
        pigato__msg_t msg = s_msg (role, &entries [index]);
        assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
    }
    assert_int_equal (writer.entries, count);
    assert_true (pigato__native_is (writer.data, writer.size));
    byte *frame = s_exact (writer.data, writer.size);

    pigato__native_reader_t reader;
    assert_int_equal (
        pigato__native_reader_init (&reader, frame, writer.size, from_peer), 0);
    assert_int_equal (reader.role, role);
    pigato__msg_t out;
    memset (&out, 0, sizeof out);
    bool external = true;
    //  Not before the first reading has ended
    assert_int_equal (pigato__native_reader_rewind (&reader), -1);
    //  The second reading (after rewind, without the checks) gives the
    //  same entries as the first
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            assert_int_equal (pigato__native_reader_rewind (&reader), 0);
            assert_true (reader.checked);
        }
        for (size_t index = 0; index < count; index++) {
            const entry_t *entry = &entries [index];
            assert_int_equal (pigato__native_next (&reader, &out, &external),
                              1);
            assert_false (external);
            assert_int_equal (out.role, role);
            assert_int_equal (out.type, entry->type);
            assert_int_equal (out.status, entry->status);
            assert_true (s_eq (out.client, entry->client ? entry->client : ""));
            assert_true (
                s_eq (out.service, entry->service ? entry->service : ""));
            assert_true (s_eq (out.rid, entry->rid ? entry->rid : ""));
            assert_true (s_eq (out.opts, entry->opts ? entry->opts : ""));
            assert_true (s_eq (out.data, entry->body ? entry->body : ""));
            assert_int_equal (out.request_heartbeat,
                              entry->type == PIGATO__HEARTBEAT && entry->rid);
            assert_int_equal (out.has_opts,
                              entry->opts && strcmp (entry->opts, "{}") != 0);
        }
        assert_int_equal (pigato__native_next (&reader, &out, &external), 0);
        assert_int_equal (reader.entries, count);
    }
    free (frame);
    pigato__native_writer_free (&writer);
}

static const entry_t s_client_to_broker [] = {
    { PIGATO__REQUEST, 0, NULL, "echo", "rid-1", "{\"timeout\":5}", "\"hi\"" },
    { PIGATO__REQUEST, 0, NULL, "echo", "rid-2", NULL, NULL },
    { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, NULL, NULL },
    { PIGATO__HEARTBEAT, 0, NULL, NULL, "rid-1", NULL, NULL },
    { PIGATO__DISCONNECT, 0, NULL, NULL, NULL, NULL, NULL },
};
static const entry_t s_broker_to_client [] = {
    { PIGATO__PARTIAL, 0, NULL, NULL, "rid-1", "{}", "p1" },
    { PIGATO__REPLY, 0, NULL, NULL, "rid-1", NULL, "done" },
    { PIGATO__REPLY, -1, NULL, NULL, "rid-2", "{\"x\":1}", "\"boom\"" },
    { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, NULL, NULL },
};
static const entry_t s_worker_to_broker [] = {
    { PIGATO__READY, 0, NULL, "echo", NULL, NULL, NULL },
    { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, "{\"concurrency\":7}", NULL },
    { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, NULL, NULL },
    { PIGATO__PARTIAL, 0, "client-1", NULL, "r1", NULL, "p1" },
    { PIGATO__REPLY, -1, "client-1", NULL, "r1", "{}", "\"err\"" },
    { PIGATO__REJECT, 0, "client-1", NULL, "r2", NULL, "\"busy\"" },
    { PIGATO__DISCONNECT, 0, NULL, NULL, NULL, NULL, NULL },
};
static const entry_t s_broker_to_worker [] = {
    { PIGATO__READY, 0, NULL, NULL, NULL, NULL, NULL },
    { PIGATO__REQUEST, 0, "client-1", "echo", "r1", "{\"timeout\":9}", "x" },
    { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, NULL, NULL },
    { PIGATO__HEARTBEAT, 0, "client-1", NULL, "r1", NULL, NULL },
    { PIGATO__DISCONNECT, 0, NULL, NULL, NULL, NULL, NULL },
};

#define COUNT(array) (sizeof (array) / sizeof (array [0]))

static void
test_every_entry_round_trips (void **state)
{
    (void) state;
    s_round_trip ('C', true, s_client_to_broker, COUNT (s_client_to_broker));
    s_round_trip ('C', false, s_broker_to_client, COUNT (s_broker_to_client));
    s_round_trip ('W', true, s_worker_to_broker, COUNT (s_worker_to_broker));
    s_round_trip ('W', false, s_broker_to_worker, COUNT (s_broker_to_worker));
    //  One at a time, too
    for (size_t index = 0; index < COUNT (s_worker_to_broker); index++)
        s_round_trip ('W', true, &s_worker_to_broker [index], 1);
    for (size_t index = 0; index < COUNT (s_broker_to_client); index++)
        s_round_trip ('C', false, &s_broker_to_client [index], 1);
}

//  Reads a frame to its end; returns entries read, or -1 if refused.
static int
s_read_all (const byte *data, size_t size, bool from_peer, int *error)
{
    byte *frame = s_exact (data, size);
    pigato__native_reader_t reader;
    int rc = pigato__native_reader_init (&reader, frame, size, from_peer);
    int entries = 0;
    if (rc == 0) {
        pigato__msg_t out;
        memset (&out, 0, sizeof out);
        bool external;
        int more;
        while ((more = pigato__native_next (&reader, &out, &external)) == 1)
            entries++;
        if (more < 0) {
            rc = reader.error;
            assert_int_not_equal (rc, 0);
            //  A malformed batch is never read a second time
            assert_int_equal (pigato__native_reader_rewind (&reader), -1);
            assert_false (reader.checked);
        }
    }
    free (frame);
    if (error)
        *error = rc;
    return rc ? -1 : entries;
}

static void
test_every_truncation_is_refused (void **state)
{
    (void) state;
    const entry_t *sets [] = { s_client_to_broker, s_broker_to_client,
                               s_worker_to_broker, s_broker_to_worker };
    size_t counts [] = { COUNT (s_client_to_broker), COUNT (s_broker_to_client),
                         COUNT (s_worker_to_broker),
                         COUNT (s_broker_to_worker) };
    char roles [] = { 'C', 'C', 'W', 'W' };
    bool peers [] = { true, false, true, false };
    for (int set = 0; set < 4; set++) {
        pigato__native_writer_t writer;
        pigato__native_writer_init (&writer, roles [set]);
        size_t boundaries [16];
        for (size_t index = 0; index < counts [set]; index++) {
            pigato__msg_t msg = s_msg (roles [set], &sets [set][index]);
            assert_int_equal (pigato__native_writer_add (&writer, &msg, false),
                              0);
            boundaries [index] = writer.size;
        }
        assert_int_equal (s_read_all (writer.data, writer.size, peers [set],
                                      NULL),
                          (int) counts [set]);
        for (size_t size = 0; size < writer.size; size++) {
            //  A cut between entries is a shorter valid batch; any other
            //  cut is refused
            int whole = -1;
            for (size_t index = 0; index < counts [set]; index++)
                if (boundaries [index] == size)
                    whole = (int) index + 1;
            assert_int_equal (s_read_all (writer.data, size, peers [set], NULL),
                              whole);
        }
        pigato__native_writer_free (&writer);
    }
}

//  Builds a batch frame by hand: head, then raw entry heads and fields.
typedef struct {
    byte data [8192];
    size_t size;
} raw_t;

static void
s_raw_head (raw_t *raw, byte role)
{
    raw->data [0] = PIGATO__NATIVE_MAGIC;
    raw->data [1] = PIGATO__NATIVE_VERSION;
    raw->data [2] = role;
    raw->data [3] = 0;
    raw->size = 4;
}

static void
s_raw_entry (raw_t *raw, int type, int flags, size_t client, size_t rid,
             size_t service, size_t opts, uint32_t body)
{
    byte *at = raw->data + raw->size;
    at [0] = (byte) type;
    at [1] = (byte) flags;
    at [2] = (byte) client;
    at [3] = (byte) rid;
    at [4] = (byte) (service >> 8);
    at [5] = (byte) service;
    at [6] = (byte) (opts >> 8);
    at [7] = (byte) opts;
    at [8] = (byte) (body >> 24);
    at [9] = (byte) (body >> 16);
    at [10] = (byte) (body >> 8);
    at [11] = (byte) body;
    raw->size += 12;
}

static void
s_raw_bytes (raw_t *raw, const char *text)
{
    memcpy (raw->data + raw->size, text, strlen (text));
    raw->size += strlen (text);
}

static void
test_hostile_lengths_are_refused (void **state)
{
    (void) state;
    raw_t raw;
    int error;
    //  A body length of 4 GiB - 1 in a tiny frame
    s_raw_head (&raw, 'C');
    s_raw_entry (&raw, PIGATO__REPLY, 0, 0, 2, 0, 0, 0xFFFFFFFF);
    s_raw_bytes (&raw, "r1");
    assert_int_equal (s_read_all (raw.data, raw.size, false, &error), -1);
    assert_int_equal (error, PIGATO__DECODE_SHORT);
    //  Each length one past what is there
    s_raw_head (&raw, 'W');
    s_raw_entry (&raw, PIGATO__REQUEST, 0, 2, 2, 4, 0, 1);
    s_raw_bytes (&raw, "c1echor1");  //  body byte missing
    assert_int_equal (s_read_all (raw.data, raw.size, false, &error), -1);
    assert_int_equal (error, PIGATO__DECODE_SHORT);
    s_raw_bytes (&raw, "x");
    assert_int_equal (s_read_all (raw.data, raw.size, false, NULL), 1);
    //  Service and opts lengths at their maximum, nothing behind them
    s_raw_head (&raw, 'W');
    s_raw_entry (&raw, PIGATO__REQUEST, 0, 1, 1, 0xFFFF, 0xFFFF, 0);
    assert_int_equal (s_read_all (raw.data, raw.size, false, NULL), -1);
    //  A service over PIGATO_SERVICE_MAX that is all there
    s_raw_head (&raw, 'C');
    s_raw_entry (&raw, PIGATO__REQUEST, 0, 0, 1, PIGATO_SERVICE_MAX + 1, 0, 0);
    memset (raw.data + raw.size, 's', PIGATO_SERVICE_MAX + 1);
    raw.size += PIGATO_SERVICE_MAX + 1;
    s_raw_bytes (&raw, "r");
    assert_int_equal (s_read_all (raw.data, raw.size, true, &error), -1);
    assert_int_equal (error, PIGATO__DECODE_FIELD);
    //  A rid over PIGATO_RID_MAX
    s_raw_head (&raw, 'C');
    s_raw_entry (&raw, PIGATO__REPLY, 0, 0, PIGATO_RID_MAX + 1, 0, 0, 0);
    memset (raw.data + raw.size, 'r', PIGATO_RID_MAX + 1);
    raw.size += PIGATO_RID_MAX + 1;
    assert_int_equal (s_read_all (raw.data, raw.size, false, NULL), -1);
    //  A partial entry head after a good entry
    s_raw_head (&raw, 'C');
    s_raw_entry (&raw, PIGATO__HEARTBEAT, 0, 0, 0, 0, 0, 0);
    raw.data [raw.size++] = PIGATO__HEARTBEAT;
    assert_int_equal (s_read_all (raw.data, raw.size, false, &error), -1);
    assert_int_equal (error, PIGATO__DECODE_SHORT);
}

static void
test_unknown_header_type_flags_role (void **state)
{
    (void) state;
    raw_t raw;
    int error;
    //  The good one, then each byte of the batch head spoiled
    s_raw_head (&raw, 'C');
    s_raw_entry (&raw, PIGATO__HEARTBEAT, 0, 0, 0, 0, 0, 0);
    assert_int_equal (s_read_all (raw.data, raw.size, false, NULL), 1);
    const byte spoil [4][3] = {
        { 0x00, 'C', 0xD6 }, { 0, 2, 0xFF }, { 'X', 'c', 0 }, { 1, 0x80, 0xFF }
    };
    for (int at = 0; at < 4; at++)
        for (int bad = 0; bad < 3; bad++) {
            if (at == 1 && spoil [at][bad] == PIGATO__NATIVE_VERSION)
                continue;
            raw_t copy = raw;
            copy.data [at] = spoil [at][bad];
            assert_int_equal (s_read_all (copy.data, copy.size, false, &error),
                              -1);
            assert_int_equal (error, PIGATO__DECODE_HEADER);
        }
    //  A head alone holds no entry
    assert_int_equal (s_read_all (raw.data, 4, false, NULL), -1);
    //  Unknown types
    const int types [] = { 0, 8, 9, 0x7F, 0xFF };
    for (size_t index = 0; index < COUNT (types); index++) {
        s_raw_head (&raw, 'C');
        s_raw_entry (&raw, types [index], 0, 0, 0, 0, 0, 0);
        assert_int_equal (s_read_all (raw.data, raw.size, false, &error), -1);
        assert_int_equal (error, PIGATO__DECODE_TYPE);
    }
    //  Unknown entry flags
    const int flags [] = { 0x04, 0x08, 0x80, 0xFF };
    for (size_t index = 0; index < COUNT (flags); index++) {
        s_raw_head (&raw, 'C');
        s_raw_entry (&raw, PIGATO__REPLY, flags [index], 0, 1, 0, 0, 0);
        s_raw_bytes (&raw, "r");
        assert_int_equal (s_read_all (raw.data, raw.size, false, &error), -1);
        assert_int_equal (error, PIGATO__DECODE_FIELD);
    }
}

static void
test_too_many_entries (void **state)
{
    (void) state;
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, 'C');
    entry_t heartbeat = { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, NULL, NULL };
    pigato__msg_t msg = s_msg ('C', &heartbeat);
    for (int index = 0; index < PIGATO__NATIVE_ENTRIES_MAX; index++) {
        assert_false (pigato__native_writer_full (&writer));
        assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
    }
    assert_true (pigato__native_writer_full (&writer));
    assert_int_equal (s_read_all (writer.data, writer.size, false, NULL),
                      PIGATO__NATIVE_ENTRIES_MAX);
    //  One more than a batch may hold: the whole batch is refused
    assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
    int error;
    assert_int_equal (s_read_all (writer.data, writer.size, false, &error), -1);
    assert_int_equal (error, PIGATO__DECODE_FRAMES);
    //  Reset keeps the buffer and starts a new batch
    byte *buffer = writer.data;
    pigato__native_writer_reset (&writer);
    assert_int_equal (writer.entries, 0);
    assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
    assert_ptr_equal (writer.data, buffer);
    assert_int_equal (writer.size,
                      PIGATO__NATIVE_HEAD + PIGATO__NATIVE_ENTRY_HEAD);
    pigato__native_writer_free (&writer);

    //  Full by size, too
    pigato__native_writer_init (&writer, 'W');
    char body [PIGATO__NATIVE_INLINE_MAX + 1];
    memset (body, 'b', PIGATO__NATIVE_INLINE_MAX);
    body [PIGATO__NATIVE_INLINE_MAX] = 0;
    entry_t reply = { PIGATO__REPLY, 0, "c", NULL, "r", NULL, body };
    msg = s_msg ('W', &reply);
    int added = 0;
    while (!pigato__native_writer_full (&writer)) {
        assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
        added++;
    }
    assert_true (writer.size >= PIGATO__NATIVE_BATCH_BYTES);
    assert_int_equal (added, PIGATO__NATIVE_BATCH_BYTES
                                     / (PIGATO__NATIVE_INLINE_MAX + 14)
                                 + 1);
    pigato__native_writer_free (&writer);
}

//  A single entry with the given fields, read in one direction.
static int
s_read_entry (byte role, bool from_peer, int type, int flags,
              const char *client, const char *rid, const char *service,
              const char *opts, const char *body)
{
    raw_t raw;
    s_raw_head (&raw, role);
    s_raw_entry (&raw, type, flags, strlen (client), strlen (rid),
                 strlen (service), strlen (opts), (uint32_t) strlen (body));
    s_raw_bytes (&raw, client);
    s_raw_bytes (&raw, service);
    s_raw_bytes (&raw, rid);
    s_raw_bytes (&raw, opts);
    s_raw_bytes (&raw, body);
    return s_read_all (raw.data, raw.size, from_peer, NULL);
}

static void
test_fields_per_direction (void **state)
{
    (void) state;
    //  Accepted as written
    assert_int_equal (s_read_entry ('C', true, PIGATO__REQUEST, 0, "", "r",
                                    "echo", "{}", "x"),
                      1);
    assert_int_equal (s_read_entry ('W', false, PIGATO__REQUEST, 0, "c", "r",
                                    "echo", "", "x"),
                      1);
    //  A field its type does not carry
    assert_int_equal (s_read_entry ('C', true, PIGATO__REQUEST, 0, "c", "r",
                                    "echo", "", ""),
                      -1);
    assert_int_equal (s_read_entry ('C', false, PIGATO__REPLY, 0, "", "r",
                                    "echo", "", ""),
                      -1);
    assert_int_equal (s_read_entry ('C', false, PIGATO__HEARTBEAT, 0, "", "r",
                                    "", "", ""),
                      -1);
    assert_int_equal (s_read_entry ('W', true, PIGATO__READY, 0, "", "", "echo",
                                    "{}", ""),
                      -1);
    assert_int_equal (s_read_entry ('W', true, PIGATO__DISCONNECT, 0, "", "",
                                    "", "", "x"),
                      -1);
    assert_int_equal (s_read_entry ('W', true, PIGATO__HEARTBEAT, 0, "", "r",
                                    "", "", ""),
                      -1);
    //  ERROR only on replies
    assert_int_equal (s_read_entry ('W', true, PIGATO__REJECT,
                                    PIGATO__NATIVE_ERROR, "c", "r", "", "",
                                    "x"),
                      -1);
    assert_int_equal (s_read_entry ('C', true, PIGATO__REQUEST,
                                    PIGATO__NATIVE_ERROR, "", "r", "echo", "",
                                    ""),
                      -1);
    //  A type its direction does not allow
    assert_int_equal (
        s_read_entry ('C', true, PIGATO__REPLY, 0, "", "r", "", "", ""), -1);
    assert_int_equal (s_read_entry ('C', false, PIGATO__REQUEST, 0, "", "r",
                                    "echo", "", ""),
                      -1);
    assert_int_equal (s_read_entry ('C', false, PIGATO__DISCONNECT, 0, "", "",
                                    "", "", ""),
                      -1);
    assert_int_equal (
        s_read_entry ('W', false, PIGATO__REPLY, 0, "c", "r", "", "", ""), -1);
    assert_int_equal (s_read_entry ('W', true, PIGATO__REQUEST, 0, "c", "r",
                                    "echo", "", ""),
                      -1);
    //  Required fields
    assert_int_equal (
        s_read_entry ('C', true, PIGATO__REQUEST, 0, "", "r", "", "", ""), -1);
    assert_int_equal (s_read_entry ('C', true, PIGATO__REQUEST, 0, "", "",
                                    "echo", "", ""),
                      -1);
    assert_int_equal (
        s_read_entry ('W', true, PIGATO__READY, 0, "", "", "", "", ""), -1);
    assert_int_equal (
        s_read_entry ('W', true, PIGATO__REPLY, 0, "", "r", "", "", ""), -1);
    assert_int_equal (
        s_read_entry ('W', true, PIGATO__REPLY, 0, "c", "", "", "", ""), -1);
    assert_int_equal (s_read_entry ('W', false, PIGATO__REQUEST, 0, "", "r",
                                    "echo", "", ""),
                      -1);
    assert_int_equal (s_read_entry ('W', false, PIGATO__HEARTBEAT, 0, "", "r",
                                    "", "", ""),
                      -1);
}

static void
test_external_bodies (void **state)
{
    (void) state;
    assert_false (pigato__native_body_external (PIGATO__NATIVE_INLINE_MAX));
    assert_true (pigato__native_body_external (PIGATO__NATIVE_INLINE_MAX + 1));

    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, 'W');
    entry_t big = { PIGATO__REPLY, 0, "c", NULL, "r1", NULL, "ignored" };
    entry_t small = { PIGATO__PARTIAL, 0, "c", NULL, "r1", NULL, "inline" };
    pigato__msg_t msg = s_msg ('W', &small);
    assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
    msg = s_msg ('W', &big);
    assert_int_equal (pigato__native_writer_add (&writer, &msg, true), 0);
    assert_int_equal (writer.entries, 2);
    assert_int_equal (writer.externals, 1);

    byte *frame = s_exact (writer.data, writer.size);
    pigato__native_reader_t reader;
    assert_int_equal (
        pigato__native_reader_init (&reader, frame, writer.size, true), 0);
    pigato__msg_t out;
    memset (&out, 0, sizeof out);
    bool external = true;
    assert_int_equal (pigato__native_next (&reader, &out, &external), 1);
    assert_false (external);
    assert_true (s_eq (out.data, "inline"));
    assert_int_equal (pigato__native_next (&reader, &out, &external), 1);
    assert_true (external);
    assert_int_equal (out.type, PIGATO__REPLY);
    assert_int_equal (out.data.size, 0);  //  the body is the next frame
    assert_int_equal (pigato__native_next (&reader, &out, &external), 0);
    //  A second reading marks the same entry external
    assert_int_equal (pigato__native_reader_rewind (&reader), 0);
    assert_int_equal (pigato__native_next (&reader, &out, &external), 1);
    assert_false (external);
    assert_true (s_eq (out.data, "inline"));
    assert_int_equal (pigato__native_next (&reader, &out, &external), 1);
    assert_true (external);
    assert_int_equal (out.data.size, 0);
    assert_true (s_eq (out.client, "c"));
    assert_true (s_eq (out.rid, "r1"));
    assert_int_equal (pigato__native_next (&reader, &out, &external), 0);
    free (frame);

    //  EXTERNAL with an inline body too is refused, and so is EXTERNAL on
    //  an entry that has no body
    raw_t raw;
    s_raw_head (&raw, 'W');
    s_raw_entry (&raw, PIGATO__REPLY, PIGATO__NATIVE_EXTERNAL, 1, 1, 0, 0, 1);
    s_raw_bytes (&raw, "crx");
    assert_int_equal (s_read_all (raw.data, raw.size, true, NULL), -1);
    s_raw_head (&raw, 'W');
    s_raw_entry (&raw, PIGATO__DISCONNECT, PIGATO__NATIVE_EXTERNAL, 0, 0, 0, 0,
                 0);
    assert_int_equal (s_read_all (raw.data, raw.size, true, NULL), -1);

    //  The writer is full at the external frame limit
    pigato__native_writer_reset (&writer);
    for (int index = 0; index < PIGATO__NATIVE_EXTERNAL_MAX; index++) {
        assert_false (pigato__native_writer_full (&writer));
        assert_int_equal (pigato__native_writer_add (&writer, &msg, true), 0);
    }
    assert_true (pigato__native_writer_full (&writer));
    assert_int_equal (writer.externals, PIGATO__NATIVE_EXTERNAL_MAX);
    pigato__native_writer_free (&writer);
}

static void
test_writer_refuses_oversized_fields (void **state)
{
    (void) state;
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, 'C');
    char rid [PIGATO_RID_MAX + 2];
    memset (rid, 'r', sizeof rid - 1);
    rid [sizeof rid - 1] = 0;
    entry_t entry = { PIGATO__REQUEST, 0, NULL, "echo", rid, NULL, "x" };
    pigato__msg_t msg = s_msg ('C', &entry);
    assert_int_equal (pigato__native_writer_add (&writer, &msg, false), -1);
    assert_int_equal (writer.entries, 0);
    assert_int_equal (writer.size, 0);
    //  Opts beyond 16 bits cannot be framed
    char *opts = (char *) malloc (PIGATO__NATIVE_OPTS_MAX + 2);
    memset (opts, ' ', PIGATO__NATIVE_OPTS_MAX + 1);
    opts [PIGATO__NATIVE_OPTS_MAX + 1] = 0;
    entry_t fat = { PIGATO__REQUEST, 0, NULL, "echo", "r", opts, "x" };
    msg = s_msg ('C', &fat);
    assert_int_equal (pigato__native_writer_add (&writer, &msg, false), -1);
    assert_int_equal (writer.entries, 0);
    free (opts);
    msg.type = 0;
    msg.opts = B ("");
    assert_int_equal (pigato__native_writer_add (&writer, &msg, false), -1);
    pigato__native_writer_free (&writer);
}

static void
test_framing_names (void **state)
{
    (void) state;
    assert_int_equal (pigato__framing_parse ("auto"), PIGATO__FRAMING_AUTO);
    assert_int_equal (pigato__framing_parse ("native"), PIGATO__FRAMING_NATIVE);
    assert_int_equal (pigato__framing_parse ("0.0.46"), PIGATO__FRAMING_046);
    assert_int_equal (pigato__framing_parse ("046"), PIGATO__FRAMING_046);
    assert_int_equal (pigato__framing_parse ("Native"), -1);
    assert_int_equal (pigato__framing_parse (""), -1);
    assert_int_equal (pigato__framing_parse (NULL), -1);
    assert_false (pigato__native_is ("", 0));
    assert_false (pigato__native_is ("C", 1));
    assert_true (pigato__native_is ("\xD7", 1));
}

//  --------------------------------------------------------------------------
//  The worked example in docs/native-framing.md is this encoder's output:
//  the test fails (and prints the dumps to paste) when the two differ.

static const char *s_program = "";  //  argv [0], to find the docs

//  A hex dump as the document shows it: offset, 16 bytes, printable text.
static char *
s_hex_dump (const byte *data, size_t size)
{
    char *text = (char *) malloc (size / 16 * 80 + 160);
    assert_non_null (text);
    size_t used = 0;
    for (size_t line = 0; line < size; line += 16) {
        used += (size_t) sprintf (text + used, "%04zx ", line);
        for (size_t index = line; index < line + 16; index++)
            used += (size_t) (index < size
                                  ? sprintf (text + used, " %02x", data [index])
                                  : sprintf (text + used, "   "));
        used += (size_t) sprintf (text + used, "  ");
        for (size_t index = line; index < line + 16 && index < size; index++)
            text [used++] = data [index] >= 0x20 && data [index] < 0x7f
                              ? (char) data [index]
                              : '.';
        while (used > 0 && text [used - 1] == ' ')
            used--;  //  no trailing blanks: editors strip them
        text [used++] = '\n';
    }
    text [used] = 0;
    return text;
}

//  The whole of docs/native-framing.md (caller frees), from the source
//  tree's root or from build/tests/.
static char *
s_read_doc (void)
{
    char path [4096];
    const char *slash = strrchr (s_program, '/');
    int dir_length = slash ? (int) (slash - s_program) : 1;
    const char *dir = slash ? s_program : ".";
    snprintf (path, sizeof path, "%.*s/../../docs/native-framing.md",
              dir_length, dir);
    FILE *file = fopen ("docs/native-framing.md", "rb");
    if (!file)
        file = fopen (path, "rb");
    if (!file)
        return NULL;
    char *text = (char *) calloc (1, 1 << 20);
    assert_non_null (text);
    size_t size = fread (text, 1, (1 << 20) - 1, file);
    text [size] = 0;
    fclose (file);
    return text;
}

static byte *
s_encode (char role, const entry_t *entries, size_t count, size_t *size)
{
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, role);
    for (size_t index = 0; index < count; index++) {
        pigato__msg_t msg = s_msg (role, &entries [index]);
        assert_int_equal (pigato__native_writer_add (&writer, &msg, false), 0);
    }
    byte *frame = s_exact (writer.data, writer.size);
    *size = writer.size;
    pigato__native_writer_free (&writer);
    return frame;
}

static void
test_worked_example_matches_the_document (void **state)
{
    (void) state;
    //  A client's batch of two requests, and the broker's answer to both
    const entry_t requests [] = {
        { PIGATO__REQUEST, 0, NULL, "echo", "1", NULL, "\"hi\"" },
        { PIGATO__REQUEST, 0, NULL, "echo", "2", "{\"workerId\":\"w9\"}",
          "\"yo\"" },
    };
    const entry_t replies [] = {
        { PIGATO__REPLY, 0, NULL, NULL, "1", NULL, "\"hi\"" },
        { PIGATO__REPLY, -1, NULL, NULL, "2", NULL,
          "\"E_WORKER_NOT_FOUND no worker w9 serves echo\"" },
    };
    //  A worker's first batch in native framing: READY, then the
    //  heartbeat that carries its concurrency
    const entry_t greeting [] = {
        { PIGATO__READY, 0, NULL, "echo", NULL, NULL, NULL },
        { PIGATO__HEARTBEAT, 0, NULL, NULL, NULL, "{\"concurrency\":4}", NULL },
    };
    size_t request_size, reply_size, greeting_size;
    byte *request = s_encode ('C', requests, 2, &request_size);
    byte *reply = s_encode ('C', replies, 2, &reply_size);
    byte *ready = s_encode ('W', greeting, 2, &greeting_size);
    char *request_dump = s_hex_dump (request, request_size);
    char *reply_dump = s_hex_dump (reply, reply_size);
    char *greeting_dump = s_hex_dump (ready, greeting_size);
    char *doc = s_read_doc ();
    bool found = doc && strstr (doc, request_dump) && strstr (doc, reply_dump)
              && strstr (doc, greeting_dump);
    if (!found)
        fprintf (stderr,
                 "docs/native-framing.md %s; the encoder's dumps:\n"
                 "request batch:\n%sreply batch:\n%sworker greeting:\n%s",
                 doc ? "lacks the worked example" : "not found", request_dump,
                 reply_dump, greeting_dump);
    assert_true (found);
    free (doc);
    free (request_dump);
    free (reply_dump);
    free (greeting_dump);
    free (request);
    free (reply);
    free (ready);
}

int
main (int argc, char *argv [])
{
    s_program = argc > 0 ? argv [0] : "";
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_every_entry_round_trips),
        cmocka_unit_test (test_every_truncation_is_refused),
        cmocka_unit_test (test_hostile_lengths_are_refused),
        cmocka_unit_test (test_unknown_header_type_flags_role),
        cmocka_unit_test (test_too_many_entries),
        cmocka_unit_test (test_fields_per_direction),
        cmocka_unit_test (test_external_bodies),
        cmocka_unit_test (test_writer_refuses_oversized_fields),
        cmocka_unit_test (test_framing_names),
        cmocka_unit_test (test_worked_example_matches_the_document),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
