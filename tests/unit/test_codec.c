/*  test_codec.c - pigato 0.0.46 framing: what the broker and peers accept
    and refuse. Messages are built as a ROUTER or DEALER would receive them.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/wire/codec.h"

//  Builds a zmsg from NULL-terminated strings ("" is an empty frame).
static zmsg_t *
s_msg (const char *first, ...)
{
    zmsg_t *msg = zmsg_new ();
    va_list args;
    va_start (args, first);
    for (const char *frame = first; frame; frame = va_arg (args, const char *))
        zmsg_addstr (msg, frame);
    va_end (args);
    return msg;
}

static bool
s_eq (pigato__bytes_t bytes, const char *text)
{
    return bytes.size == strlen (text)
        && memcmp (bytes.data, text, bytes.size) == 0;
}

static void
test_client_request_decodes_every_field (void **state)
{
    (void) state;
    zmsg_t *msg = s_msg ("peer", "C", "2", "echo", "rid-1", "\"hi\"",
                         "{\"timeout\":5}", NULL);
    pigato__msg_t in;
    assert_int_equal (pigato__decode_from_peer (msg, &in), PIGATO__DECODE_OK);
    assert_int_equal (in.role, 'C');
    assert_int_equal (in.type, PIGATO__REQUEST);
    assert_true (s_eq (in.sender, "peer"));
    assert_true (s_eq (in.service, "echo"));
    assert_true (s_eq (in.rid, "rid-1"));
    assert_true (s_eq (in.data, "\"hi\""));
    assert_true (in.has_opts);
    zmsg_destroy (&msg);
}

static void
test_empty_opts_are_not_parsed (void **state)
{
    (void) state;
    const char *empties [] = { "{}", "", "undefined", "null" };
    for (size_t index = 0; index < 4; index++) {
        zmsg_t *msg = s_msg ("p", "C", "2", "echo", "r", "d", empties [index],
                             NULL);
        pigato__msg_t in;
        assert_int_equal (pigato__decode_from_peer (msg, &in), 0);
        assert_false (in.has_opts);
        zmsg_destroy (&msg);
    }
}

static void
test_every_truncation_of_a_request_is_refused (void **state)
{
    (void) state;
    const char *frames [] = { "p", "C", "2", "echo", "rid" };
    for (size_t count = 0; count < 5; count++) {
        zmsg_t *msg = zmsg_new ();
        for (size_t index = 0; index < count; index++)
            zmsg_addstr (msg, frames [index]);
        pigato__msg_t in;
        assert_int_not_equal (pigato__decode_from_peer (msg, &in), 0);
        zmsg_destroy (&msg);
    }
}

static void
test_hostile_frames_are_refused_with_a_reason (void **state)
{
    (void) state;
    struct {
        zmsg_t *msg;
        int reason;
    } cases [] = {
        { s_msg ("p", "X", "2", "s", "r", NULL), PIGATO__DECODE_HEADER },
        { s_msg ("p", "C", "9", "s", "r", NULL), PIGATO__DECODE_TYPE },
        { s_msg ("p", "C", "22", "s", "r", NULL), PIGATO__DECODE_TYPE },
        { s_msg ("p", "C", "3", "s", "r", NULL), PIGATO__DECODE_TYPE },
        { s_msg ("p", "C", "2", "", "r", NULL), PIGATO__DECODE_FIELD },
        { s_msg ("p", "C", "2", "s", "", NULL), PIGATO__DECODE_FIELD },
        { s_msg ("p", "C", "4", "bogus", "r", NULL), PIGATO__DECODE_FIELD },
        { s_msg ("p", "C", "2", "s", "r", "d", "o", "extra", NULL),
          PIGATO__DECODE_FRAMES },
        { s_msg ("p", "W", "1", NULL), PIGATO__DECODE_SHORT },
        { s_msg ("p", "W", "2", "c", "s", "", "r", NULL), PIGATO__DECODE_TYPE },
        { s_msg ("p", "W", "3", "c", "", "r", "7", "d", NULL),
          PIGATO__DECODE_FIELD },
        { s_msg ("p", "W", "3", "c", "", "", "0", NULL), PIGATO__DECODE_FIELD },
    };
    for (size_t index = 0; index < sizeof cases / sizeof cases [0]; index++) {
        pigato__msg_t in;
        assert_int_equal (pigato__decode_from_peer (cases [index].msg, &in),
                          cases [index].reason);
        zmsg_destroy (&cases [index].msg);
    }
}

static void
test_oversized_fields_and_frame_floods_are_refused (void **state)
{
    (void) state;
    char service [PIGATO_SERVICE_MAX + 2];
    memset (service, 's', sizeof service - 1);
    service [sizeof service - 1] = 0;
    zmsg_t *msg = s_msg ("p", "C", "2", service, "r", NULL);
    pigato__msg_t in;
    assert_int_equal (pigato__decode_from_peer (msg, &in),
                      PIGATO__DECODE_FIELD);
    zmsg_destroy (&msg);

    char rid [PIGATO_RID_MAX + 2];
    memset (rid, 'r', sizeof rid - 1);
    rid [sizeof rid - 1] = 0;
    msg = s_msg ("p", "C", "2", "echo", rid, NULL);
    assert_int_equal (pigato__decode_from_peer (msg, &in),
                      PIGATO__DECODE_FIELD);
    zmsg_destroy (&msg);

    msg = zmsg_new ();
    for (int index = 0; index < 200; index++)
        zmsg_addstr (msg, index == 1 ? "C" : "4");
    assert_int_equal (pigato__decode_from_peer (msg, &in),
                      PIGATO__DECODE_FRAMES);
    zmsg_destroy (&msg);
}

static void
test_heartbeats_of_both_spellings_name_a_rid (void **state)
{
    (void) state;
    const char *kinds [] = { "request", "req" };
    for (int index = 0; index < 2; index++) {
        zmsg_t *msg = s_msg ("p", "C", "4", kinds [index], "r9", NULL);
        pigato__msg_t in;
        assert_int_equal (pigato__decode_from_peer (msg, &in), 0);
        assert_true (in.request_heartbeat);
        assert_true (s_eq (in.rid, "r9"));
        zmsg_destroy (&msg);
    }
    zmsg_t *msg = s_msg ("p", "C", "4", NULL);
    pigato__msg_t in;
    assert_int_equal (pigato__decode_from_peer (msg, &in), 0);
    assert_false (in.request_heartbeat);
    zmsg_destroy (&msg);
}

static void
test_worker_messages_as_node_pigato_sends_them (void **state)
{
    (void) state;
    pigato__msg_t in;
    zmsg_t *msg = s_msg ("w", "W", "4", "", "{\"concurrency\":5}", NULL);
    assert_int_equal (pigato__decode_from_peer (msg, &in), 0);
    assert_int_equal (in.type, PIGATO__HEARTBEAT);
    assert_true (s_eq (in.opts, "{\"concurrency\":5}"));
    zmsg_destroy (&msg);

    //  Node pigato's error reply: status -1, opts the text "undefined"
    msg = s_msg ("w", "W", "3", "client", "", "r1", "-1", "\"boom\"",
                 "undefined", NULL);
    assert_int_equal (pigato__decode_from_peer (msg, &in), 0);
    assert_int_equal (in.status, -1);
    assert_true (s_eq (in.client, "client"));
    assert_true (s_eq (in.rid, "r1"));
    assert_true (s_eq (in.data, "\"boom\""));
    assert_false (in.has_opts);
    zmsg_destroy (&msg);

    msg = s_msg ("w", "W", "7", "client", "", "r1", "0", "\"busy\"", NULL);
    assert_int_equal (pigato__decode_from_peer (msg, &in), 0);
    assert_int_equal (in.type, PIGATO__REJECT);
    zmsg_destroy (&msg);
}

static void
test_broker_side_messages_decode_for_peers (void **state)
{
    (void) state;
    pigato__msg_t in;
    zmsg_t *msg = s_msg ("C", "6", "", "r1", "0", "\"part\"", "{}", NULL);
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_int_equal (in.type, PIGATO__PARTIAL);
    assert_true (s_eq (in.rid, "r1"));
    assert_true (s_eq (in.data, "\"part\""));
    zmsg_destroy (&msg);

    msg = s_msg ("W", "2", "cid", "echo", "", "r2", "data", "{}", NULL);
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_true (s_eq (in.client, "cid"));
    assert_true (s_eq (in.service, "echo"));
    assert_true (s_eq (in.rid, "r2"));
    zmsg_destroy (&msg);

    msg = s_msg ("W", "4", "cid", "", "r2", NULL);
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_true (in.request_heartbeat);
    zmsg_destroy (&msg);

    //  A client heartbeat, plain or with the drain notice (and whatever a
    //  later broker may add after it): the notice is its data
    msg = s_msg ("C", "4", NULL);
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_int_equal (in.type, PIGATO__HEARTBEAT);
    assert_int_equal (in.data.size, 0);
    zmsg_destroy (&msg);
    msg = s_msg ("C", "4", PIGATO__DRAIN_NOTICE, NULL);
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_true (s_eq (in.data, PIGATO__DRAIN_NOTICE));
    zmsg_destroy (&msg);
    msg = s_msg ("C", "4", PIGATO__DRAIN_NOTICE, "more", NULL);
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_true (s_eq (in.data, PIGATO__DRAIN_NOTICE));
    zmsg_destroy (&msg);
}

static void
test_client_reply_encoding_round_trips (void **state)
{
    (void) state;
    pigato__bytes_t to = { (const byte *) "cid", 3 };
    pigato__bytes_t rid = { (const byte *) "r1", 2 };
    pigato__bytes_t data = { (const byte *) "\"x\"", 3 };
    zmsg_t *msg = pigato__encode_client_reply (&to, PIGATO__REPLY, &rid, -1,
                                               &data, NULL);
    assert_int_equal (zmsg_size (msg), 8);
    zframe_t *first = zmsg_pop (msg);  //  routing id
    assert_true (zframe_streq (first, "cid"));
    zframe_destroy (&first);
    pigato__msg_t in;
    assert_int_equal (pigato__decode_from_broker (msg, &in), 0);
    assert_int_equal (in.status, -1);
    assert_true (s_eq (in.data, "\"x\""));
    assert_true (s_eq (in.opts, "{}"));
    zmsg_destroy (&msg);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_client_request_decodes_every_field),
        cmocka_unit_test (test_empty_opts_are_not_parsed),
        cmocka_unit_test (test_every_truncation_of_a_request_is_refused),
        cmocka_unit_test (test_hostile_frames_are_refused_with_a_reason),
        cmocka_unit_test (test_oversized_fields_and_frame_floods_are_refused),
        cmocka_unit_test (test_heartbeats_of_both_spellings_name_a_rid),
        cmocka_unit_test (test_worker_messages_as_node_pigato_sends_them),
        cmocka_unit_test (test_broker_side_messages_decode_for_peers),
        cmocka_unit_test (test_client_reply_encoding_round_trips),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
