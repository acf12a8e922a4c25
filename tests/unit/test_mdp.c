/*  test_mdp.c - MDP/0.2 (RFC 18) as the broker reads and writes it, and
    MMI (RFC 8) names. Messages are built as the broker's ROUTER receives
    them: parts [0] is the sender's routing id. Also the packed body, an
    MDP client's body frames kept in one part.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/wire/mdp.h"

#define MAX_PARTS 300

//  A message as byte ranges over C strings; "\x01" etc. for command bytes.
//  Strings cannot hold NUL: tests needing one patch a part afterwards.
typedef struct {
    pigato__bytes_t parts [MAX_PARTS];
    size_t count;
} parts_t;

static void
s_parts (parts_t *self, const char *first, ...)
{
    self->count = 0;
    va_list args;
    va_start (args, first);
    for (const char *frame = first; frame;
         frame = va_arg (args, const char *)) {
        self->parts [self->count].data = (const byte *) frame;
        self->parts [self->count++].size = strlen (frame);
    }
    va_end (args);
}

static void
s_add (parts_t *self, const void *data, size_t size)
{
    assert_true (self->count < MAX_PARTS);
    self->parts [self->count].data = (const byte *) data;
    self->parts [self->count++].size = size;
}

static bool
s_eq (pigato__bytes_t bytes, const char *text)
{
    return bytes.size == strlen (text)
        && (bytes.size == 0 || memcmp (bytes.data, text, bytes.size) == 0);
}

static bool
s_eq_mem (pigato__bytes_t bytes, const void *data, size_t size)
{
    return bytes.size == size
        && (size == 0 || memcmp (bytes.data, data, size) == 0);
}

static int
s_decode (parts_t *msg, pigato__mdp_msg_t *out)
{
    return pigato__mdp_decode (msg->parts, msg->count, out);
}

//  --------------------------------------------------------------------------
//  Valid messages

static void
test_header_tells_mdp_from_other_framings (void **state)
{
    (void) state;
    pigato__bytes_t header = { (const byte *) "MDPC02", 6 };
    assert_int_equal (pigato__mdp_header (&header), 'C');
    header.data = (const byte *) "MDPW02";
    assert_int_equal (pigato__mdp_header (&header), 'W');
    const char *others [] = { "C",     "W",       "MDPC01", "MDPW01",
                              "MDPC0", "MDPC020", "mdpc02", "" };
    for (size_t index = 0; index < sizeof others / sizeof *others; index++) {
        header.data = (const byte *) others [index];
        header.size = strlen (others [index]);
        assert_int_equal (pigato__mdp_header (&header), 0);
    }
    header.data = NULL;
    header.size = 0;
    assert_int_equal (pigato__mdp_header (&header), 0);
}

static void
test_client_request_decodes_service_and_body (void **state)
{
    (void) state;
    parts_t msg;
    s_parts (&msg, "peer", "MDPC02", "\x01", "echo", "one", "two", "", NULL);
    pigato__mdp_msg_t in;
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_OK);
    assert_int_equal (in.role, 'C');
    assert_int_equal (in.command, PIGATO__MDPC_REQUEST);
    assert_int_equal (in.type, PIGATO__REQUEST);
    assert_true (s_eq (in.sender, "peer"));
    assert_true (s_eq (in.service, "echo"));
    assert_null (in.client.data);
    assert_int_equal (in.body_first, 4);
    assert_int_equal (in.body_count, 3);
    assert_true (s_eq (msg.parts [in.body_first], "one"));
    assert_true (s_eq (msg.parts [in.body_first + 2], ""));
}

static void
test_client_request_with_one_or_no_body_frame (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "peer", "MDPC02", "\x01", "echo", "only", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.body_count, 1);
    assert_int_equal (in.body_first, 4);
    //  RFC 18 counts 4+ frames, but an empty body sent as no frame is
    //  accepted (robustness); body_first is then the end.
    s_parts (&msg, "peer", "MDPC02", "\x01", "echo", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.body_count, 0);
    assert_int_equal (in.body_first, 4);
}

static void
test_client_request_with_binary_body (void **state)
{
    (void) state;
    const byte body [] = { 0x00, 0xff, 0x01, 0x00 };
    parts_t msg;
    s_parts (&msg, "\x00\x01", "MDPC02", "\x01", "svc", NULL);
    msg.parts [0].size = 2;  //  routing ids are binary
    s_add (&msg, body, sizeof body);
    pigato__mdp_msg_t in;
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_true (s_eq_mem (in.sender, "\x00\x01", 2));
    assert_int_equal (in.body_count, 1);
    assert_true (s_eq_mem (msg.parts [in.body_first], body, sizeof body));
}

static void
test_service_name_limits (void **state)
{
    (void) state;
    char name [PIGATO_SERVICE_MAX + 2];
    memset (name, 's', sizeof name);
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "peer", "MDPC02", "\x01", "x", "body", NULL);
    msg.parts [3] = (pigato__bytes_t) { (const byte *) name,
                                        PIGATO_SERVICE_MAX };
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.service.size, PIGATO_SERVICE_MAX);
    msg.parts [3].size = PIGATO_SERVICE_MAX + 1;
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    //  UTF-8 is fine, control characters and NUL are not
    msg.parts [3] = (pigato__bytes_t) { (const byte *) "caf\xc3\xa9", 5 };
    assert_int_equal (s_decode (&msg, &in), 0);
    const char *bad [] = { "a\tb", "a\nb", "\x7f", "a\x1f" };
    for (size_t index = 0; index < 4; index++) {
        msg.parts [3] = (pigato__bytes_t) { (const byte *) bad [index],
                                            strlen (bad [index]) };
        assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    }
    msg.parts [3] = (pigato__bytes_t) { (const byte *) "a\0b", 3 };
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    msg.parts [3] = (pigato__bytes_t) { (const byte *) "", 0 };
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    //  The same rules for READY
    s_parts (&msg, "w", "MDPW02", "\x01", "x", NULL);
    msg.parts [3] = (pigato__bytes_t) { (const byte *) name,
                                        PIGATO_SERVICE_MAX };
    assert_int_equal (s_decode (&msg, &in), 0);
    msg.parts [3].size = PIGATO_SERVICE_MAX + 1;
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    msg.parts [3] = (pigato__bytes_t) { (const byte *) "", 0 };
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    msg.parts [3] = (pigato__bytes_t) { (const byte *) "a\0b", 3 };
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
}

static void
test_worker_ready_heartbeat_disconnect (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "w1", "MDPW02", "\x01", "echo", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.role, 'W');
    assert_int_equal (in.command, PIGATO__MDPW_READY);
    assert_int_equal (in.type, PIGATO__READY);
    assert_true (s_eq (in.sender, "w1"));
    assert_true (s_eq (in.service, "echo"));
    assert_int_equal (in.body_count, 0);

    s_parts (&msg, "w1", "MDPW02", "\x05", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.command, PIGATO__MDPW_HEARTBEAT);
    assert_int_equal (in.type, PIGATO__HEARTBEAT);
    assert_null (in.service.data);
    assert_int_equal (in.body_count, 0);

    s_parts (&msg, "w1", "MDPW02", "\x06", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.command, PIGATO__MDPW_DISCONNECT);
    assert_int_equal (in.type, PIGATO__DISCONNECT);
}

static void
test_worker_partial_and_final_decode_client_and_body (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "w1", "MDPW02", "\x03", "client-7", "", "p1", "p2", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.command, PIGATO__MDPW_PARTIAL);
    assert_int_equal (in.type, PIGATO__PARTIAL);
    assert_true (s_eq (in.client, "client-7"));
    assert_int_equal (in.body_first, 5);
    assert_int_equal (in.body_count, 2);
    assert_true (s_eq (msg.parts [in.body_first + 1], "p2"));

    s_parts (&msg, "w1", "MDPW02", "\x04", "client-7", "", "done", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.command, PIGATO__MDPW_FINAL);
    assert_int_equal (in.type, PIGATO__REPLY);
    assert_int_equal (in.body_count, 1);
    assert_true (s_eq (msg.parts [5], "done"));

    //  An empty body sent as no frame is accepted
    s_parts (&msg, "w1", "MDPW02", "\x04", "client-7", "", NULL);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.body_count, 0);
    assert_int_equal (in.body_first, 5);
}

static void
test_client_address_limits (void **state)
{
    (void) state;
    byte address [PIGATO__MDP_CLIENT_MAX + 1];
    memset (address, 0, sizeof address);  //  binary, NULs included
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "w1", "MDPW02", "\x04", "x", "", "body", NULL);
    msg.parts [3] = (pigato__bytes_t) { address, PIGATO__MDP_CLIENT_MAX };
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.client.size, PIGATO__MDP_CLIENT_MAX);
    msg.parts [3].size = PIGATO__MDP_CLIENT_MAX + 1;
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    msg.parts [3].size = 0;
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
}

static void
test_body_frame_limit (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "peer", "MDPC02", "\x01", "echo", NULL);
    for (size_t index = 0; index < PIGATO__MDP_BODY_MAX; index++)
        s_add (&msg, "b", 1);
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_int_equal (in.body_count, PIGATO__MDP_BODY_MAX);
    s_add (&msg, "b", 1);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FRAMES);

    s_parts (&msg, "w1", "MDPW02", "\x03", "client", "", NULL);
    for (size_t index = 0; index < PIGATO__MDP_BODY_MAX; index++)
        s_add (&msg, "b", 1);
    assert_int_equal (s_decode (&msg, &in), 0);
    s_add (&msg, "b", 1);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FRAMES);
}

//  --------------------------------------------------------------------------
//  Refused messages

static void
test_every_truncation_is_refused (void **state)
{
    (void) state;
    //  Each message minus its last mandatory frame(s) must fail; the full
    //  message (count == length) decodes.
    const char *request [] = { "p", "MDPC02", "\x01", "echo" };
    const char *ready [] = { "w", "MDPW02", "\x01", "echo" };
    const char *partial [] = { "w", "MDPW02", "\x03", "client", "" };
    const char *final [] = { "w", "MDPW02", "\x04", "client", "" };
    const char *heartbeat [] = { "w", "MDPW02", "\x05" };
    const char *disconnect [] = { "w", "MDPW02", "\x06" };
    struct {
        const char **frames;
        size_t length;
    } cases [] = { { request, 4 }, { ready, 4 },     { partial, 5 },
                   { final, 5 },   { heartbeat, 3 }, { disconnect, 3 } };
    for (size_t which = 0; which < sizeof cases / sizeof *cases; which++) {
        for (size_t count = 0; count <= cases [which].length; count++) {
            parts_t msg = { .count = 0 };
            for (size_t index = 0; index < count; index++)
                s_add (&msg, cases [which].frames [index],
                       strlen (cases [which].frames [index]));
            pigato__mdp_msg_t in;
            int rc = s_decode (&msg, &in);
            if (count == cases [which].length)
                assert_int_equal (rc, PIGATO__DECODE_OK);
            else
                assert_int_equal (rc, PIGATO__DECODE_SHORT);
        }
    }
}

static void
test_bad_command_bytes_are_refused (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    //  Client: only REQUEST reaches a broker
    for (int command = 0; command < 256; command++) {
        if (command == PIGATO__MDPC_REQUEST)
            continue;
        byte command_byte = (byte) command;
        s_parts (&msg, "p", "MDPC02", "x", "echo", "body", NULL);
        msg.parts [2] = (pigato__bytes_t) { &command_byte, 1 };
        assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_TYPE);
    }
    //  Worker: everything but REQUEST (0x02) in 0x01..0x06
    for (int command = 0; command < 256; command++) {
        if (command >= 1 && command <= 6 && command != PIGATO__MDPW_REQUEST)
            continue;
        byte command_byte = (byte) command;
        s_parts (&msg, "w", "MDPW02", "x", "client", "", "body", NULL);
        msg.parts [2] = (pigato__bytes_t) { &command_byte, 1 };
        assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_TYPE);
    }
    //  The command is one byte: not empty, not two, not ASCII digits
    s_parts (&msg, "p", "MDPC02", "", "echo", "body", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_TYPE);
    s_parts (&msg, "p", "MDPC02", "\x01\x01", "echo", "body", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_TYPE);
    s_parts (&msg, "p", "MDPC02", "1", "echo", "body", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_TYPE);
    s_parts (&msg, "w", "MDPW02", "\x05\x00", NULL);
    msg.parts [2].size = 2;
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_TYPE);
}

static void
test_unknown_headers_are_refused (void **state)
{
    (void) state;
    const char *headers [] = { "MDPC01", "MDPW01", "MDPX02", "C",
                               "W",      "",       "MDPC02 " };
    for (size_t index = 0; index < sizeof headers / sizeof *headers; index++) {
        parts_t msg;
        s_parts (&msg, "p", headers [index], "\x01", "echo", "body", NULL);
        pigato__mdp_msg_t in;
        assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_HEADER);
    }
}

static void
test_missing_or_filled_delimiter_is_refused (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    //  The body where the delimiter belongs
    s_parts (&msg, "w", "MDPW02", "\x04", "client", "body", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    s_parts (&msg, "w", "MDPW02", "\x03", "client", "x", "", "body", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    //  No client address (delimiter first): the address would be empty
    s_parts (&msg, "w", "MDPW02", "\x04", "", "body", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FIELD);
    //  Client address only
    s_parts (&msg, "w", "MDPW02", "\x04", "client", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_SHORT);
}

static void
test_extra_frames_are_refused (void **state)
{
    (void) state;
    parts_t msg;
    pigato__mdp_msg_t in;
    s_parts (&msg, "w", "MDPW02", "\x01", "echo", "extra", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FRAMES);
    s_parts (&msg, "w", "MDPW02", "\x05", "", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FRAMES);
    s_parts (&msg, "w", "MDPW02", "\x06", "bye", NULL);
    assert_int_equal (s_decode (&msg, &in), PIGATO__DECODE_FRAMES);
}

static void
test_reasons_are_named (void **state)
{
    (void) state;
    assert_string_equal (pigato__decode_reason (PIGATO__DECODE_SHORT), "short");
    assert_string_equal (pigato__decode_reason (PIGATO__DECODE_FIELD), "field");
    assert_string_equal (pigato__mdp_command_name ('C', 1), "REQUEST");
    assert_string_equal (pigato__mdp_command_name ('C', 3), "FINAL");
    assert_string_equal (pigato__mdp_command_name ('W', 4), "FINAL");
    assert_string_equal (pigato__mdp_command_name ('W', 6), "DISCONNECT");
    assert_string_equal (pigato__mdp_command_name ('W', 7), "unknown");
    assert_string_equal (pigato__mdp_command_name ('C', 0), "unknown");
}

//  --------------------------------------------------------------------------
//  Encoders: exactly RFC 18's frames

static void
s_assert_frames (const pigato__bytes_t *frames, size_t count,
                 const pigato__bytes_t *expected, size_t expected_count)
{
    assert_int_equal (count, expected_count);
    for (size_t index = 0; index < count; index++)
        assert_true (s_eq_mem (frames [index], expected [index].data,
                               expected [index].size));
}

#define B(text) ((pigato__bytes_t) { (const byte *) (text), sizeof (text) - 1 })

static void
test_client_partial_and_final (void **state)
{
    (void) state;
    pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
    pigato__bytes_t service = B ("echo");
    pigato__bytes_t body [] = { B ("a"), B (""), B ("\x00\xff") };
    size_t count = pigato__mdp_encode_client_reply (frames,
                                                    PIGATO__MDP_ENCODE_MAX,
                                                    PIGATO__MDPC_PARTIAL,
                                                    &service, body, 3);
    pigato__bytes_t partial [] = { B ("MDPC02"), B ("\x02"), B ("echo"),
                                   B ("a"),      B (""),     B ("\x00\xff") };
    s_assert_frames (frames, count, partial, 6);
    count = pigato__mdp_encode_client_reply (
        frames, PIGATO__MDP_ENCODE_MAX, PIGATO__MDPC_FINAL, &service, body, 1);
    pigato__bytes_t final [] = { B ("MDPC02"), B ("\x03"), B ("echo"),
                                 B ("a") };
    s_assert_frames (frames, count, final, 4);
    //  The body frames are the caller's ranges, not copies
    assert_ptr_equal (frames [3].data, body [0].data);
    assert_ptr_equal (frames [2].data, service.data);
}

static void
test_empty_body_is_one_empty_frame (void **state)
{
    (void) state;
    pigato__bytes_t frames [8];
    pigato__bytes_t service = B ("mmi.service");
    size_t count = pigato__mdp_encode_client_reply (
        frames, 8, PIGATO__MDPC_FINAL, &service, NULL, 0);
    pigato__bytes_t final [] = { B ("MDPC02"), B ("\x03"), B ("mmi.service"),
                                 B ("") };
    s_assert_frames (frames, count, final, 4);
    pigato__bytes_t client = B ("c1");
    count = pigato__mdp_encode_worker_request (frames, 8, &client, NULL, 0);
    pigato__bytes_t request [] = { B ("MDPW02"), B ("\x02"), B ("c1"), B (""),
                                   B ("") };
    s_assert_frames (frames, count, request, 5);
}

static void
test_worker_request (void **state)
{
    (void) state;
    pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX];
    pigato__bytes_t client = B ("\x00k\x01");
    pigato__bytes_t body [] = { B ("one"), B ("two") };
    size_t count = pigato__mdp_encode_worker_request (
        frames, PIGATO__MDP_ENCODE_MAX, &client, body, 2);
    pigato__bytes_t request [] = { B ("MDPW02"), B ("\x02"), B ("\x00k\x01"),
                                   B (""),       B ("one"),  B ("two") };
    s_assert_frames (frames, count, request, 6);
    //  What the broker writes, its own decoder reads back as a worker's
    //  FINAL once the command and sender are swapped in
    parts_t msg = { .count = 0 };
    s_add (&msg, "w", 1);
    for (size_t index = 0; index < count; index++)
        s_add (&msg, frames [index].data, frames [index].size);
    msg.parts [2] = B ("\x04");
    pigato__mdp_msg_t in;
    assert_int_equal (s_decode (&msg, &in), 0);
    assert_true (s_eq_mem (in.client, "\x00k\x01", 3));
    assert_int_equal (in.body_count, 2);
}

static void
test_worker_heartbeat_and_disconnect (void **state)
{
    (void) state;
    pigato__bytes_t frames [2];
    size_t count = pigato__mdp_encode_worker_control (frames, 2,
                                                      PIGATO__MDPW_HEARTBEAT);
    pigato__bytes_t heartbeat [] = { B ("MDPW02"), B ("\x05") };
    s_assert_frames (frames, count, heartbeat, 2);
    count = pigato__mdp_encode_worker_control (frames, 2,
                                               PIGATO__MDPW_DISCONNECT);
    pigato__bytes_t disconnect [] = { B ("MDPW02"), B ("\x06") };
    s_assert_frames (frames, count, disconnect, 2);
}

static void
test_encoders_refuse_what_they_cannot_write (void **state)
{
    (void) state;
    pigato__bytes_t frames [PIGATO__MDP_ENCODE_MAX + 1];
    memset (frames, 0, sizeof frames);
    pigato__bytes_t service = B ("s");
    pigato__bytes_t client = B ("c");
    pigato__bytes_t body [PIGATO__MDP_BODY_MAX + 1];
    for (size_t index = 0; index <= PIGATO__MDP_BODY_MAX; index++)
        body [index] = B ("b");
    //  Commands a client never receives
    int not_replies [] = { 0, PIGATO__MDPC_REQUEST, 4, 0x30 };
    for (size_t index = 0; index < 4; index++)
        assert_int_equal (pigato__mdp_encode_client_reply (frames, 8,
                                                           not_replies [index],
                                                           &service, body, 1),
                          0);
    //  Capacity: exactly enough works, one less writes nothing
    assert_int_equal (pigato__mdp_encode_client_reply (
                          frames, 5, PIGATO__MDPC_FINAL, &service, body, 2),
                      5);
    assert_int_equal (pigato__mdp_encode_client_reply (
                          frames, 4, PIGATO__MDPC_FINAL, &service, body, 2),
                      0);
    assert_int_equal (pigato__mdp_encode_client_reply (
                          frames, 3, PIGATO__MDPC_FINAL, &service, NULL, 0),
                      0);
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, 6, &client, body, 2), 6);
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, 5, &client, body, 2), 0);
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, 4, &client, NULL, 0), 0);
    //  Body frame limit
    assert_int_equal (pigato__mdp_encode_client_reply (
                          frames, PIGATO__MDP_ENCODE_MAX, PIGATO__MDPC_FINAL,
                          &service, body, PIGATO__MDP_BODY_MAX),
                      3 + PIGATO__MDP_BODY_MAX);
    assert_int_equal (
        pigato__mdp_encode_client_reply (frames, PIGATO__MDP_ENCODE_MAX + 1,
                                         PIGATO__MDPC_FINAL, &service, body,
                                         PIGATO__MDP_BODY_MAX + 1),
        0);
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, PIGATO__MDP_ENCODE_MAX,
                                           &client, body, PIGATO__MDP_BODY_MAX),
        4 + PIGATO__MDP_BODY_MAX);
    assert_int_equal (pigato__mdp_encode_worker_request (
                          frames, PIGATO__MDP_ENCODE_MAX + 1, &client, body,
                          PIGATO__MDP_BODY_MAX + 1),
                      0);
    //  Client addresses: not empty, not over 255 bytes
    byte long_address [PIGATO__MDP_CLIENT_MAX + 1] = { 0 };
    pigato__bytes_t address = { long_address, PIGATO__MDP_CLIENT_MAX };
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, 8, &address, body, 1), 5);
    address.size++;
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, 8, &address, body, 1), 0);
    address.size = 0;
    assert_int_equal (
        pigato__mdp_encode_worker_request (frames, 8, &address, body, 1), 0);
    //  Control commands
    assert_int_equal (
        pigato__mdp_encode_worker_control (frames, 2, PIGATO__MDPW_READY), 0);
    assert_int_equal (
        pigato__mdp_encode_worker_control (frames, 2, PIGATO__MDPW_REQUEST), 0);
    assert_int_equal (
        pigato__mdp_encode_worker_control (frames, 1, PIGATO__MDPW_HEARTBEAT),
        0);
}

//  --------------------------------------------------------------------------
//  MMI (RFC 8)

static void
test_mmi_namespace (void **state)
{
    (void) state;
    pigato__bytes_t names [] = { B ("mmi.service"), B ("mmi."), B ("mmi.x.y") };
    for (size_t index = 0; index < 3; index++)
        assert_true (pigato__mmi_is (&names [index]));
    pigato__bytes_t others [] = { B ("mmi"), B ("MMI.service"),
                                  B ("xmmi.service"), B (""), B ("mm") };
    for (size_t index = 0; index < 5; index++)
        assert_false (pigato__mmi_is (&others [index]));
}


//  --------------------------------------------------------------------------
//  Packed body: [u32 big-endian size][bytes] per frame

//  Packs frames into a buffer of exactly the packed size (caller frees).
static byte *
s_pack (const pigato__bytes_t *frames, size_t count, size_t *size_p)
{
    size_t size = pigato__mdp_packed_size (frames, count);
    assert_true (size != PIGATO__MDP_PACK_INVALID);
    byte *packed = (byte *) malloc (size ? size : 1);
    assert_non_null (packed);
    assert_int_equal (pigato__mdp_pack (packed, size, frames, count), size);
    *size_p = size;
    return packed;
}

static void
test_packed_no_frames_is_no_bytes (void **state)
{
    (void) state;
    assert_int_equal (pigato__mdp_packed_size (NULL, 0), 0);
    assert_int_equal (pigato__mdp_pack (NULL, 0, NULL, 0), 0);
    pigato__bytes_t frames [4];
    pigato__bytes_t none = { NULL, 0 };
    assert_int_equal (pigato__mdp_unpack (&none, frames, 4), 0);
    byte buffer [1] = { 0 };
    pigato__bytes_t empty = { buffer, 0 };
    assert_int_equal (pigato__mdp_unpack (&empty, frames, 4), 0);
    assert_int_equal (pigato__mdp_unpack (NULL, frames, 4), 0);
}

static void
test_packed_one_frame_is_size_then_bytes (void **state)
{
    (void) state;
    pigato__bytes_t frame = B ("hello");
    size_t size;
    byte *packed = s_pack (&frame, 1, &size);
    assert_int_equal (size, 9);
    assert_memory_equal (packed, "\0\0\0\x05hello", 9);
    pigato__bytes_t frames [2];
    pigato__bytes_t range = { packed, size };
    s_assert_frames (frames, pigato__mdp_unpack (&range, frames, 2), &frame, 1);
    assert_ptr_equal (frames [0].data, packed + 4);  //  borrowed
    free (packed);
}

//  Empty frames first, between and last; binary bytes; a frame over 64 KiB
//  (its size field uses the third byte)
static void
test_packed_round_trip_several_frames (void **state)
{
    (void) state;
    static byte large [70000];
    for (size_t index = 0; index < sizeof large; index++)
        large [index] = (byte) (index * 7);
    static const byte binary [] = { 0, 1, 0xff, 0, 0x80 };
    pigato__bytes_t body [] = { B (""),
                                B ("a"),
                                B (""),
                                B (""),
                                { binary, sizeof binary },
                                { large, sizeof large },
                                B ("xyz"),
                                B ("") };
    size_t count = sizeof body / sizeof body [0];
    size_t size;
    byte *packed = s_pack (body, count, &size);
    size_t expected = 0;
    for (size_t index = 0; index < count; index++)
        expected += 4 + body [index].size;
    assert_int_equal (size, expected);
    assert_memory_equal (packed,
                         "\0\0\0\0"
                         "\0\0\0\x01"
                         "a",
                         9);
    //  70000 = 0x00011170
    assert_memory_equal (packed + 4 + 5 + 4 + 4 + 4 + 5, "\0\x01\x11\x70", 4);
    pigato__bytes_t frames [16];
    pigato__bytes_t range = { packed, size };
    s_assert_frames (frames, pigato__mdp_unpack (&range, frames, 16), body,
                     count);
    free (packed);
}

static void
test_packed_most_frames_round_trip (void **state)
{
    (void) state;
    pigato__bytes_t body [PIGATO__MDP_BODY_MAX + 1];
    char texts [PIGATO__MDP_BODY_MAX + 1][4];
    for (size_t index = 0; index <= PIGATO__MDP_BODY_MAX; index++) {
        snprintf (texts [index], sizeof texts [index], "%zu", index);
        size_t size = index % 3 ? strlen (texts [index]) : 0;  //  some empty
        body [index] = (pigato__bytes_t) { (const byte *) texts [index], size };
    }
    size_t size;
    byte *packed = s_pack (body, PIGATO__MDP_BODY_MAX, &size);
    pigato__bytes_t frames [PIGATO__MDP_BODY_MAX];
    pigato__bytes_t range = { packed, size };
    s_assert_frames (frames,
                     pigato__mdp_unpack (&range, frames, PIGATO__MDP_BODY_MAX),
                     body, PIGATO__MDP_BODY_MAX);
    free (packed);
    //  One frame more is refused
    assert_int_equal (pigato__mdp_packed_size (body, PIGATO__MDP_BODY_MAX + 1),
                      PIGATO__MDP_PACK_INVALID);
}

//  Every cut of a packed body reads the frames that are whole before the
//  cut and nothing more. Each cut is its own allocation of exactly that
//  size, so a read past it shows under valgrind or ASan.
static void
test_packed_every_truncation_reads_whole_frames_only (void **state)
{
    (void) state;
    pigato__bytes_t body [] = { B ("first"), B (""), B ("third frame"),
                                B ("") };
    size_t count = sizeof body / sizeof body [0];
    size_t size;
    byte *packed = s_pack (body, count, &size);
    for (size_t cut = 0; cut < size; cut++) {
        byte *copy = (byte *) malloc (cut ? cut : 1);
        assert_non_null (copy);
        memcpy (copy, packed, cut);
        size_t whole = 0, end = 0;
        while (whole < count && end + 4 + body [whole].size <= cut)
            end += 4 + body [whole++].size;
        pigato__bytes_t frames [8];
        pigato__bytes_t range = { copy, cut };
        s_assert_frames (frames, pigato__mdp_unpack (&range, frames, 8), body,
                         whole);
        free (copy);
    }
    free (packed);
}

//  max caps what is read; frames [] beyond max is never written
static void
test_packed_unpack_stops_at_max (void **state)
{
    (void) state;
    pigato__bytes_t body [] = { B ("a"), B ("bb"), B (""), B ("dddd"),
                                B ("e") };
    size_t count = sizeof body / sizeof body [0];
    size_t size;
    byte *packed = s_pack (body, count, &size);
    pigato__bytes_t range = { packed, size };
    for (size_t max = 0; max <= count + 1; max++) {
        pigato__bytes_t frames [8];
        for (size_t index = 0; index < 8; index++)
            frames [index] = B ("untouched");
        size_t read = pigato__mdp_unpack (&range, frames, max);
        s_assert_frames (frames, read, body, max < count ? max : count);
        for (size_t index = read; index < 8; index++)
            assert_true (s_eq (frames [index], "untouched"));
    }
    free (packed);
}

//  A size field larger than what remains stops reading there: the frames
//  before it are kept, the cut one and anything after are not read
static void
test_packed_size_beyond_the_end_stops (void **state)
{
    (void) state;
    pigato__bytes_t frames [4];
    static const byte one_over [] = { 0, 0, 0, 3, 'a', 'b', 'c',
                                      0, 0, 0, 3, 'x', 'y' };
    pigato__bytes_t range = { one_over, sizeof one_over };
    pigato__bytes_t abc = B ("abc");
    s_assert_frames (frames, pigato__mdp_unpack (&range, frames, 4), &abc, 1);
    //  Exactly what remains is a whole frame
    static const byte exact [] = { 0, 0, 0, 2, 'x', 'y' };
    pigato__bytes_t xy = B ("xy");
    range = (pigato__bytes_t) { exact, sizeof exact };
    s_assert_frames (frames, pigato__mdp_unpack (&range, frames, 4), &xy, 1);
    //  The largest size field, first: nothing is read, nothing wraps
    static const byte huge [] = { 0xff, 0xff, 0xff, 0xff, 'z', 0, 0, 0, 0 };
    range = (pigato__bytes_t) { huge, sizeof huge };
    assert_int_equal (pigato__mdp_unpack (&range, frames, 4), 0);
    //  After a good frame, a size of one byte too many
    static const byte short_by_one [] = { 0, 0, 0, 0, 0, 0, 0, 2, 'q' };
    range = (pigato__bytes_t) { short_by_one, sizeof short_by_one };
    pigato__bytes_t empty = B ("");
    s_assert_frames (frames, pigato__mdp_unpack (&range, frames, 4), &empty, 1);
}

static void
test_packed_refuses_what_it_cannot_write (void **state)
{
    (void) state;
    pigato__bytes_t body [] = { B ("abc"), B ("de") };
    byte out [16];
    memset (out, 0xaa, sizeof out);
    //  Too small by one byte: nothing is written
    assert_int_equal (pigato__mdp_packed_size (body, 2), 13);
    assert_int_equal (pigato__mdp_pack (out, 12, body, 2),
                      PIGATO__MDP_PACK_INVALID);
    for (size_t index = 0; index < sizeof out; index++)
        assert_int_equal (out [index], 0xaa);
    assert_int_equal (pigato__mdp_pack (NULL, 13, body, 2),
                      PIGATO__MDP_PACK_INVALID);
    assert_int_equal (pigato__mdp_pack (out, sizeof out, body, 2), 13);
    //  No frames array, or a frame with no bytes but a size
    assert_int_equal (pigato__mdp_packed_size (NULL, 1),
                      PIGATO__MDP_PACK_INVALID);
    pigato__bytes_t missing [] = { B ("a"), { NULL, 1 } };
    assert_int_equal (pigato__mdp_packed_size (missing, 2),
                      PIGATO__MDP_PACK_INVALID);
    assert_int_equal (pigato__mdp_pack (out, sizeof out, missing, 2),
                      PIGATO__MDP_PACK_INVALID);
    pigato__bytes_t null_empty = { NULL, 0 };
    assert_int_equal (pigato__mdp_packed_size (&null_empty, 1), 4);
    //  A frame over the 32-bit size field (only sizes are read here)
    if (SIZE_MAX > UINT32_MAX) {
        pigato__bytes_t big = { (const byte *) "x", (size_t) UINT32_MAX + 1 };
        assert_int_equal (pigato__mdp_packed_size (&big, 1),
                          PIGATO__MDP_PACK_INVALID);
        big.size = UINT32_MAX;
        assert_int_equal (pigato__mdp_packed_size (&big, 1),
                          (size_t) UINT32_MAX + 4);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_header_tells_mdp_from_other_framings),
        cmocka_unit_test (test_client_request_decodes_service_and_body),
        cmocka_unit_test (test_client_request_with_one_or_no_body_frame),
        cmocka_unit_test (test_client_request_with_binary_body),
        cmocka_unit_test (test_service_name_limits),
        cmocka_unit_test (test_worker_ready_heartbeat_disconnect),
        cmocka_unit_test (test_worker_partial_and_final_decode_client_and_body),
        cmocka_unit_test (test_client_address_limits),
        cmocka_unit_test (test_body_frame_limit),
        cmocka_unit_test (test_every_truncation_is_refused),
        cmocka_unit_test (test_bad_command_bytes_are_refused),
        cmocka_unit_test (test_unknown_headers_are_refused),
        cmocka_unit_test (test_missing_or_filled_delimiter_is_refused),
        cmocka_unit_test (test_extra_frames_are_refused),
        cmocka_unit_test (test_reasons_are_named),
        cmocka_unit_test (test_client_partial_and_final),
        cmocka_unit_test (test_empty_body_is_one_empty_frame),
        cmocka_unit_test (test_worker_request),
        cmocka_unit_test (test_worker_heartbeat_and_disconnect),
        cmocka_unit_test (test_encoders_refuse_what_they_cannot_write),
        cmocka_unit_test (test_mmi_namespace),
        cmocka_unit_test (test_packed_no_frames_is_no_bytes),
        cmocka_unit_test (test_packed_one_frame_is_size_then_bytes),
        cmocka_unit_test (test_packed_round_trip_several_frames),
        cmocka_unit_test (test_packed_most_frames_round_trip),
        cmocka_unit_test (test_packed_every_truncation_reads_whole_frames_only),
        cmocka_unit_test (test_packed_unpack_stops_at_max),
        cmocka_unit_test (test_packed_size_beyond_the_end_stops),
        cmocka_unit_test (test_packed_refuses_what_it_cannot_write),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
