/*  test_client.c - pigato_client against a real ROUTER playing the broker
    (plain and CURVE): the exact frames the client sends, the callbacks it
    makes for what the broker answers, timeouts, request heartbeats,
    reconnects, multi-broker spreading, a broker's drain, blocking calls,
    zloop use, keys.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <pthread.h>
#include <unistd.h>
#include "../../mesh/base/internal.h"
#include "../../mesh/wire/native.h"
#include "fake_broker.h"

//  One callback the client made.
typedef struct {
    char rid [PIGATO_RID_MAX + 1];
    int status;
    bool final;
    char data [256];
    size_t size;       //  clipped to data
    size_t full_size;  //  as the callback got it
} event_t;

typedef struct {
    event_t events [64];
    int count;
} recorder_t;

static void
s_record (pigato_client_t *client, const char *rid, int status, bool final,
          const void *data, size_t size, void *arg)
{
    (void) client;
    recorder_t *recorder = (recorder_t *) arg;
    assert_true (recorder->count < 64);
    event_t *event = &recorder->events [recorder->count++];
    snprintf (event->rid, sizeof event->rid, "%s", rid);
    event->status = status;
    event->final = final;
    event->full_size = size;
    event->size = size < sizeof event->data - 1 ? size : sizeof event->data - 1;
    memcpy (event->data, data, event->size);
    event->data [event->size] = 0;
}

static bool
s_eq_bytes (pigato__bytes_t bytes, const char *text)
{
    return bytes.size == strlen (text)
        && (bytes.size == 0 || memcmp (bytes.data, text, bytes.size) == 0);
}

static void
s_pump (void *client)
{
    pigato_client_wait ((pigato_client_t *) client, 5);
}

//  Waits (driving the client) until the recorder holds `count` events.
static bool
s_wait_events (pigato_client_t *client, recorder_t *recorder, int count,
               int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (recorder->count < count && zclock_mono () < deadline)
        pigato_client_wait (client, 10);
    return recorder->count >= count;
}

static pigato_client_t *
s_client_new (fake_broker_t *broker)
{
    pigato_client_t *client = pigato_client_new ();
    assert_non_null (client);
    if (broker->cert)
        assert_int_equal (
            pigato_client_set_server_key (client, broker->public_key), 0);
    else
        pigato_client_set_insecure (client, true);
    pigato_client_set_heartbeat (client, 100, 3);
    assert_int_equal (pigato_client_connect (client, broker->endpoint), 0);
    return client;
}

//  Sends a request and returns the broker's view of it.
static zmsg_t *
s_request (pigato_client_t *client, fake_broker_t *broker, const char *data,
           const char *opts, recorder_t *recorder, char *rid)
{
    assert_int_equal (pigato_client_request (client, "echo", data,
                                             strlen (data), opts, s_record,
                                             recorder, rid),
                      0);
    zmsg_t *msg = fake_recv (broker, s_pump, client, "C", "2", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 4, rid));
    return msg;
}

static void
s_request_frames (bool curve)
{
    fake_broker_t *broker = fake_broker_new (curve);
    pigato_client_t *client = s_client_new (broker);
    //  A heartbeat goes out at connect
    zmsg_t *msg = fake_recv (broker, s_pump, client, NULL, NULL, 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "C", "4", PIGATO__NATIVE_OFFER, NULL));
    zmsg_destroy (&msg);

    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    assert_int_equal (pigato_client_request (client, "echo", "\"hi\"", 4, NULL,
                                             s_record, &recorder, rid),
                      0);
    assert_int_equal (strlen (rid), 24);
    assert_int_equal (strspn (rid, "0123456789abcdef"), 24);
    assert_int_equal (pigato_client_pending (client), 1);
    msg = fake_recv (broker, s_pump, client, "C", "2", 2000);
    assert_non_null (msg);
    //  The brokers' default timeout needs no opts
    assert_true (
        fake_msg_is (msg, "C", "2", "echo", rid, "\"hi\"", "{}", NULL));
    zmsg_destroy (&msg);

    //  rids are unique per client
    char rid2 [PIGATO_RID_MAX + 1];
    assert_int_equal (pigato_client_request (client, "echo", "", 0, NULL,
                                             s_record, &recorder, rid2),
                      0);
    assert_string_not_equal (rid, rid2);
    msg = fake_recv (broker, s_pump, client, "C", "2", 2000);
    zmsg_destroy (&msg);

    //  Another default timeout travels in the opts, added to the caller's
    //  (compact opts that name a timeout travel as they are)
    pigato_client_set_timeout (client, 5000);
    const char *cases [][2] = {
        { NULL, "{\"timeout\":5000}" },
        { "{\"retry\":1}", "{\"retry\":1,\"timeout\":5000}" },
        { "{\"timeout\":70,\"retry\":2}", "{\"timeout\":70,\"retry\":2}" },
        { "{ \"x\": [1] }", "{\"x\":[1],\"timeout\":5000}" }
    };
    for (size_t index = 0; index < 4; index++) {
        assert_int_equal (pigato_client_request (client, "echo", "", 0,
                                                 cases [index][0], s_record,
                                                 &recorder, rid2),
                          0);
        msg = fake_recv (broker, s_pump, client, "C", "2", 2000);
        assert_non_null (msg);
        assert_true (fake_msg_is (msg, "C", "2", "echo", rid2, "",
                                  cases [index][1], NULL));
        zmsg_destroy (&msg);
    }
    pigato_client_destroy (&client);
    assert_null (client);
    fake_broker_destroy (&broker);
}

static void
test_request_frames_plain (void **state)
{
    (void) state;
    s_request_frames (false);
}

static void
test_request_frames_curve (void **state)
{
    (void) state;
    s_request_frames (true);
}

static void
test_partials_then_final_in_order (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, rid);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);

    fake_send (broker, to, "C", "6", "", rid, "0", "p1", "{}", NULL);
    fake_send (broker, to, "C", "6", "", rid, "0", "p2", "undefined", NULL);
    fake_send (broker, to, "C", "3", "", rid, "0", "done", "{}", NULL);
    //  Replies for unknown rids are ignored
    fake_send (broker, to, "C", "3", "", "nosuchrid", "0", "x", "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 3, 2000));
    pigato_client_wait (client, 50);
    assert_int_equal (recorder.count, 3);
    assert_false (recorder.events [0].final);
    assert_string_equal (recorder.events [0].data, "p1");
    assert_int_equal (recorder.events [0].status, PIGATO_OK);
    assert_string_equal (recorder.events [0].rid, rid);
    assert_false (recorder.events [1].final);
    assert_string_equal (recorder.events [1].data, "p2");
    assert_true (recorder.events [2].final);
    assert_int_equal (recorder.events [2].status, PIGATO_OK);
    assert_string_equal (recorder.events [2].data, "done");
    assert_int_equal (pigato_client_pending (client), 0);
    //  Nothing more for a finished request
    fake_send (broker, to, "C", "3", "", rid, "0", "again", "{}", NULL);
    pigato_client_wait (client, 50);
    assert_int_equal (recorder.count, 3);

    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_errors_are_decoded (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char rid1 [PIGATO_RID_MAX + 1], rid2 [PIGATO_RID_MAX + 1],
        rid3 [PIGATO_RID_MAX + 1], rid4 [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, rid1);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "2", NULL, &recorder, rid2);
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "3", NULL, &recorder, rid3);
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "4", NULL, &recorder, rid4);
    zmsg_destroy (&msg);

    //  A JSON string error is decoded; anything else is passed raw; a
    //  Node broker may leave data and opts out
    fake_send (broker, to, "C", "3", "", rid1, "-1", "\"boom\"", "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    fake_send (broker, to, "C", "3", "", rid2, "-1", "{\"code\":7}", NULL);
    assert_true (s_wait_events (client, &recorder, 2, 2000));
    fake_send (broker, to, "C", "3", "", rid3, "-1", NULL);
    assert_true (s_wait_events (client, &recorder, 3, 2000));

    assert_int_equal (recorder.events [0].status, PIGATO_E_REPLY);
    assert_string_equal (recorder.events [0].data, "boom");
    assert_int_equal (recorder.events [1].status, PIGATO_E_REPLY);
    assert_string_equal (recorder.events [1].data, "{\"code\":7}");
    assert_int_equal (recorder.events [2].status, PIGATO_E_REPLY);
    assert_int_equal (recorder.events [2].size, 0);
    assert_true (recorder.events [2].final);

    //  The text is bytes: one that starts with a NUL arrives whole
    fake_send (broker, to, "C", "3", "", rid4, "-1", "\"\\u0000ab\\u0000c\"",
               "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 4, 2000));
    assert_int_equal (recorder.events [3].status, PIGATO_E_REPLY);
    assert_int_equal (recorder.events [3].full_size, 5);
    assert_memory_equal (recorder.events [3].data, "\0ab\0c", 5);
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

//  A body over PIGATO_BODY_MAX is refused at once and nothing is sent (the
//  broker would drop the connection and every request in flight on it).
static void
test_body_over_the_limit_is_refused (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    //  16 MiB bodies take a while, and this broker answers no heartbeat
    pigato_client_set_heartbeat (client, 1000, 10);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1], big_rid [PIGATO_RID_MAX + 1] = "none";
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, rid);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);

    size_t size = PIGATO_BODY_MAX + 1;
    char *big = (char *) malloc (size + 1);
    assert_non_null (big);
    memset (big, 'x', size);
    big [size] = 0;
    assert_int_equal (pigato_client_request (client, "echo", big, size, NULL,
                                             s_record, &recorder, big_rid),
                      PIGATO_E_TOO_LARGE);
    assert_string_equal (big_rid, "none");
    assert_string_equal (pigato_client_error (client),
                         "E_TOO_LARGE request of 16777153 bytes exceeds the "
                         "broker's limit of 16777152 bytes");
    //  The blocking call says the same, as its reply
    char *reply = NULL;
    size_t reply_size = 0;
    assert_int_equal (pigato_client_call (client, "echo", big, size, NULL, NULL,
                                          NULL, &reply, &reply_size),
                      PIGATO_E_TOO_LARGE);
    assert_non_null (strstr (reply, "E_TOO_LARGE request of 16777153"));
    free (reply);
    //  Opts count too
    memcpy (big, "{\"x\":\"", 6);
    memcpy (big + size - 2, "\"}", 2);
    assert_int_equal (pigato_client_request (client, "echo", "", 0, big,
                                             s_record, &recorder, big_rid),
                      PIGATO_E_TOO_LARGE);
    assert_non_null (strstr (pigato_client_error (client), "E_TOO_LARGE opts"));
    //  Opts have their own, smaller limit (the broker parses them)
    char opts [PIGATO_OPTS_MAX + 2];
    memset (opts, 'o', sizeof opts);
    memcpy (opts, "{\"x\":\"", 6);
    memcpy (opts + PIGATO_OPTS_MAX - 1, "\"}", 3);  //  one byte over
    assert_int_equal (pigato_client_request (client, "echo", "", 0, opts,
                                             s_record, &recorder, big_rid),
                      PIGATO_E_TOO_LARGE);
    //  (as sent: the library may add its default timeout)
    assert_non_null (strstr (pigato_client_error (client), "E_TOO_LARGE opts"));
    assert_non_null (strstr (pigato_client_error (client),
                             "exceed the broker's limit of 65535 bytes"));
    assert_int_equal (pigato_client_pending (client), 1);

    //  Nothing of those left: the next request the broker sees is one at
    //  the limit, which goes
    memset (big, 'y', PIGATO_BODY_MAX);
    char limit_rid [PIGATO_RID_MAX + 1];
    assert_int_equal (pigato_client_request (client, "echo", big,
                                             PIGATO_BODY_MAX, NULL, s_record,
                                             &recorder, limit_rid),
                      0);
    //  (16 MiB through CURVE: seconds under valgrind on a busy machine)
    msg = fake_recv (broker, s_pump, client, "C", "2", 20000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 4, limit_rid));
    zmsg_destroy (&msg);

    //  The request in flight still completes
    fake_send (broker, to, "C", "3", "", rid, "0", "done", "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    assert_string_equal (recorder.events [0].rid, rid);
    assert_int_equal (recorder.events [0].status, PIGATO_OK);
    assert_string_equal (recorder.events [0].data, "done");
    free (big);
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_malformed_broker_messages_are_dropped (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, rid);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);

    fake_send (broker, to, "X", NULL);
    fake_send (broker, to, "C", NULL);
    fake_send (broker, to, "C", "9", NULL);
    fake_send (broker, to, "C", "3", NULL);
    fake_send (broker, to, "C", "3", "", rid, "bogus", "x", NULL);
    fake_send (broker, to, "W", "3", "", rid, "0", "x", NULL);
    fake_send (broker, to, "C", "3", "", rid, "0", "x", "{}", "1", "2", "3",
               "4", "5", "6", "7", "8", NULL);
    char long_rid [200];
    memset (long_rid, 'a', sizeof long_rid - 1);
    long_rid [sizeof long_rid - 1] = 0;
    fake_send (broker, to, "C", "3", "", long_rid, "0", "x", NULL);
    fake_send (broker, to, "C", "3", "", rid, "0", "good", NULL);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    assert_int_equal (recorder.count, 1);
    assert_string_equal (recorder.events [0].data, "good");
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_opts_and_arguments_are_checked (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    pigato_client_set_timeout (client, 5000);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];

    //  The default timeout is added; other fields pass through
    zmsg_t *msg = s_request (client, broker, "1", "{\"retry\":2,\"x\":\"y\"}",
                             &recorder, rid);
    assert_true (
        fake_frame_is (msg, 6, "{\"retry\":2,\"x\":\"y\",\"timeout\":5000}"));
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "1", "{\"timeout\":-1}", &recorder, rid);
    assert_true (fake_frame_is (msg, 6, "{\"timeout\":-1}"));
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "1", NULL, &recorder, rid);
    assert_true (fake_frame_is (msg, 6, "{\"timeout\":5000}"));
    zmsg_destroy (&msg);

    const char *bad_opts [] = { "[1]", "{bad", "\"timeout\"",
                                "{\"timeout\":\"soon\"}" };
    for (size_t index = 0; index < 4; index++) {
        assert_int_equal (pigato_client_request (client, "echo", "1", 1,
                                                 bad_opts [index], s_record,
                                                 &recorder, rid),
                          PIGATO_E_INVALID);
        assert_true (strlen (pigato_client_error (client)) > 0);
    }
    assert_int_equal (pigato_client_request (client, NULL, "1", 1, NULL,
                                             s_record, &recorder, rid),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_request (client, "", "1", 1, NULL, s_record,
                                             &recorder, rid),
                      PIGATO_E_INVALID);
    char long_name [PIGATO_SERVICE_MAX + 2];
    memset (long_name, 's', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = 0;
    assert_int_equal (pigato_client_request (client, long_name, "1", 1, NULL,
                                             s_record, &recorder, rid),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_request (client, "echo", NULL, 3, NULL,
                                             s_record, &recorder, rid),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_pending (client), 3);
    //  None of the refused requests reached the broker
    assert_null (fake_recv (broker, s_pump, client, "C", "2", 100));

    //  Without a broker link there is nothing to send on
    pigato_client_t *lonely = pigato_client_new ();
    assert_int_equal (pigato_client_request (lonely, "echo", "1", 1, NULL, NULL,
                                             NULL, NULL),
                      PIGATO_E_NOTCONNECTED);
    assert_int_equal (pigato_client_wait (lonely, -1), 0);
    pigato_client_destroy (&lonely);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_timeout_is_inactivity (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char quiet [PIGATO_RID_MAX + 1], chatty [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", "{\"timeout\":150}",
                             &recorder, quiet);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "2", "{\"timeout\":300}", &recorder,
                     chatty);
    zmsg_destroy (&msg);
    int64_t start = zclock_mono ();

    //  Partials every 100 ms keep the 300 ms request alive past 300 ms
    while (zclock_mono () - start < 600) {
        fake_send (broker, to, "C", "6", "", chatty, "0", "tick", "{}", NULL);
        int64_t next = zclock_mono () + 100;
        while (zclock_mono () < next)
            pigato_client_wait (client, 10);
    }
    fake_send (broker, to, "C", "3", "", chatty, "0", "end", "{}", NULL);
    while (pigato_client_pending (client) > 0 && zclock_mono () - start < 3000)
        pigato_client_wait (client, 10);
    assert_int_equal (pigato_client_pending (client), 0);

    event_t *timed_out = NULL, *final = NULL;
    for (int index = 0; index < recorder.count; index++) {
        if (streq (recorder.events [index].rid, quiet))
            timed_out = &recorder.events [index];
        if (streq (recorder.events [index].rid, chatty)
            && recorder.events [index].final)
            final = &recorder.events [index];
    }
    assert_non_null (timed_out);
    assert_true (timed_out->final);
    assert_int_equal (timed_out->status, PIGATO_E_TIMEOUT);
    assert_string_equal (timed_out->data, "C_TIMEOUT");
    assert_non_null (final);
    assert_int_equal (final->status, PIGATO_OK);
    assert_string_equal (final->data, "end");
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

//  Ends the process if the test is still running after 10 s: a client
//  stuck in a loop would never return to the test.
static volatile bool s_watchdog_done;
static void *
s_watchdog (void *arg)
{
    (void) arg;
    for (int tick = 0; tick < 100 && !s_watchdog_done; tick++)
        zclock_sleep (100);
    if (!s_watchdog_done) {
        fprintf (stderr, "watchdog: the client did not return within 10 s\n");
        _exit (99);
    }
    return NULL;
}

//  Absurd timeouts are capped like the broker caps them, not overflowed:
//  a request with timeout 2^63 must neither spin the client nor time out.
static void
test_huge_timeouts_do_not_overflow (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char rid_huge [PIGATO_RID_MAX + 1], rid_zero [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1",
                             "{\"timeout\":9223372036854775000}", &recorder,
                             rid_huge);
    zmsg_destroy (&msg);
    //  timeout 0 means the default (as pigato and our broker read it)
    msg = s_request (client, broker, "2", "{\"timeout\":0}", &recorder,
                     rid_zero);
    zmsg_destroy (&msg);
    pthread_t watchdog;  //  a spinning client fails, not hangs
    s_watchdog_done = false;
    pthread_create (&watchdog, NULL, s_watchdog, NULL);
    //  (less than the fake broker's liveness window: it does not answer
    //  heartbeats)
    int64_t start = zclock_mono ();
    while (zclock_mono () - start < 150)
        pigato_client_wait (client, 20);
    s_watchdog_done = true;
    pthread_join (watchdog, NULL);
    assert_int_equal (recorder.count, 0);
    assert_int_equal (pigato_client_pending (client), 2);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_request_heartbeats_until_cancel (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, rid);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);

    //  Skip plain heartbeats; the request heartbeat names the rid
    int64_t deadline = zclock_mono () + 2000;
    bool seen = false;
    while (!seen && zclock_mono () < deadline) {
        msg = fake_recv (broker, s_pump, client, "C", "4", 500);
        if (msg && zmsg_size (msg) == 5) {
            assert_true (fake_msg_is (msg, "C", "4", "request", rid, NULL));
            seen = true;
        }
        zmsg_destroy (&msg);
    }
    assert_true (seen);

    assert_int_equal (pigato_client_cancel (client, rid), 0);
    assert_int_equal (pigato_client_cancel (client, rid), PIGATO_E_INVALID);
    assert_int_equal (pigato_client_cancel (client, "nosuch"),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_pending (client), 0);
    //  No request heartbeat for it any more, and late replies are ignored
    fake_send (broker, to, "C", "3", "", rid, "0", "late", "{}", NULL);
    deadline = zclock_mono () + 400;
    while (zclock_mono () < deadline) {
        msg = fake_recv (broker, s_pump, client, "C", "4", 50);
        //  Plain heartbeats, or the greeting of a reconnect (this broker
        //  never answers), but no request heartbeat
        if (msg)
            assert_false (fake_frame_is (msg, 3, "request"));
        zmsg_destroy (&msg);
    }
    assert_int_equal (recorder.count, 0);
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

//  Answers every plain client heartbeat waiting on the ROUTER.
static void
s_answer_heartbeats (fake_broker_t *broker)
{
    zmsg_t *msg;
    while ((msg = zmsg_recv (broker->router))) {
        if (fake_msg_is (msg, "C", "4", NULL)) {
            zframe_t *to = fake_sender (msg);
            fake_send (broker, to, "C", "4", NULL);
            zframe_destroy (&to);
        }
        zmsg_destroy (&msg);
    }
}

static void
test_reconnect_after_liveness_loss (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char kept [PIGATO_RID_MAX + 1], lost [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", "{\"retry\":1}", &recorder,
                             kept);
    zframe_t *old_id = fake_sender (msg);
    zmsg_destroy (&msg);
    msg = s_request (client, broker, "2", NULL, &recorder, lost);
    zmsg_destroy (&msg);

    //  An answering broker keeps the link: same routing id for 600 ms
    int64_t until = zclock_mono () + 600;
    while (zclock_mono () < until) {
        s_answer_heartbeats (broker);
        pigato_client_wait (client, 10);
    }
    assert_int_equal (recorder.count, 0);

    //  A silent one: after 3 x 100 ms the client reconnects, re-sends the
    //  request with retries left (same rid, the next attempt: the worker
    //  may have run it already), fails the other
    msg = fake_recv (broker, s_pump, client, "C", "2", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "C", "2", "echo", kept, "1",
                              "{\"retry\":1,\"attempt\":2}", NULL));
    assert_false (zframe_eq (old_id, zmsg_first (msg)));
    zframe_t *new_id = fake_sender (msg);
    //  Routing ids are printable (hex), so Node brokers can route to them
    assert_int_equal (zframe_size (new_id), 32);
    char *text = zframe_strdup (new_id);
    assert_int_equal (strspn (text, "0123456789abcdef"), 32);
    free (text);
    zmsg_destroy (&msg);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    assert_string_equal (recorder.events [0].rid, lost);
    assert_true (recorder.events [0].final);
    assert_int_equal (recorder.events [0].status, PIGATO_E_NOTCONNECTED);
    assert_string_equal (recorder.events [0].data, "E_BROKER_LOST");

    //  The retried request completes on the new connection
    fake_send (broker, new_id, "C", "3", "", kept, "0", "ok", "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 2, 2000));
    assert_string_equal (recorder.events [1].rid, kept);
    assert_int_equal (recorder.events [1].status, PIGATO_OK);
    zframe_destroy (&old_id);
    zframe_destroy (&new_id);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_requests_spread_over_brokers (void **state)
{
    (void) state;
    fake_broker_t *first = fake_broker_new (false);
    fake_broker_t *second = fake_broker_new (false);
    pigato_client_t *client = s_client_new (first);
    assert_int_equal (pigato_client_connect (client, second->endpoint), 0);
    //  Both brokers answer a heartbeat, so both count as alive
    int64_t until = zclock_mono () + 250;
    while (zclock_mono () < until) {
        s_answer_heartbeats (first);
        s_answer_heartbeats (second);
        pigato_client_wait (client, 10);
    }
    for (int index = 0; index < 4; index++)
        assert_int_equal (pigato_client_request (client, "echo", "x", 1, NULL,
                                                 NULL, NULL, NULL),
                          0);
    int got_first = 0, got_second = 0;
    zmsg_t *msg;
    while ((msg = fake_recv (first, s_pump, client, "C", "2", 300))) {
        got_first++;
        zmsg_destroy (&msg);
    }
    while ((msg = fake_recv (second, s_pump, client, "C", "2", 300))) {
        got_second++;
        zmsg_destroy (&msg);
    }
    assert_int_equal (got_first, 2);
    assert_int_equal (got_second, 2);
    pigato_client_destroy (&client);
    fake_broker_destroy (&first);
    fake_broker_destroy (&second);
}

//  Two fake brokers that one client uses: each answers plain heartbeats
//  while `answer` says so, keeps the requests it gets, and remembers the
//  client's latest routing id on it.
typedef struct {
    fake_broker_t *brokers [2];
    bool answer [2];         //  answers heartbeats (counts as alive)
    bool draining [2];       //  ... with the drain notice
    zlistx_t *requests [2];  //  C,2 messages received (zmsg_t *)
    zframe_t *sender [2];    //  client's latest routing id there
    pigato_client_t *client;
} duo_t;

static void
s_duo_read (duo_t *duo)
{
    for (int which = 0; which < 2; which++) {
        fake_broker_t *broker = duo->brokers [which];
        if (!broker)
            continue;
        zmsg_t *msg;
        while ((msg = zmsg_recv (broker->router))) {
            zframe_destroy (&duo->sender [which]);
            duo->sender [which] = fake_sender (msg);
            if (fake_msg_is (msg, "C", "4", NULL)
                || fake_msg_is (msg, "C", "4", PIGATO__NATIVE_OFFER, NULL)) {
                if (duo->answer [which] && duo->draining [which])
                    fake_send (broker, duo->sender [which], "C", "4",
                               PIGATO__DRAIN_NOTICE, NULL);
                else if (duo->answer [which])
                    fake_send (broker, duo->sender [which], "C", "4", NULL);
                zmsg_destroy (&msg);
            }
            else if (fake_frame_is (msg, 2, "2"))
                zlistx_add_end (duo->requests [which], msg);
            else
                zmsg_destroy (&msg);
        }
    }
}

//  Drives the client and both brokers for ms.
static void
s_duo_run (duo_t *duo, int ms)
{
    int64_t until = zclock_mono () + ms;
    do {
        pigato_client_wait (duo->client, 5);
        s_duo_read (duo);
    } while (zclock_mono () < until);
}

static duo_t *
s_duo_new (int interval_ms, int liveness)
{
    duo_t *duo = (duo_t *) calloc (1, sizeof *duo);
    duo->client = pigato_client_new ();
    pigato_client_set_insecure (duo->client, true);
    pigato_client_set_heartbeat (duo->client, interval_ms, liveness);
    for (int which = 0; which < 2; which++) {
        duo->brokers [which] = fake_broker_new (false);
        duo->answer [which] = true;
        duo->requests [which] = zlistx_new ();
        zlistx_set_destructor (duo->requests [which],
                               (zlistx_destructor_fn *) zmsg_destroy);
        assert_int_equal (
            pigato_client_connect (duo->client, duo->brokers [which]->endpoint),
            0);
    }
    //  Both answer a heartbeat: both count as alive
    s_duo_run (duo, 3 * interval_ms);
    return duo;
}

static void
s_duo_destroy (duo_t **duo_p)
{
    duo_t *duo = *duo_p;
    pigato_client_destroy (&duo->client);
    for (int which = 0; which < 2; which++) {
        fake_broker_destroy (&duo->brokers [which]);
        zlistx_destroy (&duo->requests [which]);
        zframe_destroy (&duo->sender [which]);
    }
    free (duo);
    *duo_p = NULL;
}

//  Which broker holds a request for rid (0 or 1), -1 if none; with
//  forget, its message is dropped from the list.
static int
s_duo_holder (duo_t *duo, const char *rid, bool forget)
{
    for (int which = 0; which < 2; which++)
        for (zmsg_t *msg = (zmsg_t *) zlistx_first (duo->requests [which]); msg;
             msg = (zmsg_t *) zlistx_next (duo->requests [which]))
            if (fake_frame_is (msg, 4, rid)) {
                if (forget)
                    zlistx_delete (duo->requests [which],
                                   zlistx_cursor (duo->requests [which]));
                return which;
            }
    return -1;
}

//  Sends requests until `count` of them (with these opts) are on broker
//  `which`; rids go to rids. Requests landing on the other broker are
//  answered there at once, so they end.
static void
s_duo_requests_on (duo_t *duo, int which, const char *opts, int count,
                   recorder_t *recorder, char rids [][PIGATO_RID_MAX + 1])
{
    int placed = 0;
    for (int attempt = 0; attempt < 4 * count + 4 && placed < count;
         attempt++) {
        char rid [PIGATO_RID_MAX + 1];
        assert_int_equal (pigato_client_request (duo->client, "echo", "x", 1,
                                                 opts, s_record, recorder, rid),
                          0);
        int holder = -1;
        int64_t deadline = zclock_mono () + 2000;
        while ((holder = s_duo_holder (duo, rid, false)) < 0
               && zclock_mono () < deadline)
            s_duo_run (duo, 5);
        assert_true (holder >= 0);
        if (holder == which)
            strcpy (rids [placed++], rid);
        else {
            s_duo_holder (duo, rid, true);
            fake_send (duo->brokers [holder], duo->sender [holder], "C", "3",
                       "", rid, "0", "other", "{}", NULL);
        }
    }
    assert_int_equal (placed, count);
}

//  The final event for rid, or NULL.
static event_t *
s_final_of (recorder_t *recorder, const char *rid)
{
    for (int index = 0; index < recorder->count; index++)
        if (streq (recorder->events [index].rid, rid)
            && recorder->events [index].final)
            return &recorder->events [index];
    return NULL;
}

//  Waits (driving the duo) until rid has a final event or a request for
//  it reached broker `which`.
static bool
s_duo_wait (duo_t *duo, recorder_t *recorder, const char *rid, int which,
            int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        if (which < 0 ? s_final_of (recorder, rid) != NULL
                      : s_duo_holder (duo, rid, false) == which)
            return true;
        s_duo_run (duo, 5);
    }
    return false;
}

static void
s_failover (bool by_disconnect)
{
    //  By silence: 3 x 100 ms. By disconnect: liveness far away (5 s), so
    //  only the socket's own report can explain a quick failover
    duo_t *duo = s_duo_new (100, by_disconnect ? 50 : 3);
    recorder_t recorder = { .count = 0 };
    char kept [2][PIGATO_RID_MAX + 1], dropped [2][PIGATO_RID_MAX + 1];
    s_duo_requests_on (duo, 0, "{\"retry\":1}", 2, &recorder, kept);
    s_duo_requests_on (duo, 0, NULL, 2, &recorder, dropped);
    int finished = recorder.count;  //  those answered by broker 1
    zframe_t *old_id = zframe_dup (duo->sender [0]);
    zlistx_purge (duo->requests [0]);

    //  Broker 0 goes silent (or away); broker 1 still answers
    int64_t lost_at = zclock_mono ();
    if (by_disconnect)
        fake_broker_destroy (&duo->brokers [0]);
    else
        duo->answer [0] = false;
    for (int index = 0; index < 2; index++) {
        //  Requests with a retry left move to broker 1 at once ...
        assert_true (s_duo_wait (duo, &recorder, kept [index], 1, 3000));
        //  ... those without fail, instead of waiting for their timeout
        assert_true (s_duo_wait (duo, &recorder, dropped [index], -1, 3000));
        event_t *event = s_final_of (&recorder, dropped [index]);
        assert_int_equal (event->status, PIGATO_E_NOTCONNECTED);
        assert_string_equal (event->data, "E_BROKER_LOST");
    }
    if (by_disconnect)
        assert_true (zclock_mono () - lost_at < 2000);
    assert_int_equal (recorder.count, finished + 2);
    assert_int_equal (pigato_client_pending (duo->client), 2);

    if (!by_disconnect) {
        //  Broker 0 was reconnected to (a new routing id), but got none
        //  of the moved requests
        s_duo_run (duo, 100);
        assert_non_null (duo->sender [0]);
        assert_false (zframe_eq (old_id, duo->sender [0]));
        assert_int_equal (zlistx_size (duo->requests [0]), 0);
        //  Its late replies, on the old or the new connection, are not the
        //  requests' any more
        fake_send (duo->brokers [0], old_id, "C", "3", "", kept [0], "0",
                   "late", "{}", NULL);
        fake_send (duo->brokers [0], duo->sender [0], "C", "3", "", kept [0],
                   "0", "late", "{}", NULL);
        fake_send (duo->brokers [0], duo->sender [0], "C", "6", "", kept [1],
                   "0", "late", "{}", NULL);
        s_duo_run (duo, 100);
        assert_int_equal (recorder.count, finished + 2);
    }
    //  Broker 1 answers them: one final each
    for (int index = 0; index < 2; index++)
        fake_send (duo->brokers [1], duo->sender [1], "C", "3", "",
                   kept [index], "0", "moved", "{}", NULL);
    assert_true (s_duo_wait (duo, &recorder, kept [0], -1, 2000));
    assert_true (s_duo_wait (duo, &recorder, kept [1], -1, 2000));
    assert_string_equal (s_final_of (&recorder, kept [0])->data, "moved");
    assert_int_equal (s_final_of (&recorder, kept [1])->status, PIGATO_OK);
    assert_int_equal (recorder.count, finished + 4);
    assert_int_equal (pigato_client_pending (duo->client), 0);

    //  A request moved once has no retry left: broker 1 lost too, it fails
    char last [1][PIGATO_RID_MAX + 1];
    if (!by_disconnect) {
        duo->answer [0] = true;  //  broker 0 is back
        s_duo_run (duo, 300);
        s_duo_requests_on (duo, 0, "{\"retry\":1}", 1, &recorder, last);
        zlistx_purge (duo->requests [0]);
        duo->answer [0] = false;
        assert_true (s_duo_wait (duo, &recorder, last [0], 1, 3000));
        duo->answer [1] = false;
        assert_true (s_duo_wait (duo, &recorder, last [0], -1, 3000));
        assert_int_equal (s_final_of (&recorder, last [0])->status,
                          PIGATO_E_NOTCONNECTED);
    }
    zframe_destroy (&old_id);
    s_duo_destroy (&duo);
}

static void
test_failover_on_liveness_loss (void **state)
{
    (void) state;
    s_failover (false);
}

static void
test_failover_on_disconnect (void **state)
{
    (void) state;
    s_failover (true);
}

static void
test_reply_from_the_wrong_link_is_dropped (void **state)
{
    (void) state;
    duo_t *duo = s_duo_new (100, 3);
    recorder_t recorder = { .count = 0 };
    char rid [1][PIGATO_RID_MAX + 1];
    s_duo_requests_on (duo, 0, NULL, 1, &recorder, rid);
    int finished = recorder.count;
    //  Broker 1 never had it: its partial and final are dropped
    fake_send (duo->brokers [1], duo->sender [1], "C", "6", "", rid [0], "0",
               "stranger", "{}", NULL);
    fake_send (duo->brokers [1], duo->sender [1], "C", "3", "", rid [0], "0",
               "stranger", "{}", NULL);
    s_duo_run (duo, 100);
    assert_int_equal (recorder.count, finished);
    assert_int_equal (pigato_client_pending (duo->client), 1);
    //  Broker 0's reply is the one
    fake_send (duo->brokers [0], duo->sender [0], "C", "3", "", rid [0], "0",
               "owner", "{}", NULL);
    assert_true (s_duo_wait (duo, &recorder, rid [0], -1, 2000));
    assert_string_equal (s_final_of (&recorder, rid [0])->data, "owner");
    assert_int_equal (recorder.count, finished + 1);
    s_duo_destroy (&duo);
}

static void
test_new_requests_avoid_a_silent_broker (void **state)
{
    (void) state;
    duo_t *duo = s_duo_new (100, 50);
    //  Broker 0 stops answering: after two intervals it is not used
    duo->answer [0] = false;
    s_duo_run (duo, 300);
    recorder_t recorder = { .count = 0 };
    for (int index = 0; index < 6; index++)
        assert_int_equal (pigato_client_request (duo->client, "echo", "x", 1,
                                                 NULL, s_record, &recorder,
                                                 NULL),
                          0);
    s_duo_run (duo, 100);
    assert_int_equal (zlistx_size (duo->requests [0]), 0);
    assert_int_equal (zlistx_size (duo->requests [1]), 6);
    //  It answers again: both are used
    duo->answer [0] = true;
    s_duo_run (duo, 250);
    for (int index = 0; index < 6; index++)
        assert_int_equal (pigato_client_request (duo->client, "echo", "x", 1,
                                                 NULL, s_record, &recorder,
                                                 NULL),
                          0);
    s_duo_run (duo, 100);
    assert_int_equal (zlistx_size (duo->requests [0]), 3);
    assert_int_equal (zlistx_size (duo->requests [1]), 9);
    s_duo_destroy (&duo);
}

//  A draining broker (its notice answers heartbeats) gets no new request
//  while another is up; once it answers plainly again, it does.
static void
test_a_draining_broker_gets_no_new_requests (void **state)
{
    (void) state;
    duo_t *duo = s_duo_new (100, 50);
    duo->draining [0] = true;
    s_duo_run (duo, 250);
    recorder_t recorder = { .count = 0 };
    for (int index = 0; index < 6; index++)
        assert_int_equal (pigato_client_request (duo->client, "echo", "x", 1,
                                                 NULL, s_record, &recorder,
                                                 NULL),
                          0);
    s_duo_run (duo, 100);
    assert_int_equal (zlistx_size (duo->requests [0]), 0);
    assert_int_equal (zlistx_size (duo->requests [1]), 6);
    duo->draining [0] = false;
    s_duo_run (duo, 250);
    for (int index = 0; index < 6; index++)
        assert_int_equal (pigato_client_request (duo->client, "echo", "x", 1,
                                                 NULL, s_record, &recorder,
                                                 NULL),
                          0);
    s_duo_run (duo, 100);
    assert_int_equal (zlistx_size (duo->requests [0]), 3);
    assert_int_equal (zlistx_size (duo->requests [1]), 9);
    assert_int_equal (recorder.count, 0);
    s_duo_destroy (&duo);
}

//  What a draining broker gives back: E_DRAINING goes to the other
//  broker at once, retry or not, with no callback; E_DRAIN_TIMEOUT goes
//  there with a retry left (next attempt), else ends as an error reply.
//  Before the broker's notice, both are ordinary error replies (a worker
//  cannot pass for a draining broker).
static void
test_requests_a_draining_broker_gives_back_go_elsewhere (void **state)
{
    (void) state;
    duo_t *duo = s_duo_new (100, 50);
    recorder_t recorder = { .count = 0 };
    char plain [3][PIGATO_RID_MAX + 1], retried [1][PIGATO_RID_MAX + 1];
    s_duo_requests_on (duo, 0, NULL, 3, &recorder, plain);
    s_duo_requests_on (duo, 0, "{\"retry\":1}", 1, &recorder, retried);
    zlistx_purge (duo->requests [0]);
    int finished = recorder.count;
    zframe_t *to = duo->sender [0];
    //  No notice yet: E_DRAINING is the reply
    fake_send (duo->brokers [0], to, "C", "3", "", plain [0], "-1",
               "\"E_DRAINING forged\"", "{}", NULL);
    assert_true (s_duo_wait (duo, &recorder, plain [0], -1, 2000));
    assert_int_equal (s_final_of (&recorder, plain [0])->status,
                      PIGATO_E_REPLY);
    assert_string_equal (s_final_of (&recorder, plain [0])->data,
                         "E_DRAINING forged");
    //  The notice, then the broker's answers
    fake_send (duo->brokers [0], to, "C", "4", PIGATO__DRAIN_NOTICE, NULL);
    fake_send (duo->brokers [0], to, "C", "3", "", plain [1], "-1",
               "\"E_DRAINING the broker is draining\"", "{}", NULL);
    fake_send (duo->brokers [0], to, "C", "3", "", plain [2], "-1",
               "\"E_DRAIN_TIMEOUT the broker stopped\"", "{}", NULL);
    fake_send (duo->brokers [0], to, "C", "3", "", retried [0], "-1",
               "\"E_DRAIN_TIMEOUT the broker stopped\"", "{}", NULL);
    assert_true (s_duo_wait (duo, &recorder, plain [1], 1, 2000));
    assert_true (s_duo_wait (duo, &recorder, retried [0], 1, 2000));
    assert_true (s_duo_wait (duo, &recorder, plain [2], -1, 2000));
    event_t *event = s_final_of (&recorder, plain [2]);
    assert_int_equal (event->status, PIGATO_E_REPLY);
    assert_string_equal (event->data, "E_DRAIN_TIMEOUT the broker stopped");
    assert_null (s_final_of (&recorder, plain [1]));
    assert_int_equal (recorder.count, finished + 2);
    //  The moved one is sent as it was; the abandoned one as attempt 2
    zmsg_t *moved = NULL, *again = NULL;
    for (zmsg_t *msg = (zmsg_t *) zlistx_first (duo->requests [1]); msg;
         msg = (zmsg_t *) zlistx_next (duo->requests [1])) {
        if (fake_frame_is (msg, 4, plain [1]))
            moved = msg;
        if (fake_frame_is (msg, 4, retried [0]))
            again = msg;
    }
    assert_non_null (moved);
    assert_non_null (again);
    assert_true (fake_frame_is (moved, 6, "{}"));
    char *opts = fake_frame_str (again, 6);
    assert_non_null (strstr (opts, "\"attempt\":2"));
    free (opts);
    s_duo_destroy (&duo);
}

//  With its only broker draining, a request given back waits, and so does
//  a new one, until a broker takes requests again (here: the same one
//  answering plainly; in practice, its successor after a restart).
static void
test_a_lone_draining_broker_holds_requests_back (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    recorder_t recorder = { .count = 0 };
    char first [PIGATO_RID_MAX + 1], second [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, first);
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);
    fake_send (broker, to, "C", "4", PIGATO__DRAIN_NOTICE, NULL);
    fake_send (broker, to, "C", "3", "", first, "-1",
               "\"E_DRAINING the broker is draining\"", "{}", NULL);
    int64_t until = zclock_mono () + 100;
    while (zclock_mono () < until)
        pigato_client_wait (client, 10);
    assert_int_equal (pigato_client_request (client, "echo", "2", 1, NULL,
                                             s_record, &recorder, second),
                      0);
    //  Nothing comes while the broker answers heartbeats with its notice
    until = zclock_mono () + 500;
    while (zclock_mono () < until) {
        pigato_client_wait (client, 10);
        while ((msg = zmsg_recv (broker->router))) {
            assert_false (fake_frame_is (msg, 2, "2"));
            if (fake_msg_is (msg, "C", "4", NULL))
                fake_send (broker, to, "C", "4", PIGATO__DRAIN_NOTICE, NULL);
            zmsg_destroy (&msg);
        }
    }
    assert_int_equal (recorder.count, 0);
    assert_int_equal (pigato_client_pending (client), 2);
    //  It takes requests again: both go
    fake_send (broker, to, "C", "4", NULL);
    int got = 0;
    while ((msg = fake_recv (broker, s_pump, client, "C", "2", 1000))) {
        assert_true (fake_frame_is (msg, 4, first)
                     || fake_frame_is (msg, 4, second));
        got++;
        zmsg_destroy (&msg);
        if (got == 2)
            break;
    }
    assert_int_equal (got, 2);
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

//  An echo broker in a thread, for blocking calls: answers requests with
//  a partial "working" then a final with the request data, except for
//  service "silent".
static void
s_echo_broker (zsock_t *pipe, void *arg)
{
    (void) arg;
    fake_broker_t *broker = fake_broker_new (false);
    zsock_signal (pipe, 0);
    zstr_send (pipe, broker->endpoint);
    zpoller_t *poller = zpoller_new (pipe, broker->router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe || !which)
            break;
        zmsg_t *msg;
        while ((msg = zmsg_recv (broker->router))) {
            zframe_t *to = fake_sender (msg);
            if (fake_frame_is (msg, 2, "2")
                && !fake_frame_is (msg, 3, "silent")) {
                char *rid = fake_frame_str (msg, 4);
                char *data = fake_frame_str (msg, 5);
                fake_send (broker, to, "C", "6", "", rid, "0", "working", "{}",
                           NULL);
                fake_send (broker, to, "C", "3", "", rid, "0", data, "{}",
                           NULL);
                free (rid);
                free (data);
            }
            zframe_destroy (&to);
            zmsg_destroy (&msg);
        }
    }
    zpoller_destroy (&poller);
    fake_broker_destroy (&broker);
}

static void
test_blocking_call (void **state)
{
    (void) state;
    zactor_t *actor = zactor_new (s_echo_broker, NULL);
    char *endpoint = zstr_recv (actor);
    pigato_client_t *client = pigato_client_new ();
    pigato_client_set_insecure (client, true);
    pigato_client_set_heartbeat (client, 100, 3);
    assert_int_equal (pigato_client_connect (client, endpoint), 0);

    recorder_t partials = { .count = 0 };
    char *reply = NULL;
    size_t size = 0;
    assert_int_equal (pigato_client_call (client, "echo", "\"ping\"", 6, NULL,
                                          s_record, &partials, &reply, &size),
                      PIGATO_OK);
    assert_string_equal (reply, "\"ping\"");
    assert_int_equal (size, 6);
    assert_int_equal (partials.count, 1);
    assert_string_equal (partials.events [0].data, "working");
    free (reply);

    assert_int_equal (pigato_client_call (client, "silent", "1", 1,
                                          "{\"timeout\":100}", NULL, NULL,
                                          &reply, &size),
                      PIGATO_E_TIMEOUT);
    assert_string_equal (reply, "C_TIMEOUT");
    free (reply);
    assert_int_equal (pigato_client_call (client, "echo", "1", 1, "[]", NULL,
                                          NULL, &reply, &size),
                      PIGATO_E_INVALID);
    assert_non_null (reply);
    free (reply);
    assert_int_equal (pigato_client_pending (client), 0);
    pigato_client_destroy (&client);
    zstr_free (&endpoint);
    zactor_destroy (&actor);
}

//  zloop test state: the broker answers requests; the test timer ends the
//  loop once the final reply arrived.
typedef struct {
    fake_broker_t *broker;
    recorder_t recorder;
} loop_state_t;

static int
s_loop_broker (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    loop_state_t *state = (loop_state_t *) arg;
    zmsg_t *msg;
    while ((msg = zmsg_recv (state->broker->router))) {
        if (fake_frame_is (msg, 2, "2") && fake_frame_is (msg, 3, "echo")) {
            zframe_t *to = fake_sender (msg);
            char *rid = fake_frame_str (msg, 4);
            fake_send (state->broker, to, "C", "3", "", rid, "0", "looped",
                       "{}", NULL);
            free (rid);
            zframe_destroy (&to);
        }
        zmsg_destroy (&msg);
    }
    return 0;
}

static int
s_loop_check (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    loop_state_t *state = (loop_state_t *) arg;
    return state->recorder.count >= 2 ? -1 : 0;
}

static void
test_attached_to_zloop (void **state)
{
    (void) state;
    loop_state_t loop_state = { .broker = fake_broker_new (false) };
    loop_state.recorder.count = 0;
    pigato_client_t *client = s_client_new (loop_state.broker);
    zloop_t *loop = zloop_new ();
    assert_int_equal (pigato_client_attach (client, loop), 0);
    assert_int_equal (pigato_client_attach (client, loop), PIGATO_E_INVALID);
    zloop_reader (loop, loop_state.broker->router, s_loop_broker, &loop_state);
    zloop_timer (loop, 10, 0, s_loop_check, &loop_state);
    zloop_timer (loop, 3000, 1, s_loop_check, &loop_state);  //  give up
    assert_int_equal (pigato_client_request (client, "echo", "1", 1, NULL,
                                             s_record, &loop_state.recorder,
                                             NULL),
                      0);
    //  Nobody answers this one: it times out through the client's timer
    assert_int_equal (pigato_client_request (client, "nobody", "1", 1,
                                             "{\"timeout\":50}", s_record,
                                             &loop_state.recorder, NULL),
                      0);
    zloop_start (loop);
    assert_int_equal (loop_state.recorder.count, 2);
    int ok = 0, timed_out = 0;
    for (int index = 0; index < 2; index++) {
        event_t *event = &loop_state.recorder.events [index];
        assert_true (event->final);
        if (event->status == PIGATO_OK && streq (event->data, "looped"))
            ok++;
        if (event->status == PIGATO_E_TIMEOUT)
            timed_out++;
    }
    assert_int_equal (ok, 1);
    assert_int_equal (timed_out, 1);
    pigato_client_destroy (&client);
    zloop_destroy (&loop);
    fake_broker_destroy (&loop_state.broker);
}

static int
s_stop_at_one (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    return ((recorder_t *) arg)->count >= 1 ? -1 : 0;
}

//  Under a zloop the client's link is polled through its ZMQ_FD, which
//  signals news only. A send made outside the client's dispatch (here,
//  before the loop runs) takes in the news of a reply already queued, and
//  the descriptor will not signal that reply again: the client must see
//  it and read it at the loop's first turn, not never.
static void
test_zloop_reads_a_reply_whose_signal_a_send_took (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    zloop_t *loop = zloop_new ();
    assert_int_equal (pigato_client_attach (client, loop), 0);
    recorder_t recorder;
    recorder.count = 0;
    assert_int_equal (pigato_client_request (client, "echo", "1", 1, NULL,
                                             s_record, &recorder, NULL),
                      0);
    zmsg_t *msg = fake_recv (broker, NULL, NULL, "C", "2", 2000);
    assert_non_null (msg);
    zframe_t *to = fake_sender (msg);
    char *rid = fake_frame_str (msg, 4);
    fake_send (broker, to, "C", "3", "", rid, "0", "first", "{}", NULL);
    free (rid);
    zframe_destroy (&to);
    zmsg_destroy (&msg);
    //  libzmq takes in news during a send at most once a millisecond: let
    //  that pass, and the reply reach the client (if it came later, its
    //  own signal would wake the loop and the test would pass anyway)
    zclock_sleep (5);
    assert_int_equal (pigato_client_request (client, "nobody", "2", 1,
                                             "{\"timeout\":5000}", s_record,
                                             &recorder, NULL),
                      0);
    zloop_timer (loop, 5, 0, s_stop_at_one, &recorder);
    zloop_timer (loop, 1000, 1, fake_loop_give_up, NULL);
    int64_t started = zclock_mono ();
    zloop_start (loop);
    assert_int_equal (recorder.count, 1);
    assert_true (recorder.events [0].final);
    assert_string_equal (recorder.events [0].data, "first");
    //  At the loop's first turn, not at the client's timer tick 100 ms
    //  after attach (which would find the link dirty and read it)
    assert_true (zclock_mono () - started < 60);
    pigato_client_destroy (&client);
    zloop_destroy (&loop);
    fake_broker_destroy (&broker);
}

static void
test_security_settings (void **state)
{
    (void) state;
    char dir [] = "/tmp/pigato-test-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char *secret_path = zsys_sprintf ("%s/me.key_secret", dir);
    char *public_path = zsys_sprintf ("%s/me.key", dir);
    zcert_t *cert = zcert_new ();
    assert_int_equal (zcert_save (cert, public_path), 0);

    pigato_client_t *client = pigato_client_new ();
    //  Server keys: Z85 text, a public file, a secret file; clear errors
    assert_int_equal (
        pigato_client_set_server_key (client, zcert_public_txt (cert)), 0);
    assert_int_equal (pigato_client_set_server_key (client, public_path), 0);
    assert_int_equal (pigato_client_set_server_key (client, "abc"),
                      PIGATO_E_KEY);
    assert_string_equal (pigato_client_error (client),
                         "server key 'abc' is neither a 40-character Z85 key "
                         "nor a readable key file");
    assert_int_equal (pigato_client_set_server_key (client, "/nope/x.key"),
                      PIGATO_E_KEY);
    assert_string_equal (pigato_client_error (client),
                         "cannot read server key '/nope/x.key': no such file");
    //  40 characters, but not Z85 (and no such file)
    assert_int_equal (pigato_client_set_server_key (
                          client, "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"),
                      PIGATO_E_KEY);

    //  Own key file: 0600 accepted (public or secret path), 0644 refused
    chmod (secret_path, 0600);
    assert_int_equal (pigato_client_set_key_file (client, secret_path), 0);
    assert_int_equal (pigato_client_set_key_file (client, public_path), 0);
    chmod (secret_path, 0644);
    assert_int_equal (pigato_client_set_key_file (client, secret_path),
                      PIGATO_E_KEYPERM);
    assert_non_null (strstr (pigato_client_error (client),
                             "is readable by group or others (mode 0644); "
                             "fix with: chmod 600"));
    assert_int_equal (pigato_client_set_key_file (client, "/nope/me.key"),
                      PIGATO_E_KEY);
    assert_string_equal (pigato_client_error (client),
                         "cannot read key file '/nope/me.key': "
                         "No such file or directory");
    remove (secret_path);
    assert_int_equal (pigato_client_set_key_file (client, public_path),
                      PIGATO_E_KEY);
    assert_non_null (
        strstr (pigato_client_error (client), "holds no secret key"));

    //  Public key helpers
    char z85 [41];
    char err [256];
    assert_int_equal (pigato_key_public (public_path, z85, err, sizeof err), 0);
    assert_string_equal (z85, zcert_public_txt (cert));
    char fingerprint [PIGATO_FINGERPRINT_SIZE], again [PIGATO_FINGERPRINT_SIZE];
    pigato_key_fingerprint (z85, fingerprint);
    pigato_key_fingerprint (z85, again);
    assert_int_equal (strlen (fingerprint), 16);
    assert_int_equal (strspn (fingerprint, "0123456789abcdef"), 16);
    assert_string_equal (fingerprint, again);
    //  Different keys, different fingerprints
    zcert_t *other = zcert_new ();
    pigato_key_fingerprint (zcert_public_txt (other), again);
    assert_string_not_equal (fingerprint, again);
    zcert_destroy (&other);
    pigato_key_fingerprint ("short", fingerprint);
    assert_string_equal (fingerprint, "????????????????");

    //  No server key and not insecure: connect says why
    pigato_client_t *keyless = pigato_client_new ();
    assert_int_equal (pigato_client_connect (keyless, "tcp://127.0.0.1:1"),
                      PIGATO_E_KEY);
    assert_non_null (strstr (pigato_client_error (keyless), "server key"));
    pigato_client_set_insecure (keyless, true);
    assert_int_equal (pigato_client_connect (keyless, "bogus://x"),
                      PIGATO_E_CONNECT);
    pigato_client_destroy (&keyless);

    pigato_client_destroy (&client);
    remove (public_path);
    rmdir (dir);
    zstr_free (&secret_path);
    zstr_free (&public_path);
    zcert_destroy (&cert);
}

static void
test_curve_with_key_file (void **state)
{
    (void) state;
    char dir [] = "/tmp/pigato-test-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char *public_path = zsys_sprintf ("%s/me.key", dir);
    char *secret_path = zsys_sprintf ("%s/me.key_secret", dir);
    zcert_t *cert = zcert_new ();
    zcert_save (cert, public_path);
    chmod (secret_path, 0600);

    fake_broker_t *broker = fake_broker_new (true);
    pigato_client_t *client = pigato_client_new ();
    assert_int_equal (pigato_client_set_server_key (client, broker->public_key),
                      0);
    assert_int_equal (pigato_client_set_key_file (client, secret_path), 0);
    pigato_client_set_heartbeat (client, 100, 3);
    assert_int_equal (pigato_client_connect (client, broker->endpoint), 0);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    zmsg_t *msg = s_request (client, broker, "1", NULL, &recorder, rid);
    zmsg_destroy (&msg);

    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
    remove (secret_path);
    remove (public_path);
    rmdir (dir);
    zstr_free (&secret_path);
    zstr_free (&public_path);
    zcert_destroy (&cert);
}

//  --------------------------------------------------------------------------
//  Native framing (docs/native-framing.md)

#define S_BYTES(text)                                                          \
    ((pigato__bytes_t) { (const byte *) (text), strlen (text) })

//  A broker -> client entry.
static pigato__msg_t
s_entry (int type, const char *rid, const char *body)
{
    pigato__msg_t entry;
    memset (&entry, 0, sizeof entry);
    entry.role = 'C';
    entry.type = type;
    entry.rid = S_BYTES (rid ? rid : "");
    entry.data = S_BYTES (body ? body : "");
    return entry;
}

//  Takes the client's greeting (with the offer in auto mode), answers it
//  with a native heartbeat and lets the client read it: the link is
//  native from then on. Returns the client's routing id.
static zframe_t *
s_go_native (fake_broker_t *broker, pigato_client_t *client)
{
    zmsg_t *msg = fake_recv (broker, s_pump, client, "C", "4", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "C", "4", PIGATO__NATIVE_OFFER, NULL));
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);
    pigato__msg_t heartbeat = s_entry (PIGATO__HEARTBEAT, NULL, NULL);
    fake_native_send (broker, to, 'C', &heartbeat, 1);
    //  wait () returns once it has read the answer
    pigato_client_wait (client, 1000);
    return to;
}

//  Receives a native message holding `count` requests, without pumping
//  the client (pump = NULL proves the client sent it on its own).
static int
s_recv_requests (fake_broker_t *broker, pigato_client_t *client,
                 pigato__msg_t *entries, size_t max, zmsg_t **msg_p)
{
    *msg_p = fake_recv_native (broker, client ? s_pump : NULL, client, 2000);
    assert_non_null (*msg_p);
    int count = fake_native_read (*msg_p, entries, max);
    assert_true (count > 0);
    return count;
}

static void
test_auto_stays_046_with_a_046_broker (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    zmsg_t *msg = fake_recv (broker, s_pump, client, "C", "4", 2000);
    assert_non_null (msg);
    //  The offer: a heartbeat with one more frame
    assert_true (fake_msg_is (msg, "C", "4", PIGATO__NATIVE_OFFER, NULL));
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);
    //  A Node broker answers in 0.0.46 framing
    fake_send (broker, to, "C", "4", NULL);
    pigato_client_wait (client, 200);

    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    msg = s_request (client, broker, "1", NULL, &recorder, rid);
    assert_true (fake_msg_is (msg, "C", "2", "echo", rid, "1", "{}", NULL));
    zmsg_destroy (&msg);
    fake_send (broker, to, "C", "3", "", rid, "0", "ok", "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    assert_string_equal (recorder.events [0].data, "ok");
    //  Still 0.0.46, and no native message ever
    msg = s_request (client, broker, "2", NULL, &recorder, rid);
    zmsg_destroy (&msg);
    assert_null (fake_recv_native (broker, s_pump, client, 300));
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_switches_to_native_after_a_native_answer (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (true);
    pigato_client_t *client = s_client_new (broker);
    zframe_t *to = s_go_native (broker, client);

    //  A request made outside any callback leaves at once, natively
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    assert_int_equal (pigato_client_request (client, "echo", "\"hi\"", 4,
                                             "{\"retry\":0}", s_record,
                                             &recorder, rid),
                      0);
    pigato__msg_t entries [8];
    zmsg_t *msg;
    assert_int_equal (s_recv_requests (broker, NULL, entries, 8, &msg), 1);
    assert_int_equal (entries [0].type, PIGATO__REQUEST);
    assert_true (s_eq_bytes (entries [0].service, "echo"));
    assert_true (s_eq_bytes (entries [0].rid, rid));
    assert_true (s_eq_bytes (entries [0].data, "\"hi\""));
    assert_true (s_eq_bytes (entries [0].opts, "{\"retry\":0}"));
    assert_true (zframe_eq (to, zmsg_first (msg)));
    zmsg_destroy (&msg);

    //  Native partial and error final; the 0.0.46 framing is still read
    pigato__msg_t replies [2] = { s_entry (PIGATO__PARTIAL, rid, "p1"),
                                  s_entry (PIGATO__REPLY, rid, "\"boom\"") };
    replies [1].status = -1;
    fake_native_send (broker, to, 'C', replies, 2);
    assert_true (s_wait_events (client, &recorder, 2, 2000));
    assert_false (recorder.events [0].final);
    assert_string_equal (recorder.events [0].data, "p1");
    assert_true (recorder.events [1].final);
    assert_int_equal (recorder.events [1].status, PIGATO_E_REPLY);
    assert_string_equal (recorder.events [1].data, "boom");
    assert_int_equal (pigato_client_request (client, "echo", "2", 1, NULL,
                                             s_record, &recorder, rid),
                      0);
    fake_send (broker, to, "C", "3", "", rid, "0", "old", "{}", NULL);
    assert_true (s_wait_events (client, &recorder, 3, 2000));
    assert_string_equal (recorder.events [2].data, "old");
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

//  A reply callback that makes a new request for every final reply.
typedef struct {
    recorder_t recorder;
    int chained;
} chain_t;

static void
s_chain (pigato_client_t *client, const char *rid, int status, bool final,
         const void *data, size_t size, void *arg)
{
    chain_t *chain = (chain_t *) arg;
    s_record (client, rid, status, final, data, size, &chain->recorder);
    if (final && chain->chained < 8) {
        chain->chained++;
        assert_int_equal (pigato_client_request (client, "next", "n", 1, NULL,
                                                 NULL, NULL, NULL),
                          0);
    }
}

static void
test_requests_from_callbacks_leave_as_one_batch (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    zframe_t *to = s_go_native (broker, client);
    chain_t chain = { .chained = 0 };
    chain.recorder.count = 0;
    char rids [3][PIGATO_RID_MAX + 1];
    pigato__msg_t entries [16];
    for (int index = 0; index < 3; index++) {
        assert_int_equal (pigato_client_request (client, "echo", "x", 1, NULL,
                                                 s_chain, &chain, rids [index]),
                          0);
        //  Each one is sent at once, on its own
        zmsg_t *msg;
        assert_int_equal (s_recv_requests (broker, NULL, entries, 16, &msg), 1);
        zmsg_destroy (&msg);
    }
    //  Three finals in one batch: the three requests their callbacks make
    //  arrive together, in one message
    pigato__msg_t finals [3] = { s_entry (PIGATO__REPLY, rids [0], "a"),
                                 s_entry (PIGATO__REPLY, rids [1], "b"),
                                 s_entry (PIGATO__REPLY, rids [2], "c") };
    fake_native_send (broker, to, 'C', finals, 3);
    zmsg_t *msg = NULL;
    int requests = 0;
    int64_t deadline = zclock_mono () + 2000;
    while (requests == 0 && zclock_mono () < deadline) {
        int count = s_recv_requests (broker, client, entries, 16, &msg);
        requests = fake_count_type (entries, count, PIGATO__REQUEST);
        zmsg_destroy (&msg);
    }
    assert_int_equal (requests, 3);
    assert_int_equal (chain.recorder.count, 3);
    assert_int_equal (chain.chained, 3);
    for (int index = 0; index < 3; index++)
        assert_true (s_eq_bytes (entries [index].service, "next")
                     || entries [index].type == PIGATO__HEARTBEAT);
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_large_bodies_travel_as_external_frames (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    zframe_t *to = s_go_native (broker, client);
    size_t size = 10000;
    char *body = (char *) malloc (size + 1);
    for (size_t index = 0; index < size; index++)
        body [index] = (char) ('a' + index % 26);
    body [size] = 0;
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    assert_int_equal (pigato_client_request (client, "echo", body, size, NULL,
                                             s_record, &recorder, rid),
                      0);
    pigato__msg_t entries [4];
    zmsg_t *msg;
    assert_int_equal (s_recv_requests (broker, NULL, entries, 4, &msg), 1);
    //  [id, batch, body]: the body in its own frame, not in the batch
    assert_int_equal (zmsg_size (msg), 3);
    zmsg_first (msg);
    assert_true (zframe_size (zmsg_next (msg)) < 200);
    assert_int_equal (entries [0].data.size, size);
    assert_memory_equal (entries [0].data.data, body, size);
    zmsg_destroy (&msg);

    //  A large reply comes back the same way
    pigato__msg_t reply = s_entry (PIGATO__REPLY, rid, body);
    fake_native_send (broker, to, 'C', &reply, 1);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    assert_int_equal (recorder.events [0].full_size, size);
    assert_memory_equal (recorder.events [0].data, body,
                         recorder.events [0].size);
    free (body);
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_framing_046_never_offers (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = pigato_client_new ();
    pigato_client_set_insecure (client, true);
    pigato_client_set_heartbeat (client, 100, 3);
    assert_int_equal (pigato_client_set_framing (client, "native?"),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_set_framing (client, NULL),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_set_framing (NULL, "auto"),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_set_framing (client, "0.0.46"), 0);
    assert_int_equal (pigato_client_connect (client, broker->endpoint), 0);
    zmsg_t *msg = fake_recv (broker, s_pump, client, "C", "4", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "C", "4", NULL));
    zframe_t *to = fake_sender (msg);
    zmsg_destroy (&msg);
    //  Even a native answer does not make it send native
    pigato__msg_t heartbeat = s_entry (PIGATO__HEARTBEAT, NULL, NULL);
    fake_native_send (broker, to, 'C', &heartbeat, 1);
    pigato_client_wait (client, 200);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    msg = s_request (client, broker, "1", NULL, &recorder, rid);
    zmsg_destroy (&msg);
    //  ... though it reads native replies
    pigato__msg_t reply = s_entry (PIGATO__REPLY, rid, "n");
    fake_native_send (broker, to, 'C', &reply, 1);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    assert_null (fake_recv_native (broker, s_pump, client, 300));
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_framing_native_from_the_start (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = pigato_client_new ();
    pigato_client_set_insecure (client, true);
    pigato_client_set_heartbeat (client, 100, 3);
    assert_int_equal (pigato_client_set_framing (client, "native"), 0);
    assert_int_equal (pigato_client_connect (client, broker->endpoint), 0);
    //  The greeting is a native heartbeat, sent without waiting
    pigato__msg_t entries [4];
    zmsg_t *msg;
    assert_int_equal (s_recv_requests (broker, NULL, entries, 4, &msg), 1);
    assert_int_equal (entries [0].type, PIGATO__HEARTBEAT);
    assert_int_equal (entries [0].rid.size, 0);
    zmsg_destroy (&msg);
    assert_int_equal (pigato_client_request (client, "echo", "1", 1, NULL, NULL,
                                             NULL, NULL),
                      0);
    assert_int_equal (s_recv_requests (broker, NULL, entries, 4, &msg), 1);
    assert_int_equal (entries [0].type, PIGATO__REQUEST);
    zmsg_destroy (&msg);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

static void
test_malformed_native_batches_are_dropped (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    pigato_client_t *client = s_client_new (broker);
    zframe_t *to = s_go_native (broker, client);
    recorder_t recorder = { .count = 0 };
    char rid [PIGATO_RID_MAX + 1];
    assert_int_equal (pigato_client_request (client, "echo", "1", 1, NULL,
                                             s_record, &recorder, rid),
                      0);
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, 'C');
    pigato__msg_t bad = s_entry (PIGATO__REPLY, rid, "bad");
    assert_int_equal (pigato__native_writer_add (&writer, &bad, false), 0);
    byte frame [512];
    size_t size = writer.size;
    memcpy (frame, writer.data, size);

    //  The head alone; every cut of a good batch
    fake_send_raw (broker, to, frame, 4, 0, 0);
    for (size_t cut = 1; cut < size; cut++)
        fake_send_raw (broker, to, frame, cut, 0, 0);
    //  A good entry, then one of unknown type: all of it is dropped
    memcpy (frame + size, "\x09\0\0\0\0\0\0\0\0\0\0\0", 12);
    fake_send_raw (broker, to, frame, size + 12, 0, 0);
    //  A worker-side batch; an unused frame; a missing external frame
    frame [2] = 'W';
    fake_send_raw (broker, to, frame, size, 0, 0);
    frame [2] = 'C';
    fake_send_raw (broker, to, frame, size, 1, 10);
    pigato__native_writer_reset (&writer);
    assert_int_equal (pigato__native_writer_add (&writer, &bad, true), 0);
    fake_send_raw (broker, to, writer.data, writer.size, 0, 0);
    //  Too many frames
    fake_send_raw (broker, to, writer.data, writer.size, 300, 1);
    pigato__native_writer_free (&writer);

    pigato__msg_t good = s_entry (PIGATO__REPLY, rid, "good");
    fake_native_send (broker, to, 'C', &good, 1);
    assert_true (s_wait_events (client, &recorder, 1, 2000));
    pigato_client_wait (client, 50);
    assert_int_equal (recorder.count, 1);
    assert_string_equal (recorder.events [0].data, "good");
    zframe_destroy (&to);
    pigato_client_destroy (&client);
    fake_broker_destroy (&broker);
}

//  Takes every log line (so all logging paths run) and drops it.
static void
s_log_sink (int level, const char *line, void *arg)
{
    (void) level;
    (void) arg;
    assert_non_null (line);
}

//  The outbound budget: from 1 MiB to 1 TiB, a clear refusal otherwise;
//  past it a request fails with its own status (test_library_budgets.py
//  fills one against a broker that does not read).
static void
test_outbound_budget_setting (void **state)
{
    (void) state;
    pigato_client_t *client = pigato_client_new ();
    assert_int_equal (pigato_client_set_max_outbound (client, 1024 * 1024), 0);
    assert_int_equal (pigato_client_set_max_outbound (client, 1LL << 40), 0);
    assert_int_equal (pigato_client_set_max_outbound (client, 1024 * 1024 - 1),
                      PIGATO_E_INVALID);
    assert_string_equal (pigato_client_error (client),
                         "the outbound budget must be from 1048576 bytes (1 "
                         "MiB) to 1099511627776 (1 TiB), not 1048575");
    assert_int_equal (pigato_client_set_max_outbound (client, -1),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_client_set_max_outbound (NULL, 1 << 20),
                      PIGATO_E_INVALID);
    assert_string_equal (pigato_strerror (PIGATO_E_QUEUE_FULL),
                         "the broker is not reading: send queue to it full");
    pigato_client_destroy (&client);
}

int
main (void)
{
    pigato_log_set (PIGATO_LOG_DEBUG, s_log_sink, NULL);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_request_frames_plain),
        cmocka_unit_test (test_request_frames_curve),
        cmocka_unit_test (test_partials_then_final_in_order),
        cmocka_unit_test (test_errors_are_decoded),
        cmocka_unit_test (test_body_over_the_limit_is_refused),
        cmocka_unit_test (test_malformed_broker_messages_are_dropped),
        cmocka_unit_test (test_opts_and_arguments_are_checked),
        cmocka_unit_test (test_timeout_is_inactivity),
        cmocka_unit_test (test_huge_timeouts_do_not_overflow),
        cmocka_unit_test (test_request_heartbeats_until_cancel),
        cmocka_unit_test (test_reconnect_after_liveness_loss),
        cmocka_unit_test (test_requests_spread_over_brokers),
        cmocka_unit_test (test_failover_on_liveness_loss),
        cmocka_unit_test (test_failover_on_disconnect),
        cmocka_unit_test (test_reply_from_the_wrong_link_is_dropped),
        cmocka_unit_test (test_new_requests_avoid_a_silent_broker),
        cmocka_unit_test (test_a_draining_broker_gets_no_new_requests),
        cmocka_unit_test (
            test_requests_a_draining_broker_gives_back_go_elsewhere),
        cmocka_unit_test (test_a_lone_draining_broker_holds_requests_back),
        cmocka_unit_test (test_blocking_call),
        cmocka_unit_test (test_attached_to_zloop),
        cmocka_unit_test (test_zloop_reads_a_reply_whose_signal_a_send_took),
        cmocka_unit_test (test_security_settings),
        cmocka_unit_test (test_curve_with_key_file),
        cmocka_unit_test (test_auto_stays_046_with_a_046_broker),
        cmocka_unit_test (test_switches_to_native_after_a_native_answer),
        cmocka_unit_test (test_requests_from_callbacks_leave_as_one_batch),
        cmocka_unit_test (test_large_bodies_travel_as_external_frames),
        cmocka_unit_test (test_framing_046_never_offers),
        cmocka_unit_test (test_framing_native_from_the_start),
        cmocka_unit_test (test_malformed_native_batches_are_dropped),
        cmocka_unit_test (test_outbound_budget_setting),
    };
    int failed = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return failed;
}
